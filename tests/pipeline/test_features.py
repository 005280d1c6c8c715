import json
import warnings

import numpy as np
import pandas as pd
import pytest

from pipeline.core import schema
from pipeline.core.config import load_config
from pipeline.core.errors import DataQualityError
from pipeline.data.io import read_raw
from pipeline.data.validation import run_validation, validate_frame
from pipeline.features.windowing import build_features, design_matrix, load_features, origin_starts, run_features
from tests.conftest import tiny_frame


def _long(make_case, frame=None, **sections):
    config, _ = make_case(frame=frame, **sections)
    cfg = load_config(config)
    return validate_frame(read_raw(cfg.data), cfg).frame, cfg


def test_scaler_statistics_are_those_of_the_training_part_alone(make_case):
    long, cfg = _long(make_case)
    fs = build_features(long, cfg)
    n_train = 120 - 12 - 24  # validation 10%, test 20%
    train = long.iloc[:n_train]
    assert fs.prep.split_boundaries["series_0"]["val_start"] == str(long[schema.DS].iat[n_train])
    np.testing.assert_allclose(fs.prep.scaler_state["mean_"], [train["y"].mean(), train["temp"].mean()])
    np.testing.assert_allclose(fs.prep.scaler_state["scale_"], [train["y"].std(ddof=0), train["temp"].std(ddof=0)])
    assert not np.isclose(fs.prep.scaler_state["mean_"][0], long["y"].mean())


def test_y_i_equals_the_values_right_after_x_i(make_case):
    long, cfg = _long(make_case)
    fs = build_features(long, cfg)
    for split in ("train", "val", "test"):
        w = fs.windows(split)
        X, y = w.X, w.y
        assert X.shape == (len(w), 12, fs.prep.n_features) and X.dtype == np.float32
        assert y.shape == (len(w), 3) and y.dtype == np.float32
        for i in (0, len(w) // 2, len(w) - 1):
            s = w.starts[i]
            np.testing.assert_array_equal(X[i, :, 0], fs.target[s : s + 12])
            np.testing.assert_array_equal(y[i], fs.target[s + 12 : s + 15])
        np.testing.assert_allclose(fs.prep.inverse_target(y), fs.targets(split), rtol=1e-5)


def test_splits_are_chronological_and_test_targets_lie_in_the_test_part(make_case):
    long, cfg = _long(make_case)
    fs = build_features(long, cfg)
    val_row, test_row = 120 - 36, 120 - 24
    tr, va, te = (fs.starts[s] for s in ("train", "val", "test"))
    assert (tr + 12 + 3 <= val_row).all()
    assert ((va + 12 >= val_row) & (va + 15 <= test_row)).all()
    assert (te + 12 >= test_row).all() and te.min() + 12 == test_row
    assert te.min() < test_row, "test windows may look back into validation data"
    assert len(te) == 24 - 3 + 1


def test_an_unset_validation_fraction_gives_a_daily_series_of_four_years_a_validation_year(make_case):
    """The split the features stage makes and records: 1461 daily rows, a year of them (365) in validation."""
    frame = pd.DataFrame({"time": pd.date_range("2012-01-01", periods=1461, freq="D").astype(str),
                          "load": np.sin(np.arange(1461) / 58.1) * 10 + 20, "temp": 1.0, "wind": "N"})  # fmt: skip
    config, _ = make_case(frame=frame, data={"freq": "D"}, features={"validation_fraction": None, "test_fraction": 0.2})
    cfg = load_config(config)
    assert cfg.features.validation_fraction is None
    fs = build_features(validate_frame(read_raw(cfg.data), cfg).frame, cfg)
    (bounds,) = fs.prep.split_boundaries.values()
    n_test = round(1461 * 0.2)
    assert pd.Timestamp(bounds["test_start"]) - pd.Timestamp(bounds["val_start"]) == pd.Timedelta(days=365)
    assert pd.Timestamp(bounds["test_start"]) == pd.Timestamp("2012-01-01") + pd.Timedelta(days=1461 - n_test)
    assert float(bounds["validation_fraction"]) == pytest.approx(365 / 1461, rel=1e-5)
    # recent_train_steps: the share is of the rows before the recent training part, and it is what made val_start
    longer = pd.DataFrame({"time": pd.date_range("2012-01-01", periods=1600, freq="D").astype(str),
                           "load": np.sin(np.arange(1600) / 58.1) * 10 + 20, "temp": 1.0, "wind": "N"})  # fmt: skip
    config, _ = make_case(frame=longer, data={"freq": "D"}, features={"validation_fraction": None, "test_fraction": 0.2, "recent_train_steps": 100})
    cfg = load_config(config)
    recent = build_features(validate_frame(read_raw(cfg.data), cfg).frame, cfg)
    (bounds,) = recent.prep.split_boundaries.values()
    assert float(bounds["validation_fraction"]) == pytest.approx(365 / 1500, rel=1e-5)  # of the 1600 - 100 rows before the recent part
    assert pd.Timestamp(bounds["test_start"]) - pd.Timestamp(bounds["val_start"]) == pd.Timedelta(days=365)
    # the refit protocol's tail is its own validation part: no share recorded
    config, _ = make_case(frame=frame, data={"freq": "D"}, features={"validation_fraction": None, "validation_tail_steps": 60})
    cfg = load_config(config)
    tail = build_features(validate_frame(read_raw(cfg.data), cfg).frame, cfg)
    assert "validation_fraction" not in next(iter(tail.prep.split_boundaries.values()))


def test_no_window_targets_a_gap_and_no_window_crosses_a_long_gap(make_case):
    frame = tiny_frame(n=200)
    frame.loc[[30, 31], "load"] = np.nan  # short: interpolated as input
    frame.loc[list(range(60, 66)), "load"] = np.nan  # long (> max_gap 2): splits the series
    long, cfg = _long(make_case, frame=frame)
    fs = build_features(long, cfg)
    missing = np.flatnonzero(long["y"].isna().to_numpy())
    every = np.concatenate(list(fs.starts.values()))
    for s in every:
        assert not np.isin(np.arange(s + 12, s + 15), missing).any()
        assert not np.isin(np.arange(s, s + 12), np.arange(60, 66)).any()
    # short gap used as input (interpolated), never as a target
    assert any(s <= 30 < s + 12 for s in every)
    assert np.isfinite(fs.values[30:32]).all()
    assert not np.isfinite(fs.values[60:66, 0]).any()
    assert fs.report["windows"]["dropped_for_gaps"] > 0


def test_origin_starts_are_vectorised_and_exact():
    ok_in = np.ones(20, bool)
    ok_in[5] = False
    ok_out = np.ones(20, bool)
    ok_out[15] = False
    ok_out[9] = False
    starts = origin_starts(ok_in, ok_out, lookback=4)
    brute = [s for s in range(20 - 4 + 1) if ok_in[s : s + 4].all() and ok_out[s + 3]]
    assert starts.tolist() == brute and 9 - 3 not in brute and 2 not in brute  # origin unobserved; input gap


def test_categorical_one_hot_levels_fixed_at_training(make_case):
    long, cfg = _long(make_case)
    fs = build_features(long, cfg)
    assert fs.prep.categorical_levels == {"wind": ["E", "N", "S"]}
    assert fs.prep.feature_names == ["y", "temp", "wind=E", "wind=N", "wind=S"]
    onehot = fs.values[:, 2:5]
    assert (onehot.sum(axis=1) == 1).all()


def test_input_frame_is_not_modified(make_case):
    frame = tiny_frame()
    frame.loc[[30], "load"] = np.nan
    long, cfg = _long(make_case, frame=frame)
    before = long.copy()
    build_features(long, cfg)
    pd.testing.assert_frame_equal(long, before)


def test_preprocessing_saved_as_plain_artifacts_and_reloads(make_case, tmp_path):
    config, _ = make_case()
    cfg = load_config(config)
    run = tmp_path / "artifacts" / "run-a"
    out = run_validation(cfg, run)
    res = run_features(cfg, run, out["data"])
    folder = run / "features"
    assert sorted(p.name for p in folder.iterdir()) == ["arrays.npz", "preprocessing.json", "reference.parquet", "report.json"]
    prep = json.loads((folder / "preprocessing.json").read_text())
    reference = pd.read_parquet(folder / "reference.parquet")  # the drift reference: the training part, original units
    val_start = pd.Timestamp(prep["split_boundaries"][schema.DEFAULT_SERIES_ID]["val_start"])
    assert reference[schema.DS].max() == val_start - pd.Timedelta("1h") and list(reference.columns[:3]) == [schema.UNIQUE_ID, schema.DS, schema.Y]
    assert prep["lookback"] == 12 and prep["horizon"] == 3 and prep["freq"] == "h"
    assert prep["scaler_kind"] == "standard" and "mean_" in prep["scaler_state"]
    with np.load(folder / "arrays.npz", allow_pickle=False) as z:  # no pickled objects inside
        assert z["values"].dtype == np.float32
    fs = load_features(folder)
    assert res["windows"]["test"] == len(fs.starts["test"])
    # a rerun of the same run replaces its partition and leaves no temporary folders
    run_features(cfg, run, out["data"])
    assert sorted(p.name for p in run.iterdir()) == ["features", "run.json", "validation"]  # run.json: the run id's config+data fingerprint


@pytest.mark.parametrize("scaler", ["minmax", "standard", "robust"])
def test_every_scaler_round_trips_the_target(make_case, scaler):
    long, cfg = _long(make_case, features={"scaler": scaler})
    fs = build_features(long, cfg)
    w = fs.windows("test")
    np.testing.assert_allclose(fs.prep.inverse_target(w.y), fs.targets("test"), rtol=1e-5)


def test_log1p_target_transform_round_trips(make_case):
    long, cfg = _long(make_case, features={"target_transform": "log1p", "calendar_features": ["hour"]})
    fs = build_features(long, cfg)
    np.testing.assert_allclose(fs.prep.inverse_target(fs.windows("train").y), fs.targets("train"), rtol=1e-5)
    assert fs.prep.feature_names[-2:] == ["hour_sin", "hour_cos"]


def test_calendar_features_are_the_phase_of_each_timestamp_and_warn_nothing(make_case):
    """hour, day of week and day of year as sin/cos of their phase, built without a warning
    (a deprecated pandas accessor, ``Series.dt.dayofweek``, printed a Pandas4Warning per call)."""
    long, cfg = _long(make_case, frame=tiny_frame(n=120, start="2024-12-29 00:00:00"),
                      features={"calendar_features": ["hour", "dayofweek", "dayofyear"]})  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fs = build_features(long, cfg)
        matrix = design_matrix(long, fs.prep)
    ds = long[schema.DS]
    names = fs.prep.feature_names
    expected = {"hour": (ds.dt.hour, 24), "dayofweek": (ds.dt.day_of_week, 7), "dayofyear": (ds.dt.day_of_year, 365.25)}
    for name, (value, period) in expected.items():
        angle = 2 * np.pi * value.to_numpy(dtype=np.float64) / period
        np.testing.assert_allclose(matrix[:, names.index(f"{name}_sin")], np.sin(angle), atol=1e-6, err_msg=name)
        np.testing.assert_allclose(matrix[:, names.index(f"{name}_cos")], np.cos(angle), atol=1e-6, err_msg=name)


def test_recent_train_steps_put_the_last_rows_into_the_training_part(make_case):
    long, cfg = _long(make_case)
    plain = build_features(long, cfg)
    recent_cfg = cfg.model_copy(update={"features": cfg.features.model_copy(update={"recent_train_steps": 24})})
    fs = build_features(long, recent_cfg)
    ds = long[schema.DS]
    # the fractions apply to the 96 rows before the recent part: validation 10, test 19
    bounds = fs.prep.split_boundaries["series_0"]
    assert (bounds["val_start"], bounds["test_start"], bounds["recent_start"]) == (str(ds.iat[67]), str(ds.iat[77]), str(ds.iat[96]))
    assert "recent_start" not in plain.prep.split_boundaries["series_0"]
    L, H = cfg.features.lookback, cfg.features.horizon
    first_target = {split: ds.to_numpy()[fs.starts[split] + L] for split in ("train", "val", "test")}
    last_target = {split: ds.to_numpy()[fs.starts[split] + L + H - 1] for split in ("train", "val", "test")}
    recent = first_target["train"] >= ds.iat[96]
    assert recent.sum() == 24 - H + 1  # every window whose targets lie in the recent rows trains
    assert (last_target["train"][~recent] < ds.iat[67]).all()
    assert (first_target["test"] >= ds.iat[77]).all() and (last_target["test"] < ds.iat[96]).all()
    # the scaler sees the recent rows too
    train = pd.concat([long.iloc[:67], long.iloc[96:]])
    np.testing.assert_allclose(fs.prep.scaler_state["mean_"], [train["y"].mean(), train["temp"].mean()])


def test_a_validation_tail_is_validated_and_scored_as_the_test_part(make_case):
    """The refit protocol: train on everything before the tail; the tail's windows are both val and test."""
    long, cfg = _long(make_case)
    tail_cfg = cfg.model_copy(update={"features": cfg.features.model_copy(update={"validation_tail_steps": 24})})
    fs = build_features(long, tail_cfg)
    ds, L, H = long[schema.DS].to_numpy(), cfg.features.lookback, cfg.features.horizon
    bounds = fs.prep.split_boundaries["series_0"]
    assert bounds["val_start"] == bounds["test_start"] == str(long[schema.DS].iat[96]) and bounds["test_is_validation"] == "true"
    np.testing.assert_array_equal(fs.starts["val"], fs.starts["test"])
    assert len(fs.starts["val"]) == 24 - H + 1 and (ds[fs.starts["val"] + L] >= ds[96]).all()
    assert (ds[fs.starts["train"] + L + H - 1] < ds[96]).all() and len(fs.starts["train"]) == 96 - L - H + 1
    np.testing.assert_allclose(fs.prep.scaler_state["mean_"], [long["y"].iloc[:96].mean(), long["temp"].iloc[:96].mean()])
    short = cfg.model_copy(update={"features": cfg.features.model_copy(update={"validation_tail_steps": 100})})
    with pytest.raises(DataQualityError, match=r"validation_tail_steps \(100\) leaves 20 of 120 steps"):
        build_features(long, short)


def test_recent_train_steps_that_leave_no_room_are_refused(make_case):
    from pipeline.core.errors import DataQualityError

    long, cfg = _long(make_case)
    too_many = cfg.model_copy(update={"features": cfg.features.model_copy(update={"recent_train_steps": 100})})
    with pytest.raises(DataQualityError, match="recent_train_steps \\(100\\) leaves 20 of 120 steps"):
        build_features(long, too_many)


# ------------------------------------------------------------------ seasonal lags


def _lag_case(make_case, n: int = 240, **features):
    """``(long, cfg, fs)``: hourly ``y = row index`` (a lag's value names the row it was read from), lookback 12, h 3, lags of 24 +- 1."""
    frame = tiny_frame(n=n)
    frame["load"] = np.arange(n, dtype=float)
    long, cfg = _long(make_case, frame=frame, features={"seasonal_lags": [24], "seasonal_lag_window": 1, **features})
    return long, cfg, build_features(long, cfg)


def test_a_seasonal_lag_is_the_target_one_season_before_each_target_step(make_case):
    _, _, fs = _lag_case(make_case)
    prep, L, H = fs.prep, 12, 3
    assert prep.lag_steps == [25, 24, 23] and prep.feature_names[:4] == ["y", "y_lag25", "y_lag24", "y_lag23"]
    assert prep.history_steps == L + 25 - H
    for split in ("train", "val", "test"):
        w = fs.windows(split)
        X = prep.inverse_target(w.X[:, :, :4])  # the lags share the target's scaler: back to row numbers
        origins = w.origins
        for k in range(1, H + 1):  # last h rows: row L - H + k - 1 of the window holds the lags of target step k
            for col, lag in enumerate(prep.lag_steps, start=1):
                np.testing.assert_allclose(X[:, L - H + k - 1, col], origins + k - lag, atol=1e-3)
        np.testing.assert_allclose(prep.inverse_target(w.y), origins[:, None] + np.arange(1, H + 1), atol=1e-3)


def test_no_seasonal_lag_input_reads_a_target_at_or_after_the_origin(make_case):
    """Every input value of every window (target and lag columns) comes from a row at or before its origin;
    with the tightest season allowed (``s = h + w``) the last row reads the origin itself."""
    for season in (4, 24):  # h 3 + w 1 = 4: the constraint's edge
        _, _, fs = _lag_case(make_case, seasonal_lags=[season])
        for split in ("train", "val", "test"):
            w = fs.windows(split)
            source_rows = fs.prep.inverse_target(w.X[:, :, : 1 + len(fs.prep.lag_steps)])  # y = row index
            assert (source_rows.max(axis=(1, 2)) <= w.origins + 1e-3).all(), (season, split)
        if season == 4:
            assert np.allclose(source_rows[:, -1, -1], w.origins, atol=1e-3)


def test_windows_whose_lags_reach_before_the_series_start_are_dropped_and_counted(make_case):
    _, _, fs = _lag_case(make_case)
    reach = 25 - 3  # max lag - h: rows before a window's first row its lags read
    windows = fs.report["windows"]
    assert windows["dropped_for_seasonal_lags"] == reach and windows["dropped_for_gaps"] == 0
    assert fs.starts["train"].min() == reach
    assert not np.isfinite(fs.values[:reach, 1]).any() and np.isfinite(fs.values[reach:, 1]).all()


@pytest.mark.parametrize(
    ("features", "message"),
    [
        ({"seasonal_lags": [3]}, r"features\.seasonal_lags: .*season\(s\) \[3\].*expected every season >= horizon \+ seasonal_lag_window = 4"),
        ({"seasonal_lags": [24], "seasonal_lag_window": 22}, r"features\.seasonal_lags: .*\[24\].*= 25"),
        ({"seasonal_lags": [24], "lookback": 2}, r"features\.seasonal_lags: .*expected features\.lookback >= 3, found 2"),
    ],
)
def test_seasonal_lags_that_would_read_a_target_are_refused_with_the_key_and_the_constraint(make_case, features, message):
    from pipeline.core.errors import ConfigError

    config, _ = make_case(features=features)
    with pytest.raises(ConfigError, match=message):
        load_config(config)


def test_seasonal_lags_derived_from_freq_reach_past_the_window_and_spare_short_series(make_case):
    from pipeline.core.config import PipelineConfig
    from pipeline.core.seasons import seasonal_lag_seasons
    from pipeline.features.windowing import resolve_seasonal_lags

    def cfg(freq, lookback, horizon, **features):
        return PipelineConfig.model_validate({"name": "t", "data": {"path": "x.csv", "timestamp_column": "ts", "target_column": "y", "freq": freq},
                                              "features": {"lookback": lookback, "horizon": horizon, "seasonal_lags": None, **features}})  # fmt: skip

    assert seasonal_lag_seasons(cfg("h", 168, 24)) == (168,)  # 24 lies inside the window
    assert seasonal_lag_seasons(cfg("h", 24, 4)) == (24, 168)
    assert seasonal_lag_seasons(cfg("30min", 336, 48)) == (336,)
    assert seasonal_lag_seasons(cfg("h", 336, 24)) == ()  # the week lies inside the window
    assert seasonal_lag_seasons(cfg("D", 56, 7)) == ()
    assert seasonal_lag_seasons(cfg("h", 24, 4, seasonal_lag_window=0)) == (168,)  # 24 +- 0: inside
    assert seasonal_lag_seasons(cfg("h", 24, 4, seasonal_lags=[])) == ()
    assert seasonal_lag_seasons(cfg("h", 24, 4, seasonal_lags=[48])) == (48,)
    # a derived season costs at most a quarter of the shortest training part; an explicit one is kept
    assert resolve_seasonal_lags(cfg("h", 24, 4), 4 * (168 + 1 - 4)) == (24, 168)
    assert resolve_seasonal_lags(cfg("h", 24, 4), 4 * (168 + 1 - 4) - 1) == (24,)
    assert resolve_seasonal_lags(cfg("h", 24, 4, seasonal_lags=[168]), 10) == (168,)
    # the tiny frame's 84 training rows: with lags unset, 24 (reach 22 > 21) is not derived
    long, c = _long(make_case, features={"seasonal_lags": None})
    assert build_features(long, c).prep.seasonal_lags == []


def test_a_derived_season_whose_lags_fall_in_gaps_is_not_used():
    """The default (lags derived) keeps a season only when its lags drop at most 1% of the training windows for gaps."""
    from pipeline.core.config import PipelineConfig
    from pipeline.features.windowing import MAX_DERIVED_LAG_GAP_LOSS, lag_gap_loss, resolve_seasonal_lags

    cfg = PipelineConfig.model_validate({"name": "t", "data": {"path": "x.csv", "timestamp_column": "ts", "target_column": "y", "freq": "h"},
                                         "features": {"lookback": 48, "horizon": 24}})  # the default: seasonal_lags unset  # fmt: skip
    n = 24 * 120
    train = pd.DataFrame({"unique_id": "s", "ds": pd.date_range("2024-01-01", periods=n, freq="h"), "y": np.random.default_rng(0).normal(size=n)})
    assert lag_gap_loss(train, 168, 1, 48, 24) == 0.0
    assert resolve_seasonal_lags(cfg, n, train) == (168,)  # gap-free: the week is an input
    gappy = train.copy()
    for start in range(500, n - 200, 400):  # a 30-hour gap every 400 hours: each costs the windows whose week-back it covers
        gappy.loc[start : start + 29, "y"] = np.nan
    loss = lag_gap_loss(gappy, 168, 1, 48, 24)
    # windows kept without lags: all 24 targets observed; with the week: also y(t - 168 +- 1) for each target t
    a = np.arange(48, n - 24 + 1)
    a = a[a - 169 >= 0]
    missing = np.concatenate([[0], np.cumsum(gappy["y"].isna().to_numpy())])
    kept = (missing[a + 24] - missing[a]) == 0
    lost = kept & ((missing[a + 24 - 167] - missing[a - 169]) > 0)
    assert loss == pytest.approx(lost.sum() / kept.sum()) and loss > MAX_DERIVED_LAG_GAP_LOSS
    assert resolve_seasonal_lags(cfg, n, gappy) == ()
    assert resolve_seasonal_lags(cfg.model_copy(update={"features": cfg.features.model_copy(update={"seasonal_lags": (168,)})}), n, gappy) == (168,)


def test_explicit_seasonal_lags_longer_than_a_series_are_a_clear_error(make_case):
    long, cfg = _long(make_case, features={"seasonal_lags": [168]})
    with pytest.raises(DataQualityError, match=r"seasonal lags' reach \(166: features.seasonal_lags \[168\]\) = 181 steps, but series 'series_0' has only 120"):
        build_features(long, cfg)
