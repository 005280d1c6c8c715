"""The compiled KFP specs: tasks, edges, the GPU request on training, the gate on registration."""

from __future__ import annotations

import pytest
import yaml

from components.compile import compile_all


@pytest.fixture(scope="module")
def specs(tmp_path_factory):
    paths = compile_all(tmp_path_factory.mktemp("kfp-build"), base_image="registry.example/lstm:1.2")
    return {name: yaml.safe_load(path.read_text()) for name, path in paths.items()}


def _edges(dag: dict) -> dict[str, set[str]]:
    return {name: set(task.get("dependentTasks", [])) for name, task in dag["tasks"].items()}


def test_training_tasks_and_edges(specs):
    spec = specs["lstm_training_pipeline"]
    assert _edges(spec["root"]["dag"]) == {
        "validate-data": set(),
        "build-features": {"validate-data"},
        "train-lstm": {"build-features"},
        "fit-baselines": {"build-features"},  # in parallel with training
        "compare-to-baselines": {"build-features", "train-lstm", "fit-baselines"},
        "condition-1": {"validate-data", "build-features", "train-lstm", "compare-to-baselines"},
    }
    assert spec["root"]["dag"]["tasks"]["condition-1"]["taskInfo"]["name"] == "gate-passed"
    inner = spec["components"][spec["root"]["dag"]["tasks"]["condition-1"]["componentRef"]["name"]]["dag"]["tasks"]
    assert list(inner) == ["register-model"]
    # trigger: a monitoring check's retrain conf (the nested retrain's protocol and tags); empty for a plain run
    assert set(spec["root"]["inputDefinitions"]["parameters"]) == {"config", "data_path", "as_of", "mlflow_tracking_uri", "store_url", "trigger"}


def test_registration_runs_only_when_the_gate_passed(specs):
    gate = specs["lstm_training_pipeline"]["root"]["dag"]["tasks"]["condition-1"]
    assert gate["triggerPolicy"]["condition"] == "inputs.parameter_values['pipelinechannel--compare-to-baselines-Output'] == true"


def test_training_asks_for_one_gpu_and_resources(specs):
    executors = specs["lstm_training_pipeline"]["deploymentSpec"]["executors"]
    resources = executors["exec-train-lstm"]["container"]["resources"]
    assert resources["accelerator"]["resourceType"] == "nvidia.com/gpu"
    assert resources["accelerator"]["resourceCount"] == "1"
    assert resources["resourceCpuRequest"] and resources["resourceMemoryRequest"]
    assert "accelerator" not in executors["exec-fit-baselines"]["container"].get("resources", {})


def test_every_component_runs_in_the_project_image_and_installs_nothing(specs):
    for spec in specs.values():
        for name, executor in spec["deploymentSpec"]["executors"].items():
            container = executor["container"]
            assert container["image"] == "registry.example/lstm:1.2", name
            assert "pip install" not in " ".join(container["command"]), f"{name} installs packages at run time"


def test_mlflow_steps_retry_and_side_effects_are_never_cached(specs):
    spec = specs["lstm_training_pipeline"]
    register = spec["components"]["comp-condition-1"]["dag"]["tasks"]["register-model"]
    assert register["retryPolicy"]["maxRetryCount"] >= 2
    assert register["cachingOptions"] == {}  # KFP writes enableCache only when it is true
    assert spec["root"]["dag"]["tasks"]["validate-data"]["cachingOptions"] == {}


def test_monitoring_checks_then_retrains_a_nested_pipeline_without_caching(specs):
    spec = specs["lstm_monitoring_pipeline"]
    root = spec["root"]["dag"]["tasks"]
    assert set(root) == {"check-model", "canary", "condition-1"} and root["condition-1"]["taskInfo"]["name"] == "retrain"
    # the canary decides on the scores the check stored, as of the check's own cut-off, and retries like it
    assert root["canary"]["dependentTasks"] == ["check-model"] and root["canary"]["retryPolicy"]["maxRetryCount"] >= 2
    assert root["canary"]["inputs"]["parameters"]["as_of"]["taskOutputParameter"] == {"outputParameterKey": "cutoff", "producerTask": "check-model"}
    assert root["condition-1"]["triggerPolicy"]["condition"] == "inputs.parameter_values['pipelinechannel--check-model-Output'] == 'retrain'"
    assert root["check-model"]["retryPolicy"]["maxRetryCount"] >= 2
    scheduled = root["check-model"]["inputs"]["parameters"]["scheduled_time"]["runtimeValue"]["constant"]
    assert scheduled == "{{$.pipeline_job_schedule_time_utc}}", "the check's default cut-off is the run's scheduled time"
    inner = spec["components"][root["condition-1"]["componentRef"]["name"]]["dag"]["tasks"]
    assert list(inner) == ["lstm-retraining"]
    # the retrain runs as of the check's cut-off, with its trigger conf (the retrain protocol and the trigger.* tags)
    retrain_inputs = inner["lstm-retraining"]["inputs"]["parameters"]
    assert retrain_inputs["trigger"] == {"componentInputParameter": "pipelinechannel--check-model-trigger"}
    assert retrain_inputs["as_of"] == {"componentInputParameter": "pipelinechannel--check-model-cutoff"}
    assert root["condition-1"]["dependentTasks"] == ["canary", "check-model"]  # the canary decides before a new challenger arrives
    retrain_tasks = spec["components"][inner["lstm-retraining"]["componentRef"]["name"]]["dag"]["tasks"]
    for step in ("build-features", "train-lstm", "fit-baselines", "compare-to-baselines"):  # every step from features on
        assert retrain_tasks[step]["inputs"]["parameters"]["trigger"] == {"componentInputParameter": "trigger"}, step
    gated = spec["components"][retrain_tasks["condition-1"]["componentRef"]["name"]]["dag"]["tasks"]["register-model"]
    assert gated["inputs"]["parameters"]["trigger"] == {"componentInputParameter": "pipelinechannel--trigger"}
    channels = root["condition-1"]["inputs"]["parameters"]
    assert channels["pipelinechannel--check-model-trigger"]["taskOutputParameter"] == {"outputParameterKey": "trigger", "producerTask": "check-model"}
    nested = spec["components"][inner["lstm-retraining"]["componentRef"]["name"]]["dag"]["tasks"]
    assert {"validate-data", "train-lstm", "compare-to-baselines"} <= set(nested)
    cached = [
        f"{comp}/{task}" for comp, body in spec["components"].items() if "dag" in body
        for task, t in body["dag"]["tasks"].items() if t.get("cachingOptions", {}).get("enableCache")
    ]  # fmt: skip
    assert cached == [], f"the monitoring pipeline caches {cached}"
    assert set(spec["root"]["inputDefinitions"]["parameters"]) == {"config", "data_path", "as_of", "mlflow_tracking_uri", "store_url"}


def test_image_comes_from_the_environment(monkeypatch):
    from components.pipelines import DEFAULT_IMAGE, image

    monkeypatch.delenv("LSTM_PIPELINE_IMAGE", raising=False)
    assert image() == DEFAULT_IMAGE == "lstm-forecast-pipeline:latest"
    monkeypatch.setenv("LSTM_PIPELINE_IMAGE", "ghcr.io/me/lstm:cuda")
    assert image() == "ghcr.io/me/lstm:cuda"
