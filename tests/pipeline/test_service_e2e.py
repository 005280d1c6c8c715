"""``lstm-pipeline serve`` as a subprocess on a free loopback port against a real ``mlflow server``,
and ``lstm-pipeline export-onnx`` of the same registered version (an ensemble of two members with
the least-squares highway)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from pipeline.cli import main
from pipeline.core.config import load_config
from pipeline.core.errors import DataQualityError
from pipeline.predict import tidy
from pipeline.runner import run_training_pipeline
from tests.conftest import ROOT, _free_port, stop_process_group, write_sine_case

pytestmark = pytest.mark.slow
MODEL_NAME = "served-sine-lstm"
TOKEN_ENV = "E2E_SERVE_TOKEN"
TOKEN = "e2e-token"


@pytest.fixture(scope="module")
def registered(mlflow_server, tmp_path_factory):
    """One gate-passing run registered on the real server (v1: champion) and a second version of the same run (v2)."""
    import mlflow

    root = tmp_path_factory.mktemp("service-e2e")
    config = write_sine_case(root, "served-sine", MODEL_NAME)
    raw = yaml.safe_load(config.read_text())
    raw["model"]["ar_highway"] = True  # the least-squares highway and two members: the whole forward pass is exported
    raw["training"]["n_seeds"] = 2
    raw["serving"] = {"poll_seconds": 1, "token_env": TOKEN_ENV, "max_rows": 1000, "timeout_s": 20}
    config.write_text(yaml.safe_dump(raw))
    old = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = mlflow_server
    try:
        result = run_training_pipeline(load_config(config), root / "artifacts" / "run-1")
        assert result["registered_version"] == 1, result
        client = mlflow.tracking.MlflowClient(mlflow_server)
        v1 = client.get_model_version(MODEL_NAME, "1")
        assert client.create_model_version(MODEL_NAME, v1.source, run_id=v1.run_id, model_id=v1.source.rsplit("/", 1)[-1]).version == "2"
        yield {"config": config, "csv": root / "input.csv", "root": root, "uri": mlflow_server, "client": client, "result": result}
    finally:
        os.environ.pop("MLFLOW_TRACKING_URI") if old is None else os.environ.__setitem__("MLFLOW_TRACKING_URI", old)


def _call(url: str, body: dict | bytes | None = None, token: str | None = TOKEN) -> tuple[int, dict, dict | str]:
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            status, headers, text = resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read().decode()
    except urllib.error.HTTPError as err:
        status, headers, text = err.code, {k.lower(): v for k, v in err.headers.items()}, err.read().decode()
    try:
        return status, headers, json.loads(text)
    except ValueError:
        return status, headers, text


@pytest.fixture(scope="module")
def service(registered):
    """``lstm-pipeline serve`` started as a subprocess; yields its base URL once ``/ready`` says 200."""
    port = _free_port()
    log = open(registered["root"] / "serve.log", "w")
    env = {**os.environ, "MLFLOW_TRACKING_URI": registered["uri"], TOKEN_ENV: TOKEN, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "serve", "--config", str(registered["config"]), "--port", str(port)],
                            cwd=registered["root"], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 180
    while True:
        try:
            if _call(url + "/ready")[0] == 200:
                break
        except OSError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            stop_process_group(proc) if proc.poll() is None else None
            raise RuntimeError(f"service did not become ready: {(registered['root'] / 'serve.log').read_text()[-3000:]}")
        time.sleep(0.5)
    yield {"url": url, "proc": proc, "log": registered["root"] / "serve.log"}
    stop_process_group(proc)
    log.close()


def _pyfunc(registered, ref: str = "champion"):
    import mlflow

    mlflow.set_tracking_uri(registered["uri"])
    return mlflow.pyfunc.load_model(f"models:/{MODEL_NAME}@{ref}" if not ref.isdigit() else f"models:/{MODEL_NAME}/{ref}")


def _rows(frame: pd.DataFrame) -> list[dict]:
    return json.loads(frame.to_json(orient="records"))


def _metrics(url: str) -> dict[tuple[str, tuple], float]:
    text = urllib.request.urlopen(url + "/metrics", timeout=30).read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in text_string_to_metric_families(text) for s in f.samples}


def _wait_for(predicate, timeout: float = 60.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"not true within {timeout} s")


def test_served_forecast_equals_the_pyfunc_and_bad_requests_are_refused(registered, service):
    url, raw = service["url"], pd.read_csv(registered["csv"])
    history = raw.tail(100)
    status, headers, body = _call(url + "/forecast", {"rows": _rows(history)})
    assert status == 200, body
    assert (body["model"], body["version"], body["alias"]) == (MODEL_NAME, 1, "champion")
    assert (headers["x-model-name"], headers["x-model-version"], headers["x-model-alias"]) == (MODEL_NAME, "1", "champion")
    expected = tidy(_pyfunc(registered).predict(history))
    got = pd.DataFrame(body["forecasts"])
    assert got["step"].tolist() == [1, 2, 3, 4] and got["ds"].tolist() == [t.isoformat() for t in expected["ds"]]
    np.testing.assert_allclose(got["yhat"].to_numpy(), expected["yhat"].to_numpy(), rtol=1e-6, atol=1e-9)

    with pytest.raises(DataQualityError) as pyfunc_error:
        _pyfunc(registered).predict(raw.tail(10))
    status, _, body = _call(url + "/forecast", {"rows": _rows(raw.tail(10))})
    assert status == 422 and body == {"error": "DataQualityError", "message": str(pyfunc_error.value)}
    status, _, body = _call(url + "/forecast", {"rows": _rows(raw.tail(30).drop(columns=["temp"]))})
    assert status == 422 and "history is missing column(s) ['temp']" in body["message"]
    status, _, body = _call(url + "/forecast", b"{oops")
    assert status == 422 and "invalid JSON" in body["message"]
    assert _call(url + "/forecast", {"rows": _rows(history)}, token=None)[0] == 401
    assert _call(url + "/forecast", {"rows": _rows(history)}, token="wrong")[0] == 401
    status, _, body = _call(url + "/forecast", {"rows": _rows(pd.concat([raw] * 3))})
    assert status == 413 and "over serving.max_rows=1000" in body["message"]
    metrics = _metrics(url)
    assert metrics[("lstm_serving_errors_total", (("kind", "DataQualityError"),))] == 2
    assert metrics[("lstm_serving_errors_total", (("kind", "invalid_body"),))] == 1
    assert metrics[("lstm_serving_errors_total", (("kind", "unauthorized"),))] == 2
    assert metrics[("lstm_serving_errors_total", (("kind", "too_large"),))] == 1
    assert metrics[("lstm_serving_request_duration_seconds_count", (("alias", "champion"), ("version", "1")))] >= 3
    assert metrics[("lstm_serving_model_version", (("alias", "champion"),))] == 1
    assert metrics[("lstm_serving_forecast_origin_timestamp_seconds", (("alias", "champion"),))] == pd.Timestamp(history["time"].iloc[-1], tz="UTC").timestamp()
    assert "Traceback" not in service["log"].read_text()


def test_alias_moves_are_picked_up_without_a_restart_and_a_failed_load_keeps_serving(registered, service):
    url, client, raw = service["url"], registered["client"], pd.read_csv(registered["csv"]).tail(60)
    pid = service["proc"].pid
    client.set_registered_model_alias(MODEL_NAME, "champion", "2")
    try:
        _wait_for(lambda: _call(url + "/forecast", {"rows": _rows(raw)})[2]["version"] == 2)
        status, headers, body = _call(url + "/forecast", {"rows": _rows(raw)})
        assert status == 200 and headers["x-model-version"] == "2"
        np.testing.assert_allclose([r["yhat"] for r in body["forecasts"]], tidy(_pyfunc(registered, "2").predict(raw))["yhat"], rtol=1e-6)
        v1 = client.get_model_version(MODEL_NAME, "1")  # a version whose source holds no model: its load fails
        broken = client.create_model_version(MODEL_NAME, f"runs:/{v1.run_id}/no-such-model", run_id=v1.run_id).version
        client.set_registered_model_alias(MODEL_NAME, "champion", broken)
        ready = _wait_for(lambda: (r := _call(url + "/ready")[2])["registry"].get("champion") == int(broken) and r["errors"] and r)
        assert ready["served"] == {"champion": 2} and f"loading v{broken} failed" in ready["errors"]["champion"]
        assert _call(url + "/forecast", {"rows": _rows(raw)})[2]["version"] == 2  # the old version keeps serving
        metrics = _metrics(url)
        assert metrics[("lstm_serving_model_load_failures_total", (("alias", "champion"),))] >= 1
        assert metrics[("lstm_serving_model_load_error", (("alias", "champion"),))] == 1
        assert metrics[("lstm_serving_registry_version", (("alias", "champion"),))] == int(broken)
        assert f"hot reload of champion v{broken} failed" in service["log"].read_text()
        assert service["proc"].poll() is None and service["proc"].pid == pid  # no restart
    finally:
        client.set_registered_model_alias(MODEL_NAME, "champion", "1")


def test_export_onnx_matches_torch_on_the_test_windows_and_the_folder_alone_reproduces_the_pyfunc(registered, tmp_path, capsys, monkeypatch):
    import onnx
    import torch

    from pipeline.features.windowing import load_features
    from pipeline.serving.export import OnnxForecaster

    monkeypatch.setenv("MLFLOW_TRACKING_URI", registered["uri"])
    out = tmp_path / "onnx"
    assert main(["export-onnx", "--config", str(registered["config"]), "--version", "1", "--out", str(out), "--json"]) == 0
    manifest = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (manifest["version"], manifest["opset"], manifest["members"]) == (1, 17, 2)
    assert sorted(p.name for p in out.iterdir()) == ["export.json", "intervals.json", "model.onnx", "preprocessing.json"]
    assert manifest["intervals"] == str(out / "intervals.json")
    graph = onnx.load(str(out / "model.onnx"))
    onnx.checker.check_model(graph)
    assert [o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")] == [17]
    assert graph.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"  # dynamic batch

    windows = load_features(Path(registered["result"]["run_dir"]) / "features").windows("test").X
    assert len(windows) > 50
    forecaster = _pyfunc(registered, "1").unwrap_python_model().forecaster
    with torch.no_grad():
        scaled_torch = forecaster._ensemble(torch.from_numpy(windows)).numpy()
    scaled_onnx = OnnxForecaster.load(out).predict_scaled(windows)
    assert np.abs(scaled_onnx - scaled_torch).max() <= 1e-5
    assert np.abs(OnnxForecaster.load(out).predict_scaled(windows[:1]) - scaled_torch[:1]).max() <= 1e-5  # batch of one too

    expected = _pyfunc(registered, "1").predict(pd.read_csv(registered["csv"]))
    bands = [c for c in expected.columns if c.startswith("yhat_")]
    assert bands, "the registered version has no prediction intervals: nothing to compare"
    script = textwrap.dedent(f"""
        import sys
        sys.modules["torch"] = None  # the folder alone: no torch, no MLflow registry
        import json, pandas as pd
        from pipeline.serving.export import load_folder
        frame = load_folder({str(out)!r}).predict(None, pd.read_csv({str(registered['csv'])!r}))
        print(json.dumps(frame[["yhat", *{bands!r}]].to_numpy().tolist()))
    """)
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"} | {"PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = np.array(json.loads(proc.stdout.strip().splitlines()[-1]), dtype=float)
    np.testing.assert_allclose(got, expected[["yhat", *bands]].to_numpy(dtype=float), rtol=1e-5, atol=1e-5)  # the bands too


def test_onnx_backend_serves_the_pyfuncs_forecast(registered, monkeypatch):
    from fastapi.testclient import TestClient

    from pipeline.service.app import create_app

    monkeypatch.setenv("MLFLOW_TRACKING_URI", registered["uri"])
    cfg = load_config(registered["config"], {"serving.backend": "onnx"})
    raw = pd.read_csv(registered["csv"]).tail(80)
    with TestClient(create_app(cfg, token=TOKEN)) as client:
        _wait_for(lambda: client.get("/ready").status_code == 200)
        resp = client.post("/forecast", json={"rows": _rows(raw)}, headers={"Authorization": f"Bearer {TOKEN}"})
    assert resp.status_code == 200, resp.text
    expected = tidy(_pyfunc(registered, "1").predict(raw))["yhat"].to_numpy()
    np.testing.assert_allclose([r["yhat"] for r in resp.json()["forecasts"]], expected, rtol=1e-5, atol=1e-5)
