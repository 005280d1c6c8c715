"""The online quantile tracker's step size: test coverage of tracked bands on kept public-set runs.

Replays :func:`pipeline.models.conformal.track_ratios` over the test part of runs kept by
``bench_public.py --keep DIR`` (their features, test forecasts and conformal calibration; nothing
is retrained), for several step sizes ``lr`` (``evaluation.interval_tracking_lr``), and records per
data set and level the calibrated bands' coverage, the tracked bands' coverage, their mean width
relative to the calibrated bands', and the factor after the last origin. ``lr`` 0 is the
calibrated bands.

Usage::

    python benchmarks/bench_public.py --keep /tmp/runs        # once: the runs to replay
    python benchmarks/bench_tracking.py /tmp/runs [--lr 0 0.005 0.01 0.02 0.05 0.1] [--out FILE]
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
    """Per level and ``lr``: coverage, relative mean width and last factors of the tracked bands on ``run``'s test part."""
    from pipeline.core import artifacts
    from pipeline.features.windowing import load_features
    from pipeline.models.conformal import IntervalCalibration, track_ratios

    fs = load_features(run / "features")
    with np.load(artifacts.TRAINING_FORECASTS.at(run / "training")) as z:
        pred, index = z["test"], z["test_index"]
    truth = fs.targets("test")[index]
    ns = lambda t: np.asarray(t).astype("datetime64[ns]").astype(np.int64)  # noqa: E731
    origin, known = ns(fs.origin_times("test")[index]), ns(fs.target_times("test")[index])
    calibration = IntervalCalibration.load(artifacts.INTERVALS.at(run / "training"))
    history = fs.lookback_targets(fs.starts["test"][index]) if calibration.score == "normalised" else None
    out = {"run": run.name, "n_origins": int(len(index)), "horizon": int(truth.shape[1]), "n_series": len(fs.series_ids), "levels": {}}
    for label, ratios in calibration.ratios(truth, pred, history).items():
        seen = ~np.isnan(ratios)
        rows = {}
        for lr in rates:
            factors = track_ratios(ratios, origin, known, float(label), lr)
            rows[str(lr)] = {"coverage": float(np.mean(ratios[seen] <= factors[seen])), "relative_width": float(factors[seen].mean()),
                             "last_factor_mean": float(factors[np.argsort(origin, kind="stable")[-1]].mean())}  # fmt: skip
        out["levels"][label] = rows
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", type=Path, help="a folder of runs kept by bench_public.py --keep")
    parser.add_argument("--lr", type=float, nargs="+", default=[0.0, 0.005, 0.01, 0.02, 0.05, 0.1])
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    rows = [replay(run, args.lr) for run in sorted(p for p in args.runs.iterdir() if (p / "training" / "intervals.json").exists())]
    for r in rows:
        for label, by_lr in r["levels"].items():
            cells = " | ".join(f"{100 * v['coverage']:.1f}% (x{v['relative_width']:.2f})" for v in by_lr.values())
            print(f"| {r['run']} | {label} | {cells} |")
    record = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "machine": platform.processor() or platform.machine(), "lr": args.lr, "rows": rows}
    args.out.write_text(json.dumps(record, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
