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
#: replay rules: ``cusum`` with the defaults (since 2026-12-06 a slow and a fast limb), ``cusum-1limb`` the slow limb alone
#: (``cusum_fast_shift: null``; the recorded ``cusum-plain`` rows: the first calibration, k 0.5, no clip, no guarantee)
REPLAY_RULES = [*RULES, "cusum-1limb"]
SCENARIOS = ["none", "line_slowdown", "tariff_profile", "temperature_response", "clock_shift"]
REPLAY_KEYS = ["decisions", "triggers", "false_triggers", "first_alarm_at", "alarm_delay_h", "detection_delay_h", "promotions", "wall_s"]
ARL_CASES = [  # (process, h, n calibration values, target ARL0 in origins)
    ("iid", 1, 3000, 500), ("ma", 4, 3000, 500), ("ma", 24, 3000, 500), ("ma-t3", 4, 3000, 500),
    ("ma", 4, 3000, 2000), ("ma", 4, 10000, 500), ("ma", 24, 3000, 17520), ("ma-t3", 24, 1500, 17520),
]  # fmt: skip
#: calibration methods: ``plain`` (the first version: k 0.5, no clipping, the bootstrap ARL at the target, blocks of the
#: overlap) and ``robust`` (the defaults since 2026-12-06: k 0.25, scores clipped at 2 MADs, the 0.9 guarantee, blocks of 4 overlaps)
METHODS = {"plain": {"shift": 1.0, "clip": None, "guarantee": None, "blocks": 1}, "robust": {"shift": 0.5, "clip": 2.0, "guarantee": 0.9, "blocks": 4}}
SEEDS = range(5)


def _process(kind: str, h: int, n: int, rng: np.random.Generator) -> np.ndarray:
    draws = rng.standard_t(3, size=n + h - 1) / np.sqrt(3) if kind.endswith("t3") else rng.normal(size=n + h - 1)
    return draws[h - 1 :] if kind == "iid" else np.convolve(draws, np.ones(h), "valid") / h


def arl_case(kind: str, h: int, n: int, arl0: float, seed: int, method: str = "plain") -> dict:
    from pipeline.evaluation.cusum import calibrate, count_signals

    m = METHODS[method]
    t0 = time.perf_counter()
    block = max(m["blocks"] * h, int(np.ceil(n ** (1 / 3))))
    d = calibrate(_process(kind, h, n, np.random.default_rng(seed)), arl0, lags=h - 1, block=block, seed=seed, shift=m["shift"], clip=m["clip"],
                  guarantee=m["guarantee"])  # fmt: skip
    seconds = time.perf_counter() - t0
    fresh = _process(kind, h, int(min(max(400 * arl0, 2_000_000), 8_000_000)), np.random.default_rng(1000 + seed))
    signals, used = count_signals(d.standardise(fresh) - d.k, d.h, 10**9, int(4 * arl0))
    prefix = "arl" if method == "plain" else f"arl-{method}"
    return {"case": f"{prefix}:{kind}:h{h}:n{n}:arl{arl0:g}:s{seed}", "method": method, "process": kind, "h": h, "n": n, "target": arl0, "seed": seed,
            "decision_interval": d.h, "arl0_bootstrap": d.arl0_bootstrap, "arl0_measured": used / signals if signals else None,
            "signals": signals, "calibration_s": seconds}  # fmt: skip


def replay_case(case: str, config: Path) -> dict:
    from pipeline.core.config import NULL, load_config
    from pipeline.loop.replay import ReplaySpec, run_replay
    from pipeline.loop.scenarios import load_scenario
    from tools.loop_demo import END, INJECT, START

    scenario, rule = case.split(":", 1)
    overrides = {"name": f"detectors-{rule}", "monitoring.rule": "cusum" if rule.startswith("cusum") else rule}
    if rule == "cusum-1limb":  # the CUSUM without its fast limb (cusum_fast_shift: null, the default until 2026-12-06)
        overrides["monitoring.cusum_fast_shift"] = NULL
    cfg = load_config(config, overrides)
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
            "features": {"lookback": 48, "horizon": 24, "calendar_features": ["hour", "dayofyear"], "seasonal_lags": []},
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
    row["offline"] = offline_cusum(cfg, summary, start, end)
    return row


#: injected error inflation on the clean stretches (offline, from the replay's own scores): the champion's errors x factor
#: from a fault time at 20%, 45% and 70% of the stretch
INFLATION = (1.5, 2.0, 3.0)
FAULT_AT = (0.2, 0.45, 0.7)
#: fast limbs tried offline beside the registered slow limb, (``cusum_fast_shift``, ``cusum_fast_clip``), each at 2 x arl0
FAST_CANDIDATES = ((2.0, 6.0), (2.0, 10.0), (3.0, 10.0), (3.0, 20.0), (4.0, 10.0), (5.0, 20.0))


def _observed(cfg, data_path: Path) -> pd.DataFrame:
    """``unique_id, ds, y`` of the replay's data file (the observations a check reads)."""
    from pipeline.data.io import raw_to_long, read_raw

    return raw_to_long(read_raw(cfg.data, data_path), cfg.data)


def offline_cusum(cfg, summary: dict, start: str, end: str) -> dict:
    """The clean replay's CUSUM recomputed offline from its scores: the registered (robust) detector
    against the version's own reference (its ``cusum.reference``: ``monitoring.naive_model``
    resolved at registration), the first version's plain calibration (k 0.5, no clipping, no
    guarantee) against the same, and the robust one against the other reference
    (``robust-naive`` or ``robust-seasonal_naive``, calibrated the same way) on the same origins;
    where the version has a fast limb (``cusum.fast.*``), also that limb alone (``fast``), the
    registered pair (``robust+fast``: signals when either limb does), the slow limb calibrated
    alone (``robust-1limb``, at 1 x arl0), and the slow limb beside each other fast limb of
    :data:`FAST_CANDIDATES`; their triggers at daily checks (3-day cooldown, the statistic never reset: the policy
    ``never``), and the hours from an injected error inflation (the champion's errors x factor from
    a fault time on) to the first origin whose CUSUM exceeds ``h``: the delay counted from the
    fault's first fully observed origins, as issue 23 states the goal (a check adds up to its spacing)."""
    from mlflow.tracking import MlflowClient

    from pipeline.core.cadence import step_duration
    from pipeline.core.errors import DataQualityError
    from pipeline.core.seasons import season_length
    from pipeline.evaluation.cusum import (
        FAST_PREFIX,
        CusumDetector,
        calibrate_from_run,
        cusum_path,
        relative_differential,
    )
    from pipeline.evaluation.origins import on_grid
    from pipeline.loop.detectors import origin_losses
    from pipeline.loop.monitoring import naive_forecast_frame
    from pipeline.store.sql import ForecastStore

    folder = Path(summary["replay_dir"])
    initial = json.loads((folder / "initial.json").read_text())
    mc, h, step = cfg.monitoring, cfg.features.horizon, step_duration(cfg.data.freq)
    tags = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}").get_model_version(cfg.mlflow.registered_model_name, "1").tags
    run = Path(initial["run_dir"])
    season, window = season_length(cfg), tags["cusum.window"]

    def calibrated(reference: str, **how):
        return calibrate_from_run(run / "features", run / "training", reference, season, window, mc.arl0, cfg.data.freq, seed=cfg.run.seed, **how)

    registered = CusumDetector.from_tags(tags)
    fast = CusumDetector.from_tags(tags, FAST_PREFIX) if any(k.startswith(FAST_PREFIX) for k in tags) else None
    own = registered.reference  # the version's reference (monitoring.naive_model, resolved at registration)
    other = "naive" if own == "seasonal_naive" else "seasonal_naive"
    robust = {"shift": mc.cusum_shift, "clip": mc.cusum_clip, "guarantee": mc.cusum_guarantee}
    out: dict = {"reference": own}
    detectors = {"robust": ([registered], own)}  # name -> (limbs: the scheme signals when any does, reference forecast)

    def add(name: str, limbs: list, reference: str) -> None:  # a calibration the detector refuses is recorded as refused
        try:
            detectors[name] = ([x() if callable(x) else x for x in limbs], reference)
        except DataQualityError as exc:
            out[name] = {"refused": str(exc)[:300]}

    add("plain", [lambda: calibrated(own, shift=1.0)], own)
    add(f"robust-{other}", [lambda: calibrated(other, **robust, limbs=registered.limbs)], other)
    if fast is not None:  # the registered pair, its fast limb alone, the slow limb as it was alone, and other fast limbs beside the slow one
        add("fast", [fast], own)
        add("robust+fast", [registered, fast], own)
        add("robust-1limb", [lambda: calibrated(own, **robust)], own)
        for shift, clip in FAST_CANDIDATES:
            if (shift, clip) != (mc.cusum_fast_shift, mc.cusum_fast_clip):
                add(f"robust+fast(shift {shift:g}, clip {clip:g})", [registered, lambda s=shift, c=clip: calibrated(own, shift=s, clip=c, guarantee=mc.cusum_guarantee, limbs=2)], own)
    scored = ForecastStore(f"sqlite:///{folder / 'store.db'}").scored(cfg.mlflow.registered_model_name, 1)
    observed = _observed(cfg, folder / "data.csv.gz")
    for name, (limbs, reference) in detectors.items():
        d = limbs[0]
        losses = origin_losses(scored.assign(naive=naive_forecast_frame(scored, observed, reference, season, step)), h)
        origins = pd.DatetimeIndex(losses.index)
        checks = (origins + h * step).ceil("D")  # the daily check that first sees the origin fully observed
        out["origins"] = len(origins)
        grid = on_grid(origins, step, d.origin_step, d.phase)  # the live check's grid

        def signals(model_loss, limbs=limbs, grid=grid, origins=origins, losses=losses):
            r = relative_differential(origins.to_numpy(), model_loss, losses["loss_reference"], limbs[0].window)
            return np.logical_or.reduce([cusum_path(x.standardise(r[grid]), x.k) > x.h for x in limbs])

        alarm = pd.Series(signals(losses["loss_model"])).groupby(checks[grid]).max()
        last, fired = None, []
        for day, on in alarm.items():
            if on and (last is None or day - last >= pd.Timedelta(mc.cooldown or "3D")):
                last = day
                fired.append(f"{day:%Y-%m-%d}")
        delays = {}
        for frac in FAULT_AT:
            at = pd.Timestamp(start) + frac * (pd.Timestamp(end) - pd.Timestamp(start))
            for factor in INFLATION:
                hit = np.flatnonzero(signals(np.where(origins >= at, factor**2, 1.0) * losses["loss_model"]) & (origins[grid] >= at))
                delays[f"{at:%Y-%m-%d} x{factor:g}"] = None if not hit.size else round((origins[grid][hit[0]] - at) / pd.Timedelta(hours=1), 1)
        out[name] = {"k": " / ".join(f"{x.k:g}" for x in limbs), "h": " / ".join(f"{x.h:.2f}" for x in limbs),
                     "clip": " / ".join(f"{x.clip:g}" for x in limbs), "guarantee": d.guarantee, "triggers": len(fired), "trigger_days": fired,
                     "inflation_delay_h": delays}  # fmt: skip
    return out


def inflation_table(rows: list[dict]) -> str:
    out = ["| data set | detector | k | h | triggers (offline) | " + " | ".join(f"x{f:g} at {a:.0%}" for a in FAULT_AT for f in INFLATION) + " |",
           "|" + " --- |" * (5 + len(FAULT_AT) * len(INFLATION))]  # fmt: skip
    for r in rows:
        own = r.get("offline", {}).get("reference", "naive")  # rows from before monitoring.naive_model auto: naive
        for name, o in r.get("offline", {}).items():
            if isinstance(o, dict) and "refused" in o:
                out.append(f"| {r['dataset']} | {name} | - | - | refused | " + " | ".join(["-"] * len(FAULT_AT) * len(INFLATION)) + " |")
            elif isinstance(o, dict):
                cells = ["missed" if v is None else f"{v:.0f}" for v in o["inflation_delay_h"].values()]
                label = f"{name} ({own})" if name in ("plain", "robust", "robust+fast", "fast") else name
                k, h = (f"{o['k']:g}", f"{o['h']:.2f}") if isinstance(o["k"], float) else (o["k"], o["h"])  # rows from before the fast limb: floats
                out.append(f"| {r['dataset']} | {label} | {k} | {h} | {o['triggers']} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def clean_table(rows: list[dict]) -> str:
    out = ["| data set | days (checks) | rule | alarm checks | triggers | per 90 days | per 180 days | data_fault checks | wall s |",
           "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for r in rows:
        for rule in RULES:
            out.append(f"| {r['dataset']} {r['start']} .. {r['end']} | {r['days']:.0f} ({r['checks']}) | {rule} | {r[f'{rule}_alarm_checks']} | "
                       f"{r[f'{rule}_triggers']} | {r[f'{rule}_per_90d']:.2f} | {2 * r[f'{rule}_per_90d']:.2f} | {r['data_fault_checks']} | {r['wall_s']} |")  # fmt: skip
    return "\n".join(out)


def arl_table(rows: list[dict]) -> str:
    out = ["| method | process | h | n | target ARL0 | decision interval (median) | bootstrap ARL0 (median) | measured ARL0 (median) | measured / target (min - max over seeds) | seeds below 0.7 x | calibration s (median) |",
           "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    frame = pd.DataFrame(rows)
    frame["method"] = frame.get("method", pd.Series(index=frame.index, dtype=object)).fillna("plain")
    frame["arl0_measured"] = frame["arl0_measured"].astype(float).fillna(np.inf)  # no signal in the fresh stream
    for (kind, h, n, target), cases in frame.groupby(["process", "h", "n", "target"], sort=False):
        for method, g in cases.groupby("method", sort=False):
            ratio = g["arl0_measured"] / target
            out.append(f"| {method} | {kind} | {h} | {n} | {target:g} | {g['decision_interval'].median():.2f} | {g['arl0_bootstrap'].median():.0f} | "
                       f"{g['arl0_measured'].median():.0f} | {ratio.min():.2f} - {ratio.max():.2f} ({len(g)} seeds) | {int((ratio < 0.7).sum())} | "
                       f"{g['calibration_s'].median():.1f} |")  # fmt: skip
    return "\n".join(out)


def replay_table(rows: list[dict]) -> str:
    keys = ["triggers", "false_triggers", "alarm_delay_h", "detection_delay_h", "promotions", "wall_s"]
    out = ["| scenario | rule | " + " | ".join(keys) + " |", "|" + " --- |" * (len(keys) + 2)]
    for r in rows:
        out.append(f"| {r['scenario']} | {r['rule']} | " + " | ".join("-" if r.get(k) is None else str(r[k]) for k in keys) + " |")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["arl", "replay", "clean", "offline", "all"], default="all",
                        help="offline: recompute the offline detectors of the recorded clean replays from their folders")
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
            for method in METHODS:
                for seed in SEEDS:
                    name = f"{'arl' if method == 'plain' else 'arl-' + method}:{kind}:h{h}:n{n}:arl{target:g}:s{seed}"
                    if not any(r["case"] == name for r in done):
                        record(arl_case(kind, h, n, target, seed, method))
        print(arl_table([r for r in done if r["case"].startswith("arl")]))
    if args.part in ("replay", "all"):
        from tools.loop_demo import write_case

        config = write_case(WORK, name="detectors")
        cases = args.cases or [f"{s}:{r}" for s in SCENARIOS for r in REPLAY_RULES]
        for case in cases:
            if not any(r["case"] == case for r in done):
                record(replay_case(case, config))
        print(replay_table([r for r in done if r["case"] in cases or r["case"].endswith((":cusum-plain", ":cusum-1limb"))]))
    if args.part == "offline":
        from pipeline.core.config import load_config

        for row in done:
            if row["case"].startswith("clean:") and row["dataset"] in args.datasets:
                folder = Path(row["timeline"]).parent
                if not (folder / "replay.json").is_file():  # replays live under WORK, which a new machine does not have
                    print(f"{row['case']}: its replay folder {folder} is gone; kept its offline rows as they were (rerun --part clean to redo them)")
                    continue
                replay = json.loads((folder / "replay.json").read_text())
                row["offline"] = offline_cusum(load_config(replay["config"]), {"replay_dir": str(folder)}, row["start"], row["end"])
        RESULTS.write_text(json.dumps(done, indent=1, default=str))
        print(inflation_table([r for r in done if r["case"].startswith("clean:")]))
    if args.part in ("clean", "all"):
        for dataset in args.datasets:
            if not any(r["case"] == f"clean:{dataset}" for r in done):
                record(clean_case(dataset))
        print(clean_table([r for r in done if r["case"].startswith("clean:")]))
        print(inflation_table([r for r in done if r["case"].startswith("clean:")]))


if __name__ == "__main__":
    main()
