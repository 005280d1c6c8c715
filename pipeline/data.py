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

from pipeline.config import DataConfig, SyntheticSource
from pipeline.errors import DataLoadError


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
