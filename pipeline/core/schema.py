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
