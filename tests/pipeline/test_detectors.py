"""The calibrated CUSUM (pipeline/evaluation/cusum.py) and its state in the check (pipeline/loop/detectors.py)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from pipeline.core.errors import DataQualityError, MonitoringError
from pipeline.evaluation.cusum import (
    FAST_PREFIX,
    CusumDetector,
    block_bootstrap,
    calibrate,
    count_signals,
    cusum_path,
    long_run_variance,
    reference_forecasts,
    relative_differential,
)
from pipeline.loop.detectors import cusum_update, detector_of, fast_limb_of, on_grid, origin_losses, previous_state

H = 4  # forecast horizon of the simulated differentials


def _ma(n: int, rng: np.random.Generator, shift: float = 0.0) -> np.ndarray:
    """An MA(H-1) series (the mean of H consecutive N(0,1) draws): the correlation of overlapping H-step errors."""
    return np.convolve(rng.normal(size=n + H - 1), np.ones(H), "valid") / H + shift


def _measured_arl(detector: CusumDetector, stream: np.ndarray) -> float:
    signals, used = count_signals(detector.standardise(stream) - detector.k, detector.h, 10**9, 4096)
    return used / signals


def _siegmund_h(arl0: float, k: float = 0.5) -> float:
    """Decision interval of a one-sided CUSUM of iid N(0, 1) with ARL0 ``arl0`` (Siegmund's approximation, solved by bisection)."""
    lo, hi = 0.0, 20.0
    for _ in range(60):
        h = (lo + hi) / 2
        b = h + 1.166
        arl = (math.exp(2 * k * b) - 2 * k * b - 1) / (2 * k * k)
        lo, hi = (h, hi) if arl < arl0 else (lo, h)
    return hi


def test_long_run_variance_is_the_bartlett_weighted_sum_of_autocovariances():
    x = np.array([1.0, 3.0, 2.0, 5.0, 4.0, 6.0])
    e = x - x.mean()
    gamma = [float(e[j:] @ e[: len(e) - j]) / len(e) for j in range(3)]
    assert long_run_variance(x, 0) == pytest.approx(np.var(x))
    assert long_run_variance(x, 2) == pytest.approx(gamma[0] + 2 * (2 / 3 * gamma[1] + 1 / 3 * gamma[2]))
    with pytest.raises(DataQualityError, match="at least 4 finite values, found 3"):
        long_run_variance(x[:3], 2)


def test_cusum_path_matches_pages_recursion_from_any_start():
    z = np.random.default_rng(0).normal(size=500)
    for start in (0.0, 3.0):
        s, expected = start, []
        for v in z:
            s = max(0.0, s + v - 0.5)
            expected.append(s)
        np.testing.assert_allclose(cusum_path(z, 0.5, start), expected, atol=1e-9)


def test_block_bootstrap_keeps_whole_blocks():
    x = np.arange(100.0)
    stream = block_bootstrap(x, 1000, 10, np.random.default_rng(0))
    steps = np.diff(stream).reshape(-1)[np.arange(999) % 10 != 9]  # inside a block: consecutive (mod 100)
    assert set(np.mod(steps, 100)) == {1.0}


def test_calibration_of_iid_normal_data_gives_the_textbook_decision_interval():
    """k = 0.5, ARL0 500 on N(0, 1): Siegmund's approximation gives h = 4.39; the bootstrap must agree."""
    d = calibrate(np.random.default_rng(1).normal(size=20000), 500, lags=0, block=1, seed=1)
    assert d.k == 0.5 and d.h == pytest.approx(_siegmund_h(500), abs=0.25)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_calibration_reproduces_the_target_arl0_on_a_fresh_in_control_stream(seed):
    """Calibrated on 3000 MA(3) differentials (lags h-1, blocks >= h) for ARL0 500 origins.

    Tolerance: the measured ARL0 on 2 million fresh origins lies within a factor 2 of the target.
    The spread comes from the calibration sample: 3000 values fix the long-run variance to
    about 5%, and the ARL is exponential in the decision interval over that variance (seeds
    0-4 measured 301-935, docs/BENCHMARKS.md). Ignoring the overlap (lags 0, block 1) gives an
    ARL0 of about 30: this test fails then.
    """
    d = calibrate(_ma(3000, np.random.default_rng(seed)), 500, lags=H - 1, block=max(H, 15), seed=seed)
    assert abs(d.arl0_bootstrap / 500 - 1) < 0.1  # the bisection hit the target on the bootstrap stream
    measured = _measured_arl(d, _ma(2_000_000, np.random.default_rng(100 + seed)))
    assert 250 <= measured <= 1000, measured


def test_ignoring_the_overlap_makes_far_more_false_alarms():
    calibration = _ma(3000, np.random.default_rng(0))
    naive = calibrate(calibration, 500, lags=0, block=1, seed=0)
    assert _measured_arl(naive, _ma(500_000, np.random.default_rng(100))) < 150


def test_a_known_mean_shift_is_detected_within_the_theoretical_delay():
    """A shift of one long-run sd (twice k): Siegmund's ARL1 for h ~ 4.4 is about 9 origins."""
    d = calibrate(_ma(3000, np.random.default_rng(0)), 500, lags=H - 1, block=15, seed=0)
    delays = []
    for r in range(200):
        path = cusum_path(d.standardise(_ma(300, np.random.default_rng(1000 + r), shift=d.sd)), d.k)
        hit = np.flatnonzero(path > d.h)
        delays.append(hit[0] + 1 if hit.size else math.inf)
    assert max(delays) < 100 and np.mean(delays) < 15, (np.mean(delays), max(delays))
    in_control = [np.flatnonzero(cusum_path(d.standardise(_ma(300, np.random.default_rng(5000 + r))), d.k) > d.h).size > 0 for r in range(200)]
    assert np.mean(in_control) < 0.8  # without the shift most 300-origin stretches never signal (ARL0 500)


def _ma_t3(n: int, rng: np.random.Generator) -> np.ndarray:
    """MA(H-1) of Student-t(3) draws scaled to unit variance: overlap plus the heavy tails of squared-error differentials."""
    return np.convolve(rng.standard_t(3, size=n + H - 1) / math.sqrt(3), np.ones(H), "valid") / H


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_guaranteed_interval_holds_the_target_arl0_on_heavy_tailed_data(seed):
    """The defaults (clip 2 MADs, k 0.25, guarantee 0.9) on 3000 heavy-tailed MA(3) values, ARL0 500.

    Tolerance: the measured ARL0 on 2 million fresh origins is at least 0.7 x the target (the
    guarantee is "at least the target with probability about 0.9"; benchmarks measured 0.89 - 2.4 x
    over five seeds of this process). The guaranteed interval is above the plain one, whose ARL0
    on such data is anywhere from about 0.3 x the target. Without the guarantee (h = the plain
    interval) seed 0 measures below 0.7 x: this test fails then.
    """
    sample = _ma_t3(3000, np.random.default_rng(seed))
    d = calibrate(sample, 500, lags=H - 1, block=4 * H, shift=0.5, clip=2.0, guarantee=0.9, seed=seed)
    plain = calibrate(sample, 500, lags=H - 1, block=4 * H, shift=0.5, clip=2.0, seed=seed)
    assert d.h > plain.h and d.replicates == 20 and d.guarantee == 0.9 and plain.replicates == 0
    assert d.arl0_bootstrap >= 500  # above the target on the estimated process, by construction
    measured = _measured_arl(d, _ma_t3(2_000_000, np.random.default_rng(100 + seed)))
    assert measured >= 0.7 * 500, measured


def test_clipped_scores_bound_what_one_spike_does():
    """One squared-error spike (r = 1e4) signals an unclipped detector at once; clipped, it moves S by at most (c - mean) / sd - k."""
    sample = _ma_t3(3000, np.random.default_rng(7))
    clipped = calibrate(sample, 500, lags=H - 1, block=4 * H, shift=0.5, clip=2.0, seed=7)
    raw = calibrate(sample, 500, lags=H - 1, block=4 * H, shift=0.5, seed=7)
    spike = np.array([0.0, 1e4, 0.0])
    assert cusum_path(raw.standardise(spike), raw.k).max() > raw.h
    bound = (clipped.clip - clipped.mean) / clipped.sd - clipped.k
    assert cusum_path(clipped.standardise(spike), clipped.k).max() <= bound + 1e-9 < clipped.h
    assert clipped.scores(spike)[1] == clipped.clip and clipped.center == pytest.approx(np.median(sample))


def test_a_sustained_shift_is_detected_by_the_robust_defaults():
    """A sustained rise of 1.5 MADs in the differential: detected within the bound the clipped scores allow, every time."""
    sample = _ma(3000, np.random.default_rng(0))
    d = calibrate(sample, 500, lags=H - 1, block=4 * H, shift=0.5, clip=2.0, guarantee=0.9, seed=0)
    delays = []
    for r in range(100):
        path = cusum_path(d.standardise(_ma(400, np.random.default_rng(2000 + r), shift=1.5 * d.scale)), d.k)
        hit = np.flatnonzero(path > d.h)
        delays.append(hit[0] + 1 if hit.size else math.inf)
    fastest = d.h / ((d.clip - d.mean) / d.sd - d.k)
    assert fastest <= min(delays) and max(delays) < 120 and np.median(delays) < 60, (fastest, np.median(delays), max(delays))


def _pair_arl(limbs: list[CusumDetector], stream: np.ndarray, chunk: int = 4096) -> float:
    """In-control ARL of a scheme that signals when any limb does, every limb restarting at 0 after a signal."""
    incs = [d.standardise(stream) - d.k for d in limbs]
    pos, signals, starts = 0, 0, [0.0] * len(limbs)
    while pos < len(stream):
        paths = [np.cumsum(x[pos : pos + chunk]) for x in incs]
        paths = [c - np.minimum(np.minimum.accumulate(c), -s0) for c, s0 in zip(paths, starts, strict=True)]
        hits = [np.flatnonzero(p > d.h) for p, d in zip(paths, limbs, strict=True)]
        first = min((int(h[0]) for h in hits if h.size), default=None)
        if first is None:
            pos, starts = pos + len(paths[0]), [float(p[-1]) for p in paths]
        else:
            signals, pos, starts = signals + 1, pos + first + 1, [0.0] * len(limbs)
    return pos / signals if signals else math.inf


def _slow_and_fast(sample: np.ndarray, arl0: float, seed: int) -> tuple[CusumDetector, CusumDetector]:
    """The robust limb (the defaults: k 0.25, clip 2) and the fast limb as docs/LOOP.md 10.2 sets it (k 1.5, clip 10),
    each at 2 x arl0, guarantee 0.9."""
    slow = calibrate(sample, arl0, lags=H - 1, block=4 * H, shift=0.5, clip=2.0, guarantee=0.9, seed=seed, limbs=2)
    fast = calibrate(sample, arl0, lags=H - 1, block=4 * H, shift=3.0, clip=10.0, guarantee=0.9, seed=seed, limbs=2)
    return slow, fast


@pytest.mark.parametrize("seed", [0, pytest.param(1, marks=pytest.mark.slow)])  # seed 0 is the one limbs=1 fails
def test_two_limbs_share_the_target_arl0(seed):
    """Each limb is calibrated to 2 x arl0 (Bonferroni on rates), so that the pair keeps about arl0.

    On 3000 heavy-tailed MA(3) values, ARL0 500: each limb's bootstrap ARL is at least 1000, its
    interval above the one-limb interval, and the pair's ARL measured on 2 million fresh origins
    is at least 0.7 x 500 (the tolerance of the one-limb guarantee test above; measured 622 and
    767). Calibrating each limb to arl0 itself (``limbs=1``) measured 327 and 380: seed 0 fails then.
    """
    sample = _ma_t3(3000, np.random.default_rng(seed))
    slow, fast = _slow_and_fast(sample, 500, seed)
    alone = calibrate(sample, 500, lags=H - 1, block=4 * H, shift=0.5, clip=2.0, guarantee=0.9, seed=seed)
    assert (slow.limbs, fast.limbs, alone.limbs) == (2, 2, 1) and slow.arl0_origins == fast.arl0_origins == 500
    assert slow.arl0_bootstrap >= 1000 and fast.arl0_bootstrap >= 1000 and slow.h > alone.h
    assert (fast.k, fast.clip) == (1.5, 10.0)
    measured = _pair_arl([slow, fast], _ma_t3(2_000_000, np.random.default_rng(100 + seed)))
    assert measured >= 0.7 * 500, measured


def test_the_fast_limb_sees_a_large_fault_long_before_the_slow_limb_can():
    """A sustained rise of 8 MADs (the error x3 of a forecast as good as its reference gives r = 8):
    the slow limb moves at most ``(clip - mean) / sd - k`` per origin, so it needs at least
    ``h`` over that many origins; the fast limb signals in a fraction of that, every time."""
    slow, fast = _slow_and_fast(_ma(3000, np.random.default_rng(0)), 500, 0)
    fastest_slow = slow.h / ((slow.clip - slow.mean) / slow.sd - slow.k)
    delays = []
    for r in range(100):
        stream = _ma(200, np.random.default_rng(3000 + r), shift=8 * fast.scale)
        hit = np.flatnonzero(cusum_path(fast.standardise(stream), fast.k) > fast.h)
        delays.append(hit[0] + 1 if hit.size else math.inf)
    assert max(delays) < fastest_slow / 2 and max(delays) <= 12, (max(delays), fastest_slow)


@pytest.mark.parametrize("seed", [1])  # seed 0 passes too (measured); one seed keeps test-fast short
def test_the_shipped_default_pair_holds_its_arl0_and_its_fast_limb_sees_a_large_fault(seed):
    """The limbs as ``MonitoringConfig()`` ships them (docs/LOOP.md 10.3: slow shift 0.5 clip 2, fast shift 4 clip 20),
    calibrated on 3000 heavy-tailed MA(3) values for ARL0 500: the fast limb is not refused (k = 2 is reached in
    control), the pair's ARL on 2 million fresh origins is at least 0.7 x 500 (the guarantee tests' tolerance), and a
    sustained rise of 8 MADs is seen by the pair within 6 origins in each of 100 tries, sooner than the slow limb
    alone could at its fastest (its interval over its largest clipped increment)."""
    from pipeline.core.config import MonitoringConfig

    m = MonitoringConfig()
    sample = _ma_t3(3000, np.random.default_rng(seed))
    pair = [calibrate(sample, 500, lags=H - 1, block=4 * H, shift=shift, clip=clip, guarantee=m.cusum_guarantee, seed=seed, limbs=2)
            for shift, clip in ((m.cusum_shift, m.cusum_clip), (m.cusum_fast_shift, m.cusum_fast_clip))]  # fmt: skip
    slow, fast = pair
    assert (fast.k, fast.clip, slow.k, slow.clip) == (m.cusum_fast_shift / 2, m.cusum_fast_clip, m.cusum_shift / 2, m.cusum_clip)
    assert _pair_arl(pair, _ma_t3(2_000_000, np.random.default_rng(100 + seed))) >= 0.7 * 500
    fastest_slow = slow.h / ((slow.clip - slow.mean) / slow.sd - slow.k)
    delays = []
    for r in range(100):
        stream = _ma_t3(200, np.random.default_rng(3000 + r)) + 8 * fast.scale
        hits = [np.flatnonzero(cusum_path(d.standardise(stream), d.k) > d.h) for d in pair]
        delays.append(min((int(h[0]) + 1 for h in hits if h.size), default=math.inf))
    assert max(delays) <= 6 and max(delays) < fastest_slow, (max(delays), fastest_slow)  # measured 5 and 4 against 9.7 and 11.9


def test_calibration_refuses_a_limb_that_never_moves_in_control():
    """A differential bounded above (a champion far better than its reference) and a large k: no
    in-control score exceeds k, so any interval holds any ARL0 and live the first origin above k
    would signal. Refused with the fix, at once (the bisection used to walk h down to 0 for minutes)."""
    sample = -np.abs(_ma(3000, np.random.default_rng(0)))
    with pytest.raises(DataQualityError, match=r"no score of the calibration sample exceeds k = 3 .*Fix: a smaller shift"):
        calibrate(sample, 500, lags=H - 1, block=4 * H, shift=6.0, clip=10.0, guarantee=0.9, seed=0)
    assert calibrate(sample, 500, lags=H - 1, block=4 * H, shift=0.5, clip=2.0, guarantee=0.9, seed=0).h > 0.1  # a small k still moves


def test_calibration_refuses_too_few_or_constant_differentials():
    with pytest.raises(DataQualityError, match="at least 30 loss differentials"):
        calibrate(np.zeros(20), 100, lags=3, block=15)
    with pytest.raises(DataQualityError, match="constant"):
        calibrate(np.ones(100), 100, lags=3, block=4)


def test_tags_round_trip():
    d = calibrate(_ma(400, np.random.default_rng(3)), 200, lags=H - 1, block=8, seed=3, arl0="730D", origin_step=3, sample="test",
                  reference="seasonal_naive", window="7D")  # fmt: skip
    tags = d.to_tags()
    assert all(k.startswith("cusum.") and isinstance(v, str) for k, v in tags.items())
    back = CusumDetector.from_tags({**tags, "other": "x"})
    assert back.origin_step == 3 and back.reference == "seasonal_naive" and back.arl0 == "730D" and back.phase == 0
    assert CusumDetector.from_tags({**tags, "cusum.phase": "2"}).phase == 2  # a version calibrated on another grid phase
    for f in ("mean", "sd", "k", "h", "arl0_origins"):
        assert getattr(back, f) == pytest.approx(getattr(d, f), rel=1e-7)
    assert back.clip == math.inf and back.guarantee == 0.0  # the plain calibration: no transform
    robust = calibrate(_ma(400, np.random.default_rng(3)), 200, lags=H - 1, block=8, seed=3, clip=2.0, guarantee=0.9, arl0="730D")
    again = CusumDetector.from_tags(robust.to_tags())
    assert (again.clip, again.guarantee, again.replicates) == (2.0, 0.9, 20)
    for f in ("center", "scale", "mean", "sd", "h"):
        assert getattr(again, f) == pytest.approx(getattr(robust, f), rel=1e-7)
    r = _ma(50, np.random.default_rng(4))
    np.testing.assert_allclose(again.standardise(r), robust.standardise(r), rtol=1e-6)


def test_tags_of_a_version_registered_before_the_score_transform_read_as_no_transform():
    tags = {k: v for k, v in calibrate(_ma(400, np.random.default_rng(3)), 200, lags=H - 1, block=8, seed=3).to_tags().items()
            if k.split(".", 1)[1] not in ("center", "scale", "clip", "guarantee", "replicates")}  # fmt: skip
    old = CusumDetector.from_tags(tags)
    assert (old.center, old.scale, old.clip, old.guarantee) == (0.0, 1.0, math.inf, 0.0)
    np.testing.assert_allclose(old.standardise([1.0, 2.0]), (np.array([1.0, 2.0]) - old.mean) / old.sd)


def test_the_fast_limb_travels_under_its_own_prefix_and_older_versions_have_none():
    sample = _ma(400, np.random.default_rng(3))
    slow = calibrate(sample, 200, lags=H - 1, block=8, seed=3, shift=0.5, clip=2.0, limbs=2, arl0="730D")
    fast = calibrate(sample, 200, lags=H - 1, block=8, seed=3, shift=2.0, clip=6.0, limbs=2, arl0="730D")
    tags = {**slow.to_tags(), **fast.to_tags(FAST_PREFIX)}
    assert all(k.startswith("cusum.fast.") for k in fast.to_tags(FAST_PREFIX)) and len(tags) == 2 * len(slow.to_tags())
    assert detector_of(tags, "m", 1) == CusumDetector.from_tags(slow.to_tags())  # the slow limb ignores the fast tags
    back = fast_limb_of(tags, "m", 1)
    assert back is not None and (back.k, back.clip, back.limbs) == (1.0, 6.0, 2) and back.h == pytest.approx(fast.h, rel=1e-7)
    assert fast_limb_of(slow.to_tags(), "m", 1) is None  # one limb (cusum_fast_shift: null, or registered before the fast limb)
    assert CusumDetector.from_tags({k: v for k, v in slow.to_tags().items() if k != "cusum.limbs"}).limbs == 1  # older tags: one limb
    with pytest.raises(MonitoringError, match=r"version 1 has malformed fast-limb CUSUM tags \(cusum.fast.\*: missing or malformed 'cusum.fast.h'\)"):
        fast_limb_of({k: v for k, v in tags.items() if k != "cusum.fast.h"}, "m", 1)


def test_a_version_without_a_detector_is_a_clear_monitoring_error():
    with pytest.raises(MonitoringError, match=r"version 4 has no usable CUSUM detector tags .*monitoring.rule: cusum"):
        detector_of({"training_rmse": "1"}, "m", 4)
    with pytest.raises(MonitoringError, match="calibration failed at registration \\(too few\\)"):
        detector_of({"cusum.error": "too few"}, "m", 4)


def test_auto_reference_is_the_stronger_baseline_of_the_versions_test_part():
    from pipeline.evaluation.cusum import REFERENCE_TAG, choose_reference, reference_of_version

    # hourly temperatures: the last value is 19 x worse than one day back; Beijing: the other way round
    assert choose_reference("auto", {"LSTM": 0.077, "Naive": 3.83, "SeasonalNaive": 0.20})[0] == "seasonal_naive"
    ref, reason = choose_reference("auto", {"Naive": 77.7, "SeasonalNaive": 97.6, "AutoARIMA": 77.4})
    assert ref == "naive" and "Naive RMSE 77.7" in reason and "SeasonalNaive RMSE 97.6" in reason
    assert choose_reference("auto", {"Naive": 5.0})[0] == "naive"  # the only one scored
    assert choose_reference("auto", {"SeasonalNaive": 5.0, "Naive": float("nan")})[0] == "seasonal_naive"
    assert choose_reference("auto", {"AutoETS": 1.0})[0] == "naive" and "neither" in choose_reference("auto", {})[1]
    assert choose_reference("seasonal_naive", {"Naive": 1.0, "SeasonalNaive": 9.0})[0] == "seasonal_naive"  # a fixed setting wins
    with pytest.raises(ValueError, match="naive_model"):
        choose_reference("drift", {})
    # the check: the version's tag under auto, the setting otherwise; a version from before the tag: naive
    assert reference_of_version("auto", {REFERENCE_TAG: "seasonal_naive"}) == "seasonal_naive"
    assert reference_of_version("auto", {}) == "naive"
    assert reference_of_version("seasonal_naive", {REFERENCE_TAG: "naive"}) == "seasonal_naive"


def test_reference_forecasts_are_the_naive_and_seasonal_naive_values():
    y, series = np.arange(20.0), np.array([0] * 10 + [1] * 10)
    rows = np.array([5, 12])
    np.testing.assert_array_equal(reference_forecasts(y, series, rows, 3, "naive", 4), [[5, 5, 5], [12, 12, 12]])
    # step j's target is row + j; one season (4) back: row + j - 4
    np.testing.assert_array_equal(reference_forecasts(y, series, rows, 3, "seasonal_naive", 4)[0], [2, 3, 4])
    assert np.isnan(reference_forecasts(y, series, np.array([11]), 1, "seasonal_naive", 4)[0, 0])  # row 8 is another series


def test_relative_differential_divides_by_the_trailing_reference_loss():
    origins = pd.date_range("2024-01-01", periods=4, freq="D")
    r = relative_differential(origins, [2.0, 4.0, 6.0, 8.0], [1.0, 3.0, 5.0, 7.0], "2D")
    np.testing.assert_allclose(r, [1 / 1, 1 / 2, 1 / 4, 1 / 6])  # scale: mean of the reference loss over (t - 2D, t]


# ------------------------------------------------------------------ the state in the check


def _frame(origins, yhat_error: float, naive_error: float = 1.0, horizon: int = 2) -> pd.DataFrame:
    rows = [{"unique_id": "s", "origin": o, "step": k, "y": 10.0, "yhat": 10.0 + yhat_error, "naive": 10.0 + naive_error}
            for o in origins for k in range(1, horizon + 1)]  # fmt: skip
    return pd.DataFrame(rows)


DETECTOR = CusumDetector(mean=0.0, sd=0.5, k=0.5, h=4.0, arl0="730D", arl0_origins=17520.0, arl0_bootstrap=17000.0, origin_step=1,
                         lags=1, block=10, n=3000, sample="test", reference="naive", window="7D")  # fmt: skip
STEP = pd.Timedelta("1h")


def test_origin_losses_keep_only_complete_origins_with_a_reference():
    frame = _frame(pd.date_range("2024-01-01", periods=3, freq="h"), 2.0)
    frame = frame.drop(index=0)  # first origin loses a step
    frame.loc[frame.index[-1], "naive"] = np.nan  # last origin loses its reference
    losses = origin_losses(frame, 2)
    assert list(losses.index) == [pd.Timestamp("2024-01-01 01:00")] and losses.iloc[0].tolist() == [4.0, 1.0]


def test_the_statistic_carries_over_checks_and_resets_when_the_champion_changes():
    origins = pd.date_range("2024-01-01", periods=6, freq="h")
    worse = _frame(origins, 2.0)  # r = (4 - 1) / 1 = 3; z = 6; increments 5.5 per origin
    first = cusum_update(DETECTOR, worse.iloc[:6], 2, STEP, [], 7)
    assert first["n_new"] == 3 and first["statistic"] == pytest.approx(16.5) and first["alarm"]
    previous = [{"champion_version": 7, "cusum": first}]
    second = cusum_update(DETECTOR, worse, 2, STEP, previous, 7)  # only the 3 origins after the first check's last
    assert second["carried"] == pytest.approx(16.5) and second["n_new"] == 3 and second["statistic"] == pytest.approx(33.0)
    again = cusum_update(DETECTOR, worse, 2, STEP, previous, 7)
    assert again == second  # a rerun of the check reads the same earlier rows: the same number
    new_champion = cusum_update(DETECTOR, worse, 2, STEP, [{"champion_version": 7, "cusum": second}], 8)
    assert new_champion["carried"] == 0.0 and new_champion["n_new"] == 6
    assert previous_state([{"champion_version": 7}, {"champion_version": 7, "cusum": first}], 7)[0] == pytest.approx(16.5)
    assert previous_state([{"champion_version": 6, "cusum": first}], 7) == (0.0, None)


def test_an_in_control_champion_does_not_signal():
    same = _frame(pd.date_range("2024-01-01", periods=48, freq="h"), 1.0)  # as good as naive: r = 0
    out = cusum_update(DETECTOR, same, 2, STEP, [], 1)
    assert out["statistic"] == 0.0 and not out["alarm"] and out["n_new"] == 48


def test_the_live_grid_follows_the_calibration_origin_step():
    origins = pd.date_range("2024-01-01", periods=9, freq="h")
    assert on_grid(origins, STEP, 3).sum() == 3 and on_grid(origins, STEP, 1).all()
    assert list(origins[on_grid(origins, STEP, 3, phase=1)].hour) == [1, 4, 7]  # the calibration's own phase


def _run_folder(tmp_path, recent_train_steps: int = 0, train_step: int = 1, recent: bool = False):
    """Features of a 600-row hourly frame and 'training forecasts' (the truth plus noise) as the training stage writes
    them: the test part scored at every window (about 110 < MIN_DIFFERENTIALS), the training part every ``train_step``-th.
    Returns the two folders and the number of test origins."""
    import yaml

    from pipeline.core import artifacts
    from pipeline.core.config import load_config
    from pipeline.data.io import read_raw
    from pipeline.data.validation import validate_frame
    from pipeline.features.windowing import build_features, save_features
    from tests.conftest import tiny_config_dict, tiny_frame

    tmp_path.mkdir(parents=True, exist_ok=True)
    tiny_frame(n=600).to_csv(tmp_path / "in.csv", index=False)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(tiny_config_dict(tmp_path / "in.csv", tmp_path / "art", features={"recent_train_steps": recent_train_steps})))
    cfg = load_config(tmp_path / "c.yaml")
    fs = build_features(validate_frame(read_raw(cfg.data), cfg).frame, cfg)
    save_features(fs, tmp_path / "features")
    rng, n_train = np.random.default_rng(0), len(fs.starts["train"])
    test_index, train_index = np.arange(len(fs.starts["test"])), np.arange(0, n_train, train_step)
    recent_index = np.arange(max(0, n_train - 300), n_train) if recent else np.empty(0, dtype=np.int64)
    noisy = {name: fs.targets(split)[index] + rng.normal(0, 0.3, (len(index), fs.prep.horizon))
             for name, split, index in (("test", "test", test_index), ("train", "train", train_index), ("recent", "train", recent_index))}  # fmt: skip
    (tmp_path / "training").mkdir()
    np.savez(artifacts.TRAINING_FORECASTS.at(tmp_path / "training"), test=noisy["test"], test_index=test_index, train=noisy["train"],
             train_index=train_index, **({"train_recent": noisy["recent"], "train_recent_index": recent_index} if recent else {}))  # fmt: skip
    return tmp_path / "features", tmp_path / "training", len(test_index)


def _from_run(folders):
    from pipeline.evaluation.cusum import calibrate_from_run

    return calibrate_from_run(*folders[:2], "naive", 24, "7D", "30D", "h")


def test_a_short_test_part_is_topped_up_only_from_training_origins_at_its_own_spacing(tmp_path):
    """Training origins scored every 6th window (the in-sample RMSE's step on a long training part) beside a test part
    scored at every window: mixing them would estimate the long-run variance on the wrong spacing (a detector alarming
    about 10 x too often); they are left out. The training stage's recent windows at every step are used instead."""
    spaced = _run_folder(tmp_path / "spaced", train_step=6)
    assert _from_run(spaced).sample == "test" and _from_run(spaced).n == spaced[2]
    same = _run_folder(tmp_path / "same", train_step=1)
    assert _from_run(same).sample == "test+train" and _from_run(same).n > same[2]
    recent = _run_folder(tmp_path / "recent", train_step=6, recent=True)
    assert _from_run(recent).sample == "test+train" and _from_run(recent).n == recent[2] + 300


def test_recent_training_windows_after_the_test_part_calibrate_in_time_order(tmp_path):
    """features.recent_train_steps (a scheduled retrain): training windows after the test part; the sample is put in time
    order instead of failing the registration on a non-monotonic time index."""
    d = _from_run(_run_folder(tmp_path, recent_train_steps=48))
    assert d.sample == "test+train" and d.h > 0


FAST = CusumDetector(mean=0.0, sd=1.0, k=1.0, h=10.0, arl0="730D", arl0_origins=17520.0, arl0_bootstrap=35000.0, origin_step=1, lags=1, block=10,
                     n=3000, sample="test", reference="naive", window="7D", clip=6.0, limbs=2)  # fmt: skip


def test_the_fast_limb_carries_its_own_state_and_either_limb_signals():
    origins = pd.date_range("2024-01-01", periods=8, freq="h")
    worse = _frame(origins, 2.0)  # r = 3: fast z = 3, increments 2 per origin; slow (DETECTOR) increments 5.5
    slow_only = DETECTOR.__class__(**{**DETECTOR.__dict__, "h": 1e6})  # a slow limb that cannot signal here
    first = cusum_update(slow_only, worse.iloc[:8], 2, STEP, [], 7, FAST)
    assert first["fast"]["statistic"] == pytest.approx(8.0) and not first["fast"]["alarm"] and first["limbs"] == [] and not first["alarm"]
    second = cusum_update(slow_only, worse, 2, STEP, [{"champion_version": 7, "cusum": first}], 7, FAST)
    assert second["fast"]["carried"] == pytest.approx(8.0) and second["fast"]["statistic"] == pytest.approx(16.0)
    assert second["limbs"] == ["fast"] and second["alarm"] and second["max_statistic"] < second["h"]  # the fast limb alone signalled
    both = cusum_update(DETECTOR, worse, 2, STEP, [{"champion_version": 7, "cusum": first}], 7, FAST)
    assert both["limbs"] == ["slow", "fast"]
    # a check from before the fast limb (no "fast" in its state): the fast limb starts at 0 from the same last origin
    old = {k: v for k, v in first.items() if k not in ("fast", "limbs")}
    resumed = cusum_update(slow_only, worse, 2, STEP, [{"champion_version": 7, "cusum": old}], 7, FAST)
    assert resumed["fast"]["carried"] == 0.0 and resumed["n_new"] == 4 and resumed["fast"]["statistic"] == pytest.approx(8.0)
    assert cusum_update(slow_only, worse, 2, STEP, [{"champion_version": 7, "cusum": second}], 8, FAST)["fast"]["carried"] == 0.0  # new champion
    assert "fast" not in cusum_update(DETECTOR, worse, 2, STEP, [], 7) and cusum_update(DETECTOR, worse, 2, STEP, [], 7)["limbs"] == ["slow"]


def test_the_reason_names_the_limb_that_fired():
    from types import SimpleNamespace

    from pipeline.loop.monitoring import _cusum_reason

    cfg = SimpleNamespace(monitoring=SimpleNamespace(naive_model="naive"))
    worse = _frame(pd.date_range("2024-01-01", periods=8, freq="h"), 2.0)
    slow_only = DETECTOR.__class__(**{**DETECTOR.__dict__, "h": 1e6})
    unclipped = FAST.__class__(**{**FAST.__dict__, "clip": math.inf, "h": 5.0})  # cusum_fast_clip: null
    fired, reason = _cusum_reason(cfg, cusum_update(slow_only, worse, 2, STEP, [], 7, unclipped))
    assert fired and "its fast limb (k 1, no clip) reached" in reason and "the slow limb at" in reason
    fired, reason = _cusum_reason(cfg, cusum_update(DETECTOR, worse, 2, STEP, [], 7, FAST))
    assert fired and reason.startswith("CUSUM of the champion v7") and "; fast limb at" in reason
    c = cusum_update(DETECTOR, worse, 2, STEP, [], 7, FAST)
    both = {**c, "alarm": True, "limbs": ["slow", "fast"], "fast": {**c["fast"], "max_statistic": c["fast"]["h"] + 1.0}}
    fired, reason = _cusum_reason(cfg, both)
    assert fired and f"; fast limb at {c['fast']['h'] + 1.0:.4g} > {c['fast']['h']:.4g} (signalled too)" in reason  # both limbs said so
    slow = {**c, "alarm": True, "limbs": ["slow"], "fast": {**c["fast"], "max_statistic": c["fast"]["h"] / 2}}
    fired, reason = _cusum_reason(cfg, slow)
    assert fired and f"; fast limb at {c['fast']['h'] / 2:.4g} <= {c['fast']['h']:.4g}" in reason and "signalled too" not in reason
