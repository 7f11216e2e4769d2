"""Outcome monitoring end to end: the customer families are trained on a store whose customers change
their behaviour on the run date R (revopt.sample_data.synth.BehaviourChange), score R and publish;
a horizon later, at D = R + h, ``ml.pipeline.evaluate_outcomes`` compares the published scores with
what happened: rows in ``scores.model_performance``, ``outcome_*`` metrics and an Evidently report on
the versions' MLflow runs, and retraining requested. The same models scoring the same night of a store
that did not change are within the threshold. Pipeline functions are called directly, as the DAG
tasks call them."""

from __future__ import annotations

import datetime as dt

import pytest
from mlflow import MlflowClient

from ml import pipeline
from ml.families import churn, clv, propensity
from ml.params import RunParams
from revopt.platform.postgres import read_frame
from revopt.platform.resources import Resources
from revopt.platform.stack import close_event_stores, connect_postgres
from revopt.sample_data.seed import seed_synthetic
from revopt.sample_data.synth import BehaviourChange

pytestmark = pytest.mark.e2e

# away from the other modules' run dates, and before the ones that read the scores.*_latest views (a later
# run date here would become their "latest")
START = dt.date(2012, 1, 1)
HORIZON = 30
SCORED = START + dt.timedelta(days=300)  # R: training and the night scored; the behaviour changes here
EVALUATED = SCORED + dt.timedelta(days=HORIZON)  # D = R + h: the first night the outcomes are all known
DAYS = (EVALUATED - START).days
STORE = {"n_customers": 1500, "days": DAYS, "start": START, "seed": 7}
PARAMS = RunParams(n_trials=2, tuning_timeout_seconds=60, lookback_days=180, backtest_origins=1,
                   propensity_horizon_days=HORIZON, churn_horizon_days=HORIZON, clv_horizon_days=HORIZON)
FAMILIES = (propensity.FAMILY, churn.FAMILY, clv.FAMILY)


def _score_and_publish(resources: Resources) -> dict:
    paths = pipeline.extract(resources, SCORED, "nightly", PARAMS)
    features = pipeline.build_features(resources, SCORED, paths)
    scored = pipeline.score_customers(resources, SCORED, features["path"], paths, PARAMS)
    assert "skipped" not in scored, scored
    pipeline.publish(resources, SCORED, "scores.customer_scores", scored["path"])
    return scored


def _evaluate(resources: Resources, run_date: dt.date) -> dict:
    return pipeline.evaluate_outcomes(resources, run_date, pipeline.extract(resources, run_date, "nightly", PARAMS),
                                      PARAMS)


def _performance(settings) -> list:
    with connect_postgres(settings) as conn:
        return read_frame(conn, "SELECT * FROM scores.model_performance WHERE run_date_scored = %s "
                                "ORDER BY family, metric", (SCORED,))


@pytest.fixture(scope="module")
def trained(settings, forget_models):
    """The three customer families trained at R on the changing store (the change is after R: training
    sees only the old behaviour) and its night R scored and published."""
    seed_synthetic(settings, **STORE, behaviour_change=BehaviourChange(day=(SCORED - START).days))
    close_event_stores()
    forget_models([family.model_name for family in FAMILIES])  # this store starts without champions
    resources = Resources(settings)
    paths = pipeline.extract(resources, SCORED, "training", PARAMS)
    versions = {}
    for family in FAMILIES:
        result = pipeline.train(family, resources, SCORED, paths, PARAMS)
        assert result.get("alias") == "champion", result  # beat its baseline: there is something to monitor
        versions[family.name] = result
    return {"versions": versions, "scored": _score_and_publish(resources)}


def test_a_store_that_changed_requests_retraining_with_rows_metrics_and_reports(settings, trained):
    resources = Resources(settings)
    assert _evaluate(resources, EVALUATED - dt.timedelta(days=1)) == {
        "retrain": False, "reason": "no published scores whose horizon has just passed", "rows": 0}

    result = _evaluate(resources, EVALUATED)
    assert result["retrain"], result
    assert "purchase_propensity" in result["reason"] and "below its test value" in result["reason"]
    rows = _performance(settings)
    assert set(rows["family"]) == {family.name for family in FAMILIES} and len(rows) == result["rows"]
    assert (rows["run_date_evaluated"] == EVALUATED).all() and (rows["horizon_days"] == HORIZON).all()
    auc = rows[(rows["family"] == "purchase_propensity") & (rows["metric"] == "roc_auc")].iloc[0]
    assert auc["model_version"] == trained["versions"]["purchase_propensity"]["model_version"]
    assert auc["n"] == trained["scored"]["rows"]
    assert auc["test_value"] - auc["value"] > PARAMS.performance_drop_threshold

    client = MlflowClient()
    run_id = trained["versions"]["purchase_propensity"]["run_id"]
    history = client.get_metric_history(run_id, "outcome_roc_auc")
    assert [(m.step, round(m.value, 12)) for m in history] == [(0, round(auc["value"], 12))]  # scored the day it trained
    assert [a.path for a in client.list_artifacts(run_id, f"outcomes/{SCORED}")] == [
        f"outcomes/{SCORED}/purchase_propensity.html"]

    # idempotent: a re-run of D replaces its rows; the next night has nothing new to evaluate
    again = _evaluate(resources, EVALUATED)
    assert again == result
    assert len(_performance(settings)) == len(rows)
    later = _evaluate(resources, EVALUATED + dt.timedelta(days=1))
    assert later["rows"] == 0 and not later["retrain"]


def test_the_same_models_on_a_store_that_did_not_change_request_nothing(settings, trained):
    seed_synthetic(settings, **STORE)  # the same store without the change
    close_event_stores()
    resources = Resources(settings)
    _score_and_publish(resources)
    result = _evaluate(resources, EVALUATED)  # tonight's rows (of the changing store) are recomputed
    assert not result["retrain"], result
    rows = _performance(settings)
    auc = rows[(rows["family"] == "purchase_propensity") & (rows["metric"] == "roc_auc")].iloc[0]
    assert abs(auc["test_value"] - auc["value"]) < PARAMS.performance_drop_threshold
