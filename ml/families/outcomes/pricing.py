"""Outcome check of the price recommendations: the units each product sold in the horizon after a
published night of ``scores.price_recommendations``, against the units expected at the price it
actually sold at.

A night R's recommendations are about ``[R, R + h)``, h the nightly ``price_horizon_days`` (the
expected units / revenue / profit cover it). The realised side is the ``product_daily_sales`` extract
(completed order lines, one row per product and day it had a list price):

- **the price actually charged** is the product's mean price paid in the window (revenue / units),
  or its mean list price there when it sold nothing;
- **expected units at that price**: a product whose charged price is strictly closer to the
  recommended price than to the current one was moved to the recommendation and is compared with
  ``expected_units_recommended``; every other one (still at the current price, moved elsewhere, or
  a recommendation equal to the current price) with ``expected_units_current``;
- a published product with no row in the window (no list price there: delisted) is left out.

Metrics (``n`` = products): ``units_ratio`` (total realised / total expected units), ``wape``
(weighted absolute percentage error of units by product: ``sum |realised - expected| / sum
realised``), ``poisson_deviance`` (mean Poisson deviance of daily units per product-day, the expected
units spread evenly over the window's days: the family's test metric), ``baseline_poisson_deviance``
(the same for the family's naive baseline "the current price" made on night R: each product's mean
daily units over the :data:`BASELINE_DAYS` days before R, plus half a unit over them, as the gate's
baseline has), ``deviance_skill`` (``1 - poisson_deviance / baseline_poisson_deviance``: the share
of the baseline's deviance the model removes), ``share_price_followed`` (of the products whose
recommendation moved the price, the share sold closer to it), ``realised_units`` and
``expected_units``.

Which metric decides retraining: ``deviance_skill``. The version's ``test_poisson_deviance`` is a
one-day-ahead forecast made with each test day's realised store traffic, while a published
recommendation is one forecast for the whole horizon, so the realised deviance is larger by
construction and is not compared with it directly. Both the model and the baseline lose that
information alike in the realised window, so their ratio is compared with the same ratio on the
test window (``1 - test_poisson_deviance / baseline_poisson_deviance``, both logged at training).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ml.families.outcomes.common import Outcome, Scored, closer_to_recommended, finite
from ml.families.pricing.backtest import BASELINE_DAYS, poisson_deviance

#: Columns of ``scores.price_recommendations`` the check reads.
RECOMMENDATION_COLUMNS = ("product_id", "current_price", "recommended_price", "expected_units_current",
                          "expected_units_recommended")
#: a price move smaller than this (currency) is no move
_PRICE_TOLERANCE = 0.005


def pricing_outcome(scored: Scored, horizon_days: int, recommendations: pd.DataFrame,
                    sales: pd.DataFrame) -> Outcome:
    """``scored``'s published ``recommendations`` (one row per product, :data:`RECOMMENDATION_COLUMNS`)
    against ``sales`` (the ``product_daily_sales`` extract: product_id, day, units, revenue,
    list_price; it must cover ``[R - BASELINE_DAYS, R + horizon_days)``; or the aggregated
    ``product_sales`` one with ``day`` the period's first day and its ``period_days``: each period
    starting in the horizon counts whole, expected units per day times its days). ``labelled`` has one row
    per product evaluated: product_id, target (realised units), prediction (expected units at the
    price charged), charged_price, followed (the recommended column was used)."""
    start = pd.Timestamp(scored.run_date)
    end = start + pd.Timedelta(days=int(horizon_days))
    days = pd.to_datetime(sales["day"])
    products = recommendations.drop_duplicates("product_id").set_index("product_id")
    ours = sales["product_id"].isin(products.index)
    window = sales[ours & (days >= start) & (days < end)]
    before = sales[ours & (days >= start - pd.Timedelta(days=BASELINE_DAYS)) & (days < start)]

    span = "period_days" if "period_days" in sales.columns else None
    window = window.assign(days=window[span].astype(float) if span else 1.0)
    before = before.assign(days=before[span].astype(float) if span else 1.0)
    sold = window.groupby("product_id").agg(units=("units", "sum"), revenue=("revenue", "sum"),
                                            list_price=("list_price", "mean"), days=("days", "sum"))
    rec = products.reindex(sold.index)
    charged = np.where(sold["units"] > 0, sold["revenue"] / sold["units"].where(sold["units"] > 0, 1),
                       sold["list_price"])
    current, recommended = rec["current_price"].to_numpy(float), rec["recommended_price"].to_numpy(float)
    followed = closer_to_recommended(charged, current, recommended)
    expected = np.where(followed, rec["expected_units_recommended"], rec["expected_units_current"]).astype(float)
    labelled = pd.DataFrame({"product_id": sold.index.to_numpy(), "target": sold["units"].to_numpy(float),
                             "prediction": expected, "charged_price": charged, "followed": followed})

    # daily: the expected units spread evenly over the horizon; the baseline's recent daily rate
    history = before.groupby("product_id").agg(units=("units", "sum"), days=("days", "sum")).reindex(sold.index)
    baseline_rate = (history["units"].fillna(0.0) + 0.5) / history["days"].fillna(0.0).clip(lower=1.0)
    position = sold.index.get_indexer(window["product_id"])
    y = window["units"].to_numpy(float)
    row_days = window["days"].to_numpy(float)
    mu = expected[position] / float(horizon_days) * row_days
    mu_baseline = baseline_rate.to_numpy(float)[position] * row_days

    moved = np.abs(recommended - current) > _PRICE_TOLERANCE
    realised, total_expected = float(labelled["target"].sum()), float(expected.sum())
    metrics: dict[str, float] = {}
    if len(labelled):
        deviance, baseline = poisson_deviance(y, mu), poisson_deviance(y, mu_baseline)
        metrics.update({
            "realised_units": realised, "expected_units": total_expected,
            "units_ratio": realised / total_expected if total_expected > 0 else np.nan,
            "wape": float(np.abs(labelled["target"] - expected).sum()) / realised if realised > 0 else np.nan,
            "poisson_deviance": deviance, "baseline_poisson_deviance": baseline,
            "deviance_skill": 1.0 - deviance / baseline if baseline > 0 else np.nan,
            "share_price_followed": float(followed[moved].mean()) if moved.any() else np.nan,
        })
    return Outcome(scored, int(horizon_days), labelled, finite(metrics), report="regression")
