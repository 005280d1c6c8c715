"""One contract for every forecaster: the LSTM and each statsforecast baseline."""

import numpy as np
import pytest

from pipeline.baselines import StatsBaseline
from pipeline.training import LSTMForecaster

MODELS = ["LSTM", "Naive", "SeasonalNaive", "AutoETS", "AutoARIMA"]


def _make(name, cfg, tmp_path):
    if name == "LSTM":
        return LSTMForecaster(cfg, tmp_path / f"lstm-{np.random.randint(1 << 30)}", device="cpu")
    return StatsBaseline(name, cfg.baselines)


@pytest.mark.parametrize("name", MODELS)
def test_forecaster_contract(name, tiny_features, tmp_path):
    cfg, fs = tiny_features
    before = {k: v.copy() for k, v in (("values", fs.values), ("target", fs.target), ("y", fs.y))}
    first = _make(name, cfg, tmp_path).fit(fs)
    pred = first.predict(fs, "test")
    assert pred.shape == (len(fs.starts["test"]), fs.prep.horizon)
    assert np.isfinite(pred).all()
    for key, arr in before.items():
        np.testing.assert_array_equal(getattr(fs, key), arr, err_msg=f"{name} modified fs.{key}")
    again = _make(name, cfg, tmp_path).fit(fs).predict(fs, "test")
    np.testing.assert_array_equal(pred, again, err_msg=f"{name} is not deterministic under a seed")


def test_baselines_forecast_from_the_lstm_origins(tiny_features):
    cfg, fs = tiny_features
    naive = StatsBaseline("Naive", cfg.baselines).fit(fs).predict(fs, "test")
    last_input = fs.prep.inverse_target(fs.windows("test").X[:, -1, 0])  # the LSTM's last input value
    np.testing.assert_allclose(naive, np.repeat(last_input[:, None], fs.prep.horizon, axis=1), rtol=1e-5)
    seasonal = StatsBaseline("SeasonalNaive", cfg.baselines).fit(fs).predict(fs, "test")
    origins = fs.starts["test"] + fs.prep.lookback - 1
    expected = np.stack([fs.y[o - 24 + 1 : o - 24 + 1 + fs.prep.horizon] for o in origins])
    np.testing.assert_allclose(seasonal, expected)
