"""Window building: strided views (pipeline.features.windowing) vs the tutorial's Python loop.

Series: 1,000,000 steps, one feature, float32; lookback 64, horizon 1.
Loop (from "Multivariate Time Series Forecasting with LSTMs in Keras"-style tutorials):
``for i in range(len(data) - w): X.append(data[i:i+w])`` followed by ``np.array(X)``.
Ours: ``origin_starts`` (cumulative sums, no loop: the pipeline's own window search) + the
horizon's reach + ``Windows`` (a strided view and an int64 vector of starts). Peak memory is measured with ``tracemalloc`` (NumPy
reports its allocations to it). Run: ``python benchmarks/bench_features.py``.
"""

from __future__ import annotations

import json
import platform
import time
import tracemalloc

import numpy as np

from pipeline.features.windowing import Windows, origin_starts

N, LOOKBACK, HORIZON = 1_000_000, 64, 1


def _measure(fn):
    tracemalloc.start()
    t0 = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return out, seconds, peak


def loop_windows(data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    X, y = [], []
    for i in range(len(data) - LOOKBACK - HORIZON + 1):
        X.append(data[i : i + LOOKBACK])
        y.append(data[i + LOOKBACK : i + LOOKBACK + HORIZON, 0])
    return np.array(X), np.array(y)


def view_windows(data: np.ndarray) -> Windows:
    ok = np.isfinite(data).all(axis=1)
    starts = origin_starts(ok, ok, LOOKBACK)
    starts = starts[starts + LOOKBACK + HORIZON <= len(data)]  # targets inside the series (all observed here)
    return Windows(data, data[:, 0], starts, LOOKBACK, HORIZON)


def main() -> dict:
    rng = np.random.default_rng(0)
    data = rng.normal(size=(N, 1)).astype(np.float32)
    series_bytes = data.nbytes
    (Xl, yl), t_loop, peak_loop = _measure(lambda: loop_windows(data))
    w, t_view, peak_view = _measure(lambda: view_windows(data))
    Xb, yb = w.batch(np.arange(len(w) - 5, len(w)))
    assert np.array_equal(Xb, Xl[-5:]) and np.array_equal(yb, yl[-5:]), "views and loop disagree"
    result = {
        "series_steps": N, "lookback": LOOKBACK, "series_MB": series_bytes / 1e6,
        "loop_s": round(t_loop, 3), "loop_peak_MB": round(peak_loop / 1e6, 1),
        "view_s": round(t_view, 4), "view_peak_MB": round(peak_view / 1e6, 1),
        "speedup": round(t_loop / t_view, 1), "view_peak_over_series": round(peak_view / series_bytes, 2),
        "view_retained_MB": round(w.starts.nbytes / 1e6, 1), "view_retained_over_series": round(w.starts.nbytes / series_bytes, 2),
        "machine": f"{platform.machine()} {platform.processor() or ''} python {platform.python_version()}".strip(),
    }  # fmt: skip
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
