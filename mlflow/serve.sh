#!/usr/bin/env bash
# Start a real MLflow tracking server + registry UI on loopback over the project's
# local store (the same store `make demo` and `lstm-pipeline train` write to by default).
#   bash mlflow/serve.sh [HOST] [PORT]      (make mlflow-ui)
# Backend store: SQLite at mlflow/store/mlflow.db; artifacts: mlflow/store/artifacts,
# served through the server (--serve-artifacts) so HTTP clients can upload models.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
host="${1:-127.0.0.1}"
port="${2:-5000}"
store="${MLFLOW_STORE:-$here/store}"
mkdir -p "$store/artifacts"
echo "MLflow UI: http://$host:$port  (backend sqlite:///$store/mlflow.db, artifacts $store/artifacts)"
# MLflow's job runner (GenAI jobs, unused by this project) keeps several polling processes: off unless set
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION="${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}"
exec "${MLFLOW_BIN:-mlflow}" server \
  --backend-store-uri "sqlite:///$store/mlflow.db" \
  --artifacts-destination "$store/artifacts" \
  --serve-artifacts \
  --host "$host" --port "$port" --workers 1
