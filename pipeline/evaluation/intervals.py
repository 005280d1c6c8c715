"""Empirical coverage and width of prediction intervals: on the test part and on published forecasts.

Coverage is the share of observed values inside their band, ``lo <= y <= hi`` (both ends
included, as the conformal band is closed); width is ``hi - lo`` in target units. A
well-calibrated ``level``% interval covers about ``level``% of the observations (Angelopoulos &
Bates, 2021, arXiv:2107.07511, section 1: "marginal coverage"); a band far wider than needed
also covers, so width is reported beside it. The calibration is
:class:`pipeline.models.conformal.IntervalCalibration`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from pipeline.core import schema
from pipeline.models.conformal import IntervalCalibration


def coverage(y: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> dict[str, Any]:
    """Coverage and width of bands over arrays of one shape (any; NaN ``y`` are left out).

    Returns:
        ``{"coverage": share in [0, 1], "mean_width": target units, "n": values scored}``;
        ``coverage`` and ``mean_width`` are NaN when ``n`` is 0. An infinite band gives an infinite width.
    """
    y, lo, hi = (np.asarray(a, dtype=np.float64) for a in (y, lo, hi))
    seen = np.isfinite(y)
    n = int(seen.sum())
    if n == 0:
        return {"coverage": float("nan"), "mean_width": float("nan"), "n": 0}
    inside = (lo[seen] <= y[seen]) & (y[seen] <= hi[seen])
    return {"coverage": float(inside.mean()), "mean_width": float(np.mean(hi[seen] - lo[seen])), "n": n}


def interval_metrics(
    calibration: IntervalCalibration, y_true: np.ndarray, y_pred: np.ndarray, history: np.ndarray | None = None,
) -> dict[str, dict[str, Any]]:  # fmt: skip
    """Per level, the test part's coverage and mean width of the calibrated bands around ``y_pred``.

    Args:
        y_true, y_pred: ``(n_origins, horizon)`` float64, original units (the scored test origins).
        history: ``(n_origins, lookback)`` float64, the target over each origin's lookback (needed
            by a ``normalised`` calibration; :meth:`pipeline.models.conformal.IntervalCalibration.bands`).

    Returns:
        ``{level_label: {"level", "coverage", "mean_width", "n", "coverage_per_step", "width_per_step"}}``
        (coverage as a share in [0, 1]; widths in target units).
    """
    out = {}
    for label, (lo, hi) in calibration.bands(y_pred, history).items():
        steps = [coverage(y_true[:, j], lo[:, j], hi[:, j]) for j in range(y_true.shape[1])]
        out[label] = {"level": float(label), **coverage(y_true, lo, hi),
                      "coverage_per_step": [s["coverage"] for s in steps], "width_per_step": [s["mean_width"] for s in steps]}  # fmt: skip
    return out


def flat_metrics(intervals: dict[str, dict[str, Any]], prefix: str = "test") -> dict[str, float]:
    """``{"test_coverage_80": 0.81, "test_width_80": 12.3, ...}``: the per-level numbers as flat metric names."""
    out = {}
    for label, m in intervals.items():
        out[f"{prefix}_coverage_{label}"], out[f"{prefix}_width_{label}"] = m["coverage"], m["mean_width"]
    return out


def rolling_coverage(scored: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Per level, coverage of scored published intervals (from :meth:`pipeline.store.sql.ForecastStore.scored_intervals`).

    Args:
        scored: ``level, lo, hi, y`` rows (one per forecast, step and level; ``y`` observed).

    Returns:
        ``{level_label: {"level", "coverage", "mean_width", "n"}}``; ``{}`` when there are no rows
        (a version without intervals, or nothing scored yet). A value that is not finite (an
        infinite band's width, no scored value) is ``None``: the check travels as strict JSON
        (Airflow's XCom refuses ``inf`` and ``NaN``).
    """
    out = {}
    for level, rows in scored.groupby("level", sort=True):
        found = coverage(rows["y"], rows["lo"], rows["hi"])
        out[schema.level_label(level)] = {"level": float(level), **{k: v if np.isfinite(v) else None for k, v in found.items()}}
    return out
