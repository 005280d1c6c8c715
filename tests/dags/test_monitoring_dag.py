"""``dag.test()`` of the monitoring DAG with a real Airflow metadata DB and a real MLflow server.

A check whose rule fires creates an ``lstm_training`` run carrying the conf (once, however
often the check is rerun); a check whose rule holds creates none; no champion skips the tasks.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys

import pandas as pd
import pytest
import yaml

from tests.conftest import sine_frame, write_sine_case
from tools.airflow_local import airflow_env, init_airflow, run_dag_test

pytestmark = pytest.mark.slow
MODEL = "dag-monitored-sine"
T0 = pd.Timestamp("2024-01-17 16:00")
T = T0 + pd.Timedelta("3D")


def _write(root, frame, name: str, **mlflow) -> str:
    raw = yaml.safe_load((root / "config.yaml").read_text())
    frame.to_csv(root / f"{name}.csv", index=False)
    raw["data"]["path"] = str(root / f"{name}.csv")
    raw["monitoring"] = {"window": "2D", "min_origins": 24, "max_staleness": "1D", "store_url": f"sqlite:///{root / name}.db"}
    raw["mlflow"].update(mlflow)
    (root / f"{name}.yaml").write_text(yaml.safe_dump(raw))
    return str(root / f"{name}.yaml")


@pytest.fixture(scope="module")
def setup(tmp_path_factory, mlflow_server):
    """An Airflow home whose DB knows both DAGs, and a version trained as of T0."""
    from pipeline.core.config import load_config
    from pipeline.runner import run_training_pipeline

    home = tmp_path_factory.mktemp("airflow-monitoring")
    env = init_airflow(home, airflow_env(home, {"MLFLOW_TRACKING_URI": mlflow_server}))
    proc = subprocess.run([str(os.path.join(os.path.dirname(sys.executable), "airflow")), "dags", "reserialize"], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    root = tmp_path_factory.mktemp("dag-monitoring-case")
    write_sine_case(root, "dag-monitoring", MODEL)
    frame = sine_frame(n=600)
    old = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = mlflow_server
    try:
        result = run_training_pipeline(load_config(_write(root, frame, "train")), root / "artifacts" / "t0", as_of=T0.isoformat())
    finally:
        os.environ.pop("MLFLOW_TRACKING_URI") if old is None else os.environ.__setitem__("MLFLOW_TRACKING_URI", old)
    assert result["registered_version"] == 1
    scaled = frame.copy()
    after = pd.to_datetime(scaled["time"]) >= T0
    scaled.loc[after, "load"] = scaled.loc[after, "load"] * 3
    return {"env": env, "home": home, "root": root, "frame": frame, "scaled": scaled}


def _training_runs(home) -> dict[str, dict]:
    db = sqlite3.connect(home / "airflow.db")
    rows = db.execute("select run_id, conf from dag_run where dag_id = 'lstm_training'").fetchall()
    return {run_id: (json.loads(conf) if isinstance(conf, str) else conf) for run_id, conf in rows}


def _monitor(setup, config: str) -> dict:
    conf = {"config_path": config, "as_of": T.isoformat(), "since": T0.isoformat()}
    return run_dag_test("lstm_monitoring", conf, setup["env"])


def test_a_firing_rule_triggers_lstm_training_once_with_the_conf(setup):
    config = _write(setup["root"], setup["scaled"], "scaled")
    result = _monitor(setup, config)
    assert result["tasks"]["decide"] == "success", result["log"][-5000:]
    assert result["tasks"]["trigger_retrain"] == "success" and result["tasks"]["hold"] == "skipped", result["tasks"]
    # canary (issue 13): the first version leaves the canary, champion does not move, no Asset event
    assert result["tasks"]["canary"] == "success" and result["tasks"]["publish_champion"] == "skipped", result["tasks"]
    runs = _training_runs(setup["home"])
    run_id = "retrain__dag-monitored-sine_2024-01-20T16_00_00"
    assert list(runs) == [run_id]
    conf = runs[run_id]
    assert conf["as_of"] == T.isoformat() and conf["check_id"] == f"{MODEL}@{T.isoformat()}"
    assert conf["reason"].startswith("monitoring rmse: rolling RMSE") and conf["rolling_rmse"] > conf["threshold"]
    assert conf["config_path"] == config and conf["data_path"].endswith("scaled.csv")
    again = _monitor(setup, config)  # the same check rerun: no second training run
    assert again["tasks"]["decide"] == "success", again["log"][-5000:]
    assert again["tasks"]["trigger_retrain"] in ("success", "skipped"), again["tasks"]  # found the run, did not fail
    assert list(_training_runs(setup["home"])) == [run_id]


def test_a_holding_rule_triggers_nothing(setup):
    before = _training_runs(setup["home"])
    result = _monitor(setup, _write(setup["root"], setup["frame"], "clean"))
    assert result["tasks"]["decide"] == "success", result["log"][-5000:]
    assert result["tasks"]["hold"] == "success" and result["tasks"]["trigger_retrain"] == "skipped", result["tasks"]
    assert "decision ok" in result["log"]
    assert result["tasks"]["alert"] == "skipped", result["tasks"]  # no data fault: no notifier call
    assert _training_runs(setup["home"]) == before


def test_a_data_fault_holds_the_retrain_and_the_alert_task_logs_and_notifies(setup):
    """The target x3 fires the rule; temp x1000 over the last 10 h is a data fault: no lstm_training run."""
    before = _training_runs(setup["home"])
    frame = setup["scaled"].copy()
    frame.loc[pd.to_datetime(frame["time"]) >= T - pd.Timedelta("10h"), "temp"] *= 1000
    result = _monitor(setup, _write(setup["root"], frame, "unit_change"))
    assert result["tasks"]["decide"] == "success", result["log"][-5000:]
    assert result["tasks"]["hold"] == "success" and result["tasks"]["trigger_retrain"] == "skipped", result["tasks"]
    assert result["tasks"]["alert"] == "success", result["tasks"]
    assert "decision data_fault" in result["log"] and "DATA FAULT ALERT" in result["log"] and "'temp'" in result["log"]
    assert _training_runs(setup["home"]) == before


def test_no_champion_skips_the_tasks_and_says_why(setup):
    result = _monitor(setup, _write(setup["root"], setup["frame"], "nochamp", registered_model_name="not-registered"))
    assert result["tasks"]["forecast"] == "skipped", result["log"][-5000:]
    assert result["tasks"].pop("resolve_config") == "success"  # the config, T and first origin, fixed before the skip
    assert all(state == "skipped" for state in result["tasks"].values()), result["tasks"]
    assert "has no version with alias 'champion'" in result["log"]
