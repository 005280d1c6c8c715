"""The published bands live: the quantile tracker's coverage over a replay of the monitoring loop.

``train`` replays the tracker over the test part (docs/BENCHMARKS.md "Tracked intervals"); this
measures the bands the live loop publishes, check by check, with the feedback lag of daily checks.
Every case is one :func:`pipeline.loop.replay.run_replay` of Beijing PM2.5
(``configs/beijing_pm25_replay.yaml``: lookback 72 h, at most 10 epochs, one torch thread),
champion trained on the 180 days before 2014-09-24, daily checks to 2014-10-29, ``--policy never``
(one champion throughout: the bands alone change), per step size ``evaluation.interval_tracking_lr``
(0: the calibrated bands) and scenario (``none``, ``recalibration_x2`` from 2014-10-01).

Per case: the published bands' coverage and mean width per level over the replay
(:func:`pipeline.loop.replay.published_coverage`), and the coverage at 80 per week of origins.
``--lag``: what the checks' feedback lag costs, offline, on the ``lr`` 0 replays' published
(calibrated) forecasts: :func:`pipeline.models.conformal.track_ratios` with each outcome known at
its own time (the exact online tracker, as ``train``'s replay) against known from the next daily
check on (what the live loop does: a check counts the outcomes before its first origin).
Results go to ``benchmarks/results/bench_live_tracking.json`` (a rerun skips the cases done; the
replays themselves are idempotent); the Markdown tables for docs/BENCHMARKS.md are printed. Usage:

    python benchmarks/bench_live_tracking.py [--lr 0 0.02 0.05 0.1] [--scenarios none recalibration_x2] [--lag]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results" / "bench_live_tracking.json"
WORK = ROOT / "artifacts" / "bench_live_tracking"
START, END, INJECT, HISTORY = "2014-09-24", "2014-10-29", "2014-10-01", "180D"


def write_config(lr: float) -> Path:
    """``configs/beijing_pm25_replay.yaml`` with ``interval_tracking_lr`` ``lr``, absolute paths and its own names."""
    raw = yaml.safe_load((ROOT / "configs" / "beijing_pm25_replay.yaml").read_text())
    name = f"live-tracking-lr{lr:g}"
    raw["name"] = name
    raw["data"]["path"] = str(ROOT / "data" / "beijing_pm25_hourly.csv.gz")
    raw["mlflow"] = {"experiment_name": name, "registered_model_name": name}
    raw["run"] = {**raw.get("run", {}), "artifact_root": str(WORK / "runs")}
    raw["evaluation"] = {**raw.get("evaluation", {}), "interval_tracking_lr": lr}
    path = WORK / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def run_case(lr: float, scenario: str) -> dict:
    from pipeline.core.config import load_config
    from pipeline.loop.replay import ReplaySpec, parse_policy, published_with_bands, run_replay
    from pipeline.loop.scenarios import load_scenario
    from pipeline.store.sql import ForecastStore

    cfg = load_config(write_config(lr))
    inject = pd.Timestamp(INJECT) if scenario != "none" else None
    spec = ReplaySpec(start=pd.Timestamp(START), end=pd.Timestamp(END), scenario=load_scenario(scenario), inject_at=inject,
                      policy=parse_policy("never"), history=pd.Timedelta(HISTORY))  # fmt: skip
    summary = run_replay(cfg, spec, progress=False)
    scored = published_with_bands(ForecastStore(f"sqlite:///{Path(summary['replay_dir']) / 'store.db'}"), cfg.mlflow.registered_model_name)
    inside = (scored["yhat_lo_80"] <= scored["y"]) & (scored["y"] <= scored["yhat_hi_80"])
    weekly = inside.groupby(scored["origin"].dt.to_period("W-SUN").astype(str)).mean()
    return {"lr": lr, "scenario": scenario, "coverage": summary["coverage"], "rmse_published": summary["rmse_published"],
            "weekly_coverage_80": {k: round(float(v), 4) for k, v in weekly.items()}, "wall_s": summary["wall_s"],
            "replay_dir": summary["replay_dir"]}  # fmt: skip


def lag_cost(row: dict, lrs: list[float]) -> list[dict]:
    """The tracker replayed offline over an ``lr`` 0 case's published forecasts, per level and ``lr``:
    coverage and mean factor with exact feedback and with the daily checks' (module docstring)."""
    from pipeline.loop.replay import published_with_bands
    from pipeline.models.conformal import track_ratios
    from pipeline.store.sql import ForecastStore

    scored = published_with_bands(ForecastStore(f"sqlite:///{Path(row['replay_dir']) / 'store.db'}"), "live-tracking-lr0")
    out = []
    for level in (80, 95):
        half = (scored[f"yhat_hi_{level}"] - scored[f"yhat_lo_{level}"]) / 2  # absolute scores: symmetric bands
        ratio = ((scored["y"] - scored["yhat"]).abs() / half).rename("ratio")
        ratios = scored.assign(ratio=ratio).pivot_table(index="origin", columns="step", values="ratio")
        target = scored.pivot_table(index="origin", columns="step", values="ds", aggfunc="first").reindex_like(ratios)
        origin = ratios.index.to_numpy().astype("datetime64[ns]").astype(np.int64)
        ds = target.apply(pd.to_datetime)
        known = {"exact": ds, "daily": ds.apply(lambda c: c.dt.floor("D") + pd.Timedelta("1D"))}  # ds < the check's since
        r = ratios.to_numpy()
        seen = ~np.isnan(r)
        for lr in lrs:
            entry = {"scenario": row["scenario"], "level": level, "lr": lr, "calibrated": float(np.mean(r[seen] <= 1))}
            for name, when in known.items():
                f = track_ratios(r, origin, when.to_numpy().astype("datetime64[ns]").astype(np.int64), level, lr)
                entry[name] = float(np.mean(r[seen] <= f[seen]))
                entry[f"{name}_factor"] = float(np.mean(f[seen]))
            out.append(entry)
    return out


def tables(rows: list[dict]) -> str:
    head = "| scenario | lr | coverage 80 (width) | 95 (width) | 80 before / from the fault | RMSE |\n|---|---|---|---|---|---|"
    lines = [head]
    for r in sorted(rows, key=lambda r: (r["scenario"], r["lr"])):
        c80, c95 = r["coverage"]["80"], r["coverage"]["95"]
        split = f"{c80['pre_fault']:.1%} / {c80['post_fault']:.1%}" if c80.get("post_fault") is not None else "-"
        lines.append(f"| {r['scenario']} | {r['lr']:g} | {c80['coverage']:.1%} ({c80['mean_width']:.0f}) | "
                     f"{c95['coverage']:.1%} ({c95['mean_width']:.0f}) | {split} | {r['rmse_published']:.1f} |")  # fmt: skip
    weeks = sorted({w for r in rows for w in r["weekly_coverage_80"]})
    lines += ["", "| scenario | lr | " + " | ".join(w.split("/")[0][5:] for w in weeks) + " |", "|---|---|" + "---|" * len(weeks)]
    for r in sorted(rows, key=lambda r: (r["scenario"], r["lr"])):
        cells = [f"{r['weekly_coverage_80'][w]:.0%}" if w in r["weekly_coverage_80"] else "-" for w in weeks]
        lines.append(f"| {r['scenario']} | {r['lr']:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lr", type=float, nargs="+", default=[0.0, 0.02, 0.05, 0.1])
    parser.add_argument("--scenarios", nargs="+", default=["none", "recalibration_x2"])
    parser.add_argument("--lag", action="store_true", help="also the feedback lag's cost, offline, on the lr 0 replays")
    args = parser.parse_args()
    rows = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
    done = {(r["lr"], r["scenario"]) for r in rows}
    for scenario in args.scenarios:
        for lr in args.lr:
            if (lr, scenario) in done:
                continue
            row = run_case(lr, scenario)
            print(json.dumps({k: row[k] for k in ("lr", "scenario", "coverage", "wall_s")}, default=float), flush=True)
            rows.append(row)
            RESULTS.parent.mkdir(parents=True, exist_ok=True)
            RESULTS.write_text(json.dumps(rows, indent=1, default=float))
    print(tables([r for r in rows if r["lr"] in args.lr and r["scenario"] in args.scenarios]))
    if args.lag:
        cost = [e for r in rows if r["lr"] == 0 and r["scenario"] in args.scenarios for e in lag_cost(r, [lr for lr in args.lr if lr > 0])]
        (RESULTS.parent / "bench_live_tracking_lag.json").write_text(json.dumps(cost, indent=1))
        print("\n| scenario | level | lr | calibrated | exact feedback (mean factor) | daily checks (mean factor) |\n|---|---|---|---|---|---|")
        for e in cost:
            print(f"| {e['scenario']} | {e['level']} | {e['lr']:g} | {e['calibrated']:.1%} | {e['exact']:.1%} ({e['exact_factor']:.2f}) | "
                  f"{e['daily']:.1%} ({e['daily_factor']:.2f}) |")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
