"""End-to-end tier: a real embedded PostgreSQL, chDB, MLflow (SQLite) and Airflow under a temp state folder."""

from __future__ import annotations

import os

import pytest

from revopt.config import Settings, load_settings


@pytest.fixture(scope="session")
def settings(tmp_path_factory) -> Settings:
    home = tmp_path_factory.mktemp("revopt-home")
    previous = {key: os.environ.get(key) for key in ("REVOPT_HOME", "MLFLOW_TRACKING_URI", "AIRFLOW_HOME")}
    os.environ["REVOPT_HOME"] = str(home)
    for key in ("MLFLOW_TRACKING_URI", "AIRFLOW_HOME"):
        os.environ.pop(key, None)
    resolved = load_settings()
    yield resolved

    from revopt.stack import close_event_stores, stop_stack

    close_event_stores()
    stop_stack(resolved)
    for key, value in previous.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
