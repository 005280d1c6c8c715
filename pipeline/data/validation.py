"""Schema validation: a Great Expectations 1.x suite generated from the config.

Two passes run in an ephemeral (in-memory, offline) GX context:

1. on the raw strings: required columns exist; timestamps present; numeric columns
   hold numbers; categorical values in their configured levels; then (pandas,
   vectorised, :func:`pipeline.data.io.parse_timestamps`) timestamps parse with the
   configured or inferred format, carry one UTC offset, and exist in ``data.timezone``;
2. on the typed frame: ``(series, timestamp)`` unique; numeric ranges.

Checks GX cannot express per series are computed here with pandas and reported
in the same format: timestamps strictly increasing per series, timestamps on the
``data.freq`` grid, and the fraction of missing target values (a missing grid
timestamp counts as a missing value and is listed as a gap).

Source of the GX API: https://docs.greatexpectations.io/docs/core/ (GX Core 1.x,
"Connect to dataframe data", "Run a Validation Definition").
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.core import schema
from pipeline.core.config import PipelineConfig
from pipeline.core.errors import DataQualityError, SchemaValidationError
from pipeline.data.io import mixed_offsets, parse_timestamps, runs_of_true, utc_offsets

log = logging.getLogger(__name__)

#: a decimal or scientific-notation number, optional sign and surrounding blanks
NUMBER_REGEX = r"^\s*[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?\s*$"
MAX_EXAMPLES = 5


@dataclass
class ValidationReport:
    """What validation found. ``frame`` is the typed long frame on the full grid."""

    success: bool
    rows: int
    checks: list[dict[str, Any]]
    gaps: dict[str, Any]
    frame: pd.DataFrame | None = field(default=None, repr=False)

    @property
    def failures(self) -> list[dict[str, Any]]:
        return [c for c in self.checks if not c["success"]]

    def to_dict(self) -> dict[str, Any]:
        return {"success": self.success, "rows": self.rows, "checks": self.checks, "gaps": self.gaps}


# ---------------------------------------------------------------- GX plumbing


def _gx_context():
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    for name in ("great_expectations", "great_expectations._docs_decorators", "great_expectations.data_context.types.base"):
        logging.getLogger(name).setLevel(logging.WARNING)
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    return gx, context


def _run_suite(frame: pd.DataFrame, expectations: list, name: str) -> list[dict[str, Any]]:
    """Validate ``frame`` against ``expectations`` and return one check dict each."""
    gx, context = _gx_context()
    batch_def = (
        context.data_sources.add_pandas(f"{name}_source")
        .add_dataframe_asset(f"{name}_asset")
        .add_batch_definition_whole_dataframe(f"{name}_batch")
    )
    suite = context.suites.add(gx.ExpectationSuite(name=f"{name}_suite"))
    for expectation in expectations:
        suite.add_expectation(expectation)
    definition = context.validation_definitions.add(gx.ValidationDefinition(data=batch_def, suite=suite, name=name))
    result = definition.run(batch_parameters={"dataframe": frame}, result_format="COMPLETE")
    return [_check_from_gx(r, frame) for r in result.results]


def _check_from_gx(res, frame: pd.DataFrame) -> dict[str, Any]:
    cfg = res.expectation_config
    kwargs = dict(cfg.kwargs)
    column = kwargs.get("column") or kwargs.get("column_list")
    detail = res.result or {}
    examples: list[str] = []
    for idx in (detail.get("unexpected_index_list") or [])[:MAX_EXAMPLES]:
        row = idx.get("index", next(iter(idx.values()), None)) if isinstance(idx, dict) else idx
        examples.append(_describe_row(frame, row, column))
    if not examples:
        examples = [repr(v) for v in (detail.get("partial_unexpected_list") or [])[:MAX_EXAMPLES]]
    if res.exception_info and res.exception_info.get("raised_exception"):
        examples.append(str(res.exception_info.get("exception_message"))[:300])
    return {
        "expectation": cfg.type,
        "column": column,
        "engine": "great_expectations",
        "success": bool(res.success),
        "unexpected_count": int(detail.get("unexpected_count") or (0 if res.success else 1)),
        "examples": examples,
        "kwargs": {k: v for k, v in kwargs.items() if k not in ("column", "batch_id")},
    }


def _describe_row(frame: pd.DataFrame, row: Any, column: Any) -> str:
    """``line N: col='value'``; row ``i`` of a frame read from a file is line ``i + 2`` (after the header)."""
    if row is None or row not in frame.index:
        return repr(row)
    line = int(row) + 2
    cols = column if isinstance(column, list) else [column]
    values = ", ".join(f"{c}={_plain(frame.at[row, c])}" for c in cols if c in frame.columns)
    return f"line {line}: {values}"


def _plain(value: Any) -> str:
    """A value as a user wrote it: a timestamp in ISO 8601, text quoted, numbers as they are."""
    return value.isoformat() if isinstance(value, pd.Timestamp) else repr(value)


#: what each expectation asks, in words, for :func:`format_failures` (Great Expectations' names stay beside them)
EXPECTED = {
    "expect_columns_to_exist": "the column must be in the file",
    "expect_column_values_to_not_be_null": "a value on every row",
    "expect_column_values_to_match_regex": "a number on every row",
    "expect_column_values_to_be_in_set": "one of the levels seen in training",
    "expect_compound_columns_to_be_unique": "one row per series and timestamp",
    "expect_column_values_to_be_unique": "one row per timestamp",
    "expect_column_values_to_be_between": "values within the configured range",
}


def _check(expectation: str, column: Any, failed_examples: list[str], count: int, **extra) -> dict[str, Any]:
    return {
        "expectation": expectation,
        "column": column,
        "engine": "pipeline",
        "success": count == 0,
        "unexpected_count": int(count),
        "examples": failed_examples[:MAX_EXAMPLES],
        "kwargs": extra,
    }


# ---------------------------------------------------------------- the suite


def raw_expectations(cfg: PipelineConfig) -> list:
    """Pass-1 suite on the raw strings, generated from ``cfg.data``."""
    import great_expectations as gx

    d, e = cfg.data, gx.expectations
    ts = d.timestamp_column
    items = [e.ExpectColumnValuesToNotBeNull(column=ts)]  # parsing: :func:`_timestamp_check` (vectorised)
    for col in (d.target_column, *d.covariates):
        items.append(e.ExpectColumnValuesToMatchRegex(column=col, regex=NUMBER_REGEX))
    for col, levels in d.categorical_levels.items():
        items.append(e.ExpectColumnValuesToBeInSet(column=col, value_set=list(levels)))
    return items


def typed_expectations(cfg: PipelineConfig) -> list:
    """Pass-2 suite on the typed frame: unique keys and configured ranges."""
    import great_expectations as gx

    d, e = cfg.data, gx.expectations
    items: list = []
    if d.series_id_column:
        items.append(e.ExpectCompoundColumnsToBeUnique(column_list=[d.series_id_column, d.timestamp_column]))
    else:
        items.append(e.ExpectColumnValuesToBeUnique(column=d.timestamp_column))
    for col, bounds in d.ranges.items():
        items.append(e.ExpectColumnValuesToBeBetween(column=col, min_value=bounds.min, max_value=bounds.max))
    return items


def required_columns(cfg: PipelineConfig) -> list[str]:
    d = cfg.data
    cols = [d.timestamp_column, d.target_column, *d.covariates, *d.categorical_covariates]
    return cols + ([d.series_id_column] if d.series_id_column else [])


# ---------------------------------------------------------------- pandas checks


def _column_check(raw: pd.DataFrame, cfg: PipelineConfig) -> dict[str, Any]:
    missing = [c for c in required_columns(cfg) if c not in raw.columns]
    found = list(raw.columns)[:20]
    examples = [f"missing column {c!r}; the file has {found}" for c in missing]
    return _check("expect_columns_to_exist", missing or required_columns(cfg), examples, len(missing))


def _typed(raw: pd.DataFrame, cfg: PipelineConfig) -> pd.DataFrame:
    d = cfg.data
    typed = raw.copy()
    typed[d.timestamp_column] = parse_timestamps(raw, d)
    for col in (d.target_column, *d.covariates):
        typed[col] = pd.to_numeric(raw[col]).astype("float64")
    return typed


def _timestamp_check(raw: pd.DataFrame, cfg: PipelineConfig) -> list[dict[str, Any]]:
    """Timestamps parse with ``data.timestamp_format`` (or the format of the first value), with one
    UTC offset (or none) for the whole column, and exist once in ``data.timezone`` (DST changes).

    Vectorised (:func:`pipeline.data.io.parse_timestamps`), not row by row: 50k rows take milliseconds.
    """
    d = cfg.data
    ts, col = raw[d.timestamp_column], d.timestamp_column
    mixed = mixed_offsets(ts)
    if mixed:
        examples = [m.removeprefix("data, ") for m in mixed] + [
            "convert the column to one offset (e.g. UTC) before validation; the first row of each offset is shown"
        ]
        offsets = utc_offsets(ts[ts.notna()])
        count = int((offsets != offsets.iat[0]).sum())
        return [_check("expect_one_utc_offset", col, examples, count, offsets=sorted(set(offsets)))]
    checks = [_check("expect_one_utc_offset", col, [], 0)]
    parsed = parse_timestamps(raw, d.model_copy(update={"timezone": None}), strict=False)  # the format alone; DST below
    bad = raw.index[parsed.isna() & ts.notna()]
    fmt = d.timestamp_format or "the format pandas infers from the first value"
    examples = [f"line {int(i) + 2}: {ts[i]!r} is not a timestamp in {fmt}" for i in bad[:MAX_EXAMPLES]]
    checks.append(_check("expect_column_values_to_be_timestamps", col, examples, len(bad), timestamp_format=d.timestamp_format))
    if not len(bad) and d.timezone:
        try:
            parse_timestamps(raw, d)
            checks.append(_check("expect_local_times_to_exist_once", col, [], 0, timezone=d.timezone))
        except DataQualityError as err:
            checks.append(_check("expect_local_times_to_exist_once", col, [str(err).removeprefix("data, ")], 1, timezone=d.timezone))
    return checks


def _finite_check(typed: pd.DataFrame, cfg: PipelineConfig) -> dict[str, Any]:
    """Numbers that parse but overflow float64 (``1e999`` -> ``inf``) are not values."""
    d, examples, count = cfg.data, [], 0
    for col in (d.target_column, *d.covariates):
        bad = typed.index[np.isinf(typed[col].to_numpy())]
        count += len(bad)
        examples += [f"line {int(i) + 2}: {col}={typed.at[i, col]} (outside float64's range of about +-1.8e308)" for i in bad[:MAX_EXAMPLES]]
    return _check("expect_column_values_to_be_finite", [d.target_column, *d.covariates], examples, count)


def _empty_column_check(typed: pd.DataFrame, cfg: PipelineConfig) -> dict[str, Any]:
    """A covariate with no value at all cannot feed the model (every window would be dropped)."""
    d = cfg.data
    empty = [c for c in (*d.covariates, *d.categorical_covariates) if typed[c].isna().all()]
    examples = [f"column {c!r} has no values in any of the {len(typed)} rows; fill it or remove it from the config's covariates" for c in empty]
    return _check("expect_covariates_to_have_values", empty or [*d.covariates, *d.categorical_covariates], examples, len(empty))


def _series_keys(frame: pd.DataFrame, cfg: PipelineConfig) -> pd.Series:
    col = cfg.data.series_id_column
    if col is None:
        return pd.Series(schema.DEFAULT_SERIES_ID, index=frame.index)
    return frame[col].astype(str)


def _order_check(typed: pd.DataFrame, keys: pd.Series, cfg: PipelineConfig) -> dict[str, Any]:
    ts = typed[cfg.data.timestamp_column]
    step = ts.groupby(keys).diff()
    bad = typed.index[step <= pd.Timedelta(0)]
    examples = [
        f"line {int(i) + 2}: {ts[i]} does not come after the previous row's {ts[i] - step[i]}" for i in bad[:MAX_EXAMPLES]
    ]
    return _check("expect_timestamps_strictly_increasing_per_series", cfg.data.timestamp_column, examples, len(bad))


def _grid_check(typed: pd.DataFrame, keys: pd.Series, cfg: PipelineConfig) -> dict[str, Any]:
    ts, freq = typed[cfg.data.timestamp_column], cfg.data.freq
    off: list[int] = []
    for _, idx in keys.groupby(keys).groups.items():
        stamps = ts.loc[idx]
        grid = pd.date_range(stamps.min(), stamps.max(), freq=freq)
        off.extend(stamps.index[~stamps.isin(grid)].tolist())
    examples = [f"line {int(i) + 2}: {ts[i]} is not on the {freq!r} grid" for i in off[:MAX_EXAMPLES]]
    return _check("expect_timestamps_on_freq_grid", cfg.data.timestamp_column, examples, len(off), freq=freq)


def to_long_grid(typed: pd.DataFrame, cfg: PipelineConfig) -> pd.DataFrame:
    """Typed raw frame -> long ``unique_id, ds, y, <covariates>`` frame on the full grid.

    Missing grid timestamps become rows with ``NaN`` values (gaps). Rows are sorted
    by ``unique_id`` then ``ds``; the index is a fresh ``RangeIndex``. The one raw ->
    long conversion (:func:`pipeline.data.io.raw_to_long`), shared with serving and monitoring.
    """
    from pipeline.data.io import raw_to_long

    return raw_to_long(typed, cfg.data)


def _gap_summary(long: pd.DataFrame, n_raw_rows: int, cfg: PipelineConfig) -> tuple[dict, dict]:
    missing = long[schema.Y].isna().to_numpy()
    n_missing_ts = len(long) - n_raw_rows
    starts, lengths = runs_of_true(missing)
    order = np.argsort(-lengths)[:MAX_EXAMPLES]
    longest = [
        {"start": str(long[schema.DS].iat[s]), "steps": int(n), "unique_id": long[schema.UNIQUE_ID].iat[s]}
        for s, n in zip(starts[order], lengths[order], strict=True)
    ]
    gaps = {
        "missing_timestamps": int(n_missing_ts),
        "missing_target_values": int(missing.sum()),
        "runs": int(len(starts)),
        "longest_run": int(lengths.max()) if len(lengths) else 0,
        "runs_longer_than_max_gap": int((lengths > cfg.data.max_gap).sum()),
        "longest_runs": longest,
    }
    fraction = float(missing.mean()) if len(missing) else 1.0
    limit = cfg.data.max_missing_fraction
    too_many = fraction > limit or missing.all()
    detail = (
        f"{missing.sum()} of {len(missing)} target values missing ({fraction:.1%}, "
        f"{n_missing_ts} of them missing timestamps); at most {limit:.1%} allowed"
    )
    if missing.all():
        detail = f"the target column {cfg.data.target_column!r} has no values at all ({len(missing)} rows)"
    examples = [detail] + [f"gap of {g['steps']} steps from {g['start']}" for g in longest[:4]]
    check = _check(
        "expect_missing_target_fraction_at_most",
        cfg.data.target_column,
        examples if too_many else [],
        int(missing.sum()) if too_many else 0,
        max_missing_fraction=limit,
        observed_fraction=round(fraction, 6),
    )
    return gaps, check


# ---------------------------------------------------------------- entry point


def format_failures(failures: list[dict[str, Any]], source: str) -> str:
    lines = [f"schema validation failed for {source}: {len(failures)} expectation(s) not met"]
    for f in failures:
        what = EXPECTED.get(f["expectation"])
        if f["expectation"] == "expect_columns_to_exist":
            lines.append(f"- column(s) {f['column']!r} missing ({f['expectation']})")
        else:
            expected = f"expected {what}; " if what else ""
            lines.append(f"- column {f['column']!r}: {expected}{f['unexpected_count']} row(s) failed ({f['expectation']})")
        lines.extend(f"    e.g. {ex}" for ex in f["examples"][:MAX_EXAMPLES])
    return "\n".join(lines)


def validate_frame(raw: pd.DataFrame, cfg: PipelineConfig, source: str = "data") -> ValidationReport:
    """Validate a raw string frame (see :func:`pipeline.data.io.read_raw`).

    Returns:
        A report; on success ``report.frame`` is the long frame on the full grid
        (``unique_id`` str, ``ds`` datetime64, ``y`` float64, covariates).

    Raises:
        SchemaValidationError: one or more checks failed; the message lists each
            failed expectation with its column, failed-row count and up to 5 examples
            (file line numbers or timestamps). ``err.failures`` holds the same as dicts.
    """
    raw = raw.reset_index(drop=True)
    checks = [_column_check(raw, cfg)]
    report = ValidationReport(success=False, rows=len(raw), checks=checks, gaps={})
    if checks[0]["success"]:
        checks += _run_suite(raw, raw_expectations(cfg), "raw")
    if all(c["success"] for c in checks):
        checks += _timestamp_check(raw, cfg)
    if all(c["success"] for c in checks):
        typed = _typed(raw, cfg)
        checks += [_finite_check(typed, cfg), _empty_column_check(typed, cfg)]
    if all(c["success"] for c in checks):
        keys = _series_keys(typed, cfg)
        checks += _run_suite(typed, typed_expectations(cfg), "typed")
        checks += [_order_check(typed, keys, cfg), _grid_check(typed, keys, cfg)]
        if all(c["success"] for c in checks):
            long = to_long_grid(typed, cfg)
            report.gaps, missing_check = _gap_summary(long, len(raw), cfg)
            checks.append(missing_check)
            report.frame = long
    report.success = all(c["success"] for c in checks)
    if not report.success:
        report.frame = None
        raise SchemaValidationError(format_failures(report.failures, source), report.failures, report)
    return report


def validated_from_folder(folder: Path) -> dict[str, Any]:
    """The validate stage's result, read back from its folder (an orchestrator that passes folders, not XComs).

    Returns:
        ``{"report": path, "data": path, "data_sha256": str | None}`` and ``"as_of"`` when the
        run was cut at one: the keys :func:`pipeline.registry.registration.track_and_register` reads.

    Raises:
        FileNotFoundError: ``folder`` holds no validation report (``artifacts.VALIDATION_REPORT``).
    """
    from pipeline.core import artifacts

    report = artifacts.read_json(artifacts.VALIDATION_REPORT.at(folder))
    return {
        "report": str(artifacts.VALIDATION_REPORT.at(folder)), "data": str(artifacts.VALIDATED_DATA.at(folder)),
        "data_sha256": report.get("data_sha256"), **({"as_of": report["as_of"]} if report.get("as_of") else {}),
    }  # fmt: skip


def run_validation(cfg: PipelineConfig, run_path: Path, data_path: Path | None = None, as_of=None) -> dict[str, Any]:
    """Stage entry point: read, validate, write ``<run>/validation/{report.json,data.parquet}``.

    With ``as_of`` (a timestamp ``T``) only rows with ``ds < T`` are read: a retrain
    triggered at ``T`` sees exactly the data that existed then.

    The report is written on failure too (inside this run's folder only), then the
    :class:`SchemaValidationError` is re-raised.

    Returns:
        ``{"report": path, "data": path, "rows": int, "series": int, "gaps": int,
        "data_sha256": str | None}``, small enough for an XCom.
    """
    from pipeline.core import artifacts
    from pipeline.core.runs import bind_run_folder
    from pipeline.data.io import as_of_timestamp, file_sha256, read_raw, rows_before

    source_path = Path(data_path) if data_path else cfg.data.path
    source = str(source_path) if source_path else f"synthetic:{cfg.data.synthetic.kind}"  # type: ignore[union-attr]
    raw = read_raw(cfg.data, source_path)
    if as_of is not None:
        as_of = as_of_timestamp(as_of).isoformat()
        raw = rows_before(raw, cfg.data, as_of)
        source = f"{source} (rows with ds < {as_of})"
    target = artifacts.step_dir(run_path, artifacts.VALIDATION)
    sha = file_sha256(source_path)
    bind_run_folder(cfg, run_path, sha, record=False)  # a reused run id must mean the same config and data
    try:
        report = validate_frame(raw, cfg, source)
    except SchemaValidationError as err:
        with artifacts.atomic_dir(target) as tmp:
            artifacts.write_json(artifacts.VALIDATION_REPORT.at(tmp), {"source": source, "data_sha256": sha, **err.report.to_dict()})
        raise
    with artifacts.atomic_dir(target) as tmp:
        artifacts.write_json(artifacts.VALIDATION_REPORT.at(tmp), {"source": source, "data_sha256": sha, "as_of": as_of, **report.to_dict()})
        report.frame.to_parquet(artifacts.VALIDATED_DATA.at(tmp), index=False)
    bind_run_folder(cfg, run_path, sha)
    log.info("validated %d rows from %s: %d gaps", report.rows, source, report.gaps.get("runs", 0))
    return {
        "report": str(artifacts.VALIDATION_REPORT.at(target)),
        "data": str(artifacts.VALIDATED_DATA.at(target)),
        "rows": report.rows,
        "series": int(report.frame[schema.UNIQUE_ID].nunique()),
        "gaps": int(report.gaps.get("runs", 0)),
        "data_sha256": sha,
        **({"as_of": as_of} if as_of is not None else {}),
    }
