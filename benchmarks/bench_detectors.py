"""The calibrated CUSUM rule (issue 23): its false-alarm rate as calibrated against as measured,
and its detection delay against the mission's rule and the naive rule on replays.

Part ``arl`` (simulated, seconds): in-control loss differentials, calibrated with
:func:`pipeline.evaluation.cusum.calibrate` on ``n`` values (as a version's test part) for a
target ARL0, then run on a fresh stream of 2-4 million values from the same process; reported:
the ARL0 the bootstrap gave and the measured one, over several seeds. Processes: iid N(0,1);
MA(h-1) (the mean of ``h`` consecutive draws: the overlap of ``h``-step forecast errors) for
h = 4 and 24; the same with Student-t(3) draws (heavy tails, like squared-error differentials).

Part ``replay`` (minutes): the ``make loop-demo`` series (hourly sine, noise floor 0.1,
``tools/loop_demo.py``), champion as of day 20, fault on day 22, checks every 12 h to day 32,
policy ``rule``, under ``monitoring.rule`` ``training_rmse`` (the mission's), ``naive`` and
``cusum``; scenarios: the clean control and the concept-drift faults of ``configs/scenarios``.

Results go to ``benchmarks/results/bench_detectors.json`` (a rerun skips the cases done);
Markdown tables for docs/BENCHMARKS.md are printed. Usage:

    python benchmarks/bench_detectors.py [--part arl|replay|all] [--cases none:cusum ...]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository's tools/ (not installed)

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "bench_detectors.json"
WORK = ROOT / "artifacts" / "bench_detectors"
RULES = ["training_rmse", "naive", "cusum"]
SCENARIOS = ["none", "line_slowdown", "tariff_profile", "temperature_response", "clock_shift"]
REPLAY_KEYS = ["decisions", "triggers", "false_triggers", "first_alarm_at", "alarm_delay_h", "detection_delay_h", "promotions", "wall_s"]
ARL_CASES = [  # (process, h, n calibration values, target ARL0 in origins)
    ("iid", 1, 3000, 500), ("ma", 4, 3000, 500), ("ma", 24, 3000, 500), ("ma-t3", 4, 3000, 500),
    ("ma", 4, 3000, 2000), ("ma", 4, 10000, 500), ("ma", 24, 3000, 17520),
]  # fmt: skip
SEEDS = range(5)


def _process(kind: str, h: int, n: int, rng: np.random.Generator) -> np.ndarray:
    draws = rng.standard_t(3, size=n + h - 1) / np.sqrt(3) if kind.endswith("t3") else rng.normal(size=n + h - 1)
    return draws[h - 1 :] if kind == "iid" else np.convolve(draws, np.ones(h), "valid") / h


def arl_case(kind: str, h: int, n: int, arl0: float, seed: int) -> dict:
    from pipeline.evaluation.cusum import calibrate, count_signals

    t0 = time.perf_counter()
    block = max(h, int(np.ceil(n ** (1 / 3))))
    d = calibrate(_process(kind, h, n, np.random.default_rng(seed)), arl0, lags=h - 1, block=block, seed=seed)
    seconds = time.perf_counter() - t0
    fresh = _process(kind, h, int(min(max(400 * arl0, 2_000_000), 8_000_000)), np.random.default_rng(1000 + seed))
    signals, used = count_signals(d.standardise(fresh) - d.k, d.h, 10**9, int(4 * arl0))
    return {"case": f"arl:{kind}:h{h}:n{n}:arl{arl0:g}:s{seed}", "process": kind, "h": h, "n": n, "target": arl0, "seed": seed,
            "decision_interval": d.h, "arl0_bootstrap": d.arl0_bootstrap, "arl0_measured": used / signals if signals else None,
            "signals": signals, "calibration_s": seconds}  # fmt: skip


def replay_case(case: str, config: Path) -> dict:
    from pipeline.core.config import load_config
    from pipeline.loop.replay import ReplaySpec, run_replay
    from pipeline.loop.scenarios import load_scenario
    from tools.loop_demo import END, INJECT, START

    scenario, rule = case.split(":", 1)
    cfg = load_config(config, {"name": f"detectors-{rule}", "monitoring.rule": rule})
    sc = load_scenario(scenario)
    if sc.kind == "covariate_relation":  # the scenario file names Beijing's TEMP; the sine's covariate is temp
        sc = sc.model_copy(update={"covariate": "temp"})
    spec = ReplaySpec(start=pd.Timestamp(START), end=pd.Timestamp(END), scenario=sc, inject_at=pd.Timestamp(INJECT))
    t0 = time.perf_counter()
    summary = run_replay(cfg, spec, progress=False)
    summary["wall_s"] = round(time.perf_counter() - t0, 1)
    return {"case": case, "scenario": scenario, "rule": rule, **{k: summary.get(k) for k in REPLAY_KEYS}}


#: clean replays (part ``clean``): data set -> (start, end, history or None); the champion is trained as of ``start``
CLEAN = {"beijing": ("2014-01-01", "2014-12-31", "365D"), "temps": ("2010-04-01", "2010-12-31", None)}


def _clean_config(dataset: str) -> Path:
    """The replay config of a clean case: Beijing's replay config, or the hourly temperatures with a replay-sized model."""
    import yaml

    root = WORK / f"clean-{dataset}"
    if dataset == "beijing":
        raw = yaml.safe_load((ROOT / "configs" / "beijing_pm25_replay.yaml").read_text())
        raw["data"]["path"] = str(ROOT / "data" / "beijing_pm25_hourly.csv.gz")
    else:
        from benchmarks.datasets import fetch

        raw = {
            "data": {"path": str(fetch("temps_hourly")), "timestamp_column": "ds", "target_column": "y", "series_id_column": "unique_id", "freq": "h"},
            "features": {"lookback": 48, "horizon": 24, "calendar_features": ["hour", "dayofyear"]},
            "model": {"hidden_size": 32, "num_layers": 1, "dropout": 0.1},
            "training": {"max_epochs": 10, "min_epochs": 3, "patience": 3, "batch_size": 128, "num_threads": 1, "progress": False},
            "baselines": {"models": ["Naive", "SeasonalNaive"], "season_length": 24, "n_jobs": 1, "progress": False},
            "monitoring": {"schedule": "@daily"},
        }  # fmt: skip
    raw.update(name=f"clean-{dataset}", run={"artifact_root": str(root / "runs"), "seed": 42})
    raw["mlflow"] = {"experiment_name": f"clean-{dataset}", "registered_model_name": f"clean-{dataset}"}
    raw.setdefault("monitoring", {})["rule"] = "cusum"
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return root / "config.yaml"


def offline_triggers(timeline: pd.DataFrame, fires: pd.Series, cooldown: pd.Timedelta) -> int:
    """Triggers of a rule that fires at the checks ``fires`` (bool per timeline row), a trigger
    holding the next ones for ``cooldown`` (the policy ``never``: no challenger ever holds one)."""
    last, n = None, 0
    for ts, fire in zip(pd.to_datetime(timeline["as_of"]), fires, strict=True):
        if fire and (last is None or ts - last >= cooldown):
            last, n = ts, n + 1
    return n


def clean_case(dataset: str) -> dict:
    """One champion served a clean stretch (policy ``never``, ``monitoring.rule: cusum``): the CUSUM's
    triggers as decided in the checks, the mission's and the naive rule's read off the same checks
    (rolling RMSE, training RMSE, naive RMSE, scored origins: what those rules decide on), and the
    checks that raised ``data_fault``."""
    from pipeline.core.config import load_config
    from pipeline.loop.replay import ReplaySpec, parse_policy, run_replay
    from pipeline.loop.scenarios import load_scenario

    start, end, history = CLEAN[dataset]
    cfg = load_config(_clean_config(dataset))
    spec = ReplaySpec(start=pd.Timestamp(start), end=pd.Timestamp(end), scenario=load_scenario("none"), policy=parse_policy("never"),
                      history=pd.Timedelta(history) if history else None)  # fmt: skip
    t0 = time.perf_counter()
    summary = run_replay(cfg, spec, progress=False)
    wall = round(time.perf_counter() - t0, 1)
    tl = pd.read_csv(summary["timeline"])
    mc = cfg.monitoring
    days = (pd.Timestamp(end) - pd.Timestamp(start)) / pd.Timedelta(days=1)
    enough = tl["n_origins_scored"].fillna(0) >= mc.min_origins
    fires = {
        "training_rmse": enough & (tl["rolling_rmse"] > mc.rmse_ratio * tl["training_rmse"]),
        "naive": enough & (tl["rolling_rmse"] > mc.naive_ratio * tl["naive_rmse"]),
    }
    cooldown = pd.Timedelta(mc.cooldown)
    row = {"case": f"clean:{dataset}", "dataset": dataset, "start": start, "end": end, "days": days, "checks": len(tl), "wall_s": wall,
           "cpu_s": summary.get("cpu_s"), "decisions": summary.get("decisions"), "data_fault_checks": int(tl["decision"].eq("data_fault").sum()),
           "data_fault_reasons": sorted({str(r)[:160] for r in tl.loc[tl["decision"].eq("data_fault"), "reasons"]}),
           "timeline": summary["timeline"]}  # fmt: skip
    for rule, fire in fires.items():
        row[f"{rule}_alarm_checks"] = int(fire.sum())
        row[f"{rule}_triggers"] = offline_triggers(tl, fire, cooldown)
    row["cusum_alarm_checks"] = int(tl["decision"].isin(["retrain", "cooldown"]).sum())
    row["cusum_triggers"] = int(tl["decision"].eq("retrain").sum())
    for rule in RULES:
        row[f"{rule}_per_90d"] = round(row[f"{rule}_triggers"] * 90 / days, 2)
    return row


def clean_table(rows: list[dict]) -> str:
    out = ["| data set | days (checks) | rule | alarm checks | triggers | per 90 days | per 180 days | data_fault checks | wall s |",
           "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for r in rows:
        for rule in RULES:
            out.append(f"| {r['dataset']} {r['start']} .. {r['end']} | {r['days']:.0f} ({r['checks']}) | {rule} | {r[f'{rule}_alarm_checks']} | "
                       f"{r[f'{rule}_triggers']} | {r[f'{rule}_per_90d']:.2f} | {2 * r[f'{rule}_per_90d']:.2f} | {r['data_fault_checks']} | {r['wall_s']} |")  # fmt: skip
    return "\n".join(out)


def arl_table(rows: list[dict]) -> str:
    out = ["| process | h | n | target ARL0 | decision interval (median) | bootstrap ARL0 (median) | measured ARL0 (median) | measured / target (min - max over seeds) | calibration s (median) |",
           "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    frame = pd.DataFrame(rows)
    for (kind, h, n, target), g in frame.groupby(["process", "h", "n", "target"], sort=False):
        ratio = g["arl0_measured"] / target
        out.append(f"| {kind} | {h} | {n} | {target:g} | {g['decision_interval'].median():.2f} | {g['arl0_bootstrap'].median():.0f} | "
                   f"{g['arl0_measured'].median():.0f} | {ratio.min():.2f} - {ratio.max():.2f} ({len(g)} seeds) | {g['calibration_s'].median():.1f} |")  # fmt: skip
    return "\n".join(out)


def replay_table(rows: list[dict]) -> str:
    keys = ["triggers", "false_triggers", "alarm_delay_h", "detection_delay_h", "promotions", "wall_s"]
    out = ["| scenario | rule | " + " | ".join(keys) + " |", "|" + " --- |" * (len(keys) + 2)]
    for r in rows:
        out.append(f"| {r['scenario']} | {r['rule']} | " + " | ".join("-" if r.get(k) is None else str(r[k]) for k in keys) + " |")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["arl", "replay", "clean", "all"], default="all")
    parser.add_argument("--datasets", nargs="*", default=sorted(CLEAN), help="part clean: the clean data sets")
    parser.add_argument("--cases", nargs="*", help="replay cases scenario:rule")
    args = parser.parse_args()
    os.environ.setdefault("PIPELINE_LOG_LEVEL", "WARNING")
    done = json.loads(RESULTS.read_text()) if RESULTS.exists() else []

    def record(row: dict) -> None:
        done.append(row)
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(done, indent=1, default=str))
        print(json.dumps(row, default=str), flush=True)

    print(f"{pd.Timestamp.now(tz='UTC'):%Y-%m-%d}, {platform.machine()}, {os.cpu_count()} cores")
    if args.part in ("arl", "all"):
        for kind, h, n, target in ARL_CASES:
            for seed in SEEDS:
                name = f"arl:{kind}:h{h}:n{n}:arl{target:g}:s{seed}"
                if not any(r["case"] == name for r in done):
                    record(arl_case(kind, h, n, target, seed))
        print(arl_table([r for r in done if r["case"].startswith("arl:")]))
    if args.part in ("replay", "all"):
        from tools.loop_demo import write_case

        config = write_case(WORK, name="detectors")
        cases = args.cases or [f"{s}:{r}" for s in SCENARIOS for r in RULES]
        for case in cases:
            if not any(r["case"] == case for r in done):
                record(replay_case(case, config))
        print(replay_table([r for r in done if r["case"] in cases]))
    if args.part in ("clean", "all"):
        for dataset in args.datasets:
            if not any(r["case"] == f"clean:{dataset}" for r in done):
                record(clean_case(dataset))
        print(clean_table([r for r in done if r["case"].startswith("clean:")]))


if __name__ == "__main__":
    main()
