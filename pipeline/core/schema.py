"""The one long-format frame schema used by every stage.

Following Nixtla's statsforecast / neuralforecast convention, every frame that
flows between stages has the columns ``unique_id`` (series key, str), ``ds``
(timestamp, ``datetime64[ns]``) and ``y`` (target, float64), plus optional
covariate columns. Forecast frames add one column per model alias.
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
