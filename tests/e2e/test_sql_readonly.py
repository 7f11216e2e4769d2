"""`revopt sql` cannot change anything: the attacks a reviewer used, and each protection on its own."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pandas as pd
import psycopg
import pytest

from revopt import cli
from revopt.platform.postgres import publish_partition
from revopt.platform.query import QueryRefused, reader_url, run_read_only
from revopt.platform.stack import connect_postgres

pytestmark = pytest.mark.e2e

RUN_DATE = dt.date(2025, 3, 1)


@pytest.fixture(scope="module")
def published(settings):
    rows = pd.DataFrame({"run_date": RUN_DATE, "customer_id": range(1, 21), "purchase_propensity": 0.25,
                         "propensity_model": "m", "propensity_version": "1"})
    with connect_postgres(settings) as conn:
        publish_partition(conn, "scores.customer_scores", RUN_DATE, rows)
        conn.execute("INSERT INTO shop.customers VALUES (987654, DATE '2024-01-01', 'GB', 'Europe/London', 'seo', true) "
                     "ON CONFLICT DO NOTHING")
    return rows


def _fingerprint(settings) -> dict[str, tuple]:
    """Every table and view of scores, shop and public with its row count and a hash of its rows
    (computed by the server), plus the roles' attributes."""
    with connect_postgres(settings) as conn:
        tables = conn.execute(
            "SELECT table_schema, table_name FROM information_schema.tables "
            "WHERE table_schema IN ('scores', 'shop', 'public') ORDER BY 1, 2").fetchall()
        found = {
            f"{schema}.{table}": conn.execute(psycopg.sql.SQL(
                "SELECT count(*), coalesce(sum(hashtext(t::text)::bigint), 0) FROM {} AS t").format(
                psycopg.sql.Identifier(schema, table))).fetchone()
            for schema, table in tables
        }
        found["roles"] = tuple(conn.execute(
            "SELECT rolname, rolsuper, rolcreaterole, rolcreatedb, rolconfig FROM pg_roles ORDER BY 1").fetchall())
    return found


ATTACKS = [
    "COMMIT; DELETE FROM scores.customer_scores; SELECT 1",
    "COMMIT; DROP TABLE scores.customer_scores",
    "COPY (SELECT 1) TO PROGRAM 'touch {marker}'",
    "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE; DELETE FROM scores.customer_scores",
    "BEGIN READ WRITE; DELETE FROM scores.customer_scores; COMMIT",
    "CREATE TABLE public.attacker (a int)",
    "CREATE TEMP TABLE attacker AS SELECT 1",
    "DO $$ BEGIN DELETE FROM scores.customer_scores; END $$",
    "DELETE FROM scores.customer_scores",
    "WITH gone AS (DELETE FROM shop.customers RETURNING *) SELECT count(*) FROM gone",
    "TRUNCATE scores.customer_scores",
    "DROP TABLE scores.customer_scores",
    "ALTER ROLE revopt_reader SUPERUSER",
    "GRANT DELETE ON scores.customer_scores TO revopt_reader",
    "SELECT lo_export(lo_from_bytea(0, 'x'), '{marker}')",
    "SELECT pg_read_file('/etc/passwd')",
    "SELECT * FROM truth.customers",
    "COPY scores.customer_scores FROM '/etc/passwd'",
]


@pytest.mark.parametrize("attack", ATTACKS)
def test_an_attack_through_revopt_sql_changes_nothing(settings, published, tmp_path, attack, capsys):
    marker = tmp_path / "pwned"
    before = _fingerprint(settings)
    assert cli.main(["sql", attack.format(marker=marker)]) == 1
    assert "revopt sql:" in capsys.readouterr().err
    assert _fingerprint(settings) == before
    assert not marker.exists()


def test_several_statements_are_refused_with_a_clear_message(settings, published, capsys):
    assert cli.main(["sql", "SELECT 1; SELECT 2"]) == 1
    assert "exactly one statement" in capsys.readouterr().err


def test_a_long_query_is_cancelled(settings, published):
    with pytest.raises(QueryRefused, match="longer than 0.5 s"):
        run_read_only(settings, "SELECT pg_sleep(5)", max_rows=5, timeout_seconds=0.5)


def test_one_select_reads_the_published_rows_and_their_latest_view(settings, published, capsys):
    assert cli.main(["sql", "SELECT count(*) AS n FROM scores.customer_scores_latest", "--limit", "5"]) == 0
    assert "20" in capsys.readouterr().out
    frame, more = run_read_only(settings, "SELECT customer_id FROM scores.customer_scores WHERE run_date = '2025-03-01' "
                                "ORDER BY 1", max_rows=5)
    assert list(frame["customer_id"]) == [1, 2, 3, 4, 5] and more


def test_the_reader_role_alone_cannot_write_even_through_a_multi_statement_string(settings, published):
    """Without revopt's one-statement rule and read-only transaction: the role still has no rights."""
    before = _fingerprint(settings)
    # The role's own read-only default switched off too: only its privileges are left.
    with psycopg.connect(reader_url(settings), autocommit=True, options="-c default_transaction_read_only=off") as conn:
        assert conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone() == (False,)
        assert conn.execute("SHOW transaction_read_only").fetchone() == ("off",)
        for attack in ("SELECT 1; DELETE FROM scores.customer_scores", "SELECT 1; DROP TABLE scores.customer_scores",
                       "SELECT 1; COPY (SELECT 1) TO PROGRAM 'true'", "SELECT 1; CREATE TABLE scores.attacker (a int)",
                       "SELECT 1; UPDATE shop.customers SET country = 'XX'"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(attack)
    assert _fingerprint(settings) == before


def test_a_connection_that_could_write_is_refused(settings, published):
    """REVOPT_READER_URL pointed at the admin (a superuser here) is refused before the query runs."""
    from revopt.platform.stack import postgres_url

    admin = dataclasses.replace(settings, reader_url=postgres_url(settings))
    with pytest.raises(QueryRefused, match="superuser"):
        run_read_only(admin, "SELECT 1", max_rows=1)
