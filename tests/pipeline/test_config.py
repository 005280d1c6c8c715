import pytest
import yaml
from pydantic import ValidationError

from pipeline.core.config import PipelineConfig, load_config
from pipeline.core.errors import ConfigError
from tests.conftest import ROOT


@pytest.mark.parametrize("name", ["beijing_pm25.yaml", "synthetic_sine.yaml"])
def test_shipped_configs_load_frozen(name):
    cfg = load_config(ROOT / "configs" / name)
    assert isinstance(cfg, PipelineConfig)
    with pytest.raises(ValidationError, match="frozen"):
        cfg.features.lookback = 3


def test_beijing_config_targets_pm25_24h_with_categorical_wind():
    cfg = load_config(ROOT / "configs" / "beijing_pm25.yaml")
    assert (cfg.data.target_column, cfg.features.horizon, cfg.data.freq) == ("pm2.5", 24, "h")
    assert cfg.data.categorical_covariates == ("cbwd",)
    assert cfg.data.path.is_file(), "relative data.path must resolve against the config's folder"


def test_synthetic_config_is_one_step_lookback_50():
    cfg = load_config(ROOT / "configs" / "synthetic_sine.yaml")
    assert (cfg.features.lookback, cfg.features.horizon, cfg.data.synthetic.seed) == (50, 1, 42)


def _write(tmp_path, mutate):
    raw = yaml.safe_load((ROOT / "configs" / "synthetic_sine.yaml").read_text())
    mutate(raw)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_unknown_key_is_an_error_naming_the_key(tmp_path):
    path = _write(tmp_path, lambda r: r["features"].update(lookbak=3))
    with pytest.raises(ConfigError, match=r"features\.lookbak"):
        load_config(path)


@pytest.mark.parametrize(
    "section,key,value",
    [("features", "scaler", "zscore"), ("features", "lookback", 0), ("data", "freq", "fortnightly"), ("data", "max_missing_fraction", 1.5)],
)
def test_bad_value_is_an_error_naming_the_key(tmp_path, section, key, value):
    path = _write(tmp_path, lambda r: r[section].update({key: value}))
    with pytest.raises(ConfigError, match=rf"{section}\.{key}"):
        load_config(path)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def test_override_data_path_replaces_synthetic_source(tmp_path):
    csv = tmp_path / "x.csv"
    cfg = load_config(ROOT / "configs" / "synthetic_sine.yaml", {"data.path": csv})
    assert cfg.data.path == csv.resolve() and cfg.data.synthetic is None


def test_none_override_is_not_given_and_null_override_sets_null(tmp_path):
    from pipeline.core.config import NULL

    path = _write(tmp_path, lambda r: r.setdefault("monitoring", {}).update(cusum_fast_shift=3.0))
    assert load_config(path, {"monitoring.cusum_fast_shift": None}).monitoring.cusum_fast_shift == 3.0
    assert load_config(path, {"monitoring.cusum_fast_shift": NULL}).monitoring.cusum_fast_shift is None


def test_resolved_config_round_trips_and_ignores_later_yaml_edits(make_case, tmp_path):
    from pipeline.core.config import load_config, load_resolved, save_resolved

    config, _ = make_case()
    cfg = load_config(config)
    path = save_resolved(cfg, tmp_path / "run" / "config" / "resolved.json")
    config.write_text(config.read_text().replace("lookback: 12", "lookback: 99"))
    assert load_config(config).features.lookback == 99
    assert load_resolved(path) == cfg


def test_a_config_without_names_is_named_after_its_file_and_registers_its_own_model(tmp_path):
    def unnamed(r):
        r.pop("name", None)
        r.get("mlflow", {}).pop("registered_model_name", None)

    first, second = _write(tmp_path, unnamed), tmp_path / "other.yaml"
    second.write_text(first.read_text())
    a, b = load_config(first), load_config(second)
    assert (a.name, a.mlflow.registered_model_name) == ("c", "c-lstm") and b.mlflow.registered_model_name == "other-lstm"
    named = _write(tmp_path, lambda r: r.update(name="sales", mlflow={"registered_model_name": "sales-v2"}))
    assert (load_config(named).name, load_config(named).mlflow.registered_model_name) == ("sales", "sales-v2")
