"""What changed in revopt's published tables between a run date and the run before it.

For every table of schema ``scores`` keyed by ``run_date`` (found in PostgreSQL's catalogue, so a table added
by a later migration is covered without a change here), :func:`published_changes` compares the run date's
partition with the table's own previous run date (the latest one before it: tables are not all published
every night). It measures:

- ``rows``: the partition's row count;
- ``mean``: the mean of each score-like column of :data:`SCORE_COLUMNS` (the numbers a downstream app reads:
  a propensity, a recommended price, an expected rate); interval bounds, counts and ids are left out, and
  so are the columns of tables not listed (their row counts are still compared);
- ``count``: the rows matching a condition of :data:`COUNTED`, e.g. ``moved prices``: products whose
  recommended price differs from their current price by at least a cent.

One read-only query per table (it asks for both partitions at once), plus one to the catalogue; nothing is
written, so ``revopt status`` and the nightly report (``ml.report``) may call it on a read-only connection.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pandas as pd
from psycopg import sql

SCHEMA = "scores"

#: score-like columns whose mean is compared, per published table (absent columns are skipped: a database
#: may predate the migration that added them)
SCORE_COLUMNS: dict[str, tuple[str, ...]] = {
    "customer_scores": ("purchase_propensity", "churn_risk", "clv"),
    "price_recommendations": ("recommended_price", "elasticity"),
    "send_time_recommendations": ("expected_rate_best",),
    "budget_allocations": ("recommended_spend", "marginal_roas"),
    "recommendations": ("score",),
    "customer_affinity": ("affinity",),
    "next_best_action": ("expected_incremental_value",),
    "identity_map": ("match_probability",),
    "cac_forecasts": ("cac",),
    "channel_economics": ("ltv_cac",),
    "drift_checks": ("drift_share",),
}

#: rows counted per table: a label and the SQL condition (constants of this module, never user input)
COUNTED: dict[str, dict[str, str]] = {
    "price_recommendations": {"moved prices": "abs(recommended_price - current_price) >= 0.005"},
    "budget_allocations": {"moved channels": "moved"},
    "data_quality": {"failed datasets": "NOT success"},
    "model_promotions": {"promoted": "promoted"},
    "feature_drift": {"drifted columns": "drifted"},
}

#: the columns of :func:`published_changes`' frame
COLUMNS = ("table", "kind", "measure", "run_date", "previous_run_date", "today", "previous", "change")

_CATALOGUE = """
SELECT c.table_name, array_agg(c.column_name::text ORDER BY c.ordinal_position) AS columns
FROM information_schema.columns AS c
JOIN information_schema.tables AS t ON t.table_schema = c.table_schema AND t.table_name = c.table_name
WHERE c.table_schema = %s AND t.table_type = 'BASE TABLE'
GROUP BY c.table_name
HAVING bool_or(c.column_name = 'run_date')
ORDER BY c.table_name
"""


def published_tables(conn: Any) -> dict[str, list[str]]:
    """Every base table of schema ``scores`` with a ``run_date`` column, with its columns."""
    return {name: list(columns) for name, columns in conn.execute(_CATALOGUE, (SCHEMA,)).fetchall()}


def published_changes(conn: Any, run_date: dt.date) -> pd.DataFrame:
    """Per published table, ``run_date``'s partition against the table's previous run date (see the module
    doc): one row per (table, measure) with :data:`COLUMNS`; ``kind`` is ``rows``, ``mean`` or ``count``.
    ``previous_run_date`` is None and ``previous`` / ``change`` are missing (NaN) where the table has no earlier
    run date; a table with nothing on ``run_date`` has ``today`` 0 rows (and missing means)."""
    rows = []
    for table, columns in published_tables(conn).items():
        measures = table_measures(table, columns)
        cursor = conn.execute(changes_query(table, measures), {"run_date": run_date})
        names = [d.name for d in cursor.description]
        partitions = [dict(zip(names, row)) for row in cursor.fetchall()]
        rows += change_rows(table, run_date, measures, partitions)
    return pd.DataFrame(rows, columns=list(COLUMNS))


def table_measures(table: str, columns: list[str]) -> list[tuple[str, str, str]]:
    """What is measured on ``table`` (with ``columns``): (kind, measure, SQL aggregate) triples."""
    present = set(columns)
    measures = [("rows", "rows", "count(*)")]
    measures += [("mean", column, f"avg({sql_identifier(column)})::float8")
                 for column in SCORE_COLUMNS.get(table, ()) if column in present]
    measures += [("count", label, f"count(*) FILTER (WHERE {condition})")
                 for label, condition in COUNTED.get(table, {}).items()]
    return measures


def changes_query(table: str, measures: list[tuple[str, str, str]]) -> sql.Composed:
    """One query returning, per partition (the run date and the table's previous one), each measure as
    column ``m<i>``, in the order of ``measures``."""
    target = sql.Identifier(SCHEMA, table)
    aggregates = sql.SQL(", ").join(sql.SQL(f"{expression} AS m{i}") for i, (_, _, expression) in enumerate(measures))
    return sql.SQL(
        "SELECT run_date, {aggregates} FROM {target} "
        "WHERE run_date = %(run_date)s OR run_date = (SELECT max(run_date) FROM {target} WHERE run_date < %(run_date)s) "
        "GROUP BY run_date"
    ).format(aggregates=aggregates, target=target)


def change_rows(table: str, run_date: dt.date, measures: list[tuple[str, str, str]],
                partitions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows of :func:`published_changes` for one table from its query's rows (``partitions``: at most
    two dicts with ``run_date`` and ``m<i>``)."""
    today = next((p for p in partitions if p["run_date"] == run_date), None)
    previous = next((p for p in partitions if p["run_date"] != run_date), None)
    rows = []
    for i, (kind, measure, _) in enumerate(measures):
        now = _number(today, i) if today is not None else (0 if kind != "mean" else None)
        before = _number(previous, i) if previous is not None else None
        rows.append({
            "table": table, "kind": kind, "measure": measure, "run_date": run_date,
            "previous_run_date": previous["run_date"] if previous is not None else None,
            "today": now, "previous": before,
            "change": now - before if now is not None and before is not None else None,
        })
    return rows


def sql_identifier(name: str) -> str:
    """A column name quoted for the SQL text of a measure (catalogue names only)."""
    return '"' + name.replace('"', '""') + '"'


def _number(partition: dict[str, Any], i: int) -> float | int | None:
    value = partition[f"m{i}"]
    if value is None:
        return None
    return int(value) if isinstance(value, int) else float(value)
