"""Two series (``series_id_column``) of different lengths, start dates and gaps, through every stage.

validation -> features -> LSTM -> baselines -> comparison gate -> the served pyfunc, which must
reproduce the saved test forecasts of *both* series at their own origins.
"""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from tests.conftest import FAST_MODEL, sine_frame, tiny_config_dict


def _two_series() -> pd.DataFrame:
    a = sine_frame(n=320, seed=1)
    a.loc[100:101, "load"] = np.nan  # a 2-step gap (<= max_gap): interpolated for inputs, never a target
    b = sine_frame(n=240, seed=2).assign(load=lambda f: f["load"] * 2 + 5)  # other level and scale
    b["time"] = pd.date_range("2024-01-05 00:00:00", periods=len(b), freq="h").strftime("%Y-%m-%d %H:%M:%S")
    b = b.drop(index=range(60, 64))  # 4 missing timestamps (> max_gap): the series is split there
    return pd.concat([a.assign(site="north"), b.assign(site="south")], ignore_index=True)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from pipeline.core.config import load_config
    from pipeline.runner import run_training_pipeline

    root = tmp_path_factory.mktemp("multi")
    csv = root / "input.csv"
    _two_series().sort_values("time", kind="stable").to_csv(csv, index=False)  # the two series interleaved in the file
    raw = tiny_config_dict(
        csv, root / "artifacts", features={"lookback": 24, "horizon": 4},
        training={"max_epochs": 6, "min_epochs": 2, "patience": 3, "batch_size": 32, "learning_rate": 0.01, "progress": False},
        model=FAST_MODEL, baselines={"models": ["Naive", "SeasonalNaive", "AutoETS"], "season_length": 24},
    )  # fmt: skip
    raw["data"]["series_id_column"] = "site"
    (root / "config.yaml").write_text(yaml.safe_dump(raw))
    cfg = load_config(root / "config.yaml")
    return cfg, csv, run_training_pipeline(cfg, root / "artifacts" / "multi", register=False)


def test_both_series_are_validated_windowed_and_scored(run):
    _, _, result = run
    run_dir = Path(result["run_dir"])
    with np.load(run_dir / "features" / "arrays.npz") as z:
        ids, series, test_starts = z["series_ids"].tolist(), z["series"], z["starts_test"]
    assert ids == ["north", "south"]
    assert set(series[test_starts + 23].tolist()) == {0, 1}  # test windows of both series
    assert result["gate_passed"] in (True, False) and set(result["baselines"]) == {"Naive", "SeasonalNaive", "AutoETS"}
    assert all(np.isfinite(v) for v in result["baselines"].values()) and np.isfinite(result["lstm_rmse"])


def test_pyfunc_reproduces_the_saved_test_forecasts_of_each_series(run):
    from pipeline.features.windowing import load_preprocessor
    from pipeline.models.lstm import LSTMForecaster
    from pipeline.serving.pyfunc import ForecastModel

    _, csv, result = run
    run_dir = Path(result["run_dir"])
    model = ForecastModel().use(LSTMForecaster.load(run_dir / "training", load_preprocessor(run_dir / "features")))
    with np.load(run_dir / "training" / "forecasts.npz") as z:
        index, expected = z["test_index"], z["test"]
    with np.load(run_dir / "features" / "arrays.npz") as z:
        origin_rows = z["starts_test"][index] + 23
        ids = z["series_ids"][z["series"][origin_rows]]
        origins = z["ds"][origin_rows].astype("datetime64[ns]")
    served = model.predict(None, pd.read_csv(csv), params={"origins": "all"}).set_index(["unique_id", "origin", "step"])["yhat"]
    got = np.array([[served[(uid, pd.Timestamp(o), step)] for step in range(1, 5)] for uid, o in zip(ids, origins, strict=True)])
    assert set(ids) == {"north", "south"}
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_pyfunc_last_origin_forecast_per_series(run):
    from pipeline.features.windowing import load_preprocessor
    from pipeline.models.lstm import LSTMForecaster
    from pipeline.serving.pyfunc import ForecastModel

    _, csv, result = run
    run_dir = Path(result["run_dir"])
    model = ForecastModel().use(LSTMForecaster.load(run_dir / "training", load_preprocessor(run_dir / "features")))
    out = model.predict(None, pd.read_csv(csv))
    assert sorted(out["unique_id"].unique()) == ["north", "south"]
    assert out.groupby("unique_id").size().tolist() == [4, 4]
    last = pd.read_csv(csv).assign(time=lambda f: pd.to_datetime(f["time"])).groupby("site")["time"].max()
    for uid, part in out.groupby("unique_id"):
        assert part["ds"].min() == last[uid] + pd.Timedelta(hours=1)
