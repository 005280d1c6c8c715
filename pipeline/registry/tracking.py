"""MLflow tracking: where the server is, whether it answers, and one MLflow run per pipeline run.

One pipeline run = one MLflow run (tag ``pipeline_run_id``) holding the resolved config as
params, per-epoch losses as step metrics, final metrics of the LSTM and every baseline, and
the run's reports and plots. A pipeline run is bound to its *fingerprint* (sha256 of the
config without machine-local keys, plus the data's sha256): the run folder records it in
``run.json`` and the MLflow run in tag ``pipeline_fingerprint``. Reusing a run id with
another config or other data is a :class:`~pipeline.errors.ConfigError` /
:class:`~pipeline.errors.RegistryError`, never a merge of two runs' parameters.

``MLFLOW_TRACKING_URI`` in the environment overrides ``mlflow.tracking_uri``.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline import __version__, artifacts
from pipeline.config import PipelineConfig
from pipeline.errors import ConfigError, RegistryError

RUN_TAG = "pipeline_run_id"
FINGERPRINT_TAG = "pipeline_fingerprint"
PACKAGE_ROOT = Path(__file__).resolve().parent
#: config keys that do not change what a run computes (where it runs, how it reports)
MACHINE_LOCAL_KEYS = ("data.path", "run.artifact_root", "training.device", "training.progress", "training.num_threads", "mlflow.tracking_uri", "mlflow.artifact_location")
#: MLflow's own HTTP retry defaults (7 retries, backoff factor 2) wait minutes on a dead
#: server; the pipeline uses these unless the environment sets them
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "60"}


def tracking_uri(cfg: PipelineConfig) -> str:
    """``$MLFLOW_TRACKING_URI``, else ``mlflow.tracking_uri``, else a SQLite store beside the artifacts."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    if cfg.mlflow.tracking_uri:
        return cfg.mlflow.tracking_uri
    store = Path(cfg.run.artifact_root).resolve().parent / "mlflow" / "store"
    store.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{artifacts.MLFLOW_STORE.at(store)}"


def artifact_location(cfg: PipelineConfig, uri: str) -> str | None:
    """Where a new experiment keeps artifacts: server-managed over HTTP, else a local folder."""
    if uri.startswith(("http://", "https://", "databricks")):
        return None
    if cfg.mlflow.artifact_location:
        return Path(cfg.mlflow.artifact_location).resolve().as_uri()
    if uri.startswith("sqlite:///"):
        return (Path(uri[len("sqlite:///") :]).parent / "mlflow-artifacts").resolve().as_uri()
    return None


def check_server(uri: str, attempts: int = 3, backoff_s: float = 0.5, timeout_s: float = 3.0, training: bool = True) -> None:
    """For an HTTP tracking URI, ``GET /health`` with bounded retries (a few seconds at most).

    Called before training, so a dead server costs seconds, not a training run. ``training``:
    the caller is the ``train`` command, so the message offers ``--no-register``; monitoring
    and promotion need the registry and get no such advice.

    Raises:
        RegistryError: "cannot reach MLflow at <uri>" after ``attempts`` tries; nothing was logged.
    """
    if not uri.startswith(("http://", "https://")):
        return
    last: Exception | str | None = None
    for attempt in range(1, attempts + 1):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_s) as resp:
                if resp.status == 200:
                    return
                last = f"HTTP {resp.status}"
        except (urllib.error.URLError, OSError) as exc:
            last = exc
        if attempt < attempts:
            time.sleep(backoff_s * 2 ** (attempt - 1))
    raise RegistryError(
        f"cannot reach MLflow at {uri} ({attempts} attempts, last: {last}); nothing was logged or registered, "
        "the registry is unchanged. Start the server (`make mlflow-ui`) or set MLFLOW_TRACKING_URI / "
        "mlflow.tracking_uri" + (", or pass --no-register to train without registering." if training else ".")
    )


@contextmanager
def bounded_http_retries() -> Iterator[None]:
    """Use :data:`HTTP_DEFAULTS` for MLflow's HTTP retries inside the block (unless the environment sets them)."""
    added = {k: v for k, v in HTTP_DEFAULTS.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PACKAGE_ROOT, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def flat_params(cfg: PipelineConfig) -> dict[str, str]:
    """The resolved config as dotted MLflow params (values cut to 6000 characters)."""
    import pandas as pd

    flat = pd.json_normalize(cfg.model_dump(mode="json", exclude={"source"}), sep=".").iloc[0].to_dict()
    return {k: str(v)[:6000] for k, v in flat.items()}


def run_fingerprint(cfg: PipelineConfig, data_sha256: str | None) -> str:
    """sha256 (first 16 hex) of the config without :data:`MACHINE_LOCAL_KEYS` plus the data's sha256."""
    params = {k: v for k, v in flat_params(cfg).items() if k not in MACHINE_LOCAL_KEYS}
    payload = json.dumps({"config": params, "data_sha256": data_sha256 or "synthetic"}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def bind_run_folder(cfg: PipelineConfig, run_path: Path, data_sha256: str | None, record: bool = True) -> str:
    """Check ``<run>/run.json`` on reuse, and record it on first use when ``record``: one run id, one config and data.

    Returns:
        The run's fingerprint.

    Raises:
        ConfigError: the run folder belongs to another config or other data; nothing in it
            was changed. Use a new ``--run-id`` (or none: a new id is made).
    """
    fingerprint = run_fingerprint(cfg, data_sha256)
    manifest = artifacts.RUN_MANIFEST.in_run(run_path)
    if manifest.exists():
        old = artifacts.read_json(manifest)
        if old.get("fingerprint") != fingerprint:
            raise ConfigError(
                f"run id {Path(run_path).name!r} ({run_path}) was started with another config or other data "
                f"(fingerprint {old.get('fingerprint')}, data sha256 {str(old.get('data_sha256'))[:12]}...; now {fingerprint}, "
                f"data sha256 {str(data_sha256)[:12]}...). A run id resumes one run only: give a new --run-id, or none."
            )
        return fingerprint
    if record:
            artifacts.write_json(manifest, {"fingerprint": fingerprint, "data_sha256": data_sha256, "config": str(cfg.source or "")})
    return fingerprint


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

    ``training.batch_size`` (when unset: :func:`pipeline.training.resolve_batch_size`'s choice,
    instead of ``"None"``) and ``model.highway_ridge_lambda`` (the penalty
    :func:`pipeline.training.fit_highway` chose), read from the training facts; one value per
    ensemble member, comma-separated, where members differ.
    """
    facts = artifacts.read_json(artifacts.TRAINING_FACTS.at(training_folder))

    def joined(values) -> str:  # one value when every member has it, else one per member
        texts = [str(v) for v in values]
        return texts[0] if len(set(texts)) == 1 else ",".join(texts)

    out = {}
    if cfg.training.batch_size is None and facts.get("batch_size"):
        out["training.batch_size"] = joined(facts["batch_size"])
    if any(v is not None for v in facts.get("highway_ridge_lambda", [])):
        out["model.highway_ridge_lambda"] = joined(facts["highway_ridge_lambda"])
    return out


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
    existing = client.get_run(run_id).data.params
    params = [Param(k, v) for k, v in {**flat_params(cfg), **derived_params(cfg, inputs.training)}.items() if k not in existing]
    metrics = _metrics(history, training, comparison)
    run_tags = {
        "data_sha256": validated.get("data_sha256") or "synthetic", "git_commit": git_commit(),
        "package_version": __version__, "device": training["device"], "gate": "passed" if gate["passed"] else "failed",
        **({"as_of": validated["as_of"]} if validated.get("as_of") else {}), **tags,
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
