"""A starter config for a new data set: what ``lstm-pipeline init --csv F`` writes.

Only the data keys are read from the file (the timestamp column, the target, numeric
covariates, categorical columns, a series-id column when timestamps repeat, and ``freq``
inferred from the timestamps); ``lookback`` and ``horizon`` follow from ``freq`` (a week of
input and a day ahead for sub-daily data); every other key is left to its default, so
nothing tuned for another data set (the Beijing config's ``ar_highway: false``, its epochs
and learning rate) is copied. The file is checked with :func:`pipeline.core.config.load_config`
before it is kept, and an existing file is never overwritten.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.core.errors import ConfigError, DataLoadError, DataQualityError

#: rows read to infer the columns and ``freq`` (a starter needs a sample, not the whole file)
SAMPLE_ROWS = 50_000
#: share of non-empty cells that must parse for a column to count as timestamps / numbers
PARSE_SHARE = 0.95
#: a text column with at most this many distinct values is a categorical covariate
MAX_LEVELS = 50


def _share(parsed: pd.Series, raw: pd.Series) -> float:
    filled = raw.notna().sum()
    return float(parsed.notna().sum() / filled) if filled else 0.0


def _read(csv: Path) -> pd.DataFrame:
    if not csv.is_file():
        raise DataLoadError(f"data file not found: {csv}")
    try:
        frame = pd.read_csv(csv, dtype=str, nrows=SAMPLE_ROWS, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataLoadError(f"data file {csv} could not be parsed as CSV: {exc}") from exc
    if frame.empty:
        raise DataLoadError(f"data file {csv} has no data rows: expected a header line and rows of values")
    return frame


def _timestamp_column(frame: pd.DataFrame, given: str | None) -> str:
    if given is not None:
        if given not in frame:
            raise DataQualityError(f"--timestamp {given!r}: no such column; found {list(frame.columns)}")
        return given
    for col in frame.columns:
        if pd.to_numeric(frame[col], errors="coerce").notna().any():
            continue  # numbers parse as epoch timestamps: never guess those
        if _share(pd.to_datetime(frame[col], errors="coerce", format="mixed"), frame[col]) >= PARSE_SHARE:
            return col
    raise DataQualityError(f"no column parses as timestamps (>= {PARSE_SHARE:.0%} of its cells); columns {list(frame.columns)}: pass --timestamp")


def infer_freq(ds: pd.Series) -> str:
    """The pandas offset alias of a timestamp column's grid (``h``, ``30min``, ``D``, ``MS``, ...).

    ``pd.infer_freq`` on runs of 12 timestamps (a gap makes it give up on a run that holds one),
    kept when every timestamp lies on that grid; else the most common step.

    Raises:
        DataQualityError: fewer than three distinct timestamps, or no positive step.
    """
    stamps = pd.DatetimeIndex(ds.dropna().drop_duplicates().sort_values())
    if len(stamps) < 3:
        raise DataQualityError(f"timestamps: expected at least 3 distinct values to infer freq, found {len(stamps)}")
    sample = stamps[:5000]
    for start in range(0, max(1, len(sample) - 2), 12):
        found = pd.infer_freq(sample[start : start + 12]) if len(sample[start : start + 12]) >= 3 else None
        if found and sample.isin(pd.date_range(sample[0], sample[-1], freq=found)).all():
            return found
    step = pd.Series(stamps[:1000]).diff().dropna().mode()
    if step.empty or step.iat[0] <= pd.Timedelta(0):
        raise DataQualityError("timestamps: no regular step found; set data.freq by hand")
    return pd.tseries.frequencies.to_offset(step.iat[0]).freqstr


def window_sizes(freq: str) -> tuple[int, int]:
    """``(lookback, horizon)`` in steps: a week in and a day ahead below a day; 8 weeks / 1 week for daily; else 2 / 1 seasons."""
    offset = pd.tseries.frequencies.to_offset(freq)
    if isinstance(offset, pd.offsets.Tick) and pd.Timedelta(offset) < pd.Timedelta("1D"):
        per_day = max(1, int(pd.Timedelta("1D") / pd.Timedelta(offset)))
        return 7 * per_day, per_day
    if isinstance(offset, pd.offsets.Day):
        return 56, 7
    if isinstance(offset, pd.offsets.Week):
        return 52, 4
    return 24, 3  # monthly, quarterly: two years in, a quarter ahead


def infer_data_section(csv: Path, target: str | None = None, timestamp: str | None = None) -> dict[str, Any]:
    """The ``data`` keys a CSV's columns suggest (see the module docstring).

    Raises:
        DataLoadError: the file is missing or unreadable.
        DataQualityError: no timestamp or numeric target column, or an unknown ``target``.
    """
    frame = _read(Path(csv))
    ts_col = _timestamp_column(frame, timestamp)
    rest = [c for c in frame.columns if c != ts_col]
    numeric = [c for c in rest if _share(pd.to_numeric(frame[c], errors="coerce"), frame[c]) >= PARSE_SHARE]
    if target is not None and target not in numeric:
        raise DataQualityError(f"--target {target!r}: expected a numeric column, the numeric ones are {numeric} (columns {list(frame.columns)})")
    if target is None and not numeric:
        raise DataQualityError(f"no numeric column to forecast; columns {list(frame.columns)}")
    target = target or numeric[0]
    text = [c for c in rest if c not in numeric and frame[c].nunique() <= MAX_LEVELS]
    ds = pd.to_datetime(frame[ts_col], errors="coerce", format="mixed")
    series_id = None
    if ds.duplicated().any():  # several series in one file: the text column that makes (series, ds) unique
        series_id = next((c for c in text if not pd.DataFrame({"s": frame[c], "ds": ds}).duplicated().any()), None)
        if series_id is None:
            raise DataQualityError(f"timestamps in {ts_col!r} repeat and no text column tells the series apart; set data.series_id_column by hand")
        text.remove(series_id)
    freq = infer_freq(ds if series_id is None else ds[frame[series_id] == frame[series_id].iat[0]])
    data: dict[str, Any] = {"path": None, "timestamp_column": ts_col, "target_column": target,
                            "covariates": [c for c in numeric if c != target], "categorical_covariates": text, "freq": freq}  # fmt: skip
    if series_id:
        data["series_id_column"] = series_id
    return data


HEADER = """\
# Starter config for {csv} written by `lstm-pipeline init`.
# Defaults only: edit the data keys if a column was guessed wrong, and features.lookback /
# features.horizon (steps of data.freq) for your task. Do not copy the tuned values of
# configs/beijing_pm25.yaml or configs/synthetic_sine.yaml (model.ar_highway: false, their epochs,
# learning rates, batch sizes): they were tuned for those series. When the gate fails, the
# summary of `lstm-pipeline train` says what was compared and what to try next.
"""


def write_starter_config(csv: Path, out: Path | None = None, target: str | None = None, timestamp: str | None = None) -> dict[str, Any]:
    """Write a defaults-only config for ``csv`` to ``out`` (default ``configs/<csv stem>.yaml``).

    Returns:
        ``{"path", "data", "features", "summary"}``: the file written, its data and features keys, a few lines for the user.

    Raises:
        DataLoadError / DataQualityError: see :func:`infer_data_section`.
        ConfigError: ``out`` exists, or the written config does not load (then it is removed).
    """
    import yaml

    from pipeline.core.config import load_config

    csv = Path(csv).resolve()
    stem = csv.name.split(".")[0] or "data"
    out = Path(out) if out is not None else Path("configs") / f"{stem}.yaml"
    if out.exists():
        raise ConfigError(f"{out} exists: init never overwrites a config; pass --out NEW.yaml")
    data = infer_data_section(csv, target, timestamp)
    relative = os.path.relpath(csv, out.resolve().parent)  # relative paths resolve against the config's folder
    data["path"] = str(csv) if relative.startswith(os.pardir + os.sep + os.pardir) else relative
    lookback, horizon = window_sizes(data["freq"])
    name = "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in stem.lower())
    raw = {"name": name, "data": data, "features": {"lookback": lookback, "horizon": horizon},
           "mlflow": {"experiment_name": name, "registered_model_name": f"{name}-lstm"}}  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(HEADER.format(csv=data["path"]) + yaml.safe_dump(raw, sort_keys=False))
    try:
        load_config(tmp)
    except ConfigError:
        tmp.unlink()
        raise
    tmp.replace(out)
    summary = (f"wrote {out}: target {data['target_column']!r}, timestamps {data['timestamp_column']!r} (freq {data['freq']!r}), "
               f"covariates {data['covariates']}, categorical {data['categorical_covariates']}, lookback {lookback}, horizon {horizon}.\n"
               f"next: lstm-pipeline validate --config {out}   then   lstm-pipeline train --config {out}")  # fmt: skip
    return {"path": str(out), "data": data, "features": raw["features"], "summary": summary}
