"""The training pipeline as one call, for the CLI and benchmarks.

The Airflow DAG and the Kubeflow pipeline call the same stage functions one by one; this
module chains them in-process, in the order of :data:`pipeline.stages.STAGES`:
validate -> features -> train (LSTM) -> baselines -> compare -> track/register.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.core.config import PipelineConfig
from pipeline.core.errors import PipelineError

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
    as_of=None,
    on_stage_end: Callable[[str, float, dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run every stage into ``run_path``; returns the summary printed by ``lstm-pipeline train --json``.

    Args:
        as_of: train on rows with ``ds < as_of`` only (see :func:`pipeline.data.validation.run_validation`).
        on_stage_end: called after each stage with its name, wall seconds and result dict
            (the benchmark times stages with it).

    Raises:
        PipelineError subclasses from the stage that failed; earlier stages' artifacts stay.
    """
    from pipeline.stages import STAGES, run_stage

    if register:  # a dead tracking server costs seconds here, not a training run
        from pipeline.registry.server import check_server, tracking_uri

        _stage("register", check_server, tracking_uri(cfg))
    options: dict[str, dict[str, Any]] = {"validate": {"data_path": data_path, "as_of": as_of}, "register": {"tags": tags}}
    results: dict[str, dict[str, Any]] = {}
    for stage in STAGES:
        if stage.name == "register" and not register:
            break
        t0 = time.perf_counter()
        results[stage.name] = run_stage(stage.name, cfg, run_path, results, **options.get(stage.name, {}))
        if on_stage_end is not None:
            on_stage_end(stage.name, time.perf_counter() - t0, results[stage.name])
    result: dict[str, Any] = {
        **results["compare"],
        "device": results["train"]["device"],
        "stop_reason": results["train"].get("stop_reason"),
        "train_steps": results["train"].get("steps"),
        "rows": results["validate"]["rows"],
        "windows": results["features"]["windows"],
        "history_steps": results["features"].get("history_steps"),
        "seasonal_lags": results["features"].get("seasonal_lags"),
        "skipped_baselines": results["baselines"]["skipped"],
        "run_dir": str(run_path),
        "as_of": results["validate"].get("as_of"),
    }
    result.update(results.get("register", {}))
    return result


def summary_table(result: dict[str, Any]) -> str:
    """A short human-readable summary of :func:`run_training_pipeline`'s result."""
    import pandas as pd

    from pipeline.core import artifacts
    from pipeline.evaluation.intervals import interval_text

    table = pd.read_csv(artifacts.COMPARISON_TABLE.at(result["evaluation"]))
    lines = [
        f"validated rows: {result['rows']}; windows: {result['windows']}",
        *([f"a forecast needs at least {result['history_steps']} rows of history per series"
           + (f" (lookback plus the reach of the seasonal lags {result['seasonal_lags']}, features.seasonal_lags)" if result.get("seasonal_lags") else " (the lookback)")]
          if result.get("history_steps") else []),
        table.to_string(index=False, float_format=lambda v: f"{v:.4f}"),
        f"training RMSE (in-sample): {result['training_rmse']:.4f}",
        *[interval_text(label, m) for label, m in artifacts.read_json(artifacts.EVALUATION_METRICS.at(result["evaluation"])).get("intervals", {}).items()],
        *([f"LSTM training stopped by {result['stop_reason']} after {', '.join(map(str, result['train_steps'] or []))} optimiser step(s)"] if result.get("stop_reason") else []),
        f"gate: {'PASSED' if result['gate_passed'] else 'FAILED'}",
        *(f"  {r}" for r in result["gate_reasons"]),
        *(["what to try (the gate failed):"] if result.get("gate_next_steps") else []),
        *(f"  {r}" for r in result.get("gate_next_steps", [])),
    ]
    if result.get("registered_version"):
        lines.append(
            f"registered: {result['registered_model']} v{result['registered_version']} aliases {result['aliases']}"
        )
        if result.get("same_inputs_as"):
            earlier = ", ".join(f"v{v}" for v in result["same_inputs_as"])
            lines.append(
                f"  same inputs as {earlier} (config, data sha256, code, as-of): each run registers its own version; "
                "aliases moved by the usual rules only (README: 'Rerunning the same train')"
            )
    elif "registration" in result:
        lines.append(f"registration: {result['registration']}")
    lines.append(f"artifacts: {result['run_dir']}")
    return "\n".join(lines)
