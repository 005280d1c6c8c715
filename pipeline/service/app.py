"""``lstm-pipeline serve``: the registered model behind HTTP (FastAPI on uvicorn).

Endpoints:

* ``POST /forecast``, body ``{"rows": [{<column>: <value>, ...}, ...]}``: the raw history (the
  input CSV's columns, timestamps as ISO 8601 strings) -> ``{"model", "version", "alias",
  "forecasts": [{"unique_id", "ds", "step", "yhat"[, "yhat_lo_<level>", "yhat_hi_<level>" ...][, "warning"]}, ...],
  "routes": [...]}``, the
  next ``h`` steps per series. The forecast is the registered pyfunc's own ``predict`` on those
  rows, tidied by :func:`pipeline.predict.forecast_history` (what ``lstm-pipeline forecast``
  runs), so its ``yhat`` equals the pyfunc's. The prediction intervals (a version registered with
  them; :mod:`pipeline.models.conformal`) are the ones the monitoring loop publishes: the pyfunc's
  calibrated bands scaled by the quantile tracker's factors as of the latest monitoring check
  (:func:`pipeline.loop.monitoring.latest_factors`; the calibrated bands themselves before the first
  check, with ``evaluation.interval_tracking_lr`` 0, or without a forecast store).
  ``X-Model-Name``, ``X-Model-Version``, ``X-Model-Alias`` repeat model, version, alias.
  ``routes`` lists which alias and version forecast which series, and which ``bands`` they got
  (``"tracked"`` with ``bands_as_of``, the check's as-of time; ``"calibrated"``; ``null``: no
  intervals); with canary traffic a request whose series went to both has ``alias: "mixed"`` and
  ``version: null``. An interval bound that is infinite (a level the version had too few
  calibration windows for) is ``null``.
* ``GET /health``: the process is up. ``GET /ready``: 200 once a champion is loaded, else 503 and why.
* ``GET /metrics``: Prometheus text format (:mod:`pipeline.service.metrics`).

Errors are JSON ``{"error": kind, "message": ...}``, never a traceback: the pyfunc's own located
errors (``DataQualityError``, ...; they count lines as in a CSV file with a header, so "line N" is
``rows[N - 2]`` of the body) and malformed bodies are 422, a missing or wrong bearer token
401, more than ``serving.max_rows`` rows 413, no model loaded yet 503, a forecast slower than
``serving.timeout_s`` 504, and anything unexpected 500 with the details in the service log.

The forecast runs on a small thread pool; on a timeout the request is answered at once and the
thread finishes its forecast and drops it (Python cannot stop a running thread).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

import pandas as pd
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from pipeline.core import schema
from pipeline.core.config import PipelineConfig
from pipeline.core.errors import ConfigError, PipelineError
from pipeline.service.metrics import ServiceMetrics
from pipeline.service.models import CHALLENGER, CHAMPION, Loaded, ModelHolder, RegistrySource, Reloader, canary_share

log = logging.getLogger(__name__)

#: a request body larger than ``max_rows`` x this many bytes is refused (413) before it is parsed
MAX_ROW_BYTES = 4096
#: forecasts running at once; more requests wait for a thread
FORECAST_THREADS = 4
LOOPBACK = ("127.0.0.1", "::1", "localhost")
ENDPOINTS = ("/forecast", "/health", "/ready", "/metrics")


class RequestRefused(PipelineError):
    """A request the service refuses before forecasting: ``status`` is its HTTP code, ``kind`` its metric label."""

    def __init__(self, status: int, kind: str, message: str):
        super().__init__(message)
        self.status, self.kind = status, kind


def resolve_token(cfg: PipelineConfig) -> str | None:
    """The bearer token from the environment variable ``serving.token_env`` names (``None`` when unset).

    Raises:
        ConfigError: ``serving.token_env`` is set but that variable is empty or missing: the
            service would otherwise run unprotected against the config's intent.
    """
    name = cfg.serving.token_env
    if not name:
        return None
    token = os.environ.get(name, "")
    if not token:
        raise ConfigError(f"serving.token_env names {name!r}, but that environment variable is empty or not set; set it to the bearer token clients send")
    return token


def _check_token(request, token: str | None) -> None:
    if token is None:
        return
    given = request.headers.get("authorization", "")
    scheme, _, value = given.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), token.encode()):
        raise RequestRefused(401, "unauthorized", "missing or wrong bearer token: expected header 'Authorization: Bearer <token>'")


async def _read_rows(request, max_rows: int) -> list[dict[str, Any]]:
    """The body's ``rows``, checked for shape; the columns and values are the pyfunc's to check."""
    limit = max_rows * MAX_ROW_BYTES
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit:
        raise RequestRefused(413, "too_large", f"request body of {length} bytes is over the limit of {limit} (serving.max_rows={max_rows} rows)")
    chunks, size = [], 0
    async for chunk in request.stream():  # counted as it arrives: a chunked body has no Content-Length to check first
        size += len(chunk)
        if size > limit:
            raise RequestRefused(413, "too_large", f"request body of more than {limit} bytes is over the limit (serving.max_rows={max_rows} rows)")
        chunks.append(chunk)
    body = b"".join(chunks)
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RequestRefused(422, "invalid_body", f'request body: expected a JSON object {{"rows": [...]}}, found invalid JSON ({exc})') from None
    if not isinstance(payload, dict) or "rows" not in payload:
        found = f"an object with keys {sorted(payload)}" if isinstance(payload, dict) else type(payload).__name__
        raise RequestRefused(422, "invalid_body", f'request body: expected a JSON object {{"rows": [...]}}, found {found}')
    rows = payload["rows"]
    if not isinstance(rows, list):
        raise RequestRefused(422, "invalid_body", f"request body: 'rows' must be a list of objects (one per history row), found {type(rows).__name__}")
    if len(rows) > max_rows:
        raise RequestRefused(413, "too_large", f"request has {len(rows)} rows, over serving.max_rows={max_rows}")
    bad = next((i for i, row in enumerate(rows) if not isinstance(row, dict)), None)
    if bad is not None:
        raise RequestRefused(422, "invalid_body", f"rows[{bad}]: expected an object {{column: value}}, found {type(rows[bad]).__name__} {rows[bad]!r:.80}")
    return rows


def route(history: pd.DataFrame, models: dict[str, Loaded], fraction: float) -> list[tuple[Loaded, pd.DataFrame]]:
    """``(version, its rows)`` pairs: series whose :func:`canary_share` is below ``fraction`` go to the
    challenger (when one is loaded), the rest to the champion. A single-series model's one series
    (``unique_id`` :data:`pipeline.core.schema.DEFAULT_SERIES_ID`) goes wholly to one of them."""
    champion, challenger = models[CHAMPION], models.get(CHALLENGER)
    if challenger is None or fraction <= 0 or challenger.version == champion.version:
        return [(champion, history)]
    col = champion.series_id_column
    if col is None:
        return [(challenger if canary_share(schema.DEFAULT_SERIES_ID) < fraction else champion, history)]
    if col not in history:
        return [(champion, history)]  # the pyfunc names the missing column
    to_challenger = history[col].astype(str).map({uid: canary_share(uid) < fraction for uid in history[col].astype(str).unique()})
    parts = [(champion, history[~to_challenger]), (challenger, history[to_challenger])]
    return [(m, part) for m, part in parts if len(part)]  # each part keeps the request's row numbers, for the errors


def _error(status: int, kind: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": kind, "message": message}, status_code=status, headers=headers)


def _forecast_thread_init() -> None:
    """Run torch in this forecast thread on the process's intra-op thread count (``serving.torch_threads``).

    ``torch.set_num_threads`` reaches MKL only in the thread that called it (MKL's count is per
    thread): in a new thread the LSTM's matrix products started an OpenMP team of one thread per
    core, whose spinning worker competed with the forecast itself (seen on a busy 2-core machine:
    ~370 ms per request for seconds at a time instead of ~15 ms). Re-applying the process's count
    sets this thread's.
    """
    import torch

    torch.set_num_threads(torch.get_num_threads())


def create_app(cfg: PipelineConfig, source=None, token: str | None = None, poll: bool = True):
    """The FastAPI app: the endpoints of the module docstring, a :class:`Reloader` started with it.

    Args:
        source: where versions come from (default :class:`RegistrySource` on the config's registry).
        token: the bearer token ``POST /forecast`` requires (``None``: none; see :func:`resolve_token`).
        poll: start the reloader's thread (tests that drive :meth:`Reloader.poll_once` pass ``False``).
    """
    sc, name = cfg.serving, cfg.mlflow.registered_model_name
    metrics, holder = ServiceMetrics(), ModelHolder()
    wanted = (CHAMPION, CHALLENGER) if sc.canary_fraction > 0 else (CHAMPION,)
    reloader = Reloader(source or RegistrySource(cfg), holder, metrics, wanted, sc.poll_seconds)
    pool = ThreadPoolExecutor(max_workers=FORECAST_THREADS, thread_name_prefix="forecast", initializer=_forecast_thread_init)

    @asynccontextmanager
    async def lifespan(app):
        if poll:
            reloader.start()
        yield
        reloader.stop()
        pool.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="lstm-pipeline forecast service", lifespan=lifespan)
    app.state.reloader, app.state.holder, app.state.metrics, app.state.pool = reloader, holder, metrics, pool

    @app.middleware("http")
    async def count_requests(request: Request, call_next):
        response = await call_next(request)
        endpoint = request.url.path if request.url.path in ENDPOINTS else "other"
        metrics.requests.labels(endpoint=endpoint, code=str(response.status_code)).inc()
        return response

    def run_forecasts(groups: list[tuple[Loaded, pd.DataFrame]]) -> list[tuple[Loaded, pd.DataFrame]]:
        from pipeline.loop.monitoring import scale_frame_bands
        from pipeline.predict import forecast_history

        out = []
        for m, part in groups:
            frame = forecast_history(m.predict, part, "request body")
            out.append((m, scale_frame_bands(frame, m.calibration, m.factors) if m.factors else frame))
        return out

    @app.post("/forecast")
    async def forecast(request: Request):
        start, labels = time.perf_counter(), ("none", "none")
        from pipeline.predict import forecast_records

        try:
            _check_token(request, token)
            rows = await _read_rows(request, sc.max_rows)
            models = holder.current()
            if CHAMPION not in models:
                raise RequestRefused(503, "not_ready", f"no {CHAMPION} of {name!r} is loaded yet: {reloader.last_error.get(CHAMPION) or 'waiting for the registry'}")
            groups = route(pd.DataFrame.from_records(rows), models, sc.canary_fraction)
            served = {(m.alias, m.version) for m, _ in groups}
            labels = next(iter(served)) if len(served) == 1 else ("mixed", "mixed")
            loop = asyncio.get_running_loop()
            try:
                results = await asyncio.wait_for(loop.run_in_executor(pool, run_forecasts, groups), sc.timeout_s)
            except TimeoutError:
                raise RequestRefused(504, "timeout", f"the forecast took longer than serving.timeout_s={sc.timeout_s} s") from None
            alias, version = (labels[0], int(labels[1])) if labels[0] != "mixed" else ("mixed", None)
            body = {
                "model": name, "version": version, "alias": alias,
                "forecasts": [r for _, frame in results for r in forecast_records(frame)],
                "routes": [{"alias": m.alias, "version": m.version, "unique_ids": sorted(map(str, frame[schema.UNIQUE_ID].unique())),
                            "bands": m.bands, "bands_as_of": m.factors_as_of if m.bands == "tracked" else None} for m, frame in results],
            }  # fmt: skip
            response = JSONResponse(body, headers={"X-Model-Name": name, "X-Model-Version": "" if version is None else str(version), "X-Model-Alias": alias})
        except RequestRefused as exc:
            return _observe(_error(exc.status, exc.kind, str(exc)), exc.kind, labels, start)
        except PipelineError as exc:  # the pyfunc's located errors: what, where, what was expected
            return _observe(_error(422, type(exc).__name__, str(exc)), type(exc).__name__, labels, start)
        except Exception:  # a bug: logged with its traceback here, never sent to the client
            log.exception("forecast failed")
            return _observe(_error(500, "InternalError", "internal error while forecasting (details in the service log)"), "internal", labels, start)
        for m, frame in results:
            metrics.on_forecast(m.alias, m.version, int(frame[schema.UNIQUE_ID].nunique()), groups_origin(frame, cfg))
        return _observe(response, None, labels, start)

    def _observe(response, error_kind: str | None, labels: tuple[str, str], start: float):
        metrics.latency.labels(alias=labels[0], version=str(labels[1])).observe(time.perf_counter() - start)
        if error_kind:
            metrics.errors.labels(kind=error_kind).inc()
        return response

    @app.get("/health")
    def health():
        return {"status": "ok"}

    @app.get("/ready")
    def ready():
        models = holder.current()
        body = {"ready": CHAMPION in models, "model": name, "backend": sc.backend,
                "served": {a: m.version for a, m in models.items()}, "registry": reloader.registry, "errors": reloader.last_error}  # fmt: skip
        return JSONResponse(body, status_code=200 if body["ready"] else 503)

    @app.get("/metrics")
    def prometheus_metrics():
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


def groups_origin(frame: pd.DataFrame, cfg: PipelineConfig) -> Any:
    """The last observed time behind ``frame``'s forecasts: the earliest first forecast time minus one step."""
    if frame.empty:
        return None
    first = frame.loc[frame["step"] == 1, schema.DS]
    return pd.Timestamp(first.min()) - pd.tseries.frequencies.to_offset(cfg.data.freq)


def serve(cfg: PipelineConfig, host: str = "127.0.0.1", port: int = 8000, verbose: bool = False) -> int:
    """Run the service until interrupted (uvicorn; SIGINT/SIGTERM shut it down cleanly).

    Raises:
        ConfigError: ``port`` is not a TCP port, or ``serving.token_env`` names an unset variable (:func:`resolve_token`).
    """
    import sys

    import uvicorn

    if not 0 < port < 65536:
        raise ConfigError(f"--port {port}: expected a TCP port from 1 to 65535")
    token = resolve_token(cfg)
    if cfg.serving.torch_threads:  # process-wide: the service process only forecasts
        import torch

        torch.set_num_threads(cfg.serving.torch_threads)
    if host not in LOOPBACK and token is None:
        log.warning("serving on %s without a bearer token (serving.token_env): anyone who can reach the port can query the model", host)
    canary = f", {cfg.serving.canary_fraction:.0%} of series to {CHALLENGER}" if cfg.serving.canary_fraction > 0 else ""
    print(f"serving {cfg.mlflow.registered_model_name} ({CHAMPION}{canary}, {cfg.serving.backend} backend) on http://{host}:{port}; "
          f"aliases polled every {cfg.serving.poll_seconds:g} s", file=sys.stderr)  # fmt: skip
    uvicorn.run(create_app(cfg, token=token), host=host, port=port, log_level="info" if verbose else "warning", access_log=verbose)
    return 0
