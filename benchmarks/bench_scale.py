"""Cost growth of every stage with the data size: seconds and peak memory, and fitted exponents.

Two sweeps on generated hourly data (daily + weekly cycle, noise, one covariate):

* rows: one series of 10k, 100k (and, with ``--rows 1000000``, 1M) steps, every default
  baseline (Naive, SeasonalNaive, AutoETS, AutoARIMA, MSTL);
* series: 1, 100 and 1,000 series of 1,000 steps (``--series``), with Naive, SeasonalNaive and
  AutoETS only (AutoARIMA and MSTL cost a fit per series and refit; see docs/BENCHMARKS.md).

Per stage (validate, features, train one epoch, baselines, compare): wall seconds, the process'
peak RSS after it and, with ``--trace-memory``, the peak of Python/numpy allocations during
the stage (``tracemalloc``; torch's allocator is not included; it slows the stages several-fold). The growth exponent of a stage is the slope of
log(seconds) against log(rows) (``numpy.polyfit``). Registration is not measured here (it
needs an MLflow server and does not depend on the data size beyond the input example).
Usage::

    python benchmarks/bench_scale.py [--rows 10000 100000] [--series 1 100 1000] [--n-jobs 2] [--out results/bench_scale.json]
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
import tracemalloc
from datetime import date
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("validate", "features", "train_1_epoch", "baselines", "compare")


def write_data(path: Path, n_series: int, n_steps: int, seed: int = 0) -> None:
    import pandas as pd

    rng = np.random.default_rng(seed)
    t = np.arange(n_steps)
    frames = []
    for k in range(n_series):
        y = 50 + 10 * np.sin(2 * np.pi * t / 24 + k) + 5 * np.sin(2 * np.pi * t / 168) + rng.normal(0, 2, n_steps)
        frame = pd.DataFrame({"time": pd.date_range("2020-01-01", periods=n_steps, freq="h"), "load": y, "temp": 10 + 5 * np.cos(2 * np.pi * t / 24)})
        if n_series > 1:
            frame["site"] = f"s{k:04d}"
        frames.append(frame)
    pd.concat(frames).to_csv(path, index=False, float_format="%.4f")


def make_config(csv: Path, root: Path, n_series: int, models: list[str] | None, n_jobs: int):
    from pipeline.config import PipelineConfig

    return PipelineConfig.model_validate({
        "name": "scale", "data": {"path": str(csv), "timestamp_column": "time", "target_column": "load", "covariates": ["temp"],
                                  "freq": "h", "series_id_column": "site" if n_series > 1 else None},
        "features": {"lookback": 48, "horizon": 24},
        "model": {"hidden_size": 32, "num_layers": 1, "dropout": 0.0},
        "training": {"max_epochs": 1, "min_epochs": 1, "batch_size": 512, "progress": False, "device": "cpu", "num_threads": 1},
        "baselines": {"models": models, "n_jobs": n_jobs, "progress": False},
        "run": {"artifact_root": str(root)},
    })  # fmt: skip


TRACE_MEMORY = False  # tracemalloc slows Python-heavy stages several-fold: off unless --trace-memory


def _measure(fn):
    if TRACE_MEMORY:
        tracemalloc.start()
    t0 = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1] if TRACE_MEMORY else float("nan")
    if TRACE_MEMORY:
        tracemalloc.stop()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB (Linux)
    return out, {"seconds": seconds, "peak_alloc_mib": peak / 2**20, "max_rss_mib": rss}


def run_case(n_series: int, n_steps: int, models: list[str] | None, n_jobs: int, root: Path) -> dict:
    from pipeline.baselines import run_baselines
    from pipeline.evaluation import run_comparison
    from pipeline.features import run_features
    from pipeline.training import run_training
    from pipeline.validation import run_validation

    csv = root / f"data_{n_series}x{n_steps}.csv"
    write_data(csv, n_series, n_steps)
    cfg = make_config(csv, root, n_series, models, n_jobs)
    run = root / f"run_{n_series}x{n_steps}"
    stats = {}
    validated, stats["validate"] = _measure(lambda: run_validation(cfg, run))
    feats, stats["features"] = _measure(lambda: run_features(cfg, run, Path(validated["data"])))
    trained, stats["train_1_epoch"] = _measure(lambda: run_training(cfg, run, Path(feats["features"])))
    base, stats["baselines"] = _measure(lambda: run_baselines(cfg, run, Path(feats["features"])))
    compared, stats["compare"] = _measure(lambda: run_comparison(cfg, run, Path(feats["features"]), Path(trained["training"]), Path(base["baselines"])))
    csv.unlink()
    return {"series": n_series, "steps": n_steps, "rows": n_series * n_steps, "models": base["models"], "origins": compared["n_origins"], "stages": stats}


def exponents(cases: list[dict]) -> dict[str, float]:
    """Slope of log(seconds) on log(rows) per stage (needs two sizes or more)."""
    rows = np.log([c["rows"] for c in cases])
    if len(cases) < 2:
        return {}
    return {s: float(np.polyfit(rows, np.log([max(c["stages"][s]["seconds"], 1e-3) for c in cases]), 1)[0]) for s in STAGES}


def markdown(title: str, cases: list[dict], slopes: dict[str, float]) -> str:
    head = "| rows | series | origins | " + " | ".join(STAGES) + " | peak RSS MiB |\n|" + " --- |" * (len(STAGES) + 4)
    lines = [f"**{title}** (seconds; peak tracemalloc MiB in brackets)", "", head]
    for c in cases:
        cells = " | ".join(f"{c['stages'][s]['seconds']:.1f} ({c['stages'][s]['peak_alloc_mib']:.0f})" for s in STAGES)
        lines.append(f"| {c['rows']:,} | {c['series']} | {c['origins']} | {cells} | {max(v['max_rss_mib'] for v in c['stages'].values()):.0f} |")
    if slopes:
        lines.append("| growth exponent | | | " + " | ".join(f"{slopes[s]:.2f}" for s in STAGES) + " | |")
    return "\n".join(lines)


def main() -> None:
    import sys

    sys.path.insert(0, str(ROOT))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="*", default=[10_000, 100_000])
    parser.add_argument("--series", type=int, nargs="*", default=[1, 100, 1000])
    parser.add_argument("--series-steps", type=int, default=1000)
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--trace-memory", action="store_true", help="peak Python/numpy allocations per stage (slow)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "bench_scale.json")
    args = parser.parse_args()
    global TRACE_MEMORY
    TRACE_MEMORY = args.trace_memory
    from bench_training import machine

    result = {"date": date.today().isoformat(), "machine": machine(), "rows": [], "series": []}
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.rows:
            result["rows"].append(run_case(1, n, None, args.n_jobs, Path(tmp)))
            print(json.dumps(result["rows"][-1]), flush=True)
        for k in args.series:
            result["series"].append(run_case(k, args.series_steps, ["Naive", "SeasonalNaive", "AutoETS"], args.n_jobs, Path(tmp)))
            print(json.dumps(result["series"][-1]), flush=True)
    result["exponents"] = {"rows": exponents(result["rows"]), "series": exponents(result["series"])}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(markdown("one series, every default baseline", result["rows"], result["exponents"]["rows"]))
    print()
    print(markdown(f"series of {args.series_steps} steps, Naive/SeasonalNaive/AutoETS", result["series"], result["exponents"]["series"]))


if __name__ == "__main__":
    main()
