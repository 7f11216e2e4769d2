"""`revopt init-db` owns the schema: migrations, the `_latest` views, the read-only role; writers check it."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import psycopg
import pytest

from ml.publishing import publish
from revopt import cli
from revopt.platform import contract
from revopt.platform.postgres import read_frame
from revopt.platform.resources import Resources
from revopt.platform.schema import MIGRATION_APPLICATION, SchemaOutOfDate, head_revision
from revopt.platform.stack import connect_postgres, event_store, postgres_url

pytestmark = pytest.mark.e2e

D1, D2 = dt.date(2025, 2, 1), dt.date(2025, 2, 2)


def _tables(conn, schema: str, kind: str = "BASE TABLE") -> set[str]:
    rows = conn.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = %s AND table_type = %s",
                        (schema, kind)).fetchall()
    return {name for (name,) in rows}


def _scores(run_date: dt.date, n: int) -> pd.DataFrame:
    return pd.DataFrame({"run_date": run_date, "customer_id": range(1, n + 1), "purchase_propensity": 0.5,
                         "propensity_model": "m", "propensity_version": str(n)})


def test_init_db_creates_every_table_view_and_the_reader_and_leaves_rows_alone(settings, capsys):
    assert cli.main(["init-db"]) == 0
    with connect_postgres(settings) as conn:
        tables = {schema: _tables(conn, schema) for schema in ("shop", "truth", "scores")}
        views = _tables(conn, "scores", "VIEW")
        revision = conn.execute("SELECT version_num FROM scores.schema_version").fetchone()[0]
        conn.execute("INSERT INTO shop.marketing_spend VALUES (DATE '2024-01-01', 'init_db_probe', 1, 1, 1) "
                     "ON CONFLICT DO NOTHING")
        reader = conn.execute("SELECT rolsuper, rolcreaterole, rolcreatedb, rolconfig FROM pg_roles WHERE rolname = %s",
                              (settings.reader_role,)).fetchone()
    for schema, ddl in (("shop", contract.SHOP_DDL), ("truth", contract.TRUTH_DDL)):
        assert set(contract.ddl_columns(ddl)) <= tables[schema], schema
    assert {"customer_scores", "price_recommendations", "send_time_recommendations", "budget_allocations",
            "data_quality", "feature_drift", "drift_checks", "model_promotions", "model_performance",
            "schema_version"} <= tables["scores"]
    assert {"customer_scores_latest", "price_recommendations_latest", "send_time_recommendations_latest",
            "budget_allocations_latest", "model_promotions_latest", "model_performance_latest"} <= views
    assert revision == head_revision()
    assert reader[:3] == (False, False, False)
    assert "default_transaction_read_only=on" in reader[3]
    store = event_store(settings)
    found = store.query_df("SELECT name FROM system.tables WHERE database = {database:String} AND name = {table:String}",
                           {"database": store.database, "table": contract.EVENTS_TABLE})
    assert list(found["name"]) == [contract.EVENTS_TABLE]

    assert cli.main(["init-db"]) == 0  # again: nothing changes, rows stay
    with connect_postgres(settings) as conn:
        assert conn.execute("SELECT count(*) FROM shop.marketing_spend WHERE channel = 'init_db_probe'").fetchone()[0] == 1
        conn.execute("DELETE FROM shop.marketing_spend WHERE channel = 'init_db_probe'")
    out = capsys.readouterr().out
    assert "revopt stores ready" in out and f"revision {head_revision()}" in out and "password" not in out.lower()


def _set_revision(settings, revision: str | None) -> None:
    """Put the database at another revision the way an older release would have left it."""
    with psycopg.connect(postgres_url(settings), application_name=MIGRATION_APPLICATION) as conn:
        if revision is None:
            conn.execute("DROP TABLE scores.schema_version")
            for view in ("customer_scores", "price_recommendations", "send_time_recommendations", "budget_allocations",
                         "data_quality", "feature_drift", "drift_checks", "model_promotions", "model_performance"):
                conn.execute(f"DROP VIEW IF EXISTS scores.{view}_latest")
        else:
            conn.execute("UPDATE scores.schema_version SET version_num = %s", (revision,))


@pytest.mark.parametrize("revision", [None, "0001"])
def test_a_publish_against_a_schema_behind_the_code_fails_at_once_naming_init_db(settings, tmp_path, revision):
    path = tmp_path / "scores.parquet"
    _scores(D1, 3).to_parquet(path)
    publish(Resources(settings), D1, "scores.customer_scores", str(path))
    with connect_postgres(settings) as conn:
        before = read_frame(conn, "SELECT * FROM scores.customer_scores WHERE run_date = %s ORDER BY customer_id", (D1,))
    _set_revision(settings, revision)
    try:
        _scores(D1, 5).to_parquet(path)
        with pytest.raises(SchemaOutOfDate, match="revopt init-db"):
            publish(Resources(settings), D1, "scores.customer_scores", str(path))
        with connect_postgres(settings) as conn:
            after = read_frame(conn, "SELECT * FROM scores.customer_scores WHERE run_date = %s ORDER BY customer_id", (D1,))
        pd.testing.assert_frame_equal(after, before)
    finally:
        assert cli.main(["init-db"]) == 0  # migrates it back to the head: a pre-migration database is adopted
    assert publish(Resources(settings), D1, "scores.customer_scores", str(path)) == 5


def test_the_latest_views_show_the_latest_complete_run_date(settings, tmp_path):
    for run_date, n in ((D1, 4), (D2, 6)):
        path = tmp_path / f"{run_date}.parquet"
        _scores(run_date, n).to_parquet(path)
        publish(Resources(settings), run_date, "scores.customer_scores", str(path))
    with connect_postgres(settings) as conn:
        latest = read_frame(conn, "SELECT run_date, count(*) AS n FROM scores.customer_scores_latest GROUP BY 1")
        newest = conn.execute("SELECT max(run_date) FROM scores.customer_scores").fetchone()[0]
    assert latest.to_dict("records") == [{"run_date": newest, "n": int(latest["n"].iloc[0])}]
    assert newest >= D2
