"""The registered version's description (ml.model_card), the data windows it describes (ml.family) and
the run's names "compare runs" lines up on (gate metrics, input dataset names)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math

import numpy as np
import pandas as pd
import pytest

from ml import model_card
from ml.family import DataWindow, customer_window, dated_window
from ml.gate import GateDecision
from ml.registry import SCHEMA_ROWS, _without_customer_id_column, digest, what_it_predicts, window_schema

DECISION = GateDecision(
    model_name="revopt_purchase_propensity", candidate_version="7", champion_version="5", metric="roc_auc",
    higher_is_better=True, candidate_value=0.8123, champion_value=0.7911, margin=0.005, promoted=True,
    reason="beats the champion by at least 0.005, significantly (alpha 0.05): roc_auc 0.8123 vs champion v5 0.7911",
    test_window="1,234 customers as of 2024-05-02, labels to 2024-06-01", n_test=1234, alpha=0.05,
    difference=0.0212, ci_low=0.0101, ci_high=0.0323, p_value=0.0004, test_method="delong",
    baseline="recency baseline", baseline_value=0.7012, baseline_difference=0.1111, baseline_p_value=1e-6)
WINDOWS = {
    "train": DataWindow(pd.DataFrame({"x": range(900)}), dt.date(2022, 4, 2), dt.date(2024, 5, 1), "training customers"),
    "validation": DataWindow(pd.DataFrame({"x": range(300)}), dt.date(2022, 4, 2), dt.date(2024, 5, 1), "validation"),
    "test": DataWindow(pd.DataFrame({"x": range(1234)}), dt.date(2022, 5, 2), dt.date(2024, 5, 31), "test customers"),
}
METRICS = {"roc_auc": {"candidate": 0.8123, "champion": 0.7911, "baseline": 0.7012},
           "pr_auc": {"candidate": 0.41, "baseline": 0.30}}


def _card(**changes) -> str:
    arguments = dict(family="purchase_propensity", decision=DECISION, run_date=dt.date(2024, 6, 1), run_id="abc123",
                     windows=WINDOWS, test_metrics=METRICS,
                     top_features=[("recency_days", 0.91), ("frequency", 0.42)],
                     importance="mean |contribution| on the test window (log-odds)")
    return model_card.version_description(**{**arguments, **changes})


def test_a_promoted_version_card_gives_windows_metrics_decision_and_features():
    card = _card()
    assert card.startswith("## revopt_purchase_propensity v7\n")
    assert "**Promoted: @champion.** v7 replaces v5." in card
    assert "run date 2024-06-01" in card and "`abc123`" in card
    # one row per split: dates and rows
    assert "| train | 2022-04-02 | 2024-05-01 | 900 | training customers |" in card
    assert "| validation | 2022-04-02 | 2024-05-01 | 300 | validation |" in card
    assert "| test | 2022-05-02 | 2024-05-31 | 1,234 | test customers |" in card
    assert "No separate validation window" not in card
    # the gate's metric first, candidate | champion | baseline; a model without a value is a dash
    table = card[card.index("| metric |"):]
    assert table.index("**roc_auc** (gate)") < table.index("pr_auc")
    assert "| **roc_auc** (gate) | 0.8123 | 0.7911 | 0.7012 |" in card
    assert "| pr_auc | 0.41 | – | 0.3 |" in card
    # the decision in words, with both comparisons
    assert "Beats the champion by at least 0.005, significantly" in card
    assert "difference 0.0212, 95 % interval [0.0101, 0.0323], one-sided p = 0.0004 (delong)" in card
    assert "vs recency baseline: difference 0.1111, one-sided p = 1e-06" in card
    assert "minimum improvement (margin): 0.005; significance level: 0.05" in card
    # top features, most important first, with what the number is
    assert "By mean |contribution| on the test window (log-odds)." in card
    assert card.index("| recency_days | 0.91 |") < card.index("| frequency | 0.42 |")


def test_a_challenger_without_validation_window_or_features_says_so():
    decision = dataclasses.replace(DECISION, promoted=False, reason="its gain over the champion is not significant")
    card = _card(decision=decision, windows={k: v for k, v in WINDOWS.items() if k != "validation"}, top_features=())
    assert "**Not promoted: @challenger.** v5 stays champion." in card
    assert "No separate validation window" in card
    assert "### Top features" not in card


def test_a_first_version_has_no_champion_to_compare_with():
    decision = dataclasses.replace(DECISION, champion_version=None, champion_value=None, difference=None, ci_low=None,
                                   ci_high=None, p_value=None, test_method=None, reason="no champion yet; above the floor")
    card = _card(decision=decision, test_metrics={"roc_auc": {"candidate": 0.81, "champion": None, "baseline": 0.70}})
    assert "**Promoted: @champion.** v7 replaces no earlier champion." in card
    assert "vs the champion: no champion to compare with" in card
    assert "| **roc_auc** (gate) | 0.81 | – | 0.7 |" in card


def test_numbers_that_are_not_finite_show_as_a_dash():
    assert [model_card.number(v) for v in (None, math.nan, math.inf, "x", 0.123456, 12345.0)] == \
        ["–", "–", "–", "–", "0.1235", "1.234e+04"]


def test_a_pipe_in_a_description_does_not_break_the_table():
    windows = {"test": DataWindow(pd.DataFrame({"x": [1]}), dt.date(2024, 1, 1), dt.date(2024, 1, 2), "a | b")}
    assert "| a \\| b |" in _card(windows=windows)


def test_gate_metric_names_do_not_change_with_the_versions_compared():
    """"Compare runs" lines runs up by metric name: a name holding a version would never line up."""
    later = dataclasses.replace(DECISION, candidate_version="12", champion_version="9")
    assert DECISION.as_metrics().keys() == later.as_metrics().keys()
    assert not any(version in name for name in DECISION.as_metrics() for version in ("v5", "v7", "5", "7"))
    assert DECISION.as_tags()["revopt.gate.champion_version"] == "5"  # the version is a tag


def test_customer_window_covers_the_features_history_and_the_label_horizon():
    X = pd.DataFrame({"recency_days": [1.0, 2.0, 3.0]}, index=pd.Index([11, 12, 13], name="customer_id"))
    window = customer_window(X, pd.Series([1, 0, 1], index=X.index), pd.Timestamp("2024-05-02", tz="UTC"),
                             horizon_days=30, lookback_days=365, role="the test window's customers")
    assert (window.start, window.end, window.rows, window.target) == (dt.date(2023, 5, 3), dt.date(2024, 5, 31), 3,
                                                                      "label")
    assert list(window.frame["label"]) == [1, 0, 1]
    assert "3 customers as of 2024-05-02 (the test window's customers)" in window.description


def test_dated_window_takes_its_bounds_from_the_rows_unless_given():
    frame = pd.DataFrame({"day": pd.to_datetime(["2024-01-03", "2024-01-01", "2024-01-09"]), "units": [1, 2, 3]})
    assert (dated_window(frame, "day", "").start, dated_window(frame, "day", "").end) == (dt.date(2024, 1, 1),
                                                                                          dt.date(2024, 1, 9))
    given = dated_window(frame, "day", "", start=pd.Timestamp("2023-12-01"), end=dt.date(2024, 1, 31))
    assert (given.start, given.end) == (dt.date(2023, 12, 1), dt.date(2024, 1, 31))
    empty = dated_window(frame.iloc[:0], "day", "", start=dt.date(2024, 2, 1), end=dt.date(2024, 2, 28))
    assert (empty.start, empty.end, empty.rows) == (dt.date(2024, 2, 1), dt.date(2024, 2, 28), 0)
    with pytest.raises(ValueError, match="ends"):
        DataWindow(frame, dt.date(2024, 2, 1), dt.date(2024, 1, 1))


def test_logged_windows_carry_no_customer_id_and_a_stable_digest():
    frame = pd.DataFrame({"customer_id": [5_000_000_011, 5_000_000_012], "x": [1.0, 2.0]})
    indexed = frame.set_index("customer_id")
    for logged in (_without_customer_id_column(frame), _without_customer_id_column(indexed)):
        assert list(logged.columns) == ["x"] and list(logged.index) == [0, 1]
    assert digest(_without_customer_id_column(frame)) == digest(_without_customer_id_column(indexed))
    assert digest(frame) != digest(frame.assign(x=[1.0, 3.0]))
    assert len(digest(frame)) == 8


def test_a_logged_windows_schema_is_the_one_mlflow_infers():
    """The windows' schema is computed without MLflow's loop over every value, and equals MLflow's own: the types
    of every kind of column a family logs, and a column required only when none of its values is missing, also
    when the first missing value comes after the rows the types are read from."""
    import mlflow
    from mlflow.types.utils import _infer_schema

    n = SCHEMA_ROWS + 5
    late = np.ones(n)
    late[-1] = np.nan
    frame = pd.DataFrame({
        "count": np.arange(n, dtype="int64"), "small": np.arange(n, dtype="int32") % 7, "rate": np.linspace(0, 1, n),
        "late_nan": late, "flag": np.arange(n) % 2 == 0, "label": np.arange(n) % 3,
        "day": pd.date_range("2024-01-01", periods=n, freq="min"),
        "utc": pd.date_range("2024-01-01", periods=n, freq="min", tz="UTC").where(np.arange(n) != n - 2),
        "channel": pd.Series(["email", "search", None], dtype=object).sample(n, replace=True, random_state=1).to_numpy(),
        "segment": ["a"] * n,
    })
    assert window_schema(frame) == _infer_schema(frame)
    assert window_schema(frame.iloc[:0]) == _infer_schema(frame.iloc[:0])
    dataset = mlflow.data.from_pandas(frame, name="w")
    dataset.schema = window_schema(frame)
    assert dataset.to_dict()["schema"] == mlflow.data.from_pandas(frame, name="w").to_dict()["schema"]


def test_a_family_says_what_it_predicts():
    from ml.families import FAMILIES

    for family in FAMILIES:
        assert len(what_it_predicts(family)) > 80, family.name
        assert family.description, f"{family.name} has no description of what it predicts"

    class Toy:
        """Predicts toys.

        More detail."""
        name = "toy"
    assert what_it_predicts(Toy()) == "Predicts toys."
    description = model_card.model_description("toy", "Predicts toys.")
    assert description.startswith("Predicts toys.\n\n") and "`@champion`" in description


def test_window_rows_are_the_frame_rows():
    assert DataWindow(pd.DataFrame({"x": np.arange(7)}), dt.date(2024, 1, 1), dt.date(2024, 1, 1)).rows == 7
