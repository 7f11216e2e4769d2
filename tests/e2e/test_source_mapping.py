"""A store's own tables mapped onto the source contract with SQL views (docs/source_mapping.md, run
as written), and a real order history without clickstream (UCI Online Retail, REVOPT_CLICKSTREAM=off)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from features.customer import FEATURE_COLUMNS
from ml.extracting import ALL_DATASETS, EVENT_BUILDERS
from ml.pipeline import build_features, extract_datasets, validate_extracts
from revopt.platform.config import REPO_ROOT, Settings
from revopt.platform.contract import SHOP_OPTIONAL_TABLES
from revopt.platform.extract import EVENT_DATASETS, read_extract
from revopt.sample_data.importer import UCI_LOCATIONS, default_uci_path, load_into_contract, uci_online_retail
from revopt.platform.postgres import copy_frame, read_frame
from revopt.platform.resources import Resources
from revopt.sample_data.seed import load_store
from revopt.platform.stack import connect_postgres, event_store
from revopt.sample_data.synth import generate_store
from revopt.platform.validation import DataValidationError

pytestmark = pytest.mark.e2e

START = dt.date(2023, 3, 1)
DAYS = 150
RUN_DATE = START + dt.timedelta(days=DAYS)  # far from the other modules' run dates (row-count history)
LOOKBACK_DAYS = 365
UCI_FILE = default_uci_path()


def _doc_blocks() -> list[str]:
    """The four SQL blocks of docs/source_mapping.md: store tables and mapping, PostgreSQL then ClickHouse."""
    blocks = re.findall(r"```sql\n(.*?)```", (REPO_ROOT / "docs" / "source_mapping.md").read_text(), flags=re.S)
    assert len(blocks) == 4, "docs/source_mapping.md should hold four sql blocks"
    assert blocks[1].startswith("-- revopt:postgres") and blocks[3].startswith("-- revopt:clickhouse")
    return blocks


def _clickhouse_statements(block: str) -> list[str]:
    body = "\n".join(line for line in block.splitlines() if not line.startswith("--"))
    return [statement.strip() for statement in body.split(";") if statement.strip()]


def _cents(values: pd.Series) -> np.ndarray:
    return np.round(values.to_numpy(dtype="float64") * 100).astype("int64")


def _webshop_frames(shop: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """The synthetic store written the way "webshop" keeps it (cents, states, 0/1 flags, ad costs per network
    and campaign, NULL for no campaign)."""
    customers, products, prices = shop["customers"], shop["products"], shop["product_prices"]
    orders, lines, spend = shop["orders"], shop["order_lines"], shop["marketing_spend"]
    states = np.where(orders["status"] == "cancelled", "refunded", np.where(orders["order_id"] % 2 == 0, "paid", "shipped"))
    return {
        "users": pd.DataFrame({
            "id": customers["customer_id"], "created_at": customers["signup_date"].dt.tz_localize("UTC") + pd.Timedelta(hours=9),
            "country_code": customers["country"], "tz": customers["timezone"],
            "utm_source": customers["acquisition_channel"], "newsletter": customers["email_opt_in"].astype(int)}),
        "items": pd.DataFrame({
            "id": products["product_id"], "sku": products["sku"], "title": products["name"], "category": products["category"],
            "cost_cents": _cents(products["cost"]), "price_cents": _cents(products["current_price"])}),
        "item_price_log": pd.DataFrame({
            "item_id": prices["product_id"], "changed_on": prices["valid_from"].dt.date, "price_cents": _cents(prices["list_price"])}),
        "orders": pd.DataFrame({
            "id": orders["order_id"], "user_id": orders["customer_id"], "placed_at": orders["order_ts"],
            "utm_source": orders["channel"], "state": states}),
        "order_items": pd.DataFrame({
            "order_id": lines["order_id"], "position": lines["line_no"], "item_id": lines["product_id"],
            "qty": lines["quantity"], "paid_cents": _cents(lines["unit_price"]), "discount_rate": lines["discount"]}),
        "ad_costs": pd.DataFrame({
            "date": spend["day"].dt.date, "network": spend["channel"], "campaign": spend["campaign"].replace("", None),
            "cost_cents": _cents(spend["spend"]), "impressions": spend["impressions"], "clicks": spend["clicks"]}),
    }


def _hits(events: pd.DataFrame) -> pa.Table:
    """The clickstream the way "webshop" keeps it: NULL instead of 0 for anonymous / no product, and instead of
    '' for no campaign."""
    campaign = events["campaign"].astype(str)
    return pa.table({
        "ts": pa.array(events["event_time"]), "visit_id": pa.array(events["session_id"].to_numpy()),
        "user_id": pa.array(events["customer_id"].to_numpy(), mask=(events["customer_id"] == 0).to_numpy()),
        "action": pa.array(events["event_type"].astype(str)),
        "item_id": pa.array(events["product_id"].to_numpy(), mask=(events["product_id"] == 0).to_numpy()),
        "source": pa.array(events["channel"].astype(str)), "device_type": pa.array(events["device"].astype(str)),
        "bot": pa.array(events["is_machine"].to_numpy()),
        "utm_campaign": pa.array(campaign.to_numpy(dtype=object), type=pa.string(), mask=(campaign == "").to_numpy()),
    })


@contextmanager
def _mapped_store(settings: Settings, store) -> Iterator[None]:
    """The contract tables moved aside; webshop's tables filled and the doc's views created over them."""
    store_pg, map_pg, store_ch, map_ch = _doc_blocks()
    events = event_store(settings)
    with connect_postgres(settings) as conn:
        conn.execute("ALTER SCHEMA shop RENAME TO shop_contract")
        conn.execute(store_pg)
        for name, frame in _webshop_frames(store.shop).items():
            copy_frame(conn, f"webshop.{name}", frame)
        conn.execute(map_pg)
    events.command(f"RENAME TABLE {events.database}.events TO {events.database}.events_contract")
    try:
        events.command("CREATE DATABASE IF NOT EXISTS tracking")
        for statement in _clickhouse_statements(store_ch):
            events.command(statement)
        staging = f"{events.database}.hits_staging"
        events.command(f"CREATE TABLE {staging} AS tracking.hits ENGINE = MergeTree ORDER BY ts")
        events.insert_arrow("hits_staging", _hits(store.events))
        events.command(f"INSERT INTO tracking.hits SELECT * FROM {staging}")
        events.command(f"DROP TABLE {staging}")
        for statement in _clickhouse_statements(map_ch):
            events.command(statement)
        yield
    finally:
        events.command(f"DROP VIEW IF EXISTS {events.database}.events")
        events.command(f"RENAME TABLE {events.database}.events_contract TO {events.database}.events")
        events.command("DROP DATABASE IF EXISTS tracking")
        with connect_postgres(settings) as conn:
            conn.execute("DROP SCHEMA shop CASCADE")
            conn.execute("DROP SCHEMA webshop CASCADE")
            conn.execute("ALTER SCHEMA shop_contract RENAME TO shop")


def test_the_documented_views_read_like_the_contract_tables(settings: Settings) -> None:
    store = generate_store(n_customers=300, days=DAYS, start=START, seed=5)
    load_store(settings, store)
    direct_paths = extract_datasets(Resources(settings), RUN_DATE, LOOKBACK_DAYS)
    direct = read_extract(direct_paths)  # read now: the mapped run writes the same run folder
    direct_features = pd.read_parquet(build_features(Resources(settings), RUN_DATE, direct_paths)["path"])

    with _mapped_store(settings, store):
        with connect_postgres(settings) as conn:
            kinds = read_frame(conn, "SELECT table_name, table_type FROM information_schema.tables WHERE table_schema = 'shop'")
        assert set(kinds["table_type"]) == {"VIEW"}  # really reading through the views
        paths = extract_datasets(Resources(settings), RUN_DATE, LOOKBACK_DAYS)
        mapped = read_extract(paths)
        validate_extracts(Resources(settings), RUN_DATE, paths, LOOKBACK_DAYS)
        mapped_features = pd.read_parquet(build_features(Resources(settings), RUN_DATE, paths)["path"])

        # a mapping mistake stops at the contract check, naming the table and the column
        with connect_postgres(settings) as conn:
            conn.execute("CREATE OR REPLACE VIEW shop.order_lines_no_discount AS SELECT order_id, position AS line_no, "
                         "item_id AS product_id, qty AS quantity, (paid_cents / 100.0)::numeric(12, 2) AS unit_price "
                         "FROM webshop.order_items")
            conn.execute("DROP VIEW shop.order_lines")
            conn.execute("ALTER VIEW shop.order_lines_no_discount RENAME TO order_lines")
        with pytest.raises(DataValidationError, match=r"'order_lines' \(shop.order_lines\).*2023-07-29: column 'discount' is missing"):
            extract_datasets(Resources(settings), RUN_DATE, LOOKBACK_DAYS)

    assert set(mapped) == set(ALL_DATASETS)
    # the webshop maps its campaigns: spend per campaign, and the paths' touches carry theirs
    assert mapped["marketing_spend"]["campaign"].nunique() == len(store.truth["campaigns"])
    assert mapped["conversion_paths"]["campaign"].fillna("").astype(str).str.startswith("search_").any()
    for name in ALL_DATASETS:
        # the optional sources this webshop does not keep (SHOP_OPTIONAL_TABLES): empty on both sides
        assert len(direct[name]) > 0 or name in SHOP_OPTIONAL_TABLES, name
        pd.testing.assert_frame_equal(mapped[name], direct[name], obj=name)
    pd.testing.assert_frame_equal(mapped_features, direct_features)


@pytest.fixture(scope="module")
def uci_settings(settings: Settings) -> Iterator[Settings]:
    """The first two months of UCI Online Retail in the contract; the store has no clickstream."""
    if not UCI_FILE.exists():
        pytest.fail(f"the UCI Online Retail file is missing (looked in {', '.join(map(str, UCI_LOCATIONS))})")
    frames, _ = uci_online_retail(UCI_FILE, nrows=60_000)
    load_into_contract(settings, frames)
    yield dataclasses.replace(settings, clickstream=False)


UCI_RUN_DATE = dt.date(2011, 1, 10)


def test_a_store_without_clickstream_runs_from_orders(uci_settings: Settings) -> None:
    paths = extract_datasets(Resources(uci_settings), UCI_RUN_DATE, LOOKBACK_DAYS)
    frames = read_extract(paths)
    for name in (*EVENT_DATASETS, *EVENT_BUILDERS):
        assert frames[name].empty and len(frames[name].columns) > 2, name
    assert len(frames["orders"]) > 1000 and len(frames["product_daily_sales"]) > 1000
    validate_extracts(Resources(uci_settings), UCI_RUN_DATE, paths, LOOKBACK_DAYS)  # event datasets not validated: passes
    with connect_postgres(uci_settings) as conn:
        recorded = set(read_frame(conn, "SELECT dataset FROM scores.data_quality WHERE run_date = %s", (UCI_RUN_DATE,))["dataset"])
    assert recorded == set(ALL_DATASETS) - set(EVENT_DATASETS) - set(EVENT_BUILDERS)

    features = pd.read_parquet(build_features(Resources(uci_settings), UCI_RUN_DATE, paths)["path"])
    assert len(features) == len(frames["customers"])
    event_features = ["sessions_7d", "sessions_30d", "product_views_30d", "add_to_carts_30d", "email_opens_30d", "email_clicks_30d"]
    assert (features[event_features] == 0).all().all()
    # last year's season needs a year of history before the run date, which this extract does not reach
    season = ["orders_same_season_last_year", "spend_same_season_last_year"]
    order_features = [c for c in FEATURE_COLUMNS if c not in (*event_features, *season, "days_since_last_session")]
    assert features[order_features].std().gt(0).all()  # RFM and order rhythm from the orders carry the signal


def test_the_same_store_with_clickstream_on_fails_validation_on_the_empty_events(uci_settings: Settings) -> None:
    settings_on = dataclasses.replace(uci_settings, clickstream=True)
    paths = extract_datasets(Resources(settings_on), UCI_RUN_DATE + dt.timedelta(days=1), LOOKBACK_DAYS)
    with pytest.raises(DataValidationError, match="customer_daily_events"):
        validate_extracts(Resources(settings_on), UCI_RUN_DATE + dt.timedelta(days=1), paths, LOOKBACK_DAYS)
