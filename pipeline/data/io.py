"""Reading raw data: a comma-separated file or a generated series.

The raw frame keeps every column as strings (missing values as ``NaN``) so the
validation suite sees exactly what the file holds and can name the bad cell.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.core import schema
from pipeline.core.config import DataConfig, SyntheticSource
from pipeline.core.errors import DataLoadError, DataQualityError

log = logging.getLogger(__name__)


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


# ---------------------------------------------------------------- timestamps (one parser, one convention)
#
# The convention: inside the pipeline ``ds`` is a naive ``datetime64`` on one clock.
# * Timestamps written with a UTC offset (``2012-01-01T13:00:00Z``, ``...+10:00``) are converted
#   to UTC and the offset dropped: the clock is UTC.
# * Naive timestamps with ``data.timezone`` set (an IANA name such as ``Europe/London``) are local
#   time there and converted to UTC; the repeated hour at a DST end is told apart by file order,
#   an hour skipped at a DST start is refused with its line.
# * Naive timestamps without ``data.timezone`` are taken as they are (no conversion).
# Cut-offs (``as_of``, ``--since``) are read on the same clock: naive means UTC, an offset is
# converted. Calendar features use local time when ``data.timezone`` is set; forecasts come out
# with an offset when the input had one or ``data.timezone`` is set (see :func:`output_zone`).

_OFFSET = r"(Z|[+-]\d{2}:?\d{2})\s*$"


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


def to_utc_naive(values: pd.Series) -> pd.Series:
    """A datetime column on the pipeline's clock: tz-aware -> UTC, offset dropped; naive unchanged."""
    values = pd.to_datetime(values)
    return values.dt.tz_convert("UTC").dt.tz_localize(None) if values.dt.tz is not None else values


def utc_offsets(values: pd.Series) -> pd.Series:
    """The UTC offset written at the end of each timestamp string (``Z``, ``+10:00``), ``none`` without one."""
    text = values.astype("string")
    return text.str.extract(_OFFSET, expand=False).fillna("none").astype(object)


def mixed_offsets(values: pd.Series, where: str = "data", offsets: pd.Series | None = None) -> list[str]:
    """Located examples when a timestamp column mixes UTC offsets (or offsets and none); ``[]`` when it does not.

    One example per offset: the first line (``index + 2``, the file line of a raw frame) that has it.
    ``offsets``: :func:`utc_offsets` of ``values``' non-missing values, when the caller has them already.
    """
    present = values[values.notna()]
    offsets = utc_offsets(present) if offsets is None else offsets
    firsts = offsets.drop_duplicates()
    if len(firsts) < 2:
        return []
    return [f"{where}, line {int(i) + 2}: {present[i]!r} (offset {offsets[i]})" for i in firsts.index]


def output_zone(spec, values: pd.Series | None = None) -> str | None:
    """The zone forecasts are written in: ``spec.timezone``, else ``UTC`` when the input timestamps
    carried an offset, else ``None`` (naive in, naive out)."""
    zone = getattr(spec, "timezone", None)
    if zone:
        return zone
    if values is None:
        return None
    if pd.api.types.is_datetime64_any_dtype(values):
        return "UTC" if values.dt.tz is not None else None
    first = values[values.notna()]
    return "UTC" if len(first) and utc_offsets(first.iloc[:1]).iat[0] != "none" else None


def in_zone(values: pd.Series, zone: str | None) -> pd.Series:
    """Naive UTC datetimes -> tz-aware in ``zone`` (unchanged when ``zone`` is ``None``)."""
    return values if zone is None else pd.to_datetime(values).dt.tz_localize("UTC").dt.tz_convert(zone)


def parse_timestamps(frame: pd.DataFrame, spec, where: str = "data", strict: bool = True) -> pd.Series:
    """The timestamp column of a raw frame -> naive ``datetime64`` on the pipeline's clock (see above).

    The one timestamp parser (validation, the served model, monitoring, replay, scenarios).
    Vectorised: with ``spec.timestamp_format`` every value is parsed with that format, without it
    the format pandas infers from the first value (``pd.to_datetime``), never row by row.

    Args:
        frame: raw rows; index = file row. Strings are parsed as above; an already typed
            datetime column is taken to be on the pipeline's clock (naive: unchanged; aware: to UTC).
        spec: ``timestamp_column`` and optionally ``timestamp_format``, ``timezone`` and
            ``series_id_column`` (a :class:`~pipeline.core.config.DataConfig` or a fitted Preprocessor).
        where: names the data in error messages.
        strict: refuse what does not parse; lenient (``False``) gives ``NaT`` for it and reads
            mixed offsets as instants (for cut-offs taken before validation names the rows).

    Returns:
        ``datetime64`` Series, same index; ``NaT`` where the value is missing.

    Raises:
        DataQualityError (strict): a value does not parse (line and expected format named), the
            column mixes UTC offsets, or a naive local time does not exist / is ambiguous in
            ``spec.timezone`` at a DST change.
    """
    col, fmt = spec.timestamp_column, getattr(spec, "timestamp_format", None)
    values = frame[col]
    if pd.api.types.is_datetime64_any_dtype(values):  # already typed: on the pipeline's clock (aware: converted)
        return to_utc_naive(values)
    else:
        present = values[values.notna()]
        offsets = utc_offsets(present)  # once: the mixed-offset check and ``aware`` both read it
        mixed = mixed_offsets(values, where, offsets)
        if mixed and strict:
            raise DataQualityError(
                f"{where}: column {col!r} mixes UTC offsets ({'; '.join(mixed)}); expected one offset for the "
                "whole column (e.g. UTC) or naive local times with data.timezone"
            )
        aware = bool(len(present)) and (offsets != "none").any()
        if aware and fmt and "%z" not in fmt and not fmt.endswith("Z"):
            fmt = "ISO8601"  # a format without %z describes naive timestamps; offsets are read as ISO 8601
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UserWarning)
            parsed = pd.to_datetime(values, format=fmt, utc=aware, errors="coerce")
        if any("Could not infer format" in str(w.message) for w in caught):
            log.warning(
                "%s: the format of %r could not be inferred, so timestamps are parsed one by one (slow); set data.timestamp_format",
                where, present.iat[0] if len(present) else None,
            )
        bad = parsed.isna() & values.notna()
        if bad.any() and strict:
            i = bad.idxmax()
            expected = f"the format {fmt!r} (data.timestamp_format)" if fmt else f"the format of line {int(present.index[0]) + 2} ({present.iat[0]!r})"
            raise DataQualityError(
                f"{where}, line {int(i) + 2}: column {col!r} has {values[i]!r}, which is not a timestamp in {expected}; "
                f"{int(bad.sum())} value(s) do not parse (set data.timestamp_format to name the format)"
            )
    if aware:
        return parsed.dt.tz_convert("UTC").dt.tz_localize(None)
    zone = getattr(spec, "timezone", None)
    return local_to_utc(parsed, frame, spec, zone, where, strict) if zone else parsed


def local_to_utc(naive: pd.Series, frame: pd.DataFrame, spec, zone: str, where: str, strict: bool = True) -> pd.Series:
    """Naive local times in ``zone`` -> naive UTC, per series in file order (DST repeats told apart by order).

    Raises:
        DataQualityError (strict): a local time does not exist in ``zone`` or is ambiguous there (row named).
    """
    sid = getattr(spec, "series_id_column", None)
    keys = frame[sid].astype(str) if sid and sid in frame else pd.Series("", index=frame.index)
    out = pd.Series(pd.NaT, index=naive.index, dtype=naive.dtype)
    for _, idx in naive[naive.notna()].groupby(keys[naive.notna()], sort=False).groups.items():
        part = pd.DatetimeIndex(naive.loc[idx])
        try:
            local = part.tz_localize(zone, ambiguous="infer", nonexistent="raise")
        except ValueError:
            local = part.tz_localize(zone, ambiguous="NaT", nonexistent="NaT")
            if strict:
                i = idx[int(np.flatnonzero(local.isna())[0])]
                gone = part.tz_localize(zone, ambiguous=np.zeros(len(part), bool), nonexistent="NaT").isna()
                why = (
                    "does not exist there (the clocks jump forward at the DST start)" if gone[idx.get_loc(i)]
                    else "is ambiguous there (the hour repeats at the DST end) and file order does not tell which is which"
                )
                raise DataQualityError(
                    f"{where}, line {int(i) + 2}: local time {str(frame[spec.timestamp_column][i])!r} in data.timezone={zone!r} {why}; "
                    "expected local times that exist once, or timestamps written with their UTC offset"
                ) from None
        out.loc[idx] = local.tz_convert("UTC").tz_localize(None)
    return out


def rows_before(raw: pd.DataFrame, spec, as_of) -> pd.DataFrame:
    """The raw rows observed before ``as_of`` (``ds < T``), as of ``T``.

    Rows whose timestamp does not parse are kept, so validation can name them.
    ``spec`` has ``timestamp_column`` (and optionally ``timestamp_format``, ``timezone``).
    """
    col = spec.timestamp_column
    if col not in raw.columns:
        return raw
    ts = parse_timestamps(raw, spec, strict=False)
    return raw[ts.isna() | (ts < as_of_timestamp(as_of))]


def _line(label) -> int:
    """The line of row ``label`` (``0..n-1``) in a file with a header: ``label + 2``, as validation counts lines (a
    served history counts the same way: line N is its row N - 2 counting from 0, ``rows[N - 2]`` of a request body)."""
    return int(label) + 2


def _row_labels(raw: pd.DataFrame) -> pd.Index:
    """``raw``'s index when it numbers rows (a file's, a request's: integers), else the positions ``0..n-1``."""
    return raw.index if pd.api.types.is_integer_dtype(raw.index) else pd.RangeIndex(len(raw))


def _typed_columns(raw: pd.DataFrame, spec, where: str) -> dict:
    required = [spec.timestamp_column, spec.target_column, *spec.covariates, *spec.categorical_covariates]
    required += [spec.series_id_column] if spec.series_id_column else []
    missing = [c for c in required if c not in raw.columns]
    if missing:
        raise DataQualityError(f"{where} is missing column(s) {missing}; expected {required}, found {list(raw.columns)}")
    out = {}
    for col in (spec.timestamp_column, spec.target_column, *spec.covariates):
        if col == spec.timestamp_column:
            try:
                out[col] = parse_timestamps(raw, spec, where)
            except (ValueError, TypeError) as exc:
                raise DataQualityError(f"{where}: column {col!r} has a value that does not parse: {exc}") from exc
            empty = _row_labels(raw)[out[col].isna().to_numpy()]
            if len(empty):
                raise DataQualityError(
                    f"{where}: column {col!r} expects a timestamp on every row; line(s) {[_line(i) for i in empty[:5]]} have none"
                    + (f", and {len(empty) - 5} more" if len(empty) > 5 else "")
                )
            continue
        try:
            out[col] = pd.to_numeric(raw[col]).astype("float64")
        except (ValueError, TypeError):
            coerced = pd.to_numeric(raw[col], errors="coerce")
            bad = np.flatnonzero(coerced.isna().to_numpy() & raw[col].notna().to_numpy())
            first = int(bad[0]) if len(bad) else 0
            raise DataQualityError(
                f"{where}, line {_line(_row_labels(raw)[first])}: column {col!r} expects numbers, found {raw[col].iat[first]!r}"
                + (f"; {len(bad) - 1} more value(s) do not parse" if len(bad) > 1 else "")
            ) from None
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
    long = pd.DataFrame(index=_row_labels(raw), data={
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
        first = part[schema.DS][dup].iat[0]
        lines = sorted(_line(i) for i in part.index[part[schema.DS] == first])  # long keeps the raw frame's index
        raise DataQualityError(f"{where}, series {uid!r}: duplicate timestamp {first.isoformat()} at lines {lines}")
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

    Timestamps are written as ``%Y-%m-%d %H:%M:%S`` strings (``%Y-%m-%dT%H:%M:%S+00:00`` when
    ``data.timezone`` is set: ``ds`` is UTC then, and a naive string would read as local time), the
    series id only when the config names a series-id column. Rows without a timestamp are dropped;
    the index is ``0..n-1``.
    """
    layout = "%Y-%m-%dT%H:%M:%S+00:00" if data.timezone else "%Y-%m-%d %H:%M:%S"
    frame = pd.DataFrame({data.timestamp_column: long[schema.DS].dt.strftime(layout).to_numpy()})
    frame[data.target_column] = long[schema.Y].to_numpy()
    for col in (*data.covariates, *data.categorical_covariates):
        frame[col] = long[col].to_numpy()
    if data.series_id_column:
        frame[data.series_id_column] = long[schema.UNIQUE_ID].to_numpy()
    return frame.dropna(subset=[data.timestamp_column]).reset_index(drop=True)
