"""Nightly drift check: Evidently's per-column decisions, the feature share and the retrain flag."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.customer import FEATURE_COLUMNS
from ml.drift import ALL_MISSING, TABLE_COLUMNS, DriftConfig, check_drift

SCORES = ("purchase_propensity", "churn_risk", "clv")
#: A third of the features, so the share of drifted features clears the default 0.3 threshold.
SHIFTED = ("recency_days", "monetary", "orders_90d", "sessions_30d", "email_opens_30d", "days_since_last_session",
           "spend_180d", "mean_gap_days", "overdue_ratio", "category_entropy")
ROWS = 5_000  # > 1000 reference rows: the distance tests of the nightly run; at 2_000 their noise nears 0.1


def _customers(n: int, seed: int, shifted: tuple[str, ...] = (), scores_shifted: bool = False) -> pd.DataFrame:
    """Feature-shaped columns: counts (Poisson, some with <= 5 values) and amounts / days (Gamma).

    A shifted column has its mean raised by about half a standard deviation or more.
    """
    rng = np.random.default_rng(seed)
    columns = {}
    for position, name in enumerate(FEATURE_COLUMNS):
        factor = 1.6 if name in shifted else 1.0
        if position % 3 == 0:
            columns[name] = rng.poisson(1.2 * factor, n).astype("int64")
        else:
            columns[name] = rng.gamma(2.0 + position % 4, 10.0 * factor, n)
    lift = 0.15 if scores_shifted else 0.0
    columns["purchase_propensity"] = np.clip(rng.beta(2, 20, n) + lift, 0, 1)
    columns["churn_risk"] = np.clip(rng.beta(2, 5, n) + lift, 0, 1)
    columns["clv"] = rng.gamma(2.0, 60.0 * (1 + 2 * lift), n)
    return pd.DataFrame(columns)


@pytest.fixture(scope="module")
def unchanged():
    return check_drift(_customers(ROWS, 1), _customers(ROWS, 2), FEATURE_COLUMNS, DriftConfig(), score_columns=SCORES)


@pytest.fixture(scope="module")
def shifted():
    current = _customers(ROWS, 2, shifted=SHIFTED, scores_shifted=True)
    return check_drift(_customers(ROWS, 1), current, FEATURE_COLUMNS, DriftConfig(), score_columns=SCORES)


def test_identical_distributions_do_not_drift(unchanged):
    assert list(unchanged.table.columns) == list(TABLE_COLUMNS)
    assert list(unchanged.table["column"]) == [*FEATURE_COLUMNS, *SCORES]
    assert not unchanged.table["drifted"].any()
    assert unchanged.drift_share == 0.0
    assert not unchanged.retrain
    assert "no retraining" in unchanged.reason and "drifted features: none" in unchanged.reason
    assert set(unchanged.table["stattest"]) <= {"wasserstein", "jensenshannon"}
    assert (unchanged.table["threshold"] == 0.1).all()


def test_shifted_columns_drift_and_request_retraining(shifted):
    features = shifted.table[shifted.table["kind"] == "feature"]
    assert set(features.loc[features["drifted"], "column"]) == set(SHIFTED)
    assert shifted.drift_share == pytest.approx(len(SHIFTED) / len(FEATURE_COLUMNS))
    assert shifted.retrain
    assert "retraining requested" in shifted.reason and "0.3" in shifted.reason
    assert all(column in shifted.reason for column in SHIFTED)


def test_score_columns_are_reported_but_not_counted(shifted):
    scores = shifted.table[shifted.table["kind"] == "score"]
    assert list(scores["column"]) == list(SCORES)
    assert scores["drifted"].all()
    # the share is over the features only, although 3 scores drifted too
    assert shifted.drift_share == pytest.approx(len(SHIFTED) / len(FEATURE_COLUMNS))
    assert "drifted scores (not counted): " + ", ".join(SCORES) in shifted.reason


def test_the_report_is_standalone_html(shifted):
    head = shifted.html.lstrip()[:200].lower()
    assert head.startswith("<!doctype html>") and "<html" in head
    assert shifted.html.rstrip().lower().endswith("</html>")
    assert "monetary" in shifted.html


def test_each_column_is_tested_twice_not_three_times(monkeypatch):
    """The report is the metrics ``DataDriftPreset`` is made of, without the preset's HTML table, which tested every
    column twice more and drew its plots again (legacy ``DatasetDriftMetric`` and ``DataDriftTable``): a column is
    tested by its ``ValueDrift`` and once by its group's drifted-column count."""
    from evidently.legacy.calculations import data_drift
    from evidently.metrics import column_statistics

    tested: list[str] = []
    original = data_drift.get_one_column_drift
    for module in (data_drift, column_statistics):  # the legacy metrics' and ValueDrift's reference to it
        monkeypatch.setattr(module, "get_one_column_drift",
                            lambda *args, **kwargs: tested.append(kwargs["column_name"]) or original(*args, **kwargs))
    columns = ["monetary", "frequency"]
    result = check_drift(_customers(ROWS, 1), _customers(ROWS, 2, shifted=("monetary",)), columns, DriftConfig())
    assert sorted(tested) == sorted(columns * 2)
    assert list(result.table["column"]) == columns and "monetary" in result.html


def test_a_share_equal_to_the_threshold_does_not_request_retraining():
    reference = _customers(ROWS, 1)
    current = _customers(ROWS, 2, shifted=("monetary",))
    columns = ["monetary", "frequency"]
    result = check_drift(reference, current, columns, DriftConfig(drift_share_threshold=0.5))
    assert result.drift_share == 0.5
    assert not result.retrain
    assert "is not above the threshold 0.5" in result.reason


@pytest.mark.parametrize("frame", ["reference", "current"])
def test_a_missing_column_is_named(frame):
    frames = {"reference": _customers(50, 1), "current": _customers(50, 2)}
    frames[frame] = frames[frame].drop(columns="monetary")
    with pytest.raises(ValueError, match=f"'monetary' missing from the {frame} frame"):
        check_drift(frames["reference"], frames["current"], FEATURE_COLUMNS, DriftConfig())


def test_a_missing_score_column_is_named():
    with pytest.raises(ValueError, match="'uplift' missing from the reference and current frame"):
        check_drift(_customers(50, 1), _customers(50, 2), FEATURE_COLUMNS, DriftConfig(), score_columns=["uplift"])


def test_an_empty_frame_is_refused():
    with pytest.raises(ValueError, match="the current frame is empty"):
        check_drift(_customers(50, 1), _customers(50, 2).iloc[:0], FEATURE_COLUMNS, DriftConfig())


def test_sampling_is_bounded_seeded_and_leaves_inputs_alone():
    reference, current = _customers(3_000, 1), _customers(1_200, 2)
    before = reference.copy()
    config = DriftConfig(max_rows=500, random_state=7)
    first = check_drift(reference, current, ["monetary", "frequency"], config)
    again = check_drift(reference, current, ["monetary", "frequency"], config)
    assert (first.n_reference, first.n_current) == (500, 500)
    pd.testing.assert_frame_equal(first.table, again.table)
    pd.testing.assert_frame_equal(reference, before)
    # 500 reference rows: Evidently switches to p-value tests
    assert set(first.table["stattest"]) == {"ks"}


def test_small_frames_are_not_sampled_up():
    result = check_drift(_customers(300, 1), _customers(200, 2), ["monetary"], DriftConfig(max_rows=1_000))
    assert (result.n_reference, result.n_current) == (300, 200)


def test_a_configured_stattest_and_threshold_reach_every_column():
    config = DriftConfig(stattest="psi", column_threshold=0.2)
    result = check_drift(_customers(ROWS, 1), _customers(ROWS, 2), ["monetary", "frequency"], config)
    assert set(result.table["stattest"]) == {"psi"}
    assert (result.table["threshold"] == 0.2).all()


def test_entirely_missing_and_constant_columns_are_reported_not_raised():
    rng = np.random.default_rng(3)
    n = ROWS
    reference = pd.DataFrame({
        "constant": np.full(n, 4.0),
        "moved_constant": np.zeros(n),
        "lost": rng.normal(size=n),
        "never_filled": np.full(n, np.nan),
        "segment": rng.choice(["a", "b", "c"], n),
    })
    current = reference.assign(moved_constant=1.0, lost=np.nan, segment=rng.choice(["a", "b", "c"], n))
    result = check_drift(reference, current, list(reference.columns), DriftConfig()).table.set_index("column")
    assert not result.loc["constant", "drifted"] and result.loc["constant", "drift_score"] == 0.0
    assert result.loc["moved_constant", "drifted"]
    assert result.loc["lost", "stattest"] == ALL_MISSING and result.loc["lost", "drifted"]
    assert np.isnan(result.loc["lost", "drift_score"])
    assert result.loc["never_filled", "stattest"] == ALL_MISSING and not result.loc["never_filled", "drifted"]
    assert not result.loc["segment", "drifted"] and result.loc["segment", "stattest"] == "jensenshannon"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"drift_share_threshold": 1.5}, "drift_share_threshold"), ({"max_rows": 0}, "max_rows")],
)
def test_config_is_validated(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DriftConfig(**kwargs)


def test_duplicate_and_overlapping_columns_are_refused():
    with pytest.raises(ValueError, match="more than once.*'clv'"):
        check_drift(_customers(50, 1), _customers(50, 2), [*FEATURE_COLUMNS, "clv"], DriftConfig(),
                    score_columns=["clv"])
