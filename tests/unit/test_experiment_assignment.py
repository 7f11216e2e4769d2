"""Experiment definitions (validation, table rows, activity) and assignment (the hash, weights, layers,
the global holdout, stability across runs and weight edits)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from ml.experiments.assignment import (
    ASSIGNMENT_COLUMNS,
    LayerOverflowError,
    assign,
    in_holdout,
    layer_allocations,
    pick_variants,
    unit_hash,
    unit_hashes,
)
from ml.experiments.definitions import Experiment, Guardrail, Variant

DAY = dt.date(2024, 3, 1)
N = 100_000


def _experiment(**overrides) -> Experiment:
    values = dict(experiment_id="exp-a", name="Challenger vs champion", unit="customer", kind="model",
                  variants=(Variant("control", 1.0, {"alias": "champion"}), Variant("challenger", 1.0,
                                                                                     {"alias": "challenger"})),
                  start=DAY, primary_metric="conversion", mde=0.05)
    values.update(overrides)
    return Experiment(**values)


def _units(n: int = N, first_seen: dt.date = DAY - dt.timedelta(days=30), start: int = 0) -> pd.DataFrame:
    return pd.DataFrame({"unit_id": np.arange(start, start + n, dtype="int64"), "first_seen": first_seen})


# --- the hash -----------------------------------------------------------------------------------------

#: sha256("<salt>\x1f<unit>"), first 8 bytes big-endian >> 11, / 2**53: fixed forever (assignments
#: published by earlier runs, and any other implementation, depend on these values)
GOLDEN = [
    ("exp-a", 1, 0.5306568142576326),
    ("exp-a", "1", 0.5306568142576326),
    ("exp-a", 42, 0.6809307396186108),
    ("layer:default", 12345, 0.9982750909296108),
    ("holdout:global", "85123A", 0.1607275032731691),
    ("price_test", "", 0.023737040499708706),
]


@pytest.mark.parametrize(("salt", "unit", "expected"), GOLDEN)
def test_unit_hash_golden_values(salt, unit, expected):
    assert unit_hash(salt, unit) == expected
    assert unit_hashes(salt, [unit, unit])[1] == expected


def test_vectorised_hash_equals_the_scalar_one_and_stays_in_unit_interval():
    ids = np.arange(5_000, dtype="int64")
    hashes = unit_hashes("exp-a", ids)
    assert hashes.tolist() == [unit_hash("exp-a", int(i)) for i in ids]
    assert unit_hashes("exp-a", pd.Series(ids.astype(str))).tolist() == hashes.tolist()
    assert hashes.min() >= 0 and hashes.max() < 1
    assert stats.kstest(unit_hashes("exp-b", np.arange(N)), "uniform").pvalue > 1e-3


def test_float_and_bool_ids_are_refused():
    with pytest.raises(TypeError, match="float"):
        unit_hashes("exp-a", np.array([1.0, 2.0]))
    with pytest.raises(TypeError, match="integer or a string"):
        unit_hash("exp-a", True)


# --- weights, layers, holdout -------------------------------------------------------------------------

@pytest.mark.parametrize("weights", [(10, 90), (1, 1, 2), (0.2, 0.3, 0.5)])
def test_weights_are_honoured(weights):
    experiment = _experiment(variants=[Variant(f"v{i}", w) for i, w in enumerate(weights)])
    frame = assign([experiment], _units(), DAY)
    assert len(frame) == N  # traffic 1, no holdout: everyone
    observed = frame["variant"].value_counts().reindex([f"v{i}" for i in range(len(weights))]).to_numpy()
    expected = np.array(weights) / sum(weights) * N
    assert stats.chisquare(observed, expected).pvalue > 1e-3


def test_pick_variants_depends_on_the_salt_only_through_the_experiment():
    experiment = _experiment()
    again = pick_variants(_experiment(name="renamed", mde=0.1), np.arange(1_000))
    assert (pick_variants(experiment, np.arange(1_000)) == again).all()
    resalted = pick_variants(_experiment(salt="exp-a-2"), np.arange(1_000))
    assert 0.4 < (resalted == again).mean() < 0.6  # a new salt re-randomises


def test_layers_are_exclusive_and_independent_of_other_layers():
    first = _experiment(experiment_id="l1-a", layer="one", traffic=0.3)
    second = _experiment(experiment_id="l1-b", layer="one", traffic=0.6, start=DAY + dt.timedelta(days=1))
    other = _experiment(experiment_id="l2", layer="two", traffic=0.5,
                        variants=[Variant("control", 1), Variant("b", 3)])
    frame = assign([first, second, other], _units(), DAY + dt.timedelta(days=1))
    members = {e: set(frame.loc[frame["experiment_id"] == e, "unit_id"]) for e in ("l1-a", "l1-b", "l2")}
    assert not members["l1-a"] & members["l1-b"]
    assert len(members["l1-a"]) / N == pytest.approx(0.3, abs=0.01)
    assert len(members["l1-b"]) / N == pytest.approx(0.6, abs=0.01)
    assert len(members["l2"]) / N == pytest.approx(0.5, abs=0.01)

    # each unit's place in layer one (none / l1-a / l1-b) against its place in layer two (none / variant)
    places = frame.pivot(index="unit_id", columns="experiment_id", values="variant").reindex(range(N))
    layer_one = np.where(places["l1-a"].notna(), "l1-a", np.where(places["l1-b"].notna(), "l1-b", "none"))
    table = pd.crosstab(layer_one, places["l2"].fillna("none").to_numpy())
    assert table.shape == (3, 3)
    assert stats.chi2_contingency(table).pvalue > 1e-3  # where a unit is in layer one says nothing of layer two


def test_layer_allocation_is_first_free_interval_and_freed_by_ended_experiments():
    first = _experiment(experiment_id="a", traffic=0.5, end=DAY + dt.timedelta(days=9))
    second = _experiment(experiment_id="b", traffic=0.25, start=DAY + dt.timedelta(days=2))
    after_a = _experiment(experiment_id="c", traffic=0.5, start=DAY + dt.timedelta(days=10))
    product = _experiment(experiment_id="p", unit="product", kind="price", traffic=1.0)
    allocations = layer_allocations([after_a, product, second, first])
    assert allocations["a"] == ((0.0, 0.5),)
    assert allocations["b"] == ((0.5, 0.75),)
    assert allocations["c"] == ((0.0, 0.5),)  # a ended the day before c starts
    assert allocations["p"] == ((0.0, 1.0),)  # products have their own line


def test_layer_allocation_takes_free_space_in_pieces():
    a = _experiment(experiment_id="a", traffic=0.3, end=DAY + dt.timedelta(days=4))
    b = _experiment(experiment_id="b", traffic=0.3, start=DAY + dt.timedelta(days=1))
    c = _experiment(experiment_id="c", traffic=0.6, start=DAY + dt.timedelta(days=5))
    allocations = layer_allocations([a, b, c])
    assert np.array(allocations["c"]) == pytest.approx(np.array([(0.0, 0.3), (0.6, 0.9)]))


def test_layer_overflow_names_the_experiments():
    a = _experiment(experiment_id="big-one", traffic=0.7)
    b = _experiment(experiment_id="latecomer", traffic=0.4, start=DAY + dt.timedelta(days=3))
    with pytest.raises(LayerOverflowError, match=r"latecomer.*big-one"):
        layer_allocations([a, b])
    with pytest.raises(LayerOverflowError):
        assign([a, b], _units(10), DAY)
    # stopped before b starts: its share is free again
    layer_allocations([a.stop(DAY + dt.timedelta(days=3)), b])


def test_holdout_is_excluded_everywhere():
    experiments = [_experiment(experiment_id="a", layer="one", traffic=1.0),
                   _experiment(experiment_id="b", layer="two", traffic=0.5)]
    units = _units()
    frame = assign(experiments, units, DAY, holdout_share=0.05)
    held = units["unit_id"][in_holdout(units["unit_id"], 0.05)]
    assert len(held) / N == pytest.approx(0.05, abs=0.005)
    assert not set(held) & set(frame["unit_id"])
    assert set(frame.loc[frame["experiment_id"] == "a", "unit_id"]) == set(units["unit_id"]) - set(held)
    assert set(in_holdout(units["unit_id"], 0.05).nonzero()[0]) <= set(in_holdout(units["unit_id"], 0.1).nonzero()[0])


# --- stability over runs --------------------------------------------------------------------------------

def test_rerunning_a_date_yields_an_identical_frame():
    experiments = [_experiment(experiment_id="a", traffic=0.4), _experiment(experiment_id="b", traffic=0.6)]
    units = _units(20_000)
    first = assign(experiments, units, DAY, holdout_share=0.05)
    assert list(first.columns) == list(ASSIGNMENT_COLUMNS)
    pd.testing.assert_frame_equal(assign(experiments, units, DAY, holdout_share=0.05), first)
    pd.testing.assert_frame_equal(assign(experiments, units, DAY, first, holdout_share=0.05), first)

    later_units = pd.concat([units, _units(500, DAY + dt.timedelta(days=1), start=50_000)], ignore_index=True)
    next_day = assign(experiments, later_units, DAY + dt.timedelta(days=2), first, holdout_share=0.05)
    assert (next_day["first_assigned"] == DAY + dt.timedelta(days=2)).sum() > 400
    # re-running the first date after the later one: the later rows do not leak back
    pd.testing.assert_frame_equal(assign(experiments, later_units, DAY, next_day, holdout_share=0.05), first)


def test_units_are_assigned_on_first_appearance():
    experiment = _experiment()
    units = pd.concat([_units(100), _units(50, DAY, start=1_000)], ignore_index=True)
    today = assign([experiment], units, DAY)
    assert set(today["unit_id"]) == set(range(100))  # first seen on the run date: not yet known to run D
    tomorrow = assign([experiment], units, DAY + dt.timedelta(days=1), today)
    new = tomorrow[tomorrow["first_assigned"] == DAY + dt.timedelta(days=1)]
    assert set(new["unit_id"]) == set(range(1_000, 1_050))
    assert len(tomorrow) == 150


def test_previously_assigned_units_keep_their_variant_after_a_weight_change():
    experiment = _experiment(variants=[Variant("control", 1), Variant("treatment", 1)])
    units = _units(20_000)
    before = assign([experiment], units, DAY)
    edited = dataclasses.replace(experiment, variants=(Variant("control", 9), Variant("treatment", 1)))
    units_later = pd.concat([units, _units(20_000, DAY + dt.timedelta(days=3), start=100_000)], ignore_index=True)
    after = assign([edited], units_later, DAY + dt.timedelta(days=5), before)
    old = after[after["first_assigned"] == DAY].reset_index(drop=True)
    pd.testing.assert_frame_equal(old, before)
    new = after[after["first_assigned"] == DAY + dt.timedelta(days=5)]
    assert len(new) == 20_000
    assert (new["variant"] == "control").mean() == pytest.approx(0.9, abs=0.01)
    # the edit would have moved some of the earlier units, had they not kept their rows
    assert (pick_variants(edited, before["unit_id"]) != before["variant"].to_numpy()).any()


def test_stopped_and_ended_experiments_assign_no_new_units_but_keep_their_rows():
    experiment = _experiment(end=DAY + dt.timedelta(days=6))
    first = assign([experiment], _units(1_000), DAY)
    newcomers = pd.concat([_units(1_000), _units(100, DAY + dt.timedelta(days=1), start=5_000)], ignore_index=True)
    stopped = experiment.stop(DAY + dt.timedelta(days=2))
    assert not stopped.is_active(DAY + dt.timedelta(days=2)) and stopped.is_active(DAY + dt.timedelta(days=1))
    pd.testing.assert_frame_equal(assign([stopped], newcomers, DAY + dt.timedelta(days=4), first), first)
    pd.testing.assert_frame_equal(assign([experiment], newcomers, DAY + dt.timedelta(days=7), first), first)
    assert len(assign([experiment], newcomers, DAY + dt.timedelta(days=6), first)) == 1_100


def test_a_unit_in_an_active_experiment_of_a_layer_joins_no_other():
    a = _experiment(experiment_id="a", traffic=0.5)
    b = _experiment(experiment_id="b", traffic=0.5, start=DAY + dt.timedelta(days=1))
    units = _units(10_000)
    first = assign([a, b], units, DAY)
    # a grows to the whole layer mid-run (b must shrink to fit): a's new interval covers b's old units
    grown, shrunk = dataclasses.replace(a, traffic=0.8), dataclasses.replace(b, traffic=0.2)
    second = assign([a, b], units, DAY + dt.timedelta(days=1), first)
    third = assign([grown, shrunk], units, DAY + dt.timedelta(days=2), second)
    per_unit = third.groupby("unit_id")["experiment_id"].nunique()
    assert per_unit.max() == 1
    assert set(third.loc[third["experiment_id"] == "b", "unit_id"]) == set(
        second.loc[second["experiment_id"] == "b", "unit_id"])


def test_previous_ids_read_back_as_text_match_integer_units():
    experiment = _experiment()
    first = assign([experiment], _units(1_000), DAY)
    as_text = first.assign(unit_id=first["unit_id"].astype(str),
                           first_assigned=pd.to_datetime(first["first_assigned"]))
    again = assign([experiment], _units(1_000), DAY + dt.timedelta(days=1), as_text)
    pd.testing.assert_frame_equal(again, first)


def test_customer_and_product_experiments_need_the_unit_column():
    customers = _experiment(experiment_id="c")
    products = _experiment(experiment_id="p", unit="product", kind="price")
    with pytest.raises(ValueError, match="'unit' column"):
        assign([customers, products], _units(10), DAY)
    units = pd.concat([_units(10).assign(unit="customer"), _units(5).assign(unit="product")], ignore_index=True)
    frame = assign([customers, products], units, DAY)
    assert frame.groupby("experiment_id").size().to_dict() == {"c": 10, "p": 5}


def test_experiments_need_their_own_id_and_salt():
    with pytest.raises(ValueError, match="salt"):
        assign([_experiment(experiment_id="a", salt="s"), _experiment(experiment_id="b", salt="s", layer="x")],
               _units(10), DAY)
    with pytest.raises(ValueError, match="experiment_id"):
        assign([_experiment(), _experiment()], _units(10), DAY)


# --- the definition -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("overrides", "field"), [
    ({"experiment_id": "Bad Id"}, "experiment_id"),
    ({"experiment_id": "x" * 64}, "experiment_id"),
    ({"unit": "session"}, "unit"),
    ({"kind": "banner"}, "kind"),
    ({"kind": "price"}, "unit"),  # prices are per product
    ({"variants": [Variant("only")]}, "variants"),
    ({"variants": [Variant("a"), Variant("a")]}, r"variants\[1\].name"),
    ({"variants": [Variant("a"), Variant("b", 0.0)]}, r"variants\[1\].weight"),
    ({"variants": [Variant("a"), Variant("b", 1.0, {"at": dt.date(2024, 1, 1)})]}, r"variants\[1\].config"),
    ({"control": "nobody"}, "control"),
    ({"end": DAY - dt.timedelta(days=1)}, "end"),
    ({"primary_metric": "clicks"}, "primary_metric"),
    ({"guardrails": [("order_value",), ("order_value", "lower_is_better")]}, r"guardrails\[1\].metric"),
    ({"guardrails": [("order_value", "sideways", 0.02)]}, r"guardrails\[0\].direction"),
    ({"guardrails": [("order_value", "higher_is_better", -0.1)]}, r"guardrails\[0\].tolerance"),
    ({"mde": 0.0}, "mde"),
    ({"alpha": 1.5}, "alpha"),
    ({"power": 0.0}, "power"),
    ({"layer": "Main Layer"}, "layer"),
    ({"traffic": 1.2}, "traffic"),
    ({"traffic": 0}, "traffic"),
    ({"salt": "layer:default"}, "salt"),
    ({"status": "paused"}, "status"),
    ({"status": "stopped"}, "stopped_on"),
    ({"stopped_on": DAY}, "stopped_on"),
    ({"start": "yesterday"}, "start"),
])
def test_validate_names_the_field(overrides, field):
    with pytest.raises(ValueError, match=rf"field {field}="):
        _experiment(**overrides)


def test_validate_runs_on_an_existing_definition():
    experiment = _experiment()
    experiment.validate()
    object.__setattr__(experiment, "traffic", 2.0)
    with pytest.raises(ValueError, match="traffic=2.0"):
        experiment.validate()


def test_defaults_and_row_round_trip():
    experiment = _experiment(guardrails=[("order_value", "higher_is_better", 0.02)], end="2024-04-30",
                             control="challenger")
    assert experiment.salt == "exp-a" and experiment.control == "challenger"
    assert experiment.guardrails == (Guardrail("order_value", "higher_is_better", 0.02),)
    assert _experiment().control == "control"
    row = experiment.to_row()
    assert json.loads(json.dumps(row["variants"]))[1] == {"name": "challenger", "weight": 1.0,
                                                          "config": {"alias": "challenger"}}
    assert row["start_date"] == DAY and row["end_date"] == dt.date(2024, 4, 30) and "end" not in row
    assert Experiment.from_row(row) == experiment
    as_stored = {**row, "variants": json.dumps(row["variants"]), "guardrails": json.dumps(row["guardrails"]),
                 "stopped_on": pd.NaT, "created_at": "2024-02-01"}
    assert Experiment.from_row(as_stored) == experiment
    assert experiment.weights() == {"control": 0.5, "challenger": 0.5}


def test_is_active():
    experiment = _experiment(end=DAY + dt.timedelta(days=9))
    assert not experiment.is_active(DAY - dt.timedelta(days=1))
    assert experiment.is_active(DAY) and experiment.is_active(DAY + dt.timedelta(days=9))
    assert not experiment.is_active(DAY + dt.timedelta(days=10))
    stopped = experiment.stop(DAY + dt.timedelta(days=3))
    assert stopped.status == "stopped" and stopped.last_active_day() == DAY + dt.timedelta(days=2)
    assert not stopped.is_active(DAY + dt.timedelta(days=3))
