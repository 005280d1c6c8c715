"""The gate is one typed result, and registration requires a passed one."""

from __future__ import annotations

import pytest

from pipeline.core import artifacts
from pipeline.core.errors import GateFailedError
from pipeline.evaluation.comparison import GateDecision, comparison_gate


def test_gate_round_trips_through_its_artifact(tmp_path):
    gate = comparison_gate(0.9, {"Naive": 1.0, "AutoETS": 1.2}, 0.05)
    artifacts.write_json(artifacts.GATE.at(tmp_path), gate.to_dict())
    assert GateDecision.load(tmp_path) == gate and gate.passed


def test_registration_refuses_a_failed_gate_before_touching_mlflow():
    """``register`` is reached only through a passed gate; a caller that skipped the check gets a
    GateFailedError before any registry call (the MLflow arguments here would fail if used)."""
    from pipeline.registry.registration import register

    failed = comparison_gate(1.0, {"Naive": 1.0}, 0.05)
    assert not failed.passed
    with pytest.raises(GateFailedError, match="best baseline Naive"):
        register(None, None, None, "", None, "run", {}, {}, failed)
