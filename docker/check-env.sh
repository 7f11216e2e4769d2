#!/usr/bin/env bash
# The config-check service: one-shot, before every other service of docker-compose.yaml (postgres
# and clickhouse included: they keep the password of their first start, so a placeholder must
# never reach them). Exits non-zero, naming each offending .env variable, when
#   - a secret is missing or still the placeholder `change-me` of .env.example;
#   - a user name, password or database name that docker-compose.yaml puts into connection URLs
#     holds a character other than letters, digits and - _ . ~ (those need no percent-encoding);
#   - the MLflow admin's password is shorter than MLflow accepts (12 characters).
# Values are never printed. Sourcing this file only defines check_env (tests/unit/test_compose.py).
set -euo pipefail

# Secrets of .env: each must be set and not the placeholder; the optional ones may be empty.
REQUIRED_SECRETS=(POSTGRES_PASSWORD CLICKHOUSE_PASSWORD REVOPT_READER_PASSWORD AIRFLOW_JWT_SECRET
                  AIRFLOW_API_SECRET_KEY MLFLOW_AUTH_ADMIN_PASSWORD MLFLOW_FLASK_SERVER_SECRET_KEY)
# AIRFLOW_ADMIN_PASSWORD empty: the API server generates one; AIRFLOW_FERNET_KEY empty: unencrypted.
OPTIONAL_SECRETS=(AIRFLOW_ADMIN_PASSWORD AIRFLOW_FERNET_KEY)
# Written into URLs by docker-compose.yaml as they are.
IN_URLS=(POSTGRES_USER POSTGRES_PASSWORD POSTGRES_DB CLICKHOUSE_USER CLICKHOUSE_PASSWORD REVOPT_READER_PASSWORD)
PLACEHOLDER=change-me
MLFLOW_MIN_PASSWORD_LENGTH=12

check_env() {
  local name problems=()
  for name in "${REQUIRED_SECRETS[@]}"; do
    if [[ -z "${!name:-}" ]]; then
      problems+=("$name is not set: give it a secret of your own in .env")
    elif [[ "${!name}" == "$PLACEHOLDER" ]]; then
      problems+=("$name is still the placeholder '$PLACEHOLDER': give it a secret of your own in .env")
    fi
  done
  for name in "${OPTIONAL_SECRETS[@]}"; do
    if [[ "${!name:-}" == "$PLACEHOLDER" ]]; then
      problems+=("$name is still the placeholder '$PLACEHOLDER': set a secret of your own in .env, or leave it empty")
    fi
  done
  for name in "${IN_URLS[@]}"; do
    if [[ -z "${!name:-}" ]]; then
      [[ " ${REQUIRED_SECRETS[*]} " == *" $name "* ]] || problems+=("$name is not set (.env)")
    elif [[ ! "${!name}" =~ ^[A-Za-z0-9._~-]+$ ]]; then
      problems+=("$name may hold only letters, digits and - _ . ~ (it goes into connection URLs as it is)")
    fi
  done
  if [[ -n "${MLFLOW_AUTH_ADMIN_PASSWORD:-}" && "${#MLFLOW_AUTH_ADMIN_PASSWORD}" -lt "$MLFLOW_MIN_PASSWORD_LENGTH" ]]; then
    problems+=("MLFLOW_AUTH_ADMIN_PASSWORD must have at least $MLFLOW_MIN_PASSWORD_LENGTH characters (MLflow refuses shorter ones)")
  fi
  if ((${#problems[@]})); then
    printf 'config-check: refusing to start the stack:\n' >&2
    printf '  - %s\n' "${problems[@]}" >&2
    printf 'Generate secrets with: python3 -c "import secrets; print(secrets.token_urlsafe(32))"\n' >&2
    return 1
  fi
  echo "config-check: every secret is set and none is a placeholder"
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  check_env
fi
