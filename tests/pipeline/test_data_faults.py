"""Data-fault alerts on hand-made frames: unit changes, stuck and out-of-range values, clean windows (no servers)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.core.config import PipelineConfig, load_config
from pipeline.core.errors import ConfigError
from pipeline.loop import data_faults
from pipeline.loop.monitoring import NO_RETRAIN, _decision

T = pd.Timestamp("2024-02-10 00:00")


def _cfg(freq: str = "h", **alerts) -> PipelineConfig:
    return PipelineConfig.model_validate({
        "data": {"synthetic": {}, "timestamp_column": "time", "target_column": "load", "covariates": ["temp", "rain"], "freq": freq},
        "features": {"lookback": 24, "horizon": 4},
        "monitoring": {"alerts": alerts},  # window, min_origins, cooldown, staleness: derived from freq and h
    })  # fmt: skip


def _long(days: int = 40, seed: int = 0, series: str = "series_0") -> pd.DataFrame:
    """Hourly ``load`` (daily cycle + noise, ~50 +- 20), ``temp`` (~5 C +- 3), ``rain`` (0 on 95% of hours), ending at ``T``."""
    rng = np.random.default_rng(seed)
    n = 24 * days
    t = np.arange(n)
    return pd.DataFrame({
        "unique_id": series, "ds": pd.date_range(T - pd.Timedelta(hours=n), periods=n, freq="h"),
        "y": 50 + 20 * np.sin(2 * np.pi * t / 24) + rng.normal(0, 5, n),
        "temp": 5 + 3 * np.cos(2 * np.pi * t / 24) + rng.normal(0, 0.5, n),
        "rain": np.where(rng.random(n) < 0.05, rng.uniform(0.1, 3, n), 0.0),
    })  # fmt: skip


def _changed(long: pd.DataFrame, column: str, at: pd.Timestamp, factor: float = 1.0, offset: float = 0.0) -> pd.DataFrame:
    out = long.copy()
    after = out["ds"] >= at
    out.loc[after, column] = out.loc[after, column] * factor + offset
    return out


@pytest.mark.parametrize("seed", range(5))
def test_a_clean_window_gives_no_fault(seed):
    assert data_faults.detect(_long(seed=seed), _cfg(), T) == []


def test_a_x1000_unit_change_in_a_covariate_names_the_column_since_when_and_the_ratio():
    at = T - pd.Timedelta("10h")
    (fault,) = data_faults.detect(_changed(_long(), "temp", at, factor=1000), _cfg(), T)
    assert (fault.column, fault.unique_id) == ("temp", "series_0")
    assert "scale" in fault.kind
    assert fault.since == at.isoformat()
    assert fault.measured["iqr_ratio"] > 100
    assert "'temp'" in fault.message and at.isoformat() in fault.message


def test_a_celsius_to_fahrenheit_change_is_a_shift_of_the_median_in_reference_iqrs():
    at = T - pd.Timedelta("20h")
    (fault,) = data_faults.detect(_changed(_long(), "temp", at, factor=1.8, offset=32), _cfg(), T)
    assert fault.column == "temp" and fault.kind == "shift"
    assert fault.since == at.isoformat()
    assert fault.measured["median_shift_iqr"] > 6  # ~ (1.8 x 5 + 32 - 5) / IQR 4.3


def test_the_target_is_named_by_its_data_column():
    (fault,) = data_faults.detect(_changed(_long(), "y", T - pd.Timedelta("12h"), offset=500), _cfg(), T)
    assert fault.column == "load"  # not the long frame's "y"


def test_a_change_older_than_the_reference_is_the_norm_again():
    """Robust statistics of a recent reference: a unit change a month old is no longer news."""
    assert data_faults.detect(_changed(_long(days=60), "temp", T - pd.Timedelta("35D"), factor=1000), _cfg(), T) == []


def test_a_stuck_value_names_the_column_and_the_first_stuck_timestamp():
    long = _long()
    at = T - pd.Timedelta("30h")
    long.loc[long["ds"] >= at, "y"] = 57.0
    (fault,) = data_faults.detect(long, _cfg(), T)
    assert (fault.column, fault.kind, fault.since) == ("load", "stuck", at.isoformat())
    assert fault.measured["steps"] == 30 and fault.measured["value"] == 57.0
    long.loc[long["ds"] < T - pd.Timedelta("23h"), "y"] = 1.0  # stuck for 23 h only: below stuck_for (1 day)
    assert [f.kind for f in data_faults.detect(long, _cfg(), T) if f.column == "load"] != ["stuck"]


def test_a_plateau_is_stuck_only_when_it_outlasts_the_columns_own_plateaus_by_stuck_ratio():
    """A coarse sensor's plateau (Beijing's whole-degree dew point held -5 for 29 h, 2.4 x its four
    weeks' longest run) is no fault; 3 x the reference's longest run (``stuck_ratio``) is."""
    long = _long()
    plateau = (long["ds"] >= T - pd.Timedelta("10D")) & (long["ds"] < T - pd.Timedelta("10D") + pd.Timedelta("12h"))
    long.loc[plateau, "y"] = 40.0  # the reference's own plateau: 12 steps
    long.loc[long["ds"] >= T - pd.Timedelta("29h"), "y"] = 57.0
    assert [f for f in data_faults.detect(long, _cfg(), T) if f.kind == "stuck"] == []  # 29 < 3 x 12
    long.loc[long["ds"] >= T - pd.Timedelta("36h"), "y"] = 57.0
    (fault,) = data_faults.detect(long, _cfg(), T)
    assert (fault.kind, fault.since) == ("stuck", (T - pd.Timedelta("36h")).isoformat())
    assert fault.measured["reference_longest_run"] == 12 and fault.measured["steps"] == 36 and "3 x" in fault.message
    assert [f.kind for f in data_faults.detect(long, _cfg(stuck_ratio=4.0), T)] == []  # 36 < 4 x 12


def test_a_column_mostly_at_one_value_is_not_stuck_there():
    long = _long()
    long.loc[long["ds"] >= T - pd.Timedelta("3D"), "rain"] = 0.0  # three dry days: rain is 0 on most hours anyway
    assert data_faults.detect(long, _cfg(), T) == []


def test_a_value_outside_the_configured_range_is_a_fault_from_its_first_timestamp():
    long = _long()
    at = T - pd.Timedelta("5h")
    long.loc[long["ds"] == at, "temp"] = 80.0
    assert data_faults.detect(long, _cfg(), T) == []  # no range configured: one spike is no shift
    (fault,) = data_faults.detect(long, _cfg(columns={"temp": {"min": -40, "max": 50}}), T)
    assert (fault.column, fault.kind, fault.since) == ("temp", "range", at.isoformat())
    assert fault.measured["n_outside"] == 1 and fault.measured["found_max"] == 80.0


def test_per_column_thresholds_and_switches():
    long = _changed(_long(), "temp", T - pd.Timedelta("10h"), factor=1000)
    assert data_faults.detect(long, _cfg(columns={"temp": {"check": False}}), T) == []
    assert data_faults.detect(long, _cfg(columns={"temp": {"max_scale_ratio": 1e6, "max_shift": 1e6}}), T) == []
    assert data_faults.detect(long, _cfg(enabled=False), T) == []


def test_only_observations_before_T_count():
    future = _long().assign(ds=lambda f: f["ds"] + pd.Timedelta("40D"))  # T .. T + 40D, temp x1000
    future["temp"] *= 1000
    long = pd.concat([_long(), future], ignore_index=True)
    assert data_faults.detect(long, _cfg(), T) == []
    assert [f.column for f in data_faults.detect(long, _cfg(), T + pd.Timedelta("10h"))] == ["temp"]


def test_several_series_name_the_series_at_fault():
    long = pd.concat([_long(series="a"), _changed(_long(seed=1, series="b"), "temp", T - pd.Timedelta("8h"), factor=1000)])
    (fault,) = data_faults.detect(long, _cfg(), T)
    assert (fault.unique_id, fault.column) == ("b", "temp") and "series b" in fault.message


@pytest.mark.parametrize(
    ("freq", "current", "reference"),
    [("h", "1D", "28D"), ("10min", "1D", "28D"), ("D", "24D", "96D"), ("15min", "1D", "28D")],
)
def test_window_defaults_follow_the_frequency(freq, current, reference):
    w = data_faults.windows(_cfg(freq))
    assert (w.current, w.reference, w.stuck_for) == (pd.Timedelta(current), pd.Timedelta(reference), pd.Timedelta(current))
    w = data_faults.windows(_cfg(freq, current="2D", reference="14D", stuck_for="12h"))
    assert (w.current, w.reference, w.stuck_for) == (pd.Timedelta("2D"), pd.Timedelta("14D"), pd.Timedelta("12h"))


def test_alert_settings_for_an_unknown_column_or_a_bad_notifier_are_refused_by_key(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        "data: {synthetic: {}, timestamp_column: time, target_column: load, covariates: [temp], freq: h}\n"
        "features: {lookback: 24, horizon: 4}\nmonitoring: {alerts: {columns: {tmep: {min: 0}}}}\n"
    )
    with pytest.raises(ConfigError, match=r"monitoring\.alerts\.columns: \['tmep'\] are not numeric columns.*'load', 'temp'"):
        load_config(path)
    path.write_text(path.read_text().replace("columns: {tmep: {min: 0}}", "notifier: not a path"))
    with pytest.raises(ConfigError, match=r"monitoring\.alerts\.notifier: .*dotted path"):
        load_config(path)


# ------------------------------------------------------------------ the decision


def _state(**over) -> dict:
    state = {
        "status": "ready", "as_of": T.isoformat(), "model_name": "m", "check_id": f"m@{T.isoformat()}", "versions": {"champion": 1},
        "last_observed": (T - pd.Timedelta("1h")).isoformat(), "rolling_rmse": 1.0, "training_rmse": 1.0, "threshold": 2.0,
        "n_origins_scored": 50, "drifted": False, "drift_share": 0.0, "drifted_columns": [],
    }  # fmt: skip
    return {**state, **over}


def test_a_data_fault_is_decided_before_the_rule_and_holds_its_retrain():
    fault = data_faults.detect(_changed(_long(), "temp", T - pd.Timedelta("10h"), factor=1000), _cfg(), T)[0].as_dict()
    decision, reasons, trigger = _decision(_cfg(), _state(rolling_rmse=2.5, data_faults=[fault]), [])
    assert decision == "data_fault" and trigger == "rmse"  # the rule fired, and is held
    assert reasons[0] == fault["message"] and reasons[-1] == NO_RETRAIN
    assert any("rolling RMSE 2.5 >" in r for r in reasons)
    assert _decision(_cfg(), _state(rolling_rmse=2.5, data_faults=[]), [])[0] == "retrain"
    assert _decision(_cfg(), _state(data_faults=[fault], last_observed=None), [])[0] == "stale_data"


def _whole_units(long: pd.DataFrame) -> pd.DataFrame:
    """The frame as sensors record it: ``load`` and ``temp`` in whole units."""
    return long.assign(y=long["y"].round(), temp=long["temp"].round())


@pytest.mark.parametrize("seed", range(10))
def test_a_clean_whole_unit_series_has_no_grid_fault(seed):
    assert data_faults.detect(_whole_units(_long(seed=seed)), _cfg(), T) == []


@pytest.mark.parametrize("factor", [2, 3])
def test_an_integer_rescaling_of_recorded_values_is_a_grid_fault_inside_the_series_own_range(factor):
    """x2 / x3 of a whole-unit target: inside the median/IQR limits (no shift or scale fault), caught by the grid."""
    at = T - pd.Timedelta("20h")
    long = _whole_units(_long())
    (fault,) = data_faults.detect(_changed(long, "y", at, factor=factor), _cfg(max_shift=1e6, max_scale_ratio=1e6), T)
    assert (fault.column, fault.kind) == ("load", "grid")
    assert fault.measured["factor"] % factor == 0 and fault.measured["reference_step"] == 1
    assert pd.Timestamp(fault.since) <= at and fault.measured["n_values"] >= 20  # the run may start at an earlier value that happens to fit
    assert f"multiplied by {fault.measured['factor']}" in fault.message and "'load'" in fault.message


def test_a_celsius_to_fahrenheit_change_of_whole_degrees_leaves_the_grid():
    at = T - pd.Timedelta("6h")
    faults = data_faults.detect(_changed(_whole_units(_long()), "temp", at, factor=1.8, offset=32), _cfg(max_shift=1e6), T)
    (grid,) = [f for f in faults if f.kind == "grid"]
    assert grid.column == "temp" and grid.measured["n_off_grid"] >= 3 and grid.measured["current_step"] is None
    assert at <= pd.Timestamp(grid.since) < T and "off the recorded grid" in grid.message


def test_a_stray_half_unit_reading_in_the_reference_does_not_halve_the_grid():
    long = _whole_units(_long())
    long.loc[long.index[-240], "y"] += 0.5  # one reading in the reference window at half a unit (Beijing PRES, February 2013)
    assert data_faults.detect(long, _cfg(), T) == []


def test_the_grid_test_can_be_switched_off_per_column_or_for_all():
    changed = _changed(_whole_units(_long()), "y", T - pd.Timedelta("20h"), factor=2)
    loose = {"max_shift": 1e6, "max_scale_ratio": 1e6}
    assert data_faults.detect(changed, _cfg(**loose, grid=False), T) == []
    assert data_faults.detect(changed, _cfg(**loose, columns={"load": {"grid": False}}), T) == []
    assert data_faults.detect(changed, _cfg(**loose, grid_min_points=30), T) == []  # 20 values: too few to tell from chance
