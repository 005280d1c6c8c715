"""Fault scenarios: realistic faults injected into a copy of the observations from a date.

A replay (:mod:`pipeline.loop.replay`) tests the closed loop by changing the data the way a
real deployment's data changes, from an injection timestamp ``inject_at`` on:

| kind | what happens to ``column`` at rows with timestamp ``>= inject_at`` | real cause |
| --- | --- | --- |
| ``none`` | nothing | the clean control run (false alarms) |
| ``scale`` | ``x * factor`` | a sensor recalibration (x2) |
| ``unit_change`` | ``x * factor + offset`` (default C -> F: ``x * 1.8 + 32``) | a feed switches units |
| ``level_shift`` | ``x + offset`` | a moved or replaced sensor |
| ``trend`` | ``x + slope_per_day * days since inject_at`` | a drifting sensor |
| ``noise`` | ``x + N(0, noise_std)`` (seeded) | a degraded sensor |

The faults above change the data's units or quality: data faults, which no retrain should
"learn". The next ones change the process itself (concept drift): a model that learns the
new behaviour forecasts well again, so a retrain can fix them.

| kind | what happens | real cause |
| --- | --- | --- |
| ``profile_change`` | ``x * (1 + amplitude * cos(2 pi (hour - peak_hour) / 24))``: load moves towards ``peak_hour`` | a time-of-use tariff |
| ``dynamics_change`` | the series from ``inject_at`` on runs ``factor`` times slower: ``x'[i0 + k] = x[i0 + k / factor]`` (linear interpolation) | a production line slowed down |
| ``covariate_relation`` | ``x + factor * (c - mean of c before inject_at)`` for the covariate ``covariate`` | a retrofit makes the load follow outdoor temperature |
| ``time_shift`` | ``x'[i] = x[i - lag_steps]``: the target lags its calendar and covariates | a feed's clock moved (a time-zone misconfiguration) |

``dynamics_change`` and ``time_shift`` treat the rows as one series in file order (use them on
single-series data).

Functions here are pure: they take the raw frame (all columns strings, as
:func:`pipeline.data.io.read_raw` returns it) and return a changed copy; rows before
``inject_at`` and every other column keep their original text byte for byte; a missing
cell stays missing. :func:`write_scenario_data` writes that copy to a new file; the
shipped data file is only ever read.

Scenarios are declared in small YAML files under ``configs/scenarios/<name>.yaml``::

    name: recalibration_x2
    kind: scale
    factor: 2.0
    description: the PM2.5 sensor is recalibrated and reads twice the true value
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Literal

import numpy as np
import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipeline.core.errors import ConfigError, DataQualityError
from pipeline.data.io import as_of_timestamp, parse_timestamps

#: folder of the shipped scenario files
SCENARIO_DIR = Path(__file__).resolve().parents[2] / "configs" / "scenarios"

Kind = Literal[
    "none", "scale", "unit_change", "level_shift", "trend", "noise", "profile_change", "dynamics_change", "covariate_relation", "time_shift"
]
#: the kinds a retrain can fix (concept drift); the others are data faults
CONCEPT_DRIFT = ("profile_change", "dynamics_change", "covariate_relation", "time_shift")


class Scenario(BaseModel):
    """One fault. ``column`` ``None`` means the config's target column.

    Units: ``offset`` and ``noise_std`` in the column's units, ``slope_per_day`` in column
    units per day, ``factor`` dimensionless.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    kind: Kind
    column: str | None = None
    factor: float = 1.0
    offset: float = 0.0
    slope_per_day: float = 0.0
    noise_std: float = Field(0.0, ge=0)
    seed: int = 0
    #: ``profile_change``: relative size of the moved load and the hour (0-24) it moves towards
    amplitude: float = 0.0
    peak_hour: float = Field(0.0, ge=0, lt=24)
    #: ``covariate_relation``: the covariate whose relation to the target changes
    covariate: str | None = None
    #: ``time_shift``: steps the target lags behind its timestamps
    lag_steps: int = Field(0, ge=0)
    #: clip changed values into ``[clip_min, clip_max]`` (e.g. a concentration stays >= 0)
    clip_min: float | None = None
    clip_max: float | None = None
    description: str = ""

    def with_defaults(self) -> Scenario:
        """``unit_change`` without factor/offset means Celsius -> Fahrenheit (x 1.8 + 32)."""
        if self.kind == "unit_change" and self.factor == 1.0 and self.offset == 0.0:
            return self.model_copy(update={"factor": 1.8, "offset": 32.0})
        return self


def load_scenario(name_or_path: str | Path) -> Scenario:
    """A scenario from a YAML file, or by name from ``configs/scenarios/<name>.yaml``.

    Raises:
        ConfigError: no such file or shipped name, not YAML, or an unknown key/bad value.
    """
    path = Path(name_or_path)
    if not path.suffix:
        path = SCENARIO_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        shipped = sorted(p.stem for p in SCENARIO_DIR.glob("*.yaml"))
        raise ConfigError(f"scenario {str(name_or_path)!r}: no file {path}; shipped scenarios: {shipped}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"scenario file {path} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"scenario file {path}: expected a mapping, found {type(raw).__name__}")
    raw.setdefault("name", path.stem)
    try:
        return Scenario.model_validate(raw)
    except ValidationError as exc:
        keys = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"invalid scenario file {path}: {keys}") from None


def _format(values: np.ndarray) -> list[str]:
    """Shortest round-tripping text of each float (``repr``), integers without ``.0``."""
    return [str(int(v)) if float(v).is_integer() and abs(v) < 1e15 else repr(float(v)) for v in values]


def _changed(x: np.ndarray, days: np.ndarray, sc: Scenario, ctx: dict | None = None) -> np.ndarray:
    """The changed values of the hit rows ``x``; ``ctx`` (concept-drift kinds): ``ds`` of the hit
    rows, ``full`` (the whole column, float, NaN where missing), ``rows`` (positions of the hit rows),
    ``first`` (position of the first row at or after ``inject_at``), ``cov`` / ``cov_ref``."""
    ctx = ctx or {}
    if sc.kind == "profile_change":
        hour = (ctx["ds"].dt.hour + ctx["ds"].dt.minute / 60.0).to_numpy(dtype=float)
        out = x * (1.0 + sc.amplitude * np.cos(2 * np.pi * (hour - sc.peak_hour) / 24.0))
    elif sc.kind == "dynamics_change":
        full, first = ctx["full"], ctx["first"]
        known = np.flatnonzero(np.isfinite(full))
        where = first + (ctx["rows"] - first) / max(sc.factor, 1e-9)
        out = np.interp(where, known, full[known])
    elif sc.kind == "covariate_relation":
        out = x + sc.factor * (ctx["cov"] - ctx["cov_ref"])
    elif sc.kind == "time_shift":
        full, rows = ctx["full"], ctx["rows"]
        out = np.where(rows - sc.lag_steps >= 0, full[np.maximum(rows - sc.lag_steps, 0)], np.nan)
        out = np.where(np.isfinite(out), out, x)  # no value lag_steps back: unchanged
    elif sc.kind in ("scale", "unit_change"):
        out = x * sc.factor + (sc.offset if sc.kind == "unit_change" else 0.0)
    elif sc.kind == "level_shift":
        out = x + sc.offset
    elif sc.kind == "trend":
        out = x + sc.slope_per_day * days
    elif sc.kind == "noise":
        out = x + np.random.default_rng(sc.seed).normal(0.0, sc.noise_std, len(x))
    else:
        out = x.copy()
    if sc.clip_min is not None or sc.clip_max is not None:
        out = np.clip(out, sc.clip_min, sc.clip_max)
    return out


def apply_scenario(
    raw: pd.DataFrame,
    scenario: Scenario,
    inject_at: str | pd.Timestamp,
    timestamp_column: str,
    target_column: str,
    timestamp_format: str | None = None,
    timezone: str | None = None,
) -> pd.DataFrame:
    """Return a copy of ``raw`` with ``scenario`` applied to rows whose timestamp is ``>= inject_at``.

    Args:
        raw: raw frame, every column ``object``/``str`` with ``NaN`` for empty cells; not modified.
        scenario: the fault; ``scenario.column`` ``None`` targets ``target_column``.
        inject_at: first affected timestamp (same clock as the data).
        timestamp_column, timestamp_format, timezone: how to parse the timestamps
            (:func:`pipeline.data.io.parse_timestamps`; format ``None``: inferred).

    Returns:
        A new frame, same shape, columns and row order. Only cells of the scenario's column at
        rows ``>= inject_at`` that held a number differ; their text is the changed float.

    Raises:
        DataQualityError: the column is missing, or a timestamp/number in it cannot be parsed
            (naming the row).
    """
    sc = scenario.with_defaults()
    column = sc.column or target_column
    out = raw.copy(deep=True)
    if sc.kind == "none":
        return out
    for col in (column, timestamp_column, *([sc.covariate] if sc.kind == "covariate_relation" else [])):
        if col is None:
            raise DataQualityError(f"scenario {sc.name!r}: kind covariate_relation needs 'covariate', the column whose relation to the target changes")
        if col not in raw.columns:
            raise DataQualityError(
                f"scenario {sc.name!r}: expected column {col!r} in the data, found columns {list(raw.columns)}"
            )
    spec = SimpleNamespace(timestamp_column=timestamp_column, timestamp_format=timestamp_format, timezone=timezone)
    ds = parse_timestamps(raw, spec, where=f"scenario {sc.name!r}")
    if ds.isna().any():
        row = int(np.flatnonzero(ds.isna().to_numpy())[0])
        raise DataQualityError(f"scenario {sc.name!r}, line {row + 2}: expected a timestamp in column {timestamp_column!r}, found none")
    values = pd.to_numeric(raw[column], errors="coerce")
    bad = values.isna() & raw[column].notna()
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataQualityError(
            f"scenario {sc.name!r}: expected numbers in column {column!r}, found {raw[column].iloc[row]!r} at row {row}"
        )
    start = as_of_timestamp(inject_at)
    hit = (ds >= start).to_numpy() & values.notna().to_numpy()
    if not hit.any():
        return out
    days = ((ds[hit] - start) / pd.Timedelta(days=1)).to_numpy()
    full = values.to_numpy(dtype=float)
    ctx = {"ds": ds[hit], "full": full, "rows": np.flatnonzero(hit), "first": int(np.argmax((ds >= start).to_numpy()))}
    if sc.kind == "covariate_relation":
        cov = pd.to_numeric(raw[sc.covariate], errors="coerce").to_numpy(dtype=float)
        ctx.update(cov=np.nan_to_num(cov[hit], nan=float(np.nanmean(cov[~(ds >= start).to_numpy()]))), cov_ref=float(np.nanmean(cov[~(ds >= start).to_numpy()])))
    new = _changed(values[hit].to_numpy(dtype=float), days, sc, ctx)
    out.loc[hit, column] = _format(new)
    return out


def write_scenario_data(raw: pd.DataFrame, path: Path) -> Path:
    """Write a (changed) raw frame as CSV (gzip when ``path`` ends in ``.gz``), atomically.

    Cells keep their exact text; missing cells are written empty. The gzip header carries
    no time stamp, so the same frame always gives the same bytes (and the same sha256, which
    a training run's fingerprint includes).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    compression = {"method": "gzip", "mtime": 0} if path.suffix == ".gz" else None
    raw.to_csv(tmp, index=False, compression=compression)
    tmp.replace(path)
    return path
