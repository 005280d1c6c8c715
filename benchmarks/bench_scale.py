"""Cost growth of every stage with the data size: seconds and peak memory, and fitted exponents.

Sweeps on generated data (daily + weekly cycle, noise, one covariate), each stage of
:data:`pipeline.stages.STAGES` called in order as the orchestrators call them (validate,
features, train for one epoch, baselines, compare, register into a SQLite MLflow store in a
temporary folder):

* ``--rows``: one hourly series of 10k, 100k and 1M steps, every default baseline (Naive,
  SeasonalNaive, AutoETS, AutoARIMA, MSTL);
* ``--series``: 1, 100 and 1,000 hourly series of 1,000 steps, with Naive, SeasonalNaive
  and AutoETS only (AutoARIMA and MSTL cost a fit per series and refit; see
  docs/BENCHMARKS.md);
* ``--target-rows``: one half-hourly series of 50,000 steps with every default baseline
  (the issue's target: the baseline stage under 3 minutes on the 2-core machine).

A small warm-up case runs first and is not reported in the fits (imports, numba compilation
of statsforecast's kernels, Great Expectations' context).

Per stage: wall seconds; CPU seconds (user + system, of the process and its joblib workers:
on a shared machine they move much less with the load than wall seconds); the peak resident memory of the process and its children (joblib
workers) while the stage ran, sampled every 20 ms (``psutil``), minus nothing: it includes what
earlier stages left in memory; and, with ``--trace-memory``, the peak of Python/numpy
allocations during the stage (``tracemalloc``; torch's allocator not included; it slows the
stages several-fold). The growth exponent of a stage is the slope of log(seconds) against
log(rows) over a sweep (``numpy.polyfit``). Every case records the date, the machine and the
load average (1 min) before and after. Results are written after each case, so a run stopped
part way keeps what it measured.

Usage::

    python benchmarks/bench_scale.py [--rows 10000 100000 1000000] [--series 1 100 1000]
        [--target-rows 50000] [--n-jobs 2] [--out benchmarks/results/bench_scale.json]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
#: reported name of each stage of pipeline.stages.STAGES (training runs one epoch here)
STAGE_NAMES = {"validate": "validate", "features": "features", "train": "train_1_epoch", "baselines": "baselines", "compare": "compare", "register": "register"}  # fmt: skip
STAGES = tuple(STAGE_NAMES.values())
REDUCED_MODELS = ["Naive", "SeasonalNaive", "AutoETS"]


def write_data(path: Path, n_series: int, n_steps: int, freq: str = "h", seed: int = 0) -> None:
    """A CSV of ``n_series`` series of ``n_steps`` steps (columns time, load, temp[, site])."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    per_day = int(pd.Timedelta("1D") / pd.Timedelta(pd.tseries.frequencies.to_offset(freq)))
    t = np.arange(n_steps)
    ds = pd.date_range("2020-01-01", periods=n_steps, freq=freq).strftime("%Y-%m-%d %H:%M:%S")
    temp = 10 + 5 * np.cos(2 * np.pi * t / per_day)
    for k in range(n_series):
        y = 50 + 10 * np.sin(2 * np.pi * t / per_day + k) + 5 * np.sin(2 * np.pi * t / (7 * per_day)) + rng.normal(0, 2, n_steps)
        frame = pd.DataFrame({"time": ds, "load": y, "temp": temp})
        if n_series > 1:
            frame["site"] = f"s{k:04d}"
        frame.to_csv(path, index=False, float_format="%.4f", mode="w" if k == 0 else "a", header=k == 0)


def make_config(csv: Path, root: Path, n_series: int, models: list[str] | None, n_jobs: int, freq: str = "h"):
    from pipeline.core.config import PipelineConfig

    return PipelineConfig.model_validate({
        "name": "scale", "data": {"path": str(csv), "timestamp_column": "time", "target_column": "load", "covariates": ["temp"],
                                  "freq": freq, "series_id_column": "site" if n_series > 1 else None},
        "features": {"lookback": 48, "horizon": 24},
        "model": {"hidden_size": 32, "num_layers": 1, "dropout": 0.0},
        "training": {"max_epochs": 1, "min_epochs": 1, "batch_size": 512, "progress": False, "device": "cpu", "num_threads": 1},
        "baselines": {"models": models, "n_jobs": n_jobs, "progress": False},
        "mlflow": {"tracking_uri": f"sqlite:///{root / 'mlflow.db'}", "artifact_location": str(root / 'mlartifacts'),
                   "experiment_name": "scale", "registered_model_name": "scale-lstm"},
        "run": {"artifact_root": str(root / "artifacts")},
    })  # fmt: skip


TRACE_MEMORY = False  # tracemalloc slows Python-heavy stages several-fold: off unless --trace-memory


class PeakRss:
    """Peak resident memory (MiB) of this process and its children, sampled every ``interval`` s."""

    def __init__(self, interval: float = 0.02):
        import psutil

        self.proc, self.interval, self.peak = psutil.Process(), interval, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> int:
        import psutil

        total = 0
        for p in (self.proc, *self.proc.children(recursive=True)):
            try:
                total += p.memory_info().rss
            except psutil.Error:  # a worker that just exited
                pass
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._sample())
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakRss:
        self.peak = self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._sample())


def cpu_seconds() -> dict[int, float]:
    """User + system CPU seconds of this process (key 0: itself and its reaped children) and of each live child, by pid."""
    import psutil

    me = psutil.Process()
    t = os.times()
    out = {0: t.user + t.system + t.children_user + t.children_system}
    for child in me.children(recursive=True):
        try:
            c = child.cpu_times()
            out[child.pid] = c.user + c.system
        except psutil.Error:
            pass
    return out


def _measure(fn):
    if TRACE_MEMORY:
        tracemalloc.start()
    cpu0 = cpu_seconds()
    with PeakRss() as rss:
        t0 = time.perf_counter()
        out = fn()
        seconds = time.perf_counter() - t0
    cpu1 = cpu_seconds()
    cpu = sum(v - cpu0.get(pid, 0.0) for pid, v in cpu1.items())
    peak = tracemalloc.get_traced_memory()[1] if TRACE_MEMORY else float("nan")
    if TRACE_MEMORY:
        tracemalloc.stop()
    return out, {"seconds": seconds, "cpu_seconds": cpu, "peak_alloc_mib": peak / 2**20, "peak_rss_mib": rss.peak / 2**20}


def run_case(n_series: int, n_steps: int, models: list[str] | None, n_jobs: int, root: Path, freq: str = "h") -> dict:
    """Every stage on one generated data set; ``{"rows", "stages": {name: {"seconds", ...}}, ...}``."""
    from pipeline.stages import STAGES as PIPELINE_STAGES

    case_root = root / f"{n_series}x{n_steps}_{freq}"
    case_root.mkdir(parents=True)
    csv = case_root / "data.csv"
    write_data(csv, n_series, n_steps, freq)
    cfg = make_config(csv, case_root, n_series, models, n_jobs, freq)
    run = case_root / "artifacts" / f"scale_{n_series}x{n_steps}_{freq}"  # the MLflow run key: one per case
    load_before = os.getloadavg()[0]
    results: dict[str, dict] = {}
    stats = {}
    for stage in PIPELINE_STAGES:
        fn, inputs = stage.load(), stage.inputs(results)
        results[stage.name], stats[STAGE_NAMES[stage.name]] = _measure(lambda: fn(cfg, run, *inputs))  # noqa: B023
    compared, registered = results["compare"], results["register"]
    csv.unlink()
    return {
        "series": n_series, "steps": n_steps, "rows": n_series * n_steps, "freq": freq, "models": results["baselines"]["models"],
        "origins": compared["n_origins"], "origin_step": compared["origin_step"], "gate_passed": compared["gate_passed"],
        "registration": registered.get("registration", f"version {registered.get('registered_version')}"),
        "date": datetime.now(UTC).isoformat(timespec="seconds"), "load_avg_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "stages": stats,
    }  # fmt: skip


def exponents(cases: list[dict], key: str = "seconds") -> dict[str, float]:
    """Slope of log(``key``) on log(rows) per stage (needs two sizes or more; ``cpu_seconds`` resists the machine's load)."""
    cases = [c for c in cases if all(key in c["stages"][s] for s in STAGES)]
    if len(cases) < 2:
        return {}
    rows = np.log([c["rows"] for c in cases])
    return {s: float(np.polyfit(rows, np.log([max(c["stages"][s][key], 1e-3) for c in cases]), 1)[0]) for s in STAGES}


def markdown(title: str, cases: list[dict], slopes: dict[str, float]) -> str:
    head = "| rows | series | origins | load avg | " + " | ".join(STAGES) + " |\n|" + " --- |" * (len(STAGES) + 4)
    lines = [f"**{title}** (wall s / CPU s; peak RSS MiB of the process and its workers during the stage in brackets)", "", head]
    for c in cases:
        cells = " | ".join(f"{c['stages'][s]['seconds']:.1f} / {c['stages'][s].get('cpu_seconds', float('nan')):.1f} ({c['stages'][s]['peak_rss_mib']:.0f})" for s in STAGES)
        load = "-".join(f"{v:.1f}" for v in c["load_avg_1min"])
        lines.append(f"| {c['rows']:,} | {c['series']} | {c['origins']} | {load} | {cells} |")
    if slopes:
        lines.append("| growth exponent | | | | " + " | ".join(f"{slopes[s]:.2f}" for s in STAGES) + " |")
    return "\n".join(lines)


def main() -> None:
    import sys

    sys.path.insert(0, str(ROOT))
    os.environ.pop("MLFLOW_TRACKING_URI", None)  # register into the temporary SQLite store
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="*", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--series", type=int, nargs="*", default=[1, 100, 1000])
    parser.add_argument("--series-steps", type=int, default=1000)
    parser.add_argument("--target-rows", type=int, nargs="*", default=[50_000], help="half-hourly rows, every default baseline")
    parser.add_argument("--warmup-rows", type=int, default=2000)
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--trace-memory", action="store_true", help="peak Python/numpy allocations per stage (slow)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "bench_scale.json")
    args = parser.parse_args()
    global TRACE_MEMORY
    TRACE_MEMORY = args.trace_memory
    from bench_training import machine

    result = {"started": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine(), "argv": sys.argv[1:],
              "warmup": None, "rows": [], "series": [], "target_30min": [], "exponents": {}}  # fmt: skip

    def save(key: str, case: dict) -> None:
        result[key] = case if key == "warmup" else [*result[key], case]
        result["exponents"] = {"rows": exponents(result["rows"]), "series": exponents(result["series"])}
        result["exponents_cpu"] = {"rows": exponents(result["rows"], "cpu_seconds"), "series": exponents(result["series"], "cpu_seconds")}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))
        print(key, json.dumps(case), flush=True)

    # smallest cases first, so that a run stopped part way has measured every small size
    plan = [(n, "target_30min", 1, n, None, "30min") for n in args.target_rows]
    plan += [(n, "rows", 1, n, None, "h") for n in args.rows]
    plan += [(k * args.series_steps, "series", k, args.series_steps, REDUCED_MODELS, "h") for k in args.series]
    with tempfile.TemporaryDirectory() as tmp:
        save("warmup", run_case(1, args.warmup_rows, None, args.n_jobs, Path(tmp) / "warmup"))
        for _, key, n_series, n_steps, models, freq in sorted(plan, key=lambda p: p[0]):
            save(key, run_case(n_series, n_steps, models, args.n_jobs, Path(tmp) / key, freq=freq))
    print(markdown("one series, every default baseline", result["rows"], result["exponents"]["rows"]))
    print()
    print(markdown(f"series of {args.series_steps} steps, {'/'.join(REDUCED_MODELS)}", result["series"], result["exponents"]["series"]))
    print()
    print(markdown("half-hourly, every default baseline (target: baselines < 180 s)", result["target_30min"], {}))


if __name__ == "__main__":
    main()
