"""Split-conformal prediction intervals: the quantile, coverage on a synthetic series, the
served columns, the config key, the test-part report (real MLflow server: tests/pipeline/test_registry.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

from pipeline.core.config import load_config
from pipeline.core.errors import ConfigError
from pipeline.evaluation.intervals import coverage, coverage_interval, flat_metrics, interval_metrics, rolling_coverage
from pipeline.models.conformal import (
    SCALE_FLOOR,
    IntervalCalibration,
    conformal_quantile,
    local_scale,
    nest_bands,
    track_ratios,
    tracked_factor,
)
from tests.conftest import tiny_config_dict


def test_quantile_has_the_finite_sample_correction():
    scores = np.arange(1.0, 10.0)[:, None] * np.array([[1.0, 10.0]])  # n = 9, two steps
    # k = ceil((n + 1) * 0.8) = 8: the 8th smallest, not np.quantile's 0.8 point (7.4)
    np.testing.assert_array_equal(conformal_quantile(scores, 80), [8.0, 80.0])
    # k = ceil(10 * 0.95) = 10 > 9: no finite band can promise 95% from 9 windows
    assert np.isinf(conformal_quantile(scores, 95)).all()
    np.testing.assert_array_equal(conformal_quantile(np.arange(1.0, 20.0)[:, None], 95), [19.0])  # n = 19: k = 19
    with pytest.raises(ValueError, match="0 < level < 100"):
        conformal_quantile(scores, 100)


def _ar1_windows(n: int, h: int, phi: float = 0.8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """An AR(1) series cut into overlapping ``h``-step windows, with its optimal forecast ``phi**j * y_t``.

    The ``j``-step error has variance ``sum(phi**(2i), i < j)``: it grows with the step, so a
    single band for all steps would over-cover step 1 and under-cover step h.
    """
    rng = np.random.default_rng(seed)
    y = np.zeros(n + h)
    for t in range(1, n + h):
        y[t] = phi * y[t - 1] + rng.normal()
    origins = np.arange(n)
    truth = np.stack([y[origins + j] for j in range(1, h + 1)], axis=1)
    pred = np.stack([phi**j * y[origins] for j in range(1, h + 1)], axis=1)
    return truth, pred


def test_coverage_on_a_synthetic_series_is_near_nominal_at_every_step():
    truth, pred = _ar1_windows(30_000, h=6)
    cal, test = slice(0, 3000), slice(5000, 30_000)  # calibrate on an earlier part, test on a later one, as the pipeline does
    calibration = IntervalCalibration.fit(truth[cal], pred[cal], [80, 95])
    widths = np.diff(np.asarray(calibration.quantiles["80"]))
    assert (widths > 0).all()  # one quantile per step: the band widens with the step
    report = interval_metrics(calibration, truth[test], pred[test])
    for label, nominal in (("80", 0.80), ("95", 0.95)):
        assert report[label]["coverage"] == pytest.approx(nominal, abs=0.03)
        assert np.allclose(report[label]["coverage_per_step"], nominal, atol=0.03)  # per step, not only overall
        assert report[label]["n"] == truth[test].size
    assert report["95"]["mean_width"] > report["80"]["mean_width"] > 0


def test_log1p_bands_are_multiplicative_and_cover_the_same_points():
    rng = np.random.default_rng(1)
    pred = rng.uniform(10, 1000, size=(2000, 2))
    truth = pred * np.exp(rng.normal(0, 0.3, size=pred.shape))  # multiplicative noise
    calibration = IntervalCalibration.fit(truth[:1000], pred[:1000], [80], space="log1p")
    lo, hi = calibration.bands(pred[1000:])["80"]
    assert (lo > 0).all() and ((hi - lo) / pred[1000:]).std() < 0.05  # width proportional to the level
    assert coverage(truth[1000:], lo, hi)["coverage"] == pytest.approx(0.80, abs=0.03)


def test_calibration_round_trips_through_json_with_infinite_bands(tmp_path):
    truth, pred = _ar1_windows(10, h=3)  # 10 windows: 95% needs 19, so its band is infinite
    calibration = IntervalCalibration.fit(truth, pred, [95, 80], source="validation_tail")
    loaded = IntervalCalibration.load(calibration.save(tmp_path / "intervals.json"))
    assert loaded == calibration and loaded.levels == (80.0, 95.0) and loaded.source == "validation_tail"
    lo, hi = loaded.bands(pred)["95"]
    assert np.isneginf(lo).all() and np.isposinf(hi).all()
    with pytest.raises(ValueError, match=r"shape \(n, 3\)"):
        loaded.bands(pred[:, :2])


def _regime_windows(n: int, sigma: np.ndarray, lookback: int = 12, h: int = 3, seed: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A random walk whose step size is ``sigma[t]``, cut into windows: ``(truth, forecast, history)``.

    The forecast is the last value (optimal for a random walk), so step ``j``'s error has a
    spread of about ``sqrt(j) * sigma``, and a window's lookback shows its own ``sigma``.
    """
    rng = np.random.default_rng(seed)
    y = np.cumsum(sigma * rng.normal(size=len(sigma)))
    origins = np.arange(lookback - 1, lookback - 1 + n)
    history = np.stack([y[o - lookback + 1 : o + 1] for o in origins])
    truth = np.stack([y[origins + j] for j in range(1, h + 1)], axis=1)
    return truth, np.repeat(y[origins][:, None], h, axis=1), history


def test_normalised_scores_carry_a_calm_calibration_over_to_a_volatile_test_part():
    """Calibrated on a calm regime and tested on one 3 x as volatile, where the error grows with the
    volatility (a random walk): absolute bands under-cover badly, normalised ones hold."""
    n = 4000
    calm, volatile = _regime_windows(n, np.full(n + 20, 1.0), seed=3), _regime_windows(n, np.full(n + 20, 3.0), seed=4)
    absolute = IntervalCalibration.fit(calm[0], calm[1], [80, 95])
    normalised = IntervalCalibration.fit(calm[0], calm[1], [80, 95], history=calm[2])
    assert absolute.score == "absolute" and normalised.score == "normalised" and normalised.method != absolute.method
    plain = interval_metrics(absolute, volatile[0], volatile[1])
    scaled = interval_metrics(normalised, volatile[0], volatile[1], volatile[2])
    assert plain["80"]["coverage"] < 0.5  # the calm band is a third as wide as it must be
    for label, nominal in (("80", 0.80), ("95", 0.95)):
        assert scaled[label]["coverage"] == pytest.approx(nominal, abs=0.03)
    # on a calm test part like the calibration, both hold and the widths agree
    again = _regime_windows(n, np.full(n + 20, 1.0), seed=5)
    assert interval_metrics(normalised, *again)["80"]["coverage"] == pytest.approx(0.80, abs=0.03)
    assert interval_metrics(normalised, *again)["80"]["mean_width"] == pytest.approx(interval_metrics(absolute, *again[:2])["80"]["mean_width"], rel=0.1)


def test_local_scale_is_the_mean_absolute_change_and_flat_windows_get_the_floor(tmp_path):
    history = np.array([[1.0, 2.0, 4.0, 4.0], [5.0, np.nan, 5.0, 6.0], [3.0, 3.0, 3.0, 3.0], [np.nan, 1.0, np.nan, 2.0]])
    # pairs with both ends observed only: (1 + 2 + 0) / 3; (1) / 1; 0; none -> NaN
    np.testing.assert_allclose(local_scale(history), [1.0, 1.0, 0.0, np.nan])
    np.testing.assert_allclose(local_scale(np.array([[0.0, np.e - 1.0]]), "log1p"), [1.0])
    truth, pred, hist = _regime_windows(200, np.full(220, 2.0))
    calibration = IntervalCalibration.fit(truth, pred, [80], history=hist)
    assert calibration.scale_floor == pytest.approx(SCALE_FLOOR * np.median(local_scale(hist)))
    flat = np.vstack([hist[:1], np.full((1, hist.shape[1]), 7.0), np.full((1, hist.shape[1]), np.nan)])
    lo, hi = calibration.bands(pred[:3], flat)["80"]
    width = hi - lo
    assert (width[1:] > 0).all()  # a flat or unobserved lookback gets the floor, not a zero-width band
    np.testing.assert_allclose(width[1], width[2])
    np.testing.assert_allclose(width[0] / width[1], local_scale(hist[:1])[0] / calibration.scale_floor)
    with pytest.raises(ValueError, match=r"lookback.*found none"):
        calibration.bands(pred[:3])
    # the score and its floor survive the JSON; a file saved before the option reads as absolute
    loaded = IntervalCalibration.load(calibration.save(tmp_path / "intervals.json"))
    assert loaded == calibration
    old = {k: v for k, v in calibration.to_dict().items() if k not in ("score", "scale_floor")}
    legacy = IntervalCalibration.from_dict(old)
    assert legacy.score == "absolute" and np.isfinite(legacy.bands(pred[:3])["80"][0]).all()
    # every lookback flat: nothing to normalise by, the scores stay absolute
    assert IntervalCalibration.fit(truth, pred, [80], history=np.ones_like(hist)).score == "absolute"
    assert IntervalCalibration.fit(truth, pred, [80], history=hist[:, -1:]).score == "absolute"  # lookback 1: no change to take


def test_rolling_coverage_counts_observations_inside_closed_bands():
    import pandas as pd

    scored = pd.DataFrame({"level": [80.0, 80.0, 80.0, 80.0, 95.0], "lo": [0, 0, 0, 0, -1], "hi": [1, 1, 1, 1, 2], "y": [0.0, 1.0, 0.5, 3.0, 3.0]})
    got = rolling_coverage(scored)
    assert got["80"] == {"level": 80.0, "coverage": 0.75, "mean_width": 1.0, "n": 4}  # both ends included
    assert got["95"]["coverage"] == 0.0 and rolling_coverage(scored.iloc[:0]) == {}


def _config(tmp_path, **evaluation):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(tiny_config_dict(tmp_path / "input.csv", tmp_path / "artifacts", evaluation=evaluation)))
    return path


def test_interval_levels_default_and_validation(tmp_path):
    assert load_config(_config(tmp_path)).evaluation.interval_levels == (80.0, 95.0)
    assert load_config(_config(tmp_path, interval_levels=[95, 50, 97.5])).evaluation.interval_levels == (50.0, 95.0, 97.5)
    assert load_config(_config(tmp_path, interval_levels=[])).evaluation.interval_levels == ()
    for bad, found in (([80, 100], "item 1 is 100"), ([0.0], "item 0 is 0"), ([-5], "item 0 is -5"), ([80, 80], "item 1 repeats 80")):
        with pytest.raises(ConfigError, match=f"evaluation.interval_levels: .*0 < level < 100.*{found}"):
            load_config(_config(tmp_path, interval_levels=bad))
    with pytest.raises(ConfigError, match="evaluation.interval_levels.0"):
        load_config(_config(tmp_path, interval_levels=["80%"]))


def _untrained(cfg, fs):
    import torch

    from pipeline.models.lstm import LSTMForecaster, build_model

    torch.manual_seed(0)
    return LSTMForecaster.from_members([build_model(fs.prep.n_features, fs.prep.horizon, cfg.model, fs.prep.lookback)], fs.prep)


@pytest.mark.parametrize(
    ("features", "source"),
    [({}, "validation"), ({"validation_tail_steps": 30}, "validation_tail"), ({"validation_fraction": 0.0}, None)],
)
def test_training_calibrates_on_the_validation_windows_or_the_refit_tail(make_case, features, source):
    """Scheduled split: the validation part; refit protocol: its short tail (30 steps, 27 windows: what
    is there); no validation part: no intervals. The quantile is the conformal one of the windows' residuals."""
    from pipeline.data.io import read_raw
    from pipeline.data.validation import validate_frame
    from pipeline.features.windowing import build_features
    from pipeline.training.lstm import calibrate_intervals
    from tests.conftest import FAST_MODEL, sine_frame

    config, _ = make_case(frame=sine_frame(), features={"lookback": 24, "horizon": 4, **features}, model=FAST_MODEL)
    cfg = load_config(config)
    fs = build_features(validate_frame(read_raw(cfg.data), cfg).frame, cfg)
    forecaster = _untrained(cfg, fs)
    calibration = calibrate_intervals(forecaster, fs, cfg)
    if source is None:
        assert len(fs.starts["val"]) == 0 and calibration is None
        return
    assert calibration.source == source and calibration.n_windows == len(fs.starts["val"]) > 0
    scores = np.abs(fs.targets("val") - forecaster.predict(fs, "val"))
    assert calibration.score == "absolute"  # the default
    np.testing.assert_allclose(calibration.quantiles["80"], conformal_quantile(scores, 80))
    scaled = cfg.model_copy(update={"evaluation": cfg.evaluation.model_copy(update={"interval_score": "normalised"})})
    normalised = calibrate_intervals(forecaster, fs, scaled)
    sigma = local_scale(fs.lookback_targets(fs.starts["val"]))  # each window's own lookback
    assert normalised.score == "normalised" and (sigma > normalised.scale_floor).all()
    np.testing.assert_allclose(normalised.quantiles["80"], conformal_quantile(scores / sigma[:, None], 80))
    if source == "validation_tail":
        np.testing.assert_array_equal(fs.starts["val"], fs.starts["test"])  # the tail is also the refit's test part
    assert calibrate_intervals(forecaster, fs, cfg.model_copy(update={"evaluation": cfg.evaluation.model_copy(update={"interval_levels": ()})})) is None


def test_rolling_coverage_is_strict_json_with_an_infinite_band():
    """Too few calibration windows give an infinite band: its width is ``None``, so the check passes through Airflow's XCom (strict JSON)."""
    import json

    scored = pd.DataFrame({"level": [95.0, 95.0], "lo": [-np.inf, -np.inf], "hi": [np.inf, np.inf], "y": [1.0, 2.0]})
    got = rolling_coverage(scored)
    assert got["95"] == {"level": 95.0, "coverage": 1.0, "mean_width": None, "n": 2}
    json.dumps(got, allow_nan=False)


def _exact_80_inside(n_origins: int, h: int, seed: int) -> np.ndarray:
    """Whether each AR(1) value lies in its exact 80% band (``phi**j * y_t`` +- z * the j-step sd): coverage 0.80 in truth."""
    from scipy.stats import norm

    truth, pred = _ar1_windows(n_origins, h, seed=seed)
    sd = np.sqrt(np.cumsum(0.8 ** (2 * np.arange(h))))
    return (np.abs(truth - pred) <= norm.ppf(0.9) * sd).astype(float)


def test_the_coverage_interval_holds_the_true_coverage_about_95_percent_of_the_time():
    """Overlapping windows of an autocorrelated series: the block bootstrap interval contains the true 0.80 in
    about 95% of test parts; an interval that treats every value as independent (binomial) holds it far less often."""
    held, naive_held, blocks = [], [], []
    for seed in range(60):
        inside = _exact_80_inside(400, h=6, seed=seed)
        ci = coverage_interval(inside, min_block=6)
        held.append(ci["low"] <= 0.80 <= ci["high"])
        blocks.append(ci["block"])
        p, n = inside.mean(), inside.size
        half = 1.96 * np.sqrt(p * (1 - p) / n)
        naive_held.append(p - half <= 0.80 <= p + half)
    assert np.mean(held) >= 0.85, np.mean(held)
    assert np.mean(naive_held) < np.mean(held) - 0.15  # the overlap matters: independence understates the noise
    assert min(blocks) >= 6  # never shorter than one window's overlap


def test_the_coverage_interval_is_seeded_and_needs_enough_origins():
    inside = _exact_80_inside(300, h=4, seed=1)
    assert coverage_interval(inside, 4) == coverage_interval(inside, 4)  # the same data, the same interval
    short = coverage_interval(inside[:10], 4)
    assert np.isnan(short["low"]) and np.isnan(short["high"]) and short["n_origins"] == 10
    full = coverage_interval(np.ones((50, 4)), 4)  # every origin covered: no spread, no interval (not the certainty of a point)
    assert np.isnan(full["low"]) and np.isnan(full["high"]) and full["n_origins"] == 50
    assert np.isnan(coverage_interval(inside[:40], 24)["low"])  # fewer than two blocks of the window's overlap
    partly = inside.copy()
    partly[::3, 2:] = np.nan  # origins observed only in part: the interval is around covered / observed, as the coverage
    ci = coverage_interval(partly, 4)
    assert ci["low"] < np.nanmean(partly) < ci["high"]
    episodes = np.repeat(inside[::12, :1], 12, axis=0)[:300]  # misses in runs of 12 origins: a wider interval than iid ones
    iid = np.random.default_rng(0).permutation(episodes)
    width = lambda x: (lambda c: c["high"] - c["low"])(coverage_interval(x, 1))  # noqa: E731
    assert width(episodes) > 1.5 * width(iid)


def test_interval_metrics_and_the_flat_names_carry_the_confidence_interval():
    truth, pred = _ar1_windows(4000, h=4)
    calibration = IntervalCalibration.fit(truth[:2000], pred[:2000], [80, 95])
    report = interval_metrics(calibration, truth[2000:], pred[2000:], origin_step=2)
    low, high = report["80"]["coverage_ci"]
    assert low < report["80"]["coverage"] < high and report["80"]["ci_block"] >= 2 and report["80"]["ci_confidence"] == 0.95
    flat = flat_metrics(report)
    assert flat["test_ci_low_coverage_95"] == report["95"]["coverage_ci"][0] and flat["test_ci_high_coverage_80"] == high
    few = interval_metrics(calibration, truth[:5], pred[:5])
    assert few["80"]["coverage_ci"] == [None, None] and "test_ci_low_coverage_80" not in flat_metrics(few)


def test_the_tracked_factor_is_the_quantile_trackers_sum_from_one():
    """q_{t+1} = q_t + lr (err_t - alpha) from q_0 = 1 (Angelopoulos, Candes & Tibshirani, 2023)."""
    assert tracked_factor(np.array([], dtype=bool), 80, 0.1) == 1.0
    assert tracked_factor(np.array([True] * 10), 80, 0.1) == pytest.approx(1 + 0.1 * (10 - 0.2 * 10))
    assert tracked_factor(np.array([False] * 10), 95, 0.1) == pytest.approx(1 - 0.1 * 0.05 * 10)
    assert tracked_factor(np.array([True, False, False, False, False]), 80, 0.5) == pytest.approx(1.0)  # on target: unchanged
    assert tracked_factor(np.array([False] * 1000), 80, 0.1) == 0.0  # never below a zero width
    assert tracked_factor(np.array([True] * 10), 80, 0.0) == 1.0
    # one update per origin time: two series missing at one origin move the band as one series does
    assert tracked_factor(np.array([True, True, False, False]), 80, 0.1, origin=np.array([0, 0, 1, 1])) == pytest.approx(1 + 0.1 * (0.8 - 0.2))


def test_the_replay_counts_only_outcomes_known_by_each_origin():
    """Step j of origin i is known j steps later: origin 2 sees step 1 of origins 0 and 1 and step 2 of
    origin 0 only; several series at one origin share the factor and do not see each other."""
    ratios = np.full((4, 2), 5.0)  # every value misses a band of factor <= 5
    origin = np.array([0, 1, 2, 2])
    known = origin[:, None] + np.array([[1, 2]])
    f = track_ratios(ratios, origin, known, 80, 0.1)
    np.testing.assert_allclose(f[0], [1.0, 1.0])
    np.testing.assert_allclose(f[1], [1.08, 1.0])  # step 1 of origin 0 (known at 1)
    np.testing.assert_allclose(f[2], [1.16, 1.08])  # step 1 of origins 0, 1; step 2 of origin 0
    np.testing.assert_allclose(f[3], f[2])
    ratios[0, 0] = np.nan  # not observed: no feedback
    np.testing.assert_allclose(track_ratios(ratios, origin, known, 80, 0.1)[2], [1.08, 1.08])
    np.testing.assert_allclose(track_ratios(ratios, origin, known, 80, 0.0), 1.0)
    pair = track_ratios(np.full((3, 1), 5.0), np.array([0, 0, 1]), np.array([[1], [1], [2]]), 80, 0.1)
    np.testing.assert_allclose(pair[2], [1.08])  # two series at origin 0: one update, their mean


def test_tracked_bands_stay_nested_across_levels():
    lo80, hi80 = np.array([[1.0, 2.0]]), np.array([[5.0, 6.0]])
    lo95, hi95 = np.array([[2.0, 0.0]]), np.array([[4.0, 9.0]])  # step 1 narrower than the 80% band
    nested = nest_bands({"95": (lo95, hi95), "80": (lo80, hi80)})
    assert list(nested) == ["80", "95"]
    np.testing.assert_array_equal(nested["95"][0], [[1.0, 0.0]])
    np.testing.assert_array_equal(nested["95"][1], [[5.0, 9.0]])
    np.testing.assert_array_equal(nested["80"][0], lo80)


def test_tracking_brings_a_drifted_band_back_to_nominal_and_keeps_a_calibrated_one():
    """Calibrated on errors of one size, tested on errors half (then twice) that size: the calibrated
    bands cover about 99% (then 40%); the tracked ones come back near 80%. On exchangeable errors the
    tracker stays near the calibrated coverage."""
    truth, pred = _ar1_windows(12_000, h=6)
    calibration = IntervalCalibration.fit(truth[:3000], pred[:3000], [80])
    test = slice(4000, 12_000)
    n = test.stop - test.start
    times = (np.arange(n), np.arange(n)[:, None] + np.arange(1, 7)[None, :])
    for scale, lr in ((0.5, 0.02), (2.0, 0.02), (1.0, 0.02)):
        shifted = pred[test] + scale * (truth[test] - pred[test])
        report = interval_metrics(calibration, shifted, pred[test], times=times, tracking_lr=lr)["80"]
        tracked = report["tracked"]
        assert abs(tracked["coverage"] - 0.80) < 0.02, (scale, tracked["coverage"])
        if scale != 1.0:
            assert abs(report["coverage"] - 0.80) > 0.15  # the calibrated bands stay off
        np.testing.assert_allclose(tracked["factor_per_step"], scale, rtol=0.35)  # the factor learns the new scale
    flat = flat_metrics(interval_metrics(calibration, truth[test], pred[test], times=times, tracking_lr=0.02))
    assert {"test_tracked_coverage_80", "test_tracked_width_80", "test_tracked_ci_low_coverage_80"} <= set(flat)
    assert "tracked" not in interval_metrics(calibration, truth[test], pred[test])["80"]  # no times: no replay


@pytest.mark.parametrize("space", ["none", "log1p"])
def test_a_value_is_inside_the_scaled_band_exactly_when_its_ratio_is_at_most_the_factor(space):
    rng = np.random.default_rng(3)
    pred = rng.uniform(5, 50, size=(400, 3))
    truth = pred * np.exp(rng.normal(0, 0.3, size=pred.shape))
    calibration = IntervalCalibration.fit(truth[:200], pred[:200], [80], space=space)
    ratios = calibration.ratios(truth[200:], pred[200:])["80"]
    lo, hi = calibration.bands(pred[200:])["80"]
    for factor in (0.5, 1.0, 1.7):
        a, b = calibration.scale_bands(pred[200:], lo, hi, factor)
        np.testing.assert_array_equal((a <= truth[200:]) & (truth[200:] <= b), ratios <= factor + 1e-12)
    np.testing.assert_allclose(calibration.scale_bands(pred[200:], lo, hi, 1.0), (lo, hi))


def test_stacked_series_are_resampled_in_blocks_of_time_not_of_rows():
    """Two series with the same origins: with origin times, a block is a stretch of time holding both
    (two copies of one series give that series' own interval: no extra information); without, the
    stacked rows count as twice the origins and the interval narrows as if they were independent."""
    one = _exact_80_inside(300, h=4, seed=2)
    time = np.arange(300)
    alone = coverage_interval(one, 4)
    both = coverage_interval(np.vstack([one, one]), 4, origin_time=np.concatenate([time, time]))
    assert (both["low"], both["high"], both["block"], both["n_origins"]) == (alone["low"], alone["high"], alone["block"], 300)
    rows = coverage_interval(np.vstack([one, one]), 4)
    assert rows["n_origins"] == 600 and rows["high"] - rows["low"] < both["high"] - both["low"]
