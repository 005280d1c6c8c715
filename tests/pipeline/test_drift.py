"""Drift methods that stay quiet on large samples with trivial differences and fire on real ones."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from pipeline.core.config import MonitoringConfig
from pipeline.core.errors import DataQualityError
from pipeline.loop.drift import detect


def _sample(n: int, rng, shift: float = 0.0, scale: float = 1.0, p=(0.5, 0.3, 0.2)) -> pd.DataFrame:
    return pd.DataFrame({
        "y": rng.normal(10 + shift, 2 * scale, n), "temp": rng.normal(5, 1, n), "wind": rng.choice(["N", "S", "E"], n, p=list(p)),
    })  # fmt: skip


def test_large_samples_with_a_trivial_shift_do_not_drift(tmp_path):
    rng = np.random.default_rng(0)
    reference, current = _sample(30_000, rng), _sample(30_000, rng, shift=0.05)  # 1/40 of a standard deviation
    result = detect(reference, current, ["y", "temp"], ["wind"], MonitoringConfig())
    assert result.drifted_columns == [] and not result.drifted
    from scipy.stats import ks_2samp

    assert ks_2samp(reference["y"], current["y"]).pvalue < 0.05  # a p-value test would have fired
    paths = result.save(tmp_path)
    assert (tmp_path / "drift_report.html").stat().st_size > 0 and paths["json"].endswith(".json")


def test_a_scaled_target_and_a_new_category_mix_drift():
    rng = np.random.default_rng(1)
    reference, current = _sample(20_000, rng), _sample(1_000, rng, scale=3.0, p=(0.1, 0.1, 0.8))
    result = detect(reference, current, ["y", "temp"], ["wind"], MonitoringConfig())
    assert result.drifted_columns == ["y", "wind"]
    assert result.drift_share == pytest.approx(2 / 3) and result.drifted
    assert result.scores["y"] >= 0.2 and result.scores["temp"] < 0.2 and result.scores["wind"] >= 0.2
    assert result.n_current == 1_000


def test_reference_is_capped_at_its_most_recent_rows():
    rng = np.random.default_rng(2)
    reference = pd.concat([_sample(5_000, rng, shift=50.0), _sample(1_000, rng)], ignore_index=True)
    result = detect(reference, _sample(500, rng), ["y", "temp"], ["wind"], MonitoringConfig(reference_max_rows=1_000))
    assert result.n_reference == 1_000 and "y" not in result.drifted_columns


def test_a_constant_column_is_scored_without_a_numpy_warning():
    """Hours of snow: 0 in every reference row; 0 again (no drift) or snowing (drift) now. No NaN
    anywhere, so Evidently's correlation widget divides by the constant column's zero spread."""
    rng = np.random.default_rng(4)
    reference, quiet = _sample(2_000, rng).assign(snow=0.0), _sample(168, rng).assign(snow=0.0)
    snowing = _sample(168, rng).assign(snow=rng.integers(0, 5, 168).astype(float))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # numpy's "invalid value encountered in divide" fails the test
        same = detect(reference, quiet, ["y", "temp", "snow"], ["wind"], MonitoringConfig())
        moved = detect(reference, snowing, ["y", "temp", "snow"], ["wind"], MonitoringConfig())
    assert same.scores["snow"] == 0.0 and "snow" not in same.drifted_columns
    assert moved.scores["snow"] >= 0.2 and "snow" in moved.drifted_columns


def test_an_empty_sample_is_a_clear_error():
    with pytest.raises(DataQualityError, match="0 current rows"):
        detect(_sample(100, np.random.default_rng(3)), _sample(0, np.random.default_rng(3)), ["y"], [], MonitoringConfig())


def test_a_covariate_without_values_in_the_window_is_named_and_left_out_of_the_share():
    """A sensor outage over the whole window (Evidently raises on an empty column): the other columns are scored."""
    rng = np.random.default_rng(5)
    reference, current = _sample(2_000, rng), _sample(168, rng, scale=3.0).assign(temp=np.nan)
    result = detect(reference, current, ["y", "temp"], ["wind"], MonitoringConfig())
    assert result.unscored == {"temp": "no value in the current sample (168 rows)"} and "temp" not in result.scores
    assert result.drifted_columns == ["y"] and result.drift_share == pytest.approx(1 / 2)
    with pytest.raises(DataQualityError, match="no column has values in both samples"):
        detect(reference, current, ["temp"], [], MonitoringConfig())
