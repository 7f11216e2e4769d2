"""Alembic environment: runs revopt's migrations on the connection :func:`revopt.platform.schema.migrate`
hands over (there is no alembic.ini; revopt's settings decide the server)."""

from __future__ import annotations

from alembic import context

from revopt.platform.schema import MIGRATION_LOCK_KEY, SCHEMA, VERSION_TABLE

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    version_table=VERSION_TABLE,
    version_table_schema=SCHEMA,
    transactional_ddl=True,
)
with context.begin_transaction():
    # Two `revopt init-db` at once (two containers starting) take turns instead of racing.
    connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})")
    # The version table lives in the schema the migrations create.
    connection.exec_driver_sql(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
    context.run_migrations()
