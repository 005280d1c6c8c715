"""The journal of an alias move in progress: the state it started from, and its recovery.

A move of several aliases (the canary's promote, reject and rollback in
:mod:`pipeline.loop.promotion`) writes, under the registered model's lock
(:func:`pipeline.registry.aliases.registry_lock`), a journal: the aliases ``champion``,
``challenger``, ``previous_champion`` and the tags of every version it touches, as they were.
Once every alias and tag has moved, the journal is marked ``committed`` with the move's
alias-event rows; it is deleted when those rows are written. A process that dies in the middle
leaves it, and whoever takes the lock next (another move, a registration, ``lstm-pipeline
registry``) calls :func:`recover` first: an uncommitted journal's state is put back, a committed
one's rows are written. Aliases are never left half moved, a recorded move is never undone,
and nothing moved after the crash is later reverted by a stale journal.

Where the journal lives follows the lock (:func:`journal_for`): with a file lock, a file next
to the lock file (one machine); with a Postgres advisory lock (:func:`pipeline.registry.aliases.lock_url`),
a row of the table :data:`TABLE` in that same database, keyed by the model's name like the lock,
so a move that died on one machine is recovered by whichever machine takes the lock next.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pandas as pd

from pipeline.core.errors import RegistryError
from pipeline.registry import aliases

log = logging.getLogger(__name__)

ALIASES = (aliases.CHAMPION, aliases.CHALLENGER, aliases.PREVIOUS_CHAMPION)
#: the table of the Postgres journals (one row per registered model with a move in progress)
TABLE = "lstm_pipeline_alias_journal"
#: the transaction-level advisory lock that serialises the table's creation (any fixed key unlike the models' keys)
CREATE_LOCK_KEY = int.from_bytes(b"lstmjrnl", "big", signed=True)
#: Postgres's SQLSTATE for "relation does not exist"
UNDEFINED_TABLE = "42P01"
_TABLE_READY: set[str] = set()  # lock database URLs where this process has made sure :data:`TABLE` exists


def current_aliases(client, model_name: str) -> dict[str, int | None]:
    """``{champion, challenger, previous_champion}`` -> version or ``None``, read in one request.

    One read of the registered model gives a consistent snapshot (and does not depend on
    how a server words "alias not found", which differs between the SQL store and REST).

    Raises:
        RegistryError: the model does not exist or MLflow failed.
    """
    found = aliases.snapshot(client, model_name, missing_ok=False)
    return {alias: found.get(alias) for alias in ALIASES}


def version_tags(client, model_name: str, version: int) -> dict[str, str]:
    return dict(aliases.mlflow_call(f"read {model_name} v{version}", client.get_model_version, model_name, str(version)).tags)


def journal_path(tracking_uri: str, model_name: str) -> Path:
    """``<lock file>.move.json``: the state a move in progress started from."""
    lock = aliases.lock_path(tracking_uri, model_name)
    return lock.with_name(lock.stem + ".move.json")


def _dumps(record: dict) -> str:
    from pipeline.core.artifacts import json_default  # numpy numbers in a decision's evidence

    return json.dumps(record, sort_keys=True, default=json_default)


def write_journal(path: Path, record: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(_dumps(record))
    os.replace(tmp, path)


class FileJournal:
    """The journal as a file next to the lock file (:func:`journal_path`): one machine."""

    def __init__(self, path: Path):
        self.path, self.where = path, str(path)

    def read(self) -> dict | None:
        return json.loads(self.path.read_text()) if self.path.exists() else None

    def write(self, record: dict) -> None:
        write_journal(self.path, record)

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


class PostgresJournal:
    """The journal as a row of :data:`TABLE` in the lock's Postgres database, keyed by the model's name."""

    def __init__(self, url: str, model_name: str):
        self.url, self.model_name = url, model_name
        self.where = f"table {TABLE} (model_name {model_name!r}) of the lock database"

    def _execute(self, sql: str, **params):
        """``sql`` in one transaction on a connection of its own; a SELECT's scalar.

        The table is created on this process's first access to the database (under a global advisory lock: two
        processes creating it at once would race in the catalog); later accesses take no global lock, so journals of
        different models never wait on each other. A table dropped since is created again (one retry).
        """
        import sqlalchemy as sa

        engine = sa.create_engine(self.url, poolclass=sa.pool.NullPool)
        try:
            for attempt in (0, 1):
                try:
                    with engine.begin() as conn:
                        if self.url not in _TABLE_READY:
                            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": CREATE_LOCK_KEY})
                            conn.execute(sa.text(f"CREATE TABLE IF NOT EXISTS {TABLE} (model_name TEXT PRIMARY KEY, record TEXT NOT NULL)"))
                        result = conn.execute(sa.text(sql), params)
                        value = result.scalar() if result.returns_rows else None
                    _TABLE_READY.add(self.url)
                    return value
                except sa.exc.ProgrammingError as exc:
                    if attempt or self.url not in _TABLE_READY or getattr(exc.orig, "sqlstate", None) != UNDEFINED_TABLE:
                        raise
                    _TABLE_READY.discard(self.url)  # dropped since this process created it
        except sa.exc.OperationalError as exc:
            raise RegistryError(f"could not reach the lock database for the alias-move journal of {self.model_name!r}: {exc.orig}") from exc
        finally:
            engine.dispose()

    def read(self) -> dict | None:
        text = self._execute(f"SELECT record FROM {TABLE} WHERE model_name = :m", m=self.model_name)
        return json.loads(text) if text is not None else None

    def write(self, record: dict) -> None:
        self._execute(f"INSERT INTO {TABLE} (model_name, record) VALUES (:m, :r) ON CONFLICT (model_name) DO UPDATE SET record = EXCLUDED.record",
                      m=self.model_name, r=_dumps(record))  # fmt: skip

    def clear(self) -> None:
        self._execute(f"DELETE FROM {TABLE} WHERE model_name = :m", m=self.model_name)


def journal_for(tracking_uri: str, model_name: str, store_url: str | None = None) -> FileJournal | PostgresJournal:
    """The journal beside the lock :func:`pipeline.registry.aliases.registry_lock` takes with the same arguments."""
    url = aliases.lock_url(store_url)
    return PostgresJournal(url, model_name) if url else FileJournal(journal_path(tracking_uri, model_name))


def restore(client, model_name: str, record: dict) -> None:
    """Put aliases and tags back as ``record`` (a journal) has them. Raw client calls: no new records."""
    for version, tags in record["tags"].items():
        now = version_tags(client, model_name, int(version))
        for key in set(now) - set(tags):
            aliases.mlflow_call(f"delete tag {key}", client.delete_model_version_tag, model_name, version, key)
        for key, value in tags.items():
            if now.get(key) != value:
                aliases.mlflow_call(f"restore tag {key}", client.set_model_version_tag, model_name, version, key, value)
    for alias, version in record["before"].items():
        if current_aliases(client, model_name)[alias] == version:
            continue
        if version is None:
            aliases.mlflow_call(f"delete alias {alias}", client.delete_registered_model_alias, model_name, alias)
        else:
            aliases.mlflow_call(f"restore alias {alias}", client.set_registered_model_alias, model_name, alias, str(version))


def record_events(store, rows: dict) -> None:
    """Write a move's alias-event rows (``{"model_name", "moves": [(alias, from, to)], "action", "reason", "evidence",
    "as_of"}``) in one transaction, unless the store already holds them (a recovery after the write)."""
    as_of = pd.Timestamp(rows["as_of"])
    held = {(e["alias"], e["from_version"], e["to_version"]) for e in store.alias_events(rows["model_name"], 50)
            if e["action"] == rows["action"] and pd.Timestamp(e["as_of"]) == as_of}  # fmt: skip
    if not all(tuple(m) in held for m in rows["moves"]):
        store.record_alias_events(rows["model_name"], [tuple(m) for m in rows["moves"]], rows["action"], rows["reason"], rows["evidence"], rows["as_of"])


def recover(client, tracking_uri: str, model_name: str, store_url: str | None = None) -> dict | None:
    """Finish or undo a move that died half way, if its journal is there (:func:`journal_for`). Call it holding the lock.

    A journal marked ``committed`` (the registry part of the move was whole; only its alias-event rows may be missing)
    is finished: its rows are written to the forecast store at ``store_url`` unless they are there already. Any other
    journal is undone: the aliases and tags it records are put back.

    Returns:
        The journal record that was finished or restored, or ``None`` when there was nothing to do.

    Raises:
        RegistryError: MLflow (or the lock database) failed during the restore; the journal stays for the next try.
        StoreError: the forecast store failed while finishing; the journal stays for the next try.
    """
    journal = journal_for(tracking_uri, model_name, store_url)
    record = journal.read()
    if record is None:
        return None
    if record.get("committed"):
        if store_url:
            from pipeline.store.sql import ForecastStore

            record_events(ForecastStore(store_url), record["events"])
        journal.clear()
        log.warning("finished the interrupted %s of %s: its aliases had all moved; %s", record["action"], model_name,
                    "its alias-event rows are in the store" if store_url else "no store was given for its alias-event rows")  # fmt: skip
        return record
    restore(client, model_name, record)
    journal.clear()
    log.warning("restored %s to its aliases before an interrupted %s (%s)", model_name, record["action"], record["before"])
    return record
