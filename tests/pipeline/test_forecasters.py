"""One contract for every forecaster: the LSTM and each statsforecast baseline."""

import numpy as np
import pytest

from pipeline.models.baselines import StatsBaseline, resolve_baselines
from pipeline.models.lstm import LSTMForecaster

MODELS = ["LSTM", "Naive", "SeasonalNaive", "AutoETS", "AutoARIMA", "MSTL"]


def _make(name, cfg, tmp_path):
    if name == "LSTM":
        return LSTMForecaster(cfg, tmp_path / f"lstm-{np.random.randint(1 << 30)}", device="cpu")
    return StatsBaseline(name, resolve_baselines(cfg.model_copy(update={"baselines": cfg.baselines.model_copy(update={"seasons": (12, 24)})})))


@pytest.mark.parametrize("name", MODELS)
def test_forecaster_contract(name, tiny_features, tmp_path):
    cfg, fs = tiny_features
    before = {k: v.copy() for k, v in (("values", fs.values), ("target", fs.target), ("y", fs.y))}
    model = _make(name, cfg, tmp_path)
    assert not [k for k in vars(model) if k.endswith("_")], "__init__ must only store hyper-parameters"
    first = model.fit(fs)
    assert first is model and [k for k in vars(model) if k.endswith("_")], "fit returns self and sets fitted state"
    pred = first.predict(fs, "test")
    assert pred.shape == (len(fs.starts["test"]), fs.prep.horizon) and pred.dtype == np.float64
    assert np.isfinite(pred).all()
    index = np.arange(0, len(fs.starts["test"]), 5)
    np.testing.assert_allclose(first.predict(fs, "test", index), pred[index], rtol=1e-6, err_msg=f"{name}: a subset of origins differs")
    for key, arr in before.items():
        np.testing.assert_array_equal(getattr(fs, key), arr, err_msg=f"{name} modified fs.{key}")
    again = _make(name, cfg, tmp_path).fit(fs).predict(fs, "test")
    np.testing.assert_array_equal(pred, again, err_msg=f"{name} is not deterministic under a seed")


@pytest.mark.parametrize("name", MODELS)
def test_forecaster_forecasts_new_history_without_a_split(name, tiny_features, tmp_path):
    """LSTM: windows of scaled inputs; baselines: raw history (statsforecast's ``forward``)."""
    cfg, fs = tiny_features
    model = _make(name, cfg, tmp_path).fit(fs)
    if name == "LSTM":
        x = fs.windows("test").X[:7]
        out = model.predict_windows(x)
        np.testing.assert_allclose(out, model.predict(fs, "test")[:7], rtol=1e-5)
        with pytest.raises(ValueError, match="shape"):
            model.predict_windows(x[:, 1:])
    else:
        o = int(fs.starts["test"][0] + fs.prep.lookback - 1)
        out = model.forward(fs.y[o - 150 : o + 1], fs.prep.horizon)
        assert out.shape == (fs.prep.horizon,) and np.isfinite(out).all()


def test_baselines_forecast_from_the_lstm_origins(tiny_features):
    cfg, fs = tiny_features
    spec = resolve_baselines(cfg)
    naive = StatsBaseline("Naive", spec).fit(fs).predict(fs, "test")
    last_input = fs.prep.inverse_target(fs.windows("test").X[:, -1, 0])  # the LSTM's last input value
    np.testing.assert_allclose(naive, np.repeat(last_input[:, None], fs.prep.horizon, axis=1), rtol=1e-5)
    seasonal = StatsBaseline("SeasonalNaive", spec).fit(fs).predict(fs, "test")
    origins = fs.starts["test"] + fs.prep.lookback - 1
    expected = np.stack([fs.y[o - 24 + 1 : o - 24 + 1 + fs.prep.horizon] for o in origins])
    np.testing.assert_allclose(seasonal, expected)


def test_saved_lstm_reloads_and_reproduces_its_forecasts(tiny_features, tmp_path):
    cfg, fs = tiny_features
    lstm = _make("LSTM", cfg, tmp_path).fit(fs)
    lstm.save(tmp_path / "model.pt")
    loaded = LSTMForecaster.load(tmp_path, fs.prep)
    np.testing.assert_allclose(loaded.predict_windows(fs.windows("test").X), lstm.predict(fs, "test"), rtol=1e-6)
