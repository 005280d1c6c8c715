"""Monitoring DAG: forecast -> score -> detect_drift -> decide -> (trigger_retrain | hold).

Thin wiring over ``pipeline/monitoring.py`` (``lstm-pipeline monitor`` calls the same stage
functions). Every run is a check "as of T" with ``T`` = the run's ``data_interval_end``
(never the wall clock), responsible for the origins in ``[data_interval_start, T)``;
a backfill of this DAG over a past period is a replay of the checks
(``airflow backfill create --dag-id lstm_monitoring --from-date ... --to-date ...``).
``max_active_runs=1``: checks run in order, one at a time.

When the rule fires, ``trigger_retrain`` starts ``lstm_training`` with ``conf``
``{reason, as_of, rolling_rmse, threshold, drift_share, check_id, champion_version}`` under the
deterministic run id ``retrain__<model>_<T>``: a rerun of the same check finds that run and
does not trigger a second one. With no ``champion`` registered, the tasks are skipped
(not failed) and the check row says why.

Params: ``config_path``, ``data_path`` (observations CSV instead of ``data.path``), ``as_of``
and ``since`` (override ``T`` and the first origin, for manual runs and tests).
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from pathlib import Path

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import Param, dag, get_current_context, task

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = os.environ.get("LSTM_PIPELINE_CONFIG", str(ROOT / "configs" / "beijing_pm25.yaml"))


def _schedule(path: str) -> str | None:
    """``monitoring.schedule`` of the default config (the same parse-time read as ``lstm_training``)."""
    import yaml

    try:
        return (yaml.safe_load(Path(path).read_text()).get("monitoring") or {}).get("schedule", "@daily")
    except (OSError, yaml.YAMLError, AttributeError):
        return "@daily"


def _setup() -> tuple:
    """Config, ``T``, first origin and output folder of the current run (the same on every retry)."""
    from pipeline import artifacts
    from pipeline.config import load_config

    ctx = get_current_context()
    params = ctx["params"]
    cfg = load_config(params["config_path"], {"data.path": params.get("data_path")})
    end, start = ctx.get("data_interval_end"), ctx.get("data_interval_start")
    as_of = params.get("as_of") or end or ctx["dag_run"].run_after
    since = params.get("since") or (start if start is not None and end is not None and start < end else None)
    out = artifacts.run_dir(cfg.run.artifact_root, ctx["run_id"]) / "monitoring"
    return cfg, as_of, since, out


@dag(
    dag_id="lstm_monitoring",
    schedule=_schedule(DEFAULT_CONFIG),
    start_date=datetime(2024, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["forecasting", "lstm", "monitoring"],
    params={
        "config_path": Param(DEFAULT_CONFIG, type="string", description="use-case YAML"),
        "data_path": Param(None, type=["null", "string"], description="observations CSV instead of data.path"),
        "as_of": Param(None, type=["null", "string"], description="T (default: data_interval_end)"),
        "since": Param(None, type=["null", "string"], description="first origin (default: data_interval_start)"),
    },
    default_args={"retries": 0},
    doc_md=__doc__,
)
def lstm_monitoring():
    @task(retries=2, retry_delay=timedelta(seconds=30), retry_exponential_backoff=True)
    def forecast() -> dict:
        from airflow.sdk.exceptions import AirflowSkipException

        from pipeline import monitoring

        cfg, as_of, since, out = _setup()
        state = monitoring.forecast(cfg, as_of, since=since, out_dir=out)
        if state["status"] == "no_champion":
            check = monitoring.decide(cfg, state)  # records the check row, then the run skips
            raise AirflowSkipException(check["reasons"][0])
        return state

    @task
    def score(state: dict) -> dict:
        from pipeline import monitoring

        cfg, *_ = _setup()
        return monitoring.score(cfg, state)

    # canary (issue 13): a task here, after `score`, reads ForecastStore.paired_scores for
    # champion vs challenger on the origins both scored and promotes / rejects / rolls back.

    @task
    def detect_drift(state: dict) -> dict:
        from pipeline import monitoring

        cfg, *_ = _setup()
        return monitoring.detect_drift(cfg, state)

    @task(multiple_outputs=True, retries=2, retry_delay=timedelta(seconds=30))
    def decide(state: dict) -> dict:
        from pipeline import monitoring

        cfg, *_ = _setup()
        return monitoring.decide(cfg, state)

    @task.branch
    def branch(decision: str) -> str:
        return "trigger_retrain" if decision == "retrain" else "hold"

    check = decide(detect_drift(score(forecast())))
    trigger = TriggerDagRunOperator(
        task_id="trigger_retrain",
        trigger_dag_id="lstm_training",
        trigger_run_id=check["trigger_run_id"],
        conf=check["conf"],
        skip_when_already_exists=True,  # a rerun of the same check does not trigger twice
    )
    branch(check["decision"]) >> [trigger, EmptyOperator(task_id="hold")]


monitoring_dag = lstm_monitoring()
