"""The CLI as a person uses it on a real embedded PostgreSQL: ``revopt load`` refuses a bad file and writes
nothing, appends and replaces a valid one; ``revopt sql --output`` exports every row through the read-only
connection; ``revopt status`` reads what is there. Rows use far-off ids and are removed afterwards: the e2e
modules share one database."""

from __future__ import annotations

import pandas as pd
import pytest

from revopt import cli
from revopt.platform.stack import close_event_stores, connect_postgres

pytestmark = pytest.mark.e2e

FIRST_ID = 9_100_000_000
ROWS = 120  # more than revopt sql's default --limit (50)


@pytest.fixture
def customers_file(settings, tmp_path):
    frame = pd.DataFrame({"customer_id": range(FIRST_ID, FIRST_ID + ROWS), "signup_date": "2024-01-01",
                          "country": "GB", "timezone": "Europe/London", "acquisition_channel": "seo",
                          "email_opt_in": "true"})
    path = tmp_path / "customers.csv"
    frame.to_csv(path, index=False)
    yield path
    with connect_postgres(settings) as conn:
        conn.execute("DELETE FROM shop.customers WHERE customer_id >= %s", (FIRST_ID,))
    close_event_stores()


def _far_off_customers(settings) -> int:
    with connect_postgres(settings) as conn:
        return conn.execute("SELECT count(*) FROM shop.customers WHERE customer_id >= %s", (FIRST_ID,)).fetchone()[0]


def test_load_refuses_a_bad_file_then_appends_a_good_one_once(settings, customers_file, tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text(customers_file.read_text().replace("true", "perhaps", 1))
    assert cli.main(["load", "customers", str(bad), "--append"]) == 1
    assert "shop.customers.email_opt_in: expected boolean" in capsys.readouterr().err
    assert _far_off_customers(settings) == 0

    assert cli.main(["load", "shop.customers", str(customers_file), "--append"]) == 0
    assert f"loaded {ROWS} rows" in capsys.readouterr().out
    assert _far_off_customers(settings) == ROWS
    # the same keys again: PostgreSQL refuses them and nothing of the file is written
    assert cli.main(["load", "customers", str(customers_file), "--append"]) == 1
    assert f"Key (customer_id)=({FIRST_ID}) already exists" in capsys.readouterr().err
    assert _far_off_customers(settings) == ROWS

    export = tmp_path / "out" / "customers.parquet"
    query = f"SELECT customer_id, signup_date, email_opt_in FROM shop.customers WHERE customer_id >= {FIRST_ID}"
    assert cli.main(["sql", query, "--output", str(export)]) == 0
    exported = pd.read_parquet(export)
    assert len(exported) == ROWS and exported["email_opt_in"].all()
    assert cli.main(["sql", query, "--format", "csv", "--output", str(tmp_path / "c.txt")]) == 0
    assert len(pd.read_csv(tmp_path / "c.txt")) == ROWS
    assert cli.main(["sql", f"DELETE FROM shop.customers WHERE customer_id >= {FIRST_ID}", "-o", str(tmp_path / "d.csv")]) == 1
    assert _far_off_customers(settings) == ROWS and not (tmp_path / "d.csv").exists()


def test_replace_makes_the_table_the_file_and_a_rerun_changes_nothing(settings, tmp_path, capsys):
    with connect_postgres(settings) as conn:
        kept = pd.DataFrame(conn.execute("SELECT day, product_id, competitor_price FROM shop.competitor_prices").fetchall(),
                            columns=["day", "product_id", "competitor_price"])
    path = tmp_path / "competitor_prices.csv"
    path.write_text("day,product_id,competitor_price\n2024-01-01,1,9.99\n2024-01-02,1,10.49\n")
    try:
        for _ in range(2):
            assert cli.main(["load", "competitor_prices", str(path), "--replace"]) == 0
            with connect_postgres(settings) as conn:
                rows = conn.execute("SELECT day::text, product_id, competitor_price::float8 FROM shop.competitor_prices "
                                    "ORDER BY day").fetchall()
            assert rows == [("2024-01-01", 1, 9.99), ("2024-01-02", 1, 10.49)]
    finally:
        from revopt.platform.postgres import copy_frame

        with connect_postgres(settings) as conn:
            conn.execute("DELETE FROM shop.competitor_prices")
            copy_frame(conn, "shop.competitor_prices", kept)
        close_event_stores()


def test_status_reads_the_state(settings, capsys):
    assert cli.main(["status"]) == 0
    out = capsys.readouterr().out
    assert f"state folder: {settings.home}" in out and "champions" in out
