"""What the naive-relative rule would have said on a finished replay's own forecasts (offline).

Reads a replay folder (``artifacts/replay/<id>/``): its timeline, its forecast store and its
drifted data copy, and for every tick ``T`` recomputes, from the stored scores of the
champion of that tick and the observations with ``ds < T``, the champion's rolling RMSE and
a naive forecast's on the same complete origins (``pipeline.loop.monitoring.naive_rolling_rmse``).
It does not replay the loop (no cooldowns, no retrains): it answers "on these forecasts,
when would ``champion > k x naive`` have fired?". Usage:

    python benchmarks/loop_skill_offline.py artifacts/replay/<id> [--k 1.0] [--model naive]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def skill_table(folder: Path, config: Path, model: str = "naive") -> list[dict]:
    import pandas as pd

    from pipeline.core import schema
    from pipeline.core.config import load_config
    from pipeline.data.io import read_raw
    from pipeline.data.validation import validate_frame
    from pipeline.loop.monitoring import naive_rolling_rmse
    from pipeline.store.sql import ForecastStore

    cfg = load_config(config)
    timeline = pd.read_csv(folder / "timeline.csv") if (folder / "timeline.csv").exists() else pd.DataFrame(
        [json.loads(p.read_text()) for p in sorted((folder / "ticks").glob("*.json"))])  # fmt: skip
    long = validate_frame(read_raw(cfg.data, folder / "data.csv.gz"), cfg).frame[[schema.UNIQUE_ID, schema.DS, schema.Y]]
    store = ForecastStore(f"sqlite:///{folder / 'store.db'}")
    window, step = pd.Timedelta(cfg.monitoring.window), pd.Timedelta(hours=1)
    rows = []
    for _, tick in timeline.iterrows():
        T = pd.Timestamp(tick["as_of"])
        if pd.isna(tick.get("champion_version")):
            continue
        scored = store.scored(cfg.mlflow.registered_model_name, int(tick["champion_version"]), since=T - window, until=T)
        scored = scored[scored["ds"] < T]
        champ, naive, n = naive_rolling_rmse(scored, long[long[schema.DS] < T], cfg.features.horizon, model, cfg.baselines.season_length, step)
        rows.append({"as_of": T.isoformat(), "champion_version": int(tick["champion_version"]), "n": n, "champion_rmse": champ,
                     "naive_rmse": naive, "ratio": champ / naive if naive else float("nan"), "decision": tick["decision"],
                     "rolling_rmse": tick.get("rolling_rmse"), "threshold": tick.get("threshold")})  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--config", type=Path, default=Path(__file__).resolve().parents[1] / "configs" / "beijing_pm25_replay.yaml")
    parser.add_argument("--k", type=float, default=1.0)
    parser.add_argument("--model", default="naive")
    args = parser.parse_args(argv)
    rows = skill_table(args.folder, args.config, args.model)
    fired = [r for r in rows if r["n"] >= 24 and r["ratio"] > args.k]
    for r in rows:
        print(f"{r['as_of'][:10]} v{r['champion_version']} n={r['n']:3d} champion {r['champion_rmse']:7.1f} naive {r['naive_rmse']:7.1f} "
              f"ratio {r['ratio']:.3f} {'FIRE' if r in fired else ''} (replay: {r['decision']})")
    print(json.dumps({"ticks": len(rows), "k": args.k, "model": args.model, "would_fire": [r["as_of"][:10] for r in fired]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
