"""Is a table or a column there? PostgreSQL's catalogue, asked before an optional source (a store may lack an
optional table or column of the contract) or one of revopt's own tables (a database may predate a migration)
is read."""

from __future__ import annotations

from typing import Any


def has_table(conn: Any, qualified: str) -> bool:
    """Whether ``qualified`` (``schema.table``, a table or a view) exists."""
    return bool(conn.execute("SELECT to_regclass(%s) IS NOT NULL", (qualified,)).fetchone()[0])


def has_column(conn: Any, schema: str, table: str, column: str) -> bool:
    """Whether ``schema.table`` has ``column``."""
    return bool(conn.execute("SELECT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = %s "
                             "AND table_name = %s AND column_name = %s)", (schema, table, column)).fetchone()[0])
