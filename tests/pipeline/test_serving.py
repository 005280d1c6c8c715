"""The served model: one raw -> long path, a transform that never refits, multi-origin mode."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from pipeline.core import schema
from pipeline.core.config import load_config
from pipeline.core.errors import DataQualityError
from pipeline.data.io import raw_to_long, read_raw
from pipeline.data.validation import validate_frame
from pipeline.features.windowing import build_features, transform
from pipeline.models.lstm import LSTMForecaster, build_model
from pipeline.serving.pyfunc import ForecastModel
from tests.conftest import FAST_MODEL, sine_frame, tiny_config_dict


def _model(cfg, prep, n_members: int = 2) -> ForecastModel:
    """A pyfunc with untrained, seeded members: deterministic forecasts without training.

    The default highway (``model.ar_highway``) gets random weights, so the served forecasts go through it too.
    """
    torch.manual_seed(0)
    mc = cfg.model
    members = [build_model(prep.n_features, prep.horizon, mc, prep.lookback, len(prep.lag_steps)) for _ in range(n_members)]
    for member in members:
        for name, param in member.named_parameters():
            if "highway" in name:
                torch.nn.init.normal_(param, std=0.3)
    assert mc.ar_highway and any("highway" in name for name, _ in members[0].named_parameters())
    return ForecastModel().use(LSTMForecaster.from_members(members, prep))


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """``(cfg, raw, model)``: 400 hourly rows with a short gap (filled) and a long one (not)."""
    root = tmp_path_factory.mktemp("served")
    frame = sine_frame(n=400)
    frame.loc[100:101, "load"] = np.nan  # <= max_gap (2): interpolated for inputs
    frame.loc[200:205, "load"] = np.nan  # > max_gap: no window crosses it
    frame.to_csv(root / "input.csv", index=False)
    config = root / "config.yaml"
    config.write_text(yaml.safe_dump(tiny_config_dict(root / "input.csv", root / "artifacts", features={"lookback": 24, "horizon": 4}, model={**FAST_MODEL, "ar_highway": True})))
    cfg = load_config(config)
    raw = read_raw(cfg.data)
    fs = build_features(validate_frame(raw, cfg).frame, cfg)
    return cfg, raw, _model(cfg, fs.prep)


def _single(model, raw, origin) -> np.ndarray:
    ts = pd.to_datetime(raw["time"])
    return model.predict(None, raw[ts <= origin])["yhat"].to_numpy()


def test_multi_origin_equals_single_origin_at_every_origin(served):
    cfg, raw, model = served
    multi = model.predict(None, raw, params={"origins": "all"})
    origins = multi["origin"].drop_duplicates()
    assert multi.groupby("origin").size().eq(cfg.features.horizon).all()
    # every usable origin: 400 rows - lookback + 1, minus windows holding the long gap, minus the 2 unobserved origins
    assert len(origins) == 400 - 24 + 1 - (6 + 24 - 1) - 2
    # the first origins after the short gap (rows 100-101, 04:00-05:00): their inputs are interpolated
    near_short_gap = origins[(origins >= pd.Timestamp("2024-01-05 04:00")) & (origins <= pd.Timestamp("2024-01-05 09:00"))]
    picks = pd.concat([origins.iloc[[0, 1, 50, 150, -1]], near_short_gap])
    assert len(near_short_gap) == 4
    for origin in picks:
        expected = _single(model, raw, origin)
        got = multi.loc[multi["origin"] == origin].sort_values("step")["yhat"].to_numpy()
        # same inputs, same weights; only the forward pass's batch size differs
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6, err_msg=str(origin))


def test_origin_range_is_half_open_and_steps_follow_the_grid(served):
    _, raw, model = served
    out = model.predict(None, raw, params={"origins": "all", "origin_start": "2024-01-12 00:00", "origin_end": "2024-01-13 00:00"})
    assert out["origin"].min() == pd.Timestamp("2024-01-12 00:00")
    assert out["origin"].max() == pd.Timestamp("2024-01-12 23:00")
    assert ((out[schema.DS] - out["origin"]) == pd.to_timedelta(out["step"], unit="h")).all()
    assert list(out.columns) == [schema.UNIQUE_ID, "origin", schema.DS, "step", "yhat"]


class _Registered2026(ForecastModel):
    """A version registered before the rename: it ships the pyfunc code of its day, which says ``y_hat``."""

    def predict(self, context, model_input, params=None):
        return super().predict(context, model_input, params).rename(columns={schema.YHAT: schema.LEGACY_YHAT})


def test_a_version_that_says_y_hat_reads_as_yhat(served):
    """The CLI and service (``tidy``) and the monitoring check (``_forecast_version``) read an older version's ``y_hat``."""
    from pipeline.loop.monitoring import _forecast_version
    from pipeline.predict import tidy

    _, raw, model = served
    old = _Registered2026().use(model.forecaster)
    assert schema.LEGACY_YHAT in old.predict(None, raw.tail(30))
    np.testing.assert_array_equal(tidy(old.predict(None, raw.tail(30)))[schema.YHAT], model.predict(None, raw.tail(30))[schema.YHAT])
    T = pd.Timestamp(raw["time"].iloc[-1])
    stored = _forecast_version(old, raw, {"version": 1}, "champion", "m", T - pd.Timedelta("3h"), T)
    assert schema.YHAT in stored and schema.LEGACY_YHAT not in stored and stored[schema.YHAT].notna().all()


def test_last_mode_keeps_its_frame_and_errors(served):
    _, raw, model = served
    out = model.predict(None, raw.tail(30))
    assert list(out.columns) == [schema.DS, "step", "yhat"] and len(out) == 4
    assert out[schema.DS].iloc[0] == pd.Timestamp(raw["time"].iloc[-1]) + pd.Timedelta("1h")
    with pytest.raises(DataQualityError, match="at least lookback=24"):
        model.predict(None, raw.tail(10))
    with pytest.raises(DataQualityError, match="missing values that cannot be filled"):
        model.predict(None, raw.iloc[:203])  # ends inside the long gap
    with pytest.raises(DataQualityError, match=r"missing column\(s\) \['temp'\]"):
        model.predict(None, raw.tail(30).drop(columns=["temp"]))
    with pytest.raises(DataQualityError, match="expected 'last' or 'all'"):
        model.predict(None, raw, params={"origins": "every"})


def test_a_calibrated_model_adds_interval_columns_in_both_modes(served):
    """``yhat_lo_<level>`` / ``yhat_hi_<level>`` beside ``yhat``: the calibrated quantile of each step around it."""
    from pipeline.models.conformal import IntervalCalibration

    _, raw, model = served
    quantiles = {"80": [0.1, 0.2, 0.3, 0.4], "95": [0.5, 0.6, 0.7, np.inf]}
    calibration = IntervalCalibration((80.0, 95.0), quantiles, "none", 100, horizon=4)
    banded = ForecastModel().use(model.forecaster, None, calibration)
    bands = ["yhat_lo_80", "yhat_hi_80", "yhat_lo_95", "yhat_hi_95"]
    last = banded.predict(None, raw.tail(30))
    assert list(last.columns) == [schema.DS, "step", "yhat", *bands]
    np.testing.assert_allclose(last["yhat"], model.predict(None, raw.tail(30))["yhat"])  # the point forecast is unchanged
    np.testing.assert_allclose(last["yhat_hi_80"] - last["yhat"], [0.1, 0.2, 0.3, 0.4])
    np.testing.assert_allclose(last["yhat"] - last["yhat_lo_95"], [0.5, 0.6, 0.7, np.inf])
    multi = banded.predict(None, raw, params={"origins": "all"})
    assert list(multi.columns) == [schema.UNIQUE_ID, "origin", schema.DS, "step", "yhat", *bands]
    np.testing.assert_allclose((multi["yhat_hi_80"] - multi["yhat"]).to_numpy(), np.tile([0.1, 0.2, 0.3, 0.4], len(multi) // 4))
    empty = banded.predict(None, raw, params={"origins": "all", "origin_start": "2030-01-01"})
    assert empty.empty and bands[0] in empty


def test_normalised_bands_scale_with_each_windows_lookback(served):
    """A ``normalised`` calibration (``evaluation.interval_score: normalised``): band = quantile x the mean absolute one-step change
    of the target over that origin's own lookback, so origins with a calmer lookback get narrower bands."""
    from pipeline.models.conformal import IntervalCalibration, local_scale

    _, raw, model = served
    calibration = IntervalCalibration((80.0,), {"80": [1.0, 2.0, 3.0, 4.0]}, "none", 100, horizon=4, score="normalised", scale_floor=1e-3)
    banded = ForecastModel().use(model.forecaster, None, calibration)
    multi = banded.predict(None, raw, params={"origins": "all"})
    half = (multi["yhat_hi_80"] - multi["yhat"]).to_numpy().reshape(-1, 4)
    load = pd.to_numeric(raw["load"]).to_numpy()
    time = pd.to_datetime(raw["time"])
    origins = multi["origin"].drop_duplicates().reset_index(drop=True)
    for k in (0, 40, len(origins) - 1):
        at = int(np.flatnonzero(time == origins[k])[0])
        sigma = local_scale(load[None, at - 23 : at + 1])[0]  # lookback 24, the origin included
        np.testing.assert_allclose(half[k], sigma * np.array([1.0, 2.0, 3.0, 4.0]), rtol=1e-9)
    assert half[:, 0].std() > 0  # not one width for all
    with pytest.raises(ValueError, match="lookback"):
        calibration.bands(np.zeros((1, 4)))


def test_transform_never_refits(served):
    cfg, raw, model = served
    prep = model.prep
    shifted = raw.copy()
    shifted["load"] = (pd.to_numeric(shifted["load"]) * 3).astype(str)
    fs = transform(raw_to_long(shifted, cfg.data), prep)
    assert fs.prep is prep
    y = pd.to_numeric(shifted["load"]).to_numpy()
    mean, scale = prep.scaler_state["mean_"][0], prep.scaler_state["scale_"][0]
    ok = np.isfinite(y)
    np.testing.assert_allclose(fs.values[ok, 0], ((y - mean) / scale)[ok], rtol=1e-5)


def test_validation_and_serving_share_one_raw_to_long(served):
    cfg, raw, model = served
    from pipeline.serving.pyfunc import history_to_long

    validated = validate_frame(raw, cfg).frame
    served_long = history_to_long(raw, model.prep)
    pd.testing.assert_frame_equal(validated, served_long)


def test_two_series_of_different_lengths(make_case):
    a, b = sine_frame(n=200, seed=1), sine_frame(n=150, seed=2)
    a["site"], b["site"] = "a", "b"
    b = b.drop(index=range(60, 62))  # a short gap in series b
    config, _ = make_case(frame=pd.concat([a, b]), features={"lookback": 24, "horizon": 4}, model={**FAST_MODEL, "ar_highway": True},
                          data={"series_id_column": "site", "max_missing_fraction": 0.3})  # fmt: skip
    cfg = load_config(config)
    raw = read_raw(cfg.data)
    model = _model(cfg, build_features(validate_frame(raw, cfg).frame, cfg).prep)
    multi = model.predict(None, raw, params={"origins": "all"})
    assert set(multi[schema.UNIQUE_ID]) == {"a", "b"}
    last = model.predict(None, raw)
    assert list(last.columns) == [schema.UNIQUE_ID, schema.DS, "step", "yhat"] and len(last) == 8
    for uid in ("a", "b"):
        tail = multi[multi[schema.UNIQUE_ID] == uid]
        tail = tail[tail["origin"] == tail["origin"].max()]["yhat"].to_numpy()
        np.testing.assert_allclose(tail, last[last[schema.UNIQUE_ID] == uid]["yhat"].to_numpy(), rtol=1e-5, atol=1e-6)


def test_inference_modules_are_the_served_models_import_closure():
    """A logged model ships only these modules (``code_paths``); they must be all it imports."""
    import subprocess
    import sys

    from pipeline.serving.pyfunc import INFERENCE_FILES

    probe = (
        "import sys, pipeline, pipeline.serving.pyfunc, pipeline.models.lstm; from pathlib import Path; "
        "root = Path(pipeline.__file__).parent; "
        "print(sorted(str(Path(m.__file__).relative_to(root)) for n, m in sys.modules.items() if n == 'pipeline' or n.startswith('pipeline.')))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    loaded = set(eval(out))  # noqa: S307 - our own printout
    assert loaded == set(INFERENCE_FILES), f"imported but not shipped: {sorted(loaded - set(INFERENCE_FILES))}; shipped, not imported: {sorted(set(INFERENCE_FILES) - loaded)}"
    assert not any(f.startswith(("training/", "loop/", "registry/", "store/", "data/validation", "models/baselines")) for f in INFERENCE_FILES)


# ------------------------------------------------------------------ seasonal lags


@pytest.fixture(scope="module")
def served_lags(tmp_path_factory):
    """``(cfg, raw, fs, model)``: 400 hourly rows with a short gap, lookback 24, h 4, lags of 48 +- 1 (highway on)."""
    root = tmp_path_factory.mktemp("served_lags")
    frame = sine_frame(n=400)
    frame.loc[150:151, "load"] = np.nan  # <= max_gap (2): interpolated for inputs and for the lags read from it
    frame.to_csv(root / "input.csv", index=False)
    features = {"lookback": 24, "horizon": 4, "seasonal_lags": [48], "seasonal_lag_window": 1}
    config = root / "config.yaml"
    config.write_text(yaml.safe_dump(tiny_config_dict(root / "input.csv", root / "artifacts", features=features, model={**FAST_MODEL, "ar_highway": True})))
    cfg = load_config(config)
    raw = read_raw(cfg.data)
    fs = build_features(validate_frame(raw, cfg).frame, cfg)
    assert fs.prep.n_features == 1 + 3 + 1 + 3  # y, 3 lags, temp, wind one-hot
    return cfg, raw, fs, _model(cfg, fs.prep)


def test_the_served_model_replays_the_seasonal_lags_and_forecasts_as_in_training(served_lags):
    """The pyfunc's forecast from raw history equals the training-time forecast on the same windows, and each
    origin's forecast equals that of the history cut at the origin (no input reads past it)."""
    cfg, raw, fs, model = served_lags
    assert model.forecaster.models_[0].highway.in_features == 24 + 4 * 3
    trained = model.forecaster.predict(fs, "test")  # (n, h): the evaluation path (WindowTensors)
    origins = pd.DatetimeIndex(fs.ds[fs.starts["test"] + 24 - 1])
    multi = model.predict(None, raw, params={"origins": "all"})
    served = multi.set_index(["origin", "step"])["yhat"]
    got = np.array([[served[(o, k)] for k in range(1, 5)] for o in origins])
    np.testing.assert_allclose(got, trained, rtol=1e-5, atol=1e-6)
    # the first usable origin is the first whose lags are all inside the history: row 24 - 1 + (49 - 4)
    assert multi["origin"].min() == pd.Timestamp(raw["time"].iloc[24 - 1 + 49 - 4])
    for origin in [multi["origin"].min(), pd.Timestamp("2024-01-07 08:00"), origins[0], origins[-1]]:  # 2024-01-07 08:00: row 152
        expected = _single(model, raw, origin)
        np.testing.assert_allclose(multi.loc[multi["origin"] == origin].sort_values("step")["yhat"], expected, rtol=1e-5, atol=1e-6)


def test_history_too_short_for_the_seasonal_lags_names_the_rows_needed(served_lags):
    _, raw, fs, model = served_lags
    need = fs.prep.history_steps
    assert need == 24 + 49 - 4
    assert len(model.predict(None, raw.tail(need))) == 4
    with pytest.raises(DataQualityError, match=rf"history has {need - 1} steps, at least lookback \+ the seasonal lags' reach \(seasons \[48\]\) = 24 \+ 45 = {need} are needed"):
        model.predict(None, raw.tail(need - 1))
    holed = raw.tail(need).copy()
    holed.iloc[3:7, holed.columns.get_loc("load")] = np.nan  # a long gap before the window, where only the lags read
    with pytest.raises(DataQualityError, match=rf"the last {need} steps have missing values .* at \['{holed['time'].iloc[3]}"):
        model.predict(None, holed)


def test_the_onnx_export_reproduces_torch_with_seasonal_lags(served_lags):
    from pipeline.serving.export import OnnxForecaster, onnx_bytes

    _, raw, fs, model = served_lags
    onnx_model = ForecastModel().use(OnnxForecaster(onnx_bytes(model.forecaster), fs.prep))
    x = fs.windows("test").X
    np.testing.assert_allclose(onnx_model.predict_windows(x), model.predict_windows(x), rtol=1e-4, atol=1e-4)
    pd.testing.assert_frame_equal(onnx_model.predict(None, raw), model.predict(None, raw), rtol=1e-4, atol=1e-4)
