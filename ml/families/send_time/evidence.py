"""Evidence: the engagement and order rows of the customers, located in their local time, and the
evidence cube per customer, day type and local hour the estimator pools and smooths."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.engagement import ENGAGEMENT_COLUMNS, ORDER_COLUMNS, local_hour_weekend, resolve_timezones, utc_nanoseconds
from ml.families.send_time.config import GLOBAL_SEGMENT, HOURS, SendTimeConfig

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Rows:
    """Engagement and order rows in long form, located in the customers' local time."""

    customer: np.ndarray  # index into _Customers.customer_id
    instant: np.ndarray  # UTC nanoseconds
    weekend: np.ndarray
    hour: np.ndarray
    sends: np.ndarray
    opens: np.ndarray
    clicks: np.ndarray
    activity: np.ndarray  # sessions, or 1 per order

    def take(self, mask: np.ndarray) -> _Rows:
        return _Rows(**{f.name: getattr(self, f.name)[mask] for f in dataclasses.fields(self)})


@dataclass(frozen=True)
class _Customers:
    customer_id: np.ndarray  # sorted
    timezone: np.ndarray
    timezone_known: np.ndarray
    zone_code: np.ndarray  # index into zones
    zones: list[str]
    segment_value: np.ndarray  # raw segment column values (str), "" when missing


@dataclass(frozen=True)
class _Cube:
    """Evidence per customer, day type (weekday, weekend) and local hour, float32 (C, 2, 24)."""

    sends: np.ndarray
    opens: np.ndarray
    activity: np.ndarray
    n_events: np.ndarray  # int64 (C,): sends + opens + clicks + sessions + orders


def _validate(engagement: pd.DataFrame, orders: pd.DataFrame, customers: pd.DataFrame, config: SendTimeConfig) -> None:
    frames = {"engagement": (engagement, ENGAGEMENT_COLUMNS), "orders": (orders, ORDER_COLUMNS),
              "customers": (customers, ("customer_id", "timezone"))}
    for frame_name, (frame, columns) in frames.items():
        if not isinstance(frame, pd.DataFrame):
            raise TypeError(f"{frame_name} must be a pandas DataFrame, got {type(frame).__name__}")
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise ValueError(f"{frame_name} is missing column(s) {missing}; it has {list(frame.columns)}")
        if frame["customer_id"].isna().any():
            raise ValueError(f"{frame_name}.customer_id has missing values")
        if len(frame) and not pd.api.types.is_integer_dtype(frame["customer_id"]):
            raise ValueError(f"{frame_name}.customer_id must be integer, got dtype {frame['customer_id'].dtype}")
    if config.segment_column is not None and config.segment_column not in customers.columns:
        raise ValueError(f"customers is missing the segment column {config.segment_column!r} "
                         f"(SendTimeConfig.segment_column); it has {list(customers.columns)}")
    if customers["customer_id"].duplicated().any():
        raise ValueError(f"customers.customer_id has {int(customers['customer_id'].duplicated().sum())} duplicates")
    for column in ("sends", "opens", "clicks", "sessions"):
        values = engagement[column]
        if len(values) and not pd.api.types.is_numeric_dtype(values):
            raise ValueError(f"engagement.{column} must be numeric counts, got dtype {values.dtype}")
        if values.isna().any() or (values < 0).any():
            raise ValueError(f"engagement.{column} must be non-negative counts: "
                             f"{int(values.isna().sum() + (values < 0).sum())} rows are missing or negative")
    for column in ("opens", "clicks"):
        over = int((engagement[column] > engagement["sends"]).sum())
        if over:
            raise ValueError(f"engagement.{column} exceeds engagement.sends in {over} rows "
                             "(opens and clicks count responses to the hour's sends)")


def _customers(customers: pd.DataFrame, config: SendTimeConfig) -> _Customers:
    ordered = customers.sort_values("customer_id", kind="stable")
    zones, known = resolve_timezones(ordered["timezone"])
    if config.segment_column is None:
        segment = np.full(len(ordered), "", dtype=object)
    else:
        raw = ordered[config.segment_column]
        segment = raw.where(raw.notna(), "").astype(str).to_numpy(dtype=object)
    zone_code, zone_names = pd.factorize(zones)
    return _Customers(ordered["customer_id"].to_numpy(dtype=np.int64), zones, known, zone_code.astype(np.int64),
                      [str(z) for z in zone_names], segment)


#: rows located in local time at once by :func:`_row_slices` (the hour and day of 4M rows take ~100 MB)
_SLICE_ROWS = 4_000_000


def _rows(engagement: pd.DataFrame, orders: pd.DataFrame, people: _Customers, as_of: pd.Timestamp) -> _Rows:
    """Every engagement and order row before ``as_of`` of a known customer, in local time."""
    parts = list(_row_slices(engagement, orders, people, as_of, slice_rows=None))
    return _Rows(**{f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in dataclasses.fields(_Rows)})


def _row_slices(engagement: pd.DataFrame, orders: pd.DataFrame, people: _Customers, as_of: pd.Timestamp,
                slice_rows: int | None = _SLICE_ROWS) -> Iterator[_Rows]:
    """:func:`_rows` in slices of at most ``slice_rows`` input rows (None: one slice per frame), each located in
    local time on its own: the evidence cube is a sum over rows, so the nightly fit never holds every row."""
    end = as_of.value
    for name, frame, instant_column in (("engagement", engagement, "hour_utc"), ("orders", orders, "order_ts")):
        step = max(len(frame), 1) if slice_rows is None else slice_rows
        unknown_rows, unknown_ids = 0, []
        for start in range(0, max(len(frame), 1), step):
            part = frame.iloc[start:start + step]
            instants = utc_nanoseconds(part[instant_column], f"{name}.{instant_column}") if len(part) else np.zeros(0, np.int64)
            ids = part["customer_id"].to_numpy(dtype=np.int64)
            position = _positions(people.customer_id, ids)
            known = position >= 0
            keep = known & (instants < end)
            if (~known).any():
                unknown_rows += int((~known).sum())
                unknown_ids.append(np.unique(ids[~known]))
            n = int(keep.sum())
            if name == "engagement":
                counts = {c: part[c].to_numpy(dtype=np.float64)[keep] for c in ("sends", "opens", "clicks")}
                activity = part["sessions"].to_numpy(dtype=np.float64)[keep]
            else:
                counts = {c: np.zeros(n) for c in ("sends", "opens", "clicks")}
                activity = np.ones(n)
            customer = position[keep]
            hour, weekend = local_hour_weekend(instants[keep], people.zone_code[customer], people.zones)
            yield _Rows(customer=customer, instant=instants[keep], weekend=weekend, hour=hour, sends=counts["sends"],
                        opens=counts["opens"], clicks=counts["clicks"], activity=activity)
        if unknown_rows:
            logger.info("send time: %d %s rows of %d customers not in customers are ignored", unknown_rows, name,
                        len(np.unique(np.concatenate(unknown_ids))))


def _positions(sorted_ids: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Index of each id in ``sorted_ids`` (-1 when absent): a direct lookup table when the ids are
    dense enough (the usual serial keys), else a hash lookup."""
    if not len(sorted_ids):
        return np.full(len(ids), -1, dtype=np.int64)
    low, high = int(sorted_ids[0]), int(sorted_ids[-1])
    if high - low > 4 * len(sorted_ids) + 1_000_000:
        return pd.Index(sorted_ids).get_indexer(ids).astype(np.int64)
    table = np.full(high - low + 1, -1, dtype=np.int64)
    table[sorted_ids - low] = np.arange(len(sorted_ids))
    inside = (ids >= low) & (ids <= high)
    return np.where(inside, table[np.clip(ids - low, 0, high - low)], -1)


def _cube(rows: _Rows | Iterable[_Rows], n_customers: int) -> _Cube:
    """The evidence cube of ``rows``, or the sum over slices of rows (:func:`_row_slices`): counts are whole
    numbers, so the float64 sums are exact whatever the slicing, and equal to one pass over every row."""
    size = n_customers * 2 * HOURS
    sends, opens, activity = (np.zeros(size) for _ in range(3))
    n_events = np.zeros(n_customers)
    for part in [rows] if isinstance(rows, _Rows) else rows:
        cell = (part.customer * 2 + part.weekend) * HOURS + part.hour
        for total, weights in ((sends, part.sends), (opens, part.opens), (activity, part.activity)):
            total += np.bincount(cell, weights=weights, minlength=size)
        n_events += np.bincount(part.customer, weights=part.sends + part.opens + part.clicks + part.activity,
                                minlength=n_customers)

    def counts(total: np.ndarray) -> np.ndarray:
        return total.astype(np.float32).reshape(n_customers, 2, HOURS)

    return _Cube(counts(sends), counts(opens), counts(activity), n_events.round().astype(np.int64))


def _segments(people: _Customers, config: SendTimeConfig) -> tuple[np.ndarray, tuple[str, ...]]:
    """Segment index per customer (the last index, :data:`GLOBAL_SEGMENT`, for small or missing
    segments) and the segment names."""
    values, counts = np.unique(people.segment_value.astype(str), return_counts=True)
    eligible = tuple(str(v) for v, c in zip(values, counts) if v and v != GLOBAL_SEGMENT and c >= config.min_segment_customers)
    lookup = {name: i for i, name in enumerate(eligible)}
    index = pd.Series(people.segment_value).map(lookup).fillna(len(eligible)).to_numpy(dtype=np.int64)
    return index, (*eligible, GLOBAL_SEGMENT)


@dataclass(frozen=True)
class _Prepared:
    people: _Customers
    segment: np.ndarray
    names: tuple[str, ...]
    rows: _Rows | None


def _prepare(engagement: pd.DataFrame, orders: pd.DataFrame, customers: pd.DataFrame, as_of: pd.Timestamp,
             config: SendTimeConfig, rows: bool = True) -> _Prepared:
    """The customers, their segments and (``rows``) every row located in local time; without ``rows``,
    ``_Prepared.rows`` is None and the caller sums the rows in slices (:func:`_row_slices`)."""
    _validate(engagement, orders, customers, config)
    people = _customers(customers, config)
    segment, names = _segments(people, config)
    rows = _rows(engagement, orders, people, as_of) if rows else None
    unknown = int((~people.timezone_known).sum())
    if unknown:
        logger.warning("send time: %d of %d customers have a missing or unknown time zone; their hours are UTC",
                       unknown, len(people.customer_id))
    return _Prepared(people, segment, names, rows)

