"""The test origins every model is scored on: chosen once, passed to every forecaster.

The training stage (LSTM) and the baselines stage both call :func:`select_origins` with the
same ``evaluation`` settings, so the comparison scores every model on the same windows.
"""

from __future__ import annotations

import math

import numpy as np

from pipeline.core.config import EvaluationConfig


def select_origins(n_windows: int, ec: EvaluationConfig) -> tuple[np.ndarray, int]:
    """Indices of the test windows every model is scored on, and the step between them.

    ``(index (k,) int64 ascending, step)``: every ``origin_step``-th window from the first;
    by default the smallest step that leaves at most ``max_origins`` windows.
    """
    step = ec.origin_step or max(1, math.ceil(n_windows / ec.max_origins))
    return np.arange(0, n_windows, step, dtype=np.int64), step
