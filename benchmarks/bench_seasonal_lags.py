"""The linear part alone, with and without seasonal lags: a deterministic, load-independent A/B.

For each data set (configs in ``benchmarks/configs/``) and each ``features.seasonal_lags`` setting,
builds the features as the pipeline does (validation, :func:`pipeline.features.windowing.build_features`),
solves the least-squares highway (:func:`pipeline.training.lstm.fit_highway`: ridge, penalty chosen on
the validation windows) and scores that linear forecaster, the network silent (the model training
starts from: epoch 0), on the test origins the compare stage scores (:func:`pipeline.evaluation.origins.select_origins`).
No gradient step, so the figure does not depend on the machine's load or the training budget; what the
network adds on top is measured by ``benchmarks/bench_public.py``.

Usage::

    python benchmarks/bench_seasonal_lags.py [NAME ...] [--lags "[]" null "[336]"] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = ROOT / "benchmarks" / "configs"
RESULTS = ROOT / "benchmarks" / "results" / "bench_seasonal_lags.json"


def linear_rmse(config: Path, lags, extra: dict) -> dict:
    """Test RMSE of the least-squares highway alone for ``features.seasonal_lags = lags`` (``None``: derived)."""
    import torch

    from pipeline.core.config import NULL, load_config
    from pipeline.data.io import read_raw
    from pipeline.data.validation import validate_frame
    from pipeline.evaluation.origins import select_origins
    from pipeline.features.windowing import build_features
    from pipeline.models.lstm import LSTMForecaster, WindowTensors, build_model
    from pipeline.training.lstm import fit_highway

    torch.manual_seed(42)
    overrides = {"features.seasonal_lags": NULL if lags is None else lags, "training.progress": False, **extra}
    cfg = load_config(config, overrides)
    t0 = time.perf_counter()
    fs = build_features(validate_frame(read_raw(cfg.data), cfg).frame, cfg)
    model = build_model(fs.prep.n_features, fs.prep.horizon, cfg.model, fs.prep.lookback, len(fs.prep.lag_steps))
    tensors = WindowTensors(fs, torch.device("cpu"))
    fitted = fit_highway(model, tensors, tensors.starts(fs, "train"), tensors.starts(fs, "val"))
    index, step = select_origins(fs.origin_times("test"), cfg.evaluation, fs.prep.freq)
    pred = LSTMForecaster.from_members([model], fs.prep).predict(fs, "test", index)
    truth = fs.targets("test")[index]
    return {
        "config": config.name, "seasonal_lags_setting": lags, "overrides": extra, "seasonal_lags": fs.prep.seasonal_lags,
        "seasonal_lag_window": fs.prep.seasonal_lag_window, "highway_inputs": model.highway.in_features,
        "windows": fs.report["windows"], "n_origins": len(index), "origin_step": step,
        "linear_rmse": float(np.sqrt(np.nanmean((pred - truth) ** 2))), "ridge_lambda": fitted["ridge_lambda"],
        "val_mse_scaled": fitted["val_loss"], "seconds": round(time.perf_counter() - t0, 1),
    }  # fmt: skip


def main() -> None:
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "benchmarks"))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", default=["taylor_30min", "temps_hourly", "beijing_pm25_defaults"])
    parser.add_argument("--lags", nargs="*", default=["[]", "null"], help="features.seasonal_lags settings (YAML)")
    parser.add_argument("--set", action="append", default=[], help="another override for every run, key=value")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    import torch
    from bench_training import machine

    torch.set_num_threads(1)
    extra = {k: yaml.safe_load(v) for k, _, v in (s.partition("=") for s in args.set)}
    rows = []
    for name in args.names:
        config = Path(name) if name.endswith(".yaml") else CONFIG_DIR / f"{name}.yaml"
        for setting in args.lags:
            row = linear_rmse(config, yaml.safe_load(setting), extra)
            row.update(date=datetime.now(UTC).isoformat(timespec="seconds"), machine=machine(), load_avg=[round(v, 2) for v in os.getloadavg()])
            rows.append(row)
            print(json.dumps(row), flush=True)
    existing = json.loads(args.out.read_text()) if args.out.is_file() else {"runs": []}
    existing["runs"].extend(rows)
    args.out.write_text(json.dumps(existing, indent=2))
    print("| data set | seasonal lags | highway inputs | train windows | linear map test RMSE | ridge lambda |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['config'].removesuffix('.yaml')} | {r['seasonal_lags'] or 'none'} | {r['highway_inputs']} | {r['windows']['train']:,} | "
              f"{r['linear_rmse']:.4g} | {r['ridge_lambda']:g} |")


if __name__ == "__main__":
    main()
