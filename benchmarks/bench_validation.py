"""Validation of the timestamp column: one vectorised parse vs the per-row checks it replaced.

Data: the shipped Beijing PM2.5 file (43,824 hourly rows) and the same rows twice over
(87,648 rows, the copy's timestamps shifted past the last) for a 50k+ case. Measured: the whole
``validate_frame`` (GX suite and pandas checks), with and without ``data.timestamp_format``,
and, for reference, Great Expectations' per-row ``ExpectColumnValuesToBeDateutilParseable``
and ``ExpectColumnValuesToMatchStrftimeFormat`` alone on the timestamp column (what the
raw suite ran before 2026-12-04). Run: ``python benchmarks/bench_validation.py``.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import pandas as pd

from pipeline.core.config import load_config
from pipeline.data.io import read_raw
from pipeline.data.validation import _run_suite, validate_frame

ROOT = Path(__file__).resolve().parents[1]


def _seconds(fn, repeat: int = 2) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    import great_expectations as gx

    cfg = load_config(ROOT / "configs" / "beijing_pm25.yaml")
    raw = read_raw(cfg.data)
    later = raw.copy()
    ds = pd.to_datetime(raw[cfg.data.timestamp_column])
    later[cfg.data.timestamp_column] = (ds + (ds.max() - ds.min() + pd.Timedelta(hours=1))).dt.strftime("%Y-%m-%d %H:%M:%S")
    doubled = pd.concat([raw, later], ignore_index=True)
    inferred = cfg.model_copy(update={"data": cfg.data.model_copy(update={"timestamp_format": None})})
    col, fmt = cfg.data.timestamp_column, cfg.data.timestamp_format
    rows = []
    for name, frame in (("beijing", raw), ("beijing x2", doubled)):
        rows.append({
            "data": name, "rows": len(frame),
            "validate_frame, format given (s)": round(_seconds(lambda f=frame: validate_frame(f, cfg)), 2),
            "validate_frame, format inferred (s)": round(_seconds(lambda f=frame: validate_frame(f, inferred)), 2),
            "GX dateutil-parseable alone (s)": round(_seconds(lambda f=frame: _run_suite(f[[col]], [gx.expectations.ExpectColumnValuesToBeDateutilParseable(column=col)], "t"), 1), 2),
            "GX strftime-format alone (s)": round(_seconds(lambda f=frame: _run_suite(f[[col]], [gx.expectations.ExpectColumnValuesToMatchStrftimeFormat(column=col, strftime_format=fmt)], "t"), 1), 2),
        })  # fmt: skip
    print(json.dumps({"machine": f"{platform.machine()}, {platform.python_version()}", "results": rows}, indent=1))


if __name__ == "__main__":
    main()
