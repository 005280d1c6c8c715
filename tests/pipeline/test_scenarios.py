"""Fault scenarios change exactly what they say, from the injection date, on a copy."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest

from pipeline.core.config import load_config
from pipeline.core.errors import ConfigError, DataQualityError
from pipeline.data.io import read_raw
from pipeline.loop.scenarios import CONCEPT_DRIFT, SCENARIO_DIR, Scenario, apply_scenario, load_scenario, write_scenario_data
from tests.conftest import ROOT, tiny_frame

INJECT = "2024-01-03 00:00:00"


@pytest.fixture
def raw() -> pd.DataFrame:
    frame = tiny_frame(n=96)
    frame.loc[60, "load"] = np.nan  # a missing cell after the injection stays missing
    return frame.astype({"load": str, "temp": str}).replace("nan", np.nan)


def _apply(raw, **kw):
    return apply_scenario(raw, Scenario(name="t", **kw), INJECT, "time", "load")


def _split(raw):
    ds = pd.to_datetime(raw["time"])
    return (ds < pd.Timestamp(INJECT)).to_numpy()


def _num(frame, col):
    return pd.to_numeric(frame[col]).to_numpy()


@pytest.mark.parametrize(
    "kw, expected",
    [
        ({"kind": "scale", "factor": 2.0}, lambda x, d: 2 * x),
        ({"kind": "unit_change"}, lambda x, d: 1.8 * x + 32),
        ({"kind": "level_shift", "offset": 50.0}, lambda x, d: x + 50),
        ({"kind": "trend", "slope_per_day": 24.0}, lambda x, d: x + 24 * d),
    ],
    ids=["scale", "unit_change", "level_shift", "trend"],
)
def test_fault_changes_target_only_from_injection(raw, kw, expected):
    before = raw.copy(deep=True)
    out = _apply(raw, **kw)
    pd.testing.assert_frame_equal(raw, before)  # input not modified
    early = _split(raw)
    pd.testing.assert_frame_equal(out[early], raw[early])  # untouched text before the injection
    pd.testing.assert_series_equal(out["temp"], raw["temp"])  # and in every other column
    pd.testing.assert_series_equal(out["time"], raw["time"])
    assert out["load"].isna().equals(raw["load"].isna())
    days = ((pd.to_datetime(raw["time"]) - pd.Timestamp(INJECT)) / pd.Timedelta(days=1)).to_numpy()
    late = ~early & raw["load"].notna().to_numpy()
    np.testing.assert_allclose(_num(out, "load")[late], expected(_num(raw, "load")[late], days[late]))
    assert not np.allclose(_num(out, "load")[late], _num(raw, "load")[late])


def test_covariate_unit_change_touches_only_that_column(raw):
    out = _apply(raw, kind="unit_change", column="temp")
    pd.testing.assert_series_equal(out["load"], raw["load"])
    late = ~_split(raw)
    np.testing.assert_allclose(_num(out, "temp")[late], _num(raw, "temp")[late] * 1.8 + 32)
    np.testing.assert_array_equal(out["temp"][~late], raw["temp"][~late])


def test_noise_is_seeded_clipped_and_only_after_injection(raw):
    a = _apply(raw, kind="noise", noise_std=5.0, seed=3, clip_min=0.0)
    b = _apply(raw, kind="noise", noise_std=5.0, seed=3, clip_min=0.0)
    c = _apply(raw, kind="noise", noise_std=5.0, seed=4, clip_min=0.0)
    pd.testing.assert_frame_equal(a, b)
    assert not a.equals(c)
    early = _split(raw)
    pd.testing.assert_frame_equal(a[early], raw[early])
    late = ~early & raw["load"].notna().to_numpy()
    diff = _num(a, "load")[late] - _num(raw, "load")[late]
    assert 2.5 < diff.std() < 10 and (_num(a, "load")[late] >= 0).all()


def test_none_is_an_identical_copy(raw):
    out = _apply(raw, kind="none")
    pd.testing.assert_frame_equal(out, raw)
    assert out is not raw


def test_bad_column_and_bad_cell_name_where(raw):
    with pytest.raises(DataQualityError, match="'pressure'"):
        _apply(raw, kind="scale", factor=2.0, column="pressure")
    broken = raw.copy()
    broken.loc[70, "load"] = "n/a"
    with pytest.raises(DataQualityError, match="'n/a' at row 70"):
        _apply(broken, kind="scale", factor=2.0)


def test_every_shipped_scenario_loads():
    names = sorted(p.stem for p in SCENARIO_DIR.glob("*.yaml"))
    assert {"none", "recalibration_x2", "temp_c_to_f", "level_shift", "trend", "noise"} <= set(names)
    for name in names:
        assert load_scenario(name).name == name
    with pytest.raises(ConfigError, match="shipped scenarios"):
        load_scenario("no_such_scenario")


def test_unknown_key_in_scenario_file_is_named(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("kind: scale\nfactr: 2\n")
    with pytest.raises(ConfigError, match="factr"):
        load_scenario(path)


def test_shipped_beijing_file_is_never_modified(tmp_path):
    cfg = load_config(ROOT / "configs" / "beijing_pm25.yaml")
    digest = hashlib.sha256(cfg.data.path.read_bytes()).hexdigest()
    raw = read_raw(cfg.data)
    out = apply_scenario(raw, load_scenario("recalibration_x2"), "2014-06-01", "timestamp", "pm2.5", "%Y-%m-%d %H:%M:%S")
    copy = write_scenario_data(out, tmp_path / "drifted.csv.gz")
    assert hashlib.sha256(cfg.data.path.read_bytes()).hexdigest() == digest
    back = read_raw(cfg.data, copy)
    early = (pd.to_datetime(raw["timestamp"]) < "2014-06-01").to_numpy()
    pd.testing.assert_frame_equal(back[early], raw[early])
    late = ~early & raw["pm2.5"].notna().to_numpy()
    np.testing.assert_allclose(_num(back, "pm2.5")[late], 2 * _num(raw, "pm2.5")[late])


def test_written_copy_is_byte_identical_on_rewrite(raw, tmp_path):
    out = _apply(raw, kind="scale", factor=2.0)
    a = write_scenario_data(out, tmp_path / "a.csv.gz").read_bytes()
    import time

    time.sleep(1.1)  # a gzip header with a time stamp would differ now
    b = write_scenario_data(out, tmp_path / "a.csv.gz").read_bytes()
    assert a == b


# ------------------------------------------------------------------ concept drift: faults a retrain can fix


def _unchanged_elsewhere(raw, out):
    early = _split(raw)
    pd.testing.assert_frame_equal(out[early], raw[early])
    for col in ("time", "temp", "wind"):
        pd.testing.assert_series_equal(out[col], raw[col])
    assert out["load"].isna().equals(raw["load"].isna())
    return ~early & raw["load"].notna().to_numpy()


def test_profile_change_moves_load_towards_the_peak_hour(raw):
    out = _apply(raw, kind="profile_change", amplitude=0.3, peak_hour=18.0)
    late = _unchanged_elsewhere(raw, out)
    hour = pd.to_datetime(raw["time"]).dt.hour.to_numpy()[late]
    ratio = _num(out, "load")[late] / _num(raw, "load")[late]
    np.testing.assert_allclose(ratio, 1 + 0.3 * np.cos(2 * np.pi * (hour - 18) / 24), rtol=1e-12)
    assert ratio[hour == 18].max() == pytest.approx(1.3) and ratio[hour == 6].min() == pytest.approx(0.7)


def test_dynamics_change_slows_the_series_from_the_injection(raw):
    clean = raw.copy()
    clean.loc[60, "load"] = "10.0"  # a full column, so positions interpolate between real values only
    out = _apply(clean, kind="dynamics_change", factor=2.0)
    x, y = _num(clean, "load"), _num(out, "load")
    i0 = int(np.argmax(~_split(clean)))
    assert (y[:i0] == x[:i0]).all()
    for k in range(0, 40, 2):  # even steps land on a row: the value factor x k / factor rows on
        assert y[i0 + k] == pytest.approx(x[i0 + k // 2])
    assert y[i0 + 1] == pytest.approx((x[i0] + x[i0 + 1]) / 2)  # odd steps: halfway


def test_covariate_relation_adds_a_gain_on_the_covariate(raw):
    out = _apply(raw, kind="covariate_relation", covariate="temp", factor=-4.0)
    late = _unchanged_elsewhere(raw, out)
    temp = _num(raw, "temp")
    ref = np.nanmean(temp[_split(raw)])
    np.testing.assert_allclose(_num(out, "load")[late], _num(raw, "load")[late] - 4.0 * (temp[late] - ref), rtol=1e-12)
    with pytest.raises(DataQualityError, match="needs 'covariate'"):
        _apply(raw, kind="covariate_relation", factor=1.0)


def test_time_shift_makes_the_target_lag_its_timestamps(raw):
    out = _apply(raw, kind="time_shift", lag_steps=3)
    late = _unchanged_elsewhere(raw, out)
    rows = np.flatnonzero(late)
    x = _num(raw, "load")
    expected = np.where(np.isfinite(x[rows - 3]), x[rows - 3], x[rows])
    np.testing.assert_allclose(_num(out, "load")[late], expected)


@pytest.mark.parametrize("name", ["tariff_profile", "line_slowdown", "temperature_response", "clock_shift"])
def test_shipped_concept_drift_scenarios_load_and_tell_their_story(name):
    sc = load_scenario(name)
    assert sc.kind in CONCEPT_DRIFT and sc.description
    text = (SCENARIO_DIR / f"{name}.yaml").read_text()
    assert text.startswith("#") and len(text.splitlines()[0]) > 40  # the real-world story comes first
