"""Every DAG file imports, has the expected tasks and edges, and imports nothing heavy.

Parse time is measured by ``benchmarks/bench_dag_parse.py``, not asserted here (a wall-clock
bound flakes on a loaded CI machine).

Runs in a subprocess with a temporary AIRFLOW_HOME so importing Airflow never touches
the user's ~/airflow.
"""

import ast
import json
import subprocess
import sys
import textwrap

import pytest

from tools.airflow_local import DAGS, airflow_env

HEAVY = {"torch", "pandas", "numpy", "mlflow", "sklearn", "great_expectations", "statsforecast", "evidently", "matplotlib"}
DAG_FILES = sorted(DAGS.glob("*.py"))

PROBE = textwrap.dedent(
    """
    import importlib.util, json, sys, time
    import airflow.sdk  # the import cost of Airflow itself is not the DAG file's
    from airflow.sdk import dag, task, Asset, Param, get_current_context
    import airflow.providers.standard.operators.trigger_dagrun, airflow.providers.standard.operators.empty  # Airflow's too
    heavy = set(json.loads(sys.argv[2]))
    before = {m for m in heavy if m in sys.modules}
    t0 = time.perf_counter()
    spec = importlib.util.spec_from_file_location("dagfile", sys.argv[1])
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    seconds = time.perf_counter() - t0
    dags = [v for v in vars(mod).values() if type(v).__name__ == "DAG"]
    out = {
        "seconds": seconds,
        "heavy_loaded": sorted({m for m in heavy if m in sys.modules} - before),
        "dags": {d.dag_id: {t.task_id: sorted(t.downstream_task_ids) for t in d.tasks} for d in dags},
        "meta": {d.dag_id: {"catchup": d.catchup, "max_active_runs": d.max_active_runs, "schedule": str(d.schedule),
                            "pools": {t.task_id: t.pool for t in d.tasks}, "queues": {t.task_id: t.queue for t in d.tasks}} for d in dags},
    }
    print("PROBE " + json.dumps(out))
    """
)


def _probe(path, tmp_path, **extra):
    env = airflow_env(tmp_path / "airflow-home", extra)
    proc = subprocess.run([sys.executable, "-c", PROBE, str(path), json.dumps(sorted(HEAVY))], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{path.name} failed to import:\n{proc.stderr[-3000:]}"
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("PROBE ")][-1]
    return json.loads(line[len("PROBE ") :])


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_dag_file_imports_without_heavy_libraries(path, tmp_path):
    result = _probe(path, tmp_path)
    assert result["dags"], f"{path.name} defines no DAG"
    assert result["heavy_loaded"] == [], f"{path.name} imports {result['heavy_loaded']} at parse time"


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_no_top_level_heavy_imports_in_source(path):
    tree = ast.parse(path.read_text())
    for node in tree.body:
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""] if isinstance(node, ast.ImportFrom) else []
        for name in names:
            assert name.split(".")[0] not in HEAVY, f"{path.name}:{node.lineno} imports {name} at top level"


def test_training_dag_tasks_edges_and_settings(tmp_path):
    result = _probe(DAGS / "lstm_training.py", tmp_path)
    edges = result["dags"]["lstm_training"]
    assert edges == {
        "resolve_config": ["build_features", "compare_to_baselines", "fit_baselines", "register_model", "train_lstm", "validate_schema"],
        "validate_schema": ["build_features", "register_model"],
        "build_features": ["compare_to_baselines", "fit_baselines", "register_model", "train_lstm"],
        "train_lstm": ["compare_to_baselines", "register_model"],
        "fit_baselines": ["compare_to_baselines"],
        "compare_to_baselines": ["register_model"],
        "register_model": [],
    }
    meta = result["meta"]["lstm_training"]
    assert meta["catchup"] is False and meta["max_active_runs"] == 1
    assert "weekly" in meta["schedule"] or "0 0 * * 0" in meta["schedule"]
    assert meta["pools"]["train_lstm"] == "gpu" and meta["queues"]["train_lstm"] == "default"


def test_the_gpu_queue_comes_from_the_environment(tmp_path):
    """Past one machine (README): the Celery workers of the GPU machines listen on ``$LSTM_PIPELINE_GPU_QUEUE``."""
    meta = _probe(DAGS / "lstm_training.py", tmp_path, LSTM_PIPELINE_GPU_QUEUE="gpu")["meta"]["lstm_training"]
    assert meta["queues"]["train_lstm"] == "gpu" and meta["queues"]["fit_baselines"] == "default"


def test_monitoring_dag_resolves_once_then_forecasts_scores_and_branches(tmp_path):
    """``resolve_config`` is its own first task: a retried or cleared ``forecast`` reads the config it fixed."""
    result = _probe(DAGS / "lstm_monitoring.py", tmp_path)
    assert result["dags"]["lstm_monitoring"] == {
        "resolve_config": ["forecast"],
        "forecast": ["score"],
        "score": ["canary", "detect_drift"],
        "canary": ["publish_champion"],
        "publish_champion": [],
        "detect_drift": ["alert", "decide"],
        "decide": ["alert", "branch", "trigger_retrain"],
        "alert": [],
        "branch": ["hold", "trigger_retrain"],
        "trigger_retrain": [],
        "hold": [],
    }
    meta = result["meta"]["lstm_monitoring"]
    assert meta["catchup"] is False and meta["max_active_runs"] == 1
