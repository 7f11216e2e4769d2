"""Load a synthetic store into the source contract (PostgreSQL ``shop`` + ``truth``, ClickHouse events).

Seeding replaces whatever the source tables held, in one PostgreSQL transaction, so re-running
with the same seed and size gives identical sources.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

import pyarrow as pa

from revopt import contract
from revopt.config import Settings
from revopt.postgres import copy_frame, run_script
from revopt.stack import connect_postgres, event_store
from revopt.synth import SyntheticStore, generate_store

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SeedReport:
    rows: dict[str, int]
    start: dt.date
    end: dt.date  # first day after the data: the natural run date

    def __str__(self) -> str:
        counts = ", ".join(f"{name}={n:,}" for name, n in self.rows.items())
        return f"seeded {self.start}..{self.end - dt.timedelta(days=1)}: {counts}"


def seed_synthetic(settings: Settings, *, n_customers: int, days: int, start: dt.date, seed: int) -> SeedReport:
    """Generate a synthetic store and load it, replacing the current sources."""
    logger.info("generating %d customers x %d days (seed %d)", n_customers, days, seed)
    store = generate_store(n_customers=n_customers, days=days, start=start, seed=seed)
    rows = load_store(settings, store)
    return SeedReport(rows=rows, start=start, end=start + dt.timedelta(days=days))


def load_store(settings: Settings, store: SyntheticStore) -> dict[str, int]:
    """Replace the source tables with ``store``'s frames. Returns row counts per table."""
    rows: dict[str, int] = {}
    with connect_postgres(settings) as conn:
        run_script(conn, contract.SHOP_DDL)
        run_script(conn, contract.TRUTH_DDL)
        run_script(conn, contract.SCORES_DDL)
        # The optional sources belong to the store being replaced too: empty them.
        conn.execute(f"TRUNCATE {', '.join(f'{contract.SHOP_SCHEMA}.{name}' for name in contract.SHOP_OPTIONAL_TABLES)}")
        for schema, frames in ((contract.SHOP_SCHEMA, store.shop), (contract.TRUTH_SCHEMA, store.truth)):
            conn.execute(f"TRUNCATE {', '.join(f'{schema}.{name}' for name in frames)}")
            for name, frame in frames.items():
                rows[f"{schema}.{name}"] = copy_frame(conn, f"{schema}.{name}", frame)
                logger.info("loaded %s.%s: %d rows", schema, name, len(frame))
    events = event_store(settings)
    events.command(f"TRUNCATE TABLE IF EXISTS {events.database}.{contract.EVENTS_TABLE}")
    events.insert_arrow(contract.EVENTS_TABLE, pa.Table.from_pandas(store.events, preserve_index=False))
    rows["clickhouse.events"] = len(store.events)
    logger.info("loaded events: %d rows", len(store.events))
    return rows
