"""An experiment's nightly look (ml.experiments.analysis) from its assignments and the run's orders / email
events (ml.experiments.metrics): the outcome windows, the decision rules and the CLI's definition parsing."""

from __future__ import annotations

import argparse
import datetime as dt

import numpy as np
import pandas as pd
import pytest

from ml.experiments.analysis import RESULT_TABLE_COLUMNS, analyse_experiment
from ml.experiments.definitions import Experiment
from ml.experiments.metrics import unit_outcomes
from revopt.cli_experiments import definition_from_args

START = dt.date(2025, 3, 1)
RUN = dt.date(2025, 4, 1)


def _experiment(**overrides) -> Experiment:
    fields = dict(experiment_id="checkout-copy", name="new checkout copy", unit="customer", kind="model",
                  variants=[{"name": "control"}, {"name": "treatment"}], start=START, primary_metric="conversion",
                  mde=0.1)
    return Experiment(**{**fields, **overrides})


def _assignments(n: int, seed: int = 0, treatment_share: float = 0.5) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    variant = np.where(rng.random(n) < treatment_share, "treatment", "control")
    return pd.DataFrame({"experiment_id": "checkout-copy", "unit_id": np.arange(1, n + 1, dtype="int64"),
                         "variant": variant, "first_assigned": START})


def _orders(assignments: pd.DataFrame, rate: dict[str, float], seed: int = 1, pre_rate: float = 0.3) -> pd.DataFrame:
    """Each customer orders in the 31 days after START with probability rate[variant] (one order of value 50
    + noise), and in the 28 days before with pre_rate, correlated with a customer propensity."""
    rng = np.random.default_rng(seed)
    n = len(assignments)
    propensity = rng.uniform(0.5, 1.5, n)
    after = rng.random(n) < np.minimum(assignments["variant"].map(rate).to_numpy() * propensity, 1.0)
    before = rng.random(n) < np.minimum(pre_rate * propensity, 1.0)
    rows = []
    for mask, first_day, span in ((after, START, 31), (before, START - dt.timedelta(days=28), 28)):
        ids = assignments["unit_id"].to_numpy()[mask]
        days = rng.integers(0, span, len(ids))
        ts = pd.to_datetime([first_day + dt.timedelta(days=int(d)) for d in days]).tz_localize("UTC") + pd.Timedelta(hours=12)
        rows.append(pd.DataFrame({"order_id": 0, "customer_id": ids, "order_ts": ts, "status": "completed",
                                  "order_value": 50.0 + rng.normal(0, 10, len(ids))}))
    frame = pd.concat(rows, ignore_index=True)
    frame["order_id"] = np.arange(1, len(frame) + 1)
    return frame


def test_outcomes_count_only_the_window_from_assignment_to_the_run_date():
    a = pd.DataFrame({"experiment_id": "e", "unit_id": [1, 2, 3], "variant": ["control", "treatment", "treatment"],
                      "first_assigned": [START, START, START + dt.timedelta(days=10)]})
    ts = lambda d: pd.Timestamp(d, tz="UTC") + pd.Timedelta(hours=9)  # noqa: E731
    orders = pd.DataFrame({
        "customer_id": [1, 1, 2, 3, 3, 2],
        "order_ts": [ts(START - dt.timedelta(days=3)), ts(START + dt.timedelta(days=1)), ts(RUN),  # on D: not yet
                     ts(START + dt.timedelta(days=5)),  # before its own assignment: pre-period
                     ts(START + dt.timedelta(days=12)), ts(START + dt.timedelta(days=2))],
        "status": ["completed", "completed", "completed", "completed", "completed", "cancelled"],
        "order_value": [10.0, 20.0, 30.0, 40.0, 50.0, 60.0]})
    revenue = unit_outcomes(a, "revenue_per_unit", RUN, orders=orders).set_index("unit_id")
    assert revenue["y"].to_dict() == {1: 20.0, 2: 0.0, 3: 50.0}
    assert revenue["x"].to_dict() == {1: 10.0, 2: 0.0, 3: 40.0}
    conversion = unit_outcomes(a, "conversion", RUN, orders=orders).set_index("unit_id")
    assert conversion["y"].to_dict() == {1: 1.0, 2: 0.0, 3: 1.0}
    # a conversion's covariate is the pre-period's order count
    twice = pd.concat([orders, orders.iloc[[0]]], ignore_index=True)
    assert unit_outcomes(a, "conversion", RUN, orders=twice).set_index("unit_id")["x"].to_dict() == {1: 2.0, 2: 0.0, 3: 1.0}
    # order value is defined for units with an order in their window only
    assert set(unit_outcomes(a, "order_value", RUN, orders=orders)["unit_id"]) == {1, 3}


def test_open_rate_is_opens_over_sends_in_the_window():
    a = pd.DataFrame({"experiment_id": "e", "unit_id": [1, 2], "variant": ["control", "treatment"],
                      "first_assigned": [START, START]})
    events = pd.DataFrame({"customer_id": [1, 1, 2, 2], "day": pd.to_datetime([START, START + dt.timedelta(days=3),
                                                                              START, START - dt.timedelta(days=2)]),
                           "email_sends": [1, 1, 2, 1], "email_opens": [1, 0, 1, 1]})
    out = unit_outcomes(a, "open_rate", RUN, daily_events=events).set_index("unit_id")
    assert out["y"].to_dict() == {1: 0.5, 2: 0.5}
    assert np.isnan(out.loc[1, "x"]) and out.loc[2, "x"] == 1.0


def test_a_planted_effect_is_shipped_and_an_aa_test_keeps_running():
    a = _assignments(8000)
    look = analyse_experiment(_experiment(), a, RUN, orders=_orders(a, {"control": 0.2, "treatment": 0.26}))
    assert list(look.rows.columns) == list(RESULT_TABLE_COLUMNS)
    assert look.decision.action == "ship treatment", look.decision.reason
    treated = look.rows[look.rows["variant"] == "treatment"].iloc[0]
    assert treated["lift"] == pytest.approx(0.3, abs=0.1)
    assert treated["cuped_variance_reduction"] > 0  # the pre-period order predicts the outcome

    aa = analyse_experiment(_experiment(), a, RUN, orders=_orders(a, {"control": 0.2, "treatment": 0.2}))
    assert aa.decision.action == "keep running", aa.decision.reason


def test_a_sample_ratio_mismatch_blocks_the_winner():
    a = _assignments(8000, treatment_share=0.46)  # configured 50/50
    look = analyse_experiment(_experiment(), a, RUN, orders=_orders(a, {"control": 0.2, "treatment": 0.26}))
    assert look.decision.action == "stop: sample ratio mismatch"
    assert (look.rows["srm_p_value"] < 0.001).all()


def test_harm_on_a_guardrail_beyond_its_tolerance_stops_the_experiment():
    a = _assignments(8000)
    orders = _orders(a, {"control": 0.2, "treatment": 0.26})
    # the treatment's orders are worth half: revenue per unit falls although conversion rises
    treated = orders["customer_id"].isin(a.loc[a["variant"] == "treatment", "unit_id"]) & (orders["order_ts"] >= pd.Timestamp(START, tz="UTC"))
    orders.loc[treated, "order_value"] *= 0.5
    guarded = _experiment(guardrails=[{"metric": "order_value", "direction": "higher_is_better", "tolerance": 0.05}])
    look = analyse_experiment(guarded, a, RUN, orders=orders)
    assert look.decision.action == "stop: harm on order_value", look.decision.reason
    assert set(look.rows["metric"]) == {"conversion", "order_value"}
    # a tolerance wider than the harm lets the winner through
    lenient = _experiment(guardrails=[{"metric": "order_value", "direction": "higher_is_better", "tolerance": 0.8}])
    assert analyse_experiment(lenient, a, RUN, orders=orders).decision.action == "ship treatment"


def test_units_assigned_tonight_wait_for_the_next_look():
    a = _assignments(100).assign(first_assigned=RUN)
    assert analyse_experiment(_experiment(), a, RUN, orders=_orders(a, {"control": 0.2, "treatment": 0.2})) is None


def test_the_sequential_p_value_carries_on_from_the_previous_look():
    a = _assignments(8000)
    orders = _orders(a, {"control": 0.2, "treatment": 0.21})
    first = analyse_experiment(_experiment(), a, RUN, orders=orders)
    treated = first.rows[first.rows["variant"] == "treatment"].iloc[0]
    previous = first.rows.assign(run_date=RUN - dt.timedelta(days=1), p_value_sequential=1e-4)
    again = analyse_experiment(_experiment(), a, RUN, orders=orders, previous=previous)
    assert treated["p_value_sequential"] > 1e-4
    assert again.rows.loc[again.rows["variant"] == "treatment", "p_value_sequential"].iloc[0] == pytest.approx(1e-4)


def test_the_cli_reads_variants_and_guardrails_from_options():
    args = argparse.Namespace(
        file=None, experiment_id="ranker", name="ranker v2", unit="customer", kind="model", start=START, end=None,
        primary_metric="conversion", mde=0.05, alpha=None, power=None, layer=None, traffic=None,
        variant=["control", 'challenger:3:{"models": {"purchase_propensity": "challenger"}}'],
        guardrail=["order_value:higher_is_better:0.02"])
    definition = definition_from_args(args)
    experiment = Experiment(**definition)
    assert experiment.weights() == {"control": 0.25, "challenger": 0.75}
    assert experiment.variants[1].config == {"models": {"purchase_propensity": "challenger"}}
    assert experiment.guardrails[0].tolerance == 0.02
    with pytest.raises(ValueError, match="--variant"):
        definition_from_args(argparse.Namespace(**{**vars(args), "variant": ["a:x"]}))
    with pytest.raises(ValueError, match="needs mde"):
        definition_from_args(argparse.Namespace(**{**vars(args), "mde": None}))


def test_an_exposure_log_that_loses_a_variant_shows_as_a_sample_ratio_mismatch():
    a = _assignments(8000)
    orders = _orders(a, {"control": 0.2, "treatment": 0.26})
    rng = np.random.default_rng(5)
    lost = (a["variant"] == "treatment") & (rng.random(len(a)) < 0.08)  # the app failed to serve (and log) 8 %
    exposures = pd.DataFrame({"experiment_id": "checkout-copy", "unit_id": a.loc[~lost, "unit_id"],
                              "first_exposed_at": pd.Timestamp(START, tz="UTC") + pd.Timedelta(hours=8)})
    look = analyse_experiment(_experiment(), a, RUN, orders=orders, exposures=exposures)
    assert look.decision.action == "stop: sample ratio mismatch"
    assert look.n_units == int((~lost).sum())
    # the log of another experiment changes nothing here: intention to treat on every assigned unit
    other = exposures.assign(experiment_id="another")
    assert analyse_experiment(_experiment(), a, RUN, orders=orders, exposures=other).decision.action == "ship treatment"
    # units exposed only on the run date wait for the next look
    late = exposures.assign(first_exposed_at=pd.Timestamp(RUN, tz="UTC") + pd.Timedelta(hours=1))
    assert analyse_experiment(_experiment(), a, RUN, orders=orders, exposures=late) is None


def test_the_plan_fixes_the_always_valid_tuning():
    from ml.experiments.analysis import _tuning

    assert _tuning(_experiment()) == {}
    three = _experiment(variants=[{"name": "control", "weight": 2}, {"name": "b"}, {"name": "c"}], planned_units=8000)
    assert _tuning(three) == {"sequential_tuning_n": pytest.approx(8000 * 0.75), "planned_exposure": 8000 * 28}
    a = _assignments(8000)
    orders = _orders(a, {"control": 0.2, "treatment": 0.22})
    default = analyse_experiment(_experiment(), a, RUN, orders=orders).rows
    planned = analyse_experiment(_experiment(planned_units=200_000), a, RUN, orders=orders).rows
    p = lambda rows: rows.loc[rows["variant"] == "treatment", "p_value_sequential"].iloc[0]  # noqa: E731
    # tuned for a far larger sample, the interval is wider at this one: a weaker always-valid p
    assert p(planned) > p(default)


def test_a_planned_experiment_is_decided_by_the_group_sequential_test_along_its_looks():
    a = _assignments(8000)
    orders = _orders(a, {"control": 0.2, "treatment": 0.26})
    planned = _experiment(planned_units=4000)  # 4000 units x 28 days of information
    early = analyse_experiment(planned, a, START + dt.timedelta(days=7), orders=orders)
    late = analyse_experiment(planned, a, RUN, orders=orders, previous=early.rows)
    first = early.rows[early.rows["variant"] == "treatment"].iloc[0]
    last = late.rows[late.rows["variant"] == "treatment"].iloc[0]
    assert (late.rows["sequential_test"] == "group").all()
    # unit-days: 8000 x 7 then 8000 x 31 against 4000 x 28
    assert first["information_fraction"] == pytest.approx(0.5) and last["information_fraction"] > 1
    assert last["gs_boundary"] < first["gs_boundary"]  # O'Brien-Fleming: strict early, near 1.96 at the end
    assert late.decision.action == "ship treatment" and last["p_value_gs"] < 0.05
    assert last["gs_low"] > 0
    # without the earlier look the same night spends alpha as if it were the first: another boundary
    alone = analyse_experiment(planned, a, RUN, orders=orders).rows
    assert alone.loc[alone["variant"] == "treatment", "gs_boundary"].iloc[0] != pytest.approx(last["gs_boundary"])
    unplanned = analyse_experiment(_experiment(), a, RUN, orders=orders).rows
    assert (unplanned["sequential_test"] == "msprt").all() and unplanned["p_value_gs"].isna().all()


def test_the_end_comes_when_the_last_units_had_their_outcome_window():
    a = _assignments(4000)
    orders = _orders(a, {"control": 0.2, "treatment": 0.2})
    ended = _experiment(end=START)  # assigns on its start night only
    week = analyse_experiment(ended, a, START + dt.timedelta(days=7), orders=orders)
    assert week.decision.action == "keep running", week.decision.reason
    later = analyse_experiment(ended, a, START + dt.timedelta(days=29), orders=orders)
    assert later.decision.action == "stop: no effect" and "end date" in later.decision.reason


def test_a_planned_experiment_stops_when_its_information_is_complete_and_decisions_stand():
    a = _assignments(4000)
    orders = _orders(a, {"control": 0.2, "treatment": 0.2}, seed=3)  # (seed 1 happens to be a 3 % false positive)
    look = analyse_experiment(_experiment(planned_units=1000), a, RUN, orders=orders)
    assert look.decision.action == "stop: no effect" and "information is complete" in look.decision.reason
    # an earlier night's decision stands, with its date; tonight's statistics are still computed
    earlier = look.rows.assign(run_date=RUN - dt.timedelta(days=3), decision="ship treatment", reason="it won")
    again = analyse_experiment(_experiment(planned_units=1000), a, RUN, orders=orders, previous=earlier)
    assert again.decision.action == "ship treatment"
    assert again.decision.reason == f"decided on {RUN - dt.timedelta(days=3)}: it won"
    assert again.rows["p_value"].notna().any()


def test_a_decided_model_experiment_is_recorded_once_as_online_evidence_beside_the_gate():
    from ml.experiments.analysis import ExperimentLook
    from ml.experiments.nightly import online_evidence

    models = {"purchase_propensity": "revopt_purchase_propensity"}
    experiment = _experiment(planned_units=4000, variants=[
        {"name": "control", "config": {"models": {"purchase_propensity": "3"}}},
        {"name": "treatment", "config": {"models": {"purchase_propensity": "4"}}}])
    a = _assignments(8000)
    look = analyse_experiment(experiment, a, RUN, orders=_orders(a, {"control": 0.2, "treatment": 0.26}))
    look = ExperimentLook(look.experiment, look.rows.assign(mlflow_run_id="run-1"), look.decision, look.n_units)
    assert look.decision.action == "ship treatment"
    (row,) = online_evidence(look, RUN, models)
    treated = look.rows[(look.rows["variant"] == "treatment") & look.rows["is_primary"]].iloc[0]
    assert (row["model_name"], row["candidate_version"], row["champion_version"]) == ("revopt_purchase_propensity", "4", "3")
    assert row["promoted"] is False and row["metric"] == "online conversion"
    assert row["test_method"] == "group-sequential (online A/B)" and row["p_value"] == treated["p_value_gs"] < 0.05
    assert row["ci_low"] == treated["gs_low"] and "ship treatment" in row["reason"]
    # later nights repeat the decision but record nothing more; nothing while it keeps running
    repeated = ExperimentLook(look.experiment, look.rows, look.decision.__class__(
        "ship treatment", None, f"decided on {RUN}: it won"), look.n_units)
    assert online_evidence(repeated, RUN + dt.timedelta(days=1), models) == []
    running = ExperimentLook(look.experiment, look.rows, look.decision.__class__("keep running", None, "-"), look.n_units)
    assert online_evidence(running, RUN, models) == []
