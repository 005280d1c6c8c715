"""One season length for every consumer (baselines, MASE, the monitoring check's seasonal naive)."""

from __future__ import annotations

import pytest

from pipeline.core.config import PipelineConfig
from pipeline.core.seasons import season_length, seasons_for_freq, steps_per_year


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


@pytest.mark.parametrize(("freq", "expected"), [("h", 8766), ("30min", 17532), ("D", 365), ("B", 261), ("W-SAT", 52), ("MS", 12), ("QS", 4), ("YS", 1), ("2h", 4383)])
def test_steps_per_year(freq, expected):
    assert steps_per_year(freq) == expected


@pytest.mark.parametrize(
    ("freq", "rows", "expected"),
    [
        ("D", 1461, 365 / 1461),  # Seattle's four years: the validation part spans a year (0.2498)
        ("h", 43824, 8766 / 43824),  # Beijing's five hourly years: 0.2
        ("h", 17518, 0.1),  # one year: covering it would take everything
        ("D", 3 * 365, 0.1),  # three years: a year is a third, more than the 0.25 allowed
        ("W-SAT", 2284, 0.1),  # CO2, 44 years: 0.1 already holds four years
        ("30min", 4032, 672 / 4032),  # 12 weeks: two weeks (the longest season twice), 0.167
        ("h", 2000, 336 / 2000),  # two weeks (336 steps): 0.168
        ("h", 1000, 0.1),  # two weeks would be a third: too much
    ],
)
def test_the_derived_validation_part_spans_a_year_or_two_longest_seasons_when_it_can(freq, rows, expected):
    from pipeline.features.windowing import validation_fraction

    assert validation_fraction(_cfg(freq), rows) == pytest.approx(expected)
    fixed = _cfg(freq).model_copy(update={"features": _cfg(freq).features.model_copy(update={"validation_fraction": 0.15})})
    assert validation_fraction(fixed, rows) == 0.15  # a configured share wins
