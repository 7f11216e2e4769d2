"""Customer taste in the synthetic store (revopt.sample_data.taste): strength 0 is the old store, product
draws follow the drawn taste exactly, purchases and views concentrate where the truth says, and the
truth taste ranks later purchases better than popularity."""

from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np
import pandas as pd
import pytest

from revopt.sample_data.synth import SyntheticStore, generate_store, generate_store_chunks
from revopt.sample_data.taste import NO_TASTE, TasteDesign, draw_taste

START = dt.date(2024, 1, 1)
DAYS = 365
N_CUSTOMERS = 3000
SEED = 17
#: the test split: purchases before it train the rankings, purchases from it on are what they must predict
SPLIT = pd.Timestamp(START, tz="UTC") + pd.Timedelta(days=270)


@pytest.fixture(scope="module")
def store() -> SyntheticStore:
    return generate_store(N_CUSTOMERS, DAYS, START, seed=SEED)


@pytest.fixture(scope="module")
def plain() -> SyntheticStore:
    return generate_store(N_CUSTOMERS, DAYS, START, seed=SEED, taste=NO_TASTE)


def _lines(store: SyntheticStore) -> pd.DataFrame:
    orders = store.shop["orders"][["order_id", "customer_id", "order_ts"]]
    products = store.shop["products"][["product_id", "category"]]
    return store.shop["order_lines"].merge(orders, on="order_id").merge(products, on="product_id")


def _category_shares(frame: pd.DataFrame) -> pd.DataFrame:
    """Per customer and category: count ``n`` and the share of the customer's rows, plus the customer's total."""
    counts = frame.groupby(["customer_id", "category"]).size().rename("n").reset_index()
    counts["total"] = counts.groupby("customer_id")["n"].transform("sum")
    return counts.assign(observed=counts["n"] / counts["total"])


# --- strength 0 --------------------------------------------------------------------------------------


def test_strength_zero_draws_exactly_the_store_before_taste() -> None:
    """Products of a tiny store drawn by generator 1.2.0 (before taste) with these arguments."""
    store = generate_store(300, 40, START, seed=5, taste=NO_TASTE)
    product = store.shop["order_lines"]["product_id"].to_numpy()
    viewed = store.events["product_id"].to_numpy().astype(np.int64)
    assert len(product) == 302 and product[:12].tolist() == [30, 49, 44, 38, 34, 14, 38, 26, 36, 5, 38, 48]
    assert int((product * np.arange(1, len(product) + 1)).sum()) == 1214455
    assert int((viewed * np.arange(1, len(viewed) + 1)).sum()) == 73613157
    assert store.truth["customer_taste"].empty


def test_taste_changes_only_which_products_are_bought_and_viewed(store, plain) -> None:
    for name in store.shop:
        columns = {"order_lines": ["product_id", "unit_price", "discount"]}.get(name, [])
        pd.testing.assert_frame_equal(store.shop[name].drop(columns=columns), plain.shop[name].drop(columns=columns))
    pd.testing.assert_frame_equal(store.events.drop(columns="product_id"), plain.events.drop(columns="product_id"))
    assert not store.shop["order_lines"]["product_id"].equals(plain.shop["order_lines"]["product_id"])
    run = dict(zip(store.truth["generator_run"]["key"], store.truth["generator_run"]["value"]))
    assert float(run["taste.strength"]) == TasteDesign().strength


# --- the draws follow the model ------------------------------------------------------------------


def test_product_draws_follow_the_taste_model_exactly() -> None:
    """Empirical draws of one customer on one day against P(c) ~ S_d(c) w(c) / S(c) and, within c,
    P(j) ~ p(d, j) (1 + b_j [favourite]), on a store with an empty category."""
    rng = np.random.default_rng(0)
    days, n_categories = 3, 4
    category = np.array([0, 0, 0, 1, 1, 3, 3, 3, 3, 0, 1, 3])  # category 2 sells nothing
    weights = rng.lognormal(0.0, 1.0, (days, len(category)))
    cdf = np.cumsum(weights, axis=1) / weights.sum(axis=1, keepdims=True)
    taste = draw_taste(rng, TasteDesign(strength=0.9, concentration=1.0, favourites=3, favourite_share=0.5),
                       cdf, category, n_categories, n_customers=4)
    choice = weights / weights.sum(axis=1, keepdims=True)
    mass = np.stack([choice[:, category == c].sum(axis=1) for c in range(n_categories)], axis=1)
    mean_mass = mass.mean(axis=0)
    n = 400_000
    uniforms = (np.arange(n) + 0.5) / n
    for customer, day in ((0, 0), (3, 2)):
        drawn = taste.draw(np.full(n, customer), np.full(n, day), uniforms)
        ratio = np.divide(mass[day], mean_mass, out=np.zeros(n_categories), where=mean_mass > 0)
        p_category = ratio * taste.share[customer] / (ratio * taste.share[customer]).sum()
        boost = 1.0 + taste.favourite_weight * np.bincount(taste.favourite[customer], minlength=len(category))
        within = choice[day] * boost
        expected = p_category[category] * within / np.bincount(category, within, n_categories)[category]
        np.testing.assert_allclose(np.bincount(drawn, minlength=len(category)) / n, expected, atol=2e-5)
    assert np.allclose(taste.share.sum(axis=1), 1.0) and (taste.share[:, 2] == 0).all()


def test_truth_shares_are_distributions_around_the_store_mix(store, plain) -> None:
    truth = store.truth["customer_taste"]
    assert not truth.duplicated(["customer_id", "category"]).any()
    assert truth["customer_id"].nunique() == N_CUSTOMERS and (truth["share"] > 0).all()
    np.testing.assert_allclose(truth.groupby("customer_id")["share"].sum(), 1.0)
    # the population keeps the store's category mix: taste moves who buys a category, not how much it sells
    mix = truth.groupby("category")["share"].mean()
    sold = _lines(plain)["category"].value_counts(normalize=True).reindex(mix.index)
    assert (mix - sold).abs().max() < 0.03


def test_purchases_concentrate_on_the_customers_categories_as_drawn(store, plain) -> None:
    observed = _category_shares(_lines(store))
    truth = store.truth["customer_taste"].merge(observed, on=["customer_id", "category"], how="left")
    truth = truth.fillna({"observed": 0.0})
    truth["total"] = truth.groupby("customer_id")["total"].transform("max")
    heavy = truth[truth["total"] >= 10]
    assert heavy["customer_id"].nunique() > 300
    assert heavy["share"].corr(heavy["observed"]) > 0.85
    top_with = heavy.groupby("customer_id")["observed"].max().mean()
    without = _category_shares(_lines(plain))
    top_without = without[without["total"] >= 10].groupby("customer_id")["observed"].max().mean()
    assert top_with > top_without + 0.12


def test_customers_rebuy_their_favourites() -> None:
    """On a large catalogue (few chance repeats), favourites add rebuys on top of the category taste."""
    def rebuy_share(taste: TasteDesign) -> float:
        lines = _lines(generate_store(N_CUSTOMERS, DAYS, START, seed=SEED, n_products=400, taste=taste))
        return float(lines.sort_values(["order_ts", "order_id"]).duplicated(["customer_id", "product_id"]).mean())

    with_favourites, categories_only = rebuy_share(TasteDesign()), rebuy_share(TasteDesign(favourite_share=0.0))
    assert with_favourites > categories_only + 0.03 and categories_only > rebuy_share(NO_TASTE) + 0.03


def test_known_customers_views_follow_their_taste(store) -> None:
    events = store.events
    views = events[(events["event_type"] == "product_view") & (events["customer_id"] > 0)]
    views = pd.DataFrame({"customer_id": views["customer_id"].to_numpy().astype(np.int64),
                          "product_id": views["product_id"].to_numpy().astype(np.int64)})
    views = views.merge(store.shop["products"][["product_id", "category"]], on="product_id")
    observed = _category_shares(views)
    joined = store.truth["customer_taste"].merge(observed, on=["customer_id", "category"], how="left")
    joined = joined.fillna({"observed": 0.0})
    joined["total"] = joined.groupby("customer_id")["total"].transform("max")
    heavy = joined[joined["total"] >= 20]
    assert heavy["share"].corr(heavy["observed"]) > 0.85


# --- the signal a recommender can learn ------------------------------------------------------------


def _hit_rate(ranking: pd.DataFrame, later: pd.DataFrame, k: int = 5) -> float:
    """Share of the customers' later purchases (customer, product) found in their top-``k`` of ``ranking``
    (columns customer_id, product_id, score)."""
    top = ranking.sort_values(["customer_id", "score"], ascending=[True, False]).groupby("customer_id").head(k)
    return float(later.merge(top, on=["customer_id", "product_id"], how="left")["score"].notna().mean())


def test_the_truth_taste_ranks_later_purchases_better_than_popularity(store) -> None:
    lines = _lines(store)
    before, later = lines[lines["order_ts"] < SPLIT], lines[lines["order_ts"] >= SPLIT]
    later = later[["customer_id", "product_id"]].drop_duplicates()
    popularity = before["product_id"].value_counts(normalize=True).rename("popularity").reset_index()
    popularity = popularity.merge(store.shop["products"][["product_id", "category"]], on="product_id")
    customers = pd.DataFrame({"customer_id": later["customer_id"].unique()})
    by_popularity = customers.merge(popularity, how="cross").rename(columns={"popularity": "score"})
    # the truth taste: the customer's category share x the product's popularity within its category
    within = popularity.assign(within=popularity["popularity"]
                               / popularity.groupby("category")["popularity"].transform("sum"))
    by_taste = store.truth["customer_taste"].merge(customers, on="customer_id").merge(within, on="category")
    by_taste["score"] = by_taste["share"] * by_taste["within"]
    popular, tasted = _hit_rate(by_popularity, later), _hit_rate(by_taste, later)
    assert tasted > 1.5 * popular, (tasted, popular)


# --- design and chunks ----------------------------------------------------------------------------


@pytest.mark.parametrize("change", [{"strength": -0.1}, {"strength": 1.5}, {"concentration": 0.0},
                                    {"favourites": 0}, {"favourite_share": 1.0}])
def test_invalid_taste_designs_raise(change) -> None:
    with pytest.raises(ValueError, match="TasteDesign"):
        dataclasses.replace(TasteDesign(), **change)


def test_every_chunk_carries_the_taste_of_its_customers() -> None:
    chunks = list(generate_store_chunks(900, 60, START, seed=3, chunk_customers=400))
    truth = pd.concat([chunk.truth["customer_taste"] for chunk in chunks], ignore_index=True)
    customers = pd.concat([chunk.shop["customers"]["customer_id"] for chunk in chunks])
    assert set(truth["customer_id"]) == set(customers) and not truth.duplicated(["customer_id", "category"]).any()
    np.testing.assert_allclose(truth.groupby("customer_id")["share"].sum(), 1.0)
