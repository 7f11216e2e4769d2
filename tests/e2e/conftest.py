"""End-to-end tier: a real embedded PostgreSQL, chDB, MLflow (SQLite) and Airflow under a temp state folder."""

from __future__ import annotations

import os

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

from revopt.platform.config import Settings, load_settings
from revopt.platform.events import open_event_store


@pytest.fixture(scope="session")
def settings(tmp_path_factory) -> Settings:
    home = tmp_path_factory.mktemp("revopt-home")
    previous = {key: os.environ.get(key) for key in ("REVOPT_HOME", "MLFLOW_TRACKING_URI", "AIRFLOW_HOME")}
    os.environ["REVOPT_HOME"] = str(home)
    for key in ("MLFLOW_TRACKING_URI", "AIRFLOW_HOME"):
        os.environ.pop(key, None)
    resolved = load_settings()
    from revopt.platform.schema import init_stores

    from revopt.platform.stack import close_event_stores

    init_stores(resolved)
    close_event_stores()  # Airflow's task processes open the chDB folder (one process per data path)
    _forbid_ddl_on_published_tables(resolved)
    yield resolved

    from revopt.platform.stack import close_event_stores, stop_stack

    close_event_stores()
    stop_stack(resolved)
    for key, value in previous.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


# Every e2e test runs with these event triggers: any DDL on schema ``scores`` that does not come
# from a migration (application_name 'revopt init-db') fails the statement, so a publish, quality,
# drift or gate record that ran DDL (and so took an ACCESS EXCLUSIVE lock readers wait for) fails
# whichever test exercises it (tests/e2e/test_publish_concurrency.py shows the trigger can fail).
_NO_DDL_OUTSIDE_MIGRATIONS = """
CREATE OR REPLACE FUNCTION public.revopt_test_no_scores_ddl() RETURNS event_trigger LANGUAGE plpgsql AS $$
DECLARE
    command record;
BEGIN
    IF current_setting('application_name') = 'revopt init-db' THEN
        RETURN;
    END IF;
    IF TG_EVENT = 'sql_drop' THEN
        FOR command IN SELECT * FROM pg_event_trigger_dropped_objects() WHERE schema_name = 'scores' LOOP
            RAISE EXCEPTION 'DDL outside a migration: % of % (application %)', TG_TAG, command.object_identity,
                current_setting('application_name');
        END LOOP;
    ELSE
        FOR command IN SELECT * FROM pg_event_trigger_ddl_commands() WHERE schema_name = 'scores' LOOP
            RAISE EXCEPTION 'DDL outside a migration: % on % (application %)', command.command_tag,
                command.object_identity, current_setting('application_name');
        END LOOP;
    END IF;
END $$;
DROP EVENT TRIGGER IF EXISTS revopt_test_no_scores_ddl;
DROP EVENT TRIGGER IF EXISTS revopt_test_no_scores_drop;
CREATE EVENT TRIGGER revopt_test_no_scores_ddl ON ddl_command_end EXECUTE FUNCTION public.revopt_test_no_scores_ddl();
CREATE EVENT TRIGGER revopt_test_no_scores_drop ON sql_drop EXECUTE FUNCTION public.revopt_test_no_scores_ddl();
"""


def _forbid_ddl_on_published_tables(settings: Settings) -> None:
    from revopt.platform.stack import connect_postgres

    with connect_postgres(settings) as conn:
        conn.execute(_NO_DDL_OUTSIDE_MIGRATIONS)


@pytest.fixture(scope="session")
def forget_models(settings: Settings):
    """A function deleting registered models from the session's MLflow registry, so a module's store
    starts without champions: an earlier module's champion, refitted on this store, can be as good as
    the first candidate, which the gate then rightly keeps challenger."""
    import contextlib

    import mlflow
    from mlflow import MlflowClient

    from revopt.platform.resources import configure_mlflow

    def forget(model_names) -> None:
        configure_mlflow(settings)
        client = MlflowClient()
        for name in model_names:
            with contextlib.suppress(mlflow.exceptions.MlflowException):
                client.delete_registered_model(name)

    return forget


@pytest.fixture(scope="module")
def open_events(tmp_path_factory):
    """A function that opens a temporary chDB holding the given events (a frame in the contract's shape)
    and returns its event store; every store it opened is closed when the module ends."""
    stores = []

    def open_with(events: pd.DataFrame):
        store = open_event_store(url=None, chdb_path=Path(tmp_path_factory.mktemp("chdb")), database="revopt")
        store.insert_arrow("events", pa.Table.from_pandas(events, preserve_index=False))
        stores.append(store)
        return store

    yield open_with
    for store in stores:
        store.close()
