"""Weekly scanner data mapped onto the optional pricing sources with SQL views: the "retail" worked
example of docs/source_mapping.md, run as written, extracted as of a run date and validated."""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pandas as pd
import pytest

from revopt.platform.config import REPO_ROOT, Settings
from revopt.platform.extract import extract_sources, read_extract
from revopt.platform.postgres import read_frame
from revopt.platform.quality import validate_and_record
from revopt.platform.schema import init_stores
from revopt.platform.stack import connect_postgres

pytestmark = pytest.mark.e2e

RUN_DATE = dt.date(2014, 2, 27)  # a Thursday; far from the other modules' run dates (row-count history)
LOOKBACK_DAYS = 365
DATASETS = ("products", "product_sales", "promotions", "listings", "product_groups")

# store x UPC packed into one bigint, as the doc's views do
A = 12 * 10**13 + 3800000120  # store 12, an Alpine item
B = 12 * 10**13 + 4100000220  # store 12, a Brook item: delisted for two weeks, then relisted
C = 305 * 10**13 + 3800000120  # store 305, the Alpine item: listed a week late, one listed week without sales

ITEMS = [(3800000120, "Alpine", "coffee", 2.10), (4100000220, "Brook", "coffee", 1.90)]
STORE_ITEMS = [
    (12, 3800000120, "2014-01-04", None),
    (12, 4100000220, "2014-01-04", "2014-01-25"),
    (12, 4100000220, "2014-02-15", None),
    (305, 3800000120, "2014-01-11", None),
]
# (store_no, upc, week_ending (a Saturday), units, dollars); weeks not recorded have no row
MOVEMENT = [
    (12, 3800000120, "2014-01-04", 30, 179.70),  # shelf price 5.99
    (12, 3800000120, "2014-01-11", 28, 167.72),
    (12, 3800000120, "2014-01-18", 0, 0.00),  # on the shelf, none sold
    (12, 3800000120, "2014-01-25", 61, 292.19),  # bonus buy 20 % off: 4.79, and a display
    (12, 3800000120, "2014-02-01", 27, 161.73),
    (12, 3800000120, "2014-02-08", 22, 138.38),  # shelf price 6.29 from this week
    (12, 3800000120, "2014-02-15", 35, 213.15),  # flyer coupon: 6.09 paid on average
    (12, 3800000120, "2014-02-22", 24, 150.96),
    (12, 3800000120, "2014-03-01", 40, 251.60),  # still running on the run date, with a display
    (12, 4100000220, "2014-01-04", 15, 52.35),  # shelf price 3.49 throughout
    (12, 4100000220, "2014-01-11", 12, 41.88),
    (12, 4100000220, "2014-01-18", 14, 48.86),
    (12, 4100000220, "2014-01-25", 9, 31.41),
    (12, 4100000220, "2014-02-15", 11, 38.39),
    (12, 4100000220, "2014-02-22", 13, 45.37),
    (12, 4100000220, "2014-03-01", 10, 34.90),
    (305, 3800000120, "2014-01-11", 18, 104.22),  # shelf price 5.79
    (305, 3800000120, "2014-01-18", 20, 115.80),
    (305, 3800000120, "2014-01-25", 17, 98.43),
    (305, 3800000120, "2014-02-01", 33, 133.65),  # bonus buy 30 % off: 4.05
    (305, 3800000120, "2014-02-15", 19, 110.01),  # (the week ending 02-08 is listed and has no row)
    (305, 3800000120, "2014-02-22", 16, 92.64),
    (305, 3800000120, "2014-03-01", 21, 121.59),
    (305, 3800000120, "2014-03-08", 20, 121.80),  # shelf price 6.09 after the run date
]
DEALS = [
    (12, 3800000120, "2014-01-25", "B", 20.0),
    (12, 3800000120, "2014-01-25", "S", None),
    (12, 3800000120, "2014-02-15", "C", None),
    (12, 3800000120, "2014-03-01", "S", None),
    (12, 3800000120, "2014-03-08", "B", 25.0),  # starts after the run date
    (305, 3800000120, "2014-02-01", "B", 30.0),
]


def _doc_blocks() -> tuple[str, str]:
    """The two ``sql scanner`` blocks of docs/source_mapping.md: the store's tables, then the views."""
    blocks = re.findall(r"```sql scanner\n(.*?)```", (REPO_ROOT / "docs" / "source_mapping.md").read_text(), flags=re.S)
    assert len(blocks) == 2, "docs/source_mapping.md should hold two sql scanner blocks"
    assert blocks[1].startswith("-- revopt:scanner")
    return blocks[0], blocks[1]


@contextmanager
def _scanner_store(settings: Settings) -> Iterator[None]:
    """The contract tables moved aside; the retail tables filled, the doc's views created over them and
    ``revopt init-db`` run for the contract tables the store has nothing to map onto."""
    store_sql, mapping_sql = _doc_blocks()
    with connect_postgres(settings) as conn:
        conn.execute("ALTER SCHEMA shop RENAME TO shop_contract")
        conn.execute(store_sql)
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO retail.items VALUES (%s, %s, %s, %s)", ITEMS)
            cur.executemany("INSERT INTO retail.store_items VALUES (%s, %s, %s, %s)", STORE_ITEMS)
            cur.executemany("INSERT INTO retail.weekly_movement VALUES (%s, %s, %s, %s, %s)", MOVEMENT)
            cur.executemany("INSERT INTO retail.deals VALUES (%s, %s, %s, %s, %s)", DEALS)
        conn.execute(mapping_sql)
    try:
        init_stores(settings)
        yield
    finally:
        with connect_postgres(settings) as conn:
            conn.execute("DROP SCHEMA IF EXISTS shop CASCADE")
            conn.execute("DROP SCHEMA retail CASCADE")
            conn.execute("ALTER SCHEMA shop_contract RENAME TO shop")


def _days(*days: str | None) -> np.ndarray:
    return pd.to_datetime(pd.Series(days, dtype=object)).astype("datetime64[ns]").to_numpy()


def _expected() -> dict[str, pd.DataFrame]:
    """What a run on Thursday 2014-02-27 may know, by the rules of docs/source_mapping.md."""
    sales = [  # period_start = week_ending - 6; the week ending 03-01 is still running and left out
        (A, "2013-12-29", 30, 179.70, 5.99), (A, "2014-01-05", 28, 167.72, 5.99), (A, "2014-01-12", 0, 0.00, 5.99),
        (A, "2014-01-19", 61, 292.19, 5.99), (A, "2014-01-26", 27, 161.73, 5.99), (A, "2014-02-02", 22, 138.38, 6.29),
        (A, "2014-02-09", 35, 213.15, 6.29), (A, "2014-02-16", 24, 150.96, 6.29),
        (B, "2013-12-29", 15, 52.35, 3.49), (B, "2014-01-05", 12, 41.88, 3.49), (B, "2014-01-12", 14, 48.86, 3.49),
        (B, "2014-01-19", 9, 31.41, 3.49), (B, "2014-02-09", 11, 38.39, 3.49), (B, "2014-02-16", 13, 45.37, 3.49),
        (C, "2014-01-05", 18, 104.22, 5.79), (C, "2014-01-12", 20, 115.80, 5.79), (C, "2014-01-19", 17, 98.43, 5.79),
        (C, "2014-01-26", 33, 133.65, 5.79), (C, "2014-02-09", 19, 110.01, 5.79), (C, "2014-02-16", 16, 92.64, 5.79),
    ]
    promotions = [  # end_date inclusive (the Saturday); started before the run date, running or not
        (A, "2014-01-19", "2014-01-25", "display", np.nan), (A, "2014-01-19", "2014-01-25", "price_reduction", 0.20),
        (A, "2014-02-09", "2014-02-15", "feature", np.nan), (A, "2014-02-23", "2014-03-01", "display", np.nan),
        (C, "2014-01-26", "2014-02-01", "price_reduction", 0.30),
    ]
    listings = [(A, "2013-12-29", None), (B, "2013-12-29", "2014-01-25"), (B, "2014-02-09", None), (C, "2014-01-05", None)]
    return {
        # the shelf price as of the run date (C's rise after it is only today's listed price)
        "products": pd.DataFrame({"product_id": [A, B, C], "category": ["coffee"] * 3, "cost": [2.10, 1.90, 2.10],
                                  "current_price": [6.29, 3.49, 5.79], "listed_current_price": [6.29, 3.49, 6.09]}),
        "product_sales": pd.DataFrame({
            "product_id": [row[0] for row in sales], "period_start": _days(*(row[1] for row in sales)),
            "period_days": np.full(len(sales), 7), "units": [float(row[2]) for row in sales],
            "revenue": [row[3] for row in sales], "list_price": [row[4] for row in sales]}),
        "promotions": pd.DataFrame({
            "product_id": [row[0] for row in promotions], "start_date": _days(*(row[1] for row in promotions)),
            "end_date": _days(*(row[2] for row in promotions)), "promo_type": [row[3] for row in promotions],
            "depth": [row[4] for row in promotions]}),
        "listings": pd.DataFrame({"product_id": [row[0] for row in listings],
                                  "start_date": _days(*(row[1] for row in listings)),
                                  "end_date": _days(*(row[2] for row in listings))}),
        "product_groups": pd.DataFrame({"product_id": [A, B, C], "brand": ["Alpine", "Brook", "Alpine"],
                                        "location": ["store 12", "store 12", "store 305"]}),
    }


def test_the_documented_scanner_views_extract_as_of_the_run_date_and_pass_their_suites(settings: Settings) -> None:
    scanner = dataclasses.replace(settings, clickstream=False)  # the chain has no clickstream
    with _scanner_store(scanner):
        with connect_postgres(scanner) as conn:
            kinds = read_frame(conn, "SELECT table_name, table_type FROM information_schema.tables WHERE table_schema = 'shop'")
        kinds = dict(zip(kinds["table_name"], kinds["table_type"]))
        assert {name for name, kind in kinds.items() if kind == "VIEW"} == {"product_prices", *DATASETS}
        assert kinds["orders"] == kinds["customers"] == "BASE TABLE"  # created empty by init-db

        frames = read_extract(extract_sources(scanner, RUN_DATE, LOOKBACK_DAYS, datasets=DATASETS))
        for name, expected in _expected().items():
            pd.testing.assert_frame_equal(frames[name], expected, obj=name)
        summaries = validate_and_record(scanner, RUN_DATE, frames, LOOKBACK_DAYS)
        assert {summary.dataset: summary.failures for summary in summaries} == {name: () for name in DATASETS}

        # a mapping mistake: the bonus buy's percent passed through as the depth
        with connect_postgres(scanner) as conn:
            conn.execute("DROP VIEW shop.promotions")
            conn.execute("""
                CREATE VIEW shop.promotions AS
                SELECT store_no * 10000000000000 + upc AS product_id, week_ending - 6 AS start_date,
                       week_ending AS end_date,
                       CASE deal_code WHEN 'B' THEN 'price_reduction' WHEN 'C' THEN 'feature' ELSE 'display' END AS promo_type,
                       price_cut_pct AS depth
                FROM retail.deals""")
        promotions = read_extract(extract_sources(scanner, RUN_DATE, LOOKBACK_DAYS, datasets=("promotions",)))
        [summary] = validate_and_record(scanner, RUN_DATE, promotions, LOOKBACK_DAYS)
        assert not summary.success
        assert any("column='depth'" in failure and "max_value=1.0" in failure for failure in summary.failures), summary.failures
