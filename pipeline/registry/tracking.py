"""MLflow tracking: where the server is, whether it answers, and one MLflow run per pipeline run.

One pipeline run = one MLflow run (tag ``pipeline_run_id``) holding the resolved config as
params, per-epoch losses as step metrics, final metrics of the LSTM and every baseline, and
the run's reports and plots. A pipeline run is bound to its *fingerprint* (sha256 of the
config without machine-local keys, plus the data's sha256): the run folder records it in
``run.json`` and the MLflow run in tag ``pipeline_fingerprint``. Reusing a run id with
another config or other data is a :class:`~pipeline.core.errors.ConfigError` /
:class:`~pipeline.core.errors.RegistryError`, never a merge of two runs' parameters.

``MLFLOW_TRACKING_URI`` in the environment overrides ``mlflow.tracking_uri``.
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline import __version__
from pipeline.core import artifacts
from pipeline.core.config import PipelineConfig
from pipeline.core.errors import ConfigError, RegistryError
from pipeline.core.runs import flat_params, per_member
from pipeline.evaluation.intervals import flat_metrics

RUN_TAG = "pipeline_run_id"
FINGERPRINT_TAG = "pipeline_fingerprint"
PACKAGE_ROOT = Path(__file__).resolve().parents[1]


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PACKAGE_ROOT, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def code_sha256() -> str:
    """sha256 (first 16 hex) of the ``pipeline`` package's Python sources: the code a run ran.

    Unlike the git commit it also tells an edited working tree from its commit.
    """
    import hashlib

    digest = hashlib.sha256()
    for path in sorted(PACKAGE_ROOT.rglob("*.py")):
        digest.update(path.relative_to(PACKAGE_ROOT).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def find_or_start_run(mlflow, client, experiment_id: str, run_key: str, fingerprint: str):
    """Start the pipeline run's MLflow run, or resume it when one with the same fingerprint exists.

    Raises:
        RegistryError: an MLflow run with this ``pipeline_run_id`` was made from another config
            or other data.
    """
    found = client.search_runs([experiment_id], filter_string=f"tags.{RUN_TAG} = '{run_key}'", max_results=1)
    if not found:
        return mlflow.start_run(experiment_id=experiment_id, run_name=run_key, tags={RUN_TAG: run_key, FINGERPRINT_TAG: fingerprint})
    old = found[0].data.tags.get(FINGERPRINT_TAG)
    if old != fingerprint:
        raise RegistryError(
            f"MLflow run {found[0].info.run_id} (pipeline run {run_key!r}) was logged from another config or other data "
            f"(fingerprint {old}, now {fingerprint}); it is left as it is. Give the pipeline run a new id."
        )
    # start_run(run_id=...) refuses a run outside the process's active experiment (a notebook's
    # set_experiment, an earlier stage's): the run's own experiment becomes the active one
    mlflow.set_experiment(experiment_id=experiment_id)
    return mlflow.start_run(run_id=found[0].info.run_id)


def _metrics(history: list, training: dict, comparison: dict) -> list:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    metrics = [
        Metric(f"{name}_member{k}" if len(history) > 1 else name, row[name], now, row["epoch"])
        for k, rows in enumerate(history) for row in rows for name in ("train_loss", "val_loss", "lr")
    ]  # fmt: skip
    finals = {"lstm_rmse": training["lstm_rmse"], "training_rmse": training["training_rmse"]}
    for model, m in comparison["metrics"].items():
        finals.update({f"{model}_rmse": m["rmse"], f"{model}_mae": m["mae"], f"{model}_mase": m["mase"]})
    finals.update({f"lstm_rmse_step_{i + 1}": v for i, v in enumerate(training["rmse_per_step"])})
    finals.update(flat_metrics(training.get("intervals", {})))  # test_coverage_<level>, test_width_<level>
    return metrics + [Metric(k, float(v), now, 0) for k, v in finals.items() if v == v]


@dataclass(frozen=True)
class RunInputs:
    """What registration reads, each an explicit input (no sibling folder found by name).

    Attributes:
        validation_report: ``artifacts.VALIDATION_REPORT`` (logged to the MLflow run).
        validated_data: ``artifacts.VALIDATED_DATA`` (the model's input example comes from it).
        features: the features step folder (``PREPROCESSING``, ``DRIFT_REFERENCE``).
        training: the training step folder (``MODEL_WEIGHTS``, ``TRAINING_FACTS``, ``TRAINING_HISTORY``, ``LOSS_CURVE``).
        evaluation: the evaluation step folder (``EVALUATION_METRICS``, ``COMPARISON*``, ``GATE``, ``FORECAST_PLOT``).
    """

    validation_report: Path
    validated_data: Path
    features: Path
    training: Path
    evaluation: Path

    @classmethod
    def of(cls, validated: dict, features_dir: Path | str, training_dir: Path | str, evaluation_dir: Path | str) -> RunInputs:
        """From the validate stage's result (``report``, ``data``) and the other stages' folders.

        Raises:
            ConfigError: ``validated`` lacks ``report`` or ``data``, or a folder does not exist.
        """
        missing = [k for k in ("report", "data") if not validated.get(k)]
        if missing:
            raise ConfigError(f"registration needs the validate stage's result with 'report' and 'data' paths; missing {missing} in {sorted(validated)}")
        inputs = cls(Path(validated["report"]), Path(validated["data"]), Path(features_dir), Path(training_dir), Path(evaluation_dir))
        for name in ("features", "training", "evaluation"):
            if not getattr(inputs, name).is_dir():
                raise ConfigError(f"registration input {name!r}: expected the {name} step's folder, found nothing at {getattr(inputs, name)}")
        return inputs

    def logged(self) -> dict[str, list[Path]]:
        """MLflow artifact folder -> the files logged there."""
        return {
            artifacts.VALIDATION: [self.validation_report],
            artifacts.TRAINING: [artifacts.TRAINING_FACTS.at(self.training), artifacts.LOSS_CURVE.at(self.training)],
            artifacts.EVALUATION: [a.at(self.evaluation) for a in (artifacts.EVALUATION_METRICS, artifacts.COMPARISON_TABLE, artifacts.COMPARISON, artifacts.GATE, artifacts.FORECAST_PLOT)],
        }  # fmt: skip


def derived_params(cfg: PipelineConfig, training_folder: Path) -> dict[str, str]:
    """Values training chose where the config left them unset, as MLflow params.

    ``training.batch_size`` (when unset: :func:`pipeline.training.lstm.resolve_batch_size`'s choice,
    instead of ``"None"``) and ``model.highway_ridge_lambda`` (the penalty
    :func:`pipeline.training.lstm.fit_highway` chose), read from the training facts; one value per
    ensemble member, comma-separated, where members differ.
    """
    facts = artifacts.read_json(artifacts.TRAINING_FACTS.at(training_folder))
    out = {}
    if cfg.training.batch_size is None and facts.get("batch_size"):
        out["training.batch_size"] = per_member(facts["batch_size"])
    if any(v is not None for v in facts.get("highway_ridge_lambda", [])):
        out["model.highway_ridge_lambda"] = per_member(facts["highway_ridge_lambda"])
    return out


def training_tags(training_folder: Path) -> dict[str, str]:
    """MLflow run tags of how training ended, from the training facts (``artifacts.TRAINING_FACTS``).

    ``stop_reason``: why training stopped (``early_stopping``, ``max_epochs``, ``max_steps`` or
    ``max_time``; one per member, comma-separated, where members differ); ``train_steps``:
    optimiser steps per member, likewise. Facts written before stop reasons were kept give no tags.
    A finetune (``retrain.mode: finetune``) adds ``retrain.mode`` = ``finetune`` and the champion
    it started from: ``retrain.finetune_from_version`` and ``retrain.finetune_from_model``.
    """
    facts = artifacts.read_json(artifacts.TRAINING_FACTS.at(training_folder))
    tags = {tag: per_member(facts[key]) for tag, key in (("stop_reason", "stop_reason"), ("train_steps", "steps")) if facts.get(key)}
    if facts.get("finetune"):
        tags.update({"retrain.mode": "finetune", "retrain.finetune_from_version": str(facts["finetune"]["from_version"]),
                     "retrain.finetune_from_model": str(facts["finetune"]["from_model"])})  # fmt: skip
    return tags


def log_run_contents(mlflow, cfg: PipelineConfig, inputs: RunInputs, validated: dict, tags: dict[str, str]) -> dict:
    """Log params (once), metrics, tags and the reports/plots of the run's steps to the active run.

    Returns:
        ``{"gate", "training", "comparison"}``: the JSON artifacts read on the way.
    """
    from mlflow.entities import Param, RunTag

    client, run_id = mlflow.tracking.MlflowClient(), mlflow.active_run().info.run_id
    training = artifacts.read_json(artifacts.EVALUATION_METRICS.at(inputs.evaluation))  # the LSTM's test metrics, computed by evaluation only
    comparison = artifacts.read_json(artifacts.COMPARISON.at(inputs.evaluation))
    gate = artifacts.read_json(artifacts.GATE.at(inputs.evaluation))
    history = artifacts.read_json(artifacts.TRAINING_HISTORY.at(inputs.training))
    # what validation actually read: a --data / data_path override or an as-of cut, where the data.path param is the config's
    source = artifacts.read_json(inputs.validation_report).get("source")
    existing = client.get_run(run_id).data.params
    params = [Param(k, v) for k, v in {**flat_params(cfg), **derived_params(cfg, inputs.training)}.items() if k not in existing]
    metrics = _metrics(history, training, comparison)
    run_tags = {
        "data_sha256": validated.get("data_sha256") or "synthetic", "git_commit": git_commit(), "code_sha256": code_sha256(),
        "package_version": __version__, "device": training["device"], "gate": "passed" if gate["passed"] else "failed",
        **({"as_of": validated["as_of"]} if validated.get("as_of") else {}), **({"data_source": source} if source else {}), **training_tags(inputs.training), **tags,
    }  # fmt: skip
    for i in range(0, len(metrics), 900):  # the REST API takes at most 1000 metrics per batch
        client.log_batch(run_id, metrics=metrics[i : i + 900], params=params if i == 0 else [], tags=[])
    client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in run_tags.items()])
    for step, paths in inputs.logged().items():
        for path in paths:
            mlflow.log_artifact(str(path), artifact_path=step)
    return {"gate": gate, "training": training, "comparison": comparison}


def describe(info: dict[str, Any]) -> str:
    """A model version's description: the gate's numbers and the comparison table (Markdown)."""
    gate, training, comparison = info["gate"], info["training"], info["comparison"]
    rows = "\n".join(
        f"| {name} | {m['rmse']:.4f} | {m['mae']:.4f} | {m['mase']:.3f} |"
        for name, m in sorted(comparison["metrics"].items(), key=lambda kv: kv[1]["rmse"])
    )
    return (
        f"LSTM test RMSE {gate['lstm_rmse']:.4f} vs best baseline {gate['best_baseline']} "
        f"{gate['best_baseline_rmse']:.4f} ({gate['relative_improvement']:+.1%}; gate requires "
        f">= {gate['min_relative_improvement']:.0%}). Training RMSE {training['training_rmse']:.4f} on "
        f"{training['device']}, {comparison['n_windows']} test windows.\n\n"
        f"| model | RMSE | MAE | MASE |\n| --- | --- | --- | --- |\n{rows}"
    )
