"""Randomised historical offers with known heterogeneous effects, for the synthetic store.

A store that sends retention and win-back offers by email, and keeps a randomised control group of every
campaign, is what an uplift model learns from (``shop.offers``). :func:`draw_offers` draws such campaigns
over a synthetic store's history, lets each offer act on the customer's orders, and writes what every
offer truly did (``truth.offer_effects``).

Campaigns.  Every ``every_days`` days from day ``first_day`` on (days after the store's start), the
store offers every *eligible* customer (email opt-in, signed up, at least one order before the campaign
day) a discount off their next order: a ``win_back`` offer when they have not ordered for
``win_back_after_days`` days, else a ``retention`` offer, at a discount drawn uniformly from
``discounts``. ``treated_share`` of them, drawn at random, are sent it (``treated``); the others are the
campaign's control group, not contacted. The offer is sent at a random minute between 09:00 and 11:00
UTC. Campaigns are ``every_days`` >= ``horizon_days`` apart, so their outcome windows do not overlap.

Response types (the truth).  Each customer has a response type at each campaign, drawn from what the
store can observe about them then (so an uplift model can learn it) and three uniforms drawn once per
customer (so the type is a stable trait while they stay the same):

- ``lost_cause``: already gone (their dropout day is before the campaign day), or alive but buying
  less than about once a year (probability ``sigmoid(3 log(1 / rate per year))``): no offer brings
  them back. They have the longest recency, the "highest churn risk";
- ``sure_thing``: the heavy buyers (probability ``sigmoid(3 log(rate per year / 9))``): they order
  anyway; an offer only gives them the discount;
- ``sleeping_dog``: long-standing customers, the more so when they ignore the store's email
  (probability ``sigmoid((tenure - 420 days) / 30) x (0.4 + 0.6 sigmoid((0.35 - open rate) / 0.05))``):
  the offer reminds them to leave: treated, they drop out within a week with probability
  ``sleeping_dog_dropout``;
- ``persuadable``: everyone else alive: treated, they place an extra order with probability
  ``persuadable_lift x sqrt(discount / 0.15)``, ``min(1 + Exponential(10 days), horizon - 1)`` days
  after the offer (if still alive then).

So the most active customers are sure things and the highest-risk ones lost causes, as in most real
stores; targeting by churn risk spends its offers on lost causes and sleeping dogs.

Orders.  The store's ordinary orders are drawn first (:mod:`revopt.sample_data.synth`); campaigns are
then applied in time order, each seeing the orders as the earlier campaigns left them: a sleeping
dog's orders from its new dropout day on are removed (a Poisson process cut short is a Poisson process
on the shorter window), a persuadable's extra order is added. The first order of a treated customer in
the horizon carries the offer's discount on its lines (:func:`coupon_discounts`), incremental or not.

Truth.  ``p_order_control`` is the probability of at least one order in ``[sent, sent + horizon)``
without the offer, given the customer's rate, the store's daily intensity and their (realised) dropout
day, including the orders their newsletter opens bring (``email_boost``, per customer and day);
``p_order_treated`` the same with the offer; ``revenue_effect`` the expected incremental revenue in the
horizon at the customer's mean basket value, before the discount (the extra order of a persuadable,
minus the orders a sleeping dog no longer places).

Why hand-written: the offers and their effects are the generator's known truth; no library draws them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

RESPONSE_TYPES = ("persuadable", "sure_thing", "lost_cause", "sleeping_dog")
OFFER_TYPES = ("retention", "win_back")
OFFER_COLUMNS = ("offer_id", "customer_id", "sent_at", "offer_type", "discount", "treated")
EFFECT_COLUMNS = ("offer_id", "customer_id", "response_type", "p_order_control", "p_order_treated", "revenue_effect")

_MS_PER_DAY = 86_400_000
#: mean delay of a persuadable's extra order after the offer (days)
_EXTRA_ORDER_DELAY_DAYS = 10.0
#: a treated sleeping dog who drops out does so within this many days of the offer
_DROPOUT_WITHIN_DAYS = 7
#: the discount at which a persuadable's extra-order probability is ``persuadable_lift``
_REFERENCE_DISCOUNT = 0.15


@dataclass(frozen=True)
class OfferDesign:
    """The store's offer campaigns and their effects (module docstring)."""

    every_days: int = 63
    first_day: int = 84
    horizon_days: int = 60
    treated_share: float = 0.5
    discounts: tuple[float, ...] = (0.1, 0.2)
    win_back_after_days: int = 90
    persuadable_lift: float = 0.45
    sleeping_dog_dropout: float = 0.7

    def __post_init__(self) -> None:
        if self.every_days < self.horizon_days or self.first_day < 1 or self.horizon_days < 1:
            raise ValueError(f"need every_days >= horizon_days >= 1 and first_day >= 1 (outcome windows must not "
                             f"overlap), got {self.every_days}, {self.horizon_days}, {self.first_day}")
        if not 0 < self.treated_share < 1 or not self.discounts or not all(0 < d < 1 for d in self.discounts):
            raise ValueError(f"need 0 < treated_share < 1 and discounts in (0, 1), got {self.treated_share}, "
                             f"{self.discounts}")
        if not 0 <= self.persuadable_lift * np.sqrt(max(self.discounts) / _REFERENCE_DISCOUNT) <= 1 \
                or not 0 <= self.sleeping_dog_dropout <= 1:
            raise ValueError("persuadable_lift (at the largest discount) and sleeping_dog_dropout must be probabilities")

    def campaign_days(self, days: int) -> np.ndarray:
        """The campaign days (days after the start) inside ``days`` days of data."""
        return np.arange(self.first_day, days, self.every_days, dtype=np.int64)

    def run_parameters(self) -> dict[str, str]:
        """The design as ``truth.generator_run`` rows (key -> value)."""
        return {"offers.every_days": str(self.every_days), "offers.first_day": str(self.first_day),
                "offers.horizon_days": str(self.horizon_days), "offers.treated_share": repr(float(self.treated_share)),
                "offers.discounts": ",".join(repr(float(d)) for d in self.discounts),
                "offers.win_back_after_days": str(self.win_back_after_days),
                "offers.persuadable_lift": repr(float(self.persuadable_lift)),
                "offers.sleeping_dog_dropout": repr(float(self.sleeping_dog_dropout))}


@dataclass(frozen=True)
class OfferDraw:
    """What the campaigns did: ``offers`` (``shop.offers``) and ``effects`` (``truth.offer_effects``),
    the customers' dropout days after them (``churn_day``), which of the store's orders remain
    (``kept``, a mask over the orders given) and the extra orders (customer index and day)."""

    offers: pd.DataFrame
    effects: pd.DataFrame
    churn_day: np.ndarray
    kept: np.ndarray
    extra_customer: np.ndarray
    extra_day: np.ndarray


def empty_offers() -> pd.DataFrame:
    """``shop.offers`` with no rows (a store without offers)."""
    return pd.DataFrame({"offer_id": pd.Series(dtype="int64"), "customer_id": pd.Series(dtype="int64"),
                         "sent_at": pd.Series(dtype="datetime64[ns, UTC]"), "offer_type": pd.Series(dtype=object),
                         "discount": pd.Series(dtype="float64"), "treated": pd.Series(dtype=bool)})


def empty_effects() -> pd.DataFrame:
    """``truth.offer_effects`` with no rows."""
    return pd.DataFrame({"offer_id": pd.Series(dtype="int64"), "customer_id": pd.Series(dtype="int64"),
                         "response_type": pd.Series(dtype=object),
                         **{c: pd.Series(dtype="float64") for c in EFFECT_COLUMNS[3:]}})


def draw_offers(rng: np.random.Generator, design: OfferDesign, *, signup_day: np.ndarray, churn_day: np.ndarray,
                rate: np.ndarray, open_rate: np.ndarray, opt_in: np.ndarray, basket_value: np.ndarray,
                email_boost: np.ndarray, order_customer: np.ndarray, order_day: np.ndarray,
                intensity: np.ndarray, origin: pd.Timestamp, completed_share: float = 1.0) -> OfferDraw:
    """Draw ``design``'s campaigns over a store (per customer index: signup and dropout day, daily
    purchase rate, email open rate, opt-in, mean basket value, the relative extra purchase intensity
    their newsletter opens bring; per order: customer index and day; the store's daily ``intensity``,
    seasonality x marketing; ``origin`` the first day, midnight UTC; ``completed_share`` the share of orders
    not cancelled: the truth's probabilities are of a completed order). Vectorised over customers; the
    loop runs over campaigns."""
    n, days = len(rate), len(intensity)
    churn = churn_day.astype(np.int64).copy()
    # beyond the data, the mean intensity (a window of the last campaign may run past the last day)
    cum = np.concatenate([[0.0], np.cumsum(intensity), np.sum(intensity) + np.mean(intensity)
                          * np.arange(1, design.horizon_days + _DROPOUT_WITHIN_DAYS + 2)])
    trait = rng.random((n, 3))  # the customer's stable response trait (module docstring)
    yearly = np.maximum(rate * 365.0, 1e-9)
    p_sure = _sigmoid(3.0 * np.log(yearly / 9.0))
    p_lost = _sigmoid(3.0 * np.log(1.0 / yearly))
    effective_rate = rate * (1.0 + email_boost) * completed_share
    kept = np.ones(len(order_customer), dtype=bool)
    extra_customer, extra_day = [np.empty(0, np.int64)], [np.empty(0, np.int64)]
    offers, effects = [], []
    for day in design.campaign_days(days):
        customer = np.concatenate([order_customer[kept], *extra_customer])
        ordered = np.concatenate([order_day[kept], *extra_day])
        before = ordered < day
        last = np.full(n, -1, dtype=np.int64)
        np.maximum.at(last, customer[before], ordered[before])
        eligible = np.flatnonzero(opt_in & (last >= 0) & (signup_day < day))
        if not len(eligible):
            continue
        m = len(eligible)
        treated = rng.random(m) < design.treated_share
        discount = np.asarray(design.discounts, dtype=np.float64)[rng.integers(0, len(design.discounts), m)]
        win_back = day - last[eligible] >= design.win_back_after_days
        sent_ms = day * _MS_PER_DAY + 9 * 3_600_000 + rng.integers(0, 120, m) * 60_000
        tenure = day - signup_day[eligible]
        u = trait[eligible]
        p_dog = _sigmoid((tenure - 420.0) / 30.0) * (0.4 + 0.6 * _sigmoid((0.35 - open_rate[eligible]) / 0.05))
        alive = churn[eligible] > day
        kind = np.where(~alive, 2, np.where(u[:, 0] < p_sure[eligible], 1, np.where(
            u[:, 1] < p_lost[eligible], 2, np.where(u[:, 2] < p_dog, 3, 0))))

        end = np.minimum(day + design.horizon_days, churn[eligible])
        exposure = np.maximum(cum[np.maximum(end, day)] - cum[day], 0.0)
        p_control = 1.0 - np.exp(-effective_rate[eligible] * exposure)
        p_treated, revenue = p_control.copy(), np.zeros(m)
        # persuadables: an extra order, if still alive when it comes
        lift = design.persuadable_lift * np.sqrt(discount / _REFERENCE_DISCOUNT)
        completed_lift = lift * completed_share
        alive_for = np.maximum(churn[eligible] - day, 0)
        reach = 1.0 - np.exp(-np.minimum(alive_for, design.horizon_days) / _EXTRA_ORDER_DELAY_DAYS)
        persuadable = kind == 0
        p_treated[persuadable] = 1.0 - (1.0 - p_control[persuadable]) * (1.0 - (completed_lift * reach)[persuadable])
        revenue[persuadable] = (completed_lift * reach * basket_value[eligible])[persuadable]
        # sleeping dogs: dropping out within a week, half a week on average
        dog = kind == 3
        short_end = np.minimum(day + (_DROPOUT_WITHIN_DAYS + 1) // 2, end)
        short = 1.0 - np.exp(-effective_rate[eligible] * np.maximum(cum[np.maximum(short_end, day)] - cum[day], 0.0))
        p_treated[dog] = ((1 - design.sleeping_dog_dropout) * p_control + design.sleeping_dog_dropout * short)[dog]
        lost_orders = effective_rate[eligible] * np.maximum(cum[np.maximum(end, day)] - cum[np.maximum(short_end, day)], 0)
        revenue[dog] = -(design.sleeping_dog_dropout * lost_orders * basket_value[eligible])[dog]

        # what the treated did
        act = treated & persuadable & (rng.random(m) < lift)
        # from the day after the offer (never before it was sent)
        delay = np.minimum(1 + np.floor(rng.exponential(_EXTRA_ORDER_DELAY_DAYS, m)), design.horizon_days - 1).astype(np.int64)
        act &= (day + delay < churn[eligible]) & (day + delay < days)
        extra_customer.append(eligible[act])
        extra_day.append(day + delay[act])
        drop = treated & dog & (rng.random(m) < design.sleeping_dog_dropout)
        new_churn = day + rng.integers(1, _DROPOUT_WITHIN_DAYS + 1, m)
        churn[eligible[drop]] = np.minimum(churn[eligible[drop]], new_churn[drop])
        kept &= order_day < churn[order_customer]
        extra_keep = [d < churn[c] for c, d in zip(extra_customer, extra_day)]
        extra_customer = [c[k] for c, k in zip(extra_customer, extra_keep)]
        extra_day = [d[k] for d, k in zip(extra_day, extra_keep)]

        offers.append(pd.DataFrame({
            "customer_id": eligible.astype(np.int64) + 1,
            "sent_at": pd.to_datetime(origin.value // 1_000_000 + sent_ms, unit="ms", utc=True),
            "offer_type": np.asarray(OFFER_TYPES, dtype=object)[win_back.astype(int)],
            "discount": discount, "treated": treated}))
        effects.append(pd.DataFrame({
            "customer_id": eligible.astype(np.int64) + 1,
            "response_type": np.asarray(RESPONSE_TYPES, dtype=object)[kind],
            "p_order_control": p_control, "p_order_treated": p_treated, "revenue_effect": revenue}))
    if not offers:
        return OfferDraw(empty_offers(), empty_effects(), churn, kept, np.empty(0, np.int64), np.empty(0, np.int64))
    offer_frame = pd.concat(offers, ignore_index=True)
    offer_frame.insert(0, "offer_id", np.arange(1, len(offer_frame) + 1, dtype=np.int64))
    effect_frame = pd.concat(effects, ignore_index=True)
    effect_frame.insert(0, "offer_id", offer_frame["offer_id"].to_numpy())
    return OfferDraw(offer_frame, effect_frame, churn, kept, np.concatenate(extra_customer), np.concatenate(extra_day))


def coupon_discounts(offers: pd.DataFrame, order_customer_id: np.ndarray, order_ts: pd.Series,
                     horizon_days: int) -> np.ndarray:
    """Per order, the discount of the treated offer it redeems (0 for none): the first order of a
    treated customer in ``[sent_at, sent_at + horizon_days)``."""
    discount = np.zeros(len(order_customer_id))
    sent = offers[offers["treated"]]
    if not len(sent) or not len(order_customer_id):
        return discount
    orders = pd.DataFrame({"row": np.arange(len(order_customer_id)), "customer_id": order_customer_id,
                           "order_ts": pd.Series(order_ts).to_numpy()})
    pairs = orders.merge(sent[["customer_id", "sent_at", "discount"]], on="customer_id")
    window = (pairs["order_ts"] >= pairs["sent_at"]) & (
        pairs["order_ts"] < pairs["sent_at"] + pd.Timedelta(days=horizon_days))
    first = pairs[window].sort_values("order_ts", kind="stable").drop_duplicates(["customer_id", "sent_at"])
    discount[first["row"].to_numpy()] = first["discount"].to_numpy()
    return discount


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def uplift_extract(shop: dict[str, pd.DataFrame], events: pd.DataFrame, run_date: pd.Timestamp,
                   lookback_days: int) -> dict[str, pd.DataFrame]:
    """The datasets the uplift family reads, computed in pandas from a generated store the way
    :mod:`revopt.platform.extract` reads them from the stores (for tests and benchmarks without the
    embedded stack): ``customers``, ``orders`` (with ``order_value`` and ``discounted_value``),
    ``order_categories``, ``customer_daily_events`` and ``offers``, all in
    ``[run_date - lookback_days, run_date)``."""
    run_ts = pd.Timestamp(run_date).tz_localize("UTC") if pd.Timestamp(run_date).tzinfo is None else pd.Timestamp(run_date)
    since = run_ts - pd.Timedelta(days=lookback_days)
    orders = shop["orders"]
    orders = orders[(orders["order_ts"] >= since) & (orders["order_ts"] < run_ts)]
    lines = shop["order_lines"][shop["order_lines"]["order_id"].isin(orders["order_id"])]
    value = lines["unit_price"] * lines["quantity"]
    by_order = pd.DataFrame({"order_value": value, "discounted_value": value.where(lines["discount"] > 0, 0.0),
                             "order_id": lines["order_id"]}).groupby("order_id").sum()
    orders = orders.assign(order_value=orders["order_id"].map(by_order["order_value"]).fillna(0.0),
                           discounted_value=orders["order_id"].map(by_order["discounted_value"]).fillna(0.0))
    category = shop["products"].set_index("product_id")["category"]
    order_categories = (lines.assign(category=lines["product_id"].map(category), value=value)
                        .groupby(["order_id", "category"], as_index=False)["value"].sum())
    known = events[(events["customer_id"] != 0) & (events["event_time"] >= since) & (events["event_time"] < run_ts)]
    kind = known["event_type"].astype(str)
    human = known["is_machine"] == 0
    daily = pd.DataFrame({
        "customer_id": known["customer_id"].astype("int64").to_numpy(),
        "day": known["event_time"].dt.tz_localize(None).dt.normalize().astype("datetime64[ns]").to_numpy(),
        "session": known["session_id"].where(~kind.str.startswith("email_")).to_numpy(),
        **{name: (kind == event).to_numpy() & (human.to_numpy() if event.startswith("email_o") or
                                               event.startswith("email_c") else True)
           for name, event in (("page_views", "page_view"), ("product_views", "product_view"),
                               ("add_to_carts", "add_to_cart"), ("checkouts", "checkout"), ("purchases", "purchase"),
                               ("email_sends", "email_send"), ("email_opens", "email_open"),
                               ("email_clicks", "email_click"))}})
    grouped = daily.groupby(["customer_id", "day"])
    daily_events = grouped[[c for c in daily.columns if c not in ("customer_id", "day", "session")]].sum().astype("int64")
    daily_events.insert(0, "sessions", grouped["session"].nunique().astype("int64"))
    offers = shop.get("offers", empty_offers())
    offers = offers[(offers["sent_at"] >= since) & (offers["sent_at"] < run_ts)]
    return {"customers": shop["customers"], "orders": orders.reset_index(drop=True),
            "order_categories": order_categories, "customer_daily_events": daily_events.reset_index(),
            "offers": offers.reset_index(drop=True)}
