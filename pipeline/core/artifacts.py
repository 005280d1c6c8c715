"""The artifact catalog, run-partitioned paths and atomic writes.

Every file a stage writes or reads is an :class:`Artifact` of :data:`CATALOG`: its step
folder, its file name and its format. Nothing else in the package spells a file name (a
test greps for literals). A stage takes the folders of earlier steps as explicit inputs
(``ARTIFACT.at(folder)``), so it runs the same in a shared run folder (CLI, Airflow) and
with one folder per artifact (Kubeflow).

A stage writes under ``<artifact_root>/<run_id>/<step>/``: first into a temporary
sibling, then renamed into place (:func:`atomic_dir`), so a reader never sees half a
partition and a rerun replaces only its own partition. Nothing here reads "latest".

=================  ==============  ========================  ==========================================
artifact           step folder     file                      content
=================  ==============  ========================  ==========================================
RESOLVED_CONFIG    config          resolved.json             the config a run resolved once
RUN_MANIFEST       (run folder)    run.json                  config/data fingerprint binding the run id
VALIDATION_REPORT  validation      report.json               GX results, row/gap counts, data sha256
VALIDATED_DATA     validation      data.parquet              the long frame (unique_id, ds, y, ...)
PREPROCESSING      features        preprocessing.json        fitted scalers, encoders, lookback, h
FEATURES_REPORT    features        report.json               window counts per split
FEATURE_ARRAYS     features        arrays.npz                design matrix, targets, window starts
DRIFT_REFERENCE    features        reference.parquet         training part, for drift detection
CHECKPOINT         checkpoints     seed-<k>/checkpoint.pt    resumable training state (not published)
MODEL_WEIGHTS      training        model.pt                  every member's weights + architecture
TRAINING_FACTS     training        metrics.json              device, epochs, seconds (no test metrics)
TRAINING_HISTORY   training        history.json              loss and learning rate per epoch
LOSS_CURVE         training        loss_curve.png            loss per epoch
TRAINING_FORECASTS training        forecasts.npz             LSTM forecasts on the scored origins
INTERVALS          training        intervals.json            conformal calibration: score quantiles per level and step
BASELINE_FORECASTS baselines       forecasts.npz             every baseline on the same origins
BASELINE_TIMINGS   baselines       timings.json              fit/predict seconds, skipped models
EVALUATION_METRICS evaluation      metrics.json              the LSTM's test metrics (one source)
COMPARISON_TABLE   evaluation      comparison.csv            RMSE/MAE/MASE of every model
COMPARISON         evaluation      comparison.json           the same, with origins used
GATE               evaluation      gate.json                 the gate's verdict and reasons
FORECAST_PLOT      evaluation      forecast.png              forecasts vs actuals
FINETUNE_START     finetune_start  start.json                the champion a finetune starts from (its
                                                             ``preprocessing.json`` and ``model.pt`` beside it)
=================  ==============  ========================  ==========================================

Monitoring checks and replays have their own folders (``CHECK_*``, ``REPLAY_*``, ``DRIFT_*``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")

# step folders under a run folder
CONFIG = "config"
VALIDATION = "validation"
FEATURES = "features"
CHECKPOINTS = "checkpoints"
TRAINING = "training"
BASELINES = "baselines"
EVALUATION = "evaluation"
#: a finetune's copy of the champion it starts from (``retrain.mode: finetune``)
FINETUNE = "finetune_start"
STEPS = (CONFIG, VALIDATION, FEATURES, CHECKPOINTS, TRAINING, BASELINES, EVALUATION, FINETUNE)


@dataclass(frozen=True)
class Artifact:
    """One file of the catalog.

    Attributes:
        step: the folder it lives in under a run (``""``: the run folder itself; for monitoring
            and replay artifacts, the kind of folder).
        name: its file name inside that folder.
        format: ``json``, ``parquet``, ``npz``, ``csv``, ``png``, ``html``, ``pt``, ``csv.gz``
            or ``sqlite``.
        content: what it holds (one line).
    """

    step: str
    name: str
    format: str
    content: str

    def at(self, folder: str | Path) -> Path:
        """The artifact inside ``folder``, the folder of its step (an explicit input)."""
        return Path(folder) / self.name

    def in_run(self, run_path: str | Path) -> Path:
        """The artifact inside run folder ``run_path`` (``<run>/<step>/<name>``)."""
        return Path(run_path) / self.step / self.name if self.step else Path(run_path) / self.name


RESOLVED_CONFIG = Artifact(CONFIG, "resolved.json", "json", "the config a run resolved once; every later task reads it")
RUN_MANIFEST = Artifact("", "run.json", "json", "config and data fingerprint binding the run id")
VALIDATION_REPORT = Artifact(VALIDATION, "report.json", "json", "Great Expectations results, row and gap counts, data sha256, as-of")
VALIDATED_DATA = Artifact(VALIDATION, "data.parquet", "parquet", "the validated long frame (unique_id, ds, y, covariates)")
PREPROCESSING = Artifact(FEATURES, "preprocessing.json", "json", "fitted scalers and encoders, lookback, horizon")
FEATURES_REPORT = Artifact(FEATURES, "report.json", "json", "window counts per split, dropped windows")
FEATURE_ARRAYS = Artifact(FEATURES, "arrays.npz", "npz", "design matrix, targets, timestamps, window starts per split")
DRIFT_REFERENCE = Artifact(FEATURES, "reference.parquet", "parquet", "the training part, the drift reference a model version ships")
CHECKPOINT = Artifact(CHECKPOINTS, "checkpoint.pt", "pt", "resumable training state of one member (in seed-<k>/)")
MODEL_WEIGHTS = Artifact(TRAINING, "model.pt", "pt", "every member's weights and the architecture")
TRAINING_FACTS = Artifact(TRAINING, "metrics.json", "json", "device, epochs, seconds, origins (no test metrics)")
TRAINING_HISTORY = Artifact(TRAINING, "history.json", "json", "train/validation loss and learning rate per epoch and member")
LOSS_CURVE = Artifact(TRAINING, "loss_curve.png", "png", "loss per epoch")
TRAINING_FORECASTS = Artifact(TRAINING, "forecasts.npz", "npz", "LSTM forecasts (original units) on the scored test and train origins")
INTERVALS = Artifact(TRAINING, "intervals.json", "json", "split-conformal calibration on the validation windows: score quantiles per level and horizon step")
BASELINE_FORECASTS = Artifact(BASELINES, "forecasts.npz", "npz", "every baseline's forecasts on the same origins")
BASELINE_TIMINGS = Artifact(BASELINES, "timings.json", "json", "fit and predict seconds per baseline, skipped models")
EVALUATION_METRICS = Artifact(EVALUATION, "metrics.json", "json", "the LSTM's test metrics (their one source) and training RMSE")
COMPARISON_TABLE = Artifact(EVALUATION, "comparison.csv", "csv", "RMSE, MAE, MASE of every model on the same windows")
COMPARISON = Artifact(EVALUATION, "comparison.json", "json", "the comparison with the origins used")
GATE = Artifact(EVALUATION, "gate.json", "json", "the comparison gate's verdict, numbers and reasons")
FORECAST_PLOT = Artifact(EVALUATION, "forecast.png", "png", "test forecasts against actuals")
FINETUNE_START = Artifact(FINETUNE, "start.json", "json", "the champion (model, version, run) a finetune starts from")

# a monitoring check's folder (<artifact_root>/monitoring/<check id>/)
CHECK_OBSERVED = Artifact("monitoring", "observed.parquet", "parquet", "observations of the check's window (long frame)")
CHECK_REFERENCE = Artifact("monitoring", "reference.parquet", "parquet", "the champion's drift reference, copied")
CHECK_RESULT = Artifact("monitoring", "check.json", "json", "the check's result and decision")
DRIFT_REPORT_HTML = Artifact("monitoring", "drift_report.html", "html", "Evidently drift report")
DRIFT_REPORT_JSON = Artifact("monitoring", "drift_report.json", "json", "Evidently drift report (snapshot dict)")
FORECAST_STORE = Artifact("store", "forecasts.db", "sqlite", "the default SQLite forecast store")
MLFLOW_STORE = Artifact("store", "mlflow.db", "sqlite", "the default local MLflow tracking store (no server configured)")
AIRFLOW_DB = Artifact("airflow", "airflow.db", "sqlite", "the local Airflow metadata database (make demo / make airflow)")
# a replay's folder (<artifact_root>/replay/<replay id>/)
REPLAY_MANIFEST = Artifact("replay", "replay.json", "json", "the replay's parameters; binds its id")
REPLAY_DATA = Artifact("replay", "data.csv.gz", "csv.gz", "the copy of the observations with the fault applied")
REPLAY_INITIAL = Artifact("replay", "initial.json", "json", "how the initial champion was obtained")
REPLAY_STORE = Artifact("replay", "store.db", "sqlite", "the replay's own forecast store (beside its own mlflow.db)")
REPLAY_TRAINING_INPUT = Artifact("input", "data_before_as_of.csv.gz", "csv.gz", "the rows before as-of a replay's retrain trains on (in its run folder)")
REPLAY_TIMELINE = Artifact("replay", "timeline.csv", "csv", "one row per tick")
REPLAY_PLOT = Artifact("replay", "timeline.png", "png", "rolling RMSE, threshold, drift share, events")
# an ONNX export folder (lstm-pipeline export-onnx --out DIR; pipeline/serving/export.py)
ONNX_MODEL = Artifact("export", "model.onnx", "onnx", "the members' mean forward pass, scaled units (opset 17)")
ONNX_PREPROCESSING = Artifact("export", "preprocessing.json", "json", "the fitted scalers and encoders the ONNX graph expects")
ONNX_MANIFEST = Artifact("export", "export.json", "json", "what was exported: model, version, opset, shapes")
ONNX_INTERVALS = Artifact("export", "intervals.json", "json", "the version's conformal calibration (absent for a version without one)")
# make services (tools/services.py): the state folder .services/
SERVICES_STATE = Artifact("services", "services.json", "json", "pids and URLs of the servers make services started")
REPLAY_SUMMARY = Artifact("replay", "summary.json", "json", "detection delay, false triggers, canary decisions, recovery")

CATALOG: tuple[Artifact, ...] = tuple(v for v in list(globals().values()) if isinstance(v, Artifact))


def new_run_id() -> str:
    """A sortable, unique run id: ``YYYYmmddTHHMMSS-<6 hex>`` (UTC)."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]


def safe_run_id(run_id: str) -> str:
    """Make an orchestrator run id (e.g. Airflow's ``manual__2026-01-01T00:00:00+00:00``) path-safe."""
    cleaned = _SAFE.sub("_", run_id).strip("._")
    if not cleaned:
        raise ValueError(f"run id {run_id!r} has no path-safe characters")
    return cleaned


def run_dir(artifact_root: Path, run_id: str) -> Path:
    """``<artifact_root>/<run_id>`` (not created)."""
    return Path(artifact_root) / safe_run_id(run_id)


def dag_run_dir(artifact_root: Path, dag_id: str, run_id: str) -> Path:
    """``<artifact_root>/<dag_id>__<run_id>`` (not created): an orchestrated run's folder.

    The DAG id is part of it because Airflow's run ids are unique per DAG only: a scheduled run is
    ``scheduled__<run_after>``, so the weekly training and the daily monitoring runs of a Sunday
    midnight share one id (and so would their folders, resolved configs and MLflow run keys).
    A name past 200 characters (Airflow allows 250 for a run id; a file name, 255 bytes) keeps its
    first 180 and a hash of the whole.
    """
    name = safe_run_id(f"{dag_id}__{run_id}")
    if len(name) > 200:
        name = f"{name[:180]}-{hashlib.sha256(name.encode()).hexdigest()[:16]}"
    return Path(artifact_root) / name


def step_dir(run_path: Path, step: str) -> Path:
    return Path(run_path) / step


def resolved_config_path(run_path: Path) -> Path:
    """``<run>/config/resolved.json``: the config an orchestrated run resolved once, read by every later task."""
    return RESOLVED_CONFIG.in_run(run_path)


@contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Yield a temporary folder; on success it replaces ``target`` whole, on error it is removed."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if target.exists():
        old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:6]}")
        os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, target)


def _atomic_write_bytes(path: Path, payload: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (Path,)):
        return str(obj)
    if hasattr(obj, "isoformat"):
        return obj.isoformat()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def write_json(path: Path, payload: Any) -> Path:
    """Write ``payload`` as indented JSON, atomically (temporary name, then rename)."""
    text = json.dumps(payload, indent=2, default=json_default, allow_nan=True)
    return _atomic_write_bytes(path, text.encode())


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())
