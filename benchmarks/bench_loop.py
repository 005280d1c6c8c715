"""The closed loop, measured: every fault scenario replayed on Beijing PM2.5.

Each case is one :func:`pipeline.loop.replay.run_replay` (its own MLflow and forecast stores
under ``artifacts/replay/<id>/``): a champion trained as of ``start``, a fault injected
one week later, daily monitoring checks for four more weeks; every training sees the
180 days before its ``T`` (``--history 180D``). Each scenario runs in a volatile season
(October, the start of the heating season's pollution episodes) and a calm one (July); the clean scenario also runs over the whole second half of
2014 (false alarms). Results are appended per case to ``benchmarks/results/bench_loop.json``
(a rerun skips the cases already there and the replays resume), and the Markdown table
for docs/BENCHMARKS.md is printed. Usage:

    python benchmarks/bench_loop.py [--cases autumn:recalibration_x2 summer:none clean_h2:none ...] [--list]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "beijing_pm25_replay.yaml"
RESULTS = ROOT / "benchmarks" / "results" / "bench_loop.json"
#: season -> (start, inject_at, end); the champion is trained on the 180 days before start
SEASONS = {
    "summer": ("2014-07-01", "2014-07-08", "2014-08-05"),  # from 06-01 there is no champion: its training fails the gate
    "autumn": ("2014-09-24", "2014-10-01", "2014-10-29"),  # the heating season's episodes begin: volatile
    "clean_h2": ("2014-07-01", "2014-07-01", "2014-12-31"),
}
HISTORY = "180D"
SCENARIOS = ["none", "recalibration_x2", "scale_x3", "temp_c_to_f", "level_shift", "trend", "noise"]
DEFAULT_CASES = [f"{season}:{sc}" for season in ("autumn", "summer") for sc in SCENARIOS] + ["clean_h2:none"]


def run_case(case: str, config: Path = CONFIG) -> dict:
    import pandas as pd

    from pipeline.core.config import load_config
    from pipeline.loop.replay import ReplayError, ReplaySpec, run_replay
    from pipeline.loop.scenarios import load_scenario

    season, scenario = case.split(":")
    start, inject, end = (pd.Timestamp(t) for t in SEASONS[season])
    cfg = load_config(config)
    # default replay ids: `make loop-demo` is the case autumn:recalibration_x2, reused here
    spec = ReplaySpec(start=start, end=end, scenario=load_scenario(scenario), inject_at=inject, history=pd.Timedelta(HISTORY))
    t0, load0 = time.perf_counter(), os.getloadavg()
    label = case if Path(config).resolve() == CONFIG else f"{case} [{cfg.name}]"
    try:
        summary = run_replay(cfg, spec, progress=True)
    except ReplayError as exc:  # e.g. the initial champion failed the gate: a result, recorded as such
        summary = {"error": str(exc), "inject_at": None if scenario == "none" else inject.isoformat()}
    return {"case": label, "season": season, "seconds": round(time.perf_counter() - t0, 1), "rule": cfg.monitoring.rule,
            "load_avg_start": [round(x, 2) for x in load0], "load_avg_end": [round(x, 2) for x in os.getloadavg()], **summary}  # fmt: skip


def _fmt(value, spec: str = "") -> str:
    return "-" if value is None else format(value, spec)


def table(rows: list[dict]) -> str:
    lines = [
        "| case | injected | first alarm (h) | detection delay (h) | false triggers | triggers | registered | promoted | rejected | rolled back | recovery (x training RMSE) | wall s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r.get("error"):
            lines.append(f"| {r['case']} | {(r['inject_at'] or '-')[:10]} | **not run**: {r['error'][:160]} |||||||||| {_fmt(r.get('seconds'), '.0f')} |")
            continue
        missed = r["inject_at"] and r["detection_delay_h"] is None
        lines.append(
            f"| {r['case']} | {(r['inject_at'] or '-')[:10]} | {_fmt(r.get('alarm_delay_h'), '.0f')} "
            f"| {'**missed**' if missed else _fmt(r['detection_delay_h'], '.0f')} "
            f"| {r['false_triggers']} | {r['triggers']} | {r['registrations']} | {r['promotions']} | {r['rejections']} "
            f"| {r['rollbacks']} | {_fmt(r.get('recovery_ratio'), '.2f')} | {_fmt(r.get('seconds'), '.0f')} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="*", default=DEFAULT_CASES, help="season:scenario pairs")
    parser.add_argument("--config", type=Path, default=CONFIG, help="replay config (default: beijing_pm25_replay.yaml)")
    parser.add_argument("--list", action="store_true", help="print the table of the recorded results only")
    parser.add_argument("--results", type=Path, default=RESULTS, help="results JSON (default: benchmarks/results/bench_loop.json)")
    args = parser.parse_args(argv)
    results = args.results
    done = json.loads(results.read_text()) if results.exists() else []
    if not args.list:
        for case in args.cases:
            name = "" if args.config.resolve() == CONFIG else f" [{args.config.stem}]"
            if any(r["case"] == case + name for r in done):
                continue
            done.append(run_case(case, args.config))
            results.parent.mkdir(parents=True, exist_ok=True)
            results.write_text(json.dumps(done, indent=2))
    print(table(done))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
