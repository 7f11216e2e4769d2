"""Outcome monitoring end to end: the customer families, pricing and send time are trained on a store
whose customers change their behaviour on the run date R (revopt.sample_data.synth.BehaviourChange),
score R and publish; once each family's horizon has passed (pricing R + 7, send time R + 28, the customer
families D = R + 30), ``ml.pipeline.evaluate_outcomes`` compares the published night with what happened:
rows in ``scores.model_performance``, ``outcome_*`` metrics and an Evidently report on the versions'
MLflow runs, and retraining requested. Each family's night is evaluated once, on the first run date its
horizon has passed. The same customer models scoring the same night of a store that did not change are
within the threshold. Pipeline functions are called directly, as the DAG tasks call them. (Budget is not
here: on a store this small its model does not clear its quality floor, so no allocation is published.)"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from ml import pipeline, publishing
from ml.families import churn, clv, outcomes, pricing, propensity, send_time
from ml.params import RunParams
from revopt.platform.extract import read_extract
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
STORE = {"n_customers": 1500, "days": DAYS, "start": START, "seed": 8}
PARAMS = RunParams(n_trials=2, tuning_timeout_seconds=60, lookback_days=180, backtest_origins=1,
                   propensity_horizon_days=HORIZON, churn_horizon_days=HORIZON, clv_horizon_days=HORIZON)
FAMILIES = (propensity.FAMILY, churn.FAMILY, clv.FAMILY)
#: the recommendation families and their published tables (horizons: pricing the nightly price_horizon_days,
#: 7 by default; send time its training's holdout_days, 28 by default)
RECOMMENDATIONS = ((pricing.FAMILY, "price_recommendations"), (send_time.FAMILY, "send_time_recommendations"))


def _score_and_publish(resources: Resources) -> dict:
    paths = pipeline.extract(resources, SCORED, "nightly", PARAMS)
    features = pipeline.build_features(resources, SCORED, paths)
    scored = pipeline.score_customers(resources, SCORED, features["path"], paths, PARAMS)
    assert "skipped" not in scored, scored
    publishing.publish(resources, SCORED, "scores.customer_scores", scored["path"])
    return scored


def _evaluate(resources: Resources, run_date: dt.date) -> dict:
    return pipeline.evaluate_outcomes(resources, run_date, pipeline.extract(resources, run_date, "nightly", PARAMS),
                                      PARAMS)


def _performance(settings, families=None) -> list:
    with connect_postgres(settings) as conn:
        rows = read_frame(conn, "SELECT * FROM scores.model_performance WHERE run_date_scored = %s "
                                "ORDER BY family, metric", (SCORED,))
    return rows if families is None else rows[rows["family"].isin(families)]


def _recommend_and_publish(resources: Resources) -> dict:
    """Night R of the recommendation families that became champion, published."""
    paths = pipeline.extract(resources, SCORED, "nightly", PARAMS)
    published = {}
    for family, output in RECOMMENDATIONS:
        result = pipeline.recommend(family, resources, SCORED, paths, PARAMS, output=output)
        if "skipped" not in result:
            published[family.name] = {**result, "published": publishing.publish(resources, SCORED, f"scores.{output}",
                                                                              result["path"])}
    return published


@pytest.fixture(scope="module")
def trained(settings, forget_models):
    """The three customer families, pricing and send time trained at R on the changing store (the change
    is after R: training sees only the old behaviour) and their night R scored and published."""
    seed_synthetic(settings, **STORE, behaviour_change=BehaviourChange(day=(SCORED - START).days))
    close_event_stores()
    models = [family.model_name for family in FAMILIES] + [family.model_name for family, _ in RECOMMENDATIONS]
    forget_models(models)  # this store starts without champions
    resources = Resources(settings)
    paths = pipeline.extract(resources, SCORED, "training", PARAMS)
    versions = {}
    for family in FAMILIES:
        result = pipeline.train(family, resources, SCORED, paths, PARAMS)
        assert result.get("alias") == "champion", result  # beat its baseline: there is something to monitor
        versions[family.name] = result
    for family, _ in RECOMMENDATIONS:
        versions[family.name] = pipeline.train(family, resources, SCORED, paths, PARAMS)
    recommended = _recommend_and_publish(resources)
    assert pricing.FAMILY.name in recommended, versions[pricing.FAMILY.name]  # at least pricing is monitored here
    return {"versions": versions, "scored": _score_and_publish(resources), "recommended": recommended}


@pytest.fixture(scope="module")
def recommendations_evaluated(settings, trained):
    """Night R's recommendations evaluated on the nights around their horizons (pricing R + 7, send time
    R + 28), before the customer families' horizon: each result and the rows after it."""
    resources = Resources(settings)
    price_due = SCORED + dt.timedelta(days=PARAMS.price_horizon_days)
    send_due = SCORED + dt.timedelta(days=28)
    nights = {"before pricing": price_due - dt.timedelta(days=1), "pricing": price_due, "pricing again": price_due,
              "before send time": send_due - dt.timedelta(days=1), "send time": send_due}
    found = {}
    for what, night in nights.items():
        found[what] = {"night": night, "result": _evaluate(resources, night), "rows": _performance(settings)}
    return found


def test_recommendations_are_evaluated_once_each_on_the_night_their_horizon_has_passed(settings, trained,
                                                                                         recommendations_evaluated):
    found = recommendations_evaluated
    assert found["before pricing"]["result"]["rows"] == 0  # nothing has passed yet
    price_due, result, rows = (found["pricing"][key] for key in ("night", "result", "rows"))
    assert set(rows["family"]) == {"pricing"} and len(rows) == result["rows"] > 0
    assert (rows["run_date_evaluated"] == price_due).all() and (rows["horizon_days"] == PARAMS.price_horizon_days).all()
    published = trained["recommended"]["pricing"]
    assert (rows["model_version"] == published["model_version"]).all()
    metrics = rows.set_index("metric")
    # every product recommended was on sale in the week after R (the store delists none)
    assert (metrics["n"] == published["published"]).all()
    assert {"units_ratio", "wape", "poisson_deviance", "baseline_poisson_deviance", "deviance_skill"} <= set(metrics.index)
    assert 0.5 < metrics.loc["units_ratio", "value"] < 2.0, metrics  # a week of realised units near the expected
    # the primary metric carries the version's test-window skill over the baseline, from its logged metrics
    client = MlflowClient()
    run = client.get_run(trained["versions"]["pricing"]["run_id"])
    test_skill = 1 - run.data.metrics["test_poisson_deviance"] / run.data.metrics["baseline_poisson_deviance"]
    assert metrics.loc["deviance_skill", "test_value"] == pytest.approx(test_skill)
    assert metrics.loc["poisson_deviance", "test_value"] == pytest.approx(run.data.metrics["test_poisson_deviance"])
    assert [m.step for m in client.get_metric_history(run.info.run_id, "outcome_units_ratio")] == [0]
    assert [a.path for a in client.list_artifacts(run.info.run_id, f"outcomes/{SCORED}")] == [
        f"outcomes/{SCORED}/pricing.html"]

    # a re-run of the night replaces its rows; the nights after it do not evaluate the same night again
    assert found["pricing again"]["result"] == result
    pd.testing.assert_frame_equal(found["pricing again"]["rows"], rows)
    assert found["before send time"]["result"]["rows"] == 0
    if "send_time" in trained["recommended"]:
        send_due, rows = found["send time"]["night"], found["send time"]["rows"]
        sends = rows[rows["family"] == "send_time"].set_index("metric")
        assert (sends["run_date_evaluated"] == send_due).all() and (sends["horizon_days"] == 28).all()
        assert {"open_rate", "open_rate_near_best", "lift_near_best"} <= set(sends.index), sends
        assert np.isfinite(sends.loc["lift_near_best", "test_value"])
        # the nightly extract's engagement at the model's grain gives what the hourly rows give (issue 22)
        hourly = read_extract(pipeline.extract_datasets(Resources(settings), send_due, PARAMS.lookback_days,
                                                        ("customers", "orders", "engagement_by_hour")))
        published = trained["recommended"]["send_time"]
        with connect_postgres(settings) as conn:
            night = read_frame(conn, "SELECT * FROM scores.send_time_recommendations WHERE run_date = %s "
                                     "AND model_version = %s", (SCORED, published["model_version"]))
        scored = outcomes.Scored(SCORED, "send_time", published["model_name"], published["model_version"])
        expected = outcomes.send_time_outcome(scored, 28, night, hourly["engagement_by_hour"], hourly["orders"]).metrics
        assert expected and {name: sends.loc[name, "value"] for name in expected} == pytest.approx(expected)


def test_a_store_that_changed_requests_retraining_with_rows_metrics_and_reports(settings, trained,
                                                                               recommendations_evaluated):
    resources = Resources(settings)
    assert _evaluate(resources, EVALUATED - dt.timedelta(days=1)) == {
        "retrain": False, "reason": "no published scores whose horizon has just passed", "rows": 0}

    result = _evaluate(resources, EVALUATED)
    assert result["retrain"], result
    assert "purchase_propensity" in result["reason"] and "below its test value" in result["reason"]
    rows = _performance(settings)
    rows = rows[rows["run_date_evaluated"] == EVALUATED]  # the recommendations were evaluated on earlier nights
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
    assert len(_performance(settings, [family.name for family in FAMILIES])) == len(rows)
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
