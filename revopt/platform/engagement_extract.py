"""The send-time evidence extracts, computed inside the events store (ClickHouse): engagement per customer
and UTC hour (``engagement_by_hour``: the training DAG's send-time backtest), and the same summed per customer,
local day type and local hour (``engagement_by_local_hour``: the nightly DAG, issue 22; the customers' time
zones travel to ClickHouse in two small tables, revopt.platform.timezones). Split from revopt.platform.extract,
which calls these for the datasets of those names."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from revopt.platform.events import EventStore, scratch_tables
from revopt.platform.identity import events_source
from revopt.platform.timezones import customer_zones, zone_offsets

# Send-time evidence per customer and UTC hour: campaign sends in that hour with whether each was
# opened / clicked by a human (a response belongs to the customer's latest send before it;
# machine opens are excluded), plus the web sessions the customer started in that hour.
ENGAGEMENT_SQL = """
WITH
sends AS (
    SELECT customer_id, event_time AS send_time
    FROM {events}
    WHERE event_type = 'email_send' AND customer_id != 0
      AND event_time >= {{since:DateTime64(3, 'UTC')}} AND event_time < {{run_ts:DateTime64(3, 'UTC')}}
),
responses AS (
    SELECT r.customer_id AS customer_id, s.send_time AS send_time,
           max(r.event_type = 'email_open') AS opened, max(r.event_type = 'email_click') AS clicked
    FROM (
        SELECT customer_id, event_time, event_type
        FROM {events}
        WHERE event_type IN ('email_open', 'email_click') AND is_machine = 0 AND customer_id != 0
          AND event_time >= {{since:DateTime64(3, 'UTC')}} AND event_time < {{run_ts:DateTime64(3, 'UTC')}}
    ) AS r
    ASOF INNER JOIN sends AS s ON r.customer_id = s.customer_id AND r.event_time >= s.send_time
    GROUP BY r.customer_id, s.send_time
),
email AS (
    SELECT s.customer_id AS customer_id, toStartOfHour(s.send_time) AS hour_utc,
           count() AS sends, sum(r.opened) AS opens, sum(r.clicked) AS clicks, 0 AS sessions
    FROM sends AS s
    LEFT JOIN responses AS r ON r.customer_id = s.customer_id AND r.send_time = s.send_time
    GROUP BY customer_id, hour_utc
),
visits AS (
    SELECT customer_id, toStartOfHour(min(event_time)) AS hour_utc, 0 AS sends, 0 AS opens, 0 AS clicks, 1 AS sessions
    FROM {events}
    WHERE session_id != 0 AND customer_id != 0
      AND event_time >= {{since:DateTime64(3, 'UTC')}} AND event_time < {{run_ts:DateTime64(3, 'UTC')}}
    GROUP BY customer_id, session_id
)
SELECT toInt64(customer_id) AS customer_id, hour_utc,
       toInt64(sum(sends)) AS sends, toInt64(sum(opens)) AS opens,
       toInt64(sum(clicks)) AS clicks, toInt64(sum(sessions)) AS sessions
FROM (SELECT * FROM email UNION ALL SELECT * FROM visits)
GROUP BY customer_id, hour_utc
ORDER BY customer_id, hour_utc
"""

#: Days before the run date in which :data:`ENGAGEMENT_BY_LOCAL_HOUR_SQL` keeps one cell per UTC day: the
#: send-time test window and the one before it (2 x 28 days, what the nightly shortfall counts in), and the
#: outcome windows ``[R, R + 28)`` of the nights evaluated up to 28 days late.
LOCAL_HOUR_DETAIL_DAYS = 56
#: Customers per query of :func:`engagement_by_local_hour`: it runs once per range of this many customer ids
#: (the events' sort key), so the events store's hash tables hold one range's sends, sessions and cells at a time.
LOCAL_HOUR_CUSTOMERS_PER_QUERY = 100_000

# The send-time evidence at the model's grain: the rows of ENGAGEMENT_SQL summed per customer, local day
# type (weekend: local Saturday, Sunday) and local hour, per UTC day in the last LOCAL_HOUR_DETAIL_DAYS and
# once before. The local clock is hour_utc plus the offset Python computed for the customer's zone
# (revopt.platform.timezones: {zones} customer -> zone code, {offsets} zone -> offset from valid_from on;
# a customer not in {zones} reads as zone 0, UTC). hour_utc is the latest UTC hour of the cell, so the
# model, locating it again, puts it in the same cell of its cube.
ENGAGEMENT_BY_LOCAL_HOUR_SQL = """
SELECT customer_id, max(hour_utc) AS hour_utc,
       toInt64(sum(sends)) AS sends, toInt64(sum(opens)) AS opens,
       toInt64(sum(clicks)) AS clicks, toInt64(sum(sessions)) AS sessions, utc_day
FROM (
    SELECT h.customer_id AS customer_id, h.hour_utc AS hour_utc, h.sends AS sends, h.opens AS opens,
           h.clicks AS clicks, h.sessions AS sessions,
           h.hour_utc + toIntervalSecond(o.offset_seconds) AS wall,
           if(h.hour_utc >= {{detail_since:DateTime64(3, 'UTC')}}, toDate(h.hour_utc), NULL) AS utc_day
    FROM (
        SELECT e.customer_id AS customer_id, e.hour_utc AS hour_utc, e.sends AS sends, e.opens AS opens,
               e.clicks AS clicks, e.sessions AS sessions, z.zone AS zone
        FROM ({hourly}) AS e
        LEFT ANY JOIN {zones} AS z ON z.customer_id = e.customer_id
    ) AS h
    ASOF INNER JOIN {offsets} AS o ON h.zone = o.zone AND h.hour_utc >= o.valid_from
)
GROUP BY customer_id, toDayOfWeek(wall) >= 6, toHour(wall), utc_day
ORDER BY customer_id, hour_utc
"""

ENGAGEMENT_COLUMNS = ("customer_id", "hour_utc", "sends", "opens", "clicks", "sessions")
LOCAL_ENGAGEMENT_COLUMNS = (*ENGAGEMENT_COLUMNS, "utc_day")


def engagement_by_hour(store: EventStore, since_ts: pd.Timestamp, run_ts: pd.Timestamp,
                       customer_ids: np.ndarray | None = None) -> pd.DataFrame:
    """Email sends / human opens / clicks and web sessions per customer and UTC hour in
    ``[since_ts, run_ts)`` (see :data:`ENGAGEMENT_SQL`); ``hour_utc`` is ``datetime64[ns, UTC]``.
    ``customer_ids`` (e.g. the training DAG's customer sample) restricts the rows to those customers inside
    the events store: the ids travel in a small table, dropped after the query, and the other customers'
    events are never aggregated or read out (46M hourly rows at a million customers, docs/scale.md)."""
    window = {"since": since_ts.strftime("%Y-%m-%d %H:%M:%S"), "run_ts": run_ts.strftime("%Y-%m-%d %H:%M:%S")}
    if customer_ids is None:
        frame = store.query_df(ENGAGEMENT_SQL.format(events=events_source(store)), window)
    else:
        ids = np.unique(np.asarray(customer_ids, dtype=np.int64)).astype(np.uint64)
        definition = "(customer_id UInt64) ENGINE = MergeTree ORDER BY customer_id"
        with scratch_tables(store, {"engagement_customers": definition}) as created:
            table = f"{store.database}.{created['engagement_customers']}"
            store.insert_arrow(created["engagement_customers"], pa.table({"customer_id": pa.array(ids)}))
            events = f"(SELECT * FROM {events_source(store)} WHERE customer_id IN (SELECT customer_id FROM {table}))"
            frame = store.query_df(ENGAGEMENT_SQL.format(events=events), window)
    return _typed_engagement(frame) if len(frame.columns) else empty_engagement()


def engagement_by_local_hour(store: EventStore, since_ts: pd.Timestamp, run_ts: pd.Timestamp,
                             customers: pd.DataFrame, detail_days: int = LOCAL_HOUR_DETAIL_DAYS) -> pd.DataFrame:
    """:func:`engagement_by_hour` summed inside the events store per customer, local day type and local
    hour (:data:`ENGAGEMENT_BY_LOCAL_HOUR_SQL`), per UTC day in the last ``detail_days`` before ``run_ts``
    (``utc_day``; NaT for the cells of the history before): at most 48 rows per customer for that history
    plus at most one per hourly row of the last ``detail_days``. ``customers`` (customer_id, timezone)
    gives the zones, resolved as the model resolves them; the two small tables they travel in are dropped
    after the queries. One query per range of :data:`LOCAL_HOUR_CUSTOMERS_PER_QUERY` customer ids (every row
    is one customer's, so the parts are exact), which bounds the events store's memory at scale."""
    zones, names = customer_zones(customers)
    offsets = zone_offsets(names, since_ts, run_ts)
    ids = np.unique(zones["customer_id"].to_numpy())
    # inclusive id ranges of LOCAL_HOUR_CUSTOMERS_PER_QUERY customers, the first from 0 and the last to the
    # largest id, so the events of ids missing from customers are summed too (as UTC)
    starts = [0, *ids[LOCAL_HOUR_CUSTOMERS_PER_QUERY::LOCAL_HOUR_CUSTOMERS_PER_QUERY].tolist()]
    ranges = list(zip(starts, [*(start - 1 for start in starts[1:]), np.iinfo(np.int64).max]))
    with scratch_tables(store, {
            "engagement_zones": "(customer_id Int64, zone UInt16) ENGINE = MergeTree ORDER BY customer_id",
            "engagement_zone_offsets": "(zone UInt16, valid_from DateTime64(3, 'UTC'), offset_seconds Int32) "
                                       "ENGINE = MergeTree ORDER BY (zone, valid_from)"}) as created:
        tables = {"zones": created["engagement_zones"], "offsets": created["engagement_zone_offsets"]}
        store.insert_arrow(tables["zones"], pa.Table.from_pandas(zones, preserve_index=False))
        store.insert_arrow(tables["offsets"], pa.table({
            "zone": pa.array(offsets["zone"], pa.uint16()),
            "valid_from": pa.array(offsets["valid_from"], pa.timestamp("ms", tz="UTC")),
            "offset_seconds": pa.array(offsets["offset_seconds"], pa.int32())}))
        events = (f"(SELECT * FROM {events_source(store)} "
                  "WHERE customer_id >= {first_id:UInt64} AND customer_id <= {last_id:UInt64})")
        hourly = ENGAGEMENT_SQL.format(events=events).strip().removesuffix("ORDER BY customer_id, hour_utc")
        sql = ENGAGEMENT_BY_LOCAL_HOUR_SQL.format(hourly=hourly, **{k: f"{store.database}.{v}" for k, v in tables.items()})
        window = {"since": since_ts.strftime("%Y-%m-%d %H:%M:%S"), "run_ts": run_ts.strftime("%Y-%m-%d %H:%M:%S"),
                  "detail_since": (run_ts - pd.Timedelta(days=detail_days)).strftime("%Y-%m-%d %H:%M:%S")}
        parts = [store.query_df(sql, {**window, "first_id": int(first), "last_id": int(last)}) for first, last in ranges]
        parts = [part for part in parts if len(part.columns)]
        frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
        del parts
    return _typed_local_engagement(frame) if len(frame.columns) else empty_local_engagement()


def empty_local_engagement() -> pd.DataFrame:
    """A typed ``engagement_by_local_hour`` extract with no rows (a store without clickstream)."""
    return _typed_local_engagement(pd.DataFrame(columns=list(LOCAL_ENGAGEMENT_COLUMNS)))


def _typed_local_engagement(frame: pd.DataFrame) -> pd.DataFrame:
    typed = _typed_engagement(frame)
    typed["utc_day"] = pd.to_datetime(typed["utc_day"]).astype("datetime64[ns]")
    return typed[list(LOCAL_ENGAGEMENT_COLUMNS)]


def empty_engagement() -> pd.DataFrame:
    """A typed ``engagement_by_hour`` extract with no rows (a store without clickstream)."""
    return _typed_engagement(pd.DataFrame(columns=list(ENGAGEMENT_COLUMNS)))


def _typed_engagement(frame: pd.DataFrame) -> pd.DataFrame:
    typed = frame.astype({column: "int64" for column in ENGAGEMENT_COLUMNS if column != "hour_utc"})
    typed["hour_utc"] = pd.to_datetime(typed["hour_utc"], utc=True).astype("datetime64[ns, UTC]")
    return typed
