"""The uplift family's data: every historical offer (sent or held out) with the customer's features as
of its campaign and what the customer did in the horizon after it.

A **campaign** is a run of offers whose send days are at most :data:`CAMPAIGN_GAP_DAYS` apart (a store
that sends a campaign over a few days keeps it whole). Each offer's features are the customer
features (:func:`features.customer.features_at`) as of midnight UTC of its campaign's first send day,
from the ``lookback_days`` before it, so they mean what tonight's features mean and see nothing of the
outcome. The outcome is the horizon ``[sent_at, sent_at + horizon)``: ``ordered`` (a completed order in
it) and ``revenue`` (its completed orders' value, before the offer's discount: the first order of a
treated customer in the horizon is grossed up by ``1 / (1 - discount)``, the coupon it redeemed).
Only offers whose horizon ended before the run date are known.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.customer import FEATURE_COLUMNS, features_at

#: Offers sent at most this many days after the previous one belong to the same campaign.
CAMPAIGN_GAP_DAYS = 7
#: The columns an offer adds to the customer features: the discount and one indicator per offer type.
OFFER_FEATURE = "discount"


@dataclass(frozen=True)
class OfferSet:
    """Offers, one row each (``X``: customer features, indexed by ``offer_id``), with ``treated``
    (bool), ``ordered`` (0/1), ``revenue``, the ``offer_type``, ``discount``, ``customer_id`` and
    ``campaign`` (its first send day, ISO) of each."""

    X: pd.DataFrame
    treated: np.ndarray
    ordered: np.ndarray
    revenue: np.ndarray
    offer_type: np.ndarray
    discount: np.ndarray
    customer_id: np.ndarray
    campaign: np.ndarray

    def __len__(self) -> int:
        return len(self.X)

    def subset(self, mask: np.ndarray) -> OfferSet:
        mask = np.asarray(mask, dtype=bool)
        return OfferSet(self.X[mask], self.treated[mask], self.ordered[mask], self.revenue[mask],
                        self.offer_type[mask], self.discount[mask], self.customer_id[mask], self.campaign[mask])

    @property
    def y(self) -> np.ndarray:
        """The 2-D outcome the metric reads: (treated, ordered) per row."""
        return np.column_stack([self.treated.astype("float64"), self.ordered.astype("float64")])


def known_offers(offers: pd.DataFrame | None, run_date: dt.date, horizon_days: int) -> pd.DataFrame:
    """The offers whose horizon ended before ``run_date`` (their outcome is known), with their campaign."""
    if offers is None or not len(offers):
        return pd.DataFrame(columns=["offer_id", "customer_id", "sent_at", "offer_type", "discount", "treated",
                                     "campaign"])
    run_ts = pd.Timestamp(run_date, tz="UTC")
    known = offers[offers["sent_at"] + pd.Timedelta(days=horizon_days) <= run_ts]
    return known.assign(campaign=campaigns_of(known["sent_at"])).sort_values(["sent_at", "offer_id"], kind="stable")


def campaigns_of(sent_at: pd.Series) -> np.ndarray:
    """Each offer's campaign: the first send day (ISO) of its run of send days at most
    :data:`CAMPAIGN_GAP_DAYS` apart."""
    if not len(sent_at):
        return np.empty(0, dtype=object)
    day = pd.to_datetime(sent_at, utc=True).dt.tz_localize(None).dt.normalize()
    days = np.sort(day.unique())
    starts = np.r_[True, np.diff(days) > np.timedelta64(CAMPAIGN_GAP_DAYS, "D")]
    first = days[np.maximum.accumulate(np.where(starts, np.arange(len(days)), 0))]
    lookup = pd.Series(first, index=days)
    return np.asarray([d.date().isoformat() for d in pd.to_datetime(lookup.reindex(day).to_numpy())], dtype=object)


def campaign_cutoff(campaign: str) -> pd.Timestamp:
    """The cutoff a campaign's offers take their features at: midnight UTC of its first send day."""
    return pd.Timestamp(campaign, tz="UTC")


def training_cutoffs(offers: pd.DataFrame | None, run_date: dt.date, horizon_days: int) -> list[pd.Timestamp]:
    """Every cutoff :func:`offer_set` of the known offers (:func:`known_offers`) builds features at: one per
    campaign."""
    return [campaign_cutoff(campaign) for campaign in sorted(set(known_offers(offers, run_date, horizon_days)["campaign"]))]


def offer_set(frames, offers: pd.DataFrame, horizon_days: int, lookback_days: int | None) -> OfferSet:
    """The :class:`OfferSet` of ``offers`` (with their ``campaign``, :func:`known_offers`): features as
    of each campaign's first day, outcomes in each offer's horizon."""
    parts = []
    for campaign, group in offers.groupby("campaign", sort=True):
        cutoff = campaign_cutoff(campaign)
        features = features_at(frames, cutoff, lookback_days)
        parts.append(features.reindex(group["customer_id"].to_numpy()).set_axis(group["offer_id"].to_numpy()))
    X = (pd.concat(parts) if parts else pd.DataFrame(columns=list(FEATURE_COLUMNS))).rename_axis("offer_id")
    ordered, revenue = outcomes(offers, frames["orders"], horizon_days)
    return OfferSet(X=X.astype("float64"), treated=offers["treated"].to_numpy(dtype=bool), ordered=ordered,
                    revenue=revenue, offer_type=offers["offer_type"].to_numpy(dtype=object),
                    discount=offers["discount"].to_numpy(dtype="float64"),
                    customer_id=offers["customer_id"].to_numpy(dtype="int64"),
                    campaign=offers["campaign"].to_numpy(dtype=object))


def outcomes(offers: pd.DataFrame, orders: pd.DataFrame, horizon_days: int) -> tuple[np.ndarray, np.ndarray]:
    """Per offer (in ``offers``' order): 1 if the customer completed an order in its horizon, and the
    completed orders' value there, before the discount of the treated offer's coupon (module docstring)."""
    completed = orders.loc[orders["status"] == "completed", ["customer_id", "order_ts", "order_value"]]
    rows = offers[["offer_id", "customer_id", "sent_at", "discount", "treated"]].assign(row=np.arange(len(offers)))
    pairs = rows.merge(completed, on="customer_id")
    pairs = pairs[(pairs["order_ts"] >= pairs["sent_at"])
                  & (pairs["order_ts"] < pairs["sent_at"] + pd.Timedelta(days=horizon_days))]
    pairs = pairs.sort_values(["row", "order_ts"], kind="stable")
    first = ~pairs["row"].duplicated()
    gross = np.where(first & pairs["treated"], 1.0 / (1.0 - pairs["discount"].clip(upper=0.99)), 1.0)
    value = (pairs["order_value"] * gross).groupby(pairs["row"]).sum()
    revenue = value.reindex(np.arange(len(offers)), fill_value=0.0).to_numpy(dtype="float64")
    ordered = np.zeros(len(offers), dtype="int8")
    ordered[pairs["row"].unique()] = 1
    return ordered, revenue
