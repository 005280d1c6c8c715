"""The KFP v2 pipelines: ``lstm_training_pipeline`` and ``lstm_monitoring_pipeline``.

Training: validate -> features -> (train | baselines) -> compare -> ``dsl.If(gate passed)`` ->
register, the order of :data:`pipeline.stages.STAGES` (the Airflow DAG's too). Monitoring: one
check, then the canary (promote / reject / roll back) and, under ``dsl.If(decision == "retrain")``,
the training pipeline, nested.

Every component runs in the project's image (``docker/Dockerfile``; ``LSTM_PIPELINE_IMAGE``,
default ``lstm-forecast-pipeline:latest``), which has ``pipeline`` and ``kfp`` installed, so
components install nothing at run time (``install_kfp_package=False``).
"""

import os  # no `from __future__ import annotations`: KFP reads the pipeline signatures as types
from dataclasses import dataclass
from typing import Any

from kfp import dsl

from components import steps

DEFAULT_IMAGE = "lstm-forecast-pipeline:latest"
#: where docker/Dockerfile puts the project inside the image
IMAGE_ROOT = "/opt/lstm-forecast-pipeline"
DEFAULT_CONFIG = f"{IMAGE_ROOT}/configs/beijing_pm25.yaml"
#: the training step's requests; the GPU comes from set_accelerator_* (nvidia.com/gpu: 1)
TRAIN_CPU, TRAIN_MEMORY = "4", "16G"
STEP_CPU, STEP_MEMORY = "1", "4G"
#: steps that talk to MLflow: retried with exponential backoff (a server restart, a 5xx)
MLFLOW_RETRIES = {"num_retries": 3, "backoff_duration": "30s", "backoff_factor": 2.0, "backoff_max_duration": "600s"}

#: component name -> the stage of pipeline.stages it calls (the drift test reads the calls)
COMPONENT_STAGE = {
    "validate_data": "validate",
    "build_features": "features",
    "train_lstm": "train",
    "fit_baselines": "baselines",
    "compare_to_baselines": "compare",
    "register_model": "register",
}


def image() -> str:
    """``$LSTM_PIPELINE_IMAGE`` or ``lstm-forecast-pipeline:latest``."""
    return os.environ.get("LSTM_PIPELINE_IMAGE") or DEFAULT_IMAGE


@dataclass(frozen=True)
class Pipelines:
    """The components and the two pipelines built for one image."""

    components: dict[str, Any]
    training: Any
    monitoring: Any


def make_components(base_image: str) -> dict[str, Any]:
    """Each function of :mod:`components.steps` as a ``@dsl.component`` on ``base_image``."""
    from pipeline.stages import STAGES

    missing = [s.name for s in STAGES if s.name not in COMPONENT_STAGE.values()]
    if missing:
        raise RuntimeError(f"no KFP component for the stages {missing} of pipeline.stages.STAGES")
    names = [*COMPONENT_STAGE, "check_model", "canary"]
    return {n: dsl.component(getattr(steps, n), base_image=base_image, install_kfp_package=False) for n in names}


def build(base_image: str | None = None, schedule_time: bool = True) -> Pipelines:
    """Build the training and monitoring pipelines for ``base_image`` (default :func:`image`).

    Args:
        schedule_time: pass the recurring run's scheduled time to the monitoring check (its
            cut-off when ``as_of`` is empty). ``kfp.local`` 2.17 cannot resolve that
            placeholder (IndexError in ``placeholder_utils``): build with False to run the
            monitoring pipeline locally, with an explicit ``as_of``.
    """
    c = make_components(base_image or image())
    scheduled = dsl.PIPELINE_JOB_SCHEDULE_TIME_UTC_PLACEHOLDER if schedule_time else ""

    def training(name: str, cache: bool):
        @dsl.pipeline(name=name, description="validate -> features -> LSTM | baselines -> gate -> MLflow registry")
        def lstm_training_pipeline(config: str = DEFAULT_CONFIG, data_path: str = "", as_of: str = "", mlflow_tracking_uri: str = "",
                                   store_url: str = "", trigger: str = ""):  # fmt: skip
            validate = c["validate_data"](config=config, data_path=data_path, as_of=as_of).set_caching_options(False)  # reads outside data
            features = c["build_features"](config=config, trigger=trigger, validated=validate.outputs["validated"])
            train = (
                c["train_lstm"](config=config, trigger=trigger, features=features.outputs["features"])
                .set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(1)
                .set_cpu_request(TRAIN_CPU).set_memory_request(TRAIN_MEMORY)
            )  # fmt: skip
            baselines = c["fit_baselines"](config=config, trigger=trigger, features=features.outputs["features"])
            compare = c["compare_to_baselines"](
                config=config, trigger=trigger, features=features.outputs["features"], model=train.outputs["model"], baselines=baselines.outputs["baselines"]
            )
            for task in (features, train, baselines, compare):
                task.set_caching_options(cache)  # pure steps: same input artifacts, same outputs
            for task in (validate, features, baselines, compare):
                task.set_cpu_request(STEP_CPU).set_memory_request(STEP_MEMORY)
            with dsl.If(compare.outputs["Output"] == True, name="gate-passed"):  # noqa: E712 (a KFP condition, not a bool)
                c["register_model"](
                    config=config, trigger=trigger, mlflow_tracking_uri=mlflow_tracking_uri, store_url=store_url, run_key=dsl.PIPELINE_JOB_ID_PLACEHOLDER, as_of=as_of,
                    validated=validate.outputs["validated"], features=features.outputs["features"],
                    model=train.outputs["model"], evaluation=compare.outputs["evaluation"],
                ).set_retry(**MLFLOW_RETRIES).set_caching_options(False)  # fmt: skip

        return lstm_training_pipeline

    lstm_training_pipeline = training("lstm-training", cache=True)
    retraining = training("lstm-retraining", cache=False)  # the monitoring pipeline caches nothing

    @dsl.pipeline(name="lstm-monitoring", description="check the champion as of T; retrain under dsl.If")
    def lstm_monitoring_pipeline(config: str = DEFAULT_CONFIG, data_path: str = "", as_of: str = "", mlflow_tracking_uri: str = "",
                                 store_url: str = ""):  # fmt: skip
        check = c["check_model"](
            config=config, data_path=data_path, as_of=as_of, scheduled_time=scheduled,
            mlflow_tracking_uri=mlflow_tracking_uri, store_url=store_url,
        ).set_caching_options(False).set_retry(**MLFLOW_RETRIES)  # fmt: skip
        # it reads the scores the check just stored; before the retrain, whose challenger waits for the next check's canary
        canary = c["canary"](
            config=config, as_of=check.outputs["cutoff"], mlflow_tracking_uri=mlflow_tracking_uri, store_url=store_url,
        ).set_caching_options(False).set_retry(**MLFLOW_RETRIES).set_cpu_request(STEP_CPU).set_memory_request(STEP_MEMORY)  # fmt: skip
        with dsl.If(check.outputs["Output"] == "retrain", name="retrain"):
            retraining(  # the retrain protocol (retrain.mode refit or scheduled) and trigger.* tags, as the Airflow DAG's
                config=config, data_path=data_path, as_of=check.outputs["cutoff"], mlflow_tracking_uri=mlflow_tracking_uri,
                store_url=store_url, trigger=check.outputs["trigger"],
            ).set_caching_options(False).after(canary)  # fmt: skip

    return Pipelines(components=c, training=lstm_training_pipeline, monitoring=lstm_monitoring_pipeline)
