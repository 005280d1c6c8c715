"""Filter once vs statsforecast's ``cross_validation`` for the same forecasts (Beijing PM2.5).

For AutoETS and AutoARIMA (season 24, fitted once on 672 h), forecasts 24 h ahead from
``--origins`` consecutive hourly origins three ways, and checks they agree:

* ``filter_once``: :func:`pipeline.models.baselines.forecast_segment` (one pass, states read at each origin);
* ``cv_growing``: ``StatsForecast.cross_validation(refit=False)``: ``forward`` on the whole
  history at every origin (cost grows with origins x test length);
* ``cv_rolling``: the same with ``input_size=672`` (a fixed window per origin: different
  numbers for ETS, whose states restart from the fitted initial state).

Usage: ``python benchmarks/bench_baselines.py [--origins 300 1000]``
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    sys.path.insert(0, str(ROOT))
    from statsforecast import StatsForecast

    from pipeline.models.baselines import BaselineSpec, fit_model, forecast_segment

    parser = argparse.ArgumentParser()
    parser.add_argument("--origins", type=int, nargs="*", default=[300, 1000])
    args = parser.parse_args()
    raw = pd.read_csv(ROOT / "data" / "beijing_pm25_hourly.csv.gz")
    y = raw["pm2.5"].interpolate(limit_direction="both").to_numpy(float)
    spec = BaselineSpec(("AutoETS", "AutoARIMA"), 24, (), 672, None, 6, 168, True, 1, False)
    W, h, lo = 672, 24, 35059 - 672
    rows = []
    for name in ("AutoETS", "AutoARIMA"):
        for n in args.origins:
            ys = y[lo : lo + W + n - 1 + h]
            origins = np.arange(W - 1, W - 1 + n)
            model = fit_model(name, spec, ys[:W])
            t = time.perf_counter()
            mine, _, _, _ = forecast_segment(name, spec, ys[: origins[-1] + 1], W, origins, h, model)
            t_mine = time.perf_counter() - t
            df = pd.DataFrame({"unique_id": "s", "ds": np.arange(len(ys)), "y": ys})
            timing = {}
            for label, input_size in (("cv_growing", None), ("cv_rolling", W)):
                sf = StatsForecast(models=[fit_model(name, spec, ys[:W]).new()], freq=1)
                t = time.perf_counter()
                cv = sf.cross_validation(df=df, h=h, step_size=1, test_size=len(ys) - W, refit=False, input_size=input_size)
                timing[label] = time.perf_counter() - t
                ref = cv.sort_values(["cutoff", "ds"])[name].to_numpy().reshape(-1, h)
                timing[label + "_max_rel_diff"] = float(np.max(np.abs(ref - mine) / np.maximum(np.abs(ref), 1e-9)))
            rows.append({"model": name, "origins": n, "filter_once_s": t_mine, **timing})
            print(json.dumps(rows[-1]), flush=True)


if __name__ == "__main__":
    main()
