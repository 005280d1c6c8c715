"""The service's Prometheus metrics (``prometheus-client``), on one registry per app.

Names follow Prometheus' naming guide (https://prometheus.io/docs/practices/naming/): a
``lstm_serving_`` prefix, base units (seconds), ``_total`` for counters, ``_timestamp_seconds``
for unix times. ``docker/prometheus/alerts.yml`` and ``docker/grafana/serving.json`` use these
names (``tests/pipeline/test_slo_files.py`` checks each one they name is exported here).

| metric | type | labels | meaning |
| --- | --- | --- | --- |
| ``lstm_serving_request_duration_seconds`` | histogram | alias, version | wall time of a ``POST /forecast`` (``alias="none"``: refused before a model was chosen; ``mixed``: canary split) |
| ``lstm_serving_requests_total`` | counter | endpoint, code | every HTTP request, by status code |
| ``lstm_serving_errors_total`` | counter | kind | refused or failed requests: ``unauthorized``, ``too_large``, ``invalid_body``, ``not_ready``, ``timeout``, ``internal`` or the pipeline error's class (``DataQualityError``, ...) |
| ``lstm_serving_forecast_series_total`` | counter | alias, version | series forecast, per version that served them (canary traffic counted apart) |
| ``lstm_serving_model_version`` | gauge | alias | version served (0: none) |
| ``lstm_serving_registry_version`` | gauge | alias | version the registry alias points at, as last read (differs from the served one while a reload is pending or failed) |
| ``lstm_serving_model_loaded_timestamp_seconds`` | gauge | alias | last successful (re)load |
| ``lstm_serving_model_created_timestamp_seconds`` | gauge | alias | registration time of the served version (model age) |
| ``lstm_serving_model_load_seconds`` | gauge | alias | how long the last load took |
| ``lstm_serving_model_load_failures_total`` | counter | alias | failed loads (the old version kept serving) |
| ``lstm_serving_model_load_error`` | gauge | alias | 1 while the registry's version for the alias could not be loaded |
| ``lstm_serving_registry_poll_timestamp_seconds`` | gauge | | last successful read of the aliases |
| ``lstm_serving_registry_poll_failures_total`` | counter | | failed reads of the aliases |
| ``lstm_serving_forecast_origin_timestamp_seconds`` | gauge | alias | forecast freshness: the last observed timestamp (UTC) of the newest forecast's history |
| ``lstm_serving_last_forecast_timestamp_seconds`` | gauge | alias | when the newest forecast was served |
| ``lstm_monitoring_rolling_rmse`` / ``lstm_monitoring_rmse_threshold`` | gauge | version | the latest monitoring check's rolling RMSE and retrain threshold (forecast store) |
| ``lstm_monitoring_check_timestamp_seconds`` | gauge | | the latest check's as-of time |
| ``lstm_serving_interval_factor`` | gauge | alias, level | the quantile tracker's factor on the served bands' half-width, mean over the steps (1: the calibrated bands) |
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from pipeline.core.schema import level_label

#: latency buckets in seconds: 1 ms to 10 s, dense around the 20 ms goal of a one-series request
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def _unix(ts: Any) -> float:
    """A timestamp (naive = UTC, the pipeline's clock) -> unix seconds."""
    import pandas as pd

    t = pd.Timestamp(ts)
    return (t.tz_localize("UTC") if t.tzinfo is None else t).timestamp()


class ServiceMetrics:
    """Every collector of the service on its own :class:`prometheus_client.CollectorRegistry` (see the table above)."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.latency = Histogram("lstm_serving_request_duration_seconds", "POST /forecast wall time", ["alias", "version"], buckets=LATENCY_BUCKETS, registry=r)
        self.requests = Counter("lstm_serving_requests_total", "HTTP requests by endpoint and status code", ["endpoint", "code"], registry=r)
        self.errors = Counter("lstm_serving_errors_total", "refused or failed requests by kind", ["kind"], registry=r)
        self.series = Counter("lstm_serving_forecast_series_total", "series forecast, by the version that served them", ["alias", "version"], registry=r)
        self.loaded_version = Gauge("lstm_serving_model_version", "version served under the alias (0: none)", ["alias"], registry=r)
        self.registry_version = Gauge("lstm_serving_registry_version", "version the registry alias points at, as last read (0: unset)", ["alias"], registry=r)
        self.loaded_at = Gauge("lstm_serving_model_loaded_timestamp_seconds", "unix time of the last successful load", ["alias"], registry=r)
        self.created_at = Gauge("lstm_serving_model_created_timestamp_seconds", "registration time of the served version", ["alias"], registry=r)
        self.load_seconds = Gauge("lstm_serving_model_load_seconds", "duration of the last successful load", ["alias"], registry=r)
        self.load_failures = Counter("lstm_serving_model_load_failures_total", "failed loads; the old version kept serving", ["alias"], registry=r)
        self.load_error = Gauge("lstm_serving_model_load_error", "1 while the registry's version for the alias could not be loaded", ["alias"], registry=r)
        self.last_poll = Gauge("lstm_serving_registry_poll_timestamp_seconds", "unix time of the last successful alias read", registry=r)
        self.poll_failures = Counter("lstm_serving_registry_poll_failures_total", "failed alias reads", registry=r)
        self.origin = Gauge("lstm_serving_forecast_origin_timestamp_seconds", "last observed time (UTC) behind the newest forecast", ["alias"], registry=r)
        self.last_forecast = Gauge("lstm_serving_last_forecast_timestamp_seconds", "when the newest forecast was served", ["alias"], registry=r)
        self.rolling_rmse = Gauge("lstm_monitoring_rolling_rmse", "rolling RMSE of the latest monitoring check", ["version"], registry=r)
        self.rmse_threshold = Gauge("lstm_monitoring_rmse_threshold", "retrain threshold of the latest monitoring check", ["version"], registry=r)
        self.interval_factor = Gauge("lstm_serving_interval_factor", "mean over the steps of the quantile tracker's factor on the "
                                     "served bands' half-width (1: the calibrated bands)", ["alias", "level"], registry=r)  # fmt: skip
        self.check_time = Gauge("lstm_monitoring_check_timestamp_seconds", "as-of time of the latest monitoring check", registry=r)

    def on_loaded(self, loaded, seconds: float) -> None:
        """A version is served under ``loaded.alias`` from now on."""
        alias = loaded.alias
        self.loaded_version.labels(alias=alias).set(loaded.version)
        self.loaded_at.labels(alias=alias).set(loaded.loaded_at)
        self.load_seconds.labels(alias=alias).set(seconds)
        self.load_error.labels(alias=alias).set(0)
        if loaded.created_at is not None:
            self.created_at.labels(alias=alias).set(loaded.created_at)

    def on_forecast(self, alias: str, version: int, n_series: int, origin: Any) -> None:
        """``n_series`` series were forecast by ``alias`` v``version`` from history ending at ``origin``."""
        self.series.labels(alias=alias, version=str(version)).inc(n_series)
        self.last_forecast.labels(alias=alias).set(time.time())
        if origin is not None:
            self.origin.labels(alias=alias).set(_unix(origin))

    def on_bands(self, models: dict[str, Any]) -> None:
        """The factor each served alias's bands are scaled by (``models``: ``{alias: Loaded}``; 1 for
        calibrated bands; an alias without intervals, or no longer served, has none)."""
        self.interval_factor.clear()
        for alias, loaded in models.items():
            for level in getattr(loaded.calibration, "levels", ()):
                per_step = (loaded.factors or {}).get(level_label(level))
                self.interval_factor.labels(alias=alias, level=level_label(level)).set(sum(per_step) / len(per_step) if per_step else 1.0)

    def on_check(self, check: dict[str, Any]) -> None:
        """The latest monitoring check's row (:meth:`pipeline.store.sql.ForecastStore.last_checks`)."""
        version = str(check.get("champion_version") or "")
        for gauge, key in ((self.rolling_rmse, "rolling_rmse"), (self.rmse_threshold, "threshold")):
            if check.get(key) is not None:
                gauge.clear()  # one series: the latest check's version
                gauge.labels(version=version).set(float(check[key]))
        if check.get("as_of"):
            self.check_time.set(_unix(check["as_of"]))
