"""Outcome monitoring (ml.families.outcomes) on hand-built published scores and orders: the labels are
training's, the metrics are the families', a horizon that has not passed yields nothing, and the
retraining decision reads the primary metric against the test value."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from ml.families.outcomes import (
    PERFORMANCE_COLUMNS, customer_outcomes, is_due, performance_drops, performance_rows, scored_versions,
)

R = dt.date(2031, 3, 1)  # the night scored
H = 30  # every version's horizon here
D = R + dt.timedelta(days=H)  # the first night the outcomes are all known
#: Customers 1-4 buy in [R, R + 30); 5 only on day 30 (outside), 6 only cancelled, 7 only before R, 8 never.
BUYERS = (1, 2, 3, 4)


def _orders() -> pd.DataFrame:
    at = lambda day, hour=12: pd.Timestamp(R, tz="UTC") + pd.Timedelta(days=day, hours=hour)  # noqa: E731
    rows = [(1, at(0, 0), "completed", 100.0), (2, at(3), "completed", 40.0), (2, at(10), "completed", 60.0),
            (3, at(29, 23), "completed", 20.0), (4, at(15), "completed", 10.0), (5, at(30, 0), "completed", 500.0),
            (6, at(5), "cancelled", 300.0), (7, at(-1), "completed", 300.0)]
    return pd.DataFrame(rows, columns=["customer_id", "order_ts", "status", "order_value"])


def _scores(propensity, churn, clv, run_date: dt.date = R, versions=("3", "5", "2")) -> pd.DataFrame:
    n = len(propensity)
    return pd.DataFrame({
        "run_date": run_date, "customer_id": np.arange(1, n + 1),
        "purchase_propensity": propensity, "churn_risk": churn, "clv": clv,
        "propensity_model": "revopt_purchase_propensity", "propensity_version": versions[0],
        "churn_model": "revopt_churn_risk", "churn_version": versions[1],
        "clv_model": "revopt_customer_clv", "clv_version": versions[2],
    })


def _horizons(scores: pd.DataFrame, horizon: int = H) -> dict:
    return {(s.run_date, s.family, s.model_version): horizon for s in scored_versions(scores)}


def _by_family(outcomes) -> dict:
    return {o.scored.family: o for o in outcomes}


PERFECT = np.array([0.9, 0.8, 0.7, 0.6, 0.4, 0.3, 0.2, 0.1])  # buyers first
SPEND = np.array([100.0, 100.0, 20.0, 10.0, 0.0, 0.0, 0.0, 0.0])  # exactly what they spend in [R, R + 30)


def test_labels_are_trainings_and_a_perfect_ranking_scores_one():
    churn = np.array([0.1, 0.2, np.nan, 0.3, 0.6, 0.7, 0.8, np.nan])  # 3 and 8 not active: no churn score
    scores = _scores(PERFECT, churn, SPEND)
    found = _by_family(customer_outcomes(scores, _orders(), D, _horizons(scores)))

    propensity = found["purchase_propensity"]
    # the window is [R, R + 30): 5's order at R + 30 days and 6's cancelled and 7's earlier one do not count
    assert propensity.labelled["target"].tolist() == [1, 1, 1, 1, 0, 0, 0, 0]
    assert propensity.metrics["roc_auc"] == 1.0 and propensity.metrics["pr_auc"] == pytest.approx(1.0)
    assert propensity.metrics["lift_top_decile"] == pytest.approx(2.0)  # top 1 of 8 bought; half did
    assert propensity.metrics["positive_rate"] == 0.5

    churned = found["churn"]  # the active customers only, label = 1 - bought
    assert churned.labelled["customer_id"].tolist() == [1, 2, 4, 5, 6, 7]
    assert churned.labelled["target"].tolist() == [0, 0, 0, 1, 1, 1]
    assert churned.metrics["roc_auc"] == 1.0

    spend = found["clv"]
    assert spend.labelled["target"].tolist() == SPEND.tolist()
    assert spend.metrics["rmse"] == 0.0 and spend.metrics["mae"] == 0.0
    assert spend.metrics["spearman"] == pytest.approx(1.0)
    assert spend.metrics["total_predicted"] == spend.metrics["total_actual"] == 230.0


def test_a_reversed_ranking_scores_zero_and_miscalibration_shows():
    scores = _scores(PERFECT[::-1].copy(), PERFECT, SPEND[::-1].copy())
    found = _by_family(customer_outcomes(scores, _orders(), D, _horizons(scores)))
    assert found["purchase_propensity"].metrics["roc_auc"] == 0.0
    assert found["churn"].metrics["roc_auc"] == 0.0  # churn risk high for the buyers
    assert found["clv"].metrics["spearman"] < -0.5 and found["clv"].metrics["rmse"] > 0
    constant = _scores(np.full(8, 0.9), np.full(8, 0.9), SPEND)
    miscalibrated = _by_family(customer_outcomes(constant, _orders(), D, _horizons(constant)))["purchase_propensity"]
    assert miscalibrated.metrics["calibration_error"] == pytest.approx(0.4)  # predicted 0.9, half bought
    assert miscalibrated.metrics["roc_auc"] == 0.5


def test_a_horizon_that_has_not_passed_yields_no_rows():
    assert is_due(R, H, D) and not is_due(R, H, D - dt.timedelta(days=1))
    scores = _scores(PERFECT, 1 - PERFECT, SPEND)
    assert customer_outcomes(scores, _orders(), D - dt.timedelta(days=1), _horizons(scores)) == []
    # per version: a family with a longer horizon waits while the others are evaluated
    horizons = {**_horizons(scores), (R, "clv", "2"): 90}
    assert sorted(_by_family(customer_outcomes(scores, _orders(), D, horizons))) == ["churn", "purchase_propensity"]
    # a version the caller did not list (already evaluated, or no horizon known) is left out
    assert customer_outcomes(scores, _orders(), D, {}) == []


def test_one_class_gives_rates_but_no_ranking_metric():
    orders = _orders().assign(status="cancelled")  # nobody bought
    scores = _scores(PERFECT, 1 - PERFECT, SPEND)
    found = _by_family(customer_outcomes(scores, orders, D, _horizons(scores)))
    assert set(found["purchase_propensity"].metrics) == {"positive_rate", "mean_prediction"}
    assert "spearman" not in found["clv"].metrics and found["clv"].metrics["total_actual"] == 0.0


def test_rows_are_the_same_on_a_rerun_and_carry_the_test_values():
    scores = pd.concat([_scores(PERFECT, 1 - PERFECT, SPEND),
                        _scores(PERFECT[::-1].copy(), 1 - PERFECT, SPEND, run_date=R - dt.timedelta(days=1))])
    horizons = _horizons(scores)
    assert len(horizons) == 6  # two nights x three families
    tests = {("purchase_propensity", "3", "roc_auc"): 0.8}
    first = performance_rows(customer_outcomes(scores, _orders(), D, horizons), D, tests)
    again = performance_rows(customer_outcomes(scores, _orders(), D, horizons), D, tests)
    pd.testing.assert_frame_equal(first, again)
    assert list(first.columns) == list(PERFORMANCE_COLUMNS)
    assert not first.duplicated(["run_date_scored", "family", "model_version", "metric"]).any()  # the table's key
    auc = first[(first["family"] == "purchase_propensity") & (first["metric"] == "roc_auc")].set_index("run_date_scored")
    assert auc.loc[R, "test_value"] == 0.8 and auc.loc[R, "value"] == 1.0 and auc.loc[R, "n"] == 8
    # the night before: its own window [R - 1, R + 29) (7 bought, 3 not yet) and its reversed scores
    assert auc.loc[R - dt.timedelta(days=1), "value"] == 0.25
    assert first.loc[first["metric"] != "roc_auc", "test_value"].isna().all()


def _row(family: str, metric: str, value: float, test_value: float) -> dict:
    return {"run_date_scored": R, "run_date_evaluated": D, "family": family, "model_name": "m", "model_version": "1",
            "metric": metric, "value": value, "n": 100, "horizon_days": H, "test_value": test_value}


def test_retraining_is_requested_only_when_a_primary_metric_falls_beyond_the_threshold():
    within = pd.DataFrame([_row("purchase_propensity", "roc_auc", 0.76, 0.80), _row("clv", "spearman", 0.50, 0.54),
                           _row("churn", "pr_auc", 0.10, 0.90),  # not a primary metric
                           _row("churn", "roc_auc", 0.10, np.nan)])  # no test value: cannot drop
    assert performance_drops(within, 0.05) == []
    dropped = pd.DataFrame([_row("purchase_propensity", "roc_auc", 0.70, 0.80), _row("clv", "spearman", 0.40, 0.54),
                            _row("clv", "rmse", 900.0, 100.0)])  # CLV reads Spearman, not RMSE
    drops = performance_drops(dropped, 0.05)
    assert len(drops) == 2
    assert "purchase_propensity" in drops[0] and "0.100 below its test value 0.800" in drops[0]
    assert "clv" in drops[1] and "spearman" in drops[1]
    assert performance_drops(dropped, 0.2) == []
