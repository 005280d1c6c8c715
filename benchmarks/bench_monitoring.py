"""Seconds per monitoring check against the window length and the drift reference size.

Setup: an hourly sine series with a temperature covariate and a categorical wind column
(``tests.conftest.sine_frame``), a small LSTM (hidden 16, 1 layer) trained and registered
as of ``T0`` in a local SQLite MLflow store inside a temporary folder (no server: the
check's own work is what is measured, not HTTP round trips).

1. ``run_check`` as of ``T0 + window`` for windows of 1, 7 and 28 days, each check
   forecasting ``window`` x 24 origins (its first run; the process has already imported
   everything once, so import time is not counted), then the same check again (a rerun:
   forecasts and scores are upserted over themselves).
2. ``pipeline.loop.drift.detect`` alone for reference sizes of 1,000, 10,000 and 30,000 rows
   against a week of hourly rows (168).

Run: ``python benchmarks/bench_monitoring.py`` (writes ``benchmarks/results/bench_monitoring.json``).
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.core.config import load_config  # noqa: E402
from pipeline.loop.drift import detect  # noqa: E402
from pipeline.loop.monitoring import run_check  # noqa: E402
from pipeline.runner import run_training_pipeline  # noqa: E402
from tests.conftest import FAST_MODEL, FAST_TRAINING, sine_frame, tiny_config_dict  # noqa: E402

WINDOWS_DAYS = (1, 7, 28)
REFERENCE_ROWS = (1_000, 10_000, 30_000)
N_TRAIN = 600


def _case(root: Path) -> tuple[Path, pd.Timestamp]:
    n = N_TRAIN + 24 * max(WINDOWS_DAYS) + 24
    csv = root / "series.csv"
    sine_frame(n=n).to_csv(csv, index=False)
    raw = tiny_config_dict(csv, root / "artifacts", features={"lookback": 24, "horizon": 4}, training=FAST_TRAINING, model=FAST_MODEL)
    raw["baselines"] = {"models": ["Naive"], "season_length": 24}
    raw["mlflow"] = {"tracking_uri": f"sqlite:///{root / 'mlflow.db'}", "experiment_name": "bench", "registered_model_name": "bench-sine"}
    raw["monitoring"] = {"min_origins": 12, "max_staleness": "2D"}
    (root / "config.yaml").write_text(yaml.safe_dump(raw))
    return root / "config.yaml", pd.Timestamp("2024-01-01") + pd.Timedelta(hours=N_TRAIN)


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def bench_checks(root: Path) -> list[dict]:
    config, t0 = _case(root)
    cfg = load_config(config)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    run_training_pipeline(cfg, root / "artifacts" / "train", as_of=t0.isoformat())
    run_check(load_config(config, {"monitoring.window": "1D", "monitoring.store_url": f"sqlite:///{root}/warmup.db"}), t0 + pd.Timedelta("1D"), since=t0)
    rows = []
    for days in WINDOWS_DAYS:
        window = f"{days}D"
        c = load_config(config, {"monitoring.window": window, "monitoring.store_url": f"sqlite:///{root}/w{days}.db"})
        T = t0 + pd.Timedelta(window)
        check, first = _timed(lambda c=c, T=T: run_check(c, T, since=t0))
        _, rerun = _timed(lambda c=c, T=T: run_check(c, T, since=t0))
        rows.append({"window_days": days, "origins": days * 24, "decision": check["decision"], "first_s": round(first, 2), "rerun_s": round(rerun, 2)})
        print(rows[-1], flush=True)
    return rows


def bench_drift() -> list[dict]:
    from pipeline.core.config import MonitoringConfig

    rng = np.random.default_rng(0)
    current = pd.DataFrame({"y": rng.normal(0, 1, 168), "temp": rng.normal(0, 1, 168), "wind": rng.choice(list("NSE"), 168)})
    rows = []
    for n in REFERENCE_ROWS:
        reference = pd.DataFrame({"y": rng.normal(0, 1, n), "temp": rng.normal(0, 1, n), "wind": rng.choice(list("NSE"), n)})
        mc = MonitoringConfig(reference_max_rows=n)
        detect(reference, current, ["y", "temp"], ["wind"], mc)  # warm-up
        _, seconds = _timed(lambda reference=reference, mc=mc: detect(reference, current, ["y", "temp"], ["wind"], mc))
        rows.append({"reference_rows": n, "current_rows": 168, "drift_s": round(seconds, 2)})
        print(rows[-1], flush=True)
    return rows


def main() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        checks = bench_checks(Path(tmp))
    result = {"checks": checks, "drift": bench_drift(), "cpu_count": os.cpu_count(), "platform": platform.platform(),
              "date": time.strftime("%Y-%m-%d")}  # fmt: skip
    out = ROOT / "benchmarks" / "results" / "bench_monitoring.json"
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
