"""The customer features built from the order history as of a cutoff (:func:`features.customer.customer_features`
joins them to the RFM and engagement columns): the rhythm of a customer's orders (:func:`order_rhythm`) and the mix
of product categories they buy (:func:`category_mix`). Each uses only the rows it is given, which the caller has cut
to before the cutoff (and to the history window); inputs are never mutated."""

from __future__ import annotations

import numpy as np
import pandas as pd

from revopt.platform.events import utc

#: The columns :func:`order_rhythm` gives (with their "no rhythm yet" values filled by ``customer_features``).
ORDER_RHYTHM_COLUMNS: tuple[str, ...] = (
    "orders_180d",
    "spend_180d",
    "mean_gap_days",
    "gap_spread",
    "gap_trend",
    "overdue_ratio",
    "cancel_share",
    "discount_share",
    "orders_same_season_last_year",
    "spend_same_season_last_year",
    "order_hour_regularity",
)
#: The columns :func:`category_mix` gives.
CATEGORY_MIX_COLUMNS: tuple[str, ...] = (
    "categories_bought",
    "category_entropy",
    "top_category_share",
    "category_repeat_rate",
)


def category_mix(completed: pd.DataFrame, order_categories: pd.DataFrame | None) -> pd.DataFrame:
    """Per customer with a completed order in ``completed`` (orders already cut to the cutoff and the
    history window) that has categorised spend:

    - ``categories_bought``: distinct product categories bought;
    - ``category_entropy``: Shannon entropy (nats) of the customer's spend shares over categories,
      0 when everything is in one category, ln(k) for an even spread over k;
    - ``top_category_share``: the share of spend in the customer's biggest category;
    - ``category_repeat_rate``: how habitual what the customer buys is: for each of the customer's
      categories, the share of the *other* customers who bought it that bought it again (in two or
      more orders), weighted by the customer's spend in it (0 when nobody else bought it).

    Spend is the completed lines' value per category, negative values counted as 0. An empty frame
    when ``order_categories`` is None."""
    if order_categories is None or completed.empty:
        return pd.DataFrame({column: pd.Series(dtype="float64") for column in CATEGORY_MIX_COLUMNS})
    lines = order_categories.merge(completed[["order_id", "customer_id"]], on="order_id", how="inner")
    by_pair = lines.groupby(["customer_id", "category"], observed=True).agg(
        value=("value", "sum"), orders=("order_id", "nunique"))
    by_pair["value"] = by_pair["value"].clip(lower=0.0)
    by_pair["repeat"] = (by_pair["orders"] >= 2).astype("float64")
    category = by_pair.index.get_level_values("category")
    buyers = by_pair.groupby(level="category", observed=True)["repeat"].agg(["size", "sum"])
    others = buyers["size"].reindex(category).to_numpy() - 1.0
    other_repeats = buyers["sum"].reindex(category).to_numpy() - by_pair["repeat"].to_numpy()
    by_pair["category_rate"] = np.divide(other_repeats, others, out=np.zeros(len(by_pair)), where=others > 0)

    customer = by_pair.index.get_level_values("customer_id")
    spend = by_pair["value"].groupby(customer).transform("sum")
    share = (by_pair["value"] / spend.where(spend > 0)).fillna(0.0)
    # an even split when a customer's categorised spend is all zero (free items, 0-value lines)
    n = by_pair["value"].groupby(customer).transform("size")
    share = share.where(spend > 0, 1.0 / n)
    weighted = pd.DataFrame({"entropy": -share * np.log(share.where(share > 0, 1.0)),
                             "rate": share * by_pair["category_rate"], "share": share})
    by = weighted.groupby(customer)
    return pd.DataFrame({
        "categories_bought": by.size(), "category_entropy": by["entropy"].sum(),
        "top_category_share": by["share"].max(), "category_repeat_rate": by["rate"].sum(),
    }).rename_axis("customer_id")


def _by_customer_and_time(orders: pd.DataFrame) -> pd.DataFrame:
    """``orders.sort_values(["customer_id", "order_ts"], kind="stable")``, the same rows in the same order, by numpy's
    stable ``lexsort`` of the keys' integers: pandas factorises both keys first. At a million customers
    ``order_rhythm`` took 9.5 s a cutoff with pandas' sort, 5.2 s with this one (docs/scale.md, "Session 27").
    Keys of other types, or with a missing value, take pandas' sort."""
    customer, ts = orders["customer_id"], orders["order_ts"]
    if (not pd.api.types.is_integer_dtype(customer) or not pd.api.types.is_datetime64_any_dtype(ts)
            or customer.isna().any() or ts.isna().any()):
        return orders.sort_values(["customer_id", "order_ts"], kind="stable")
    stamps = pd.DatetimeIndex(ts).asi8  # any unit or zone: the instants' order
    return orders.take(np.lexsort((stamps, customer.to_numpy(dtype="int64"))))


#: The "same season last year" window: the quarter that starts a year before the cutoff (what the
#: customer did in the weeks ahead, last year).
SEASON_DAYS = 91


def order_rhythm(orders: pd.DataFrame, cutoff: pd.Timestamp) -> pd.DataFrame:
    """Per customer with an order before ``cutoff`` (``orders`` already cut to the history window):

    - ``orders_180d`` / ``spend_180d``: completed orders and spend in the last 180 days;
    - ``mean_gap_days``, ``gap_spread`` (standard deviation / mean of the gaps), ``gap_trend`` (last
      gap / mean gap): the days between consecutive completed orders (2+ orders; 3+ for spread and
      trend); ``overdue_ratio``: days since the last order / mean gap (> 1: later than usual);
    - ``cancel_share``: cancelled orders / all orders; ``discount_share``: spend bought on a discount /
      spend (``discounted_value``, when the extract has it);
    - ``orders_same_season_last_year`` / ``spend_same_season_last_year``: completed orders and spend
      in the :data:`SEASON_DAYS` starting a year before the cutoff (seasonality);
    - ``order_hour_regularity``: 1 when every completed order is placed at the same hour of day (UTC),
      towards 0 when hours spread round the clock (mean resultant length of the hours on a circle).
    NaN where a value needs more orders than the customer has."""
    cutoff = utc(cutoff)
    completed = _by_customer_and_time(orders[orders["status"] == "completed"])
    ts = completed["order_ts"]
    age = (cutoff - ts).dt.total_seconds() / 86_400.0
    value = completed["order_value"].astype("float64")
    year_ago = cutoff - pd.Timedelta(days=365)
    in_season = (ts >= year_ago) & (ts < year_ago + pd.Timedelta(days=SEASON_DAYS))
    hour = (ts.dt.hour + ts.dt.minute / 60.0) * (2 * np.pi / 24.0)
    gap = ts.groupby(completed["customer_id"]).diff().dt.total_seconds() / 86_400.0
    frame = pd.DataFrame({
        "customer_id": completed["customer_id"].to_numpy(), "in_180": (age <= 180).to_numpy(),
        "value_180": value.where(age <= 180, 0.0).to_numpy(), "in_season": in_season.to_numpy(),
        "value_season": value.where(in_season, 0.0).to_numpy(), "cos": np.cos(hour).to_numpy(),
        "sin": np.sin(hour).to_numpy(), "gap": gap.to_numpy(), "age": age.to_numpy(),
        "discounted": (completed["discounted_value"].astype("float64") if "discounted_value" in completed
                       else pd.Series(0.0, index=completed.index)).to_numpy(),
        "value": value.to_numpy(),
    })
    by = frame.groupby("customer_id")
    out = pd.DataFrame({
        "orders_180d": by["in_180"].sum(), "spend_180d": by["value_180"].sum(),
        "orders_same_season_last_year": by["in_season"].sum(), "spend_same_season_last_year": by["value_season"].sum(),
        "mean_gap_days": by["gap"].mean(), "last_gap": by["gap"].last(), "gap_std": by["gap"].std(),
        "recency": by["age"].min(),
        "order_hour_regularity": np.hypot(by["cos"].mean(), by["sin"].mean()),
    })
    spend = by["value"].sum()
    out["discount_share"] = by["discounted"].sum() / spend.where(spend > 0)
    mean_gap = out["mean_gap_days"].where(out["mean_gap_days"] > 0)
    out["gap_spread"] = out["gap_std"] / mean_gap
    out["gap_trend"] = (out["last_gap"] / mean_gap).where(out["gap_std"].notna())
    out["overdue_ratio"] = out["recency"] / mean_gap
    # every order counts here, so a customer whose orders were all cancelled still has a share
    cancelled = (orders["status"] == "cancelled").astype("float64").groupby(orders["customer_id"]).mean()
    out = out.reindex(out.index.union(cancelled.index))
    out["cancel_share"] = cancelled.reindex(out.index)
    return out.drop(columns=["last_gap", "gap_std", "recency"])
