"""Data-fault alerts: the target or a covariate changed units, stuck, or left its range (docs/LOOP.md 9).

A data fault is a change in what the data *means* (a feed switched from Celsius to
Fahrenheit, a sensor reads x1000 after a firmware update, a value stuck at its last
reading), not in what the process does. No retrain can fix it, and a model retrained on it
learns the fault, so the monitoring check decides ``data_fault`` before the retrain rule
and triggers nothing: the alert names the column, since when, and the measured change.

Per series and per numeric column (the target and ``data.covariates``), as of ``T``:

* **shift / scale**: the *current* window ``[T - current, T)`` against the *reference*
  window ``[T - current - reference, T - current)`` just before it, with robust statistics
  (median and inter-quartile range, IQR; Huber & Ronchetti, *Robust Statistics*, 2009):
  ``shift = (median_cur - median_ref) / IQR_ref`` and ``scale = IQR_cur / IQR_ref``. A fault
  when ``|shift| > max_shift`` or ``scale > max_scale_ratio``. Only growth of the spread is
  tested: a calm day shrinks the IQR of real data to nearly 0 (measured on Beijing,
  docs/BENCHMARKS.md), so a shrink counts only through the shift (or as stuck). A column
  whose reference IQR is 0 (rain that did not fall) is not tested for shift or scale.
* **stuck**: one value repeated, unchanged and without a gap, for at least ``stuck_for`` and
  for at least ``stuck_ratio`` (3) times the longest run of one value in the reference window
  before it, in a run that reaches into the current window, unless that value holds half the
  reference window or more (a rain gauge at 0 is not stuck). The ratio makes the rule relative to
  the column's own resolution: Beijing's dew point, recorded in whole degrees, held one value for
  27-29 h in clean winters, 2.1-2.4 x its previous four weeks' longest run, where the October 2012
  feed fault (DEWP, TEMP and PRES frozen for 48 h) was 3.4-7 x (docs/BENCHMARKS.md).
* **range**: a value in the current window outside ``monitoring.alerts.columns.<c>.min/max``.
* **grid**: the recorded resolution changed. The reference's grid is the fewest decimals
  (up to 6) that make all but 1% of the reference values whole (a stray half-unit reading
  must not halve the grid), times the greatest common divisor of those whole values (1 for a
  sensor recorded in whole units). A fault when at least :data:`MIN_OFF_GRID` current values
  are off that grid (more decimals: integer Celsius converted to Fahrenheit gives tenths), or
  when every value of the latest run is a multiple of ``k >= 2`` grid steps and the run holds
  at least ``grid_min_points`` distinct values (an integer-factor rescaling of recorded values,
  a x2 or x3 conversion). Chance alone puts ``n`` distinct values of a noisy whole-unit series
  all on even numbers with probability about ``2**-n`` (0.02% per check for the default 12); a
  smooth series' distinct values are consecutive whole numbers, which never share a factor. It
  sees a conversion applied to recorded values; a sensor that re-rounds after its own
  recalibration keeps its grid.

``since`` is the first timestamp of the change: for shift and scale the split of the last
two current windows that best separates two medians (least absolute deviations, the L1
change point of one break; Bai 1995, *Least absolute deviation estimation of a shift*) of
``z = (x - median_ref) / IQR_ref`` (shift) or ``log(1 + |z|)`` (scale); the first timestamp of
those two windows when the change is older,
for stuck the run's first value, for range the first value outside, for grid the first value
off the grid or the run's first value.

Defaults (:func:`windows`): ``current`` = max(1 day, 24 steps of ``data.freq``): one daily
check sees one window; ``reference`` = max(28 days, 4 x current): four weeks hold every
weekday and enough weather to be a norm; ``stuck_for`` = ``current``. The thresholds
``max_shift`` 6 and ``max_scale_ratio`` 8 sit above every value Beijing's clean columns reached
in daily checks over 2011-2014 (largest: a shift of 4.3 IQRs and an IQR x4.2, both PM2.5) except
``Iws``, a cumulated wind speed (30 IQRs, x33), which the shipped config sets per column
(docs/BENCHMARKS.md "Data-fault alerts"). What they cannot catch: a x2 or x3 recalibration or a
+50 offset of PM2.5, which stay inside the series' own day-to-day range; the grid test catches the
first two when they are applied to the recorded whole numbers, the offset stays invisible.

Pure functions of the long frame: nothing is read or written here.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from pipeline.core import schema
from pipeline.core.config import PipelineConfig

#: fault kinds, in the order a column's faults are reported
KINDS = ("range", "stuck", "grid", "shift", "scale", "shift+scale")
#: off-grid values in the current window that make a ``grid`` fault (one stray value is a glitch, not a conversion)
MIN_OFF_GRID = 3
#: distinct reference values needed before a column's grid is read off them
MIN_GRID_DISTINCT = 5
#: the most decimals a recorded grid may have (beyond it, the column is treated as continuous: no grid test)
MAX_DECIMALS = 6


@dataclass(frozen=True)
class DataFault:
    """One data fault of one column of one series.

    ``column``: the data's column name (the target under its own name, not ``y``);
    ``kind``: one of :data:`KINDS`; ``since``: ISO timestamp of the first changed value;
    ``measured``: the statistics the decision used (floats in the column's units or
    dimensionless, see :func:`detect`); ``message``: one line for a person.
    """

    column: str
    unique_id: str
    kind: str
    since: str
    message: str
    measured: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Windows:
    current: pd.Timedelta
    reference: pd.Timedelta
    stuck_for: pd.Timedelta


def windows(cfg: PipelineConfig) -> Windows:
    """The check's windows: configured durations, or the defaults derived from ``data.freq`` (module docstring)."""
    a = cfg.monitoring.alerts
    step = pd.Timedelta(pd.tseries.frequencies.to_offset(cfg.data.freq))
    current = pd.Timedelta(a.current) if a.current else max(pd.Timedelta("1D"), 24 * step)
    reference = pd.Timedelta(a.reference) if a.reference else max(pd.Timedelta("28D"), 4 * current)
    stuck = pd.Timedelta(a.stuck_for) if a.stuck_for else current
    return Windows(current, reference, stuck)


def lookback(cfg: PipelineConfig) -> pd.Timedelta:
    """How far before ``T`` the check needs observations: ``reference + max(current, stuck_for)``."""
    w = windows(cfg)
    return w.reference + max(w.current, w.stuck_for)


def columns(cfg: PipelineConfig) -> dict[str, str]:
    """``{long-frame column: data column name}`` of the columns tested (target first)."""
    skip = {c for c, s in cfg.monitoring.alerts.columns.items() if not s.check}
    named = {schema.Y: cfg.data.target_column, **{c: c for c in cfg.data.covariates}}
    return {k: v for k, v in named.items() if v not in skip}


def detect(long: pd.DataFrame | None, cfg: PipelineConfig, as_of) -> list[DataFault]:
    """Every data fault in the observations before ``T``.

    Args:
        long: long ``unique_id, ds, y, <covariates>`` (validated; ``ds < T`` only is used),
            or ``None`` (no observations: no fault).
        cfg: ``monitoring.alerts`` and ``data`` (freq, target, covariates).
        as_of: ``T``.

    Returns:
        The faults, by series, then column (target first), then kind. ``measured`` holds:
        shift/scale: ``median_shift_iqr``, ``iqr_ratio``, ``reference_median``, ``reference_iqr``,
        ``current_median``, ``current_iqr``, ``max_shift``, ``max_scale_ratio``; stuck:
        ``value``, ``steps``, ``hours``, ``reference_share``, ``reference_longest_run``, ``stuck_ratio``; range: ``n_outside``, ``found_min``,
        ``found_max``, ``min``, ``max``; grid: ``reference_step``, ``current_step`` (column units;
        ``None`` off the grid), ``factor``, ``n_values``, ``n_distinct``, ``n_off_grid``, ``example``. ``[]`` when ``monitoring.alerts.enabled`` is false.
    """
    a = cfg.monitoring.alerts
    if long is None or long.empty or not a.enabled:
        return []
    T, w = pd.Timestamp(as_of), windows(cfg)
    frame = long[(long[schema.DS] < T) & (long[schema.DS] >= T - lookback(cfg))]
    many = frame[schema.UNIQUE_ID].nunique() > 1
    faults: list[DataFault] = []
    for uid, part in frame.groupby(schema.UNIQUE_ID, sort=True):
        part = part.sort_values(schema.DS)
        for key, name in columns(cfg).items():
            if key not in part:
                continue
            x = pd.Series(pd.to_numeric(part[key], errors="coerce").to_numpy(dtype=np.float64), index=pd.DatetimeIndex(part[schema.DS]))
            where = f"{name!r}" + (f" (series {uid})" if many else "")
            faults += _column_faults(x, name, str(uid), where, cfg, T, w)
    return faults


def _column_faults(x: pd.Series, name: str, uid: str, where: str, cfg: PipelineConfig, T, w: Windows) -> list[DataFault]:
    own = cfg.monitoring.alerts.columns.get(name)
    found = [_out_of_range(x, own, T, w), _stuck(x, cfg, T, w), _grid(x, own, cfg, T, w), _shift_scale(x, own, cfg, T, w)]
    return [DataFault(name, uid, kind, since, f"data fault in {where}: {text}", measured) for kind, since, text, measured in filter(None, found)]


def _out_of_range(x: pd.Series, own, T, w: Windows):
    if own is None or (own.min is None and own.max is None):
        return None
    cur = x[x.index >= T - w.current].dropna()
    low = cur < own.min if own.min is not None else pd.Series(False, index=cur.index)
    high = cur > own.max if own.max is not None else pd.Series(False, index=cur.index)
    out = cur[low | high]
    if out.empty:
        return None
    measured = {"n_outside": int(len(out)), "found_min": float(cur.min()), "found_max": float(cur.max()), "min": own.min, "max": own.max}
    text = f"{len(out)} value(s) outside its range [{own.min}, {own.max}] since {out.index[0].isoformat()} (found {cur.min():.4g} to {cur.max():.4g})"
    return "range", out.index[0].isoformat(), text, measured


def _runs(x: pd.Series) -> pd.DataFrame:
    """Maximal runs of one repeated value on consecutive rows (a NaN breaks a run): ``start, end, value, steps``."""
    v = x.to_numpy()
    new = np.ones(len(v), dtype=bool)
    new[1:] = ~((v[1:] == v[:-1]) & np.isfinite(v[1:]))
    run = np.cumsum(new)
    frame = pd.DataFrame({"t": x.index, "v": v, "run": run})[np.isfinite(v)]
    return frame.groupby("run").agg(start=("t", "first"), end=("t", "last"), value=("v", "first"), steps=("v", "size"))


def _stuck(x: pd.Series, cfg: PipelineConfig, T, w: Windows):
    step = pd.Timedelta(pd.tseries.frequencies.to_offset(cfg.data.freq))
    ratio = cfg.monitoring.alerts.stuck_ratio
    runs = _runs(x[x.index >= T - w.current - w.reference])
    long = runs[(runs["end"] - runs["start"] + step >= w.stuck_for) & (runs["end"] >= T - w.current)]
    ref = x[(x.index < T - w.current) & (x.index >= T - w.current - w.reference)].dropna()
    for _, run in long.iterrows():
        before = runs.loc[runs["end"] < run["start"], "steps"]  # the runs of the reference, this one excluded
        longest = int(before.max()) if len(before) else 0
        share = float((ref == run["value"]).mean()) if len(ref) else 0.0
        if run["steps"] < ratio * longest or share >= 0.5:
            continue
        hours = (run["end"] - run["start"] + step) / pd.Timedelta("1h")
        measured = {"value": float(run["value"]), "steps": int(run["steps"]), "hours": float(hours), "reference_share": share,
                    "reference_longest_run": longest, "stuck_ratio": float(ratio)}  # fmt: skip
        text = (f"stuck at {run['value']:.6g} for {int(run['steps'])} steps ({hours:g} h >= stuck_for {w.stuck_for}, and >= {ratio:g} x "
                f"the reference window's longest run of {longest} steps) since {run['start'].isoformat()}; the value held "
                f"{share:.0%} of the reference window")  # fmt: skip
        return "stuck", run["start"].isoformat(), text, measured
    return None


def _whole(v: np.ndarray) -> np.ndarray:
    """Mask of the values that are whole numbers (to a relative 1e-9: floats read from text)."""
    return np.abs(v - np.round(v)) <= 1e-9 * np.maximum(1.0, np.abs(v))


def _decimals(v: np.ndarray, stray: int = 0) -> int | None:
    """The fewest decimals (0 - :data:`MAX_DECIMALS`) that make all but ``stray`` values whole; ``None``: none do."""
    for d in range(MAX_DECIMALS + 1):
        if (~_whole(v * 10.0**d)).sum() <= stray:
            return d
    return None


def _grid(x: pd.Series, own, cfg: PipelineConfig, T, w: Windows):
    a = cfg.monitoring.alerts
    if not a.grid or (own is not None and not own.grid):
        return None
    ref = x[(x.index < T - w.current) & (x.index >= T - w.current - w.reference)].dropna()
    cur = x[x.index >= T - w.current].dropna()
    if len(cur) < MIN_OFF_GRID or ref.nunique() < MIN_GRID_DISTINCT:
        return None
    d = _decimals(ref.to_numpy(), stray=len(ref) // 100)
    if d is None:
        return None
    unit = 10.0**d
    scaled = ref.to_numpy() * unit
    g_ref = int(np.gcd.reduce(np.abs(np.round(scaled[_whole(scaled)])).astype(np.int64)))
    if g_ref == 0:
        return None
    ref_step = g_ref / unit
    v = cur.to_numpy() * unit
    off = ~_whole(v) | (~_whole(v / g_ref))
    if off.sum() >= MIN_OFF_GRID:
        first = int(np.flatnonzero(off)[0])
        measured = {"reference_step": ref_step, "current_step": None, "factor": None, "n_values": int(len(cur)), "n_distinct": int(cur.nunique()),
                    "n_off_grid": int(off.sum()), "example": float(cur.iloc[first])}  # fmt: skip
        text = (f"{int(off.sum())} of {len(cur)} values in the current window are off the recorded grid of the reference window "
                f"(multiples of {ref_step:g}), e.g. {cur.iloc[first]:.8g} at {cur.index[first].isoformat()}: the values were converted "
                "(a unit change such as Celsius to Fahrenheit) or are now recorded at another resolution")  # fmt: skip
        return "grid", cur.index[first].isoformat(), text, measured
    n = np.abs(np.round(v)).astype(np.int64)
    g, start = 0, None
    for i in range(len(n) - 1, -1, -1):  # the latest run whose values all share a factor k >= 2 of the reference's step
        wider = math.gcd(g, int(n[i]))
        if wider != 0 and wider // g_ref < 2:
            break
        g, start = wider, i
    if start is None or g == 0:
        return None
    run = cur.iloc[start:]
    if run.nunique() < a.grid_min_points:
        return None
    factor = g // g_ref
    measured = {"reference_step": ref_step, "current_step": g / unit, "factor": factor, "n_values": int(len(run)), "n_distinct": int(run.nunique()),
                "n_off_grid": 0, "example": float(run.iloc[-1])}  # fmt: skip
    text = (f"all {len(run)} values since {run.index[0].isoformat()} ({run.nunique()} distinct) are multiples of {g / unit:g}, "
            f"against a recorded step of {ref_step:g} in the reference window: the recorded values were multiplied by {factor} "
            "(or a multiple of it; a unit conversion or a recalibration applied to the data), not a new regime a retrain could learn")  # fmt: skip
    return "grid", run.index[0].isoformat(), text, measured


def _iqr(v: np.ndarray) -> float:
    q1, q3 = np.percentile(v, [25, 75])
    return float(q3 - q1)


def _shift_scale(x: pd.Series, own, cfg: PipelineConfig, T, w: Windows):
    a = cfg.monitoring.alerts
    max_shift = own.max_shift if own is not None and own.max_shift is not None else a.max_shift
    max_ratio = own.max_scale_ratio if own is not None and own.max_scale_ratio is not None else a.max_scale_ratio
    cur = x[x.index >= T - w.current].dropna()
    ref = x[(x.index < T - w.current) & (x.index >= T - w.current - w.reference)].dropna()
    if len(cur) < a.min_points or len(ref) < a.min_points:
        return None
    m_ref, q_ref = float(ref.median()), _iqr(ref.to_numpy())
    if q_ref <= 0:
        return None
    m_cur, q_cur = float(cur.median()), _iqr(cur.to_numpy())
    shift, ratio = (m_cur - m_ref) / q_ref, q_cur / q_ref
    kinds = [k for k, hit in (("shift", abs(shift) > max_shift), ("scale", ratio > max_ratio)) if hit]
    if not kinds:
        return None
    kind = "+".join(kinds)
    span = x[x.index >= T - 2 * w.current].dropna()
    z = (span.to_numpy() - m_ref) / q_ref  # a shift moves z; a scale change multiplies |z|, so its break is found on log(1 + |z|)
    since = _change_point(z if kind == "shift" else np.log1p(np.abs(z)), span.index)
    measured = {"median_shift_iqr": shift, "iqr_ratio": ratio, "reference_median": m_ref, "reference_iqr": q_ref,
                "current_median": m_cur, "current_iqr": q_cur, "max_shift": max_shift, "max_scale_ratio": max_ratio}  # fmt: skip
    text = (f"median {m_cur:.4g} against {m_ref:.4g} in the reference window, a shift of {shift:+.3g} reference IQRs "
            f"(limit {max_shift:g}); IQR {q_cur:.4g} against {q_ref:.4g}, x{ratio:.3g} (limit x{max_ratio:g}); "
            f"changed since {since.isoformat()}: a unit change or a recalibration, not a new regime a retrain could learn")  # fmt: skip
    return kind, since.isoformat(), text, measured


def _change_point(u: np.ndarray, index: pd.DatetimeIndex) -> pd.Timestamp:
    """First timestamp after the one break that minimises the summed absolute deviations from each side's median."""
    n = len(u)
    best, at = np.sum(np.abs(u - np.median(u))), 0
    for k in range(1, n):
        left, right = u[:k], u[k:]
        cost = np.sum(np.abs(left - np.median(left))) + np.sum(np.abs(right - np.median(right)))
        if cost < best:
            best, at = cost, k
    return index[at]


def reasons(faults: list[dict[str, Any]]) -> list[str]:
    """The check's reason lines for its faults (``DataFault.as_dict`` rows)."""
    return [f["message"] for f in faults]
