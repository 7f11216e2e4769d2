"""revopt's schemas: created and migrated only by ``revopt init-db``, checked by every writer.

- The **published tables** (schema ``scores``) are revopt's own and versioned by Alembic
  migrations (:mod:`revopt.platform.migrations`); :func:`migrate` applies them, recording the revision in
  ``scores.schema_version``.
- The **source tables** (``shop``, and ``truth`` for the synthetic store) belong to the store: a
  store maps its own schema onto them with views. ``init-db`` creates the ones that are missing
  (``CREATE TABLE IF NOT EXISTS`` from :mod:`revopt.platform.contract`) so a new store can be loaded.
- The **read-only role** (``REVOPT_READER_ROLE``, default ``revopt_reader``) is what downstream
  apps and ``revopt sql`` connect as: SELECT on ``scores`` and ``shop``, nothing else, every
  transaction read-only by default, with a statement timeout.

Publishing, validation, drift and gate records never run DDL: they write data only (COPY,
INSERT, DELETE), so they take no lock stronger than ROW EXCLUSIVE and never make a reader wait.
A writer opens its connection with :func:`scores_connection`, which fails at once, naming
``revopt init-db``, when the database's schema is behind the code.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import psycopg
from psycopg import sql

from revopt.platform.catalog import has_table
from revopt.platform.config import Settings, redact_url

logger = logging.getLogger(__name__)

SCHEMA = "scores"
VERSION_TABLE = "schema_version"
#: pg_advisory_xact_lock key serialising concurrent migrations ("revopt" in ASCII).
MIGRATION_LOCK_KEY = 0x7265766F7074
_MIGRATIONS = Path(__file__).resolve().parent / "migrations"
#: Schemas the read-only role may read.
READER_SCHEMAS = ("scores", "shop")
READER_STATEMENT_TIMEOUT = "60s"
#: application_name of the migrating connection (visible in pg_stat_activity while init-db runs).
MIGRATION_APPLICATION = "revopt init-db"


class SchemaOutOfDate(RuntimeError):
    """The database's revopt schema is not the one this code was written for."""


def _alembic_config():
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    return config


@lru_cache(maxsize=1)
def head_revision() -> str:
    """The revision this code needs: the newest migration."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_alembic_config()).get_current_head()


def current_revision(conn: psycopg.Connection) -> str | None:
    """The revision the database is at; None before the first ``revopt init-db``."""
    if not has_table(conn, f"{SCHEMA}.{VERSION_TABLE}"):
        return None
    row = conn.execute(sql.SQL("SELECT version_num FROM {}").format(sql.Identifier(SCHEMA, VERSION_TABLE))).fetchone()
    return row[0] if row else None


def require_current(conn: psycopg.Connection) -> None:
    """Raise :class:`SchemaOutOfDate` unless the database is at :func:`head_revision`."""
    current, head = current_revision(conn), head_revision()
    if current != head:
        found = "has no revopt schema yet" if current is None else f"is at schema revision {current}"
        raise SchemaOutOfDate(
            f"PostgreSQL {found} ({SCHEMA}.{VERSION_TABLE}); this revopt needs revision {head}: "
            f"run `revopt init-db` to create or migrate it (nothing was written)"
        )


@contextmanager
def scores_connection(settings: Settings) -> Iterator[psycopg.Connection]:
    """A connection for writing revopt's published tables (commits on success); checks the schema first."""
    from revopt.platform.stack import connect_postgres

    with connect_postgres(settings) as conn:
        require_current(conn)
        yield conn


def migrate(settings: Settings) -> tuple[str | None, str]:
    """Apply every pending migration (one transaction). Returns (revision before, revision after)."""
    import sqlalchemy
    from alembic import command

    from revopt.platform.stack import connect_postgres, postgres_url

    url = postgres_url(settings)
    with connect_postgres(settings) as conn:
        before = current_revision(conn)
    engine = sqlalchemy.create_engine(
        "postgresql+psycopg://",
        creator=lambda: psycopg.connect(url, options="-c TimeZone=UTC", application_name=MIGRATION_APPLICATION),
        poolclass=sqlalchemy.pool.NullPool,
    )
    try:
        with engine.begin() as connection:
            config = _alembic_config()
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
    finally:
        engine.dispose()
    after = head_revision()
    if before != after:
        logger.info("migrated revopt's schema on %s from %s to %s", redact_url(url), before or "nothing", after)
    return before, after


def ensure_reader_role(conn: psycopg.Connection, role: str, password: str | None) -> list[str]:
    """Create (or update) the read-only role and grant it SELECT on :data:`READER_SCHEMAS`.

    The role logs in, is no superuser and can create nothing; its sessions are read-only by default
    and time out after :data:`READER_STATEMENT_TIMEOUT`. ``password`` (from ``REVOPT_READER_PASSWORD``)
    is set when given. Returns warnings for schemas it could not be granted (e.g. source views owned
    by another role: grant SELECT on them yourself)."""
    name = sql.Identifier(role)
    warnings = []
    try:
        with conn.transaction():
            if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone() is None:
                conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(name))
                logger.info("created read-only role %s", role)
            conn.execute(sql.SQL("ALTER ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS").format(name))
            if password:
                conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(name, sql.Literal(password)))
            conn.execute(sql.SQL("ALTER ROLE {} SET default_transaction_read_only = on").format(name))
            conn.execute(sql.SQL("ALTER ROLE {} SET statement_timeout = {}").format(name, sql.Literal(READER_STATEMENT_TIMEOUT)))
    except psycopg.errors.InsufficientPrivilege as exc:
        warnings.append(f"could not create or alter role {role} ({exc.diag.message_primary}): "
                        f"an administrator must create it (LOGIN, no other attribute)")
    for schema in READER_SCHEMAS:
        ident = sql.Identifier(schema)
        try:
            with conn.transaction():
                conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(ident, name))
                conn.execute(sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA {} TO {}").format(ident, name))
                conn.execute(sql.SQL("ALTER DEFAULT PRIVILEGES IN SCHEMA {} GRANT SELECT ON TABLES TO {}").format(ident, name))
        except (psycopg.errors.InsufficientPrivilege, psycopg.errors.UndefinedObject) as exc:
            warnings.append(f"could not grant {role} SELECT on schema {schema} ({exc.diag.message_primary}): grant it yourself")
    return warnings


def init_stores(settings: Settings) -> dict[str, str]:
    """Everything ``revopt init-db`` does, idempotently: missing source tables, revopt's migrations,
    the read-only role, and the ClickHouse events table (unless the store has no clickstream).
    Existing rows are never touched. Returns what was done, for the CLI to print."""
    from revopt.platform import contract
    from revopt.platform.identity import ensure_resolution_table
    from revopt.platform.privacy import ensure_id_secret
    from revopt.platform.stack import connect_postgres, event_store

    with connect_postgres(settings) as conn:
        for script in (contract.SHOP_DDL, contract.TRUTH_DDL):
            conn.execute(script)
    before, after = migrate(settings)
    with connect_postgres(settings) as conn:
        warnings = ensure_reader_role(conn, settings.reader_role, settings.reader_password)
    for warning in warnings:
        logger.warning(warning)
    done = {
        "sources": "shop and truth tables present (missing ones created)",
        "scores schema": f"revision {after}" + ("" if before == after else f" (migrated from {before or 'nothing'})"),
        "read-only role": settings.reader_role + ("" if not warnings else f" ({'; '.join(warnings)})"),
    }
    done["pseudonymisation key"] = ensure_id_secret(settings)
    if settings.clickstream:
        store = event_store(settings)  # opening it creates the database and the events table
        if settings.embedded_clickhouse:  # revopt's own table: an older one gains the contract's new column
            store.command(f"ALTER TABLE {store.database}.{contract.EVENTS_TABLE} "
                          "ADD COLUMN IF NOT EXISTS anonymous_id String DEFAULT '' AFTER customer_id")
        ensure_resolution_table(store)
        done["ClickHouse"] = f"table {store.database}.{contract.EVENTS_TABLE}"
    else:
        done["ClickHouse"] = "not used (REVOPT_CLICKSTREAM=off)"
    return done
