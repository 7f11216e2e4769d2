"""Conversion paths for attribution (issue 18): each order's touchpoints in a lookback window before it,
and the touchpoints of customers who have not converted since, joined inside ClickHouse.

A *touchpoint* is a web session (its first event's time and channel) or a human email click (channel
``email``). A *journey* is a window of one customer's touchpoints:

- a converting journey per non-cancelled order: touchpoints in ``(max(order_ts - lookback, the
  customer's previous order_ts), order_ts]`` (so a touch credits only the next order; the order's own
  session, which starts before its purchase event, is its last touch);
- non-converting journeys: the rest of each customer's time since the extract's start, so every touch is
  in exactly one journey: a gap longer than the lookback between two orders (or before the first) gives
  ``(previous order, order_ts - lookback]``, touches that led to no order within the lookback; and after
  the last order, ``(last order_ts, run_ts)``, touches that have led to none yet (customers without
  orders: their whole time). Windows without touchpoints are dropped.

Keeping the touches that led nowhere is what lets the Markov model tell a channel that brings buyers
from one that brings traffic: without them (only the touches before an order) every path converts.

The orders come from PostgreSQL, the events stay in ClickHouse: the journey windows (one row per
journey, a few columns) are inserted into a ClickHouse table of this build's own (dropped after it) and
joined there, so only the
touchpoints of the windows come back. The output is the input of :mod:`ml.attribution.models`:
``journeys`` (journey_id, position, channel, campaign, touch_ts) and ``outcomes`` (journey_id, converted,
revenue, conversion_ts). Converting journeys are numbered by ``order_id``; non-converting ones after the
largest order id, by customer.

A session's campaign is that of its first event, an email click's its own (``events.campaign``; '' and a
store whose events table has no ``campaign`` column give None: the journey is credited per channel only).

The extract keeps both frames as one dataset, ``conversion_paths`` (:func:`paths_dataset`): one row per
touch, each carrying its journey's customer and outcome, and one row with ``position = -1`` for a
converting journey without touches; :func:`split_paths` gives the two frames back.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pyarrow as pa

from revopt.platform.events import scratch_tables
from revopt.platform.identity import events_source

logger = logging.getLogger(__name__)

#: the prefix of the ClickHouse table the journey windows are written to before the join: one table per build
#: (a random suffix), dropped after it, so builds running at once (the training and the nightly DAG against one
#: ClickHouse server) never read each other's windows
WINDOWS_TABLE = "attribution_windows"
#: its columns and engine (revopt.platform.events.scratch_tables)
WINDOWS_DEFINITION = """(
    journey_id    Int64,
    customer_id   UInt64,
    window_start  DateTime64(3, 'UTC'),
    window_end    DateTime64(3, 'UTC')
) ENGINE = MergeTree ORDER BY (customer_id, journey_id)
"""

PATHS_SQL = """
WITH touches AS (
    SELECT customer_id, min(event_time) AS touch_ts, argMin(channel, event_time) AS channel,
           argMin({campaign}, event_time) AS campaign
    FROM {events}
    WHERE customer_id != 0 AND session_id != 0 AND event_type NOT LIKE 'email_%'
      AND event_time >= {{since:DateTime64(3, 'UTC')}} AND event_time < {{run_ts:DateTime64(3, 'UTC')}}
    GROUP BY customer_id, session_id
    UNION ALL
    SELECT customer_id, event_time AS touch_ts, 'email' AS channel, {campaign} AS campaign
    FROM {events}
    WHERE customer_id != 0 AND event_type = 'email_click' AND is_machine = 0
      AND event_time >= {{since:DateTime64(3, 'UTC')}} AND event_time < {{run_ts:DateTime64(3, 'UTC')}}
)
SELECT w.journey_id AS journey_id, toString(t.channel) AS channel, toString(t.campaign) AS campaign,
       t.touch_ts AS touch_ts
FROM {database}.{windows} AS w
INNER JOIN touches AS t ON t.customer_id = w.customer_id
WHERE t.touch_ts > w.window_start AND t.touch_ts <= w.window_end
ORDER BY journey_id, touch_ts, channel
"""


def journey_windows(orders: pd.DataFrame, run_ts: pd.Timestamp, lookback_days: int,
                    since_ts: pd.Timestamp | None = None, customers=None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The journey windows (journey_id, customer_id, window_start, window_end; a touch at t is in a window
    when start < t <= end) and their outcomes (journey_id, converted, revenue, conversion_ts) from the
    orders extract (order_id, customer_id, order_ts, status, order_value) as of ``run_ts``.

    Each customer's time from ``since_ts`` (the extract's start; default: the lookback before their first
    order) to ``run_ts`` is cut into windows, so every touch is in exactly one journey: per non-cancelled
    order the converting window ``(max(order - lookback, previous order), order]``; before it, when the gap
    since the previous order (or ``since_ts``) is longer than the lookback, the non-converting window
    ``(previous order, order - lookback]`` (touches that led to no order within the lookback); and after
    the last order (or ``since_ts``) the non-converting window up to the run date. ``customers`` (ids)
    adds customers without orders, whose whole time is one non-converting window."""
    lookback = pd.Timedelta(days=lookback_days)
    orders = usable_orders(orders)
    kept = orders[(orders["status"].astype(str) != "cancelled") & (orders["order_ts"] < run_ts)]
    kept = kept.sort_values(["customer_id", "order_ts", "order_id"])
    order_ts = pd.to_datetime(kept["order_ts"], utc=True)
    previous = order_ts.groupby(kept["customer_id"]).shift(1)
    reach = order_ts - lookback
    start = reach.where(previous.isna() | (previous < reach), previous)
    if since_ts is not None:  # nothing before the extract's start is read
        start = start.where(start > since_ts, since_ts)
    converting = pd.DataFrame({"journey_id": kept["order_id"].astype("int64").to_numpy(),
                               "customer_id": kept["customer_id"].astype("int64").to_numpy(),
                               "window_start": _naive_utc(start), "window_end": _naive_utc(order_ts)})
    floor = previous if since_ts is None else previous.fillna(since_ts)
    gap = floor.notna() & (floor < reach)
    gaps = pd.DataFrame({"customer_id": kept["customer_id"].astype("int64").to_numpy()[gap.to_numpy()],
                         "window_start": _naive_utc(floor[gap]), "window_end": _naive_utc(reach[gap])})
    ids = pd.unique(np.r_[orders["customer_id"].astype("int64").to_numpy(),
                          np.asarray([] if customers is None else customers, dtype="int64")])
    last = order_ts.groupby(kept["customer_id"].astype("int64")).max().reindex(ids)
    tail_start = last if since_ts is None else last.fillna(since_ts)
    if since_ts is None:  # without an extract start, a customer without orders has no window
        tail_start = tail_start.fillna(run_ts - lookback)
    tail_end = pd.Series(run_ts - pd.Timedelta(milliseconds=1), index=range(len(ids)))
    tails = pd.DataFrame({"customer_id": ids, "window_start": _naive_utc(tail_start), "window_end": _naive_utc(tail_end)})
    waiting = pd.concat([gaps, tails], ignore_index=True)
    first_id = int(orders["order_id"].max()) + 1 if len(orders) else 1
    waiting.insert(0, "journey_id", first_id + np.arange(len(waiting), dtype="int64"))
    windows = pd.concat([converting, waiting], ignore_index=True)
    for column in ("window_start", "window_end"):
        windows[column] = pd.to_datetime(windows[column], utc=True).astype("datetime64[ms, UTC]")
    converted_at = _naive_utc(order_ts).astype("datetime64[ns]")
    outcomes = pd.DataFrame({
        "journey_id": windows["journey_id"].to_numpy(),
        "converted": np.r_[np.ones(len(converting), bool), np.zeros(len(waiting), bool)],
        "revenue": np.r_[kept["order_value"].to_numpy(dtype=float), np.zeros(len(waiting))],
        "conversion_ts": np.concatenate([converted_at, np.full(len(waiting), np.datetime64("NaT", "ns"))]),
    })
    outcomes["conversion_ts"] = pd.to_datetime(outcomes["conversion_ts"], utc=True)
    return windows, outcomes


def _naive_utc(times: pd.Series) -> np.ndarray:
    """Times with a time zone as naive UTC ``datetime64`` values: ``to_numpy`` of a zoned series makes a Python
    object per value (5M journeys at a million customers)."""
    times = pd.to_datetime(times, utc=True)
    return times.dt.tz_convert(None).to_numpy()


def usable_orders(orders: pd.DataFrame) -> pd.DataFrame:
    """The orders a path can be built for: with an order id, a customer and a time, each id once. The paths are
    extracted before validation, which rejects such rows with the dataset, column and run date named (the
    orders suite); here they are only left out, so the extract reaches that gate."""
    ok = orders["order_id"].notna() & orders["customer_id"].notna() & orders["order_ts"].notna()
    usable = orders[ok].drop_duplicates("order_id")
    if len(usable) < len(orders):
        logger.warning("conversion paths: %d orders without an id, customer or time, or repeating an id, left out "
                       "(the orders' validation names them)", len(orders) - len(usable))
    return usable


def conversion_paths_in_store(store, orders: pd.DataFrame, since_ts: pd.Timestamp, run_ts: pd.Timestamp,
                              lookback_days: int, customers=None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(journeys, outcomes) for :mod:`ml.attribution.models` (module docstring), the touchpoints joined in
    ClickHouse; ``store`` a :class:`revopt.platform.events.EventStore` (None: no clickstream, so every
    order is a journey without touchpoints and nothing else is a journey). Non-converting journeys
    without a touchpoint are dropped from both frames."""
    return _paths_of_windows(store, *journey_windows(orders, run_ts, lookback_days, since_ts, customers),
                             since_ts, run_ts)


def _paths_of_windows(store, windows: pd.DataFrame, outcomes: pd.DataFrame, since_ts: pd.Timestamp,
                      run_ts: pd.Timestamp) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`conversion_paths_in_store` from windows already built."""
    if store is None:
        converted = outcomes[outcomes["converted"]]
        return _typed_journeys(pd.DataFrame()), converted.reset_index(drop=True)
    with scratch_tables(store, {WINDOWS_TABLE: WINDOWS_DEFINITION}) as created:
        table = created[WINDOWS_TABLE]
        arrow = pa.Table.from_pandas(windows.astype({"customer_id": "uint64"}), preserve_index=False)
        store.insert_arrow(table, arrow)
        campaign = "campaign" if has_event_column(store, "campaign") else "''"
        touches = store.query_df(PATHS_SQL.format(database=store.database, campaign=campaign, windows=table,
                                                       events=events_source(store)), {
            "since": since_ts.strftime("%Y-%m-%d %H:%M:%S"), "run_ts": run_ts.strftime("%Y-%m-%d %H:%M:%S")})
    journeys = _typed_journeys(touches)
    touched = outcomes["converted"] | outcomes["journey_id"].isin(journeys["journey_id"])
    return journeys, outcomes[touched].reset_index(drop=True)


def has_event_column(store, column: str) -> bool:
    """Whether the store's events table has ``column`` (an optional one, e.g. ``campaign``)."""
    found = store.query_df(
        "SELECT count() AS n FROM system.columns WHERE database = {database:String} AND table = 'events' "
        "AND name = {column:String}", {"database": store.database, "column": column})
    return bool(len(found)) and int(found["n"].iloc[0]) > 0


#: the columns of the ``conversion_paths`` dataset (one row per touch; module docstring)
PATH_COLUMNS = ("journey_id", "customer_id", "converted", "revenue", "conversion_ts", "position", "channel",
                "campaign", "touch_ts")


def paths_dataset(journeys: pd.DataFrame, outcomes: pd.DataFrame, customers: pd.Series) -> pd.DataFrame:
    """The ``conversion_paths`` dataset from (journeys, outcomes); ``customers`` maps journey_id to customer.

    Built from arrays (each touch finds its outcome by a sorted search) rather than a merge and a sort of frames:
    15M touches of 5M journeys at a million customers."""
    keys = outcomes["journey_id"].to_numpy(dtype="int64")
    by_key = np.argsort(keys, kind="stable")
    touch_ids = journeys["journey_id"].to_numpy(dtype="int64")
    found = np.searchsorted(keys, touch_ids, sorter=by_key).clip(max=max(len(keys) - 1, 0))
    at = by_key[found] if len(keys) else np.zeros(0, dtype="int64")
    if len(touch_ids) and not np.array_equal(keys[at], touch_ids):
        missing = np.unique(touch_ids[keys[at] != touch_ids])
        raise ValueError(f"conversion paths: touches of journeys without an outcome: {missing[:5].tolist()}")
    touched = np.zeros(len(keys), dtype=bool)
    touched[at] = True
    bare = np.flatnonzero(~touched)
    rows = np.concatenate([at, bare])  # each output row's outcome
    position = np.concatenate([journeys["position"].to_numpy(dtype="int64"), np.full(len(bare), -1, dtype="int64")])
    journey_id = keys[rows]
    order = np.lexsort((position, journey_id))
    rows = rows[order]
    empty = np.full(len(bare), None, dtype=object)

    def touch_column(name: str) -> np.ndarray:
        return np.concatenate([journeys[name].to_numpy(dtype=object), empty])[order]

    touch_ts = np.concatenate([_naive_utc(journeys["touch_ts"]).astype("datetime64[ns]"),
                               np.full(len(bare), np.datetime64("NaT", "ns"))])[order]
    customer = customers.reindex(keys).to_numpy()[rows]
    frame = pd.DataFrame({
        "journey_id": journey_id[order],
        "customer_id": customer.astype("int64"),
        "converted": outcomes["converted"].to_numpy(dtype=bool)[rows],
        "revenue": outcomes["revenue"].to_numpy(dtype="float64")[rows],
        "conversion_ts": pd.to_datetime(_naive_utc(outcomes["conversion_ts"]).astype("datetime64[ns]")[rows], utc=True),
        "position": position[order],
        "channel": touch_column("channel"),
        "campaign": touch_column("campaign"),
        "touch_ts": pd.to_datetime(touch_ts, utc=True),
    })
    return frame[list(PATH_COLUMNS)]


def split_paths(paths: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(journeys, outcomes) of :mod:`ml.attribution.models` from the ``conversion_paths`` dataset."""
    outcomes = (paths.drop_duplicates("journey_id")[["journey_id", "converted", "revenue", "conversion_ts"]]
                .reset_index(drop=True))
    touches = paths[paths["position"] >= 0]
    journeys = touches[["journey_id", "position", "channel", "campaign", "touch_ts"]].reset_index(drop=True)
    journeys["campaign"] = journeys["campaign"].astype(object).where(journeys["campaign"].notna(), None)
    return journeys, outcomes


def conversion_paths(store, orders: pd.DataFrame, since_ts: pd.Timestamp, run_ts: pd.Timestamp,
                     lookback_days: int, customers=None) -> pd.DataFrame:
    """The ``conversion_paths`` dataset as of ``run_ts`` (:func:`conversion_paths_in_store`, flattened)."""
    windows, outcomes = journey_windows(orders, run_ts, lookback_days, since_ts, customers)
    journeys, outcomes = _paths_of_windows(store, windows, outcomes, since_ts, run_ts)
    return paths_dataset(journeys, outcomes, windows.set_index("journey_id")["customer_id"])


def _typed_journeys(touches: pd.DataFrame) -> pd.DataFrame:
    if touches.empty:
        return pd.DataFrame({"journey_id": pd.Series(dtype="int64"), "position": pd.Series(dtype="int64"),
                             "channel": pd.Series(dtype=object), "campaign": pd.Series(dtype=object),
                             "touch_ts": pd.Series(dtype="datetime64[ns, UTC]")})
    out = pd.DataFrame({"journey_id": touches["journey_id"].astype("int64").to_numpy(),
                        "channel": touches["channel"].astype(str).to_numpy(),
                        "campaign": touches["campaign"].astype(object).where(touches["campaign"].astype(str) != "", None).to_numpy()
                        if "campaign" in touches else np.full(len(touches), None, dtype=object),
                        "touch_ts": pd.to_datetime(touches["touch_ts"], utc=True).astype("datetime64[ns, UTC]").array})
    if not _in_touch_order(out):  # PATHS_SQL orders them already; a sort of 15M rows is kept for anything else
        out = out.sort_values(["journey_id", "touch_ts", "channel"], kind="stable").reset_index(drop=True)
    ids = out["journey_id"].to_numpy()
    first = np.r_[True, ids[1:] != ids[:-1]]
    starts = np.flatnonzero(first)
    out.insert(1, "position", np.arange(len(out), dtype="int64") - np.repeat(starts, np.diff(np.r_[starts, len(out)])))
    return out


def _in_touch_order(touches: pd.DataFrame) -> bool:
    """Whether ``touches`` are sorted by journey, time and channel (compared as arrays: the channels only where
    journey and time tie)."""
    ids, times = touches["journey_id"].to_numpy(), _naive_utc(touches["touch_ts"])
    if len(ids) < 2:
        return True
    same_id = ids[1:] == ids[:-1]
    if (ids[1:] < ids[:-1]).any() or (same_id & (times[1:] < times[:-1])).any():
        return False
    tied = np.flatnonzero(same_id & (times[1:] == times[:-1]))
    channels = touches["channel"].to_numpy()
    return all(channels[i] <= channels[i + 1] for i in tied)
