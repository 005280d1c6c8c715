"""Bad files, values, configs and run ids: one located message and a non-zero exit, never a traceback."""

import json
import logging

import numpy as np
import pytest
import yaml

from pipeline.cli import main
from pipeline.core.config import load_config
from pipeline.core.errors import ConfigError, DataQualityError, SchemaValidationError
from pipeline.data.io import read_raw
from pipeline.data.validation import validate_frame
from tests.conftest import _free_port, tiny_frame


def _last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


# ------------------------------------------------------------------ config types


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [("features", "lookback", "50"), ("run", "seed", True), ("training", "max_epochs", 3.0), ("training", "progress", 1),
     ("training", "learning_rate", "0.01"), ("model", "predict_delta", "yes")],
)  # fmt: skip
def test_config_values_of_the_wrong_type_are_rejected_with_the_key(make_case, section, key, value):
    config, _ = make_case(**{section: {key: value}})
    with pytest.raises(ConfigError, match=rf"{section}\.{key}: .*found {value!r}"):
        load_config(config)


def test_scientific_notation_that_yaml_reads_as_a_string_is_still_a_number(make_case):
    config, _ = make_case()
    raw = yaml.safe_load(config.read_text())
    config.write_text(yaml.safe_dump(raw).replace("max_epochs: 3", "max_epochs: 3\n  learning_rate: 1e-3"))
    assert load_config(config).training.learning_rate == pytest.approx(1e-3)


def test_config_type_error_exits_2_with_a_json_error(make_case, capsys):
    config, _ = make_case(features={"lookback": "50"})
    assert main(["validate", "--config", str(config), "--json"]) == 2
    err = _last_json(capsys.readouterr().out)
    assert err["kind"] == "ConfigError" and err["stage"] == "config" and "features.lookback" in err["message"]


# ------------------------------------------------------------------ values


def _validate(make_case, frame):
    config, _ = make_case(frame=frame)
    cfg = load_config(config)
    return validate_frame(read_raw(cfg.data), cfg)


@pytest.mark.parametrize("value", ["1e999", "-1e999", "inf", "-inf", "Infinity"])
@pytest.mark.parametrize("column", ["load", "temp"])
def test_infinite_numbers_are_a_located_validation_error(make_case, value, column):
    frame = tiny_frame().astype({column: object})
    frame.loc[10, column] = value
    with pytest.raises(SchemaValidationError, match=rf"line 12: {column}="):
        _validate(make_case, frame)


def test_nan_spelled_out_is_a_missing_value(make_case):
    frame = tiny_frame().astype({"load": object})
    frame.loc[10, "load"] = "nan"
    report = _validate(make_case, frame)
    assert report.gaps["missing_target_values"] == 1


def test_mixed_utc_offsets_are_a_located_validation_error(make_case):
    frame = tiny_frame()
    frame["time"] = frame["time"] + np.where(frame.index < 50, "+01:00", "+02:00")
    with pytest.raises(SchemaValidationError, match=r"expect_one_utc_offset.*\n.*line 2: .*\+01:00.*\n.*line 52: .*\+02:00"):
        _validate(make_case, frame)


def test_an_entirely_empty_covariate_is_a_validation_error_naming_it(make_case):
    frame = tiny_frame()
    frame["temp"] = None
    with pytest.raises(SchemaValidationError, match=r"column 'temp' has no values in any of the 120 rows"):
        _validate(make_case, frame)


# ------------------------------------------------------------------ run ids


@pytest.mark.parametrize("run_id", ["..", "../elsewhere", "a/b", ".hidden", "", "x" * 201])
def test_a_run_id_that_is_not_a_plain_name_is_refused(make_case, capsys, tmp_path, run_id):
    config, _ = make_case()
    assert main(["validate", "--config", str(config), "--run-id", run_id, "--json"]) == 2
    err = _last_json(capsys.readouterr().out)
    assert err["kind"] == "ConfigError" and "is not a plain run name" in err["message"]
    assert not (tmp_path / "artifacts").exists() and not (tmp_path / "elsewhere").exists()


def test_reusing_a_run_id_with_other_data_is_refused_and_changes_nothing(make_case, capsys, tmp_path):
    config, csv = make_case()
    assert main(["validate", "--config", str(config), "--run-id", "r1"]) == 0
    report = tmp_path / "artifacts" / "r1" / "validation" / "report.json"
    before = report.read_bytes()
    other = tmp_path / "other.csv"
    tiny_frame(seed=5).to_csv(other, index=False)
    assert main(["validate", "--config", str(config), "--run-id", "r1", "--data", str(other), "--json"]) == 1
    err = _last_json(capsys.readouterr().out)
    assert err["kind"] == "ConfigError" and "started with another config or other data" in err["message"]
    assert report.read_bytes() == before
    assert main(["validate", "--config", str(config), "--run-id", "r1"]) == 0  # the same run again: fine


# ------------------------------------------------------------------ operations


def test_a_dead_tracking_server_fails_in_seconds_before_training(make_case, capsys, tmp_path, monkeypatch):
    config, _ = make_case()
    dead = f"http://127.0.0.1:{_free_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", dead)
    assert main(["train", "--config", str(config), "--run-id", "r1", "--json"]) == 1
    err = _last_json(capsys.readouterr().out)
    assert err["kind"] == "RegistryError" and err["stage"] == "register" and f"cannot reach MLflow at {dead}" in err["message"] and "--no-register" in err["message"]
    assert not (tmp_path / "artifacts" / "r1" / "training").exists()


def test_a_failed_stage_prints_one_json_error_naming_the_stage_and_how_to_resume(make_case, capsys):
    frame = tiny_frame().astype({"load": object})
    frame.loc[3, "load"] = "1e999"
    config, _ = make_case(frame=frame)
    assert main(["train", "--config", str(config), "--run-id", "r2", "--no-register", "--json"]) == 1
    captured = capsys.readouterr()
    err = _last_json(captured.out)
    assert err["kind"] == "SchemaValidationError" and err["stage"] == "validate" and err["run_id"] == "r2"
    assert "--run-id r2" in err["resume"] and "--no-register" in err["resume"] and "fix the data where the message says, then run the same command again (or resume this run: lstm-pipeline train" in captured.err


def test_a_usage_error_with_json_still_ends_in_one_json_object(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--json"])  # --config missing
    assert _last_json(capsys.readouterr().out)["kind"] == "UsageError"


# ------------------------------------------------------------------ the served model


@pytest.fixture
def served(tiny_features):
    from pipeline.models.lstm import LSTMForecaster, build_model
    from pipeline.serving.pyfunc import ForecastModel

    cfg, fs = tiny_features
    model = ForecastModel().use(LSTMForecaster.from_members([build_model(fs.prep.n_features, fs.prep.horizon, cfg.model, fs.prep.lookback)], fs.prep))
    from tests.conftest import sine_frame

    return model, sine_frame().tail(30).reset_index(drop=True)


def test_pyfunc_empty_frame_is_a_clear_error(served):
    model, history = served
    with pytest.raises(DataQualityError, match="history has no rows: expected at least lookback=24 rows"):
        model.predict(None, history.iloc[:0])


def test_pyfunc_missing_column_is_named_by_the_pipeline(served):
    model, history = served
    with pytest.raises(DataQualityError, match=r"history is missing column\(s\) \['temp'\]"):
        model.predict(None, history.drop(columns=["temp"]))


def test_pyfunc_non_numeric_value_names_the_row_and_the_value(served):
    model, history = served
    history["load"] = history["load"].astype(object)
    history.loc[[9, 20], "load"] = ["oops", "12,5"]
    with pytest.raises(DataQualityError, match=r"history, line 11: column 'load' expects numbers, found 'oops'; 1 more value\(s\) do not parse"):
        model.predict(None, history)


def test_pyfunc_duplicate_timestamp_names_both_rows(served):
    model, history = served
    history.loc[12, "time"] = history.loc[11, "time"]
    with pytest.raises(DataQualityError, match=r"duplicate timestamp \d{4}-\d\d-\d\dT[\d:]+ at lines \[13, 14\]"):
        model.predict(None, history)


@pytest.mark.parametrize("value", [np.inf, -np.inf])
def test_pyfunc_history_with_inf_is_a_clear_error(served, value):
    model, history = served
    history.loc[25, "load"] = value
    with pytest.raises(DataQualityError, match=r"history column 'load' has 1 infinite value\(s\) at \['2024-01-17 11:00:00'\]"):
        model.predict(None, history)


def test_pyfunc_warns_when_inputs_are_far_outside_the_training_range(served, caplog):
    model, history = served
    assert "warning" not in model.predict(None, history).columns
    history["load"] = history["load"] * 1000
    with caplog.at_level(logging.WARNING, logger="pipeline.serving.pyfunc"):
        out = model.predict(None, history)
    assert out["warning"].str.contains("input 'load' is").all() and "out of the training range" in caplog.text


@pytest.mark.parametrize(("raised", "code", "kind"), [(KeyboardInterrupt(), 130, "Interrupted"), (KeyError("boom"), 3, "InternalError")])
def test_an_interrupt_or_a_bug_still_ends_in_one_json_object(make_case, capsys, monkeypatch, raised, code, kind):
    from pipeline import cli

    def fail(*args):
        raise raised

    monkeypatch.setitem(cli.COMMANDS, "train", fail)
    config, _ = make_case()
    assert main(["train", "--config", str(config), "--run-id", "r3", "--json"]) == code
    captured = capsys.readouterr()
    err = _last_json(captured.out)
    assert err["kind"] == kind and err["exit_code"] == code and "Traceback" not in captured.err
    assert ("--run-id r3" in (err["resume"] or "")) == (code == 130)
