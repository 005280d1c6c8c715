"""The forecast store: forecasts, scores, monitoring checks and alias events in SQL.

One SQLAlchemy database at ``$LSTM_PIPELINE_STORE_URL`` or ``monitoring.store_url`` (default:
an SQLite file beside the local MLflow store, ``<artifact_root>/../mlflow/store/forecasts.db``;
a Postgres URL in production, ``postgresql+psycopg://...``: ``make services`` runs one). Nothing
here is specific to a dialect but the upsert, which uses the native ``ON CONFLICT`` of SQLite and
Postgres and delete-then-insert in one transaction elsewhere, and schema 4's column rename
(``ALTER TABLE ... RENAME COLUMN``: SQLite 3.25+, Postgres, MySQL 8). Tables are created on first use; ``schema_version`` holds the version the
database is at, and a newer code version upgrades it with the migrations in
``MIGRATIONS`` (never by dropping tables).

Rows are keyed so that a rerun of the same interval overwrites, never duplicates:

* ``forecasts`` and ``scores``: ``(model_name, version, unique_id, origin, step)``;
  a forecast keeps the alias its version held when it was issued and the check's
  ``as_of``; a score is a forecast joined with the observed ``y`` of its target ``ds``;
* ``forecast_intervals``: ``KEY + level``: the prediction interval ``lo, hi`` (target units)
  of a stored forecast at ``level`` percent (a version registered with intervals; since schema 2);
* ``checks``: ``check_id`` (one row per monitoring check, every number it used);
* ``alias_events``: one row per alias move (append-only audit log);
* ``alerts``: ``(check_id, unique_id, column_name, kind)``: the data faults a check found
  (``lstm-pipeline alerts``; since schema 3); a rerun of the check replaces its rows.

The point forecast is ``yhat`` (``y_hat`` before schema 4; the migration renames it in place).

The champion's rows of ``forecasts`` are the product's published batch forecasts
(:meth:`ForecastStore.published`, ``lstm-pipeline forecasts``).

Times are naive UTC ``datetime``; versions are ints. Every call retries a failed
connection a bounded number of times, then raises :class:`~pipeline.core.errors.StoreError`;
each write is one transaction (all rows or none).
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa

from pipeline.core import artifacts, schema
from pipeline.core.errors import StoreError
from pipeline.data.io import as_of_timestamp

log = logging.getLogger(__name__)

SCHEMA_VERSION = 4
#: Postgres advisory-lock key held (per transaction) while the tables are created or migrated
CREATE_LOCK_KEY = 0x4C53544D  # "LSTM"
KEY = ["model_name", "version", "unique_id", "origin", "step"]
CHECK_COLUMNS = (
    "model_name", "as_of", "champion_version", "decision", "n_origins_scored", "rolling_rmse",
    "training_rmse", "threshold", "drift_share",
)  # fmt: skip

metadata = sa.MetaData()


def _forecast_columns() -> list[sa.Column]:
    return [
        sa.Column("model_name", sa.String(200), primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("unique_id", sa.String(200), primary_key=True),
        sa.Column("origin", sa.DateTime, primary_key=True),
        sa.Column("step", sa.Integer, primary_key=True),
        sa.Column("ds", sa.DateTime, nullable=False, index=True),
        sa.Column("yhat", sa.Float, nullable=False),
    ]


schema_version = sa.Table("schema_version", metadata, sa.Column("version", sa.Integer, primary_key=True))
forecasts = sa.Table(
    "forecasts", metadata, *_forecast_columns(),
    sa.Column("alias", sa.String(50)), sa.Column("as_of", sa.DateTime),
)  # fmt: skip
scores = sa.Table("scores", metadata, *_forecast_columns(), sa.Column("y", sa.Float, nullable=False), sa.Column("as_of", sa.DateTime))
checks = sa.Table(
    "checks", metadata,
    sa.Column("check_id", sa.String(300), primary_key=True), sa.Column("model_name", sa.String(200), index=True),
    sa.Column("as_of", sa.DateTime, index=True), sa.Column("champion_version", sa.Integer), sa.Column("decision", sa.String(40)),
    sa.Column("n_origins_scored", sa.Integer), sa.Column("rolling_rmse", sa.Float), sa.Column("training_rmse", sa.Float),
    sa.Column("threshold", sa.Float), sa.Column("drift_share", sa.Float), sa.Column("payload", sa.Text),
)  # fmt: skip
#: a forecast's prediction interval per level (``level`` in percent; ``lo``/``hi`` in target units, may be infinite)
forecast_intervals = sa.Table(
    "forecast_intervals", metadata,
    *(c for c in _forecast_columns() if c.primary_key), sa.Column("level", sa.Float, primary_key=True),
    sa.Column("lo", sa.Float, nullable=False), sa.Column("hi", sa.Float, nullable=False),
)  # fmt: skip
INTERVAL_KEY = [*KEY, "level"]
#: the interval columns of a forecast frame: ``yhat_lo_<level>`` / ``yhat_hi_<level>`` (the pyfunc's names)
INTERVAL_COLUMN = re.compile(rf"^({schema.INTERVAL_LO}|{schema.INTERVAL_HI})(\d+(?:\.\d+)?)$")
alias_events = sa.Table(
    "alias_events", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True), sa.Column("model_name", sa.String(200), index=True),
    sa.Column("alias", sa.String(50)), sa.Column("from_version", sa.Integer), sa.Column("to_version", sa.Integer),
    sa.Column("action", sa.String(40)), sa.Column("reason", sa.Text), sa.Column("evidence", sa.Text), sa.Column("as_of", sa.DateTime),
)  # fmt: skip


alerts = sa.Table(
    "alerts", metadata,
    sa.Column("check_id", sa.String(300), primary_key=True), sa.Column("unique_id", sa.String(200), primary_key=True),
    sa.Column("column_name", sa.String(200), primary_key=True), sa.Column("kind", sa.String(40), primary_key=True),
    sa.Column("model_name", sa.String(200), index=True), sa.Column("as_of", sa.DateTime, index=True),
    sa.Column("since", sa.DateTime), sa.Column("message", sa.Text), sa.Column("measured", sa.Text),
)  # fmt: skip
#: ``{to_version: migrate(connection)}``: applied in order to a database at a lower version; a
#: database at an older version keeps every row it has (``create_all`` made the tables already)
MIGRATIONS: dict[int, Callable[[sa.Connection], None]] = {
    2: lambda conn: forecast_intervals.create(conn, checkfirst=True),  # prediction intervals
    3: lambda conn: alerts.create(conn, checkfirst=True),  # data-fault alerts
    4: lambda conn: _rename_point_forecast(conn),  # ``y_hat`` -> ``yhat``
}


def _rename_point_forecast(conn: sa.Connection) -> None:
    """Schema 4: ``forecasts.y_hat`` and ``scores.y_hat`` become ``yhat`` (the pyfunc's and the CLI's
    name, :data:`pipeline.core.schema.YHAT`), rows kept. ``ALTER TABLE ... RENAME COLUMN`` is in
    SQLite since 3.25 and in Postgres; a table that already says ``yhat`` is left alone. Two processes
    upgrading one SQLite file at once (Postgres serialises them under :data:`CREATE_LOCK_KEY`): the
    second finds the column renamed, or fails to rename it and then finds it renamed."""

    def columns(table: str) -> set[str]:
        return {c["name"] for c in sa.inspect(conn).get_columns(table)}

    for table in (forecasts.name, scores.name):
        if schema.LEGACY_YHAT in columns(table) and schema.YHAT not in columns(table):
            try:
                conn.execute(sa.text(f"ALTER TABLE {table} RENAME COLUMN {schema.LEGACY_YHAT} TO {schema.YHAT}"))
            except sa.exc.OperationalError:
                if schema.YHAT not in columns(table):
                    raise


def _record_version(conn: sa.Connection, version: int) -> None:
    """A ``schema_version`` row; one another process wrote meanwhile (SQLite: both upgraded at once) is kept."""
    if conn.dialect.name in ("sqlite", "postgresql"):
        from sqlalchemy.dialects import postgresql, sqlite

        insert = sqlite.insert if conn.dialect.name == "sqlite" else postgresql.insert
        conn.execute(insert(schema_version).values(version=version).on_conflict_do_nothing(index_elements=["version"]))
    else:
        conn.execute(schema_version.insert().values(version=version))


def default_store_url(artifact_root: Path) -> str:
    """SQLite file beside the local MLflow store: ``<artifact_root>/../mlflow/store/forecasts.db``."""
    path = Path(artifact_root).resolve().parent / "mlflow" / "store" / artifacts.FORECAST_STORE.name
    return f"sqlite:///{path}"


def _ts(value) -> Any:
    """Anything timestamp-like -> naive UTC ``datetime`` (``None`` stays ``None``)."""
    return None if value is None else as_of_timestamp(value).to_pydatetime()


def _json(value: Any) -> str:
    from pipeline.core.artifacts import json_default

    return json.dumps(value, default=json_default, allow_nan=True, sort_keys=True)


def _interval_rows(frame: pd.DataFrame, rows: list[dict]) -> list[dict]:
    """``forecast_intervals`` rows from ``frame``'s ``yhat_lo_<level>`` / ``yhat_hi_<level>`` columns.

    ``rows`` are :meth:`ForecastStore._forecast_rows` of the same frame (same order: their keys are
    reused). A band with a missing end is skipped; an infinite end is kept (too few calibration windows).

    Raises:
        StoreError: a level has only one of its two columns.
    """
    sides: dict[float, dict[str, str]] = {}
    for col in frame.columns:
        match = INTERVAL_COLUMN.match(str(col))
        if match:
            sides.setdefault(float(match.group(2)), {})[match.group(1)] = col
    out = []
    for level, cols in sorted(sides.items()):
        if len(cols) != 2:
            raise StoreError(f"interval level {level:g}: expected both {list(schema.interval_columns(level))}, the frame has only {list(cols.values())}")
        lo, hi = frame[cols[schema.INTERVAL_LO]].to_numpy(dtype=float), frame[cols[schema.INTERVAL_HI]].to_numpy(dtype=float)
        out += [{**{k: row[k] for k in KEY}, "level": level, "lo": float(a), "hi": float(b)}
                for row, a, b in zip(rows, lo, hi, strict=True) if not (pd.isna(a) or pd.isna(b))]  # fmt: skip
    return out


class ForecastStore:
    """The store at ``url`` (any SQLAlchemy URL), created on first use.

    Args:
        url: e.g. ``sqlite:////abs/path/forecasts.db`` or ``postgresql+psycopg://...``.
        attempts, backoff_s: bounded retries of a call whose connection fails
            (``backoff_s * 2**k`` seconds between tries).

    Raises:
        StoreError: (from any method) the database is unreachable after ``attempts``
            tries, or is at a newer schema version than this code knows.
    """

    def __init__(self, url: str, attempts: int = 3, backoff_s: float = 0.5):
        self.url = url
        self.attempts, self.backoff_s = attempts, backoff_s
        if url.startswith("sqlite:///"):
            try:
                Path(url[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
            except OSError:  # reported as unreachable by the first call, after its retries
                pass
        self.engine = sa.create_engine(url)
        self._ready = False

    def __repr__(self) -> str:
        return f"ForecastStore({self.engine.url.render_as_string(hide_password=True)!r})"

    # ------------------------------------------------------------ plumbing

    def _run(self, fn: Callable[[sa.Connection], Any], write: bool = False) -> Any:
        """``fn(connection)`` in one transaction, with bounded retries on connection errors."""
        last: Exception | None = None
        for attempt in range(1, self.attempts + 1):
            try:
                if not self._ready:
                    self._create()
                with self.engine.begin() if write else self.engine.connect() as conn:
                    return fn(conn)
            except sa.exc.OperationalError as exc:
                last = exc
                log.warning("forecast store %r: attempt %d/%d failed: %s", self, attempt, self.attempts, exc.orig)
                if attempt < self.attempts:
                    time.sleep(self.backoff_s * 2 ** (attempt - 1))
        raise StoreError(
            f"forecast store {self.engine.url.render_as_string(hide_password=True)} is unreachable after "
            f"{self.attempts} attempts ({getattr(last, 'orig', last)}); nothing was written by this call. "
            "Check monitoring.store_url and that the database is up."
        )

    def _create(self) -> None:
        with self.engine.begin() as conn:
            if conn.dialect.name == "postgresql":  # two processes creating the tables at once: one at a time
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": CREATE_LOCK_KEY})
            metadata.create_all(conn, checkfirst=True)
            found = conn.execute(sa.select(sa.func.max(schema_version.c.version))).scalar()
            if found is None:
                _record_version(conn, SCHEMA_VERSION)
            elif found > SCHEMA_VERSION:
                raise StoreError(f"forecast store {self!r} is at schema version {found}; this code knows up to {SCHEMA_VERSION}: upgrade the package")
            else:
                for target in range(found + 1, SCHEMA_VERSION + 1):
                    MIGRATIONS[target](conn)
                    _record_version(conn, target)
        self._ready = True

    def _upsert(self, conn: sa.Connection, table: sa.Table, rows: list[dict], key: list[str]) -> None:
        if not rows:
            return
        from sqlalchemy.dialects import postgresql, sqlite

        dialect = conn.dialect.name
        if dialect in ("sqlite", "postgresql"):
            insert = sqlite.insert if dialect == "sqlite" else postgresql.insert
            stmt = insert(table)
            update = {c.name: stmt.excluded[c.name] for c in table.columns if c.name not in key}
            conn.execute(stmt.on_conflict_do_update(index_elements=key, set_=update), rows)
            return
        for row in rows:  # other databases: delete then insert, inside the same transaction
            conn.execute(table.delete().where(sa.and_(*(table.c[k] == row[k] for k in key))))
        conn.execute(table.insert(), rows)

    @property
    def schema_version(self) -> int:
        return self._run(lambda conn: conn.execute(sa.select(sa.func.max(schema_version.c.version))).scalar())

    # ------------------------------------------------------------ forecasts and scores

    @staticmethod
    def _forecast_rows(frame: pd.DataFrame, extra: tuple[str, ...]) -> list[dict]:
        missing = [c for c in (*KEY, "ds", "yhat", *extra) if c not in frame.columns]
        if missing:
            raise StoreError(f"expected columns {KEY + ['ds', 'yhat', *extra]}, the frame lacks {missing}")
        rows = frame[[*KEY, "ds", "yhat", *extra]].copy()
        for col in ("origin", "ds", "as_of"):
            if col in rows.columns:
                rows[col] = [_ts(v) for v in rows[col]]
        rows["version"], rows["step"] = rows["version"].astype(int), rows["step"].astype(int)
        rows["unique_id"] = rows["unique_id"].astype(str)
        if "alias" in rows.columns:
            rows["alias"] = rows["alias"].astype(object).where(rows["alias"].notna(), None)
        return rows.to_dict("records")

    def upsert_forecasts(self, frame: pd.DataFrame) -> int:
        """Insert or overwrite forecasts, with their prediction intervals when the frame has them; returns the number of forecasts.

        Args:
            frame: ``model_name, version, unique_id, origin, step, ds, yhat, alias, as_of``
                (``alias`` the version held when issued; ``as_of`` the check's ``T``), optionally
                ``yhat_lo_<level>, yhat_hi_<level>`` per level (the pyfunc's interval columns; one
                ``forecast_intervals`` row per forecast and level, in the same transaction).

        Raises:
            StoreError: a column is missing, or a level has only one of its two interval columns.
        """
        rows = self._forecast_rows(frame, ("alias", "as_of"))
        bands = _interval_rows(frame, rows)

        def write(conn: sa.Connection) -> None:
            self._upsert(conn, forecasts, rows, KEY)
            self._upsert(conn, forecast_intervals, bands, INTERVAL_KEY)

        self._run(write, write=True)
        return len(rows)

    def record_scores(self, frame: pd.DataFrame) -> int:
        """Insert or overwrite scores: ``KEY + ds, yhat, y, as_of`` (``y`` observed, original units)."""
        rows = self._forecast_rows(frame.dropna(subset=["y"]), ("y", "as_of"))
        self._run(lambda conn: self._upsert(conn, scores, rows, KEY), write=True)
        return len(rows)

    def score(self, observed: pd.DataFrame, as_of=None) -> int:
        """Score every stored forecast whose target ``ds`` is observed in ``observed``.

        Args:
            observed: long ``unique_id, ds, y`` (``y`` NaN where not observed).
            as_of: recorded on the score rows.

        Returns:
            The number of (forecast, observation) pairs written (a rerun rewrites the same rows).
        """
        obs = observed.loc[observed["y"].notna(), ["unique_id", "ds", "y"]]
        if obs.empty:
            return 0
        lo, hi = _ts(obs["ds"].min()), _ts(obs["ds"].max())
        query = sa.select(forecasts).where(forecasts.c.ds >= lo, forecasts.c.ds <= hi)
        issued = self._run(lambda conn: pd.read_sql(query, conn))
        if issued.empty:
            return 0
        issued["ds"] = pd.to_datetime(issued["ds"])
        obs = obs.assign(ds=pd.to_datetime(obs["ds"]), unique_id=obs["unique_id"].astype(str))
        joined = issued.merge(obs, on=["unique_id", "ds"], how="inner")
        return self.record_scores(joined.assign(as_of=_ts(as_of)))

    def _window(self, table: sa.Table, since, until) -> list:
        conds = []
        if since is not None:
            conds.append(table.c.origin >= _ts(since))
        if until is not None:
            conds.append(table.c.origin < _ts(until))
        return conds

    def scored(self, model_name: str, version: int, since=None, until=None) -> pd.DataFrame:
        """Scores of one version with ``since <= origin < until``.

        Returns:
            ``unique_id, origin, step, ds, yhat, y`` sorted by ``unique_id, origin, step``.
        """
        s = scores.c
        query = (
            sa.select(s.unique_id, s.origin, s.step, s.ds, s.yhat, s.y)
            .where(s.model_name == model_name, s.version == int(version), *self._window(scores, since, until))
            .order_by(s.unique_id, s.origin, s.step)
        )
        return self._read(query, ("origin", "ds"))

    def paired_scores(self, model_name: str, version_a: int, version_b: int, since=None, until=None) -> pd.DataFrame:
        """Scores of two versions on the same ``(unique_id, origin, step)`` (both scored).

        Returns:
            ``unique_id, origin, step, ds, y, yhat_a, yhat_b`` sorted by ``unique_id, origin, step``.
        """
        a, b = scores.alias("a"), scores.alias("b")
        query = (
            sa.select(a.c.unique_id, a.c.origin, a.c.step, a.c.ds, a.c.y, a.c.yhat.label("yhat_a"), b.c.yhat.label("yhat_b"))
            .join(b, sa.and_(a.c.model_name == b.c.model_name, a.c.unique_id == b.c.unique_id, a.c.origin == b.c.origin, a.c.step == b.c.step))
            .where(a.c.model_name == model_name, a.c.version == int(version_a), b.c.version == int(version_b), *self._window(a, since, until))
            .order_by(a.c.unique_id, a.c.origin, a.c.step)
        )  # fmt: skip
        return self._read(query, ("origin", "ds"))

    def published(self, model_name: str, since=None, until=None, alias: str = "champion") -> pd.DataFrame:
        """The forecasts issued under ``alias`` (default: the published champion ones), ``since <= origin < until``.

        Returns:
            ``unique_id, origin, step, ds, yhat, version, alias, as_of`` sorted by ``unique_id, origin, step``,
            then ``yhat_lo_<level>, yhat_hi_<level>`` per stored interval level (NaN for a forecast
            without one; no such columns when none has).
        """
        f = forecasts.c
        query = (
            sa.select(f.unique_id, f.origin, f.step, f.ds, f.yhat, f.version, f.alias, f.as_of)
            .where(f.model_name == model_name, f.alias == alias, *self._window(forecasts, since, until))
            .order_by(f.unique_id, f.origin, f.step)
        )
        return self._with_intervals(self._read(query, ("origin", "ds", "as_of")), model_name, since, until, alias)

    def published_scores(self, model_name: str, since=None, until=None, alias: str = "champion") -> pd.DataFrame:
        """The forecasts issued under ``alias`` joined with their observed ``y`` (scored ones only).

        Returns:
            ``unique_id, origin, step, ds, yhat, y, version`` sorted by ``unique_id, origin, step``.
        """
        f, s = forecasts.c, scores.c
        on = sa.and_(f.model_name == s.model_name, f.version == s.version, f.unique_id == s.unique_id, f.origin == s.origin, f.step == s.step)
        query = (
            sa.select(f.unique_id, f.origin, f.step, f.ds, f.yhat, s.y, f.version)
            .join(scores, on)
            .where(f.model_name == model_name, f.alias == alias, *self._window(forecasts, since, until))
            .order_by(f.unique_id, f.origin, f.step)
        )
        return self._read(query, ("origin", "ds"))

    def scored_intervals(self, model_name: str, version: int, since=None, until=None) -> pd.DataFrame:
        """The prediction intervals of one version's scored forecasts with ``since <= origin < until``.

        Returns:
            ``unique_id, origin, step, ds, level, lo, hi, y`` sorted by ``unique_id, origin, step, level``
            (empty for a version stored without intervals).
        """
        # two index range reads merged here, not one SQL join: SQLite carries the origin range of one
        # side over to the other and scans that whole range per row (quadratic: 58 s for one week of
        # half-hourly h=48 forecasts, docs/BENCHMARKS.md "Retrain policies")
        s, i = scores.c, forecast_intervals.c
        scored = self._read(
            sa.select(s.unique_id, s.origin, s.step, s.ds, s.y).where(s.model_name == model_name, s.version == int(version), *self._window(scores, since, until)),
            ("origin", "ds"),
        )  # fmt: skip
        bands = self._read(
            sa.select(i.unique_id, i.origin, i.step, i.level, i.lo, i.hi)
            .where(i.model_name == model_name, i.version == int(version), *self._window(forecast_intervals, since, until)),
            ("origin",),
        )  # fmt: skip
        out = scored.merge(bands, on=["unique_id", "origin", "step"], how="inner")
        cols = ["unique_id", "origin", "step", "ds", "level", "lo", "hi", "y"]
        return out[cols].sort_values(["unique_id", "origin", "step", "level"], ignore_index=True)

    def _with_intervals(self, frame: pd.DataFrame, model_name: str, since, until, alias: str) -> pd.DataFrame:
        """``frame`` (published forecasts) with ``yhat_lo_<level>, yhat_hi_<level>`` columns for the levels stored."""
        f, i = forecasts.c, forecast_intervals.c
        on = sa.and_(*(f[k] == i[k] for k in KEY))
        query = (
            sa.select(f.unique_id, f.origin, f.step, f.version, i.level, i.lo, i.hi).join(forecast_intervals, on)
            .where(f.model_name == model_name, f.alias == alias, *self._window(forecasts, since, until))
        )  # fmt: skip
        bands = self._read(query, ("origin",))
        if bands.empty or frame.empty:
            return frame
        wide = bands.pivot_table(index=["unique_id", "origin", "step", "version"], columns="level", values=["lo", "hi"], aggfunc="first")
        levels = sorted(bands["level"].unique())
        names = {(side, level): schema.interval_columns(level)[0 if side == "lo" else 1] for level in levels for side in ("lo", "hi")}
        wide.columns = [names[c] for c in wide.columns]
        order = [names[(side, level)] for level in levels for side in ("lo", "hi")]
        return frame.merge(wide[order].reset_index(), on=["unique_id", "origin", "step", "version"], how="left")

    def _read(self, query, dates: tuple[str, ...]) -> pd.DataFrame:
        frame = self._run(lambda conn: pd.read_sql(query, conn))
        for col in dates:
            frame[col] = pd.to_datetime(frame[col])
        return frame

    # ------------------------------------------------------------ checks and alias events

    def record_check(self, row: dict[str, Any]) -> str:
        """Insert or overwrite one monitoring check (keyed by ``row["check_id"]``); returns the id.

        ``row`` needs ``check_id, model_name, as_of``; the numbers of :data:`CHECK_COLUMNS`
        get their own columns, and the whole row is kept as JSON (``payload``).
        """
        if not row.get("check_id") or not row.get("model_name") or row.get("as_of") is None:
            raise StoreError(f"a check row needs check_id, model_name and as_of; found keys {sorted(row)}")
        record = {c: row.get(c) for c in CHECK_COLUMNS}
        record.update(check_id=row["check_id"], as_of=_ts(row["as_of"]), payload=_json(row))
        self._run(lambda conn: self._upsert(conn, checks, [record], ["check_id"]), write=True)
        return row["check_id"]

    def last_checks(self, model_name: str, n: int = 10, before=None) -> list[dict[str, Any]]:
        """The ``n`` latest checks of ``model_name`` (``as_of < before`` when given), newest first, as the recorded rows."""
        query = sa.select(checks.c.payload).where(checks.c.model_name == model_name)
        if before is not None:
            query = query.where(checks.c.as_of < _ts(before))
        query = query.order_by(checks.c.as_of.desc()).limit(n)
        return [json.loads(p) for p in self._run(lambda conn: conn.execute(query).scalars().all())]

    def record_alerts(self, check: dict[str, Any]) -> int:
        """Replace the alert rows of ``check["check_id"]`` with its ``data_faults``; returns how many.

        ``check`` needs ``check_id, model_name, as_of`` and ``data_faults`` (dicts with
        ``column, unique_id, kind, since, message, measured``; see
        :class:`pipeline.loop.data_faults.DataFault`). One transaction: a rerun of the same
        check rewrites its rows, and a rerun that finds no fault leaves none.
        """
        rows = [
            {"check_id": check["check_id"], "model_name": check["model_name"], "as_of": _ts(check["as_of"]),
             "unique_id": str(f["unique_id"]), "column_name": f["column"], "kind": f["kind"], "since": _ts(f["since"]),
             "message": f["message"], "measured": _json(f.get("measured") or {})}
            for f in check.get("data_faults") or []
        ]  # fmt: skip

        def write(conn: sa.Connection) -> None:
            conn.execute(alerts.delete().where(alerts.c.check_id == check["check_id"]))
            if rows:
                conn.execute(alerts.insert(), rows)

        self._run(write, write=True)
        return len(rows)

    def alerts(self, model_name: str, since=None, limit: int | None = None) -> list[dict[str, Any]]:
        """The alerts of ``model_name`` raised by checks with ``as_of >= since``, newest check first.

        Returns:
            Dicts ``check_id, model_name, as_of, unique_id, column, kind, since, message,
            measured`` (times as naive UTC ``datetime``, ``measured`` parsed).
        """
        a = alerts.c
        query = sa.select(alerts).where(a.model_name == model_name)
        if since is not None:
            query = query.where(a.as_of >= _ts(since))
        query = query.order_by(a.as_of.desc(), a.unique_id, a.column_name, a.kind)
        if limit is not None:
            query = query.limit(limit)
        rows = self._run(lambda conn: [dict(r._mapping) for r in conn.execute(query)])
        for r in rows:
            r["column"] = r.pop("column_name")
            r["measured"] = json.loads(r["measured"]) if r["measured"] else {}
        return rows

    def record_alias_event(
        self, model_name: str, alias: str, from_version: int | None, to_version: int | None, action: str,
        reason: str, evidence: dict[str, Any], as_of,
    ) -> int:  # fmt: skip
        """Append one alias move (``action`` e.g. set / promote / reject / rollback / remove); returns its id."""
        return self.record_alias_events(model_name, [(alias, from_version, to_version)], action, reason, evidence, as_of)[0]

    def record_alias_events(
        self, model_name: str, moves: list[tuple[str, int | None, int | None]], action: str, reason: str, evidence: dict[str, Any], as_of,
    ) -> list[int]:  # fmt: skip
        """Append the alias moves ``(alias, from_version, to_version)`` of one action in one transaction: all rows or none
        (a promotion's three moves are never half recorded). Returns their ids in order."""
        rows = [{
            "model_name": model_name, "alias": alias, "action": action, "reason": reason, "evidence": _json(evidence),
            "from_version": None if old is None else int(old), "to_version": None if new is None else int(new), "as_of": _ts(as_of),
        } for alias, old, new in moves]  # fmt: skip
        return self._run(lambda conn: [conn.execute(alias_events.insert().values(**r)).inserted_primary_key[0] for r in rows], write=True)

    def alias_events(self, model_name: str, limit: int = 20) -> list[dict[str, Any]]:
        """The latest alias events of ``model_name``, newest first (``evidence`` parsed)."""
        query = sa.select(alias_events).where(alias_events.c.model_name == model_name).order_by(alias_events.c.id.desc()).limit(limit)
        rows = self._run(lambda conn: [dict(r._mapping) for r in conn.execute(query)])
        for r in rows:
            r["evidence"] = json.loads(r["evidence"]) if r["evidence"] else {}
        return rows


#: environment variable naming the forecast store's SQLAlchemy URL; it overrides ``monitoring.store_url``
#: (as ``MLFLOW_TRACKING_URI`` overrides ``mlflow.tracking_uri``): ``make services`` sets it to its Postgres
STORE_URL_ENV = "LSTM_PIPELINE_STORE_URL"


def store_url(cfg) -> str:
    """``$LSTM_PIPELINE_STORE_URL``, else ``monitoring.store_url``, else the SQLite file beside the MLflow store."""
    return os.environ.get(STORE_URL_ENV) or cfg.monitoring.store_url or default_store_url(cfg.run.artifact_root)


def store_for(cfg) -> ForecastStore:
    """The store of a :class:`~pipeline.core.config.PipelineConfig` at :func:`store_url`."""
    return ForecastStore(store_url(cfg))


def existing_store(cfg) -> ForecastStore | None:
    """:func:`store_for`, or ``None`` where the store is a SQLite file not created yet: a reader
    (the service, ``lstm-pipeline forecast``) never creates a SQLite store just to read it. A
    server database (Postgres) is opened as :func:`store_for` opens it: its first read creates the
    tables where they are missing, and an older store is upgraded in place, SQLite's too."""
    url = store_url(cfg)
    if url.startswith("sqlite:///") and not Path(url[len("sqlite:///") :]).is_file():
        return None
    return ForecastStore(url)
