"""Quality cost of the training budget (``training.max_steps`` / ``training.max_time``) against an unbounded run.

On a shipped config (default ``configs/beijing_pm25.yaml``) with its history shortened to the
last ``--rows`` rows (default 8,760: one year of hourly data; the full 43,824 rows take minutes
per run on 2 cores), the LSTM is trained (CPU, its config otherwise unchanged) with:

* ``unbounded``: ``max_steps`` and ``max_time`` off (what every run did before the budget);
* ``default``: the default budget (:data:`pipeline.core.config.DEFAULT_MAX_TIME`, no step limit);
* ``steps_50`` / ``steps_25``: ``max_steps`` at 50% / 25% of the unbounded run's steps (deterministic);
* ``time_50``: ``max_time`` at 50% of the unbounded run's training seconds (wall clock: varies with load).

Each run: test RMSE over every test window (original units, ``features.horizon`` steps ahead),
its ratio to the unbounded run and to Naive on the same windows, steps, epochs, best epoch,
stop reason and seconds. Prints one JSON document (also written to ``--out``) and a Markdown
table for docs/BENCHMARKS.md. Usage:

    python benchmarks/bench_budget.py [--config configs/x.yaml] [--rows 8760] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _features(config: Path, rows: int):
    """``(cfg, FeatureSet)`` of the config's data, its last ``rows`` rows only (0: all)."""
    from pipeline.core.config import load_config
    from pipeline.data.io import read_raw
    from pipeline.data.validation import validate_frame
    from pipeline.features.windowing import build_features

    cfg = load_config(config, {"training.device": "cpu", "training.progress": False})
    raw = read_raw(cfg.data)
    raw = raw.tail(rows).reset_index(drop=True) if rows else raw
    return cfg, build_features(validate_frame(raw, cfg).frame, cfg)


def _run(cfg, fs, name: str, work: Path, **training) -> dict:
    """Train with ``training`` replacing the config's keys; test RMSE in original units."""
    from pipeline.core.config import TrainingConfig
    from pipeline.models.lstm import LSTMForecaster

    tc = TrainingConfig.model_validate({**cfg.training.model_dump(), **training})
    run_cfg = cfg.model_copy(update={"training": tc})
    t0 = time.perf_counter()
    lstm = LSTMForecaster(run_cfg, work / name, device="cpu").fit(fs)
    wall = time.perf_counter() - t0
    truth, pred = fs.targets("test"), lstm.predict(fs, "test")
    ok = np.isfinite(truth)
    r = lstm.results_[0]
    return {
        "run": name, "max_steps": tc.max_steps, "max_time_s": tc.max_time.total_seconds() if tc.max_time else None,
        "rmse": float(np.sqrt(np.mean((pred[ok] - truth[ok]) ** 2))), "stop_reason": r.stop_reason, "steps": r.steps,
        "epochs": len(r.history), "best_epoch": r.best_epoch, "best_val_loss": r.best_val_loss,
        "train_s": round(r.seconds, 1), "wall_s": round(wall, 1),
    }  # fmt: skip


def _naive_rmse(fs) -> float:
    """Naive (last observed value, every step) on the same test windows."""
    truth = fs.targets("test")
    last = fs.y[fs.starts["test"] + fs.prep.lookback - 1].astype(np.float64)[:, None]
    ok = np.isfinite(truth) & np.isfinite(last)
    return float(np.sqrt(np.mean((np.broadcast_to(last, truth.shape)[ok] - truth[ok]) ** 2)))


def bench(config: Path, rows: int) -> dict:
    from pipeline.core.config import DEFAULT_MAX_TIME

    cfg, fs = _features(config, rows)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        base = _run(cfg, fs, "unbounded", work, max_steps=None, max_time=None)
        runs = [base, _run(cfg, fs, "default", work, max_steps=None, max_time=DEFAULT_MAX_TIME)]
        for share in (50, 25):
            runs.append(_run(cfg, fs, f"steps_{share}", work, max_steps=max(1, base["steps"] * share // 100), max_time=None))
        runs.append(_run(cfg, fs, "time_50", work, max_steps=None, max_time=timedelta(seconds=max(base["train_s"] * 0.5, 0.1))))
    naive = _naive_rmse(fs)
    for r in runs:
        r["ratio_to_unbounded"], r["ratio_to_naive"] = r["rmse"] / base["rmse"], r["rmse"] / naive
    return {
        "config": str(config.relative_to(ROOT) if config.is_relative_to(ROOT) else config), "rows": rows or "all",
        "n_train_windows": int(len(fs.starts["train"])), "n_test_windows": int(len(fs.starts["test"])),
        "naive_rmse": naive, "default_max_time_s": DEFAULT_MAX_TIME.total_seconds(), "runs": runs,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }  # fmt: skip


def markdown(result: dict) -> str:
    lines = ["| run | max_steps | max_time s | stop reason | steps | epochs (best) | train s | test RMSE | / unbounded | / Naive |",
             "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in result["runs"]:
        lines.append(
            f"| {r['run']} | {r['max_steps'] or '-'} | {r['max_time_s'] if r['max_time_s'] is not None else '-'} | {r['stop_reason']} "
            f"| {r['steps']} | {r['epochs']} ({r['best_epoch']}) | {r['train_s']:.0f} | {r['rmse']:.2f} | {r['ratio_to_unbounded']:.3f} | {r['ratio_to_naive']:.3f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "beijing_pm25.yaml")
    parser.add_argument("--rows", type=int, default=8760, help="the last this many rows of the data (0: all)")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    result = bench(args.config.resolve(), args.rows)
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)
    print(markdown(result))


if __name__ == "__main__":
    main()
