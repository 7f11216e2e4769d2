"""Bad source data on a small seeded store, injected into the real sources, fails the run cleanly
or is handled as documented in docs/bad_input.md.

The source tables enforce their keys and types, so NULL keys, duplicates, missing columns and
wrong types come the way a real store produces them: from the views that map the store's own
tables onto the contract (README, "Source contract"). Each case renames a source table (the
PostgreSQL ``shop.<table>`` or the ClickHouse ``events``) and puts a view over it in its place,
and puts the table back afterwards, so every case starts from the same pristine store.

Cases run the DAG's own steps in process: ``extract`` then ``validate`` (and, where the input is
handled, the feature and model code that reads it). Every publish task of the nightly DAG runs
downstream of ``validate``, so a :class:`DataValidationError` from either step means nothing is
published; the last test shows that through the real nightly DAG.

A case marked ``xfail`` is a gap: its body asserts the outcome we want, its ``raises`` what
happens today, and docs/bad_input.md names the change that closes it (the marker then has to go:
the xfail is strict).
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager

import numpy as np
import pandas as pd
import pytest
from psycopg import sql

from features.customer import customer_features
from features.demand import demand_history
from ml.families import budget, send_time
from ml.pipeline import build_features, extract_datasets, validate_extracts
from ml.publishing import publish
from revopt import cli
from revopt.platform.config import Settings
from revopt.platform.extract import read_extract
from revopt.platform.postgres import publish_partition, read_frame
from revopt.platform.resources import Resources
from revopt.sample_data.seed import seed_synthetic
from revopt.platform.stack import close_event_stores, connect_postgres, event_store
from revopt.platform.validation import DataValidationError

# The run date is after the nightly DAG's start_date (Airflow runs no task before 2024-01-01) and more
# than 30 days from the other e2e modules' run dates (the gate compares row counts with recent runs).
START = dt.date(2025, 1, 1)
DAYS = 200
RUN_DATE = START + dt.timedelta(days=DAYS)
LOOKBACK_DAYS = 730
SCRATCH_DATE = dt.date(1999, 12, 31)  # publish round trips use this date and delete it again

EVIL = 'O\'Brien"; DROP TABLE x; --'
UNICODE = "مطبخ מטבח 🍳👩🏽‍🍳 \u202eevil\u202c café"

# Source columns in contract order (revopt/contract.py), for views that replace some of them.
COLUMNS = {
    "customers": ("customer_id", "signup_date", "country", "timezone", "acquisition_channel", "email_opt_in",
                  "do_not_profile"),
    "products": ("product_id", "sku", "name", "category", "cost", "current_price"),
    "product_prices": ("product_id", "valid_from", "list_price"),
    "orders": ("order_id", "customer_id", "order_ts", "channel", "status"),
    "order_lines": ("order_id", "line_no", "product_id", "quantity", "unit_price", "discount"),
    "marketing_spend": ("day", "channel", "spend", "impressions", "clicks", "campaign"),
    "events": ("event_time", "session_id", "customer_id", "anonymous_id", "event_type", "product_id", "channel", "device",
               "is_machine", "campaign"),
}

Injection = tuple[str, str]  # (source table, the view's SELECT, reading the renamed original as "{source}")


@pytest.fixture(scope="module")
def store(settings: Settings):
    report = seed_synthetic(settings, n_customers=800, days=DAYS, start=START, seed=7)
    assert report.end == RUN_DATE
    yield report
    close_event_stores()


@pytest.fixture(scope="module")
def pristine(settings: Settings, store) -> dict[str, pd.DataFrame]:
    """The extracts of the untouched store (in memory: every case writes the same run folder)."""
    return _extract_and_validate(settings)[1]


@pytest.fixture(scope="module")
def budget_champion(pristine: dict[str, pd.DataFrame]) -> budget.MediaFit:
    """Response curves fitted before the case changed the marketing data, as a champion would be."""
    return budget.fit_media_model(_media_history(pristine), budget.MediaConfig(n_bootstrap=0))


# --- injecting bad input into the sources -----------------------------------------------------------


def _replaced(table: str, where: str | None = None, **expressions: str | None) -> Injection:
    """``table`` as a view over the original with some columns replaced by SQL expressions
    (``None``: the column is left out) and optionally only the rows matching ``where``."""
    columns = [
        column if column not in expressions else f"{expressions[column]} AS {column}"
        for column in COLUMNS[table]
        if not (column in expressions and expressions[column] is None)
    ]
    return table, f"SELECT {', '.join(columns)} FROM {{source}}" + (f" WHERE {where}" if where else "")


def _appended(table: str, select: str) -> Injection:
    """``table`` as a view: the original rows plus those of ``select`` (over ``{source}``)."""
    return table, f"SELECT * FROM {{source}} UNION ALL {select}"


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


@contextmanager
def _shop_view(settings: Settings, table: str, select: str) -> Iterator[None]:
    target, source = sql.Identifier("shop", table), sql.Identifier("shop", f"{table}_source")
    with connect_postgres(settings) as conn:  # one transaction: the swap happens whole or not at all
        conn.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(target, sql.Identifier(f"{table}_source")))
        conn.execute(sql.SQL("CREATE VIEW {} AS ").format(target) + sql.SQL(select).format(source=source))
    try:
        yield
    finally:
        with connect_postgres(settings) as conn:
            conn.execute(sql.SQL("DROP VIEW {}").format(target))
            conn.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(source, sql.Identifier(table)))


@contextmanager
def _events_view(settings: Settings, select: str) -> Iterator[None]:
    events = event_store(settings)
    table, source = f"{events.database}.events", f"{events.database}.events_source"
    events.command(f"RENAME TABLE {table} TO {source}")
    try:
        events.command(f"CREATE VIEW {table} AS {select.format(source=source)}")
    except Exception:
        events.command(f"RENAME TABLE {source} TO {table}")
        raise
    try:
        yield
    finally:
        events = event_store(settings)  # a case may have closed it
        events.command(f"DROP VIEW {table}")
        events.command(f"RENAME TABLE {source} TO {table}")


@contextmanager
def _injected(settings: Settings, injections: Sequence[Injection]) -> Iterator[None]:
    with ExitStack() as stack:
        for table, select in injections:
            view = _events_view(settings, select) if table == "events" else _shop_view(settings, table, select)
            stack.enter_context(view)
        yield


# --- running the pipeline's steps -------------------------------------------------------------------


def _extract_and_validate(settings: Settings) -> tuple[dict[str, str], dict[str, pd.DataFrame]]:
    """The DAG's first two tasks, in process; raises whatever they raise."""
    paths = extract_datasets(Resources(settings), RUN_DATE, LOOKBACK_DAYS)
    validate_extracts(Resources(settings), RUN_DATE, paths, LOOKBACK_DAYS)
    return paths, read_extract(paths)


def _gate_message(settings: Settings) -> str:
    """The DataValidationError extract or validate raises; AssertionError when both pass."""
    try:
        _extract_and_validate(settings)
    except DataValidationError as error:
        return str(error)
    raise AssertionError("the bad input passed extract and validate: the run would go on to publish")


def _assert_names(message: str, dataset: str, column: str) -> None:
    """``message`` has a paragraph about ``dataset`` for the run date that names ``column``."""
    paragraphs = re.split(r"\n(?!\s)", message)
    about = [p for p in paragraphs if repr(dataset) in p.splitlines()[0]]
    assert about, f"no paragraph about {dataset!r} in:\n{message}"
    assert any(RUN_DATE.isoformat() in p.splitlines()[0] and column in p for p in about), (
        f"{dataset!r} paragraph does not name {column!r} and {RUN_DATE}:\n{message}"
    )


def _media_history(frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    return budget.media_history(frames["marketing_spend"], frames["orders"], RUN_DATE, LOOKBACK_DAYS)


def _demand_panel(frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    return demand_history(frames["product_daily_sales"], frames["products"], frames["day_totals"], RUN_DATE, LOOKBACK_DAYS)


def _completed_order_near_median(frames: dict[str, pd.DataFrame]) -> int:
    completed = frames["orders"][frames["orders"]["status"] == "completed"].sort_values(["order_value", "order_id"])
    return int(completed["order_id"].iloc[len(completed) // 2])


def _needs(raises: type[BaseException], change: str):
    """A gap: today the case ends in ``raises``; ``change`` (docs/bad_input.md) closes it."""
    return pytest.mark.xfail(strict=True, raises=raises, reason=f"needs: {change}")


CHANGE_A = "change A: the extract casts a column only when every value converts, and keeps NULL as NULL"
CHANGE_B = "change B: the extract checks the sources' columns and types against the contract first"
CHANGE_C = "change C: the orders extract aggregates lines per order and counts lines without a product_id"
CHANGE_E = "change E: a marginal ROAS that is not finite is published as NULL"


# --- inputs that must stop the run at the gate ----------------------------------------------------------

_DAY_BEFORE = RUN_DATE - dt.timedelta(days=1)
_WEEK_BEFORE = RUN_DATE - dt.timedelta(days=8)

REJECTED = [
    # 1. NULL keys (the tables forbid them; a store's view can yield them)
    pytest.param([_replaced("orders", customer_id="CASE WHEN order_id % 100 = 0 THEN NULL ELSE customer_id END")],
                 [("orders", "customer_id")], id="01-null-key-orders.customer_id"),
    pytest.param([_replaced("customers", customer_id="CASE WHEN customer_id % 100 = 0 THEN NULL ELSE customer_id END")],
                 [("customers", "customer_id")], id="01-null-key-customers.customer_id"),
    pytest.param([_replaced("products", product_id="CASE WHEN product_id = 3 THEN NULL ELSE product_id END")],
                 [("products", "product_id")], id="01-null-key-products.product_id"),
    pytest.param([_replaced("order_lines", product_id="CASE WHEN line_no = 2 THEN NULL ELSE product_id END")],
                 [("orders", "product_id")], id="01-null-key-order_lines.product_id"),
    pytest.param([_replaced("customers", country="CASE WHEN customer_id % 10 = 0 THEN NULL ELSE country END")],
                 [("customers", "country")], id="01-null-text-customers.country"),
    # 2. negative or zero prices
    pytest.param([_replaced("products", current_price="CASE product_id WHEN 1 THEN 0 WHEN 2 THEN -9.99 ELSE current_price END",
                            cost="CASE WHEN product_id = 3 THEN 0 ELSE cost END")],
                 [("products", "listed_current_price"), ("products", "cost")], id="02-zero-and-negative-product-price-and-cost"),
    pytest.param([_replaced("product_prices", list_price="CASE WHEN product_id = 4 THEN 0 ELSE list_price END")],
                 [("product_daily_sales", "list_price")], id="02-zero-list-price"),
    pytest.param([_replaced("order_lines", unit_price="CASE WHEN order_id % 97 = 0 THEN -5 ELSE unit_price END")],
                 [("orders", "order_value"), ("product_daily_sales", "revenue")], id="02-negative-paid-price"),
    pytest.param([_replaced("marketing_spend", spend=f"CASE WHEN day = DATE '{_DAY_BEFORE}' THEN -10 ELSE spend END")],
                 [("marketing_spend", "spend")], id="02-negative-spend"),
    # 3. duplicate order ids
    pytest.param([_appended("orders", "SELECT * FROM {source} WHERE order_id % 50 = 0")],
                 [("orders", "order_id")], id="03-duplicate-order-id-exact-copy"),
    pytest.param([_appended("orders", "SELECT order_id, customer_id, order_ts, channel, 'cancelled' "
                                      "FROM {source} WHERE order_id % 50 = 0")],
                 [("orders", "order_id")], id="03-duplicate-order-id-conflicting-rows"),
    # 5. a missing column
    pytest.param([_replaced("orders", channel=None)], [("orders", "channel")], id="05-missing-column-orders.channel"),
    pytest.param([_replaced("products", category=None)], [("products", "category")], id="05-missing-column-products.category"),
    pytest.param([_replaced("events", is_machine=None)], [("events", "is_machine")], id="05-missing-column-events.is_machine"),
    # 6. a wrong column type
    pytest.param([_replaced("orders", order_ts="order_ts::text")], [("orders", "order_ts")], id="06-wrong-type-orders.order_ts-text"),
    pytest.param([_replaced("customers", email_opt_in="email_opt_in::text")], [("customers", "email_opt_in")],
                 id="06-wrong-type-customers.email_opt_in-text"),
    pytest.param([_replaced("events", event_time="toString(event_time)")], [("events", "event_time")],
                 id="06-wrong-type-events.event_time-string"),
    # 7. an empty day at the end of the window: the feeds stopped
    pytest.param([_replaced("orders", where=f"order_ts < TIMESTAMPTZ '{_DAY_BEFORE} 00:00+00'"),
                  _replaced("events", where=f"event_time < toDateTime64('{_DAY_BEFORE} 00:00:00', 3, 'UTC')")],
                 [("customer_daily_events", "day")], id="07-empty-last-day"),
    pytest.param([_replaced("orders", where=f"order_ts < TIMESTAMPTZ '{_WEEK_BEFORE} 00:00+00'")],
                 [("orders", "order_ts")], id="07-no-orders-for-a-week"),
    # 9. an extreme outlier (a 1000x order goes through the nightly DAG below)
    pytest.param([_replaced("order_lines", quantity="CASE WHEN line_no = 1 AND order_id = "
                            "(SELECT min(order_id) FROM shop.orders WHERE status = 'completed') THEN 1000000 ELSE quantity END")],
                 [("orders", "order_value")], id="09-quantity-of-a-million"),
    # 11. a marketing channel without a name
    pytest.param([_replaced("marketing_spend", channel="CASE WHEN channel = 'display' THEN '' ELSE channel END")],
                 [("marketing_spend", "channel")], id="11-blank-marketing-channel"),
]


@pytest.mark.parametrize(("injections", "expected"), REJECTED)
def test_bad_source_data_fails_the_gate_naming_dataset_column_and_run_date(settings, store, injections, expected):
    with _injected(settings, injections):
        message = _gate_message(settings)
    for dataset, column in expected:
        _assert_names(message, dataset, column)


# --- inputs that are handled ------------------------------------------------------------------------------


def test_events_without_a_customer_key_are_read_as_anonymous(settings, store, pristine):
    nulled = _replaced("events", customer_id="if(customer_id % 10 = 0, NULL, customer_id)")
    with _injected(settings, [nulled]):
        _, frames = _extract_and_validate(settings)
    for dataset in ("customer_daily_events", "engagement_by_hour"):
        kept = pristine[dataset][pristine[dataset]["customer_id"] % 10 != 0].reset_index(drop=True)
        pd.testing.assert_frame_equal(frames[dataset], kept)


def test_a_free_order_line_is_a_valid_zero_price(settings, store, pristine):
    order_id = _completed_order_near_median(pristine)
    with _injected(settings, [_replaced("order_lines", unit_price=f"CASE WHEN order_id = {order_id} THEN 0 ELSE unit_price END")]):
        _, frames = _extract_and_validate(settings)
    free = frames["orders"].set_index("order_id").loc[order_id]
    assert free["order_value"] == 0.0
    assert free["n_lines"] == pristine["orders"].set_index("order_id").loc[order_id, "n_lines"]


def test_rows_dated_on_or_after_the_run_date_are_not_read(settings, store, pristine):
    recent = f"TIMESTAMPTZ '{RUN_DATE - dt.timedelta(days=20)} 00:00+00'"
    future = [
        _appended("orders", f"SELECT order_id + 10000000, customer_id, order_ts + interval '30 days', channel, status "
                            f"FROM {{source}} WHERE order_ts >= {recent}"),
        _appended("order_lines", "SELECT l.order_id + 10000000, l.line_no, l.product_id, l.quantity, l.unit_price, l.discount "
                                 f"FROM {{source}} AS l JOIN shop.orders_source AS o USING (order_id) WHERE o.order_ts >= {recent}"),
        _appended("customers", f"SELECT customer_id + 10000000, DATE '{RUN_DATE}' + 3, country, timezone, acquisition_channel, "
                               "email_opt_in, do_not_profile FROM {source}"),
        _appended("product_prices", f"SELECT product_id, DATE '{RUN_DATE}', max(list_price) * 2 FROM {{source}} GROUP BY product_id"),
        _appended("marketing_spend", f"SELECT day + 60, channel, spend * 10, impressions, clicks, campaign FROM {{source}} "
                                     f"WHERE day >= DATE '{RUN_DATE - dt.timedelta(days=60)}'"),
        _appended("events", "SELECT event_time + toIntervalDay(20), session_id, customer_id, anonymous_id, event_type, product_id, channel, "
                            "device, is_machine, campaign FROM {source} "
                            f"WHERE event_time >= toDateTime64('{RUN_DATE - dt.timedelta(days=20)}', 3, 'UTC')"),
    ]
    with _injected(settings, future):
        _, frames = _extract_and_validate(settings)
    assert set(frames) == set(pristine)
    for dataset, frame in frames.items():
        pd.testing.assert_frame_equal(frame, pristine[dataset], obj=dataset)


def test_a_column_revopt_does_not_read_may_be_missing(settings, store, pristine):
    with _injected(settings, [_replaced("products", sku=None, name=None)]):
        _, frames = _extract_and_validate(settings)
    pd.testing.assert_frame_equal(frames["products"], pristine["products"])


def test_timestamps_without_time_zone_are_read_as_utc(settings, store, pristine):
    # The README's own example mapping (created_at AT TIME ZONE 'UTC') yields timestamp without time zone.
    with _injected(settings, [_replaced("orders", order_ts="order_ts AT TIME ZONE 'UTC'")]):
        _, frames = _extract_and_validate(settings)
    pd.testing.assert_frame_equal(frames["orders"], pristine["orders"])


def test_an_empty_day_inside_the_window_is_a_day_of_zeros(settings, store, pristine):
    day = RUN_DATE - dt.timedelta(days=50)
    empty = [_replaced("orders", where=f"(order_ts AT TIME ZONE 'UTC')::date <> DATE '{day}'"),
             _replaced("events", where=f"toDate(event_time) != toDate('{day}')")]
    with _injected(settings, empty):
        paths, frames = _extract_and_validate(settings)
        features = build_features(Resources(settings), RUN_DATE, paths)
    stamp = pd.Timestamp(day)
    assert (pristine["day_totals"]["day"] == stamp).any() and not (frames["day_totals"]["day"] == stamp).any()
    sales = frames["product_daily_sales"]
    assert len(sales) == len(pristine["product_daily_sales"]) and sales.loc[sales["day"] == stamp, "units"].eq(0).all()
    assert not (frames["customer_daily_events"]["day"] == stamp).any()
    assert features["rows"] == len(pristine["customers"])
    history = _media_history(frames).set_index("day")
    assert history.loc[stamp, "revenue"] == 0.0 and history.loc[stamp, "orders"] == 0
    panel = _demand_panel(frames)
    on_day = panel[panel["day"] == stamp]
    assert len(on_day) > 0 and on_day["units"].eq(0).all() and on_day["log_lines"].eq(0.0).all()


def test_events_of_customers_unknown_to_postgres_are_dropped_and_counted(settings, store, pristine, caplog):
    strangers = _appended("events", "SELECT event_time, session_id + 1000000000, customer_id + 5000000, anonymous_id, event_type, product_id, "
                                    "channel, device, is_machine, campaign FROM {source} WHERE customer_id BETWEEN 1 AND 50")
    with _injected(settings, [strangers]):
        paths, frames = _extract_and_validate(settings)
        built = build_features(Resources(settings), RUN_DATE, paths)

    known = set(pristine["customers"]["customer_id"])
    daily = frames["customer_daily_events"]
    unknown = daily[~daily["customer_id"].isin(known)]
    copied = pristine["customer_daily_events"]["customer_id"].between(1, 50)
    assert len(unknown) == copied.sum() > 0, "the validated extract keeps (and so counts) the unknown customers' rows"

    as_of = pd.Timestamp(RUN_DATE, tz="UTC")
    expected = customer_features(pristine["customers"], pristine["orders"], pristine["customer_daily_events"], as_of,
                                 order_categories=pristine["order_categories"])
    pd.testing.assert_frame_equal(pd.read_parquet(built["path"]), expected)

    caplog.set_level(logging.INFO, logger="ml.families.send_time")
    fit = send_time.fit_send_time(frames["engagement_by_hour"], frames["orders"], frames["customers"], as_of)
    reference = send_time.fit_send_time(pristine["engagement_by_hour"], pristine["orders"], pristine["customers"], as_of)
    assert set(fit.customer_id) == known
    np.testing.assert_array_equal(fit.curves, reference.curves)
    engaged = pristine["engagement_by_hour"]["customer_id"].between(1, 50)
    ignored = f"of {pristine['engagement_by_hour'].loc[engaged, 'customer_id'].nunique()} customers not in customers are ignored"
    assert any(ignored in record.getMessage() for record in caplog.records), "send time counts what it drops"


def test_an_outlier_order_the_store_cancelled_is_left_out(settings, store, pristine):
    order_id = _completed_order_near_median(pristine)
    cancelled = [_replaced("orders", status=f"CASE WHEN order_id = {order_id} THEN 'cancelled' ELSE status END"),
                 _replaced("order_lines", unit_price=f"CASE WHEN order_id = {order_id} THEN unit_price * 1000 ELSE unit_price END")]
    with _injected(settings, cancelled):
        _, frames = _extract_and_validate(settings)
    row = frames["orders"].set_index("order_id").loc[order_id]
    usual = pristine["orders"].set_index("order_id").loc[order_id, "order_value"]
    assert row["status"] == "cancelled" and row["order_value"] == pytest.approx(usual * 1000)


def test_sql_metacharacters_and_unicode_are_data_end_to_end(settings, store, pristine, tmp_path):
    channel = EVIL + " " + UNICODE
    text = [
        _replaced("customers",
                  country=f"CASE customer_id % 3 WHEN 0 THEN {_literal(EVIL)} WHEN 1 THEN {_literal(UNICODE)} ELSE country END",
                  timezone=f"CASE WHEN customer_id % 5 = 0 THEN {_literal(EVIL)} ELSE timezone END",
                  acquisition_channel=f"CASE WHEN customer_id % 2 = 0 THEN {_literal(UNICODE)} ELSE acquisition_channel END"),
        _replaced("products", name=f"{_literal(UNICODE)} || name",
                  category=f"CASE WHEN product_id % 2 = 0 THEN {_literal(UNICODE)} ELSE category END"),
        _replaced("orders", channel=f"CASE WHEN order_id % 4 = 0 THEN {_literal(EVIL)} ELSE channel END"),
        _replaced("marketing_spend", channel=f"CASE WHEN channel = 'display' THEN {_literal(channel)} ELSE channel END"),
    ]
    with connect_postgres(settings) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS public.x (id int)")  # what the country asks to drop
    try:
        with _injected(settings, text):
            paths, frames = _extract_and_validate(settings)
            built = build_features(Resources(settings), RUN_DATE, paths)

        customers = frames["customers"]
        assert {EVIL, UNICODE} <= set(customers["country"]) and UNICODE in set(frames["products"]["category"])
        assert EVIL in set(frames["orders"]["channel"]) and channel in set(frames["marketing_spend"]["channel"])
        assert built["rows"] == len(customers)

        fit = send_time.fit_send_time(frames["engagement_by_hour"], frames["orders"], customers, pd.Timestamp(RUN_DATE, tz="UTC"))
        assert {EVIL, UNICODE} <= set(fit.segment), "countries are segments, whatever their text"
        invalid_zone = customers["customer_id"] % 5 == 0
        assert fit.params["unknown_timezones"] == invalid_zone.sum()
        assert set(fit.timezone[np.isin(fit.customer_id, customers.loc[invalid_zone, "customer_id"])]) == {"UTC"}

        assert UNICODE in set(_demand_panel(frames)["category"])

        history = _media_history(frames)
        assert f"spend_{channel}" in history.columns and f"revenue_{EVIL}" in history.columns
        allocation = budget.allocate_budget(budget.fit_media_model(history, budget.MediaConfig(n_bootstrap=0)), history)
        path = tmp_path / "budget_allocations.parquet"
        _allocation_table(allocation, SCRATCH_DATE).to_parquet(path, index=False)
        assert publish(Resources(settings), SCRATCH_DATE, "scores.budget_allocations", str(path)) == len(allocation.table)
        with connect_postgres(settings) as conn:
            published = read_frame(conn, "SELECT channel FROM scores.budget_allocations WHERE run_date = %s", (SCRATCH_DATE,))
            survived = conn.execute("SELECT to_regclass('public.x') IS NOT NULL").fetchone()[0]
        assert channel in set(published["channel"])
        assert survived
    finally:
        with connect_postgres(settings) as conn:
            conn.execute("DELETE FROM scores.budget_allocations WHERE run_date = %s", (SCRATCH_DATE,))
            conn.execute("DROP TABLE IF EXISTS public.x")


def _allocation_table(allocation: budget.BudgetAllocation, run_date: dt.date) -> pd.DataFrame:
    """The rows the nightly allocate_budget task writes (the champion's predict, ml.pipeline.recommend)."""
    from ml.families.budget.model import allocation_rows

    return allocation_rows(allocation).assign(run_date=run_date, model_name="bad-input-test", model_version="0")


def test_an_unknown_channel_is_held_at_its_spend_until_training_fits_it(settings, store, pristine, budget_champion):
    new_channel = _appended("marketing_spend", "SELECT day, 'tiktok', 5.00, 1000, 10, campaign FROM {source} "
                                               f"WHERE channel = 'paid_search' AND day >= DATE '{RUN_DATE - dt.timedelta(days=60)}'")
    relabelled = _replaced("orders", channel="CASE WHEN order_id % 7 = 0 THEN 'carrier_pigeon' ELSE channel END")
    with _injected(settings, [new_channel, relabelled]):
        _, frames = _extract_and_validate(settings)

    history, before = _media_history(frames), _media_history(pristine)
    assert budget.paid_channels(history) == sorted([*budget.paid_channels(before), "tiktok"])
    assert "revenue_carrier_pigeon" in history.columns, "an unknown order channel is just another order channel"
    np.testing.assert_allclose(history["revenue"], before["revenue"])

    allocation = budget.allocate_budget(budget_champion, history)
    held = allocation.table.set_index("channel").loc["tiktok"]
    assert held["binding_constraint"] == "excluded" and "not in the fitted model" in held["reason"]
    assert held["recommended_spend"] == pytest.approx(held["current_spend"]) and held["current_spend"] > 0
    assert allocation.table["recommended_spend"].sum() == pytest.approx(allocation.table["current_spend"].sum())

    retrained = budget.fit_media_model(history, budget.MediaConfig(n_bootstrap=0)).channels.set_index("channel")
    assert "tiktok" in retrained.index and (retrained.loc["tiktok", "fitted"] or retrained.loc["tiktok", "reason"])


def test_a_channel_with_zero_spend_stays_at_zero_and_says_why(settings, store, pristine, budget_champion):
    with _injected(settings, [_replaced("marketing_spend", spend="CASE WHEN channel = 'display' THEN 0 ELSE spend END")]):
        _, frames = _extract_and_validate(settings)
    history = _media_history(frames)
    assert history["spend_display"].eq(0.0).all()

    retrained = budget.fit_media_model(history, budget.MediaConfig(n_bootstrap=0))
    assert "no spend" in retrained.excluded["display"]
    for fit, binding in ((retrained, {"excluded"}), (budget_champion, {"min", "max_change"})):
        allocation = budget.allocate_budget(fit, history)
        display = allocation.table.set_index("channel").loc["display"]
        assert display["current_spend"] == 0.0 and display["recommended_spend"] == 0.0
        assert display["binding_constraint"] in binding and display["reason"]
        assert allocation.table["recommended_spend"].sum() == pytest.approx(allocation.table["current_spend"].sum())


def test_a_paused_channel_publishes_a_finite_or_null_marginal_roas(settings, store, pristine, tmp_path):
    spend = pristine["marketing_spend"]
    paused = spend.assign(spend=spend["spend"].where(spend["channel"] != "display", 0.0))
    history = _media_history({**pristine, "marketing_spend": paused})
    # A champion whose curves are concave from zero (Hill slope < 1): the marginal return of a paused channel is unbounded.
    channels = budget.paid_channels(history)
    curves = pd.DataFrame({"channel": channels, "decay": 0.3, "slope": 0.7, "max_revenue_per_day": 100.0,
                           "half_saturation_spend": [float(spend.loc[spend["channel"] == c, "spend"].mean()) for c in channels]})
    allocation = budget.allocate_budget(budget.fit_from_curves(curves, float(history["revenue"].mean())), history)
    path = tmp_path / "budget_allocations.parquet"
    _allocation_table(allocation, SCRATCH_DATE).to_parquet(path, index=False)
    try:
        publish(Resources(settings), SCRATCH_DATE, "scores.budget_allocations", str(path))
        with connect_postgres(settings) as conn:
            published = read_frame(conn, "SELECT channel, marginal_roas, marginal_roas_low, marginal_roas_high "
                                         "FROM scores.budget_allocations WHERE run_date = %s", (SCRATCH_DATE,))
    finally:
        with connect_postgres(settings) as conn:
            conn.execute("DELETE FROM scores.budget_allocations WHERE run_date = %s", (SCRATCH_DATE,))
    values = published[["marginal_roas", "marginal_roas_low", "marginal_roas_high"]].astype(float).to_numpy()
    assert (np.isfinite(values) | np.isnan(values)).all(), published.to_string()


# --- end to end through the nightly DAG ------------------------------------------------------------


def _published(settings: Settings) -> dict[str, pd.DataFrame]:
    """The run date's rows of every published table (scores.* with a run_date, but not the
    data-quality record, which the gate writes on purpose)."""
    with connect_postgres(settings) as conn:
        tables = [row[0] for row in conn.execute(
            "SELECT table_name FROM information_schema.columns WHERE table_schema = 'scores' AND column_name = 'run_date' "
            "AND table_name <> 'data_quality' AND table_name NOT LIKE '%%\\_latest' ORDER BY 1"
        ).fetchall()]
        published = {}
        for table in tables:
            query = sql.SQL("SELECT * FROM {} WHERE run_date = %s").format(sql.Identifier("scores", table))
            rows = read_frame(conn, query.as_string(conn), (RUN_DATE,)).astype(str)
            published[table] = rows.sort_values(list(rows.columns)).reset_index(drop=True)
    return published


def _run_note(settings: Settings, dag_id: str, run_date: dt.date) -> str | None:
    """The note on the latest run of ``dag_id`` for ``run_date`` in Airflow's metadata database (the UI's
    Details tab)."""
    import sqlite3

    with sqlite3.connect(settings.airflow_home / "airflow.db") as db:
        row = db.execute("SELECT n.content FROM dag_run AS r JOIN dag_run_note AS n ON n.dag_run_id = r.id "
                         "WHERE r.dag_id = ? AND date(r.logical_date) = ? ORDER BY r.id DESC LIMIT 1",
                         (dag_id, run_date.isoformat())).fetchone()
    return None if row is None else row[0]


def test_an_outlier_order_fails_the_nightly_dag_and_publishes_nothing(settings, store, pristine, capsys, monkeypatch,
                                                                      webhook):
    sentinel = pd.DataFrame({"run_date": [RUN_DATE], "customer_id": [1], "purchase_propensity": [0.5],
                             "propensity_model": ["published before"], "propensity_version": ["0"]})
    with connect_postgres(settings) as conn:
        publish_partition(conn, "scores.customer_scores", RUN_DATE, sentinel)
    before = _published(settings)
    order_id = _completed_order_near_median(pristine)
    outlier = _replaced("order_lines", unit_price=f"CASE WHEN order_id = {order_id} THEN unit_price * 1000 ELSE unit_price END")
    try:
        url, notifications = webhook  # a local receiver (tests/conftest.py)
        with _injected(settings, [outlier]):
            close_event_stores()  # Airflow's task process opens the chDB folder next
            monkeypatch.setenv("AIRFLOW_CONN_REVOPT_NOTIFY", url)  # the notifier's connection, as a deployment sets it
            status = cli.main(["run", "--dag", "nightly", "--date", RUN_DATE.isoformat()])
        err = capsys.readouterr().err
        assert status != 0
        assert "DataValidationError" in err and "'orders'" in err and "order_value" in err and RUN_DATE.isoformat() in err
        # the data-quality gate's notification, naming the run date, the task and the failed expectation
        [gate] = [n for n in notifications if n["task_id"] == "validate_tables"]  # the part holding orders
        assert (gate["kind"], gate["run_date"], gate["dag_id"]) == ("data_quality", RUN_DATE.isoformat(), "revopt_nightly")
        assert any("order_value" in line for line in gate["data_quality"]) and "/dags/revopt_nightly/runs/" in gate["log_url"]
        # the run's note says the gate stopped it and nothing after it was published (identities come before it)
        note = _run_note(settings, "revopt_nightly", RUN_DATE)
        assert note is not None and "- Data quality: FAILED (validate_tables failed)" in note, note
        assert "customer_scores" not in note and "1 task(s) failed (validate_tables)" in note, note
        after = _published(settings)
        assert after.keys() == before.keys()
        for table, rows in before.items():
            pd.testing.assert_frame_equal(after[table], rows, obj=f"scores.{table}")
        with connect_postgres(settings) as conn:
            recorded = conn.execute("SELECT success FROM scores.data_quality WHERE run_date = %s AND dataset = 'orders'",
                                    (RUN_DATE,)).fetchone()
        assert recorded == (False,), "the gate records the failed dataset"
    finally:
        with connect_postgres(settings) as conn:
            conn.execute("DELETE FROM scores.customer_scores WHERE run_date = %s", (RUN_DATE,))
