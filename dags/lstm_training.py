"""Training DAG: resolve_config -> validate_schema -> build_features -> (train_lstm | fit_baselines)
-> compare_to_baselines -> register_model.

Thin wiring over ``pipeline/``: each task runs one stage of ``pipeline.stages.STAGES`` (the
list the CLI runner and the Kubeflow pipeline follow) through ``pipeline.stages.run_stage``,
with its inputs from the upstream tasks' XComs. XCom carries paths and small numbers; artifacts live under ``<artifact_root>/<dag_id>__<run_id>/``. Heavy
libraries are imported inside the tasks, and nothing is read at parse time: the scheduler
parses this file in a loop.

Config: DAG param ``config_path`` (default ``$LSTM_PIPELINE_CONFIG`` or
``configs/beijing_pm25.yaml``), optional ``data_path`` and ``as_of`` (train, validate and
test on rows with ``ds < as_of`` only: set by a monitoring trigger). The first task resolves the
config once per run and writes it into the run folder; every later task (and every retry)
reads that file, so an edit of the YAML mid-run changes nothing. Schedule:
``$LSTM_PIPELINE_TRAINING_SCHEDULE`` (default ``@weekly``; ``none`` for triggered runs only);
``train_lstm``'s executor queue is ``$LSTM_PIPELINE_GPU_QUEUE`` (default ``default``).
A registration emits ``mlflow://models/<registered_model_name>@challenger`` through the
asset alias ``lstm_challenger``, for the model of the config the run actually used.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from pathlib import Path

from airflow.sdk import Asset, AssetAlias, Param, dag, get_current_context, task

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = os.environ.get("LSTM_PIPELINE_CONFIG", str(ROOT / "configs" / "beijing_pm25.yaml"))
_SCHEDULE = os.environ.get("LSTM_PIPELINE_TRAINING_SCHEDULE", "@weekly")
SCHEDULE = None if _SCHEDULE.lower() in ("", "none") else _SCHEDULE
#: the executor queue of ``train_lstm`` (CeleryExecutor: the GPU machines' workers listen on it)
GPU_QUEUE = os.environ.get("LSTM_PIPELINE_GPU_QUEUE") or "default"
CHALLENGER_ALIAS = AssetAlias("lstm_challenger")


def _run(resolved: dict) -> tuple:
    """The config this run resolved in ``resolve_config``, its run folder, and the task context."""
    from pipeline.core.config import load_resolved

    return load_resolved(resolved["config"]), Path(resolved["run_dir"]), get_current_context()


def _stage(name: str, resolved: dict, results: dict, **options) -> dict:
    """Run stage ``name`` of ``pipeline.stages.STAGES`` with its inputs from upstream XComs (``results``)."""
    from pipeline.stages import run_stage

    cfg, run, _ = _run(resolved)
    return run_stage(name, cfg, run, results, **options)


@dag(
    dag_id="lstm_training",
    schedule=SCHEDULE,
    start_date=datetime(2024, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["forecasting", "lstm"],
    params={
        "config_path": Param(DEFAULT_CONFIG, type="string", description="use-case YAML"),
        "data_path": Param(None, type=["null", "string"], description="CSV to use instead of data.path"),
        "as_of": Param(None, type=["null", "string"], description="train on rows with ds < as_of only (ISO timestamp; set by a monitoring trigger)"),
    },
    default_args={"retries": 0},  # data errors are deterministic: retrying them only delays the alert
    doc_md=__doc__,
)
def lstm_training():
    @task(retries=2, retry_delay=timedelta(seconds=30))  # idempotent; a finetune downloads the champion from MLflow
    def resolve_config() -> dict:
        from pipeline.core import artifacts
        from pipeline.core.config import load_config, save_resolved

        ctx = get_current_context()
        params = ctx["params"]
        cfg = load_config(params["config_path"], {"data.path": params.get("data_path")})
        run = artifacts.dag_run_dir(cfg.run.artifact_root, ctx["dag"].dag_id, ctx["run_id"])
        conf = (ctx["dag_run"].conf or {}) if ctx.get("dag_run") else {}
        if conf.get("check_id"):  # a monitoring trigger
            from pipeline.loop.finetune import start_from_champion
            from pipeline.loop.monitoring import retrain_config

            cfg = retrain_config(cfg)  # retrain.mode (default refit: train through T up to a validation tail)
            cfg = start_from_champion(cfg, run, conf.get("champion_version"))  # finetune: copy the champion it starts from
        path = save_resolved(cfg, artifacts.resolved_config_path(run))
        return {"config": str(path), "run_dir": str(run), "as_of": params.get("as_of")}

    @task
    def validate_schema(resolved: dict) -> dict:
        return _stage("validate", resolved, {}, as_of=resolved.get("as_of"))

    @task
    def build_features(resolved: dict, validated: dict) -> dict:
        return _stage("features", resolved, {"validate": validated})

    @task(pool="gpu", queue=GPU_QUEUE, retries=2, retry_delay=timedelta(seconds=30), retry_exponential_backoff=True)
    def train_lstm(resolved: dict, features: dict) -> dict:
        return _stage("train", resolved, {"features": features})  # resumes from its checkpoint on a retry

    @task
    def fit_baselines(resolved: dict, features: dict) -> dict:
        return _stage("baselines", resolved, {"features": features})

    @task
    def compare_to_baselines(resolved: dict, features: dict, trained: dict, baselines: dict) -> dict:
        return _stage("compare", resolved, {"features": features, "train": trained, "baselines": baselines})

    @task(outlets=[CHALLENGER_ALIAS], retries=1, retry_delay=timedelta(seconds=30))
    def register_model(resolved: dict, validated: dict, features: dict, trained: dict, compared: dict) -> dict:
        from airflow.sdk.exceptions import AirflowSkipException

        ctx = get_current_context()
        conf = (ctx["dag_run"].conf or {}) if ctx.get("dag_run") else {}
        tags = {"airflow_dag_id": ctx["dag"].dag_id, "airflow_run_id": ctx["run_id"], **{f"trigger.{k}": str(v) for k, v in conf.items() if v is not None}}
        results = {"validate": validated, "features": features, "train": trained, "compare": compared}
        result = _stage("register", resolved, results, tags=tags)
        if "registered_version" not in result:
            raise AirflowSkipException(f"registration {result['registration']} (MLflow run {result['mlflow_run_id']})")
        if "challenger" in result.get("aliases", ()):  # a newer challenger, or a version that left the canary: no event
            ctx["outlet_events"][CHALLENGER_ALIAS].add(Asset(f"mlflow://models/{result['registered_model']}@challenger"))
        return result

    resolved = resolve_config()
    validated = validate_schema(resolved)
    features = build_features(resolved, validated)
    trained, baselines = train_lstm(resolved, features), fit_baselines(resolved, features)
    register_model(resolved, validated, features, trained, compare_to_baselines(resolved, features, trained, baselines))


training_dag = lstm_training()
