#!/usr/bin/env bash
# Runs once, when the postgres service initialises an empty data volume (the official image runs
# /docker-entrypoint-initdb.d/*.sh). POSTGRES_DB already holds revopt's shop, truth and scores
# schemas; Airflow's metadata, MLflow's backend store and MLflow's users and permissions (basic
# auth, mlflow/serve.sh) get databases of their own.
set -euo pipefail
for database in airflow mlflow mlflow_auth; do
  psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    -c "CREATE DATABASE \"$database\" OWNER \"$POSTGRES_USER\""
done
