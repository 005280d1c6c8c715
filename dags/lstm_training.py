"""Training DAG: validate_schema -> build_features -> (train_lstm | fit_baselines)
-> compare_to_baselines -> register_model.

Thin wiring over ``pipeline/`` (the CLI calls the same stage functions). XCom carries
paths and small numbers; artifacts live under ``<artifact_root>/<run_id>/``. Heavy
libraries are imported inside the tasks: the scheduler parses this file in a loop.

Config: DAG param ``config_path`` (default ``$LSTM_PIPELINE_CONFIG`` or
``configs/beijing_pm25.yaml``) and optional ``data_path``; the schedule comes from the
default config's ``run.schedule``.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from pathlib import Path

import yaml
from airflow.sdk import Asset, Param, dag, get_current_context, task

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = os.environ.get("LSTM_PIPELINE_CONFIG", str(ROOT / "configs" / "beijing_pm25.yaml"))


def _schedule(path: str) -> str | None:
    try:
        return (yaml.safe_load(Path(path).read_text()).get("run") or {}).get("schedule", "@weekly")
    except (OSError, yaml.YAMLError, AttributeError):
        return "@weekly"


def _model_name(path: str) -> str:
    try:
        return (yaml.safe_load(Path(path).read_text()).get("mlflow") or {}).get("registered_model_name", "lstm-forecaster")
    except (OSError, yaml.YAMLError, AttributeError):
        return "lstm-forecaster"


CHALLENGER_ASSET = Asset(f"mlflow://models/{_model_name(DEFAULT_CONFIG)}@challenger")


def _setup() -> tuple:
    """Config and run folder of the current DAG run (same folder on every retry)."""
    from pipeline import artifacts
    from pipeline.config import load_config

    ctx = get_current_context()
    params = ctx["params"]
    cfg = load_config(params["config_path"], {"data.path": params.get("data_path")})
    return cfg, artifacts.run_dir(cfg.run.artifact_root, ctx["run_id"]), ctx


@dag(
    dag_id="lstm_training",
    schedule=_schedule(DEFAULT_CONFIG),
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
    @task
    def validate_schema() -> dict:
        from pipeline.validation import run_validation

        cfg, run, ctx = _setup()
        return run_validation(cfg, run, ctx["params"].get("data_path"), as_of=ctx["params"].get("as_of"))

    @task
    def build_features(validated: dict) -> dict:
        from pipeline.features import run_features

        cfg, run, _ = _setup()
        return run_features(cfg, run, Path(validated["data"]))

    @task(pool="gpu", retries=2, retry_delay=timedelta(seconds=30), retry_exponential_backoff=True)
    def train_lstm(features: dict) -> dict:
        from pipeline.training import run_training

        cfg, run, _ = _setup()
        return run_training(cfg, run, Path(features["features"]))  # resumes from its checkpoint on a retry

    @task
    def fit_baselines(features: dict) -> dict:
        from pipeline.baselines import run_baselines

        cfg, run, _ = _setup()
        return run_baselines(cfg, run, Path(features["features"]))

    @task
    def compare_to_baselines(features: dict, trained: dict, baselines: dict) -> dict:
        from pipeline.evaluation import run_comparison

        cfg, run, _ = _setup()
        return run_comparison(cfg, run, Path(features["features"]), Path(trained["training"]), Path(baselines["baselines"]))

    @task(outlets=[CHALLENGER_ASSET], retries=1, retry_delay=timedelta(seconds=30))
    def register_model(validated: dict, compared: dict) -> dict:
        from airflow.sdk.exceptions import AirflowSkipException

        from pipeline.registry import track_and_register

        cfg, run, ctx = _setup()
        conf = (ctx["dag_run"].conf or {}) if ctx.get("dag_run") else {}
        tags = {"airflow_dag_id": ctx["dag"].dag_id, "airflow_run_id": ctx["run_id"], **{f"trigger.{k}": str(v) for k, v in conf.items()}}
        result = track_and_register(cfg, run, validated, tags=tags)
        if "registered_version" not in result:
            raise AirflowSkipException(f"registration {result['registration']} (MLflow run {result['mlflow_run_id']})")
        return result

    validated = validate_schema()
    features = build_features(validated)
    trained, baselines = train_lstm(features), fit_baselines(features)
    register_model(validated, compare_to_baselines(features, trained, baselines))


training_dag = lstm_training()
