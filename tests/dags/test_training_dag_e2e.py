"""``dag.test()`` of the training DAG with a real Airflow metadata DB and a real MLflow server."""

import json
import sqlite3

import pytest

from tests.conftest import sine_frame, write_sine_case
from tools.airflow_local import airflow_env, init_airflow, run_dag_test

pytestmark = pytest.mark.slow
MODEL = "dag-sine-lstm"


@pytest.fixture(scope="module")
def airflow_home(tmp_path_factory, mlflow_server):
    home = tmp_path_factory.mktemp("airflow")
    env = init_airflow(home, airflow_env(home, {"MLFLOW_TRACKING_URI": mlflow_server}))
    return home, env


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    root = tmp_path_factory.mktemp("dagcase")
    write_sine_case(root, "dag-e2e", MODEL)
    return root


@pytest.fixture(scope="module")
def first_run(airflow_home, case):
    _, env = airflow_home
    return run_dag_test("lstm_training", {"config_path": str(case / "config.yaml"), "reason": "e2e-test"}, env)


def _run_dirs(case):
    return [p for p in (case / "artifacts").iterdir() if not p.name.startswith(".")]


def _client(uri):
    import mlflow

    mlflow.set_tracking_uri(uri)
    return mlflow.tracking.MlflowClient()


def test_training_dag_runs_every_task_and_registers_a_champion(first_run, mlflow_server, case):
    assert first_run["state"] == "success", first_run["log"][-4000:]
    assert first_run["tasks"] == {t: "success" for t in ("resolve_config", "validate_schema", "build_features", "train_lstm", "fit_baselines", "compare_to_baselines", "register_model")}
    client = _client(mlflow_server)
    mv = client.get_model_version_by_alias(MODEL, "champion")
    assert mv.version == "1" and sorted(mv.aliases) == ["challenger", "champion"]
    run = client.get_run(mv.run_id)
    assert run.data.tags["airflow_dag_id"] == "lstm_training" and run.data.tags["trigger.reason"] == "e2e-test"
    assert run.data.tags["airflow_run_id"] == first_run["run_id"]
    run_dirs = _run_dirs(case)
    assert len(run_dirs) == 1 and (run_dirs[0] / "training" / "model.pt").is_file()
    resolved = json.loads((run_dirs[0] / "config" / "resolved.json").read_text())
    assert resolved["mlflow"]["registered_model_name"] == MODEL  # every task read this one file


def test_registration_emits_the_asset_of_the_model_the_run_used(first_run, airflow_home):
    home, _ = airflow_home
    with sqlite3.connect(home / "airflow.db") as db:
        uris = {row[0] for row in db.execute("SELECT a.uri FROM asset_event e JOIN asset a ON a.id = e.asset_id")}
    assert f"mlflow://models/{MODEL}@challenger" in uris, uris


def test_invalid_data_fails_validate_schema_and_touches_nothing(first_run, airflow_home, mlflow_server, case):
    _, env = airflow_home
    good_run = _run_dirs(case)[0]
    before = {p: p.stat().st_mtime_ns for p in good_run.rglob("*")}
    bad = case / "bad.csv"
    frame = sine_frame(n=400)
    frame["load"] = frame["load"].astype(object)
    frame.loc[50, "load"] = "n/a?"
    frame.to_csv(bad, index=False)
    result = run_dag_test("lstm_training", {"config_path": str(case / "config.yaml"), "data_path": str(bad)}, env)
    assert result["tasks"]["validate_schema"] == "failed"
    for downstream in ("build_features", "train_lstm", "fit_baselines", "compare_to_baselines", "register_model"):
        assert result["tasks"][downstream] == "upstream_failed", (downstream, result["tasks"])
    assert "expect_column_values_to_match_regex" in result["log"] and "line 52" in result["log"]
    client = _client(mlflow_server)
    assert len(client.search_model_versions(f"name='{MODEL}'")) == 1
    assert client.get_model_version_by_alias(MODEL, "champion").version == "1"
    assert {p: p.stat().st_mtime_ns for p in good_run.rglob("*")} == before
    assert len(_run_dirs(case)) == 2  # the failed run wrote only into its own folder


def test_the_task_log_holds_the_pipeline_lines_make_demo_echoes(first_run):
    from tools.airflow_local import _progress_line

    shown = [short for line in first_run["log"].splitlines() if (short := _progress_line(line))]
    assert any("training stopped by" in s for s in shown), "\n".join(shown[-40:])  # pipeline.training.lstm's INFO line
