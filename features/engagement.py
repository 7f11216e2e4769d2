"""Engagement history in the customers' local time, and the send-time model's one-frame input.

Two concerns, both data preparation (no model):

- **local time**: :func:`local_time` turns UTC instants into each customer's local hour and day
  type (weekday / weekend: local Saturday and Sunday), one vectorised ``tz_convert`` per time zone,
  DST respected; :func:`resolve_timezones` reads missing, empty or invalid IANA names as
  :data:`revopt.platform.timezones.FALLBACK_TIMEZONE` (UTC) and says which were known;
- **the nightly input**: the send-time model reads three extracts, ``engagement_by_hour``
  (customer_id, hour_utc, sends, opens, clicks, sessions per customer and UTC hour, see
  ``revopt.platform.engagement_extract.ENGAGEMENT_SQL``; at night ``engagement_by_local_hour``, the same
  columns summed in the events store per customer, local day type and local hour, each row's
  ``hour_utc`` one real UTC hour of its cell, so it lands in the same cell of the model's cube), ``orders`` (customer_id, order_ts) and ``customers``
  (customer_id, timezone and the segment column(s), ``country`` by default). A registered model's
  ``predict`` takes one frame (what ``mlflow models serve`` answers), so :func:`engagement_input`
  stacks the three into one long frame with a ``source`` column naming each row's dataset, and
  :func:`split_engagement_input` gives them back, equal to the originals (row order kept within
  each source, the extracts' dtypes, a fresh index).

The long frame's columns (:data:`SOURCE_COLUMN` first): ``source``, ``customer_id`` (int64, every
row), the customers' columns (object: ``timezone``, the segment columns; None on other rows),
``hour_utc`` (engagement rows), ``sends`` / ``opens`` / ``clicks`` / ``sessions`` (float64, NaN on
other rows) and ``order_ts`` (order rows). Its timestamps are UTC without a zone (``datetime64[ns]``,
NaT on other rows), because MLflow's schema accepts only zone-naive datetimes; the split puts the
UTC zone back. Counts are float64 so that the other rows can be missing; the split restores int64.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

# resolved here and in the events store alike (revopt.platform.timezones); re-exported for the model
from revopt.platform.timezones import resolve_timezones

#: the local day types, by index: weekday 0, weekend 1 (local Saturday and Sunday)
DAY_TYPES: tuple[str, ...] = ("weekday", "weekend")
ENGAGEMENT = "engagement_by_hour"
#: the nightly engagement extract at the model's grain (``revopt.platform.engagement_extract.engagement_by_local_hour``):
#: the same columns, one row per customer, local day type and local hour (per UTC day in the last
#: ``LOCAL_HOUR_DETAIL_DAYS``), ``hour_utc`` one real UTC hour of that cell, and ``utc_day``
LOCAL_ENGAGEMENT = "engagement_by_local_hour"
ORDERS = "orders"
CUSTOMERS = "customers"
#: the long frame's column naming each row's dataset (:data:`SOURCES`)
SOURCE_COLUMN = "source"
SOURCES: tuple[str, ...] = (CUSTOMERS, ENGAGEMENT, ORDERS)

ENGAGEMENT_COLUMNS: tuple[str, ...] = ("customer_id", "hour_utc", "sends", "opens", "clicks", "sessions")
ORDER_COLUMNS: tuple[str, ...] = ("customer_id", "order_ts")
ENGAGEMENT_COUNTS: tuple[str, ...] = ("sends", "opens", "clicks", "sessions")


# --- local time -------------------------------------------------------------------------------------


def local_time(timestamps: pd.Series, timezones: pd.Series | np.ndarray) -> pd.DataFrame:
    """Local hour (0..23), day type (``'weekday'`` / ``'weekend'``: local Saturday and Sunday) and
    the zone used, for each UTC instant in the zone on the same row. Vectorised per zone with
    ``tz_convert`` (DST respected); unknown or invalid zones read as UTC (``timezone_known`` False)."""
    instants = utc_nanoseconds(pd.Series(timestamps), "timestamps")
    zones, known = resolve_timezones(timezones)
    if len(zones) != len(instants):
        raise ValueError(f"timestamps ({len(instants)}) and timezones ({len(zones)}) differ in length")
    codes, names = pd.factorize(zones)
    hour, weekend = local_hour_weekend(instants, codes, list(names))
    return pd.DataFrame({
        "local_hour": hour.astype("int64"),
        "day_type": np.asarray(DAY_TYPES, dtype=object)[weekend.astype(int)],
        "timezone": zones,
        "timezone_known": known,
    })


def local_hour_weekend(instants: np.ndarray, zone_code: np.ndarray, zones: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Local hour (int8) and weekend flag of UTC nanoseconds ``instants``, each read in
    ``zones[zone_code]``: one ``tz_convert`` per zone."""
    hour = np.zeros(len(instants), dtype=np.int8)
    weekend = np.zeros(len(instants), dtype=bool)
    order = np.argsort(zone_code.astype(np.int16 if len(zones) < 2**15 else np.int64), kind="stable")  # radix sort
    bounds = np.searchsorted(zone_code[order], np.arange(len(zones) + 1))
    for z, zone in enumerate(zones):
        rows = order[bounds[z]:bounds[z + 1]]
        if not len(rows):
            continue
        local = pd.DatetimeIndex(instants[rows].view("datetime64[ns]")).tz_localize("UTC").tz_convert(zone)
        hour[rows] = local.hour.to_numpy()
        weekend[rows] = local.dayofweek.to_numpy() >= 5
    return hour, weekend


def utc_nanoseconds(values: pd.Series, name: str) -> np.ndarray:
    """Timezone-aware timestamps as int64 UTC nanoseconds; a ValueError naming ``name`` for naive
    or missing ones."""
    if not isinstance(values.dtype, pd.DatetimeTZDtype):
        # a malformed extract column, reported like every other input error (ValueError naming the column)
        raise ValueError(f"{name} must be timezone-aware UTC timestamps (datetime64[ns, UTC]), got dtype {values.dtype}")  # noqa: TRY004
    if values.isna().any():
        raise ValueError(f"{name} has {int(values.isna().sum())} missing timestamps")
    return values.dt.tz_convert("UTC").astype("datetime64[ns, UTC]").dt.tz_localize(None).to_numpy().view(np.int64)


# --- the history window -----------------------------------------------------------------------------


def within_lookback(frames: Mapping[str, pd.DataFrame], run_date: dt.date, lookback_days: int) -> dict[str, pd.DataFrame]:
    """``frames`` with the engagement and orders of the nightly run's window ``[D - lookback_days, ...)``
    only: the training extract reaches further back (the customer models' past cutoffs), and send
    time must learn from the history it recommends from. The nightly extract already is that window."""
    since = pd.Timestamp(run_date, tz="UTC") - pd.Timedelta(days=lookback_days)
    engagement = ENGAGEMENT if ENGAGEMENT in frames else LOCAL_ENGAGEMENT  # training reads hourly rows, the night cells

    def within(frame: pd.DataFrame, column: str) -> pd.DataFrame:
        inside = frame[column] >= since
        return frame if inside.all() else frame.loc[inside]  # no copy of a nightly extract (its window already)

    return {**frames, engagement: within(frames[engagement], "hour_utc"), ORDERS: within(frames[ORDERS], "order_ts")}


# --- the one-frame input ----------------------------------------------------------------------------


def engagement_input(engagement: pd.DataFrame, orders: pd.DataFrame, customers: pd.DataFrame,
                     customer_columns: Sequence[str] = ("timezone", "country")) -> pd.DataFrame:
    """One long frame of the customers (customer_id and ``customer_columns``), then the hourly
    engagement (:data:`ENGAGEMENT_COLUMNS`), then the orders (:data:`ORDER_COLUMNS`), each in its
    own row order, with :data:`SOURCE_COLUMN` naming the dataset (see the module docstring for the
    columns and dtypes). :func:`split_engagement_input` gives the three frames back."""
    parts = {CUSTOMERS: customers, ENGAGEMENT: engagement, ORDERS: orders}
    wanted = {CUSTOMERS: ("customer_id", *customer_columns), ENGAGEMENT: ENGAGEMENT_COLUMNS, ORDERS: ORDER_COLUMNS}
    for name, frame in parts.items():
        missing = [c for c in wanted[name] if c not in frame.columns]
        if missing:
            raise ValueError(f"{name} is missing column(s) {missing}; it has {list(frame.columns)}")
    sizes = [len(parts[name]) for name in SOURCES]
    bounds = dict(zip(SOURCES, zip(np.cumsum([0, *sizes[:-1]]), np.cumsum(sizes))))

    def stacked(values: dict[str, np.ndarray], filler: Any, dtype: Any) -> np.ndarray:
        column = np.full(sum(sizes), filler, dtype=dtype)
        for name, part in values.items():
            column[bounds[name][0]:bounds[name][1]] = part
        return column

    columns: dict[str, Any] = {
        SOURCE_COLUMN: np.repeat(np.asarray(SOURCES, dtype=object), sizes),
        "customer_id": stacked({name: parts[name]["customer_id"].to_numpy(dtype=np.int64) for name in SOURCES}, 0, np.int64),
    }
    for column in customer_columns:
        values = customers[column]
        columns[column] = stacked({CUSTOMERS: values.where(values.notna(), None).to_numpy(dtype=object)}, None, object)
    columns["hour_utc"] = stacked({ENGAGEMENT: _naive_utc(engagement["hour_utc"], f"{ENGAGEMENT}.hour_utc")},
                                  np.datetime64("NaT", "ns"), "datetime64[ns]")
    for column in ENGAGEMENT_COUNTS:
        columns[column] = stacked({ENGAGEMENT: engagement[column].to_numpy(dtype=np.float64)}, np.nan, np.float64)
    columns["order_ts"] = stacked({ORDERS: _naive_utc(orders["order_ts"], f"{ORDERS}.order_ts")},
                                  np.datetime64("NaT", "ns"), "datetime64[ns]")
    return pd.DataFrame(columns)


def split_engagement_input(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """``(engagement, orders, customers)`` from an :func:`engagement_input` frame: the rows of each
    source in their order, with a fresh index; customers get every column that is not the
    engagement's or the orders', timestamps are UTC again and the counts int64."""
    if SOURCE_COLUMN not in frame.columns:
        raise ValueError(f"the send-time input has no {SOURCE_COLUMN!r} column naming each row's dataset "
                         f"({', '.join(SOURCES)}); it has {list(frame.columns)}")
    unknown = set(frame[SOURCE_COLUMN].unique()) - set(SOURCES)
    if unknown:
        raise ValueError(f"the send-time input's {SOURCE_COLUMN!r} has unknown values {sorted(map(str, unknown))}; "
                         f"expected {', '.join(SOURCES)}")
    event_columns = {SOURCE_COLUMN, *ENGAGEMENT_COLUMNS, *ORDER_COLUMNS} - {"customer_id"}
    customer_columns = ["customer_id", *(c for c in frame.columns if c not in event_columns and c != "customer_id")]
    source = frame[SOURCE_COLUMN].to_numpy()

    def rows(name: str, columns: Sequence[str]) -> pd.DataFrame:
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise ValueError(f"the send-time input is missing column(s) {missing} of {name}; it has {list(frame.columns)}")
        return frame.loc[source == name, list(columns)].reset_index(drop=True)

    engagement = rows(ENGAGEMENT, ENGAGEMENT_COLUMNS)
    engagement = engagement.astype({"customer_id": "int64", **{c: "int64" for c in ENGAGEMENT_COUNTS}})
    engagement["hour_utc"] = _aware_utc(engagement["hour_utc"])
    orders = rows(ORDERS, ORDER_COLUMNS).astype({"customer_id": "int64"})
    orders["order_ts"] = _aware_utc(orders["order_ts"])
    customers = rows(CUSTOMERS, customer_columns).astype({"customer_id": "int64"})
    for column in customer_columns[1:]:
        values = customers[column].astype(object)
        customers[column] = values.where(values.notna(), None)
    return engagement, orders, customers


def _naive_utc(values: pd.Series, name: str) -> np.ndarray:
    """Timezone-aware timestamps as zone-naive UTC datetime64[ns] (what MLflow's schema takes)."""
    return utc_nanoseconds(values, name).view("datetime64[ns]") if len(values) else np.zeros(0, "datetime64[ns]")


def _aware_utc(values: pd.Series) -> pd.Series:
    stamps = pd.to_datetime(values)
    if isinstance(stamps.dtype, pd.DatetimeTZDtype):
        return stamps.dt.tz_convert("UTC").astype("datetime64[ns, UTC]")
    return stamps.astype("datetime64[ns]").dt.tz_localize("UTC")
