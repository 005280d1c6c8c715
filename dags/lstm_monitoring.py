"""Monitoring DAG: resolve_config -> forecast -> score -> detect_drift -> decide -> (trigger_retrain | hold)
and decide -> alert, and score -> canary -> publish_champion.

Thin wiring over ``pipeline/loop/monitoring.py`` (``lstm-pipeline monitor`` calls the same stage
functions). Every run is a check "as of T" with ``T`` = the run's ``data_interval_end``
(never the wall clock), responsible for the origins in ``[data_interval_start, T)`` when the run
has a data interval, else (Airflow 3's cron timetables give a scheduled run an empty one) since
the previous check, at most ``monitoring.window`` back;
a backfill of this DAG over a past period is a replay of the checks
(``airflow backfill create --dag-id lstm_monitoring --from-date ... --to-date ... --max-active-runs 1``:
a backfill has its own limit, 10 unless given). ``max_active_runs=1``: checks run in order, one at a time.

When the rule fires, ``trigger_retrain`` starts ``lstm_training`` with ``conf``
``{reason, as_of, rolling_rmse, threshold, drift_share, check_id, champion_version, config_path,
data_path}`` under the
deterministic run id ``retrain__<model>_<T>``: a rerun of the same check finds that run and
does not trigger a second one. With no ``champion`` registered, the tasks are skipped
(not failed) and the check row says why.

A data fault (the target or a covariate changed units, stuck, or left its range;
``pipeline/loop/data_faults.py``) is the decision ``data_fault``: no retrain. ``alert`` then
writes one WARNING line per fault to its task log and calls the notifier
``monitoring.alerts.notifier`` (default ``pipeline.loop.notifiers.LogNotifier``, the log);
it is skipped when the check found none. ``lstm-pipeline alerts`` lists them from the store.

``canary`` (``pipeline/loop/promotion.py``) decides on the challenger and watches a fresh
promotion against ``previous_champion``; ``publish_champion`` emits the ``champion`` Asset
event (extra: action, from/to version, reason, as_of) when ``champion`` moved, and is
skipped otherwise.

Nothing is read at parse time: the schedule is ``$LSTM_PIPELINE_MONITORING_SCHEDULE`` (default
``@daily``; ``none`` for triggered runs only), the first task (``resolve_config``) resolves the
config, ``T`` and the first origin once per run (``<run>/config/resolved.json``, read by every
later task and retry; clear ``resolve_config`` to pick up an edited YAML), and the ``champion`` Asset of the
model that config names is emitted through the asset alias ``lstm_champion``.

Params: ``config_path``, ``data_path`` (observations CSV instead of ``data.path``), ``as_of``
and ``since`` (override ``T`` and the first origin, for manual runs and tests).
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from pathlib import Path

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import Asset, AssetAlias, Param, dag, get_current_context, task

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = os.environ.get("LSTM_PIPELINE_CONFIG", str(ROOT / "configs" / "beijing_pm25.yaml"))


_SCHEDULE = os.environ.get("LSTM_PIPELINE_MONITORING_SCHEDULE", "@daily")
SCHEDULE = None if _SCHEDULE.lower() in ("", "none") else _SCHEDULE
#: the ``champion`` Asset of the model the run's config names (``mlflow://models/<name>@champion``),
#: emitted through this alias when the canary moved ``champion``
CHAMPION_ALIAS = AssetAlias("lstm_champion")


def _resolve() -> dict:
    """Resolve the run's config, ``T`` and first origin once (the first task): what every later task and retry reads."""
    from pipeline.core import artifacts
    from pipeline.core.config import load_config, save_resolved

    ctx = get_current_context()
    params = ctx["params"]
    cfg = load_config(params["config_path"], {"data.path": params.get("data_path")})
    end, start = ctx.get("data_interval_end"), ctx.get("data_interval_start")
    as_of = params.get("as_of") or end or ctx["dag_run"].run_after
    since = params.get("since") or (start if start is not None and end is not None and start < end else None)
    run = artifacts.dag_run_dir(cfg.run.artifact_root, ctx["dag"].dag_id, ctx["run_id"])
    resolved = save_resolved(cfg, artifacts.resolved_config_path(run))
    return {"resolved_config": str(resolved), "as_of": _text(as_of), "since": _text(since), "out_dir": str(run / "monitoring")}


def _text(when) -> str | None:
    """A param (already text) or a context datetime as ISO 8601 text with its offset (XComs travel as JSON)."""
    return None if when is None else when if isinstance(when, str) else when.isoformat()


def _cfg(state: dict):
    """The config the run's first task resolved (every later task and retry reads that one file)."""
    from pipeline.core.config import load_resolved

    return load_resolved(state["resolved_config"])


@dag(
    dag_id="lstm_monitoring",
    schedule=SCHEDULE,
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
    @task(retries=2, retry_delay=timedelta(seconds=30))
    def resolve_config() -> dict:
        """The config, ``T`` and first origin, resolved once: clear this task to pick up an edited YAML."""
        return _resolve()

    @task(retries=2, retry_delay=timedelta(seconds=30), retry_exponential_backoff=True)
    def forecast(resolved: dict) -> dict:
        """The champion's forecasts as of ``T`` (a retry reads the same resolved config as the first try)."""
        from pathlib import Path

        from airflow.sdk.exceptions import AirflowSkipException

        from pipeline.loop import monitoring

        cfg = _cfg(resolved)
        state = {**monitoring.forecast(cfg, resolved["as_of"], since=resolved["since"], out_dir=Path(resolved["out_dir"])),
                 "resolved_config": resolved["resolved_config"]}  # fmt: skip
        if state["status"] == "no_champion":
            check = monitoring.decide(cfg, state)  # records the check row, then the run skips
            raise AirflowSkipException(check["reasons"][0])
        return state

    @task
    def score(state: dict) -> dict:
        from pipeline.loop import monitoring

        return monitoring.score(_cfg(state), state)

    @task(retries=1, retry_delay=timedelta(seconds=30))
    def canary(state: dict) -> dict:
        """Champion vs challenger (and the rollback watch) on the paired scored origins: promote / reject / roll back."""
        from pipeline.loop.promotion import run_canary
        from pipeline.store.sql import store_for

        cfg = _cfg(state)
        retry = get_current_context()["ti"].try_number > 1  # an earlier try may have moved champion and failed after
        return run_canary(cfg, state["as_of"], store_for(cfg), republish=retry)

    @task(outlets=[CHAMPION_ALIAS])
    def publish_champion(result: dict) -> dict:
        """Emits the ``champion`` Asset event only when the canary moved ``champion`` (skipped otherwise)."""
        from airflow.sdk.exceptions import AirflowSkipException

        if not result.get("outlet"):
            raise AirflowSkipException("champion did not move")
        event = get_current_context()["outlet_events"][CHAMPION_ALIAS]
        event.add(Asset(result["outlet"]["uri"]), extra=result["outlet"]["extra"])
        return result["outlet"]

    @task
    def detect_drift(state: dict) -> dict:
        from pipeline.loop import monitoring

        return monitoring.detect_drift(_cfg(state), state)

    @task(multiple_outputs=True, retries=2, retry_delay=timedelta(seconds=30))
    def decide(state: dict) -> dict:
        from pipeline.loop import monitoring

        return monitoring.decide(_cfg(state), state)

    @task(retries=1, retry_delay=timedelta(seconds=30))
    def alert(state: dict, check_id: str, faults: list) -> int:
        """Data faults: a WARNING line each in this log, then the configured notifier (skipped when none)."""
        from airflow.sdk.exceptions import AirflowSkipException

        from pipeline.loop import notifiers

        if not faults:
            raise AirflowSkipException("no data fault")
        return notifiers.alert(_cfg(state), {"check_id": check_id, "data_faults": faults}, get_current_context())

    @task.branch
    def branch(decision: str) -> str:
        return "trigger_retrain" if decision == "retrain" else "hold"

    scored = score(forecast(resolve_config()))
    publish_champion(canary(scored))
    drifted = detect_drift(scored)
    check = decide(drifted)
    alert(drifted, check["check_id"], check["data_faults"])
    trigger_retrain = TriggerDagRunOperator(
        task_id="trigger_retrain",
        trigger_dag_id="lstm_training",
        trigger_run_id=check["trigger_run_id"],
        conf=check["conf"],
        # no logical date: Airflow 3 keeps (dag_id, logical_date) unique, and T on a Sunday midnight is the weekly
        # scheduled training's; the retrain's T travels in its conf (``as_of``), which the training DAG reads
        logical_date=None,
        skip_when_already_exists=True,  # a rerun of the same check does not trigger twice
    )
    branch(check["decision"]) >> [trigger_retrain, EmptyOperator(task_id="hold")]


monitoring_dag = lstm_monitoring()
