"""Retrain policies side by side (issue 22): never, periodic, the rule, the oracle, on the same replays.

Every case is one :func:`pipeline.loop.replay.run_replay` with its own stores; only
``--policy`` differs, so the initial champion (trained as of ``start``) is shared. The data
set is ``make loop-demo``'s (``tools/loop_demo.py``), a generated hourly series with a known noise floor: ``load = 10 + 3 sin(2 pi t / 24) +
N(0, 0.1)`` plus a ``temp`` covariate, 32 days; champion as of day 20, fault on day 22,
checks every 12 h to day 32. Scenarios: the concept-drift faults a retrain can fix
(``configs/scenarios``: ``line_slowdown`` period x 2, ``tariff_profile``) and the clean
control. Triggered retrains use ``retrain.mode: refit``, or ``finetune`` with ``--mode finetune`` (its own
stores, its own initial champion: same data, seed and config but the name, so the same weights). The gate compares with the naive forecast only:
on a noiseless-shape sine the seasonal naive sits at the noise floor (x sqrt 2) and no LSTM clears it by 5%.

Results are appended per case to ``benchmarks/results/bench_policies.json`` (a rerun skips
the cases done); the Markdown table for docs/BENCHMARKS.md is printed. Usage:

    python benchmarks/bench_policies.py [--quick] [--cases line_slowdown:rule ...] [--mode refit|finetune] [--results PATH]

``--quick``: ``line_slowdown`` under the four policies (about 15-25 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository's tools/ (not installed)
from tools.loop_demo import END, INJECT, NOISE_STD, START, write_case  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "bench_policies.json"
WORK = ROOT / "artifacts" / "bench_policies"
POLICIES = ["never", "periodic:3D", "rule", "oracle:3D"]
SCENARIOS = ["line_slowdown", "tariff_profile", "none"]
KEYS = ["policy", "rmse_published", "rmse_pre_fault", "rmse_post_fault", "rmse_post_fault_settled", "trainings", "promotions",
        "worse_promotions", "worse_promotions_unmeasured", "false_triggers", "detection_delay_h", "recovery_delay_h", "cpu_s", "wall_s"]  # fmt: skip
#: per tick of the timeline: CPU seconds of the ticks that trained (check + training + canary), mean; of the others, median
TICK_KEYS = ["train_tick_cpu_s", "other_tick_cpu_s"]


def _tick_cpu(timeline: str) -> dict:
    frame = pd.read_csv(timeline)
    trained = frame["trained_run"].notna()
    return {"train_tick_cpu_s": float(frame.loc[trained, "cpu_s"].mean()) if trained.any() else None,
            "other_tick_cpu_s": float(frame.loc[~trained, "cpu_s"].median()) if (~trained).any() else None}  # fmt: skip


def run_case(case: str, config: Path, mode: str = "refit") -> dict:
    from pipeline.core.config import load_config
    from pipeline.loop.replay import ReplaySpec, parse_policy, run_replay
    from pipeline.loop.scenarios import load_scenario

    scenario, policy = case.split(":", 1)
    spec = ReplaySpec(start=pd.Timestamp(START), end=pd.Timestamp(END), scenario=load_scenario(scenario),
                      inject_at=pd.Timestamp(INJECT), policy=parse_policy(policy))  # fmt: skip
    summary = run_replay(load_config(config), spec, progress=False)
    return {"case": case, "scenario": scenario, "mode": mode, **{k: summary.get(k) for k in KEYS}, **_tick_cpu(summary["timeline"])}


def table(rows: list[dict]) -> str:
    keys = [*KEYS, *TICK_KEYS] if any("mode" in r for r in rows) else KEYS
    head = ["scenario", "retrain.mode", *keys]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in rows:
        cells = [r["scenario"], r.get("mode", "refit")] + [f"{r[k]:.3f}" if isinstance(r.get(k), float) else str(r.get(k)) for k in keys]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="line_slowdown under the four policies")
    parser.add_argument("--cases", nargs="*", help="scenario:policy pairs")
    parser.add_argument("--mode", choices=["refit", "finetune"], default="refit", help="retrain.mode of the triggered retrains")
    parser.add_argument("--results", type=Path, default=RESULTS, help="the JSON the rows are appended to")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="retrain.<KEY> for --mode finetune, e.g. finetune_epochs=20")
    args = parser.parse_args()
    os.environ.setdefault("PIPELINE_LOG_LEVEL", "WARNING")
    cases = args.cases or [f"{s}:{p}" for s in (["line_slowdown"] if args.quick else SCENARIOS) for p in POLICIES]
    import yaml

    overrides = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in args.set)}
    mode = "-".join([args.mode, *(f"{k.removeprefix('finetune_')}{v}" for k, v in overrides.items())])
    config = write_case(WORK, name="policies") if args.mode == "refit" else _finetune_case(mode, overrides)
    results = args.results.resolve()
    done = json.loads(results.read_text()) if results.exists() else []
    mine = [f"{c}@{mode}" if args.mode != "refit" else c for c in cases]
    for case, key in zip(cases, mine, strict=True):
        if any(r["case"] == key for r in done):
            continue
        done.append({**run_case(case, config, mode), "case": key})
        results.parent.mkdir(parents=True, exist_ok=True)
        results.write_text(json.dumps(done, indent=1))
        print(json.dumps(done[-1]), flush=True)
    print(f"noise floor (RMSE of a perfect forecast): {NOISE_STD}")
    print(table([r for r in done if r["case"] in mine]))


def _finetune_case(mode: str, overrides: dict) -> Path:
    """The same case with ``retrain.mode: finetune`` (defaults: up to 20 epochs, 168 steps, 0.1 x the rate; ``overrides``
    of ``retrain.*``), in its own folder (``mode`` names it)."""
    import yaml

    config = write_case(WORK / mode, name=f"policies-{mode}")
    raw = yaml.safe_load(config.read_text())
    raw["retrain"] = {"mode": "finetune", **overrides}
    config.write_text(yaml.safe_dump(raw))
    return config


if __name__ == "__main__":
    main()
