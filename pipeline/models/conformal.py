"""Split conformal prediction intervals, one per horizon step: calibration and bands.

The method (split, or inductive, conformal prediction; Vovk, Gammerman & Shafer, 2005,
*Algorithmic Learning in a Random World*, ch. 4; Angelopoulos & Bates, 2021, "A Gentle
Introduction to Conformal Prediction and Distribution-Free Uncertainty Quantification",
arXiv:2107.07511, section 1 and eq. (1)): the fitted forecaster predicts ``n`` windows it did
not train on (the validation part), the nonconformity score of step ``j`` of window ``i`` is
the absolute residual ``s_ij = |y_ij - yhat_ij|``, and the band of a new forecast at level
``1 - alpha`` is ``yhat_j +- q_j`` with ``q_j`` the ``ceil((n + 1)(1 - alpha)) / n`` empirical
quantile of ``s_1j .. s_nj`` (the finite-sample correction; ``q_j = inf`` when
``ceil((n + 1)(1 - alpha)) > n``: too few windows for that level). One quantile per horizon
step, as in CF-RNN (Stankeviciute, Alaa & van der Schaar, 2021, "Conformal Time-series
Forecasting", NeurIPS), because the error grows with the step; this module makes no
Bonferroni correction: each step's band holds its own level (per-step marginal coverage,
not joint coverage of the whole path).

Guarantee and its limits: with exchangeable calibration and test windows, coverage is at
least ``1 - alpha`` marginally (Vovk et al., 2005, Prop. 4.1). Overlapping windows of one
series are serially dependent and the test part comes later than the validation part, so
on real data the guarantee is approximate (Barber, Candes, Ramdas & Tibshirani, 2023,
"Conformal prediction beyond exchangeability", Ann. Statist. 51(2)): coverage on the test
part is measured and reported, never assumed (:mod:`pipeline.evaluation.intervals`). The
validation part also chose the early-stopping epoch and the highway's ridge penalty, a mild
reuse that can make the bands a little narrow. Several series are pooled (one quantile per
step over all of them: marginal over series).

Scale: when the target has ``features.target_transform: log1p``, the residuals are taken
in that space (``|log1p(y) - log1p(yhat)|``) and the band is mapped back with ``expm1``:
multiplicative bands that stay above ``-1``. The map is monotone, so ``y`` is inside the
band exactly when its transformed score is at most ``q_j``: the guarantee is unchanged.
Otherwise (``none``) the bands are ``yhat +- q_j`` in original units.

Normalised scores (``evaluation.interval_score: normalised``, an option; ``absolute`` is the
default): the score is the absolute residual divided by a scale known at the forecast origin,
``s_ij = |y_ij - yhat_ij| / sigma_i``, and the band is ``yhat_j +- q_j * sigma_i`` (normalised
nonconformity measures: Papadopoulos, Gammerman & Vovk, 2008, "Normalized nonconformity measures
for regression conformal prediction", AIA; locally weighted split conformal: Lei, G'Sell,
Rinaldo, Tibshirani & Wasserman, 2018, JASA 113(523), section 5.2). ``sigma_i``
(:func:`local_scale`) is the mean absolute one-step change of the target over window ``i``'s
lookback, in the score's space: the in-sample error of the one-step naive forecast on the inputs,
the local version of MASE's scale (Hyndman & Koehler, 2006). The marginal guarantee under
exchangeability is the same (any function of the inputs may divide the score); what changes is
the width of each band: a calm lookback gets a narrow band, a volatile one a wide band. That is
right only where the model's errors grow with the local volatility. Measured on the public sets
(docs/BENCHMARKS.md "Normalised conformal scores"): Seattle's daily maximum temperature,
calibrated on a winter and tested on a spring-to-autumn, went from 71.6% to 80.6% coverage at 80;
the hourly temperatures, whose errors do not follow the diurnal swing, fell from 83.1% to 57.4%.
So it is not the default. A scale is floored at :data:`SCALE_FLOOR` times the calibration
windows' median scale, so a flat lookback (a stuck sensor, a night of zeros) does
not get a zero-width band. ``absolute`` keeps the plain scores (and is how a calibration saved
before this option reads).

Online quantile tracking (``evaluation.interval_tracking_lr``, on by default): a static band is
only as good as the exchangeability of the validation and the later windows. When the errors
grow or shrink after calibration the coverage drifts from nominal and stays there (measured: the
hourly temperatures, calibrated on October-November and tested in December, covered 83% at 80
with a 95% confidence interval of 80.3-85.4%). The quantile tracker of Angelopoulos, Candes &
Tibshirani (2023, "Conformal PID Control for Time Series Prediction", NeurIPS, section 2.1, the
"P" of their PID: ``q_{t+1} = q_t + eta (err_t - alpha)``) moves each step's quantile after every
outcome: up by ``eta (1 - alpha)`` after a miss, down by ``eta alpha`` after a hit. Their
Proposition 1 bounds the long-run miscoverage gap by ``(B + eta) / (eta T)`` over ``T`` outcomes
for scores bounded by ``B``, whatever the sequence. Here ``q`` is in units of the calibrated
quantile, so the band of step ``j`` is the calibrated band scaled by the factor
``c_j = max(0, 1 + lr * sum_t mean_series(missed - alpha))`` (:func:`tracked_factor`), summed over
the origin times of the version's own published step-``j`` bands whose outcome is known, each
origin time one update (the mean over its series, so a thousand series move the band no faster
than one), and the levels kept nested (:func:`nest_bands`; the replay counts each level's misses
before nesting, the live loop against the published, nested bands). Multi-step feedback is delayed (step ``j`` of an
origin is known ``j`` steps later), as in the multi-step version of Wang & Hyndman (2024,
"Online conformal inference for multi-step time series forecasting", arXiv:2410.13115): each
step keeps its own factor and counts only outcomes observed by the forecast's origin. The test
part's evaluation replays that origin by origin (:func:`track_ratios`); the monitoring loop
publishes every forecast of a check with the factors of the outcomes observed before the check's
first origin (:func:`pipeline.loop.monitoring.track_bands`; scored first, so a rerun of the check
on the same data publishes the same bands), so live it lags by at most one check. The
served model alone (``lstm-pipeline serve``, the pyfunc) knows no outcomes: it returns the
calibrated bands (factor 1).

MAPIE (``mapie``) is not used: its regressors wrap an estimator with ``fit``/``predict`` on a
2-D ``X`` and a 1-D ``y`` (one output), so ``h`` steps would need ``h`` wrappers around
precomputed forecasts, and its time-series regressor (EnbPI, ACI) refits bootstrap copies of
the estimator, which this pipeline's windowed, ensembled network does not fit. The split
quantile it would compute is the few lines of :func:`conformal_quantile`.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.schema import interval_columns, level_label  # noqa: F401 - re-exported

#: the nonconformity score and the band construction, recorded with every calibration
METHOD = "split conformal, absolute residual per horizon step"
#: per :data:`SCORES` value, the method recorded with a calibration
METHODS = {"absolute": METHOD, "normalised": "split conformal, absolute residual / local scale (mean |one-step change| over the lookback) per horizon step"}
#: nonconformity scores: ``absolute`` ``|y - yhat|``; ``normalised`` ``|y - yhat| / sigma`` (module docstring)
SCORES = tuple(METHODS)
#: a window's scale is at least this share of the calibration windows' median scale
SCALE_FLOOR = 0.1


def local_scale(history: np.ndarray, space: str = "none") -> np.ndarray:
    """Per window, the mean absolute one-step change of the target over its lookback.

    Args:
        history: ``(n, lookback)`` float64, the target's values in each window's input rows,
            original units, NaN where not observed (``lookback >= 2``).
        space: ``none`` or ``log1p``: the changes are taken in the scores' space.

    Returns:
        ``(n,)`` float64, target units (or ``log1p`` units): ``mean_t |x_t - x_{t-1}|`` over the
        observed consecutive pairs; NaN for a window without one. The floor is applied by
        :meth:`IntervalCalibration.scale`, not here.
    """
    values = _to_space(np.asarray(history, dtype=np.float64), space)
    if values.ndim != 2 or values.shape[1] < 2:
        raise ValueError(f"expected a history of shape (n, lookback >= 2), found {values.shape}")
    changes = np.abs(np.diff(values, axis=1))
    seen = np.isfinite(changes)
    count = seen.sum(axis=1)
    total = np.where(seen, changes, 0.0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def conformal_quantile(scores: np.ndarray, level: float) -> np.ndarray:
    """Per column, the ``ceil((n + 1) * level / 100) / n`` empirical quantile of ``scores``.

    Args:
        scores: ``(n, horizon)`` float64 nonconformity scores (absolute residuals), finite.
        level: nominal coverage in percent, ``0 < level < 100``.

    Returns:
        ``(horizon,)`` float64: the ``k``-th smallest score of each column with
        ``k = ceil((n + 1) * level / 100)`` (Angelopoulos & Bates, 2021, eq. (1));
        ``inf`` where ``k > n`` (fewer than ``100 / (100 - level) - 1`` windows).

    Raises:
        ValueError: ``level`` outside ``(0, 100)`` or ``scores`` not 2-D.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if not 0 < level < 100:
        raise ValueError(f"expected a level in percent with 0 < level < 100, found {level!r}")
    if scores.ndim != 2:
        raise ValueError(f"expected scores of shape (n, horizon), found {scores.shape}")
    n = scores.shape[0]
    k = math.ceil((n + 1) * level / 100.0 - 1e-9)  # the tolerance keeps (n+1)*0.8 = 80.0000001 at 80
    if n == 0 or k > n:
        return np.full(scores.shape[1], np.inf)
    return np.sort(scores, axis=0)[k - 1]


def tracked_factor(missed: np.ndarray, level: float, lr: float, origin: np.ndarray | None = None) -> float:
    """The quantile tracker's band factor after the outcomes ``missed`` (module docstring).

    Args:
        missed: ``(m,)`` bool, one per known outcome of one horizon step: ``True`` where the
            value fell outside the band published for it.
        level: nominal coverage in percent (``alpha = 1 - level / 100``).
        lr: step size in units of the calibrated quantile, per origin time; 0 keeps the calibrated band.
        origin: ``(m,)`` each outcome's origin (any comparable values). The outcomes of one origin
            time (several series) make one update, their mean; ``None``: one outcome per origin.

    Returns:
        ``max(0, 1 + lr * sum over origins of mean(missed - alpha))``: the multiple of the calibrated
        half-width (Angelopoulos, Candes & Tibshirani, 2023, section 2.1, summed from ``q_0 = 1``;
        one update per origin time, so the step does not grow with the number of series).
    """
    missed = np.asarray(missed, dtype=bool)
    values = missed.astype(np.float64) - (1.0 - float(level) / 100.0)
    if origin is not None and values.size:
        _, group = np.unique(np.asarray(origin), return_inverse=True)
        values = np.bincount(group, values) / np.bincount(group)
    return float(max(0.0, 1.0 + float(lr) * values.sum()))


def track_ratios(ratios: np.ndarray, origin_time: np.ndarray, known_time: np.ndarray, level: float, lr: float) -> np.ndarray:
    """Replay the quantile tracker over scored windows, origin by origin (the test part's evaluation).

    Args:
        ratios: ``(n, h)`` float64, each outcome's distance from the forecast over the calibrated
            half-width (in the score's space: ``score / q_j``); the value is inside a band scaled
            by ``c`` exactly when ``ratio <= c``. NaN: not observed (no feedback).
        origin_time: ``(n,)`` int64 (e.g. nanoseconds): when each window is forecast.
        known_time: ``(n, h)`` int64, same unit: when each step's outcome is observed
            (``> origin_time``). Several series may be stacked: the windows are replayed in
            ``origin_time`` order, one factor per step is shared (pooled, as the calibration is),
            and the outcomes of one origin time make one update, their mean (:func:`tracked_factor`).
        level: nominal coverage in percent; lr: step size per origin time (:func:`tracked_factor`).

    Returns:
        ``(n, h)`` float64 factors, in the input's row order: the band each window would have been
        published with, from the outcomes known by its origin (``known_time <= origin_time``).

    Raises:
        ValueError: shapes differ.
    """
    import heapq

    ratios = np.asarray(ratios, dtype=np.float64)
    n, h = ratios.shape
    origin_time, known_time = np.asarray(origin_time, dtype=np.int64), np.asarray(known_time, dtype=np.int64)
    if origin_time.shape != (n,) or known_time.shape != (n, h):
        raise ValueError(f"expected origin times ({n},) and outcome times ({n}, {h}), found {origin_time.shape} and {known_time.shape}")
    alpha, lr = 1.0 - float(level) / 100.0, float(lr)
    factors = np.ones((n, h))
    if lr == 0 or n == 0:
        return factors
    _, group = np.unique(origin_time, return_inverse=True)
    observed = ~np.isnan(ratios)
    per_origin = np.stack([np.bincount(group, observed[:, j], minlength=group.max() + 1) for j in range(h)], axis=1)  # outcomes per origin time and step
    total = np.zeros(h)  # per step: sum over origin times of mean(missed - alpha) over the known outcomes
    pending: list[tuple[int, int, float]] = []  # (known time, step, (missed - alpha) / outcomes of that origin time)
    for i in np.argsort(origin_time, kind="stable"):
        while pending and pending[0][0] <= origin_time[i]:
            _, j, value = heapq.heappop(pending)
            total[j] += value
        factors[i] = np.maximum(0.0, 1.0 + lr * total)
        for j in np.flatnonzero(observed[i]):
            value = (float(ratios[i, j] > factors[i, j]) - alpha) / per_origin[group[i], j]
            heapq.heappush(pending, (int(known_time[i, j]), int(j), value))
    return factors


def nest_bands(bands: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Tracked bands made nested: each level's band at least as wide as every lower level's on both sides.

    Each level's factor moves on its own, so after tracking an 80% band could end wider than the
    95% one; a user reading ``yhat_lo_95 <= yhat_lo_80`` must be able to rely on it (the calibrated
    bands are nested by construction).

    Args:
        bands: ``{level_label: (lo, hi)}``, arrays of one shape.

    Returns:
        The same labels, in ascending level order, with ``lo = min(lo, lower levels' lo)`` and
        ``hi = max(hi, lower levels' hi)``.
    """
    out, lo_min, hi_max = {}, None, None
    for label in sorted(bands, key=float):
        lo, hi = (np.asarray(v, dtype=np.float64) for v in bands[label])
        lo_min = lo if lo_min is None else np.fmin(lo, lo_min)
        hi_max = hi if hi_max is None else np.fmax(hi, hi_max)
        out[label] = (lo_min, hi_max)
    return out


@dataclass(frozen=True)
class IntervalCalibration:
    """A fitted split-conformal calibration: per level, one score quantile per horizon step.

    Attributes:
        levels: nominal coverages in percent, ascending.
        quantiles: ``{level_label: [q_1 .. q_h]}`` score quantiles (``inf`` for a level the
            calibration windows cannot support); in original units, or in ``log1p`` units
            when ``space`` is ``log1p``.
        space: ``none`` (residuals in original units) or ``log1p`` (see the module docstring).
        n_windows: calibration windows used (all series together).
        source: which windows: ``validation`` (the validation part) or ``validation_tail``
            (the refit protocol's tail, which is also its test part).
        method: :data:`METHODS` of ``score``.
        score: ``absolute`` or ``normalised`` (:data:`SCORES`); a calibration saved before this
            field reads as ``absolute``.
        scale_floor: for ``normalised``, the smallest scale a window gets (``SCALE_FLOOR`` x the
            calibration windows' median :func:`local_scale`, in the score's space); 0 for ``absolute``.
    """

    levels: tuple[float, ...]
    quantiles: dict[str, list[float]]
    space: str
    n_windows: int
    source: str = "validation"
    method: str = METHOD
    horizon: int = field(default=0)
    score: str = "absolute"
    scale_floor: float = 0.0

    @classmethod
    def fit(
        cls, y_true: np.ndarray, y_pred: np.ndarray, levels, space: str = "none", source: str = "validation",
        history: np.ndarray | None = None,
    ) -> IntervalCalibration:  # fmt: skip
        """Calibrate on ``(n, horizon)`` observed targets and forecasts in original units.

        With ``history`` (``(n, lookback)`` float64, the target over each window's lookback,
        original units) the scores are normalised by :func:`local_scale`; without it they are
        absolute. A history whose every window is flat (no positive scale), or a lookback of 1,
        falls back to absolute.

        Raises:
            ValueError: shapes differ, a value is not finite, a level is outside ``(0, 100)``,
                or ``space`` is unknown.
        """
        y_true, y_pred = np.asarray(y_true, dtype=np.float64), np.asarray(y_pred, dtype=np.float64)
        if y_true.shape != y_pred.shape or y_true.ndim != 2:
            raise ValueError(f"expected targets and forecasts of one shape (n, horizon), found {y_true.shape} and {y_pred.shape}")
        if not (np.isfinite(y_true).all() and np.isfinite(y_pred).all()):
            raise ValueError("calibration targets and forecasts must be finite")
        scores = np.abs(_to_space(y_true, space) - _to_space(y_pred, space))
        score, floor = "absolute", 0.0
        if history is not None:
            history = np.asarray(history, dtype=np.float64)
            if history.ndim != 2 or history.shape[0] != y_true.shape[0]:
                raise ValueError(f"expected a history of shape ({y_true.shape[0]}, lookback), found {history.shape}")
            # a lookback of 1 has no one-step change: nothing to normalise by, as for flat lookbacks
            sigma = local_scale(history, space) if history.shape[1] >= 2 else np.full(len(history), np.nan)
            positive = sigma[np.isfinite(sigma) & (sigma > 0)]
            if len(positive):
                score, floor = "normalised", float(SCALE_FLOOR * np.median(positive))
                scores = scores / _floored(sigma, floor)[:, None]
        levels = tuple(sorted(float(v) for v in levels))
        quantiles = {level_label(v): conformal_quantile(scores, v).tolist() for v in levels}
        return cls(levels, quantiles, space, int(y_true.shape[0]), source, METHODS[score], int(y_true.shape[1]), score, floor)

    def scale(self, history: np.ndarray | None, n: int) -> np.ndarray:
        """``(n,)`` float64 per-window factor of the bands: 1 for ``absolute``; the floored
        :func:`local_scale` of ``history`` (``(n, lookback)``, original units) for ``normalised``.

        Raises:
            ValueError: a ``normalised`` calibration without a history of ``n`` windows.
        """
        if self.score == "absolute":
            return np.ones(n)
        if self.score != "normalised":
            raise ValueError(f"interval score: expected one of {list(SCORES)}, found {self.score!r}")
        if history is None or np.shape(history)[0] != n:
            found = "none" if history is None else f"shape {np.shape(history)}"
            raise ValueError(f"normalised interval bands need the target over each window's lookback, shape ({n}, lookback); found {found}")
        return _floored(local_scale(history, self.space), self.scale_floor)

    def bands(self, y_hat: np.ndarray, history: np.ndarray | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """``y_hat (n, horizon)`` original units -> ``{level_label: (lo, hi)}``, each ``(n, horizon)`` float64.

        ``history``: ``(n, lookback)`` float64, the target over each window's lookback (original
        units, NaN where missing); needed by a ``normalised`` calibration, ignored otherwise.

        Raises:
            ValueError: ``y_hat``'s last axis is not the calibrated horizon, or a ``normalised``
                calibration gets no history (:meth:`scale`).
        """
        y_hat = np.asarray(y_hat, dtype=np.float64)
        if y_hat.ndim != 2 or y_hat.shape[1] != self.horizon:
            raise ValueError(f"expected forecasts of shape (n, {self.horizon}), found {y_hat.shape}")
        center = _to_space(y_hat, self.space)
        sigma = self.scale(history, y_hat.shape[0])[:, None]
        out = {}
        for label, q in self.quantiles.items():
            q = np.asarray(q, dtype=np.float64)[None, :] * sigma
            with np.errstate(invalid="ignore", over="ignore"):
                out[label] = (_from_space(center - q, self.space), _from_space(center + q, self.space))
        return out

    def ratios(self, y_true: np.ndarray, y_hat: np.ndarray, history: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Per level, ``(n, horizon)`` float64: each outcome's distance from the forecast over the band's
        half-width, in the score's space (``<= 1``: inside the calibrated band; ``inf`` for a value off a
        zero-width band; NaN where ``y_true`` is NaN or the band is infinite, too few calibration
        windows: no feedback, the factor stays 1). What :func:`track_ratios` replays.
        """
        y_true = np.asarray(y_true, dtype=np.float64)
        center = _to_space(np.asarray(y_hat, dtype=np.float64), self.space)
        residual = np.abs(_to_space(y_true, self.space) - center)
        sigma = self.scale(history, center.shape[0])[:, None]
        out = {}
        for label, q in self.quantiles.items():
            half = np.asarray(q, dtype=np.float64)[None, :] * sigma
            with np.errstate(invalid="ignore", divide="ignore"):
                ratio = np.where(half > 0, residual / np.where(half > 0, half, 1.0), np.where(residual > 0, np.inf, 0.0))
            out[label] = np.where(np.isfinite(y_true) & np.isfinite(half), ratio, np.nan)
        return out

    def scale_bands(self, y_hat: np.ndarray, lo: np.ndarray, hi: np.ndarray, factor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Calibrated bands ``lo, hi`` around ``y_hat`` (original units, one shape) with their half-widths
        multiplied by ``factor`` (broadcast) in the score's space (:func:`tracked_factor`): ``(lo, hi)`` float64."""
        center = _to_space(np.asarray(y_hat, dtype=np.float64), self.space)
        factor = np.asarray(factor, dtype=np.float64)
        with np.errstate(invalid="ignore", over="ignore"):
            low = center - factor * (center - _to_space(np.asarray(lo, dtype=np.float64), self.space))
            high = center + factor * (_to_space(np.asarray(hi, dtype=np.float64), self.space) - center)
            return _from_space(low, self.space), _from_space(high, self.space)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "levels": list(self.levels)}

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> IntervalCalibration:
        known = {k: payload[k] for k in cls.__dataclass_fields__ if k in payload}
        return cls(**{**known, "levels": tuple(float(v) for v in payload["levels"])})

    def save(self, path: Path) -> Path:
        """Write JSON (``inf`` as ``Infinity``) via a temporary name."""
        import os

        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2, allow_nan=True))
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: Path | str) -> IntervalCalibration:
        return cls.from_dict(json.loads(Path(path).read_text()))


def _floored(sigma: np.ndarray, floor: float) -> np.ndarray:
    """``sigma`` with NaN and values below ``floor`` replaced by ``floor``."""
    return np.where(np.isfinite(sigma) & (sigma > floor), sigma, floor)


def _to_space(values: np.ndarray, space: str) -> np.ndarray:
    if space == "none":
        return values
    if space == "log1p":
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.log1p(values)
    raise ValueError(f"interval space: expected 'none' or 'log1p', found {space!r}")


def _from_space(values: np.ndarray, space: str) -> np.ndarray:
    return np.expm1(values) if space == "log1p" else values
