"""Online service latency: p50/p95/p99 and throughput of one-series requests at 1, 8 and 32 concurrent
clients on loopback, torch vs onnxruntime backend; the hot reload (alias move -> first response from
the new version, latency around the swap); ``serving.torch_threads`` 1 vs 0 at one client; and the
``mlflow models serve`` anchor (the same version and rows to ``/invocations``) at 1 and 8 clients.

Setup: the tests' sine case (lookback 24, horizon 4, 2 members, least-squares highway) trained and
registered into a local SQLite MLflow store under a temporary folder; ``lstm-pipeline serve`` started
as a subprocess per backend; clients are threads with keep-alive ``http.client`` connections, each
request the last 48 rows of the history. Bounded by ``--requests`` per level and ``--max-seconds``
(the default run takes 2-3 minutes on the 2-core VM).

    PYTHONPATH=$PWD .venv/bin/python benchmarks/bench_serving.py [--requests 320] [--backends torch,onnx]
        [--levels 1,8,32] [--reload torch,onnx] [--threads-ab 3] [--mlflow-levels 1,8] [--out benchmarks/results/bench_serving.json]
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


def _start(config: Path, backend: str, port: int, root: Path, **serving) -> subprocess.Popen:
    raw = yaml.safe_load(config.read_text())
    raw["serving"].update(backend=backend, **serving)
    label = "-".join([backend, *(f"{k}{v}" for k, v in serving.items())])
    cfg = root / f"serve-{label}.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "serve", "--config", str(cfg), "--port", str(port)],
                            env=env, stdout=open(root / f"serve-{label}.log", "w"), stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
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
    raise RuntimeError((root / f"serve-{label}.log").read_text()[-2000:])


def _client(port: int, body: bytes, n: int, stop_at: float, out: list[tuple[float, float, str | None]], path: str = "/forecast",
            until: threading.Event | None = None) -> None:
    """``n`` requests (or until ``stop_at`` / ``until``) on one keep-alive connection: ``(end time, seconds, X-Model-Version)`` each."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    for _ in range(n):
        if time.time() > stop_at or (until is not None and until.is_set()):
            break
        t0 = time.perf_counter()
        conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        payload = resp.read()
        assert resp.status == 200, (resp.status, payload[:500])
        out.append((time.time(), time.perf_counter() - t0, resp.getheader("x-model-version")))


def _level(port: int, body: bytes, clients: int, requests: int, max_seconds: float, path: str = "/forecast") -> dict:
    out: list = []
    start, stop_at = time.perf_counter(), time.time() + max_seconds
    with ThreadPoolExecutor(clients) as pool:
        for f in [pool.submit(_client, port, body, requests // clients, stop_at, out, path) for _ in range(clients)]:
            f.result()
    wall = time.perf_counter() - start
    ms = np.array([o[1] for o in out]) * 1000
    return {"clients": clients, "requests": len(out), "wall_s": round(wall, 2), "throughput_rps": round(len(out) / wall, 1),
            "p50_ms": round(float(np.percentile(ms, 50)), 2), "p95_ms": round(float(np.percentile(ms, 95)), 2),
            "p99_ms": round(float(np.percentile(ms, 99)), 2)}  # fmt: skip


def _threads_ab(config: Path, root: Path, body: bytes, rounds: int, n: int) -> dict:
    """One client, torch backend, ``serving.torch_threads`` 1 vs 0 (torch's default, one per core): two
    servers up at once, ``rounds`` alternating bursts of ``n`` requests each, so both see the same load."""
    from tests.conftest import _free_port, stop_process_group

    procs, out = {}, {}
    try:
        for threads in (1, 0):
            port = _free_port()
            procs[threads] = (_start(config, "torch", port, root, torch_threads=threads), port)
            _level(port, body, 1, 20, 10)  # warm-up
        for _ in range(rounds):
            for threads, (_, port) in procs.items():
                runs: list = []
                _client(port, body, n, time.time() + 30, runs)
                out.setdefault(threads, []).extend(o[1] for o in runs)
    finally:
        for proc, _ in procs.values():
            stop_process_group(proc)
    result = {"rounds": rounds, "requests_per_burst": n}
    for threads, seconds in out.items():
        ms = np.array(seconds) * 1000
        result[f"torch_threads_{threads}"] = {"requests": len(ms), "p50_ms": round(float(np.median(ms)), 2), "p95_ms": round(float(np.percentile(ms, 95)), 2),
                                              "p99_ms": round(float(np.percentile(ms, 99)), 2), "max_ms": round(float(ms.max()), 2)}  # fmt: skip
    return result


def _stats(ms: np.ndarray, prefix: str) -> dict:
    if not len(ms):
        return {f"{prefix}_requests": 0}
    return {f"{prefix}_requests": len(ms), f"{prefix}_p50_ms": round(float(np.median(ms)), 2),
            f"{prefix}_p99_ms": round(float(np.percentile(ms, 99)), 2), f"{prefix}_max_ms": round(float(ms.max()), 2)}  # fmt: skip


def _metric(port: int, name: str, alias: str = "champion") -> float | None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/metrics")
    for line in conn.getresponse().read().decode().splitlines():
        if line.startswith(f'{name}{{alias="{alias}"}}'):
            return float(line.rsplit(" ", 1)[1])
    return None


def _reload_cost(port: int, body: bytes, uri: str, before_s: float = 6.0, after_s: float = 4.0, cap_s: float = 40.0) -> dict:
    """One client while ``champion`` moves to a new version (same artifacts): the time from the alias
    move to the first response from the new version, and the latency before the move vs in the
    seconds around the swap (from 2 s before the first new-version response to 2 s after it).

    The client runs ``before_s`` seconds, the alias moves, and it runs until ``after_s`` seconds after
    the first new-version response (at most ``cap_s`` seconds after the move); the alias moves back after."""
    import mlflow

    client = mlflow.tracking.MlflowClient(uri)
    name = "bench-serving-lstm"
    old = client.get_model_version_by_alias(name, "champion")
    new = str(client.create_model_version(name, old.source, run_id=old.run_id, model_id=old.source.rsplit("/", 1)[-1]).version)
    out: list = []
    done = threading.Event()
    t = threading.Thread(target=_client, args=(port, body, 10**6, time.time() + before_s + cap_s + after_s, out, "/forecast", done))
    t.start()
    time.sleep(before_s)
    moved = time.time()
    client.set_registered_model_alias(name, "champion", new)
    swapped = None
    while time.time() < moved + cap_s and swapped is None:
        time.sleep(0.05)
        swapped = next((o[0] for o in list(out) if o[2] == new), None)  # the header is text; MLflow's SQL store gives int versions
    if swapped is not None:
        time.sleep(after_s)
    done.set()
    t.join()
    load_s = _metric(port, "lstm_serving_model_load_seconds")
    client.set_registered_model_alias(name, "champion", str(old.version))
    ms = lambda rows: np.array([o[1] for o in rows]) * 1000  # noqa: E731
    result = {"from_version": int(old.version), "to_version": int(new), "swap_after_s": round(swapped - moved, 2) if swapped else None,
              "server_load_s": round(load_s, 2) if load_s is not None else None,
              "old_version_responses_after_move": sum(1 for o in out if o[0] >= moved and o[2] != new)}  # fmt: skip
    result.update(_stats(ms([o for o in out if o[0] < moved]), "before"))
    if swapped:
        result.update(_stats(ms([o for o in out if swapped - 2 <= o[0] <= swapped + 2]), "around"))
        result.update(_stats(ms([o for o in out if o[0] > swapped + 2]), "after"))
    return result


def _mlflow_serve(uri: str, version: int, port: int, root: Path) -> subprocess.Popen:
    """``mlflow models serve -m models:/<name>/<version> --env-manager local`` (one uvicorn worker, MLflow's default)."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PYTHONPATH": str(ROOT), "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
    cmd = [str(Path(sys.executable).parent / "mlflow"), "models", "serve", "-m", f"models:/bench-serving-lstm/{version}",
           "--env-manager", "local", "-p", str(port), "-h", "127.0.0.1"]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, stdout=open(root / "mlflow-serve.log", "w"), stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 180
    while time.time() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/ping")
            if conn.getresponse().status == 200:
                return proc
        except OSError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.5)
    raise RuntimeError((root / "mlflow-serve.log").read_text()[-2000:])


def mlflow_body(history: pd.DataFrame) -> bytes:
    """The same rows as MLflow 3's scoring protocol wants them: ``{"dataframe_split": {"columns", "data"}}``."""
    split = json.loads(history.to_json(orient="split", index=False))
    return json.dumps({"dataframe_split": {"columns": split["columns"], "data": split["data"]}}).encode()


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def _names(text: str) -> list[str]:
    return [x for x in text.split(",") if x]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=320, help="requests per concurrency level")
    parser.add_argument("--max-seconds", type=float, default=25.0, help="time cap per level")
    parser.add_argument("--backends", type=_names, default=["torch", "onnx"], help="lstm-pipeline serve backends, comma-separated")
    parser.add_argument("--levels", type=_ints, default=[1, 8, 32], help="client counts for lstm-pipeline serve")
    parser.add_argument("--reload", type=_names, default=["torch", "onnx"], help="backends whose hot reload is measured ('' for none)")
    parser.add_argument("--mlflow-levels", type=_ints, default=[1, 8], help="client counts for `mlflow models serve` ('' to skip it)")
    parser.add_argument("--threads-ab", type=int, default=3, help="rounds of the torch_threads 1 vs 0 comparison at 1 client (0 to skip it)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "bench_serving.json")
    args = parser.parse_args()
    from tests.conftest import _free_port, stop_process_group

    results = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": f"{platform.node()} {os.cpu_count()} CPUs {platform.processor()}",
               "note": "machine shared with other jobs while measured", "loadavg_start": [round(x, 2) for x in os.getloadavg()],
               "backends": {}}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.time()
        config, uri = _register(root)
        results["train_register_s"] = round(time.time() - t0, 1)
        history = pd.read_csv(root / "input.csv").tail(48)
        body = json.dumps({"rows": json.loads(history.to_json(orient="records"))}).encode()
        for backend in args.backends:
            port = _free_port()
            proc = _start(config, backend, port, root)
            try:
                _level(port, body, 1, 20, 10)  # warm-up
                levels = [_level(port, body, c, args.requests, args.max_seconds) for c in args.levels]
                results["backends"][backend] = {"levels": levels}
                print(backend, levels, flush=True)
                if backend in args.reload:
                    results["backends"][backend]["hot_reload"] = _reload_cost(port, body, uri)
                    print(backend, "hot reload", results["backends"][backend]["hot_reload"], flush=True)
            finally:
                stop_process_group(proc)
        if args.threads_ab:
            results["torch_threads_ab"] = _threads_ab(config, root, body, args.threads_ab, 50)
            print("torch_threads 1 vs 0", results["torch_threads_ab"], flush=True)
        if args.mlflow_levels:
            port = _free_port()
            proc = _mlflow_serve(uri, 1, port, root)
            try:
                mbody = mlflow_body(history)
                _level(port, mbody, 1, 20, 10, "/invocations")  # warm-up
                levels = [_level(port, mbody, c, args.requests, args.max_seconds, "/invocations") for c in args.mlflow_levels]
                results["mlflow_models_serve"] = {"levels": levels, "body": "dataframe_split", "workers": 1}
                print("mlflow models serve", levels, flush=True)
            finally:
                stop_process_group(proc)
    results["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    args.out.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
