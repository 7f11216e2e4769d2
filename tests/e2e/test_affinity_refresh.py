"""The customer-affinity refresh (revopt_affinity) on a small seeded store: through Airflow, incrementally
from the state it left, and idempotent when re-run."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from features.affinity import interactions
from ml.params import RunParams
from ml.personalisation import affinity
from ml.pipeline import publish_affinity, refresh_affinity
from revopt import cli
from revopt.platform.postgres import read_frame
from revopt.platform.resources import Resources
from revopt.platform.stack import close_event_stores, connect_postgres
from revopt.sample_data.seed import seed_synthetic

START = dt.date(2031, 1, 1)  # far from the other modules' run dates
DAYS = 120
RUN_DATE = START + dt.timedelta(days=DAYS)
MIDNIGHT = pd.Timestamp(RUN_DATE, tz="UTC")


@pytest.fixture(scope="module")
def seeded(settings):
    report = seed_synthetic(settings, n_customers=400, days=DAYS, start=START, seed=13)
    close_event_stores()  # Airflow's task process opens the chDB folder next
    return report


def _published(settings, table: str, run_date: dt.date = RUN_DATE) -> pd.DataFrame:
    with connect_postgres(settings) as conn:
        return read_frame(conn, f"SELECT * FROM scores.{table} WHERE run_date = %s "
                                "ORDER BY customer_id, dimension, value", (run_date,))


def test_the_affinity_dag_publishes_scores_in_the_unit_interval_for_every_buyer(settings, seeded):
    assert seeded.end == RUN_DATE
    assert cli.main(["run", "--dag", "affinity", "--date", RUN_DATE.isoformat()]) == 0
    scores = _published(settings, "customer_affinity")
    assert len(scores) and scores["affinity"].between(0, 1).all()
    assert (pd.to_datetime(scores["as_of"], utc=True) == MIDNIGHT).all()
    with connect_postgres(settings) as conn:
        buyers = read_frame(conn, "SELECT DISTINCT o.customer_id, p.category FROM shop.orders o "
                                  "JOIN shop.order_lines l USING (order_id) JOIN shop.products p USING (product_id) "
                                  "WHERE o.status = 'completed' AND o.order_ts >= %s AND o.order_ts < %s",
                            (MIDNIGHT - pd.Timedelta(days=30), MIDNIGHT))
    category = scores[scores["dimension"] == "category"]
    have = set(zip(category["customer_id"], category["value"]))
    assert set(zip(buyers["customer_id"], buyers["category"])) <= have  # every recent purchase counts
    # each customer's shares of interest sum to at most 1 per dimension
    assert (scores.groupby(["customer_id", "dimension"])["affinity"].sum() <= 1 + 1e-9).all()
    state = _published(settings, "affinity_state")
    assert (pd.to_datetime(state["as_of"], utc=True) == affinity.settled_cutoff(MIDNIGHT)).all()


def test_a_later_refresh_reads_only_since_the_state_and_equals_a_full_refresh(settings, seeded):
    params = RunParams()
    later = MIDNIGHT + pd.Timedelta(hours=6)
    resources = Resources(settings)
    refreshed = refresh_affinity(resources, later.to_pydatetime(), params)
    assert pd.Timestamp(refreshed["since"]) == affinity.settled_cutoff(MIDNIGHT)  # incremental, not the lookback
    incremental = pd.read_parquet(refreshed["customer_affinity"])
    with connect_postgres(settings) as conn:
        everything = interactions(conn, resources.events, later - pd.Timedelta(days=params.affinity_lookback_days),
                                  later)
    _, full = affinity.refresh(affinity.empty_state(), everything, later, params)
    columns = ["customer_id", "dimension", "value", "affinity", "interest"]
    pd.testing.assert_frame_equal(incremental[columns].reset_index(drop=True), full[columns].reset_index(drop=True),
                                  check_exact=False, atol=1e-9)
    assert publish_affinity(resources, RUN_DATE, refreshed) == len(incremental)
    assert (pd.to_datetime(_published(settings, "customer_affinity")["as_of"], utc=True) == later).all()


def test_rerunning_a_refresh_reproduces_its_rows(settings, seeded):
    close_event_stores()
    before = _published(settings, "customer_affinity")
    assert cli.main(["run", "--dag", "affinity", "--date", RUN_DATE.isoformat()]) == 0
    again = _published(settings, "customer_affinity")
    assert (pd.to_datetime(again["as_of"], utc=True) == MIDNIGHT).all()  # the midnight refresh replaced the day's rows
    assert cli.main(["run", "--dag", "affinity", "--date", RUN_DATE.isoformat()]) == 0
    pd.testing.assert_frame_equal(_published(settings, "customer_affinity"), again)
    assert len(before) and set(before["customer_id"]) == set(again["customer_id"])
