"""The nightly engagement at the send-time model's grain (``engagement_by_local_hour``, summed in ClickHouse
with the customers' zones joined there): the zones read as Python reads them, the cells are those of the
hourly rows, and the recommendations, the nightly shortfall and the outcome check come out identical."""

from __future__ import annotations

import datetime as dt
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from features.engagement import local_time
from ml.families.outcomes.common import Scored
from ml.families.outcomes.send_time import send_time_outcome
from ml.families.send_time import (
    FAMILY,
    SendTimeConfig,
    SendTimeModel,
    fit_send_time,
    recommend_send_times,
    send_time_config,
    training_data_shortfall,
)
from ml.params import RunParams
from revopt.platform.engagement_extract import LOCAL_HOUR_DETAIL_DAYS, engagement_by_hour, engagement_by_local_hour
from revopt.platform.timezones import zone_offsets
from revopt.sample_data.synth import generate_store

#: DST both ways, a half-hour DST shift (Lord Howe), a half-hour zone without DST, the southern hemisphere,
#: a zone that dropped DST (Sao Paulo, 2019)
ZONES = ("Europe/London", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata", "America/Sao_Paulo",
         "Australia/Sydney", "UTC")
#: missing, empty and invalid names: read as UTC on both sides
UNKNOWN_ZONES = (None, "", "Mars/Olympus")
START = pd.Timestamp("2024-01-01", tz="UTC")
RUN_TS = pd.Timestamp("2024-12-01", tz="UTC")
DETAIL_DAYS = 40


def test_zone_offsets_put_every_hour_at_the_local_hour_and_day_type_python_reads():
    hours = pd.date_range(START, RUN_TS, freq="h", tz="UTC", inclusive="left")
    offsets = zone_offsets(ZONES, START, RUN_TS)
    for code, zone in enumerate(ZONES):
        table = offsets[offsets["zone"] == code]
        at = np.searchsorted(table["valid_from"].to_numpy(), hours.to_numpy(), side="right") - 1
        wall = hours + pd.to_timedelta(table["offset_seconds"].to_numpy()[at], unit="s")
        python = local_time(pd.Series(hours), np.full(len(hours), zone, dtype=object))
        np.testing.assert_array_equal(wall.hour, python["local_hour"], err_msg=zone)
        np.testing.assert_array_equal(np.where(wall.dayofweek >= 5, "weekend", "weekday"), python["day_type"], err_msg=zone)
        assert len(table) == 1 + {"Asia/Kolkata": 0, "UTC": 0, "America/Sao_Paulo": 0}.get(zone, 2), zone  # Brazil: no DST since 2019


def _events(customers: pd.DataFrame) -> pd.DataFrame:
    """A session (two page views) at 17 past every third UTC hour of the year, for every customer, and an
    email send to each at every seventh hour, opened (by a human) at every other send and machine-opened at
    the rest: rows at every local hour and day type, across the DST changes."""
    hours = pd.date_range(START, RUN_TS, freq="h", tz="UTC", inclusive="left")
    frames = []
    for i, customer in enumerate(customers["customer_id"]):
        visit = hours[(np.arange(len(hours)) + i) % 3 == 0] + pd.Timedelta(minutes=17)
        session = 1_000_000 * (i + 1) + np.arange(len(visit))
        send = hours[(np.arange(len(hours)) + i) % 7 == 0] + pd.Timedelta(minutes=5)
        opened = send[::2] + pd.Timedelta(minutes=40)
        machine = send[1::2] + pd.Timedelta(minutes=1)
        for times, kind, sessions, bot in ((visit, "page_view", session, 0), (visit + pd.Timedelta(minutes=3), "page_view", session, 0),
                                           (send, "email_send", 0, 0), (opened, "email_open", 0, 0),
                                           (machine, "email_open", 0, 1)):
            frames.append(pd.DataFrame({"event_time": times, "session_id": np.broadcast_to(sessions, len(times)).astype("uint64"),
                                        "customer_id": np.uint64(customer), "event_type": kind, "product_id": np.uint64(0),
                                        "channel": "email" if kind.startswith("email") else "web", "device": "desktop",
                                        "is_machine": np.uint8(bot)}))
    return pd.concat(frames, ignore_index=True)


@pytest.fixture(scope="module")
def extracted(tmp_path_factory):
    from revopt.platform.events import open_event_store
    from revopt.platform.stack import close_event_stores

    zones = [*ZONES, *UNKNOWN_ZONES]
    customers = pd.DataFrame({"customer_id": np.arange(1, len(zones) + 1, dtype=np.int64),
                              "timezone": pd.Series(zones, dtype=object), "country": "GB"})
    stranger = pd.DataFrame({"customer_id": [99], "timezone": ["Asia/Tokyo"]})  # has events, not in customers
    events = _events(pd.concat([customers, stranger]))
    close_event_stores()  # chDB serves one data folder per process at a time
    store = open_event_store(url=None, chdb_path=Path(tmp_path_factory.mktemp("chdb")), database="revopt")
    try:
        store.insert_arrow("events", pa.Table.from_pandas(events, preserve_index=False))
        hourly = engagement_by_hour(store, START, RUN_TS)
        with pytest.MonkeyPatch.context() as patch:  # four queries, one per range of 3 customer ids
            patch.setattr("revopt.platform.engagement_extract.LOCAL_HOUR_CUSTOMERS_PER_QUERY", 3)
            cells = engagement_by_local_hour(store, START, RUN_TS, customers, DETAIL_DAYS)
        fixed = engagement_by_local_hour(store, START, RUN_TS, customers.iloc[:1])
        sampled = engagement_by_hour(store, START, RUN_TS, customer_ids=np.array([5, 2, 99, 2]))
        tables = set(store.query_df("SHOW TABLES FROM revopt")["name"])
    finally:
        store.close()
    return customers, hourly, cells, fixed, tables, sampled


def test_the_hourly_rows_of_chosen_customers_are_theirs_of_all_customers(extracted):
    """The training sample's engagement (``customer_ids``, read in the events store) is the rows every customer's
    extract has for those customers, in the same order; the ids' table is dropped (``tables`` above)."""
    _, hourly, _, _, _, sampled = extracted
    expected = hourly.loc[hourly["customer_id"].isin([2, 5, 99])].reset_index(drop=True)
    assert set(expected["customer_id"]) == {2, 5, 99} and len(expected) < len(hourly) / 3
    pd.testing.assert_frame_equal(sampled, expected)


def _python_cells(hourly: pd.DataFrame, customers: pd.DataFrame, detail_days: int) -> pd.DataFrame:
    """The reference: the hourly rows summed per customer, local day type and local hour as the model reads
    them (customers not in ``customers``: UTC), per UTC day in the last ``detail_days``."""
    zone = customers.set_index("customer_id")["timezone"].reindex(hourly["customer_id"]).to_numpy()
    clock = local_time(hourly["hour_utc"], zone)
    detail = hourly["hour_utc"] >= RUN_TS - pd.Timedelta(days=detail_days)
    keys = hourly.assign(day_type=clock["day_type"].to_numpy(), local_hour=clock["local_hour"].to_numpy(),
                         utc_day=hourly["hour_utc"].dt.tz_localize(None).dt.normalize().where(detail))
    summed = keys.groupby(["customer_id", "day_type", "local_hour", "utc_day"], dropna=False).agg(
        hour_utc=("hour_utc", "max"), sends=("sends", "sum"), opens=("opens", "sum"), clicks=("clicks", "sum"),
        sessions=("sessions", "sum")).reset_index()
    return summed[["customer_id", "hour_utc", "sends", "opens", "clicks", "sessions", "utc_day"]]


def test_clickhouse_sums_the_hourly_rows_into_the_cells_python_locates(extracted):
    customers, hourly, cells, _, tables, _ = extracted
    expected = _python_cells(hourly, customers, DETAIL_DAYS).sort_values(["customer_id", "hour_utc"], ignore_index=True)
    pd.testing.assert_frame_equal(cells, expected, check_dtype=True)
    assert tables == {"events"}  # the zone tables are dropped after the query
    assert cells["customer_id"].nunique() == len(customers) + 1  # the customer missing from customers reads as UTC


def test_the_cells_are_bounded_by_customers_x_48_plus_the_detail_window(extracted):
    customers, hourly, cells, _, _, _ = extracted
    history = cells["utc_day"].isna()
    assert cells.loc[history].groupby("customer_id").size().max() <= 48
    assert (~history).sum() <= (hourly["hour_utc"] >= RUN_TS - pd.Timedelta(days=DETAIL_DAYS)).sum()
    assert len(cells) < len(hourly) / 5  # here the 40 days of daily detail are most of it


def test_recommendations_and_shortfall_from_the_cells_are_those_from_the_hourly_rows(extracted):
    customers, hourly, cells, fixed, _, _ = extracted
    for config in (SendTimeConfig(), SendTimeConfig(by_day_type=True)):
        pd.testing.assert_frame_equal(recommend_send_times(fit_send_time(cells, _no_orders(), customers, RUN_TS, config)),
                                      recommend_send_times(fit_send_time(hourly, _no_orders(), customers, RUN_TS, config)))
    # a customer sent at the same local hours all year: every window of the shortfall still has its evidence
    one = customers.iloc[:1]
    assert training_data_shortfall(hourly, _no_orders(), one, RUN_TS) is None
    assert training_data_shortfall(fixed, _no_orders(), one, RUN_TS) is None
    assert (fixed["hour_utc"] >= RUN_TS - pd.Timedelta(days=LOCAL_HOUR_DETAIL_DAYS)).sum() == fixed["utc_day"].notna().sum()


def _no_orders() -> pd.DataFrame:
    return pd.DataFrame({"customer_id": pd.Series(dtype="int64"), "order_ts": pd.Series(dtype="datetime64[ns, UTC]")})


def test_the_outcome_check_reads_the_cells_of_its_window_as_the_hourly_rows(extracted, caplog):
    customers, hourly, cells, _, _, _ = extracted
    fit = fit_send_time(hourly, _no_orders(), customers, RUN_TS - pd.Timedelta(days=28))
    published = recommend_send_times(fit)
    night = (RUN_TS - pd.Timedelta(days=28)).date()
    scored = Scored(night, "send_time", "send_time", "1")
    from_hours = send_time_outcome(scored, 28, published, hourly, _no_orders())
    from_cells = send_time_outcome(scored, 28, published, cells, _no_orders())
    assert from_cells.metrics == from_hours.metrics and from_cells.metrics["sends"] > 0
    pd.testing.assert_frame_equal(from_cells.labelled, from_hours.labelled)
    old = Scored((RUN_TS - pd.Timedelta(days=DETAIL_DAYS + 1)).date(), "send_time", "send_time", "1")
    assert send_time_outcome(old, 28, published, cells, _no_orders()).metrics == {}  # summed hours in its window
    assert "not evaluated" in caplog.text


def test_the_family_scores_the_nightly_cells_as_the_hourly_rows():
    """A generated store end to end through the real extract SQL: the pyfunc's input from the cells gives
    the recommendations of the hourly rows (the logged input schema is unchanged)."""
    from revopt.platform.events import open_event_store
    from revopt.platform.stack import close_event_stores

    days, run_date = 240, dt.date(2024, 1, 1) + dt.timedelta(days=240)
    store = generate_store(1500, days, dt.date(2024, 1, 1), seed=5)
    run_ts = pd.Timestamp(run_date, tz="UTC")
    close_event_stores()
    with tempfile.TemporaryDirectory() as folder:
        events = open_event_store(url=None, chdb_path=Path(folder), database="revopt")
        try:
            events.insert_arrow("events", pa.Table.from_pandas(store.events, preserve_index=False))
            hourly = engagement_by_hour(events, run_ts - pd.Timedelta(days=days), run_ts)
            cells = engagement_by_local_hour(events, run_ts - pd.Timedelta(days=days), run_ts, store.shop["customers"])
        finally:
            events.close()
    params = RunParams(lookback_days=days)
    shop = {"orders": store.shop["orders"], "customers": store.shop["customers"]}
    nightly = {"engagement_by_local_hour": cells, **shop}
    assert FAMILY.shortfall(nightly, run_date, params) is None
    inputs = FAMILY.nightly_input(nightly, run_date, params)
    assert list(inputs.columns) == list(FAMILY.nightly_input({"engagement_by_hour": hourly, **shop}, run_date, params).columns)
    predictor = SendTimeModel(send_time_config(params), run_date.isoformat(), pd.DataFrame())
    predicted = predictor.predict(None, inputs, FAMILY.predict_params(run_date, params))
    from_hours = predictor.predict(None, FAMILY.nightly_input({"engagement_by_hour": hourly, **shop}, run_date, params),
                                   FAMILY.predict_params(run_date, params))
    pd.testing.assert_frame_equal(predicted, from_hours)
    assert len(cells) < len(hourly)
    # the nightly run's path (score_family): the same rows from the frames, without the one long frame
    pd.testing.assert_frame_equal(FAMILY.nightly_predict(predictor, nightly, run_date, params), predicted)
