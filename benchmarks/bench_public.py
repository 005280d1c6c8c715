"""The LSTM against the best baseline on public data sets, with default settings.

For each config in ``benchmarks/configs/`` (columns, frequency, lookback and horizon only;
data from ``benchmarks/datasets.py``), runs every stage of :data:`pipeline.stages.STAGES` but
``register``, chained as :mod:`pipeline.runner` does, and records the LSTM's test RMSE, every
baseline's (MSTL included on sub-daily data, by default), the ratio LSTM / best baseline, the
gate's verdict, epochs and stage seconds, with the date, the machine and the load average.

Only execution settings are overridden: the artifact folder (a temporary one), progress bars
off and, with ``--threads``/``--n-jobs``, torch threads and baseline jobs. ``--set key=value``
applies the same override to every data set (to try a change of a default before making it).

Usage::

    python benchmarks/datasets.py            # once: fetch and verify the data
    python benchmarks/bench_public.py [NAME ...] [--set training.max_epochs=50] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = ROOT / "benchmarks" / "configs"
RESULTS = ROOT / "benchmarks" / "results" / "bench_public.json"


def run_one(config: Path, root: Path, overrides: dict, threads: int, n_jobs: int, baselines_from: Path | None = None) -> dict:
    """Every stage but ``register`` (:data:`pipeline.stages.STAGES`, as :mod:`pipeline.runner` chains them).

    With ``baselines_from``, the baselines stage is not run: its folder is copied from
    ``<baselines_from>/<name>/baselines`` (an earlier run on the same windows; the compare
    stage checks that the test windows are the same and fails otherwise).
    """
    import shutil

    from pipeline.core.config import NULL, load_config
    from pipeline.stages import STAGES

    cfg = load_config(config, {"run.artifact_root": str(root), "training.progress": False, "baselines.progress": False,
                               "training.num_threads": threads, "baselines.n_jobs": n_jobs, **overrides})  # fmt: skip
    run = root / cfg.name
    seconds: dict[str, float] = {}
    results: dict[str, dict] = {}
    load_before = os.getloadavg()
    for stage in STAGES:
        if stage.name == "register":
            break
        t0 = time.perf_counter()
        if stage.name == "baselines" and baselines_from is not None:
            shutil.copytree(baselines_from / cfg.name / "baselines", run / "baselines", dirs_exist_ok=True)
            results[stage.name] = {"baselines": str(run / "baselines"), "skipped": {}, "reused_from": str(baselines_from)}
        else:
            results[stage.name] = stage.load()(cfg, run, *stage.inputs(results))
        seconds[stage.name] = round(time.perf_counter() - t0, 1)
    compared = results["compare"]
    training = json.loads((run / "training" / "metrics.json").read_text())
    prep = json.loads((run / "features" / "preprocessing.json").read_text())
    windows = json.loads((run / "features" / "report.json").read_text())["windows"]
    return {
        "config": config.name, "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "load_avg_before": [round(v, 2) for v in load_before], "load_avg_after": [round(v, 2) for v in os.getloadavg()],
        "overrides": {k: None if v is NULL else v for k, v in overrides.items()}, "baselines_reused_from": str(baselines_from) if baselines_from else None,
        "rows": results["validate"]["rows"], "n_origins": compared["n_origins"], "origin_step": compared["origin_step"],
        "lstm_rmse": compared["lstm_rmse"], "baselines": compared["baselines"], "best_baseline": compared["best_baseline"],
        "best_baseline_rmse": compared["best_baseline_rmse"], "ratio": compared["lstm_rmse"] / compared["best_baseline_rmse"],
        "gate_passed": compared["gate_passed"], "skipped_baselines": results["baselines"]["skipped"],
        "epochs_run": training["epochs_run"], "best_epochs": training["best_epochs"], "batch_size": training.get("batch_size"),
        "highway_ridge_lambda": training.get("highway_ridge_lambda"), "seconds": seconds,
        "stop_reason": training.get("stop_reason"), "steps": training.get("steps"), "n_train_windows": training.get("n_train_windows"),
        "seasonal_lags": prep.get("seasonal_lags", []), "seasonal_lag_window": prep.get("seasonal_lag_window", 0),
        "validation_fraction": sorted({float(b["validation_fraction"]) for b in prep.get("split_boundaries", {}).values() if "validation_fraction" in b}),
        "n_features": len(prep["feature_names"]), "windows": windows,
        "coverage": {k.removeprefix("test_coverage_"): v for k, v in compared.items() if k.startswith("test_coverage_")},
        "coverage_ci": {k.removeprefix("test_ci_low_coverage_"): [v, compared.get(k.replace("_low_", "_high_"))]
                        for k, v in compared.items() if k.startswith("test_ci_low_coverage_")},  # 95%, block bootstrap over origins
        "width": {k.removeprefix("test_width_"): v for k, v in compared.items() if k.startswith("test_width_")},
        # the bands as the monitoring loop publishes them (the quantile tracker replayed over the test part)
        "tracked_lr": cfg.evaluation.interval_tracking_lr,
        "tracked_coverage": {k.removeprefix("test_tracked_coverage_"): v for k, v in compared.items() if k.startswith("test_tracked_coverage_")},
        "tracked_coverage_ci": {k.removeprefix("test_tracked_ci_low_coverage_"): [v, compared.get(k.replace("_low_", "_high_"))]
                                for k, v in compared.items() if k.startswith("test_tracked_ci_low_coverage_")},
        "tracked_width": {k.removeprefix("test_tracked_width_"): v for k, v in compared.items() if k.startswith("test_tracked_width_")},
    }  # fmt: skip


def markdown(rows: list[dict]) -> str:
    models = sorted({m for r in rows for m in r["baselines"]})
    lines = [
        "| data set | rows | origins | seasonal lags | LSTM RMSE | " + " | ".join(models)
        + " | best baseline | ratio | gate | coverage 80 / 95 | 95% CI of the coverage | tracked coverage 80 / 95 | its 95% CI"
        " | epochs (best), stop | train s | baselines s | wall s | load avg |",
        "|" + "---|" * (len(models) + 17),
    ]
    for r in rows:
        cells = " | ".join(f"{r['baselines'][m]:.4g}" if m in r["baselines"] else "-" for m in models)
        cover = " / ".join(f"{100 * v:.1f}%" for v in r.get("coverage", {}).values()) or "-"
        ci = " / ".join(f"{100 * lo:.1f}-{100 * hi:.1f}" for lo, hi in r.get("coverage_ci", {}).values()) or "-"
        tracked = " / ".join(f"{100 * v:.1f}%" for v in r.get("tracked_coverage", {}).values()) or "-"
        tracked_ci = " / ".join(f"{100 * lo:.1f}-{100 * hi:.1f}" for lo, hi in r.get("tracked_coverage_ci", {}).values()) or "-"
        lags = f"{r.get('seasonal_lags')} +- {r.get('seasonal_lag_window')}" if r.get("seasonal_lags") else "none"
        lines.append(
            f"| {r['config'].removesuffix('.yaml')} | {r['rows']:,} | {r['n_origins']:,} | {lags} | **{r['lstm_rmse']:.4g}** | {cells} | "
            f"{r['best_baseline']} | **{r['ratio']:.3f}** | {'pass' if r['gate_passed'] else 'FAIL'} | {cover} | {ci} | {tracked} | {tracked_ci} | "
            f"{r['epochs_run']} ({r['best_epochs']}), {r.get('stop_reason')} | {r['seconds'].get('train', 0):.0f} | "
            f"{r['seconds'].get('baselines', 0):.0f} | {r.get('wall_s', 0):.0f} | {r['load_avg_before'][0]:.1f}-{r['load_avg_after'][0]:.1f} |"
        )
    return "\n".join(lines)


def _parse_set(items: list[str]) -> dict:
    """``key=value`` items, each value read as YAML; ``key=null`` (or ``~``) sets the key to null
    (:data:`pipeline.core.config.NULL`: e.g. ``features.seasonal_lags=null`` for the derived value)."""
    from pipeline.core.config import NULL

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set expects key=value, got {item!r}")
        parsed = yaml.safe_load(value)
        out[key] = NULL if parsed is None else parsed
    return out


def main() -> None:
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "benchmarks"))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="config stems in benchmarks/configs (default: all), or paths to .yaml files")
    parser.add_argument("--set", action="append", default=[], help="override for every data set, key=value")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--label", default="defaults")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--keep", type=Path, help="keep the run folders here (default: a temporary folder)")
    parser.add_argument("--baselines-from", type=Path, help="reuse the baselines folders of runs kept with --keep")
    args = parser.parse_args()
    from bench_training import machine

    configs = [Path(n) if n.endswith(".yaml") else CONFIG_DIR / f"{n}.yaml" for n in args.names] or sorted(CONFIG_DIR.glob("*.yaml"))
    overrides = _parse_set(args.set)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for config in configs:
            t0 = time.perf_counter()
            row = run_one(config, args.keep or Path(tmp), overrides, args.threads, args.n_jobs, args.baselines_from)
            row.update(label=args.label, machine=machine(), wall_s=round(time.perf_counter() - t0, 1))
            rows.append(row)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            existing = json.loads(args.out.read_text()) if args.out.is_file() else {"runs": []}  # read now: runs in parallel append too
            existing["runs"].append(row)
            args.out.write_text(json.dumps(existing, indent=2))
            print(json.dumps(row), flush=True)
    print(markdown(rows))


if __name__ == "__main__":
    main()
