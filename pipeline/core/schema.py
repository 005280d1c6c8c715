"""The one long-format frame schema used by every stage.

Following Nixtla's statsforecast / neuralforecast convention, every frame that
flows between stages has the columns ``unique_id`` (series key, str), ``ds``
(timestamp, ``datetime64[ns]``) and ``y`` (target, float64), plus optional
covariate columns. Forecast frames add one column per model alias; a served or stored
forecast names its point forecast ``yhat`` (Prophet's and neuralforecast's served name), with
its interval columns ``yhat_lo_<level>`` / ``yhat_hi_<level>`` beside it.
"""

from __future__ import annotations

UNIQUE_ID = "unique_id"
DS = "ds"
Y = "y"
#: default ``unique_id`` when the data has no series-id column
DEFAULT_SERIES_ID = "series_0"

#: Model aliases used as forecast column names and in comparison tables.
LSTM = "LSTM"
NAIVE = "Naive"
SEASONAL_NAIVE = "SeasonalNaive"
AUTO_ETS = "AutoETS"
AUTO_ARIMA = "AutoARIMA"

#: the point forecast's column in the pyfunc's output, ``lstm-pipeline forecast``, the service and the store
YHAT = "yhat"
#: its name in versions registered before 2026-12-06 (they ship their own pyfunc code and still say it)
LEGACY_YHAT = "y_hat"

#: prefixes of a forecast's prediction-interval columns: ``yhat_lo_<level>``, ``yhat_hi_<level>``
#: (``level`` in percent; the pyfunc, ``lstm-pipeline forecast`` and the forecast store share them)
INTERVAL_LO, INTERVAL_HI = "yhat_lo_", "yhat_hi_"


def level_label(level: float | str) -> str:
    """``80`` / ``80.0`` / ``"80"`` -> ``"80"``, ``97.5`` -> ``"97.5"``: the suffix of a level's interval columns."""
    return f"{float(level):g}"


def interval_columns(level: float | str) -> tuple[str, str]:
    """A level's interval column names: ``interval_columns(80) == ("yhat_lo_80", "yhat_hi_80")``."""
    label = level_label(level)
    return INTERVAL_LO + label, INTERVAL_HI + label


def with_yhat(forecast):
    """A pyfunc's forecast frame with its point forecast named :data:`YHAT`.

    A version registered before the rename returns :data:`LEGACY_YHAT`; this renames that
    column (same values, same position) and returns any other frame unchanged, so callers read
    ``yhat`` from versions of either age.

    Args:
        forecast: ``pandas.DataFrame`` as ``PythonModel.predict`` returned it.

    Returns:
        the same frame, or a renamed copy.
    """
    if LEGACY_YHAT in forecast.columns and YHAT not in forecast.columns:
        return forecast.rename(columns={LEGACY_YHAT: YHAT})
    return forecast
