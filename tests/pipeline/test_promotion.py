"""Alias moves as transactions, against a real ``mlflow server`` on loopback."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import textwrap
import time

import pytest

from pipeline.core.errors import RegistryError
from pipeline.loop import promotion
from pipeline.registry import aliases

pytestmark = pytest.mark.slow
_names = itertools.count()


@pytest.fixture
def client(mlflow_server, monkeypatch, tmp_path):
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    monkeypatch.setenv(aliases.LOCK_DIR_ENV, str(tmp_path / "locks"))
    mlflow.set_tracking_uri(mlflow_server)
    return mlflow.tracking.MlflowClient()


def make_model(client, n_versions: int, gate: str = "passed") -> str:
    """A registered model with ``n_versions`` versions (a tiny artifact each, no training)."""
    import mlflow

    name = f"canary-model-{os.getpid()}-{next(_names)}"
    client.create_registered_model(name)
    exp = client.get_experiment_by_name("canary-tests") or client.get_experiment(client.create_experiment("canary-tests"))
    for _ in range(n_versions):
        with mlflow.start_run(experiment_id=exp.experiment_id) as run:
            mlflow.log_text("weights", "model/weights.txt")
        client.create_model_version(name, source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id, tags={"gate": gate})
    return name


def set_aliases(client, name: str, **by_alias) -> None:
    for alias, version in by_alias.items():
        client.set_registered_model_alias(name, alias, str(version))


def state(client, name: str) -> dict:
    return promotion.current_aliases(client, name)


def tags(client, name: str, version: int) -> dict:
    return dict(client.get_model_version(name, str(version)).tags)


@pytest.fixture
def store(tmp_path):
    from pipeline.store.sql import ForecastStore

    return ForecastStore(f"sqlite:///{tmp_path / 'store' / 'forecasts.db'}")


def events(store, name: str) -> list[tuple]:
    return sorted((e["alias"], e["from_version"], e["to_version"], e["action"]) for e in store.alias_events(name, 50))


def test_promotion_moves_three_aliases_with_tags_events_and_outlet(client, mlflow_server, store):
    name = make_model(client, 3)
    set_aliases(client, name, champion=1, challenger=2)
    move = promotion.promote(client, mlflow_server, name, 2, reason="DM p=0.001", as_of="2025-01-05T00:00:00",
                             evidence={"p_better": 0.001, "n_origins": 80}, store=store, expect={"champion": 1, "challenger": 2})  # fmt: skip
    assert state(client, name) == {"champion": 2, "challenger": None, "previous_champion": 1}
    t = tags(client, name, 2)
    assert t["canary"] == "promoted" and t["canary_reason"] == "DM p=0.001" and t["canary_p_better"] == "0.001"
    assert t["canary_n_origins"] == "80" and t["canary_promoted_as_of"] == "2025-01-05T00:00:00"
    assert t["alias.champion.reason"] == "promoted: DM p=0.001" and "removed" in "".join(k for k in t if k.startswith("alias.challenger"))
    assert tags(client, name, 1)["alias.previous_champion.reason"].startswith("champion until v2")
    assert events(store, name) == [("challenger", 2, None, "promote"), ("champion", 1, 2, "promote"), ("previous_champion", None, 1, "promote")]
    assert store.alias_events(name, 1)[0]["evidence"]["p_better"] == 0.001
    assert move.outlet() == {"uri": f"mlflow://models/{name}@champion", "extra": {
        "action": "promote", "from_version": 1, "to_version": 2, "reason": "DM p=0.001", "as_of": "2025-01-05T00:00:00"}}  # fmt: skip
    assert not promotion.journal_path(mlflow_server, name).exists()
    # a retry of this check's canary task (the move done, the task failed after it) publishes the same event from the store
    assert promotion.recorded_outlet(store, name, "2025-01-05T00:00:00", 2) == move.outlet()
    assert promotion.recorded_outlet(store, name, "2025-01-05T01:00:00+01:00", 2)["extra"]["to_version"] == 2  # the same T
    assert promotion.recorded_outlet(store, name, "2025-01-06T00:00:00", 2) is None  # another check's T: nothing to publish
    assert promotion.recorded_outlet(store, name, "2025-01-05T00:00:00", 1) is None  # champion moved since: not this event
    promotion.rollback(client, mlflow_server, name, reason="manual: bad", as_of="2025-01-05T00:00:00", evidence={"manual": True}, store=store)
    assert promotion.recorded_outlet(store, name, "2025-01-05T00:00:00", 1) is None  # the newest row is an operator's


def test_rejection_removes_challenger_only(client, mlflow_server, store):
    name = make_model(client, 2)
    set_aliases(client, name, champion=1, challenger=2)
    move = promotion.reject(client, mlflow_server, name, 2, reason="significantly worse", as_of="2025-01-05", store=store)
    assert state(client, name) == {"champion": 1, "challenger": None, "previous_champion": None}
    assert tags(client, name, 2)["canary"] == "rejected" and tags(client, name, 2)["canary_reason"] == "significantly worse"
    assert events(store, name) == [("challenger", 2, None, "reject")]
    assert move.outlet() is None


def test_rollback_restores_previous_champion_and_blocks_automatic_repromotion(client, mlflow_server, store):
    name = make_model(client, 2)
    set_aliases(client, name, champion=2, previous_champion=1)
    move = promotion.rollback(client, mlflow_server, name, reason="worse than v1 since promotion", as_of="2025-01-09", store=store)
    assert state(client, name) == {"champion": 1, "challenger": None, "previous_champion": None}
    assert tags(client, name, 2)["canary"] == "rolled_back"
    assert move.outlet()["extra"]["to_version"] == 1
    assert events(store, name) == [("champion", 2, 1, "rollback"), ("previous_champion", 1, None, "rollback")]
    set_aliases(client, name, challenger=2)
    with pytest.raises(promotion.RefusedMoveError, match="never promoted automatically"):
        promotion.promote(client, mlflow_server, name, 2, reason="again", as_of="2025-01-10")
    with pytest.raises(promotion.RefusedMoveError, match="--force"):
        promotion.promote(client, mlflow_server, name, 2, reason="again", as_of="2025-01-10", automatic=False)
    promotion.promote(client, mlflow_server, name, 2, reason="operator override", as_of="2025-01-10", automatic=False, force=True)
    assert state(client, name)["champion"] == 2


def test_a_version_that_failed_the_gate_needs_force(client, mlflow_server):
    name = make_model(client, 2, gate="failed")
    set_aliases(client, name, champion=1)
    with pytest.raises(promotion.RefusedMoveError, match="baseline gate"):
        promotion.promote(client, mlflow_server, name, 2, reason="manual", as_of="2025-01-01", automatic=False)
    assert state(client, name)["champion"] == 1


def test_a_decision_on_stale_aliases_is_refused(client, mlflow_server):
    name = make_model(client, 3)
    set_aliases(client, name, champion=1, challenger=3)
    with pytest.raises(promotion.StaleDecisionError):
        promotion.promote(client, mlflow_server, name, 2, reason="old decision", as_of="2025-01-01", expect={"champion": 1, "challenger": 2})
    assert state(client, name) == {"champion": 1, "challenger": 3, "previous_champion": None}


def test_a_failing_store_leaves_the_registry_as_before(client, mlflow_server, tmp_path):
    from pipeline.store.sql import ForecastStore

    (tmp_path / "not-a-dir").write_text("a file where the store's folder should be")
    broken = ForecastStore(f"sqlite:///{tmp_path / 'not-a-dir' / 'forecasts.db'}", attempts=1)
    name = make_model(client, 2)
    set_aliases(client, name, champion=1, challenger=2)
    before_tags = {v: tags(client, name, v) for v in (1, 2)}
    with pytest.raises(RegistryError, match="undone"):
        promotion.promote(client, mlflow_server, name, 2, reason="x", as_of="2025-01-01", store=broken)
    assert state(client, name) == {"champion": 1, "challenger": 2, "previous_champion": None}
    assert {v: tags(client, name, v) for v in (1, 2)} == before_tags
    assert not promotion.journal_path(mlflow_server, name).exists()


@pytest.mark.parametrize("point", ["promotion_after_previous_champion", "promotion_after_champion"])
def test_a_promotion_killed_half_way_is_undone_by_the_next_move(client, mlflow_server, tmp_path, point):
    """The worker dies between alias moves (SIGKILL: no except, no finally); the journal restores."""
    name = make_model(client, 3)
    set_aliases(client, name, champion=1, challenger=2)
    script = textwrap.dedent(f"""
        import mlflow
        from pipeline.loop import promotion
        client = mlflow.tracking.MlflowClient({mlflow_server!r})
        promotion.promote(client, {mlflow_server!r}, {name!r}, 2, reason="dies", as_of="2025-01-01")
    """)
    env = {**os.environ, "LSTM_PIPELINE_FAULT": point, "PYTHONPATH": os.getcwd()}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert state(client, name) != {"champion": 1, "challenger": 2, "previous_champion": None}  # half moved
    journal = json.loads(promotion.journal_path(mlflow_server, name).read_text())
    assert journal["before"] == {"champion": 1, "challenger": 2, "previous_champion": None}
    if point.endswith("previous_champion"):  # recover() alone puts everything back, records included
        with aliases.registry_lock(mlflow_server, name):
            assert promotion.recover(client, mlflow_server, name)["action"] == "promote"
        assert state(client, name) == {"champion": 1, "challenger": 2, "previous_champion": None}
        assert "canary" not in tags(client, name, 2) and "alias.champion.reason" not in tags(client, name, 2)
    # the next move first restores the state the journal records, then makes its own move whole
    promotion.promote(client, mlflow_server, name, 2, reason="retried", as_of="2025-01-02")
    assert state(client, name) == {"champion": 2, "challenger": None, "previous_champion": 1}
    assert tags(client, name, 2)["canary_reason"] == "retried" and not promotion.journal_path(mlflow_server, name).exists()


def test_a_registration_after_a_dead_promotion_restores_first_so_its_challenger_is_never_reverted(client, mlflow_server):
    """A promotion of v2 died after moving champion (its journal stays); training then registers v3. The registration
    restores the journal's state before it moves challenger, so no later recovery puts challenger back on v2."""
    from pipeline.registry.registration import assign_aliases

    name = make_model(client, 3)
    set_aliases(client, name, champion=1, challenger=2)
    before = state(client, name)
    promotion.write_journal(promotion.journal_path(mlflow_server, name),
                            {"action": "promote", "before": before, "tags": {str(v): tags(client, name, v) for v in (1, 2)}})  # fmt: skip
    set_aliases(client, name, champion=2)  # half moved: the worker died here
    assert assign_aliases(client, mlflow_server, name, 3, {}) == ["challenger"]
    assert state(client, name) == {"champion": 1, "challenger": 3, "previous_champion": None}
    assert not promotion.journal_path(mlflow_server, name).exists()
    with aliases.registry_lock(mlflow_server, name):
        assert promotion.recover(client, mlflow_server, name) is None
    assert state(client, name) == {"champion": 1, "challenger": 3, "previous_champion": None}


def test_a_registration_rerun_writes_the_alias_events_its_first_attempt_lost_and_never_twice(client, mlflow_server, store):
    """The store fails right after registration moved challenger: the rerun finds the alias in place, finishes the
    moves and writes the missing rows; a third run writes nothing."""
    from pipeline.core.errors import StoreError
    from pipeline.registry.registration import assign_aliases, event_recorder

    name = make_model(client, 1)

    def store_down(*args):
        raise StoreError("forecast store unreachable")

    with pytest.raises(StoreError):
        assign_aliases(client, mlflow_server, name, 1, {}, store_down)
    assert state(client, name) == {"champion": None, "challenger": 1, "previous_champion": None} and events(store, name) == []
    for _ in range(2):
        assert assign_aliases(client, mlflow_server, name, 1, {}, event_recorder(store, name, "2025-01-01")) == ["challenger", "champion"]
    assert events(store, name) == [("challenger", None, 1, "register"), ("champion", None, 1, "register")]


@pytest.mark.parametrize("point", ["promotion_before_store", "promotion_after_store"])
def test_a_promotion_killed_after_its_aliases_all_moved_is_finished_not_undone(client, mlflow_server, store, point):
    """SIGKILL once the registry part is whole, before or after the store rows: the next holder of the lock finishes
    the move (the rows written exactly once) instead of reverting a promotion the audit log may already show."""
    name = make_model(client, 2)
    set_aliases(client, name, champion=1, challenger=2)
    script = textwrap.dedent(f"""
        import mlflow
        from pipeline.loop import promotion
        from pipeline.store.sql import ForecastStore
        client = mlflow.tracking.MlflowClient({mlflow_server!r})
        promotion.promote(client, {mlflow_server!r}, {name!r}, 2, reason="dies", as_of="2025-01-01", store=ForecastStore({store.url!r}))
    """)
    env = {**os.environ, "LSTM_PIPELINE_FAULT": point, "PYTHONPATH": os.getcwd()}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr[-2000:]
    promoted = {"champion": 2, "challenger": None, "previous_champion": 1}
    assert state(client, name) == promoted and json.loads(promotion.journal_path(mlflow_server, name).read_text())["committed"]
    with aliases.registry_lock(mlflow_server, name):
        assert promotion.recover(client, mlflow_server, name, store.url)["action"] == "promote"
    assert state(client, name) == promoted and tags(client, name, 2)["canary"] == "promoted"
    assert events(store, name) == [("challenger", 2, None, "promote"), ("champion", 1, 2, "promote"), ("previous_champion", None, 1, "promote")]
    assert not promotion.journal_path(mlflow_server, name).exists()


def test_two_challengers_in_a_row_the_older_is_rejected(client, mlflow_server, store):
    name = make_model(client, 3)
    set_aliases(client, name, champion=1, challenger=2)
    promotion.settle_challengers(client, mlflow_server, name, "2025-01-01", store=store)
    assert tags(client, name, 2)["canary"] == "pending"
    set_aliases(client, name, challenger=3)  # what registration does with a newer version
    moves = promotion.settle_challengers(client, mlflow_server, name, "2025-01-02", store=store)
    assert [(m.action, m.version) for m in moves] == [("reject", 2)]
    assert tags(client, name, 2)["canary"] == "rejected" and "replaced in the canary by the newer challenger v3" in tags(client, name, 2)["canary_reason"]
    assert tags(client, name, 3)["canary"] == "pending"
    assert events(store, name) == [("challenger", 2, 3, "reject")]  # the replacement, with its reason
    assert state(client, name) == {"champion": 1, "challenger": 3, "previous_champion": None}


def test_the_first_version_leaves_the_canary(client, mlflow_server):
    name = make_model(client, 1)
    set_aliases(client, name, champion=1, challenger=1)
    promotion.settle_challengers(client, mlflow_server, name, "2025-01-01")
    assert state(client, name) == {"champion": 1, "challenger": None, "previous_champion": None}
    assert tags(client, name, 1)["canary"] == "promoted"


def test_operator_commands_promote_rollback_and_registry(client, mlflow_server, tmp_path, capsys):
    import yaml

    from pipeline.cli import main
    from tests.conftest import tiny_config_dict

    name = make_model(client, 3)
    client.set_model_version_tag(name, "3", "gate", "failed")
    set_aliases(client, name, champion=1, challenger=2)
    raw = tiny_config_dict(tmp_path / "x.csv", tmp_path / "artifacts", mlflow={"registered_model_name": name},
                           monitoring={"store_url": f"sqlite:///{tmp_path / 'forecasts.db'}"})  # fmt: skip
    raw["data"] = {**raw["data"], "path": None, "synthetic": {"n": 100}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(raw))
    config = str(tmp_path / "c.yaml")

    assert main(["promote", "--config", config, "--version", "2", "--reason", "ops: looks better", "--as-of", "2025-02-01T00:00:00"]) == 0
    assert state(client, name) == {"champion": 2, "challenger": None, "previous_champion": 1}
    assert tags(client, name, 2)["canary_reason"] == "manual: ops: looks better" and tags(client, name, 2)["canary_manual"] == "True"
    assert main(["promote", "--config", config, "--version", "3", "--reason", "try"]) == 1
    assert "did not pass the baseline gate" in capsys.readouterr().err and state(client, name)["champion"] == 2
    assert main(["rollback", "--config", config, "--reason", "ops: complaints", "--as-of", "2025-02-02T00:00:00"]) == 0
    assert state(client, name) == {"champion": 1, "challenger": None, "previous_champion": None}
    capsys.readouterr()
    assert main(["registry", "--config", config, "--json"]) == 0
    out = capsys.readouterr().out
    assert "rolled_back" in out and "manual: ops: complaints" in out and "champion=v1" in out
    report = json.loads(out.strip().splitlines()[-1])
    assert [v["canary"] for v in report["versions"]] == ["", "rolled_back", ""]
    assert [e["action"] for e in report["events"]][:2] == ["rollback", "rollback"]
    assert main(["rollback", "--config", config, "--reason", "again"]) == 1  # nothing to roll back to


def write_scores(store, name: str, versions: tuple[int, int], sds: tuple[float, float], start: str, n_origins: int, seed: int, h: int = 4) -> str:
    """Scores of two versions on the same ``n_origins`` hourly origins from ``start``; returns the next origin (ISO)."""
    import pandas as pd

    from tests.pipeline.test_canary import paired_frame

    frame = paired_frame(n_origins, h, sds[0], sds[1], seed=seed)
    frame["origin"] = frame["origin"] - frame["origin"].iloc[0] + pd.Timestamp(start)
    frame["ds"] = frame["origin"] + pd.to_timedelta(frame["step"], unit="h")
    for version, col in zip(versions, ("yhat_a", "yhat_b"), strict=True):
        rows = frame.assign(model_name=name, version=version, yhat=frame[col], as_of=frame["ds"].max())
        store.record_scores(rows[["model_name", "version", "unique_id", "origin", "step", "ds", "yhat", "y", "as_of"]])
    return (pd.Timestamp(start) + pd.Timedelta(hours=n_origins)).isoformat()


def test_canary_check_promotes_a_good_challenger_rolls_back_a_bad_champion_and_rejects_a_bad_challenger(client, mlflow_server, store, tmp_path):
    import yaml

    from pipeline.core.config import load_config
    from tests.conftest import tiny_config_dict

    name = make_model(client, 3)
    raw = tiny_config_dict(tmp_path / "x.csv", tmp_path / "artifacts", mlflow={"registered_model_name": name},
                           monitoring={"store_url": store.url},
                           canary={"min_origins": 20, "max_origins": 100, "alpha": 0.05, "min_improvement": 0.05, "rollback_origins": 30})  # fmt: skip
    raw["features"]["horizon"] = 4
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(raw))
    cfg = load_config(tmp_path / "c.yaml")
    set_aliases(client, name, champion=1, challenger=2)

    # a good challenger: waits before min_origins, then is promoted
    t = write_scores(store, name, (1, 2), (1.0, 0.5), "2025-03-01T00:00:00", 12, seed=1)
    first = promotion.run_canary(cfg, t, store, client)
    assert first["challenger"]["action"] == "wait" and "min_origins=20" in first["challenger"]["reason"]
    assert tags(client, name, 2)["canary"] == "pending" and first["outlet"] is None
    t = write_scores(store, name, (1, 2), (1.0, 0.5), t, 30, seed=2)
    done = promotion.run_canary(cfg, t, store, client)
    assert done["challenger"]["action"] == "promote", done["challenger"]
    assert state(client, name) == {"champion": 2, "challenger": None, "previous_champion": 1}
    assert done["outlet"]["extra"]["to_version"] == 2 and tags(client, name, 2)["canary_promoted_as_of"] == t
    assert float(tags(client, name, 2)["canary_p_better"]) < 0.05

    # after the promotion v2 turns bad against the shadow-scored previous champion: rolled back
    t = write_scores(store, name, (1, 2), (1.0, 2.0), t, 24, seed=3)
    back = promotion.run_canary(cfg, t, store, client)
    assert back["rollback"]["action"] == "rollback", back["rollback"]
    assert state(client, name) == {"champion": 1, "challenger": None, "previous_champion": None}
    assert tags(client, name, 2)["canary"] == "rolled_back" and back["outlet"]["extra"]["to_version"] == 1

    # a bad challenger is rejected; a rolled-back version is never promoted automatically
    set_aliases(client, name, challenger=3)
    t = write_scores(store, name, (1, 3), (1.0, 1.8), t, 30, seed=4)
    bad = promotion.run_canary(cfg, t, store, client)
    assert bad["challenger"]["action"] == "reject" and "significantly worse" in bad["challenger"]["reason"]
    assert state(client, name)["challenger"] is None and tags(client, name, 3)["canary"] == "rejected"
    assert [e["action"] for e in store.alias_events(name, 50)].count("promote") == 3  # champion, challenger, previous_champion


def test_a_rollback_decided_on_aliases_that_changed_meanwhile_is_refused(client, mlflow_server, store, tmp_path, monkeypatch):
    """The watch condemns v2 against v1; before it acts an operator promotes v3 (champion 3, previous 2). The rollback
    must not demote v3 on v2's evidence: it is refused as stale and the aliases stay as the operator left them."""
    import yaml

    from pipeline.core.config import load_config
    from pipeline.loop import canary
    from tests.conftest import tiny_config_dict

    name = make_model(client, 3)
    raw = tiny_config_dict(tmp_path / "x.csv", tmp_path / "artifacts", mlflow={"registered_model_name": name},
                           monitoring={"store_url": store.url}, canary={"min_origins": 20, "max_origins": 100, "rollback_origins": 20})  # fmt: skip
    raw["features"]["horizon"] = 4
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(raw))
    cfg = load_config(tmp_path / "c.yaml")
    set_aliases(client, name, champion=1, challenger=2)
    t = "2025-03-01T00:00:00"
    promotion.promote(client, mlflow_server, name, 2, reason="won its canary", as_of=t, store=store)
    t = write_scores(store, name, (1, 2), (1.0, 2.0), t, 30, seed=3)  # v2 clearly worse than v1 since its promotion
    decide = canary.decide_rollback

    def operator_promotes_meanwhile(*args, **kwargs):
        decision = decide(*args, **kwargs)
        promotion.promote(client, mlflow_server, name, 3, reason="operator", as_of=t, automatic=False, force=True)
        return decision

    monkeypatch.setattr(canary, "decide_rollback", operator_promotes_meanwhile)
    with pytest.raises(promotion.StaleDecisionError, match="rollback"):
        promotion.check_rollback(client, mlflow_server, cfg, name, t, store)
    assert state(client, name) == {"champion": 3, "challenger": None, "previous_champion": 2}
    assert tags(client, name, 3).get("canary") != "rolled_back"


def test_rerunning_a_registration_never_puts_challenger_back_on_a_version_the_canary_dealt_with(client, mlflow_server, store):
    """``train --run-id <old>`` (or clearing an old ``register_model`` task) after v2 was promoted and v3 registered:
    v2 must not become challenger again (the canary could then promote the old model over a newer one)."""
    from pipeline.registry.registration import assign_aliases

    name = make_model(client, 4)
    set_aliases(client, name, champion=1, challenger=2)
    promotion.promote(client, mlflow_server, name, 2, reason="won its canary", as_of="2025-01-01", store=store)
    assert assign_aliases(client, mlflow_server, name, 2, {}) == ["champion"]  # the rerun of v2's registration
    assert state(client, name) == {"champion": 2, "challenger": None, "previous_champion": 1}
    assert assign_aliases(client, mlflow_server, name, 3, {}) == ["challenger"]  # a version never in the canary still gets it
    assert assign_aliases(client, mlflow_server, name, 3, {}) == ["challenger"]  # and keeps it on its own rerun
    set_aliases(client, name, challenger=4)
    promotion.reject(client, mlflow_server, name, 4, reason="worse", as_of="2025-01-02", store=store)
    assert assign_aliases(client, mlflow_server, name, 4, {}) == [] and state(client, name)["challenger"] is None


def _start_server(root, port: int):
    """An ``mlflow server`` on ``port`` over the SQLite store in ``root`` (restartable on the same store)."""
    import time
    import urllib.request
    from pathlib import Path

    mlflow_bin = Path(sys.executable).with_name("mlflow")
    proc = subprocess.Popen(
        [str(mlflow_bin), "server", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}", "--artifacts-destination", str(root / "artifacts"),
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        stdout=open(root / "server.log", "a"), stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, "MLFLOW_TRACKING_URI": "", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
    )  # fmt: skip
    deadline = time.time() + 180
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as resp:
                if resp.status == 200:
                    return proc
        except OSError:
            time.sleep(0.5)
    raise RuntimeError((root / "server.log").read_text()[-2000:])


def test_the_tracking_server_dying_during_a_promotion_never_leaves_aliases_half_moved(tmp_path, monkeypatch):
    """The server stops between two alias moves: the move fails, its restore fails too, the journal
    stays; once the server is back, the next move (here ``registry``'s recover) restores it whole."""
    import threading

    import mlflow
    from tests.conftest import _free_port, stop_process_group

    port, root = _free_port(), tmp_path / "server"
    root.mkdir()
    uri = f"http://127.0.0.1:{port}"
    monkeypatch.setenv(aliases.LOCK_DIR_ENV, str(tmp_path / "locks"))
    for key, value in {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}.items():
        monkeypatch.setenv(key, value)
    proc = _start_server(root, port)
    try:
        mlflow.set_tracking_uri(uri)
        client = mlflow.tracking.MlflowClient(uri)
        name = make_model(client, 2)
        set_aliases(client, name, champion=1, challenger=2)
        monkeypatch.setenv("LSTM_PIPELINE_FAULT", "promotion_after_previous_champion:sleep=8")
        errors = []
        worker = threading.Thread(target=lambda: _promote_catching(client, uri, name, errors))
        worker.start()
        time.sleep(4)  # the promotion is asleep after its first alias move
        stop_process_group(proc)
        worker.join(timeout=120)
        monkeypatch.delenv("LSTM_PIPELINE_FAULT")
        assert errors and "restore failed too" in errors[0], errors
        assert promotion.journal_path(uri, name).exists()
        proc = _start_server(root, port)
        half = state(client, name)
        assert half == {"champion": 1, "challenger": 2, "previous_champion": 1}  # what the dead server kept
        with aliases.registry_lock(uri, name):
            assert promotion.recover(client, uri, name)["action"] == "promote"
        assert state(client, name) == {"champion": 1, "challenger": 2, "previous_champion": None}
        assert "alias.previous_champion.reason" not in tags(client, name, 1)
    finally:
        stop_process_group(proc)


def _promote_catching(client, uri: str, name: str, errors: list) -> None:
    try:
        promotion.promote(client, uri, name, 2, reason="server dies", as_of="2025-01-01")
    except RegistryError as exc:
        errors.append(str(exc))
