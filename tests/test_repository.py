"""Repository-level checks: layout, the docker files (checked without an engine), no shadowing packages."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT


@pytest.mark.parametrize("folder", ["mlflow", "docker"])
def test_folders_never_shadow_installed_packages(folder):
    assert not (ROOT / folder / "__init__.py").exists()
    import docker  # noqa: F401  (the installed packages still resolve)
    import mlflow

    assert Path(mlflow.__file__).parent != ROOT / "mlflow"


def test_layout():
    for name in ("dags", "pipeline", "components", "tests", "docker", "mlflow", "configs", "benchmarks", "docs", "README.md", "pyproject.toml", "Makefile"):
        assert (ROOT / name).exists(), name


def test_dockerfile_passes_hadolint():
    exe = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    proc = subprocess.run([exe, str(ROOT / "docker" / "Dockerfile")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_compose_file_builds_the_project_image_and_binds_loopback():
    compose = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
    for name, service in compose["services"].items():
        if "build" not in service:  # an upstream image (Prometheus, Grafana): pinned to a release, never latest
            image = service["image"]
            assert ":" in image and not image.endswith(":latest"), f"{name} uses an unpinned image {image}"
            for volume in service.get("volumes", []):  # mounted files of the repository exist
                src = volume.split(":")[0]
                assert not src.startswith(".") or (ROOT / "docker" / src).exists(), f"{name} mounts missing {src}"
            continue
        build = service["build"]
        assert (ROOT / "docker" / build["context"] / build["dockerfile"]).resolve() == (ROOT / "docker" / "Dockerfile").resolve()
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
    copied = [line.split()[1] for line in (ROOT / "docker" / "Dockerfile").read_text().splitlines() if line.startswith("COPY ")]
    for src in copied:
        assert (ROOT / src).exists(), f"Dockerfile copies missing {src}"


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    """A shipped config that no longer matches the typed config (a removed key) fails here, not at a user's first run."""
    from pipeline.core.config import load_config

    cfg = load_config(path)
    assert cfg.name and cfg.features.horizon >= 1


def test_import_contracts_hold():
    """The layers of ``pipeline/`` (pyproject ``[tool.importlinter]``): no upward import, no cycle
    between layers, and a served model's package imports no training, loop or registry code."""
    lint = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "BROKEN" not in proc.stdout and proc.stdout.count("KEPT") >= 2, proc.stdout[-2000:]


def test_import_contracts_catch_an_upward_import(tmp_path):
    """The contract is not vacuous: a copy of the package with one upward import (core -> loop) fails it."""
    shutil.copytree(ROOT / "pipeline", tmp_path / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    schema = tmp_path / "pipeline" / "core" / "schema.py"
    schema.write_text(schema.read_text() + "\nfrom pipeline.loop import canary  # noqa: E402,F401\n")
    lint = Path(sys.executable).with_name("lint-imports")
    env = {"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([str(lint), "--no-cache"], cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode != 0 and "pipeline.core.schema -> pipeline.loop.canary" in proc.stdout, proc.stdout[-3000:]


@pytest.mark.parametrize("package", ["core", "data", "features", "models", "training", "evaluation", "registry", "store", "serving", "loop"])
def test_subpackage_init_imports_no_torch(package):
    """DAG parsing imports these packages: their ``__init__`` must not pull in torch."""
    probe = f"import sys, pipeline.{package}; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120, check=True).stdout
    assert out.strip() == "False", f"importing pipeline.{package} imports torch"
