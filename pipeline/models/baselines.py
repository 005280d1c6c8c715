"""Statistical baselines (Nixtla statsforecast) on exactly the LSTM's test origins, in linear time.

Evaluation is statsforecast's rolling-origin ``cross_validation`` with periodic refits: over
the test part a model is refitted every ``refit_every`` steps on the ``fit_window`` steps
before the refit point, and between refits its parameters stay fixed while its states are
filtered through the new values, as ``model.forward`` does. Instead of calling ``forward``
once per origin on a window that grows through the test part (cost: origins x test length),
each fit's filter runs **once** over its segment and the ``h``-step forecast of every origin
is read from the filtered state at that origin:

* Naive, SeasonalNaive: vectorised reads of the series, no fit.
* AutoETS: one ``pegelsresid`` pass (statsforecast's ETS recursion) from the fitted initial
  state, ``etsforecast`` from the state at each origin.
* AutoARIMA: statsforecast's exact-likelihood Kalman filter (``arima_like``) continued from
  one origin to the next, the mean forecast ``Z T^j a`` plus intercept/drift from the state.
* MSTL: the decomposition of the fit window is held until the next refit (each season's
  last cycle repeated, as statsforecast's MSTL forecasts it); the trend model (AutoETS ZZN)
  is filtered once through the seasonally adjusted values. statsforecast's own
  ``MSTL.forward`` re-decomposes the whole history at every origin (quadratic), so MSTL
  equals ``cross_validation`` at refit points only.

``tests/pipeline/test_baselines.py`` checks every model against statsforecast's
``cross_validation`` on a subsample of origins (1e-6 relative). Inputs have no holes:
missing target values are linearly interpolated for *their inputs only*; targets are
never interpolated (the windows exclude them).
Sources: statsforecast models and ``cross_validation``,
https://nixtlaverse.nixtla.io/statsforecast/src/core/models.html; R forecast's
``auto.arima`` (approximation for long or seasonal series), Hyndman & Khandakar (2008).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipeline.core import schema
from pipeline.core.config import PipelineConfig
from pipeline.core.seasons import season_length, seasons_for_freq, steps_per_week
from pipeline.features.windowing import FeatureSet

log = logging.getLogger(__name__)

MSTL = "MSTL"
#: statsforecast's AutoETS fits a non-seasonal model when the season is longer than this
ETS_MAX_SEASON = 24


@dataclass(frozen=True)
class BaselineSpec:
    """The baselines section with every default resolved (picklable, sent to workers)."""

    models: tuple[str, ...]
    season_length: int
    seasons: tuple[int, ...]
    fit_window: int
    refit_every: int | None
    max_fits: int
    week: int
    arima_seasonal: bool
    n_jobs: int
    progress: bool


def resolve_baselines(cfg: PipelineConfig, quiet: bool = False) -> BaselineSpec:
    """``cfg.baselines`` with unset values derived from ``data.freq`` (each choice logged)."""
    bc, freq = cfg.baselines, cfg.data.freq
    derived = seasons_for_freq(freq)
    season = season_length(cfg)
    seasons = tuple(sorted(bc.seasons)) if bc.seasons else (derived if len(derived) > 1 else ())
    models = bc.models or (schema.NAIVE, schema.SEASONAL_NAIVE, schema.AUTO_ETS, schema.AUTO_ARIMA, *((MSTL,) if seasons else ()))
    if MSTL in models and not seasons:
        seasons = (season,)
    fit_window = bc.fit_window or max(672, 4 * max((season, *seasons)))
    chosen = {
        "season_length": (bc.season_length, season), "seasons": (bc.seasons, seasons),
        "models": (bc.models, models), "fit_window": (bc.fit_window, fit_window),
    }  # fmt: skip
    if not quiet:
        for key, (given, value) in chosen.items():
            if given is None:
                log.info("baselines.%s not set: %s derived from data.freq=%r", key, value, freq)
        if schema.AUTO_ETS in models and season > ETS_MAX_SEASON:
            log.info("AutoETS is not seasonal for season_length %d > %d (statsforecast)", season, ETS_MAX_SEASON)
    return BaselineSpec(models, season, seasons, fit_window, bc.refit_every, bc.max_fits, steps_per_week(freq), bc.arima_seasonal, bc.n_jobs, bc.progress)


def make_model(name: str, spec: BaselineSpec, n_fit: int):
    """A fresh statsforecast model for ``name``, fitted later on ``n_fit`` values.

    AutoARIMA uses R ``auto.arima``'s default ``approximation = n > 150 or season > 12``
    (conditional sums of squares while searching, exact likelihood for the chosen model).
    """
    from statsforecast.models import MSTL as StatsMSTL
    from statsforecast.models import AutoARIMA, AutoETS, Naive, SeasonalNaive

    s = spec.season_length
    if name == schema.NAIVE:
        return Naive()
    if name == schema.SEASONAL_NAIVE:
        return SeasonalNaive(season_length=s)
    if name == schema.AUTO_ETS:
        return AutoETS(season_length=s)
    if name == schema.AUTO_ARIMA:
        return AutoARIMA(season_length=s, seasonal=spec.arima_seasonal, approximation=n_fit > 150 or s > 12)
    if name == MSTL:
        return StatsMSTL(season_length=list(spec.seasons), trend_forecaster=AutoETS(model="ZZN"))
    raise ValueError(f"unknown baseline {name!r}; expected one of Naive, SeasonalNaive, AutoETS, AutoARIMA, MSTL")


# ------------------------------------------------------------------ forecasts from filtered states


def naive_forecasts(y: np.ndarray, origins: np.ndarray, h: int, season: int = 1) -> np.ndarray:
    """SeasonalNaive (``season=1``: Naive) from each origin: ``y[o - s + 1 + (j mod s)]``, ``(n, h)``."""
    j = np.arange(h)
    return y[origins[:, None] - season + 1 + (j % season)[None, :]].astype(np.float64)


def _ets_states(mod: dict, y: np.ndarray) -> np.ndarray:
    """``(len(y) + 1, n_states)``: ETS states after each value, from the fitted initial state."""
    from statsforecast.ets import pegelsresid_C

    err, trend, season, damped = mod["components"][0], mod["components"][1], mod["components"][2], mod["components"][3] != "N"
    alpha, beta, gamma, phi = mod["par"][:4]
    _, _, states, _ = pegelsresid_C(y, mod["m"], mod["par"][4:], err, trend, season, damped, alpha, beta, gamma, phi, 3)
    return states


def _ets_forecasts(mod: dict, states: np.ndarray, h: int) -> np.ndarray:
    """``states (n, n_states)`` -> ``(n, h)`` mean forecasts (statsforecast's ``etsforecast``)."""
    from statsforecast.ets import etsforecast, switch

    phi = 1.0 if mod["components"][3] == "N" else mod["par"][3]
    trend, season = switch(mod["components"][1]), switch(mod["components"][2])
    out = np.empty((len(states), h))
    for i, x in enumerate(states):
        etsforecast(x=x, m=mod["m"], trend=trend, season=season, phi=phi, h=h, f=out[i])
    return out


def _ets_segment(model, y: np.ndarray, fit_len: int, origins: np.ndarray, h: int) -> np.ndarray:
    states = _ets_states(model.model_, y[: origins[-1] + 1])
    return _ets_forecasts(model.model_, states[origins + 1], h)


def _arima_regression(coef: dict, k: np.ndarray) -> np.ndarray:
    """Intercept and drift at positions ``k`` (0 = first value of the filtered window)."""
    extra = [c for c in coef if c not in ("intercept", "drift") and not c.startswith(("ar", "ma", "sar", "sma"))]
    if extra:
        raise ValueError(f"AutoARIMA regressors {extra} are not supported by the baseline filter")
    return coef.get("intercept", 0.0) + coef.get("drift", 0.0) * (k + 1.0)


def _arima_segment(model, y: np.ndarray, fit_len: int, origins: np.ndarray, h: int) -> np.ndarray:
    """Kalman filter continued from origin to origin; ``Z T^j a`` + regression from each state."""
    from statsforecast.arima import arima_like, forward_arima

    mod = forward_arima(model.model_, y[: origins[0] + 1].copy(), method=model.method)
    st, coef = mod["model"], mod["coef"]
    a, P, Pn = st["a"].copy(), st["P"].copy(), st["Pn"].copy()
    T, V, Z = st["T"], st["V"], st["Z"]
    states = np.empty((len(origins), len(a)))
    states[0] = a
    for i in range(1, len(origins)):
        lo, hi = origins[i - 1] + 1, origins[i] + 1
        Pn[:] = T @ P @ T.T + V  # the one-step prediction arima_like skips at its first value (up=0)
        arima_like(y[lo:hi] - _arima_regression(coef, np.arange(lo, hi)), st["phi"], st["theta"], st["delta"], a, P, Pn, 0, False)
        states[i] = a
    out = np.empty((len(origins), h))
    for j in range(h):
        states = states @ T.T  # (n, rd): one step ahead of every origin's state
        out[:, j] = states @ Z + _arima_regression(coef, origins + 1 + j)
    return out


def _mstl_segment(model, y: np.ndarray, fit_len: int, origins: np.ndarray, h: int) -> np.ndarray:
    """Seasonal cycles of the fit held fixed; trend model (AutoETS) filtered once."""
    decomp = model.model_
    seas_cols = [c for c in decomp.columns if c.startswith("seasonal")]
    n_total = origins[-1] + 1 + h
    seasonal = np.zeros(n_total)
    seasonal[:fit_len] = decomp[seas_cols].sum(axis=1).to_numpy()
    ahead = np.arange(n_total - fit_len)
    for col, period in zip(seas_cols, model.season_length, strict=True):
        last_cycle = decomp[col].to_numpy()[-period:]
        seasonal[fit_len:] += last_cycle[ahead % period]
    adjusted = y[: origins[-1] + 1] - seasonal[: origins[-1] + 1]
    adjusted[:fit_len] = decomp[["trend", "remainder"]].sum(axis=1).to_numpy()
    trend_mod = model.trend_forecaster.model_
    states = _ets_states(trend_mod, adjusted)
    return _ets_forecasts(trend_mod, states[origins + 1], h) + seasonal[origins[:, None] + 1 + np.arange(h)]


_SEGMENT = {schema.AUTO_ETS: _ets_segment, schema.AUTO_ARIMA: _arima_segment, MSTL: _mstl_segment}


def fit_model(name: str, spec: BaselineSpec, y: np.ndarray):
    """``make_model(name, spec, len(y)).fit(y)`` without statsforecast's optimiser convergence warnings."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return make_model(name, spec, len(y)).fit(np.array(y, dtype=np.float64))


def forecast_segment(name: str, spec: BaselineSpec, y: np.ndarray, fit_len: int, origins: np.ndarray, h: int, model=None) -> tuple[np.ndarray, float, str]:
    """Fit ``name`` on ``y[:fit_len]`` (unless ``model`` is that fit), forecast ``h`` steps from each
    origin (positions in ``y``, ascending, >= ``fit_len - 1``).

    Returns ``(forecasts (n, h) float64, fit seconds, forecast seconds, model description)``.
    """
    t0 = time.perf_counter()
    model = model if model is not None else fit_model(name, spec, y[:fit_len])
    t1 = time.perf_counter()
    forecasts = _SEGMENT[name](model, y, fit_len, origins, h)
    return forecasts, t1 - t0, time.perf_counter() - t1, _describe(name, model)


def _describe(name: str, model) -> str:
    if name == schema.AUTO_ARIMA:
        from statsforecast.arima import arima_string

        return arima_string(model.model_).strip()
    if name == schema.AUTO_ETS:
        return "ETS(" + ",".join(model.model_["components"][:3]) + ")"
    return name


# ------------------------------------------------------------------ the contract


def filled_target(fs: FeatureSet) -> np.ndarray:
    """``fs.y`` with every hole linearly interpolated per series (ends: nearest value)."""
    out = np.empty_like(fs.y)
    for k in range(len(fs.series_ids)):
        rows = np.flatnonzero(fs.series == k)
        out[rows] = pd.Series(fs.y[rows]).interpolate(limit_direction="both").to_numpy()
    return out


@dataclass(frozen=True)
class Segment:
    """One fit of one series: rows ``[fit_lo, fit_hi)`` fit the model, which forecasts ``rows`` of the origins."""

    series: int
    fit_lo: int
    fit_hi: int
    rows: np.ndarray  # indices into the origins being forecast


def plan_segments(fs: FeatureSet, origins: np.ndarray, spec: BaselineSpec) -> list[Segment]:
    """Refit points every ``refit_every`` steps from each series' first origin (``max_fits`` at most)."""
    segments = []
    for k in range(len(fs.series_ids)):
        rows = np.flatnonzero(fs.series[origins] == k)
        if not len(rows):
            continue
        first_row = int(np.flatnonzero(fs.series == k)[0])
        o = origins[rows]
        span = int(o[-1] - o[0]) + 1
        every = spec.refit_every or max(spec.week, math.ceil(span / spec.max_fits))
        seg_id = (o - o[0]) // every
        for j in np.unique(seg_id):
            fit_hi = int(o[0] + j * every) + 1  # data up to the refit point, inclusive
            segments.append(Segment(k, max(first_row, fit_hi - spec.fit_window), fit_hi, rows[seg_id == j]))
    return segments


class StatsBaseline:
    """One statsforecast model under the forecaster contract.

    Args:
        name: ``Naive`` | ``SeasonalNaive`` | ``AutoETS`` | ``AutoARIMA`` | ``MSTL`` (the column alias).
        spec: resolved baselines settings (:func:`resolve_baselines`).

    ``fit(fs) -> self`` fits the model of each series on the ``fit_window`` steps before its
    first test origin; ``forward(y, h) -> (h,)`` forecasts from new history with those fitted
    parameters (statsforecast's ``forward``); ``predict(fs, split, index) -> (n, h)`` float64
    forecasts in original units from the origins of ``split``'s windows ``index`` (all by
    default), refitting every ``refit_every`` steps (one fit per segment, see module doc).
    Fitted state: ``models_`` (first fit per series), ``fits_`` (one dict per fit),
    ``fit_seconds_``, ``predict_seconds_``, ``segment_`` (fit number of each forecast row).
    """

    def __init__(self, name: str, spec: BaselineSpec):
        self.name = name
        self.spec = spec

    def fit(self, fs: FeatureSet) -> StatsBaseline:
        y, t0 = filled_target(fs), time.perf_counter()
        first_test = fs.starts["test"] + fs.prep.lookback
        self.models_, self.fit_windows_ = {}, {}
        for k in range(len(fs.series_ids)):
            rows = np.flatnonzero(fs.series == k)
            in_test = first_test[(first_test >= rows[0]) & (first_test <= rows[-1])]
            end = int(in_test.min()) if len(in_test) else int(rows[-1]) + 1
            start = max(int(rows[0]), end - self.spec.fit_window)
            self.models_[k] = fit_model(self.name, self.spec, y[start:end])
            self.fit_windows_[k] = (start, end)
        self.fit_seconds_ = time.perf_counter() - t0
        return self

    def forward(self, y: np.ndarray, h: int, series: int = 0) -> np.ndarray:
        """``y (n,)`` history in original units, no NaN -> ``(h,)`` forecasts with the fitted parameters."""
        return np.asarray(self.models_[series].forward(y=np.asarray(y, dtype=np.float64), h=h)["mean"], dtype=np.float64)

    def predict(self, fs: FeatureSet, split: str = "test", index: np.ndarray | None = None) -> np.ndarray:
        """``(n, horizon)`` float64 forecasts in original units, one row per window ``index`` of ``split``."""
        origins = origins_of(fs, split, index)
        tasks = self.tasks(fs, origins)
        out = np.empty((len(origins), fs.prep.horizon))
        self.segment_, self.fits_ = np.zeros(len(origins), np.int32), []
        t0 = time.perf_counter()
        for task in tasks:
            self._store(task, run_task(task), out)
        self.predict_seconds_ = time.perf_counter() - t0
        return out

    def tasks(self, fs: FeatureSet, origins: np.ndarray) -> list[dict]:
        """Independent jobs (one per fit) that together forecast every origin."""
        h, y = fs.prep.horizon, filled_target(fs)
        if self.name in (schema.NAIVE, schema.SEASONAL_NAIVE):
            season = self.spec.season_length if self.name == schema.SEASONAL_NAIVE else 1
            return [{"name": self.name, "kind": "naive", "y": y, "origins": origins, "season": season, "h": h, "rows": np.arange(len(origins)), "series": -1}]
        return [
            {"name": self.name, "kind": "fit", "spec": self.spec, "y": y[s.fit_lo : origins[s.rows[-1]] + 1], "fit_len": s.fit_hi - s.fit_lo,
             "origins": origins[s.rows] - s.fit_lo, "h": h, "rows": s.rows, "series": s.series, "model": self._fitted(s)}
            for s in plan_segments(fs, origins, self.spec)
        ]  # fmt: skip

    def _fitted(self, segment: Segment):
        """The model ``fit`` estimated on exactly this segment's window, if any (no second fit)."""
        if getattr(self, "fit_windows_", {}).get(segment.series) == (segment.fit_lo, segment.fit_hi):
            return self.models_[segment.series]
        return None

    def _store(self, task: dict, result: tuple[np.ndarray, float, float, str], out: np.ndarray) -> None:
        forecasts, fit_seconds, forecast_seconds, description = result
        out[task["rows"]] = forecasts
        self.segment_[task["rows"]] = len(self.fits_)
        self.fits_.append({"series": task["series"], "n_origins": len(task["rows"]), "fit_seconds": fit_seconds,
                           "forecast_seconds": forecast_seconds, "model": description})  # fmt: skip


def origins_of(fs: FeatureSet, split: str, index: np.ndarray | None) -> np.ndarray:
    """Row of the origin (a window's last input step) of ``split``'s windows ``index`` (all when None)."""
    starts = fs.starts[split] if index is None else fs.starts[split][index]
    return starts + fs.prep.lookback - 1


def run_task(task: dict) -> tuple[np.ndarray, float, float, str]:
    """One planned fit (:meth:`StatsBaseline.tasks`) -> ``(forecasts (n, h), fit_seconds, forecast_seconds, model description)``."""
    if task["kind"] == "naive":
        t0 = time.perf_counter()
        forecasts = naive_forecasts(task["y"], task["origins"], task["h"], task["season"])
        return forecasts, 0.0, time.perf_counter() - t0, task["name"]
    return forecast_segment(task["name"], task["spec"], task["y"], task["fit_len"], task["origins"], task["h"], task.get("model"))
