"""The online service in-process (FastAPI's TestClient): the HTTP contract, canary routing, hot reload.

The versions are real pyfuncs (:class:`pipeline.serving.pyfunc.ForecastModel` with seeded,
untrained members) held in a small in-memory registry, so these run in seconds; the same service
against a real MLflow server, started as a subprocess, is ``test_service_e2e.py``.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from pipeline.core.config import load_config
from pipeline.core.errors import ConfigError, DataQualityError, RegistryError, StoreError
from pipeline.data.io import read_raw
from pipeline.data.validation import validate_frame
from pipeline.features.windowing import build_features
from pipeline.models.lstm import LSTMForecaster, build_model
from pipeline.predict import tidy
from pipeline.service.app import create_app, resolve_token, route
from pipeline.service.models import Loaded, canary_share
from pipeline.serving.pyfunc import ForecastModel
from tests.conftest import FAST_MODEL, sine_frame, tiny_config_dict

N_SERIES = 16


def _model(prep, mc, seed: int) -> ForecastModel:
    torch.manual_seed(seed)
    members = [build_model(prep.n_features, prep.horizon, mc, prep.lookback) for _ in range(2)]
    for member in members:
        torch.nn.init.normal_(member.highway.weight, std=0.3)
    return ForecastModel().use(LSTMForecaster.from_members(members, prep))


class MemoryRegistry:
    """Versions and aliases in memory, with the interface of :class:`pipeline.service.models.RegistrySource`."""

    def __init__(self, versions: dict[int, ForecastModel]):
        self.versions, self.alias_map, self.broken, self.loads = versions, {}, set(), []
        self.check = {"champion_version": 1, "rolling_rmse": 0.5, "threshold": 0.8, "as_of": "2026-12-01T00:00:00"}
        self.factors: dict[int, dict] = {}  # version -> {level_label: [factor per step]} as of self.check
        self.factor_reads: list[int] = []
        self.store_down = False

    def aliases(self) -> dict[str, int]:
        return dict(self.alias_map)

    def load(self, alias: str, version: int) -> Loaded:
        self.loads.append((alias, version))
        if version in self.broken:
            raise RegistryError(f"could not load v{version}: artifacts missing")
        fm = self.versions[version]
        return Loaded(alias, version, lambda df: fm.predict(None, df), "torch", fm.prep.series_id_column, time.time(), 1.7e9, fm.calibration)

    def last_check(self):
        return self.check

    def interval_factors(self, version, calibration, check):
        assert check == self.check
        self.factor_reads.append(version)
        if self.store_down:
            raise StoreError("forecast store unreachable: connection refused")
        return (self.factors[version], self.check["as_of"]) if version in self.factors else None


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    """``(cfg, raw, {1: model, 2: model})``: 16 hourly series ``s00..s15`` of 60 rows, lookback 24, horizon 4."""
    root = tmp_path_factory.mktemp("service")
    frames = []
    for k in range(N_SERIES):
        f = sine_frame(n=60, seed=k)
        f["site"] = f"s{k:02d}"
        frames.append(f)
    pd.concat(frames).to_csv(root / "input.csv", index=False)
    raw_cfg = tiny_config_dict(root / "input.csv", root / "artifacts", features={"lookback": 24, "horizon": 4},
                               model={**FAST_MODEL, "ar_highway": True}, data={"series_id_column": "site"})  # fmt: skip
    (root / "config.yaml").write_text(yaml.safe_dump(raw_cfg))
    cfg = load_config(root / "config.yaml")
    raw = read_raw(cfg.data)
    prep = build_features(validate_frame(raw, cfg).frame, cfg).prep
    return cfg, raw, {1: _model(prep, cfg.model, 0), 2: _model(prep, cfg.model, 1)}


def _app(case, aliases=None, **serving):
    cfg, _, versions = case
    cfg = cfg.model_copy(update={"serving": cfg.serving.model_copy(update=serving)})
    registry = MemoryRegistry(versions)
    registry.alias_map = {"champion": 1} if aliases is None else aliases
    app = create_app(cfg, source=registry, token=serving.get("token"), poll=False)
    app.state.reloader.poll_once()
    return app, registry


def _rows(raw: pd.DataFrame) -> list[dict]:
    return json.loads(raw.to_json(orient="records"))


def _metrics(client) -> dict[tuple[str, tuple], float]:
    out = {}
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_forecast_equals_the_pyfunc_and_names_the_version(case):
    _, raw, versions = case
    app, _ = _app(case)
    with TestClient(app) as client:
        resp = client.post("/forecast", json={"rows": _rows(raw)})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert (body["model"], body["version"], body["alias"]) == ("tiny-lstm", 1, "champion")
    assert (resp.headers["x-model-name"], resp.headers["x-model-version"], resp.headers["x-model-alias"]) == ("tiny-lstm", "1", "champion")
    expected = tidy(versions[1].predict(None, raw))
    got = pd.DataFrame(body["forecasts"])
    assert list(got.columns) == ["unique_id", "ds", "step", "yhat"] and len(got) == N_SERIES * 4
    assert got["unique_id"].tolist() == expected["unique_id"].tolist() and got["step"].tolist() == expected["step"].tolist()
    assert got["ds"].iloc[0] == "2024-01-03T12:00:00"  # ISO 8601, one step after the last row
    np.testing.assert_array_equal(got["yhat"].to_numpy(), expected["yhat"].to_numpy())  # the same computation, bit for bit
    assert body["routes"] == [{"alias": "champion", "version": 1, "unique_ids": [f"s{k:02d}" for k in range(N_SERIES)], "bands": None, "bands_as_of": None}]


def test_bad_input_gets_422_with_the_pyfuncs_located_message(case):
    _, raw, versions = case
    short = raw[raw["site"] == "s03"].tail(10)
    with pytest.raises(DataQualityError) as pyfunc_error:
        versions[1].predict(None, short)
    app, _ = _app(case)
    with TestClient(app) as client:
        resp = client.post("/forecast", json={"rows": _rows(short)})
        assert resp.status_code == 422 and resp.json() == {"error": "DataQualityError", "message": str(pyfunc_error.value)}
        assert "series 's03': history has 10 steps, at least lookback=24" in resp.json()["message"]
        missing = client.post("/forecast", json={"rows": _rows(raw.drop(columns=["temp"]))})
        assert missing.status_code == 422 and "history is missing column(s) ['temp']" in missing.json()["message"]
        bad_value = raw.copy()
        bad_value.loc[5, "load"] = "lots"
        resp = client.post("/forecast", json={"rows": _rows(bad_value)})
        assert resp.status_code == 422 and "'load'" in resp.json()["message"] and "lots" in resp.json()["message"], resp.text
        for content, message in ((b"{not json", "found invalid JSON"), (b'{"history": []}', "found an object with keys ['history']"),
                                 (b'{"rows": 3}', "'rows' must be a list"), (b'{"rows": [1]}', "rows[0]: expected an object")):  # fmt: skip
            resp = client.post("/forecast", content=content, headers={"content-type": "application/json"})
            assert resp.status_code == 422 and message in resp.json()["message"] and "Traceback" not in resp.text, (content, resp.text)
        empty = client.post("/forecast", json={"rows": []})
        assert empty.status_code == 422 and "history has no rows" in empty.json()["message"]
        metrics = _metrics(client)
    assert metrics[("lstm_serving_errors_total", (("kind", "DataQualityError"),))] == 4
    assert metrics[("lstm_serving_errors_total", (("kind", "invalid_body"),))] == 4
    assert metrics[("lstm_serving_requests_total", (("code", "422"), ("endpoint", "/forecast")))] == 8


def test_token_rows_cap_and_timeout(case, monkeypatch):
    _, raw, _ = case
    cfg = case[0].model_copy(update={"serving": case[0].serving.model_copy(update={"token_env": "TEST_SERVE_TOKEN"})})
    monkeypatch.delenv("TEST_SERVE_TOKEN", raising=False)
    with pytest.raises(ConfigError, match="TEST_SERVE_TOKEN"):  # set in the config, missing in the environment: refuse to start
        resolve_token(cfg)
    monkeypatch.setenv("TEST_SERVE_TOKEN", "s3cret")
    assert resolve_token(cfg) == "s3cret"
    app, _ = _app(case, token="s3cret", max_rows=len(raw))
    body = {"rows": _rows(raw)}
    with TestClient(app) as client:
        assert client.post("/forecast", json=body).status_code == 401
        wrong = client.post("/forecast", json=body, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.json()["error"] == "unauthorized"
        assert client.post("/forecast", json=body, headers={"Authorization": "Bearer s3cret"}).status_code == 200
        big = client.post("/forecast", json={"rows": _rows(raw) + _rows(raw.tail(1))}, headers={"Authorization": "Bearer s3cret"})
        assert big.status_code == 413 and f"over serving.max_rows={len(raw)}" in big.json()["message"]
        huge = client.post("/forecast", content=b" " * (len(raw) * 4096 + 1), headers={"Authorization": "Bearer s3cret"})
        assert huge.status_code == 413 and "bytes is over the limit" in huge.json()["message"]

        def chunked():  # no Content-Length: the size is counted as the body arrives
            for _ in range(len(raw) + 1):
                yield b" " * 4096

        streamed = client.post("/forecast", content=chunked(), headers={"Authorization": "Bearer s3cret"})
        assert streamed.status_code == 413 and "bytes is over the limit" in streamed.json()["message"]
        assert client.get("/health").status_code == 200 and client.get("/metrics").status_code == 200  # probes and scrapes need no token
        metrics = _metrics(client)
    assert metrics[("lstm_serving_errors_total", (("kind", "unauthorized"),))] == 2
    assert metrics[("lstm_serving_errors_total", (("kind", "too_large"),))] == 3
    slow, _ = _app(case, timeout_s=1e-4)
    with TestClient(slow) as client:
        resp = client.post("/forecast", json=body)
        assert resp.status_code == 504 and "serving.timeout_s=0.0001" in resp.json()["message"]
        assert _metrics(client)[("lstm_serving_errors_total", (("kind", "timeout"),))] == 1


def test_not_ready_until_a_champion_is_loaded_then_hot_reload_and_failed_load(case):
    _, raw, versions = case
    app, registry = _app(case, aliases={})
    body = {"rows": _rows(raw)}
    with TestClient(app) as client:
        assert client.get("/health").json() == {"status": "ok"}
        assert client.get("/ready").status_code == 503
        resp = client.post("/forecast", json=body)
        assert resp.status_code == 503 and "no champion of 'tiny-lstm' is loaded yet" in resp.json()["message"]
        registry.alias_map = {"champion": 1}
        app.state.reloader.poll_once()
        assert client.get("/ready").json()["served"] == {"champion": 1}
        assert client.post("/forecast", json=body).json()["version"] == 1
        registry.alias_map = {"champion": 2}  # the alias moves: loaded beside v1, swapped in
        app.state.reloader.poll_once()
        moved = client.post("/forecast", json=body)
        assert moved.json()["version"] == 2 and moved.headers["x-model-version"] == "2"
        np.testing.assert_array_equal(pd.DataFrame(moved.json()["forecasts"])["yhat"], tidy(versions[2].predict(None, raw))["yhat"])
        registry.broken.add(1)
        registry.alias_map = {"champion": 1}  # moved back to a version that cannot be loaded now: v2 keeps serving
        app.state.reloader.poll_once()
        assert client.post("/forecast", json=body).json()["version"] == 2
        ready = client.get("/ready").json()
        assert ready["served"] == {"champion": 2} and ready["registry"] == {"champion": 1} and "loading v1 failed" in ready["errors"]["champion"]
        metrics = _metrics(client)
    assert metrics[("lstm_serving_model_version", (("alias", "champion"),))] == 2
    assert metrics[("lstm_serving_registry_version", (("alias", "champion"),))] == 1
    assert metrics[("lstm_serving_model_load_failures_total", (("alias", "champion"),))] == 1
    assert metrics[("lstm_serving_model_load_error", (("alias", "champion"),))] == 1
    assert metrics[("lstm_monitoring_rmse_threshold", (("version", "1"),))] == 0.8
    assert registry.loads == [("champion", 1), ("champion", 2), ("champion", 1)]


def test_canary_traffic_is_sticky_per_series_and_counted_apart(case):
    _, raw, versions = case
    app, _ = _app(case, aliases={"champion": 1, "challenger": 2}, canary_fraction=0.5)
    canary = sorted(f"s{k:02d}" for k in range(N_SERIES) if canary_share(f"s{k:02d}") < 0.5)
    assert 0 < len(canary) < N_SERIES  # this id set splits (a fixed hash: the same every run)
    with TestClient(app) as client:
        first = client.post("/forecast", json={"rows": _rows(raw)}).json()
        again = client.post("/forecast", json={"rows": _rows(raw)}).json()
        one = raw[raw["site"] == canary[0]]
        single = client.post("/forecast", json={"rows": _rows(one)})
        metrics = _metrics(client)
    assert first == again and (first["alias"], first["version"]) == ("mixed", None)
    routes = {r["alias"]: (r["version"], r["unique_ids"]) for r in first["routes"]}
    assert routes["challenger"] == (2, canary) and set(routes["champion"][1]) == {f"s{k:02d}" for k in range(N_SERIES)} - set(canary)
    got = pd.DataFrame(first["forecasts"]).set_index(["unique_id", "step"])["yhat"]
    for version, ids in routes.values():
        expected = tidy(versions[version].predict(None, raw[raw["site"].isin(ids)])).set_index(["unique_id", "step"])["yhat"]
        np.testing.assert_allclose(got.loc[expected.index].to_numpy(), expected.to_numpy(), rtol=1e-6)
    assert single.json()["alias"] == "challenger" and single.headers["x-model-version"] == "2"
    assert metrics[("lstm_serving_forecast_series_total", (("alias", "challenger"), ("version", "2")))] == 2 * len(canary) + 1
    assert metrics[("lstm_serving_forecast_series_total", (("alias", "champion"), ("version", "1")))] == 2 * (N_SERIES - len(canary))
    assert metrics[("lstm_serving_request_duration_seconds_count", (("alias", "mixed"), ("version", "mixed")))] == 2
    assert metrics[("lstm_serving_request_duration_seconds_count", (("alias", "challenger"), ("version", "2")))] == 1


def test_route_without_canary_or_challenger_serves_the_champion(case):
    _, raw, _ = case
    champion = Loaded("champion", 1, None, "torch", "site", 0.0)
    challenger = Loaded("challenger", 2, None, "torch", "site", 0.0)
    assert [m.alias for m, _ in route(raw, {"champion": champion}, 0.5)] == ["champion"]
    assert [m.alias for m, _ in route(raw, {"champion": champion, "challenger": challenger}, 0.0)] == ["champion"]
    everything = route(raw, {"champion": champion, "challenger": challenger}, 1.0)
    assert [(m.alias, len(part)) for m, part in everything] == [("challenger", len(raw))]


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_a_version_with_prediction_intervals_serves_its_bands(case, backend):
    """The pyfunc's ``yhat_lo_<level>, yhat_hi_<level>`` reach the answer; the ONNX backend keeps the version's calibration."""
    from pipeline.models.conformal import IntervalCalibration
    from pipeline.serving.export import OnnxForecaster, onnx_bytes

    cfg, raw, versions = case
    rng = np.random.default_rng(0)
    truth = rng.normal(size=(50, 4))
    calibration = IntervalCalibration.fit(truth, truth + rng.normal(scale=0.2, size=truth.shape), [80, 95])
    fm = versions[1]
    banded = ForecastModel().use(fm.forecaster, None, calibration)
    if backend == "onnx":
        banded = ForecastModel().use(OnnxForecaster(onnx_bytes(fm.forecaster), fm.prep), None, calibration)
    registry = MemoryRegistry({1: banded})
    registry.alias_map = {"champion": 1}
    app = create_app(cfg, source=registry, token=None, poll=False)
    app.state.reloader.poll_once()
    with TestClient(app) as client:
        resp = client.post("/forecast", json={"rows": _rows(raw)})
    assert resp.status_code == 200, resp.text
    got = pd.DataFrame(resp.json()["forecasts"])
    assert list(got.columns) == ["unique_id", "ds", "step", "yhat", "yhat_lo_80", "yhat_hi_80", "yhat_lo_95", "yhat_hi_95"]
    assert (got["yhat_lo_95"] <= got["yhat_lo_80"]).all() and (got["yhat_lo_80"] <= got["yhat"]).all()
    assert (got["yhat"] <= got["yhat_hi_80"]).all() and (got["yhat_hi_80"] <= got["yhat_hi_95"]).all()
    expected = tidy(banded.predict(None, raw))
    np.testing.assert_allclose(got[["yhat_lo_80", "yhat_hi_95"]].to_numpy(), expected[["yhat_lo_80", "yhat_hi_95"]].to_numpy())


@pytest.mark.parametrize("threads", [1, 0])
def test_serve_runs_torch_on_the_configured_threads(case, monkeypatch, threads):
    """``serving.torch_threads`` (default 1) is torch's intra-op threads in the service process: a
    second thread per forward pass only adds tail latency to requests already run in parallel; 0 keeps torch's."""
    import uvicorn

    from pipeline.service.app import serve

    assert case[0].serving.torch_threads == 1  # the default
    cfg = case[0].model_copy(update={"serving": case[0].serving.model_copy(update={"torch_threads": threads})})
    seen = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: seen.append(torch.get_num_threads()))
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(3)
        assert serve(cfg, port=8123) == 0
    finally:
        torch.set_num_threads(before)
    assert seen == [1 if threads else 3]


@pytest.mark.skipif((os.cpu_count() or 1) < 2 or not os.path.isdir("/proc/self/task"), reason="needs 2+ cores and Linux's /proc")
def test_forecast_threads_run_torch_on_the_process_thread_count(case):
    """A new thread's MKL calls (the LSTM's matrix products) ignore the ``torch.set_num_threads`` of
    the thread that called it and start an OpenMP team of one thread per core, whose spinning
    worker competed with the forecast (~370 ms requests on a busy 2-core machine). The forecast
    pool's initializer re-applies the process's count: with one torch thread, a forecast starts no thread."""
    _, raw, versions = case
    before = torch.get_num_threads()

    def threads_started_by_a_forecast() -> int:
        n0 = len(os.listdir("/proc/self/task"))
        versions[1].predict(None, raw)
        return len(os.listdir("/proc/self/task")) - n0

    try:
        torch.set_num_threads(1)
        app, _ = _app(case)
        started = app.state.pool.submit(threads_started_by_a_forecast).result()
        app.state.pool.shutdown()
    finally:
        torch.set_num_threads(before)
    assert started == 0


def test_the_service_serves_the_bands_tracked_as_of_the_latest_check(case):
    """With a monitoring check in the store, the answer's bands are the pyfunc's calibrated bands with
    their half-widths scaled by the quantile tracker's factors as of that check (the bands the loop
    publishes), kept nested; they are read again after a new check only, a store error keeps the
    bands served, and without factors (no check, lr 0) the calibrated bands are served."""
    from pipeline.models.conformal import IntervalCalibration

    cfg, raw, versions = case
    rng = np.random.default_rng(0)
    truth = rng.normal(size=(50, 4))
    calibration = IntervalCalibration.fit(truth, truth + rng.normal(scale=0.2, size=truth.shape), [80, 95])
    banded = ForecastModel().use(versions[1].forecaster, None, calibration)
    registry = MemoryRegistry({1: banded})
    registry.alias_map = {"champion": 1}
    registry.factors = {1: {"80": [1.5, 1.5, 2.0, 2.0], "95": [0.5, 1.0, 1.0, 1.0]}}
    app = create_app(cfg, source=registry, token=None, poll=False)
    app.state.reloader.poll_once()
    calibrated = tidy(banded.predict(None, raw))
    half = {c: (calibrated[f"yhat_hi_{c}"] - calibrated["yhat"]).to_numpy() for c in ("80", "95")}
    with TestClient(app) as client:
        resp = client.post("/forecast", json={"rows": _rows(raw)}).json()
        got = pd.DataFrame(resp["forecasts"])
        step = got["step"].to_numpy()
        np.testing.assert_allclose(got["yhat"], calibrated["yhat"])
        np.testing.assert_allclose(got["yhat_hi_80"] - got["yhat"], half["80"] * np.where(step <= 2, 1.5, 2.0))
        np.testing.assert_allclose(got["yhat"] - got["yhat_lo_80"], half["80"] * np.where(step <= 2, 1.5, 2.0))
        # the 95 band scaled by [0.5, 1, 1, 1], then nested: at least as wide as the scaled 80 band
        scaled_95 = calibrated["yhat"] + half["95"] * np.where(step == 1, 0.5, 1.0)
        assert (scaled_95 < got["yhat_hi_80"])[step == 1].all()  # step 1: the nesting binds (it is the 80 band)
        np.testing.assert_allclose(got["yhat_hi_95"], np.maximum(scaled_95, got["yhat_hi_80"]))
        assert resp["routes"][0]["bands"] == "tracked" and resp["routes"][0]["bands_as_of"] == "2026-12-01T00:00:00"
        metrics = _metrics(client)
        assert metrics[("lstm_serving_interval_factor", (("alias", "champion"), ("level", "80")))] == 1.75
        app.state.reloader.poll_once()
        assert registry.factor_reads == [1]  # the same check: not read again
        registry.check = {**registry.check, "as_of": "2026-12-02T00:00:00"}
        registry.store_down = True
        app.state.reloader.poll_once()  # a new check but the store is down: the tracked bands stay
        again = client.post("/forecast", json={"rows": _rows(raw)}).json()
        pd.testing.assert_frame_equal(pd.DataFrame(again["forecasts"]), got)
        registry.store_down, registry.factors = False, {}
        app.state.reloader.poll_once()  # the new check has no factors for v1 (lr 0): the calibrated bands
        plain = client.post("/forecast", json={"rows": _rows(raw)}).json()
        np.testing.assert_allclose(pd.DataFrame(plain["forecasts"])[["yhat_lo_80", "yhat_hi_95"]], calibrated[["yhat_lo_80", "yhat_hi_95"]])
        assert plain["routes"][0]["bands"] == "calibrated" and plain["routes"][0]["bands_as_of"] is None
        assert _metrics(client)[("lstm_serving_interval_factor", (("alias", "champion"), ("level", "80")))] == 1.0
    assert registry.factor_reads == [1, 1, 1]


def test_a_version_moved_to_champion_is_served_with_its_own_factors_from_the_first_request(case):
    """A promotion loads the new version with its tracked factors before it is swapped in (no request
    gets its calibrated bands in between); the gauge follows the version now served, and a version
    held under two aliases is read once per poll."""
    from pipeline.models.conformal import IntervalCalibration

    cfg, raw, versions = case
    rng = np.random.default_rng(1)
    truth = rng.normal(size=(50, 4))
    calibration = IntervalCalibration.fit(truth, truth + rng.normal(scale=0.2, size=truth.shape), [80])
    banded = {v: ForecastModel().use(versions[v].forecaster, None, calibration) for v in (1, 2)}
    registry = MemoryRegistry(banded)
    registry.alias_map = {"champion": 1, "challenger": 1}
    registry.factors = {1: {"80": [1.2] * 4}, 2: {"80": [2.0] * 4}}
    cfg = cfg.model_copy(update={"serving": cfg.serving.model_copy(update={"canary_fraction": 0.5})})
    app = create_app(cfg, source=registry, token=None, poll=False)
    app.state.reloader.poll_once()
    assert registry.factor_reads == [1]  # champion and challenger on v1: one read
    holder, swapped = app.state.holder, []
    swap = holder.swap
    holder.swap = lambda alias, loaded: (swapped.append((alias, loaded and (loaded.version, loaded.factors))), swap(alias, loaded))
    registry.alias_map = {"champion": 2}
    app.state.reloader.poll_once()
    assert swapped == [("champion", (2, {"80": [2.0] * 4})), ("challenger", None)]  # never served without its factors
    served = app.state.holder.current()
    assert (served["champion"].version, served["champion"].factors) == (2, {"80": [2.0] * 4}) and "challenger" not in served
    with TestClient(app) as client:
        resp = client.post("/forecast", json={"rows": _rows(raw)}).json()
        metrics = _metrics(client)
    calibrated = tidy(banded[2].predict(None, raw))
    got = pd.DataFrame(resp["forecasts"])
    np.testing.assert_allclose(got["yhat_hi_80"] - got["yhat"], 2.0 * (calibrated["yhat_hi_80"] - calibrated["yhat"]))
    assert metrics[("lstm_serving_interval_factor", (("alias", "champion"), ("level", "80")))] == 2.0
    assert not any(name == "lstm_serving_interval_factor" and dict(labels)["alias"] == "challenger" for name, labels in metrics)
    assert registry.factor_reads == [1, 2]
