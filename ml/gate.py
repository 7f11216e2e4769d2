"""Champion / challenger promotion gate, on the test window.

A newly registered version becomes ``champion`` only when, on the same test rows (the test window no
selection step has seen, :mod:`ml.evaluation`):

1. **quality floor**: it beats its family's naive baseline (recency for propensity and churn, last
   period's spend for CLV, ...) significantly: one-sided p-value of the paired comparison below
   ``alpha``. This holds for the first version too: a model that cannot beat the baseline is never
   promoted, and without a champion the nightly run publishes nothing for the family and says why;
2. **champion**: it beats the current champion refitted from its spec on the same training data, by
   at least ``min_improvement`` (the run's ``promotion_margin``: in metric units, or a share of the
   champion's value for errors and deviances) *and* significantly (p < ``alpha``). A champion this
   version cannot rebuild (other features, another kind) cannot be compared: the candidate is
   promoted on the floor alone, and the reason says so.

Otherwise it is aliased ``challenger``. The decision, both comparisons (difference, interval,
p-value, test) and the test window are the :class:`GateDecision`, logged as MLflow tags and metrics
and recorded in ``scores.model_promotions``.

A non-finite metric (NaN, +/-inf) is a model that could not be scored, never a good score: it
loses every comparison here and in every selection that uses :func:`beats` / :func:`rank_key`
(tuning loops keeping their default config, the CLV candidates, calibration). A candidate with a
non-finite value is never promoted; a champion whose value is non-finite loses to any candidate above
the floor. Plain ``<`` would get this wrong: every comparison with NaN is False, so
``winner = a if a < b else b`` picks ``b`` whenever ``b`` is NaN.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from ml.evaluation import Evaluation, Metric, compare

CHALLENGER = "challenger"
#: Default significance level of both comparisons (a run param, ``promotion_alpha``).
ALPHA = 0.05


@dataclass(frozen=True)
class GateDecision:
    model_name: str
    candidate_version: str
    champion_version: str | None
    metric: str
    higher_is_better: bool
    candidate_value: float
    champion_value: float | None
    margin: float  # the minimum improvement over the champion, in metric units
    promoted: bool
    reason: str
    test_window: str = ""
    n_test: int | None = None
    alpha: float | None = None
    difference: float | None = None  # vs the champion, in the metric's good direction
    ci_low: float | None = None
    ci_high: float | None = None
    p_value: float | None = None
    test_method: str | None = None
    baseline: str | None = None
    baseline_value: float | None = None
    baseline_difference: float | None = None
    baseline_p_value: float | None = None

    @property
    def alias(self) -> str:
        return "champion" if self.promoted else CHALLENGER

    def as_tags(self) -> dict[str, str]:
        return {f"revopt.gate.{key}": "" if value is None else str(value) for key, value in asdict(self).items()}

    def as_metrics(self) -> dict[str, float]:
        """The numbers of the decision, as MLflow metrics (``gate_*``; finite values only)."""
        values = {"test_" + self.metric: self.candidate_value, "gate_champion_value": self.champion_value,
                  "gate_difference": self.difference, "gate_ci_low": self.ci_low, "gate_ci_high": self.ci_high,
                  "gate_p_value": self.p_value, "gate_baseline_value": self.baseline_value,
                  "gate_baseline_difference": self.baseline_difference, "gate_baseline_p_value": self.baseline_p_value,
                  "gate_promoted": float(self.promoted)}
        return {key: float(value) for key, value in values.items() if is_finite(value)}


def decide(
    *,
    model_name: str,
    candidate_version: str,
    metric: Metric,
    candidate: Evaluation,
    baseline: Evaluation,
    champion_version: str | None,
    champion: Evaluation | None,
    margin: float,
    alpha: float = ALPHA,
    seed: int = 0,
) -> GateDecision:
    """The promotion decision for ``candidate`` (see the module docstring). ``champion`` is the
    champion's spec refitted and scored on the candidate's test rows (None: it cannot be rebuilt);
    ``margin`` is the run's ``promotion_margin`` (a share of the champion's value when
    ``metric.relative_margin``)."""
    if not (is_finite(margin) and margin >= 0):
        raise ValueError(f"the promotion margin must be a finite number >= 0, got {margin}")
    if not (is_finite(alpha) and 0 < alpha < 1):
        raise ValueError(f"the promotion alpha must be a number in (0, 1), got {alpha}")
    name = metric.name
    candidate_value = candidate.value(metric)
    record = {"model_name": model_name, "candidate_version": str(candidate_version),
              "champion_version": None if champion_version is None else str(champion_version), "metric": name,
              "higher_is_better": metric.higher_is_better, "candidate_value": float(candidate_value),
              "test_window": candidate.window, "n_test": candidate.n, "alpha": float(alpha)}
    if not is_finite(candidate_value):
        return GateDecision(**record, champion_value=None, margin=float(margin), promoted=False,
                            reason=f"{name} of the candidate on the test window is {candidate_value}: a model whose "
                                   "test metric is not a finite number is never promoted")
    floor = compare(candidate, baseline, metric, seed=seed)
    record.update(baseline=baseline.name, baseline_value=_number(floor.reference_value),
                  baseline_difference=_number(floor.gain), baseline_p_value=_number(floor.p_value))
    if not floor.significant(alpha):
        return GateDecision(**record, champion_value=None, margin=float(margin), promoted=False,
                            reason=f"below the quality floor: it does not beat the naive baseline significantly "
                                   f"(alpha {alpha:g}) on the test window; {floor.describe(name)}")
    above_floor = f"above the quality floor ({floor.describe(name)})"
    if champion_version is None:
        return GateDecision(**record, champion_value=None, margin=float(margin), promoted=True,
                            reason=f"no champion yet; {above_floor}")
    if champion is None:
        return GateDecision(**record, champion_value=None, margin=float(margin), promoted=True,
                            reason=f"champion v{champion_version} cannot be rebuilt by this version (other features "
                                   f"or kind), so it cannot be compared on this test window; {above_floor}")
    champion_value = champion.value(metric)
    if metric.relative_margin:
        margin = margin * abs(champion_value) if is_finite(champion_value) else 0.0
    if not is_finite(champion_value):
        return GateDecision(**record, champion_value=None, margin=float(margin), promoted=True,
                            reason=f"champion v{champion_version} refitted on this data scores {champion_value} on the "
                                   f"test window: not a finite number, so the candidate wins; {above_floor}")
    versus = compare(candidate, champion, metric, seed=seed)
    big_enough = versus.gain >= margin
    promoted = big_enough and versus.significant(alpha)
    if promoted:
        verdict = f"beats the champion by at least {margin:.4g}, significantly (alpha {alpha:g})"
    elif not big_enough:
        verdict = f"does not beat the champion by the minimum improvement {margin:.4g}"
    else:
        verdict = f"its gain over the champion is not significant (alpha {alpha:g})"
    return GateDecision(
        **record, champion_value=float(champion_value), margin=float(margin), promoted=promoted,
        difference=_number(versus.gain), ci_low=_number(versus.low), ci_high=_number(versus.high),
        p_value=_number(versus.p_value), test_method=versus.test,
        reason=f"{verdict}: {versus.describe(name).replace(champion.name, f'champion v{champion_version}', 1)}",
    )


def _number(value: float) -> float | None:
    return float(value) if is_finite(value) else None


def is_finite(value: float | None) -> bool:
    """True for a real, finite number: not None, NaN or +/-inf."""
    try:
        return value is not None and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def beats(candidate: float | None, incumbent: float | None, *, higher_is_better: bool) -> bool:
    """Whether ``candidate`` is strictly better than ``incumbent``. A non-finite value loses to any
    finite one, and two non-finite values tie (nobody beats anybody)."""
    if not is_finite(candidate):
        return False
    if not is_finite(incumbent):
        return True
    return candidate > incumbent if higher_is_better else candidate < incumbent


def rank_key(value: float | None, *, higher_is_better: bool) -> float:
    """A sort key, best first in ascending order, that puts every non-finite value last
    (``min(options, key=...)`` then never picks a NaN while a finite option exists)."""
    if not is_finite(value):
        return math.inf
    return -float(value) if higher_is_better else float(value)


def finite_or_nan(value: float) -> float:
    """An Optuna objective's return value: NaN for anything non-finite, which Optuna records as a
    failed trial (never the best), where an infinite value would count as a real score."""
    return float(value) if is_finite(value) else math.nan
