"""The environment Airflow runs in for the embedded stack: its home, DAG folder and SQLite metadata.

Airflow reads its configuration when it is imported, so revopt starts Airflow commands as
subprocesses with this environment rather than importing Airflow itself.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from revopt.platform.config import DAGS_FOLDER, Settings

logger = logging.getLogger(__name__)


def airflow_environ(settings: Settings, base: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    bin_dir = str(Path(sys.executable).parent)
    env.update(
        {
            "REVOPT_HOME": str(settings.home),
            "AIRFLOW_HOME": str(settings.airflow_home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__UNIT_TEST_MODE": env.get("AIRFLOW__CORE__UNIT_TEST_MODE", "False"),
            "AIRFLOW__LOGGING__LOGGING_LEVEL": env.get("AIRFLOW__LOGGING__LOGGING_LEVEL", "INFO"),
            "MLFLOW_TRACKING_URI": settings.mlflow_tracking_uri,
            "GX_ANALYTICS_ENABLED": "false",
            "PATH": bin_dir + os.pathsep + env.get("PATH", ""),
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def standalone_environ(settings: Settings, host: str = "127.0.0.1", port: int = 8080) -> dict[str, str]:
    """The environment of ``airflow standalone`` for ``revopt ui airflow``: its API server (UI and the
    tasks' execution API) listens on ``host`` only, loopback unless asked otherwise."""
    env = airflow_environ(settings)
    reach = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    env.update({
        "AIRFLOW__API__HOST": host,
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://{reach}:{port}/execution/",
    })
    if "AIRFLOW_CONN_REVOPT_AIRFLOW_API" not in env:
        # the run note of a run triggered from the UI is set through this API server (dags/_run_end.py)
        env["AIRFLOW_CONN_REVOPT_AIRFLOW_API"] = json.dumps({
            "conn_type": "http", "host": f"http://{reach}:{port}", "login": ADMIN_USER,
            "password": admin_password(settings)})
    return env


#: The simple auth manager's user (Airflow's default ``simple_auth_manager_users``: admin:admin).
ADMIN_USER = "admin"


def admin_password(settings: Settings) -> str:
    """The UI admin's password, from the file Airflow's simple auth manager reads (created here first, private
    to the owner, when Airflow has not generated it yet), so revopt's own tasks can log in to the API server."""
    import secrets

    path = settings.airflow_home / "simple_auth_manager_passwords.json.generated"
    passwords = json.loads(path.read_text() or "{}") if path.exists() else {}
    if ADMIN_USER not in passwords:
        passwords[ADMIN_USER] = secrets.token_urlsafe(16)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600, exist_ok=True)
        path.write_text(json.dumps(passwords) + "\n")
    return passwords[ADMIN_USER]


def airflow_executable() -> str:
    found = Path(sys.executable).parent / "airflow"
    return str(found) if found.exists() else (shutil.which("airflow") or "airflow")


def ensure_airflow_db(settings: Settings) -> None:
    """Create / migrate the Airflow metadata database (SQLite under the state folder)."""
    settings.airflow_home.mkdir(parents=True, exist_ok=True)
    marker = settings.airflow_home / ".revopt-migrated"
    if marker.exists() and (settings.airflow_home / "airflow.db").exists():
        return
    subprocess.run(
        [airflow_executable(), "db", "migrate"],
        env=airflow_environ(settings),
        check=True,
        capture_output=True,
        text=True,
    )
    marker.write_text("ok\n")


def dag_run_command(dag_id: str, run_date: str, report: Path, conf: Mapping[str, object] | None = None) -> list[str]:
    """``airflow dags test`` for ``run_date`` through :mod:`revopt.dag_runner`, which also writes the
    run's task states (and skip reasons) to ``report`` as JSON."""
    command = [sys.executable, "-m", "revopt.dag_runner", dag_id, run_date, "--report", str(report)]
    if conf:
        command += ["--conf", json.dumps(dict(conf))]
    return command
