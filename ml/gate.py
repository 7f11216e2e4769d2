"""Champion / challenger promotion gate.

A newly registered version becomes ``champion`` only if it beats the current champion on the
same holdout by at least a configured margin; otherwise it is aliased ``challenger``. The first
version of a model, or one whose champion cannot score the holdout (e.g. the feature set
changed), is promoted and the reason says so.

Note the comparison is conservative: the champion may have been refitted on data whose labels
overlap the current holdout window, which can only flatter the champion.
"""

from __future__ import annotations

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
    """Promote the candidate iff it beats the champion's holdout ``metric`` by at least ``margin``."""
    if margin < 0:
        raise ValueError(f"the promotion margin must be >= 0, got {margin}")
    if champion_version is None:
        promoted, reason = True, "no champion yet"
    elif champion_value is None:
        promoted, reason = True, f"champion v{champion_version} could not be evaluated on this holdout"
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
