"""Metrics on the original scale, the comparison table, and the comparison gate.

* RMSE and MAE over every (window, step) pair; RMSE per horizon step.
* MASE (Hyndman & Koehler, 2006, "Another look at measures of forecast accuracy"):
  MAE divided by the in-sample MAE of the seasonal-naive forecast on the training
  part (season ``baselines.season_length``; 1 gives the naive forecast).
* The gate: lower RMSE is better. The LSTM passes when
  ``lstm_rmse <= (1 - gate.min_relative_improvement) * best_baseline_rmse``.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline import artifacts, schema
from pipeline.config import PipelineConfig
from pipeline.errors import GateFailedError
from pipeline.features import FeatureSet

log = logging.getLogger(__name__)


def mase_scale(fs: FeatureSet, season_length: int) -> float:
    """In-sample seasonal-naive MAE on the training rows (original units, NaNs skipped)."""
    diffs = []
    for k in range(len(fs.series_ids)):
        rows = np.flatnonzero(fs.series == k)
        val_start = pd.Timestamp(fs.prep.split_boundaries[fs.series_ids[k]]["val_start"])
        y = fs.y[rows][fs.ds[rows] < np.datetime64(val_start)]
        diffs.append(np.abs(y[season_length:] - y[:-season_length]))
    d = np.concatenate(diffs)
    scale = float(np.nanmean(d)) if np.isfinite(d).any() else float("nan")
    return scale if scale > 0 else float("nan")


def forecast_metrics(y_true: np.ndarray, y_pred: np.ndarray, scale: float) -> dict[str, Any]:
    """``y_true, y_pred: (n_windows, horizon)`` in original units -> rmse, mae, mase, rmse_per_step.

    Raises:
        ValueError: shapes differ.
    """
    if y_true.shape != y_pred.shape:
        raise ValueError(f"expected forecasts of shape {y_true.shape}, got {y_pred.shape}")
    err = y_pred - y_true
    mae = float(np.mean(np.abs(err)))
    return {
        "rmse": float(np.sqrt(np.mean(err**2))),
        "mae": mae,
        "mase": mae / scale if scale and np.isfinite(scale) else float("nan"),
        "rmse_per_step": np.sqrt(np.mean(err**2, axis=0)).tolist(),
    }


@dataclass
class GateDecision:
    """Outcome of the comparison gate, with every reason (lower RMSE is better)."""

    passed: bool
    lstm_rmse: float
    best_baseline: str | None
    best_baseline_rmse: float | None
    threshold_rmse: float | None
    min_relative_improvement: float
    relative_improvement: float | None
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def raise_if_failed(self) -> "GateDecision":
        if not self.passed:
            raise GateFailedError("; ".join(self.reasons))
        return self


def comparison_gate(lstm_rmse: float, baseline_rmse: dict[str, float], min_relative_improvement: float) -> GateDecision:
    """Pass when ``lstm_rmse <= (1 - m) * min(baseline_rmse)``. Never raises (see ``raise_if_failed``)."""
    m = min_relative_improvement
    finite = {k: v for k, v in baseline_rmse.items() if np.isfinite(v)}
    if not np.isfinite(lstm_rmse):
        return GateDecision(False, lstm_rmse, None, None, None, m, None, [f"LSTM RMSE is {lstm_rmse}: not a usable model"])
    if not finite:
        reason = "no baseline produced a finite RMSE, so the LSTM cannot be shown to beat one"
        return GateDecision(False, lstm_rmse, None, None, None, m, None, [reason])
    best = min(finite, key=finite.get)
    best_rmse, threshold = finite[best], (1 - m) * finite[best]
    rel = 1 - lstm_rmse / best_rmse if best_rmse > 0 else float("-inf")
    passed = lstm_rmse <= threshold
    verdict = "passes" if passed else "fails"
    reasons = [
        f"LSTM RMSE {lstm_rmse:.4f} vs best baseline {best} {best_rmse:.4f}: {rel:+.1%} improvement "
        f"(required >= {m:.1%}, i.e. RMSE <= {threshold:.4f}); the gate {verdict}"
    ]
    reasons += [f"{name} RMSE {v:.4f}" for name, v in sorted(finite.items(), key=lambda kv: kv[1])]
    return GateDecision(passed, lstm_rmse, best, best_rmse, threshold, m, rel, reasons)


def comparison_table(metrics: dict[str, dict[str, Any]], timings: dict[str, dict[str, float]]) -> pd.DataFrame:
    """One row per model: model, rmse, mae, mase, fit_seconds, predict_seconds (sorted by rmse)."""
    rows = [
        {"model": name, "rmse": m["rmse"], "mae": m["mae"], "mase": m["mase"], **timings.get(name, {})}
        for name, m in metrics.items()
    ]
    table = pd.DataFrame(rows, columns=["model", "rmse", "mae", "mase", "fit_seconds", "predict_seconds"])
    return table.sort_values("rmse", kind="stable").reset_index(drop=True)


def plot_forecasts(fs: FeatureSet, forecasts: dict[str, np.ndarray], path: Path, n_points: int = 500) -> Path:
    """Step-1 forecasts vs actuals over the first ``n_points`` test windows, and the full
    ``h``-step forecast of the last test window, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    starts = fs.starts["test"][:n_points]
    ds = fs.ds[starts + fs.prep.lookback]
    actual = fs.targets("test")
    fig, axes = plt.subplots(2, 1, figsize=(11, 7))
    axes[0].plot(ds, actual[: len(starts), 0], color="black", lw=1.2, label="actual")
    for name, pred in forecasts.items():
        axes[0].plot(ds, pred[: len(starts), 0], lw=0.9, label=name)
    axes[0].set_title(f"one-step-ahead forecasts, first {len(starts)} test origins")
    last = fs.starts["test"][-1] + fs.prep.lookback
    steps = fs.ds[last : last + fs.prep.horizon]
    axes[1].plot(steps, actual[-1], color="black", marker="o", ms=3, label="actual")
    for name, pred in forecasts.items():
        axes[1].plot(steps, pred[-1], marker=".", label=name)
    axes[1].set_title(f"{fs.prep.horizon}-step forecast from the last test origin")
    for ax in axes:
        ax.set_ylabel(fs.prep.target_column)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def run_comparison(cfg: PipelineConfig, run_path: Path, features_dir: Path, training_dir: Path, baselines_dir: Path) -> dict[str, Any]:
    """Stage entry point: score every model on the same test windows; decide the gate.

    Writes ``<run>/evaluation/{comparison.csv, comparison.json, gate.json, forecast.png}``.
    Returns ``{"gate_passed", "lstm_rmse", "training_rmse", "best_baseline", "best_baseline_rmse",
    "baselines": {name: rmse}, "evaluation": folder}``.
    """
    from pipeline.features import load_features

    fs = load_features(features_dir)
    truth = fs.targets("test")
    scale = mase_scale(fs, cfg.baselines.season_length)
    train_metrics = artifacts.read_json(Path(training_dir) / "metrics.json")
    base_info = artifacts.read_json(Path(baselines_dir) / "timings.json")
    with np.load(Path(training_dir) / "forecasts.npz") as z:
        forecasts = {schema.LSTM: z["test"]}
    with np.load(Path(baselines_dir) / "forecasts.npz") as z:
        forecasts.update({k: z[k] for k in z.files})
    metrics = {name: forecast_metrics(truth, pred, scale) for name, pred in forecasts.items()}
    timings = {schema.LSTM: {"fit_seconds": train_metrics["train_seconds"], "predict_seconds": train_metrics.get("predict_seconds", float("nan"))}}
    timings.update(base_info["timings"])
    table = comparison_table(metrics, timings)
    baseline_rmse = {k: v["rmse"] for k, v in metrics.items() if k != schema.LSTM}
    gate = comparison_gate(metrics[schema.LSTM]["rmse"], baseline_rmse, cfg.gate.min_relative_improvement)
    target = artifacts.step_dir(run_path, artifacts.EVALUATION)
    with artifacts.atomic_dir(target) as tmp:
        table.to_csv(tmp / "comparison.csv", index=False, float_format="%.6g")
        artifacts.write_json(tmp / "comparison.json", {"metrics": metrics, "mase_scale": scale, "n_windows": len(truth), "skipped": base_info["skipped"]})
        artifacts.write_json(tmp / "gate.json", gate.to_dict())
        plot_forecasts(fs, forecasts, tmp / "forecast.png")
    for reason in gate.reasons[:1]:
        (log.info if gate.passed else log.warning)("gate: %s", reason)
    return {
        "gate_passed": gate.passed, "lstm_rmse": gate.lstm_rmse, "training_rmse": train_metrics["training_rmse"],
        "best_baseline": gate.best_baseline, "best_baseline_rmse": gate.best_baseline_rmse,
        "baselines": baseline_rmse, "evaluation": str(target), "gate_reasons": gate.reasons,
    }  # fmt: skip
