"""Test-part coverage of the LSTM's split-conformal prediction intervals on shipped configs.

For each config (default ``configs/synthetic_sine.yaml`` and ``configs/beijing_pm25.yaml``) the
LSTM is trained on CPU exactly as ``train`` does (its config unchanged: the default training
budget included), calibrated on every validation window
(:func:`pipeline.training.lstm.calibrate_intervals`, levels ``evaluation.interval_levels``), and
its bands are scored on **every** test window (not only the scored origins of the comparison):
per level the empirical coverage (share of test values inside ``[lo, hi]``), its smallest and
largest value over the horizon steps, and the mean width (target units). The goal of issue 24
is coverage within 3 points of nominal. Also recorded: the test RMSE, why training stopped,
epochs, wall seconds and the 1-minute load average before and after (the machine is shared).

Prints one JSON document (also written to ``--out``) and a Markdown table for docs/BENCHMARKS.md.
Usage:

    python benchmarks/bench_intervals.py [--config configs/x.yaml ...] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIGS = ("configs/synthetic_sine.yaml", "configs/beijing_pm25.yaml")


def measure(config: Path, work: Path) -> dict:
    """Train, calibrate and score the bands of one config (see the module docstring)."""
    from pipeline.core.config import load_config
    from pipeline.data.io import read_raw
    from pipeline.data.validation import validate_frame
    from pipeline.evaluation.intervals import interval_metrics
    from pipeline.features.windowing import build_features
    from pipeline.models.lstm import LSTMForecaster
    from pipeline.training.lstm import calibrate_intervals

    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    cfg = load_config(config, {"training.device": "cpu", "training.progress": False})
    fs = build_features(validate_frame(read_raw(cfg.data), cfg).frame, cfg)
    lstm = LSTMForecaster(cfg, work / Path(config).stem, device="cpu").fit(fs)
    calibration = calibrate_intervals(lstm, fs, cfg)
    truth, pred = fs.targets("test"), lstm.predict(fs, "test")
    report = interval_metrics(calibration, truth, pred, fs.lookback_targets(fs.starts["test"]))
    levels = {
        label: {"nominal": m["level"] / 100, "coverage": m["coverage"], "miss_points": 100 * (m["coverage"] - m["level"] / 100),
                "coverage_step_min": min(m["coverage_per_step"]), "coverage_step_max": max(m["coverage_per_step"]),
                "mean_width": m["mean_width"], "n": m["n"]}
        for label, m in report.items()
    }  # fmt: skip
    r = lstm.results_[0]
    return {
        "config": str(config), "horizon": fs.prep.horizon, "n_val_windows": int(len(fs.starts["val"])),
        "n_test_windows": int(len(fs.starts["test"])), "test_rmse": float(np.sqrt(np.mean((pred - truth) ** 2))),
        "stop_reason": r.stop_reason, "epochs": len(r.history), "best_epoch": r.best_epoch, "train_seconds": r.seconds,
        "wall_seconds": time.perf_counter() - t0, "load_1min_before": load_before, "load_1min_after": os.getloadavg()[0],
        "levels": levels,
    }  # fmt: skip


def markdown(results: list[dict]) -> str:
    rows = ["| config | level | test coverage | miss (points) | per-step range | mean width | test windows x h | val windows | LSTM RMSE | stopped by (epochs) | wall s | load 1 min before/after |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in results:
        for label, m in r["levels"].items():
            rows.append(
                f"| {Path(r['config']).name} | {label}% | {100 * m['coverage']:.1f}% | {m['miss_points']:+.1f} | "
                f"{100 * m['coverage_step_min']:.1f}-{100 * m['coverage_step_max']:.1f}% | {m['mean_width']:.4g} | "
                f"{r['n_test_windows']} x {r['horizon']} | {r['n_val_windows']} | {r['test_rmse']:.4g} | {r['stop_reason']} ({r['epochs']}) | "
                f"{r['wall_seconds']:.0f} | {r['load_1min_before']:.1f}/{r['load_1min_after']:.1f} |"
            )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", action="append", type=Path, help="config(s) to measure (default: synthetic_sine and beijing_pm25)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "bench_intervals.json")
    args = parser.parse_args()
    configs = args.config or [ROOT / c for c in DEFAULT_CONFIGS]
    with tempfile.TemporaryDirectory() as tmp:
        results = [measure(c, Path(tmp)) for c in configs]
    doc = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
           "results": results}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2))
    print(json.dumps(doc, indent=2))
    print(markdown(results))


if __name__ == "__main__":
    main()
