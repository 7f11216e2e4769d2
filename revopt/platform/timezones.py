"""The customers' time zones, read the one way Python and ClickHouse share.

Send time reads every instant on the customer's local clock. Python does it with pandas'
``tz_convert`` (:func:`features.engagement.local_time`); the events store does it for the
aggregated engagement extract (``revopt.platform.engagement_extract.ENGAGEMENT_BY_LOCAL_HOUR_SQL``). ClickHouse's
own time-zone functions take a constant zone (``allow_nonconst_timezone_arguments`` is off in chDB
26.9) and bundle their own tz database, which can differ from Python's; so ClickHouse is given the
offsets Python computes instead (:func:`zone_offsets`: per zone, the UTC offset valid from each
instant it changes) and adds them with an ``ASOF JOIN``. Both sides then agree by construction:
same names resolved the same way (:func:`resolve_timezones`, missing / empty / invalid names read
as :data:`FALLBACK_TIMEZONE`), same offsets.

Written by hand because it is a few lines over pandas; the tz database itself is pandas' (pytz).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

#: the zone used for customers whose time zone is missing or not a valid IANA name
FALLBACK_TIMEZONE = "UTC"


def resolve_timezones(timezones: pd.Series | np.ndarray | Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    """The zone each value is read in and whether it was known: missing, empty or invalid IANA
    names become :data:`FALLBACK_TIMEZONE` (UTC)."""
    values = pd.Series(np.asarray(timezones, dtype=object))
    names = values.where(values.notna(), "").astype(str).str.strip()
    valid = {name: _is_valid_zone(name) for name in names.unique()}
    known = names.map(valid).to_numpy(dtype=bool)
    return np.where(known, names.to_numpy(dtype=object), FALLBACK_TIMEZONE).astype(object), known


def _is_valid_zone(name: str) -> bool:
    if not name:
        return False
    try:
        pd.Timestamp(0, tz="UTC").tz_convert(name)
    except (KeyError, ValueError, TypeError, OSError):  # pytz / zoneinfo raise KeyError subclasses, odd names ValueError
        return False
    return True


def customer_zones(customers: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Each customer's zone as a code into the returned zone names (code 0 is always
    :data:`FALLBACK_TIMEZONE`, what a customer missing from the table reads as) from
    ``customers`` (customer_id, timezone): ``(frame of customer_id int64 and zone uint16, names)``."""
    zones, _ = resolve_timezones(customers["timezone"])
    names = [FALLBACK_TIMEZONE, *sorted(set(zones.tolist()) - {FALLBACK_TIMEZONE})]
    code = pd.Index(names).get_indexer(zones).astype(np.uint16)
    return pd.DataFrame({"customer_id": customers["customer_id"].to_numpy(dtype=np.int64), "zone": code}), names


def zone_offsets(names: Sequence[str], start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
    """Per zone code (the index into ``names``), the UTC offset in seconds valid from each ``valid_from``
    on (a UTC instant), for every whole UTC hour in ``[start, end)``: the first row of a zone is valid
    from the epoch, then one row per hour at which its offset changes (a DST transition). Exact for
    whole UTC hours, which is what the engagement extract's ``hour_utc`` is."""
    grid = pd.date_range(pd.Timestamp(start).floor("h"), pd.Timestamp(end).ceil("h"), freq="h", tz="UTC")
    epoch = pd.Timestamp(0, tz="UTC")
    parts = []
    for code, name in enumerate(names):
        local = grid.tz_convert(name)
        offset = (local.tz_localize(None) - grid.tz_localize(None)).total_seconds().to_numpy().astype(np.int64)
        change = np.flatnonzero(np.diff(offset)) + 1
        starts = grid[change].insert(0, epoch) if len(grid) else pd.DatetimeIndex([epoch])
        values = np.concatenate([offset[:1] if len(offset) else np.zeros(1, np.int64), offset[change]])
        parts.append(pd.DataFrame({"zone": np.full(len(values), code, dtype=np.uint16), "valid_from": starts,
                                   "offset_seconds": values.astype(np.int32)}))
    return pd.concat(parts, ignore_index=True)
