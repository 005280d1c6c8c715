"""Alias moves of the canary as transactions: promote, reject, roll back.

Each move, under the registered model's lock (:func:`pipeline.registry.aliases.registry_lock`):

1. reads the aliases ``champion``, ``challenger``, ``previous_champion`` and checks that
   they are what the caller decided on (a decision made on stale aliases is refused);
2. writes a journal (the aliases and the tags of every version it touches, as they were)
   where the lock is: next to the lock file, or in the lock's Postgres database
   (:func:`pipeline.registry.journal.journal_for`);
3. moves the aliases (each alias records its reason on its version, see :mod:`pipeline.registry.aliases`)
   and sets the version tags ``canary`` (``pending`` / ``promoted`` / ``rejected`` /
   ``rolled_back``), ``canary_reason`` and the decision's numbers (``canary_*``);
4. marks the journal ``committed`` (with the move's alias-event rows) and writes those rows,
   one per alias that changed, to the forecast store in one transaction;
5. deletes the journal, logs one line and returns an :class:`AliasMove`, whose
   :meth:`AliasMove.outlet` is the Airflow Asset event of ``champion`` when it moved.

If any step fails, the aliases and tags are put back from the journal and the error is
raised: the registry is as before the move. If the process dies in the middle (a killed
worker, a tracking server that stops answering so that even the restore fails), the
journal stays, and the next move, a registration, or :func:`recover` on that model acts on
it before doing anything else: a journal from before step 4 is undone (the state it records
is restored), a ``committed`` one is finished (its rows written unless the store has them).
Aliases are never left half moved, and a whole move is never undone after its rows were
written (:mod:`pipeline.registry.journal`).

Life cycle (README "Canary"): registration sets ``challenger`` (``canary=pending``);
:func:`run_canary` promotes it (``previous_champion`` <- old champion, ``champion`` <-
challenger, ``challenger`` removed) or rejects it (``challenger`` removed); after a
promotion, a champion significantly worse than ``previous_champion`` on the origins since
is rolled back (``champion`` <- previous champion, ``previous_champion`` removed,
``canary=rolled_back``), and a rolled-back version is never promoted automatically again.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any

from pipeline.core import faults
from pipeline.core.errors import PipelineError, RegistryError
from pipeline.registry import aliases, server
from pipeline.registry.journal import (  # noqa: F401 - journal_path, write_journal re-exported
    ALIASES,
    current_aliases,
    journal_for,
    journal_path,
    record_events,
    recover,
    restore,
    version_tags,
    write_journal,
)

log = logging.getLogger(__name__)

CHAMPION, CHALLENGER, PREVIOUS = aliases.CHAMPION, aliases.CHALLENGER, aliases.PREVIOUS_CHAMPION
CANARY_TAG, REASON_TAG = "canary", "canary_reason"
PENDING, PROMOTED, REJECTED, ROLLED_BACK = "pending", "promoted", "rejected", "rolled_back"
#: the as-of time of the promotion; origins from it on count for the rollback watch
PROMOTED_AS_OF_TAG = "canary_promoted_as_of"
#: set on a promoted champion when its rollback watch ended: ``kept``
WATCH_TAG = "canary_watch"


class StaleDecisionError(RegistryError):
    """The aliases moved between the decision and the move (another process moved them)."""


class RefusedMoveError(RegistryError):
    """The move is not allowed for this version (failed gate, rolled back before, not a version)."""


def champion_asset_uri(model_name: str) -> str:
    """The Airflow Asset of the serving alias, the same naming as the training DAG's ``@challenger``."""
    return f"mlflow://models/{model_name}@{CHAMPION}"


@dataclass(frozen=True)
class AliasMove:
    """What one transaction did. ``before``/``after``: alias -> version (``None``: not set)."""

    action: str
    model_name: str
    version: int
    before: dict[str, int | None]
    after: dict[str, int | None]
    reason: str
    as_of: str
    evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def champion_moved(self) -> bool:
        return self.before.get(CHAMPION) != self.after.get(CHAMPION)

    def outlet(self) -> dict[str, Any] | None:
        """The ``champion`` Asset event (``{"uri", "extra"}``) when champion moved, else ``None``.

        In Airflow the canary task declares ``outlets=[Asset(uri)]`` and copies ``extra``
        into ``outlet_events``; elsewhere the dict is the record of the event.
        """
        if not self.champion_moved:
            return None
        extra = {"action": self.action, "from_version": self.before.get(CHAMPION), "to_version": self.after.get(CHAMPION),
                 "reason": self.reason, "as_of": self.as_of}  # fmt: skip
        return {"uri": champion_asset_uri(self.model_name), "extra": extra}

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "outlet": self.outlet()}


# --- the transaction -----------------------------------------------------------------------


def _tags_for(action_tag: str, reason: str, as_of: str, evidence: dict[str, Any]) -> dict[str, str]:
    numbers = {f"canary_{k}" if not k.startswith("canary_") else k: v for k, v in evidence.items() if k not in ("reason", "action")}
    tags = {CANARY_TAG: action_tag, REASON_TAG: reason[:5000], "canary_as_of": as_of}
    tags.update({k: (f"{v:.6g}" if isinstance(v, float) else str(v))[:5000] for k, v in numbers.items()})
    return tags


def _apply(client, model_name: str, plan: list[tuple[str, int | None, str]], evidence: dict) -> None:
    for alias, version, reason in plan:
        if version is None:
            aliases.delete_alias(client, model_name, alias, reason)
        else:
            aliases.set_alias(client, model_name, alias, version, reason, evidence)
        faults.point(f"promotion_after_{alias}")


def _transaction(client, uri: str, model_name: str, action: str, version: int, expect: dict[str, int | None] | None,
                 plan_fn, tag_updates: dict[int, dict[str, str]], reason: str, as_of: str, evidence: dict, store) -> AliasMove:  # fmt: skip
    import mlflow

    store_url = getattr(store, "url", None)
    with aliases.registry_lock(uri, model_name, store_url=store_url):
        recover(client, uri, model_name, store_url)
        before = current_aliases(client, model_name)
        if expect is not None and any(before[a] != v for a, v in expect.items()):
            raise StaleDecisionError(f"{action} of {model_name} v{version} refused: aliases are {before}, the decision expected {expect}")
        plan = plan_fn(before)
        touched = sorted({v for v in (*before.values(), *(v for _, v, _ in plan), *tag_updates) if v is not None})
        journal = journal_for(uri, model_name, store_url)
        entry = {"action": action, "before": before, "tags": {str(v): version_tags(client, model_name, v) for v in touched}}
        journal.write(entry)
        try:
            _apply(client, model_name, plan, evidence)
            for v, tags in tag_updates.items():
                for key, value in tags.items():
                    aliases.mlflow_call(f"tag {model_name} v{v}", client.set_model_version_tag, model_name, str(v), key, value)
            after = current_aliases(client, model_name)
            move = AliasMove(action, model_name, version, before, after, reason, as_of, evidence)
            # the registry part is whole: from here a recovery finishes the move (writes its rows) instead of undoing it
            journal.write({**entry, "committed": True, "events": _event_rows(move)})
            faults.point("promotion_before_store")
            _record_events(store, move)
            faults.point("promotion_after_store")
        except (PipelineError, mlflow.exceptions.MlflowException, OSError, _store_errors()) as exc:
            _undo(client, model_name, journal, action, exc)
            raise RegistryError(f"{action} of {model_name} v{version} failed and was undone (aliases {before}): {exc}") from exc
        journal.clear()
    log.info("%s %s v%s: %s -> %s: %s", action, model_name, version, before, after, reason)
    return move


def _store_errors() -> type[Exception]:
    from sqlalchemy.exc import SQLAlchemyError

    return SQLAlchemyError


def _undo(client, model_name: str, journal, action: str, exc: BaseException) -> None:
    import mlflow

    try:
        restore(client, model_name, journal.read())
    except (PipelineError, mlflow.exceptions.MlflowException) as restore_exc:
        raise RegistryError(
            f"{action} of {model_name} failed ({exc}) and the restore failed too ({restore_exc}); the journal ({journal.where}) "
            "stays and the next move, or `lstm-pipeline registry`, restores the aliases it records"
        ) from restore_exc
    journal.clear()


def _event_rows(move: AliasMove) -> dict[str, Any]:
    """The alias-event rows of ``move`` (:func:`pipeline.registry.journal.record_events`' argument): one per alias that
    changed; a rejection of a version that had already lost ``challenger`` (to a newer registration) records that
    replacement (``challenger``: old -> current)."""
    changed = [(a, move.before.get(a), move.after.get(a)) for a in ALIASES if move.before.get(a) != move.after.get(a)]
    if not changed and move.action == "reject":
        changed = [(CHALLENGER, move.version, move.after.get(CHALLENGER))]
    return {"model_name": move.model_name, "moves": changed, "action": move.action, "reason": move.reason,
            "evidence": move.evidence, "as_of": move.as_of}  # fmt: skip


def _record_events(store, move: AliasMove) -> None:
    """The rows of :func:`_event_rows`, in one transaction."""
    if store is not None:
        record_events(store, _event_rows(move))


def _check_promotable(client, model_name: str, version: int, automatic: bool, force: bool) -> None:
    tags = version_tags(client, model_name, version)
    if tags.get(CANARY_TAG) == ROLLED_BACK and (automatic or not force):
        raise RefusedMoveError(
            f"{model_name} v{version} was rolled back ({tags.get(REASON_TAG, 'no reason recorded')}); it is never promoted "
            "automatically again" + ("" if automatic else "; pass --force to promote it by hand")
        )
    if tags.get("gate") != "passed" and not force:
        raise RefusedMoveError(f"{model_name} v{version} did not pass the baseline gate (tag gate={tags.get('gate')!r}); pass --force to promote it anyway")


def promote(client, uri: str, model_name: str, version: int, *, reason: str, as_of: str, evidence: dict | None = None,
            store=None, expect: dict | None = None, automatic: bool = True, force: bool = False) -> AliasMove:  # fmt: skip
    """``previous_champion`` <- champion, ``champion`` <- ``version``, ``challenger`` removed if it was ``version``.

    Args:
        as_of: ISO time of the decision (the check's ``T``; an operator's command time).
        evidence: the decision's numbers (:meth:`pipeline.loop.canary.CanaryDecision.as_dict`).
        store: a :class:`pipeline.store.sql.ForecastStore` (alias-event rows), or ``None``.
        expect: aliases the decision was made on; the move is refused if they moved since.
        automatic: a canary decision (True) or an operator (False).
        force: promote a version that failed the gate or was rolled back (operators only).

    Raises:
        RefusedMoveError, StaleDecisionError: nothing was changed.
        RegistryError: MLflow or the store failed; the registry was restored.
    """
    version, evidence = int(version), dict(evidence or {})
    _check_promotable(client, model_name, version, automatic, force)

    def plan(before):
        if before[CHAMPION] == version:
            raise RefusedMoveError(f"{model_name} v{version} is already champion")
        steps = [(PREVIOUS, before[CHAMPION], f"champion until v{version} was promoted: {reason}")] if before[CHAMPION] else []
        steps.append((CHAMPION, version, f"promoted: {reason}"))
        if before[CHALLENGER] == version:
            steps.append((CHALLENGER, None, f"promoted to champion: {reason}"))
        return steps

    tags = {version: {**_tags_for(PROMOTED, reason, as_of, evidence), PROMOTED_AS_OF_TAG: as_of}}
    return _transaction(client, uri, model_name, "promote", version, expect, plan, tags, reason, as_of, evidence, store)


def reject(client, uri: str, model_name: str, version: int, *, reason: str, as_of: str, evidence: dict | None = None,
           store=None, expect: dict | None = None) -> AliasMove:  # fmt: skip
    """``challenger`` removed from ``version`` (if it holds it); ``canary=rejected`` with the reason."""
    version, evidence = int(version), dict(evidence or {})

    def plan(before):
        return [(CHALLENGER, None, f"rejected: {reason}")] if before[CHALLENGER] == version else []

    tags = {version: _tags_for(REJECTED, reason, as_of, evidence)}
    return _transaction(client, uri, model_name, "reject", version, expect, plan, tags, reason, as_of, evidence, store)


def rollback(client, uri: str, model_name: str, *, reason: str, as_of: str, evidence: dict | None = None,
             store=None, expect: dict | None = None) -> AliasMove:  # fmt: skip
    """``champion`` <- ``previous_champion``, ``previous_champion`` removed; the demoted one ``canary=rolled_back``.

    Raises:
        RefusedMoveError: there is no ``previous_champion`` or no ``champion``.
    """
    evidence = dict(evidence or {})
    before = current_aliases(client, model_name)
    if before[PREVIOUS] is None or before[CHAMPION] is None:
        raise RefusedMoveError(f"cannot roll back {model_name}: aliases are {before}; a rollback needs champion and previous_champion")
    demoted, restored = before[CHAMPION], before[PREVIOUS]

    def plan(now):
        return [(CHAMPION, now[PREVIOUS], f"rolled back to: {reason}"), (PREVIOUS, None, f"champion again after the rollback of v{demoted}")]

    tags = {demoted: _tags_for(ROLLED_BACK, reason, as_of, evidence), restored: {REASON_TAG: f"champion again: v{demoted} was rolled back: {reason}"[:5000]}}
    expect = expect or {CHAMPION: demoted, PREVIOUS: restored}
    return _transaction(client, uri, model_name, "rollback", demoted, expect, plan, tags, reason, as_of, evidence, store)


# --- the canary check (a monitoring task) ---------------------------------------------------


def _set_tags(client, model_name: str, version: int, tags: dict[str, str]) -> None:
    for key, value in tags.items():
        aliases.mlflow_call(f"tag {model_name} v{version}", client.set_model_version_tag, model_name, str(version), key, value)


def settle_challengers(client, uri: str, model_name: str, as_of: str, store=None) -> list[AliasMove]:
    """Bring canary tags in line with the aliases registration set, before deciding anything.

    - The ``challenger`` without a ``canary`` tag starts its canary: ``canary=pending``.
    - A version still ``pending`` that lost ``challenger`` to a newer registration (two
      challengers in a row) is rejected: "replaced in the canary by vN".
    - A ``challenger`` that is also ``champion`` (the model's first version) leaves the
      canary: ``challenger`` removed, ``canary=promoted`` (nothing to compare it with).
    """
    moves: list[AliasMove] = []
    now = current_aliases(client, model_name)
    chal = now[CHALLENGER]
    found = aliases.mlflow_call("search versions", client.search_model_versions, f"name='{model_name}'")
    for mv in sorted(found, key=lambda m: int(m.version)):
        v = int(mv.version)
        if mv.tags.get(CANARY_TAG) == PENDING and v != chal:
            reason = f"replaced in the canary by the newer challenger v{chal}" if chal else "lost the challenger alias"
            moves.append(reject(client, uri, model_name, v, reason=reason, as_of=as_of, store=store))
    if chal is not None and chal == now[CHAMPION]:
        reason = "first version of the model: champion at registration, no canary needed"
        moves.append(reject_as_champion(client, uri, model_name, chal, reason=reason, as_of=as_of, store=store))
    elif chal is not None and CANARY_TAG not in version_tags(client, model_name, chal):
        _set_tags(client, model_name, chal, {CANARY_TAG: PENDING, REASON_TAG: f"in the canary against champion v{now[CHAMPION]}", "canary_as_of": as_of})
    return moves


def reject_as_champion(client, uri: str, model_name: str, version: int, *, reason: str, as_of: str, store=None) -> AliasMove:
    """``challenger`` removed from a version that is already ``champion``; ``canary=promoted``."""

    def plan(before):
        return [(CHALLENGER, None, reason)] if before[CHALLENGER] == version else []

    tags = {version: {**_tags_for(PROMOTED, reason, as_of, {}), PROMOTED_AS_OF_TAG: as_of}}
    return _transaction(client, uri, model_name, "settle", version, {CHAMPION: version}, plan, tags, reason, as_of, {}, store)


def _paired(store, model_name: str, a: int, b: int, since: str | None, as_of: str):
    return store.paired_scores(model_name, a, b, since=since, until=as_of)


def check_challenger(client, uri: str, cfg, model_name: str, as_of: str, store) -> dict[str, Any]:
    """Decide on the current challenger (``a`` = champion, ``b`` = challenger) and move aliases."""
    from pipeline.loop.canary import decide

    now = current_aliases(client, model_name)
    champ, chal = now[CHAMPION], now[CHALLENGER]
    if chal is None or champ is None or chal == champ:
        return {"action": "none", "reason": f"no challenger in the canary (aliases {now})"}
    decision = decide(_paired(store, model_name, champ, chal, None, as_of), cfg.canary, horizon=cfg.features.horizon)
    evidence = {**decision.as_dict(), "champion_version": champ, "challenger_version": chal}
    expect = {CHAMPION: champ, CHALLENGER: chal}
    if decision.action == "promote":
        return promote(client, uri, model_name, chal, reason=decision.reason, as_of=as_of, evidence=evidence, store=store, expect=expect).as_dict()
    if decision.action == "reject":
        return reject(client, uri, model_name, chal, reason=decision.reason, as_of=as_of, evidence=evidence, store=store, expect=expect).as_dict()
    _set_tags(client, model_name, chal, {REASON_TAG: decision.reason[:5000], **decision.tags()})
    return {"action": "wait", "reason": decision.reason, "version": chal, "evidence": evidence}


def check_rollback(client, uri: str, cfg, model_name: str, as_of: str, store) -> dict[str, Any]:
    """Decide whether the promoted champion (``b``) stays, against ``previous_champion`` (``a``)."""
    from pipeline.loop.canary import decide_rollback

    now = current_aliases(client, model_name)
    champ, prev = now[CHAMPION], now[PREVIOUS]
    tags = version_tags(client, model_name, champ) if champ is not None else {}
    if prev is None or tags.get(CANARY_TAG) != PROMOTED or tags.get(WATCH_TAG) or PROMOTED_AS_OF_TAG not in tags:
        return {"action": "none", "reason": "no promoted champion under watch"}
    decision = decide_rollback(_paired(store, model_name, prev, champ, tags[PROMOTED_AS_OF_TAG], as_of), cfg.canary, horizon=cfg.features.horizon)
    evidence = {**decision.as_dict(), "champion_version": champ, "previous_champion_version": prev}
    if decision.action == "rollback":
        # the aliases the decision was made on: a champion promoted meanwhile is not the one this evidence condemns
        return rollback(client, uri, model_name, reason=decision.reason, as_of=as_of, evidence=evidence, store=store,
                        expect={CHAMPION: champ, PREVIOUS: prev}).as_dict()  # fmt: skip
    if decision.action == "keep":
        _set_tags(client, model_name, champ, {WATCH_TAG: "kept", "canary_watch_reason": decision.reason[:5000]})
    return {"action": decision.action, "reason": decision.reason, "version": champ, "evidence": evidence}


def run_canary(cfg, as_of: str, store, client=None, republish: bool = False) -> dict[str, Any]:
    """Stage entry point (the ``canary`` task of ``lstm_monitoring``): settle, watch, decide.

    Args:
        cfg: the use case's :class:`~pipeline.core.config.PipelineConfig` (``canary``, ``features.horizon``).
        as_of: the check's cut-off ``T`` (ISO string); scores with origins ``< T`` only.
        store: the forecast store holding both versions' scores.
        republish: a retry (the ``canary`` task's try > 1): when nothing moves now, return the ``champion`` event of
            the move an earlier attempt of this check made (:func:`recorded_outlet`); at least once, never lost.

    Returns:
        ``{"as_of", "settled": [moves], "rollback": {...}, "challenger": {...}, "outlet": event or None}``;
        ``outlet`` is the ``champion`` Asset event of the move that changed ``champion``.
    """

    uri = server.tracking_uri(cfg)
    name = cfg.mlflow.registered_model_name
    with server.bounded_http_retries():
        if client is None:
            client = server.client(uri)
        with aliases.registry_lock(uri, name, store_url=getattr(store, "url", None)):
            recover(client, uri, name, getattr(store, "url", None))
        settled = [m.as_dict() for m in settle_challengers(client, uri, name, as_of, store)]
        watch = check_rollback(client, uri, cfg, name, as_of, store)
        canary = check_challenger(client, uri, cfg, name, as_of, store)
    outlet = next((r["outlet"] for r in (watch, canary) if r.get("outlet")), None)
    if outlet is None and republish:  # a retry after the move (the task failed later): the event is still this check's
        with server.bounded_http_retries():
            outlet = recorded_outlet(store, name, as_of, current_aliases(client, name)[CHAMPION])
    return {"as_of": as_of, "settled": settled, "rollback": watch, "challenger": canary, "outlet": outlet}


def recorded_outlet(store, model_name: str, as_of, champion: int | None) -> dict[str, Any] | None:
    """The ``champion`` Asset event of the canary move this check (``as_of`` = ``T``) already made, rebuilt from its
    alias-event row (:meth:`AliasMove.outlet`'s shape).

    Only the newest ``champion`` row counts, and only when it is a canary's promotion or rollback (not an operator's:
    ``evidence.manual``) as of ``T`` that ``champion`` (the version holding it now) still reflects: a later move, or
    an operator's, is not this check's to announce. ``None`` otherwise. A retry of the ``canary`` task whose first
    attempt moved ``champion`` and then failed finds no challenger left to decide on: without this its
    ``publish_champion`` would skip, and the Asset event that downstream DAGs wait for would be lost.
    """
    from pipeline.data.io import as_of_timestamp

    row = next((r for r in store.alias_events(model_name, limit=20) if r["alias"] == CHAMPION), None)
    if (row is None or row["action"] not in ("promote", "rollback") or (row.get("evidence") or {}).get("manual")
            or row["as_of"] is None or as_of_timestamp(row["as_of"]) != as_of_timestamp(as_of) or row["to_version"] != champion):  # fmt: skip
        return None
    extra = {"action": row["action"], "from_version": row["from_version"], "to_version": row["to_version"], "reason": row["reason"], "as_of": as_of}
    return {"uri": champion_asset_uri(model_name), "extra": extra}


# --- operators (the ``promote`` / ``rollback`` / ``registry`` commands) ---------------------


def _operator_session(cfg):
    from pipeline.store.sql import store_for

    client, uri = server.connect(cfg)
    return client, uri, cfg.mlflow.registered_model_name, store_for(cfg)


def manual_promote(cfg, version: int, reason: str, as_of: str, force: bool = False) -> AliasMove:
    """An operator's promotion: the same transaction and records as the canary's, ``evidence.manual``.

    Raises:
        RefusedMoveError: the version failed the baseline gate or was rolled back, and not ``force``.
    """
    client, uri, name, store = _operator_session(cfg)
    with aliases.registry_lock(uri, name, store_url=getattr(store, "url", None)):
        recover(client, uri, name, getattr(store, "url", None))
    evidence = {"manual": True, "forced": force}
    return promote(client, uri, name, int(version), reason=f"manual: {reason}", as_of=as_of, evidence=evidence,
                   store=store, automatic=False, force=force)  # fmt: skip


def manual_rollback(cfg, reason: str, as_of: str) -> AliasMove:
    """An operator's rollback to ``previous_champion`` (same records as the canary's)."""
    client, uri, name, store = _operator_session(cfg)
    with aliases.registry_lock(uri, name, store_url=getattr(store, "url", None)):
        recover(client, uri, name, getattr(store, "url", None))
    return rollback(client, uri, name, reason=f"manual: {reason}", as_of=as_of, evidence={"manual": True}, store=store)


def registry_report(cfg, n_events: int = 10) -> dict[str, Any]:
    """Versions (aliases, gate, canary state and reason), the aliases, the last alias events.

    Also restores a move that died half way (its journal), so what it prints is true.
    """
    client, uri, name, store = _operator_session(cfg)
    if not _is_registered(client, name):  # a new user's state, not a failure: say what makes a version
        return {"model": name, "tracking_uri": uri, "aliases": dict.fromkeys(ALIASES), "versions": [], "events": [],
                "recovered": None, "registered": False}  # fmt: skip
    with aliases.registry_lock(uri, name, store_url=getattr(store, "url", None)):
        recovered = recover(client, uri, name, getattr(store, "url", None))
    now = current_aliases(client, name)
    by_version: dict[int, list[str]] = {}
    for alias, v in now.items():
        if v is not None:
            by_version.setdefault(v, []).append(alias)
    found = aliases.mlflow_call("search versions", client.search_model_versions, f"name='{name}'")
    versions = [
        {"version": int(mv.version), "aliases": sorted(by_version.get(int(mv.version), [])), "gate": mv.tags.get("gate", ""),
         "lstm_rmse": mv.tags.get("lstm_rmse", ""), "canary": mv.tags.get(CANARY_TAG, ""), "canary_reason": mv.tags.get(REASON_TAG, "")}
        for mv in sorted(found, key=lambda m: int(m.version))
    ]  # fmt: skip
    return {"model": name, "tracking_uri": uri, "aliases": now, "versions": versions,
            "events": store.alias_events(name, n_events), "recovered": recovered, "registered": True}  # fmt: skip


def _is_registered(client, name: str) -> bool:
    """Whether the registered model exists; ``False`` only on MLflow's "does not exist".

    Raises:
        RegistryError: any other answer (a 5xx, a timeout).
    """
    import mlflow

    try:
        client.get_registered_model(name)
    except mlflow.exceptions.MlflowException as exc:
        if aliases.is_not_found(exc):
            return False
        raise RegistryError(f"MLflow failed to read registered model {name!r} (not a 'not found' answer): {exc}") from exc
    return True


def _v(version: int | None) -> str:
    return f"v{version}" if version else "-"


def format_report(report: dict[str, Any]) -> str:
    """The ``registry`` command's text: a versions table, then the last alias events."""
    if report.get("registered") is False:
        return (f"{report['model']} at {report['tracking_uri']}: no version registered yet. `lstm-pipeline train --config F` "
                "registers one when it passes the comparison gate (its summary says why when it does not).")  # fmt: skip
    lines = [f"{report['model']} at {report['tracking_uri']}", "aliases: " + ", ".join(f"{a}=v{v}" if v else f"{a}=-" for a, v in report["aliases"].items())]
    if report.get("recovered"):
        lines.append(f"restored an interrupted {report['recovered']['action']} (aliases back to {report['recovered']['before']})")
    lines.append(f"{'version':>7}  {'aliases':<28} {'gate':<7} {'lstm_rmse':<10} {'canary':<12} reason")
    for v in report["versions"]:
        lines.append(f"{v['version']:>7}  {','.join(v['aliases']) or '-':<28} {v['gate']:<7} {v['lstm_rmse']:<10} {v['canary'] or '-':<12} {v['canary_reason'][:120]}")
    lines.append("last alias events (newest first):")
    for e in report["events"]:
        when = str(e["as_of"]) if e.get("as_of") is not None else "(time not recorded)"
        lines.append(f"  {when:<19}  {e['action']:<8} {e['alias']:<18} {_v(e['from_version'])} -> {_v(e['to_version'])}  {e['reason'][:120]}")
    return "\n".join(lines)
