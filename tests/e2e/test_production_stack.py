"""The pieces of the production stack (docker-compose.yaml) that run without Docker, for real:

- ``revopt init-db``, which the ``airflow-init`` service runs, creates every revopt table and is
  idempotent (here on the embedded PostgreSQL and chDB; in the stack on the servers);
- ``mlflow/serve.sh``, which the ``mlflow`` service runs, serves tracking, the model registry and
  proxied artifacts on a PostgreSQL backend store, and answers the Host header the clients in the
  stack use (``mlflow:5000``) while refusing others.
"""

from __future__ import annotations

import os
import re
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

from revopt import cli, contract
from revopt.stack import connect_postgres, event_store, postgres_url

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


def _tables(conn, schema: str) -> set[str]:
    rows = conn.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,)).fetchall()
    return {name for (name,) in rows}


def test_init_db_creates_every_table_and_leaves_existing_rows_alone(settings, capsys):
    assert cli.main(["init-db"]) == 0
    with connect_postgres(settings) as conn:
        tables = {schema: _tables(conn, schema) for schema in ("shop", "truth", "scores")}
        rows_before = conn.execute("SELECT count(*) FROM shop.customers").fetchone()[0]
    for schema, ddl in (("shop", contract.SHOP_DDL), ("truth", contract.TRUTH_DDL), ("scores", contract.SCORES_DDL)):
        assert set(contract.ddl_columns(ddl)) <= tables[schema], schema
    store = event_store(settings)
    found = store.query_df(
        "SELECT name FROM system.tables WHERE database = {database:String} AND name = {table:String}",
        {"database": store.database, "table": contract.EVENTS_TABLE},
    )
    assert list(found["name"]) == [contract.EVENTS_TABLE]

    assert cli.main(["init-db"]) == 0  # again: nothing changes
    with connect_postgres(settings) as conn:
        assert conn.execute("SELECT count(*) FROM shop.customers").fetchone()[0] == rows_before
    out = capsys.readouterr().out
    assert "revopt stores ready" in out and "schemas shop, truth, scores" in out


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _compose_allowed_hosts() -> str:
    service = yaml.safe_load((ROOT / "docker-compose.yaml").read_text())["services"]["mlflow"]
    value = service["environment"]["MLFLOW_SERVER_ALLOWED_HOSTS"]
    return re.fullmatch(r"\$\{MLFLOW_SERVER_ALLOWED_HOSTS:-(.*)\}", value).group(1)


_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _get(url: str, host: str) -> int:
    """HTTP status of a GET with the given Host header (0: nothing listens yet)."""
    request = urllib.request.Request(url, headers={"Host": host})
    try:
        with _DIRECT.open(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except urllib.error.URLError:
        return 0


@pytest.fixture(scope="module")
def mlflow_server(settings, tmp_path_factory):
    """``mlflow/serve.sh`` on a fresh database of the embedded PostgreSQL, as the compose service runs it."""
    with connect_postgres(settings, autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS mlflow_server_e2e")
        conn.execute("CREATE DATABASE mlflow_server_e2e")
    parts = urlsplit(postgres_url(settings))
    backend = urlunsplit((parts.scheme, parts.netloc, "/mlflow_server_e2e", parts.query, ""))
    artifacts = tmp_path_factory.mktemp("mlartifacts")
    port = _free_port()
    env = {
        **os.environ,
        "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""),
        "MLFLOW_BACKEND_STORE_URI": backend,
        "MLFLOW_ARTIFACTS_DESTINATION": str(artifacts),
        "MLFLOW_SERVER_ALLOWED_HOSTS": _compose_allowed_hosts(),
        "MLFLOW_HOST": "127.0.0.1",
        "MLFLOW_PORT": str(port),
        "MLFLOW_WORKERS": "1",
    }
    log = tmp_path_factory.mktemp("mlflow-log") / "server.log"
    with open(log, "w") as out:
        process = subprocess.Popen(["bash", str(ROOT / "mlflow" / "serve.sh")], env=env, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    import mlflow  # noqa: F401  (the client's import overlaps the server's start-up)

    try:
        deadline = time.monotonic() + 120
        while _get(f"{url}/health", "localhost") != 200:
            assert process.poll() is None, f"mlflow server exited:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"mlflow server not healthy after 120 s:\n{log.read_text()[-3000:]}"
            time.sleep(0.5)
        yield url, artifacts
    finally:
        os.killpg(process.pid, 15)
        process.wait(timeout=30)


def test_mlflow_server_tracks_registers_and_serves_artifacts_on_postgres(mlflow_server, tmp_path):
    from mlflow import MlflowClient

    url, artifacts = mlflow_server
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

    client.create_registered_model("revopt_purchase_propensity")
    version = client.create_model_version("revopt_purchase_propensity", f"runs:/{run.info.run_id}/model", run.info.run_id)
    client.set_registered_model_alias("revopt_purchase_propensity", "champion", version.version)
    champion = client.get_model_version_by_alias("revopt_purchase_propensity", "champion")
    assert champion.run_id == run.info.run_id
    assert client.get_run(run.info.run_id).data.metrics == {"roc_auc": 0.87}


def test_mlflow_server_answers_the_stack_host_name_and_refuses_others(mlflow_server):
    url, _ = mlflow_server
    endpoint = f"{url}/api/2.0/mlflow/experiments/search?max_results=1"
    assert _get(endpoint, "mlflow:5000") == 200
    assert _get(endpoint, "localhost:5000") == 200
    assert _get(endpoint, "attacker.example") == 403
