"""The artifact catalog: every file name is spelled once, in ``pipeline.core.artifacts``."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from pipeline.core import artifacts

ROOT = Path(__file__).resolve().parents[2]
#: a bare file name (a leading dot marks a suffix or a temporary name, e.g. ``.move.json``)
FILE_NAME = re.compile(r"^\w[\w.-]*\.(json|parquet|npz|csv|png|pt|html|db|gz|pkl)$")
SHIPPED = ("pipeline", "components", "dags", "tools")


def file_name_literals(path: Path) -> list[tuple[int, str]]:
    """``(line, text)`` of every string constant in ``path`` that is a bare file name."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and FILE_NAME.match(node.value):
            found.append((node.lineno, node.value))
    return found


def test_no_module_spells_an_artifact_file_name_outside_the_catalog():
    offenders = [
        f"{path.relative_to(ROOT)}:{line}: {text!r}"
        for folder in SHIPPED for path in sorted((ROOT / folder).rglob("*.py"))
        if path != ROOT / "pipeline" / "core" / "artifacts.py" for line, text in file_name_literals(path)
    ]  # fmt: skip
    assert not offenders, "file names belong in pipeline.core.artifacts.CATALOG:\n" + "\n".join(offenders)


def test_the_check_sees_a_literal(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text('PATH = "gate.json"\nOTHER = "not a file"\n')
    assert file_name_literals(sample) == [(1, "gate.json")]


def test_catalog_entries_are_unique_and_documented():
    places = [(a.step, a.name) for a in artifacts.CATALOG]
    assert len(places) == len(set(places)), "two artifacts in one place"
    table = artifacts.__doc__
    for name, value in vars(artifacts).items():
        if isinstance(value, artifacts.Artifact) and value.step in artifacts.STEPS + ("",):
            assert name in table and value.name in table, f"{name} is missing from the catalog table in the module docstring"
    assert artifacts.GATE.in_run("/r") == Path("/r/evaluation/gate.json")
    assert artifacts.RUN_MANIFEST.in_run("/r") == Path("/r/run.json")
    assert artifacts.GATE.at("/kfp/evaluation-artifact") == Path("/kfp/evaluation-artifact/gate.json")
