"""``make demo``'s entry point prints what a person needs: tasks, table, gate, registry, paths."""

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT, write_sine_case

pytestmark = pytest.mark.slow


def test_demo_runs_the_dag_and_prints_a_readable_summary(tmp_path, mlflow_server):
    config = write_sine_case(tmp_path, "demo-e2e", "demo-sine-lstm")
    env = {**os.environ, "LSTM_PIPELINE_AIRFLOW_HOME": str(tmp_path / "airflow"), "MLFLOW_TRACKING_URI": mlflow_server}
    proc = subprocess.run([sys.executable, "-m", "tools.demo", str(config)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:] + proc.stderr[-3000:]
    assert "[demo] task train_lstm ..." in out  # live progress while the DAG runs
    assert ": success in" in out and "register_model=success" in out
    assert "rows validated: 400" in out
    assert "LSTM vs baselines on the same test windows" in out and "Naive" in out
    assert "gate: PASSED" in out
    assert "LSTM 80% interval: test coverage " in out and "(95% CI " in out  # the bands' coverage, with its noise
    assert "tracked, as the monitoring loop publishes it: " in out  # and the tracked bands' (evaluation.interval_tracking_lr)
    assert "demo-sine-lstm" in out and "v1: aliases ['challenger', 'champion']" in out
    assert f"artifacts: {tmp_path / 'artifacts'}" in out and "make mlflow-ui" in out
    assert (tmp_path / "airflow" / "airflow.db").is_file()
