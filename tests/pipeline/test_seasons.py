"""One season length for every consumer (baselines, MASE, the monitoring check's seasonal naive)."""

from __future__ import annotations

import pytest

from pipeline.core.config import PipelineConfig
from pipeline.core.seasons import season_length, seasons_for_freq


def _cfg(freq: str, season: int | None = None) -> PipelineConfig:
    return PipelineConfig.model_validate({
        "name": "t", "data": {"path": "x.csv", "timestamp_column": "ts", "target_column": "y", "freq": freq},
        "features": {"lookback": 24, "horizon": 6}, "baselines": {"season_length": season},
    })


@pytest.mark.parametrize(("freq", "expected"), [("h", 24), ("30min", 48), ("D", 7), ("W", 52), ("MS", 12), ("B", 5)])
def test_season_length_is_derived_from_freq_when_unset(freq, expected):
    assert season_length(_cfg(freq)) == expected == seasons_for_freq(freq)[0]


def test_a_configured_season_length_wins():
    assert season_length(_cfg("h", 168)) == 168


def test_every_consumer_gets_the_same_season():
    """The baselines, the MASE scale and the monitoring check resolve the season through one function
    (before, monitoring read ``baselines.season_length`` raw and failed on ``None``)."""
    from pipeline.models.baselines import resolve_baselines

    for cfg in (_cfg("h"), _cfg("D", 14)):
        assert resolve_baselines(cfg, quiet=True).season_length == season_length(cfg)
