"""Models: every forecaster behind one contract.

``network`` (the recurrent network, PyTorch), ``lstm`` (the LSTM forecaster's inference:
members, ensemble, save/load; shipped with a served model), ``baselines`` (the statsforecast
baselines under the same contract). Training lives in :mod:`pipeline.training`.

Imports: ``pipeline.core``, ``pipeline.features``. This ``__init__`` imports no torch.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class Forecaster(Protocol):
    """The forecaster contract (sktime's extension template, statsforecast's models).

    ``__init__`` stores hyper-parameters only; ``fit(fs) -> self`` learns from a
    :class:`pipeline.features.windowing.FeatureSet`, fitted state in attributes ending in ``_``;
    ``predict(fs, split, index) -> (n, horizon)`` float64 forecasts in original units from the
    origins of ``split``'s windows ``index`` (all when ``None``). ``name`` is the model's column
    alias (``LSTM``, ``AutoETS``, ...). ``tests/pipeline/test_forecasters.py`` runs one contract
    test over every implementation.
    """

    name: str

    def fit(self, fs, *args, **kwargs) -> Forecaster: ...

    def predict(self, fs, split: str = "test", index=None): ...


__all__ = ["Forecaster"]
