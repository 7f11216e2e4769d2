"""Readers never wait for a publish and never see half of one (the real nightly publish path).

While the function the nightly DAG's publish tasks call replaces a run date, a reader loop with
``statement_timeout = 250ms`` reads the published table and its ``_latest`` view, and a monitor
samples the locks the publisher holds. Zero timeouts; every read sees the complete old partition
or the complete new one (row count and checksum); no lock stronger than ROW EXCLUSIVE.
"""

from __future__ import annotations

import datetime as dt
import threading
import time

import numpy as np
import pandas as pd
import psycopg
import pytest

from ml.pipeline import publish
from revopt.platform.resources import Resources
from revopt.platform.stack import connect_postgres, postgres_url

pytestmark = pytest.mark.e2e

RUN_DATE = dt.date(2025, 6, 1)
#: The tables the nightly DAG's publish tasks replace (each through ml.pipeline.publish).
PUBLISHED = ("scores.customer_scores", "scores.price_recommendations", "scores.send_time_recommendations",
             "scores.budget_allocations")
ROWS = {"scores.customer_scores": 50_000}
STRONGER_THAN_ROW_EXCLUSIVE = {"ShareUpdateExclusiveLock", "ShareLock", "ShareRowExclusiveLock", "ExclusiveLock",
                               "AccessExclusiveLock"}
_VALUES = {
    "date": lambda n, rng, version: np.full(n, RUN_DATE),
    "bigint": lambda n, rng, version: np.arange(1, n + 1),
    "integer": lambda n, rng, version: rng.integers(1, 100, n),
    "smallint": lambda n, rng, version: rng.integers(0, 24, n),
    "double precision": lambda n, rng, version: rng.random(n),
    "boolean": lambda n, rng, version: rng.random(n) < 0.5,
    "text": lambda n, rng, version: np.char.add(f"v{version}-", np.arange(n).astype(str)),
    "jsonb": lambda n, rng, version: np.full(n, f'{{"version": {version}}}'),
}


def _rows(conn, table: str, n: int, version: int) -> pd.DataFrame:
    """``n`` rows of ``table`` for RUN_DATE, every column filled by its type (the key columns unique)."""
    schema, name = table.split(".")
    columns = conn.execute("SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = %s "
                           "AND table_name = %s ORDER BY ordinal_position", (schema, name)).fetchall()
    rng = np.random.default_rng(version)
    frame = pd.DataFrame({column: _VALUES[kind](n, rng, version) for column, kind in columns})
    if "customer_id" in frame:  # customers no store of the session has: the publish's consent guard keeps them all
        frame["customer_id"] += 10**12
    return frame


def _read(conn, table: str) -> tuple[int, str]:
    """(rows, checksum) of RUN_DATE's partition, as one reader sees it."""
    count, digest = conn.execute(psycopg.sql.SQL(
        "SELECT count(*), sum(hashtext(t::text)::bigint) FROM {} AS t WHERE run_date = %s"
    ).format(psycopg.sql.Identifier(*table.split("."))), (RUN_DATE,)).fetchone()
    return count, digest


def _reader(url: str, table: str, stop: threading.Event, seen: list, timeouts: list) -> None:
    with psycopg.connect(url, autocommit=True, application_name="reader", options="-c statement_timeout=250") as conn:
        while not stop.is_set():
            for relation in (table, f"{table}_latest"):
                try:
                    seen.append((relation, _read(conn, relation)))
                except psycopg.errors.QueryCanceled:
                    timeouts.append(relation)


def _lock_monitor(url: str, publisher_app: str, stop: threading.Event, strong: list, sampled: list) -> None:
    """Table-level locks the publisher holds on scores.* (locktype 'relation': the 'extend' lock an
    INSERT takes while growing the file is not one a reader waits for)."""
    with psycopg.connect(url, autocommit=True, application_name="lock-monitor") as conn:
        while not stop.is_set():
            rows = conn.execute(
                "SELECT l.mode, c.relname FROM pg_locks AS l JOIN pg_class AS c ON c.oid = l.relation "
                "JOIN pg_namespace AS n ON n.oid = c.relnamespace JOIN pg_stat_activity AS a ON a.pid = l.pid "
                "WHERE l.locktype = 'relation' AND n.nspname = 'scores' AND a.application_name = %s", (publisher_app,)).fetchall()
            sampled.append(len(rows))
            strong.extend((mode, relname) for mode, relname in rows if mode in STRONGER_THAN_ROW_EXCLUSIVE)
            time.sleep(0.005)


@pytest.mark.parametrize("table", PUBLISHED)
def test_readers_never_wait_for_a_publish_and_see_only_whole_partitions(settings, tmp_path, table, monkeypatch):
    url = postgres_url(settings)
    publisher_app = f"revopt-publish-test-{table}"
    monkeypatch.setenv("PGAPPNAME", publisher_app)  # libpq names the publisher's connection: the monitor finds it
    n = ROWS.get(table, 10_000)
    with connect_postgres(settings) as conn:
        partitions = {version: _rows(conn, table, n + 1000 * version, version) for version in (1, 2)}
    paths = {}
    for version, frame in partitions.items():
        paths[version] = tmp_path / f"v{version}.parquet"
        frame.to_parquet(paths[version], index=False)
    resources = Resources(settings)
    publish(resources, RUN_DATE, table, str(paths[1]))
    with psycopg.connect(url, autocommit=True) as conn:
        expected = {_read(conn, table)}
    assert expected and next(iter(expected))[0] == len(partitions[1])

    stop, seen, timeouts, strong, sampled = threading.Event(), [], [], [], []
    threads = [threading.Thread(target=_reader, args=(url, table, stop, seen, timeouts)),
               threading.Thread(target=_lock_monitor, args=(url, publisher_app, stop, strong, sampled))]
    for thread in threads:
        thread.start()
    try:
        time.sleep(0.2)
        started = time.perf_counter()
        for version in (2, 1, 2):
            publish(resources, RUN_DATE, table, str(paths[version]))
            with psycopg.connect(url, autocommit=True) as conn:
                expected.add(_read(conn, table))
            time.sleep(0.2)
        publishing_seconds = time.perf_counter() - started
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)

    assert timeouts == [], f"{len(timeouts)} reads waited longer than 250 ms for the publish"
    assert len(expected) == 2, "the checksums of the two partitions must differ"
    observed = {state for _, state in seen}
    assert observed <= expected, f"a reader saw a partition that is neither the old nor the new one: {observed - expected}"
    assert observed == expected, "the readers should have seen both partitions"
    assert len(seen) > 20, f"only {len(seen)} reads during {publishing_seconds:.1f} s of publishing"
    assert max(sampled) > 0, "the lock monitor never saw the publisher: it checked nothing"
    assert strong == [], f"the publish took locks readers or writers would wait for: {sorted(set(strong))}"


def test_ddl_on_the_published_tables_outside_migrations_fails_in_every_e2e_test(settings):
    """The e2e tier's event trigger (tests/e2e/conftest.py) is live: the publish path's old DDL fails."""
    with connect_postgres(settings) as conn:
        with pytest.raises(psycopg.errors.RaiseException, match="DDL outside a migration"):
            conn.execute("ALTER TABLE scores.customer_scores ADD COLUMN IF NOT EXISTS clv double precision")
