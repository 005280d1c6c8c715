"""The retrain rule and its guards on hand-made check states (no servers)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.config import PipelineConfig
from pipeline.errors import MonitoringError
from pipeline.monitoring import _decision, check_id, reference_of, rolling_rmse, trigger_run_id

T = "2024-02-01T00:00:00"


@pytest.fixture
def cfg():
    return PipelineConfig.model_validate({
        "data": {"synthetic": {}, "timestamp_column": "t", "target_column": "y", "freq": "h"},
        "features": {"lookback": 24, "horizon": 4},
        "monitoring": {"window": "7D", "min_origins": 10, "cooldown": "2D", "max_staleness": "1D", "drift_checks": 3},
    })  # fmt: skip


def _state(**over) -> dict:
    state = {
        "status": "ready", "as_of": T, "model_name": "m", "check_id": f"m@{T}", "versions": {"champion": 1},
        "last_observed": "2024-01-31T23:00:00", "rolling_rmse": 1.0, "training_rmse": 1.0, "threshold": 2.0,
        "n_origins_scored": 50, "drifted": False, "drift_share": 0.0, "drifted_columns": [],
    }  # fmt: skip
    return {**state, **over}


def test_rolling_rmse_uses_complete_origins_only():
    rows = [("s", o, k, 1.0 + k, 1.0) for o in range(3) for k in range(1, 5)]  # errors 1..4 per step
    rows += [("s", 3, 1, 100.0, 0.0)]  # an origin with 1 of 4 targets observed yet
    scored = pd.DataFrame(rows, columns=["unique_id", "origin", "step", "y_hat", "y"])
    rmse, n = rolling_rmse(scored, horizon=4)
    assert n == 3 and rmse == pytest.approx(np.sqrt(np.mean([1, 4, 9, 16])))
    assert rolling_rmse(scored.iloc[:0], 4) == (pytest.approx(float("nan"), nan_ok=True), 0)


@pytest.mark.parametrize(
    ("over", "previous", "decision"),
    [
        ({}, [], "ok"),
        ({"rolling_rmse": 2.0}, [], "ok"),  # the rule is "greater than", not "at least"
        ({"rolling_rmse": 2.5}, [], "retrain"),
        ({"rolling_rmse": 2.5, "n_origins_scored": 9}, [], "insufficient_data"),
        ({"rolling_rmse": 2.5, "last_observed": "2024-01-30T23:00:00"}, [], "stale_data"),
        ({"rolling_rmse": 2.5, "last_observed": None}, [], "stale_data"),
        ({"rolling_rmse": 2.5}, [{"decision": "retrain", "as_of": "2024-01-30T12:00:00", "check_id": "m@x"}], "cooldown"),
        ({"rolling_rmse": 2.5}, [{"decision": "retrain", "as_of": "2024-01-29T23:00:00", "check_id": "m@x"}], "retrain"),
        ({"rolling_rmse": 2.5, "versions": {"champion": 1, "challenger": 2}}, [], "cooldown"),
        ({"rolling_rmse": 2.5, "versions": {"champion": 1, "challenger": 1}}, [], "retrain"),
        ({"status": "no_champion", "versions": {}}, [], "no_champion"),
        ({"status": "invalid_data", "failures": [{"expectation": "e", "column": "y", "unexpected_count": 1, "examples": ["line 9"]}]}, [], "invalid_data"),
    ],
)
def test_decision_table(cfg, over, previous, decision):
    got, reasons, _ = _decision(cfg, _state(**over), previous)
    assert got == decision, reasons
    assert reasons


def test_sustained_drift_triggers_only_when_switched_on(cfg):
    drifted = _state(drifted=True, drift_share=1.0, drifted_columns=["y"])
    streak = [{"drifted": True}, {"drifted": True}]
    assert _decision(cfg, drifted, streak)[0] == "ok"  # drift is evidence by default
    on = cfg.model_copy(update={"monitoring": cfg.monitoring.model_copy(update={"retrain_on_drift": True})})
    decision, reasons, trigger = _decision(on, drifted, streak)
    assert (decision, trigger) == ("retrain", "drift") and "3 consecutive drifted check(s)" in reasons[-1]
    assert _decision(on, drifted, [{"drifted": True}, {"drifted": False}])[0] == "ok"


def test_ids_are_deterministic_and_path_safe():
    assert check_id("m", "2024-02-01T00:00:00+00:00") == check_id("m", pd.Timestamp("2024-02-01")) == "m@2024-02-01T00:00:00"
    assert trigger_run_id(check_id("m", T)) == "retrain__m_2024-02-01T00_00_00"


def test_a_version_without_reference_sample_names_itself_and_the_fix():
    class Old:  # a pyfunc loaded from a version registered before monitoring existed
        reference_path = None

    with pytest.raises(MonitoringError, match=r"model 'm' version 3 has no reference sample.*Fix: retrain"):
        reference_of(Old(), "m", 3)
