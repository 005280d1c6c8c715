"""Monitoring and canary defaults derived from data.freq and the horizon (pipeline/core/cadence.py)."""

from __future__ import annotations

import pytest
import yaml

from pipeline.core.config import load_config
from pipeline.core.errors import ConfigError
from tests.conftest import tiny_config_dict


def _config(tmp_path, freq: str, horizon: int, lookback: int = 24, **sections):
    raw = tiny_config_dict(tmp_path / "x.csv", tmp_path / "artifacts", **sections)
    raw["data"]["freq"] = freq
    raw["features"].update(horizon=horizon, lookback=lookback)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_config(path)


def _numbers(cfg) -> tuple:
    m, c = cfg.monitoring, cfg.canary
    return m.window, m.min_origins, m.cooldown, m.max_staleness, c.min_origins, c.max_origins, c.rollback_origins


def test_hourly_defaults_are_the_old_fixed_values(tmp_path):
    assert _numbers(_config(tmp_path, "h", 24)) == ("7D", 24, "3D", "2D", 72, 336, 72)


def test_a_daily_config_passes_with_the_defaults(tmp_path):
    """Daily, h = 7: the old fixed values (7D window, 24 origins) could never score an origin."""
    cfg = _config(tmp_path, "D", 7)
    assert _numbers(cfg) == ("21D", 14, "7D", "2D", 15, 60, 15)
    assert cfg.canary.min_origins > 2 * cfg.features.horizon  # the Diebold-Mariano test can run


def test_a_ten_minute_config_passes_with_the_defaults(tmp_path):
    assert _numbers(_config(tmp_path, "10min", 36, lookback=144)) == ("7D", 144, "3D", "2D", 432, 2016, 432)


def test_explicit_values_are_kept(tmp_path):
    cfg = _config(tmp_path, "D", 7, monitoring={"window": "60D", "min_origins": 30, "cooldown": "10D"}, canary={"min_origins": 20})
    assert _numbers(cfg) == ("60D", 30, "10D", "2D", 20, 80, 15)  # max_origins follows the configured min_origins (4 x 20)


def test_the_resolved_config_round_trips(tmp_path):
    from pipeline.core.config import load_resolved, save_resolved

    cfg = _config(tmp_path, "D", 7)
    assert load_resolved(save_resolved(cfg, tmp_path / "resolved.json")) == cfg


@pytest.mark.parametrize(
    ("freq", "horizon", "sections", "expected"),
    [
        ("D", 7, {"monitoring": {"window": "7D"}}, r"monitoring\.window: '7D' holds 7 origins of data\.freq 'D', of which at most 0 have all "
         r"features\.horizon = 7 targets observed; monitoring\.min_origins = 14 are needed\. Set monitoring\.window >= '21D'"),
        ("h", 24, {"monitoring": {"window": "1D", "min_origins": 24}}, r"monitoring\.window: '1D' .* at most 0 have .* Set monitoring\.window >= '2D'"),
        ("D", 1, {"monitoring": {"max_staleness": "12h"}}, r"monitoring\.max_staleness: '12h' is shorter than one step of data\.freq 'D'"),
        ("D", 7, {"canary": {"min_origins": 5, "max_origins": 10}}, r"canary\.max_origins: 10 paired origins can never decide: .* more than 2 x features\.horizon = 14"),
    ],
)  # fmt: skip
def test_a_config_that_cannot_be_monitored_is_refused_naming_the_key(tmp_path, freq, horizon, sections, expected):
    with pytest.raises(ConfigError, match=r"invalid config .*config\.yaml:\n.*cannot be monitored: " + expected):
        _config(tmp_path, freq, horizon, **sections)


def test_cusum_settings_are_checked(tmp_path):
    assert _config(tmp_path, "h", 24, monitoring={"rule": "cusum"}).monitoring.arl0 == "730D"
    with pytest.raises(ConfigError, match=r"monitoring\.arl0: expected a positive duration .* got '-1D'"):
        _config(tmp_path, "h", 24, monitoring={"rule": "cusum", "arl0": "-1D"})
