"""The retrain rule and its guards on hand-made check states (no servers)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.core.config import PipelineConfig
from pipeline.core.errors import MonitoringError
from pipeline.loop.monitoring import (
    _decision,
    _threshold,
    check_id,
    naive_forecast_frame,
    naive_rolling_rmse,
    reference_of,
    retrain_config,
    rolling_rmse,
    trigger_run_id,
)

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
    scored = pd.DataFrame(rows, columns=["unique_id", "origin", "step", "yhat", "y"])
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


# ------------------------------------------------------------------ the naive-relative rule


def _observed(n: int = 96, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"unique_id": "s", "ds": pd.date_range("2024-01-01", periods=n, freq="h"), "y": rng.normal(100, 10, n).round(1)})


def _scored(obs: pd.DataFrame, origins, horizon: int = 4, yhat=None) -> pd.DataFrame:
    y = obs.set_index("ds")["y"]
    rows = []
    for o in origins:
        for k in range(1, horizon + 1):
            ds = o + pd.Timedelta(hours=k)
            rows.append(("s", o, k, ds, float(y[o]) if yhat is None else yhat, float(y[ds])))
    return pd.DataFrame(rows, columns=["unique_id", "origin", "step", "ds", "yhat", "y"])


def test_naive_forecasts_are_the_value_at_the_origin_or_one_season_back():
    obs = _observed()
    origins = list(obs["ds"].iloc[30:34])
    scored = _scored(obs, origins, horizon=30)
    y = obs.set_index("ds")["y"]
    naive = naive_forecast_frame(scored, obs, "naive")
    np.testing.assert_array_equal(naive, y[scored["origin"]].to_numpy())
    seasonal = naive_forecast_frame(scored, obs, "seasonal_naive", season=24)
    # step 1..24 -> one season back, step 25..30 -> two seasons back: never after the origin
    back = np.where(scored["step"] <= 24, 24, 48)
    np.testing.assert_array_equal(seasonal, y[scored["ds"] - pd.to_timedelta(back, unit="h")].to_numpy())
    assert (scored["ds"] - pd.to_timedelta(back, unit="h") <= scored["origin"]).all()


def test_naive_forecasts_use_no_observation_after_the_origin():
    obs = _observed()
    origin = obs["ds"].iat[40]
    scored = _scored(obs, [origin], horizon=24)
    later = obs.assign(y=np.where(obs["ds"] > origin, -1.0, obs["y"]))  # everything after the origin changed
    cut = obs[obs["ds"] <= origin]  # or absent (observations as of T)
    for model in ("naive", "seasonal_naive"):
        expected = naive_forecast_frame(scored, obs, model)
        np.testing.assert_array_equal(naive_forecast_frame(scored, later, model), expected)
        np.testing.assert_array_equal(naive_forecast_frame(scored, cut, model), expected)


def test_naive_rolling_rmse_compares_the_same_origins():
    obs = _observed()
    origins = list(obs["ds"].iloc[30:40])
    scored = _scored(obs, origins, yhat=100.0)
    missing = obs[obs["ds"] != origins[3]]  # no observation at one origin: that origin leaves both RMSEs
    champ, naive, n = naive_rolling_rmse(scored, missing, horizon=4)
    keep = scored[scored["origin"] != origins[3]]
    y = obs.set_index("ds")["y"]
    assert n == 9
    assert champ == pytest.approx(np.sqrt(np.mean((100.0 - keep["y"]) ** 2)))
    assert naive == pytest.approx(np.sqrt(np.mean((y[keep["origin"]].to_numpy() - keep["y"].to_numpy()) ** 2)))
    incomplete = scored[~((scored["origin"] == origins[0]) & (scored["step"] == 4))]  # origin 0 not fully observed yet
    assert naive_rolling_rmse(incomplete, obs, horizon=4)[2] == 9
    assert naive_rolling_rmse(scored.iloc[:0], obs, 4)[2] == 0
    with pytest.raises(MonitoringError, match="naive_model"):
        naive_forecast_frame(scored, obs, "drift")


def _rule(cfg, rule: str, **monitoring):
    return cfg.model_copy(update={"monitoring": cfg.monitoring.model_copy(update={"rule": rule, **monitoring})})


@pytest.mark.parametrize(
    ("rule", "rolling", "naive", "decision"),
    [
        # a hard season: the champion's error is 2.5 x its training RMSE, but so is a naive forecast's
        ("training_rmse", 2.5, 2.6, "retrain"),
        ("naive", 2.5, 2.6, "ok"),
        ("both", 2.5, 2.6, "ok"),
        # a fault the naive forecast does not share: the champion is worse than naive
        ("naive", 1.5, 1.2, "retrain"),
        ("training_rmse", 1.5, 1.2, "ok"),
        ("both", 1.5, 1.2, "ok"),  # both: also above 2 x training RMSE
        ("both", 2.5, 1.2, "retrain"),
        ("naive", 1.2, 1.2, "ok"),  # "greater than"
    ],
)
def test_the_naive_relative_rule_tells_a_season_from_a_fault(cfg, rule, rolling, naive, decision):
    ruled = _rule(cfg, rule)
    state = _state(rolling_rmse=rolling, naive_rmse=naive, training_rmse=1.0)
    state["threshold"] = _threshold(ruled, state)
    got, reasons, _ = _decision(ruled, state, [])
    assert got == decision, reasons
    if rule == "naive":
        assert state["threshold"] == pytest.approx(naive) and "naive RMSE" in reasons[0]


def test_naive_ratio_scales_the_threshold_and_a_missing_naive_rmse_never_fires(cfg):
    ruled = _rule(cfg, "naive", naive_ratio=1.5)
    state = _state(rolling_rmse=1.7, naive_rmse=1.2, training_rmse=1.0)
    state["threshold"] = _threshold(ruled, state)
    assert state["threshold"] == pytest.approx(1.8) and _decision(ruled, state, [])[0] == "ok"
    blind = _state(rolling_rmse=100.0, naive_rmse=None)
    blind["threshold"] = _threshold(ruled, blind)
    assert blind["threshold"] is None and _decision(ruled, blind, [])[0] == "ok"
    assert _threshold(cfg, _state(naive_rmse=0.1)) == pytest.approx(2.0)  # the default stays the mission's rule


def test_retrain_config_refits_through_T_by_default(cfg):
    tcfg = retrain_config(cfg)
    assert tcfg.features.validation_tail_steps == max(2 * cfg.features.horizon, 24) and tcfg.gate.min_relative_improvement == 0.0
    assert cfg.features.validation_tail_steps == 0 and cfg.gate.min_relative_improvement == 0.05  # the scheduled protocol is untouched
    tuned = cfg.model_copy(update={"retrain": cfg.retrain.model_copy(update={"validation_steps": 30, "min_relative_improvement": -0.1})})
    assert retrain_config(tuned).features.validation_tail_steps == 30 and retrain_config(tuned).gate.min_relative_improvement == -0.1


def test_retrain_config_puts_recent_steps_into_training_only_when_set(cfg):
    cfg = cfg.model_copy(update={"retrain": cfg.retrain.model_copy(update={"mode": "scheduled"})})
    assert retrain_config(cfg) is cfg
    on = cfg.model_copy(update={"monitoring": cfg.monitoring.model_copy(update={"retrain_recent_steps": 48})})
    assert retrain_config(on).features.recent_train_steps == 48 and on.features.recent_train_steps == 0


def test_a_trigger_passed_as_a_parameter_gives_the_retrain_protocol_and_the_trigger_tags(cfg):
    """Kubeflow's nested retrain gets the check's conf as JSON text: the same config and tags as the Airflow DAG's."""
    import json

    from pipeline.core.errors import ConfigError
    from pipeline.loop.monitoring import triggered_config

    conf = {"reason": "monitoring rmse: ...", "as_of": "2024-01-23T12:00:00", "check_id": "m@2024-01-23T12:00:00",
            "champion_version": 3, "drift_share": None}  # fmt: skip
    tcfg, tags = triggered_config(cfg, json.dumps(conf))
    assert tcfg == retrain_config(cfg) and tcfg.features.validation_tail_steps > 0  # the refit protocol
    assert tags == {"trigger.reason": "monitoring rmse: ...", "trigger.as_of": "2024-01-23T12:00:00",
                    "trigger.check_id": "m@2024-01-23T12:00:00", "trigger.champion_version": "3"}  # fmt: skip
    for plain in ("", "{}", None, {"reason": "by hand"}):  # not a check's trigger: the config as it is
        assert triggered_config(cfg, plain) == (cfg, {})
    with pytest.raises(ConfigError, match="expected the check's conf as a JSON object"):
        triggered_config(cfg, "check_id=1")
    finetune = cfg.model_copy(update={"retrain": cfg.retrain.model_copy(update={"mode": "finetune"})})
    with pytest.raises(ConfigError, match="finetune"):
        triggered_config(finetune, conf)


# ------------------------------------------------------------------ monitoring.inherit_training_rmse


def test_a_triggered_retrain_inherits_the_lower_standard_of_the_champion_it_replaces():
    from pipeline.registry.registration import inherited_tags

    triggered = {"trigger.check_id": "m@2024-01-23T12:00:00"}
    champion = (1, {"training_rmse": "0.1455"})
    assert inherited_tags(0.50, triggered, champion) == {"inherited_training_rmse": "0.1455", "inherited_from": "v1"}
    # transitive: the champion's own inherited standard, and whose it is, pass on
    assert inherited_tags(0.40, triggered, (2, {"training_rmse": "0.50", "inherited_training_rmse": "0.1455", "inherited_from": "v1"})) == {
        "inherited_training_rmse": "0.1455", "inherited_from": "v1"}  # fmt: skip
    assert inherited_tags(0.10, triggered, champion) == {}  # a better fit keeps its own standard
    assert inherited_tags(0.50, {}, champion) == {}  # a scheduled training resets the line
    assert inherited_tags(0.50, triggered, None) == {}  # nothing to inherit from
    assert inherited_tags(0.50, triggered, (1, {"training_rmse": "n/a"})) == {}


def test_the_rule_holds_a_champion_to_its_inherited_training_rmse_only_when_switched_on(cfg):
    from pipeline.loop.monitoring import _rule, _training_rmse

    info = {"version": 2, "tags": {"training_rmse": "0.5", "inherited_training_rmse": "0.1455", "inherited_from": "v1"}}
    assert _training_rmse(info, "m") == 0.5
    assert _training_rmse(info, "m", inherit=True) == pytest.approx(0.1455)
    assert _training_rmse({"version": 1, "tags": {"training_rmse": "0.2"}}, "m", inherit=True) == 0.2
    on = cfg.model_copy(update={"monitoring": cfg.monitoring.model_copy(update={"inherit_training_rmse": True})})
    state = _state(rolling_rmse=0.875, training_rmse=0.1455, training_rmse_from="v1")
    state["threshold"] = _threshold(on, state)
    fired, reasons = _rule(on, state, [])
    assert fired == "rmse" and "inherited from v1" in reasons[0], reasons
    own = _state(rolling_rmse=0.875, training_rmse=0.5)
    own["threshold"] = _threshold(cfg, own)
    assert _rule(cfg, own, [])[0] is None  # the promoted refit's own standard (2 x 0.5) silences the rule
