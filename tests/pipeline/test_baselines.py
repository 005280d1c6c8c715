"""The baselines' one-pass filtering equals statsforecast's own ``cross_validation``, and defaults come from ``freq``."""

import logging

import numpy as np
import pandas as pd
import pytest

from pipeline.core.seasons import seasons_for_freq
from pipeline.models.baselines import MSTL, StatsBaseline, make_model, plan_segments, resolve_baselines

CASES = [
    ("Naive", "filter"), ("SeasonalNaive", "filter"), ("AutoETS", "filter"), ("AutoARIMA", "filter"),
    ("AutoETS", "refit"), pytest.param("AutoARIMA", "refit", marks=pytest.mark.slow), (MSTL, "refit"),  # the slowest fit: make test only
]  # fmt: skip


def _spec(cfg, **update):
    base = cfg.baselines.model_copy(update={"seasons": (12, 24), "fit_window": 150, **update})
    return resolve_baselines(cfg.model_copy(update={"baselines": base}))


@pytest.mark.parametrize(("name", "mode"), CASES)
def test_forecasts_equal_statsforecast_cross_validation(name, mode, tiny_features):
    """``filter``: one fit, states filtered origin to origin == ``cross_validation(refit=False)``;
    ``refit``: a fit at every sampled origin == ``cross_validation(refit=True, input_size=fit_window)``."""
    from statsforecast import StatsForecast

    cfg, fs = tiny_features
    step = 3 if mode == "filter" else 25
    spec = _spec(cfg, refit_every=10_000 if mode == "filter" else step)
    index = np.arange(0, len(fs.starts["test"]), step)
    mine = StatsBaseline(name, spec).predict(fs, "test", index)

    h, W = fs.prep.horizon, spec.fit_window
    origins = fs.starts["test"][index] + fs.prep.lookback - 1
    lo = origins[0] + 1 - W
    ys = fs.y[lo : origins[-1] + 1 + h]
    df = pd.DataFrame({"unique_id": "s", "ds": np.arange(len(ys)), "y": ys})
    sf = StatsForecast(models=[make_model(name, spec, W)], freq=1, n_jobs=1)
    cv = sf.cross_validation(
        df=df, h=h, step_size=step, test_size=len(ys) - W, refit=mode == "refit", input_size=W if mode == "refit" else None
    ).sort_values(["cutoff", "ds"])
    ref = cv[name].to_numpy().reshape(-1, h)
    assert ref.shape == mine.shape
    np.testing.assert_allclose(mine, ref, rtol=1e-6, atol=1e-9 * np.abs(ys).max())


def test_refits_split_the_test_part_and_reuse_nothing_from_the_future(tiny_features):
    cfg, fs = tiny_features
    spec = _spec(cfg, refit_every=20)
    origins = fs.starts["test"] + fs.prep.lookback - 1
    segments = plan_segments(fs, origins, spec)
    assert len(segments) == int(np.ceil((origins[-1] - origins[0] + 1) / 20))
    for seg in segments:
        assert seg.fit_hi - seg.fit_lo == spec.fit_window
        assert (origins[seg.rows] >= seg.fit_hi - 1).all() and (origins[seg.rows] < seg.fit_hi - 1 + 20).all()
    model = StatsBaseline("AutoETS", spec)
    model.predict(fs, "test")
    assert len(model.fits_) == len(segments) and set(np.unique(model.segment_)) == set(range(len(segments)))


@pytest.mark.parametrize(
    ("freq", "seasons"),
    [("h", (24, 168)), ("30min", (48, 336)), ("10min", (144, 1008)), ("15min", (96, 672)), ("D", (7,)),
     ("W", (52,)), ("MS", (12,)), ("QS", (4,)), ("7h", (1,))],
)  # fmt: skip
def test_seasons_from_the_frequency(freq, seasons):
    assert seasons_for_freq(freq) == seasons


def test_unset_baselines_are_derived_from_freq_and_logged(tiny_features, caplog):
    cfg, _ = tiny_features
    bare = cfg.model_copy(update={"baselines": cfg.baselines.model_copy(update={"season_length": None, "fit_window": None, "models": None})})
    with caplog.at_level(logging.INFO, logger="pipeline.models.baselines"):
        spec = resolve_baselines(bare)
    assert spec.season_length == 24 and spec.seasons == (24, 168) and MSTL in spec.models
    assert spec.fit_window == 672
    assert "season_length not set" in caplog.text and "not seasonal" not in caplog.text  # 24 is still seasonal for ETS
    daily = bare.model_copy(update={"data": bare.data.model_copy(update={"freq": "D"})})
    assert MSTL not in resolve_baselines(daily).models and resolve_baselines(daily).season_length == 7
