from __future__ import annotations

import pytest

from ml.gate import beats, decide, finite_or_nan, rank_key

NON_FINITE = (float("nan"), float("inf"), float("-inf"))


def _decide(candidate: float, champion: float | None, margin: float = 0.01, higher_is_better: bool = True):
    return decide(
        model_name="m", candidate_version="2", candidate_value=candidate,
        champion_version=None if champion is None else "1", champion_value=champion,
        metric="roc_auc", margin=margin, higher_is_better=higher_is_better,
    )


def test_the_first_version_is_promoted():
    decision = _decide(0.7, None)
    assert decision.promoted and decision.alias == "champion" and "no champion" in decision.reason


def test_a_worse_model_is_refused_and_becomes_challenger():
    decision = _decide(0.78, 0.80)
    assert not decision.promoted
    assert decision.alias == "challenger"
    assert "0.7800" in decision.reason and "0.8000" in decision.reason


def test_a_better_model_inside_the_margin_is_refused():
    assert not _decide(0.805, 0.80, margin=0.01).promoted


def test_a_model_beating_the_margin_is_promoted():
    assert _decide(0.815, 0.80, margin=0.01).promoted


def test_lower_is_better_metrics_compare_the_other_way():
    assert _decide(0.30, 0.35, margin=0.01, higher_is_better=False).promoted
    assert not _decide(0.36, 0.35, margin=0.0, higher_is_better=False).promoted


def test_negative_margins_are_refused():
    with pytest.raises(ValueError, match="margin"):
        _decide(0.8, 0.7, margin=-0.1)


def test_decision_tags_are_strings():
    tags = _decide(0.78, 0.80).as_tags()
    assert tags["revopt.gate.promoted"] == "False"
    assert all(isinstance(value, str) for value in tags.values())


@pytest.mark.parametrize("value", NON_FINITE)
@pytest.mark.parametrize("higher_is_better", [True, False])
@pytest.mark.parametrize("champion", [None, 0.8])
def test_a_non_finite_candidate_is_never_promoted(value, higher_is_better, champion):
    decision = _decide(value, champion, margin=0.0, higher_is_better=higher_is_better)
    assert not decision.promoted and decision.alias == "challenger"
    assert "not a finite number" in decision.reason and "never promoted" in decision.reason


@pytest.mark.parametrize("value", NON_FINITE)
@pytest.mark.parametrize("higher_is_better", [True, False])
def test_a_non_finite_champion_loses_to_a_finite_candidate(value, higher_is_better):
    decision = _decide(0.5, value, margin=0.01, higher_is_better=higher_is_better)
    assert decision.promoted
    assert "champion's value is not a finite number" in decision.reason and "0.5000" in decision.reason


@pytest.mark.parametrize("margin", [float("nan"), float("inf")])
def test_a_non_finite_margin_is_refused(margin):
    with pytest.raises(ValueError, match="margin"):
        _decide(0.8, 0.7, margin=margin)


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
