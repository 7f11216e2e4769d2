#!/usr/bin/env bash
# Start the MLflow tracking server of the production stack (the `mlflow` service of
# docker-compose.yaml runs this in the revopt image, so server and clients share one MLflow).
# Authentication is always on: MLflow's basic-auth app, with users and permissions in a database
# of their own (docs/production.md, "Threat model").
#
#   MLFLOW_BACKEND_STORE_URI        runs, metrics and the model registry; required, e.g.
#                                   postgresql://user:password@postgres:5432/mlflow
#   MLFLOW_AUTH_DATABASE_URI        users and permissions; required unless MLFLOW_AUTH_CONFIG_PATH
#                                   names an auth config file of your own, e.g.
#                                   postgresql://user:password@postgres:5432/mlflow_auth
#   MLFLOW_AUTH_ADMIN_USERNAME / MLFLOW_AUTH_ADMIN_PASSWORD   the admin MLflow creates on its first
#                                   start (read by MLflow itself; the password only matters then:
#                                   change it later through MLflow's update-password API)
#   MLFLOW_FLASK_SERVER_SECRET_KEY  the auth app's CSRF key, the same for every worker; required
#   MLFLOW_ARTIFACTS_DESTINATION    where the server stores artifacts (default /opt/airflow/mlartifacts,
#                                   a volume of its own; s3://... or another store works too)
#   MLFLOW_SERVER_ALLOWED_HOSTS     Host headers the server answers (MLflow's guard against DNS
#                                   rebinding allows only localhost and private IPs by default, so the
#                                   service name `mlflow` must be listed)
#   MLFLOW_HOST / MLFLOW_PORT / MLFLOW_WORKERS   bind address (default 127.0.0.1: this host only;
#                                   the compose service binds the container's 0.0.0.0), port, workers
#
# Artifacts are proxied (--serve-artifacts): new experiments get the root mlflow-artifacts:/ and
# every client (scheduler, Celery workers on any host) uploads and downloads models through this
# server over HTTP, so nothing but the server needs the artifact volume or storage credentials.
set -euo pipefail

_refuse() {
  echo "mlflow/serve.sh: refusing to start: $*" >&2
  exit 1
}

: "${MLFLOW_BACKEND_STORE_URI:?set MLFLOW_BACKEND_STORE_URI, e.g. postgresql://user:password@postgres:5432/mlflow}"
for name in MLFLOW_AUTH_ADMIN_PASSWORD MLFLOW_FLASK_SERVER_SECRET_KEY; do
  [[ -n "${!name:-}" ]] || _refuse "$name is not set"
  [[ "${!name}" != "change-me" ]] || _refuse "$name is still the placeholder 'change-me' (.env)"
done
for name in MLFLOW_BACKEND_STORE_URI MLFLOW_AUTH_DATABASE_URI; do
  [[ ! "${!name:-}" =~ ^[^/]*//[^/@]*:change-me@ ]] || _refuse "the password in $name is still the placeholder 'change-me' (.env)"
done

if [[ -z "${MLFLOW_AUTH_CONFIG_PATH:-}" ]]; then
  : "${MLFLOW_AUTH_DATABASE_URI:?set MLFLOW_AUTH_DATABASE_URI (users and permissions), e.g. postgresql://user:password@postgres:5432/mlflow_auth}"
  # MLflow reads its auth settings from an ini file only: write one, readable by this user alone
  # (it holds the database password). configparser treats % as interpolation, hence %%.
  MLFLOW_AUTH_CONFIG_PATH="$(umask 077 && mktemp "${TMPDIR:-/tmp}/mlflow-auth.XXXXXX.ini")"
  cat >"$MLFLOW_AUTH_CONFIG_PATH" <<INI
[mlflow]
# Every user may read every experiment and model; writing (a model version, the champion alias)
# needs EDIT or MANAGE on that resource, which its creator and the admin have.
default_permission = READ
database_uri = ${MLFLOW_AUTH_DATABASE_URI//%/%%}
admin_username = admin
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
# Without this cache every request pays a PBKDF2 password check (about a second of CPU here). The
# price: a changed or deleted password still works on the other workers for up to a minute.
auth_cache_ttl_seconds = 60
INI
  export MLFLOW_AUTH_CONFIG_PATH
fi

exec mlflow server \
  --app-name basic-auth \
  --backend-store-uri "$MLFLOW_BACKEND_STORE_URI" \
  --serve-artifacts \
  --artifacts-destination "${MLFLOW_ARTIFACTS_DESTINATION:-/opt/airflow/mlartifacts}" \
  --host "${MLFLOW_HOST:-127.0.0.1}" \
  --port "${MLFLOW_PORT:-5000}" \
  --workers "${MLFLOW_WORKERS:-2}" \
  "$@"
