"""Unit tests for the synthetic store generator: contract shape, determinism, sanity and signal."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from revopt.platform.contract import EVENT_TYPES, EVENTS_DDL, SHOP_DDL, SHOP_OPTIONAL_TABLES, SHOP_TABLES, TRUTH_DDL, TRUTH_TABLES, ddl_columns
from revopt.sample_data.synth import NO_ASSISTS, AttributionDesign, SyntheticStore, generate_store, generate_store_chunks

START = dt.date(2024, 1, 1)
DAYS = 120
N_CUSTOMERS = 2000
SEED = 11


@pytest.fixture(scope="module")
def store() -> SyntheticStore:
    return generate_store(N_CUSTOMERS, DAYS, START, seed=SEED)


@pytest.fixture(scope="module")
def end() -> pd.Timestamp:
    return pd.Timestamp(START, tz="UTC") + pd.Timedelta(days=DAYS)


def _utc_day(ts: pd.Series) -> pd.Series:
    return ts.dt.tz_convert("UTC").dt.tz_localize(None).dt.normalize()


def _local_hour(times: pd.Series, zones: pd.Series) -> pd.Series:
    parts = [times[zones == zone].dt.tz_convert(zone).dt.hour for zone in zones.unique()]
    return pd.concat(parts).reindex(times.index)


# --- shape -------------------------------------------------------------------------------------


def test_same_seed_gives_identical_frames() -> None:
    first = generate_store(300, 40, START, seed=5)
    second = generate_store(300, 40, START, seed=5)
    for name in first.shop:
        pd.testing.assert_frame_equal(first.shop[name], second.shop[name])
    for name in first.truth:
        pd.testing.assert_frame_equal(first.truth[name], second.truth[name])
    pd.testing.assert_frame_equal(first.events, second.events)


def test_different_seed_gives_different_frames() -> None:
    first = generate_store(300, 40, START, seed=5)
    other = generate_store(300, 40, START, seed=6)
    assert not first.shop["orders"].equals(other.shop["orders"])
    assert not first.truth["customers"].equals(other.truth["customers"])
    assert not first.events.equals(other.events)


def test_columns_match_contract_in_order(store: SyntheticStore) -> None:
    shop, truth, events = ddl_columns(SHOP_DDL), ddl_columns(TRUTH_DDL), ddl_columns(EVENTS_DDL)
    assert set(store.shop) == set(SHOP_TABLES) == set(shop) - set(SHOP_OPTIONAL_TABLES)
    assert set(store.truth) == set(truth) == set(TRUTH_TABLES)
    for name, columns in shop.items():
        if name in SHOP_OPTIONAL_TABLES:
            continue
        assert list(store.shop[name].columns) == columns, name
    for name, columns in truth.items():
        assert list(store.truth[name].columns) == columns, name
    assert list(store.events.columns) == events["events"]


def test_dtypes(store: SyntheticStore) -> None:
    events = store.events
    assert str(events["event_time"].dtype) == "datetime64[ns, UTC]"
    assert str(store.shop["orders"]["order_ts"].dtype) == "datetime64[ns, UTC]"
    for column in ("session_id", "customer_id", "product_id"):
        assert events[column].dtype == np.uint64
    assert events["is_machine"].dtype == np.uint8
    assert set(events["event_type"].cat.categories) == set(EVENT_TYPES)
    assert set(events["device"].unique()) <= {"desktop", "mobile", "tablet"}
    assert isinstance(events["campaign"].dtype, pd.CategoricalDtype)
    for frame, column in [
        (store.shop["customers"], "signup_date"),
        (store.shop["product_prices"], "valid_from"),
        (store.shop["marketing_spend"], "day"),
        (store.truth["daily_intensity"], "day"),
    ]:
        assert str(frame[column].dtype) == "datetime64[ns]"
        assert (frame[column] == frame[column].dt.normalize()).all()
    assert store.shop["customers"]["email_opt_in"].dtype == bool
    for column in ("spend",):
        assert (store.shop["marketing_spend"][column].round(2) == store.shop["marketing_spend"][column]).all()
    lines = store.shop["order_lines"]
    assert (lines["unit_price"].round(2) == lines["unit_price"]).all()


def test_no_nulls_except_churn_date(store: SyntheticStore) -> None:
    for group in (store.shop, store.truth):
        for name, frame in group.items():
            nullable = {"churn_date"} if name == "customers" and group is store.truth else set()
            columns = [c for c in frame.columns if c not in nullable]
            assert not frame[columns].isna().any().any(), name
    assert not store.events.isna().any().any()


def test_primary_keys_unique(store: SyntheticStore) -> None:
    keys = {
        "customers": ["customer_id"],
        "products": ["product_id"],
        "product_prices": ["product_id", "valid_from"],
        "orders": ["order_id"],
        "order_lines": ["order_id", "line_no"],
        "marketing_spend": ["day", "channel", "campaign"],
    }
    for name, key in keys.items():
        assert not store.shop[name].duplicated(key).any(), name
    for name, key in {"customers": ["customer_id"], "products": ["product_id"], "channels": ["channel"],
                      "daily_intensity": ["day"], "generator_run": ["key"], "campaigns": ["campaign"],
                      "order_causes": ["order_id"]}.items():
        assert not store.truth[name].duplicated(key).any(), name


def test_generator_run_records_arguments(store: SyntheticStore) -> None:
    run = dict(zip(store.truth["generator_run"]["key"], store.truth["generator_run"]["value"]))
    assert run["seed"] == str(SEED)
    assert run["n_customers"] == str(N_CUSTOMERS)
    assert run["days"] == str(DAYS)
    assert run["start"] == START.isoformat()
    assert run["n_products"] == "50" == str(len(store.shop["products"]))
    assert run["generator_version"]
    assert run["assist_share.display"] == "0.8" and run["closer_mix.direct"] == "0.45"
    assert run["closer_campaign.paid_search"] == "search_brand" and run["max_assist_days"] == "7.0"
    assert run["traffic_weight.organic"] == "0.3" and run["traffic_weight.display"] == "0.1"
    assert run["base_spend.paid_search"] == "50.0"  # 2500 a day at 100k customers


def test_invalid_sizes_raise() -> None:
    with pytest.raises(ValueError):
        generate_store(0, 10, START, seed=1)
    with pytest.raises(ValueError):
        generate_store(10, 0, START, seed=1)


@pytest.mark.parametrize("design", [
    {"assist_share": {"organic": 0.5}},
    {"assist_share": {"display": 1.5}},
    {"closer_mix": {"email": 1.0}},
    {"closer_mix": {"direct": 0.0}},
    {"closer_mix": {"display": 1.0}},  # a paid closer needs one of its campaigns
    {"closer_campaign": {"paid_search": "display_awareness"}},
    {"max_assist_days": 0.05},  # shorter than the 2 hours
    {"traffic_weight": {"organic": 1.0, "referral": 0.1}},
    {"traffic_weight": {"organic": 1.0, "display": -0.1}},
    {"traffic_weight": {"paid_search": 1.0}},  # a day without spend would have no traffic
])
def test_invalid_attribution_designs_raise(design) -> None:
    with pytest.raises(ValueError):
        AttributionDesign(**design)


# --- sanity ------------------------------------------------------------------------------------


def test_all_data_in_range(store: SyntheticStore, end: pd.Timestamp) -> None:
    start = pd.Timestamp(START, tz="UTC")
    for times in (store.shop["orders"]["order_ts"], store.events["event_time"]):
        assert times.min() >= start
        assert times.max() < end
    for frame, column in [
        (store.shop["product_prices"], "valid_from"),
        (store.shop["marketing_spend"], "day"),
        (store.truth["daily_intensity"], "day"),
    ]:
        assert frame[column].min() == pd.Timestamp(START)
        assert frame[column].max() <= end.tz_localize(None) - pd.Timedelta(days=1)
    assert store.shop["customers"]["signup_date"].max() < end.tz_localize(None)


def test_orders_between_signup_and_churn(store: SyntheticStore) -> None:
    orders = store.shop["orders"].merge(store.shop["customers"], on="customer_id").merge(
        store.truth["customers"], on="customer_id"
    )
    day = _utc_day(orders["order_ts"])
    assert (day >= orders["signup_date"]).all()
    churned = orders["churn_date"].notna()
    assert (day[churned] < orders.loc[churned, "churn_date"]).all()
    # Customers who churned during the data did buy before they left: the boundary is exercised.
    assert (churned & (orders["churn_date"] > pd.Timestamp(START))).sum() > 50


def test_customer_population(store: SyntheticStore) -> None:
    customers, truth = store.shop["customers"], store.truth["customers"]
    assert 0.5 < (customers["signup_date"] < pd.Timestamp(START)).mean() < 0.7
    assert 0.6 < customers["email_opt_in"].mean() < 0.8
    assert set(customers["timezone"]) >= {"Europe/London", "America/New_York", "Australia/Sydney"}
    assert set(truth["segment"]) == {"casual", "regular", "loyal"}
    assert 0.2 < truth["churn_date"].notna().mean() < 0.6
    assert 3.0 < truth["purchase_rate"].mean() * 365 < 6.0


def test_unit_price_is_list_price_less_discount(store: SyntheticStore) -> None:
    lines = store.shop["order_lines"].merge(store.shop["orders"][["order_id", "order_ts"]], on="order_id")
    lines["day"] = _utc_day(lines["order_ts"])
    prices = store.shop["product_prices"].rename(columns={"valid_from": "day"}).sort_values("day")
    lines = pd.merge_asof(lines.sort_values("day"), prices, on="day", by="product_id")
    assert lines["list_price"].notna().all()
    np.testing.assert_allclose(lines["unit_price"], lines["list_price"] * (1 - lines["discount"]), atol=0.006)
    assert lines["discount"].between(0, 0.3).all()
    assert 0.02 < (lines["discount"] > 0).mean() < 0.3
    assert (lines["quantity"] >= 1).all()


def test_prices_above_cost_and_current_price_is_latest(store: SyntheticStore) -> None:
    products = store.shop["products"].set_index("product_id")
    prices = store.shop["product_prices"]
    assert (prices["list_price"] > prices["product_id"].map(products["cost"])).all()
    latest = prices.sort_values("valid_from").groupby("product_id")["list_price"].last()
    pd.testing.assert_series_equal(latest, products["current_price"], check_names=False)
    # List prices move over time: several changes per product on average.
    assert len(prices) > 3 * len(products)
    lines = store.shop["order_lines"]
    assert (lines["unit_price"] >= lines["product_id"].map(products["cost"]) - 0.01).mean() > 0.99


def test_every_order_has_a_funnel_session(store: SyntheticStore) -> None:
    events, orders = store.events, store.shop["orders"]
    purchases = events[events["event_type"] == "purchase"]
    assert len(purchases) == len(orders)
    assert sorted(purchases["event_time"]) == sorted(orders["order_ts"])
    sessions = events[events["session_id"] > 0]
    assert (events.loc[events["session_id"] == 0, "event_type"].astype(str).str.startswith("email_")).all()
    per_session = sessions.groupby("session_id", observed=True)
    assert (per_session["customer_id"].nunique() == 1).all()
    assert (per_session["channel"].nunique() == 1).all()
    assert (per_session["campaign"].nunique() == 1).all()
    bought = sessions[sessions["session_id"].isin(purchases["session_id"])]
    steps = bought.groupby("session_id", observed=True)["event_type"].agg(lambda s: list(s.astype(str)))
    assert (steps.str[0] == "page_view").all()
    assert (steps.str[-1] == "purchase").all()
    assert (steps.str[-2] == "checkout").all()
    assert steps.map(lambda s: "add_to_cart" in s and "product_view" in s).all()
    product_events = sessions["event_type"].isin(["product_view", "add_to_cart"])
    assert (sessions.loc[product_events, "product_id"] > 0).all()
    assert (sessions.loc[~product_events, "product_id"] == 0).all()
    # Anonymous visitors exist but never buy.
    assert (sessions["customer_id"] == 0).any()
    assert (purchases["customer_id"] > 0).all()


def test_cart_matches_order_lines(store: SyntheticStore) -> None:
    events, orders = store.events, store.shop["orders"]
    purchases = events.loc[events["event_type"] == "purchase", ["session_id", "customer_id", "event_time"]]
    linked = purchases.merge(
        orders.assign(customer_id=orders["customer_id"].astype("uint64")),
        left_on=["customer_id", "event_time"], right_on=["customer_id", "order_ts"],
    ).drop_duplicates(["customer_id", "event_time"], keep=False)
    carts = events[events["event_type"] == "add_to_cart"].merge(linked[["session_id", "order_id"]], on="session_id")
    cart_items = carts.groupby("order_id")["product_id"].agg(lambda s: sorted(s.astype("int64")))
    line_items = store.shop["order_lines"].groupby("order_id")["product_id"].agg(sorted)
    assert len(cart_items) > 0.9 * len(orders)
    assert (cart_items == line_items.reindex(cart_items.index)).all()


def test_status_and_channels(store: SyntheticStore) -> None:
    orders = store.shop["orders"]
    assert set(orders["status"]) == {"completed", "cancelled"}
    assert 0.01 < (orders["status"] == "cancelled").mean() < 0.06
    assert set(orders["channel"]) <= {"paid_search", "paid_social", "display", "affiliate", "organic", "direct",
                                       "email"}
    assert {"organic", "paid_search", "email"} <= set(orders["channel"])


# --- signal ------------------------------------------------------------------------------------


def test_purchase_rate_drives_orders(store: SyntheticStore) -> None:
    truth = store.truth["customers"].set_index("customer_id")
    counts = store.shop["orders"].groupby("customer_id").size().reindex(truth.index, fill_value=0)
    assert truth["purchase_rate"].corr(counts, method="spearman") > 0.3


def test_basket_value_follows_truth(store: SyntheticStore) -> None:
    lines = store.shop["order_lines"]
    value = (lines["unit_price"] * lines["quantity"]).groupby(lines["order_id"]).sum()
    orders = store.shop["orders"].assign(value=lambda o: o["order_id"].map(value))
    mean_value = orders.groupby("customer_id")["value"].mean()
    truth = store.truth["customers"].set_index("customer_id")["mean_basket_value"].reindex(mean_value.index)
    assert mean_value.corr(truth, method="spearman") > 0.3
    assert 0.7 < orders["value"].mean() / truth.mean() < 1.3


def _channel_spend(store: SyntheticStore, column: str = "spend") -> pd.DataFrame:
    """Day x paid channel, summed over the channel's campaigns."""
    return store.shop["marketing_spend"].pivot_table(index="day", columns="channel", values=column, aggfunc="sum")


def test_marketing_lift_reproducible_from_spend(store: SyntheticStore) -> None:
    spend = _channel_spend(store)
    lift = np.ones(DAYS)
    for channel in store.truth["channels"].itertuples():
        adstock = np.zeros(DAYS)
        carry = 0.0
        for d, amount in enumerate(spend[channel.channel].to_numpy()):
            carry = amount + channel.adstock_decay * carry
            adstock[d] = carry
        hill = adstock**channel.hill_slope / (adstock**channel.hill_slope + channel.half_saturation**channel.hill_slope)
        lift += channel.max_lift * hill
    np.testing.assert_allclose(lift, store.truth["daily_intensity"]["marketing_lift"], rtol=1e-9)
    assert (spend["paid_social"] == 0).any() and (spend["paid_social"] > 0).any()  # flights
    marketing = store.shop["marketing_spend"]
    assert (marketing["clicks"] <= marketing["impressions"]).all()
    assert ((spend.round(2) == 0) == (_channel_spend(store, "impressions") == 0)).all().all()


def test_email_opens_peak_at_best_hour(store: SyntheticStore) -> None:
    events = store.events
    emails = events[events["event_type"].isin(["email_send", "email_open"])].merge(
        store.shop["customers"][["customer_id", "timezone"]].astype({"customer_id": "uint64"}), on="customer_id"
    ).merge(store.truth["customers"][["customer_id", "best_hour_local"]].astype({"customer_id": "uint64"}),
            on="customer_id")
    sends = emails[emails["event_type"] == "email_send"].copy()
    sends["send_hour"] = _local_hour(sends["event_time"], sends["timezone"])
    assert sends["send_hour"].between(6, 22).all()
    distance = (sends["send_hour"] - sends["best_hour_local"]).abs()
    sends["distance"] = np.minimum(distance, 24 - distance)
    opens = emails[(emails["event_type"] == "email_open")]
    matched = pd.merge_asof(
        opens.sort_values("event_time")[["event_time", "customer_id", "is_machine"]],
        sends.sort_values("event_time")[["event_time", "customer_id", "distance"]].rename(
            columns={"event_time": "send_time"}
        ),
        left_on="event_time", right_on="send_time", by="customer_id",
    )
    assert matched["send_time"].notna().all()
    delay = matched["event_time"] - matched["send_time"]
    assert (delay <= pd.Timedelta(hours=5)).all()
    human = matched[matched["is_machine"] == 0]
    near = (human["distance"] <= 1).sum() / (sends["distance"] <= 1).sum()
    far = (human["distance"] >= 6).sum() / (sends["distance"] >= 6).sum()
    assert near > 3 * far
    machine = matched[matched["is_machine"] == 1]
    assert 0.005 < len(machine) / len(matched) < 0.08
    assert (delay[matched["is_machine"] == 1] <= pd.Timedelta(minutes=1)).all()
    clicks = (events["event_type"] == "email_click").sum()
    assert 0.1 < clicks / len(human) < 0.4


def test_elastic_products_lose_more_units_when_price_rises() -> None:
    # Larger than the shared store: the latent demand shocks confound price and units per product.
    days = 180
    store = generate_store(4000, days, START, seed=SEED)
    lines = store.shop["order_lines"].merge(store.shop["orders"][["order_id", "order_ts"]], on="order_id")
    lines["day"] = _utc_day(lines["order_ts"])
    units = lines.groupby(["product_id", "day"])["quantity"].sum()
    products = store.truth["products"].set_index("product_id")
    grid = pd.MultiIndex.from_product(
        [products.index, pd.date_range(START, periods=days)], names=["product_id", "day"]
    ).to_frame(index=False)
    prices = store.shop["product_prices"].rename(columns={"valid_from": "day"}).sort_values("day")
    grid = pd.merge_asof(grid.sort_values("day"), prices, on="day", by="product_id")
    grid["units"] = units.reindex(pd.MultiIndex.from_frame(grid[["product_id", "day"]])).fillna(0).to_numpy()
    by_product = grid.groupby("product_id")
    grid["log_price"] = np.log(grid["list_price"]) - by_product["list_price"].transform(lambda p: np.log(p).mean())
    grid["relative_units"] = grid["units"] / by_product["units"].transform("mean").clip(lower=1e-9)
    elastic = grid["product_id"].map(products["elasticity"] < products["elasticity"].median())
    slope = {
        is_elastic: (part["log_price"] * part["relative_units"]).sum() / (part["log_price"] ** 2).sum()
        for is_elastic, part in grid.groupby(elastic)
    }
    assert slope[True] < 0 and slope[False] < 0
    assert slope[True] < slope[False]


# --- campaigns, causes and journeys ------------------------------------------------------------

PAID = ("paid_search", "paid_social", "display", "affiliate")


def _contributions(store: SyntheticStore) -> pd.DataFrame:
    """beta_c hill_c(adstock_c(d)) per day and paid channel, from the spend and the channel truth."""
    spend = _channel_spend(store)
    out = {}
    for channel in store.truth["channels"].itertuples():
        adstock = np.zeros(len(spend))
        carry = 0.0
        for d, amount in enumerate(spend[channel.channel].to_numpy()):
            carry = amount + channel.adstock_decay * carry
            adstock[d] = carry
        hill = adstock**channel.hill_slope / (adstock**channel.hill_slope + channel.half_saturation**channel.hill_slope)
        out[channel.channel] = channel.max_lift * hill
    return pd.DataFrame(out, index=spend.index)


def _orders_with_causes(store: SyntheticStore) -> pd.DataFrame:
    causes = store.truth["order_causes"].rename(columns={"channel": "cause", "campaign": "cause_campaign"})
    orders = store.shop["orders"].merge(causes, on="order_id", validate="1:1")
    return orders.assign(day=_utc_day(orders["order_ts"]))


def test_cause_shares_are_the_channels_incremental_shares(store: SyntheticStore) -> None:
    orders = _orders_with_causes(store)
    assert len(orders) == len(store.shop["orders"])
    assert set(orders["cause"]) == {*PAID, "organic", "direct", "email"}
    # An order not caused by email is drawn from the day's mix given "not email": paid channel c with
    # probability (beta_c hill_c / lift) / (1 - 0.08 / lift); sum that over the orders.
    contribution = _contributions(store)
    lift = store.truth["daily_intensity"].set_index("day")["marketing_lift"]
    drawn = orders[orders["cause"] != "email"]
    given_not_email = contribution.div(lift - 0.08, axis=0).reindex(drawn["day"])
    for channel in PAID:
        expected = given_not_email[channel].sum()
        observed = (drawn["cause"] == channel).sum()
        assert abs(observed - expected) < 4 * np.sqrt(expected) + 3, (channel, observed, expected)
    paid = drawn["cause"].isin(PAID).sum() / given_not_email[list(PAID)].sum().sum()
    assert 0.85 < paid < 1.15


def test_campaign_spend_sums_to_the_channel_spend(store: SyntheticStore) -> None:
    spend = store.shop["marketing_spend"]
    campaigns = store.truth["campaigns"]
    assert set(spend["campaign"]) == set(campaigns["campaign"])
    assert (spend["campaign"].map(campaigns.set_index("campaign")["channel"]) == spend["channel"]).all()
    assert spend.groupby("channel")["campaign"].nunique().between(2, 3).all()
    assert len(spend) == DAYS * len(campaigns)  # a row per day and campaign, zero spend included
    assert (spend["spend"].round(2) == spend["spend"]).all() and (spend["spend"] >= 0).all()
    # the campaigns of a (day, channel) add up to the channel's spend: the spend the lift was drawn from
    lift = 1.0 + _contributions(store).sum(axis=1)
    np.testing.assert_allclose(lift, store.truth["daily_intensity"]["marketing_lift"], rtol=1e-9)
    totals = spend.groupby(["day", "channel"])["spend"].sum()
    np.testing.assert_allclose(totals, totals.round(2), atol=1e-9)
    # and the shares wander from block to block
    share = spend["spend"] / spend.groupby(["day", "channel"])["spend"].transform("sum")
    block = (spend["day"] - pd.Timestamp(START)).dt.days // 28
    brand = share[spend["campaign"] == "search_brand"].groupby(block).mean()
    assert brand.std() > 0.02
    # efficiency has a spend-weighted mean of 1 within every channel
    efficiency = spend["campaign"].map(campaigns.set_index("campaign")["efficiency"])
    weighted = (spend["spend"] * efficiency).groupby(spend["channel"]).sum() / spend.groupby("channel")["spend"].sum()
    np.testing.assert_allclose(weighted, 1.0, rtol=1e-9)


def _sessions(store: SyntheticStore) -> pd.DataFrame:
    web = store.events[store.events["session_id"] > 0]
    return web.groupby("session_id", observed=True).agg(
        customer_id=("customer_id", "first"), start=("event_time", "min"), channel=("channel", "first"),
        campaign=("campaign", "first"), bought=("event_type", lambda s: (s == "purchase").any()),
        n_events=("event_type", "size"),
    ).reset_index()


def test_assisted_orders_have_an_exposure_session_of_their_cause() -> None:
    store = generate_store(3000, 120, START, seed=SEED)
    orders = _orders_with_causes(store).sort_values(["customer_id", "order_ts"])
    orders["previous"] = orders.groupby("customer_id")["order_ts"].shift(1)
    paid = orders[orders["cause"].isin(PAID)]
    closed = paid[paid["channel"] != paid["cause"]]  # assisted, with a closer other than the cause
    assert set(closed["channel"]) <= {"direct", "organic", "paid_search"}
    assert len(closed) > 100
    # upper-funnel channels introduce, they rarely close
    handed_over = (paid["channel"] != paid["cause"]).groupby(paid["cause"]).mean()
    assert handed_over["display"] > 0.5 and handed_over["paid_social"] > 0.4
    assert handed_over["paid_search"] < handed_over["affiliate"] < handed_over["paid_social"]

    sessions = _sessions(store)
    sessions["customer_id"] = sessions["customer_id"].astype("int64")
    sessions["channel"] = sessions["channel"].astype(str)
    sessions["campaign"] = sessions["campaign"].astype(str)
    browsing = sessions[~sessions["bought"]]
    candidates = closed.merge(browsing, left_on=["customer_id", "cause", "cause_campaign"],
                              right_on=["customer_id", "channel", "campaign"], suffixes=("", "_session"))
    inside = (candidates["start"] < candidates["order_ts"]) \
        & (candidates["start"] >= candidates["order_ts"] - pd.Timedelta(days=7)) \
        & (candidates["previous"].isna() | (candidates["start"] > candidates["previous"]))
    exposed = candidates[inside]
    assert set(exposed["order_id"]) == set(closed["order_id"])
    # exposure sessions are browse-like: a page view and 1-3 product views, mostly 2 h or more before the order
    nearest = exposed.sort_values("start").groupby("order_id").last()
    assert nearest["n_events"].between(2, 4).mean() > 0.9
    assert ((nearest["order_ts"] - nearest["start"]) >= pd.Timedelta(hours=2)).mean() > 0.9
    # a paid_search closer carries its brand campaign
    purchases = sessions[sessions["bought"]]
    assert set(purchases.loc[purchases["session_id"].isin(
        store.events.loc[(store.events["event_type"] == "purchase") & store.events["customer_id"].isin(
            closed.loc[closed["channel"] == "paid_search", "customer_id"].astype("uint64")), "session_id"])
        & (purchases["channel"] == "paid_search"), "campaign"]) >= {"search_brand"}


def test_without_assists_the_order_channel_is_the_cause() -> None:
    plain = generate_store(800, 90, START, seed=SEED, attribution=NO_ASSISTS)
    orders = _orders_with_causes(plain)
    assert (orders["channel"] == orders["cause"]).all()
    sessions = _sessions(plain)
    purchase = sessions[sessions["bought"]].sort_values("start")
    assert len(purchase) == len(orders)
    # the default design draws the same orders and causes; only the channel of assisted orders moves
    assisted = generate_store(800, 90, START, seed=SEED)
    pd.testing.assert_frame_equal(plain.truth["order_causes"], assisted.truth["order_causes"])
    pd.testing.assert_frame_equal(plain.shop["orders"].drop(columns="channel"),
                                  assisted.shop["orders"].drop(columns="channel"))
    assert (plain.shop["orders"]["channel"] != assisted.shop["orders"]["channel"]).any()
    assert len(assisted.events) > len(plain.events)


def test_campaign_efficiency_tilts_the_causes() -> None:
    # Within a channel, a cause goes to campaign k with probability share_k(d) efficiency_k / sum_j ...;
    # the likelihood of the observed causes is far higher with the efficiencies than with spend shares alone.
    store = generate_store(6000, 180, START, seed=SEED)
    orders = _orders_with_causes(store)
    paid = orders[orders["cause"].isin(PAID)]
    spend = store.shop["marketing_spend"]
    share = spend["spend"] / spend.groupby(["day", "channel"])["spend"].transform("sum")
    share = spend.assign(share=share.fillna(0.0)).pivot(index="day", columns="campaign", values="share")
    efficiency = store.truth["campaigns"].set_index("campaign")
    gain, causes_per_share = 0.0, {}
    for channel, caused in paid.groupby("cause"):
        own = efficiency.index[efficiency["channel"] == channel]
        spent = share.loc[caused["day"], own].to_numpy()
        on_air = spent.sum(axis=1) > 0.99  # days with spend: the shares are the campaign shares
        chosen = pd.Categorical(caused["cause_campaign"], categories=own).codes[on_air]
        assert (chosen >= 0).all(), channel
        by_share = spent[on_air] / spent[on_air].sum(axis=1, keepdims=True)
        tilted = by_share * efficiency.loc[own, "efficiency"].to_numpy()
        tilted /= tilted.sum(axis=1, keepdims=True)
        rows = np.arange(len(chosen))
        gain += np.log(tilted[rows, chosen]).sum() - np.log(by_share[rows, chosen]).sum()
        for k, campaign in enumerate(own):
            causes_per_share[campaign] = (chosen == k).sum() / by_share[:, k].sum()
    assert gain > 10
    ratio = pd.Series(causes_per_share)
    assert ratio.corr(efficiency.loc[ratio.index, "efficiency"], method="spearman") > 0.5


def test_email_events_and_email_driven_orders_carry_a_newsletter(store: SyntheticStore) -> None:
    events = store.events
    email = events[events["event_type"].astype(str).str.startswith("email_")]
    assert email["campaign"].astype(str).str.fullmatch(r"newsletter_\d{4}_w\d{2}(_2)?").all()
    sends = email[email["event_type"] == "email_send"]
    iso = _utc_day(sends["event_time"]).dt.isocalendar()
    named = "newsletter_" + iso["year"].astype(str) + "_w" + iso["week"].astype(str).str.zfill(2)
    assert (sends["campaign"].astype(str).str[: len("newsletter_2024_w01")] == named).all()
    # an open or click belongs to the customer's latest send
    later = email[email["event_type"] != "email_send"].sort_values("event_time")
    matched = pd.merge_asof(later, sends.sort_values("event_time")[["event_time", "customer_id", "campaign"]],
                            on="event_time", by="customer_id", suffixes=("", "_send"))
    assert (matched["campaign"].astype(str) == matched["campaign_send"].astype(str)).all()
    orders = _orders_with_causes(store)
    # email causes name a newsletter, except baseline "email" orders before the first send
    by_email = orders[orders["cause"] == "email"]
    after_first_send = by_email["day"] >= _utc_day(sends["event_time"]).min()
    assert by_email.loc[after_first_send, "cause_campaign"].str.startswith("newsletter_").all()
    assert (by_email.loc[~after_first_send, "cause_campaign"] == "").all()
    assert (orders.loc[orders["cause"].isin(["organic", "direct"]), "cause_campaign"] == "").all()
    campaigns = store.truth["campaigns"].set_index("campaign")["channel"]
    paid = orders[orders["cause"].isin(PAID)]
    assert (paid["cause_campaign"].map(campaigns) == paid["cause"]).all()


def test_sessions_carry_a_campaign_of_their_channel(store: SyntheticStore) -> None:
    sessions = _sessions(store)
    channel, campaign = sessions["channel"].astype(str), sessions["campaign"].astype(str)
    of_channel = campaign.map(store.truth["campaigns"].set_index("campaign")["channel"])
    paid = channel.isin(PAID)
    assert (of_channel[paid] == channel[paid]).all()
    assert (campaign[channel.isin(["organic", "direct"])] == "").all()
    assert campaign[channel == "email"].str.startswith("newsletter_").mean() > 0.9
    # browse sessions of a paid channel spread over its campaigns (drawn by spend share)
    browse = sessions[~sessions["bought"] & (channel == "paid_search")]
    assert browse["campaign"].astype(str).value_counts(normalize=True).min() > 0.05


def test_chunks_carry_the_causes_of_their_orders() -> None:
    chunks = list(generate_store_chunks(1_200, 40, START, seed=3, chunk_customers=500))
    orders = pd.concat([chunk.shop["orders"] for chunk in chunks], ignore_index=True)
    causes = pd.concat([chunk.truth["order_causes"] for chunk in chunks], ignore_index=True)
    assert causes["order_id"].tolist() == orders["order_id"].tolist()
    assert "campaigns" in chunks[0].truth and all("campaigns" not in chunk.truth for chunk in chunks[1:])


def _traffic_mix(store: SyntheticStore) -> pd.DataFrame:
    """Day x channel: the browse traffic mix recomputed from the spend and generator_run (module docstring,
    Traffic)."""
    run = dict(zip(store.truth["generator_run"]["key"], store.truth["generator_run"]["value"]))
    spend = _channel_spend(store)
    weight = {c: pd.Series(float(run[f"traffic_weight.{c}"]), index=spend.index)
              for c in ("organic", "direct", "email")}
    weight |= {c: float(run[f"traffic_weight.{c}"]) * spend[c] / float(run[f"base_spend.{c}"]) for c in PAID}
    mix = pd.DataFrame(weight)
    return mix.div(mix.sum(axis=1), axis=0)


def test_browse_traffic_follows_its_own_mix() -> None:
    # without assists every session without a purchase is a browse or anonymous one
    store = generate_store(N_CUSTOMERS, DAYS, START, seed=SEED, attribution=NO_ASSISTS)
    sessions = _sessions(store)
    browse = sessions[~sessions["bought"]].assign(day=lambda f: _utc_day(f["start"]),
                                                 channel=lambda f: f["channel"].astype(str))
    expected = _traffic_mix(store).reindex(browse["day"]).sum()
    observed = browse["channel"].value_counts().reindex(expected.index, fill_value=0)
    for channel in expected.index:
        assert abs(observed[channel] - expected[channel]) < 4 * np.sqrt(expected[channel]) + 3, \
            (channel, observed[channel], expected[channel])
    # no ad clicks while a channel is off air (its adstock still causes orders then)
    off_air = _channel_spend(store)["paid_social"] == 0
    assert off_air.any()
    assert not (browse["channel"] == "paid_social")[browse["day"].map(off_air).to_numpy()].any()
    # organic and direct dominate; display brings far more sessions than orders
    share = observed / observed.sum()
    assert share["organic"] + share["direct"] > 0.45
    causes = store.truth["order_causes"]["channel"].value_counts(normalize=True)
    assert share["display"] > 2 * causes["display"]


def test_the_traffic_mix_moves_only_browse_sessions() -> None:
    # the cause mix (the generator before 1.2) and the traffic mix draw the same numbers
    traffic = generate_store(800, 90, START, seed=SEED)
    cause_mix = generate_store(800, 90, START, seed=SEED, attribution=AttributionDesign(traffic_weight=None))
    for name in traffic.shop:
        pd.testing.assert_frame_equal(traffic.shop[name], cause_mix.shop[name])
    for name in traffic.truth:
        if name != "generator_run":
            pd.testing.assert_frame_equal(traffic.truth[name], cause_mix.truth[name])
    pd.testing.assert_frame_equal(traffic.events.drop(columns=["channel", "campaign"]),
                                  cause_mix.events.drop(columns=["channel", "campaign"]))
    moved = (traffic.events["channel"].astype(str) != cause_mix.events["channel"].astype(str)).to_numpy()
    sessions = _sessions(traffic)
    assert 0.05 < sessions["session_id"].isin(traffic.events.loc[moved, "session_id"]).mean()
    assert not traffic.events.loc[moved, "session_id"].isin(sessions.loc[sessions["bought"], "session_id"]).any()
    assert (traffic.events.loc[moved, "session_id"] > 0).all()  # email events keep their channel
    run = dict(zip(cause_mix.truth["generator_run"]["key"], cause_mix.truth["generator_run"]["value"]))
    assert run["traffic_weight"] == "cause_mix" and "traffic_weight.organic" not in run
