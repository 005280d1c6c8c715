"""Reading raw data: a comma-separated file or a generated series.

The raw frame keeps every column as strings (missing values as ``NaN``) so the
validation suite sees exactly what the file holds and can name the bad cell.
"""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.core import schema
from pipeline.core.config import DataConfig, SyntheticSource
from pipeline.core.errors import DataLoadError, DataQualityError


def generate_synthetic(source: SyntheticSource, freq: str, timestamp_column: str, target_column: str) -> pd.DataFrame:
    """The series ``sin(t) + trend * t + N(0, noise_std)``, ``t = linspace(0, t_max, n)``.

    Source: the "LSTM time series forecasting on a noisy sine with trend" tutorial
    setting (seed 42, 1,000 points, t in [0, 100]); its one-step RMSE floor is
    ``noise_std`` (0.100 by default).

    Returns:
        A raw frame with ``timestamp_column`` (``freq`` grid from ``source.start``) and
        ``target_column`` (float64), ``n`` rows.
    """
    rng = np.random.default_rng(source.seed)
    t = np.linspace(0.0, source.t_max, source.n)
    y = np.sin(t) + source.trend * t + rng.normal(0.0, source.noise_std, source.n)
    ds = pd.date_range(source.start, periods=source.n, freq=freq)
    return pd.DataFrame({timestamp_column: ds.strftime("%Y-%m-%d %H:%M:%S"), target_column: y})


def _check_delimiter(path: Path, first_line: str, expected: list[str]) -> None:
    header = next(csv.reader([first_line]))
    if all(col in header for col in expected):
        return
    try:
        dialect = csv.Sniffer().sniff(first_line, delimiters=",;\t|")
    except csv.Error:
        return
    if dialect.delimiter != ",":
        raise DataLoadError(
            f"{path}: expected a comma-separated file, found the delimiter {dialect.delimiter!r} "
            f"in the header line {first_line.strip()[:120]!r}"
        )


def read_raw(data: DataConfig, path: Path | None = None) -> pd.DataFrame:
    """Read the raw data as strings (``NaN`` where a cell is empty).

    Args:
        data: the ``data`` config section.
        path: a CSV to read instead of ``data.path`` / ``data.synthetic``.

    Returns:
        A frame with the file's columns, all of dtype ``object``/``str``, in file order
        (row ``i`` is line ``i + 2`` of the file).

    Raises:
        DataLoadError: the file does not exist, is empty, has no data rows, or uses a
            delimiter other than ``,``.
    """
    path = Path(path) if path is not None else data.path
    if path is None:
        assert data.synthetic is not None
        frame = generate_synthetic(data.synthetic, data.freq, data.timestamp_column, data.target_column)
        return frame.astype({data.target_column: str})
    if not path.is_file():
        raise DataLoadError(f"data file not found: {path}")
    with pd.io.common.get_handle(path, "r", compression="infer") as handle:
        first_line = handle.handle.readline()
    if not first_line.strip():
        raise DataLoadError(f"data file {path} is empty: expected a header line naming the columns, found nothing")
    _check_delimiter(path, first_line, [data.timestamp_column, data.target_column])
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=True, skipinitialspace=True)
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataLoadError(f"data file {path} could not be parsed as CSV: {exc}") from exc
    if frame.empty:
        raise DataLoadError(f"data file {path} has a header but no data rows")
    return frame


def file_sha256(path: Path | None) -> str | None:
    """Hex sha256 of a file (``None`` for a generated series)."""
    if path is None:
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# ---------------------------------------------------------------- raw -> long (one copy)


def as_of_timestamp(as_of) -> pd.Timestamp:
    """A cut-off ``T`` (str, datetime, Timestamp; tz-aware is converted to UTC) as a naive UTC Timestamp.

    Raises:
        DataLoadError: ``as_of`` does not parse as a timestamp.
    """
    try:
        ts = pd.Timestamp(as_of)
    except (ValueError, TypeError) as exc:
        raise DataLoadError(f"as_of: expected a timestamp such as '2014-06-01T00:00:00', found {as_of!r}") from exc
    if ts is pd.NaT:
        raise DataLoadError(f"as_of: expected a timestamp, found {as_of!r}")
    return ts.tz_convert("UTC").tz_localize(None) if ts.tzinfo is not None else ts


def rows_before(raw: pd.DataFrame, spec, as_of) -> pd.DataFrame:
    """The raw rows observed before ``as_of`` (``ds < T``), as of ``T``.

    Rows whose timestamp does not parse are kept, so validation can name them.
    ``spec`` has ``timestamp_column`` (and optionally ``timestamp_format``).
    """
    col = spec.timestamp_column
    if col not in raw.columns:
        return raw
    ts = pd.to_datetime(raw[col], format=getattr(spec, "timestamp_format", None), errors="coerce")
    return raw[ts.isna() | (ts < as_of_timestamp(as_of))]


def _typed_columns(raw: pd.DataFrame, spec, where: str) -> dict:
    required = [spec.timestamp_column, spec.target_column, *spec.covariates, *spec.categorical_covariates]
    required += [spec.series_id_column] if spec.series_id_column else []
    missing = [c for c in required if c not in raw.columns]
    if missing:
        raise DataQualityError(f"{where} is missing column(s) {missing}; expected {required}, found {list(raw.columns)}")
    out = {}
    for col in (spec.timestamp_column, spec.target_column, *spec.covariates):
        try:
            if col == spec.timestamp_column:
                out[col] = pd.to_datetime(raw[col], format=getattr(spec, "timestamp_format", None))
            else:
                out[col] = pd.to_numeric(raw[col]).astype("float64")
        except (ValueError, TypeError) as exc:
            raise DataQualityError(f"{where}: column {col!r} has a value that does not parse: {exc}") from exc
    return out


def raw_to_long(raw: pd.DataFrame, spec, where: str = "data") -> pd.DataFrame:
    """Raw (or typed) frame -> long ``unique_id, ds, y, <covariates>, <categoricals>`` on the full grid.

    The one raw -> long conversion, shared by validation, the served model and
    monitoring. Missing grid timestamps become rows of ``NaN`` (gaps). Rows are
    sorted by ``unique_id`` then ``ds``; the index is a fresh ``RangeIndex``.

    Args:
        raw: the file's columns (strings or already typed).
        spec: anything with ``timestamp_column``, ``target_column``, ``covariates``,
            ``categorical_covariates``, ``series_id_column``, ``freq`` (and optionally
            ``timestamp_format``): a :class:`~pipeline.core.config.DataConfig` or a fitted
            :class:`~pipeline.features.windowing.Preprocessor`.
        where: names the data in error messages.

    Raises:
        DataQualityError: a column is missing, a value does not parse, a timestamp is
            duplicated within a series or off the ``freq`` grid (message names it).
    """
    typed = _typed_columns(raw, spec, where)
    sid = spec.series_id_column
    long = pd.DataFrame({
        schema.UNIQUE_ID: raw[sid].astype(str).to_numpy() if sid else schema.DEFAULT_SERIES_ID,
        schema.DS: typed[spec.timestamp_column].to_numpy(), schema.Y: typed[spec.target_column].to_numpy(),
        **{c: typed[c].to_numpy() for c in spec.covariates},
        **{c: raw[c].to_numpy() for c in spec.categorical_covariates},
    })  # fmt: skip
    parts = [_on_grid(part, str(uid), spec.freq, where) for uid, part in long.groupby(schema.UNIQUE_ID, sort=True)]
    columns = [schema.UNIQUE_ID, schema.DS, schema.Y, *spec.covariates, *spec.categorical_covariates]
    return pd.concat(parts, ignore_index=True)[columns] if parts else long[columns]


def _on_grid(part: pd.DataFrame, uid: str, freq: str, where: str) -> pd.DataFrame:
    part = part.sort_values(schema.DS, kind="stable")
    dup = part[schema.DS].duplicated()
    if dup.any():
        raise DataQualityError(f"{where}, series {uid!r}: duplicate timestamp {part[schema.DS][dup].iat[0]}")
    grid = pd.date_range(part[schema.DS].iat[0], part[schema.DS].iat[-1], freq=freq, name=schema.DS)
    off = part[schema.DS][~part[schema.DS].isin(grid)]
    if len(off):
        raise DataQualityError(f"{where}, series {uid!r}: timestamp {off.iat[0]} is not on the {freq!r} grid")
    part = part.set_index(schema.DS).reindex(grid).reset_index()
    part[schema.UNIQUE_ID] = uid
    return part


def runs_of_true(missing: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start index and length of each run of ``True`` in a 1-D bool array."""
    padded = np.concatenate([[0], missing.astype(np.int8), [0]])
    edges = np.flatnonzero(np.diff(padded))
    return edges[0::2], edges[1::2] - edges[0::2]


def long_to_raw(long: pd.DataFrame, data: DataConfig) -> pd.DataFrame:
    """Long frame ``unique_id, ds, y`` (+ covariates) -> the raw columns of the input CSV: what a
    user sends the served model (the inverse of :func:`raw_to_long` on the grid).

    Timestamps are written as ``%Y-%m-%d %H:%M:%S`` strings, the series id only when the config
    names a series-id column. Rows without a timestamp are dropped; the index is ``0..n-1``.
    """
    frame = pd.DataFrame({data.timestamp_column: long[schema.DS].dt.strftime("%Y-%m-%d %H:%M:%S").to_numpy()})
    frame[data.target_column] = long[schema.Y].to_numpy()
    for col in (*data.covariates, *data.categorical_covariates):
        frame[col] = long[col].to_numpy()
    if data.series_id_column:
        frame[data.series_id_column] = long[schema.UNIQUE_ID].to_numpy()
    return frame.dropna(subset=[data.timestamp_column]).reset_index(drop=True)
