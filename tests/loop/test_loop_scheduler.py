"""The closed loop under the real scheduler (issue 14 item 3): detect, retrain, canary, promote.

``airflow standalone`` as ``make airflow`` starts it (LocalExecutor, fresh ``AIRFLOW_HOME``,
loopback), a real ``mlflow server`` and a real forecast store (SQLite). The data: a tiny
hourly sine (``tests.conftest.sine_frame``) and a copy of it whose target is multiplied by 3
from ``T0`` on (``pipeline.loop.scenarios``, a sensor recalibration).

1. The champion is trained in-process as of ``T0`` (clean rows only) while Airflow starts.
2. The monitoring DAG runs over the interval ``[T1 - 1 day, T1)``, as the scheduler would create
   it (explicit data interval). The fault started 8 days before ``T1`` (the checks resumed
   after an outage), so the retrain it triggers trains on data that holds the fault in its
   training part too, not only in its test part (docs/BENCHMARKS.md, "What the measurements
   say", item 3): the retrained model can genuinely beat the champion.
3. That check triggers ``lstm_training`` under the deterministic run id, which succeeds and
   registers version 2 as ``challenger``.
4. The next check, ``[T1, T2)``, shadow-scores the challenger on 24 new origins; the canary
   promotes it (Diebold-Mariano significant), which moves ``champion``, records the alias
   events in the store and the canary tags on the version, and emits the ``champion`` Asset event.

Everything is asserted on the MLflow registry, the forecast store and Airflow's REST API,
never on log text.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pandas as pd
import pytest
import yaml

from tests.conftest import FAST_MODEL, FAST_TRAINING, sine_frame, tiny_config_dict
from tests.loop.conftest import start_airflow, wait_ready

pytestmark = pytest.mark.slow

MODEL = "loop-sched-sine"
DAY = pd.Timedelta("1D")
T0 = pd.Timestamp("2024-01-07")  # the champion's as-of and the fault's start
T1 = pd.Timestamp("2024-01-15")  # first check: 8 days of faulty data before it
T2 = T1 + DAY  # the canary's check: origins [T1, T2)
RUN_TIMEOUT = 600  # seconds for one DAG run on a busy 2-core machine (a failure to finish, not a timing check)


@pytest.fixture
def case(tmp_path):
    """Clean CSV, its x3-from-T0 copy (the observations the DAGs read) and the config naming that copy."""
    from pipeline.data.io import read_raw
    from pipeline.loop.scenarios import Scenario, apply_scenario, write_scenario_data

    clean = tmp_path / "clean.csv"
    sine_frame(n=int((T2 - pd.Timestamp("2024-01-01")) / pd.Timedelta("1h"))).to_csv(clean, index=False)
    raw = tiny_config_dict(
        clean,
        tmp_path / "artifacts",
        features={"lookback": 24, "horizon": 4},
        training={**FAST_TRAINING, "num_threads": 1},
        model=FAST_MODEL,
    )
    raw["baselines"] = {"models": ["Naive"], "season_length": 24, "n_jobs": 1, "progress": False}
    raw["mlflow"] = {"experiment_name": "loop-sched", "registered_model_name": MODEL}
    raw["monitoring"] = {"window": "1D", "min_origins": 12, "cooldown": "3D", "store_url": f"sqlite:///{tmp_path / 'store.db'}"}
    raw["canary"] = {"min_origins": 12, "max_origins": 48, "rollback_origins": 12}
    (tmp_path / "clean.yaml").write_text(yaml.safe_dump(raw))

    from pipeline.core.config import load_config

    scenario = Scenario(name="recalibration_x3", kind="scale", factor=3.0)
    drifted = apply_scenario(read_raw(load_config(tmp_path / "clean.yaml").data), scenario, T0, "time", "load")
    observations = write_scenario_data(drifted, tmp_path / "observations.csv")
    raw["data"]["path"] = str(observations)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(raw))
    return {
        "config": tmp_path / "config.yaml",
        "clean": clean,
        "observations": observations,
        "store_url": raw["monitoring"]["store_url"],
    }


def _train_champion(case: dict, run_dir) -> dict:
    """Version 1, trained in-process on the clean rows before ``T0`` (``train --as-of T0``)."""
    from pipeline.core.config import load_config
    from pipeline.runner import run_training_pipeline

    cfg = load_config(case["config"])
    return run_training_pipeline(cfg, run_dir, data_path=case["clean"], as_of=T0, tags={"trigger.reason": "initial champion"})


def _check_run(T: pd.Timestamp) -> str:
    """The monitoring run's id: the check's ``T`` (a rerun of the same check would be refused, not duplicated)."""
    return f"check__{T:%Y-%m-%dT%H%M}"


def _checks(store) -> dict[str, dict]:
    return {c["as_of"]: c for c in store.last_checks(MODEL, 10)}


def test_monitoring_triggers_a_retrain_whose_challenger_the_canary_promotes(case, tmp_path, mlflow_server, monkeypatch):
    import mlflow
    from pipeline.loop.monitoring import check_id, trigger_run_id
    from pipeline.store.sql import ForecastStore

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    env = {"LSTM_PIPELINE_CONFIG": str(case["config"]), "MLFLOW_TRACKING_URI": mlflow_server,
           "LSTM_PIPELINE_MONITORING_SCHEDULE": "none", "LSTM_PIPELINE_TRAINING_SCHEDULE": "none"}  # fmt: skip
    client = mlflow.tracking.MlflowClient(mlflow_server)
    store = ForecastStore(case["store_url"])
    log = tmp_path / "standalone.log"
    with ThreadPoolExecutor(1) as pool:
        initial = pool.submit(_train_champion, case, tmp_path / "artifacts" / "initial")  # while Airflow migrates and starts
        with start_airflow(tmp_path / "airflow", log, env) as (proc, base):
            api = wait_ready(proc, base, log, ("lstm_monitoring", "lstm_training"))
            assert initial.result()["registered_version"] == 1, initial.result()

            # 1. the check as of T1 fires the rule and triggers lstm_training under its deterministic run id
            first = api.wait_finished(
                "lstm_monitoring", api.trigger("lstm_monitoring", T1 - DAY, T1, run_id=_check_run(T1)), RUN_TIMEOUT
            )
            assert first["state"] == "success", first["tasks"]
            assert first["tasks"]["trigger_retrain"] == "success" and first["tasks"]["hold"] == "skipped", first["tasks"]
            check = _checks(store)[T1.isoformat()]
            assert check["decision"] == "retrain" and check["rolling_rmse"] > check["threshold"], check
            assert check["champion_version"] == 1 and check["trigger_run_id"] == trigger_run_id(check_id(MODEL, T1))

            # 2. that training run succeeds and registers version 2 as challenger; champion stays v1
            retrain = api.wait_finished("lstm_training", check["trigger_run_id"], RUN_TIMEOUT)
            assert retrain["state"] == "success", retrain["tasks"]
            assert retrain["conf"]["as_of"] == T1.isoformat() and retrain["conf"]["check_id"] == check_id(MODEL, T1)
            assert retrain["logical_date"] is None, retrain  # T travels in the conf: a logical date could clash with a scheduled run
            assert client.get_model_version_by_alias(MODEL, "champion").version == "1"
            challenger = client.get_model_version_by_alias(MODEL, "challenger")
            assert challenger.version == "2"
            tags = client.get_run(challenger.run_id).data.tags
            assert tags["airflow_run_id"] == check["trigger_run_id"] and tags["trigger.check_id"] == check_id(MODEL, T1)
            assert tags["trigger.as_of"] == T1.isoformat()

            # a rerun of the check's trigger (an operator clears the task) finds that run and triggers nothing
            again = api.rerun_task("lstm_monitoring", first["dag_run_id"], "trigger_retrain", RUN_TIMEOUT)
            assert again["state"] in ("success", "skipped"), again
            assert api.dag_run("lstm_monitoring", first["dag_run_id"])["state"] == "success"

            # 3. the next check shadow-scores the challenger; the canary promotes it
            second = api.wait_finished(
                "lstm_monitoring", api.trigger("lstm_monitoring", T1, T2, run_id=_check_run(T2)), RUN_TIMEOUT
            )
            assert second["state"] == "success", second["tasks"]
            assert second["tasks"]["canary"] == "success" and second["tasks"]["publish_champion"] == "success", second["tasks"]
            registered = api.asset_events(source_dag_id="lstm_training", source_run_id=check["trigger_run_id"])
            promoted = api.asset_events(source_dag_id="lstm_monitoring", source_run_id=second["dag_run_id"])
            training_runs = [r["dag_run_id"] for r in api.call("GET", "/dags/lstm_training/dagRuns")["dag_runs"]]

    # the check at T2 held its rule: the challenger was in its canary when the check began
    held = _checks(store)[T2.isoformat()]
    assert held["decision"] == "cooldown" and held["versions"]["challenger"] == 2, held
    assert training_runs == [check["trigger_run_id"]]  # one retrain in all

    # the registry: champion moved to v2, the old one kept as previous_champion, challenger gone
    aliases = client.get_registered_model(MODEL).aliases
    assert aliases == {"champion": "2", "previous_champion": "1"}, aliases
    v2 = client.get_model_version(MODEL, "2").tags
    assert v2["canary"] == "promoted" and v2["canary_reason"].startswith("promote: significantly better"), v2
    assert v2["canary_as_of"] == T2.isoformat() and float(v2["canary_rmse_b"]) < float(v2["canary_rmse_a"])

    # the store: one promote transaction at T2, one event per alias that changed
    moves = {(e["alias"], e["from_version"], e["to_version"]) for e in store.alias_events(MODEL) if e["action"] == "promote"}
    assert moves == {("champion", 1, 2), ("previous_champion", None, 1), ("challenger", 2, None)}
    promote = [e for e in store.alias_events(MODEL) if e["action"] == "promote"]
    assert {pd.Timestamp(e["as_of"]) for e in promote} == {T2}
    assert promote[0]["evidence"]["challenger_version"] == 2 and promote[0]["evidence"]["n_origins"] >= 12

    # Airflow: the retrain emitted the challenger Asset, the canary's run the champion Asset saying what moved
    assert [e["uri"] for e in registered] == [f"mlflow://models/{MODEL}@challenger"]
    assert [(e["uri"], e["extra"]["from_version"], e["extra"]["to_version"], e["extra"]["action"]) for e in promoted] == [
        (f"mlflow://models/{MODEL}@champion", 1, 2, "promote")
    ]
