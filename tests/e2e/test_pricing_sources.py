"""The optional pricing sources (shop.promotions, shop.product_sales, shop.listings) through the real
extract: only what a run for the date may know is read, the suites pass on good rows and name the
column on bad ones, a store without the tables gets empty frames, and a table whose columns drifted from
the contract is one clear error before any query."""

from __future__ import annotations

import contextlib
import datetime as dt

import numpy as np
import pandas as pd
import pytest

from revopt.platform.extract import extract_sources, read_extract
from revopt.platform.quality import validate_and_record
from revopt.platform.stack import connect_postgres
from revopt.platform.validation import DataValidationError
from revopt.sample_data.seed import load_sources
from revopt.sample_data.synth import generate_store

pytestmark = pytest.mark.e2e

START = dt.date(2035, 1, 1)  # far from the other modules' run dates
DAYS = 56
RUN_DATE = START + dt.timedelta(days=DAYS)
SOURCES = ("products", "promotions", "product_sales", "listings")


def _week(k: int) -> pd.Timestamp:
    return pd.Timestamp(START) + pd.Timedelta(days=7 * k)


@pytest.fixture(scope="module")
def store(settings):
    shop = dict(generate_store(60, DAYS, START, seed=3, n_products=4).shop)
    ids = shop["products"]["product_id"].to_numpy()[:2]
    shop["promotions"] = pd.DataFrame({
        "product_id": np.array([ids[0], ids[0], ids[1]], dtype="int64"),
        "start_date": [_week(2), _week(2), _week(9)],  # the last one starts after the run date: unknown to it
        "end_date": [_week(2) + pd.Timedelta(days=6), _week(3) + pd.Timedelta(days=6), _week(10)],
        "promo_type": ["price_reduction", "display", "feature"],
        "depth": [0.25, np.nan, np.nan],
    })
    weeks = [_week(k) for k in range(8)] + [_week(7) + pd.Timedelta(days=4)]  # the last period runs past D
    shop["product_sales"] = pd.DataFrame({
        "product_id": np.repeat(ids[:1], len(weeks)).astype("int64"), "period_start": weeks,
        "period_days": np.array([7] * len(weeks), dtype="int32"), "units": np.arange(len(weeks), dtype=float),
        "revenue": np.arange(len(weeks), dtype=float) * 2.5,
    })
    shop["listings"] = pd.DataFrame({"product_id": ids.astype("int64"), "start_date": [_week(0), _week(1)],
                                     "end_date": [_week(5), pd.NaT]})
    load_sources(settings, shop)
    return shop


@contextlib.contextmanager
def _altered(settings, change: str, undo: str):
    """The sources with ``change`` applied, ``undo`` run afterwards whatever happens."""
    with connect_postgres(settings) as conn:
        conn.execute(change)
    try:
        yield
    finally:
        with connect_postgres(settings) as conn:
            conn.execute(undo)


def _extract(settings) -> dict[str, pd.DataFrame]:
    return read_extract(extract_sources(settings, RUN_DATE, DAYS, datasets=SOURCES))


def test_the_sources_are_read_as_of_the_run_date_and_pass_their_suites(settings, store):
    frames = _extract(settings)
    promotions, sales, listings = frames["promotions"], frames["product_sales"], frames["listings"]
    assert len(promotions) == 2 and set(promotions["promo_type"]) == {"price_reduction", "display"}
    assert promotions["depth"].dropna().tolist() == [0.25]
    assert len(sales) == 8, "the period that runs past the run date is incomplete and left out"
    assert sales["period_start"].max() == _week(7) and (sales["period_days"] == 7).all()
    # the list price each period began with (a store keeping aggregates may still have a price history)
    history = store["product_prices"]
    first = history[history["product_id"] == sales["product_id"].iloc[0]].sort_values("valid_from")
    assert sales["list_price"].iloc[-1] == pytest.approx(first.loc[first["valid_from"] <= _week(7), "list_price"].iloc[-1])
    assert len(listings) == 2 and listings["end_date"].isna().sum() == 1
    report = validate_and_record(settings, RUN_DATE, {name: frames[name] for name in SOURCES[1:]}, DAYS)
    assert all(summary.success for summary in report), [str(summary) for summary in report]


def test_a_reduction_without_its_depth_is_named(settings, store):
    with _altered(settings, "UPDATE shop.promotions SET depth = NULL WHERE promo_type = 'price_reduction'",
                  "UPDATE shop.promotions SET depth = 0.25 WHERE promo_type = 'price_reduction'"):
        frames = _extract(settings)
        report = validate_and_record(settings, RUN_DATE, {"promotions": frames["promotions"]}, DAYS)
        failed = [str(summary) for summary in report if not summary.success]
        assert len(failed) == 1 and "depth" in failed[0] and "price_reduction" in failed[0] and RUN_DATE.isoformat() in failed[0]


def test_a_store_without_the_tables_gets_empty_frames(settings, store):
    with _altered(settings, "ALTER TABLE shop.listings RENAME TO listings_elsewhere",
                  "ALTER TABLE shop.listings_elsewhere RENAME TO listings"):
        frames = _extract(settings)
        assert len(frames["listings"]) == 0 and list(frames["listings"].columns) == ["product_id", "start_date", "end_date"]
        assert len(frames["promotions"]) == 2


def test_a_drifted_optional_table_is_one_clear_error(settings, store):
    with _altered(settings, "ALTER TABLE shop.product_sales RENAME COLUMN period_days TO weeks",
                  "ALTER TABLE shop.product_sales RENAME COLUMN weeks TO period_days"):
        with pytest.raises(DataValidationError, match=r"'product_sales' \(shop.product_sales\).*column 'period_days' is missing"):
            _extract(settings)
