"""Champion / challenger promotion gate.

A newly registered version becomes ``champion`` only if it beats the current champion on the
same holdout by at least a configured margin; otherwise it is aliased ``challenger``. The first
version of a model, or one whose champion cannot score the holdout (e.g. the feature set
changed), is promoted and the reason says so.

Note the comparison is conservative: the champion may have been refitted on data whose labels
overlap the current holdout window, which can only flatter the champion.

A non-finite metric (NaN, +/-inf) is a model that could not be scored, never a good score: it
loses every comparison here and in every selection that uses :func:`beats` / :func:`rank_key`
(tuning loops keeping their default config, the CLV candidates, calibration). A candidate with a
non-finite value is never promoted; a champion whose value is non-finite loses to any finite
candidate. Plain ``<`` would get this wrong: every comparison with NaN is False, so
``winner = a if a < b else b`` picks ``b`` whenever ``b`` is NaN.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

CHALLENGER = "challenger"


@dataclass(frozen=True)
class GateDecision:
    model_name: str
    candidate_version: str
    champion_version: str | None
    metric: str
    higher_is_better: bool
    candidate_value: float
    champion_value: float | None
    margin: float
    promoted: bool
    reason: str

    @property
    def alias(self) -> str:
        return "champion" if self.promoted else CHALLENGER

    def as_tags(self) -> dict[str, str]:
        return {f"revopt.gate.{key}": "" if value is None else str(value) for key, value in asdict(self).items()}


def decide(
    *,
    model_name: str,
    candidate_version: str,
    candidate_value: float,
    champion_version: str | None,
    champion_value: float | None,
    metric: str,
    margin: float,
    higher_is_better: bool = True,
) -> GateDecision:
    """Promote the candidate iff it beats the champion's holdout ``metric`` by at least ``margin``;
    a non-finite candidate value is never promoted, a non-finite champion value loses."""
    if not (is_finite(margin) and margin >= 0):
        raise ValueError(f"the promotion margin must be a finite number >= 0, got {margin}")
    if not is_finite(candidate_value):
        promoted, reason = False, (f"{metric} of the candidate is {candidate_value}: a model whose holdout metric is "
                                   "not a finite number is never promoted")
    elif champion_version is None:
        promoted, reason = True, "no champion yet"
    elif champion_value is None:
        promoted, reason = True, f"champion v{champion_version} could not be evaluated on this holdout"
    elif not is_finite(champion_value):
        promoted, reason = True, (f"{metric} {candidate_value:.4f} vs champion v{champion_version} {champion_value}: "
                                  "the champion's value is not a finite number, so the candidate wins")
    else:
        gain = candidate_value - champion_value if higher_is_better else champion_value - candidate_value
        promoted = gain >= margin
        comparison = "beats" if promoted else "does not beat"
        reason = (
            f"{metric} {candidate_value:.4f} vs champion v{champion_version} {champion_value:.4f}: "
            f"{comparison} it by the margin {margin:g} (gain {gain:+.4f})"
        )
    return GateDecision(
        model_name=model_name,
        candidate_version=str(candidate_version),
        champion_version=None if champion_version is None else str(champion_version),
        metric=metric,
        higher_is_better=higher_is_better,
        candidate_value=float(candidate_value),
        champion_value=None if champion_value is None else float(champion_value),
        margin=float(margin),
        promoted=promoted,
        reason=reason,
    )


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
