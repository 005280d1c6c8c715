"""The journal of an alias move in progress: the state it started from, and its recovery.

A move of several aliases (the canary's promote, reject and rollback in
:mod:`pipeline.loop.promotion`) writes, under the registered model's lock
(:func:`pipeline.registry.aliases.registry_lock`), a journal next to the lock file: the aliases
``champion``, ``challenger``, ``previous_champion`` and the tags of every version it touches,
as they were. The journal is deleted when the move is whole. A process that dies in the middle
leaves it, and whoever takes the lock next (another move, a registration, ``lstm-pipeline
registry``) calls :func:`recover` first, which puts that state back before doing anything else:
aliases are never left half moved, and nothing moved after the crash is later reverted by a
stale journal.

The journal lives in :func:`pipeline.registry.aliases.lock_dir`, on the machine of the process
that moved: with a Postgres advisory lock shared by several machines, a journal left on one is
not seen by the others (docs/LOOP.md; the closing note of the change that wrote this).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from pipeline.registry import aliases

log = logging.getLogger(__name__)

ALIASES = (aliases.CHAMPION, aliases.CHALLENGER, aliases.PREVIOUS_CHAMPION)


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


def write_journal(path: Path, record: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, sort_keys=True))
    os.replace(tmp, path)


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


def recover(client, tracking_uri: str, model_name: str) -> dict | None:
    """Undo a move that died half way, if its journal is there. Call it holding the lock.

    Returns:
        The journal record that was restored, or ``None`` when there was nothing to do.

    Raises:
        RegistryError: MLflow failed during the restore; the journal stays for the next try.
    """
    path = journal_path(tracking_uri, model_name)
    if not path.exists():
        return None
    record = json.loads(path.read_text())
    restore(client, model_name, record)
    path.unlink()
    log.warning("restored %s to its aliases before an interrupted %s (%s)", model_name, record["action"], record["before"])
    return record
