"""Readers never wait for a publish and never see half of one (the real nightly publish path).

While the function the nightly DAG's publish tasks call publishes a new run date and then replaces it
three times, a reader loop with ``lock_timeout = 250ms`` reads the published table and its
``_latest`` view, and a monitor samples the locks the publisher holds. No read waits that long for a lock;
every read sees nothing of the date, or the complete old version, or the complete new one (row count and
checksum).
Locks: a plain table's publish is data only (nothing stronger than ROW EXCLUSIVE); a table partitioned by
run date (migration 0012) gets its new date by ATTACH, SHARE UPDATE EXCLUSIVE on the parent, which conflicts
with no read (ACCESS SHARE) and no write (ROW EXCLUSIVE): nothing that would make a reader or a writer wait
is allowed, ACCESS EXCLUSIVE above all.
"""

from __future__ import annotations

import datetime as dt
import threading
import time

import numpy as np
import pandas as pd
import psycopg
import pytest

from ml.publishing import publish
from revopt.platform.partitions import is_partitioned, partition_name, partitions
from revopt.platform.resources import Resources
from revopt.platform.stack import connect_postgres, postgres_url

pytestmark = pytest.mark.e2e

RUN_DATE = dt.date(2025, 6, 1)
#: The tables the nightly DAG's publish tasks replace (each through ml.publishing.publish).
PUBLISHED = ("scores.customer_scores", "scores.price_recommendations", "scores.send_time_recommendations",
             "scores.budget_allocations")
ROWS = {"scores.customer_scores": 50_000}
#: the table-level locks a reader (ACCESS SHARE) or a writer (ROW EXCLUSIVE) of the published table would wait for
READERS_OR_WRITERS_WAIT = {"ShareLock", "ShareRowExclusiveLock", "ExclusiveLock", "AccessExclusiveLock"}
STRONGER_THAN_ROW_EXCLUSIVE = {"ShareUpdateExclusiveLock", *READERS_OR_WRITERS_WAIT}
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


def _reader(url: str, table: str, stop: threading.Event, phase: list, seen: list, timeouts: list) -> None:
    """Reads until stopped; a read that waits more than 250 ms for a lock fails (``lock_timeout``: what a
    publish could make a reader wait for; the read's own time, CPU-bound on a loaded machine, is not limited).
    ``seen``: (relation, state, the publisher's phase when the read began, when it ended)."""
    options = "-c lock_timeout=250 -c statement_timeout=20000"
    with psycopg.connect(url, autocommit=True, application_name="reader", options=options) as conn:
        while not stop.is_set():
            for relation in (table, f"{table}_latest"):
                try:
                    began = phase[0]
                    state = _read(conn, relation)
                    seen.append((relation, state, began, phase[0]))
                except (psycopg.errors.LockNotAvailable, psycopg.errors.QueryCanceled):
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
        versions = {version: _rows(conn, table, n + 1000 * version, version) for version in (1, 2)}
    paths = {}
    for version, frame in versions.items():
        paths[version] = tmp_path / f"v{version}.parquet"
        frame.to_parquet(paths[version], index=False)
    resources = Resources(settings)
    with psycopg.connect(url, autocommit=True) as conn:
        states = [_read(conn, table)]  # states[k]: after the k-th publish
        partitioned = is_partitioned(conn, table)
        assert states == [(0, None)], f"{RUN_DATE} must be a new run date of {table} for this test"
        assert not (partitioned and any(part.holds(RUN_DATE) for part in partitions(conn, table)))

    # phase 2k: between publishes, after k of them; 2k + 1: while the (k + 1)-th runs
    stop, phase, seen, timeouts, strong, sampled = threading.Event(), [0], [], [], [], []
    threads = [threading.Thread(target=_reader, args=(url, table, stop, phase, seen, timeouts)),
               threading.Thread(target=_lock_monitor, args=(url, publisher_app, stop, strong, sampled))]
    for thread in threads:
        thread.start()
    try:
        time.sleep(0.2)
        started = time.perf_counter()
        for version in (1, 2, 1, 2):  # a new run date, then three re-runs of it
            phase[0] += 1
            publish(resources, RUN_DATE, table, str(paths[version]))
            phase[0] += 1
            with psycopg.connect(url, autocommit=True) as conn:
                states.append(_read(conn, table))
            time.sleep(0.2)
        publishing_seconds = time.perf_counter() - started
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)

    assert timeouts == [], f"{len(timeouts)} reads waited longer than 250 ms for a lock the publish held"
    assert [count for count, _ in states] == [0, *(len(versions[v]) for v in (1, 2, 1, 2))]
    assert len(set(states)) == 3, "nothing, then the two partitions, whose checksums must differ"
    for relation, state, began, ended in seen:  # a read overlapping publish k + 1 sees states[k] or states[k + 1]
        allowed = set(states[began // 2 : (ended + 1) // 2 + 1])
        assert state in allowed, f"{relation}: a read during phases {began}-{ended} saw {state}, not one of {allowed}"
    assert {state for _, state, _, _ in seen} == set(states), "the readers should have seen every state"
    assert len(seen) > 20, f"only {len(seen)} reads during {publishing_seconds:.1f} s of publishing"
    assert max(sampled) > 0, "the lock monitor never saw the publisher: it checked nothing"
    waited_for = READERS_OR_WRITERS_WAIT if partitioned else STRONGER_THAN_ROW_EXCLUSIVE
    assert [lock for lock in strong if lock[0] in waited_for] == [], \
        f"the publish took locks readers or writers would wait for: {sorted(set(strong))}"
    if partitioned:  # the new date was ATTACHed as its own partition, which the re-runs replaced in place
        with psycopg.connect(url, autocommit=True) as conn:
            assert partition_name(table, RUN_DATE) in {part.name for part in partitions(conn, table)}


def test_ddl_on_the_published_tables_outside_migrations_fails_in_every_e2e_test(settings):
    """The e2e tier's event trigger (tests/e2e/conftest.py) is live: the publish path's old DDL fails, and of
    the partition DDL only ATTACH of a run-date partition and DETACH CONCURRENTLY / FINALIZE pass."""
    with connect_postgres(settings) as conn:
        with pytest.raises(psycopg.errors.RaiseException, match="DDL outside a migration"):
            conn.execute("ALTER TABLE scores.customer_scores ADD COLUMN IF NOT EXISTS clv double precision")
    name = f"customer_scores__p{dt.date(1991, 1, 1):%Y%m%d}"
    attach = ('ALTER TABLE "scores"."customer_scores" ATTACH PARTITION "scores_partitions"."{}" '
              "FOR VALUES FROM ('1991-01-01'::date) TO ('1991-01-02'::date)")
    detach = f'ALTER TABLE "scores"."customer_scores" DETACH PARTITION "scores_partitions"."{name}"'
    with connect_postgres(settings) as conn:
        for table in ("rogue", name):
            conn.execute(f'CREATE TABLE "scores_partitions"."{table}" (LIKE scores.customer_scores)')
        with pytest.raises(psycopg.errors.RaiseException, match="DDL outside a migration"), conn.transaction():
            conn.execute(attach.format("rogue"))  # not named as a run date's partition
        conn.execute(attach.format(name))  # the publish's own statement passes
        with pytest.raises(psycopg.errors.RaiseException, match="DDL outside a migration"), conn.transaction():
            conn.execute(detach)  # a plain DETACH (ACCESS EXCLUSIVE on the parent)
        conn.rollback()
