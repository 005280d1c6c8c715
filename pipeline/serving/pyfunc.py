"""The self-contained MLflow pyfunc forecaster.

``ForecastModel.load_context`` reads the saved preprocessing (plain JSON) and the
weights; ``predict`` takes raw recent history - the columns of the input CSV on the
``freq`` grid - and returns forecasts in original units. The path is the training
path: :func:`pipeline.data.io.raw_to_long` (the one raw -> long conversion) then
:func:`pipeline.features.windowing.transform` (the fitted preprocessing, never refitted), so
serving cannot skip or re-implement the training preprocessing.

Two modes (``params``; the signature declares them, so ``pyfunc.predict(df, params=...)``
passes them through):

* ``origins="last"`` (default): one forecast per series from its last row,
  frame ``[unique_id,] ds, step, yhat`` (``unique_id`` when the data has a series-id column);
* ``origins="all"``: a forecast from every usable origin (inputs complete, origin
  observed), optionally only origins with ``origin_start <= origin < origin_end``
  (ISO timestamps, empty = unbounded), frame ``unique_id, origin, ds, step, yhat``.
  At each origin it equals the ``"last"`` forecast of the history cut at that origin
  (``tests/pipeline/test_serving.py``).

Prediction intervals: a version registered with a calibration (artifact ``intervals``,
:class:`pipeline.models.conformal.IntervalCalibration`) adds, in both modes, ``yhat_lo_<level>``
and ``yhat_hi_<level>`` (float64, original units) per level of ``evaluation.interval_levels``
(e.g. ``yhat_lo_80, yhat_hi_80, yhat_lo_95, yhat_hi_95``) after ``yhat``: split-conformal bands
per horizon step. A version without one (registered before intervals, or trained with
``interval_levels: []`` or no validation part) returns ``yhat`` only. Versions registered before
2026-12-06 name the point forecast ``y_hat`` (:data:`pipeline.core.schema.LEGACY_YHAT`); callers
read either through :func:`pipeline.core.schema.with_yhat`.

Pattern: MLflow "Custom Python models" (``mlflow.pyfunc.PythonModel``,
https://mlflow.org/docs/latest/ml/model/python_model/).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from pipeline.core import schema
from pipeline.core.errors import DataQualityError
from pipeline.features.windowing import FeatureSet, Preprocessor, transform
from pipeline.models.conformal import IntervalCalibration, interval_columns

log = logging.getLogger(__name__)

try:  # mlflow is always installed with the package; the guard keeps this module importable without it
    from mlflow.pyfunc import PythonModel
except ImportError:  # pragma: no cover
    PythonModel = object  # type: ignore[misc,assignment]

#: the files of ``pipeline`` (relative to the package) a logged model ships (``code_paths``): the
#: served model's import closure, nothing of training, the loop, orchestration or development
#: (``tests/pipeline/test_serving.py`` checks it is the closure of this module;
#: ``tests/pipeline/test_registry.py`` loads a registered model with nothing else importable)
INFERENCE_FILES = (
    "__init__.py",
    "core/__init__.py", "core/artifacts.py", "core/config.py", "core/errors.py", "core/schema.py",
    "data/__init__.py", "data/io.py",
    "features/__init__.py", "features/windowing.py",
    "models/__init__.py", "models/conformal.py", "models/lstm.py", "models/network.py",
    "serving/__init__.py", "serving/pyfunc.py",
)  # fmt: skip

#: inference parameters of the pyfunc (all strings), declared in the model signature
SIGNATURE_PARAMS = {"origins": "last", "origin_start": "", "origin_end": ""}
ORIGIN = "origin"


def history_to_long(history: pd.DataFrame, prep: Preprocessor) -> pd.DataFrame:
    """Raw history -> long frame on the full grid (:func:`pipeline.data.io.raw_to_long`).

    Raises:
        DataQualityError: a required column is missing, a value does not parse, a
            timestamp is duplicated or off the ``freq`` grid.
    """
    from pipeline.data.io import local_to_utc, raw_to_long

    history = pd.DataFrame(history)
    if history.empty:
        required = [prep.timestamp_column, prep.target_column, *prep.covariates, *prep.categorical_levels]
        raise DataQualityError(
            f"history has no rows: expected at least {_need(prep)} rows of columns {required}, found none (a column the model "
            "does not know is dropped by its input schema, so rows with none of these columns arrive empty)"
        )
    col = prep.timestamp_column
    if prep.timezone and col in history and pd.api.types.is_datetime64_any_dtype(history[col]) and history[col].dt.tz is None:
        # naive datetimes (a frame read with parse_dates) are local times in data.timezone, as the same values as text are
        # (parse_timestamps would take typed naive values as UTC, the pipeline's own clock: a silent shift of the offset)
        utc = local_to_utc(history[col], history, prep, prep.timezone, "history")
        history = history.assign(**{col: utc.dt.tz_localize("UTC")})
    long = raw_to_long(_categoricals_as_text(history, prep), prep, where="history")
    _check_finite(long, prep)
    return long


def _categoricals_as_text(history: pd.DataFrame, prep: Preprocessor) -> pd.DataFrame:
    """Categorical columns a CSV reader typed as numbers (``1``, ``2.0``, ``True``) as the text of the file.

    The levels were fitted on the file's text; ``pd.read_csv`` turns a column of codes into
    ``int64`` (``float64`` once a cell is empty). Whole floats print without ``.0``; missing stays missing.
    Returns ``history`` itself when nothing needs a cast (it is never modified).
    """
    numeric = [c for c in prep.categorical_covariates if c in history and not pd.api.types.is_string_dtype(history[c]) and history[c].dtype != object]
    if not numeric:
        return history
    out = history.copy()
    for col in numeric:
        values = out[col]
        whole = pd.api.types.is_float_dtype(values) and bool((values.dropna() % 1 == 0).all())
        text = (values.astype("Int64") if whole else values).astype(str)
        out[col] = text.where(values.notna(), None).astype(object)
    return out


def _check_finite(long: pd.DataFrame, prep: Preprocessor) -> None:
    """``inf`` / ``-inf`` (or a number beyond float64) is never a valid history value; ``NaN`` is a gap."""
    for col, name in ((schema.Y, prep.target_column), *((c, c) for c in prep.covariates)):
        bad = np.flatnonzero(np.isinf(long[col].to_numpy(dtype=np.float64)))
        if len(bad):
            stamps = long[schema.DS].iloc[bad[:5]].astype(str).tolist()
            raise DataQualityError(f"history column {name!r} has {len(bad)} infinite value(s) at {stamps}; expected finite numbers (leave a gap empty instead)")


#: a scaled input beyond this many scaler units (standard deviations, ranges or IQRs) is
#: "far outside the training range" and makes the forecast carry a warning
OUT_OF_RANGE_SCALED = 20.0


def range_warnings(x: np.ndarray, prep: Preprocessor, ids: list[str]) -> list[str]:
    """Warnings for inputs far outside what the scaler saw in training.

    Args:
        x: ``(n_windows, lookback, n_features)`` scaled inputs; ids: the series of each window.

    Returns:
        One message per series and feature with ``|x| > OUT_OF_RANGE_SCALED`` (empty when none).
    """
    far = np.abs(x) > OUT_OF_RANGE_SCALED
    out = []
    for i, j in zip(*np.nonzero(far.any(axis=1)), strict=True):
        worst = float(np.abs(x[i, :, j]).max())
        name = prep.target_column if prep.feature_names[j] == schema.Y else prep.feature_names[j]  # the user's column name
        out.append(
            f"series {ids[i]!r}: input {name!r} is {worst:.0f} scaler units from the training data "
            f"(more than {OUT_OF_RANGE_SCALED:.0f}); the forecast extrapolates far outside what the model was trained on"
        )
    return list(dict.fromkeys(out))


def _need(prep: Preprocessor) -> str:
    """How many history rows a forecast needs, in words: ``lookback=24``, or with seasonal lags
    ``lookback + the seasonal lags' reach = 24 + 145 = 169`` (:attr:`Preprocessor.history_steps`)."""
    if not prep.seasonal_lags:
        return f"lookback={prep.lookback}"
    reach = prep.history_steps - prep.lookback
    return f"lookback + the seasonal lags' reach (seasons {prep.seasonal_lags}) = {prep.lookback} + {reach} = {prep.history_steps}"


def _last_origin_starts(fs: FeatureSet) -> np.ndarray:
    """Start of the window ending at each series' last row; a clear error when it is unusable."""
    prep, usable, out = fs.prep, set(fs.starts["forecast"].tolist()), []
    ends = np.flatnonzero(np.diff(np.append(fs.series, -1)))  # last row of each series
    for k, end in enumerate(ends):
        uid, first = fs.series_ids[k], int(np.searchsorted(fs.series, k))
        if end - first + 1 < prep.history_steps:
            raise DataQualityError(f"series {uid!r}: history has {end - first + 1} steps, at least {_need(prep)} are needed")
        start = int(end) - prep.lookback + 1
        if start not in usable:
            reads = int(end) - prep.history_steps + 1  # the first row the window's inputs read (its seasonal lags' reach)
            unusable = ~np.isfinite(fs.values[reads : end + 1, 0])  # the target (what the lags copy), filled where allowed
            unusable[start - reads :] |= ~np.isfinite(fs.values[start : end + 1]).all(axis=1)  # any input of the window's rows
            bad = np.flatnonzero(unusable)
            stamps = [str(pd.Timestamp(t)) for t in fs.ds[reads + bad[:5]]]
            raise DataQualityError(
                f"series {uid!r}: the last {prep.history_steps} steps have missing values that cannot be filled "
                f"(gaps longer than max_gap={prep.max_gap} or at the edge), at {stamps}"
            )
        out.append(start)
    return np.asarray(out, dtype=np.int64)


def _in_range(fs: FeatureSet, starts: np.ndarray, start: str, end: str) -> np.ndarray:
    from pipeline.core.errors import DataLoadError
    from pipeline.data.io import as_of_timestamp

    origin_ds = fs.ds[starts + fs.prep.lookback - 1]
    keep = np.ones(len(starts), dtype=bool)
    try:  # on the pipeline's clock: naive is UTC, an offset is converted
        if start:
            keep &= origin_ds >= as_of_timestamp(start).to_datetime64()
        if end:
            keep &= origin_ds < as_of_timestamp(end).to_datetime64()
    except DataLoadError as exc:
        raise DataQualityError(f"params origin_start/origin_end: expected ISO timestamps, found {start!r}/{end!r}") from exc
    return starts[keep]


def forecast_starts(fs: FeatureSet, params: dict[str, Any] | None) -> np.ndarray:
    """Window starts to forecast from, per ``params`` (see the module docstring).

    Raises:
        DataQualityError: an unknown ``origins`` value or bad range; in ``"last"`` mode a
            series shorter than ``prep.history_steps`` (``lookback``, plus the seasonal lags' reach) or with
            unfillable gaps in those steps.
    """
    p = {**SIGNATURE_PARAMS, **(params or {})}
    if p["origins"] == "last":
        return _last_origin_starts(fs)
    if p["origins"] != "all":
        raise DataQualityError(f"params origins: expected 'last' or 'all', found {p['origins']!r}")
    return _in_range(fs, fs.starts["forecast"], p["origin_start"] or "", p["origin_end"] or "")


def forecast_frame(fs: FeatureSet, starts: np.ndarray, y_hat: np.ndarray) -> pd.DataFrame:
    """``y_hat (n_windows, horizon)`` original units -> long ``unique_id, origin, ds, step, yhat`` frame."""
    prep, h = fs.prep, fs.prep.horizon
    offset = pd.tseries.frequencies.to_offset(prep.freq)
    origins = pd.DatetimeIndex(fs.ds[starts + prep.lookback - 1]).repeat(h)
    steps = np.tile(np.arange(1, h + 1), len(starts))
    if isinstance(offset, pd.offsets.Tick):  # fixed-length step: vectorised
        ds = origins + pd.to_timedelta(steps * offset.nanos, unit="ns")
    else:  # calendar offsets (month ends, business days)
        ds = pd.DatetimeIndex([o + int(s) * offset for o, s in zip(origins, steps, strict=True)])
    return pd.DataFrame({
        schema.UNIQUE_ID: np.asarray(fs.series_ids, dtype=object)[fs.series[starts]].repeat(h),
        ORIGIN: origins, schema.DS: ds, "step": steps, schema.YHAT: np.asarray(y_hat, dtype=np.float64).reshape(-1),
    })  # fmt: skip


def add_intervals(frame: pd.DataFrame, y_hat: np.ndarray, calibration: IntervalCalibration | None, history: np.ndarray | None = None) -> pd.DataFrame:
    """``frame`` (rows in ``y_hat``'s ``(n_windows, horizon)`` order) with ``yhat_lo_<level>``,
    ``yhat_hi_<level>`` per calibrated level, in place; unchanged when ``calibration`` is ``None``.
    ``history``: ``(n_windows, lookback)``, the target over each window's lookback (a
    ``normalised`` calibration scales its bands by it)."""
    if calibration is None:
        return frame
    for label, (lo, hi) in calibration.bands(np.asarray(y_hat, dtype=np.float64).reshape(-1, calibration.horizon), history).items():
        lo_col, hi_col = interval_columns(float(label))
        frame[lo_col], frame[hi_col] = lo.reshape(-1), hi.reshape(-1)
    return frame


class ForecastModel(PythonModel):
    """MLflow pyfunc: raw history DataFrame -> forecasts in original units (see the module docstring).

    Artifacts: ``preprocessing`` (JSON written by the features stage), ``weights``
    (``model.pt`` written by the training stage), since monitoring ``reference``
    (the training part's raw columns, for drift; ``reference_path`` is ``None`` for an
    older version) and, since prediction intervals, ``intervals`` (the conformal calibration;
    ``calibration`` is ``None`` for an older version).
    """

    def load_context(self, context) -> None:
        import json

        from pipeline.models.lstm import LSTMForecaster

        with open(context.artifacts["preprocessing"]) as fh:
            prep = Preprocessor.from_dict(json.load(fh))
        intervals = context.artifacts.get("intervals")
        calibration = IntervalCalibration.load(intervals) if intervals else None
        self.use(LSTMForecaster.load(context.artifacts["weights"], prep, "cpu"), context.artifacts.get("reference"), calibration)

    def use(self, forecaster, reference_path: str | None = None, calibration: IntervalCalibration | None = None) -> ForecastModel:
        """Serve a fitted :class:`pipeline.models.lstm.LSTMForecaster` (its ``prep_`` is the preprocessing)
        with its interval ``calibration`` (``None``: point forecasts only)."""
        self.forecaster, self.prep, self.reference_path, self.calibration = forecaster, forecaster.prep_, reference_path, calibration
        return self

    def predict_windows(self, x: np.ndarray) -> np.ndarray:
        """``x (n, lookback, n_features)`` float32 scaled -> ``(n, horizon)`` float64 original units.

        The forecaster's own :meth:`~pipeline.models.lstm.LSTMForecaster.predict_windows`: the members'
        mean in float32, as the test forecasts were evaluated (one place for both).
        """
        return self.forecaster.predict_windows(x)

    def predict(self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        from pipeline.data.io import in_zone, output_zone

        fs = transform(history_to_long(model_input, self.prep), self.prep)
        starts = forecast_starts(fs, params)
        x = fs.windows("forecast").x_view()[starts] if len(starts) else np.empty((0, self.prep.lookback, self.prep.n_features), np.float32)
        y_hat = self.predict_windows(x)
        calibration = getattr(self, "calibration", None)
        history = fs.lookback_targets(starts) if calibration is not None and calibration.score == "normalised" else None
        frame = add_intervals(forecast_frame(fs, starts, y_hat), y_hat, calibration, history)
        zone = output_zone(self.prep, pd.DataFrame(model_input).get(self.prep.timestamp_column))
        if zone:  # offset in, offset out (``data.timezone``, else UTC): the same instants, written with their offset
            frame[ORIGIN], frame[schema.DS] = in_zone(frame[ORIGIN], zone), in_zone(frame[schema.DS], zone)
        warnings = range_warnings(x, self.prep, [fs.series_ids[k] for k in fs.series[starts]])
        if warnings:  # the result says so too: a ``warning`` column appears only then
            log.warning("forecast inputs out of the training range: %s", "; ".join(warnings))
            frame["warning"] = "; ".join(warnings)
        if (params or {}).get("origins", "last") == "last":
            frame = frame.drop(columns=[ORIGIN])
            return frame if self.prep.series_id_column else frame.drop(columns=[schema.UNIQUE_ID])
        return frame
