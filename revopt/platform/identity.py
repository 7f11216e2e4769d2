"""One person, one customer id: how every read of the sources applies identity resolution.

The nightly ``resolve_identities`` step (``ml.identity``) publishes ``scores.identity_map``: which accounts
are one person (the canonical customer is the earliest account) and which anonymous / device ids logged in
as whom, each link with the time it was first seen. Reads apply it *as of their own cutoff*, so features at a
past training cutoff only use links known then (a login after the cutoff must not enrich the features
before it — that would leak the future, since the customers who come back are the ones who log in):

- **ClickHouse.** The map is copied into revopt's table ``identity_resolution`` in the events database, and
  every events query reads :func:`events_source` instead of the raw table: a subquery that rewrites
  ``customer_id`` to the canonical customer, gives an anonymous event the customer its device logged in as,
  and turns an erased person's events anonymous (``customer_id = 0``), each link only from its ``since`` on.
- **PostgreSQL.** :func:`account_map` reads the account links and the erased accounts; the extract rewrites
  ``customer_id`` of orders, offers and order lines, merges the customer rows of one person
  (:func:`canonical_customers`) and drops erased people's rows.

With no links and no erasures, both are the raw sources, unchanged.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from revopt.platform.catalog import has_table
from revopt.platform.events import EventStore
from revopt.platform.privacy import MAP_AS_OF, account_hashes

logger = logging.getLogger(__name__)

RESOLUTION_TABLE = "identity_resolution"
_RESOLUTION_DDL = """CREATE TABLE IF NOT EXISTS {database}.identity_resolution (
    kind        LowCardinality(String),
    identifier  String,
    customer_id UInt64,
    since       DateTime64(3, 'UTC')
) ENGINE = MergeTree ORDER BY (kind, identifier)"""
#: ``since`` of an erased account: always (it was never resolvable).
_ALWAYS = pd.Timestamp("1970-01-01", tz="UTC")

_RESOLVED = """(SELECT e.* REPLACE (
        if(e.customer_id != 0, if(a.account = 0, e.customer_id, a.canonical), {device_owner}) AS customer_id){known_from}
    FROM {database}.events AS e
    LEFT ANY JOIN (
        SELECT toUInt64(identifier) AS account, customer_id AS canonical FROM {database}.identity_resolution
        WHERE kind = 'customer_id' AND since < {{{until}:DateTime64(3, 'UTC')}}
    ) AS a ON a.account = e.customer_id{device_join})"""
_DEVICE_JOIN = """
    LEFT ANY JOIN (
        SELECT identifier AS device, customer_id AS owner, since AS device_since FROM {database}.identity_resolution
        WHERE kind = 'anonymous_id' AND since < {{{until}:DateTime64(3, 'UTC')}}
    ) AS d ON d.device = e.anonymous_id"""


def ensure_resolution_table(store: EventStore) -> None:
    store.command(_RESOLUTION_DDL.format(database=store.database))


def has_anonymous_ids(store: EventStore) -> bool:
    """Whether the store's events carry ``anonymous_id`` (optional in the contract)."""
    found = store.query_df(
        "SELECT count() AS n FROM system.columns WHERE database = {database:String} AND table = 'events' "
        "AND name = 'anonymous_id'", {"database": store.database})
    return not found.empty and int(found["n"].iloc[0]) > 0


#: ``known_from`` of an event (a ``Date``): the day from which a feature may count it for its customer. An
#: anonymous event before its device's first login is known only from the day of that login (a cutoff on or before
#: that day must not see it: the login came later); every other event is known from the start (1970-01-01).
_KNOWN_FROM = (",\n        if(e.customer_id = 0 AND d.owner != 0 AND toDate(d.device_since) > toDate(e.event_time), "
               "toDate(d.device_since), toDate(0)) AS known_from")


def events_source(store: EventStore, until: str = "run_ts", known_from: bool = False) -> str:
    """What an events query reads ``FROM``: the raw ``events`` table when nothing is resolved, else the
    resolved subquery (module docstring). ``until`` names the query's own upper time bound parameter
    (a ``DateTime64(3, 'UTC')``), the cutoff the links must be older than. With ``known_from`` the rows carry
    the :data:`_KNOWN_FROM` day, for an extract read once and cut at several earlier cutoffs (training)."""
    raw = f"{store.database}.events"
    if known_from:
        raw = f"(SELECT *, toDate(0) AS known_from FROM {raw})"
    try:
        count = store.query_df(f"SELECT count() AS n FROM {store.database}.{RESOLUTION_TABLE}")
    except Exception:  # noqa: BLE001 - no table yet: nothing was ever resolved here
        return raw
    if count.empty or int(count["n"].iloc[0]) == 0:
        return raw
    with_devices = has_anonymous_ids(store)
    return _RESOLVED.format(
        database=store.database, until=until,
        known_from=(_KNOWN_FROM if with_devices else ",\n        toDate(0) AS known_from") if known_from else "",
        device_owner="d.owner" if with_devices else "toUInt64(0)",
        device_join=_DEVICE_JOIN.format(database=store.database, until=until) if with_devices else "",
    )


def replace_resolution(store: EventStore, links: pd.DataFrame, erased: set[int] | frozenset[int] = frozenset()) -> int:
    """Replace ``identity_resolution`` with ``links`` (identifier_type, identifier, customer_id, first_seen:
    the rows of ``scores.identity_map`` that move an identifier, i.e. not an account onto itself) and the
    ``erased`` accounts (onto customer 0, always). Returns the rows written."""
    ensure_resolution_table(store)
    moved = links.loc[(links["identifier_type"] != "customer_id")
                      | (links["identifier"].astype(str) != links["customer_id"].astype(str))]
    frame = pd.DataFrame({
        "kind": moved["identifier_type"].astype(str).to_numpy(dtype=object),
        "identifier": moved["identifier"].astype(str).to_numpy(dtype=object),
        "customer_id": moved["customer_id"].to_numpy(dtype="uint64"),
        "since": pd.to_datetime(moved["first_seen"], utc=True).fillna(_ALWAYS).to_numpy(),
    })
    if erased:
        frame = pd.concat([frame, pd.DataFrame({
            "kind": "customer_id", "identifier": [str(i) for i in sorted(erased)],
            "customer_id": np.zeros(len(erased), dtype="uint64"), "since": _ALWAYS})], ignore_index=True)
    store.command(f"TRUNCATE TABLE IF EXISTS {store.database}.{RESOLUTION_TABLE}")
    if len(frame):
        table = pa.table({
            "kind": pa.array(frame["kind"], pa.string()), "identifier": pa.array(frame["identifier"], pa.string()),
            "customer_id": pa.array(frame["customer_id"], pa.uint64()),
            "since": pa.array(pd.to_datetime(frame["since"], utc=True), pa.timestamp("ms", tz="UTC")),
        })
        store.insert_arrow(RESOLUTION_TABLE, table)
    logger.info("identity resolution in ClickHouse: %d links, %d erased accounts", len(frame) - len(erased), len(erased))
    return len(frame)


@dataclass(frozen=True)
class AccountMap:
    """Accounts onto their canonical customer (only accounts that move) and the erased accounts."""

    canonical: dict[int, int] = field(default_factory=dict)
    erased: frozenset[int] = frozenset()

    def __bool__(self) -> bool:
        return bool(self.canonical or self.erased)


def account_map(conn: Any, run_ts: pd.Timestamp, secret: Callable[[], bytes]) -> AccountMap:
    """The account links of ``scores.identity_map`` as of ``run_ts``'s date (:data:`MAP_AS_OF`) first seen before
    ``run_ts``, and the erased accounts (found by their keyed hash in ``scores.erasure_log``; ``secret`` gives the
    key, asked for only when something was erased)."""
    canonical: dict[int, int] = {}
    if has_table(conn, "scores.identity_map"):
        rows = conn.execute(
            f"SELECT identifier, customer_id FROM {MAP_AS_OF} AS m WHERE identifier_type = 'customer_id' "
            "AND identifier <> customer_id::text AND (first_seen IS NULL OR first_seen < %(run_ts)s)",
            {"run_date": run_ts.date(), "run_ts": run_ts.to_pydatetime()}).fetchall()
        canonical = {int(identifier): int(customer) for identifier, customer in rows}
    return AccountMap(canonical=canonical, erased=erased_accounts(conn, secret))


def sync_resolution(conn: Any, store: EventStore, secret: Callable[[], bytes], run_date: dt.date | None = None) -> int:
    """Copy ``scores.identity_map`` as of ``run_date`` (:data:`MAP_AS_OF`; None: the latest) and the erased accounts
    into ClickHouse's ``identity_resolution`` (after a resolution is published, and after an erasure). Returns rows
    written."""
    links = pd.DataFrame(columns=["identifier_type", "identifier", "customer_id", "first_seen"])
    if has_table(conn, "scores.identity_map"):
        rows = conn.execute(f"SELECT identifier_type, identifier, customer_id, first_seen FROM {MAP_AS_OF} AS m",
                            {"run_date": run_date or dt.date.max}).fetchall()
        if rows:
            links = pd.DataFrame(rows, columns=list(links.columns))
    return replace_resolution(store, links, erased_accounts(conn, secret))


def erased_accounts(conn: Any, secret: Callable[[], bytes], subject: str | None = None) -> frozenset[int]:
    """Account ids of ``shop.customers`` whose keyed hash is in ``scores.erasure_log`` (the source still holds
    them; revopt keeps only the hash); with ``subject``, only the accounts of that subject's erasures."""
    if not has_table(conn, "scores.erasure_log") or not has_table(conn, "shop.customers"):
        return frozenset()
    hashes = {h for (h,) in conn.execute(
        "SELECT DISTINCT unnest(account_hashes) FROM scores.erasure_log"
        + ("" if subject is None else " WHERE subject_hash = %(subject)s"), {"subject": subject}).fetchall()}
    if not hashes:
        return frozenset()
    # a NULL key is no account (the gate names it in the customers extract)
    ids = [int(i) for (i,) in conn.execute("SELECT customer_id FROM shop.customers WHERE customer_id IS NOT NULL")]
    return frozenset(i for i, h in zip(ids, account_hashes(ids, secret())) if h in hashes)


def canonical_ids(frame: pd.DataFrame, accounts: AccountMap, column: str = "customer_id") -> pd.DataFrame:
    """``frame`` with ``column`` rewritten to the canonical customer and erased accounts' rows dropped."""
    if not accounts or column not in frame.columns or frame.empty:
        return frame
    out = frame.loc[~frame[column].isin(accounts.erased)].copy()
    if accounts.canonical:
        ids = out[column]
        out[column] = ids.map(accounts.canonical).fillna(ids).astype(ids.dtype)
    return out


def canonical_customers(customers: pd.DataFrame, accounts: AccountMap) -> pd.DataFrame:
    """One ``shop.customers`` row per person: the canonical account's row, with the earliest signup of the
    person's accounts, consent only if every account consented, and ``do_not_profile`` if any asked; erased
    accounts dropped."""
    if not accounts or customers.empty:
        return customers
    kept = customers.loc[~customers["customer_id"].isin(accounts.erased)]
    person = kept["customer_id"].map(accounts.canonical).fillna(kept["customer_id"]).astype("int64")
    if not accounts.canonical:
        return kept.reset_index(drop=True)
    rows = kept.loc[kept["customer_id"].to_numpy() == person.to_numpy()].set_index("customer_id")
    grouped = kept.groupby(person.to_numpy())
    rows["signup_date"] = grouped["signup_date"].min().reindex(rows.index)
    if "email_opt_in" in rows:
        rows["email_opt_in"] = grouped["email_opt_in"].all().reindex(rows.index).astype(bool)
    if "do_not_profile" in rows:
        rows["do_not_profile"] = grouped["do_not_profile"].any().reindex(rows.index).astype(bool)
    return rows.reset_index()[list(customers.columns)].sort_values("customer_id", kind="stable").reset_index(drop=True)
