"""Retrain policies side by side (issue 22): never, periodic, the rule, the oracle, on the same replays.

Every case is one :func:`pipeline.loop.replay.run_replay` with its own stores; only
``--policy`` differs, so the initial champion (trained as of ``start``) is shared. The data
set is ``make loop-demo``'s (``tools/loop_demo.py``), a generated hourly series with a known noise floor: ``load = 10 + 3 sin(2 pi t / 24) +
N(0, 0.1)`` plus a ``temp`` covariate, 32 days; champion as of day 20, fault on day 22,
checks every 12 h to day 32. Scenarios: the concept-drift faults a retrain can fix
(``configs/scenarios``: ``line_slowdown`` period x 2, ``tariff_profile``) and the clean
control. Triggered retrains use ``retrain.mode: refit``. The gate compares with the naive forecast only:
on a noiseless-shape sine the seasonal naive sits at the noise floor (x sqrt 2) and no LSTM clears it by 5%.

Results are appended per case to ``benchmarks/results/bench_policies.json`` (a rerun skips
the cases done); the Markdown table for docs/BENCHMARKS.md is printed. Usage:

    python benchmarks/bench_policies.py [--quick] [--cases line_slowdown:rule ...]

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


def run_case(case: str, config: Path) -> dict:
    from pipeline.core.config import load_config
    from pipeline.loop.replay import ReplaySpec, parse_policy, run_replay
    from pipeline.loop.scenarios import load_scenario

    scenario, policy = case.split(":", 1)
    spec = ReplaySpec(start=pd.Timestamp(START), end=pd.Timestamp(END), scenario=load_scenario(scenario),
                      inject_at=pd.Timestamp(INJECT), policy=parse_policy(policy))  # fmt: skip
    summary = run_replay(load_config(config), spec, progress=False)
    return {"case": case, "scenario": scenario, **{k: summary.get(k) for k in KEYS}}


def table(rows: list[dict]) -> str:
    head = ["scenario", *KEYS]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in rows:
        cells = [r["scenario"]] + [f"{r[k]:.3f}" if isinstance(r.get(k), float) else str(r.get(k)) for k in KEYS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="line_slowdown under the four policies")
    parser.add_argument("--cases", nargs="*", help="scenario:policy pairs")
    args = parser.parse_args()
    os.environ.setdefault("PIPELINE_LOG_LEVEL", "WARNING")
    cases = args.cases or [f"{s}:{p}" for s in (["line_slowdown"] if args.quick else SCENARIOS) for p in POLICIES]
    config = write_case(WORK, name="policies")
    done = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
    for case in cases:
        if any(r["case"] == case for r in done):
            continue
        done.append(run_case(case, config))
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(done, indent=1))
        print(json.dumps(done[-1]), flush=True)
    print(f"noise floor (RMSE of a perfect forecast): {NOISE_STD}")
    print(table([r for r in done if r["case"] in cases]))


if __name__ == "__main__":
    main()
