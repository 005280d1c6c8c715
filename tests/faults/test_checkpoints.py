"""Checkpoint faults: changed data, corrupt or truncated files, a kill in the middle of a write."""

import dataclasses
import logging
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from pipeline.training.lstm import CHECKPOINT, train_member

CPU = torch.device("cpu")


def _short(cfg, epochs: int):
    return cfg.model_copy(update={"training": cfg.training.model_copy(update={"max_epochs": epochs, "min_epochs": epochs})})


def test_changed_data_of_the_same_shape_does_not_resume_the_old_model(tiny_features, tmp_path):
    cfg, fs = tiny_features
    cfg = _short(cfg, 2)
    train_member(fs, cfg, tmp_path / "m", seed=1, device=CPU)
    other = dataclasses.replace(fs, values=(fs.values * 1.5).astype(np.float32), target=(fs.target + 0.25).astype(np.float32))
    _, result = train_member(other, cfg, tmp_path / "m", seed=1, device=CPU)
    assert result.resumed_from_epoch == 0 and [r["epoch"] for r in result.history] == [1, 2]


def test_changed_fitted_preprocessing_does_not_resume(tiny_features, tmp_path):
    cfg, fs = tiny_features
    cfg = _short(cfg, 2)
    train_member(fs, cfg, tmp_path / "m", seed=1, device=CPU)
    state = {k: [v * 2 for v in values] for k, values in fs.prep.scaler_state.items()}  # a scaler fitted on other data
    prep = dataclasses.replace(fs.prep, scaler_state=state)
    _, result = train_member(dataclasses.replace(fs, prep=prep), cfg, tmp_path / "m", seed=1, device=CPU)
    assert result.resumed_from_epoch == 0


def test_a_truncated_checkpoint_is_set_aside_and_training_resumes_from_the_previous_one(tiny_features, tmp_path, caplog):
    cfg, fs = tiny_features
    folder = tmp_path / "m"
    train_member(fs, _short(cfg, 3), folder, seed=1, device=CPU)  # checkpoint.pt: epoch 3, .prev: epoch 2
    ckpt = folder / CHECKPOINT
    ckpt.write_bytes(ckpt.read_bytes()[:100])  # a disk that filled up mid-write
    with caplog.at_level(logging.WARNING, logger="pipeline.training.lstm"):
        _, result = train_member(fs, _short(cfg, 3), folder, seed=1, device=CPU)
    assert result.resumed_from_epoch == 2 and [r["epoch"] for r in result.history] == [1, 2, 3]
    assert (folder / (CHECKPOINT + ".corrupt")).exists() and "corrupt or truncated" in caplog.text


def test_garbage_in_every_checkpoint_retrains_from_the_start(tiny_features, tmp_path):
    cfg, fs = tiny_features
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / CHECKPOINT).write_bytes(b"not a checkpoint")
    (folder / (CHECKPOINT + ".prev")).write_bytes(b"")
    _, result = train_member(fs, _short(cfg, 2), folder, seed=1, device=CPU)
    assert result.resumed_from_epoch == 0 and len(result.history) == 2


def test_a_kill_in_the_middle_of_a_checkpoint_write_resumes_from_the_last_complete_one(tiny_features, tmp_path):
    """A real process is SIGKILLed after epoch 2's temporary file is written, before its rename."""
    cfg, fs = tiny_features
    from pipeline.features.windowing import save_features

    feats = save_features(fs, tmp_path / "features")
    cfg_path = tmp_path / "cfg.json"
    cfg_path.write_text(_short(cfg, 4).model_dump_json())
    script = textwrap.dedent(f"""
        import os
        from pathlib import Path

        import torch
        from pipeline.core.config import PipelineConfig
        from pipeline.features.windowing import load_features
        from pipeline.training.lstm import train_member
        def arm(epoch, row):  # epoch 1's checkpoint is complete; kill during epoch 2's write
            os.environ["LSTM_PIPELINE_FAULT"] = "checkpoint_written_before_rename"

        cfg = PipelineConfig.model_validate_json(Path({str(cfg_path)!r}).read_text())
        train_member(load_features(Path({str(feats)!r})), cfg, Path({str(tmp_path / "m")!r}), 1, torch.device("cpu"), on_epoch_end=arm)
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    folder = tmp_path / "m"
    assert list(folder.glob(".checkpoint.pt.tmp-*")), "the kill should leave a half-finished temporary file"
    _, result = train_member(fs, _short(cfg, 4), folder, seed=1, device=CPU)
    assert result.resumed_from_epoch == 1 and [r["epoch"] for r in result.history] == [1, 2, 3, 4]


@pytest.mark.slow
def test_a_kill_while_the_training_folder_is_written_leaves_the_previous_one_whole_and_a_rerun_resumes(tiny_features, tmp_path):
    """``run_training`` writes ``<run>/training/`` atomically; checkpoints live in ``<run>/checkpoints/``."""
    from pipeline.core import artifacts
    from pipeline.features.windowing import save_features
    from pipeline.training.lstm import run_training

    cfg, fs = tiny_features
    cfg = _short(cfg, 2)
    feats = save_features(fs, tmp_path / "features")
    run = tmp_path / "run"
    first = run_training(cfg, run, feats)
    training = artifacts.step_dir(run, artifacts.TRAINING)
    assert first["training"] == str(training) and artifacts.MODEL_WEIGHTS.at(training).is_file()
    assert not (training / artifacts.CHECKPOINTS).exists(), "checkpoints are not part of the published training step"
    assert list(artifacts.step_dir(run, artifacts.CHECKPOINTS).rglob(artifacts.CHECKPOINT.name))
    before = {p.name: p.read_bytes() for p in training.iterdir()}

    longer = _short(cfg, 3)
    cfg_path = tmp_path / "cfg.json"
    cfg_path.write_text(longer.model_dump_json())
    script = textwrap.dedent(f"""
        from pathlib import Path
        from pipeline.core.config import PipelineConfig
        from pipeline.training.lstm import run_training
        cfg = PipelineConfig.model_validate_json(Path({str(cfg_path)!r}).read_text())
        run_training(cfg, Path({str(run)!r}), Path({str(feats)!r}))
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "LSTM_PIPELINE_FAULT": "training_written_before_rename"}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert {p.name: p.read_bytes() for p in training.iterdir()} == before, "a kill mid-write must leave the previous training step as it was"

    again = run_training(longer, run, feats)  # resumes from epoch 3's checkpoint, written before the kill
    facts = artifacts.read_json(artifacts.TRAINING_FACTS.at(again["training"]))
    assert facts["resumed_from_epoch"] == [3] and facts["epochs_run"] == [3]
    assert facts["batch_size"] == [longer.training.batch_size]  # the batch used is recorded with the facts
