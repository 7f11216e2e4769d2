"""Tonight's attribution: every model on the conversion paths of the attribution window, checked for
conservation, as the rows of ``scores.attribution`` (per model, channel and campaign) and
``scores.order_attribution`` (per order, model, channel and campaign).

Every model is fitted on all the extract's paths, converting and not (the Markov chain and the excess
model learn from the traffic that led nowhere); the orders of the ``attribution_window_days`` before the
run date are the conversions published. Spend is the window's
``shop.marketing_spend`` per channel and campaign, so ``roas = revenue / spend`` compares like with like;
a (channel, campaign) that spent but was credited nothing gets a row with zero conversions, so spend
totals are complete too. Campaign '' means none (a channel-level spend row, or touches without a
campaign); the published tables hold it as NULL.

Conservation (:func:`ml.attribution.models.check_conservation`) runs on every model, every night: a
model whose credits do not sum to the window's conversions and revenue raises, and nothing is published.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.attribution import split_paths
from ml.attribution import excess, models

logger = logging.getLogger(__name__)

#: the models run every night, by the name published in ``scores.attribution.model``
MODEL_NAMES = ("first_touch", "last_non_direct_touch", "linear", "time_decay", "position_based", "markov", "shapley",
               "excess_exposure")
#: the data-driven ones (fitted on the paths, the traffic that led nowhere included)
DATA_DRIVEN = ("markov", "shapley", "excess_exposure")
#: what the store recorded on the order (``shop.orders.channel``): the last touch as its platform saw it;
#: needs no clickstream
RECORDED = "recorded"

NO_CAMPAIGN = ""


@dataclass(frozen=True)
class AttributionSettings:
    """The run's attribution settings (from :class:`ml.params.RunParams`)."""

    window_days: int = 28
    half_life_days: float = 7.0
    markov_order: int = 1


def settings_of(params) -> AttributionSettings:
    """The attribution settings of a run's :class:`ml.params.RunParams`."""
    return AttributionSettings(params.attribution_window_days, params.attribution_half_life_days, params.markov_order)


def model_runners(settings: AttributionSettings) -> dict[str, Callable[[pd.DataFrame, pd.DataFrame], pd.DataFrame]]:
    """Each model of :data:`MODEL_NAMES` as ``(journeys, outcomes) -> credits``, with the run's settings."""
    return {
        "first_touch": models.first_touch,
        "last_non_direct_touch": models.last_non_direct_touch,
        "linear": models.linear,
        "time_decay": lambda j, o: models.time_decay(j, o, half_life_days=settings.half_life_days),
        "position_based": models.position_based,
        "markov": lambda j, o: models.markov_chain(j, o, order=settings.markov_order),
        "shapley": models.shapley,
        "excess_exposure": excess.excess_exposure,
    }


def credit_all(paths: pd.DataFrame, settings: AttributionSettings, names: tuple[str, ...] = MODEL_NAMES) -> pd.DataFrame:
    """Every model of ``names`` fitted on all the paths (converting and not: the Markov chain and the excess
    model learn from the whole history) and its credits (``model``, ``journey_id`` = order id, ``channel``,
    ``campaign``, ``credit``, ``revenue_credit``) for every converted journey, each checked for conservation."""
    return pd.concat([credits for _, credits in credit_each(paths, settings, names)], ignore_index=True)


def credit_each(paths: pd.DataFrame, settings: AttributionSettings,
                names: tuple[str, ...] = MODEL_NAMES) -> Iterator[tuple[str, pd.DataFrame]]:
    """:func:`credit_all` one model at a time (name, credits), each checked for conservation: at a million
    customers every model's credits of the whole history together are several GB (docs/scale.md)."""
    journeys, outcomes = split_paths(paths)
    runners = model_runners(settings)
    with models.sharing_preparation():  # every model reads the same history: it is prepared once
        for name in names:
            credits = runners[name](journeys, outcomes)
            models.check_conservation(credits, outcomes)
            yield name, credits
            del credits  # not held while the next model runs


def window_orders(paths: pd.DataFrame, run_date: dt.date, window_days: int) -> pd.Series:
    """The ids of the orders placed in the ``window_days`` before ``run_date``."""
    run_ts = pd.Timestamp(run_date, tz="UTC")
    converted = paths[paths["converted"]].drop_duplicates("journey_id")
    stamp = pd.to_datetime(converted["conversion_ts"], utc=True)
    return converted.loc[((stamp >= run_ts - pd.Timedelta(days=window_days)) & (stamp < run_ts)).to_numpy(),
                         "journey_id"]


def in_window(credits: pd.DataFrame, paths: pd.DataFrame, run_date: dt.date, window_days: int,
              orders: pd.Series | None = None) -> pd.DataFrame:
    """The credits of the orders placed in the ``window_days`` before ``run_date`` (``orders``: those orders'
    ids, :func:`window_orders`, when the caller has them already)."""
    inside = window_orders(paths, run_date, window_days) if orders is None else orders
    return credits[credits["journey_id"].isin(inside)].reset_index(drop=True)


def credits_in_window(paths: pd.DataFrame, run_date: dt.date, settings: AttributionSettings,
                      history_model: str | None = None,
                      names: tuple[str, ...] = MODEL_NAMES) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Every model's credits for the orders of the window, one model at a time (:func:`credit_each`), and
    ``history_model``'s credits of the whole history (None when it is not one of ``names``)."""
    window = window_orders(paths, run_date, settings.window_days)
    kept, history = [], None
    for name, credits in credit_each(paths, settings, names):
        kept.append(in_window(credits, paths, run_date, settings.window_days, window))
        if name == history_model:
            history = credits.reset_index(drop=True)
        del credits
    return pd.concat(kept, ignore_index=True), history


def attribute(paths: pd.DataFrame, run_date: dt.date, settings: AttributionSettings,
              names: tuple[str, ...] = MODEL_NAMES) -> pd.DataFrame:
    """Every model's credits for the orders of the window (``settings.window_days``; :func:`credits_in_window`)."""
    credits, _ = credits_in_window(paths, run_date, settings, names=names)
    logger.info("attribution for %s: %d orders in the %d days before, %d models conserve", run_date,
                credits["journey_id"].nunique(), settings.window_days, len(names))
    return credits


def recorded_credits(orders: pd.DataFrame, run_date: dt.date, window_days: int) -> pd.DataFrame:
    """The :data:`RECORDED` model: each non-cancelled order of the window to the channel the store recorded."""
    run_ts = pd.Timestamp(run_date, tz="UTC")
    kept = orders[(orders["status"].astype(str) != "cancelled") & (orders["order_ts"] < run_ts)
                  & (orders["order_ts"] >= run_ts - pd.Timedelta(days=window_days))]
    return pd.DataFrame({"model": RECORDED, "journey_id": kept["order_id"].astype("int64").to_numpy(),
                         "channel": kept["channel"].astype(str).to_numpy(), "campaign": None, "credit": 1.0,
                         "revenue_credit": kept["order_value"].to_numpy(float)})


def attribution_rows(credits: pd.DataFrame, spend: pd.DataFrame, run_date: dt.date, window_days: int) -> pd.DataFrame:
    """``scores.attribution`` rows: per model, channel and campaign the credited conversions and revenue,
    the window's spend and ROAS (NULL without spend)."""
    run = pd.Timestamp(run_date)
    window = spend[(spend["day"] >= run - pd.Timedelta(days=window_days)) & (spend["day"] < run)]
    campaign = window["campaign"] if "campaign" in window else pd.Series(NO_CAMPAIGN, index=window.index)
    spent = (window.assign(campaign=campaign.fillna(NO_CAMPAIGN).astype(str))
             .groupby(["channel", "campaign"])["spend"].sum())
    credited = (credits.assign(campaign=credits["campaign"].fillna(NO_CAMPAIGN).astype(str))
                .groupby(["model", "channel", "campaign"])
                .agg(conversions=("credit", "sum"), revenue=("revenue_credit", "sum")))
    rows = []
    for model in credits["model"].unique():
        mine = credited.loc[model]
        index = mine.index.union(spent.index)
        frame = mine.reindex(index, fill_value=0.0).assign(spend=spent.reindex(index, fill_value=0.0))
        rows.append(frame.reset_index().assign(model=model))
    table = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(
        columns=["model", "channel", "campaign", "conversions", "revenue", "spend"])
    # float64 whatever the window held (no spend at all left an object column of Python zeros, whose
    # division raised ZeroDivisionError instead of giving NULL: a store without marketing spend, like UCI)
    table["spend"] = pd.to_numeric(table["spend"]).astype("float64")
    table["roas"] = table["revenue"].astype("float64") / table["spend"].where(table["spend"] > 0)
    table.insert(0, "run_date", run_date)
    table["window_days"] = window_days
    return table[["run_date", "model", "channel", "campaign", "conversions", "revenue", "spend", "roas",
                  "window_days"]].sort_values(["model", "channel", "campaign"]).reset_index(drop=True)


def order_rows(credits: pd.DataFrame, run_date: dt.date) -> pd.DataFrame:
    """``scores.order_attribution`` rows: per order, model, channel and campaign its credit (share of the
    order) and credited revenue."""
    grouped = (credits.assign(campaign=credits["campaign"].fillna(NO_CAMPAIGN).astype(str))
               .groupby(["journey_id", "model", "channel", "campaign"], sort=True)
               .agg(credit=("credit", "sum"), revenue_credit=("revenue_credit", "sum")).reset_index()
               .rename(columns={"journey_id": "order_id"}))
    grouped.insert(0, "run_date", run_date)
    return grouped


def channel_shares(credits: pd.DataFrame) -> pd.DataFrame:
    """Each model's share of the conversions per channel (model x channel, rows sum to 1)."""
    table = credits.pivot_table(index="model", columns="channel", values="credit", aggfunc="sum", fill_value=0.0)
    return table.div(table.sum(axis=1), axis=0)


def credits_by_order(credits: pd.DataFrame, model: str) -> pd.DataFrame:
    """One model's credits per order and channel (order_id, channel, campaign, credit), for the media model's
    attributed target and the campaign and acquisition analyses."""
    if model not in set(credits["model"]):
        raise ValueError(f"attribution model {model!r} was not run; known: {', '.join(sorted(set(credits['model'])))}")
    mine = credits[credits["model"] == model]
    return pd.DataFrame({"order_id": mine["journey_id"].to_numpy(np.int64), "channel": mine["channel"].to_numpy(),
                         "campaign": mine["campaign"].to_numpy(), "credit": mine["credit"].to_numpy(float),
                         "revenue_credit": mine["revenue_credit"].to_numpy(float)})


def history_credits(paths: pd.DataFrame, orders: pd.DataFrame, run_date: dt.date, model: str,
                    settings: AttributionSettings) -> pd.DataFrame:
    """``model``'s credits (:func:`credit_all`) for every order of the extract before ``run_date``, not only
    tonight's window: what the media model's attributed target, the acquisition economics and the campaign
    analytics read. :data:`RECORDED`, or paths without any touch (no clickstream), give the recorded channel."""
    if model == RECORDED or not (paths["position"] >= 0).any():
        return recorded_credits(orders, run_date, (pd.Timestamp(run_date) - pd.Timestamp("1970-01-01")).days)
    return credit_all(paths, settings, (model,))


def attributed_orders(orders: pd.DataFrame, credits: pd.DataFrame) -> pd.DataFrame:
    """``orders`` with each credited order split over its channels (``credits``: :func:`history_credits`):
    one row per (order, channel) with ``channel`` the credited channel and ``credit`` its share (the order's
    other columns repeated). Orders without credits (cancelled) keep the channel the store recorded, with
    credit 1."""
    orders = orders.assign(credit=1.0)
    split = credits.groupby(["journey_id", "channel"], sort=True)["credit"].sum().reset_index()
    split = split.rename(columns={"journey_id": "order_id"})
    credited = orders.drop(columns=["channel", "credit"]).merge(split, on="order_id", how="inner")
    rest = orders[~orders["order_id"].isin(split["order_id"])]
    return pd.concat([credited[orders.columns], rest], ignore_index=True).sort_values(["order_id", "channel"],
                                                                                      ignore_index=True)
