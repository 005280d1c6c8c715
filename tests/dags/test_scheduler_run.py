"""The training DAG under the real scheduler: ``airflow standalone`` on loopback.

Unpausing runs the latest scheduled interval (``catchup=False``) and a manual trigger
with ``conf`` queues behind it (``max_active_runs=1``); both must finish, register in
MLflow, and record the trigger's conf as a tag. This is what ``make airflow`` starts.
"""

import subprocess

import pytest

from tests.conftest import _free_port, stop_process_group, write_sine_case
from tests.loop.conftest import AirflowApi, healthy, wait_for
from tools.airflow_local import standalone_command

pytestmark = pytest.mark.slow
MODEL = "sched-sine-lstm"


@pytest.fixture
def scheduler(tmp_path, mlflow_server):
    (tmp_path / "case").mkdir()
    config = write_sine_case(tmp_path / "case", "sched-e2e", MODEL)
    port = _free_port()
    cmd, env = standalone_command(tmp_path / "airflow", "127.0.0.1", port, {"LSTM_PIPELINE_CONFIG": str(config), "MLFLOW_TRACKING_URI": mlflow_server})
    log = open(tmp_path / "standalone.log", "w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: healthy(base) or proc.poll() is not None, 180, "airflow standalone to be healthy")
        assert proc.poll() is None, (tmp_path / "standalone.log").read_text()[-3000:]
        yield AirflowApi(base), config
    finally:
        stop_process_group(proc)
        log.close()


def test_scheduled_and_triggered_runs_go_through_the_real_scheduler(scheduler, mlflow_server):
    api, config = scheduler
    wait_for(lambda: any(d["dag_id"] == "lstm_training" for d in api.call("GET", "/dags")["dags"]), 120, "the DAG to be parsed")
    api.call("PATCH", "/dags/lstm_training", {"is_paused": False})
    manual = api.call("POST", "/dags/lstm_training/dagRuns", {"logical_date": None, "conf": {"config_path": str(config), "reason": "drift"}})

    def finished():
        runs = api.call("GET", "/dags/lstm_training/dagRuns")["dag_runs"]
        done = [r for r in runs if r["state"] in ("success", "failed")]
        return runs if len(runs) >= 2 and len(done) == len(runs) else None

    runs = wait_for(finished, 600, "both DAG runs to finish")
    assert {r["state"] for r in runs} == {"success"}, runs
    assert {r["run_type"] for r in runs} == {"scheduled", "manual"}
    tis = api.call("GET", f"/dags/lstm_training/dagRuns/{manual['dag_run_id']}/taskInstances")["task_instances"]
    assert {t["task_id"]: t["state"] for t in tis} == dict.fromkeys(
        ["resolve_config", "validate_schema", "build_features", "train_lstm", "fit_baselines", "compare_to_baselines", "register_model"], "success"
    )
    assert {t["task_id"]: t["pool"] for t in tis}["train_lstm"] == "gpu"

    import mlflow

    mlflow.set_tracking_uri(mlflow_server)
    client = mlflow.tracking.MlflowClient()
    versions = client.search_model_versions(f"name='{MODEL}'")
    assert len(versions) == 2
    reasons = {client.get_run(v.run_id).data.tags.get("trigger.reason") for v in versions}
    assert "drift" in reasons
    assert client.get_model_version_by_alias(MODEL, "champion").version == "1"
