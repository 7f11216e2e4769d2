"""The pieces of the production stack (docker-compose.yaml) that run without Docker, for real:

- ``revopt init-db``, which the ``airflow-init`` service runs, creates every revopt table and is
  idempotent (here on the embedded PostgreSQL and chDB; in the stack on the servers);
- ``mlflow/serve.sh``, which the ``mlflow`` service runs, serves tracking, the model registry and
  proxied artifacts on a PostgreSQL backend store, and answers the Host header the clients in the
  stack use (``mlflow:5000``) while refusing others;
- with MLflow's basic auth on (users and permissions in a PostgreSQL database of their own): an
  anonymous request gets 401, the admin (the tasks' account) logs, registers and moves
  ``@champion``, a user MLflow's default permission (READ) covers cannot move it until granted EDIT
  on the model, and the server listens only on the address it is told.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import yaml

from revopt import cli
from revopt.platform import contract
from revopt.platform.stack import connect_postgres, event_store, postgres_url

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


def _tables(conn, schema: str) -> set[str]:
    rows = conn.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,)).fetchall()
    return {name for (name,) in rows}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _compose_allowed_hosts() -> str:
    service = yaml.safe_load((ROOT / "docker-compose.yaml").read_text())["services"]["mlflow"]
    value = service["environment"]["MLFLOW_SERVER_ALLOWED_HOSTS"]
    return re.fullmatch(r"\$\{MLFLOW_SERVER_ALLOWED_HOSTS:-(.*)\}", value).group(1)


_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))
# Not the loopback address clients use by default: a server told to listen here must not answer
# on 127.0.0.1 (Linux routes all of 127.0.0.0/8 to the loopback interface).
MLFLOW_BIND = "127.0.0.2"
MODEL = "revopt_purchase_propensity"


def _get(url: str, host: str, credentials: tuple[str, str] | None = None) -> int:
    """HTTP status of a GET with the given Host header and basic-auth credentials (0: nothing listens)."""
    headers = {"Host": host}
    if credentials:
        headers["Authorization"] = "Basic " + base64.b64encode(":".join(credentials).encode()).decode()
    request = urllib.request.Request(url, headers=headers)
    try:
        with _DIRECT.open(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except urllib.error.URLError:
        return 0


def _database_url(settings, database: str) -> str:
    with connect_postgres(settings, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {database}")
        conn.execute(f"CREATE DATABASE {database}")
    parts = urlsplit(postgres_url(settings))
    return urlunsplit((parts.scheme, parts.netloc, f"/{database}", parts.query, ""))


@pytest.fixture(scope="module")
def mlflow_server(settings, tmp_path_factory):
    """``mlflow/serve.sh`` on fresh databases of the embedded PostgreSQL, as the compose service runs
    it: basic auth on, an admin from the environment, listening on ``MLFLOW_BIND`` only."""
    artifacts = tmp_path_factory.mktemp("mlartifacts")
    admin = ("revopt-admin", secrets.token_urlsafe(24))
    port = _free_port()
    env = {
        **{name: value for name, value in os.environ.items() if not name.startswith("MLFLOW_")},
        "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""),
        "TMPDIR": str(tmp_path_factory.mktemp("mlflow-tmp")),
        "MLFLOW_BACKEND_STORE_URI": _database_url(settings, "mlflow_server_e2e"),
        "MLFLOW_AUTH_DATABASE_URI": _database_url(settings, "mlflow_auth_e2e"),
        "MLFLOW_AUTH_ADMIN_USERNAME": admin[0],
        "MLFLOW_AUTH_ADMIN_PASSWORD": admin[1],
        "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_urlsafe(24),
        "MLFLOW_ARTIFACTS_DESTINATION": str(artifacts),
        # The stack's Host names, and the one this process's clients send.
        "MLFLOW_SERVER_ALLOWED_HOSTS": f"{_compose_allowed_hosts()},{MLFLOW_BIND}:{port}",
        "MLFLOW_HOST": MLFLOW_BIND,
        "MLFLOW_PORT": str(port),
        "MLFLOW_WORKERS": "1",
    }
    log = tmp_path_factory.mktemp("mlflow-log") / "server.log"
    with open(log, "w") as out:
        process = subprocess.Popen(["bash", str(ROOT / "mlflow" / "serve.sh")], env=env, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    url = f"http://{MLFLOW_BIND}:{port}"
    import mlflow  # noqa: F401  (the client's import overlaps the server's start-up)

    try:
        deadline = time.monotonic() + 120
        while _get(f"{url}/health", "localhost") != 200:
            assert process.poll() is None, f"mlflow server exited:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"mlflow server not healthy after 120 s:\n{log.read_text()[-3000:]}"
            time.sleep(0.5)
        yield url, artifacts, admin, env
    finally:
        with contextlib.suppress(ProcessLookupError):  # it may have exited already
            os.killpg(process.pid, 15)
        process.wait(timeout=30)
    assert admin[1] not in log.read_text(), "the server logged the admin's password"


@pytest.fixture
def login(monkeypatch):
    """Log MLflow clients in this process in as the given user (how the Airflow tasks get theirs)."""
    def as_user(credentials: tuple[str, str]) -> None:
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", credentials[0])
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", credentials[1])
    return as_user


def test_mlflow_server_tracks_registers_and_serves_artifacts_on_postgres(mlflow_server, login, tmp_path):
    from mlflow import MlflowClient

    url, artifacts, admin, _ = mlflow_server
    login(admin)
    client = MlflowClient(tracking_uri=url, registry_uri=url)
    experiment_id = client.create_experiment("revopt")
    assert client.get_experiment(experiment_id).artifact_location.startswith("mlflow-artifacts:")
    run = client.create_run(experiment_id, run_name="purchase_propensity-2025-01-01")
    client.log_param(run.info.run_id, "n_trials", 3)
    client.log_metric(run.info.run_id, "roc_auc", 0.87)
    model_file = tmp_path / "model.txt"
    model_file.write_text("a model\n")
    client.log_artifact(run.info.run_id, str(model_file), artifact_path="model")
    client.set_terminated(run.info.run_id)

    # Uploaded through the server, stored in its artifacts destination, downloadable by any client.
    assert [path.read_text() for path in artifacts.rglob("model.txt")] == ["a model\n"]
    downloaded = Path(client.download_artifacts(run.info.run_id, "model/model.txt", str(tmp_path / "down")))
    assert downloaded.read_text() == "a model\n"

    client.create_registered_model(MODEL)
    version = client.create_model_version(MODEL, f"runs:/{run.info.run_id}/model", run.info.run_id)
    client.set_registered_model_alias(MODEL, "champion", version.version)
    champion = client.get_model_version_by_alias(MODEL, "champion")
    assert champion.run_id == run.info.run_id
    assert client.get_run(run.info.run_id).data.metrics == {"roc_auc": 0.87}


def test_mlflow_server_refuses_requests_without_valid_credentials(mlflow_server, login):
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    url, _, admin, _ = mlflow_server
    endpoint = f"{url}/api/2.0/mlflow/experiments/search?max_results=1"
    assert _get(endpoint, "localhost") == 401
    assert _get(endpoint, "localhost", (admin[0], "not-the-password")) == 401
    assert _get(f"{url}/api/2.0/mlflow/registered-models/search", "localhost") == 401
    assert _get(endpoint, "localhost", admin) == 200
    login(("nobody", "not-a-password"))
    with pytest.raises(MlflowException, match="401|Unauthorized|credentials"):
        MlflowClient(tracking_uri=url).search_experiments()


def test_only_users_granted_edit_on_the_model_can_move_champion(mlflow_server, login):
    """MLflow's default permission (READ) lets a user look, not promote: moving ``@champion`` takes
    EDIT or MANAGE on the registered model (docs/production.md, "Threat model")."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException
    from mlflow.server import get_app_client

    url, _, admin, _ = mlflow_server
    analyst = ("analyst", secrets.token_urlsafe(16))
    login(admin)
    client = MlflowClient(tracking_uri=url, registry_uri=url)
    if not client.search_registered_models(filter_string=f"name = '{MODEL}'"):
        client.create_registered_model(MODEL)
    run = client.create_run(client.create_experiment("revopt-permissions"))
    version = client.create_model_version(MODEL, f"runs:/{run.info.run_id}/model", run.info.run_id)
    get_app_client("basic-auth", tracking_uri=url).create_user(*analyst)

    login(analyst)
    as_analyst = MlflowClient(tracking_uri=url, registry_uri=url)
    assert as_analyst.get_registered_model(MODEL).name == MODEL  # READ: may look
    with pytest.raises(MlflowException, match="403|PERMISSION_DENIED|Permission denied"):
        as_analyst.set_registered_model_alias(MODEL, "champion", version.version)

    login(admin)
    get_app_client("basic-auth", tracking_uri=url).grant_user_permission(analyst[0], "registered_model", MODEL, "EDIT")
    login(analyst)
    as_analyst.set_registered_model_alias(MODEL, "champion", version.version)
    assert as_analyst.get_model_version_by_alias(MODEL, "champion").version == version.version


def test_mlflow_server_answers_the_stack_host_name_and_refuses_others(mlflow_server):
    url, _, admin, _ = mlflow_server
    endpoint = f"{url}/api/2.0/mlflow/experiments/search?max_results=1"
    assert _get(endpoint, "mlflow:5000", admin) == 200
    assert _get(endpoint, "localhost:5000", admin) == 200
    assert _get(endpoint, "attacker.example", admin) == 403


def test_mlflow_server_listens_only_on_the_address_it_is_told(mlflow_server):
    url, _, _, env = mlflow_server
    port = int(env["MLFLOW_PORT"])
    with socket.create_connection((MLFLOW_BIND, port), timeout=5):
        pass
    for elsewhere in ("127.0.0.1", "127.0.0.3"):
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((elsewhere, port), timeout=5).close()
