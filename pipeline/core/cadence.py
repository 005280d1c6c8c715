"""Monitoring and canary defaults derived from ``data.freq`` and ``features.horizon``.

The counts that used to be fixed numbers tuned for hourly data (24 minimum origins, 72 / 336 /
72 canary origins) and the durations (a 7-day window, a 3-day cooldown, 2 days of staleness)
are derived here when a config leaves them unset, so a daily and a 10-minute series work with
the defaults; for hourly data with ``h <= 24`` every derived value equals the old default.
With ``step`` one step of ``data.freq`` and ``h`` the horizon:

===========================  ===============================================  hourly, h=24  daily, h=7  10-min, h=36
key                          default                                          ...
===========================  ===============================================  ============  ==========  ============
monitoring.min_origins       max(one day of steps, h, 14)                     24            14          144
monitoring.window            max(7 days, (min_origins + h) steps)             7D            21D         7D
monitoring.cooldown          max(3 days, h steps)                             3D            7D          3D
monitoring.max_staleness     max(2 days, 2 steps)                             2D            2D          2D
canary.min_origins           max(3 days of steps, 2h + 1)                     72            15          432
canary.max_origins           max(14 days of steps, 4 x canary.min_origins)    336           60          2016
canary.rollback_origins      canary.min_origins' default                      72            15          432
===========================  ===============================================  ============  ==========  ============

``2h + 1``: the Diebold-Mariano test of the canary needs more than ``2h`` paired origins
(:func:`pipeline.loop.canary.dm_test`). :func:`unmonitorable` names what makes a config
impossible to monitor (a window too short to hold ``min_origins`` fully observed origins, a
staleness limit shorter than one step, a canary that can never decide).
"""

from __future__ import annotations

import math

import pandas as pd

_DAY = pd.Timedelta("1D")


def step_duration(freq: str) -> pd.Timedelta:
    """One step of ``freq``; for a calendar frequency (``MS``, ``W-SAT``) the first step of 2001 (e.g. 31 days, 7 days)."""
    offset = pd.tseries.frequencies.to_offset(freq)
    try:
        return pd.Timedelta(offset)
    except ValueError:
        first, second = pd.date_range("2001-01-01", periods=2, freq=offset)
        return second - first


def format_duration(value: pd.Timedelta) -> str:
    """A duration in the largest whole unit of ``D``, ``h``, ``min``, ``s`` (``"21D"``, ``"90min"``)."""
    for unit, size in (("D", _DAY), ("h", pd.Timedelta("1h")), ("min", pd.Timedelta("1min"))):
        if value % size == pd.Timedelta(0):
            return f"{value // size}{unit}"
    return f"{math.ceil(value.total_seconds())}s"


def derived_defaults(freq: str, horizon: int, min_origins: int | None = None, canary_min: int | None = None) -> dict[str, dict]:
    """The derived values of the table above: ``{"monitoring": {...}, "canary": {...}}``.

    ``min_origins`` / ``canary_min``: the configured values when set (the window and
    ``max_origins`` are derived from them).
    """
    step = step_duration(freq)
    per_day = max(1, _DAY // step)
    mon_min = min_origins or max(per_day, horizon, 14)
    can_min = max(3 * per_day, 2 * horizon + 1)
    return {
        "monitoring": {
            "min_origins": mon_min,
            "window": format_duration(max(pd.Timedelta("7D"), (mon_min + horizon) * step)),
            "cooldown": format_duration(max(pd.Timedelta("3D"), horizon * step)),
            "max_staleness": format_duration(max(pd.Timedelta("2D"), 2 * step)),
        },
        "canary": {"min_origins": can_min, "max_origins": max(14 * per_day, 4 * (canary_min or can_min)), "rollback_origins": can_min},
    }


def unmonitorable(freq: str, horizon: int, monitoring, canary) -> list[str]:
    """Why a resolved config cannot be monitored, one located message per problem (empty: it can).

    ``monitoring`` / ``canary``: the resolved :class:`~pipeline.core.config.MonitoringConfig` and
    :class:`~pipeline.core.config.CanaryConfig` (no ``None`` left).
    """
    step, out = step_duration(freq), []
    window = pd.Timedelta(monitoring.window)
    complete = int(window // step) - horizon
    if complete < monitoring.min_origins:
        need = format_duration((monitoring.min_origins + horizon) * step)
        out.append(
            f"monitoring.window: {monitoring.window!r} holds {int(window // step)} origins of data.freq {freq!r}, of which at most "
            f"{max(complete, 0)} have all features.horizon = {horizon} targets observed; monitoring.min_origins = {monitoring.min_origins} "
            f"are needed. Set monitoring.window >= {need!r} (min_origins + horizon steps) or lower monitoring.min_origins"
        )
    if pd.Timedelta(monitoring.max_staleness) < step:
        out.append(f"monitoring.max_staleness: {monitoring.max_staleness!r} is shorter than one step of data.freq {freq!r}: every check would be stale_data")
    if canary.max_origins <= 2 * horizon:
        out.append(
            f"canary.max_origins: {canary.max_origins} paired origins can never decide: the Diebold-Mariano test needs more than "
            f"2 x features.horizon = {2 * horizon}; set it above {2 * horizon}"
        )
    return out
