"""The per-customer published tables become partitioned by run date (issue 22 item 4; docs/scale.md, "Publishing").

A night's publish of such a table then loads a standalone table and ATTACHes it as the run date's partition
(:func:`revopt.platform.postgres.publish_partition`): one write of each row, its primary key built once after
the load, readers never waiting (ATTACH takes SHARE UPDATE EXCLUSIVE on the parent, which no read or write
conflicts with) and never seeing the night half-loaded (the partition appears whole when ATTACH commits).
Retention detaches old partitions CONCURRENTLY and drops them instead of deleting millions of rows.

- **Which tables**: those with one or more rows per customer and run date, the ones that grow with the store
  (at 1M customers): ``customer_scores`` (1 row per customer, ~2.2 KB with ``top_factors``: ~2.3 GB a night),
  ``customer_segments`` and ``next_best_action`` (1 row per customer), ``send_time_recommendations`` (1-3 rows
  per customer: one per day type), ``recommendations`` (top-K rows per customer), ``customer_affinity`` (a row
  per customer and category or brand they touched: several per customer). Kept plain: the per-product,
  per-channel, per-campaign and per-run tables (hundreds to thousands of rows a night: partitions would add
  catalog entries, not speed), ``identity_map`` (only the identifiers joined to another; read as of a date with
  ``max(run_date) <= D``), ``experiment_assignments`` (keyed by the run that first assigned a unit, so a run's
  rows are not a night's output) and ``affinity_state`` (the affinity refresh's working state, not an output:
  its refresh DELETEs the days past ``AFFINITY_STATE_DAYS`` itself, which on a partitioned table would leave an
  empty partition a day behind).
- **Where the partitions live**: schema ``scores_partitions`` (created here; the read-only role gets no grant on
  it). Readers read the parent (``scores.<table>``) or its ``_latest`` view, which need no privilege on the
  partitions; the tables that list ``scores`` (the erasure sweep, the catalogue of published tables, the
  privacy test of every table with a ``customer_id``) keep seeing one table per output; and a staged, not yet
  published run date (:func:`revopt.platform.postgres.stage_slice`) is not readable by anyone but revopt.
  Names: ``<table>__p<yyyymmdd>`` (one run date, ``FOR VALUES FROM (D) TO (D + 1)``), ``<table>__stage<yyyymmdd>``
  (a staged run date, not attached), ``<table>__legacy`` (the rows published before this revision).
- **Existing rows** stay, as one partition: the table is renamed ``<table>__legacy``, moved to
  ``scores_partitions`` and attached ``FROM (MINVALUE) TO (<its latest run date + 1>)`` after a
  ``CHECK (run_date < <that date>)`` (so ATTACH skips its own scan). A re-run of one of those dates replaces
  its rows through the parent; retention deletes its old rows and drops it once all are old. An empty table
  leaves no legacy partition.
- **Kept**: the columns, defaults, NOT NULL and check constraints, the primary key (every key contains
  ``run_date``: a partitioned table's key must), the comments, the ``_latest`` views and the grants the old
  table had. No DEFAULT partition: it would make every ATTACH scan it and forbid DETACH ... CONCURRENTLY.

Downgrade copies each table's rows back into a plain table (slow on a big store: a full rewrite).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06
"""

from __future__ import annotations

from alembic import op

from revopt.platform.migrations import latest_view

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

#: the tables partitioned by run date (the module docstring says why these)
PARTITIONED = ("customer_scores", "customer_segments", "next_best_action", "send_time_recommendations",
               "recommendations", "customer_affinity")
PARTITION_SCHEMA = "scores_partitions"


def upgrade() -> None:
    op.execute(f"CREATE SCHEMA IF NOT EXISTS {PARTITION_SCHEMA}")
    op.execute(f"COMMENT ON SCHEMA {PARTITION_SCHEMA} IS 'partitions of the scores tables partitioned by run date, "
               "and run dates staged for publishing; read them through scores.<table>'")
    for table in PARTITIONED:
        if not _is_partitioned(table):
            _partition(table)
        else:  # run again (tests re-run every revision): the view may have been dropped
            latest_view(op, table)


def _partition(table: str) -> None:
    legacy = f"{table}__legacy"
    grants = _grants(f"scores.{table}")
    comment = _scalar(f"SELECT obj_description('scores.{table}'::regclass, 'pg_class')")
    op.execute(f"DROP VIEW IF EXISTS scores.{table}_latest")
    _rename_primary_key(f"scores.{table}", f"{legacy}_pkey")
    op.execute(f"ALTER TABLE scores.{table} RENAME TO {legacy}")
    op.execute(f"ALTER TABLE scores.{legacy} SET SCHEMA {PARTITION_SCHEMA}")
    op.execute(f"CREATE TABLE scores.{table} (LIKE {PARTITION_SCHEMA}.{legacy} INCLUDING ALL) PARTITION BY RANGE (run_date)")
    _rename_primary_key(f"scores.{table}", f"{table}_pkey")
    _restore(table, comment, grants)
    latest = _scalar(f"SELECT max(run_date) FROM {PARTITION_SCHEMA}.{legacy}")
    if latest is None:
        op.execute(f"DROP TABLE {PARTITION_SCHEMA}.{legacy}")
    else:
        bound = f"DATE '{latest.isoformat()}' + 1"
        op.execute(f"ALTER TABLE {PARTITION_SCHEMA}.{legacy} ADD CONSTRAINT {legacy}_run_date CHECK (run_date < {bound})")
        op.execute(f"ALTER TABLE scores.{table} ATTACH PARTITION {PARTITION_SCHEMA}.{legacy} "
                   f"FOR VALUES FROM (MINVALUE) TO ({bound})")
    latest_view(op, table)


def _restore(table: str, comment: str | None, grants: list[tuple[str, str]]) -> None:
    """The comment and grants ``scores.<table>`` had before it was re-created (upgrade and downgrade)."""
    if comment:
        op.execute("COMMENT ON TABLE scores.{} IS '{}'".format(table, comment.replace("'", "''")))
    for grantee, privilege in grants:
        op.execute(f'GRANT {privilege} ON scores.{table} TO "{grantee}"')


def downgrade() -> None:
    for table in PARTITIONED:
        if not _is_partitioned(table):
            continue
        grants = _grants(f"scores.{table}")
        comment = _scalar(f"SELECT obj_description('scores.{table}'::regclass, 'pg_class')")
        op.execute(f"DROP VIEW IF EXISTS scores.{table}_latest")
        op.execute(f"CREATE TABLE scores.{table}__plain (LIKE scores.{table} INCLUDING ALL)")
        op.execute(f"INSERT INTO scores.{table}__plain SELECT * FROM scores.{table}")
        op.execute(f"DROP TABLE scores.{table}")  # with its partitions
        op.execute(f"ALTER TABLE scores.{table}__plain RENAME TO {table}")
        _rename_primary_key(f"scores.{table}", f"{table}_pkey")
        _restore(table, comment, grants)
        latest_view(op, table)
    op.execute(f"DROP SCHEMA IF EXISTS {PARTITION_SCHEMA} CASCADE")  # staged leftovers


def _scalar(query: str):
    return op.get_bind().exec_driver_sql(query).scalar()


def _is_partitioned(table: str) -> bool:
    return bool(_scalar(f"SELECT EXISTS (SELECT 1 FROM pg_partitioned_table WHERE partrelid = 'scores.{table}'::regclass)"))


def _grants(table: str) -> list[tuple[str, str]]:
    schema, name = table.split(".")
    rows = op.get_bind().exec_driver_sql(
        "SELECT grantee, privilege_type FROM information_schema.role_table_grants WHERE table_schema = %(schema)s "
        "AND table_name = %(name)s AND grantee <> current_user", {"schema": schema, "name": name}).fetchall()
    return [(grantee, privilege) for grantee, privilege in rows]


def _rename_primary_key(table: str, name: str) -> None:
    current = _scalar(f"SELECT conname FROM pg_constraint WHERE conrelid = '{table}'::regclass AND contype = 'p'")
    if current and current != name:
        op.execute(f"ALTER TABLE {table} RENAME CONSTRAINT {current} TO {name}")
