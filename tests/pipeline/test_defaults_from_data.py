"""Defaults derived from the data (issue 11 item 5): calendar inputs from ``data.freq``."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from pipeline.core.config import load_config
from pipeline.data.io import read_raw
from pipeline.data.validation import validate_frame
from pipeline.features.windowing import build_features, calendar_for_freq


@pytest.mark.parametrize(
    ("freq", "expected"),
    [("h", ("hour", "dayofweek")), ("30min", ("hour", "dayofweek")), ("10min", ("hour", "dayofweek")),
     ("D", ("dayofweek", "dayofyear")), ("W-SAT", ("dayofyear",)), ("MS", ("dayofyear",)), ("YS", ())],
)  # fmt: skip
def test_calendar_inputs_follow_the_frequency(freq, expected):
    assert calendar_for_freq(freq) == expected


def _features(make_case, frame=None, **features):
    config, _ = make_case(frame=frame, features=features)
    cfg = load_config(config)
    return build_features(validate_frame(read_raw(cfg.data), cfg).frame, cfg)


def test_unset_calendar_features_are_derived_and_logged(make_case, caplog):
    with caplog.at_level(logging.INFO, logger="pipeline.features.windowing"):
        fs = _features(make_case, calendar_features=None)
    assert fs.prep.calendar_features == ["hour", "dayofweek"]
    assert fs.prep.feature_names[-4:] == ["hour_sin", "hour_cos", "dayofweek_sin", "dayofweek_cos"]
    assert "calendar_features not set" in caplog.text and "'h'" in caplog.text
    # an explicit empty list still means none
    assert "hour_sin" not in _features(make_case, calendar_features=[]).prep.feature_names


def test_half_hours_get_their_own_hour_angle(make_case):
    from tests.conftest import tiny_frame

    frame = tiny_frame()
    frame["time"] = pd.date_range("2024-01-01", periods=len(frame), freq="30min").strftime("%Y-%m-%d %H:%M:%S")
    config, _ = make_case(frame=frame, features={"calendar_features": ["hour"]}, data={"freq": "30min"})
    cfg = load_config(config)
    fs = build_features(validate_frame(read_raw(cfg.data), cfg).frame, cfg)
    col = fs.prep.feature_names.index("hour_sin")
    # 00:00 and 00:30 differ (the angle of 0.5 h), 00:00 and 24:00 are equal
    assert not np.isclose(fs.values[0, col], fs.values[1, col])
    np.testing.assert_allclose(fs.values[0, col], fs.values[48, col], atol=1e-6)
    np.testing.assert_allclose(fs.values[1, col], np.sin(2 * np.pi * 0.5 / 24), atol=1e-6)
