"""The versions the service holds, their hot reload from the registry, and the canary routing.

* :class:`Loaded`: one loaded version behind an alias: the registered pyfunc's ``predict``
  (the torch backend), or the same pyfunc with its network run by onnxruntime (``onnx``).
* :class:`ModelHolder`: ``{alias: Loaded}``, replaced as a whole (copy on write), so a request
  reads one consistent set and a swap is atomic (one reference assignment).
* :class:`Reloader`: a background thread that reads the registry's aliases every
  ``serving.poll_seconds`` (:func:`pipeline.registry.aliases.snapshot`, one read), loads a moved
  alias's version beside the one being served and swaps it in; a failed load keeps the old one,
  logs the error and counts it (``lstm_serving_model_load_failures_total``). After each new
  monitoring check in the forecast store it reads each served version's tracked-interval factors
  (:func:`pipeline.loop.monitoring.latest_factors`), so the service returns the bands the
  monitoring loop publishes, not the calibrated ones fixed at training.
* :func:`canary_share`: where a series id falls in ``[0, 1)``; ids under ``serving.canary_fraction``
  go to the challenger, every time (sticky; a hash, not a coin flip per request).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import pandas as pd
import sqlalchemy as sa
from mlflow.exceptions import MlflowException

from pipeline.core.config import PipelineConfig
from pipeline.core.errors import PipelineError

log = logging.getLogger(__name__)
#: a registry read the service outlives: the pipeline's errors, MLflow's, the network's (requests' are OSErrors)
REGISTRY_ERRORS = (PipelineError, MlflowException, OSError)
#: a version load that keeps the served version: also a model that does not load or export
#: (torch's and onnxruntime's errors are RuntimeErrors; a bad artifact a ValueError)
LOAD_ERRORS = (*REGISTRY_ERRORS, RuntimeError, ValueError, ImportError)

CHAMPION, CHALLENGER = "champion", "challenger"
#: :meth:`Reloader._read_monitoring`'s answer when the forecast store did not answer
UNREADABLE = object()


@dataclass(frozen=True)
class Loaded:
    """A loaded version.

    Attributes:
        predict: raw history frame -> the pyfunc's forecast frame (``[unique_id,] ds, step, yhat[, warning]``).
        series_id_column: the input column naming the series (``None``: one series per request).
        loaded_at / created_at: unix seconds of the load and of the version's registration.
        calibration: the version's :class:`~pipeline.models.conformal.IntervalCalibration` (``None``: no intervals).
        factors / factors_as_of: the quantile tracker's ``{level_label: [factor per step]}`` as of the
            monitoring check at ``factors_as_of`` (ISO 8601, UTC), applied to the pyfunc's bands
            (:func:`pipeline.loop.monitoring.scale_frame_bands`); ``None``: the calibrated bands.
    """

    alias: str
    version: int
    predict: Callable[[pd.DataFrame], pd.DataFrame]
    backend: str
    series_id_column: str | None
    loaded_at: float
    created_at: float | None = None
    calibration: Any = None
    factors: dict[str, list[float]] | None = None
    factors_as_of: str | None = None

    @property
    def bands(self) -> str | None:
        """Which prediction intervals this version serves: ``"tracked"``, ``"calibrated"`` or ``None`` (none)."""
        return None if self.calibration is None else "tracked" if self.factors else "calibrated"


def canary_share(unique_id: str) -> float:
    """``unique_id`` -> a fixed number in ``[0, 1)`` (the first 8 bytes of its SHA-256): a series is
    in the canary when this is below ``serving.canary_fraction``, on every request and every replica."""
    return int.from_bytes(hashlib.sha256(str(unique_id).encode()).digest()[:8], "big") / 2.0**64


class RegistrySource:
    """The registry the service follows: aliases (one read) and a version's pyfunc."""

    def __init__(self, cfg: PipelineConfig):
        self.cfg, self.name = cfg, cfg.mlflow.registered_model_name
        self._cached_store = None  # the forecast store, opened once it exists (:meth:`_store`)

    def aliases(self) -> dict[str, int]:
        """``{alias: version}`` now (``{}`` when the model is not registered yet).

        Raises:
            RegistryError: the server does not answer or refuses.
        """
        from pipeline.registry import aliases, server

        uri = server.tracking_uri(self.cfg)
        server.check_server(uri, attempts=1, training=False)
        with server.bounded_http_retries():
            return aliases.snapshot(server.client(uri), self.name)

    def load(self, alias: str, version: int) -> Loaded:
        """Version ``version`` as MLflow loads it (:func:`pipeline.predict.load_model`), on ``serving.backend``.

        Raises:
            RegistryError: the version cannot be read or loaded.
        """
        from pipeline.predict import load_model
        from pipeline.registry import server

        model, found, _ = load_model(self.cfg, version=version)
        python_model = model.unwrap_python_model()
        if self.cfg.serving.backend == "onnx":  # the same pyfunc, its ensemble run by onnxruntime
            from pipeline.serving.export import OnnxForecaster, onnx_bytes

            python_model.use(OnnxForecaster(onnx_bytes(python_model.forecaster), python_model.prep), python_model.reference_path,
                             getattr(python_model, "calibration", None))  # the bands stay the version's own
        with server.bounded_http_retries():
            created = server.client(server.tracking_uri(self.cfg)).get_model_version(self.name, str(found)).creation_timestamp
        return Loaded(alias, found, model.predict, self.cfg.serving.backend, python_model.prep.series_id_column, time.time(),
                      created / 1000.0 if created else None, getattr(python_model, "calibration", None))  # fmt: skip

    def _store(self):
        """The forecast store, once it exists (:func:`pipeline.store.sql.existing_store`; one engine kept)."""
        from pipeline.store.sql import existing_store

        if self._cached_store is None:
            self._cached_store = existing_store(self.cfg)
        return self._cached_store

    def last_check(self) -> dict[str, Any] | None:
        """The latest monitoring check of the model in the forecast store, or ``None`` when there is no store yet."""
        store = self._store()
        checks = store.last_checks(self.name, n=1) if store is not None else []
        return checks[0] if checks else None

    def interval_factors(self, version: int, calibration, check: dict[str, Any]) -> tuple[dict[str, list[float]], str] | None:
        """``(factors, as_of)`` of :func:`pipeline.loop.monitoring.latest_factors` as of ``check`` (a row of
        :meth:`last_check`; ``None``: serve the calibrated bands).

        Raises:
            StoreError: the store is unreachable.
        """
        from pipeline.loop.monitoring import latest_factors

        return latest_factors(self.cfg, self._store(), version, calibration, check)


@dataclass
class ModelHolder:
    """``{alias: Loaded}`` served now; :meth:`current` is one consistent set, :meth:`swap` replaces it atomically."""

    _models: dict[str, Loaded] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def current(self) -> dict[str, Loaded]:
        return self._models  # never mutated after publication: readers keep a consistent set

    def swap(self, alias: str, loaded: Loaded | None) -> None:
        """Serve ``loaded`` under ``alias`` from the next request on (``None`` drops the alias)."""
        with self._lock:
            models = dict(self._models)
            if loaded is None:
                models.pop(alias, None)
            else:
                models[alias] = loaded
            self._models = models


class Reloader:
    """Follow the registry's aliases; see the module docstring.

    Args:
        source: ``aliases() -> {alias: version}``, ``load(alias, version) -> Loaded``,
            ``last_check() -> dict | None`` and ``interval_factors(version, calibration, check) -> (factors, as_of) | None``
            (:class:`RegistrySource`).
        wanted: the aliases to serve (``champion``, plus ``challenger`` with canary traffic).
        metrics: a :class:`pipeline.service.metrics.ServiceMetrics`.
    """

    def __init__(self, source, holder: ModelHolder, metrics, wanted: tuple[str, ...], poll_seconds: float):
        self.source, self.holder, self.metrics, self.wanted, self.poll_seconds = source, holder, metrics, wanted, poll_seconds
        self.last_error: dict[str, str] = {}  # alias -> why its registry version is not the one served
        self._pass: dict[str, Any] = {"check": UNREADABLE, "factors": {}}  # this poll's check and factor reads
        self.registry: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def poll_once(self) -> dict[str, int]:
        """One read of the aliases, then a load and swap for each wanted alias that moved. Never raises."""
        try:
            found = self.source.aliases()
        except REGISTRY_ERRORS as exc:  # an unreachable registry must not stop the service
            log.error("registry poll failed, serving what is loaded: %s", exc)
            self.metrics.poll_failures.inc()
            return self.registry
        self.registry = found
        self.metrics.last_poll.set(time.time())
        check = self._read_monitoring()  # before the loads: a new version is swapped in with its tracked bands
        self._pass = {"check": check, "factors": {}}
        for alias in self.wanted:
            self._follow(alias, found.get(alias))
        if check is not UNREADABLE:
            self._track()
        self.metrics.on_bands(self.holder.current())
        return found

    def _follow(self, alias: str, version: int | None) -> None:
        self.metrics.registry_version.labels(alias=alias).set(version or 0)
        served = self.holder.current().get(alias)
        if version is None:  # alias removed (or never set): a challenger stops taking traffic; a champion stays served
            if served is not None and alias != CHAMPION:
                log.warning("alias %s is no longer set in the registry: its traffic goes to the champion", alias)
                self.holder.swap(alias, None)
                self.metrics.loaded_version.labels(alias=alias).set(0)
            elif served is not None:
                self.last_error[alias] = f"the registry has no {alias} alias; still serving v{served.version}"
            return
        if served is not None and served.version == version:
            self.last_error.pop(alias, None)
            self.metrics.load_error.labels(alias=alias).set(0)
            return
        self._load(alias, version, served)

    def _load(self, alias: str, version: int, served: Loaded | None) -> None:
        same = next((m for m in self.holder.current().values() if m.version == version), None)
        start = time.perf_counter()
        try:
            loaded = replace(same, alias=alias, loaded_at=time.time()) if same else self.source.load(alias, version)
        except LOAD_ERRORS as exc:  # a failed load keeps the served version
            keep = f"still serving v{served.version}" if served else "nothing served under this alias"
            self.last_error[alias] = f"loading v{version} failed: {exc}"
            log.error("hot reload of %s v%d failed (%s): %s", alias, version, keep, exc)
            self.metrics.load_failures.labels(alias=alias).inc()
            self.metrics.load_error.labels(alias=alias).set(1)
            return
        if self._pass["check"] is not UNREADABLE:
            loaded = self._with_factors(loaded)
        self.holder.swap(alias, loaded)
        self.last_error.pop(alias, None)
        self.metrics.on_loaded(loaded, time.perf_counter() - start)
        log.warning("serving %s v%d (%s backend)%s", alias, version, loaded.backend, f", was v{served.version}" if served else "")

    def _read_monitoring(self) -> dict[str, Any] | None | object:
        """The latest check (``None``: no store or no check yet; :data:`UNREADABLE`: the store did not answer)."""
        try:
            check = self.source.last_check()
        except (PipelineError, sa.exc.SQLAlchemyError, OSError, ImportError) as exc:  # the store is optional for serving
            log.info("forecast store not readable, monitoring gauges and served bands not updated: %s", exc)
            return UNREADABLE
        if check:
            self.metrics.on_check(check)
        return check

    def _with_factors(self, loaded: Loaded) -> Loaded:
        """``loaded`` with the tracked-interval factors as of this pass's check (one read per version and
        pass; no check: the calibrated bands); ``loaded`` itself when they are already applied or the
        store errs (the bands served stay)."""
        check = self._pass["check"]
        as_of = check.get("as_of") if check else None
        if loaded.calibration is None or loaded.factors_as_of == as_of:
            return loaded
        cache = self._pass["factors"]
        if loaded.version not in cache:
            try:
                cache[loaded.version] = self.source.interval_factors(loaded.version, loaded.calibration, check) if as_of else None
            except (PipelineError, sa.exc.SQLAlchemyError, OSError, ImportError) as exc:
                log.warning("tracked-interval factors of v%d not read, serving its %s bands: %s", loaded.version, loaded.bands, exc)
                return loaded
        factors, factors_as_of = cache[loaded.version] or (None, as_of)
        if factors:
            log.info("%s v%d serves its bands tracked as of %s", loaded.alias, loaded.version, factors_as_of)
        return replace(loaded, factors=factors, factors_as_of=factors_as_of)

    def _track(self) -> None:
        """Apply this pass's check's factors to each served version that does not have them yet."""
        for alias, loaded in self.holder.current().items():
            tracked = self._with_factors(loaded)
            if tracked is not loaded:
                self.holder.swap(alias, tracked)

    def start(self) -> None:
        """Poll at once and then every ``poll_seconds``, on a daemon thread (``/health`` answers meanwhile)."""
        self._thread = threading.Thread(target=self._run, name="registry-poller", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                self.poll_once()
            except Exception:  # the poll thread outlives any one failed pass (a dead thread would never reload again)
                log.exception("registry poll failed; retrying in %s s", self.poll_seconds)
            if self._stop.wait(self.poll_seconds):
                return

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
