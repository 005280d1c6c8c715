"""MLflow tracking and registry against a real ``mlflow server`` on loopback."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.core.config import load_config
from pipeline.core.errors import DataQualityError, RegistryError
from pipeline.runner import run_training_pipeline, summary_table
from tests.conftest import _free_port, register_folder, write_sine_case

pytestmark = pytest.mark.slow
MODEL_NAME = "tiny-sine-lstm"


@pytest.fixture(scope="module")
def registered(mlflow_server, tmp_path_factory):
    """One gate-passing training run registered on the real server."""
    root = tmp_path_factory.mktemp("registry")
    # batch size and highway left to training, so the derived values must reach the run's params
    cfg = load_config(write_sine_case(root, "tiny-sine", MODEL_NAME), {"training.batch_size": None, "model.ar_highway": True})
    csv = root / "input.csv"
    old = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = mlflow_server
    try:
        # the data read through an override (as `train --data` and KFP's data_path pass it): the run must say so
        shutil.copy(csv, root / "export.csv")
        result = run_training_pipeline(cfg, root / "artifacts" / "run-1", data_path=root / "export.csv", tags={"airflow_dag_id": "lstm_training"})
        yield {"cfg": cfg, "csv": csv, "root": root, "result": result, "uri": mlflow_server}
    finally:
        os.environ.pop("MLFLOW_TRACKING_URI") if old is None else os.environ.__setitem__("MLFLOW_TRACKING_URI", old)


@pytest.fixture
def client(registered, monkeypatch):
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", registered["uri"])
    mlflow.set_tracking_uri(registered["uri"])
    return mlflow.tracking.MlflowClient()


def test_run_logs_params_metrics_artifacts_and_tags(registered, client):
    run = client.get_run(registered["result"]["mlflow_run_id"])
    assert run.data.params["features.lookback"] == "24" and run.data.params["data.freq"] == "h"
    facts = json.loads((Path(registered["result"]["run_dir"]) / "training" / "metrics.json").read_text())
    assert run.data.params["training.batch_size"] == str(facts["batch_size"][0]) != "None"  # the value used, not the unset config
    assert float(run.data.params["model.highway_ridge_lambda"]) == facts["highway_ridge_lambda"][0] > 0
    for key in ("lstm_rmse", "training_rmse", "Naive_rmse", "LSTM_mase", "lstm_rmse_step_4", "test_coverage_80", "test_width_95", "test_tracked_coverage_80"):
        assert key in run.data.metrics, key
    assert run.data.metrics["test_coverage_95"] == pytest.approx(registered["result"]["test_coverage_95"])  # train --json's number
    assert 0 < run.data.metrics["test_width_80"] < run.data.metrics["test_width_95"]
    assert run.data.metrics["lstm_rmse"] == pytest.approx(registered["result"]["lstm_rmse"])
    epochs = json.loads((Path(registered["result"]["run_dir"]) / "training" / "history.json").read_text())[0]
    assert len(client.get_metric_history(run.info.run_id, "val_loss")) == len(epochs)
    names = {a.path for d in ("validation", "training", "evaluation") for a in client.list_artifacts(run.info.run_id, d)}
    assert {"evaluation/comparison.csv", "evaluation/gate.json", "evaluation/forecast.png", "training/loss_curve.png", "validation/report.json"} <= names
    tags = run.data.tags
    assert len(tags["data_sha256"]) == 64 and tags["device"] == "cpu" and tags["package_version"] == "0.1.0"
    assert tags["airflow_dag_id"] == "lstm_training" and "git_commit" in tags
    assert tags["data_source"] == str(registered["root"] / "export.csv") != run.data.params["data.path"]  # what was read, not the config's path
    assert tags["stop_reason"] == facts["stop_reason"][0] in ("early_stopping", "max_epochs")  # why training stopped
    assert tags["train_steps"] == str(facts["steps"][0])


def test_first_version_is_champion_and_challenger_with_tags(registered, client):
    res = registered["result"]
    assert res["gate_passed"] and res["registered_version"] == 1 and res["aliases"] == ["challenger", "champion"]
    mv = client.get_model_version_by_alias(MODEL_NAME, "champion")
    assert mv.version == "1" and mv.run_id == res["mlflow_run_id"]
    for tag in ("lstm_rmse", "training_rmse", "best_baseline", "best_baseline_rmse", "gate", "data_sha256", "mlflow_run_id"):
        assert tag in mv.tags, tag
    assert mv.tags["best_baseline"] == "Naive" and mv.tags["gate"] == "passed"
    assert "best baseline Naive" in mv.description and "| model | RMSE |" in mv.description
    assert mv.current_stage in (None, "None")  # aliases only, no deprecated stages
    assert len(mv.tags["pipeline_fingerprint"]) == 16 and len(mv.tags["code_sha256"]) == 16 and mv.tags["as_of"] == ""
    assert res["same_inputs_as"] == []
    assert _alias_events(registered) == [("champion", None, 1, "register"), ("challenger", None, 1, "register")]  # newest first


def _alias_events(registered) -> list[tuple]:
    """The forecast store's alias-event rows of the model: what registration recorded, newest first."""
    from pipeline.store.sql import store_for

    return [(e["alias"], e["from_version"], e["to_version"], e["action"]) for e in store_for(registered["cfg"]).alias_events(MODEL_NAME)]


def test_champion_loads_in_a_fresh_process_and_reproduces_test_forecasts(registered, tmp_path):
    run_dir = Path(registered["result"]["run_dir"])
    with np.load(run_dir / "training" / "forecasts.npz") as z:  # the saved test forecasts, on the scored origins
        index, expected = z["test_index"][[0, 5, -1]], z["test"][[0, 5, -1]]
    with np.load(run_dir / "features" / "arrays.npz") as z:
        origins = (z["starts_test"][index] + 24 - 1).tolist()
    script = textwrap.dedent(f"""
        import sys  # only the model's shipped package can be imported: drop the editable install's finder
        sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f).lower()]
        import json, mlflow, pandas as pd
        model = mlflow.pyfunc.load_model("models:/{MODEL_NAME}@champion")
        raw = pd.read_csv({str(registered['csv'])!r})
        out = [model.predict(raw.iloc[: o + 1])["yhat"].tolist() for o in {origins}]
        columns = list(model.predict(raw.tail(30)).columns)
        import pipeline, sys  # the package the model brought (code_paths), not the installed one
        from pathlib import Path
        root = Path(pipeline.__file__).parent
        files = sorted(str(p.relative_to(root)) for p in root.rglob("*.py"))
        outside = sorted(n for n, m in sys.modules.items() if n.startswith("pipeline") and not Path(m.__file__).is_relative_to(root))
        print(json.dumps({{"out": out, "files": files, "from": pipeline.__file__, "outside": outside, "columns": columns}}))
    """)
    env = {**os.environ, "MLFLOW_TRACKING_URI": registered["uri"]}
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    printed = json.loads(proc.stdout.strip().splitlines()[-1])
    served = np.array(printed["out"])
    from pipeline.serving.pyfunc import INFERENCE_FILES

    assert printed["files"] == sorted(INFERENCE_FILES), printed  # only what inference needs ships with the model
    assert printed["outside"] == [], printed  # and the model imported nothing of the installed package
    assert "/code/pipeline/" in printed["from"], printed["from"]
    np.testing.assert_allclose(served, expected, atol=1e-5, rtol=1e-5)
    assert printed["columns"] == ["ds", "step", "yhat", "yhat_lo_80", "yhat_hi_80", "yhat_lo_95", "yhat_hi_95"]  # intervals ship too


def _pyfunc(registered):
    import mlflow

    mlflow.set_tracking_uri(registered["uri"])
    return mlflow.pyfunc.load_model(f"models:/{MODEL_NAME}@champion")


def test_predict_bad_inputs_name_what_is_wrong(registered, client):
    model = _pyfunc(registered)
    raw = pd.read_csv(registered["csv"])
    out = model.predict(raw.tail(30))
    assert list(out.columns[:3]) == ["ds", "step", "yhat"] and out["step"].tolist() == [1, 2, 3, 4]
    assert str(out["ds"].iat[0]) == "2024-01-17 16:00:00"
    with pytest.raises(DataQualityError, match=r"history has 10 steps, at least lookback=24"):
        model.predict(raw.tail(10))
    with pytest.raises(DataQualityError, match=r"history is missing column\(s\) \['temp'\]"):  # ours, not MLflow's schema error
        model.predict(raw.tail(30).drop(columns=["temp"]))
    bad = raw.tail(30).copy()
    bad.loc[bad.index[-1], "wind"] = "W"
    with pytest.raises(DataQualityError, match=r"'wind'.*\['W'\]"):
        model.predict(bad)


def test_registered_model_serves_the_intervals_calibrated_on_validation(registered, client):
    """The version ships the training stage's calibration: each band is ``yhat +- q_step`` of ``intervals.json``."""
    calibration = json.loads((Path(registered["result"]["run_dir"]) / "training" / "intervals.json").read_text())
    assert calibration["source"] == "validation" and calibration["n_windows"] > 0 and calibration["levels"] == [80.0, 95.0]
    assert calibration["score"] == "absolute"  # the default score: one width per step
    out = _pyfunc(registered).predict(pd.read_csv(registered["csv"]))
    for level in ("80", "95"):
        q = np.asarray(calibration["quantiles"][level])
        assert np.isfinite(q).all() and (q > 0).all()
        np.testing.assert_allclose(out[f"yhat_hi_{level}"] - out["yhat"], q, rtol=1e-6)
        np.testing.assert_allclose(out["yhat"] - out[f"yhat_lo_{level}"], q, rtol=1e-6)
    assert (out["yhat_hi_95"] - out["yhat_lo_95"] >= out["yhat_hi_80"] - out["yhat_lo_80"]).all()


def test_a_version_without_calibration_still_predicts_point_forecasts(registered, client, tmp_path):
    """A model logged as versions were before intervals (no ``intervals`` artifact) loads and returns ``yhat`` only."""
    import mlflow
    from pipeline.registry import registration
    from pipeline.serving.pyfunc import ForecastModel

    run = Path(registered["result"]["run_dir"])
    old_artifacts = registration.model_artifacts(run / "features", run / "training")
    assert "intervals" in old_artifacts
    del old_artifacts["intervals"]
    mlflow.set_experiment("tiny-sine-old-style")
    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(name="model", python_model=ForecastModel(), artifacts=old_artifacts,
                                       code_paths=[str(registration._inference_package(tmp_path))])  # fmt: skip
    old = mlflow.pyfunc.load_model(info.model_uri)
    raw = pd.read_csv(registered["csv"])
    out = old.predict(raw.tail(30))
    assert list(out.columns) == ["ds", "step", "yhat"]
    np.testing.assert_allclose(out["yhat"], _pyfunc(registered).predict(raw.tail(30))["yhat"], rtol=1e-6)
    assert not any(c.startswith("yhat_") for c in old.predict(raw, params={"origins": "all"}).columns)


def _copy_run(registered, name):
    src = Path(registered["result"]["run_dir"])
    dst = src.parent / name
    shutil.copytree(src, dst, dirs_exist_ok=True)
    (dst / "run.json").unlink(missing_ok=True)  # a copy is a new run, bound to its own config
    return dst


def test_registering_the_same_run_twice_makes_no_second_version(registered, client):
    again = register_folder(registered["cfg"], Path(registered["result"]["run_dir"]))
    assert again["registered_version"] == 1 and again["mlflow_run_id"] == registered["result"]["mlflow_run_id"]
    assert again["aliases"] == ["challenger", "champion"]
    assert len(client.search_model_versions(f"name='{MODEL_NAME}'")) == 1
    assert len(_alias_events(registered)) == 2  # nothing moved, nothing recorded again


def test_unreachable_server_fails_clearly_and_leaves_the_registry_untouched(registered, client, monkeypatch):
    before = {a: client.get_model_version_by_alias(MODEL_NAME, a).version for a in ("champion", "challenger")}
    n_versions = len(client.search_model_versions(f"name='{MODEL_NAME}'"))
    dead = f"http://127.0.0.1:{_free_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", dead)
    with pytest.raises(RegistryError, match="cannot reach MLflow at http://127.0.0.1"):
        register_folder(registered["cfg"], _copy_run(registered, "run-dead"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registered["uri"])
    assert {a: client.get_model_version_by_alias(MODEL_NAME, a).version for a in before} == before
    assert len(client.search_model_versions(f"name='{MODEL_NAME}'")) == n_versions


def test_failed_gate_registers_nothing_and_the_run_says_why(registered, client):
    from pipeline.evaluation.comparison import run_comparison

    run = _copy_run(registered, "run-gate")
    strict = registered["cfg"].model_copy(update={"gate": registered["cfg"].gate.model_copy(update={"min_relative_improvement": 0.99})})
    run_comparison(strict, run, run / "features", run / "training", run / "baselines")
    n_versions = len(client.search_model_versions(f"name='{MODEL_NAME}'"))
    out = register_folder(strict, run)
    assert out["registration"].startswith("skipped: gate failed") and "registered_version" not in out
    assert len(client.search_model_versions(f"name='{MODEL_NAME}'")) == n_versions
    assert client.get_run(out["mlflow_run_id"]).data.tags["registration"].startswith("skipped: gate failed")


def test_concurrent_registrations_leave_a_consistent_state(registered, client):
    champion = client.get_model_version_by_alias(MODEL_NAME, "champion").version
    runs = [_copy_run(registered, f"run-par-{i}") for i in range(2)]
    results, errors = [], []

    def register(run):
        try:
            results.append(register_folder(registered["cfg"], run))
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=register, args=(r,)) for r in runs]
    [t.start() for t in threads]
    [t.join(timeout=300) for t in threads]
    assert not errors, errors
    versions = sorted(r["registered_version"] for r in results)
    assert len(set(versions)) == 2
    assert client.get_model_version_by_alias(MODEL_NAME, "champion").version == champion
    assert int(client.get_model_version_by_alias(MODEL_NAME, "challenger").version) in versions
    assert len(client.search_model_versions(f"name='{MODEL_NAME}'")) == len({1, *versions})
    # copies of run-1 (same config, data, code): registered anyway, and said, on the result and in train's summary
    from pipeline.runner import summary_table

    for r in results:
        assert 1 in r["same_inputs_as"] and r["registered_version"] not in r["same_inputs_as"], r
        line = summary_table({**registered["result"], **r})
        assert f"registered: {MODEL_NAME} v{r['registered_version']}" in line and "same inputs as v1" in line, line
    assert "same inputs" not in summary_table(registered["result"])
    assert "LSTM 80% interval: test coverage " in line and "; tracked, as the monitoring loop publishes it: " in line  # both bands


def test_a_version_with_seasonal_lags_serves_them_from_its_shipped_package(mlflow_server, tmp_path, monkeypatch):
    """Seasonal lags end to end: registered (the input example is one forecast's history, ``history_steps``
    rows), loaded in a fresh process with only the shipped package importable, the test forecasts reproduced."""
    name = "tiny-sine-lags"
    cfg = load_config(write_sine_case(tmp_path, "tiny-sine-lags", name), {"model.ar_highway": True, "features.seasonal_lags": [24]})
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    result = run_training_pipeline(cfg, tmp_path / "artifacts" / "run-1")
    assert result["registered_version"] is not None, result
    run_dir = Path(result["run_dir"])
    with np.load(run_dir / "training" / "forecasts.npz") as z:
        index, expected = z["test_index"][[0, -1]], z["test"][[0, -1]]
    with np.load(run_dir / "features" / "arrays.npz") as z:
        origins = (z["starts_test"][index] + 24 - 1).tolist()
    need = 24 + 25 - 4  # lookback + max lag - horizon
    script = textwrap.dedent(f"""
        import sys
        sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f).lower()]
        import json, mlflow, pandas as pd
        model = mlflow.pyfunc.load_model("models:/{name}/1")
        raw = pd.read_csv({str(tmp_path / "input.csv")!r})
        out = [model.predict(raw.iloc[o + 1 - {need} : o + 1])["yhat"].tolist() for o in {origins}]
        try:
            model.predict(raw.tail({need - 1}))
            short = ""
        except Exception as exc:
            short = str(exc)
        print(json.dumps({{"out": out, "short": short}}))
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env={**os.environ, "MLFLOW_TRACKING_URI": mlflow_server},
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    printed = json.loads(proc.stdout.strip().splitlines()[-1])
    np.testing.assert_allclose(np.array(printed["out"]), expected, atol=1e-5, rtol=1e-5)
    assert f"history has {need - 1} steps, at least lookback + the seasonal lags' reach (seasons [24]) = 24 + 21 = {need}" in printed["short"]
    # and `train` said so when it trained: the history a forecast needs is not a surprise at forecast time
    assert f"a forecast needs at least {need} rows of history per series (lookback plus the reach of the seasonal lags [24]" in summary_table(result)


def test_the_input_example_is_the_latest_forecastable_history_when_the_data_ends_in_a_gap(make_case, tmp_path):
    """Data whose last ``lookback`` steps hold a gap longer than ``data.max_gap`` still registers:
    the model's input example is the latest history the model can forecast from (found on clean
    Beijing as of 2014-01-01: a 2013-12-29 gap stopped the registration)."""
    from pipeline.data.io import read_raw
    from pipeline.data.validation import validate_frame
    from pipeline.features.windowing import build_features
    from pipeline.registry.registration import _input_example
    from tests.conftest import tiny_frame

    frame = tiny_frame(n=120)
    frame.loc[112:115, "load"] = np.nan  # 4 missing hours (max_gap 2) inside the last lookback (12)
    config, _ = make_case(frame=frame)
    cfg = load_config(config)
    long = validate_frame(read_raw(cfg.data), cfg).frame
    path = tmp_path / "validated.parquet"
    long.to_parquet(path)
    prep = build_features(long, cfg).prep
    example = _input_example(cfg, path, prep)
    assert len(example) == prep.history_steps == 12
    assert example["load"].notna().all() and example["time"].iloc[-1] == frame["time"].iloc[111]  # the hour before the gap
    filled = tmp_path / "filled.parquet"
    long.assign(y=long["y"].fillna(10.0)).to_parquet(filled)
    assert _input_example(cfg, filled, prep)["time"].iloc[-1] == frame["time"].iloc[-1]  # without a gap: the last rows, as before
