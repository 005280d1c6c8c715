"""The test origins every model is scored on: chosen once, passed to every forecaster.

The training stage (LSTM) and the baselines stage both call :func:`select_origins` with the
same windows and ``evaluation`` settings, so the comparison scores every model on the same windows.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from pipeline.core.cadence import step_duration
from pipeline.core.config import EvaluationConfig


def select_origins(origins: np.ndarray, ec: EvaluationConfig, freq: str) -> tuple[np.ndarray, int]:
    """Indices of the windows every model is scored on, and the step between them.

    The step is ``evaluation.origin_step``, by default the smallest that leaves at most
    ``max_origins`` windows. With a step ``s > 1`` the scored windows are those whose origin lies
    on one time grid: ``n % s == phase``, ``n`` the steps of ``freq`` since the epoch and
    ``phase`` the earliest origin's (:func:`on_grid`, the grid the
    monitoring check's CUSUM reads). So every series is scored at the same times, whatever its
    length or gaps, and one series without gaps gets every ``s``-th window from its first. A
    calendar ``freq`` (``MS``, ``W-SAT``, ``B``: steps of unequal length, :func:`fixed_length`) takes
    every ``s``-th window in the stacked order instead.

    Args:
        origins: ``(n_windows,)`` datetime64, each window's origin (its last input time), stacked
            over series in :class:`~pipeline.features.windowing.FeatureSet` order.
        ec: the ``evaluation`` settings. freq: ``data.freq``.

    Returns:
        ``(index (k,) int64 ascending, step)``.
    """
    n = len(origins)
    step = ec.origin_step or max(1, math.ceil(n / ec.max_origins))
    if step == 1 or n == 0:
        return np.arange(n, dtype=np.int64), step
    if not fixed_length(freq):
        return np.arange(0, n, step, dtype=np.int64), step
    times, duration = pd.DatetimeIndex(origins), step_duration(freq)
    return np.flatnonzero(on_grid(times, duration, step, grid_phase(times.min(), duration, step))).astype(np.int64), step


def on_grid(origins: pd.DatetimeIndex, step: pd.Timedelta, origin_step: int, phase: int = 0) -> np.ndarray:
    """Mask of the origins on a detector's grid: ``n % origin_step == phase``, ``n`` the steps of ``step`` since the epoch.

    The scored test windows lie on one such grid (:func:`select_origins`), the CUSUM calibration keeps its sample on
    it (:func:`pipeline.evaluation.cusum.calibrate_from_run`), and the live check reads the same one
    (:mod:`pipeline.loop.detectors`), whatever the data's start or the windows' numbering.
    """
    if origin_step <= 1:
        return np.ones(len(origins), dtype=bool)
    n = ((pd.DatetimeIndex(origins) - pd.Timestamp(0)) // step).to_numpy()
    return n % origin_step == phase


def grid_phase(origin, step: pd.Timedelta, origin_step: int) -> int:
    """The phase of ``origin`` on the grid of :func:`on_grid`: its steps of ``step`` since the epoch, modulo ``origin_step``."""
    return int(((pd.Timestamp(origin) - pd.Timestamp(0)) // step) % origin_step) if origin_step > 1 else 0


def fixed_length(freq: str) -> bool:
    """Whether every step of ``freq`` lasts the same (``h``, ``30min``, ``D``; not ``MS``, ``W-SAT``, ``B``).

    ``pandas.Timedelta`` of the offset, not ``isinstance(Tick)``: since pandas 3 ``Day`` is not a ``Tick``.
    """
    try:
        pd.Timedelta(pd.tseries.frequencies.to_offset(freq))
    except (ValueError, TypeError):
        return False
    return True


def recent_windows(origins: np.ndarray, n_steps: int, freq: str, limit: int | None = None) -> np.ndarray:
    """Indices of the windows of every series whose origin lies in the last ``n_steps`` steps of ``freq``.

    The CUSUM calibration's top-up for a short test part (:func:`pipeline.evaluation.cusum.calibrate_from_run`):
    every window, so its grid filter can keep the test's phase; by time, not by position in the stacked list,
    so several series all contribute (the stacked list's tail is the last series alone).

    Args:
        origins: ``(n_windows,)`` datetime64 as for :func:`select_origins`. n_steps: how far back from the
            latest origin. freq: ``data.freq`` (a calendar ``freq`` counts its first step of 2001).
        limit: at most this many windows, the latest by origin (many series: each gets fewer steps).

    Returns:
        ``(k,)`` int64 ascending; empty for no windows or ``n_steps <= 0``.
    """
    if len(origins) == 0 or n_steps <= 0:
        return np.empty(0, dtype=np.int64)
    times = pd.DatetimeIndex(origins)
    index = np.flatnonzero(times > times.max() - n_steps * step_duration(freq)).astype(np.int64)
    if limit is not None and len(index) > limit:
        latest = np.argsort(times[index].to_numpy(), kind="stable")[len(index) - limit :]
        index = np.sort(index[latest])
    return index


def index_step(index: np.ndarray) -> int:
    """The step of a :func:`select_origins` index read off the index: its most common difference
    (1 for fewer than two). Only for runs that did not record their step (``forecasts.npz`` before
    ``test_step`` / ``train_step``): windows missing inside a series shorten a difference, and
    a recurring gap (an hour missing every day) can make the shortened one the commonest.
    """
    index = np.asarray(index, dtype=np.int64)
    if len(index) < 2:
        return 1
    return int(np.bincount(np.diff(index)).argmax())
