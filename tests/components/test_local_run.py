"""The training pipeline run end to end by ``kfp.local`` against a real MLflow server.

``kfp.local.SubprocessRunner(use_venv=False)`` runs every component as a subprocess of this
interpreter (no Kubernetes, no Docker): the same embedded component source the cluster runs,
the ``dsl.If`` gate included, with artifacts passed as folders under ``pipeline_root``.
"""

from __future__ import annotations

import json
import os

import pytest

from tests.conftest import ROOT, write_sine_case

pytestmark = pytest.mark.slow


@pytest.fixture
def local_kfp(tmp_path, monkeypatch):
    from kfp import local

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # the pipeline parameter decides
    # the components import `pipeline` from this checkout, as the image's installed copy would be
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "kfp-root"), raise_on_error=True)
    return tmp_path


def test_training_pipeline_runs_locally_and_registers_a_kubeflow_version(local_kfp, mlflow_server):
    from mlflow.tracking import MlflowClient

    from components.pipelines import build

    (local_kfp / "case").mkdir()
    config = write_sine_case(local_kfp / "case", "kfp-local", "kfp-local-lstm")
    exported = local_kfp / "case" / "export.csv"  # the data through the pipeline's data_path, not the config's data.path
    exported.write_bytes((local_kfp / "case" / "input.csv").read_bytes())
    build().training(config=str(config), data_path=str(exported), mlflow_tracking_uri=mlflow_server, as_of="2024-01-17T00:00:00")

    client = MlflowClient(mlflow_server)
    versions = client.search_model_versions("name='kfp-local-lstm'")
    assert len(versions) == 1, "the gate passed on the sine case, so exactly one version is registered"
    mlflow_run = client.get_run(versions[0].run_id)
    assert mlflow_run.data.tags["orchestrator"] == "kubeflow"
    assert mlflow_run.data.tags["as_of"] == "2024-01-17T00:00:00"  # trained on rows with ds < as_of
    assert mlflow_run.data.tags["gate"] == "passed"
    assert mlflow_run.data.tags["data_source"] == f"{exported} (rows with ds < 2024-01-17T00:00:00)"  # what was read
    assert sorted(client.get_model_version("kfp-local-lstm", versions[0].version).aliases) == ["challenger", "champion"]

    # the monitoring pipeline: the check runs as of the end of the data; a good champion is not retrained
    build(schedule_time=False).monitoring(config=str(config), mlflow_tracking_uri=mlflow_server, as_of="2024-01-17T16:00:00")
    (check_dir,) = (local_kfp / "kfp-root").glob("lstm-monitoring-*/check-model")
    decision = json.loads((check_dir / "executor_output.json").read_text())["parameterValues"]["Output"]
    assert decision in {"ok", "insufficient_data", "cooldown", "stale_data"}, decision
    assert (check_dir / "summary").read_text().startswith(f"as of 2024-01-17T16:00:00: **{decision}**")
    assert len(client.search_model_versions("name='kfp-local-lstm'")) == 1, "no retrain ran"
    (canary_dir,) = (local_kfp / "kfp-root").glob("lstm-monitoring-*/canary")
    action = json.loads((canary_dir / "executor_output.json").read_text())["parameterValues"]["Output"]
    assert action == "none", action  # the one version is champion and challenger: nothing to decide
    assert (canary_dir / "summary").read_text().startswith("as of 2024-01-17T16:00:00: **none**: no challenger in the canary")
