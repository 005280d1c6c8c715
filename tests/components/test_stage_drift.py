"""The Airflow DAG and the Kubeflow pipeline call the same stage functions, in the same order.

Both are checked against :data:`pipeline.stages.STAGES` (what the CLI runner loops over):
- which stage entry point each Airflow task / KFP component calls, read from the source (an
  ``from pipeline.<module> import <entry>`` inside the task, ``stages.stage("<name>")``, or a
  call ``_stage("<name>", ...)`` / ``run_stage("<name>", ...)``);
- the set of entry points called equals the stage list, no more, no less;
- each stage's ancestors in the orchestrator's graph (Airflow's task edges, KFP's compiled
  ``dependentTasks``) equal its ancestors in the stage list: same order, same parallel branches.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from pipeline import stages

ROOT = Path(__file__).resolve().parents[2]
DAG_FILE = ROOT / "dags" / "lstm_training.py"
STEPS_FILE = ROOT / "components" / "steps.py"


def _own_nodes(fn: ast.FunctionDef):
    """The nodes of ``fn``'s body, not descending into nested functions."""
    todo = list(fn.body)
    while todo:
        node = todo.pop()
        yield node
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            todo.extend(ast.iter_child_nodes(node))


def _called_stages(fn: ast.FunctionDef) -> set[str]:
    by_entry = {(s.module, s.function_name): s.name for s in stages.STAGES}
    found = set()
    for node in _own_nodes(fn):
        if isinstance(node, ast.ImportFrom) and node.module:
            found |= {by_entry[(node.module, a.name)] for a in node.names if (node.module, a.name) in by_entry}
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) in ("stage", "_stage", "run_stage"):
            first = node.args[0] if node.args else None
            if isinstance(first, ast.Constant) and first.value in stages.BY_NAME:
                found.add(first.value)
    return found


def stage_calls(path: Path) -> dict[str, str]:
    """``{function name: stage}`` for every function in ``path`` that calls a stage entry point."""
    calls = {}
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            called = _called_stages(node)
            assert len(called) <= 1, f"{path.name}:{node.name} calls several stages {sorted(called)}: one task, one stage"
            if called:
                calls[node.name] = called.pop()
    return calls


def _ancestors(parents: dict[str, set[str]]) -> dict[str, set[str]]:
    def up(node, seen):
        for p in parents.get(node, ()):
            if p not in seen:
                seen.add(p)
                up(p, seen)
        return seen

    return {node: up(node, set()) for node in parents}


def expected_ancestors() -> dict[str, set[str]]:
    """From the stage list: every stage after the stages it consumes."""
    return _ancestors({s.name: stages.upstream(s.name) for s in stages.STAGES})


def _stage_graph(task_parents: dict[str, set[str]], task_stage: dict[str, str]) -> dict[str, set[str]]:
    """Ancestors between stage tasks, through any other tasks (e.g. a config-resolving task)."""
    full = _ancestors(task_parents)
    return {task_stage[t]: {task_stage[a] for a in full[t] if a in task_stage} for t in task_parents if t in task_stage}


PROBE = textwrap.dedent(
    """
    import importlib.util, json, sys
    spec = importlib.util.spec_from_file_location("dagfile", sys.argv[1])
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    dag = [v for v in vars(mod).values() if type(v).__name__ == "DAG"][0]
    print("PROBE " + json.dumps({t.task_id: sorted(t.upstream_task_ids) for t in dag.tasks}))
    """
)


def airflow_task_parents(tmp_path: Path) -> dict[str, set[str]]:
    home = tmp_path / "airflow-home"
    env = {
        **os.environ, "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", PROBE, str(DAG_FILE)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("PROBE ")][-1]
    return {task: set(up) for task, up in json.loads(line[len("PROBE ") :]).items()}


def kfp_task_parents() -> dict[str, set[str]]:
    """Task -> the tasks it waits for, with a condition's inner tasks waiting for what the condition waits for."""
    import tempfile

    from components.compile import compile_all

    with tempfile.TemporaryDirectory() as out:
        spec = yaml.safe_load(compile_all(Path(out))["lstm_training_pipeline"].read_text())
    parents = {}
    for name, task in spec["root"]["dag"]["tasks"].items():
        deps = set(task.get("dependentTasks", []))
        body = spec["components"][task["componentRef"]["name"]]
        if "dag" in body:  # a dsl.If group: its tasks inherit its dependencies
            parents.update({inner: deps | set(t.get("dependentTasks", [])) for inner, t in body["dag"]["tasks"].items()})
        else:
            parents[name] = deps
    return {task.replace("-", "_"): {p.replace("-", "_") for p in ps} for task, ps in parents.items()}


def test_stage_list_is_ordered_and_consistent():
    seen = set()
    for s in stages.STAGES:
        assert stages.upstream(s.name) <= seen, f"{s.name} consumes a later stage"
        seen.add(s.name)
        source = Path(importlib.util.find_spec(s.module).origin).read_text()  # without importing torch & co.
        assert f"def {s.function_name}(" in source, f"{s.entry} does not exist"
    from pipeline.core import artifacts

    assert [s.produces for s in stages.STAGES][:-1] == [
        artifacts.VALIDATION, artifacts.FEATURES, artifacts.TRAINING, artifacts.BASELINES, artifacts.EVALUATION
    ]  # fmt: skip
    with pytest.raises(KeyError, match="expected one of"):
        stages.stage("deploy")


def test_airflow_dag_and_kfp_components_call_exactly_the_stage_functions():
    dag_calls, kfp_calls = stage_calls(DAG_FILE), stage_calls(STEPS_FILE)
    everything = {s.name for s in stages.STAGES}
    assert set(dag_calls.values()) == everything, f"the DAG calls {sorted(dag_calls.values())}"
    assert set(kfp_calls.values()) == everything, f"the KFP components call {sorted(kfp_calls.values())}"
    assert sorted(dag_calls.values()) == sorted(kfp_calls.values()), "each stage once in both"

    from components.pipelines import COMPONENT_STAGE

    assert {fn: s for fn, s in kfp_calls.items()} == COMPONENT_STAGE


def test_airflow_dag_and_kfp_pipeline_order_the_stages_alike(tmp_path):
    expected = expected_ancestors()
    dag = _stage_graph(airflow_task_parents(tmp_path), stage_calls(DAG_FILE))
    kfp = _stage_graph(kfp_task_parents(), stage_calls(STEPS_FILE))
    assert dag == expected, f"Airflow DAG: {dag}"
    assert kfp == expected, f"KFP pipeline: {kfp}"
    assert "train" not in expected["baselines"] and "baselines" not in expected["train"], "train and baselines run in parallel"
