"""Statistical baselines (Nixtla statsforecast) on exactly the LSTM's windows.

Each baseline follows the forecaster contract: ``fit(fs) -> self`` estimates the model
on the most recent ``baselines.fit_window`` steps before the test part (training +
validation data, as an analyst would); ``predict(fs, split)`` forecasts ``h`` steps
from every origin of ``split``'s windows - the same origins and targets the LSTM is
scored on, so windows dropped for gaps are dropped for every model - with
statsforecast's ``forward``: parameters fixed, states re-filtered, no refit per origin.
The filter runs from the start of the fit window up to the origin (so ETS states start
from their fitted initial values); AutoARIMA, whose exact-likelihood Kalman filter is
the slow part, filters only the last ``context_window`` values before each origin.

Inputs of a baseline have no holes: missing target values are linearly interpolated
for *their inputs only*; targets are never interpolated (the windows exclude them).
Source: statsforecast models API, https://nixtlaverse.nixtla.io/statsforecast/src/core/models.html
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline import artifacts, schema
from pipeline.config import BaselinesConfig, PipelineConfig
from pipeline.features import FeatureSet

log = logging.getLogger(__name__)


def _make_model(name: str, bc: BaselinesConfig):
    from statsforecast.models import AutoARIMA, AutoETS, Naive, SeasonalNaive

    season_length = bc.season_length
    return {
        schema.NAIVE: lambda: Naive(),
        schema.SEASONAL_NAIVE: lambda: SeasonalNaive(season_length=season_length),
        schema.AUTO_ETS: lambda: AutoETS(season_length=season_length),
        schema.AUTO_ARIMA: lambda: AutoARIMA(season_length=season_length, seasonal=bc.arima_seasonal),
    }[name]()


def filled_target(fs: FeatureSet) -> np.ndarray:
    """``fs.y`` with every hole linearly interpolated per series (ends: nearest value)."""
    out = np.empty_like(fs.y)
    for k in range(len(fs.series_ids)):
        rows = np.flatnonzero(fs.series == k)
        out[rows] = pd.Series(fs.y[rows]).interpolate(limit_direction="both").to_numpy()
    return out


class StatsBaseline:
    """One statsforecast model under the forecaster contract.

    Args:
        name: ``Naive`` | ``SeasonalNaive`` | ``AutoETS`` | ``AutoARIMA`` (the column alias).
        bc: the ``baselines`` config section.
    """

    def __init__(self, name: str, bc: BaselinesConfig):
        self.name = name
        self.bc = bc

    def fit(self, fs: FeatureSet) -> "StatsBaseline":
        self.y_ = filled_target(fs)
        self.models_, self.fit_start_, self.series_start_ = {}, {}, {}
        t0 = time.perf_counter()
        first_test = fs.starts["test"] + fs.prep.lookback
        for k in range(len(fs.series_ids)):
            rows = np.flatnonzero(fs.series == k)
            in_test = first_test[(first_test >= rows[0]) & (first_test <= rows[-1])]
            end = int(in_test.min()) if len(in_test) else int(rows[-1]) + 1
            start = max(int(rows[0]), end - self.bc.fit_window)
            self.fit_start_[k], self.series_start_[k] = start, int(rows[0])
            self.models_[k] = _make_model(self.name, self.bc).fit(self.y_[start:end].copy())
        self.fit_seconds_ = time.perf_counter() - t0
        return self

    def predict(self, fs: FeatureSet, split: str = "test") -> np.ndarray:
        """``(n_windows, horizon)`` float64 forecasts in original units, one row per window of ``split``."""
        h = fs.prep.horizon
        rolling = self.name == schema.AUTO_ARIMA
        origins = fs.starts[split] + fs.prep.lookback - 1
        out = np.empty((len(origins), h), dtype=np.float64)
        t0 = time.perf_counter()
        for i, o in enumerate(origins):
            k = int(fs.series[o])
            first = max(self.series_start_[k], o + 1 - self.bc.context_window) if rolling else self.fit_start_[k]
            window = self.y_[first : o + 1]
            out[i] = self.models_[k].forward(y=window.copy(), h=h)["mean"]
        self.predict_seconds_ = time.perf_counter() - t0
        return out


def make_baselines(cfg: PipelineConfig, fs: FeatureSet) -> tuple[list[StatsBaseline], dict[str, str]]:
    """The configured baselines, and ``{name: reason}`` for those skipped."""
    chosen, skipped = [], {}
    n_origins = len(fs.starts["test"])
    for name in cfg.baselines.models:
        if name == schema.AUTO_ARIMA and n_origins > cfg.baselines.arima_max_origins:
            skipped[name] = f"{n_origins} test origins > baselines.arima_max_origins ({cfg.baselines.arima_max_origins})"
            log.warning("skipping AutoARIMA: %s", skipped[name])
            continue
        chosen.append(StatsBaseline(name, cfg.baselines))
    return chosen, skipped


def run_baselines(cfg: PipelineConfig, run_path: Path, features_dir: Path) -> dict[str, Any]:
    """Stage entry point: fit every baseline, forecast the test windows, save ``<run>/baselines/``.

    Writes ``forecasts.npz`` (one ``(n_windows, horizon)`` array per model) and
    ``timings.json``. Returns ``{"baselines": folder, "models": [...], "skipped": {...}}``.
    """
    from pipeline.features import load_features

    fs = load_features(features_dir)
    models, skipped = make_baselines(cfg, fs)
    forecasts, timings = {}, {}
    for model in models:
        forecasts[model.name] = model.fit(fs).predict(fs, "test")
        timings[model.name] = {"fit_seconds": model.fit_seconds_, "predict_seconds": model.predict_seconds_}
        log.info("%s: fit %.1fs, predict %.1fs", model.name, model.fit_seconds_, model.predict_seconds_)
    target = artifacts.step_dir(run_path, artifacts.BASELINES)
    with artifacts.atomic_dir(target) as tmp:
        np.savez(tmp / "forecasts.npz", **forecasts)
        artifacts.write_json(tmp / "timings.json", {"timings": timings, "skipped": skipped})
    return {"baselines": str(target), "models": list(forecasts), "skipped": skipped}
