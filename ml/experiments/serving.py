"""Serving the variants of model experiments in ``scores.customer_scores``.

A *model* experiment on customers names, per variant, which registered version scores which family:
``config = {"models": {"purchase_propensity": "7", "churn": "challenger"}}`` (a version number or an
alias; a family not named is scored by its ``@champion``; the control usually names none). Every
customer assigned to a running model experiment gets the experiment id and variant on its row, and
the model and version columns say which version scored it. A customer in no model experiment is
scored by the champions, as always.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ml.experiments.definitions import Experiment
from ml.registry import current_version

#: the key of a model experiment variant's config naming its versions per family
MODELS_KEY = "models"


@dataclass(frozen=True)
class ModelVariant:
    """The customers of one variant of a running model experiment and the versions that score them
    (family name -> version number, aliases resolved)."""

    experiment_id: str
    variant: str
    customer_ids: np.ndarray
    versions: dict[str, str]


def model_variants(experiments: list[Experiment], assignments: pd.DataFrame, run_date: dt.date,
                   model_names: dict[str, str]) -> list[ModelVariant]:
    """The model experiments on customers active on ``run_date``, one entry per variant with units.

    ``model_names``: family name -> registered model name (to resolve aliases). Raises ValueError
    naming the experiment, variant and family when a config names an unknown family or a version /
    alias the registry does not have."""
    out = []
    for e in experiments:
        if e.kind != "model" or e.unit != "customer" or not e.is_active(run_date):
            continue
        rows = assignments[assignments["experiment_id"] == e.experiment_id]
        for v in e.variants:
            ids = rows.loc[rows["variant"] == v.name, "unit_id"].to_numpy(dtype="int64")
            if not len(ids):
                continue
            wanted = dict(v.config.get(MODELS_KEY, {}))
            unknown = set(wanted) - set(model_names)
            if unknown:
                raise ValueError(f"experiment {e.experiment_id} variant {v.name}: config.models names "
                                 f"{sorted(unknown)}; customer-score families are {sorted(model_names)}")
            out.append(ModelVariant(e.experiment_id, v.name, ids,
                                    {family: resolve_version(e, v.name, model_names[family], str(ref))
                                     for family, ref in wanted.items()}))
    return out


def resolve_version(experiment: Experiment, variant: str, model_name: str, ref: str) -> str:
    """The version number a variant's ``ref`` (a version number or an alias) names now; ValueError naming
    the experiment, variant and model when the alias does not exist."""
    if ref.isdigit():
        return ref
    version = current_version(model_name, ref)
    if version is None:
        raise ValueError(f"experiment {experiment.experiment_id} variant {variant}: {model_name} has no "
                         f"@{ref} alias (config.models names a version number or an alias)")
    return version
