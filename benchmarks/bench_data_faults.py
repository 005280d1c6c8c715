"""The data-fault check alone (``pipeline/loop/data_faults.py``) on Beijing: false alarms and detection delay.

No model, no store, no MLflow: the check's statistics are a pure function of the observations
before ``T``, so a year of daily checks costs seconds, while a replay with training costs hours.

1. **Clean**: one check per day (``T`` at 00:00) over each year 2011-2014 of Beijing with the
   shipped config (``configs/beijing_pm25.yaml``): checks with any fault, per column.
2. **Faults**: each shipped scenario that changes units (``configs/scenarios``:
   ``recalibration_x2``, ``scale_x3``, ``level_shift``, ``temp_c_to_f``) plus x1000 on the
   target, ``TEMP`` and ``PRES`` and hPa -> kPa (x0.1) on ``PRES``, injected at 24 dates of 2013
   (the 1st and 15th of each month, 13:00, so the first check at the next 00:00 sees 11 h of
   the fault and the second a full day); the delay is the number of daily checks until the
   first fault naming the changed column (1 = the first check after the injection), up to 7.
   Stuck sensors (:data:`STUCK`): the target, ``DEWP``, ``TEMP`` or ``PRES`` holds its 13:00
   value from then on, at the same dates.

Run: ``python benchmarks/bench_data_faults.py`` (writes ``benchmarks/results/bench_data_faults.json``).
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.core.config import load_config
from pipeline.data.io import raw_to_long, read_raw
from pipeline.loop import data_faults
from pipeline.loop.scenarios import load_scenario

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "bench_data_faults.json"
MAX_CHECKS = 7


def _long(cfg) -> pd.DataFrame:
    return raw_to_long(read_raw(cfg.data), cfg.data)


def clean(cfg, long: pd.DataFrame, year: int) -> dict:
    per_column: dict[str, int] = {}
    checks = faulty = 0
    for T in pd.date_range(f"{year}-01-01", f"{year + 1}-01-01", freq="D", inclusive="left"):
        found = data_faults.detect(long, cfg, T)
        checks += 1
        faulty += bool(found)
        for f in found:
            per_column[f"{f.column}:{f.kind}"] = per_column.get(f"{f.column}:{f.kind}", 0) + 1
    return {"year": year, "checks": checks, "checks_with_fault": faulty, "per_column": per_column}


def faults() -> dict[str, tuple[str | None, float, float]]:
    out = {}
    for name in ("recalibration_x2", "scale_x3", "level_shift", "temp_c_to_f"):
        sc = load_scenario(name).with_defaults()
        out[name] = (sc.column, sc.factor, sc.offset)
    out.update({"target_x1000": (None, 1000.0, 0.0), "TEMP_x1000": ("TEMP", 1000.0, 0.0), "PRES_x1000": ("PRES", 1000.0, 0.0),
                "PRES_hPa_to_kPa": ("PRES", 0.1, 0.0)})  # fmt: skip
    return out


#: stuck sensors: the column holds its 13:00 value from then on (the check's ``stuck`` kind)
STUCK = {"target_stuck": None, "DEWP_stuck": "DEWP", "TEMP_stuck": "TEMP", "PRES_stuck": "PRES"}


def detection(cfg, long: pd.DataFrame, column: str | None, factor: float, offset: float, stuck: bool = False) -> dict:
    key = "y" if column is None else column
    name = cfg.data.target_column if column is None else column
    delays = []
    for day in pd.date_range("2013-01-01", "2013-12-31", freq="SMS"):
        at = day + pd.Timedelta("13h")
        changed = long.copy()
        after = changed["ds"] >= at
        if stuck:
            changed.loc[after, key] = changed.loc[after, key].iloc[0]
        else:
            changed.loc[after, key] = changed.loc[after, key] * factor + offset
        delay = None
        for k in range(1, MAX_CHECKS + 1):
            T = day + pd.Timedelta(days=k)
            if any(f.column == name for f in data_faults.detect(changed, cfg, T)):
                delay = k
                break
        delays.append(delay)
    hit = [d for d in delays if d is not None]
    return {"column": name, "factor": None if stuck else factor, "offset": None if stuck else offset, "stuck": stuck,
            "injections": len(delays), "detected": len(hit),
            "within_1_check": sum(d == 1 for d in hit), "within_2_checks": sum(d <= 2 for d in hit),
            "median_delay_checks": float(np.median(hit)) if hit else None, "delays": delays}  # fmt: skip


def main() -> None:
    cfg = load_config(ROOT / "configs" / "beijing_pm25.yaml")
    t0 = time.perf_counter()
    long = _long(cfg)
    result = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
              "windows": {k: str(v) for k, v in vars(data_faults.windows(cfg)).items()}, "clean": [], "faults": {}}  # fmt: skip
    for year in (2011, 2012, 2013, 2014):
        result["clean"].append(clean(cfg, long, year))
        print(result["clean"][-1], flush=True)
    for name, (column, factor, offset) in faults().items():
        result["faults"][name] = detection(cfg, long, column, factor, offset)
        r = result["faults"][name]
        print(name, {k: v for k, v in r.items() if k != "delays"}, flush=True)
    for name, column in STUCK.items():
        result["faults"][name] = detection(cfg, long, column, 1.0, 0.0, stuck=True)
        print(name, {k: v for k, v in result["faults"][name].items() if k != "delays"}, flush=True)
    result["seconds"] = time.perf_counter() - t0
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2, default=str))
    print(f"{result['seconds']:.0f} s -> {OUT}")


if __name__ == "__main__":
    main()
