"""Experiments drawn by the synthetic generator (revopt.sample_data.synth.ExperimentEffect) and analysed as the
nightly run would (ml.experiments): a planted lift is found, an A/A draw is not, a broken exposure log is a
sample ratio mismatch."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from ml.experiments.analysis import analyse_experiment
from ml.experiments.assignment import assign, pick_variants
from ml.experiments.definitions import Experiment
from revopt.sample_data.synth import ExperimentEffect, generate_store

START = dt.date(2024, 1, 1)
N, DAYS, DAY = 6000, 150, 90
LAUNCH = START + dt.timedelta(days=DAY)
RUN = START + dt.timedelta(days=DAYS)
EXPERIMENT = Experiment(experiment_id="gen-test", name="generator", unit="customer", kind="model", start=LAUNCH,
                        end=LAUNCH, primary_metric="conversion", mde=0.2,
                        variants=[{"name": "control"}, {"name": "treatment"}])


def _look(multiplier: float, exposure_share: dict[str, float] | None = None):
    variants = pick_variants(EXPERIMENT, np.arange(1, N + 1))
    store = generate_store(N, DAYS, START, seed=3, experiment_effect=ExperimentEffect(
        EXPERIMENT.experiment_id, DAY, variants, {"control": 1.0, "treatment": multiplier}, exposure_share))
    customers = store.shop["customers"]
    units = pd.DataFrame({"unit_id": customers["customer_id"], "first_seen": customers["signup_date"]})
    assigned = assign([EXPERIMENT], units, LAUNCH)
    orders = store.shop["orders"].merge(
        store.shop["order_lines"].assign(value=lambda f: f["quantity"] * f["unit_price"]).groupby("order_id")["value"]
        .sum().rename("order_value").reset_index(), on="order_id")
    look = analyse_experiment(EXPERIMENT, assigned, RUN, orders=orders,
                              exposures=store.shop.get("experiment_exposures"))
    return store, look


def test_a_planted_lift_is_shipped_and_recorded_in_the_truth():
    store, look = _look(1.5)
    assert look.decision.action == "ship treatment", look.decision.reason
    run = store.truth["generator_run"].set_index("key")["value"]
    assert run["experiment_id"] == "gen-test" and float(run["experiment_rate_multiplier.treatment"]) == 1.5
    assert "experiment_exposures" not in store.shop  # no log unless asked for


def test_an_aa_draw_is_not_shipped():
    _, look = _look(1.0)
    assert not look.decision.action.startswith("ship"), look.decision.reason


def test_an_exposure_log_that_loses_treatment_customers_is_a_sample_ratio_mismatch():
    store, look = _look(1.0, {"control": 1.0, "treatment": 0.85})
    exposures = store.shop["experiment_exposures"]
    assert list(exposures.columns) == ["experiment_id", "unit_id", "first_exposed_at"]
    assert look.decision.action == "stop: sample ratio mismatch", look.decision.reason
    _, whole = _look(1.0, {"control": 1.0, "treatment": 1.0})
    assert whole.rows["srm_p_value"].iloc[0] > 0.001


def test_the_exposure_log_does_not_change_the_rest_of_the_store():
    with_log, _ = _look(1.2, {"control": 1.0, "treatment": 0.9})
    without, _ = _look(1.2)
    pd.testing.assert_frame_equal(with_log.shop["orders"], without.shop["orders"])
    assert with_log.shop["experiment_exposures"]["unit_id"].is_unique
    assert len(with_log.shop["experiment_exposures"]) == pytest.approx(0.95 * N * 0.6, rel=0.5)
