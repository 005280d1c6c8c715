"""Empirical coverage and width of prediction intervals: on the test part and on published forecasts.

Coverage is the share of observed values inside their band, ``lo <= y <= hi`` (both ends
included, as the conformal band is closed); width is ``hi - lo`` in target units. A
well-calibrated ``level``% interval covers about ``level``% of the observations (Angelopoulos &
Bates, 2021, arXiv:2107.07511, section 1: "marginal coverage"); a band far wider than needed
also covers, so width is reported beside it. The calibration is
:class:`pipeline.models.conformal.IntervalCalibration`.

A test part's coverage is one draw: its windows overlap and its misses come in episodes, so
:func:`coverage_interval` gives the 95% confidence interval of it by a circular block bootstrap
over origins (``arch.bootstrap``; Politis & Romano, 1992), blocks as long as the automatic
choice of Politis & White (2004; Patton, Politis & White, 2009) and at least the horizon.

With the origins' and outcomes' times, :func:`interval_metrics` also replays the online quantile
tracker over the test part (``tracked``: the bands the monitoring loop publishes, which widen
after misses and narrow after hits; :func:`pipeline.models.conformal.track_ratios`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from pipeline.core import schema
from pipeline.models.conformal import IntervalCalibration, nest_bands, track_ratios

#: the confidence of :func:`coverage_interval` (a share)
CI_CONFIDENCE = 0.95
#: bootstrap replicates of :func:`coverage_interval`
CI_REPLICATES = 2000
#: fewer origins than this get no confidence interval (the block-length estimate needs a series)
CI_MIN_ORIGINS = 20


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


def coverage_interval(inside: np.ndarray, min_block: int = 1, seed: int = 0, origin_time: np.ndarray | None = None) -> dict[str, Any]:
    """The :data:`CI_CONFIDENCE` confidence interval of a coverage, by a circular block bootstrap over origins.

    Each origin contributes its covered and its observed values (over its horizon steps), and the
    statistic is covered / observed over the resampled origins: the coverage :func:`coverage`
    reports. Blocks of consecutive origins keep the overlap of their windows and the episodes of
    misses together. The block length is Politis & White's automatic choice for the circular
    bootstrap (``arch.bootstrap.optimal_block_length``, on each origin's share), at least
    ``min_block`` (the origins one window overlaps, ``ceil(h / origin_step)``); the interval is the
    bootstrap percentile interval (``arch.bootstrap.CircularBlockBootstrap.conf_int``,
    :data:`CI_REPLICATES` replicates, seeded: the same data give the same interval). Without
    ``origin_time`` the rows are taken in the order given; with it, the rows of several series are
    summed per origin time first and the blocks are blocks of time holding every series' origins
    (the moving-block bootstrap of a panel: the series' common shocks stay together, and a block
    is a stretch of time rather than of stacked rows; where the series cover different times, a
    block, or the circular wrap, can still join the end of one and the start of another).

    Args:
        inside: ``(n_origins, horizon)`` float64, 1.0 covered, 0.0 not, NaN not observed.
        min_block: the shortest block (origins, or origin times).
        origin_time: ``(n_origins,)`` int64 (any clock), each row's origin; ``None``: one series in time order.

    Returns:
        ``{"low", "high": shares in [0, 1], "block": origins (origin times) per block (0 when none),
        "n_origins"}`` (``n_origins``: the origins, or distinct origin times, resampled);
        ``low`` and ``high`` are NaN when there is no interval to give: fewer than
        :data:`CI_MIN_ORIGINS` observed origins, fewer than two blocks of ``min_block``, or every
        origin covered alike (no spread to resample: a point would claim a certainty the data do not give).
    """
    from arch.bootstrap import CircularBlockBootstrap, optimal_block_length

    inside = np.asarray(inside, dtype=np.float64)
    observed = np.isfinite(inside).sum(axis=1).astype(np.float64)
    seen = observed > 0
    covered, observed = np.nansum(inside, axis=1)[seen], observed[seen]
    if origin_time is not None:  # one resampling unit per origin time, all series together
        _, group = np.unique(np.asarray(origin_time)[seen], return_inverse=True)
        covered, observed = np.bincount(group, covered), np.bincount(group, observed)
    share = covered / observed
    n, min_block = len(share), max(int(min_block), 1)
    none = {"low": float("nan"), "high": float("nan"), "block": 0, "n_origins": n}
    if n < CI_MIN_ORIGINS or n < 2 * min_block or np.ptp(share) == 0:
        return none
    estimated = float(optimal_block_length(share)["circular"].iloc[0])
    block = int(min(n // 2, max(min_block, int(np.ceil(estimated)))))
    bootstrap = CircularBlockBootstrap(block, covered, observed, seed=seed)
    ratio = lambda c, o: np.array([c.sum() / o.sum()])  # noqa: E731 (the statistic of one resample)
    low, high = bootstrap.conf_int(ratio, reps=CI_REPLICATES, method="percentile", size=CI_CONFIDENCE)[:, 0]
    return {"low": float(low), "high": float(high), "block": block, "n_origins": n}


def ci_text(low: float | None, high: float | None) -> str:
    """`` (95% CI 78.0-88.1%)`` for a coverage's interval (shares), ``""`` when there is none (an end ``None``)."""
    return f" (95% CI {100 * low:.1f}-{100 * high:.1f}%)" if low is not None and high is not None else ""


def interval_text(label: str, m: dict[str, Any]) -> str:
    """``LSTM 80% interval: test coverage 83.1% (95% CI ..), mean width 1.26; tracked, as the monitoring loop
    publishes it: 81.3% (..), mean width 1.22`` for one level of :func:`interval_metrics` (the second part
    only with a ``tracked`` entry): the one wording of the compare log, ``train``'s summary and the demo."""
    line = f"LSTM {label}% interval: test coverage {100 * m['coverage']:.1f}%{ci_text(*(m.get('coverage_ci') or (None, None)))}, mean width {m['mean_width']:.4g}"
    if m.get("tracked"):
        t = m["tracked"]
        line += (f"; tracked, as the monitoring loop publishes it: {100 * t['coverage']:.1f}%{ci_text(*(t.get('coverage_ci') or (None, None)))}, "
                 f"mean width {t['mean_width']:.4g}")  # fmt: skip
    return line


def interval_metrics(
    calibration: IntervalCalibration, y_true: np.ndarray, y_pred: np.ndarray, history: np.ndarray | None = None,
    origin_step: int = 1, times: tuple[np.ndarray, np.ndarray] | None = None, tracking_lr: float = 0.0,
) -> dict[str, dict[str, Any]]:  # fmt: skip
    """Per level, the test part's coverage and mean width of the calibrated bands around ``y_pred``.

    Args:
        y_true, y_pred: ``(n_origins, horizon)`` float64, original units (the scored test origins).
        history: ``(n_origins, lookback)`` float64, the target over each origin's lookback (needed
            by a ``normalised`` calibration; :meth:`pipeline.models.conformal.IntervalCalibration.bands`).
        origin_step: steps of ``data.freq`` between scored origins (windows overlap ``ceil(h / origin_step)`` origins).
        times: ``(origin_time (n_origins,), known_time (n_origins, horizon))`` int64 nanoseconds: when
            each origin is forecast and each step observed. The coverage intervals resample blocks of
            origin times (:func:`coverage_interval`); with ``tracking_lr > 0`` the tracker is replayed
            over them (:func:`pipeline.models.conformal.track_ratios`).
        tracking_lr: the tracker's step size (``evaluation.interval_tracking_lr``); 0: no ``tracked``.

    Returns:
        ``{level_label: {"level", "coverage", "mean_width", "n", "coverage_per_step", "width_per_step",
        "coverage_ci": [low, high], "ci_confidence", "ci_block"}}`` (coverage as a share in [0, 1]; widths in
        target units; the interval of :func:`coverage_interval`, ``None`` ends when there are too few origins)
        for the calibrated bands and, with tracking, ``"tracked": {"lr", "coverage", "mean_width", "n",
        "coverage_ci", "ci_block", "coverage_per_step", "factor_per_step"}`` for the tracked ones,
        nested across levels (:func:`pipeline.models.conformal.nest_bands`; each level's misses are counted
        against its own factor before nesting, where the live loop counts them against the published, nested
        band: the two differ only where nesting widened a band); ``factor_per_step``: the
        factors the last origin was published with. The live loop updates at every origin and the
        test part scores every ``origin_step``-th, so the replay's step is ``tracking_lr * origin_step``.
    """
    y_true = np.asarray(y_true, dtype=np.float64)
    min_block = int(np.ceil(y_true.shape[1] / max(int(origin_step), 1)))
    out = {}
    origin_time = None if times is None else times[0]  # the coverage intervals resample blocks of time (several series: all at once)
    ratios = calibration.ratios(y_true, y_pred, history) if times is not None and tracking_lr > 0 else {}
    bands = calibration.bands(y_pred, history)
    tracked_bands, last = {}, {}
    for label, (lo, hi) in bands.items():
        out[label] = {"level": float(label), **_scored(y_true, lo, hi, min_block, origin_time)}
        if label in ratios:
            # live, every origin updates the factor; here every origin_step-th does: the same speed per unit of time
            factors = track_ratios(ratios[label], *times, float(label), tracking_lr * max(int(origin_step), 1))
            tracked_bands[label] = calibration.scale_bands(y_pred, lo, hi, factors)
            last[label] = factors[np.argsort(times[0], kind="stable")[-1]] if len(factors) else np.ones(y_true.shape[1])
    for label, (t_lo, t_hi) in nest_bands(tracked_bands).items():
        tracked = _scored(y_true, t_lo, t_hi, min_block, origin_time)
        tracked.pop("width_per_step")
        out[label]["tracked"] = {"lr": float(tracking_lr), **tracked, "factor_per_step": last[label].tolist()}
    return out


def _scored(y_true: np.ndarray, lo: np.ndarray, hi: np.ndarray, min_block: int, origin_time: np.ndarray | None = None) -> dict[str, Any]:
    steps = [coverage(y_true[:, j], lo[:, j], hi[:, j]) for j in range(y_true.shape[1])]
    inside = np.where(np.isfinite(y_true), (lo <= y_true) & (y_true <= hi), np.nan)
    ci = coverage_interval(inside, min_block, origin_time=origin_time)
    return {**coverage(y_true, lo, hi), "coverage_per_step": [s["coverage"] for s in steps], "width_per_step": [s["mean_width"] for s in steps],
            "coverage_ci": [v if np.isfinite(v) else None for v in (ci["low"], ci["high"])],
            "ci_confidence": CI_CONFIDENCE, "ci_block": ci["block"]}  # fmt: skip


def flat_metrics(intervals: dict[str, dict[str, Any]], prefix: str = "test") -> dict[str, float]:
    """``{"test_coverage_80": 0.81, "test_width_80": 12.3, "test_ci_low_coverage_80": 0.77, "test_ci_high_coverage_80": 0.85, ...}``:
    the per-level numbers as flat metric names (the confidence interval's ends only where there is one), and
    the tracked bands' as ``test_tracked_coverage_80``, ``test_tracked_width_80``, ``test_tracked_ci_low_coverage_80`` ..."""
    out = {}
    for label, m in intervals.items():
        for kind, part in (("", m), ("tracked_", m.get("tracked"))):
            if part is None:
                continue
            out[f"{prefix}_{kind}coverage_{label}"], out[f"{prefix}_{kind}width_{label}"] = part["coverage"], part["mean_width"]
            low, high = part.get("coverage_ci") or (None, None)
            if low is not None and high is not None:
                out[f"{prefix}_{kind}ci_low_coverage_{label}"], out[f"{prefix}_{kind}ci_high_coverage_{label}"] = low, high
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
