"""The cutoffs a training run builds customer features at, and the training extract's event features at
every one of them, computed in ClickHouse.

A training run builds customer features at many past cutoffs: each customer family's fit and test cutoffs
for every backtest origin (propensity, churn: :meth:`ml.families.binary.BinaryFamily.training_cutoffs`;
CLV: :meth:`ml.families.clv.ClvFamily.training_cutoffs`, with the label window the store's history allows
and the run date), and the uplift family's campaign days. Each family says which cutoffs it uses, from the
run params (and, for CLV and uplift, the orders and offers); :func:`training_cutoffs` is their union, and
the families build their training sets at exactly those cutoffs, so the two cannot drift apart (a cutoff
the extract missed raises, :func:`features.customer.event_features_at`).

:func:`extract_at_cutoffs` then computes the engagement columns at all of them in one
ClickHouse query (:func:`features.customer.event_features_at_cutoffs_sql`): one row per customer and
cutoff leaves the database instead of one per customer and active day (44M rows at a million customers,
docs/scale.md), and the features are identical to the pandas ones from those daily rows
(tests/e2e/test_event_features.py).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path

import pandas as pd

from features.customer import EVENT_FEATURES_AT_CUTOFFS, event_features_at_cutoffs_in_store
from ml.family import Family, Frames
from ml.params import RunParams
from revopt.platform.resources import Resources

logger = logging.getLogger(__name__)


def training_cutoffs(families: Iterable[Family], frames: Frames, run_date: dt.date,
                     params: RunParams) -> list[pd.Timestamp]:
    """Every cutoff the ``families`` that read :data:`~features.customer.EVENT_FEATURES_AT_CUTOFFS` may
    build customer features at when training for ``run_date`` (``frames``: the training extract's
    ``orders`` and, when extracted, ``offers``), sorted, each once."""
    cutoffs = {cutoff for family in families if EVENT_FEATURES_AT_CUTOFFS in family.training_datasets
               for cutoff in family.training_cutoffs(frames, run_date, params)}
    return sorted(cutoffs)


def extract_at_cutoffs(resources: Resources, run_date: dt.date, params: RunParams | None,
                       tables: Mapping[str, pd.DataFrame], datasets: Collection[str],
                       families: Iterable[Family]) -> dict[str, str]:
    """``{EVENT_FEATURES_AT_CUTOFFS: path}`` when ``datasets`` ask for it, else ``{}``: the event features
    at every :func:`training_cutoffs` of the training run's ``params``, from the events of the training
    extract's window (``params.training_extract_days``), each cutoff over the ``lookback_days`` before it
    (as tonight's features read them), written next to the extract's other datasets (``tables``: the
    extract's ``orders`` and ``offers``, from their files or read beside them)."""
    if EVENT_FEATURES_AT_CUTOFFS not in datasets:
        return {}
    if params is None:
        raise ValueError(f"{EVENT_FEATURES_AT_CUTOFFS} is computed at the training run's cutoffs: pass its params")
    frames = {"orders": tables["orders"][["order_ts", "status"]]}
    if "offers" in tables:
        frames["offers"] = tables["offers"]
    cutoffs = training_cutoffs(families, frames, run_date, params)
    run_ts = pd.Timestamp(run_date, tz="UTC")
    since_ts = run_ts - pd.Timedelta(days=params.training_extract_days)
    frame = event_features_at_cutoffs_in_store(resources.events, since_ts, run_ts, cutoffs, params.lookback_days)
    path = Path(resources.settings.run_dir(run_date)) / "extract" / f"{EVENT_FEATURES_AT_CUTOFFS}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(path, index=False)
    logger.info("extracted %s as of %s: %d rows at %d cutoffs (%s) -> %s", EVENT_FEATURES_AT_CUTOFFS, run_date,
                len(frame), len(cutoffs), ", ".join(frame.attrs["cutoffs"]), path)
    return {EVENT_FEATURES_AT_CUTOFFS: str(path)}
