"""Load a synthetic store into the source contract (PostgreSQL ``shop`` + ``truth``, ClickHouse events).

Seeding replaces whatever the source tables held, in one PostgreSQL transaction, so re-running
with the same seed and size gives identical sources.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import pandas as pd
import pyarrow as pa

from revopt.platform import contract
from revopt.platform.config import Settings
from revopt.platform.identity import RESOLUTION_TABLE
from revopt.platform.postgres import copy_frame
from revopt.platform.schema import init_stores
from revopt.platform.stack import connect_postgres, event_store
from revopt.sample_data.identity import IdentityDesign, apply_identity
from revopt.sample_data.offers import OfferDesign
from revopt.sample_data.synth import BehaviourChange, ExperimentEffect, SyntheticStore, generate_store

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SeedReport:
    rows: dict[str, int]
    start: dt.date
    end: dt.date  # first day after the data: the natural run date

    def __str__(self) -> str:
        counts = ", ".join(f"{name}={n:,}" for name, n in self.rows.items())
        return f"seeded {self.start}..{self.end - dt.timedelta(days=1)}: {counts}"


def seed_synthetic(settings: Settings, *, n_customers: int, days: int, start: dt.date, seed: int,
                   behaviour_change: BehaviourChange | None = None,
                   experiment_effect: ExperimentEffect | None = None, offers: OfferDesign | None = None,
                   identity: IdentityDesign | None = None) -> SeedReport:
    """Generate a synthetic store and load it, replacing the current sources; ``behaviour_change``
    (None: off) makes its customers change mid-way (:class:`revopt.sample_data.synth.BehaviourChange`);
    ``offers`` (None: off) draws randomised offer campaigns into ``shop.offers`` with their effects in
    ``truth.offer_effects`` (:mod:`revopt.sample_data.offers`); ``identity`` (None: off, every session logged in,
    one account per person) draws devices, anonymous sessions, duplicate accounts and contact records with
    their truth (:mod:`revopt.sample_data.identity`)."""
    logger.info("generating %d customers x %d days (seed %d%s)", n_customers, days, seed,
                "" if behaviour_change is None else f", behaviour change on day {behaviour_change.day}")
    store = generate_store(n_customers=n_customers, days=days, start=start, seed=seed,
                           behaviour_change=behaviour_change, experiment_effect=experiment_effect, offers=offers)
    if identity is not None:
        store = apply_identity(store, seed, identity)
    rows = load_store(settings, store)
    return SeedReport(rows=rows, start=start, end=start + dt.timedelta(days=days))


def load_store(settings: Settings, store: SyntheticStore) -> dict[str, int]:
    """Replace the source tables with ``store``'s frames. Returns row counts per table."""
    return load_sources(settings, store.shop, store.truth, store.events)


def load_store_chunks(settings: Settings, chunks: Iterable[SyntheticStore]) -> dict[str, int]:
    """Load a store drawn in pieces (:func:`revopt.sample_data.synth.generate_store_chunks`): the first chunk
    replaces every source like :func:`load_store`, each later one is appended (its customers,
    orders, order lines, customer truth and events), so only one chunk is in memory at a time.
    Returns row counts per table over all chunks."""
    rows: dict[str, int] = {}
    for number, chunk in enumerate(chunks):
        added = load_store(settings, chunk) if number == 0 else _append_store(settings, chunk)
        for name, count in added.items():
            rows[name] = rows.get(name, 0) + count
        logger.info("loaded chunk %d: %s", number, added)
    return rows


def _append_store(settings: Settings, store: SyntheticStore) -> dict[str, int]:
    rows: dict[str, int] = {}
    with connect_postgres(settings) as conn:
        for schema, frames in ((contract.SHOP_SCHEMA, store.shop), (contract.TRUTH_SCHEMA, store.truth)):
            for name, frame in frames.items():
                rows[f"{schema}.{name}"] = copy_frame(conn, f"{schema}.{name}", frame)
    events = event_store(settings)
    if len(store.events):
        events.insert_arrow(contract.EVENTS_TABLE, pa.Table.from_pandas(store.events, preserve_index=False))
    rows["clickhouse.events"] = len(store.events)
    return rows


def load_sources(settings: Settings, shop: Mapping[str, pd.DataFrame], truth: Mapping[str, pd.DataFrame] | None = None,
                 events: pd.DataFrame | None = None) -> dict[str, int]:
    """Replace every source table with the given frames, in one PostgreSQL transaction: all ``shop``
    tables (the optional ones included) and all ``truth`` tables are emptied — ground truth of
    another store would only mislead — then ``shop`` and ``truth`` frames are COPYed in; the
    ClickHouse events are replaced by ``events`` (emptied when None), and the identity map of the replaced sources'
    people (``scores.identity_map``, ClickHouse ``identity_resolution``) is dropped. Returns row counts per table.

    The stores are initialised first (``revopt init-db``: missing tables, revopt's migrations, the
    read-only role), so a fresh state folder can be seeded in one step."""
    init_stores(settings)
    rows: dict[str, int] = {}
    everything = {
        contract.SHOP_SCHEMA: (*contract.SHOP_TABLES, *contract.SHOP_OPTIONAL_TABLES),
        contract.TRUTH_SCHEMA: contract.TRUTH_TABLES,
    }
    with connect_postgres(settings) as conn:
        conn.execute(f"TRUNCATE {', '.join(f'{schema}.{name}' for schema, names in everything.items() for name in names)}")
        # the identity map describes the people of the sources being replaced: it would merge the new store's accounts
        conn.execute("DELETE FROM scores.identity_map")
        for schema, frames in ((contract.SHOP_SCHEMA, shop), (contract.TRUTH_SCHEMA, truth or {})):
            for name, frame in frames.items():
                rows[f"{schema}.{name}"] = copy_frame(conn, f"{schema}.{name}", frame)
                logger.info("loaded %s.%s: %d rows", schema, name, len(frame))
    store = event_store(settings)
    store.command(f"TRUNCATE TABLE IF EXISTS {store.database}.{contract.EVENTS_TABLE}")
    store.command(f"TRUNCATE TABLE IF EXISTS {store.database}.{RESOLUTION_TABLE}")
    if events is not None and len(events):
        store.insert_arrow(contract.EVENTS_TABLE, pa.Table.from_pandas(events, preserve_index=False))
    rows["clickhouse.events"] = 0 if events is None else len(events)
    logger.info("loaded events: %d rows", rows["clickhouse.events"])
    return rows
