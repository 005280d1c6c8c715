-- Run once by the postgres image on an empty data volume (/docker-entrypoint-initdb.d/), as POSTGRES_USER.
-- mlflow: MLflow's backend store and model registry; airflow: Airflow's metadata database;
-- forecasts: the forecast store, the alias-event log and the registry's advisory locks
-- (LSTM_PIPELINE_STORE_URL, LSTM_PIPELINE_LOCK_URL). The same three as `make services` (tools/services.py).
CREATE DATABASE mlflow;
CREATE DATABASE airflow;
CREATE DATABASE forecasts;
