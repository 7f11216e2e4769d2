#!/usr/bin/env bash
# The airflow-init service: one-shot, idempotent setup before the long-running services start.
#   1. Airflow's metadata database (`airflow db migrate`, safe on an up-to-date schema);
#   2. the admin's password for Airflow 3's simple auth manager, when AIRFLOW_ADMIN_PASSWORD is
#      set (otherwise the API server generates one and prints it to its log);
#   3. revopt's PostgreSQL schemas and tables, the read-only role of downstream apps
#      (REVOPT_READER_PASSWORD) and the ClickHouse events table (`revopt init-db`).
# The config-check service (docker/check-env.sh) has refused placeholder secrets before this runs.
# Connections need no step: AIRFLOW_CONN_REVOPT_POSTGRES / AIRFLOW_CONN_REVOPT_CLICKHOUSE and
# MLFLOW_TRACKING_URI come from the environment, and `revopt init-db` reports what they resolve
# to (passwords masked) by connecting to each.
set -euo pipefail

echo "==> airflow db migrate"
airflow db migrate

if [[ -n "${AIRFLOW_ADMIN_PASSWORD:-}" ]]; then
  echo "==> simple auth manager: password of user '${AIRFLOW_ADMIN_USER:-admin}' from AIRFLOW_ADMIN_PASSWORD"
  python - <<'PY'
import json, os, pathlib

path = pathlib.Path(os.environ["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"])
path.parent.mkdir(parents=True, exist_ok=True)
passwords = json.loads(path.read_text() or "{}") if path.exists() else {}
passwords[os.environ.get("AIRFLOW_ADMIN_USER", "admin")] = os.environ["AIRFLOW_ADMIN_PASSWORD"]
path.write_text(json.dumps(passwords) + "\n")
path.chmod(0o600)
PY
fi

echo "==> revopt init-db"
revopt init-db
