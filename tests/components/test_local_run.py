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


def test_training_then_monitoring_pipelines_run_locally_and_a_retrain_gets_the_trigger(local_kfp, mlflow_server):
    """Training as of T0, then a check as of T = T0 + 3 days on data whose target tripled at T0: the check decides
    ``retrain``, the canary finds nothing to decide yet, and the nested training pipeline retrains as of T under the
    refit protocol with the check's ``trigger.*`` tags."""
    import pandas as pd
    import yaml
    from mlflow.tracking import MlflowClient

    from components.pipelines import build
    from tests.conftest import sine_frame

    (local_kfp / "case").mkdir()
    config = write_sine_case(local_kfp / "case", "kfp-local", "kfp-local-lstm")
    raw = yaml.safe_load(config.read_text())
    raw["monitoring"] = {"window": "2D", "min_origins": 24, "max_staleness": "1D"}
    config.write_text(yaml.safe_dump(raw))
    t0, t = pd.Timestamp("2024-01-17T16:00:00"), pd.Timestamp("2024-01-20T16:00:00")
    frame = sine_frame(n=600)
    frame.loc[pd.to_datetime(frame["time"]) >= t0, "load"] *= 3
    exported = local_kfp / "case" / "export.csv"  # the data through the pipeline's data_path, not the config's data.path
    frame.to_csv(exported, index=False)
    build().training(config=str(config), data_path=str(exported), mlflow_tracking_uri=mlflow_server, as_of=t0.isoformat())

    client = MlflowClient(mlflow_server)
    versions = client.search_model_versions("name='kfp-local-lstm'")
    assert len(versions) == 1, "the gate passed on the sine case, so exactly one version is registered"
    mlflow_run = client.get_run(versions[0].run_id)
    assert mlflow_run.data.tags["orchestrator"] == "kubeflow"
    assert mlflow_run.data.tags["as_of"] == t0.isoformat()  # trained on rows with ds < as_of
    assert mlflow_run.data.tags["gate"] == "passed"
    assert mlflow_run.data.tags["data_source"] == f"{exported} (rows with ds < {t0.isoformat()})"  # what was read
    assert not any(k.startswith("trigger.") for k in mlflow_run.data.tags)  # a plain run
    assert sorted(client.get_model_version("kfp-local-lstm", versions[0].version).aliases) == ["challenger", "champion"]

    build(schedule_time=False).monitoring(config=str(config), data_path=str(exported), mlflow_tracking_uri=mlflow_server, as_of=t.isoformat())
    (check_dir,) = (local_kfp / "kfp-root").glob("lstm-monitoring-*/check-model")
    outputs = json.loads((check_dir / "executor_output.json").read_text())["parameterValues"]
    assert outputs["Output"] == "retrain", (check_dir / "summary").read_text()
    trigger = json.loads((check_dir / "trigger").read_text())  # an OutputPath parameter: kfp.local leaves it as a file
    assert trigger["as_of"] == t.isoformat() and trigger["champion_version"] == 1 and trigger["check_id"]
    assert trigger["data_path"] == str(exported)  # the data the check read, not the config's data.path
    (canary_dir,) = (local_kfp / "kfp-root").glob("lstm-monitoring-*/canary")
    action = json.loads((canary_dir / "executor_output.json").read_text())["parameterValues"]["Output"]
    assert action == "none", action  # the one version is champion and challenger: nothing to decide
    assert (canary_dir / "summary").read_text().startswith(f"as of {t.isoformat()}: **none**: no challenger in the canary")

    retrained = [v for v in client.search_model_versions("name='kfp-local-lstm'") if v.version != versions[0].version]
    assert len(retrained) == 1, "the nested retrain registered one version"
    tags = client.get_run(retrained[0].run_id).data.tags
    assert tags["trigger.check_id"] == trigger["check_id"] and tags["trigger.champion_version"] == "1" and tags["as_of"] == t.isoformat()
    params = client.get_run(retrained[0].run_id).data.params
    assert int(params["features.validation_tail_steps"]) > 0  # the refit protocol: trained through T up to a validation tail
    assert "challenger" in client.get_model_version("kfp-local-lstm", retrained[0].version).aliases
