"""Replay: the closed loop stepped over a stretch of history, as a measured experiment.

A replay injects a fault (:mod:`pipeline.loop.scenarios`) into a copy of the observations,
trains the initial champion as of ``start`` (data ``ds < start``) when its registry has
none, then steps the clock ``T`` from ``start`` to ``end`` at ``monitoring.schedule`` and
runs, in-process, the stage functions the Airflow DAGs run at ``T``:

1. the monitoring check (:func:`pipeline.loop.monitoring.run_check`): forecast, score, drift,
   the retrain rule;
2. when its decision is ``retrain``: the training pipeline on the data before ``T``
   (:func:`pipeline.runner.run_training_pipeline`), which registers the new version as
   ``challenger`` through the normal registration (the gate still applies);
3. the canary stage (:func:`pipeline.loop.promotion.run_canary`): promote, reject or roll back.

Everything lives under ``<artifact_root>/replay/<replay_id>/``: the drifted data copy,
its own MLflow store (``mlflow.db``, ``mlflow-artifacts/``), its own forecast store
(``store.db``), training runs (``runs/``), one record per tick (``ticks/``), and the
results ``timeline.csv``, ``timeline.png`` and ``summary.json``. The user's registry and
champion are never touched unless the caller points the replay at them.

Idempotent: the replay id defaults to a name derived from its parameters, every training
run id is ``<replay_id>--<T>``, and a tick whose record exists is not run again, so a rerun
(after a crash or to redraw the plot) reuses everything already done.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.core import artifacts
from pipeline.core.config import PipelineConfig
from pipeline.core.errors import ConfigError, DataLoadError, PipelineError
from pipeline.core.runs import run_fingerprint
from pipeline.loop.scenarios import Scenario

log = logging.getLogger(__name__)

REPLAY = "replay"
#: Airflow schedule presets a replay can step at (a cron expression has no fixed step)
PRESETS = {"@hourly": "1h", "@daily": "1D", "@weekly": "7D"}
#: window after a promotion over which recovery is measured (issue 14: "two weeks")
RECOVERY_WINDOW = pd.Timedelta(days=14)


class ReplayError(PipelineError):
    """A replay cannot start or go on (no champion after the initial training, bad clock)."""


Check = Callable[..., dict]
Train = Callable[..., dict]
Canary = Callable[..., dict]
Promote = Callable[..., dict]
#: the window over which a promotion is judged afterwards (``worse_promotions``) and after
#: which the post-fault RMSE counts as settled (``rmse_post_fault_settled``)
SETTLE_WINDOW = pd.Timedelta(days=7)


@dataclass(frozen=True)
class Policy:
    """What triggers a retrain in a replay; every policy runs the same stage functions.

    - ``never``: the initial champion serves throughout (no training);
    - ``periodic:<every>``: retrain every ``<every>`` since the last training, through the canary
      (what teams do today);
    - ``rule``: the monitoring rule as configured (the default);
    - ``oracle[:<lag>]``: one retrain at the incident plus ``<lag>`` (default ``3D``), promoted
      without a canary: what perfect detection buys.
    """

    kind: str = "rule"
    every: pd.Timedelta | None = None
    lag: pd.Timedelta = pd.Timedelta(days=3)

    def __str__(self) -> str:
        if self.kind == "periodic":
            return f"periodic:{_duration_text(self.every)}"
        if self.kind == "oracle":
            return f"oracle:{_duration_text(self.lag)}"
        return self.kind

    def trigger(self, check: dict, as_of: pd.Timestamp, last_trained: pd.Timestamp, incident: pd.Timestamp | None, oracle_done: bool) -> str | None:
        """The reason to train at ``as_of`` under this policy, or ``None``."""
        if self.kind == "rule":
            return "rule" if check.get("decision") == "retrain" else None
        if self.kind == "periodic":
            return f"periodic: {_duration_text(as_of - last_trained)} since the last training" if as_of - last_trained >= self.every else None
        if self.kind == "oracle" and incident is not None and not oracle_done and as_of >= incident + self.lag:
            return f"oracle: the incident at {incident.isoformat()} plus {_duration_text(self.lag)}"
        return None


def _duration_text(delta: pd.Timedelta | None) -> str:
    if delta is None:
        return "?"
    days, rest = divmod(delta, pd.Timedelta(days=1))
    return f"{int(days)}D" if rest == pd.Timedelta(0) else f"{int(delta / pd.Timedelta(hours=1))}h"


def parse_policy(text: str | None) -> Policy:
    """``never`` | ``periodic:<every>`` | ``rule`` | ``oracle[:<lag>]`` (durations such as ``7D``, ``12h``).

    Raises:
        ReplayError: anything else, naming the flag, what was found and what is expected.
    """
    expected = "expected never, periodic:<every> (e.g. periodic:7D), rule, or oracle[:<lag>] (e.g. oracle:3D)"
    raw = (text or "rule").strip()
    kind, _, arg = raw.partition(":")
    if kind in ("never", "rule") and not arg:
        return Policy(kind)
    if kind in ("periodic", "oracle") and (arg or kind == "oracle"):
        try:
            delta = _duration(arg, "--policy") if arg else Policy().lag
        except ReplayError:
            raise ReplayError(f"replay --policy {raw!r}: {arg!r} is not a positive duration; {expected}") from None
        return Policy(kind, every=delta) if kind == "periodic" else Policy(kind, lag=delta)
    raise ReplayError(f"replay --policy: {expected}; found {raw!r}")


def _duration(text: str, flag: str) -> pd.Timedelta:
    """A positive duration (``90D``, ``12h``, ``2W``) from a command-line flag.

    Raises:
        ReplayError: not a duration, or not positive, naming the flag and the value found.
    """
    try:
        delta = pd.Timedelta(text)
    except ValueError:
        delta = None
    if delta is None or delta is pd.NaT or delta <= pd.Timedelta(0):
        raise ReplayError(f"replay {flag}: expected a positive duration such as 365D, 12h or 2W; found {text!r}")
    return delta


def _default_check(cfg: PipelineConfig, as_of: pd.Timestamp, data_path: Path, out_dir: Path) -> dict:
    from pipeline.loop.monitoring import run_check

    return run_check(cfg, as_of, data_path=data_path, out_dir=out_dir)


def rows_before_copy(cfg: PipelineConfig, data_path: Path, as_of: pd.Timestamp, target: Path, since: pd.Timestamp | None = None) -> Path:
    """Write the raw rows with timestamp ``< as_of`` (and ``>= since``) of ``data_path`` to ``target``.

    Without ``since`` this is what ``train --as-of`` sees. Byte-identical for identical
    inputs, so two replays whose data agree before ``as_of`` share one training run (same
    data sha256, same run fingerprint).
    """
    from pipeline.data.io import parse_timestamps, read_raw
    from pipeline.loop.scenarios import write_scenario_data

    raw = read_raw(cfg.data, data_path)
    ds = parse_timestamps(raw, cfg.data, strict=False)
    keep = (ds < as_of) & (ds >= since) if since is not None else ds < as_of
    return write_scenario_data(raw[keep.to_numpy()], target)


def _default_train(
    cfg: PipelineConfig, as_of: pd.Timestamp, data_path: Path, run_path: Path, tags: dict[str, str], history: pd.Timedelta | None = None
) -> dict:
    """The training pipeline (validate ... register) on the rows before ``as_of`` (the last ``history`` of them), in ``run_path``."""
    from pipeline.runner import run_training_pipeline

    since = as_of - history if history is not None else None
    before = rows_before_copy(cfg, data_path, as_of, artifacts.REPLAY_TRAINING_INPUT.in_run(run_path), since)
    return run_training_pipeline(cfg, run_path, data_path=before, register=True, tags=tags, as_of=as_of)


def _default_canary(cfg: PipelineConfig, as_of: pd.Timestamp, data_path: Path) -> dict:
    """:func:`pipeline.loop.promotion.run_canary` on the replay's store, flattened to one action.

    ``action``: ``rollback`` when the watch rolled back, else the challenger's verdict
    (``promote`` / ``reject`` / ``wait`` / ``none``); ``alias_move``: the ``champion`` move, if any.
    """
    from pipeline.loop.promotion import run_canary
    from pipeline.store.sql import store_for

    out = run_canary(cfg, as_of.isoformat(), store_for(cfg))
    watch, chal = out.get("rollback") or {}, out.get("challenger") or {}
    first = watch if watch.get("action") == "rollback" else chal
    event = (out.get("outlet") or {}).get("extra") or {}
    move = f"champion v{event.get('from_version')} -> v{event.get('to_version')} ({event.get('action')})" if event else None
    settled = "; ".join(f"{m.get('action')} v{m.get('version')}" for m in out.get("settled") or [])
    return {
        "action": first.get("action"),
        "reason": first.get("reason"),
        "alias_move": "; ".join(x for x in (move, settled and f"settled: {settled}") if x) or None,
        "watch": watch.get("action"),
        "to_version": event.get("to_version") if event.get("action") == "promote" else None,
    }


def _default_promote(cfg: PipelineConfig, as_of: pd.Timestamp, version: int, reason: str) -> dict:
    """Promote ``version`` to champion without a canary (the ``oracle`` policy): the canary's own
    vetted, recorded, atomic transaction (:func:`pipeline.loop.promotion.promote`)."""
    from pipeline.loop.promotion import CHAMPION, promote
    from pipeline.registry.server import connect
    from pipeline.store.sql import store_for

    client, uri = connect(cfg)  # promote() takes the registry lock and finishes a crashed move first
    move = promote(client, uri, cfg.mlflow.registered_model_name, int(version), reason=reason, as_of=as_of.isoformat(),
                   evidence={"policy": "oracle"}, store=store_for(cfg))  # fmt: skip
    return {"action": "promote", "reason": reason, "alias_move": f"champion v{move.before.get(CHAMPION)} -> v{version} (promote)", "to_version": int(version)}


@dataclass(frozen=True)
class Stages:
    """The stage functions a tick calls; the defaults are the ones the DAGs call.

    ``check(cfg, as_of, data_path, out_dir) -> dict`` (keys of ``run_check``),
    ``train(cfg, as_of, data_path, run_path, tags) -> dict`` (keys of ``train --json``),
    ``canary(cfg, as_of, data_path) -> dict`` (``action`` and ``reason`` at least),
    ``champion(cfg) -> int | None`` (the version ``champion`` points at).
    """

    check: Check = _default_check
    train: Train = _default_train
    canary: Canary | None = _default_canary
    champion: Callable[[PipelineConfig], int | None] = field(default=None)  # type: ignore[assignment]
    #: ``promote(cfg, as_of, version, reason) -> dict`` (``action``, ``alias_move``): the oracle's direct promotion
    promote: Promote = _default_promote

    def __post_init__(self) -> None:
        if self.champion is None:
            object.__setattr__(self, "champion", _champion_version)


@dataclass
class ReplaySpec:
    """What to replay. Timestamps are on the data's clock (naive, like ``ds``)."""

    start: pd.Timestamp
    end: pd.Timestamp
    scenario: Scenario
    inject_at: pd.Timestamp | None = None
    step: pd.Timedelta | None = None
    replay_id: str | None = None
    #: train on the rows in ``[T - history, T)`` only (default: all rows before ``T``)
    history: pd.Timedelta | None = None
    #: keep the config's MLflow/store settings instead of the replay's own (expert use)
    use_config_stores: bool = False
    #: what triggers a retrain (default: the monitoring rule)
    policy: Policy = field(default_factory=Policy)
    #: a recorded incident: the data already holds a fault that began here; nothing is
    #: injected (the scenario must be ``none``) and the outcome is measured from this time
    incident_at: pd.Timestamp | None = None
    extra: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------ clock and config


def schedule_step(schedule: str | None) -> pd.Timedelta:
    """``monitoring.schedule`` as a fixed step: a preset (``@daily``) or a pandas duration (``6h``).

    Raises:
        ConfigError: a cron expression or anything else without a fixed period.
    """
    text = (schedule or "@daily").strip()
    try:
        step = pd.Timedelta(PRESETS.get(text, text))
    except ValueError:
        step = None
    if step is None or step <= pd.Timedelta(0):
        raise ConfigError(
            f"replay: monitoring.schedule {schedule!r} has no fixed step; expected one of {sorted(PRESETS)} "
            "or a duration such as '6h' (give --step to replay a cron schedule)"
        )
    return step


def ticks(start: pd.Timestamp, end: pd.Timestamp, step: pd.Timedelta) -> list[pd.Timestamp]:
    """``start, start + step, ...`` up to and including ``end``.

    Raises:
        ReplayError: ``end`` is not after ``start``.
    """
    if end <= start:
        raise ReplayError(f"replay: expected end after start, found start {start} and end {end}")
    return list(pd.date_range(start, end, freq=step))


def default_replay_id(cfg: PipelineConfig, spec: ReplaySpec) -> str:
    """``<config name>-<scenario>-<start>-<end>[-at<inject>]``: the same replay gets the same id."""
    fmt = "%Y%m%dT%H%M"
    parts = [cfg.name, spec.scenario.name, spec.start.strftime(fmt), spec.end.strftime(fmt)]
    if spec.inject_at is not None and spec.scenario.kind != "none":
        parts.append("at" + spec.inject_at.strftime(fmt))
    if spec.history is not None:
        parts.append(f"h{spec.history.days}d")
    if spec.incident_at is not None:
        parts.append("incident" + spec.incident_at.strftime(fmt))
    if spec.policy.kind != "rule":
        parts.append(str(spec.policy).replace(":", ""))
    return artifacts.safe_run_id("-".join(parts))


def isolated_config(cfg: PipelineConfig, folder: Path) -> PipelineConfig:
    """``cfg`` with its MLflow store, forecast store and artifact root inside ``folder``.

    The replay's registry is ``sqlite:///<folder>/mlflow.db`` (artifacts in
    ``<folder>/mlflow-artifacts``), its forecast store ``sqlite:///<folder>/store.db``, its
    training runs under ``<folder>/runs``.
    """
    folder = Path(folder).resolve()
    update: dict[str, Any] = {
        "mlflow": cfg.mlflow.model_copy(
            update={"tracking_uri": f"sqlite:///{artifacts.MLFLOW_STORE.at(folder)}", "artifact_location": folder / "mlflow-artifacts"}
        ),
        "run": cfg.run.model_copy(update={"artifact_root": folder / "runs"}),
    }
    monitoring = getattr(cfg, "monitoring", None)
    if monitoring is not None and "store_url" in type(monitoring).model_fields:
        update["monitoring"] = monitoring.model_copy(update={"store_url": f"sqlite:///{artifacts.REPLAY_STORE.at(folder)}"})
    return cfg.model_copy(update=update)


@contextmanager
def tracking_env(uri: str, store_url: str | None = None) -> Iterator[None]:
    """Point ``MLFLOW_TRACKING_URI`` (which overrides the config) at ``uri`` for the block, and
    ``LSTM_PIPELINE_STORE_URL`` at ``store_url`` (or unset it), so a replay never writes to the
    registry or store of a running stack (``make services``); then restore both."""
    wanted = {"MLFLOW_TRACKING_URI": uri, "LSTM_PIPELINE_STORE_URL": store_url}
    old = {k: os.environ.get(k) for k in wanted}
    for key, value in wanted.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    try:
        yield
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


# ------------------------------------------------------------------ data


def prepare_data(cfg: PipelineConfig, spec: ReplaySpec, folder: Path) -> Path:
    """Write ``<folder>/data.csv.gz``: the config's data with the scenario applied from ``inject_at``.

    The shipped file is only read. The same inputs give the same bytes (so training run
    fingerprints match on a rerun).
    """
    from pipeline.data.io import read_raw
    from pipeline.loop.scenarios import apply_scenario, write_scenario_data

    raw = read_raw(cfg.data)
    inject = spec.inject_at if spec.inject_at is not None else spec.start
    drifted = apply_scenario(
        raw, spec.scenario, inject, cfg.data.timestamp_column, cfg.data.target_column, cfg.data.timestamp_format, cfg.data.timezone
    )
    return write_scenario_data(drifted, artifacts.REPLAY_DATA.at(folder))


#: manifest key: :func:`pipeline.core.runs.run_fingerprint` of the replay's config (machine-local paths excluded)
CONFIG_FINGERPRINT = "config_fingerprint"


def _bind_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    """Record a replay's parameters in its folder, or check that a rerun has the same ones.

    Raises:
        ConfigError: the folder holds a replay started with other parameters (named), the config's
            fingerprint included, so a rerun after a config change does not resume the old replay.
    """
    path = artifacts.REPLAY_MANIFEST.at(folder)
    if path.exists():
        old = artifacts.read_json(path)
        if CONFIG_FINGERPRINT not in old:  # a replay started before the fingerprint was recorded: its other parameters bind it
            manifest = {k: v for k, v in manifest.items() if k != CONFIG_FINGERPRINT}
        if old != manifest:
            changed = sorted(k for k in manifest if old.get(k) != manifest[k])
            why = (" (the config's settings differ from the ones it was started with, e.g. a changed default or monitoring setting:"
                   " resuming would mix two configs' ticks and champions)") if CONFIG_FINGERPRINT in changed else ""  # fmt: skip
            raise ConfigError(
                f"replay id {folder.name!r} ({folder}) was started with other parameters ({changed}){why}; "
                "give another --replay-id, the same parameters, or remove the folder to start again"
            )
        return
    artifacts.write_json(path, manifest)


# ------------------------------------------------------------------ one tick


def _stamp(ts: pd.Timestamp) -> str:
    return ts.strftime("%Y%m%dT%H%M")


def train_as_of(
    cfg: PipelineConfig, stages: Stages, replay_id: str, as_of: pd.Timestamp, data_path: Path, tags: dict, run_path: Path | None = None
) -> dict:
    """Train on data ``ds < as_of`` in run ``<replay_id>--<as_of>`` (a rerun resumes it)."""
    run_path = run_path or artifacts.run_dir(cfg.run.artifact_root, f"{replay_id}--{_stamp(as_of)}")
    tags = {"replay_id": replay_id, "as_of": as_of.isoformat(), **tags}
    return stages.train(cfg, as_of, data_path, run_path, tags)


def _number(value: Any) -> float | None:
    return None if value is None else float(value)


def _cpu_s() -> float:
    """CPU seconds of this process and its waited-for children (baseline workers), user + system."""
    import resource

    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def run_tick(
    cfg: PipelineConfig, stages: Stages, replay_id: str, as_of: pd.Timestamp, data_path: Path, folder: Path, inject_at,
    policy: Policy | None = None, last_trained: pd.Timestamp | None = None, oracle_done: bool = False,
) -> dict:  # fmt: skip
    """One clock tick: check, retrain when the policy says so, canary. Returns the timeline row.

    Args:
        inject_at: the incident (``None``: a clean replay); the oracle retrains after it.
        policy: what triggers a retrain (default: the monitoring rule).
        last_trained: when the current champion line last trained (``periodic``).
        oracle_done: the oracle's one retrain has happened.
    """
    policy = policy or Policy()
    wall0, cpu0 = time.perf_counter(), _cpu_s()
    check = stages.check(cfg, as_of, data_path, folder / "checks" / _stamp(as_of))
    row: dict[str, Any] = {
        "as_of": as_of.isoformat(),
        "injected": inject_at is not None and as_of >= inject_at,
        "decision": check["decision"],
        "reasons": "; ".join(check.get("reasons") or []),
        "champion_version": check.get("champion_version"),
        "n_origins_scored": check.get("n_origins_scored"),
        "rolling_rmse": _number(check.get("rolling_rmse")),
        "training_rmse": _number(check.get("training_rmse")),
        "threshold": _number(check.get("threshold")),
        "naive_rmse": _number(check.get("naive_rmse")),
        "drift_share": _number(check.get("drift_share")),
        "cusum": _number((check.get("cusum") or {}).get("max_statistic")),  # rule cusum: the statistic and its decision interval
        "cusum_h": _number((check.get("cusum") or {}).get("h")),
        "cusum_fast": _number(((check.get("cusum") or {}).get("fast") or {}).get("max_statistic")),  # its fast limb, if any
        "cusum_fast_h": _number(((check.get("cusum") or {}).get("fast") or {}).get("h")),
        "check_id": check.get("check_id"),
        "policy_trigger": None,
        "trained_run": None,
        "registered_version": None,
        "registration": None,
        "canary_action": None,
        "canary_reason": None,
        "alias_move": None,
        "promoted_version": None,
        "canary_watch": None,
    }
    why = policy.trigger(check, as_of, last_trained if last_trained is not None else as_of, inject_at, oracle_done)
    if why is not None:
        from pipeline.loop.finetune import start_from_champion
        from pipeline.loop.monitoring import retrain_config, retrain_tags

        conf = check.get("conf") if policy.kind == "rule" else None
        conf = conf or {"reason": row["reasons"] if policy.kind == "rule" else why, "check_id": check.get("check_id"), "as_of": row["as_of"]}
        tags = {f"trigger.{k}": str(v) for k, v in conf.items()}  # what the training DAG records from its conf
        tags["replay.policy"] = str(policy)
        tcfg = retrain_config(cfg)  # retrain.mode: refit (default), finetune or the scheduled protocol
        run_path = artifacts.run_dir(cfg.run.artifact_root, f"{replay_id}--{_stamp(as_of)}")
        tcfg = start_from_champion(tcfg, run_path, check.get("champion_version"))  # finetune only
        tags.update(retrain_tags(tcfg))
        out = train_as_of(tcfg, stages, replay_id, as_of, data_path, tags, run_path)
        row.update(
            policy_trigger=why,
            trained_run=Path(out.get("run_dir", "")).name or None,
            registered_version=out.get("registered_version"),
            registration=out.get("registration") or f"v{out.get('registered_version')} {out.get('aliases')}",
        )
        if policy.kind == "oracle" and out.get("registered_version") is not None:
            moved = stages.promote(cfg, as_of, int(out["registered_version"]), f"{why}: promoted without a canary")
            row.update(canary_action=moved.get("action"), canary_reason=moved.get("reason"), alias_move=moved.get("alias_move"),
                       promoted_version=moved.get("to_version", int(out["registered_version"])))  # fmt: skip
    if stages.canary is not None and policy.kind != "oracle":
        can = stages.canary(cfg, as_of, data_path)
        row.update(canary_action=can.get("action"), canary_reason=can.get("reason"), alias_move=can.get("alias_move"),
                   canary_watch=can.get("watch"), promoted_version=can.get("to_version"))  # fmt: skip
    row.update(wall_s=round(time.perf_counter() - wall0, 3), cpu_s=round(_cpu_s() - cpu0, 3))
    return row


# ------------------------------------------------------------------ the replay


def run_replay(cfg: PipelineConfig, spec: ReplaySpec, stages: Stages | None = None, progress: bool = True) -> dict[str, Any]:
    """Run (or resume) a replay; returns its summary (also written to ``summary.json``).

    Args:
        cfg: the use case; its stores are replaced by the replay's own (see
            :func:`isolated_config`) unless ``spec.use_config_stores``.
        spec: clock, scenario and injection time (default: ``start``).
        stages: the stage functions (default: the DAGs' ones).
        progress: one step per tick (:class:`pipeline.core.progress.Progress`: a bar on a terminal, plain lines elsewhere).

    Returns:
        The summary dict (see :func:`summarize`) plus ``replay_dir``, ``timeline``, ``plot``.

    Raises:
        ReplayError: the initial training registered no champion, or the clock is bad.
        ConfigError: the replay id exists with other parameters; the schedule has no fixed step.
        PipelineError subclasses from the stages (the ticks done so far are kept).
    """
    from pipeline.core.progress import Progress

    stages = stages or Stages()
    if spec.history is not None and stages.train is _default_train:
        stages = replace(stages, train=partial(_default_train, history=spec.history))
    step = spec.step or schedule_step(getattr(getattr(cfg, "monitoring", None), "schedule", None))
    clock = ticks(spec.start, spec.end, step)
    replay_id = spec.replay_id or default_replay_id(cfg, spec)
    folder = Path(cfg.run.artifact_root).resolve() / REPLAY / artifacts.safe_run_id(replay_id)
    folder.mkdir(parents=True, exist_ok=True)
    inject = spec.inject_at if spec.inject_at is not None else spec.start
    if inject < spec.start:
        raise ReplayError(f"replay: the fault must start at or after --start ({spec.start}), found --inject-at {inject}")
    if spec.incident_at is not None and spec.scenario.kind != "none":
        raise ReplayError(
            f"replay --incident-at {spec.incident_at}: a recorded incident injects nothing; expected --scenario none, found {spec.scenario.name!r}"
        )
    faulty = spec.scenario.kind != "none" or spec.incident_at is not None
    incident = spec.incident_at if spec.incident_at is not None else inject
    manifest = {
        "config": str(cfg.source or ""), "scenario": spec.scenario.model_dump(), "start": spec.start.isoformat(),
        "end": spec.end.isoformat(), "inject_at": inject.isoformat(), "step": str(step),
        "history": str(spec.history) if spec.history is not None else None, **spec.extra,
        CONFIG_FINGERPRINT: run_fingerprint(cfg, None),
    }  # fmt: skip
    if spec.policy.kind != "rule" or spec.incident_at is not None:  # absent for the default: older replays keep their manifest
        manifest.update(policy=str(spec.policy), incident_at=spec.incident_at.isoformat() if spec.incident_at is not None else None)
    _bind_manifest(folder, manifest)
    rcfg = cfg if spec.use_config_stores else isolated_config(cfg, folder)
    data_path = prepare_data(cfg, spec, folder)
    from pipeline.registry.server import tracking_uri
    from pipeline.store.sql import store_url

    uri = rcfg.mlflow.tracking_uri if not spec.use_config_stores else tracking_uri(rcfg)
    rows: list[dict] = []
    with tracking_env(uri, store_url(rcfg) if spec.use_config_stores else rcfg.monitoring.store_url):
        shared = Path(cfg.run.artifact_root).resolve() / REPLAY / "_initial"
        initial = _ensure_champion(rcfg, stages, replay_id, spec.start, data_path, folder, shared, spec.history)
        bar = Progress(len(clock), f"replay {spec.scenario.name}", "tick", enabled=progress)
        for as_of in clock:
            record = folder / "ticks" / f"{_stamp(as_of)}.json"
            if record.exists():
                row = artifacts.read_json(record)
            else:
                trained = [pd.Timestamp(r["as_of"]) for r in rows if r.get("trained_run")]
                row = run_tick(rcfg, stages, replay_id, as_of, data_path, folder, incident if faulty else None,
                               policy=spec.policy, last_trained=max([spec.start, *trained]), oracle_done=bool(trained))  # fmt: skip
                artifacts.write_json(record, row)
            rows.append(row)
            bar.update(1, tick=f"{as_of:%Y-%m-%d %H:%M}", decision=row["decision"])
        bar.close()
    timeline = pd.DataFrame(rows)
    for col in ("champion_version", "registered_version", "n_origins_scored", "promoted_version"):
        if col not in timeline:  # a tick recorded before the column existed
            timeline[col] = None
        timeline[col] = pd.to_numeric(timeline[col]).astype("Int64")  # versions stay integers next to gaps
    timeline.to_csv(artifacts.REPLAY_TIMELINE.at(folder), index=False)
    summary = summarize(timeline, incident, faulty, initial)
    summary.update(outcome(timeline, incident if faulty else None, _published_scores(rcfg, stages), rcfg.features.horizon,
                           _shadow(rcfg, stages), initial))  # fmt: skip
    summary.update(policy=str(spec.policy), replay_id=replay_id, scenario=spec.scenario.name, replay_dir=str(folder),
                   timeline=str(artifacts.REPLAY_TIMELINE.at(folder)), tracking_uri=uri)  # fmt: skip
    summary["plot"] = str(plot_timeline(timeline, incident if faulty else None, artifacts.REPLAY_PLOT.at(folder)))
    artifacts.write_json(artifacts.REPLAY_SUMMARY.at(folder), summary)
    return summary


def _ensure_champion(
    cfg: PipelineConfig, stages: Stages, replay_id: str, start, data_path: Path, folder: Path, shared: Path, history=None
) -> dict:
    """Train and register the initial champion as of ``start`` when the registry has none.

    The training run lives in ``shared/<config name>--<start>--<config fingerprint>``: replays
    of one config from one start see the same data before ``start`` (a fault is injected at
    or after it), so they share that run (trained once, registered in each replay's registry).
    """
    record = artifacts.REPLAY_INITIAL.at(folder)
    if record.exists():
        return artifacts.read_json(record)
    version = stages.champion(cfg)
    if version is not None:
        out = {"champion_version": version, "trained": False}
    else:
        window = f"--h{history.days}d" if history is not None else ""
        run_path = shared / artifacts.safe_run_id(f"{cfg.name}--{_stamp(start)}{window}--{run_fingerprint(cfg, None)[:8]}")
        wall0, cpu0 = time.perf_counter(), _cpu_s()
        res = train_as_of(cfg, stages, replay_id, start, data_path, {"trigger.reason": "initial champion of the replay"}, run_path)
        version = stages.champion(cfg)
        if version is None:
            raise ReplayError(
                f"replay {replay_id}: the initial training as of {start} registered no champion "
                f"({res.get('registration', 'no registered version')}); see {res.get('run_dir')}"
            )
        out = {"champion_version": version, "trained": True, "training_rmse": res.get("training_rmse"), "run_dir": res.get("run_dir"),
               "wall_s": round(time.perf_counter() - wall0, 3), "cpu_s": round(_cpu_s() - cpu0, 3)}  # fmt: skip
    artifacts.write_json(record, out)
    return out


def _champion_version(cfg: PipelineConfig) -> int | None:
    from pipeline.registry.aliases import CHAMPION, alias_version
    from pipeline.registry.server import connect

    return alias_version(connect(cfg)[0], cfg.mlflow.registered_model_name, CHAMPION)


# ------------------------------------------------------------------ results


def _hours(a: pd.Timestamp, b: pd.Timestamp) -> float:
    return float((a - b) / pd.Timedelta(hours=1))


def _recovery(timeline: pd.DataFrame, ts: pd.Series) -> dict[str, Any]:
    """Rolling RMSE over the two weeks after the last promotion / the new champion's training RMSE."""
    promoted = timeline.index[timeline["canary_action"].fillna("").eq("promote")]
    if len(promoted) == 0:
        return {"promoted_at": None, "recovery_ratio": None, "recovery_ratio_max": None}
    at = ts[promoted[-1]]
    after = timeline[(ts > at) & (ts <= at + RECOVERY_WINDOW)].dropna(subset=["rolling_rmse", "training_rmse"])
    if after.empty:
        return {"promoted_at": at.isoformat(), "recovery_ratio": None, "recovery_ratio_max": None}
    ratio = after["rolling_rmse"] / after["training_rmse"]
    return {
        "promoted_at": at.isoformat(),
        "recovery_ratio": float(ratio.iloc[-1]),
        "recovery_ratio_max": float(ratio.max()),
        "recovery_window_end": pd.Timestamp(ts[after.index[-1]]).isoformat(),
    }


def summarize(timeline: pd.DataFrame, inject_at: pd.Timestamp, faulty: bool, initial: dict | None = None) -> dict[str, Any]:
    """The replay's measured outcome.

    - ``detection_delay_h``: hours from ``inject_at`` to the first ``retrain`` decision at or
      after it (``None``: the rule missed the fault within the replay);
    - ``alarm_delay_h``: hours to the first check at or after ``inject_at`` where the rule
      fired, even if a guard held the retrain (decision ``cooldown``);
    - ``false_triggers``: ``retrain`` decisions before ``inject_at`` (every one on a clean
      scenario, ``faulty`` False);
    - ``triggers``, ``registrations``, ``promotions``, ``rejections``, ``rollbacks``: counts;
    - ``canary_decisions``: count per canary action;
    - ``recovery_ratio``: the last rolling RMSE within 14 days after the last promotion over
      the new champion's training RMSE (``recovery_ratio_max``: the worst in that window).
    """
    ts = pd.to_datetime(timeline["as_of"])
    trig = timeline["decision"].eq("retrain")
    after = trig & (ts >= inject_at) if faulty else trig & False
    before = trig & ~(ts >= inject_at) if faulty else trig
    actions = timeline["canary_action"].dropna()
    actions = actions[actions.ne("none")]
    detected = ts[after].min() if after.any() else None
    # the rule fired: "retrain", or "cooldown" (fired, held by a guard: cooldown or a challenger in its canary)
    fired = timeline["decision"].isin(["retrain", "cooldown"]) & (ts >= inject_at)
    alarm = ts[fired].min() if faulty and fired.any() else None
    out: dict[str, Any] = {
        "ticks": int(len(timeline)),
        "start": ts.min().isoformat(),
        "end": ts.max().isoformat(),
        "inject_at": inject_at.isoformat() if faulty else None,
        "initial_champion": (initial or {}).get("champion_version"),
        "detected_at": detected.isoformat() if detected is not None else None,
        "detection_delay_h": _hours(detected, inject_at) if detected is not None else None,
        "first_alarm_at": alarm.isoformat() if alarm is not None else None,
        "alarm_delay_h": _hours(alarm, inject_at) if alarm is not None else None,
        "false_triggers": int(before.sum()),
        "triggers": int(trig.sum()),
        "registrations": int(timeline["registered_version"].notna().sum()),
        "canary_decisions": {str(k): int(v) for k, v in actions.value_counts().items()},
        "promotions": int(actions.eq("promote").sum()),
        "rejections": int(actions.eq("reject").sum()),
        "rollbacks": int(actions.eq("rollback").sum()),
        "decisions": {str(k): int(v) for k, v in timeline["decision"].value_counts().items()},
    }
    out.update(_recovery(timeline, ts))
    return out


def _published_scores(cfg: PipelineConfig, stages: Stages) -> pd.DataFrame | None:
    """:func:`published_with_bands` from the replay's store (``None`` when the checks are not the real
    ones: nothing was stored)."""
    if stages.check is not _default_check:
        return None
    from pipeline.store.sql import store_for

    return published_with_bands(store_for(cfg), cfg.mlflow.registered_model_name)


def published_with_bands(store, name: str) -> pd.DataFrame:
    """The champion's published forecasts with their observations (scored ones only) and, for versions
    with intervals, their published (tracked) bands ``yhat_lo_<level>, yhat_hi_<level>``: ``unique_id,
    origin, step, ds, yhat, y, version[, yhat_lo_<level>, yhat_hi_<level> ...]`` (UTC-naive times)."""
    scored, published = store.published_scores(name), store.published(name)
    bands = [c for c in published.columns if c.startswith(("yhat_lo_", "yhat_hi_"))]
    if not bands or scored.empty:
        return scored
    keys = ["unique_id", "origin", "step", "version"]
    return scored.merge(published[keys + bands], on=keys, how="left")


def _shadow(cfg: PipelineConfig, stages: Stages) -> Callable[..., pd.DataFrame] | None:
    """``paired(new, old, since, until)``: both versions' scores on the same origins (the replaced
    champion keeps being forecast as ``previous_champion``)."""
    if stages.check is not _default_check:
        return None
    from pipeline.store.sql import store_for

    store = store_for(cfg)
    return lambda new, old, since, until: store.paired_scores(cfg.mlflow.registered_model_name, new, old, since, until)


def _full_origins(frame: pd.DataFrame, horizon: int) -> pd.DataFrame:
    """Rows of the origins whose ``horizon`` steps are all observed."""
    if frame.empty:
        return frame
    n = frame.groupby(["unique_id", "origin"])["step"].transform("size")
    return frame[(n == horizon) & frame["y"].notna()]


def _rmse(frame: pd.DataFrame, column: str = "yhat") -> float | None:
    if frame is None or frame.empty:
        return None
    return float(np.sqrt(np.mean((frame[column].to_numpy(float) - frame["y"].to_numpy(float)) ** 2)))


def outcome(
    timeline: pd.DataFrame, incident: pd.Timestamp | None, published: pd.DataFrame | None, horizon: int,
    paired: Callable[..., pd.DataFrame] | None = None, initial: dict | None = None,
) -> dict[str, Any]:  # fmt: skip
    """What the policy bought, in the issue's terms (original units; fully observed origins, all steps).

    - ``rmse_published``: the published champion forecasts over the whole replay; ``rmse_pre_fault``
      origins before the incident; ``rmse_post_fault`` from it; ``rmse_post_fault_settled`` from the
      incident plus :data:`SETTLE_WINDOW` (7 days);
    - ``trainings``: retrains during the replay (the initial champion not counted);
    - ``worse_promotions``: promotions after which the new champion's RMSE over the next 7 days of
      origins exceeds the replaced champion's shadow RMSE on the same origins
      (``worse_promotions_unmeasured``: promotions without such pairs, e.g. at the replay's end);
    - ``recovery_delay_h``: hours from the incident to the first promotion at or after it;
    - ``cpu_s``, ``wall_s``: the ticks' (and the initial training's) CPU and wall seconds, as run
      (a rerun that reuses ticks reports the first run's figures);
    - ``coverage``, when the published forecasts have bands: per level, the share of scored values
      inside their published (tracked) band and the mean width, over all scored origins
      (``{"80": {"coverage", "mean_width", "n", "pre_fault", "post_fault"}}``; the last two the
      coverage before and from the incident).
    """
    ts = pd.to_datetime(timeline["as_of"])
    full = _full_origins(published, horizon) if published is not None else None
    out: dict[str, Any] = {"rmse_published": _rmse(full), "rmse_pre_fault": None, "rmse_post_fault": None, "rmse_post_fault_settled": None}
    if full is not None:
        if incident is None:
            out["rmse_pre_fault"] = out["rmse_published"]
        else:
            out["rmse_pre_fault"] = _rmse(full[full["origin"] < incident])
            out["rmse_post_fault"] = _rmse(full[full["origin"] >= incident])
            out["rmse_post_fault_settled"] = _rmse(full[full["origin"] >= incident + SETTLE_WINDOW])
    promoted = timeline.index[timeline["canary_action"].fillna("").eq("promote")]
    worse = unmeasured = 0
    for i in promoted:
        at, old = ts[i], timeline.at[i, "champion_version"]
        new = timeline.at[i, "promoted_version"] if "promoted_version" in timeline else None
        if (new is None or pd.isna(new)) and i + 1 < len(timeline):
            new = timeline.at[i + 1, "champion_version"]
        pairs = paired(int(new), int(old), at, at + SETTLE_WINDOW) if paired is not None and pd.notna(new) and pd.notna(old) else None
        pairs = _full_origins(pairs, horizon) if pairs is not None else None
        if pairs is None or pairs.empty:
            unmeasured += 1
        elif _rmse(pairs, "yhat_a") > _rmse(pairs, "yhat_b"):
            worse += 1
    after = ts[promoted][ts[promoted] >= incident] if incident is not None and len(promoted) else pd.Series(dtype="datetime64[ns]")
    out.update(
        trainings=int(timeline["trained_run"].notna().sum()),
        worse_promotions=worse,
        worse_promotions_unmeasured=unmeasured,
        recovery_delay_h=_hours(after.min(), incident) if len(after) else None,
        cpu_s=round(float(pd.to_numeric(timeline.get("cpu_s"), errors="coerce").sum()) + float((initial or {}).get("cpu_s") or 0), 1),
        wall_s=round(float(pd.to_numeric(timeline.get("wall_s"), errors="coerce").sum()) + float((initial or {}).get("wall_s") or 0), 1),
    )
    if published is not None and any(c.startswith("yhat_lo_") for c in published.columns):
        out["coverage"] = published_coverage(published, incident)
    return out


def published_coverage(scored: pd.DataFrame, incident: pd.Timestamp | None = None) -> dict[str, dict[str, Any]]:
    """Per level label, :func:`pipeline.evaluation.intervals.coverage` of the published bands over
    ``scored`` (``origin, y, yhat_lo_<level>, yhat_hi_<level>``; rows without a finite band are left
    out, and a level without any), with ``pre_fault`` / ``post_fault``: the coverage of the origins
    before / from ``incident`` (``None`` without an incident or without such origins)."""
    from pipeline.evaluation.intervals import coverage

    out: dict[str, dict[str, Any]] = {}
    for lo_col in (c for c in scored.columns if c.startswith("yhat_lo_")):
        label = lo_col[len("yhat_lo_") :]
        lo, hi, y = (scored[c].to_numpy(float) for c in (lo_col, f"yhat_hi_{label}", "y"))
        banded = np.isfinite(lo) & np.isfinite(hi)
        if not banded.any():
            continue
        out[label] = coverage(y[banded], lo[banded], hi[banded])
        after = (scored["origin"] >= incident).to_numpy() if incident is not None else None
        for key, part in (("pre_fault", None if after is None else banded & ~after), ("post_fault", None if after is None else banded & after)):
            out[label][key] = coverage(y[part], lo[part], hi[part])["coverage"] if part is not None and part.any() else None
    return out


def plot_timeline(timeline: pd.DataFrame, inject_at: pd.Timestamp | None, path: Path) -> Path:
    """Two panels: rolling RMSE with its threshold and the events; drift share. PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ts = pd.to_datetime(timeline["as_of"])
    fig, (ax, bx) = plt.subplots(2, 1, figsize=(11, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.plot(ts, timeline["rolling_rmse"], "-o", ms=3, label="rolling RMSE (champion)")
    ax.plot(ts, timeline["threshold"], "--", color="tab:red", label="retrain threshold")
    ax.plot(ts, timeline["training_rmse"], ":", color="grey", label="champion's training RMSE")
    if "naive_rmse" in timeline and timeline["naive_rmse"].notna().any():
        ax.plot(ts, timeline["naive_rmse"], "-", color="tab:olive", lw=1, alpha=0.7, label="naive forecast's rolling RMSE (same origins)")
    _events(ax, ts, timeline, inject_at)
    ax.set_ylabel("RMSE (target units)")
    ax.legend(loc="upper left", fontsize=8)
    bx.plot(ts, timeline["drift_share"], "-", color="tab:purple")
    bx.set_ylabel("drift share")
    bx.set_ylim(-0.02, 1.02)
    if inject_at is not None:
        bx.axvline(inject_at, color="black", lw=1.5)
    fig.autofmt_xdate()
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path


def _events(ax, ts: pd.Series, timeline: pd.DataFrame, inject_at) -> None:
    if inject_at is not None:
        ax.axvline(inject_at, color="black", lw=1.5, label="fault injected")
    marks = [
        (timeline["decision"].eq("retrain"), "tab:orange", "retrain triggered"),
        (timeline["registered_version"].notna(), "tab:green", "challenger registered"),
        (timeline["canary_action"].eq("promote"), "tab:blue", "promoted"),
        (timeline["canary_action"].eq("reject"), "tab:brown", "rejected"),
        (timeline["canary_action"].eq("rollback"), "tab:red", "rolled back"),
    ]
    for mask, colour, label in marks:
        mask = mask.fillna(False).astype(bool)
        for i, t in enumerate(ts[mask]):
            ax.axvline(t, color=colour, ls="-.", lw=1, label=label if i == 0 else None)


# ------------------------------------------------------------------ command line


def _timestamp(text: str | None, what: str) -> pd.Timestamp | None:
    if text is None:
        return None
    from pipeline.data.io import as_of_timestamp

    try:
        return as_of_timestamp(text)
    except DataLoadError as exc:
        raise ReplayError(f"replay {what}: expected a timestamp such as '2014-07-01 00:00', found {text!r}") from exc


def summary_text(summary: dict[str, Any]) -> str:
    """The replay's outcome in a few lines (what ``make loop-demo`` prints)."""
    delay = summary["detection_delay_h"]
    lines = [
        f"replay {summary['replay_id']}: {summary['ticks']} ticks {summary['start']} .. {summary['end']}, "
        f"scenario {summary['scenario']}" + (f" injected at {summary['inject_at']}" if summary["inject_at"] else ""),
        f"initial champion: v{summary['initial_champion']}",
        "detection: " + (f"retrain triggered at {summary['detected_at']}, {delay:.0f} h after the injection"
                         if delay is not None else ("no fault injected" if not summary["inject_at"] else "MISSED (no retrain after the injection)")),
        f"false triggers (before the injection): {summary['false_triggers']}; triggers in all: {summary['triggers']}",
        f"registrations: {summary['registrations']}; canary: {summary['canary_decisions'] or 'no decision'}",
        f"promotions {summary['promotions']}, rejections {summary['rejections']}, rollbacks {summary['rollbacks']}",
    ]
    def _f(v):
        return "-" if v is None else f"{v:.4g}"

    def _pct(v):
        return "-" if v is None else f"{v:.1%}"

    lines.insert(1, f"policy: {summary.get('policy', 'rule')}; trainings {summary.get('trainings')}; "
                    f"worse promotions {summary.get('worse_promotions')} (unmeasured {summary.get('worse_promotions_unmeasured')})")
    lines.append(f"published champion RMSE: all {_f(summary.get('rmse_published'))}, before the fault {_f(summary.get('rmse_pre_fault'))}, "
                 f"after {_f(summary.get('rmse_post_fault'))}, settled (7 days on) {_f(summary.get('rmse_post_fault_settled'))}; "
                 f"recovery delay {_f(summary.get('recovery_delay_h'))} h; cpu {summary.get('cpu_s')} s, wall {summary.get('wall_s')} s")
    if summary.get("coverage"):
        lines.append("published bands' coverage: " + "; ".join(
            f"{label}: {c['coverage']:.1%} (width {c['mean_width']:.4g})"
            + (f", before the fault {_pct(c['pre_fault'])}, after {_pct(c['post_fault'])}" if c.get("post_fault") is not None or c.get("pre_fault") is not None else "")
            for label, c in summary["coverage"].items()))  # fmt: skip
    if summary.get("recovery_ratio") is not None:
        lines.append(
            f"recovery: rolling RMSE / new champion's training RMSE = {summary['recovery_ratio']:.2f} "
            f"(worst {summary['recovery_ratio_max']:.2f}) in the 14 days after the promotion at {summary['promoted_at']}"
        )
    lines += [f"timeline: {summary['timeline']}", f"plot: {summary['plot']}"]
    return "\n".join(lines)


def replay_from_args(cfg: PipelineConfig, args) -> dict[str, Any]:
    """``lstm-pipeline replay``: parse the options, run the replay, print its summary."""
    from pipeline.loop.scenarios import load_scenario

    spec = ReplaySpec(
        start=_timestamp(args.start, "--start"),
        end=_timestamp(args.end, "--end"),
        scenario=load_scenario(args.scenario),
        inject_at=_timestamp(args.inject_at, "--inject-at"),
        step=schedule_step(args.step) if args.step else None,
        replay_id=args.replay_id,
        history=_duration(args.history, "--history") if args.history else None,
        use_config_stores=args.use_config_stores,
        policy=parse_policy(getattr(args, "policy", None)),
        incident_at=_timestamp(getattr(args, "incident_at", None), "--incident-at"),
    )
    summary = run_replay(cfg, spec, progress=not args.no_progress)
    print(summary_text(summary))
    return summary
