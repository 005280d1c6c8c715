"""The online quantile tracker's step size: test coverage of tracked bands on kept public-set runs.

Replays the tracker over the test part of runs kept by ``bench_public.py --keep DIR`` (their
features, test forecasts and conformal calibration; nothing is retrained) for several step sizes
``lr`` (``evaluation.interval_tracking_lr``), exactly as the compare stage does
(:func:`pipeline.evaluation.intervals.interval_metrics`), and records per data set and level the
tracked bands' coverage with its 95% CI, their mean width relative to the calibrated bands', and
the mean factor at the last origin. ``lr`` 0 is the calibrated bands.

Usage::

    python benchmarks/bench_public.py --keep /tmp/runs        # once: the runs to replay
    python benchmarks/bench_tracking.py /tmp/runs [--lr 0 0.005 0.01 0.02 0.05 0.1] [--store-days 30 180 365] [--out FILE]

``--store-days`` also times the check's tracker read against the version's age (:func:`store_cost`).
"""

from __future__ import annotations

import argparse
import json
import platform
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "bench_tracking.json"


def replay(run: Path, rates: list[float]) -> dict:
    """Per level and ``lr``: what ``train`` reports for the tracked bands on ``run``'s test part
    (:func:`pipeline.evaluation.intervals.interval_metrics`, as the compare stage calls it: the test
    origins, their ``origin_step``, the nested levels, the coverage's 95% CI)."""
    from pipeline.core import artifacts
    from pipeline.evaluation.comparison import test_times
    from pipeline.evaluation.intervals import interval_metrics
    from pipeline.features.windowing import load_features
    from pipeline.models.conformal import IntervalCalibration

    fs = load_features(run / "features")
    with np.load(artifacts.TRAINING_FORECASTS.at(run / "training")) as z:
        pred, index = z["test"], z["test_index"]
    truth = fs.targets("test")[index]
    times = test_times(fs, index)
    origin_step = int(artifacts.read_json(artifacts.EVALUATION_METRICS.at(run / "evaluation"))["origin_step"])
    calibration = IntervalCalibration.load(artifacts.INTERVALS.at(run / "training"))
    history = fs.lookback_targets(fs.starts["test"][index])
    out = {"run": run.name, "n_origins": int(len(index)), "origin_step": origin_step, "horizon": int(truth.shape[1]),
           "n_series": len(fs.series_ids), "levels": {}}  # fmt: skip
    for lr in rates:
        for label, m in interval_metrics(calibration, truth, pred, history, origin_step, times, lr).items():
            t = m.get("tracked", m)  # lr 0: the calibrated bands
            out["levels"].setdefault(label, {})[str(lr)] = {
                "coverage": t["coverage"], "coverage_ci": t["coverage_ci"], "relative_width": t["mean_width"] / m["mean_width"],
                "last_factor_mean": float(np.mean(t.get("factor_per_step", [1.0]))),
            }  # fmt: skip
    return out


def store_cost(days: list[int], horizon: int = 24) -> list[dict]:
    """Seconds of the monitoring check's tracker read (:func:`pipeline.loop.monitoring.tracked_factors`,
    what :func:`~pipeline.loop.monitoring.track_bands` pays per alias) against the version's age:
    an hourly series, one forecast per hour with ``horizon`` steps and two levels, all scored, in a
    SQLite store in a temporary folder."""
    import tempfile
    import time

    import pandas as pd

    from pipeline.loop.monitoring import tracked_factors
    from pipeline.models.conformal import IntervalCalibration
    from pipeline.store.sql import ForecastStore

    calibration = IntervalCalibration((80.0, 95.0), {"80": [1.28] * horizon, "95": [1.96] * horizon}, "none", 1, horizon=horizon)

    out = []
    for n_days in days:
        with tempfile.TemporaryDirectory() as tmp:
            store = ForecastStore(f"sqlite:///{tmp}/store.db")
            origins = pd.date_range("2024-01-01", periods=24 * n_days, freq="h")
            steps = np.tile(np.arange(1, horizon + 1), len(origins))
            origin = origins.repeat(horizon)
            ds = origin + pd.to_timedelta(steps, unit="h")
            rng = np.random.default_rng(0)
            yhat = rng.normal(size=len(ds))
            frame = pd.DataFrame({"model_name": "m", "version": 1, "unique_id": "s", "origin": origin, "step": steps, "ds": ds, "yhat": yhat,
                                  "alias": "champion", "as_of": origins[-1], "yhat_lo_80": yhat - 1.28, "yhat_hi_80": yhat + 1.28,
                                  "yhat_lo_95": yhat - 1.96, "yhat_hi_95": yhat + 1.96})  # fmt: skip
            t0 = time.perf_counter()
            for part in np.array_split(np.arange(len(frame)), max(1, n_days // 7)):  # a week's checks at a time
                store.upsert_forecasts(frame.iloc[part])
            observed = pd.DataFrame({"unique_id": "s", "ds": pd.date_range(ds.min(), ds.max(), freq="h")})
            observed["y"] = rng.normal(size=len(observed))
            store.score(observed, as_of=ds.max())
            fill = time.perf_counter() - t0
            since = ds.max() + pd.Timedelta("1h")
            t0 = time.perf_counter()
            n_rows = len(store.scored_intervals("m", 1, until=since))
            read = time.perf_counter() - t0
            t0 = time.perf_counter()
            tracked_factors(store, "m", 1, since, calibration, 0.02)  # the read again, and the factors
            total = time.perf_counter() - t0
            out.append({"days": n_days, "scored_band_rows": n_rows, "read_s": round(read, 2), "read_and_factors_s": round(total, 2), "fill_s": round(fill, 1)})
            print(out[-1])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", type=Path, help="a folder of runs kept by bench_public.py --keep")
    parser.add_argument("--lr", type=float, nargs="+", default=[0.0, 0.005, 0.01, 0.02, 0.05, 0.1])
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--store-days", type=int, nargs="*", default=[], help="also time the check's tracker read on a store this many days old")
    args = parser.parse_args()
    cost = store_cost(args.store_days) if args.store_days else []
    rows = [replay(run, args.lr) for run in sorted(p for p in args.runs.iterdir() if (p / "training" / "intervals.json").exists())]
    for r in rows:
        for label, by_lr in r["levels"].items():
            cells = " | ".join(f"{100 * v['coverage']:.1f}% (x{v['relative_width']:.2f})" for v in by_lr.values())
            print(f"| {r['run']} | {label} | {cells} |")
    record = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "machine": platform.processor() or platform.machine(), "lr": args.lr, "rows": rows,
              "store_cost": cost}  # fmt: skip
    args.out.write_text(json.dumps(record, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
