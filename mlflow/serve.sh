#!/usr/bin/env bash
# Start the MLflow tracking server of the production stack (the `mlflow` service of
# docker-compose.yaml runs this in the revopt image, so server and clients share one MLflow).
#
#   MLFLOW_BACKEND_STORE_URI      runs, metrics and the model registry; required, e.g.
#                                 postgresql://user:password@postgres:5432/mlflow
#   MLFLOW_ARTIFACTS_DESTINATION  where the server stores artifacts (default /opt/airflow/mlartifacts,
#                                 a volume of its own; s3://... or another store works too)
#   MLFLOW_SERVER_ALLOWED_HOSTS   Host headers the server answers (MLflow's guard against DNS
#                                 rebinding allows only localhost and private IPs by default, so the
#                                 service name `mlflow` must be listed)
#   MLFLOW_HOST / MLFLOW_PORT / MLFLOW_WORKERS   bind address, port, uvicorn workers
#
# Artifacts are proxied (--serve-artifacts): new experiments get the root mlflow-artifacts:/ and
# every client (scheduler, Celery workers on any host) uploads and downloads models through this
# server over HTTP, so nothing but the server needs the artifact volume or storage credentials.
set -euo pipefail
: "${MLFLOW_BACKEND_STORE_URI:?set MLFLOW_BACKEND_STORE_URI, e.g. postgresql://user:password@postgres:5432/mlflow}"

exec mlflow server \
  --backend-store-uri "$MLFLOW_BACKEND_STORE_URI" \
  --serve-artifacts \
  --artifacts-destination "${MLFLOW_ARTIFACTS_DESTINATION:-/opt/airflow/mlartifacts}" \
  --host "${MLFLOW_HOST:-0.0.0.0}" \
  --port "${MLFLOW_PORT:-5000}" \
  --workers "${MLFLOW_WORKERS:-2}" \
  "$@"
