"""``retrain.mode: finetune``: a triggered retrain that starts from the champion's weights and preprocessing.

The fast tests train a small champion with the real stages (validate, features, train), copy it
the way :func:`pipeline.loop.finetune.start_from_champion` does (``preprocessing.json``,
``model.pt``, ``start.json``), then run the features and training stages of a finetune on
later data. The registry path (the copy out of a registered model, the run's tags, no read
of ``ds >= T``) is covered by the slow replay test in ``tests/pipeline/test_replay.py``.
"""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from pipeline.core import artifacts
from pipeline.core.config import load_config
from pipeline.core.errors import ConfigError, DataQualityError
from pipeline.features.windowing import build_features, finetune_steps, load_features, load_preprocessor
from pipeline.loop.finetune import mismatches, start_from_champion
from pipeline.loop.monitoring import retrain_config
from pipeline.models.lstm import LSTMForecaster
from pipeline.stages import run_stage
from tests.conftest import FAST_MODEL, sine_frame, tiny_config_dict

T0, T1 = pd.Timestamp("2024-01-11"), pd.Timestamp("2024-01-17")  # the champion's as-of; the finetune's
TRAINING = {"max_epochs": 8, "min_epochs": 2, "patience": 4, "batch_size": 32, "learning_rate": 0.01, "progress": False, "num_threads": 1}


def _config(tmp_path, **retrain):
    """Hourly sine (16 days) whose level moves x1.5 from 2024-01-13: the data a refit would rescale to."""
    frame = sine_frame(n=16 * 24)
    after = pd.to_datetime(frame["time"]) >= pd.Timestamp("2024-01-13")
    frame.loc[after, "load"] = frame.loc[after, "load"] * 1.5
    csv = tmp_path / "input.csv"
    frame.to_csv(csv, index=False)
    raw = tiny_config_dict(csv, tmp_path / "artifacts", features={"lookback": 24, "horizon": 4}, training=TRAINING, model=FAST_MODEL)
    raw["retrain"] = {"mode": "finetune", **retrain}
    raw["mlflow"] = {"registered_model_name": "ft"}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(raw))
    return load_config(tmp_path / "config.yaml")


def _stages(cfg, run, as_of, upto="train"):
    results = {"validate": run_stage("validate", cfg, run, {}, as_of=as_of)}
    results["features"] = run_stage("features", cfg, run, results)
    if upto == "train":
        results["train"] = run_stage("train", cfg, run, results)
    return results


@pytest.fixture
def champion(tmp_path):
    """``(cfg, start folder)``: a champion trained as of T0 by the scheduled protocol, copied as the loop copies it."""
    cfg = _config(tmp_path)
    run = tmp_path / "artifacts" / "champion"
    _stages(cfg, run, T0)
    start = tmp_path / "start"
    start.mkdir()
    shutil.copy(artifacts.PREPROCESSING.in_run(run), artifacts.PREPROCESSING.at(start))
    shutil.copy(artifacts.MODEL_WEIGHTS.in_run(run), artifacts.MODEL_WEIGHTS.at(start))
    artifacts.write_json(artifacts.FINETUNE_START.at(start), {"model": "ft", "version": 3, "run_id": "r0"})
    return cfg, start


def _finetune_cfg(cfg, start, **retrain):
    tcfg = retrain_config(cfg.model_copy(update={"retrain": cfg.retrain.model_copy(update=retrain)}))
    return tcfg.model_copy(update={"retrain": tcfg.retrain.model_copy(update={"start_from": start})})


def _finetune(tmp_path, cfg, start, name, **retrain):
    tcfg = _finetune_cfg(cfg, start, **retrain)
    run = tmp_path / "artifacts" / name
    results = _stages(tcfg, run, T1)
    return tcfg, run, results


def _forecasts(weights_folder, features_folder):
    fs = load_features(features_folder)
    return LSTMForecaster.load(weights_folder, fs.prep).predict(fs, "test")


def test_finetune_keeps_the_champions_preprocessing_and_trains_only_the_recent_steps(tmp_path, champion):
    cfg, start = champion
    tcfg, run, _ = _finetune(tmp_path, cfg, start, "ft0", finetune_epochs=0)
    prep, before = load_preprocessor(artifacts.step_dir(run, artifacts.FEATURES)), load_preprocessor(start)
    assert prep.scaler_state == before.scaler_state and prep.feature_names == before.feature_names
    assert prep.categorical_levels == before.categorical_levels
    # a refit on the same rows fits another scaler (the level moved x1.5): the assertion above can fail
    refit = build_features(pd.read_parquet(artifacts.VALIDATED_DATA.in_run(run)), retrain_config(cfg.model_copy(
        update={"retrain": cfg.retrain.model_copy(update={"mode": "refit"})})))  # fmt: skip
    assert refit.prep.scaler_state["mean_"] != pytest.approx(before.scaler_state["mean_"])
    fs = load_features(artifacts.step_dir(run, artifacts.FEATURES))
    tail, steps, L, H = tcfg.features.validation_tail_steps, finetune_steps(tcfg), 24, 4
    assert (tail, steps) == (24, 168)  # one day (> 2 x h); one week of hourly steps (> 4 x (L + h) = 112)
    first_target, last_target = fs.ds[fs.starts["train"] + L], fs.ds[fs.starts["train"] + L + H - 1]
    tail_start = T1 - pd.Timedelta(hours=tail)
    assert first_target.min() == np.datetime64(tail_start - pd.Timedelta(hours=steps)) and last_target.max() < np.datetime64(tail_start)
    assert len(fs.starts["train"]) == steps - H + 1
    assert fs.ds[fs.starts["test"] + L].min() == np.datetime64(tail_start)  # the test part is the tail, as refit's


def test_zero_epochs_give_the_champions_forecasts_and_epochs_move_them_at_the_lower_rate(tmp_path, champion):
    cfg, start = champion
    _, run0, _ = _finetune(tmp_path, cfg, start, "ft0", finetune_epochs=0)
    features = artifacts.step_dir(run0, artifacts.FEATURES)
    champ = _forecasts(start, features)
    np.testing.assert_array_equal(_forecasts(artifacts.step_dir(run0, artifacts.TRAINING), features), champ)

    _, run5, _ = _finetune(tmp_path, cfg, start, "ft5", finetune_epochs=5, finetune_lr_factor=0.5)
    facts = artifacts.read_json(artifacts.TRAINING_FACTS.in_run(run5))
    history = artifacts.read_json(artifacts.TRAINING_HISTORY.in_run(run5))[0]
    assert len(history) == 5 and history[0]["lr"] == pytest.approx(0.5 * 0.01)
    assert facts["finetune"] == {"from_model": "ft", "from_version": 3, "from_run_id": "r0", "epochs": 5, "learning_rate": pytest.approx(0.005), "steps": 168}
    assert facts["start_val_loss"][0] is not None  # the champion counted as epoch 0
    moved = _forecasts(artifacts.step_dir(run5, artifacts.TRAINING), artifacts.step_dir(run5, artifacts.FEATURES))
    assert facts["best_epochs"][0] > 0 and not np.allclose(moved, champ)
    champion_weights = torch.load(artifacts.MODEL_WEIGHTS.at(start), weights_only=True)["members"][0]
    tuned = torch.load(artifacts.MODEL_WEIGHTS.in_run(run5), weights_only=True)["members"][0]
    assert any(not torch.equal(champion_weights[k], tuned[k]) for k in champion_weights)


def test_the_run_is_tagged_with_the_champion_it_started_from(tmp_path, champion):
    from pipeline.registry.tracking import training_tags

    cfg, start = champion
    _, run, _ = _finetune(tmp_path, cfg, start, "ft0", finetune_epochs=0)
    tags = training_tags(artifacts.step_dir(run, artifacts.TRAINING))
    assert tags["retrain.mode"] == "finetune" and tags["retrain.finetune_from_version"] == "3" and tags["retrain.finetune_from_model"] == "ft"
    assert "retrain.mode" not in training_tags(artifacts.step_dir(tmp_path / "artifacts" / "champion", artifacts.TRAINING))


@pytest.mark.parametrize(
    "key,value",
    [("finetune_epochs", -1), ("finetune_steps", 0), ("finetune_lr_factor", 0.0), ("finetune_lr_factor", 2.0), ("mode", "fine_tune")],
)
def test_bad_finetune_values_are_refused_naming_the_key(tmp_path, key, value):
    cfg = _config(tmp_path)
    raw = yaml.safe_load(cfg.source.read_text())
    raw["retrain"][key] = value
    cfg.source.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=rf"retrain\.{key}"):
        load_config(cfg.source)


def test_start_from_is_refused_outside_finetune(tmp_path):
    cfg = _config(tmp_path)
    raw = yaml.safe_load(cfg.source.read_text())
    raw["retrain"] = {"mode": "refit", "start_from": str(tmp_path)}
    cfg.source.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=r"retrain\.start_from .* is for retrain\.mode finetune only; found mode 'refit'"):
        load_config(cfg.source)


def test_a_config_that_differs_from_the_champion_is_refused_naming_each_key(tmp_path, champion):
    cfg, start = champion
    prep, model_config = load_preprocessor(start), LSTMForecaster.load(start, load_preprocessor(start)).model_config_
    assert mismatches(cfg, prep, model_config) == []
    other = cfg.model_copy(update={"features": cfg.features.model_copy(update={"lookback": 48}),
                                   "model": cfg.model.model_copy(update={"hidden_size": 32})})  # fmt: skip
    assert mismatches(other, prep, model_config) == ["features.lookback: config 48, champion 24", "model.hidden_size: config 32, champion 16"]
    # start_from_champion reuses a copy already in the run folder (no registry needed) and checks it
    run = tmp_path / "artifacts" / "retrain"
    shutil.copytree(start, artifacts.step_dir(run, artifacts.FINETUNE))
    with pytest.raises(ConfigError, match=r"ft v3: the config differs .*features\.lookback: config 48, champion 24; model\.hidden_size"):
        start_from_champion(other, run, 3)
    assert start_from_champion(cfg, run, 3).retrain.start_from == artifacts.step_dir(run, artifacts.FINETUNE).resolve()
    with pytest.raises(ConfigError, match=r"expected the champion version to start from .* found none for model 'ft'"):
        start_from_champion(cfg, run, None)
    refit = cfg.model_copy(update={"retrain": cfg.retrain.model_copy(update={"mode": "refit"})})
    assert start_from_champion(refit, run, None) is refit  # other modes are untouched


def test_weights_that_do_not_fit_the_model_section_are_refused(tmp_path, champion):
    cfg, start = champion
    other = cfg.model_copy(update={"model": cfg.model.model_copy(update={"hidden_size": 8})})
    with pytest.raises(ConfigError, match=r"ft v3\): member 0 does not fit model\.\* of the config"):
        _finetune(tmp_path, other, start, "bad")


def test_too_few_recent_steps_for_a_window_is_a_located_error(tmp_path, champion):
    cfg, start = champion
    tcfg = _finetune_cfg(cfg, start, finetune_steps=3)  # fewer than h = 4 steps: no window has all its targets there
    with pytest.raises(DataQualityError, match=r"no train windows in the last retrain\.finetune_steps = 3 steps before the tail"):
        _stages(tcfg, tmp_path / "artifacts" / "short", T1, upto="features")


def test_finetune_shares_refits_tail_and_gate(tmp_path):
    cfg = _config(tmp_path)
    tcfg = retrain_config(cfg)
    assert tcfg.features.validation_tail_steps == 24 and tcfg.gate.min_relative_improvement == 0.0
    assert tcfg.retrain.start_from is None  # named by the loop, from the check's champion
