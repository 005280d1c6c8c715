"""A calibrated one-sided CUSUM on the champion's loss differential against a reference forecast.

The monitoring rule ``monitoring.rule: cusum`` (docs/LOOP.md 10). Pure computation: arrays in,
numbers out; the registry calibrates a version's detector from its own test forecasts
(:func:`calibrate_from_run`) and stores it as version tags (:meth:`CusumDetector.to_tags`); the
monitoring check (:mod:`pipeline.loop.detectors`) runs it on the live scores.

The monitored quantity, per forecast origin ``t`` (one per step of ``data.freq``, every
``origin_step``-th one):

* ``L_m(t)``, ``L_r(t)``: the mean squared error over the ``h`` steps (and the series) of the
  model and of the reference forecast (``naive``: the last observed value; ``seasonal_naive``:
  the value one season back), original units squared;
* ``r_t = (L_m(t) - L_r(t)) / s_t``, the *relative* loss differential, where ``s_t`` is the mean
  reference loss over the origins of the trailing ``monitoring.window`` ending at ``t``. The
  differential cancels what hurts both forecasts (a hard season); dividing by ``s_t`` keeps its
  scale from growing with the season's volatility (Beijing's MSE varies 60-fold over a year,
  docs/LOOP.md 7.1), so one calibration holds all year;
* ``z_t = (r_t - mean) / sd``, with ``mean`` the version's in-control mean (its own test part)
  and ``sd`` the square root of the long-run (HAC) variance of ``r`` with Bartlett weights and
  ``ceil(h / origin_step) - 1`` lags (Newey and West, 1987): the errors of overlapping ``h``-step
  forecasts are correlated, so the variance of a sum of ``z`` is that of a unit random walk.

The statistic is Page's (1954) one-sided CUSUM ``S_t = max(0, S_{t-1} + z_t - k)``; it signals
when ``S_t > h_cusum`` (the decision interval). ``k = shift / 2`` (``monitoring.cusum_shift``,
the shift in ``z`` to detect fastest, the classical choice: Montgomery, *Introduction to
Statistical Quality Control*, 9.1.3). ``h_cusum`` is calibrated so that the in-control average
run length equals ``monitoring.arl0`` (a duration, in origins): by bisection on the run lengths of
a circular moving block bootstrap (Kuensch, 1989; Politis and Romano, 1992) of the version's
own ``z``, in blocks of at least ``h`` steps, which keeps the overlap's correlation inside each
block. Run lengths are counted on one long resampled stream, restarting ``S`` at 0 after each
signal (renewal: ARL = stream length / number of signals).

Two options make that calibration hold at long targets on real, heavy-tailed differentials
(``monitoring.cusum_clip`` and ``monitoring.cusum_guarantee``; docs/LOOP.md 10.1):

* **Clipped (Huber) scores.** Before standardising, ``r`` is centred on its calibration median
  and scaled by its MAD (x 1.4826, the normal-consistent factor), then clipped to ``[-c, c]``:
  ``u_t = clip((r_t - median) / MAD, -c, c)``. A single squared-error spike (a smog peak) then
  moves the statistic by at most ``c``, so an in-control signal needs a sustained excursion over
  many blocks, which a block bootstrap of a few thousand values does reproduce; without it the
  signals at long ARL0 come from the one or two largest spikes in the sample and the bootstrap's
  ARL jumps by orders of magnitude within a few percent of the interval. The robust CUSUM of
  Lucas and Crosier (1982) winsorises the same way. The cost: a fault moves ``u`` by at most
  ``c``, which bounds how fast any fault is detected (``h / ((c - mean) / sd - k)`` origins).
* **Guaranteed conditional performance** (Gandy and Kvaloy, 2013). The mean, the long-run
  variance and the clipping constants are estimated from one sample, and the ARL is exponential
  in the interval over that variance, so a plain calibration on 1500-3000 values lands anywhere
  within 0.05 - 1.5 x the target (docs/BENCHMARKS.md). Instead, ``replicates`` block-bootstrap
  samples of the calibration data are drawn, each re-estimates the constants, and for each the
  interval that gives the target ARL on the long bootstrap stream (the estimated in-control
  process) is found; the detector's ``h`` is the ``guarantee`` quantile of those intervals, so
  that with about that probability the in-control ARL of the detector as estimated is at least
  the target.

References:
    Page, E.S. (1954). Continuous inspection schemes. Biometrika 41(1/2), 100-115.
    Newey, W.K. and West, K.D. (1987). A simple, positive semi-definite, heteroskedasticity and
    autocorrelation consistent covariance matrix. Econometrica 55(3), 703-708.
    Kuensch, H.R. (1989). The jackknife and the bootstrap for general stationary observations.
    Annals of Statistics 17(3), 1217-1241.
    Lucas, J.M. and Crosier, R.B. (1982). Robust CUSUM: a robustness study for CUSUM quality
    control schemes. Communications in Statistics - Theory and Methods 11(23), 2669-2687.
    Gandy, A. and Kvaloy, J.T. (2013). Guaranteed conditional performance of control charts via
    bootstrap methods. Scandinavian Journal of Statistics 40(4), 647-668.
"""

from __future__ import annotations

import math
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.core.cadence import step_duration
from pipeline.core.errors import DataQualityError
from pipeline.evaluation.origins import grid_phase, index_step, on_grid

#: version tags of a detector are ``cusum.<field>``
TAG_PREFIX = "cusum."
#: ... and those of its fast limb ``cusum.fast.<field>`` (``monitoring.cusum_fast_shift``; see :func:`calibrate_from_run`)
FAST_PREFIX = "cusum.fast."
#: ... and why a version has none although ``cusum_fast_shift`` was set (its calibration failed; the slow limb runs alone)
FAST_ERROR_TAG = "cusum.fast_error"
#: the smallest decision interval the bisection returns (``z`` units): below it the limb is degenerate
H_MIN = 1e-3
#: fewer test differentials than this and the calibration adds the training part's (see :func:`calibrate_from_run`)
MIN_DIFFERENTIALS = 200
#: signals the bootstrap stream is long enough to hold at the target ARL0 (relative error about 1/sqrt(N)) ...
SIGNALS = 400
#: ... unless that is longer than this many values (hourly, ARL0 2 years: about 230 signals, 7% error)
MAX_STREAM = 4_000_000
#: bootstrap replicates of the calibration sample for the guaranteed-performance interval (Gandy and Kvaloy use 100-1000;
#: 20 keeps the calibration at about 20-25 s on 2 cores for 2 years of hourly origins; the 0.9 quantile of 20 values lies
#: between the 18th and the 19th)
REPLICATES = 20
#: normal-consistent MAD factor (1 / Phi^-1(3/4))
MAD_SCALE = 1.4826


def long_run_variance(x, lags: int) -> float:
    """Newey-West (1987) long-run variance of ``x``: Bartlett weights ``1 - j / (lags + 1)``.

    Args:
        x: ``(n,)`` float, a stationary series (NaNs not allowed). lags: autocovariance lags
            (``h - 1`` for the loss differential of ``h``-step forecasts; 0: the sample variance).

    Returns:
        ``gamma_0 + 2 sum_{j=1..lags} (1 - j / (lags + 1)) gamma_j`` (autocovariances with divisor
        ``n``, about the sample mean); never negative (Newey and West's point).

    Raises:
        DataQualityError: fewer than ``lags + 2`` values or a non-finite one.
    """
    x = np.asarray(x, dtype=np.float64)
    if len(x) < lags + 2 or not np.isfinite(x).all():
        raise DataQualityError(f"long-run variance with {lags} lags: expected at least {lags + 2} finite values, found {len(x)} ({int((~np.isfinite(x)).sum())} not finite)")
    e, n = x - x.mean(), len(x)
    total = float(e @ e) / n
    for j in range(1, lags + 1):
        total += 2.0 * (1.0 - j / (lags + 1)) * float(e[j:] @ e[:-j]) / n
    return max(total, 0.0)


def relative_differential(origins, loss_model, loss_reference, window) -> np.ndarray:
    """``r_t = (L_m(t) - L_r(t)) / s_t``, ``s_t`` the mean ``L_r`` over origins in ``(t - window, t]``.

    Args:
        origins: ``(n,)`` datetime64, ascending, one per origin. loss_model, loss_reference:
            ``(n,)`` float, per-origin mean squared errors (original units squared).
        window: a duration (``"7D"``, a ``Timedelta``): the trailing scale window.

    Returns:
        ``(n,)`` float64, unitless; 0 where ``s_t`` is 0 and the losses are equal.
    """
    lm, lr = np.asarray(loss_model, dtype=np.float64), np.asarray(loss_reference, dtype=np.float64)
    scale = pd.Series(lr, index=pd.DatetimeIndex(origins)).rolling(pd.Timedelta(window)).mean().to_numpy()
    d = lm - lr
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(scale > 0, d / scale, np.where(d == 0, 0.0, np.sign(d) * 1e6))
    return r


def cusum_path(z, k: float, start: float = 0.0) -> np.ndarray:
    """Page's one-sided CUSUM ``S_t = max(0, S_{t-1} + z_t - k)``, ``S_0 = start``, for every ``t``.

    Computed in closed form (Lindley's recursion): ``S_t = C_t - min(-start, min_{s<=t} C_s)``,
    ``C_t = sum_{s<=t} (z_s - k)``. ``z``: ``(n,)`` float; returns ``(n,)`` float64.
    """
    c = np.cumsum(np.asarray(z, dtype=np.float64) - k)
    if len(c) == 0:
        return c
    return c - np.minimum(np.minimum.accumulate(c), -start)


def block_bootstrap(x, length: int, block: int, rng: np.random.Generator) -> np.ndarray:
    """A circular moving block bootstrap stream of ``x``: ``length`` values in blocks of ``block``.

    Blocks start at uniform positions and wrap around the end (Politis and Romano, 1992), so
    every value is equally likely. ``x``: ``(n,)``; returns ``(length,)`` float64.
    """
    x = np.asarray(x, dtype=np.float64)
    n, block = len(x), max(1, min(int(block), len(x)))
    starts = rng.integers(0, n, size=-(-length // block))
    idx = (starts[:, None] + np.arange(block)[None, :]) % n
    return x[idx.ravel()[:length]]


def count_signals(increments: np.ndarray, h: float, cap: int, chunk: int) -> tuple[int, int]:
    """Signals of the CUSUM with decision interval ``h`` over a stream of ``z - k``, restarting at 0 after each.

    Returns ``(signals, values consumed)``; stops early after ``cap`` signals.
    """
    pos, signals, start, n = 0, 0, 0.0, len(increments)
    while pos < n and signals < cap:
        c = np.cumsum(increments[pos : pos + chunk])
        s = c - np.minimum(np.minimum.accumulate(c), -start)
        hit = np.flatnonzero(s > h)
        if hit.size:
            signals, pos, start = signals + 1, pos + int(hit[0]) + 1, 0.0
        else:
            pos, start = pos + len(c), float(s[-1])
    return signals, pos


def average_run_length(increments: np.ndarray, h: float, target: float) -> float:
    """In-control ARL (in values) of the CUSUM with interval ``h`` on a stream of ``z - k`` (renewal estimate)."""
    cap = max(10, int(2 * len(increments) / target))
    signals, used = count_signals(increments, h, cap, chunk=max(256, int(2 * target)))
    return used / signals if signals else math.inf


@dataclass(frozen=True)
class CusumDetector:
    """One version's calibrated detector (stored as ``cusum.<field>`` version tags).

    Attributes:
        mean: in-control mean of the relative loss differential (negative: the model beats the reference).
        sd: square root of its long-run variance (Newey-West, ``lags`` lags).
        k: reference value, in ``z`` units (``cusum_shift / 2``).
        h: decision interval, in ``z`` units, calibrated to ``arl0_origins``.
        arl0: the target in-control ARL as a duration (``monitoring.arl0``, e.g. ``730D``).
        arl0_origins: the same in monitored origins (``arl0 / (origin_step x freq)``).
        arl0_bootstrap: the ARL the calibrated ``h`` gave on the bootstrap stream (origins).
        origin_step: the CUSUM reads every ``origin_step``-th origin (as the test part was scored).
        phase: it reads the origins ``n`` steps of ``data.freq`` after the epoch with ``n % origin_step == phase``:
            the grid of the calibration origins (:func:`on_grid`; 0 for a version registered before it was kept).
        lags: HAC lags (``ceil(h_steps / origin_step) - 1``). block: bootstrap block length (origins).
        n: differentials the calibration used. sample: ``test`` or ``test+train``.
        reference: ``naive`` or ``seasonal_naive``. window: the scale window (``monitoring.window``).
        center, scale, clip: the score transform ``u = clip((r - center) / scale, -clip, clip)``
            (the calibration median and MAD x 1.4826; ``clip`` in those units, ``inf``: none).
        guarantee: the quantile of the bootstrap intervals ``h`` is (0: the plain calibration).
        replicates: bootstrap replicates behind ``guarantee``.
        limbs: the number of limbs (CUSUMs on the same differential, e.g. a slow and a fast one)
            that share ``arl0``: each is calibrated to ``limbs x arl0_origins``, so that the
            scheme, which signals when any limb does, keeps an in-control ARL of about
            ``arl0_origins`` or more (false-alarm rates add at most; Bonferroni).

    Versions registered before the score transform existed have no ``center``/``scale``/``clip``
    tags: they read with the defaults (no transform, plain calibration), as calibrated.
    """

    mean: float
    sd: float
    k: float
    h: float
    arl0: str
    arl0_origins: float
    arl0_bootstrap: float
    origin_step: int
    lags: int
    block: int
    n: int
    sample: str
    reference: str
    window: str
    center: float = 0.0
    scale: float = 1.0
    clip: float = math.inf
    guarantee: float = 0.0
    replicates: int = 0
    limbs: int = 1
    phase: int = 0

    def scores(self, r) -> np.ndarray:
        """``u = clip((r - center) / scale, -clip, clip)`` (``r``: relative differentials, ``(n,)``)."""
        return np.clip((np.asarray(r, dtype=np.float64) - self.center) / self.scale, -self.clip, self.clip)

    def standardise(self, r) -> np.ndarray:
        """``z = (u - mean) / sd`` with ``u`` the :meth:`scores` of ``r`` (relative differentials)."""
        return (self.scores(r) - self.mean) / self.sd

    def to_tags(self, prefix: str = TAG_PREFIX) -> dict[str, str]:
        """``{"<prefix><field>": text}`` (``cusum.<field>``; a fast limb's: :data:`FAST_PREFIX`); floats with 8 significant digits."""
        return {prefix + key: (f"{v:.8g}" if isinstance(v, float) else str(v)) for key, v in asdict(self).items()}

    @classmethod
    def from_tags(cls, tags: dict[str, str], prefix: str = TAG_PREFIX) -> CusumDetector:
        """The detector a version's tags hold (under ``prefix``: :data:`TAG_PREFIX`, or :data:`FAST_PREFIX` for the fast limb).

        Raises:
            KeyError: a ``cusum.<field>`` tag is missing. ValueError: one is not a number where one is expected.
        """
        kinds = cls.__annotations__
        optional = {f.name for f in fields(cls) if f.default is not MISSING}
        values: dict[str, Any] = {}
        for key, kind in kinds.items():
            if key in optional and prefix + key not in tags:
                continue
            text = tags[prefix + key]
            values[key] = float(text) if kind == "float" else int(text) if kind == "int" else text
        return cls(**values)


def interval_for(increments: np.ndarray, arl0_origins: float) -> tuple[float, float]:
    """The decision interval whose ARL on the stream of ``z - k`` is ``arl0_origins``: ``(h, the ARL at h)``.

    Bisection to about 0.5% of ``h`` (ARL is increasing in ``h``); ``h`` stops at 1e4 if the
    stream never signals (``inf`` ARL), and at :data:`H_MIN` if it never signals at any ``h``
    above 0 (no positive increment: see :func:`calibrate`, which refuses that case).
    """
    lo, hi = 0.0, 1.0
    while average_run_length(increments, hi, arl0_origins) < arl0_origins and hi < 1e4:
        lo, hi = hi, 2 * hi
    while hi - lo > 0.005 * hi and hi > H_MIN:
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if average_run_length(increments, mid, arl0_origins) < arl0_origins else (lo, mid)
    return hi, average_run_length(increments, hi, arl0_origins)


def _constants(r: np.ndarray, lags: int, clip: float | None) -> tuple[float, float, float, float, float]:
    """``(center, scale, clip, mean, sd)`` of a calibration sample (see :class:`CusumDetector`); ``sd`` 0 when constant."""
    if clip is None:
        center, scale, c = 0.0, 1.0, math.inf
    else:
        center = float(np.median(r))
        scale = MAD_SCALE * float(np.median(np.abs(r - center)))
        if not scale > 0:  # more than half the values equal: fall back to the standard deviation
            scale = float(r.std())
        c = float(clip)
    if not scale > 0:
        return center, 1.0, c, 0.0, 0.0
    u = np.clip((r - center) / scale, -c, c)
    return center, scale, c, float(u.mean()), math.sqrt(long_run_variance(u, lags))


def calibrate(r, arl0_origins: float, lags: int, block: int, shift: float = 1.0, seed: int = 0, clip: float | None = None,
              guarantee: float | None = None, replicates: int = REPLICATES, limbs: int = 1, **meta) -> CusumDetector:  # fmt: skip
    """Calibrate the score transform, ``mean``, ``sd``, ``k`` and ``h`` on in-control relative differentials ``r``.

    Args:
        r: ``(n,)`` float, the version's in-control differentials, in time order.
        arl0_origins: target in-control ARL in values of ``r`` (monitored origins).
        lags: Newey-West lags. block: bootstrap block length (>= the overlap, ``ceil(h / origin_step)``).
        shift: the mean shift of ``z`` to detect fastest; ``k = shift / 2``.
        seed: bootstrap seed (the calibration is deterministic).
        clip: clip the scores at this many MADs of ``r`` (None: no transform, ``z`` from ``r`` itself).
        guarantee: ``h`` is this quantile (e.g. 0.9) of the intervals that ``replicates`` bootstrap
            re-estimates of the constants need (Gandy and Kvaloy, 2013); None: ``h`` hits the
            target on the bootstrap stream with the sample's own constants (the plain calibration).
        limbs: the limbs sharing ``arl0_origins`` (see :class:`CusumDetector`): this one is
            calibrated to ``limbs x arl0_origins``.
        meta: ``arl0``, ``origin_step``, ``sample``, ``reference``, ``window`` for the record.

    Returns:
        :class:`CusumDetector`; ``h`` to about 0.5% (bisection), ``arl0_bootstrap`` the ARL the
        detector gives on the bootstrap stream (above the target when ``guarantee`` is set).

    Raises:
        DataQualityError: fewer than ``2 x block`` differentials, or they are constant.
    """
    r = np.asarray(r, dtype=np.float64)
    r = r[np.isfinite(r)]
    if len(r) < max(2 * block, lags + 2, 10):
        raise DataQualityError(f"CUSUM calibration: expected at least {max(2 * block, lags + 2, 10)} loss differentials (2 blocks of {block}), found {len(r)}")
    center, scale, c, mean, sd = _constants(r, lags, clip)
    if not sd > 0:
        raise DataQualityError("CUSUM calibration: the loss differential is constant (zero long-run variance); nothing to standardise")
    k = shift / 2.0
    rng = np.random.default_rng(seed)
    pair_arl0, arl0_origins = float(arl0_origins), float(arl0_origins) * max(1, int(limbs))
    length = int(min(SIGNALS * arl0_origins, max(MAX_STREAM, 50 * arl0_origins)))
    stream = block_bootstrap(r, length, block, rng)  # the estimated in-control process, in units of r

    def increments(center_: float, scale_: float, mean_: float, sd_: float) -> np.ndarray:
        return (np.clip((stream - center_) / scale_, -c, c) - mean_) / sd_ - k

    # a CUSUM whose in-control increments are never positive stays at 0: any h holds any ARL0, and live, the first origin
    # above k signals (measured: the fast limb against the seasonal naive forecast on hourly temperatures; docs/LOOP.md 10.2)
    if (c - mean) / sd - k <= 0 or not (increments(center, scale, mean, sd) > 0).any():
        raise DataQualityError(
            f"CUSUM calibration: no score of the calibration sample exceeds k = {k:g} (scores clipped at {c:g} MADs, mean {mean:.3g}, "
            f"long-run sd {sd:.3g}): the CUSUM never moves in control, so no decision interval can be calibrated. "
            "Fix: a smaller shift (cusum_shift / cusum_fast_shift) or a larger clip."
        )

    if guarantee is None:
        h, arl = interval_for(increments(center, scale, mean, sd), arl0_origins)
        replicates = 0
    else:
        needed = []
        for _ in range(replicates):
            again = _constants(block_bootstrap(r, len(r), block, rng), lags, clip)
            if again[4] > 0:
                needed.append(interval_for(increments(again[0], again[1], again[3], again[4]), arl0_origins)[0])
        if not needed:
            raise DataQualityError("CUSUM calibration: every bootstrap replicate of the loss differential was constant")
        h = float(np.quantile(needed, guarantee))
        arl = average_run_length(increments(center, scale, mean, sd), h, arl0_origins)
    return CusumDetector(mean=mean, sd=sd, k=k, h=h, arl0_origins=pair_arl0, arl0_bootstrap=float(arl), lags=lags, block=block, n=len(r),
                         arl0=str(meta.get("arl0", "")), origin_step=int(meta.get("origin_step", 1)), sample=str(meta.get("sample", "")),
                         reference=str(meta.get("reference", "naive")), window=str(meta.get("window", "7D")),
                         center=center, scale=scale, clip=c, guarantee=float(guarantee or 0.0), replicates=int(replicates),
                         limbs=max(1, int(limbs)), phase=int(meta.get("phase", 0)))  # fmt: skip


# ------------------------------------------------------------------ from a training run's folders


def reference_forecasts(y: np.ndarray, series: np.ndarray, origin_rows: np.ndarray, horizon: int, model: str, season: int) -> np.ndarray:
    """The reference forecast of each window, as the monitoring check computes it.

    Args:
        y, series: ``(N,)`` the stacked target (original units, NaN where missing) and series index.
        origin_rows: ``(n,)`` int, each window's origin row (its last input).
        model: ``naive`` (``y`` at the origin) or ``seasonal_naive`` (``y`` one season before each
            target, ``season x ceil(step / season)`` rows back, statsforecast's SeasonalNaive).

    Returns:
        ``(n, horizon)`` float64; NaN where the value is missing or in another series.
    """
    steps = np.arange(1, horizon + 1)
    offsets = np.zeros(horizon, dtype=np.int64) if model == "naive" else steps - season * (-(-steps // season))
    rows = origin_rows[:, None] + offsets[None, :]
    ok = (rows >= 0) & (series[np.clip(rows, 0, len(y) - 1)] == series[origin_rows][:, None])
    return np.where(ok, y[np.clip(rows, 0, len(y) - 1)], np.nan)


def per_origin_losses(origins, truth, model, reference) -> pd.DataFrame:
    """Mean squared error of ``model`` and ``reference`` per origin time (over steps and series).

    ``origins``: ``(n,)`` datetime64 of each window's origin; ``truth``, ``model``, ``reference``:
    ``(n, h)``. Windows with a missing value are dropped. Returns a frame indexed by sorted
    origin with ``loss_model, loss_reference``.
    """
    ok = np.isfinite(truth).all(1) & np.isfinite(model).all(1) & np.isfinite(reference).all(1)
    frame = pd.DataFrame({"origin": np.asarray(origins)[ok], "loss_model": np.mean((model - truth) ** 2, 1)[ok],
                          "loss_reference": np.mean((reference - truth) ** 2, 1)[ok]})  # fmt: skip
    return frame.groupby("origin").mean().sort_index()


def _split_losses(fs, forecasts: np.ndarray, index: np.ndarray, split: str, model: str, season: int) -> pd.DataFrame:
    lookback, horizon = fs.prep.lookback, fs.prep.horizon
    rows = fs.starts[split][index] + lookback - 1
    ref = reference_forecasts(fs.y.astype(np.float64), fs.series, rows, horizon, model, season)
    return per_origin_losses(fs.ds[rows], fs.targets(split)[index], np.asarray(forecasts, dtype=np.float64), ref)


#: version tag: the reference forecast the monitoring rules compare this version with (``monitoring.naive_model``, resolved)
REFERENCE_TAG = "monitoring.reference"
#: the reference forecasts a check can compute, with the baseline of the comparison that is each one
REFERENCES = {"naive": "Naive", "seasonal_naive": "SeasonalNaive"}


def choose_reference(setting: str, test_rmse: dict[str, float]) -> tuple[str, str]:
    """The reference forecast of a version's monitoring rules, and why: ``(reference, reason)``.

    ``setting`` is ``monitoring.naive_model``: ``naive`` or ``seasonal_naive`` are taken as
    they are; ``auto`` picks the one of the two whose baseline (``Naive``, ``SeasonalNaive``)
    had the lower RMSE on the version's own test part, ``test_rmse`` (the comparison's
    ``{model: rmse}``, target units). Why: a relative loss differential against a reference far
    worse than the model mostly measures the reference's own loss. On hourly temperatures,
    where the LSTM's RMSE is 2% of the last value's, an x3 error inflation stayed invisible
    against ``naive``, and the detector fired on the reference's season instead; against the
    seasonal naive forecast, the stronger of the two there, it made no false trigger in 274
    clean days and caught the x3 in 93-155 h (docs/BENCHMARKS.md, "The calibrated CUSUM, robust
    defaults"). Where the last value is the stronger (Beijing PM2.5: 77.7 against 97.6) it stays.
    A missing baseline (``baselines.models`` without it) leaves the other; neither leaves ``naive``.
    """
    if setting in REFERENCES:
        return setting, f"monitoring.naive_model: {setting}"
    if setting != "auto":
        raise ValueError(f"monitoring.naive_model: expected 'auto' or one of {list(REFERENCES)}, found {setting!r}")
    found = {ref: float(test_rmse[name]) for ref, name in REFERENCES.items() if name in test_rmse and np.isfinite(test_rmse[name])}
    if not found:
        return "naive", "monitoring.naive_model: auto, but neither Naive nor SeasonalNaive was scored on the test part: naive"
    best = min(found, key=found.get)
    scores = ", ".join(f"{REFERENCES[ref]} RMSE {v:.4g}" for ref, v in found.items())
    return best, f"monitoring.naive_model: auto: {best}, the lower test RMSE ({scores})"


def reference_of_version(setting: str, tags: dict[str, str]) -> str:
    """The reference a check uses for a version: ``setting`` unless ``auto``; then the version's
    :data:`REFERENCE_TAG`, or ``naive`` for a version registered before the tag (the old default)."""
    if setting != "auto":
        return setting
    found = tags.get(REFERENCE_TAG)
    return found if found in REFERENCES else "naive"


def calibrate_from_run(features_dir: Path, training_dir: Path, reference: str, season: int, window, arl0, freq: str,
                       shift: float = 1.0, seed: int = 0, clip: float | None = None, guarantee: float | None = None,
                       limbs: int = 1) -> CusumDetector:  # fmt: skip
    """A version's detector from its own test forecasts (``artifacts.TRAINING_FORECASTS``).

    The differentials are the LSTM's against the reference forecast on the scored test origins
    (the windows on one grid of every ``origin_step``-th step, :func:`pipeline.evaluation.origins.select_origins`). The
    training stage does not keep validation forecasts, so the validation part is not used. When
    the test part gives fewer than :data:`MIN_DIFFERENTIALS` (the refit protocol's short tail),
    the scored training origins are added before them (``sample: test+train``): in-sample
    forecasts are better than live ones, so such a detector is quicker to signal.

    Bootstrap blocks are ``max(overlap, min(4 x overlap, n / 10), n^(1/3))`` origins: a block
    only as long as the overlap loses the correlation across its junctions (the bootstrap
    variance of a sum is then Bartlett-weighted at that lag, about 2/3 of the truth for the
    MA(h-1) of overlapping forecasts), which makes the bootstrap's ARL optimistic.

    Args:
        reference: ``naive`` or ``seasonal_naive`` (``monitoring.naive_model`` resolved by :func:`choose_reference`). season: its season (steps).
        window: the scale window (``monitoring.window``). arl0: the target ARL as a duration (``monitoring.arl0``).
        freq: ``data.freq``. shift: ``monitoring.cusum_shift``. clip: ``monitoring.cusum_clip``.
        guarantee: ``monitoring.cusum_guarantee`` (see :func:`calibrate`). limbs: the limbs sharing
            ``arl0`` (2 with a fast limb, :data:`FAST_PREFIX`; see :class:`CusumDetector`).

    Raises:
        DataQualityError: too few differentials even with the training part, or a constant differential.
    """
    from pipeline.core import artifacts
    from pipeline.features.windowing import load_features

    fs = load_features(features_dir)
    with np.load(artifacts.TRAINING_FORECASTS.at(training_dir)) as z:
        arrays = {k: z[k] for k in z.files}
    test_index = arrays["test_index"]
    origin_step = _recorded_step(arrays, "test")
    losses, sample = _split_losses(fs, arrays["test"], test_index, "test", reference, season), "test"
    step = step_duration(freq)
    phase = grid_phase(losses.index[0], step, origin_step) if len(losses) else 0
    losses = losses[on_grid(losses.index, step, origin_step, phase)]  # one grid: the one the live check reads
    if len(losses) < MIN_DIFFERENTIALS:
        train = _training_sample(arrays, origin_step)
        if train is not None:
            extra = _split_losses(fs, *train, "train", reference, season)
            extra = extra[on_grid(extra.index, step, origin_step, phase)]
            if len(extra):  # in-sample origins on another grid add nothing: the sample stays "test"
                # in time order (recent training windows of a scheduled retrain come after the test part), one row per origin
                losses = pd.concat([extra, losses])
                losses, sample = losses[~losses.index.duplicated(keep="last")].sort_index(), "test+train"
    r = relative_differential(losses.index.to_numpy(), losses["loss_model"], losses["loss_reference"], window)
    overlap = -(-fs.prep.horizon // origin_step)
    arl0_origins = pd.Timedelta(arl0) / (origin_step * step_duration(freq))
    block = max(overlap, min(4 * overlap, len(r) // 10), math.ceil(len(r) ** (1 / 3)))
    return calibrate(r, arl0_origins, lags=overlap - 1, block=block, shift=shift, seed=seed, clip=clip, guarantee=guarantee, limbs=limbs,
                     arl0=str(arl0), origin_step=origin_step, sample=sample, reference=reference, window=str(window), phase=phase)  # fmt: skip


def _training_sample(arrays: dict[str, np.ndarray], origin_step: int) -> tuple[np.ndarray, np.ndarray] | None:
    """``(forecasts, window index)`` of training windows the calibration can add to a short test part: the recent
    training windows at every step (``train_recent``, kept by the training stage since 2026-12-06; the grid filter
    then keeps the test's), else the in-sample ones (``train``) only when they were scored at the test's step: origins
    further apart than the live grid's would understate the long-run variance (the overlap's lags assume the test's
    spacing) and make a detector that alarms many times more often than its ``arl0``."""
    if len(arrays.get("train_recent_index", ())):
        return arrays["train_recent"], arrays["train_recent_index"]
    index = arrays.get("train_index", np.empty(0, dtype=np.int64))
    return (arrays["train"], index) if len(index) and _recorded_step(arrays, "train") == origin_step else None


def _recorded_step(arrays: dict[str, np.ndarray], split: str) -> int:
    """The step ``split``'s scored windows were chosen with: ``<split>_step`` of ``forecasts.npz`` (recorded since
    2026-12-07), else read off the index (:func:`pipeline.evaluation.origins.index_step`)."""
    key = f"{split}_step"
    return int(arrays[key]) if key in arrays else index_step(arrays[f"{split}_index"])

