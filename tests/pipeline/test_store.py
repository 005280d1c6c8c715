"""The forecast store on a real SQLite file and a real Postgres server: idempotent keys, scoring, checks, alias events."""

from __future__ import annotations

import sqlite3

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from pipeline.core.errors import StoreError
from pipeline.store import sql
from pipeline.store.sql import SCHEMA_VERSION, ForecastStore


def _forecasts(version: int, origins: pd.DatetimeIndex, h: int = 3, bias: float = 0.0, alias: str = "champion") -> pd.DataFrame:
    rows = [
        {"model_name": "m", "version": version, "unique_id": "s", "origin": o, "step": k, "ds": o + pd.Timedelta(hours=k),
         "yhat": float(o.hour + k) + bias, "alias": alias, "as_of": origins[-1] + pd.Timedelta(hours=1)}
        for o in origins for k in range(1, h + 1)
    ]  # fmt: skip
    return pd.DataFrame(rows)


def _observed(start: str, n: int) -> pd.DataFrame:
    ds = pd.date_range(start, periods=n, freq="h")
    return pd.DataFrame({"unique_id": "s", "ds": ds, "y": ds.hour.astype(float)})


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=[pytest.mark.slow, pytest.mark.postgres])])
def store(request, tmp_path):
    """The store on SQLite (a file) and on a real Postgres server (a fresh database): the same behaviour."""
    if request.param == "postgres":
        return ForecastStore(request.getfixturevalue("postgres")("store"))
    return ForecastStore(f"sqlite:///{tmp_path / 'sub' / 'forecasts.db'}")


def test_created_on_first_use_with_a_schema_version(tmp_path):
    store = ForecastStore(f"sqlite:///{tmp_path / 'sub' / 'forecasts.db'}")
    assert not (tmp_path / "sub" / "forecasts.db").exists()
    assert store.schema_version == SCHEMA_VERSION
    tables = {r[0] for r in sqlite3.connect(tmp_path / "sub" / "forecasts.db").execute("select name from sqlite_master where type='table'")}
    assert {"forecasts", "scores", "checks", "alias_events", "schema_version"} <= tables


def test_rerun_overwrites_never_duplicates(store):
    origins = pd.date_range("2024-01-01 00:00", periods=5, freq="h")
    assert store.upsert_forecasts(_forecasts(1, origins)) == 15
    store.upsert_forecasts(_forecasts(1, origins, bias=1.0))  # the same interval again, new numbers
    published = store.published("m")
    assert len(published) == 15
    assert np.allclose(published["yhat"], _forecasts(1, origins, bias=1.0)["yhat"])
    obs = _observed("2024-01-01 00:00", 10)
    assert store.score(obs) == 15
    assert store.score(obs) == 15
    assert len(store.scored("m", 1)) == 15


def test_score_joins_only_observed_targets(store):
    origins = pd.date_range("2024-01-01 00:00", periods=5, freq="h")
    store.upsert_forecasts(_forecasts(1, origins))
    obs = _observed("2024-01-01 00:00", 6)  # observed up to 05:00: the last origins' later steps are not
    obs.loc[obs["ds"] == pd.Timestamp("2024-01-01 02:00"), "y"] = np.nan
    store.score(obs)
    got = store.scored("m", 1)
    assert list(got.columns) == ["unique_id", "origin", "step", "ds", "yhat", "y"]
    assert got["ds"].max() == pd.Timestamp("2024-01-01 05:00")
    assert pd.Timestamp("2024-01-01 02:00") not in set(got["ds"])
    assert np.allclose(got["yhat"], got["y"])  # yhat = origin hour + step = target hour = y


def test_scored_window_is_half_open_and_pairs_need_both(store):
    origins = pd.date_range("2024-01-01 00:00", periods=6, freq="h")
    store.upsert_forecasts(_forecasts(1, origins))
    store.upsert_forecasts(_forecasts(2, origins[2:], bias=0.5, alias="challenger"))
    store.score(_observed("2024-01-01 00:00", 12))
    window = store.scored("m", 1, since="2024-01-01 01:00", until="2024-01-01 03:00")
    assert sorted(window["origin"].unique()) == [pd.Timestamp("2024-01-01 01:00"), pd.Timestamp("2024-01-01 02:00")]
    pairs = store.paired_scores("m", 1, 2)
    assert list(pairs.columns) == ["unique_id", "origin", "step", "ds", "y", "yhat_a", "yhat_b"]
    assert pairs["origin"].min() == origins[2] and len(pairs) == 4 * 3
    assert np.allclose(pairs["yhat_b"] - pairs["yhat_a"], 0.5)
    assert store.published("m", alias="challenger")["version"].eq(2).all()


def test_checks_are_keyed_by_id_and_alias_events_append(store):
    for day in (1, 2, 3):
        store.record_check({"check_id": f"m@2024-01-0{day}", "model_name": "m", "as_of": f"2024-01-0{day}",
                            "decision": "ok", "rolling_rmse": 1.0 * day, "reasons": ["fine"]})  # fmt: skip
    store.record_check({"check_id": "m@2024-01-02", "model_name": "m", "as_of": "2024-01-02", "decision": "retrain", "rolling_rmse": 9.0})
    last = store.last_checks("m", 5)
    assert [c["check_id"] for c in last] == ["m@2024-01-03", "m@2024-01-02", "m@2024-01-01"]
    assert last[1]["decision"] == "retrain" and last[1]["rolling_rmse"] == 9.0
    assert [c["check_id"] for c in store.last_checks("m", 5, before="2024-01-03")] == ["m@2024-01-02", "m@2024-01-01"]
    store.record_alias_event("m", "champion", 1, 2, "promote", "better", {"dm_p": 0.01}, "2024-01-03")
    store.record_alias_event("m", "champion", 2, 1, "rollback", "worse", {}, "2024-01-04")
    events = store.alias_events("m")
    assert [e["action"] for e in events] == ["rollback", "promote"]
    assert events[1]["evidence"] == {"dm_p": 0.01} and events[1]["from_version"] == 1


def test_the_alias_events_of_one_move_are_written_all_or_none(store):
    """A promotion's three rows in one transaction: the database failing on the second insert leaves none (the
    canary then restores the registry, and the audit log must not show a move that was undone)."""
    import sqlalchemy as sa

    moves = [("previous_champion", None, 1), ("champion", 1, 2), ("challenger", 2, None)]
    inserts = []

    def fail_on_the_second(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("INSERT INTO ALIAS_EVENTS"):
            inserts.append(statement)
            if len(inserts) == 2:
                raise sa.exc.DBAPIError(statement, parameters, RuntimeError("disk I/O error"))

    sa.event.listen(store.engine, "before_cursor_execute", fail_on_the_second)
    try:
        with pytest.raises(sa.exc.DBAPIError):
            store.record_alias_events("m", moves, "promote", "better", {}, "2024-01-03")
    finally:
        sa.event.remove(store.engine, "before_cursor_execute", fail_on_the_second)
    assert len(inserts) == 2 and store.alias_events("m") == []
    assert len(store.record_alias_events("m", moves, "promote", "better", {}, "2024-01-03")) == 3
    assert [(e["alias"], e["from_version"], e["to_version"]) for e in reversed(store.alias_events("m"))] == moves


def test_unreachable_store_fails_clearly_after_bounded_retries(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    store = ForecastStore(f"sqlite:///{blocker}/x.db", attempts=2, backoff_s=0.01)  # a path under a file
    with pytest.raises(StoreError, match="unreachable after 2 attempts"):
        store.last_checks("m")


def _with_bands(frame: pd.DataFrame) -> pd.DataFrame:
    """The forecasts with the pyfunc's interval columns: 80% = yhat +- 0.5, 95% = yhat +- 2 (95% hi infinite at step 3)."""
    out = frame.assign(yhat_lo_80=frame["yhat"] - 0.5, yhat_hi_80=frame["yhat"] + 0.5, yhat_lo_95=frame["yhat"] - 2.0)
    return out.assign(yhat_hi_95=np.where(out["step"] == 3, np.inf, out["yhat"] + 2.0))


def test_interval_columns_round_trip_and_are_scored(store, tmp_path):
    origins = pd.date_range("2024-01-01 00:00", periods=4, freq="h")
    frame = _with_bands(_forecasts(1, origins, bias=1.0))  # yhat = y + 1: outside the 80% band, inside the 95% one
    assert store.upsert_forecasts(frame) == 12
    store.upsert_forecasts(frame)  # a rerun overwrites, never duplicates
    with store.engine.connect() as conn:  # on either dialect
        rows = conn.execute(sa.select(sa.func.count()).select_from(sql.forecast_intervals)).scalar()
    assert rows == 12 * 2
    published = store.published("m")
    bands = ["yhat_lo_80", "yhat_hi_80", "yhat_lo_95", "yhat_hi_95"]
    assert list(published.columns[-4:]) == bands
    np.testing.assert_allclose(published[bands].to_numpy(), frame[bands].to_numpy())  # infinity included
    store.score(_observed("2024-01-01 00:00", 8))
    scored = store.scored_intervals("m", 1)
    assert list(scored.columns) == ["unique_id", "origin", "step", "ds", "level", "lo", "hi", "y"]
    assert len(scored) == 12 * 2 and set(scored["level"]) == {80.0, 95.0}
    inside = (scored["lo"] <= scored["y"]) & (scored["y"] <= scored["hi"])
    assert not inside[scored["level"] == 80].any() and inside[scored["level"] == 95].all()
    assert store.scored_intervals("m", 1, since="2024-01-01 02:00")["origin"].min() == origins[2]


def test_forecasts_without_intervals_publish_as_before(store):
    origins = pd.date_range("2024-01-01 00:00", periods=2, freq="h")
    store.upsert_forecasts(_forecasts(1, origins))
    assert list(store.published("m").columns) == ["unique_id", "origin", "step", "ds", "yhat", "version", "alias", "as_of"]
    store.score(_observed("2024-01-01 00:00", 6))
    assert store.scored_intervals("m", 1).empty
    with pytest.raises(StoreError, match="yhat_hi_80"):
        store.upsert_forecasts(_forecasts(1, origins).assign(yhat_lo_80=0.0))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=[pytest.mark.slow, pytest.mark.postgres])])
def store_url(request, tmp_path):
    """An empty database's URL: an SQLite file, or a fresh database on a real Postgres server."""
    if request.param == "postgres":
        return request.getfixturevalue("postgres")("old")
    return f"sqlite:///{tmp_path / 'old.db'}"


def test_a_store_at_schema_1_is_upgraded_keeping_its_rows(store_url):
    engine = sa.create_engine(store_url)
    origins = pd.date_range("2024-01-01 00:00", periods=2, freq="h")
    with engine.begin() as conn:  # what schema version 1 created: no forecast_intervals, no alerts, ``y_hat``
        for table in sql.metadata.sorted_tables:
            if table.name not in ("forecast_intervals", "alerts"):
                table.create(conn)
        for table in ("forecasts", "scores"):
            conn.execute(sa.text(f"ALTER TABLE {table} RENAME COLUMN yhat TO y_hat"))
        conn.execute(sql.schema_version.insert().values(version=1))
        conn.execute(  # a forecast issued under schema 1, with its point forecast in ``y_hat``
            sa.text("INSERT INTO forecasts (model_name, version, unique_id, origin, step, ds, y_hat, alias) VALUES ('m', 1, 's', :o, 1, :ds, 7.5, 'champion')"),
            {"o": origins[0].to_pydatetime(), "ds": (origins[0] + pd.Timedelta(hours=1)).to_pydatetime()},
        )
    engine.dispose()
    old = ForecastStore(store_url)
    assert old.schema_version == SCHEMA_VERSION == 4
    kept = old.published("m")
    assert kept["yhat"].tolist() == [7.5]  # the old row, under the new name
    columns = {t: {c["name"] for c in sa.inspect(old.engine).get_columns(t)} for t in ("forecasts", "scores")}
    assert all("yhat" in c and "y_hat" not in c for c in columns.values()), columns
    assert old.upsert_forecasts(_with_bands(_forecasts(1, origins))) == 6
    assert "yhat_hi_95" in old.published("m")
    assert ForecastStore(store_url).schema_version == 4  # opening it again migrates nothing twice


def test_a_reader_opens_the_configured_store_and_never_creates_one(tmp_path, monkeypatch):
    """``existing_store`` (the service's and ``forecast``'s read): the URL ``store_url`` resolves,
    ``LSTM_PIPELINE_STORE_URL`` first, and ``None`` for a SQLite file that does not exist yet."""
    from types import SimpleNamespace

    cfg = SimpleNamespace(monitoring=SimpleNamespace(store_url=f"sqlite:///{tmp_path / 'configured.db'}"), run=SimpleNamespace(artifact_root=tmp_path / "artifacts"))
    monkeypatch.delenv(sql.STORE_URL_ENV, raising=False)
    assert sql.existing_store(cfg) is None and not (tmp_path / "configured.db").exists()
    ForecastStore(f"sqlite:///{tmp_path / 'env.db'}").record_check({"check_id": "c", "model_name": "m", "as_of": "2024-01-01T00:00:00"})
    monkeypatch.setenv(sql.STORE_URL_ENV, f"sqlite:///{tmp_path / 'env.db'}")
    assert sql.existing_store(cfg).last_checks("m")[0]["check_id"] == "c"
