"""Cost of the least-squares highway fit (:func:`pipeline.training.lstm.fit_highway`) against data size.

The fit is one pass over the training windows accumulating ``Z^T Z`` (``(L+1)^2``) and one
over the validation windows per ridge penalty, so it should grow linearly in windows and with
the square of the lookback. Windows come from a random walk held in a
:class:`pipeline.models.lstm.WindowTensors`-like gatherer (one feature, the target), on CPU with
one torch thread, the model the default 2x64 LSTM with the highway. Results:
``benchmarks/results/bench_highway_fit.json`` and ``docs/BENCHMARKS.md``. Usage::

    python benchmarks/bench_highway_fit.py [--windows 10000 100000 1000000] [--lookback 48 168]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "bench_highway_fit.json"


class RandomWalkWindows:
    """``gather(starts) -> x (b, L, 1), y (b, H)`` from one random walk, as ``WindowTensors`` does."""

    def __init__(self, n_rows: int, lookback: int, horizon: int, seed: int = 0):
        rng = np.random.default_rng(seed)
        series = np.cumsum(rng.normal(size=n_rows)).astype(np.float32)
        self.values = torch.from_numpy((series - series.mean()) / series.std())
        self.L, self.H, self.device = lookback, horizon, torch.device("cpu")
        self.in_offsets, self.out_offsets = torch.arange(lookback), torch.arange(lookback, lookback + horizon)

    def gather(self, starts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.values[starts[:, None] + self.in_offsets][:, :, None], self.values[starts[:, None] + self.out_offsets]


def measure(n_windows: int, lookback: int, horizon: int = 24) -> dict:
    from pipeline.core.config import ModelConfig
    from pipeline.models.lstm import build_model
    from pipeline.training.lstm import fit_highway

    n_val = max(n_windows // 9, 1)  # validation_fraction 0.1 of the windows
    tensors = RandomWalkWindows(n_windows + n_val + lookback + horizon, lookback, horizon)
    model = build_model(1, horizon, ModelConfig(), lookback)
    train, val = torch.arange(n_windows), torch.arange(n_windows, n_windows + n_val)
    t0, c0 = time.perf_counter(), time.process_time()
    fitted = fit_highway(model, tensors, train, val)
    return {"n_train_windows": n_windows, "n_val_windows": n_val, "lookback": lookback, "horizon": horizon,
            "seconds": round(time.perf_counter() - t0, 3), "cpu_seconds": round(time.process_time() - c0, 3), **fitted}  # fmt: skip


def main() -> None:
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "benchmarks"))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--lookback", type=int, nargs="+", default=[48, 168])
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    from bench_training import machine

    torch.set_num_threads(1)
    rows = [measure(n, lb) for lb in args.lookback for n in args.windows]
    for lb in args.lookback:
        pts = [(r["n_train_windows"], r["seconds"]) for r in rows if r["lookback"] == lb]
        if len(pts) > 1:
            slope = np.polyfit(np.log([p[0] for p in pts]), np.log([p[1] for p in pts]), 1)[0]
            print(f"lookback {lb}: seconds ~ windows^{slope:.2f}")
    out = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine(), "torch_threads": 1, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2))
    for r in rows:
        print(json.dumps(r))


if __name__ == "__main__":
    main()
