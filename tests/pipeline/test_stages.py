"""pipeline.stages: the one ordered stage list, and the helpers orchestrators use to pass folders."""

from __future__ import annotations

import pytest

from pipeline import stages
from tests.conftest import FAST_MODEL, FAST_TRAINING, sine_frame


def test_stages_in_order_with_their_inputs():
    assert [s.name for s in stages.STAGES] == ["validate", "features", "train", "baselines", "compare", "register"]
    assert stages.upstream("compare") == {"features", "train", "baselines"}
    results = {"features": {"features": "/r/features"}, "train": {"training": "/r/training"}, "baselines": {"baselines": "/r/b"}}
    assert [str(p) for p in stages.stage("compare").inputs(results)] == ["/r/features", "/r/training", "/r/b"]
    everything = {"validate": {"rows": 3}, "features": {"features": "/r/f"}, "train": {"training": "/r/t"}, "compare": {"evaluation": "/r/e"}}
    assert [str(v) if not isinstance(v, dict) else v for v in stages.stage("register").inputs(everything)] == [{"rows": 3}, "/r/f", "/r/t", "/r/e"]


def test_publish_moves_the_folder_and_replaces_the_target(tmp_path):
    step = tmp_path / "run" / "training"
    step.mkdir(parents=True)
    (step / "model.pt").write_text("weights")
    target = tmp_path / "out" / "model"
    target.mkdir(parents=True)
    (target / "stale").write_text("old")
    stages.publish(step, target)
    assert sorted(p.name for p in target.iterdir()) == ["model.pt"]
    assert not step.exists()


def test_run_stage_names_a_missing_input_and_labels_errors_with_the_stage(make_case, tmp_path):
    from pipeline.core.config import load_config
    from pipeline.core.errors import SchemaValidationError
    from tests.conftest import tiny_frame

    with pytest.raises(KeyError, match=r"stage 'compare' needs the results of \['baselines', 'train'\]"):
        stages.run_stage("compare", None, tmp_path, {"features": {"features": str(tmp_path)}})
    config, _ = make_case(frame=tiny_frame().drop(columns=["load"]))
    with pytest.raises(SchemaValidationError, match="load") as err:
        stages.run_stage("validate", load_config(config), tmp_path / "run", {})
    assert err.value.stage == "validate"


@pytest.mark.slow
def test_runner_calls_the_stages_in_list_order(make_case, tmp_path):
    from pipeline.core.config import load_config
    from pipeline.runner import run_training_pipeline

    config, _ = make_case(frame=sine_frame(), features={"lookback": 24, "horizon": 4}, training=FAST_TRAINING, model=FAST_MODEL,
                          baselines={"models": ["Naive"], "season_length": 24})  # fmt: skip
    seen = []
    result = run_training_pipeline(load_config(config), tmp_path / "run", register=False, on_stage_end=lambda n, s, r: seen.append(n))
    assert seen == [s.name for s in stages.STAGES if s.name != "register"]
    assert {"gate_passed", "rows", "windows", "device", "run_dir"} <= set(result)
    assert "registered_version" not in result


def test_registration_names_a_missing_input_before_touching_mlflow(tmp_path):
    from pipeline.core.errors import ConfigError
    from pipeline.registry.registration import track_and_register

    with pytest.raises(ConfigError, match=r"missing \['data'\]"):
        track_and_register(None, tmp_path / "run", {"report": "r.json"}, tmp_path, tmp_path, tmp_path)
    with pytest.raises(ConfigError, match="registration input 'training': expected the training step's folder, found nothing at .*nope"):
        track_and_register(None, tmp_path / "run", {"report": "r.json", "data": "d.parquet"}, tmp_path, tmp_path / "nope", tmp_path)
    assert not (tmp_path / "run").exists()


def test_validated_from_folder_rebuilds_the_validate_result(tmp_path):
    from pipeline.core import artifacts
    from pipeline.data.validation import validated_from_folder

    artifacts.write_json(artifacts.VALIDATION_REPORT.at(tmp_path), {"data_sha256": "abc", "as_of": "2024-01-02T00:00:00"})
    assert validated_from_folder(tmp_path) == {
        "report": str(tmp_path / "report.json"), "data": str(tmp_path / "data.parquet"), "data_sha256": "abc", "as_of": "2024-01-02T00:00:00",
    }  # fmt: skip


def test_a_components_parameters_win_over_the_pods_environment(make_case, monkeypatch):
    """KFP: ``mlflow_tracking_uri`` / ``store_url`` given to the pipeline are what the run uses, whatever the pod's
    ``MLFLOW_TRACKING_URI`` / ``LSTM_PIPELINE_STORE_URL`` say (they override a config); empty ones keep both."""
    from pipeline.registry import server
    from pipeline.store.sql import STORE_URL_ENV, store_url

    config, _ = make_case()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://pod-env:5000")
    monkeypatch.setenv(STORE_URL_ENV, "sqlite:////tmp/pod-env.db")
    kept = stages.component_config(str(config))
    assert server.tracking_uri(kept) == "http://pod-env:5000" and store_url(kept) == "sqlite:////tmp/pod-env.db"
    cfg = stages.component_config(str(config), "http://mlflow.cluster:5000", "postgresql+psycopg://u@db/store")
    assert server.tracking_uri(cfg) == "http://mlflow.cluster:5000" and store_url(cfg) == "postgresql+psycopg://u@db/store"


def test_dag_runs_with_one_run_id_get_their_own_folders(tmp_path):
    """Airflow's run ids are unique per DAG only: the weekly training and the daily check of a Sunday midnight are both
    ``scheduled__2024-01-07T00:00:00+00:00``. Their folders (resolved config, MLflow run key) must differ; a long id stays a
    valid file name, the same for the same id."""
    from pipeline.core import artifacts

    run_id = "scheduled__2024-01-07T00:00:00+00:00"
    training, monitoring = (artifacts.dag_run_dir(tmp_path, dag, run_id) for dag in ("lstm_training", "lstm_monitoring"))
    assert training != monitoring and training.parent == monitoring.parent == tmp_path
    assert training.name == "lstm_training__scheduled__2024-01-07T00_00_00_00_00"
    long = "retrain__" + "m" * 240
    assert len(artifacts.dag_run_dir(tmp_path, "lstm_training", long).name) <= 200
    assert artifacts.dag_run_dir(tmp_path, "lstm_training", long) == artifacts.dag_run_dir(tmp_path, "lstm_training", long)
    assert artifacts.dag_run_dir(tmp_path, "lstm_training", long) != artifacts.dag_run_dir(tmp_path, "lstm_training", long + "x")
