"""Run-partitioned artifact paths and atomic writes.

A stage writes under ``<artifact_root>/<run_id>/<step>/``: first into a temporary
sibling, then renamed into place, so a reader never sees half a partition and a
rerun replaces only its own partition. Nothing here reads "latest".
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")

CONFIG = "config"
VALIDATION = "validation"
FEATURES = "features"
TRAINING = "training"
BASELINES = "baselines"
EVALUATION = "evaluation"


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


def step_dir(run_path: Path, step: str) -> Path:
    return Path(run_path) / step


def resolved_config_path(run_path: Path) -> Path:
    """``<run>/config/resolved.json``: the config an orchestrated run resolved once, read by every later task."""
    return Path(run_path) / CONFIG / "resolved.json"


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


def _json_default(obj: Any) -> Any:
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
    text = json.dumps(payload, indent=2, default=_json_default, allow_nan=True)
    return _atomic_write_bytes(path, text.encode())


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())
