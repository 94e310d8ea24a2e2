#!/usr/bin/env bash
# Start an MLflow tracking server with a database backend and an artifact root.
# Point a pipeline at it with  [tracking] mlflow_uri = "http://127.0.0.1:5000".
#
#   infra/mlflow-server.sh                       # ./mlflow-server/{mlflow.db,artifacts}, 127.0.0.1:5000
#   STORE=/srv/mlflow HOST=127.0.0.1 PORT=5000 infra/mlflow-server.sh
#
# Binds to 127.0.0.1 by default: put TLS and authentication in front of it
# (a reverse proxy) before exposing it to other organizations.
set -euo pipefail
STORE="${STORE:-$PWD/mlflow-server}"
mkdir -p "$STORE/artifacts"
exec mlflow server \
  --backend-store-uri "sqlite:///$STORE/mlflow.db" \
  --artifacts-destination "$STORE/artifacts" \
  --serve-artifacts \
  --host "${HOST:-127.0.0.1}" --port "${PORT:-5000}"
