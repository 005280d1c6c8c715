import numpy as np
import pandas as pd
import pytest

from pipeline.core.errors import DataQualityError, GateFailedError
from pipeline.evaluation.comparison import comparison_gate, comparison_table, forecast_metrics


def test_metrics_on_known_values():
    y = np.array([[1.0, 2.0], [3.0, 4.0]])
    p = np.array([[2.0, 2.0], [3.0, 6.0]])
    m = forecast_metrics(y, p, scale=0.5)
    assert m["rmse"] == pytest.approx(np.sqrt((1 + 0 + 0 + 4) / 4))
    assert m["mae"] == pytest.approx(0.75) and m["mase"] == pytest.approx(1.5)
    assert m["rmse_per_step"] == pytest.approx([np.sqrt(0.5), np.sqrt(2.0)])
    with pytest.raises(ValueError, match="shape"):
        forecast_metrics(y, p[:, :1], 1.0)


def test_mase_scales_each_window_by_its_own_series():
    """Hyndman & Koehler's MASE: series A (scale 1, MAE 5) and B (scale 1000, MAE 500) average 2.75; a pooled scale
    (505 / 1001 = 0.50) would hide A's errors behind B's size."""
    y = np.zeros((2, 1))
    p = np.array([[5.0], [500.0]])
    assert forecast_metrics(y, p, scale=np.array([1.0, 1000.0]))["mase"] == pytest.approx(2.75)
    assert np.isnan(forecast_metrics(y, p, scale=np.array([1.0, np.nan]))["mase"])


def test_gate_lower_rmse_is_better_with_required_margin():
    ok = comparison_gate(0.90, {"Naive": 1.2, "AutoETS": 1.0}, 0.05)
    assert ok.passed and ok.best_baseline == "AutoETS" and ok.threshold_rmse == pytest.approx(0.95)
    assert ok.relative_improvement == pytest.approx(0.10)
    edge = comparison_gate(0.95, {"AutoETS": 1.0}, 0.05)
    assert edge.passed
    bad = comparison_gate(0.97, {"AutoETS": 1.0}, 0.05)
    assert not bad.passed and "fails" in bad.reasons[0] and "AutoETS" in bad.reasons[0]
    worse = comparison_gate(1.5, {"AutoETS": 1.0}, 0.0)
    assert not worse.passed
    partial = comparison_gate(1.0, {"AutoARIMA": float("nan"), "Naive": 2.0}, 0.05)
    assert partial.passed and partial.best_baseline == "Naive"
    assert "AutoARIMA RMSE nan: not compared (its test forecasts were not all finite)" in partial.reasons  # never silently dropped


def test_gate_raises_only_when_asked():
    bad = comparison_gate(2.0, {"Naive": 1.0}, 0.05)
    with pytest.raises(GateFailedError, match="Naive"):
        bad.raise_if_failed()
    assert comparison_gate(float("nan"), {"Naive": 1.0}, 0.05).passed is False
    assert comparison_gate(1.0, {}, 0.05).passed is False


def test_comparison_table_sorted_by_rmse():
    metrics = {"LSTM": {"rmse": 1.0, "mae": 0.5, "mase": 0.8}, "Naive": {"rmse": 0.7, "mae": 0.4, "mase": 0.6}}
    table = comparison_table(metrics, {"Naive": {"fit_seconds": 0.1, "predict_seconds": 0.2}})
    assert table["model"].tolist() == ["Naive", "LSTM"]
    assert list(table.columns) == ["model", "rmse", "mae", "mase", "fit_seconds", "predict_seconds"]


def test_origin_stride_defaults_to_at_most_max_origins_and_one_keeps_all():
    from pipeline.core.config import EvaluationConfig
    from pipeline.evaluation.origins import index_step, select_origins

    hourly = pd.date_range("2024-01-01 03:00", periods=10_001, freq="h").to_numpy()
    index, step = select_origins(hourly, EvaluationConfig(max_origins=3000), "h")
    assert step == 4 and len(index) <= 3000 and index[0] == 0 and np.all(np.diff(index) == 4) and index_step(index) == 4
    index, step = select_origins(hourly, EvaluationConfig(origin_step=1), "h")
    assert step == 1 and len(index) == 10_001
    assert select_origins(hourly[:50], EvaluationConfig(), "h")[1] == 1
    monthly = pd.date_range("2000-01-31", periods=40, freq="ME").to_numpy()  # steps of unequal length: every 3rd window
    assert select_origins(monthly, EvaluationConfig(origin_step=3), "ME")[0].tolist() == list(range(0, 40, 3))


def test_scored_origins_lie_on_one_time_grid_across_series_and_gaps():
    """Every series is scored at the same times (the grid the live CUSUM reads), whatever its length or gaps;
    before, every step-th window of the stacked list put each series on its own phase."""
    from pipeline.core.config import EvaluationConfig
    from pipeline.evaluation.origins import index_step, on_grid, select_origins

    a = pd.date_range("2024-01-01 00:00", periods=101, freq="h")  # 101 windows: b would start 101 % 4 = 1 off the grid
    b = pd.date_range("2024-01-01 00:00", periods=60, freq="h").delete(range(20, 23))  # a 3-hour gap inside
    origins = np.concatenate([a.to_numpy(), b.to_numpy()])
    index, step = select_origins(origins, EvaluationConfig(origin_step=4), "h")
    picked = pd.DatetimeIndex(origins[index])
    assert step == 4 and on_grid(picked, pd.Timedelta("1h"), 4, phase=0).all()
    assert set(picked[index >= len(a)]) == {t for t in b if t.hour % 4 == 0}  # b: on a's times, after its gap too
    assert index_step(index) == 4
    daily = np.concatenate([pd.date_range("2024-01-01", periods=10, freq="D").to_numpy(), pd.date_range("2024-01-02", periods=9, freq="D").to_numpy()])
    index, _ = select_origins(daily, EvaluationConfig(origin_step=4), "D")  # pandas 3: a Day is not a Tick, still one grid
    assert set(pd.DatetimeIndex(daily[index]).day) == {1, 5, 9}


def test_the_recent_training_windows_come_from_every_series():
    """The CUSUM top-up's recent windows are taken by time: the stacked list's tail would be the last series alone."""
    from pipeline.evaluation.origins import recent_windows

    a = pd.date_range("2024-01-01", periods=100, freq="h")
    b = pd.date_range("2024-01-02", periods=76, freq="h")  # ends with a
    origins = np.concatenate([a.to_numpy(), b.to_numpy()])
    index = recent_windows(origins, 10, "h")
    assert index.tolist() == [*range(90, 100), *range(166, 176)]
    assert len(recent_windows(origins, 0, "h")) == 0 and len(recent_windows(origins[:0], 10, "h")) == 0
    assert recent_windows(origins, 10, "h", limit=6).tolist() == [97, 98, 99, 173, 174, 175]  # the latest of both
def test_fit_spread_reports_each_fit_relative_to_naive():
    from pipeline.evaluation.comparison import fit_spread

    truth = np.zeros((4, 1))
    forecasts = {"Naive": np.array([[1.0], [1.0], [2.0], [2.0]]), "AutoETS": np.array([[0.5], [0.5], [3.0], [3.0]])}
    spread = fit_spread(truth, forecasts, {"AutoETS": np.array([0, 0, 1, 1])})
    assert spread["AutoETS"]["n_fits"] == 2
    assert spread["AutoETS"]["relative_to_naive_by_fit"] == pytest.approx([0.5, 1.5])
    assert spread["AutoETS"]["relative_min"] == pytest.approx(0.5) and spread["AutoETS"]["relative_max"] == pytest.approx(1.5)


def test_comparison_refuses_forecasts_of_different_windows(tmp_path):
    from pipeline.evaluation.comparison import _load_forecasts

    (tmp_path / "t").mkdir()
    (tmp_path / "b").mkdir()
    np.savez(tmp_path / "t" / "forecasts.npz", test=np.zeros((3, 2)), test_index=np.array([0, 2, 4]), train=np.zeros((1, 2)), train_index=np.array([0]))
    np.savez(tmp_path / "b" / "forecasts.npz", index=np.array([0, 1, 2]), Naive=np.zeros((3, 2)))
    with pytest.raises(DataQualityError, match="different"):
        _load_forecasts(tmp_path / "t", tmp_path / "b")
    np.savez(tmp_path / "b" / "forecasts.npz", index=np.array([0, 2, 4]), Naive=np.ones((3, 2)), Naive_fit=np.zeros(3))
    forecasts, fits, index, _ = _load_forecasts(tmp_path / "t", tmp_path / "b")
    assert set(forecasts) == {"LSTM", "Naive"} and set(fits) == {"Naive"} and index.tolist() == [0, 2, 4]


def test_the_calibration_reads_the_recorded_step_not_the_index():
    """Hourly windows with 03:00 missing every day, scored every 24 h from 03:00's neighbour: positions are 23 apart,
    the step is 24. A run that recorded its step (``test_step``) is read by it; an older one falls back to the index."""
    from pipeline.core.config import EvaluationConfig
    from pipeline.evaluation.cusum import _recorded_step
    from pipeline.evaluation.origins import index_step, select_origins

    hours = pd.date_range("2024-01-01 00:00", periods=24 * 20, freq="h")
    origins = hours[hours.hour != 3].to_numpy()
    index, step = select_origins(origins, EvaluationConfig(origin_step=24), "h")
    assert step == 24 and index_step(index) == 23  # what an index alone says
    assert _recorded_step({"test_index": index, "test_step": np.int64(step)}, "test") == 24
    assert _recorded_step({"test_index": index}, "test") == 23  # a run from before the steps were recorded
