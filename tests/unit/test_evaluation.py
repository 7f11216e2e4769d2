"""The paired comparisons of the gate (ml.evaluation): DeLong agrees with the bootstrap, intervals cover,
rows must be the same, and correlated rows widen the interval when grouped."""

from __future__ import annotations

import numpy as np
import pytest

from ml.evaluation import ROC_AUC, Evaluation, Metric, compare, rmse, roc_auc

RNG = np.random.default_rng(11)
N = 3000
Y = RNG.integers(0, 2, N)
A = Y + RNG.normal(0, 1.0, N)
B = Y + RNG.normal(0, 1.3, N)


def test_delong_agrees_with_the_paired_bootstrap():
    delong = compare(Evaluation("a", Y, A), Evaluation("b", Y, B), ROC_AUC)
    bootstrap = compare(Evaluation("a", Y, A), Evaluation("b", Y, B),
                        Metric("roc_auc", higher_is_better=True, relative_margin=False, score=roc_auc), resamples=2000)
    assert delong.test == "delong" and bootstrap.test == "bootstrap"
    assert delong.gain == pytest.approx(bootstrap.gain) and delong.gain > 0
    assert delong.low == pytest.approx(bootstrap.low, abs=0.006) and delong.high == pytest.approx(bootstrap.high, abs=0.006)
    assert delong.p_value == pytest.approx(bootstrap.p_value, abs=0.01)


def test_the_comparison_is_antisymmetric():
    forward = compare(Evaluation("a", Y, A), Evaluation("b", Y, B), ROC_AUC)
    backward = compare(Evaluation("b", Y, B), Evaluation("a", Y, A), ROC_AUC)
    assert backward.gain == pytest.approx(-forward.gain)
    assert backward.low == pytest.approx(-forward.high) and backward.p_value == pytest.approx(1 - forward.p_value)


def test_the_interval_covers_the_true_difference_about_as_often_as_it_says():
    """Over repeated test windows drawn from the same two models, the 95 % DeLong interval of the AUC
    difference covers the difference measured on a very large window about 95 % of the time."""
    def draw(n, rng):
        y = rng.integers(0, 2, n)
        return y, y + rng.normal(0, 1.0, n), y + rng.normal(0, 1.3, n)

    y, a, b = draw(400_000, np.random.default_rng(0))
    truth = roc_auc(y, a) - roc_auc(y, b)
    rng = np.random.default_rng(1)
    covered = [(c.low <= truth <= c.high) for c in (compare(Evaluation("a", y, a), Evaluation("b", y, b), ROC_AUC)
                                                     for y, a, b in (draw(1000, rng) for _ in range(200)))]
    assert 0.90 <= np.mean(covered) <= 0.99


def test_models_scored_on_other_rows_cannot_be_compared():
    with pytest.raises(ValueError, match="same test rows"):
        compare(Evaluation("a", Y, A), Evaluation("b", Y[::-1], B), ROC_AUC)
    with pytest.raises(ValueError, match="predictions for"):
        Evaluation("a", Y, A[:-1])


def test_grouped_rows_are_resampled_together():
    """Rows that move together (one shock per group) carry less evidence than their count: the grouped
    bootstrap's interval is wider than the row bootstrap's."""
    groups = np.repeat(np.arange(30), 100)
    truth = RNG.gamma(2.0, 10.0, len(groups))
    shock = np.random.default_rng(3).normal(0, 6, 30)[groups]
    good, bad = truth + shock + RNG.normal(0, 5, len(groups)), truth + RNG.normal(0, 6, len(groups))
    metric = Metric("rmse", higher_is_better=False, relative_margin=True, score=rmse)
    rows = compare(Evaluation("a", truth, good), Evaluation("b", truth, bad), metric)
    grouped = compare(Evaluation("a", truth, good, groups=groups), Evaluation("b", truth, bad), metric)
    assert grouped.gain == rows.gain
    assert (grouped.high - grouped.low) > 2 * (rows.high - rows.low)


def test_a_grouped_resample_holds_each_picked_groups_rows_in_the_order_picked():
    """The grouped bootstrap equals the plain reading of it: each resample draws groups with replacement and
    concatenates their rows (unequal, shuffled groups); the same interval and p-value to the last bit."""
    import math

    from ml.evaluation import _bootstrap, safe_score

    rng = np.random.default_rng(11)
    groups = rng.integers(0, 50, 900) * 7 + 3  # ids neither contiguous nor sorted, sizes unequal
    truth = rng.gamma(2.0, 10.0, len(groups))
    good, bad = truth + rng.normal(0, 4, len(groups)), truth + rng.normal(0, 5, len(groups))
    metric = Metric("rmse", higher_is_better=False, relative_margin=True, score=rmse)
    candidate, reference = Evaluation("a", truth, good, groups=groups), Evaluation("b", truth, bad)
    got = _bootstrap(metric, candidate, reference, -1.0, 5, 200)

    draws = np.random.default_rng(5)
    _, codes = np.unique(groups, return_inverse=True)
    units = [np.flatnonzero(codes == g) for g in range(codes.max() + 1)]
    gains = []
    for _ in range(200):
        rows = np.concatenate([units[g] for g in draws.integers(0, len(units), len(units))])
        gains.append(-(safe_score(rmse, truth[rows], good[rows]) - safe_score(rmse, truth[rows], bad[rows])))
    tail = (1 - 0.95) / 2  # the 95 % interval, computed as the module does (0.025000000000000022)
    low, high = np.quantile(gains, [tail, 1 - tail])
    p_value = (1 + int((np.array(gains) <= 0).sum())) / (1 + len(gains))
    assert got[1:] == (float(low), float(high), float(p_value)) and math.isfinite(got[0])


@pytest.mark.parametrize("which", ["ndcg", "send_time_log_loss", "ndcg_grouped", "clv_rmse", "clv_mae"])
def test_a_metric_read_from_per_row_terms_bootstraps_as_rescoring_does(which):
    """``Metric.terms`` (NDCG: a mean over rows; send time's log loss: a ratio of sums) gives the paired bootstrap
    what rescoring each resample gives: the same resamples, so the same gain, p-value and interval, up to the order
    of the sums (grouped: each group's terms summed first)."""
    import dataclasses

    from ml.evaluation import _bootstrap
    from ml.families.recommend.backtest import NDCG
    from ml.families.send_time import FAMILY as SEND_TIME

    rng = np.random.default_rng(4)
    n = 3000
    if which.startswith("clv"):
        from ml.families.clv import GATE_METRICS

        metric, groups = GATE_METRICS[which.split("_")[1]], None
        truth = rng.gamma(0.5, 80.0, n)
        first, second = truth + rng.normal(0, 30, n), truth * 0.8 + rng.normal(0, 20, n)
    elif which.startswith("ndcg"):
        metric, groups = NDCG, (rng.integers(0, 300, n) * 3 + 1 if which == "ndcg_grouped" else None)
        truth = np.where(rng.random((n, 4)) < 0.5, rng.integers(0, 40, (n, 4)), -1).astype(float)
        first, second = (np.where(rng.random((n, 10)) < 0.9, rng.integers(0, 40, (n, 10)), -1).astype(float)
                         for _ in range(2))
    else:
        metric, groups = SEND_TIME.metric, rng.integers(0, 400, n)
        sends = rng.integers(0, 4, n)
        truth = np.column_stack([sends, rng.binomial(sends, 0.2)]).astype(float)
        first, second = rng.uniform(0.05, 0.4, n), rng.uniform(0.05, 0.4, n)
    assert metric.terms is not None
    candidate, reference = Evaluation("a", truth, first, groups=groups), Evaluation("b", truth, second)
    fast = _bootstrap(metric, candidate, reference, 1.0, 3, 300)
    slow = _bootstrap(dataclasses.replace(metric, terms=None), candidate, reference, 1.0, 3, 300)
    assert fast[0] == slow[0] and fast[3] == slow[3] and all(np.isfinite(fast))
    assert fast[1:3] == pytest.approx(slow[1:3], rel=1e-12, abs=1e-15)
    numerator, denominator = metric.terms(truth, first)
    finish = metric.finish or float
    assert finish(numerator.sum() / denominator.sum()) == pytest.approx(metric.score(truth, first), rel=1e-15)


def test_a_ratio_metric_undefined_on_a_resample_counts_as_no_gain():
    """A resample whose rows have no trials (send time: no sends) has no value: its gain is left out, as when
    rescoring (the score raises ValueError there)."""
    import dataclasses

    from ml.evaluation import _bootstrap
    from ml.families.send_time import FAMILY as SEND_TIME

    truth = np.array([[0.0, 0.0], [0.0, 0.0], [3.0, 1.0]])  # one row in three has sends
    candidate, reference = Evaluation("a", truth, np.full(3, 0.3)), Evaluation("b", truth, np.full(3, 0.2))
    fast = _bootstrap(SEND_TIME.metric, candidate, reference, -1.0, 7, 200)
    slow = _bootstrap(dataclasses.replace(SEND_TIME.metric, terms=None), candidate, reference, -1.0, 7, 200)
    assert fast[3] == slow[3] and fast[1:3] == pytest.approx(slow[1:3], rel=1e-12)


def test_a_non_finite_prediction_makes_the_value_nan():
    broken = A.copy()
    broken[5] = np.nan
    assert np.isnan(Evaluation("a", Y, broken).value(ROC_AUC))
    comparison = compare(Evaluation("a", Y, broken), Evaluation("b", Y, B), ROC_AUC)
    assert np.isnan(comparison.p_value) and not comparison.significant(0.05)
