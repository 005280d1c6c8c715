"""``make services`` (``python -m tools.services``): the stack starts on Postgres, stops, and its state survives a restart."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.conftest import _free_port

pytestmark = [pytest.mark.slow, pytest.mark.postgres]
ROOT = Path(__file__).resolve().parents[2]


def _services(root: Path, *args: str, mlflow_port: int, airflow_port: int) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "tools.services", *args, "--root", str(root), "--mlflow-port", str(mlflow_port), "--airflow-port", str(airflow_port)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env={**os.environ, "MLFLOW_TRACKING_URI": ""})
    assert proc.returncode == 0, f"{' '.join(args)}: {proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return proc


def _env(root: Path) -> dict[str, str]:
    """The variables ``.services/env`` exports."""
    return dict(line[len("export ") :].replace("'", "").split("=", 1) for line in (root / "env").read_text().splitlines())


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


@pytest.fixture
def root():
    # not under pytest's 0700 basetemp: pgserver runs Postgres as its own user when we are root
    folder = Path(tempfile.mkdtemp(prefix="pytest-services-"))
    yield folder
    subprocess.run([sys.executable, "-m", "tools.services", "stop", "--root", str(folder)], cwd=ROOT, capture_output=True, timeout=300)
    shutil.rmtree(folder, ignore_errors=True)


def test_services_start_on_postgres_stop_and_keep_their_state(root):
    import mlflow
    from pipeline.store.sql import ForecastStore

    ports = {"mlflow_port": _free_port(), "airflow_port": _free_port()}
    out = _services(root, "start", **ports).stdout
    assert f"MLflow:      http://127.0.0.1:{ports['mlflow_port']}" in out and f"Airflow:     http://127.0.0.1:{ports['airflow_port']}" in out
    assert "make services-stop" in out
    health = _get(f"http://127.0.0.1:{ports['airflow_port']}/api/v2/monitor/health")
    assert health["metadatabase"]["status"] == "healthy" and health["scheduler"]["status"] == "healthy", health
    env = _env(root)
    assert env["LSTM_PIPELINE_STORE_URL"].startswith("postgresql+psycopg://") and env["LSTM_PIPELINE_LOCK_URL"] == env["LSTM_PIPELINE_STORE_URL"]
    # Airflow's metadata is in the Postgres database `airflow` (its tables, not a SQLite file)
    airflow_db = sa.create_engine(env["LSTM_PIPELINE_STORE_URL"].replace("/forecasts?", "/airflow?"))
    with airflow_db.connect() as conn:
        assert conn.execute(sa.text("select count(*) from slot_pool where pool = 'gpu'")).scalar() == 1
    airflow_db.dispose()
    assert not list(root.rglob("*.db"))
    client = mlflow.tracking.MlflowClient(env["MLFLOW_TRACKING_URI"])
    client.create_registered_model("survives-restart")
    ForecastStore(env["LSTM_PIPELINE_STORE_URL"]).record_check({"check_id": "m@2024-01-01T00:00:00", "model_name": "m", "as_of": "2024-01-01", "decision": "ok"})

    stopped = _services(root, "stop", **ports).stdout
    assert "airflow" in stopped and "mlflow" in stopped and "postgres" in stopped
    status = _services(root, "status", **ports).stdout
    assert status.splitlines() == ["postgres: stopped", "mlflow: stopped", "airflow: stopped"]

    _services(root, "start", "--no-airflow", **ports)  # the data comes back with the servers
    assert client.get_registered_model("survives-restart").name == "survives-restart"
    assert [c["check_id"] for c in ForecastStore(env["LSTM_PIPELINE_STORE_URL"]).last_checks("m")] == ["m@2024-01-01T00:00:00"]
