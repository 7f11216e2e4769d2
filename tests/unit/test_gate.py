from __future__ import annotations

import numpy as np
import pytest

from ml.evaluation import ROC_AUC, Evaluation, Metric, rmse
from ml.gate import beats, decide, finite_or_nan, rank_key

NON_FINITE = (float("nan"), float("inf"), float("-inf"))


N = 2000
RNG = np.random.default_rng(7)
Y = RNG.integers(0, 2, N)
SIGNAL = Y + RNG.normal(0, 1.0, N)  # ROC AUC ~0.76


def _scores(noise: float, seed: int) -> np.ndarray:
    """Scores of Y with ``noise`` more noise on top of SIGNAL (0: SIGNAL itself)."""
    return SIGNAL + np.random.default_rng(seed).normal(0, noise, N) if noise else SIGNAL


def _decide(candidate, champion=None, baseline=None, margin=0.0, metric=ROC_AUC, y=Y, champion_version="1", alpha=0.05):
    baseline = _scores(3.0, 99) if baseline is None else baseline
    return decide(
        model_name="m", candidate_version="2", metric=metric,
        candidate=Evaluation("candidate", y, candidate, "test rows"), baseline=Evaluation("recency baseline", y, baseline),
        champion_version=None if champion is None and champion_version == "1" else champion_version,
        champion=None if champion is None else Evaluation("champion", y, champion), margin=margin, alpha=alpha,
    )


def test_the_first_version_is_promoted_when_it_clears_the_floor():
    decision = _decide(SIGNAL)
    assert decision.promoted and decision.alias == "champion" and "no champion yet" in decision.reason
    assert decision.baseline == "recency baseline" and decision.baseline_p_value < 0.05 and decision.n_test == N
    assert "above the quality floor" in decision.reason and decision.test_window == "test rows"


def test_a_first_version_below_the_floor_is_not_promoted():
    decision = _decide(_scores(3.0, 1), baseline=SIGNAL)
    assert not decision.promoted and decision.alias == "challenger" and "below the quality floor" in decision.reason
    assert decision.baseline_difference < 0


def test_a_first_version_level_with_the_baseline_is_not_promoted():
    """Beating the baseline by noise is not enough: the gain must be significant."""
    decision = _decide(_scores(0.05, 3), baseline=_scores(0.05, 2))
    assert not decision.promoted and "below the quality floor" in decision.reason
    assert decision.baseline_difference > 0 and decision.baseline_p_value >= 0.05


def test_a_clearly_worse_model_is_refused_and_becomes_challenger():
    decision = _decide(_scores(1.0, 4), champion=SIGNAL)
    assert not decision.promoted and decision.alias == "challenger"
    assert decision.difference < 0 and decision.ci_low < decision.difference < decision.ci_high
    assert decision.p_value > 0.5 and decision.test_method == "delong"
    assert f"{decision.candidate_value:.4f}" in decision.reason and f"{decision.champion_value:.4f}" in decision.reason


def test_a_clearly_better_model_is_promoted_with_its_interval_and_p_value():
    decision = _decide(SIGNAL, champion=_scores(1.0, 5))
    assert decision.promoted and decision.difference > 0 and decision.ci_low > 0 and decision.p_value < 0.05
    assert "significantly" in decision.reason


def test_a_better_model_by_noise_is_refused():
    """A gain smaller than the noise of the test window does not promote, whatever the margin."""
    decision = _decide(_scores(0.05, 3), champion=_scores(0.05, 2), margin=0.0)
    assert not decision.promoted and "not significant" in decision.reason and decision.difference > 0


def test_a_significant_gain_below_the_minimum_improvement_is_refused():
    decision = _decide(SIGNAL, champion=_scores(1.0, 5), margin=0.5)
    assert not decision.promoted and "minimum improvement" in decision.reason


def test_lower_is_better_metrics_compare_the_other_way():
    truth = RNG.gamma(2.0, 10.0, N)
    good, bad, naive = truth + RNG.normal(0, 5, N), truth + RNG.normal(0, 10, N), np.full(N, truth.mean())
    error = Metric("rmse", higher_is_better=False, relative_margin=True, score=rmse)
    assert _decide(good, champion=bad, baseline=naive, metric=error, y=truth, margin=0.01).promoted
    refused = _decide(bad, champion=good, baseline=naive, metric=error, y=truth)
    assert not refused.promoted and refused.test_method == "bootstrap" and refused.difference < 0


def test_a_relative_margin_is_a_share_of_the_champions_value():
    truth = RNG.gamma(2.0, 10.0, N)
    error = Metric("rmse", higher_is_better=False, relative_margin=True, score=rmse)
    decision = _decide(truth + RNG.normal(0, 5, N), champion=truth + RNG.normal(0, 10, N),
                       baseline=np.full(N, truth.mean()), metric=error, y=truth, margin=0.1)
    assert decision.margin == pytest.approx(0.1 * decision.champion_value)


def test_a_champion_that_cannot_be_rebuilt_is_replaced_only_above_the_floor():
    decision = _decide(SIGNAL, champion=None, champion_version="3")
    assert decision.promoted and "cannot be rebuilt" in decision.reason and decision.champion_version == "3"
    assert not _decide(_scores(3.0, 1), champion=None, champion_version="3", baseline=SIGNAL).promoted


def test_negative_margins_and_bad_alphas_are_refused():
    with pytest.raises(ValueError, match="margin"):
        _decide(SIGNAL, margin=-0.1)
    for alpha in (0.0, 1.0, float("nan")):
        with pytest.raises(ValueError, match="alpha"):
            _decide(SIGNAL, alpha=alpha)


def test_decision_tags_are_strings_and_metrics_are_numbers():
    decision = _decide(_scores(1.0, 4), champion=SIGNAL)
    tags = decision.as_tags()
    assert tags["revopt.gate.promoted"] == "False" and tags["revopt.gate.test_method"] == "delong"
    assert all(isinstance(value, str) for value in tags.values())
    metrics = decision.as_metrics()
    assert metrics["gate_p_value"] == decision.p_value and metrics["test_roc_auc"] == decision.candidate_value
    assert all(np.isfinite(value) for value in metrics.values())


@pytest.mark.parametrize("value", NON_FINITE)
@pytest.mark.parametrize("champion", [None, "with"])
def test_a_non_finite_candidate_is_never_promoted(value, champion):
    scores = SIGNAL.copy()
    scores[3] = value
    decision = _decide(scores, champion=None if champion is None else _scores(1.0, 4))
    assert not decision.promoted and decision.alias == "challenger"
    assert "not a finite number" in decision.reason and "never promoted" in decision.reason


@pytest.mark.parametrize("value", NON_FINITE)
def test_a_non_finite_champion_loses_to_a_candidate_above_the_floor(value):
    champion = SIGNAL.copy()
    champion[0] = value
    decision = _decide(_scores(0.5, 8), champion=champion)
    assert decision.promoted and "not a finite number, so the candidate wins" in decision.reason


@pytest.mark.parametrize("margin", [float("nan"), float("inf")])
def test_a_non_finite_margin_is_refused(margin):
    with pytest.raises(ValueError, match="margin"):
        _decide(SIGNAL, margin=margin)


@pytest.mark.parametrize("higher_is_better", [True, False])
def test_selections_treat_non_finite_metrics_as_losses(higher_is_better):
    good, bad = (0.9, 0.1) if higher_is_better else (0.1, 0.9)
    assert beats(good, bad, higher_is_better=higher_is_better) and not beats(bad, good, higher_is_better=higher_is_better)
    assert not beats(good, good, higher_is_better=higher_is_better)  # strictly better only
    for value in (*NON_FINITE, None):
        assert beats(bad, value, higher_is_better=higher_is_better)  # even the worse finite value wins
        assert not beats(value, bad, higher_is_better=higher_is_better)
        assert not beats(value, value, higher_is_better=higher_is_better)
        options = [value, bad, good, value]
        assert min(options, key=lambda v: rank_key(v, higher_is_better=higher_is_better)) == good
        assert sorted(options, key=lambda v: rank_key(v, higher_is_better=higher_is_better))[:2] == [good, bad]


def test_objectives_report_non_finite_values_as_nan_so_optuna_fails_the_trial():
    import math

    import optuna

    assert finite_or_nan(0.25) == 0.25
    assert all(math.isnan(finite_or_nan(value)) for value in NON_FINITE)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="minimize")
    values = iter([float("-inf"), 0.3, float("nan")])
    study.optimize(lambda trial: finite_or_nan(next(values)), n_trials=3)
    assert study.best_value == 0.3  # -inf would have been the "best" deviance
