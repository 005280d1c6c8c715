"""Training progress a user sees: a bar on a terminal, plain lines (no ``\\r``, no escape codes) elsewhere."""

import io
import logging
import subprocess
import sys

import pytest
import yaml

from pipeline.core.progress import LOGGER, Progress
from tests.conftest import FAST_MODEL, ROOT, sine_frame, tiny_config_dict


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_off_a_terminal_progress_is_plain_periodic_lines_in_the_log(caplog):
    stream = io.StringIO()  # not a terminal
    with caplog.at_level(logging.INFO, logger=LOGGER):
        bar = Progress(5, "LSTM seed 1", "epoch", every_s=3600, stream=stream)
        for epoch in range(1, 5):
            bar.update(1, train=f"{0.5 / epoch:.3g}", val="0.2")
        bar.close(stopped="early_stopping")
    lines = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert stream.getvalue() == ""  # no bar drawn
    assert len(lines) == 2  # the first update, then nothing within every_s, then the last state at close
    assert lines[0].startswith("LSTM seed 1: epoch 1/5, train 0.5, val 0.2, ") and lines[0].endswith(" elapsed")
    assert lines[1].startswith("LSTM seed 1: epoch 4/5, train 0.125, val 0.2, stopped early_stopping, ")
    assert not any("\r" in ln or "\x1b" in ln for ln in lines)


def test_every_s_zero_writes_a_line_per_update_and_disabled_writes_nothing(caplog):
    with caplog.at_level(logging.INFO, logger=LOGGER):
        with Progress(3, "fits", "fit", every_s=0, stream=io.StringIO()) as bar:
            for _ in range(3):
                bar.update(1)
        with Progress(3, "quiet", "fit", enabled=False, every_s=0, stream=io.StringIO()) as bar:
            bar.update(3)
    assert [r.getMessage().split(",")[0] for r in caplog.records] == ["fits: fit 1/3", "fits: fit 2/3", "fits: fit 3/3"]


def test_progress_inside_a_long_unit_is_a_line_when_due_and_not_kept_for_the_next(caplog):
    """A first epoch of a minute on big data: its batches show up (a line at most every every_s), and the epoch's own
    line after it does not repeat the batch count."""
    with caplog.at_level(logging.INFO, logger=LOGGER):
        bar = Progress(3, "LSTM seed 1", "epoch", every_s=0, stream=io.StringIO())
        bar.note(batch="120/450 of epoch 1")
        bar.update(1, train="0.5")
        quiet = Progress(3, "LSTM seed 2", "epoch", every_s=3600, stream=io.StringIO())
        quiet.update(1)
        quiet.note(batch="1/450 of epoch 2")  # within every_s of the last line: nothing
    lines = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert lines[0].startswith("LSTM seed 1: epoch 0/3, batch 120/450 of epoch 1, ")
    assert lines[1].startswith("LSTM seed 1: epoch 1/3, train 0.5, ") and "batch" not in lines[1]
    assert len(lines) == 3 and "batch" not in lines[2]


def test_on_a_terminal_progress_is_a_bar_and_no_log_lines(caplog):
    tty = _Terminal()
    with caplog.at_level(logging.INFO, logger=LOGGER):
        with Progress(4, "LSTM seed 1", "epoch", stream=tty) as bar:
            bar.update(1, val="0.2")
    assert "LSTM seed 1" in tty.getvalue() and "\r" in tty.getvalue()  # tqdm redraws the line in place
    assert [r for r in caplog.records if r.name == LOGGER] == []


@pytest.mark.slow  # a whole `train` in a subprocess (17 s): make test only
def test_train_redirected_to_files_prints_plain_progress_lines(tmp_path):
    csv = tmp_path / "input.csv"
    sine_frame(n=300).to_csv(csv, index=False)
    raw = tiny_config_dict(csv, tmp_path / "artifacts", features={"lookback": 24, "horizon": 4}, model=FAST_MODEL,
                           training={"max_epochs": 4, "min_epochs": 4, "progress": True},
                           baselines={"models": ["Naive", "SeasonalNaive"], "season_length": 24, "n_jobs": 1, "progress": True})  # fmt: skip
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(raw))
    with open(tmp_path / "out.txt", "w") as out, open(tmp_path / "err.txt", "w") as err:
        proc = subprocess.run([sys.executable, "-m", "pipeline.cli", "train", "--config", str(tmp_path / "config.yaml"), "--no-register"],
                              cwd=ROOT, stdout=out, stderr=err, timeout=300, check=False)  # fmt: skip
    text = (tmp_path / "out.txt").read_text() + (tmp_path / "err.txt").read_text()
    assert proc.returncode == 0, text[-3000:]
    assert "\r" not in text and "\x1b" not in text  # no bar redraws, no escape codes in a file
    err_lines = (tmp_path / "err.txt").read_text().splitlines()
    epochs = [ln for ln in err_lines if ln.startswith("LSTM seed 7: epoch ")]
    assert epochs and epochs[0].startswith("LSTM seed 7: epoch 1/4, train ") and "val " in epochs[0] and epochs[0].endswith(" elapsed")
    assert epochs[-1].startswith("LSTM seed 7: epoch 4/4,") and "stopped max_epochs" in epochs[-1]
    assert any(ln.startswith("baseline fits: fit ") for ln in err_lines)


def test_the_demo_echoes_pipeline_log_lines_of_any_module_depth():
    from tools.airflow_local import _progress_line

    task_log = "2026-12-04T10:00:00.000000Z [info     ] LSTM seed 42: epoch 3/30, val 0.2, 12s elapsed [pipeline.progress] loc=progress.py:90"
    assert _progress_line(task_log) == "    LSTM seed 42: epoch 3/30, val 0.2, 12s elapsed"
    nested = "2026-12-04T10:00:00Z [info     ] seed 42: training stopped by max_time [pipeline.training.lstm] loc=lstm.py:510"
    assert _progress_line(nested) == "    seed 42: training stopped by max_time"
    assert _progress_line("2026-12-04T10:00:00Z [info     ] Filling up the DagBag [airflow.models.dagbag.DagBag]") is None
