"""The extract step: the sources as of a run date, in its two parts (:data:`revopt.platform.extract.EXTRACT_PARTS`,
side by side in the DAGs), and the datasets built from them in the events store.

The ``tables`` part writes the PostgreSQL datasets; the ``events`` part the event datasets, the event features
computed in ClickHouse (:data:`EVENT_BUILDERS`, and training's at its past cutoffs) and the conversion paths
(:data:`PATH_DATASETS`), reading the customers, orders and offers it joins to the events from PostgreSQL itself
(:class:`revopt.platform.extract.SourceTables`), so neither waits for the other. At a million customers one
extract task took 191 s, the PostgreSQL reads 53 s of it (docs/scale.md, "Session 21").
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

import pandas as pd

from features.attribution import conversion_paths
from features.customer import EVENT_FEATURES_AT_CUTOFFS, customer_sampler, event_features_in_store
from ml import training_cutoffs
from ml.families import FAMILIES
from ml.params import RunParams
from revopt.platform.extract import DATASETS, ExtractFiles, SourceTables, extract_sources
from revopt.platform.resources import Resources

logger = logging.getLogger(__name__)

#: Datasets computed inside the events store (ClickHouse) by a features builder, one row per customer.
EVENT_BUILDERS = {"customer_event_features": event_features_in_store}
#: Datasets built from the extracted orders and the events store once the sources are read: each order's
#: conversion path (:func:`features.attribution.conversion_paths`).
PATH_DATASETS = ("conversion_paths",)
#: Every dataset revopt can extract: the source tables, the event datasets built in the events store and
#: the conversion paths.
ALL_DATASETS = (*DATASETS, *EVENT_BUILDERS, *PATH_DATASETS)


def extract_datasets(resources: Resources, run_date: dt.date, lookback_days: int,
                     datasets: tuple[str, ...] = ALL_DATASETS, path_lookback_days: int = 30,
                     params: RunParams | None = None, part: str | None = None) -> dict[str, str]:
    """``datasets`` as of ``run_date`` over ``lookback_days``: source tables, the event datasets of :data:`EVENT_BUILDERS`
    and training's at its cutoffs (from ``params``: :mod:`ml.training_cutoffs`), both computed in the events store, and
    the conversion paths (:data:`PATH_DATASETS`, touches ``path_lookback_days`` before each order) of the orders.
    ``engagement_by_hour`` (training's send-time evidence) is read for ``params``' ``training_sample_customers`` alone.
    ``part``: one of :data:`revopt.platform.extract.EXTRACT_PARTS` alone (the DAGs' mapped ``extract`` task), or None for both."""
    derived = {name: build for name, build in EVENT_BUILDERS.items() if name in datasets}
    paths_wanted = [name for name in PATH_DATASETS if name in datasets]
    sources = tuple(name for name in datasets if name not in derived and name not in (*PATH_DATASETS, EVENT_FEATURES_AT_CUTOFFS))
    if paths_wanted and "orders" not in sources and part is None:
        sources = (*sources, "orders")
    paths = extract_sources(resources.settings, run_date, lookback_days, datasets=sources, derived=derived,
                            engagement_customers=params and customer_sampler(params.training_sample_customers, params.seed),
                            part=part)
    if part == "tables" or not (paths_wanted or EVENT_FEATURES_AT_CUTOFFS in datasets):
        return paths
    # the orders, offers and customers the events are joined to: the tables part's files when it ran here
    tables = (ExtractFiles(paths) if part is None
              else SourceTables(resources.settings, run_date, lookback_days,
                                [name for name in ("customers", "orders", "offers")
                                 if name in datasets or (name == "orders" and paths_wanted)]))
    orders = tables["orders"]  # read once: the cutoffs and the conversion paths both join it
    if EVENT_FEATURES_AT_CUTOFFS in datasets:
        frames = {"orders": orders, **({"offers": tables["offers"]} if "offers" in tables else {})}
        paths.update(training_cutoffs.extract_at_cutoffs(resources, run_date, params, frames, datasets, FAMILIES))
    if paths_wanted:
        customers = tables["customers"]["customer_id"] if "customers" in tables else None
        paths["conversion_paths"] = str(_extract_paths(resources, run_date, lookback_days, path_lookback_days,
                                                       orders, customers))
    return paths


def _extract_paths(resources: Resources, run_date: dt.date, lookback_days: int, path_lookback_days: int,
                   orders: pd.DataFrame, customers: pd.Series | None) -> Path:
    """The ``conversion_paths`` dataset, joined in the events store (none without clickstream: every order
    is a path without touches), next to the other extracts."""
    run_ts = pd.Timestamp(run_date, tz="UTC")
    frame = conversion_paths(resources.events, orders, run_ts - pd.Timedelta(days=lookback_days), run_ts,
                             path_lookback_days, customers)
    path = resources.settings.run_dir(run_date) / "extract" / "conversion_paths.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(path, index=False)
    logger.info("extracted conversion_paths as of %s: %d touches of %d journeys (%d converting) -> %s", run_date,
                int((frame["position"] >= 0).sum()), frame["journey_id"].nunique(),
                frame.loc[frame["converted"], "journey_id"].nunique(), path)
    return path

