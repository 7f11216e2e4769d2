"""The nightly DAG through Airflow on a tiny seeded store, against the embedded stack."""

from __future__ import annotations

import datetime as dt

import pytest
from mlflow import MlflowClient

from ml.propensity import MODEL_NAME
from ml.tracking import configure_mlflow
from revopt import cli
from revopt.postgres import read_frame
from revopt.seed import seed_synthetic
from revopt.stack import close_event_stores, connect_postgres

START = dt.date(2024, 1, 1)
DAYS = 240
RUN_DATE = START + dt.timedelta(days=DAYS)


@pytest.fixture(scope="module")
def seeded(settings):
    report = seed_synthetic(settings, n_customers=1500, days=DAYS, start=START, seed=11)
    close_event_stores()  # Airflow's task process opens the chDB folder next
    return report


def _published(settings):
    with connect_postgres(settings) as conn:
        scores = read_frame(conn, "SELECT * FROM scores.customer_scores WHERE run_date = %s", (RUN_DATE,))
        customers = read_frame(conn, "SELECT customer_id FROM shop.customers WHERE signup_date < %s", (RUN_DATE,))
    return scores, customers


def test_nightly_dag_publishes_one_score_per_customer_with_the_champion_version(settings, seeded):
    assert seeded.end == RUN_DATE
    status = cli.main(["run", "--date", RUN_DATE.isoformat(), "--param", "n_trials=3", "--param", "tuning_timeout_seconds=60"])
    assert status == 0

    scores, customers = _published(settings)
    assert len(scores) == len(customers) > 0
    assert scores["customer_id"].is_unique
    assert set(scores["customer_id"]) == set(customers["customer_id"])
    assert scores["purchase_propensity"].between(0.0, 1.0).all()
    assert scores["purchase_propensity"].std() > 0.01, "scores should vary across customers"

    configure_mlflow(settings)
    client = MlflowClient()
    champion = client.get_model_version_by_alias(MODEL_NAME, "champion")
    assert set(scores["propensity_version"]) == {str(champion.version)}
    assert set(scores["propensity_model"]) == {MODEL_NAME}
    run = client.get_run(champion.run_id)
    assert run.data.metrics["holdout_roc_auc"] > 0.6
    trials = client.search_runs([run.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{run.info.run_id}'")
    assert len(trials) == 3


def test_rerunning_the_same_date_replaces_its_rows(settings, seeded):
    first, _ = _published(settings)
    assert len(first) > 0, "runs after the first DAG test"
    status = cli.main(["run", "--date", RUN_DATE.isoformat(), "--param", "n_trials=2", "--param", "tuning_timeout_seconds=60"])
    assert status == 0
    second, _ = _published(settings)
    assert len(second) == len(first)
    assert not second.duplicated(["run_date", "customer_id"]).any()

    # The re-run's best of 2 seeded trials cannot beat the champion's best of 3 by the margin:
    # the gate keeps the champion, aliases the new version challenger, and scoring uses the champion.
    client = MlflowClient()
    champion = client.get_model_version_by_alias(MODEL_NAME, "champion").version
    challenger = client.get_model_version_by_alias(MODEL_NAME, "challenger").version
    assert int(challenger) == int(champion) + 1
    assert set(second["propensity_version"]) == set(first["propensity_version"]) == {str(champion)}
    with connect_postgres(settings) as conn:
        decisions = read_frame(
            conn, "SELECT * FROM scores.model_promotions WHERE run_date = %s ORDER BY candidate_version", (RUN_DATE,)
        )
    assert decisions["promoted"].tolist() == [True, False]
    assert decisions["champion_version"].iloc[1] == str(champion)
    assert decisions["candidate_value"].iloc[1] < decisions["champion_value"].iloc[1] + decisions["margin"].iloc[1]
    tags = client.get_run(decisions["mlflow_run_id"].iloc[1]).data.tags
    assert tags["revopt.gate.promoted"] == "False" and "does not beat" in tags["revopt.gate.reason"]


def test_bad_source_data_fails_the_run_and_keeps_the_published_rows(settings, seeded, capsys):
    before, _ = _published(settings)
    assert len(before) > 0, "runs after the successful DAG tests"
    with connect_postgres(settings) as conn:
        conn.execute("UPDATE shop.order_lines SET unit_price = -5 WHERE order_id = (SELECT min(order_id) FROM shop.orders)")
    status = cli.main(["run", "--date", RUN_DATE.isoformat(), "--param", "n_trials=2"])
    assert status != 0
    err = capsys.readouterr().err
    assert "DataValidationError" in err and "'orders'" in err and "order_value" in err and str(RUN_DATE) in err
    after, _ = _published(settings)
    assert after.sort_values("customer_id").reset_index(drop=True).equals(before.sort_values("customer_id").reset_index(drop=True))
