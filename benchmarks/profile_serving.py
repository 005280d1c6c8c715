"""Where one online request's time goes: per-stage timings and a cProfile of the forecast handler's work.

The model is :mod:`benchmarks.bench_serving`'s (the tests' sine case, registered into a temporary
SQLite MLflow store); the request is one series' last 48 rows, sent with FastAPI's TestClient
(no network), one at a time.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/profile_serving.py [--requests 200] [--backend torch]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _ms(fn, n: int) -> dict:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    ms = np.array(out) * 1000
    return {"min_ms": round(float(ms.min()), 3), "p50_ms": round(float(np.median(ms)), 3), "mean_ms": round(float(ms.mean()), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--backend", default="torch", choices=("torch", "onnx"))
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args()
    import yaml
    from fastapi.testclient import TestClient

    from benchmarks.bench_serving import _register
    from pipeline.core.config import load_config
    from pipeline.data.io import output_zone, raw_to_long
    from pipeline.features.windowing import transform
    from pipeline.predict import forecast_history, tidy
    from pipeline.service.app import _records, create_app
    from pipeline.service.models import RegistrySource
    from pipeline.serving.pyfunc import add_intervals, forecast_frame, forecast_starts, history_to_long, range_warnings

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        config, _ = _register(root)
        raw = yaml.safe_load(config.read_text())
        raw["serving"]["backend"] = args.backend
        config.write_text(yaml.safe_dump(raw))
        cfg = load_config(config)
        os.environ.pop("MLFLOW_TRACKING_URI", None)
        if cfg.serving.torch_threads:  # as ``lstm-pipeline serve`` does
            import torch

            torch.set_num_threads(cfg.serving.torch_threads)
        history = pd.read_csv(root / "input.csv").tail(48)
        rows = json.loads(history.to_json(orient="records"))
        body = json.dumps({"rows": rows}).encode()
        loaded = RegistrySource(cfg).load("champion", 1)
        python_model = loaded.predict.__self__.unwrap_python_model()
        prep = python_model.prep
        frame = pd.DataFrame.from_records(rows)
        long = history_to_long(frame, prep)
        fs = transform(long, prep)
        x = fs.windows("forecast").x_view()[-1:]
        starts = forecast_starts(fs, None)
        y_hat = python_model.predict_windows(x)
        raw_forecast = python_model.predict(None, frame)
        result = forecast_history(loaded.predict, frame, "request body")
        n = args.requests
        stages = {
            "json.loads(body)": _ms(lambda: json.loads(body), n),
            "DataFrame.from_records(rows)": _ms(lambda: pd.DataFrame.from_records(rows), n),
            "pyfunc predict (MLflow wrapper: schema enforcement + model)": _ms(lambda: loaded.predict(frame), n),
            "forecast_history (pyfunc predict + tidy)": _ms(lambda: forecast_history(loaded.predict, frame, "request body"), n),
            "ForecastModel.predict (no MLflow wrapper)": _ms(lambda: python_model.predict(None, frame), n),
            "  history_to_long (raw_to_long + checks)": _ms(lambda: history_to_long(frame, prep), n),
            "  raw_to_long alone": _ms(lambda: raw_to_long(frame, prep, where="history"), n),
            "  transform": _ms(lambda: transform(long, prep), n),
            "  predict_windows (forward pass, 1 window)": _ms(lambda: python_model.predict_windows(x), n),
            "  forecast_starts": _ms(lambda: forecast_starts(fs, None), n),
            "  forecast_frame": _ms(lambda: forecast_frame(fs, starts, y_hat), n),
            "  add_intervals": _ms(lambda: add_intervals(forecast_frame(fs, starts, y_hat), y_hat, python_model.calibration, fs.lookback_targets(starts)), n),
            "  output_zone": _ms(lambda: output_zone(prep, frame.get(prep.timestamp_column)), n),
            "  range_warnings": _ms(lambda: range_warnings(x, prep, ["a"]), n),
            "tidy": _ms(lambda: tidy(raw_forecast), n),
            "_records (forecast -> JSON-able rows)": _ms(lambda: _records(result), n),
        }
        app = create_app(cfg, poll=False)
        app.state.reloader.poll_once()
        with TestClient(app) as client:
            for _ in range(20):
                assert client.post("/forecast", content=body, headers={"Content-Type": "application/json"}).status_code == 200
            stages["POST /forecast in-process (TestClient)"] = _ms(lambda: client.post("/forecast", content=body, headers={"Content-Type": "application/json"}), n)
        prof = cProfile.Profile()  # the handler's forecast thread, profiled in this thread (cProfile sees one thread)
        prof.enable()
        for _ in range(n):
            _records(forecast_history(loaded.predict, pd.DataFrame.from_records(rows), "request body"))
        prof.disable()
        print(f"backend {args.backend}, {n} repetitions each, load average {os.getloadavg()[0]:.2f} (machine shared with other jobs)")
        for name, t in stages.items():
            print(f"{t['min_ms']:8.3f} ms min {t['p50_ms']:8.3f} ms p50 {t['mean_ms']:8.3f} ms mean  {name}")
        s = io.StringIO()
        pstats.Stats(prof, stream=s).sort_stats("cumulative").print_stats(args.top)
        print(s.getvalue())
        s = io.StringIO()
        pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(args.top)
        print(s.getvalue())


if __name__ == "__main__":
    main()
