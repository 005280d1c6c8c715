"""Online service latency: p50/p95/p99 and throughput of one-series requests at 1, 8 and 32 concurrent
clients on loopback, torch vs onnxruntime backend, and the latency while a hot reload swaps versions.

Setup: the tests' sine case (lookback 24, horizon 4, 2 members, least-squares highway) trained and
registered into a local SQLite MLflow store under a temporary folder; ``lstm-pipeline serve`` started
as a subprocess per backend; clients are threads with keep-alive ``http.client`` connections, each
request the last 48 rows of the history. Bounded by ``--requests`` per level and ``--max-seconds``.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/bench_serving.py [--requests 300] [--out benchmarks/results/bench_serving.json]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _register(root: Path) -> tuple[Path, str]:
    from pipeline.core.config import load_config
    from pipeline.runner import run_training_pipeline
    from tests.conftest import write_sine_case

    config = write_sine_case(root, "bench-serving", "bench-serving-lstm")
    raw = yaml.safe_load(config.read_text())
    raw["model"]["ar_highway"], raw["training"]["n_seeds"] = True, 2
    uri = f"sqlite:///{root / 'mlflow.db'}"
    raw["mlflow"]["tracking_uri"] = uri
    raw["serving"] = {"poll_seconds": 1}
    config.write_text(yaml.safe_dump(raw))
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    result = run_training_pipeline(load_config(config), root / "artifacts" / "run-1")
    assert result["registered_version"] == 1, result
    return config, uri


def _start(config: Path, backend: str, port: int, root: Path) -> subprocess.Popen:
    raw = yaml.safe_load(config.read_text())
    raw["serving"]["backend"] = backend
    cfg = root / f"serve-{backend}.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "serve", "--config", str(cfg), "--port", str(port)],
                            env=env, stdout=open(root / f"serve-{backend}.log", "w"), stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    deadline = time.time() + 180
    while time.time() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/ready")
            if conn.getresponse().status == 200:
                return proc
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError((root / f"serve-{backend}.log").read_text()[-2000:])


def _client(port: int, body: bytes, n: int, stop_at: float, out: list[tuple[float, float, str]]) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    for _ in range(n):
        if time.time() > stop_at:
            break
        t0 = time.perf_counter()
        conn.request("POST", "/forecast", body=body, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 200, resp.status
        out.append((time.time(), time.perf_counter() - t0, resp.getheader("x-model-version")))


def _level(port: int, body: bytes, clients: int, requests: int, max_seconds: float) -> dict:
    out: list = []
    start, stop_at = time.perf_counter(), time.time() + max_seconds
    with ThreadPoolExecutor(clients) as pool:
        for f in [pool.submit(_client, port, body, requests // clients, stop_at, out) for _ in range(clients)]:
            f.result()
    wall = time.perf_counter() - start
    ms = np.array([o[1] for o in out]) * 1000
    return {"clients": clients, "requests": len(out), "wall_s": round(wall, 2), "throughput_rps": round(len(out) / wall, 1),
            "p50_ms": round(float(np.percentile(ms, 50)), 2), "p95_ms": round(float(np.percentile(ms, 95)), 2),
            "p99_ms": round(float(np.percentile(ms, 99)), 2)}  # fmt: skip


def _reload_cost(port: int, body: bytes, uri: str, root: Path) -> dict:
    """Latency of one client while champion moves 1 -> 2 (same artifacts, a new version): before vs the 3 s around the swap."""
    import mlflow

    client = mlflow.tracking.MlflowClient(uri)
    v1 = client.get_model_version("bench-serving-lstm", "1")
    v2 = client.create_model_version("bench-serving-lstm", v1.source, run_id=v1.run_id, model_id=v1.source.rsplit("/", 1)[-1]).version
    out: list = []
    t = threading.Thread(target=_client, args=(port, body, 100000, time.time() + 20, out))
    t.start()
    time.sleep(6)
    moved = time.time()
    client.set_registered_model_alias("bench-serving-lstm", "champion", v2)
    t.join()
    swapped = min((o[0] for o in out if o[2] == v2), default=None)
    before = np.array([o[1] for o in out if o[0] < moved]) * 1000
    during = np.array([o[1] for o in out if swapped and moved <= o[0] <= swapped + 1]) * 1000
    client.set_registered_model_alias("bench-serving-lstm", "champion", "1")
    return {"swap_after_s": round(swapped - moved, 2) if swapped else None,
            "before_p50_ms": round(float(np.median(before)), 2), "before_p99_ms": round(float(np.percentile(before, 99)), 2),
            "during_p50_ms": round(float(np.median(during)), 2) if len(during) else None,
            "during_max_ms": round(float(during.max()), 2) if len(during) else None, "during_requests": len(during)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=320, help="requests per concurrency level")
    parser.add_argument("--max-seconds", type=float, default=30.0, help="time cap per level")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "bench_serving.json")
    args = parser.parse_args()
    from tests.conftest import _free_port, stop_process_group

    results = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": f"{platform.node()} {os.cpu_count()} CPUs {platform.processor()}",
               "note": "machine shared with other jobs while measured", "backends": {}}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.time()
        config, uri = _register(root)
        results["train_register_s"] = round(time.time() - t0, 1)
        history = pd.read_csv(root / "input.csv").tail(48)
        body = json.dumps({"rows": json.loads(history.to_json(orient="records"))}).encode()
        for backend in ("torch", "onnx"):
            port = _free_port()
            proc = _start(config, backend, port, root)
            try:
                _level(port, body, 1, 20, 10)  # warm-up
                levels = [_level(port, body, c, args.requests, args.max_seconds) for c in (1, 8, 32)]
                results["backends"][backend] = {"levels": levels}
                print(backend, levels, flush=True)
                if backend == "torch":
                    results["hot_reload"] = _reload_cost(port, body, uri, root)
                    print("hot reload", results["hot_reload"], flush=True)
            finally:
                stop_process_group(proc)
    args.out.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
