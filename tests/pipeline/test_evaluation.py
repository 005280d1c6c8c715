import numpy as np
import pytest

from pipeline.errors import GateFailedError
from pipeline.evaluation import comparison_gate, comparison_table, forecast_metrics


def test_metrics_on_known_values():
    y = np.array([[1.0, 2.0], [3.0, 4.0]])
    p = np.array([[2.0, 2.0], [3.0, 6.0]])
    m = forecast_metrics(y, p, scale=0.5)
    assert m["rmse"] == pytest.approx(np.sqrt((1 + 0 + 0 + 4) / 4))
    assert m["mae"] == pytest.approx(0.75) and m["mase"] == pytest.approx(1.5)
    assert m["rmse_per_step"] == pytest.approx([np.sqrt(0.5), np.sqrt(2.0)])
    with pytest.raises(ValueError, match="shape"):
        forecast_metrics(y, p[:, :1], 1.0)


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
