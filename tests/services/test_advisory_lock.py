"""The registry lock on Postgres: advisory locks serialise processes that share no file, and a crash releases them."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from pipeline.core.errors import RegistryError
from pipeline.registry import aliases

HOLD = textwrap.dedent("""
    import sys, time
    from pipeline.registry.aliases import registry_lock
    with registry_lock(sys.argv[1], sys.argv[2]) as held:
        print("HELD " + str(held), flush=True)
        time.sleep(600)
""")


@pytest.fixture
def lock_env(postgres, monkeypatch, tmp_path):
    url = postgres("locks")
    monkeypatch.setenv(aliases.LOCK_URL_ENV, url)
    monkeypatch.setenv(aliases.LOCK_DIR_ENV, str(tmp_path / "this-process-locks"))
    return url


def _holder(tmp_path, url: str, model: str) -> subprocess.Popen:
    env = {**os.environ, aliases.LOCK_URL_ENV: url, aliases.LOCK_DIR_ENV: str(tmp_path / "other-process-locks"),
           "PYTHONPATH": os.pathsep.join(sys.path)}  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-c", HOLD, "http://registry:5000", model], env=env, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line.startswith("HELD pg_advisory_lock("), line
    return proc


@pytest.mark.slow
@pytest.mark.postgres
def test_a_lock_held_by_another_process_blocks_until_its_holder_dies(lock_env, tmp_path):
    holder = _holder(tmp_path, lock_env, "m")
    try:
        with pytest.raises(RegistryError, match="could not lock registered model 'm'.*advisory lock"):
            # the holder named the server http://registry:5000; the host's CLI spells it otherwise: still one lock
            with aliases.registry_lock("http://127.0.0.1:5000/", "m", timeout_s=1.5):
                pytest.fail("acquired a lock another process holds")
        with aliases.registry_lock("http://registry:5000", "another-model", timeout_s=1.5) as held:
            assert held.startswith("pg_advisory_lock(")  # one lock per registered model
    finally:
        holder.kill()  # SIGKILL: no unlock, no cleanup; Postgres drops the session's locks
        holder.wait()
    with aliases.registry_lock("http://registry:5000", "m", timeout_s=30) as held:
        assert held == f"pg_advisory_lock({aliases.advisory_key('m')})"


@pytest.mark.slow
@pytest.mark.postgres
def test_released_at_the_end_of_the_block_and_reentrant_by_sequence(lock_env):
    for _ in range(3):
        with aliases.registry_lock("http://registry:5000", "m", timeout_s=2):
            pass


def test_the_lock_url_must_be_postgres(monkeypatch):
    monkeypatch.setenv(aliases.LOCK_URL_ENV, "sqlite:///x.db")
    with pytest.raises(RegistryError, match="expected a Postgres SQLAlchemy URL.*found 'sqlite'"):
        with aliases.registry_lock("u", "m"):
            pass


def test_a_postgres_store_url_is_the_lock_by_default_and_other_stores_keep_the_file_lock(monkeypatch, tmp_path):
    monkeypatch.delenv(aliases.LOCK_URL_ENV, raising=False)
    monkeypatch.setenv(aliases.STORE_URL_ENV, "postgresql+psycopg://u@/db?host=/x")
    assert aliases.lock_url() == "postgresql+psycopg://u@/db?host=/x"
    monkeypatch.setenv(aliases.STORE_URL_ENV, f"sqlite:///{tmp_path}/s.db")
    monkeypatch.setenv(aliases.LOCK_DIR_ENV, str(tmp_path / "locks"))
    assert aliases.lock_url() is None
    with aliases.registry_lock("u", "m") as held:
        assert str(held).endswith(".lock")


def test_a_postgres_store_named_only_in_the_config_is_the_lock(monkeypatch, tmp_path):
    """``monitoring.store_url`` on Postgres with no environment variable: the callers pass their effective
    store URL (:func:`pipeline.store.sql.store_url`), and that Postgres database holds the lock."""
    from pipeline.core.config import PipelineConfig
    from pipeline.store.sql import store_url

    monkeypatch.delenv(aliases.LOCK_URL_ENV, raising=False)
    monkeypatch.delenv(aliases.STORE_URL_ENV, raising=False)
    pg = "postgresql+psycopg://u@/db?host=/x"
    cfg = PipelineConfig.model_validate({"data": {"synthetic": {}, "timestamp_column": "t", "target_column": "y", "freq": "h"},
                                         "features": {"lookback": 24, "horizon": 4}, "monitoring": {"store_url": pg},
                                         "run": {"artifact_root": str(tmp_path)}})  # fmt: skip
    assert aliases.lock_url(store_url(cfg)) == pg
    assert aliases.lock_url(f"sqlite:///{tmp_path}/s.db") is None and aliases.lock_url() is None
    monkeypatch.setenv(aliases.STORE_URL_ENV, f"sqlite:///{tmp_path}/replay.db")  # a replay's own store wins over the config's
    assert aliases.lock_url(store_url(cfg)) is None


@pytest.mark.slow
@pytest.mark.postgres
def test_registry_lock_takes_the_advisory_lock_of_the_store_it_is_given(postgres, monkeypatch, tmp_path):
    url = postgres("store_locks")
    monkeypatch.delenv(aliases.LOCK_URL_ENV, raising=False)
    monkeypatch.delenv(aliases.STORE_URL_ENV, raising=False)
    monkeypatch.setenv(aliases.LOCK_DIR_ENV, str(tmp_path / "locks"))
    with aliases.registry_lock("http://registry:5000", "m", timeout_s=5, store_url=url) as held:
        assert str(held).startswith("pg_advisory_lock(")
    with aliases.registry_lock("http://registry:5000", "m", timeout_s=5) as held:
        assert str(held).endswith(".lock")  # no store given, no environment: the file lock


@pytest.mark.slow
@pytest.mark.postgres
def test_under_a_postgres_lock_the_journal_of_a_dead_move_is_seen_from_another_machine(lock_env, tmp_path, monkeypatch):
    """A move's journal lives beside the lock: in the lock's database, so a worker on another machine (another lock
    folder) that takes the lock next finds the journal of a move that died on the first one, and clears it."""
    from pipeline.registry import journal

    record = {"action": "promote", "before": {"champion": 1, "challenger": 2, "previous_champion": None}, "tags": {}}
    first = journal.journal_for("http://mlflow:5000", "m")
    assert isinstance(first, journal.PostgresJournal) and first.read() is None
    first.write(record)
    monkeypatch.setenv(aliases.LOCK_DIR_ENV, str(tmp_path / "another-machine"))
    other = journal.journal_for("http://127.0.0.1:5000", "m")
    assert other.read() == record and journal.journal_for("http://127.0.0.1:5000", "another-model").read() is None
    other.clear()
    assert first.read() is None and not list((tmp_path / "another-machine").glob("*.json"))


@pytest.mark.slow
@pytest.mark.postgres
def test_journal_accesses_after_the_first_take_no_global_lock_and_survive_a_dropped_table(lock_env):
    """The table is created once per process: later reads do not queue behind the creation lock (another process
    holding it must not stall every model's journal), and a table dropped since is created again."""
    import threading

    import sqlalchemy as sa

    from pipeline.registry import journal

    first = journal.journal_for("http://mlflow:5000", "m")
    assert first.read() is None  # creates the table
    engine = sa.create_engine(lock_env, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as holder:
            holder.execute(sa.text("SELECT pg_advisory_lock(:key)"), {"key": journal.CREATE_LOCK_KEY})
            done = []
            reader = threading.Thread(target=lambda: done.append(journal.journal_for("http://mlflow:5000", "other").read()), daemon=True)
            reader.start()
            reader.join(20)
            finished_while_held = list(done)
            holder.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": journal.CREATE_LOCK_KEY})
            holder.commit()
        reader.join(20)
        assert finished_while_held == [None], "a journal read waited on the table-creation lock"
        with engine.begin() as conn:
            conn.execute(sa.text(f"DROP TABLE {journal.TABLE}"))
    finally:
        engine.dispose()
    first.write({"action": "promote", "before": {}, "tags": {}})  # the table is gone: created again, not a raw ProgrammingError
    assert first.read() == {"action": "promote", "before": {}, "tags": {}}
