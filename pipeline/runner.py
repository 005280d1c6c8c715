"""The training pipeline as one call, for the CLI and benchmarks.

The Airflow DAG (and, once built, the Kubeflow components) calls the same stage functions one by
one; this module only chains them in-process:
validate -> features -> train (LSTM) -> baselines -> compare -> track/register.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.config import PipelineConfig
from pipeline.errors import PipelineError

log = logging.getLogger(__name__)


def _stage(name: str, fn: Callable[..., dict[str, Any]], *args, **kwargs) -> dict[str, Any]:
    """Call one stage; a :class:`PipelineError` leaving it carries ``stage=name``."""
    try:
        return fn(*args, **kwargs)
    except PipelineError as err:
        err.stage = err.stage or name
        raise


def run_training_pipeline(
    cfg: PipelineConfig,
    run_path: Path,
    data_path: Path | None = None,
    register: bool = True,
    tags: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Run every stage into ``run_path``; returns the summary printed by ``lstm-pipeline train --json``.

    Raises:
        PipelineError subclasses from the stage that failed; earlier stages' artifacts stay.
    """
    from pipeline.baselines import run_baselines
    from pipeline.evaluation import run_comparison
    from pipeline.features import run_features
    from pipeline.training import run_training
    from pipeline.validation import run_validation

    if register:  # a dead tracking server costs seconds here, not a training run
        from pipeline.tracking import check_server, tracking_uri

        _stage("register", check_server, tracking_uri(cfg))
    validated = _stage("validate", run_validation, cfg, run_path, data_path)
    feats = _stage("features", run_features, cfg, run_path, Path(validated["data"]))
    trained = _stage("train", run_training, cfg, run_path, Path(feats["features"]))
    base = _stage("baselines", run_baselines, cfg, run_path, Path(feats["features"]))
    compared = _stage("compare", run_comparison, cfg, run_path, Path(feats["features"]), Path(trained["training"]), Path(base["baselines"]))
    result: dict[str, Any] = {
        **compared,
        "device": trained["device"],
        "rows": validated["rows"],
        "windows": feats["windows"],
        "skipped_baselines": base["skipped"],
        "run_dir": str(run_path),
    }
    if register:
        from pipeline.registry import track_and_register

        result.update(_stage("register", track_and_register, cfg, run_path, validated, tags=tags))
    return result


def summary_table(result: dict[str, Any]) -> str:
    """A short human-readable summary of :func:`run_training_pipeline`'s result."""
    import pandas as pd

    table = pd.read_csv(Path(result["evaluation"]) / "comparison.csv")
    lines = [
        f"validated rows: {result['rows']}; windows: {result['windows']}",
        table.to_string(index=False, float_format=lambda v: f"{v:.4f}"),
        f"training RMSE (in-sample): {result['training_rmse']:.4f}",
        f"gate: {'PASSED' if result['gate_passed'] else 'FAILED'}",
        *(f"  {r}" for r in result["gate_reasons"]),
    ]
    if result.get("registered_version"):
        lines.append(
            f"registered: {result['registered_model']} v{result['registered_version']} aliases {result['aliases']}"
        )
    elif "registration" in result:
        lines.append(f"registration: {result['registration']}")
    lines.append(f"artifacts: {result['run_dir']}")
    return "\n".join(lines)
