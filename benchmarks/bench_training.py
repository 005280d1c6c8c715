"""Accuracy and speed of the training pipeline on the shipped configs.

For each config: validate -> features -> LSTM -> baselines -> comparison (no MLflow),
timing every stage, then prints one JSON document and a Markdown table for
docs/BENCHMARKS.md. Usage:

    python benchmarks/bench_training.py [--config configs/x.yaml ...] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = [ROOT / "configs" / "synthetic_sine.yaml", ROOT / "configs" / "beijing_pm25.yaml"]


def machine() -> str:
    import os

    import torch

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cpu}, {os.cpu_count()} cores, {gpu}, torch {torch.__version__}"


def bench(config: Path, device: str | None, root: Path) -> dict:
    """Every stage of ``pipeline.stages.STAGES`` but registration, timed one by one."""
    from pipeline.core import artifacts
    from pipeline.core.config import load_config
    from pipeline.stages import STAGES, run_stage

    cfg = load_config(config, {"run.artifact_root": root, "training.device": device, "training.progress": False})
    run = root / cfg.name
    times, results = {}, {}
    for stage in STAGES:
        if stage.name == "register":
            continue
        t = time.perf_counter()
        results[stage.name] = run_stage(stage.name, cfg, run, results)
        times[f"{stage.name}_s"] = time.perf_counter() - t
    compared = results["compare"]
    training_dir = Path(results["train"]["training"])
    metrics = {**artifacts.read_json(artifacts.TRAINING_FACTS.at(training_dir)), **artifacts.read_json(artifacts.EVALUATION_METRICS.at(compared["evaluation"]))}
    history = artifacts.read_json(artifacts.TRAINING_HISTORY.at(training_dir))
    epoch_s = [row["seconds"] for member in history for row in member]
    return {
        "config": config.name, "device": metrics["device"], "lstm_rmse": compared["lstm_rmse"],
        "training_rmse": compared["training_rmse"], "baselines": compared["baselines"],
        "best_baseline": compared["best_baseline"], "ratio_to_best_baseline": compared["lstm_rmse"] / compared["best_baseline_rmse"],
        "gate_passed": compared["gate_passed"], "rmse_step_1": metrics["rmse_per_step"][0],
        "epochs_run": metrics["epochs_run"], "best_epochs": metrics["best_epochs"],
        "mean_epoch_s": sum(epoch_s) / len(epoch_s), "samples_per_s": metrics["samples_per_second"],
        "n_train_windows": metrics["n_train_windows"], "n_test_windows": metrics["n_test_windows"],
        **{k: round(v, 2) for k, v in times.items()}, "total_s": round(sum(times.values()), 1),
    }  # fmt: skip


def markdown(rows: list[dict], header: str) -> str:
    lines = [header, "", "| config | device | LSTM RMSE | best baseline (RMSE) | ratio | gate | epochs (best) | s/epoch | samples/s | train s | baselines s | total s |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['config']} | {r['device']} | {r['lstm_rmse']:.4f} | {r['best_baseline']} ({r['baselines'][r['best_baseline']]:.4f}) "
            f"| {r['ratio_to_best_baseline']:.3f} | {'pass' if r['gate_passed'] else 'fail'} | {r['epochs_run']} ({r['best_epochs']}) "
            f"| {r['mean_epoch_s']:.2f} | {r['samples_per_s']:.0f} | {r['train_s']:.0f} | {r['baselines_s']:.0f} | {r['total_s']:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, action="append", help="default: both shipped configs")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [bench(c, args.device, Path(tmp)) for c in (args.config or CONFIGS)]
    print(json.dumps(rows, indent=2))
    print(markdown(rows, f"{date.today().isoformat()} - {machine()}"))


if __name__ == "__main__":
    main()
