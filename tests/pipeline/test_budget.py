"""The training budget (``training.max_steps``, ``training.max_time``) and the stop reason it records."""

import itertools
import math
from datetime import timedelta

import pytest
import torch

from pipeline.core.config import TrainingConfig
from pipeline.models.lstm import WindowTensors
from pipeline.training.lstm import STOP_REASONS, TrainResult, _val_loss, train_member

CPU = torch.device("cpu")


def _with(cfg, **training):
    """``cfg`` with ``training`` keys replaced (``model_copy`` does not validate: give ``max_time`` as a timedelta)."""
    return cfg.model_copy(update={"training": cfg.training.model_copy(update=training)})


def _served_val_loss(model, fs) -> float:
    tensors = WindowTensors(fs, CPU)
    return _val_loss(model, tensors, tensors.starts(fs, "val"))


def test_max_steps_ends_training_part_way_through_an_epoch_and_keeps_the_best_weights(tiny_features, tmp_path):
    cfg, fs = tiny_features
    per_epoch = math.ceil(len(fs.starts["train"]) / cfg.training.batch_size)
    max_steps = 8 * per_epoch + per_epoch // 2  # the budget ends epoch 9 half way
    cfg = _with(cfg, learning_rate=0.05, max_epochs=60, min_epochs=60, lr_patience=50, max_steps=max_steps, max_time=None)
    model, result = train_member(fs, cfg, tmp_path / "m", seed=1, device=CPU)
    assert result.stop_reason == "max_steps" and not result.stopped_early
    assert result.steps == max_steps and len(result.history) == 9  # 8 whole epochs and a part one
    assert [r["steps"] for r in result.history] == [per_epoch * e for e in range(1, 9)] + [max_steps]
    best = min(r["val_loss"] for r in result.history)
    assert result.history[-1]["val_loss"] > best  # the last (part) epoch is not the best one ...
    assert _served_val_loss(model, fs) == pytest.approx(best, rel=1e-5)  # ... and the best is what is returned


def test_max_time_ends_training_after_the_step_that_used_it_up(tiny_features, tmp_path):
    cfg, fs = tiny_features
    cfg = _with(cfg, max_epochs=40, min_epochs=40, max_time=timedelta(microseconds=1))  # gone after the first step
    model, result = train_member(fs, cfg, tmp_path / "m", seed=1, device=CPU)
    assert result.stop_reason == "max_time" and not result.stopped_early
    assert result.steps == 1 and len(result.history) == 1 and result.history[0]["steps"] == 1
    assert _served_val_loss(model, fs) == pytest.approx(result.best_val_loss, rel=1e-5)
    again, resumed = train_member(fs, cfg, tmp_path / "m", seed=1, device=CPU)  # a finished run returns at once
    assert resumed.stop_reason == "max_time" and resumed.steps == 1 and len(resumed.history) == 1


def test_early_stopping_and_max_epochs_are_reported_as_such(tiny_features, tmp_path):
    cfg, fs = tiny_features
    early = _with(cfg, learning_rate=0.05, max_epochs=60, min_epochs=1, patience=2, lr_patience=50, max_steps=10_000)
    _, result = train_member(fs, early, tmp_path / "early", seed=1, device=CPU)
    assert result.stop_reason == "early_stopping" and result.stopped_early and len(result.history) < 60
    _, result = train_member(fs, _with(cfg, max_epochs=3, min_epochs=3), tmp_path / "epochs", seed=1, device=CPU)
    assert result.stop_reason == "max_epochs" and len(result.history) == 3 and not result.stopped_early
    assert set(STOP_REASONS) == {"early_stopping", "max_epochs", "max_steps", "max_time"}


def test_max_time_is_shared_by_the_members_what_one_leaves_goes_to_the_next(tiny_features, tmp_path, monkeypatch):
    import pipeline.training.lstm as training

    cfg, fs = tiny_features
    cfg = _with(cfg, n_seeds=3, max_time=timedelta(seconds=90))
    shares, used = [], itertools.cycle([10.0, 50.0, 5.0])

    def fake_member(fs, cfg, folder, seed, device, on_epoch_end=None, time_budget_s=None, start=None, member=0):
        shares.append(time_budget_s)
        return torch.nn.Linear(1, 1), TrainResult(seconds=next(used), stop_reason="early_stopping")

    monkeypatch.setattr(training, "train_member", fake_member)
    training.fit_members(fs, cfg, tmp_path, device="cpu")
    assert shares == pytest.approx([30.0, 40.0, 30.0])  # 90/3; (90-10)/2; (90-10-50)/1
    shares.clear()
    training.fit_members(fs, _with(cfg, max_time=None), tmp_path, device="cpu")
    assert shares == [None, None, None]


@pytest.mark.parametrize(
    "given,seconds",
    [(480, 480.0), (0.5, 0.5), ("00:08:00", 480.0), ("01:00:00:00", 86_400.0), ("8min", 480.0), ("PT8M", 480.0)],
)
def test_max_time_spellings(given, seconds):
    assert TrainingConfig(max_time=given).max_time.total_seconds() == seconds
    dumped = TrainingConfig(max_time=given).model_dump(mode="json")  # what save_resolved writes ...
    assert TrainingConfig.model_validate(dumped).max_time.total_seconds() == seconds  # ... reads back the same


def test_the_default_budget_is_five_minutes_of_wall_clock_and_no_step_limit():
    tc = TrainingConfig()
    assert tc.max_time.total_seconds() == 300 and tc.max_steps is None
    assert TrainingConfig(max_time=None).max_time is None


@pytest.mark.parametrize("bad", ["08:00", "soon", 0, -5, True, "-1min"])
def test_a_bad_max_time_is_a_config_error_naming_the_key_and_the_forms(make_case, bad):
    from pipeline.core.config import load_config
    from pipeline.core.errors import ConfigError

    config, _ = make_case(training={"max_time": bad})
    with pytest.raises(ConfigError, match=r"training\.max_time: .*expected a positive duration: seconds \(480\), 'HH:MM:SS'") as err:
        load_config(config)
    assert repr(bad) in str(err.value)
