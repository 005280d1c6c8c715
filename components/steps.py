"""The KFP v2 component functions: one per stage, each a thin call into ``pipeline/``.

Plain functions, made into components by :func:`components.pipelines.make_components` (which
sets the base image). KFP embeds each function's *source* in the compiled YAML and runs it in
the image, so a body may use only its own imports: ``pipeline`` (installed in the image) and
the standard library. No ``from __future__ import annotations`` here: KFP reads the
annotations as types.

Every stage function writes into a run folder; a component runs it in a scratch run folder
(:func:`pipeline.stages.scratch_run`) and moves the step's folder to its ``Output[...].path``
(:func:`pipeline.stages.publish`), so artifacts travel through KFP's artifact store, never a
shared disk. Inputs are the upstream artifact folders, passed by ``.path``.
"""

from kfp.dsl import HTML, Artifact, Dataset, Input, Markdown, Metrics, Model, Output, OutputPath


def validate_data(config: str, data_path: str, as_of: str, validated: Output[Dataset], summary: Output[Markdown]) -> int:
    """``run_validation``: raw rows with ``ds < as_of`` (all when empty) -> ``validated``; returns the row count."""
    from pipeline import stages
    from pipeline.core import artifacts
    from pipeline.core.config import load_config
    from pipeline.data.validation import run_validation

    with stages.scratch_run() as run:
        result = run_validation(load_config(config), run, data_path or None, as_of=as_of or None)
        stages.publish(artifacts.step_dir(run, artifacts.VALIDATION), validated.path)
    with open(summary.path, "w") as fh:
        fh.write(f"Validated **{result['rows']}** rows, {result['series']} series, {result['gaps']} gaps.\n")
    return result["rows"]


def build_features(config: str, trigger: str, validated: Input[Dataset], features: Output[Dataset]) -> int:
    """``run_features``: validated long frame -> windows and fitted preprocessing; returns the feature count.

    ``trigger``: a monitoring check's retrain ``conf`` (JSON; empty for a plain run): the retrain protocol's
    config (``pipeline.loop.monitoring.triggered_config``), as every later step of the run.
    """
    from pipeline import stages
    from pipeline.core import artifacts
    from pipeline.core.config import load_config
    from pipeline.features.windowing import run_features
    from pipeline.loop.monitoring import triggered_config

    cfg, _ = triggered_config(load_config(config), trigger)
    with stages.scratch_run() as run:
        result = run_features(cfg, run, artifacts.VALIDATED_DATA.at(validated.path))
        stages.publish(result["features"], features.path)
    return result["n_features"]


def train_lstm(config: str, trigger: str, features: Input[Dataset], model: Output[Model], metrics: Output[Metrics], loss_curve: Output[HTML]):
    """``run_training``: windows -> ``model`` (weights, training facts, history, test forecasts; no checkpoints).

    Test metrics are computed by ``compare_to_baselines`` only (one source of test metrics).
    """
    import base64

    from pipeline import stages
    from pipeline.core import artifacts
    from pipeline.core.config import load_config
    from pipeline.loop.monitoring import triggered_config
    from pipeline.training.lstm import run_training

    cfg, _ = triggered_config(load_config(config), trigger)
    with stages.scratch_run() as run:
        result = run_training(cfg, run, features.path)
        stages.publish(result["training"], model.path)  # checkpoints stay in the scratch run
    model.metadata.update(framework="pytorch", device=result["device"])
    facts = artifacts.read_json(artifacts.TRAINING_FACTS.at(model.path))
    metrics.log_metric("train_seconds", facts["train_seconds"])
    metrics.log_metric("epochs_run", sum(facts["epochs_run"]))
    with open(artifacts.LOSS_CURVE.at(model.path), "rb") as png, open(loss_curve.path, "w") as fh:
        fh.write(f'<img alt="loss curve" src="data:image/png;base64,{base64.b64encode(png.read()).decode()}">')


def fit_baselines(config: str, trigger: str, features: Input[Dataset], baselines: Output[Dataset]):
    """``run_baselines``: windows -> every baseline's test forecasts and timings."""
    from pipeline import stages
    from pipeline.core.config import load_config
    from pipeline.loop.monitoring import triggered_config
    from pipeline.training.baselines import run_baselines

    cfg, _ = triggered_config(load_config(config), trigger)
    with stages.scratch_run() as run:
        result = run_baselines(cfg, run, features.path)
        stages.publish(result["baselines"], baselines.path)


def compare_to_baselines(
    config: str, trigger: str, features: Input[Dataset], model: Input[Model], baselines: Input[Dataset],
    evaluation: Output[Artifact], metrics: Output[Metrics], comparison: Output[Markdown], forecast_plot: Output[HTML],
) -> bool:  # fmt: skip
    """``run_comparison``: every model on the same test windows -> ``evaluation``; returns whether the gate passed.

    One unnamed return value (KFP names it ``Output``): ``kfp.local`` 2.17 resolves a ``dsl.If``
    on ``<task>-Output`` but not on a named output of a NamedTuple.
    """
    import base64

    from pipeline import stages
    from pipeline.core import artifacts
    from pipeline.core.config import load_config
    from pipeline.evaluation.comparison import run_comparison
    from pipeline.loop.monitoring import triggered_config

    cfg, _ = triggered_config(load_config(config), trigger)  # a retrain's gate: retrain.min_relative_improvement
    with stages.scratch_run() as run:
        result = run_comparison(cfg, run, features.path, model.path, baselines.path)
        stages.publish(result["evaluation"], evaluation.path)
    rmse = {"LSTM": result["lstm_rmse"], **result["baselines"]}
    for name, value in rmse.items():
        metrics.log_metric(f"{name}_rmse", value)
    metrics.log_metric("training_rmse", result["training_rmse"])
    for key in [k for k in result if k.startswith(("test_coverage_", "test_width_", "test_ci_", "test_tracked_"))]:  # prediction intervals, per level
        metrics.log_metric(key, result[key])
    rows = "\n".join(f"| {name} | {value:.4f} |" for name, value in sorted(rmse.items(), key=lambda kv: kv[1]))
    with open(comparison.path, "w") as fh:
        fh.write(f"| model | test RMSE |\n| --- | --- |\n{rows}\n\n**gate {'passed' if result['gate_passed'] else 'failed'}**: "
                 f"{'; '.join(result['gate_reasons'][:1])}\n")  # fmt: skip
    with open(artifacts.FORECAST_PLOT.at(evaluation.path), "rb") as png, open(forecast_plot.path, "w") as fh:
        fh.write(f'<img alt="forecasts" src="data:image/png;base64,{base64.b64encode(png.read()).decode()}">')
    return bool(result["gate_passed"])


def register_model(
    config: str, trigger: str, mlflow_tracking_uri: str, store_url: str, run_key: str, as_of: str,
    validated: Input[Dataset], features: Input[Dataset], model: Input[Model], evaluation: Input[Artifact],
    summary: Output[Markdown],
) -> str:  # fmt: skip
    """``track_and_register``: log the run to MLflow, register the version (tag ``orchestrator=kubeflow``).

    ``run_key`` (the KFP run id) names the MLflow run, so a retry reuses it and registers nothing
    twice. A retrain (``trigger``, the check's ``conf``) adds its ``trigger.<key>`` tags, as the Airflow DAG's.
    Returns the registered version ("" when none).
    """
    from pipeline import stages
    from pipeline.data.io import as_of_timestamp
    from pipeline.data.validation import validated_from_folder
    from pipeline.loop.monitoring import triggered_config
    from pipeline.registry.registration import track_and_register

    # empty parameters keep the config's values; a Postgres store_url also locks alias moves across pods
    cfg, trigger_tags = triggered_config(stages.component_config(config, mlflow_tracking_uri, store_url), trigger)
    info = validated_from_folder(validated.path)  # what run_validation returned: paths, data_sha256, as_of
    if as_of:
        info["as_of"] = as_of_timestamp(as_of).isoformat()
    tags = {"orchestrator": "kubeflow", "kfp_run_id": run_key, **trigger_tags}
    with stages.scratch_run() as scratch:  # the run folder holds only the run binding; its name is the MLflow run key
        result = track_and_register(cfg, scratch.with_name(run_key), info, features.path, model.path, evaluation.path, tags=tags)
    with open(summary.path, "w") as fh:
        fh.write(f"{result.get('registered_model')} v{result.get('registered_version')} aliases {result.get('aliases')}; "
                 f"MLflow run {result['mlflow_run_id']}\n")  # fmt: skip
    return str(result.get("registered_version", ""))


def check_model(
    config: str, data_path: str, as_of: str, scheduled_time: str, mlflow_tracking_uri: str, store_url: str,
    report: Output[Artifact], summary: Output[Markdown], cutoff: OutputPath(str), trigger: OutputPath(str),
) -> str:  # fmt: skip
    """``pipeline.loop.monitoring.run_check`` as of ``as_of`` (else the run's scheduled time, never the clock).

    Returns the check's ``decision`` (``retrain`` triggers the retraining; unnamed, as in
    :func:`compare_to_baselines`), writes the cut-off used to ``cutoff`` and the retrain's ``conf``
    (JSON, ``{}`` unless the decision is ``retrain``) to ``trigger``. ``retrain.mode: finetune`` is
    refused before the check (a ConfigError): the nested retrain cannot start from the champion's weights.
    """
    import json
    import os

    from pipeline import stages
    from pipeline.core.errors import ConfigError
    from pipeline.loop.monitoring import run_check

    when = as_of or ("" if scheduled_time.startswith("{{") else scheduled_time)
    if not when:
        raise ConfigError("check_model: expected as_of (an ISO timestamp) or a recurring run's scheduled time; found neither")
    os.makedirs(report.path, exist_ok=True)
    cfg = stages.component_config(config, mlflow_tracking_uri, store_url, data_path)  # the retrain's conf names the data read
    if cfg.retrain.mode == "finetune":
        raise ConfigError("retrain.mode: finetune is not built on Kubeflow (the nested retrain cannot start from the champion's "
                          "weights); set retrain.mode: refit or scheduled, or run the Airflow DAGs")  # fmt: skip
    result = run_check(cfg, when, out_dir=report.path)
    with open(summary.path, "w") as fh:
        fh.write(f"as of {when}: **{result['decision']}**\n\n```json\n{json.dumps(result, indent=2, default=str)}\n```\n")
    with open(cutoff, "w") as fh:
        fh.write(when)
    with open(trigger, "w") as fh:
        fh.write(json.dumps(result.get("conf") or {}, default=str))
    return str(result["decision"])


def canary(config: str, as_of: str, mlflow_tracking_uri: str, store_url: str, summary: Output[Markdown]) -> str:
    """``pipeline.loop.promotion.run_canary`` as of the check's cut-off: settle, watch the last promotion, decide.

    The Airflow DAG's ``canary`` task on the same store and registry: promote, reject or roll back
    on the origins both versions scored (the check wrote their scores). Returns the challenger
    decision's ``action`` (``promote``, ``reject``, ``wait``, ``none``), or ``rollback`` when the
    watch rolled ``champion`` back. No Asset event: KFP has none (the alias-event row in the store
    records every move).
    """
    import json

    from pipeline import stages
    from pipeline.loop.promotion import run_canary
    from pipeline.store.sql import store_for

    cfg = stages.component_config(config, mlflow_tracking_uri, store_url)
    result = run_canary(cfg, as_of, store_for(cfg))
    action = "rollback" if result["rollback"].get("action") == "rollback" else str(result["challenger"].get("action"))
    with open(summary.path, "w") as fh:
        fh.write(f"as of {as_of}: **{action}**: {result['challenger'].get('reason', '')}\n\n"
                 f"```json\n{json.dumps(result, indent=2, default=str)}\n```\n")  # fmt: skip
    return action
