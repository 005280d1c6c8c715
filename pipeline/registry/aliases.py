"""Registry aliases: every move vetted by its caller, recorded with its reason, made under one lock.

The serving aliases are ``champion`` (what serves), ``challenger`` (the newest version
that passed the comparison gate) and ``previous_champion`` (where a rollback returns).
Aliases, never the deprecated stages (MLflow >= 2.9).

Every move writes its record on the model version *before* the alias moves, so an alias
never points at a version without the reason it got there:

- ``alias.<alias>.reason``: why the alias was set on this version (free text);
- ``alias.<alias>.evidence``: the numbers behind the decision, JSON (optional);
- ``alias.<alias>.removed``: why the alias was taken off this version.

The lock belongs to the registered model, keyed by the sha256 of ``<tracking URI>\\n<model name>``,
so two runs with different artifact roots still serialise their alias moves:

- with ``$LSTM_PIPELINE_LOCK_URL`` (or, failing that, the forecast store's URL:
  ``$LSTM_PIPELINE_STORE_URL``, else ``monitoring.store_url``) naming a Postgres database, a **Postgres advisory lock** (``pg_try_advisory_lock``, session level, held on
  its own connection): it serialises processes on every machine that reaches the database (Celery
  or Kubernetes workers, several schedulers), and Postgres releases it when the holder's
  connection dies, so a crashed worker never leaves it stuck. ``make services`` sets both;
- otherwise a **file lock** in a folder every process on the machine shares
  (``$LSTM_PIPELINE_LOCK_DIR``, else ``~/.cache/lstm-pipeline/locks``): one machine only.

Decisions that depend on the current aliases ("the first version becomes champion") must be
read *inside* the lock.

"Not found" is only an ``MlflowException`` whose ``error_code`` is
``RESOURCE_DOES_NOT_EXIST`` (:func:`is_not_found`); any other error (a 5xx, a timeout) is a
:class:`~pipeline.core.errors.RegistryError` and never moves an alias.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pipeline.core import faults
from pipeline.core.errors import RegistryError

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
PREVIOUS_CHAMPION = "previous_champion"

LOCK_DIR_ENV = "LSTM_PIPELINE_LOCK_DIR"
#: seconds a registration waits for another one to finish its alias moves
LOCK_TIMEOUT_S = 300


def is_not_found(exc: BaseException) -> bool:
    """True only for MLflow's ``RESOURCE_DOES_NOT_EXIST`` (a missing model, version or alias)."""
    return getattr(exc, "error_code", None) == "RESOURCE_DOES_NOT_EXIST"


def lock_dir() -> Path:
    """``$LSTM_PIPELINE_LOCK_DIR``, else ``~/.cache/lstm-pipeline/locks`` (created)."""
    path = Path(os.environ.get(LOCK_DIR_ENV) or Path.home() / ".cache" / "lstm-pipeline" / "locks")
    path.mkdir(parents=True, exist_ok=True)
    return path


def lock_path(tracking_uri: str, model_name: str) -> Path:
    """The lock file of one registered model: ``<lock_dir>/registry-<sha256(uri, name)[:24]>.lock``."""
    key = hashlib.sha256(f"{tracking_uri.rstrip('/')}\n{model_name}".encode()).hexdigest()[:24]
    return lock_dir() / f"registry-{key}.lock"


LOCK_URL_ENV = "LSTM_PIPELINE_LOCK_URL"
STORE_URL_ENV = "LSTM_PIPELINE_STORE_URL"  # the same name as pipeline.store.sql.STORE_URL_ENV


def lock_url(store_url: str | None = None) -> str | None:
    """The Postgres URL whose advisory locks guard alias moves, or None (file locks).

    ``$LSTM_PIPELINE_LOCK_URL``, else the forecast store's URL when it is a Postgres URL: ``store_url``
    (the caller's effective store, :func:`pipeline.store.sql.store_url`: ``$LSTM_PIPELINE_STORE_URL``,
    else ``monitoring.store_url``), or ``$LSTM_PIPELINE_STORE_URL`` when the caller gives none. So a
    Postgres store named only in the config still serialises alias moves across machines.

    Raises:
        RegistryError: ``$LSTM_PIPELINE_LOCK_URL`` is set to something other than a Postgres URL.
    """
    url = os.environ.get(LOCK_URL_ENV)
    if url:
        if not url.startswith("postgresql"):
            raise RegistryError(f"{LOCK_URL_ENV}: expected a Postgres SQLAlchemy URL (postgresql+psycopg://...), found {url.split(':')[0]!r}")
        return url
    store = store_url or os.environ.get(STORE_URL_ENV) or ""
    return store if store.startswith("postgresql") else None


def advisory_key(model_name: str) -> int:
    """The signed 64-bit advisory-lock key of one registered model (the first 8 bytes of the sha256 of its name).

    The name alone, not the tracking URI: one lock database serves one deployment, and its
    clients spell the same server differently (``http://mlflow:5000`` in the Airflow containers,
    ``http://127.0.0.1:5000`` on the host), which must not give two locks for one model.
    """
    digest = hashlib.sha256(model_name.encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


@contextmanager
def _advisory_lock(url: str, key: int, timeout_s: float, what: str) -> Iterator[str]:
    """Hold Postgres advisory lock ``key`` on a connection of its own, polling ``pg_try_advisory_lock``."""
    import time

    import sqlalchemy as sa

    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        conn = engine.connect()
    except sa.exc.OperationalError as exc:
        raise RegistryError(f"could not reach the lock database for {what} ({LOCK_URL_ENV}): {exc.orig}. Nothing was changed.") from exc
    try:
        deadline = time.monotonic() + timeout_s
        while not conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar():
            conn.rollback()
            if time.monotonic() > deadline:
                raise RegistryError(
                    f"could not lock {what} within {timeout_s:.0f} s (Postgres advisory lock {key}); another registration "
                    "of this model is running or stuck. Nothing was changed."
                )
            time.sleep(0.2)
        conn.commit()
        try:
            yield f"pg_advisory_lock({key})"
        finally:
            conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
            conn.commit()
    finally:
        conn.close()
        engine.dispose()


@contextmanager
def registry_lock(tracking_uri: str, model_name: str, timeout_s: float = LOCK_TIMEOUT_S, store_url: str | None = None) -> Iterator[Path | str]:
    """Hold the registered model's lock for a block of alias moves: a Postgres advisory lock
    when :func:`lock_url` (given the caller's forecast store URL) names one, else a file lock
    (``filelock.FileLock``).

    Yields:
        the lock file's path, or ``"pg_advisory_lock(<key>)"``.

    Raises:
        RegistryError: the lock was not acquired within ``timeout_s`` seconds (another
            registration of the same model is stuck), or the lock database is unreachable;
            nothing was changed.
    """
    url = lock_url(store_url)
    if url:
        with _advisory_lock(url, advisory_key(model_name), timeout_s, f"registered model {model_name!r} at {tracking_uri}") as held:
            yield held
        return
    from filelock import FileLock, Timeout

    path = lock_path(tracking_uri, model_name)
    try:
        with FileLock(str(path), timeout=timeout_s):
            yield path
    except Timeout as exc:
        raise RegistryError(
            f"could not lock registered model {model_name!r} at {tracking_uri} within {timeout_s:.0f} s "
            f"(lock file {path}); another registration of this model is running or stuck. Nothing was changed."
        ) from exc


def mlflow_call(what: str, fn, *args):
    """``fn(*args)``; an ``MlflowException`` becomes a :class:`RegistryError` saying what failed."""
    import mlflow

    try:
        return fn(*args)
    except mlflow.exceptions.MlflowException as exc:
        raise RegistryError(f"MLflow failed to {what}: {exc}") from exc


def snapshot(client, model_name: str, missing_ok: bool = True) -> dict[str, int]:
    """``{alias: version}`` of every alias of ``model_name``, in one read: the one way aliases are read.

    Read from the registered model's alias map (``get_registered_model(name).aliases``), not
    ``get_model_version_by_alias``: MLflow's SQL and file stores answer a missing alias with
    ``INVALID_PARAMETER_VALUE``, the same code as a malformed request, so that answer cannot
    tell "absent" from "refused". An alias that is not set is absent from the dict; a model
    that does not exist (``RESOURCE_DOES_NOT_EXIST``) gives ``{}`` when ``missing_ok``.

    Raises:
        RegistryError: the model does not exist and not ``missing_ok``, or any other MLflow
            error (server error, timeout): "unknown" is never "absent".
    """
    import mlflow

    try:
        found = client.get_registered_model(model_name).aliases or {}
    except mlflow.exceptions.MlflowException as exc:
        if not is_not_found(exc):
            raise RegistryError(f"could not read the aliases of {model_name!r} (not a 'not found' answer): {exc}") from exc
        if missing_ok:
            return {}
        raise RegistryError(f"registered model {model_name!r} does not exist: {exc}") from exc
    return {alias: int(version) for alias, version in found.items()}


def alias_version(client, model_name: str, alias: str) -> int | None:
    """The version ``alias`` points at, or ``None`` when the model or the alias does not exist (:func:`snapshot`).

    Raises:
        RegistryError: any other MLflow error.
    """
    return snapshot(client, model_name).get(alias)


def ensure_registered_model(client, model_name: str, description: str = "") -> None:
    """Create the registered model unless it exists.

    Raises:
        RegistryError: MLflow answered with anything but "does not exist" / "created".
    """
    import mlflow

    try:
        client.get_registered_model(model_name)
        return
    except mlflow.exceptions.MlflowException as exc:
        if not is_not_found(exc):
            raise RegistryError(f"could not read registered model {model_name!r} (not a 'not found' answer): {exc}") from exc
    try:
        client.create_registered_model(model_name, description=description)
    except mlflow.exceptions.MlflowException as exc:
        if getattr(exc, "error_code", None) != "RESOURCE_ALREADY_EXISTS":  # created meanwhile by another run
            raise RegistryError(f"could not create registered model {model_name!r}: {exc}") from exc


def set_alias(client, model_name: str, alias: str, version: int | str, reason: str, evidence: dict[str, Any] | None = None) -> None:
    """Point ``alias`` at ``version``, recording ``reason`` (and ``evidence``) on the version first.

    The caller vets the move and holds :func:`registry_lock`. Idempotent: setting an alias
    where it already points rewrites the record only. The version the alias leaves gets
    ``alias.<alias>.removed`` ("moved to v<N>: <reason>").

    Raises:
        RegistryError: MLflow failed; the alias is where it was, or at ``version`` with its record.
    """
    version = str(version)
    previous = alias_version(client, model_name, alias)
    mlflow_call(f"record alias {alias!r} on {model_name} v{version}", client.set_model_version_tag, model_name, version, f"alias.{alias}.reason", reason)
    if evidence is not None:
        payload = json.dumps(evidence, sort_keys=True, default=str)[:5000]
        mlflow_call(f"record alias {alias!r} evidence", client.set_model_version_tag, model_name, version, f"alias.{alias}.evidence", payload)
    faults.point(f"before_set_alias_{alias}")
    mlflow_call(f"set alias {alias!r} of {model_name} to v{version}", client.set_registered_model_alias, model_name, alias, version)
    if previous is not None and str(previous) != version:
        mlflow_call(f"record alias {alias!r} leaving v{previous}", client.set_model_version_tag, model_name, str(previous), f"alias.{alias}.removed", f"moved to v{version}: {reason}")
    log.info("alias %s of %s -> v%s: %s", alias, model_name, version, reason)


def delete_alias(client, model_name: str, alias: str, reason: str) -> int | None:
    """Remove ``alias`` (no-op when absent), recording ``reason`` on the version it left.

    Returns:
        The version the alias pointed at, or ``None`` when it was not set.

    Raises:
        RegistryError: MLflow failed.
    """
    version = alias_version(client, model_name, alias)
    if version is None:
        return None
    mlflow_call(f"record removal of alias {alias!r}", client.set_model_version_tag, model_name, str(version), f"alias.{alias}.removed", reason)
    mlflow_call(f"delete alias {alias!r} of {model_name}", client.delete_registered_model_alias, model_name, alias)
    log.info("alias %s of %s removed from v%s: %s", alias, model_name, version, reason)
    return version


def version_aliases(client, model_name: str, version: int | str) -> list[str]:
    """Sorted aliases of one version (search results carry none, so this reads the version)."""
    return sorted(mlflow_call(f"read {model_name} v{version}", client.get_model_version, model_name, str(version)).aliases)
