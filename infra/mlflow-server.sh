#!/usr/bin/env bash
# Start an MLflow tracking server with a database backend and an artifact root it serves
# (clients log and read artifacts through the server: --serve-artifacts).
# Point a pipeline at it with  [tracking] mlflow_uri = "http://127.0.0.1:5000".
#
#   infra/mlflow-server.sh                       # ./mlflow-server/{mlflow.db,artifacts}, 127.0.0.1:5000
#   STORE=/srv/mlflow PORT=5001 infra/mlflow-server.sh
#   BACKEND_STORE_URI=postgresql://mlflow:PASSWORD@db.internal:5432/mlflow \
#     ARTIFACTS_DESTINATION=s3://bucket/mlflow infra/mlflow-server.sh    # needs psycopg2 / boto3
#
# Binds to 127.0.0.1 by default (HOST=0.0.0.0 to listen everywhere): put TLS and
# authentication in front of it (a reverse proxy) before exposing it to other organizations.
# tests/pipelines/test_mlflow_server.py starts the same server and runs a federation against it.
set -euo pipefail
STORE="${STORE:-$PWD/mlflow-server}"
BACKEND_STORE_URI="${BACKEND_STORE_URI:-sqlite:///$STORE/mlflow.db}"
ARTIFACTS_DESTINATION="${ARTIFACTS_DESTINATION:-$STORE/artifacts}"
if [[ "$BACKEND_STORE_URI" == sqlite:* || "$ARTIFACTS_DESTINATION" != *://* ]]; then
  mkdir -p "$STORE"
fi
[[ "$ARTIFACTS_DESTINATION" == *://* ]] || mkdir -p "$ARTIFACTS_DESTINATION"
exec mlflow server \
  --backend-store-uri "$BACKEND_STORE_URI" \
  --artifacts-destination "$ARTIFACTS_DESTINATION" \
  --serve-artifacts \
  --host "${HOST:-127.0.0.1}" --port "${PORT:-5000}" --workers "${WORKERS:-2}"
