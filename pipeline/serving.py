"""The self-contained MLflow pyfunc forecaster.

``ForecastModel.load_context`` reads the saved preprocessing (plain JSON) and the
weights; ``predict`` takes raw recent history - the columns of the input CSV, at
least ``lookback`` rows on the ``freq`` grid - and returns the next ``horizon``
forecasts in original units as a frame ``ds, step, y_hat`` (plus ``unique_id``
when the data has a series-id column, and a ``warning`` column, logged too, when an input
lies far outside the training range: :func:`range_warnings`). The same :func:`pipeline.features.design_matrix`
as training builds the inputs, so serving cannot skip the training preprocessing.
Pattern: MLflow "Custom Python models" (``mlflow.pyfunc.PythonModel``,
https://mlflow.org/docs/latest/ml/model/python_model/).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from pipeline import schema
from pipeline.errors import DataQualityError
from pipeline.features import Preprocessor, design_matrix, fill_short_gaps

log = logging.getLogger(__name__)

try:  # mlflow is always installed with the package; the guard keeps this module importable without it
    from mlflow.pyfunc import PythonModel
except ImportError:  # pragma: no cover
    PythonModel = object  # type: ignore[misc,assignment]


def history_to_long(history: pd.DataFrame, prep: Preprocessor) -> list[pd.DataFrame]:
    """Raw history -> one long frame per series on the full grid (gaps as NaN rows).

    Raises:
        DataQualityError: a required column is missing, a timestamp does not parse, is
            duplicated or off the ``freq`` grid, or a numeric value is not a number.
    """
    required = [prep.timestamp_column, prep.target_column, *prep.covariates, *prep.categorical_levels]
    if prep.series_id_column:
        required.append(prep.series_id_column)
    missing = [c for c in required if c not in history.columns]
    if missing:
        raise DataQualityError(f"history is missing column(s) {missing}; expected {required}, found {list(history.columns)}")
    if history.empty:
        raise DataQualityError(f"history is empty: expected at least lookback={prep.lookback} rows of columns {required}")
    try:
        ds = pd.to_datetime(history[prep.timestamp_column])
        numeric = {c: pd.to_numeric(history[c]).astype("float64") for c in (prep.target_column, *prep.covariates)}
    except (ValueError, TypeError) as exc:
        raise DataQualityError(f"history has a value that does not parse: {exc}") from exc
    _check_finite(numeric, ds)
    long = pd.DataFrame({
        schema.UNIQUE_ID: history[prep.series_id_column].astype(str).to_numpy() if prep.series_id_column else schema.DEFAULT_SERIES_ID,
        schema.DS: ds.to_numpy(), schema.Y: numeric[prep.target_column].to_numpy(),
        **{c: numeric[c].to_numpy() for c in prep.covariates},
        **{c: history[c].to_numpy() for c in prep.categorical_levels},
    })  # fmt: skip
    parts = []
    for uid, part in long.groupby(schema.UNIQUE_ID, sort=True):
        part = part.sort_values(schema.DS)
        if part[schema.DS].duplicated().any():
            raise DataQualityError(f"series {uid!r}: duplicate timestamps in history, e.g. {part[schema.DS][part[schema.DS].duplicated()].iloc[0]}")
        grid = pd.date_range(part[schema.DS].iat[0], part[schema.DS].iat[-1], freq=prep.freq, name=schema.DS)
        off = part[schema.DS][~part[schema.DS].isin(grid)]
        if len(off):
            raise DataQualityError(f"series {uid!r}: timestamp {off.iat[0]} is not on the {prep.freq!r} grid")
        part = part.set_index(schema.DS).reindex(grid).reset_index()
        part[schema.UNIQUE_ID] = uid
        parts.append(part)
    return parts


def _check_finite(numeric: dict[str, pd.Series], ds: pd.Series) -> None:
    """``inf`` / ``-inf`` (or a number beyond float64) is never a valid history value; ``NaN`` is a gap."""
    for col, values in numeric.items():
        bad = np.flatnonzero(np.isinf(values.to_numpy()))
        if len(bad):
            stamps = ds.iloc[bad[:5]].astype(str).tolist()
            raise DataQualityError(f"history column {col!r} has {len(bad)} infinite value(s) at {stamps}; expected finite numbers (leave a gap empty instead)")


#: a scaled input beyond this many scaler units (standard deviations, ranges or IQRs) is
#: "far outside the training range" and makes the forecast carry a warning
OUT_OF_RANGE_SCALED = 20.0


def range_warnings(x: np.ndarray, prep: Preprocessor, ids: list[str]) -> list[str]:
    """Warnings for inputs far outside what the scaler saw in training.

    Args:
        x: ``(n_series, lookback, n_features)`` scaled inputs, as :func:`model_inputs` returns.

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
    return out


def model_inputs(history: pd.DataFrame, prep: Preprocessor) -> tuple[np.ndarray, list[str], list[pd.Timestamp]]:
    """Raw history -> ``X (n_series, lookback, n_features)`` float32, series ids, last timestamps.

    Raises:
        DataQualityError: fewer than ``lookback`` rows, or a gap longer than ``max_gap`` or
            an unseen categorical level inside the last ``lookback`` steps.
    """
    xs, ids, last = [], [], []
    for part in history_to_long(history, prep):
        uid = part[schema.UNIQUE_ID].iat[0]
        if len(part) < prep.lookback:
            raise DataQualityError(f"series {uid!r}: history has {len(part)} steps, at least lookback={prep.lookback} are needed")
        filled = fill_short_gaps(part, [schema.Y, *prep.covariates], list(prep.categorical_levels), prep.max_gap)
        x = design_matrix(filled, prep, where=f"history of series {uid!r}")[-prep.lookback :]
        bad = np.flatnonzero(~np.isfinite(x).all(axis=1))
        if len(bad):
            stamps = part[schema.DS].iloc[len(part) - prep.lookback + bad[:5]].astype(str).tolist()
            raise DataQualityError(
                f"series {uid!r}: the last {prep.lookback} steps have missing values that cannot be filled "
                f"(gaps longer than max_gap={prep.max_gap} or at the edge), at {stamps}"
            )
        xs.append(x)
        ids.append(uid)
        last.append(part[schema.DS].iat[-1])
    return np.stack(xs), ids, last


def forecast_frame(prep: Preprocessor, y_hat: np.ndarray, ids: list[str], last: list[pd.Timestamp]) -> pd.DataFrame:
    """``y_hat (n_series, horizon)`` original units -> long ``[unique_id,] ds, step, y_hat`` frame."""
    offset = pd.tseries.frequencies.to_offset(prep.freq)
    rows = [
        {schema.UNIQUE_ID: uid, schema.DS: last_ds + step * offset, "step": step, "y_hat": float(y_hat[i, step - 1])}
        for i, (uid, last_ds) in enumerate(zip(ids, last, strict=True))
        for step in range(1, prep.horizon + 1)
    ]
    frame = pd.DataFrame(rows)
    return frame if prep.series_id_column else frame.drop(columns=[schema.UNIQUE_ID])


class ForecastModel(PythonModel):
    """MLflow pyfunc: raw history DataFrame -> ``ds, step, y_hat`` forecasts (original units).

    Artifacts: ``preprocessing`` (JSON written by the features stage) and ``weights``
    (``model.pt`` written by the training stage).
    """

    def load_context(self, context) -> None:
        import json

        from pipeline.training import load_members

        with open(context.artifacts["preprocessing"]) as fh:
            self.prep = Preprocessor.from_dict(json.load(fh))
        self.members = load_members(context.artifacts["weights"], "cpu")

    def predict(self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        import torch

        x, ids, last = model_inputs(pd.DataFrame(model_input), self.prep)
        with torch.no_grad():
            scaled = np.mean([m(torch.from_numpy(x)).numpy() for m in self.members], axis=0)
        frame = forecast_frame(self.prep, self.prep.inverse_target(scaled), ids, last)
        warnings = range_warnings(x, self.prep, ids)
        if warnings:  # the result says so too: a ``warning`` column appears only then
            log.warning("forecast inputs out of the training range: %s", "; ".join(warnings))
            frame["warning"] = "; ".join(warnings)
        return frame
