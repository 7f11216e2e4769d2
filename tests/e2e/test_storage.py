"""The embedded stores for real: PostgreSQL publishing is atomic and idempotent, chDB round-trips events."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pyarrow as pa
import pytest

from revopt.platform.postgres import publish_partition, read_frame
from revopt.platform.stack import connect_postgres, event_store

D1, D2 = dt.date(2025, 1, 1), dt.date(2025, 1, 2)


def _scores(run_date: dt.date, n: int, version: str) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "run_date": run_date,
            "customer_id": range(1, n + 1),
            "purchase_propensity": [i / (n + 1) for i in range(1, n + 1)],
            "propensity_model": "m",
            "propensity_version": version,
        }
    )


def _table(conn) -> pd.DataFrame:
    return read_frame(conn, "SELECT * FROM scores.customer_scores ORDER BY run_date, customer_id")


def test_republishing_a_date_replaces_exactly_its_rows(settings):
    with connect_postgres(settings) as conn:
        conn.execute("DELETE FROM scores.customer_scores")
        publish_partition(conn, "scores.customer_scores", D1, _scores(D1, 5, "1"))
        snapshots = []
        for _ in range(3):
            publish_partition(conn, "scores.customer_scores", D2, _scores(D2, 7, "2"))
            snapshots.append(_table(conn))
    for snapshot in snapshots[1:]:
        pd.testing.assert_frame_equal(snapshot, snapshots[0])
    final = snapshots[-1]
    assert final.groupby("run_date").size().to_dict() == {D1: 5, D2: 7}
    assert not final.duplicated(["run_date", "customer_id"]).any()


def test_a_failed_publish_leaves_the_previous_run_intact(settings):
    with connect_postgres(settings) as conn:
        conn.execute("DELETE FROM scores.customer_scores")
        publish_partition(conn, "scores.customer_scores", D1, _scores(D1, 4, "1"))
        before = _table(conn)
        bad = _scores(D1, 6, "2")
        bad.loc[3, "purchase_propensity"] = None  # NOT NULL violation half-way through the COPY
        with pytest.raises(Exception):
            publish_partition(conn, "scores.customer_scores", D1, bad)
        pd.testing.assert_frame_equal(_table(conn), before)


def test_publish_refuses_rows_of_another_run_date(settings):
    with connect_postgres(settings) as conn, pytest.raises(ValueError, match="run_date"):
        publish_partition(conn, "scores.customer_scores", D1, _scores(D2, 2, "1"))


def test_chdb_round_trips_events_with_bound_parameters(settings):
    store = event_store(settings)
    store.command(f"TRUNCATE TABLE {store.database}.events")
    events = pd.DataFrame(
        {
            "event_time": pd.to_datetime(["2025-01-01 10:00", "2025-01-01 23:59", "2025-01-02 00:00"], utc=True),
            "session_id": [1, 1, 2],
            "customer_id": [5, 5, 6],
            "event_type": ["page_view", "purchase", "page_view"],
            "product_id": [0, 3, 0],
            "channel": ["organic", "organic", "email"],
            "device": ["mobile", "mobile", "desktop"],
            "is_machine": [0, 0, 0],
        }
    )
    store.insert_arrow("events", pa.Table.from_pandas(events, preserve_index=False))
    before_d2 = store.query_df(
        f"SELECT customer_id, count() AS n FROM {store.database}.events "
        "WHERE event_time < {run_ts:DateTime64(3, 'UTC')} GROUP BY customer_id",
        {"run_ts": "2025-01-02 00:00:00"},
    )
    assert before_d2.to_dict("records") == [{"customer_id": 5, "n": 2}]


_KILLED_PUBLISHER = """
import sys, time
from pathlib import Path
import pandas as pd
import psycopg
from revopt.platform.config import load_settings

run_date = pd.Timestamp(sys.argv[1]).date()
marker = Path(sys.argv[2])
execute = psycopg.Connection.execute


def execute_then_hang_after_insert(conn, query, params=None, **kwargs):
    cursor = execute(conn, query, params, **kwargs)
    text = query if isinstance(query, str) else query.as_string(conn)
    if text.startswith("INSERT INTO"):
        marker.write_text("old rows deleted, new rows inserted, transaction still open")
        time.sleep(600)
    return cursor


psycopg.Connection.execute = execute_then_hang_after_insert
from ml.pipeline import publish  # the function the nightly DAG's publish task calls
from revopt.platform.resources import Resources

publish(Resources(load_settings()), run_date, "scores.customer_scores", sys.argv[3])
"""


def test_a_publish_killed_half_way_leaves_the_previous_run_and_the_next_run_completes(settings, tmp_path):
    with connect_postgres(settings) as conn:
        conn.execute("DELETE FROM scores.customer_scores")
        publish_partition(conn, "scores.customer_scores", D1, _scores(D1, 50, "1"))
        before = _table(conn)
    replacement = tmp_path / "replacement.parquet"
    _scores(D1, 80, "2").to_parquet(replacement)
    marker = tmp_path / "half-way"
    child = subprocess.Popen([sys.executable, "-c", _KILLED_PUBLISHER, D1.isoformat(), str(marker), str(replacement)],
                             env=os.environ.copy(), start_new_session=True)
    deadline = time.monotonic() + 180
    while not marker.exists():
        assert child.poll() is None, "the publisher exited before reaching the kill point"
        assert time.monotonic() < deadline, "the publisher never reached the kill point"
        time.sleep(0.1)
    # A reader while the transaction is open neither waits (statement_timeout 250 ms) nor sees it.
    with connect_postgres(settings) as conn:
        conn.execute("SET statement_timeout = 250")
        pd.testing.assert_frame_equal(_table(conn), before)
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL

    with connect_postgres(settings) as conn:
        pd.testing.assert_frame_equal(_table(conn), before)  # the server rolled the transaction back
        publish_partition(conn, "scores.customer_scores", D1, _scores(D1, 80, "2"))  # the next run
        after = _table(conn)
    assert len(after) == 80 and set(after["propensity_version"]) == {"2"}
    assert not after.duplicated(["run_date", "customer_id"]).any()
