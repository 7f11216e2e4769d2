"""The recommender's configuration (what tuning chooses) and its business rules (what the run asks)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from ml.params import RunParams

WEIGHTINGS = ("log", "binary")
#: the predict params of the registered model (MLflow pyfunc params: scalars only)
PREDICT_PARAMS: tuple[str, ...] = ("as_of", "recs_k", "recs_exclude_bought_days", "recs_exclude_categories",
                                   "recs_max_per_category", "recs_exclude_out_of_stock")
#: Popularity (the gate's baseline, and the cold start) counts the distinct buyers of each product over
#: this many days before the cutoff: what sells now, not three seasons ago (on UCI Online Retail the last
#: 90 days beat all history by 10 % NDCG@10).
POPULARITY_DAYS = 90
#: A segment (country x acquisition channel, then country) recommends its own popular products only
#: with at least this many buyers in the popularity window; smaller ones back off to the next level.
MIN_SEGMENT_BUYERS = 20


@dataclass(frozen=True)
class RecsConfig:
    """One implicit ALS configuration (Hu, Koren & Volinsky 2008, as the ``implicit`` library fits it).

    Each customer x product cell gets a strength ``n`` = orders of the product in the history plus
    ``view_weight`` x its product views; its confidence is ``alpha x log(1 + n)`` (``weighting='log'``)
    or ``alpha`` (``'binary'``); empty cells have confidence 1 and preference 0. ``factors`` latent
    dimensions, L2 ``regularization``, ``iterations`` alternating sweeps from a ``random_state`` start.
    """

    factors: int = 256
    regularization: float = 10.0
    alpha: float = 1.0
    iterations: int = 15
    weighting: str = "log"
    view_weight: float = 0.1
    random_state: int = 0

    def __post_init__(self) -> None:
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {self.weighting!r}")
        if int(self.factors) < 1 or int(self.iterations) < 1:
            raise ValueError(f"factors and iterations must be >= 1, got {self.factors} and {self.iterations}")
        if not (self.regularization > 0 and self.alpha > 0 and self.view_weight >= 0):
            raise ValueError(f"regularization and alpha must be > 0 and view_weight >= 0, got {self.regularization}, "
                             f"{self.alpha} and {self.view_weight}")


@dataclass(frozen=True)
class Rules:
    """The business rules every published list obeys (``recs_*`` run params): ``k`` products per
    customer; none bought by the customer in the last ``exclude_bought_days`` days (0: reorders may
    be recommended); none of ``exclude_categories``; at most ``max_per_category`` from one category;
    with ``exclude_out_of_stock``, none whose latest inventory has nothing on hand (unknown stock: no
    effect)."""

    k: int = 10
    exclude_bought_days: int = 30
    exclude_categories: tuple[str, ...] = field(default_factory=tuple)
    max_per_category: int = 4
    exclude_out_of_stock: bool = True

    def __post_init__(self) -> None:
        if int(self.k) < 1 or int(self.max_per_category) < 1 or int(self.exclude_bought_days) < 0:
            raise ValueError(f"need recs_k >= 1, recs_max_per_category >= 1 and recs_exclude_bought_days >= 0, got "
                             f"{self.k}, {self.max_per_category} and {self.exclude_bought_days}")
        object.__setattr__(self, "exclude_categories", tuple(str(c) for c in self.exclude_categories))


def rules_from_params(params: RunParams) -> Rules:
    return Rules(k=params.recs_k, exclude_bought_days=params.recs_exclude_bought_days,
                 exclude_categories=tuple(params.recs_exclude_categories),
                 max_per_category=params.recs_max_per_category, exclude_out_of_stock=params.recs_exclude_out_of_stock)


def pyfunc_params(rules: Rules, as_of: str) -> dict[str, Any]:
    """:class:`Rules` and the cutoff as MLflow pyfunc params (the excluded categories as a JSON list)."""
    return {"as_of": as_of, "recs_k": int(rules.k), "recs_exclude_bought_days": int(rules.exclude_bought_days),
            "recs_exclude_categories": json.dumps(list(rules.exclude_categories)),
            "recs_max_per_category": int(rules.max_per_category),
            "recs_exclude_out_of_stock": bool(rules.exclude_out_of_stock)}


def settings_from_params(params: Mapping[str, Any] | None, rules: Rules, as_of: str) -> tuple[Rules, pd.Timestamp]:
    """The rules and cutoff ``params`` ask for, the logged ones where they say nothing."""
    given = {key: value for key, value in (params or {}).items() if value is not None}
    unknown = sorted(set(given) - set(PREDICT_PARAMS))
    if unknown:
        raise ValueError(f"unknown recommendation params {unknown}; known: {', '.join(PREDICT_PARAMS)}")
    categories = given.get("recs_exclude_categories", rules.exclude_categories)
    if isinstance(categories, str):
        categories = json.loads(categories)
    chosen = Rules(k=int(given.get("recs_k", rules.k)),
                   exclude_bought_days=int(given.get("recs_exclude_bought_days", rules.exclude_bought_days)),
                   exclude_categories=tuple(categories),
                   max_per_category=int(given.get("recs_max_per_category", rules.max_per_category)),
                   exclude_out_of_stock=bool(given.get("recs_exclude_out_of_stock", rules.exclude_out_of_stock)))
    return chosen, cutoff(given.get("as_of", as_of))


def cutoff(as_of: Any) -> pd.Timestamp:
    """A run date (or ISO date / instant, read in UTC) as the zone-naive midnight history stops at."""
    stamp = pd.Timestamp(as_of)
    if stamp.tzinfo is not None:
        stamp = stamp.tz_convert("UTC").tz_localize(None)
    return stamp.floor("D")
