"""The MLflow tracking server: where it is, whether it answers, and one way to get a client.

``MLFLOW_TRACKING_URI`` in the environment overrides ``mlflow.tracking_uri``; without either,
a SQLite store beside the artifact root is used. :func:`connect` is the one client factory:
a bounded ``/health`` check first (seconds, not a training run, on a dead server), then an
``MlflowClient`` on that URI; :func:`bounded_http_retries` caps MLflow's own retries.
"""

from __future__ import annotations

import os
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pipeline.core import artifacts
from pipeline.core.config import PipelineConfig
from pipeline.core.errors import RegistryError

#: MLflow's own HTTP retry defaults (7 retries, backoff factor 2) wait minutes on a dead
#: server; the pipeline uses these unless the environment sets them
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "60"}


def tracking_uri(cfg: PipelineConfig) -> str:
    """``$MLFLOW_TRACKING_URI``, else ``mlflow.tracking_uri``, else a SQLite store beside the artifacts."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    if cfg.mlflow.tracking_uri:
        return cfg.mlflow.tracking_uri
    store = Path(cfg.run.artifact_root).resolve().parent / "mlflow" / "store"
    store.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{artifacts.MLFLOW_STORE.at(store)}"


def artifact_location(cfg: PipelineConfig, uri: str) -> str | None:
    """Where a new experiment keeps artifacts: server-managed over HTTP, else a local folder."""
    if uri.startswith(("http://", "https://", "databricks")):
        return None
    if cfg.mlflow.artifact_location:
        return Path(cfg.mlflow.artifact_location).resolve().as_uri()
    if uri.startswith("sqlite:///"):
        return (Path(uri[len("sqlite:///") :]).parent / "mlflow-artifacts").resolve().as_uri()
    return None


def check_server(uri: str, attempts: int = 3, backoff_s: float = 0.5, timeout_s: float = 3.0, training: bool = True) -> None:
    """For an HTTP tracking URI, ``GET /health`` with bounded retries (a few seconds at most).

    Called before training, so a dead server costs seconds, not a training run. ``training``:
    the caller is the ``train`` command, so the message offers ``--no-register``; monitoring
    and promotion need the registry and get no such advice.

    Raises:
        RegistryError: "cannot reach MLflow at <uri>" after ``attempts`` tries; nothing was logged.
    """
    if not uri.startswith(("http://", "https://")):
        return
    last: Exception | str | None = None
    for attempt in range(1, attempts + 1):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_s) as resp:
                if resp.status == 200:
                    return
                last = f"HTTP {resp.status}"
        except (urllib.error.URLError, OSError) as exc:
            last = exc
        if attempt < attempts:
            time.sleep(backoff_s * 2 ** (attempt - 1))
    raise RegistryError(
        f"cannot reach MLflow at {uri} ({attempts} attempts, last: {last}); nothing was logged or registered, "
        "the registry is unchanged. Start the server (`make mlflow-ui`) or set MLFLOW_TRACKING_URI / "
        "mlflow.tracking_uri" + (", or pass --no-register to train without registering." if training else ".")
    )


@contextmanager
def bounded_http_retries() -> Iterator[None]:
    """Use :data:`HTTP_DEFAULTS` for MLflow's HTTP retries inside the block (unless the environment sets them)."""
    added = {k: v for k, v in HTTP_DEFAULTS.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


def connect(cfg: PipelineConfig, training: bool = False):
    """``(MlflowClient, uri)`` on the configured tracking URI, after :func:`check_server`.

    Also sets the ``mlflow`` module's tracking URI (``mlflow.pyfunc.load_model`` of
    ``models:/`` URIs and fluent runs read it).

    Raises:
        RegistryError: the server does not answer (see :func:`check_server`).
    """
    uri = tracking_uri(cfg)
    check_server(uri, training=training)
    return client(uri), uri


def client(uri: str):
    """An ``MlflowClient`` on ``uri``, with the ``mlflow`` module's tracking URI set to it too
    (fluent runs and ``models:/`` loads read that one): the one way this package builds a client."""
    import os
    import sys

    import mlflow

    if not sys.stderr.isatty():  # MLflow's per-download bars are carriage returns in a log or a pipe
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    mlflow.set_tracking_uri(uri)
    return mlflow.tracking.MlflowClient(tracking_uri=uri)
