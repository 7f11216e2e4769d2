"""Acquisition economics per channel (and campaign) and cohort month, and a CAC forecast per paid channel.

Everything is pure (pandas / numpy / scipy in, pandas out; no database, MLflow or Airflow); inputs are never
mutated and only orders stamped before the run date (UTC midnight) count.

**Inputs.** ``orders``: order_id, customer_id, order_ts (UTC), status, order_value (and, for
``basis="margin"``, order_margin: the order's gross margin, e.g. the sum over its lines of (unit price paid
- product cost) x quantity). Only ``completed`` orders count. ``credits``: one attribution model's per-order
credits (:mod:`ml.attribution.models`: journey_id == order_id, channel, campaign, credit summing to 1 per
order). ``spend``: day, channel, campaign ('' or None: none), spend. ``clv``: customer_id, clv (tonight's
expected spend over the next ``clv_horizon_days`` from the CLV champion).

**Channel economics** (:func:`channel_economics`), one row per cohort month and channel (and campaign):

- a customer's *first order* is their earliest completed order (ties by order_id); the *cohort month* is
  its calendar month (UTC). Cohorts are the ``months`` calendar months up to the one holding the day
  before the run date (the latest is partial);
- ``new_customers``: the first orders' credits to the channel, fractional. Summed over channels they equal
  the cohort's first orders; :func:`channel_economics` raises ``ValueError`` otherwise (a first order the
  credits do not cover, or credits that do not sum to 1);
- ``spend``: the channel's (campaign's) spend in the cohort month; ``cac = spend / new_customers``.
  CAC is NULL, and ``cac_note`` says why, when the month has no spend (``"unpaid"``: organic, direct,
  ``(none)``, or a paused paid channel whose adstock still brings customers: a CAC of 0 would read as
  free customers) or no new customers (``"no new customers"``: spend that acquired nobody is a row too);
- ``realised_value_per_customer``: the credit-weighted mean over the cohort's customers of their completed
  orders' value (revenue, or margin: below) from the first order (included) up to the run date, however
  long each has been a customer; ``predicted_clv``: the credit-weighted mean of
  tonight's CLV over the customers that have one (NULL when none has); ``ltv`` = realised + predicted;
  ``ltv_cac = ltv / cac``;
- ``payback_days``: the first day t (0 = the first order's day) on which the cohort's mean cumulative value
  per customer reaches the CAC, NULL while it has not (``payback_reached`` False; NA when CAC is NULL).
  Customers of one cohort month have been watched for different times, so the curve is the mean
  cumulative function of recurrent-event analysis (Nelson, "Graphical analysis of system repair data",
  1988): ``V(t) = sum_{u <= t} (credit-weighted value on day u of the customers watched for >= u days) /
  (credit weight of those customers)``. The curve ends at the oldest customer's age.

``basis="revenue"`` (default) counts order revenue: orders carry no margin, so payback is reached earlier
than a margin-based one would say. ``basis="margin"`` counts ``order_margin`` instead, and converts the
predicted CLV (a revenue figure) to margin at the row's realised margin rate (credit-weighted margin over
revenue), so ``ltv`` stays in one unit.

**CAC forecast** (:func:`cac_forecast`), per paid channel of the media model for the next ``horizon_days``:
planned daily spend ``s`` (the mean daily spend over the history's last ``recent_days``, or the value given in
``planned_spend``, e.g. the budget's recommended spend); expected channel-driven orders ``horizon x
M h(s) / AOV`` from the media model's steady-state response curve ``M s^S / (s^S + k^S)`` (revenue per day)
and the average order value the model values orders at (so with ``outcome="orders"`` this is the fitted
order count); times the channel's share of new customers among its credited orders over the last
``window_days`` (:func:`new_customer_shares`), ``q = new / credited``; ``cac = horizon s / (orders x q)``.
The intervals (default 80 %) are simulated: each draw takes one of the model's bootstrap refits (the point
curve when the fit has none) and a share from its Jeffreys posterior ``Beta(new + 1/2, credited - new + 1/2)``;
bands are quantiles of the draws, widened to contain the point. The expected orders' and new customers' bands
are those of the expectation; the CAC's is a **prediction** interval for the CAC that will be realised: each
draw's new customers are a Poisson count around its expectation, and the band is planned spend over theirs,
swapped (NULL upper bound when it reaches 0). Spend that departs from the plan is not in it. It assumes the channel's incremental orders
are new customers in the same share as its credited orders. A channel the model did not fit, without planned
spend, without credited orders in the share window, or with no expected new customers still gets a row,
with NULL numbers and the reason (as the budget allocation holds such channels).

:func:`cac_backtest` compares forecasts made at an origin T with the CAC realised in ``[T, T + horizon)``.

Why hand-written: it is group-by arithmetic over fractional credits; the one estimator (the mean cumulative
function) is a cumulative sum of ratios. ``ml.attribution`` sits below ``ml.families`` (test_architecture), so
the media fit is read through its documented tables (``MediaFit.channels`` / ``replicates``) and the media
history through its column names, not by importing the budget family.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from scipy import stats

if TYPE_CHECKING:
    from ml.families.budget.estimator import MediaFit

logger = logging.getLogger(__name__)

ECONOMICS_COLUMNS = ("cohort_month", "channel", "campaign", "new_customers", "spend", "cac", "cac_note",
                     "realised_value_per_customer", "predicted_clv", "clv_horizon_days", "ltv", "ltv_cac",
                     "payback_days", "payback_reached", "basis")
FORECAST_COLUMNS = ("channel", "horizon_days", "spend_source", "planned_daily_spend", "planned_spend",
                    "expected_orders", "expected_orders_low", "expected_orders_high", "new_customer_share",
                    "new_customer_share_low", "new_customer_share_high", "expected_new_customers",
                    "expected_new_customers_low", "expected_new_customers_high", "cac", "cac_low", "cac_high",
                    "interval", "reason")
BACKTEST_COLUMNS = ("origin", "channel", "horizon_days", "cac", "cac_low", "cac_high", "realised_spend",
                    "realised_new_customers", "realised_cac", "ape", "inside_interval")
#: media_history's column prefixes (features.media, which this layer may not import)
_SPEND, _REVENUE, _ORDERS = "spend_", "revenue_", "orders_"
_DAY = pd.Timedelta(days=1)
CONSERVATION_TOLERANCE = 1e-9


# --- channel economics ------------------------------------------------------------------------------


def channel_economics(orders: pd.DataFrame, credits: pd.DataFrame, spend: pd.DataFrame, clv: pd.DataFrame | None,
                      run_date: dt.date, *, by_campaign: bool = False, months: int = 12,
                      clv_horizon_days: int | None = None, basis: str = "revenue") -> pd.DataFrame:
    """One row per (cohort_month, channel[, campaign]) with :data:`ECONOMICS_COLUMNS` (``campaign`` only with
    ``by_campaign``), as the module docstring defines them. ``cohort_month`` is the month's first day
    (datetime64, naive); ``clv`` may be None or empty (``predicted_clv`` and ``ltv`` NULL). Raises
    ``ValueError`` when the cohorts' first orders are not credited exactly once (conservation)."""
    if months < 1:
        raise ValueError(f"months must be >= 1, got {months}")
    if basis not in ("revenue", "margin"):
        raise ValueError(f"basis must be 'revenue' or 'margin', got {basis!r}")
    run = _run_ts(run_date)
    done = _completed(orders, run, margin=basis == "margin")
    first = _first_orders(done)
    first["cohort_month"] = first["first_ts"].dt.tz_localize(None).dt.to_period("M")
    latest = (run - _DAY).tz_localize(None).to_period("M")
    first = first[first["cohort_month"] > latest - months]
    keys = ["channel", "campaign"] if by_campaign else ["channel"]
    credited = _one_model(credits).merge(first, left_on="journey_id", right_on="order_id", validate="many_to_one")
    credited["campaign"] = _no_campaign(credited["campaign"])
    _check_conservation(first, credited)

    credited = credited.join(done.groupby("customer_id").agg(value=("value", "sum"), revenue=("order_value", "sum")),
                             on="customer_id")
    scores = clv.groupby("customer_id")["clv"].mean() if clv is not None and len(clv) else pd.Series(dtype=float)
    credited["clv"] = credited["customer_id"].map(scores)
    credited["w_value"] = credited["credit"] * credited["value"]
    credited["w_revenue"] = credited["credit"] * credited["revenue"]
    credited["w_scored"] = credited["credit"].where(credited["clv"].notna(), 0.0)
    credited["w_clv"] = credited["w_scored"] * credited["clv"].fillna(0.0)
    group_keys = ["cohort_month", *keys]
    grouped = credited.groupby(group_keys, dropna=False, sort=True)
    credited["group"] = grouped.ngroup()  # the row of ``rows`` below
    rows = grouped[["credit", "w_value", "w_revenue", "w_scored", "w_clv"]].sum().reset_index()
    rows = rows.assign(group=np.arange(len(rows))).rename(columns={"credit": "new_customers"})
    rows["realised_value_per_customer"] = rows["w_value"] / rows["new_customers"]
    rate = rows["w_value"] / rows["w_revenue"].where(rows["w_revenue"] > 0) if basis == "margin" else 1.0
    rows["predicted_clv"] = (rows["w_clv"] / rows["w_scored"].where(rows["w_scored"] > 0)) * rate

    monthly = _monthly_spend(spend, keys, latest, months)
    rows = rows.merge(monthly, on=group_keys, how="outer").sort_values(group_keys, ignore_index=True)
    rows["new_customers"] = rows["new_customers"].fillna(0.0)
    rows["spend"] = rows["spend"].fillna(0.0)
    paid, acquired = rows["spend"] > 0, rows["new_customers"] > 0
    rows["cac"] = (rows["spend"] / rows["new_customers"]).where(paid & acquired)
    rows["cac_note"] = np.where(~paid, "unpaid", np.where(~acquired, "no new customers", ""))
    rows["clv_horizon_days"] = clv_horizon_days
    rows["ltv"] = rows["realised_value_per_customer"] + rows["predicted_clv"]
    rows["ltv_cac"] = rows["ltv"] / rows["cac"]
    cac = rows.dropna(subset=["group"]).set_index("group")["cac"].reindex(np.arange(grouped.ngroups))
    rows["payback_days"] = rows["group"].map(pd.Series(_payback_days(credited, done, run, cac.to_numpy())))
    reached = pd.Series(rows["payback_days"].notna(), dtype="boolean")
    rows["payback_reached"] = reached.where(rows["cac"].notna(), pd.NA)
    rows["basis"] = basis
    rows["cohort_month"] = rows["cohort_month"].dt.to_timestamp()
    rows["campaign"] = _no_campaign(rows["campaign"]) if by_campaign else None
    logger.info("channel economics: %d cohort months, %d rows, %.1f new customers", rows["cohort_month"].nunique(),
                len(rows), rows["new_customers"].sum())
    columns = [c for c in ECONOMICS_COLUMNS if by_campaign or c != "campaign"]
    return rows[columns].reset_index(drop=True)


def _payback_days(credited: pd.DataFrame, done: pd.DataFrame, run: pd.Timestamp, cac: np.ndarray) -> np.ndarray:
    """Per group (``credited["group"]``), the first day the credit-weighted mean cumulative function of value
    reaches ``cac`` (NaN when it does not within the oldest customer's age, or when ``cac`` is NaN)."""
    n_groups = len(cac)
    if n_groups == 0:
        return np.empty(0)
    g = credited["group"].to_numpy(np.int64)
    age = ((run - credited["first_ts"]) // _DAY).to_numpy(np.int64)
    width = int(age.max()) + 1
    weight = credited["credit"].to_numpy(float)
    watched = np.bincount(g * width + age, weights=weight, minlength=n_groups * width).reshape(n_groups, width)
    watched = watched[:, ::-1].cumsum(axis=1)[:, ::-1]  # weight of the customers watched for >= u days
    touches = pd.DataFrame({"customer_id": credited["customer_id"].to_numpy(), "g": g, "w": weight,
                            "first_ts": credited["first_ts"].to_numpy()})
    later = touches.merge(done[["customer_id", "order_ts", "value"]], on="customer_id")
    day = ((later["order_ts"] - later["first_ts"]) // _DAY).to_numpy(np.int64)
    earned = np.bincount(later["g"].to_numpy(np.int64) * width + day, weights=(later["w"] * later["value"]).to_numpy(),
                         minlength=n_groups * width).reshape(n_groups, width)
    with np.errstate(divide="ignore", invalid="ignore"):  # nobody watched that long: the curve stays flat
        curve = np.cumsum(np.where(watched > 0, earned / watched, 0.0), axis=1)
    hit = curve >= cac[:, None]  # False where cac is NaN
    return np.where(hit.any(axis=1), hit.argmax(axis=1), np.nan)


def _check_conservation(first: pd.DataFrame, credited: pd.DataFrame) -> None:
    cohorts = first.groupby("cohort_month").size()
    credit = credited.groupby("cohort_month")["credit"].sum().reindex(cohorts.index, fill_value=0.0)
    gap = (credit - cohorts).abs()
    bad = gap[gap > CONSERVATION_TOLERANCE * np.maximum(1.0, cohorts)]
    if len(bad):
        month = bad.index[0]
        uncovered = int((~first.loc[first["cohort_month"] == month, "order_id"].isin(credited["order_id"])).sum())
        raise ValueError(f"channel economics: cohort {month} has {cohorts[month]} first orders but new customers sum to "
                         f"{credit[month]:.9g} over channels ({uncovered} first orders without credits; "
                         f"{len(bad)} cohorts off)")


def _monthly_spend(spend: pd.DataFrame, keys: list[str], latest: pd.Period, months: int) -> pd.DataFrame:
    frame = spend.assign(cohort_month=_utc(spend["day"]).dt.tz_localize(None).dt.to_period("M"),
                         campaign=_no_campaign(spend["campaign"] if "campaign" in spend else pd.Series(None, spend.index)))
    frame = frame[(frame["cohort_month"] > latest - months) & (frame["cohort_month"] <= latest)]
    return frame.groupby(["cohort_month", *keys], dropna=False, sort=True)["spend"].sum().reset_index()


# --- CAC forecast ------------------------------------------------------------------------------------


def new_customer_shares(orders: pd.DataFrame, credits: pd.DataFrame, run_date: dt.date, *,
                        window_days: int = 28) -> pd.DataFrame:
    """Per channel, over the completed orders of ``[run_date - window_days, run_date)``: credited_orders (sum of
    credit), new_customer_orders (sum of credit of first orders) and new_customer_share (their ratio)."""
    run = _run_ts(run_date)
    done = _completed(orders, run)
    first_ids = set(_first_orders(done)["order_id"])
    recent = done.loc[done["order_ts"] >= run - window_days * _DAY, "order_id"]
    rows = _one_model(credits).loc[lambda f: f["journey_id"].isin(recent)]
    rows = rows.assign(new=rows["credit"].where(rows["journey_id"].isin(first_ids), 0.0))
    shares = rows.groupby("channel", sort=True).agg(credited_orders=("credit", "sum"),
                                                    new_customer_orders=("new", "sum")).reset_index()
    shares["new_customer_share"] = shares["new_customer_orders"] / shares["credited_orders"].where(shares["credited_orders"] > 0)
    return shares


def cac_forecast(fit: MediaFit, history: pd.DataFrame, shares: pd.DataFrame, *, horizon_days: int = 28,
                 planned_spend: Mapping[str, float] | None = None, interval: float = 0.8, recent_days: int = 28,
                 n_draws: int = 4000, random_state: int = 0) -> pd.DataFrame:
    """The next ``horizon_days``' CAC per paid channel (module docstring), :data:`FORECAST_COLUMNS`: one row per
    channel of ``fit.channels`` and of ``planned_spend``. ``history`` is the media history the fit was made on
    (``features.media.media_history``); ``shares`` is :func:`new_customer_shares` as of the same date.
    ``planned_spend`` (daily, per channel) replaces the recent mean for the channels it names."""
    if not 0 < interval < 1:
        raise ValueError(f"interval must be in (0, 1), got {interval}")
    planned_spend = dict(planned_spend or {})
    table = fit.channels.set_index("channel")
    by_channel = shares.set_index("channel")
    recent = history.iloc[-recent_days:]
    value = _order_values(history, fit.config)
    alpha = (1.0 - interval) / 2.0
    rng = np.random.default_rng(random_state)
    rows = []
    for channel in [*table.index, *(c for c in planned_spend if c not in table.index)]:
        column = _SPEND + channel
        mean_spend = float(recent[column].mean()) if column in recent.columns else np.nan
        daily = float(planned_spend.get(channel, mean_spend))
        row: dict[str, Any] = {"channel": channel, "horizon_days": horizon_days, "interval": interval,
                               "spend_source": "planned" if channel in planned_spend else f"mean of the last {len(recent)} days",
                               "planned_daily_spend": daily, "planned_spend": horizon_days * daily}
        credited, new = (by_channel.loc[channel, ["credited_orders", "new_customer_orders"]].astype(float)
                         if channel in by_channel.index else (0.0, 0.0))
        if channel not in table.index:
            row["reason"] = "channel not in the media model"
        elif not bool(table.loc[channel, "fitted"]):
            row["reason"] = f"not fitted by the media model: {table.loc[channel, 'reason']}"
        elif not daily > 0:
            row["reason"] = "no planned spend: no new customers expected, CAC undefined"
        elif credited <= 0:
            row["reason"] = "no credited orders in the new-customer share window"
        else:
            row.update(_forecast_numbers(fit, channel, daily, horizon_days, value.get(channel, value["*"]),
                                         credited, new, alpha, rng, n_draws))
        rows.append(row)
    return pd.DataFrame(rows).reindex(columns=list(FORECAST_COLUMNS))


def _forecast_numbers(fit: MediaFit, channel: str, daily: float, horizon: int, order_value: float, credited: float,
                      new: float, alpha: float, rng: np.random.Generator, n_draws: int) -> dict[str, Any]:
    point = fit.channels.set_index("channel").loc[channel]
    orders = horizon * _hill(daily, point["max_revenue_per_day"], point["half_saturation_spend"], point["slope"]) / order_value
    share = new / credited
    prior = stats.beta(new + 0.5, credited - new + 0.5)
    numbers = {"expected_orders": orders, "new_customer_share": share, "expected_new_customers": orders * share,
               "new_customer_share_low": min(prior.ppf(alpha), share), "new_customer_share_high": max(prior.ppf(1 - alpha), share)}
    reps = fit.replicates[fit.replicates["channel"] == channel]
    if len(reps):
        pick = reps.iloc[rng.integers(len(reps), size=n_draws)]
        order_draws = horizon * _hill(daily, pick["max_revenue_per_day"].to_numpy(float),
                                      pick["half_saturation_spend"].to_numpy(float), pick["slope"].to_numpy(float)) / order_value
    else:
        order_draws = np.full(n_draws, orders)
    new_draws = order_draws * prior.rvs(size=n_draws, random_state=rng)
    numbers["expected_orders_low"], numbers["expected_orders_high"] = _band(order_draws, orders, alpha)
    low, high = _band(new_draws, orders * share, alpha)
    numbers["expected_new_customers_low"], numbers["expected_new_customers_high"] = low, high
    if not orders * share > 0:
        numbers["reason"] = "no new customers expected (the curve gives no orders or the channel's recent orders are all repeat)"
        return numbers
    spend = horizon * daily
    # the CAC that will be realised: the new customers actually acquired are a Poisson count around each draw's
    # expectation (a prediction interval, not only the expectation's); CAC falls as they rise, so its quantiles
    # are spend over theirs, swapped; an upper bound at 0 new customers is NULL
    realised_low, realised_high = _band(rng.poisson(new_draws).astype(float), orders * share, alpha)
    numbers.update(cac=spend / (orders * share), cac_low=spend / realised_high,
                   cac_high=spend / realised_low if realised_low > 0 else np.nan,
                   reason="" if realised_low > 0 else "upper bound unbounded: some draws acquire no new customers")
    return numbers


def _hill(spend: float, scale: Any, k: Any, slope: Any) -> Any:
    """Steady-state revenue per day ``scale s^S / (s^S + k^S)`` (the budget optimiser's ``_response``)."""
    ratio = (spend / np.asarray(k, dtype=float)) ** np.asarray(slope, dtype=float)
    return np.asarray(scale, dtype=float) * ratio / (1.0 + ratio)


def _band(draws: np.ndarray, point: float, alpha: float) -> tuple[float, float]:
    low, high = np.quantile(draws, [alpha, 1.0 - alpha])
    return float(min(low, point)), float(max(high, point))


def _order_values(history: pd.DataFrame, config: Any) -> dict[str, float]:
    """Revenue per order the media model values its orders at (``least_squares._unit_value`` with
    ``outcome="orders"``): ``"*"`` for every channel with the total target (the target's orders over the last
    ``recent_days``), per channel with the attributed one (over the whole history); the store's AOV as fallback."""
    store = float(history["revenue"].sum() / max(history["orders"].sum(), 1))
    if config.target == "attributed":
        counts = {c: history[_ORDERS + c].sum() for c in (c[len(_SPEND):] for c in history.columns if c.startswith(_SPEND))
                  if _ORDERS + c in history.columns}
        return {"*": store, **{c: float(history[_REVENUE + c].sum() / n) for c, n in counts.items() if n > 0}}
    recent = history.iloc[max(len(history) - config.recent_days, 0):]
    excluded = [c for c in config.exclude_channels if _ORDERS + c in history.columns]
    revenue = recent["revenue"].sum() - sum(recent[_REVENUE + c].sum() for c in excluded)
    count = recent["orders"].sum() - sum(recent[_ORDERS + c].sum() for c in excluded)
    return {"*": float(revenue / count) if count > 0 else store}


# --- backtest --------------------------------------------------------------------------------------------


def cac_backtest(forecasts: pd.DataFrame, orders: pd.DataFrame, credits: pd.DataFrame, spend: pd.DataFrame,
                 run_date: dt.date) -> pd.DataFrame:
    """Past forecasts against the CAC they forecast, :data:`BACKTEST_COLUMNS`.

    ``forecasts``: origin (the forecast's run date T), channel, horizon_days, cac, cac_low, cac_high (published
    :func:`cac_forecast` rows). Only forecasts whose window ``[T, T + horizon_days)`` ended by ``run_date`` are
    scored. Realised CAC = the channel's spend in the window / the credits to it of the first orders (first
    completed order of the customer, over all of ``orders``) placed in the window; NULL without new customers.
    ``ape = |cac - realised| / realised``; ``inside_interval``: cac_low <= realised <= cac_high (NA when either
    is NULL). ``credits`` are tonight's, so a forecast is judged against the current attribution of its window."""
    run = _run_ts(run_date)
    origin = _utc(forecasts["origin"])
    end = origin + forecasts["horizon_days"].astype(int) * _DAY
    scored = forecasts[(end <= run).to_numpy()].assign(start=origin, end=end).reset_index(drop=True)
    if len(scored) < len(forecasts):
        logger.info("cac backtest: %d of %d forecasts still inside their window", len(forecasts) - len(scored), len(forecasts))
    first = _first_orders(_completed(orders, run))
    credited = _one_model(credits).merge(first, left_on="journey_id", right_on="order_id")
    days = _utc(spend["day"])
    realised_spend, realised_new = [], []
    for row in scored.itertuples(index=False):
        in_window = (days >= row.start) & (days < row.end) & (spend["channel"] == row.channel)
        realised_spend.append(float(spend.loc[in_window.to_numpy(), "spend"].sum()))
        acquired = (credited["first_ts"] >= row.start) & (credited["first_ts"] < row.end) & (credited["channel"] == row.channel)
        realised_new.append(float(credited.loc[acquired, "credit"].sum()))
    scored = scored.assign(realised_spend=realised_spend, realised_new_customers=realised_new)
    scored["realised_cac"] = (scored["realised_spend"] / scored["realised_new_customers"]).where(scored["realised_new_customers"] > 0)
    scored["ape"] = (scored["cac"] - scored["realised_cac"]).abs() / scored["realised_cac"]
    inside = (scored["cac_low"] <= scored["realised_cac"]) & (scored["realised_cac"] <= scored["cac_high"])
    known = scored[["cac_low", "cac_high", "realised_cac"]].notna().all(axis=1)
    scored["inside_interval"] = pd.Series(inside, dtype="boolean").where(known, pd.NA)
    scored["origin"] = pd.to_datetime(scored["origin"]).dt.date
    return scored.reindex(columns=list(BACKTEST_COLUMNS))


def _run_ts(run_date: Any) -> pd.Timestamp:
    stamp = pd.Timestamp(run_date)
    return (stamp.tz_localize("UTC") if stamp.tz is None else stamp.tz_convert("UTC")).normalize()


def _utc(values: pd.Series) -> pd.Series:
    stamps = pd.to_datetime(values)
    return stamps.dt.tz_localize("UTC") if stamps.dt.tz is None else stamps.dt.tz_convert("UTC")


def _completed(orders: pd.DataFrame, run: pd.Timestamp, margin: bool = False) -> pd.DataFrame:
    """Completed orders before ``run``: order_id, customer_id, order_ts (UTC), order_value, value (order_value, or
    order_margin when ``margin``)."""
    column = "order_margin" if margin else "order_value"
    if column not in orders.columns:
        raise ValueError(f"orders lack the column {column!r}")
    stamps = _utc(orders["order_ts"])
    keep = ((orders["status"] == "completed") & (stamps < run)).to_numpy()
    done = orders[keep]
    return pd.DataFrame({"order_id": done["order_id"].to_numpy(np.int64), "customer_id": done["customer_id"].to_numpy(np.int64),
                         "order_ts": stamps[keep].reset_index(drop=True), "order_value": done["order_value"].to_numpy(float),
                         "value": done[column].to_numpy(float)})


def _first_orders(done: pd.DataFrame) -> pd.DataFrame:
    """Each customer's earliest completed order (ties by order_id): customer_id, order_id, first_ts."""
    first = done.sort_values(["order_ts", "order_id"]).drop_duplicates("customer_id")
    return first[["customer_id", "order_id", "order_ts"]].rename(columns={"order_ts": "first_ts"}).reset_index(drop=True)


def _one_model(credits: pd.DataFrame) -> pd.DataFrame:
    if "model" in credits.columns and credits["model"].nunique() > 1:
        raise ValueError(f"credits must come from one attribution model, got {sorted(credits['model'].unique())}")
    return credits[["journey_id", "channel", "campaign", "credit"]]


def _no_campaign(campaign: pd.Series) -> pd.Series:
    """'' and NaN campaigns as None."""
    return campaign.astype(object).where(campaign.notna() & (campaign.astype(object) != ""), None)
