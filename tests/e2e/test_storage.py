"""The embedded stores for real: PostgreSQL publishing is atomic and idempotent (a partitioned table's new run
date is loaded and ATTACHed, a re-run replaced through the parent, slices staged then published at once, old
run dates dropped by retention), the binary COPY lands the same rows as the CSV one, chDB round-trips events."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import psycopg
import pyarrow as pa
import pytest
from psycopg import sql

from revopt.platform.partitions import partition_name, partitions, staging_name, table_exists
from revopt.platform.postgres import (PublishRejected, copy_frame, copy_rows, discard_staged, publish_partition,
                                      publish_staged, read_frame, stage_slice)
from revopt.platform.retention import drop_old_published_partitions
from revopt.platform.stack import connect_postgres, event_store, postgres_url

D1, D2 = dt.date(2025, 1, 1), dt.date(2025, 1, 2)
#: run dates only these tests publish: each a new partition of scores.customer_scores the first time
D3, D4, D5 = (dt.date(2025, 1, day) for day in (3, 4, 5))
#: run dates older than anything another e2e module publishes (retention here must not drop their runs)
OLD = [dt.date(1990, 1, day) for day in (1, 2, 3)]


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
from revopt.platform import postgres
from revopt.platform.config import load_settings

run_date = pd.Timestamp(sys.argv[1]).date()
marker = Path(sys.argv[2])
copy_rows = postgres.copy_rows


def copy_then_hang(conn, table, frame):
    copied = copy_rows(conn, table, frame)
    marker.write_text(f"{copied} rows copied into {table}, transaction still open")
    time.sleep(600)


postgres.copy_rows = copy_then_hang
if sys.argv[4] == "nightly":
    from ml.publishing import publish  # the function the nightly DAG's publish task calls
    from revopt.platform.resources import Resources

    publish(Resources(load_settings()), run_date, "scores.customer_scores", sys.argv[3])
else:  # the same publish without importing the ML stack (seconds less on a loaded machine)
    from revopt.platform.stack import connect_postgres

    with connect_postgres(load_settings()) as conn:
        postgres.publish_partition(conn, "scores.customer_scores", run_date, pd.read_parquet(sys.argv[3]))
"""


@pytest.mark.parametrize("run_date", [D1, D3], ids=["re-run: DELETE + COPY through the parent",
                                                     "new date: COPY into the table not yet attached"])
def test_a_publish_killed_half_way_leaves_the_previous_run_and_the_next_run_completes(settings, tmp_path, run_date):
    with connect_postgres(settings) as conn:
        conn.execute("DELETE FROM scores.customer_scores")
        publish_partition(conn, "scores.customer_scores", D1, _scores(D1, 50, "1"))
        before = _table(conn)
        attached = partitions(conn, "scores.customer_scores")
    assert any(part.holds(D1) for part in attached) and not any(part.holds(D3) for part in attached)
    replacement = tmp_path / "replacement.parquet"
    _scores(run_date, 80, "2").to_parquet(replacement)
    marker = tmp_path / "half-way"
    entry = "nightly" if run_date == D1 else "publish_partition"
    child = subprocess.Popen([sys.executable, "-c", _KILLED_PUBLISHER, run_date.isoformat(), str(marker), str(replacement),
                              entry],
                             env=os.environ.copy(), start_new_session=True)
    deadline = time.monotonic() + 180
    while not marker.exists():
        assert child.poll() is None, "the publisher exited before reaching the kill point"
        assert time.monotonic() < deadline, "the publisher never reached the kill point"
        time.sleep(0.1)
    into = marker.read_text()
    assert ("scores.customer_scores" in into) if run_date == D1 else (partition_name("scores.customer_scores", D3) in into)
    # A reader while the transaction is open neither waits (statement_timeout 250 ms) nor sees it.
    with connect_postgres(settings) as conn:
        conn.execute("SET statement_timeout = 250")
        pd.testing.assert_frame_equal(_table(conn), before)
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL

    with connect_postgres(settings) as conn:
        pd.testing.assert_frame_equal(_table(conn), before)  # the server rolled the transaction back
        assert partitions(conn, "scores.customer_scores") == attached
        assert not table_exists(conn, partition_name("scores.customer_scores", D3)), "the unattached table is left over"
        publish_partition(conn, "scores.customer_scores", run_date, _scores(run_date, 80, "2"))  # the next run
        after = read_frame(conn, "SELECT * FROM scores.customer_scores WHERE run_date = %s", (run_date,))
    assert len(after) == 80 and set(after["propensity_version"]) == {"2"}
    assert not after.duplicated(["run_date", "customer_id"]).any()


def _key_error(frame: pd.DataFrame, problem: str) -> pd.DataFrame:
    bad = frame.copy()
    if problem == "duplicate key":
        bad.loc[len(bad) - 1, "customer_id"] = bad.loc[0, "customer_id"]
    else:
        bad["customer_id"] = bad["customer_id"].astype("float64")
        bad.loc[1, "customer_id"] = np.nan
    return bad


@pytest.mark.parametrize("problem, says", [("duplicate key", r"Key \(run_date, customer_id\)=\(.*\) (is duplicated|already exists)"),
                                           ("NULL key", r'null value in column "customer_id"')])
def test_bad_keys_are_refused_naming_table_column_and_date_and_publish_nothing(settings, problem, says):
    with connect_postgres(settings) as conn:
        conn.execute("DELETE FROM scores.customer_scores")
        publish_partition(conn, "scores.customer_scores", D1, _scores(D1, 6, "1"))
        before, attached = _table(conn), partitions(conn, "scores.customer_scores")
        for run_date in (D1, D4):  # a re-run (DELETE + COPY) and a new date (ATTACH)
            with pytest.raises(PublishRejected, match=f"scores.customer_scores, run_date {run_date}: .*{says}"):
                publish_partition(conn, "scores.customer_scores", run_date, _key_error(_scores(run_date, 6, "2"), problem))
        # staged in two slices: a duplicate across them, or a NULL in one
        bad = _key_error(_scores(D4, 6, "2"), problem)
        discard_staged(conn, "scores.customer_scores", D4)
        with pytest.raises(PublishRejected, match=f"run_date {D4}: .*{says}"):
            for part in (bad.iloc[:3], bad.iloc[3:]):
                stage_slice(conn, "scores.customer_scores", D4, part)
            publish_staged(conn, "scores.customer_scores", D4)
        with pytest.raises(ValueError, match=f"must carry run_date={D4}"):
            stage_slice(conn, "scores.customer_scores", D4, _scores(D2, 2, "2"))
        pd.testing.assert_frame_equal(_table(conn), before)
        assert partitions(conn, "scores.customer_scores") == attached
        discard_staged(conn, "scores.customer_scores", D4)  # the failed attempt's slices are gone
        stage = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(*staging_name("scores.customer_scores", D4).split(".")))
        assert conn.execute(stage).fetchone()[0] == 0


def test_slices_staged_then_published_equal_one_publish_and_stay_unseen_until_then(settings):
    table = "scores.customer_scores"
    with connect_postgres(settings) as conn:
        # a new date (the staged table is ATTACHed: nothing of D5 visible before), then a re-run (DELETE + INSERT:
        # the first version visible until the second is published)
        for version, visible_before in (("s1", set()), ("s2", {"s1"})):
            whole = _scores(D5, 30, version)
            discard_staged(conn, table, D5)
            conn.commit()
            # three customer-hash slices, each by its own task: two at once inside transactions they leave open
            # (as resources.scores() does), neither waiting for the other; one on an idle connection, closed
            # without a commit (stage_slice commits on a connection it found idle)
            tasks = [psycopg.connect(postgres_url(settings), options="-c TimeZone=UTC -c lock_timeout=2000")
                     for _ in range(3)]
            for task, part in zip(tasks, (whole.iloc[i::3] for i in range(3))):
                if task is not tasks[-1]:
                    task.execute("SELECT 1")
                stage_slice(task, table, D5, part)
            for task in tasks[:-1]:
                task.commit()
            for task in tasks:
                task.close()
            staged = read_frame(conn, "SELECT * FROM scores.customer_scores WHERE run_date = %s", (D5,))
            assert set(staged["propensity_version"]) == visible_before
            stage = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(*staging_name(table, D5).split(".")))
            assert conn.execute(stage).fetchone()[0] == 30
            assert publish_staged(conn, table, D5) == 30
            published = read_frame(conn, "SELECT * FROM scores.customer_scores WHERE run_date = %s ORDER BY customer_id",
                                   (D5,))
            pd.testing.assert_frame_equal(published[whole.columns], whole, check_dtype=False)
            assert not table_exists(conn, staging_name(table, D5))
        assert partition_name(table, D5) in {part.name for part in partitions(conn, table)}
        with pytest.raises(ValueError, match="nothing staged"):
            publish_staged(conn, table, D5)


def test_retention_drops_old_partitions_finishing_an_interrupted_detach(settings):
    table = "scores.customer_scores"
    with connect_postgres(settings) as conn:
        for day in OLD:
            publish_partition(conn, table, day, _scores(day, 3, "old"))
    assert drop_old_published_partitions(settings, D1, 0)["kept"]  # 0 keeps everything
    # a DETACH ... CONCURRENTLY interrupted while it waited for a reader: the partition stays "pending detach"
    with connect_postgres(settings) as reader, connect_postgres(settings, autocommit=True) as conn:
        reader.execute("SELECT count(*) FROM scores.customer_scores")  # its transaction stays open
        conn.execute("SET statement_timeout = 300")
        with pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute(f'ALTER TABLE "scores"."customer_scores" DETACH PARTITION '
                         f'"scores_partitions"."customer_scores__p{OLD[0]:%Y%m%d}" CONCURRENTLY')
        reader.rollback()
        assert [part.detach_pending for part in partitions(conn, table) if part.holds(OLD[0])] == [True]
        # and one whose run stopped between DETACH and DROP: detached, left over
        conn.execute(f"CREATE TABLE {partition_name(table, dt.date(1989, 12, 31))} (LIKE {table})")
    removed = drop_old_published_partitions(settings, OLD[2] + dt.timedelta(days=3), 3)  # keep OLD[2] and later
    assert removed["tables"][table] == {"partitions_dropped": 3, "rows_deleted": 0}
    with connect_postgres(settings) as conn:
        assert not table_exists(conn, partition_name(table, dt.date(1989, 12, 31)))
    with connect_postgres(settings) as conn:
        left = {part.lower for part in partitions(conn, table)}
        assert OLD[2] in left and not left & set(OLD[:2])
        assert not any(table_exists(conn, partition_name(table, day)) for day in OLD[:2])
        days = {day for (day,) in conn.execute("SELECT DISTINCT run_date FROM scores.customer_scores").fetchall()}
        assert OLD[2] in days and not days & set(OLD[:2])


_EVERY_TYPE = ("CREATE TEMP TABLE {} (d date, i8 bigint NOT NULL, i4 integer, i2 smallint, f double precision, "
               "b boolean, t text, j jsonb, ts timestamptz{})")


def test_binary_copy_lands_the_same_rows_as_csv_copy_on_every_published_type(settings, caplog):
    frame = pd.DataFrame({
        "d": [D1, None, D2, D1], "i8": [1, 2**40, -3, 4], "i4": [7.0, np.nan, -8.0, 0.0], "i2": [1, 2, 3, 23],
        "f": [0.1, np.nan, 1e300, -0.0], "b": [True, None, False, True], "t": ["x", "", None, "é,\"q\"\n"],
        "j": ['{"a": [1, 2.5]}', None, '{"é": "x"}', "[]"],
        "ts": pd.to_datetime(["2025-01-01 10:00:00.123456", None, "1999-12-31 23:59:59", "2025-06-01"], format="ISO8601").tz_localize("Europe/Paris"),
    })
    with connect_postgres(settings) as conn:
        for name, extra in (("via_csv", ""), ("via_binary", ""), ("numeric_csv", ", n numeric"), ("numeric_any", ", n numeric")):
            conn.execute(_EVERY_TYPE.format(name, extra))
        copy_frame(conn, "via_csv", frame)
        with caplog.at_level("INFO", logger="revopt.platform.postgres"):
            copy_rows(conn, "via_binary", frame)
            assert "as CSV" not in caplog.text  # every type went binary
            with_numeric = frame.assign(n=[1.5, None, 2, 3])
            copy_frame(conn, "numeric_csv", with_numeric)
            copy_rows(conn, "numeric_any", with_numeric)  # numeric is not encoded: the whole frame goes as CSV
            assert "COPY into numeric_any as CSV" in caplog.text
        for left, right, rows in (("via_csv", "via_binary", 4), ("numeric_csv", "numeric_any", 4)):
            assert conn.execute(f"SELECT count(*) FROM {left}").fetchone()[0] == rows
            for a, b in ((left, right), (right, left)):
                assert conn.execute(f"SELECT count(*) FROM (SELECT * FROM {a} EXCEPT ALL SELECT * FROM {b}) AS x").fetchone()[0] == 0
        nulls = conn.execute("SELECT count(*) FILTER (WHERE t IS NULL), count(*) FILTER (WHERE i4 IS NULL) FROM via_binary").fetchone()
        assert nulls == (2, 1)  # "" and None; NaN


def test_a_large_read_through_copy_gives_the_frame_a_row_read_gives(settings):
    """read_large_frame (CSV COPY parsed by Arrow) against read_frame (psycopg rows) on every type it reads: NULLs,
    empty strings, separators, quotes and newlines in text, NaN and infinities, numerics, fractional timestamps."""
    from revopt.platform.postgres import read_frame, read_large_frame

    query = """
    SELECT * FROM (VALUES
        (1::bigint, 2::int, 3::smallint, 1.5::float8, 0.1::numeric(12, 4), true, 'plain'::text, 'a'::varchar,
         DATE '2024-02-29', TIMESTAMPTZ '2024-03-01 10:11:12.345678+02', TIMESTAMP '2024-03-01 00:00:00'),
        (NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
        (-9007199254740993, -1, 0, 'NaN', 12345678.9012, false, '', 'NA', DATE '1970-01-01',
         TIMESTAMPTZ '1999-12-31 23:59:59+00', TIMESTAMP '2000-01-01 12:00:00.5'),
        (4, 5, 6, 'Infinity', -0.0001, NULL, 'comma, "quote"' || chr(10) || 'newline', 'NULL', NULL,
         TIMESTAMPTZ '2025-01-01 00:00:00-05', NULL),
        (7, 8, 9, '-Infinity', 1, true, 'ünïcødé ✓', NULL, DATE '2100-12-31', NULL, NULL)
    ) AS t(big, i, small, f, n, b, txt, vc, d, tz, naive)
    WHERE big IS DISTINCT FROM %(skip)s
    ORDER BY i NULLS LAST
    """
    with connect_postgres(settings) as conn:
        rows = read_frame(conn, query, {"skip": 99})
        copied = read_large_frame(conn, query, {"skip": 99})
        assert read_large_frame(conn, query, {"skip": None})["big"].tolist()[0] == -9007199254740993  # no NULL: int64
        pd.testing.assert_frame_equal(copied.drop(columns=["n"]), rows.drop(columns=["n"]).astype(
            {"big": "float64", "i": "float64", "small": "float64"}), check_exact=True)
        assert copied["n"].tolist()[:4] == [12345678.9012, 0.1, -0.0001, 1.0] and np.isnan(copied["n"][4])
        assert copied["txt"].tolist() == ["", "plain", 'comma, "quote"\nnewline', "ünïcødé ✓", None]
        assert copied["vc"].tolist() == ["NA", "a", "NULL", None, None]
        assert str(copied["tz"].dtype) == "datetime64[ns, UTC]" and copied["tz"][1] == pd.Timestamp(
            "2024-03-01 08:11:12.345678", tz="UTC")
        no_rows = query + " LIMIT 0"
        pd.testing.assert_frame_equal(read_large_frame(conn, no_rows, {"skip": 1}), read_frame(conn, no_rows, {"skip": 1}))
        json_query = "SELECT 1 AS id, '{\"a\": 1}'::jsonb AS doc"  # a type it does not parse: read row by row
        assert read_large_frame(conn, json_query)["doc"].tolist() == [{"a": 1}]
