"""Retrain policies side by side (issue 22): never, periodic, the rule, the oracle, on the same replays.

Every case is one :func:`pipeline.loop.replay.run_replay` with its own stores; only
``--policy`` differs, so the initial champion (trained as of ``start``) is shared by the
policies of a data set. Three data sets (``--dataset``):

``sine`` (default)
    ``make loop-demo``'s (``tools/loop_demo.py``), a generated hourly series with a known noise
    floor: ``load = 10 + 3 sin(2 pi t / 24) + N(0, 0.1)`` plus a ``temp`` covariate, 32 days;
    champion as of day 20, fault on day 22, checks every 12 h to day 32; policies ``never``,
    ``periodic:3D``, ``rule``, ``oracle:3D``. The gate compares with the naive forecast only:
    on a noiseless-shape sine the seasonal naive sits at the noise floor (x sqrt 2) and no LSTM
    clears it by 5%.
``beijing``
    Beijing PM2.5 (``configs/beijing_pm25_replay.yaml``: lookback 72 h, at most 10 epochs, one
    torch thread), every training on the 180 days before its ``T``; champion as of 2014-09-24,
    fault on 2014-10-01, daily checks to 2014-10-29; policies ``never``, ``periodic:7D``,
    ``rule``, ``oracle:3D``.
``sine_long``
    The same series generated for 70 days (checks to 2024-03-10: 47 days after the fault), the
    schedule and the rule only, on the slowdown, the tariff change and the clean control: long
    enough for the schedule to train 16 times, so "a third of its trainings" can be judged.
``taylor``
    Half-hourly electricity demand, England and Wales, summer 2000 (Taylor 2003; fetched by
    ``benchmarks/datasets.py``), a replay config written here (lookback 2 days, ``h`` 48,
    at most 15 epochs, one torch thread; all history before ``T``: 7 weeks at the start);
    champion as of 2000-07-24, fault on 2000-07-31, daily checks to 2000-08-27; same policies
    as Beijing. It has no covariate, so ``temperature_response`` does not apply.

Scenarios: the concept-drift faults a retrain can fix (``configs/scenarios``:
``line_slowdown`` on the sine only, the dynamics being known there; ``tariff_profile``,
``temperature_response`` with the data set's covariate, ``clock_shift``) and the clean control
``none``. Triggered retrains use ``retrain.mode: refit``, or ``finetune`` with ``--mode finetune``
(sine only; its own stores, its own initial champion: same data, seed and config but the name,
so the same weights). ``--inherit`` sets ``monitoring.inherit_training_rmse: true`` (its own stores;
keys end ``@refit+inherit``).

Results are appended per case to ``benchmarks/results/bench_policies.json`` (a rerun skips
the cases done; the sine's keys are ``scenario:policy``, the others' ``dataset/scenario:policy``);
the Markdown table for docs/BENCHMARKS.md is printed. ``--plot SCENARIO`` draws the published
rolling RMSE per policy of one scenario of the data set from the recorded timelines. Usage:

    python benchmarks/bench_policies.py [--dataset sine|beijing|taylor] [--quick] [--cases line_slowdown:rule ...]
        [--mode refit|finetune] [--inherit] [--results PATH] [--plot SCENARIO]

``--quick``: the sine's ``line_slowdown`` under the four policies (about 5-25 minutes on 2 cores,
with the load).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository's tools/ (not installed)
from tools.loop_demo import END, INJECT, NOISE_STD, START, write_case  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "bench_policies.json"
WORK = ROOT / "artifacts" / "bench_policies"
KEYS = ["policy", "rmse_published", "rmse_pre_fault", "rmse_post_fault", "rmse_post_fault_settled", "trainings", "promotions",
        "worse_promotions", "worse_promotions_unmeasured", "false_triggers", "detection_delay_h", "recovery_delay_h", "cpu_s", "wall_s"]  # fmt: skip
#: per tick of the timeline: CPU seconds of the ticks that trained (check + training + canary), mean; of the others, median
TICK_KEYS = ["train_tick_cpu_s", "other_tick_cpu_s"]
REAL_POLICIES = ("never", "periodic:7D", "rule", "oracle:3D")


def _beijing_config(root: Path) -> Path:
    """``configs/beijing_pm25_replay.yaml`` with absolute data path and this benchmark's own names and artifact root."""
    raw = yaml.safe_load((ROOT / "configs" / "beijing_pm25_replay.yaml").read_text())
    raw["name"] = "policies-beijing"
    raw["data"]["path"] = str(ROOT / "data" / "beijing_pm25_hourly.csv.gz")
    raw["mlflow"] = {"experiment_name": "policies-beijing", "registered_model_name": "policies-beijing"}
    raw["run"] = {**raw.get("run", {}), "artifact_root": str(root / "runs")}
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return root / "config.yaml"


def _taylor_config(root: Path) -> Path:
    """Taylor's half-hourly demand (fetched and checksummed by ``benchmarks/datasets.py``) with a replay-sized model."""
    from benchmarks.datasets import fetch

    csv = fetch("taylor_30min")
    cfg = {
        "name": "policies-taylor",
        "data": {"path": str(csv), "timestamp_column": "ds", "target_column": "y", "series_id_column": "unique_id", "freq": "30min"},
        "features": {"lookback": 96, "horizon": 48, "calendar_features": ["hour", "dayofweek"], "seasonal_lags": []},
        "model": {"hidden_size": 32, "num_layers": 1, "dropout": 0.1},
        "training": {"max_epochs": 15, "min_epochs": 3, "patience": 3, "batch_size": 64, "num_threads": 1, "progress": False},
        "baselines": {"models": ["Naive", "SeasonalNaive"], "season_length": 48, "n_jobs": 1, "progress": False},
        "monitoring": {"schedule": "@daily"},
        "mlflow": {"experiment_name": "policies-taylor", "registered_model_name": "policies-taylor"},
        "run": {"artifact_root": str(root / "runs"), "seed": 42},
    }  # fmt: skip
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return root / "config.yaml"


@dataclass(frozen=True)
class Dataset:
    """One replay set-up: the config writer, the clock (data's time), the policies and scenarios run on it."""

    write: Callable[[Path], Path]
    start: str
    inject: str
    end: str
    policies: tuple[str, ...]
    scenarios: tuple[str, ...]
    #: train on the last ``history`` before ``T`` (``None``: all rows before ``T``)
    history: str | None = None
    #: the covariate of ``covariate_relation`` scenarios (``None``: the scenario file's)
    covariate: str | None = None
    #: RMSE of a perfect forecast where known
    noise_floor: float | None = None


DATASETS = {
    "sine": Dataset(lambda root: write_case(root, name="policies"), START, INJECT, END, ("never", "periodic:3D", "rule", "oracle:3D"),
                    ("line_slowdown", "tariff_profile", "temperature_response", "clock_shift", "none"), covariate="temp", noise_floor=NOISE_STD),
    "sine_long": Dataset(lambda root: write_case(root, name="policies-long", days=70), START, INJECT, "2024-03-10",
                         ("periodic:3D", "rule"), ("line_slowdown", "tariff_profile", "none"), noise_floor=NOISE_STD),
    "beijing": Dataset(_beijing_config, "2014-09-24", "2014-10-01", "2014-10-29", REAL_POLICIES,
                       ("tariff_profile", "temperature_response", "clock_shift", "none"), history="180D"),
    "taylor": Dataset(_taylor_config, "2000-07-24", "2000-07-31", "2000-08-27", REAL_POLICIES, ("tariff_profile", "clock_shift", "none")),
}  # fmt: skip


def _tick_cpu(timeline: str) -> dict:
    frame = pd.read_csv(timeline)
    trained = frame["trained_run"].notna()
    return {"train_tick_cpu_s": float(frame.loc[trained, "cpu_s"].mean()) if trained.any() else None,
            "other_tick_cpu_s": float(frame.loc[~trained, "cpu_s"].median()) if (~trained).any() else None}  # fmt: skip


def run_case(case: str, config: Path, mode: str = "refit", dataset: str = "sine") -> dict:
    from pipeline.core.config import load_config
    from pipeline.loop.replay import ReplaySpec, parse_policy, run_replay
    from pipeline.loop.scenarios import load_scenario

    ds = DATASETS[dataset]
    scenario, policy = case.split(":", 1)
    sc = load_scenario(scenario)
    if sc.kind == "covariate_relation" and ds.covariate:
        sc = sc.model_copy(update={"covariate": ds.covariate})
    spec = ReplaySpec(start=pd.Timestamp(ds.start), end=pd.Timestamp(ds.end), scenario=sc, inject_at=pd.Timestamp(ds.inject),
                      policy=parse_policy(policy), history=pd.Timedelta(ds.history) if ds.history else None)  # fmt: skip
    summary = run_replay(load_config(config), spec, progress=False)
    timeline = Path(summary["timeline"])
    return {"case": case, "dataset": dataset, "scenario": scenario, "mode": mode, **{k: summary.get(k) for k in KEYS},
            **_tick_cpu(summary["timeline"]), "timeline": str(timeline.relative_to(ROOT)) if timeline.is_relative_to(ROOT) else str(timeline)}  # fmt: skip


def table(rows: list[dict]) -> str:
    keys = [*KEYS, *TICK_KEYS] if any("mode" in r for r in rows) else KEYS
    head = ["data set", "scenario", "retrain.mode", *keys]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in rows:
        cells = [r.get("dataset", "sine"), r["scenario"], r.get("mode", "refit")]
        cells += [f"{r[k]:.3f}" if isinstance(r.get(k), float) else str(r.get(k)) for k in keys]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(rows: list[dict], dataset: str, scenario: str, out: Path) -> Path:
    """The published rolling RMSE (``monitoring.window``) per policy of one case, from the rows' timelines, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ds = DATASETS[dataset]
    fig, ax = plt.subplots(figsize=(9, 4))
    for r in rows:
        if (
            r.get("dataset", "sine") != dataset
            or r["scenario"] != scenario
            or r.get("mode", "refit") != "refit"
            or not r.get("timeline")
        ):
            continue
        path = Path(r["timeline"]) if Path(r["timeline"]).is_absolute() else ROOT / r["timeline"]
        frame = pd.read_csv(path, parse_dates=["as_of"])
        ax.plot(
            frame["as_of"],
            frame["rolling_rmse"],
            label=f"{r['policy']} ({r['trainings']} trainings, {r['promotions']} promotions)",
        )
    ax.axvline(pd.Timestamp(ds.inject), color="grey", linestyle="--", label="fault injected")
    if ds.noise_floor is not None:
        ax.axhline(ds.noise_floor, color="black", linewidth=0.8, label="noise floor")
    ax.set(
        title=f"{dataset}: {scenario}, published champion's rolling RMSE per policy",
        xlabel="as of (check time)",
        ylabel="rolling RMSE",
    )
    ax.legend(fontsize=8)
    fig.autofmt_xdate()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=sorted(DATASETS), default="sine", help="the replayed data set")
    parser.add_argument("--quick", action="store_true", help="line_slowdown under the four policies (the sine)")
    parser.add_argument("--cases", nargs="*", help="scenario:policy pairs")
    parser.add_argument("--mode", choices=["refit", "finetune"], default="refit", help="retrain.mode of the triggered retrains")
    parser.add_argument("--results", type=Path, default=RESULTS, help="the JSON the rows are appended to")
    parser.add_argument(
        "--set", nargs="*", default=[], metavar="KEY=VALUE", help="retrain.<KEY> for --mode finetune, e.g. finetune_epochs=20"
    )
    parser.add_argument("--inherit", action="store_true", help="monitoring.inherit_training_rmse: true (its own stores)")
    parser.add_argument(
        "--plot", metavar="SCENARIO", help="only draw docs/policies_<dataset>_<SCENARIO>.png from the recorded rows"
    )
    args = parser.parse_args()
    os.environ.setdefault("PIPELINE_LOG_LEVEL", "WARNING")
    results = args.results.resolve()
    done = json.loads(results.read_text()) if results.exists() else []
    if args.plot:
        print(plot(done, args.dataset, args.plot, ROOT / "docs" / f"policies_{args.dataset}_{args.plot}.png"))
        return
    if args.quick:
        args.dataset = "sine"
    if args.mode == "finetune" and args.dataset != "sine":
        parser.error("--mode finetune is measured on --dataset sine only")
    ds = DATASETS[args.dataset]
    cases = args.cases or [f"{s}:{p}" for s in (["line_slowdown"] if args.quick else ds.scenarios) for p in ds.policies]
    overrides = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in args.set)}
    mode = "-".join([args.mode, *(f"{k.removeprefix('finetune_')}{v}" for k, v in overrides.items())])
    if args.dataset != "sine":
        config = ds.write(WORK / args.dataset)
    else:
        config = write_case(WORK, name="policies") if args.mode == "refit" else _finetune_case(mode, overrides)
    if args.inherit:  # its own stores and initial champion (same weights: same data, seed and settings)
        raw = yaml.safe_load(config.read_text())
        raw["name"] = raw["mlflow"]["experiment_name"] = raw["mlflow"]["registered_model_name"] = f"{raw['name']}-inherit"
        raw.setdefault("monitoring", {})["inherit_training_rmse"] = True
        base, config = config.parent, config.parent / "inherit" / "config.yaml"
        config.parent.mkdir(parents=True, exist_ok=True)
        raw["data"]["path"] = str((base / raw["data"]["path"]).resolve())  # the sine's is relative to its config
        config.write_text(yaml.safe_dump(raw, sort_keys=False))
        mode += "+inherit"
    prefix = "" if args.dataset == "sine" else f"{args.dataset}/"
    mine = [f"{prefix}{c}@{mode}" if mode != "refit" else f"{prefix}{c}" for c in cases]
    for case, key in zip(cases, mine, strict=True):
        if any(r["case"] == key for r in done):
            continue
        row = {**run_case(case, config, mode, args.dataset), "case": key}
        done = json.loads(results.read_text()) if results.exists() else []  # another data set's stream may have appended
        done.append(row)
        results.parent.mkdir(parents=True, exist_ok=True)
        tmp = results.with_suffix(".tmp")
        tmp.write_text(json.dumps(done, indent=1))
        tmp.replace(results)
        print(json.dumps(row), flush=True)
    if ds.noise_floor is not None:
        print(f"noise floor (RMSE of a perfect forecast): {ds.noise_floor}")
    print(table([r for r in done if r["case"] in mine]))


def _finetune_case(mode: str, overrides: dict) -> Path:
    """The same case with ``retrain.mode: finetune`` (defaults: up to 20 epochs, 168 steps, 0.1 x the rate; ``overrides``
    of ``retrain.*``), in its own folder (``mode`` names it)."""
    config = write_case(WORK / mode, name=f"policies-{mode}")
    raw = yaml.safe_load(config.read_text())
    raw["retrain"] = {"mode": "finetune", **overrides}
    config.write_text(yaml.safe_dump(raw))
    return config


if __name__ == "__main__":
    main()
