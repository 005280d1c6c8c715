"""A new user's forecast: the registered model on a plain ``pd.read_csv`` frame, and ``lstm-pipeline forecast``.

The CSV has integer columns, as users' files do: ``temp`` in whole degrees and the
categorical ``wind`` coded ``1, 2, 3``, so ``pd.read_csv`` makes both ``int64``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
import yaml

from pipeline.cli import main
from pipeline.core.config import load_config
from pipeline.runner import run_training_pipeline
from tests.conftest import sine_frame, write_sine_case

pytestmark = pytest.mark.slow
MODEL_NAME = "int-columns-lstm"


def _int_frame() -> pd.DataFrame:
    frame = sine_frame(n=400)
    frame["temp"] = frame["temp"].round().astype(int)
    frame["wind"] = frame["wind"].map({"N": 1, "S": 2, "E": 3})
    return frame


@pytest.fixture(scope="module")
def registered(mlflow_server, tmp_path_factory):
    """One gate-passing run on the integer-column CSV, registered on the real server (v1: champion)."""
    root = tmp_path_factory.mktemp("forecast-command")
    config = write_sine_case(root, "int-columns", MODEL_NAME)
    _int_frame().to_csv(root / "input.csv", index=False)  # the file the config names
    old = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = mlflow_server
    try:
        result = run_training_pipeline(load_config(config), root / "artifacts" / "run-1")
        assert result["registered_version"] == 1, result
        yield {"config": config, "csv": root / "input.csv", "root": root, "uri": mlflow_server}
    finally:
        os.environ.pop("MLFLOW_TRACKING_URI") if old is None else os.environ.__setitem__("MLFLOW_TRACKING_URI", old)


@pytest.fixture
def env(registered, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registered["uri"])
    return registered


def _in_process_forecast(registered) -> pd.DataFrame:
    import mlflow

    mlflow.set_tracking_uri(registered["uri"])
    return mlflow.pyfunc.load_model(f"models:/{MODEL_NAME}@champion").predict(pd.read_csv(registered["csv"]))


def test_registered_model_predicts_on_a_plain_read_csv_frame_in_a_fresh_process(env, tmp_path):
    script = textwrap.dedent(f"""
        import json, mlflow, pandas as pd
        raw = pd.read_csv({str(env['csv'])!r})
        model = mlflow.pyfunc.load_model("models:/{MODEL_NAME}@champion")
        out = model.predict(raw)
        print(json.dumps({{"dtypes": {{c: str(t) for c, t in raw.dtypes.items()}}, "yhat": out["yhat"].tolist(),
                          "ds": out["ds"].astype(str).tolist()}}))
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=dict(os.environ), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    printed = json.loads(proc.stdout.strip().splitlines()[-1])
    assert printed["dtypes"]["temp"] == "int64" and printed["dtypes"]["wind"] == "int64"  # what a CSV reader makes of them
    assert len(printed["yhat"]) == 4 and np.isfinite(printed["yhat"]).all()
    assert printed["ds"][0] == "2024-01-17 16:00:00"  # one hour after the file's last row
    # the integer codes are read as the levels the model was fitted on: the same forecast as the file's text
    text = pd.read_csv(env["csv"], dtype=str)
    import mlflow

    mlflow.set_tracking_uri(env["uri"])
    from_text = mlflow.pyfunc.load_model(f"models:/{MODEL_NAME}@champion").predict(text)["yhat"].to_numpy()
    np.testing.assert_allclose(printed["yhat"], from_text, rtol=1e-6)


def test_forecast_command_writes_the_next_h_values_as_csv_parquet_and_json(env, tmp_path, capsys):
    expected = _in_process_forecast(env)["yhat"].to_numpy()
    for name in ("f.csv", "f.parquet"):
        out = tmp_path / name
        assert main(["forecast", "--config", str(env["config"]), "--input", str(env["csv"]), "--out", str(out), "--json"]) == 0
        got = pd.read_parquet(out) if name.endswith("parquet") else pd.read_csv(out, parse_dates=["ds"])
        assert list(got.columns) == ["unique_id", "ds", "step", "yhat", "yhat_lo_80", "yhat_hi_80", "yhat_lo_95", "yhat_hi_95"]
        assert (got["yhat_lo_80"] < got["yhat"]).all() and (got["yhat"] < got["yhat_hi_80"]).all()
        assert (got["yhat_lo_95"] < got["yhat_lo_80"]).all() and (got["yhat_hi_80"] < got["yhat_hi_95"]).all()
        assert got["step"].tolist() == [1, 2, 3, 4] and (got["unique_id"] == "series_0").all()
        assert str(got["ds"].iat[0]) == "2024-01-17 16:00:00"
        np.testing.assert_allclose(got["yhat"].to_numpy(), expected, rtol=1e-6)
        result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert result["version"] == 1 and result["alias"] == "champion" and result["rows"] == 4 and result["out"] == str(out)
    assert main(["forecast", "--config", str(env["config"]), "--input", str(env["csv"]), "--version", "1"]) == 0
    printed = pd.read_csv(__import__("io").StringIO(capsys.readouterr().out))
    np.testing.assert_allclose(printed["yhat"].to_numpy(), expected, rtol=1e-6)
    assert main(["forecast", "--config", str(env["config"]), "--input", str(env["csv"]), "--json"]) == 0
    records = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["forecast"]
    assert [r["step"] for r in records] == [1, 2, 3, 4] and records[0]["ds"] == "2024-01-17T16:00:00"
    assert {"yhat_lo_80", "yhat_hi_95"} <= set(records[0])


def _error(capsys) -> tuple[dict, str]:
    captured = capsys.readouterr()
    return json.loads(captured.out.strip().splitlines()[-1]), captured.err


@pytest.mark.parametrize(
    ("extra", "kind", "message"),
    [
        (["--version", "7"], "RegistryError", "has no version 7; registered versions: [1]"),
        (["--alias", "challenger-x"], "RegistryError", "has no alias 'challenger-x'"),
        (["--input", "missing.csv"], "DataLoadError", "data file not found"),
    ],
)
def test_forecast_errors_name_what_is_missing(env, capsys, tmp_path, extra, kind, message):
    argv = ["forecast", "--config", str(env["config"]), "--input", str(env["csv"]), "--json", *extra]
    if "--input" in extra:
        argv = ["forecast", "--config", str(env["config"]), "--json", "--input", str(tmp_path / "missing.csv")]
    assert main(argv) == 1
    err, stderr = _error(capsys)
    assert err["kind"] == kind and message in err["message"] and err["stage"] == "forecast" and "Traceback" not in stderr


def test_forecast_for_a_model_not_registered_says_how_to_get_one(env, capsys, tmp_path):
    raw = yaml.safe_load(env["config"].read_text())
    raw["mlflow"]["registered_model_name"] = "never-trained"
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump(raw))
    assert main(["forecast", "--config", str(other), "--input", str(env["csv"]), "--json"]) == 1
    err, _ = _error(capsys)
    assert err["kind"] == "RegistryError" and "no model 'never-trained' is registered yet" in err["message"] and "lstm-pipeline train" in err["message"]
    assert main(["registry", "--config", str(other)]) == 0  # not an infrastructure failure: a state, with the next step
    assert "no version registered yet" in capsys.readouterr().out


def test_an_infinite_interval_bound_is_null_in_json_records():
    """A level with too few calibration windows has an infinite band (conformal_quantile); JSON has no infinity, so the
    CLI's --json and the service's body say null (strict JSON readers refuse Infinity)."""
    from pipeline.predict import forecast_records

    frame = pd.DataFrame({"unique_id": ["a", "a"], "ds": pd.to_datetime(["2024-01-01 00:00", "2024-01-01 01:00"]).tz_localize("UTC"),
                          "step": [1, 2], "yhat": [1.0, 2.0], "yhat_lo_95": [-np.inf, 0.5], "yhat_hi_95": [np.inf, np.inf]})  # fmt: skip
    records = forecast_records(frame)
    assert json.loads(json.dumps(records, allow_nan=False)) == [
        {"unique_id": "a", "ds": "2024-01-01T00:00:00+00:00", "step": 1, "yhat": 1.0, "yhat_lo_95": None, "yhat_hi_95": None},
        {"unique_id": "a", "ds": "2024-01-01T01:00:00+00:00", "step": 2, "yhat": 2.0, "yhat_lo_95": 0.5, "yhat_hi_95": None},
    ]
