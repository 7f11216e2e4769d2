from __future__ import annotations

import pytest

from ml.gate import decide


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
