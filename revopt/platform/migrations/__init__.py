"""Alembic migrations of revopt's own PostgreSQL schema (``scores``); applied by ``revopt init-db``
through :func:`revopt.platform.schema.migrate`. One file per change in ``versions/``, never edited once
released: a new column, table or view is a new revision."""


def create_table(op, table: str, columns, key: str, comment: str) -> None:
    """``CREATE TABLE IF NOT EXISTS scores.<table>`` from (name, SQL type, comment) triples, ``key`` appended
    after the columns (e.g. ``",\\n    PRIMARY KEY (...)"``), with the table's and each column's comment
    (empty comments are left out). For revisions from 0007 on; earlier ones keep their own copies."""
    body = ",\n    ".join(f"{name} {kind}" for name, kind, _ in columns)
    op.execute(f"CREATE TABLE IF NOT EXISTS scores.{table} (\n    {body}{key}\n)")
    op.execute("COMMENT ON TABLE scores.{} IS '{}'".format(table, comment.replace("'", "''")))
    for name, _, text in columns:
        if text:
            op.execute("COMMENT ON COLUMN scores.{}.{} IS '{}'".format(table, name, text.replace("'", "''")))


def latest_view(op, table: str) -> None:
    """``scores.<table>_latest``: the table at its latest run date, as downstream apps read it."""
    op.execute(f"CREATE OR REPLACE VIEW scores.{table}_latest AS SELECT * FROM scores.{table} "
               f"WHERE run_date = (SELECT max(run_date) FROM scores.{table})")
    op.execute(f"COMMENT ON VIEW scores.{table}_latest IS 'scores.{table} at its latest run date'")
