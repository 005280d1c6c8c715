"""The canary decision and its Diebold-Mariano test (pure computation, no servers)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.core.config import CanaryConfig
from pipeline.core.errors import ConfigError, DataQualityError
from pipeline.loop.canary import decide, decide_rollback, dm_test, per_origin_losses

CFG = CanaryConfig(min_origins=48, min_improvement=0.05, alpha=0.05, max_origins=200, rollback_origins=60)


def paired_frame(n_origins: int, h: int, sd_a: float, sd_b: float, seed: int, sd_b_early: float | None = None, early: int = 0) -> pd.DataFrame:
    """Paired scores of two versions whose h-step forecasts from consecutive origins overlap.

    The error of either version for target time ``t`` is its own noise ``eps[t]``, so the
    forecasts from origins ``t`` and ``t + k`` (k < h) share ``h - k`` errors: the per-origin
    loss differential is MA(h-1), the case the DM long-run variance is built for.
    """
    rng = np.random.default_rng(seed)
    n_t = n_origins + h
    eps_a = rng.normal(0, sd_a, n_t)
    eps_b = rng.normal(0, sd_b, n_t)
    if sd_b_early is not None:
        eps_b[: early + h] = rng.normal(0, sd_b_early, early + h)
    origins = pd.date_range("2025-01-01", periods=n_origins, freq="h")
    o, k = np.repeat(np.arange(n_origins), h), np.tile(np.arange(h), n_origins)
    y = np.sin(np.arange(n_t) / 5.0)
    return pd.DataFrame(
        {"unique_id": "s", "origin": origins[o], "step": k + 1, "y": y[o + k], "yhat_a": y[o + k] - eps_a[o + k], "yhat_b": y[o + k] - eps_b[o + k]}
    )


# --- the DM statistic against published values -------------------------------------------


def test_dm_matches_the_dieboldmariano_readme_example():
    # dieboldmariano 1.1.0 README (PyPI): dm_test(T, F, G, one_sided=True)
    # -> (-2.2229922805746782, 0.04515565862099125); squared-error loss, h = 1
    T, F, G = np.array([10, 20, 30, 40, 50.0]), np.array([11, 21, 29, 42, 53.0]), np.array([13, 26, 24, 40, 59.0])
    res = dm_test((T - F) ** 2, (T - G) ** 2, h=1)
    assert res.statistic == pytest.approx(-2.2229922805746782, rel=1e-12)
    assert res.p_better == pytest.approx(0.04515565862099125, rel=1e-9)
    assert res.p_worse == pytest.approx(1 - 0.04515565862099125, rel=1e-9)


def test_dm_matches_the_dieboldmariano_test_suite_values():
    # dieboldmariano's tests/dieboldmarianotest.py: squared error, h=1, two-sided p 0.05513
    p1, p2 = np.arange(6.0), np.array([0, 2, 3, 3, 5, 6.0])
    res = dm_test(p1**2, p2**2, h=1)
    assert res.statistic == pytest.approx(-2.4905, abs=1e-4)
    assert 2 * res.p_better == pytest.approx(0.05513, abs=1e-4)
    # same file: absolute loss, h=3, one-sided p 0.877 (our losses are the absolute errors)
    a = [0.3675225224615024, 0.5450608127223211, 0.22044990720021074, 0.8688743471040006, 0.6072512228948467,
         0.8582283746501538, 0.41662295816718187, 0.3812100211114714, 0.7185133356116706, 0.30827323290318875,
         0.4297093624074402, 0.8615974488577858, 0.7240514514808826, 0.3450839595261038, 0.19675301374013598]  # fmt: skip
    b = [0.12794132529988733, 0.3679643204341153, 0.768715420996091, 0.09972248964114683, 0.27197653636654284,
         0.28797629010039505, 0.9160213458582482, 0.6112628048698798, 0.5452873235576241, 0.06785907231746158,
         0.6072666485541124, 0.6241575753989782, 0.39998026828867217, 0.19895665605941748, 0.8094941215215619]  # fmt: skip
    res = dm_test(a, b, h=3)
    assert res.statistic == pytest.approx(1.2109, abs=1e-4)
    assert res.p_better == pytest.approx(0.877, abs=1e-3)
    assert res.lags == 2


def test_dm_agrees_with_statsmodels_at_h1():
    # statsmodels' diebold_mariano_test (HAC with 0 lags = the plain variance at h = 1)
    from statsmodels.tsa.stattools import diebold_mariano_test

    rng = np.random.default_rng(3)
    y, fa, fb = rng.normal(size=40), rng.normal(size=40), rng.normal(0.2, 1.3, size=40)
    ref = diebold_mariano_test(y, fb, fa, lags=0, harvey_adj=True, horizon=1)
    res = dm_test((y - fb) ** 2, (y - fa) ** 2, h=1)
    assert res.statistic == pytest.approx(ref.statistic, rel=1e-9)
    assert 2 * min(res.p_better, res.p_worse) == pytest.approx(ref.pvalue, rel=1e-6)


def test_dm_long_run_variance_uses_h_minus_1_rectangular_lags():
    # DM (1995) eq. 5 with a rectangular window of h-1 lags, HLN (1997) eq. 9, t(n-1)
    from scipy import stats

    rng = np.random.default_rng(11)
    frame = paired_frame(60, 4, 1.0, 0.9, seed=11)
    losses = per_origin_losses(frame)
    d = (losses["loss_b"] - losses["loss_a"]).to_numpy()
    n, h = len(d), 4
    gamma = [np.sum((d[k:] - d.mean()) * (d[: n - k] - d.mean())) / n for k in range(h)]
    var = (gamma[0] + 2 * sum(gamma[1:])) / n
    stat = d.mean() / np.sqrt(var) * np.sqrt((n + 1 - 2 * h + h * (h - 1) / n) / n)
    res = dm_test(losses["loss_b"], losses["loss_a"], h=h)
    assert rng is not None and res.lags == 3
    assert res.statistic == pytest.approx(stat, rel=1e-9)
    assert res.p_better == pytest.approx(stats.t.cdf(stat, df=n - 1), rel=1e-6)


def test_dm_falls_back_to_lag_0_when_the_long_run_variance_is_negative():
    d = np.tile([1.0, -1.0], 20) + 0.05  # strongly negative lag-1 autocovariance
    res = dm_test(d, np.zeros_like(d), h=2)
    assert res.lags == 0 and "lag 0" in res.note
    assert np.isfinite(res.statistic)


def test_dm_refuses_too_few_origins_and_bad_values():
    with pytest.raises(DataQualityError, match="more than 8 origins"):
        dm_test(np.ones(8), np.zeros(8), h=4)
    with pytest.raises(DataQualityError, match="NaN"):
        dm_test([1.0, np.nan, 2.0, 3.0], [1.0, 1.0, 1.0, 1.0])


# --- size and power on simulated pairs ----------------------------------------------------


def overlapping_losses(n_origins: int, h: int, sd: float, rng) -> np.ndarray:
    """Per-origin MSE of h-step forecasts whose target-time errors are N(0, sd): MA(h-1) losses."""
    sq = rng.normal(0, sd, n_origins + h - 1) ** 2
    return np.convolve(sq, np.full(h, 1.0 / h), mode="valid")


def test_equal_accuracy_rejects_at_about_the_nominal_rate():
    alpha, n_sims, h = 0.05, 400, 4
    rng = np.random.default_rng(2024)
    better = worse = 0
    for _ in range(n_sims):
        res = dm_test(overlapping_losses(100, h, 1.0, rng), overlapping_losses(100, h, 1.0, rng), h=h)
        better += res.p_better < alpha
        worse += res.p_worse < alpha
    assert alpha / 2 <= better / n_sims <= 2 * alpha, better / n_sims
    assert alpha / 2 <= worse / n_sims <= 2 * alpha, worse / n_sims
    promoted = sum(decide(paired_frame(60, h, 1.0, 1.0, seed=seed), CFG).action == "promote" for seed in range(40))
    assert promoted / 40 <= 2 * alpha


def test_a_clearly_better_challenger_is_promoted_with_its_numbers():
    d = decide(paired_frame(60, 4, 1.0, 0.6, seed=1), CFG)
    assert d.action == "promote", d.reason
    assert d.n_origins == 60 and d.horizon == 4 and d.lags == 3
    assert d.rmse_b < (1 - CFG.min_improvement) * d.rmse_a
    assert d.p_better < CFG.alpha and d.dm_statistic < 0
    assert "significantly better" in d.reason
    tags = d.tags()
    assert tags["canary_n_origins"] == "60" and float(tags["canary_p_better"]) == pytest.approx(d.p_better, rel=1e-5)


def test_better_only_on_the_first_origins_waits_for_min_origins():
    frame = paired_frame(30, 4, 1.0, 1.0, seed=2, sd_b_early=0.1, early=30)
    d = decide(frame, CFG)
    assert d.p_better < CFG.alpha  # the test alone would promote
    assert d.action == "wait" and "min_origins=48" in d.reason
    # after min_origins, the early advantage alone is no longer a significant win
    later = decide(paired_frame(120, 4, 1.0, 1.0, seed=2, sd_b_early=0.1, early=5), CFG)
    assert later.action != "promote", later.reason


def test_a_small_but_significant_gain_below_min_improvement_is_not_promoted():
    d = decide(paired_frame(190, 1, 1.0, 0.985, seed=5), CFG.model_copy(update={"min_improvement": 0.2}))
    assert d.action == "wait" and d.improvement < 0.2


def test_a_clearly_worse_challenger_is_rejected():
    d = decide(paired_frame(60, 4, 1.0, 1.8, seed=3), CFG)
    assert d.action == "reject" and "significantly worse" in d.reason
    assert d.p_worse < CFG.alpha


def test_no_win_after_max_origins_is_rejected():
    d = decide(paired_frame(200, 4, 1.0, 1.0, seed=4), CFG)
    assert d.action == "reject" and "max_origins=200" in d.reason


def test_too_few_origins_for_the_test_waits():
    d = decide(paired_frame(6, 4, 1.0, 0.1, seed=0), CFG)
    assert d.action == "wait" and "more than 2h = 8" in d.reason and np.isnan(d.p_better)


def test_no_paired_scores_yet_waits():
    empty = pd.DataFrame(columns=["unique_id", "origin", "step", "ds", "y", "yhat_a", "yhat_b"])
    assert decide(empty, CFG, horizon=4).action == "wait" and decide(empty, CFG, horizon=4).n_origins == 0
    assert decide_rollback(empty, CFG, horizon=4).action == "wait"


def test_rollback_when_the_new_champion_is_significantly_worse():
    bad = decide_rollback(paired_frame(50, 4, 1.0, 1.8, seed=6), CFG)
    assert bad.action == "rollback" and bad.p_worse < CFG.alpha
    fine = decide_rollback(paired_frame(60, 4, 1.0, 0.95, seed=6), CFG)
    assert fine.action == "keep"
    early = decide_rollback(paired_frame(20, 4, 1.0, 1.0, seed=6), CFG)
    assert early.action == "wait"


def test_paired_scores_need_their_columns():
    with pytest.raises(DataQualityError, match="yhat_b"):
        per_origin_losses(pd.DataFrame({"origin": [1], "y": [1.0], "yhat_a": [1.0]}))


def test_canary_config_orders_its_bounds(tmp_path):
    import yaml

    from pipeline.core.config import load_config
    from tests.conftest import tiny_config_dict

    raw = tiny_config_dict(tmp_path / "x.csv", tmp_path / "a", canary={"min_origins": 50, "max_origins": 10})
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="max_origins"):
        load_config(tmp_path / "c.yaml")


# --- guards: real (tiny) trained challengers that must never be promoted ------------------


def _train(root, frame, name: str, as_of: str, **training):
    """Validate -> features -> train on ``frame`` rows with ds < as_of; the pyfunc's model object, unregistered."""
    import yaml

    from pipeline.core.config import load_config
    from pipeline.data.validation import run_validation
    from pipeline.features.windowing import load_preprocessor, run_features
    from pipeline.models.lstm import LSTMForecaster
    from pipeline.serving.pyfunc import ForecastModel
    from pipeline.training.lstm import run_training
    from tests.conftest import FAST_MODEL, FAST_TRAINING, tiny_config_dict

    csv = root / f"{name}.csv"
    frame.to_csv(csv, index=False)
    raw = tiny_config_dict(csv, root / "artifacts", features={"lookback": 24, "horizon": 4}, training={**FAST_TRAINING, **training}, model=FAST_MODEL)
    (root / f"{name}.yaml").write_text(yaml.safe_dump(raw))
    cfg = load_config(root / f"{name}.yaml")
    run = root / "artifacts" / name
    validated = run_validation(cfg, run, as_of=as_of)
    feats = run_features(cfg, run, Path(validated["data"]))
    trained = run_training(cfg, run, Path(feats["features"]))
    model = ForecastModel().use(LSTMForecaster.load(run / "training", load_preprocessor(run / "features")))
    assert trained["training"]
    return model


@pytest.mark.slow
def test_bad_challengers_are_never_promoted(tmp_path):
    """Shuffled targets, a single epoch, and the scaler of another data set, against a good champion.

    Every model forecasts the same live stretch (after its training data) through the pyfunc's
    multi-origin mode; the scores go through the real SQLite forecast store.
    """
    from pipeline.store.sql import ForecastStore
    from tests.conftest import sine_frame

    live = sine_frame(n=560, seed=0)
    as_of, end = live["time"].iloc[400], live["time"].iloc[-1]
    rng = np.random.default_rng(0)
    shuffled = live.assign(load=rng.permutation(live["load"].to_numpy()))
    other = live.assign(load=10 * live["load"] + 50)  # another data set: its scaler is 10x off for this one
    models = {
        1: _train(tmp_path, live, "champion", as_of),
        2: _train(tmp_path, shuffled, "shuffled", as_of),
        3: _train(tmp_path, live, "one-epoch", as_of, max_epochs=1, min_epochs=1, learning_rate=0.001),
        4: _train(tmp_path, other, "other-scaler", as_of),
    }
    store = ForecastStore(f"sqlite:///{tmp_path / 'forecasts.db'}")
    observed = live.rename(columns={"time": "ds", "load": "y"}).assign(unique_id="series", ds=lambda f: pd.to_datetime(f["ds"]))
    params = {"origins": "all", "origin_start": as_of, "origin_end": end}
    for version, model in models.items():
        frame = model.predict(None, live, params=params)
        store.upsert_forecasts(frame.assign(model_name="guards", version=version, alias="shadow", as_of=end))
    store.score(observed[["unique_id", "ds", "y"]].assign(unique_id=lambda f: frame["unique_id"].iloc[0]), as_of=end)
    cfg = CanaryConfig(min_origins=48, min_improvement=0.05, alpha=0.05, max_origins=150, rollback_origins=60)
    for version, why in ((2, "shuffled targets"), (3, "one epoch"), (4, "scaler of another data set")):
        d = decide(store.paired_scores("guards", 1, version, until=end), cfg, horizon=4)
        assert d.n_origins >= 100, (why, d.reason)
        assert d.action == "reject", (why, d.reason)
        assert d.improvement < 0 and d.p_worse < 0.05, (why, d.reason)
