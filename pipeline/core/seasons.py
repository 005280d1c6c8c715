"""Season lengths of a frequency: the one place a season is derived from ``data.freq``.

Every consumer (the baselines, MASE, the monitoring check's seasonal naive forecast) asks
:func:`season_length` for the configured-or-derived season, so a config that sets none still
gets one number everywhere.
"""

from __future__ import annotations

import pandas as pd

_DAY = pd.Timedelta("1D")


def seasons_for_freq(freq: str) -> tuple[int, ...]:
    """Season lengths (steps) of a pandas frequency, shortest first.

    Sub-daily: a day and a week (``h``: 24, 168; ``30min``: 48, 336; ``10min``: 144, 1008);
    ``D``: 7; ``B``: 5; weekly: 52; monthly: 12; quarterly: 4; otherwise 1 (no season).
    """
    offset = pd.tseries.frequencies.to_offset(freq)
    code = offset.rule_code.split("-")[0]
    if code == "B":
        return (5,)
    if code.startswith("W"):
        return (52,)
    if code in ("M", "MS", "ME", "BM", "BMS", "BME", "SM", "SMS", "SME"):
        return (12,)
    if code.startswith("Q") or code.startswith("BQ"):
        return (4,)
    try:
        step = pd.Timedelta(offset)
    except ValueError:
        return (1,)
    if step < _DAY and _DAY % step == pd.Timedelta(0):
        per_day = int(_DAY // step)
        return (per_day, 7 * per_day)
    if step == _DAY:
        return (7,)
    return (1,)


def steps_per_year(freq: str) -> int | None:
    """Steps in one year (365.25 days) of ``freq``: ``h`` 8766, ``D`` 365, ``B`` 261, weekly 52,
    monthly 12, quarterly 4, yearly 1; ``None`` when a step is not a fixed length or a calendar
    period of those kinds."""
    offset = pd.tseries.frequencies.to_offset(freq)
    code = offset.rule_code.split("-")[0]
    per_code = {"B": 261, "W": 52, "M": 12, "Q": 4, "A": 1, "Y": 1}
    for prefix in ("BQ", "BM", "BA", "BY", "SM"):
        if code.startswith(prefix):
            return {"BQ": 4, "BM": 12, "BA": 1, "BY": 1, "SM": 24}[prefix] // max(offset.n, 1)
    if code[:1] in per_code and code not in ("min", "ms"):
        return max(per_code[code[:1]] // max(offset.n, 1), 1)
    try:
        step = pd.Timedelta(offset)
    except ValueError:
        return None
    return int(round(pd.Timedelta("365.25D") / step)) if step > pd.Timedelta(0) else None


def steps_per_day(freq: str) -> int:
    """Steps in one day of ``freq`` (1 when a step is a day or longer or not fixed)."""
    try:
        step = pd.Timedelta(pd.tseries.frequencies.to_offset(freq))
    except ValueError:
        return 1
    return max(1, int(pd.Timedelta("1D") // step))


def steps_per_week(freq: str) -> int:
    """Steps in one week of ``freq`` (1 when a step is a week or longer or not fixed)."""
    try:
        step = pd.Timedelta(pd.tseries.frequencies.to_offset(freq))
    except ValueError:
        return 1
    return max(1, int(pd.Timedelta("7D") // step))


def season_length(cfg) -> int:
    """``baselines.season_length`` of a :class:`pipeline.core.config.PipelineConfig`, or the
    shortest season of ``data.freq`` (:func:`seasons_for_freq`) when unset; in steps."""
    return cfg.baselines.season_length or seasons_for_freq(cfg.data.freq)[0]


def seasonal_lag_seasons(cfg) -> tuple[int, ...]:
    """The seasons whose lags a :class:`pipeline.core.config.PipelineConfig` asks for, before the data is seen.

    ``features.seasonal_lags`` when set (``()`` for none); otherwise (``None``) each season ``s`` of
    :func:`seasons_for_freq` that reaches past the window and can be read leak-free: ``s + w > lookback``
    (some lag lies before the window's first row), ``s - w >= horizon`` and ``lookback >= horizon``,
    with ``w = features.seasonal_lag_window``. With ``w = 1``: hourly data, lookback 168, horizon 24:
    ``(168,)`` (24 lies inside the window); lookback 24, horizon 4: ``(24, 168)``; half-hourly, lookback 336,
    horizon 48: ``(336,)``; daily, lookback 56: ``()``. :func:`pipeline.features.windowing.resolve_seasonal_lags`
    may still drop a derived season that costs a short series too many training windows.
    """
    f = cfg.features
    if f.seasonal_lags is not None:
        return tuple(f.seasonal_lags)
    return seasons_past_window(cfg.data.freq, f.lookback, f.horizon, f.seasonal_lag_window)


def seasons_past_window(freq: str, lookback: int, horizon: int, window: int) -> tuple[int, ...]:
    """The seasons of ``freq`` whose lags (``+- window``) reach before a window of ``lookback`` steps and
    lie at or before the forecast origin for every one of ``horizon`` steps (see :func:`seasonal_lag_seasons`)."""
    return tuple(s for s in seasons_for_freq(freq) if s > 1 and s + window > lookback and s - window >= horizon and lookback >= horizon)


def seasonal_lag_reach(cfg) -> int:
    """Steps of history before a window's first row that the seasonal lags of ``cfg`` may read (0 without lags).

    A window's lag columns read back to ``max(season) + w - horizon`` steps before its first row
    (:class:`pipeline.features.windowing.Preprocessor`), so a forecast needs ``lookback`` plus this many rows.
    """
    seasons = seasonal_lag_seasons(cfg)
    return max(seasons) + cfg.features.seasonal_lag_window - cfg.features.horizon if seasons else 0
