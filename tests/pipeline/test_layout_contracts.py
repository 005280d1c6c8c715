"""Contracts the subpackage layout promises (docs/ARCHITECTURE.md)."""

from __future__ import annotations

import pickle


def test_every_forecaster_satisfies_the_one_protocol():
    from pipeline.models import Forecaster
    from pipeline.models.baselines import StatsBaseline
    from pipeline.models.lstm import LSTMForecaster

    assert isinstance(LSTMForecaster(), Forecaster)
    assert isinstance(StatsBaseline("Naive", None), Forecaster)
    assert not isinstance(object(), Forecaster)


def test_the_pickled_class_path_of_earlier_versions_still_resolves():
    """Versions registered before the layout pickled ``pipeline.serving.ForecastModel``."""
    from pipeline.serving import ForecastModel
    from pipeline.serving.pyfunc import ForecastModel as Current

    assert ForecastModel is Current
    # what cloudpickle/pickle wrote for the old class: a reference by module and name
    old_reference = b"\x80\x04\x95&\x00\x00\x00\x00\x00\x00\x00\x8c\x10pipeline.serving\x94\x8c\rForecastModel\x94\x93\x94."
    assert pickle.loads(old_reference) is Current
