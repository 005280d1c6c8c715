"""The ``lstm_training`` DAG as a monitoring trigger runs it under ``retrain.mode: finetune`` (``dag.test()``,
real Airflow metadata DB, real MLflow server): the run copies the champion named in its conf, keeps its
preprocessing, reads nothing at or after ``T`` and records the version it started from."""

import pandas as pd
import pytest
import yaml

from tests.conftest import write_sine_case
from tools.airflow_local import airflow_env, init_airflow, run_dag_test

pytestmark = pytest.mark.slow
MODEL = "dag-finetune"
T0, T = "2024-01-14T00:00:00", "2024-01-17T00:00:00"


@pytest.fixture(scope="module")
def runs(tmp_path_factory, mlflow_server):
    home = tmp_path_factory.mktemp("airflow")
    env = init_airflow(home, airflow_env(home, {"MLFLOW_TRACKING_URI": mlflow_server}))
    root = tmp_path_factory.mktemp("dagcase")
    config = write_sine_case(root, "dag-finetune", MODEL)
    raw = yaml.safe_load(config.read_text())
    raw["retrain"] = {"mode": "finetune", "finetune_epochs": 3}
    config.write_text(yaml.safe_dump(raw))
    champion = run_dag_test("lstm_training", {"config_path": str(config), "as_of": T0}, env)  # scheduled: v1, the champion
    conf = {"config_path": str(config), "as_of": T, "check_id": f"{MODEL}@{T}", "champion_version": 1, "reason": "monitoring rmse: test"}
    return root, champion, run_dag_test("lstm_training", conf, env)


def test_a_triggered_finetune_starts_from_the_champion_in_its_conf(runs, mlflow_server):
    import mlflow
    from pipeline.core import artifacts
    from pipeline.features.windowing import load_features, load_preprocessor

    root, champion, finetune = runs
    assert champion["state"] == "success", champion["log"][-4000:]
    assert finetune["state"] == "success", finetune["log"][-4000:]
    mlflow.set_tracking_uri(mlflow_server)
    client = mlflow.tracking.MlflowClient()
    assert client.get_model_version_by_alias(MODEL, "champion").version == "1"
    run = artifacts.dag_run_dir(root / "artifacts", "lstm_training", finetune["run_id"])
    assert artifacts.read_json(artifacts.FINETUNE_START.in_run(run))["version"] == 1
    shipped = mlflow.pyfunc.load_model(f"models:/{MODEL}/1").unwrap_python_model().prep
    assert load_preprocessor(artifacts.step_dir(run, artifacts.FEATURES)).scaler_state == shipped.scaler_state
    assert pd.read_parquet(artifacts.VALIDATED_DATA.in_run(run))["ds"].max() < pd.Timestamp(T)
    assert load_features(artifacts.step_dir(run, artifacts.FEATURES)).ds.max() < pd.Timestamp(T).to_datetime64()
    found = client.search_runs([client.get_experiment_by_name("dag-finetune").experiment_id], filter_string=f"tags.airflow_run_id = '{finetune['run_id']}'")
    assert len(found) == 1
    tags = found[0].data.tags
    assert tags["retrain.mode"] == "finetune" and tags["retrain.finetune_from_version"] == "1" and tags["trigger.check_id"] == f"{MODEL}@{T}"
