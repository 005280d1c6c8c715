"""MLflow tracking and model registry.

One pipeline run = one MLflow run (tag ``pipeline_run_id``; a rerun reuses it) holding
the resolved config as params, per-epoch losses as step metrics, final metrics of the
LSTM and every baseline, the run's reports and plots, and the self-contained pyfunc
model. Registration happens only when the comparison gate passed: the new version gets
alias ``challenger`` (and ``champion`` when the model has none yet), tags and a
description. Aliases, never the deprecated stages (MLflow >= 2.9). Alias moves hold a
file lock (``<artifact_root>/.registry-<name>.lock``), which serialises registrations
from processes that share the artifact root (one Airflow worker, CI); a registry
shared by several machines needs a lock service instead.

``MLFLOW_TRACKING_URI`` in the environment overrides ``mlflow.tracking_uri``.
"""

from __future__ import annotations

import logging
import os
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline import __version__, artifacts
from pipeline.config import PipelineConfig
from pipeline.errors import RegistryError

log = logging.getLogger(__name__)

CHAMPION, CHALLENGER = "champion", "challenger"
RUN_TAG = "pipeline_run_id"
PACKAGE_ROOT = Path(__file__).resolve().parent


def tracking_uri(cfg: PipelineConfig) -> str:
    """``$MLFLOW_TRACKING_URI``, else ``mlflow.tracking_uri``, else a SQLite store beside the artifacts."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    if cfg.mlflow.tracking_uri:
        return cfg.mlflow.tracking_uri
    store = Path(cfg.run.artifact_root).resolve().parent / "mlflow" / "store"
    store.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{store / 'mlflow.db'}"


def artifact_location(cfg: PipelineConfig, uri: str) -> str | None:
    """Where a new experiment keeps artifacts: server-managed over HTTP, else a local folder."""
    if uri.startswith(("http://", "https://", "databricks")):
        return None
    if cfg.mlflow.artifact_location:
        return Path(cfg.mlflow.artifact_location).resolve().as_uri()
    if uri.startswith("sqlite:///"):
        return (Path(uri[len("sqlite:///") :]).parent / "mlflow-artifacts").resolve().as_uri()
    return None


def check_server(uri: str, attempts: int = 3, backoff_s: float = 1.0) -> None:
    """For an HTTP tracking URI, GET ``/health`` with bounded retries.

    Raises:
        RegistryError: no answer after ``attempts`` tries (nothing has been logged yet).
    """
    if not uri.startswith(("http://", "https://")):
        return
    last: Exception | None = None
    for attempt in range(1, attempts + 1):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=5) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError) as exc:
            last = exc
        if attempt < attempts:
            time.sleep(backoff_s * 2 ** (attempt - 1))
    raise RegistryError(
        f"MLflow tracking server {uri} is unreachable after {attempts} attempts ({last}); "
        "nothing was logged or registered, the registry is unchanged. Start it with `make mlflow-ui` "
        "or set MLFLOW_TRACKING_URI / mlflow.tracking_uri."
    )


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PACKAGE_ROOT, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _flat_params(cfg: PipelineConfig) -> dict[str, str]:
    flat = pd.json_normalize(cfg.model_dump(mode="json", exclude={"source"}), sep=".").iloc[0].to_dict()
    return {k: str(v)[:6000] for k, v in flat.items()}


def _find_or_start_run(mlflow, client, experiment_id: str, run_key: str):
    found = client.search_runs([experiment_id], filter_string=f"tags.{RUN_TAG} = '{run_key}'", max_results=1)
    if found:
        return mlflow.start_run(run_id=found[0].info.run_id)
    return mlflow.start_run(experiment_id=experiment_id, run_name=run_key, tags={RUN_TAG: run_key})


def _log_run_contents(mlflow, cfg: PipelineConfig, run_path: Path, validated: dict, tags: dict[str, str]) -> dict:
    from mlflow.entities import Metric, Param, RunTag

    client, run_id = mlflow.tracking.MlflowClient(), mlflow.active_run().info.run_id
    training = artifacts.read_json(run_path / artifacts.TRAINING / "metrics.json")
    comparison = artifacts.read_json(run_path / artifacts.EVALUATION / "comparison.json")
    gate = artifacts.read_json(run_path / artifacts.EVALUATION / "gate.json")
    history = artifacts.read_json(run_path / artifacts.TRAINING / "history.json")
    existing = client.get_run(run_id).data.params
    params = [Param(k, v) for k, v in _flat_params(cfg).items() if k not in existing]
    now = int(time.time() * 1000)
    metrics = [
        Metric(f"{name}_member{k}" if len(history) > 1 else name, row[name], now, row["epoch"])
        for k, rows in enumerate(history) for row in rows for name in ("train_loss", "val_loss", "lr")
    ]  # fmt: skip
    finals = {"lstm_rmse": training["lstm_rmse"], "training_rmse": training["training_rmse"]}
    for model, m in comparison["metrics"].items():
        finals.update({f"{model}_rmse": m["rmse"], f"{model}_mae": m["mae"], f"{model}_mase": m["mase"]})
    finals.update({f"lstm_rmse_step_{i + 1}": v for i, v in enumerate(training["rmse_per_step"])})
    metrics += [Metric(k, float(v), now, 0) for k, v in finals.items() if v == v]
    run_tags = {
        "data_sha256": validated.get("data_sha256") or "synthetic", "git_commit": _git_commit(),
        "package_version": __version__, "device": training["device"], "gate": "passed" if gate["passed"] else "failed",
        **({"as_of": validated["as_of"]} if validated.get("as_of") else {}), **tags,
    }  # fmt: skip
    for i in range(0, len(metrics), 900):  # the REST API takes at most 1000 metrics per batch
        client.log_batch(run_id, metrics=metrics[i : i + 900], params=params if i == 0 else [], tags=[])
    client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in run_tags.items()])
    for step, names in {
        artifacts.VALIDATION: ["report.json"],
        artifacts.TRAINING: ["metrics.json", "loss_curve.png"],
        artifacts.EVALUATION: ["comparison.csv", "comparison.json", "gate.json", "forecast.png"],
    }.items():
        for name in names:
            mlflow.log_artifact(str(run_path / step / name), artifact_path=step)
    return {"gate": gate, "training": training, "comparison": comparison}


def _input_example(cfg: PipelineConfig, run_path: Path, lookback: int) -> pd.DataFrame:
    """The last ``lookback`` raw rows of the validated data, typed like a user's frame."""
    from pipeline import schema

    long = pd.read_parquet(run_path / artifacts.VALIDATION / "data.parquet").tail(lookback)
    d = cfg.data
    frame = pd.DataFrame({d.timestamp_column: long[schema.DS].dt.strftime("%Y-%m-%d %H:%M:%S").to_numpy()})
    frame[d.target_column] = long[schema.Y].to_numpy()
    for col in (*d.covariates, *d.categorical_covariates):
        frame[col] = long[col].to_numpy()
    if d.series_id_column:
        frame[d.series_id_column] = long[schema.UNIQUE_ID].to_numpy()
    return frame.reset_index(drop=True)


def _log_model(mlflow, cfg: PipelineConfig, run_path: Path):
    from mlflow.models import infer_signature

    from pipeline.features import load_preprocessor
    from pipeline.features import REFERENCE
    from pipeline.serving import SIGNATURE_PARAMS, ForecastModel
    from pipeline.training import load_members

    prep = load_preprocessor(run_path / artifacts.FEATURES)
    example = _input_example(cfg, run_path, prep.lookback)
    model = ForecastModel()
    model.prep, model.members = prep, load_members(run_path / artifacts.TRAINING / "model.pt")
    signature = infer_signature(example, model.predict(None, example), params=SIGNATURE_PARAMS)  # also proves the example is usable
    reference = run_path / artifacts.FEATURES / REFERENCE  # drift reference for monitoring
    return mlflow.pyfunc.log_model(
        name="model",
        python_model=ForecastModel(),
        artifacts={
            "preprocessing": str(run_path / artifacts.FEATURES / "preprocessing.json"),
            "weights": str(run_path / artifacts.TRAINING / "model.pt"),
            **({"reference": str(reference)} if reference.exists() else {}),
        },
        code_paths=[str(PACKAGE_ROOT)],
        signature=signature,
        input_example=example,
        pip_requirements=[f"torch>={_version('torch')}", f"pandas>={_version('pandas')}", f"scikit-learn>={_version('sklearn')}", "pydantic>=2", "pyyaml"],
    )


def _version(module: str) -> str:
    import importlib

    return importlib.import_module(module).__version__.split("+")[0]


def _description(info: dict) -> str:
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


def _register(mlflow, cfg: PipelineConfig, model_info, run_id: str, info: dict, validated: dict) -> dict:
    from filelock import FileLock

    client, name = mlflow.tracking.MlflowClient(), cfg.mlflow.registered_model_name
    gate, training = info["gate"], info["training"]
    tags = {
        "lstm_rmse": f"{gate['lstm_rmse']:.6g}", "training_rmse": f"{training['training_rmse']:.6g}",
        "best_baseline": gate["best_baseline"], "best_baseline_rmse": f"{gate['best_baseline_rmse']:.6g}",
        "gate": "passed", "data_sha256": validated.get("data_sha256") or "synthetic", "mlflow_run_id": run_id,
        **({"as_of": validated["as_of"]} if validated.get("as_of") else {}),
    }  # fmt: skip
    lock_path = Path(cfg.run.artifact_root) / f".registry-{artifacts.safe_run_id(name)}.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(lock_path), timeout=300):
        try:
            client.get_registered_model(name)
        except mlflow.exceptions.MlflowException:
            client.create_registered_model(name, description="LSTM forecaster registered by lstm-forecast-pipeline")
        existing = client.search_model_versions(f"name='{name}' and run_id='{run_id}'")
        if existing:
            version = existing[0]
            log.info("run %s is already registered as %s v%s", run_id, name, version.version)
        else:
            version = client.create_model_version(name, source=model_info.model_uri, run_id=run_id, tags=tags, description=_description(info), model_id=model_info.model_id)
        client.set_registered_model_alias(name, CHALLENGER, version.version)
        try:
            client.get_model_version_by_alias(name, CHAMPION)
        except mlflow.exceptions.MlflowException:
            client.set_registered_model_alias(name, CHAMPION, version.version)
        aliases = sorted(client.get_model_version(name, version.version).aliases)
    return {"registered_model": name, "registered_version": int(version.version), "aliases": aliases}


def _existing_version(client, name: str, run_id: str) -> dict | None:
    versions = client.search_model_versions(f"name='{name}' and run_id='{run_id}'")
    if not versions:
        return None
    v = client.get_model_version(name, versions[0].version)  # search results carry no aliases
    return {"registered_model": name, "registered_version": int(v.version), "aliases": sorted(v.aliases)}


def track_and_register(cfg: PipelineConfig, run_path: Path, validated: dict[str, Any], tags: dict[str, str] | None = None) -> dict[str, Any]:
    """Stage entry point: log the run to MLflow and register the model if the gate passed.

    Returns:
        ``{"mlflow_run_id", "registered_model", "registered_version", "aliases"}`` or, when the
        gate failed, ``{"mlflow_run_id", "registration": "skipped: <reason>"}``.

    Raises:
        RegistryError: the tracking server is unreachable (checked before anything is
            logged) or MLflow rejected a request; existing versions and aliases are untouched.
    """
    import mlflow

    run_path = Path(run_path)
    uri = tracking_uri(cfg)
    check_server(uri)
    mlflow.set_tracking_uri(uri)
    try:
        client = mlflow.tracking.MlflowClient()
        exp = client.get_experiment_by_name(cfg.mlflow.experiment_name)
        exp_id = exp.experiment_id if exp else client.create_experiment(cfg.mlflow.experiment_name, artifact_location=artifact_location(cfg, uri))
        with _find_or_start_run(mlflow, client, exp_id, run_path.name) as run:
            info = _log_run_contents(mlflow, cfg, run_path, validated, tags or {})
            result: dict[str, Any] = {"mlflow_run_id": run.info.run_id, "mlflow_experiment_id": exp_id}
            if not info["gate"]["passed"]:
                reason = "; ".join(info["gate"]["reasons"][:1])
                mlflow.set_tag("registration", f"skipped: gate failed: {reason}")
                log.warning("not registering: the comparison gate failed: %s", reason)
                return {**result, "registration": f"skipped: gate failed: {reason}"}
            done = _existing_version(client, cfg.mlflow.registered_model_name, run.info.run_id)
            if done is not None:  # idempotent rerun: no second model, no alias moves
                log.info("run %s is already registered as version %s", run.info.run_id, done["registered_version"])
                return {**result, **done}
            model_info = _log_model(mlflow, cfg, run_path)
            result.update(_register(mlflow, cfg, model_info, run.info.run_id, info, validated))
            mlflow.set_tag("registration", f"{result['registered_model']} v{result['registered_version']}")
            return result
    except mlflow.exceptions.MlflowException as exc:
        raise RegistryError(f"MLflow at {uri} rejected a request: {exc}") from exc
