"""Run binding: one run id, one config and one data set.

A pipeline run is bound to its *fingerprint* (sha256 of the config without machine-local
keys, plus the data's sha256): the run folder records it in ``run.json`` (and the MLflow run
in tag ``pipeline_fingerprint``, :mod:`pipeline.registry.tracking`). Reusing a run id with
another config or other data is a :class:`~pipeline.core.errors.ConfigError`, never a merge.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from pipeline.core import artifacts
from pipeline.core.config import PipelineConfig
from pipeline.core.errors import ConfigError

#: config keys that do not change what a run computes (where it runs, how it reports)
MACHINE_LOCAL_KEYS = ("data.path", "run.artifact_root", "training.device", "training.progress", "training.num_threads", "mlflow.tracking_uri", "mlflow.artifact_location")


def per_member(values) -> str:
    """One text for a value of every ensemble member: the value when all members agree, else each, comma-separated.

    ``per_member([256, 256]) == "256"``; ``per_member(["max_time", "early_stopping"]) == "max_time,early_stopping"``.
    """
    texts = [str(v) for v in values]
    return texts[0] if len(set(texts)) == 1 else ",".join(texts)


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


def inputs_run_id(cfg: PipelineConfig, data_sha256: str | None) -> str:
    """The run id of a ``validate`` / ``features`` call without ``--run-id``: ``<config name>-<fingerprint>``.

    Those commands are deterministic functions of the config and the data, so a rerun with
    the same inputs rewrites the same folder instead of leaving a new one per call; other
    inputs give another id. (``train`` keeps a new id per call: an interrupted training is
    resumed by naming its id, and an identical rerun is recognised in the registry.)

    Args:
        data_sha256: hex sha256 of the data file, ``None`` for the config's synthetic series.

    Returns:
        A path-safe folder name, e.g. ``beijing_pm25-3f2a9c1b0d4e5f6a``.
    """
    return artifacts.safe_run_id(f"{cfg.name}-{run_fingerprint(cfg, data_sha256)}")


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
