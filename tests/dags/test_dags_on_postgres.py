"""The training and monitoring DAGs with every store on one real Postgres server (issue 26).

Airflow's metadata database, MLflow's backend store and the forecast store are three databases
of the ``pgserver`` fixture's server; the URLs reach the tasks only through the environment
(``AIRFLOW__DATABASE__SQL_ALCHEMY_CONN``, ``MLFLOW_TRACKING_URI``, ``LSTM_PIPELINE_STORE_URL``,
``LSTM_PIPELINE_LOCK_URL``), the way ``make services`` and docker/compose.yaml set them. The
config names no store at all: a row in a SQLite file would mean a URL was not honoured.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest
import sqlalchemy as sa
import yaml

from pipeline.registry.aliases import LOCK_URL_ENV
from pipeline.store.sql import STORE_URL_ENV
from tests.conftest import sine_frame, write_sine_case
from tools.airflow_local import airflow_env, init_airflow, run_dag_test

pytestmark = [pytest.mark.slow, pytest.mark.postgres]
MODEL = "pg-dag-sine"
T0 = pd.Timestamp("2024-01-17 16:00")
T = T0 + pd.Timedelta("3D")


def _config(root, frame: pd.DataFrame, name: str) -> str:
    raw = yaml.safe_load((root / "config.yaml").read_text())
    frame.to_csv(root / f"{name}.csv", index=False)
    raw["data"]["path"] = str(root / f"{name}.csv")
    raw["monitoring"] = {"window": "2D", "min_origins": 24, "max_staleness": "1D"}  # no store_url: the environment's
    (root / f"{name}.yaml").write_text(yaml.safe_dump(raw))
    return str(root / f"{name}.yaml")


@pytest.fixture(scope="module")
def stack(tmp_path_factory, postgres, mlflow_server_postgres):
    home = tmp_path_factory.mktemp("airflow-postgres")
    airflow_url, store_url = postgres("airflow"), postgres("forecasts")
    env = init_airflow(home, airflow_env(home, {
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": airflow_url,
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC": airflow_url.replace("postgresql+psycopg://", "postgresql+psycopg_async://"),
        "MLFLOW_TRACKING_URI": mlflow_server_postgres, STORE_URL_ENV: store_url, LOCK_URL_ENV: store_url,
    }))  # fmt: skip
    root = tmp_path_factory.mktemp("pg-dag-case")
    write_sine_case(root, "pg-dag", MODEL)
    frame = sine_frame(n=600)
    scaled = frame.copy()
    after = pd.to_datetime(scaled["time"]) >= T0
    scaled.loc[after, "load"] = scaled.loc[after, "load"] * 3
    config = _config(root, frame, "train")
    trained = run_dag_test("lstm_training", {"config_path": config, "as_of": T0.isoformat(), "reason": "postgres-e2e"}, env)
    monitored = run_dag_test("lstm_monitoring", {"config_path": _config(root, scaled, "scaled"), "as_of": T.isoformat(), "since": T0.isoformat()}, env)
    return {"env": env, "home": home, "root": root, "airflow": airflow_url, "store": store_url, "mlflow": mlflow_server_postgres,
            "trained": trained, "monitored": monitored}  # fmt: skip


def _rows(url: str, query: str) -> list[tuple]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(sa.text(query))]
    finally:
        engine.dispose()


def test_the_training_dag_runs_on_postgres_metadata_and_registers_on_a_postgres_backed_mlflow(stack):
    import mlflow

    trained = stack["trained"]
    assert trained["state"] == "success", trained["log"][-5000:]
    assert set(trained["tasks"].values()) == {"success"}, trained["tasks"]
    runs = _rows(stack["airflow"], "select dag_id, run_id, state from dag_run where dag_id = 'lstm_training'")
    assert (trained["run_id"], "success") in {(r[1], r[2]) for r in runs}  # the run is in Postgres, not in a SQLite file
    assert not (stack["home"] / "airflow.db").exists()
    client = mlflow.tracking.MlflowClient(stack["mlflow"])
    mv = client.get_model_version_by_alias(MODEL, "champion")
    assert mv.version == "1" and client.get_run(mv.run_id).data.tags["airflow_run_id"] == trained["run_id"]
    assert _mlflow_db(stack).startswith("mlflow_")  # MLflow's own tables, in Postgres, hold the model


def _mlflow_db(stack) -> str:
    """The database name behind the MLflow server (the fixture's ``mlflow_*`` database)."""
    names = [r[0] for r in _rows(stack["airflow"], "select datname from pg_database where datname like 'mlflow_%'")]
    assert names, "no mlflow database on the server"
    for name in names:
        url = sa.engine.make_url(stack["airflow"]).set(database=name).render_as_string(hide_password=False)
        if ("registered_models",) in _rows(url, "select table_name from information_schema.tables where table_schema = 'public'"):
            if _rows(url, f"select name from registered_models where name = '{MODEL}'"):
                return name
    raise AssertionError(f"no MLflow database among {names} holds {MODEL}")


def test_a_monitoring_check_writes_its_rows_to_the_postgres_forecast_store_and_triggers_on_postgres(stack):
    monitored = stack["monitored"]
    assert monitored["tasks"]["decide"] == "success", monitored["log"][-5000:]
    assert monitored["tasks"]["trigger_retrain"] == "success", monitored["tasks"]
    checks = _rows(stack["store"], "select check_id, decision, payload from checks")
    assert [(c[0], c[1]) for c in checks] == [(f"{MODEL}@{T.isoformat()}", "retrain")]
    payload = checks[0][2] if isinstance(checks[0][2], dict) else json.loads(checks[0][2])
    assert payload["rolling_rmse"] > payload["threshold"]
    (n_forecasts,) = _rows(stack["store"], f"select count(*) from forecasts where model_name = '{MODEL}' and alias = 'champion'")[0]
    (n_scores,) = _rows(stack["store"], f"select count(*) from scores where model_name = '{MODEL}'")[0]
    assert n_forecasts >= 24 * 4 and n_scores >= 24 * 4  # min_origins x h, at least
    (version,) = _rows(stack["store"], "select max(version) from schema_version")[0]
    from pipeline.store.sql import SCHEMA_VERSION

    assert version == SCHEMA_VERSION
    retrains = _rows(stack["airflow"], "select run_id from dag_run where dag_id = 'lstm_training' and run_id like 'retrain__%'")
    assert retrains == [(f"retrain__{MODEL}_{T.isoformat().replace(':', '_')}",)]
    assert not list(stack["root"].rglob("*.db"))  # no SQLite store was written beside the case
