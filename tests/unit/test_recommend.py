"""Product recommendations: a store with planted tastes (groups of customers buying groups of products),
the family trained on it, its business rules, the cold start, the gate's evaluation and the pyfunc."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import time

import numpy as np
import pandas as pd
import pytest

from features.interactions import (
    RecommendationInput,
    daily_purchases,
    daily_views,
    order_items_from_shop,
    recommendation_input,
    split_recommendation_input,
)
from ml.evaluation import compare
from ml.family import config_spec
from ml.families.recommend import (
    FAMILY,
    MODEL_NAME,
    NDCG,
    PUBLISHED_COLUMNS,
    ItemFactors,
    RecsConfig,
    Rules,
    ndcg_at_k,
    precision_at_k,
    recall_at_k,
    top_k,
)
from ml.families import recommend as recommend_family
from ml.families.recommend.backtest import fitted
from ml.families.recommend.estimator import fold_in, weights
from ml.params import RunParams
from revopt.platform.extract import typed_order_items

RUN_DATE = dt.date(2024, 6, 1)
GROUPS = 6
PER_GROUP = 10
POSTAGE = GROUPS * PER_GROUP + 1  # a product in an excluded category, on most orders
PARAMS = RunParams(n_trials=2, seed=3, recs_exclude_categories=["postage"])


def planted_store(n_customers: int = 300, days: int = 365, seed: int = 0) -> dict[str, pd.DataFrame]:
    """Customer c belongs to taste group c % GROUPS (country UK for groups 0-2, FR for 3-5); 85 % of
    their items come from their group's 10 products (the first ones more often), the rest from the
    whole catalogue; postage rides on 70 % of orders. Product p's category is ``cat<p % 5>``."""
    rng = np.random.default_rng(seed)
    start = pd.Timestamp(RUN_DATE, tz="UTC") - pd.Timedelta(days=days)
    n_products = GROUPS * PER_GROUP
    within = np.linspace(2.0, 1.0, PER_GROUP)
    within /= within.sum()
    orders, lines = [], []
    for customer in range(1, n_customers + 1):
        group = customer % GROUPS
        n_orders = rng.poisson(days / 25)
        for _ in range(n_orders):
            order_id = len(orders) + 1
            orders.append((order_id, customer, start + pd.Timedelta(seconds=int(rng.integers(0, days * 86400)))))
            size = 1 + rng.poisson(1.0)
            own = rng.random(size) < 0.85
            products = np.where(own, group * PER_GROUP + 1 + rng.choice(PER_GROUP, size, p=within),
                                1 + rng.integers(0, n_products, size))
            products = list(np.unique(products)) + ([POSTAGE] if rng.random() < 0.7 else [])
            lines += [(order_id, int(p), int(1 + rng.poisson(0.5)), 5.0) for p in products]
    customers = pd.DataFrame({"customer_id": np.arange(1, n_customers + 1, dtype=np.int64)})
    customers["country"] = np.where(customers["customer_id"] % GROUPS < 3, "UK", "FR").astype(object)
    customers["acquisition_channel"] = "organic"
    products = pd.DataFrame({"product_id": np.arange(1, n_products + 2, dtype=np.int64)})
    products["category"] = [f"cat{p % 5}" for p in products["product_id"]]
    products.loc[products["product_id"] == POSTAGE, "category"] = "postage"
    products["name"] = "Product " + products["product_id"].astype(str)
    order_frame = pd.DataFrame(orders, columns=["order_id", "customer_id", "order_ts"]).assign(status="completed")
    line_frame = pd.DataFrame(lines, columns=["order_id", "product_id", "quantity", "unit_price"])
    items = order_items_from_shop(order_frame, line_frame, products)
    return {"customers": customers, "order_items": items, "products": products[["product_id", "category"]],
            "inventory": pd.DataFrame({"product_id": pd.Series(dtype="int64"), "day": pd.Series(dtype="datetime64[ns]"),
                                       "on_hand": pd.Series(dtype="int64")}),
            "product_views": pd.DataFrame({"customer_id": pd.Series(dtype="int64"), "product_id": pd.Series(dtype="int64"),
                                           "day": pd.Series(dtype="datetime64[ns]"), "views": pd.Series(dtype="int64")})}


@pytest.fixture(scope="module")
def store():
    return planted_store()


@pytest.fixture(scope="module")
def trained(store):
    data = FAMILY.training_data(store, RUN_DATE, PARAMS)
    return data, FAMILY.train(data, PARAMS, [])


def _published(store, trained, params: RunParams = PARAMS, frames=None):
    _, result = trained
    frames = frames or store
    return result.model.predict(None, FAMILY.nightly_input(frames, RUN_DATE, params), FAMILY.predict_params(RUN_DATE, params))


def test_the_model_beats_popularity_on_the_planted_tastes_and_logs_its_benchmarks(trained):
    data, result = trained
    assert FAMILY.name == "recommendations" and FAMILY.model_name == MODEL_NAME == "revopt_recommendations"
    model_ndcg, popular_ndcg = result.test.value(NDCG), result.baseline.value(NDCG)
    assert model_ndcg > 1.5 * popular_ndcg, (model_ndcg, popular_ndcg)
    assert compare(result.test, result.baseline, NDCG, seed=0).significant(0.05)
    assert result.metrics["test_ndcg_at_k"] == pytest.approx(model_ndcg)
    assert result.metrics["popularity_ndcg_at_k"] == pytest.approx(popular_ndcg)
    for name in ("test", "popularity", "item_knn"):
        assert {f"{name}_{key}" for key in ("ndcg_at_k", "precision_at_k", "recall_at_k", "coverage")} <= set(result.metrics)
    assert result.metrics["item_knn_ndcg_at_k"] > popular_ndcg
    # the test rows: one per customer with history who bought in the last 28 days what the rules allow
    assert result.test.window.startswith("purchases in [2024-05-04, 2024-06-01)")
    assert result.test.predicted.shape == (result.test.n, 10) and result.params["test_start"] == "2024-05-04"
    truth = result.test.y
    assert not np.isin(truth, [POSTAGE]).any()  # an excluded category is never relevant: it is never published
    assert result.spec["family"] == "recommendations" and result.spec["config"]["random_state"] == PARAMS.seed


def test_evaluate_refits_a_spec_exactly_as_train_scored_the_candidate(store, trained, monkeypatch):
    data, result = trained
    spec = json.loads(json.dumps(result.spec))
    # on the data training read (the registry's gate), the candidate's configuration is not fitted again
    fits = []
    monkeypatch.setattr(recommend_family, "fitted", lambda *args: fits.append(args) or fitted(*args))
    reused = FAMILY.evaluate(data, spec, PARAMS)
    assert fits == [] and reused.predicted is result.test.predicted
    # and a real refit of the spec (on the store read again) gives the same lists
    again = FAMILY.evaluate(FAMILY.training_data(store, RUN_DATE, PARAMS), spec, PARAMS)
    assert len(fits) == 1
    np.testing.assert_array_equal(again.y, result.test.y)
    np.testing.assert_array_equal(again.predicted, result.test.predicted)
    # another configuration is another list: evaluate fits the spec it is given
    other = FAMILY.evaluate(data, config_spec("recommendations", RecsConfig(factors=2, regularization=50.0)), PARAMS)
    np.testing.assert_array_equal(other.y, result.test.y)
    assert (other.predicted != result.test.predicted).any()
    assert FAMILY.evaluate(data, {"family": "pricing", "config": {}}, PARAMS) is None
    assert FAMILY.evaluate(data, {"family": "recommendations", "config": {"no_such_field": 1}}, PARAMS) is None


def test_published_lists_follow_the_rules(store, trained):
    last_day = store["order_items"]["order_ts"].max().floor("D")
    out_of_stock = [1, 2, 11, 12]
    frames = {**store, "inventory": pd.DataFrame({"product_id": np.array(out_of_stock + [3], dtype=np.int64),
                                                  "day": pd.Timestamp("2024-05-30"), "on_hand": [0, 0, 0, 0, 5]})}
    params = dataclasses.replace(PARAMS, recs_exclude_categories=["postage", "cat4"], recs_max_per_category=2,
                                 recs_exclude_bought_days=60, recs_k=6)
    published = _published(store, trained, params, frames)
    assert tuple(published.columns) == PUBLISHED_COLUMNS
    assert published.groupby("customer_id")["rank"].apply(lambda r: list(r) == list(range(1, len(r) + 1))).all()
    assert (published.groupby("customer_id").size() == 6).all()
    assert not published["category"].isin(["postage", "cat4"]).any()
    assert not published["product_id"].isin(out_of_stock).any()
    assert published.groupby(["customer_id", "category"]).size().max() <= 2
    purchases = daily_purchases(store["order_items"])
    recent = purchases.loc[purchases["day"] >= pd.Timestamp(RUN_DATE) - pd.Timedelta(days=60), ["customer_id", "product_id"]]
    clash = published.merge(recent.drop_duplicates(), on=["customer_id", "product_id"])
    assert clash.empty and last_day >= pd.Timestamp("2024-05-01", tz="UTC")
    # with the default rules the excluded postage (on most orders) never appears and the cap is 4
    default = _published(store, trained)
    assert not (default["product_id"] == POSTAGE).any() and default.groupby(["customer_id", "category"]).size().max() <= 4
    # without stock rules the out-of-stock products come back
    relaxed = _published(store, trained, dataclasses.replace(params, recs_exclude_out_of_stock=False), frames)
    assert relaxed["product_id"].isin(out_of_stock).any()


def test_model_lists_follow_the_tastes_and_name_a_purchase_that_explains_them(store, trained):
    published = _published(store, trained)
    model = published.loc[published["source"] == "model"]
    assert len(model) == len(published)  # every customer has history
    top = model.loc[model["rank"] <= 3]
    group_of_product = (top["product_id"] - 1) // PER_GROUP
    assert (group_of_product == top["customer_id"] % GROUPS).mean() > 0.9
    explained = model.loc[model["reason_product_id"].notna()]
    assert len(explained) > 0.8 * len(model)
    again = explained["reason_product_id"] == explained["product_id"]
    assert (explained.loc[again, "reason"] == "bought it before").all() and again.mean() < 0.5
    assert (explained.loc[~again, "reason"] == "bought with Product " + explained.loc[~again, "reason_product_id"].astype(str)).all()
    assert not (explained["reason_product_id"] == POSTAGE).any()  # an excluded category explains nothing
    bought = daily_purchases(store["order_items"])[["customer_id", "product_id"]].drop_duplicates()
    pairs = explained[["customer_id", "reason_product_id"]].rename(columns={"reason_product_id": "product_id"})
    assert len(pairs.astype({"product_id": "int64"}).merge(bought)) == len(pairs)  # the reason is their own purchase
    assert (model.loc[model["reason_product_id"].isna(), "reason"] == "model").all()


def test_a_partitions_lists_are_its_customers_lists_of_the_whole(store, trained):
    """A customer-hash partition (``customers_in``) folds in its own customers' history alone, and the popularity
    behind the cold start still ranks by everybody's: the same lists, bit for bit, as scoring everybody at once."""
    _, result = trained
    customers = pd.concat([store["customers"], pd.DataFrame({
        "customer_id": [9001, 9002], "country": ["FR", "UK"], "acquisition_channel": ["organic"] * 2})],
        ignore_index=True)
    frames = {**store, "customers": customers}
    whole = FAMILY.nightly_predict(result.model, frames, RUN_DATE, PARAMS)
    assert set(whole["source"]) == {"model", "segment_popularity"}
    for remainder in (0, 1, 2):
        part = FAMILY.nightly_predict(result.model, frames, RUN_DATE, PARAMS,
                                      customers_in=lambda ids, r=remainder: ids % 3 == r)
        own = whole.loc[whole["customer_id"] % 3 == remainder].reset_index(drop=True)
        pd.testing.assert_frame_equal(part.reset_index(drop=True), own, check_exact=True)


def test_cold_start_customers_get_their_segments_popular_products(store, trained):
    customers = pd.concat([store["customers"], pd.DataFrame({
        "customer_id": [9001, 9002, 9003], "country": ["FR", "UK", None], "acquisition_channel": ["organic"] * 3})],
        ignore_index=True)
    published = _published(store, trained, frames={**store, "customers": customers})
    cold = published.loc[published["customer_id"] >= 9000]
    fr, uk, unknown = (cold.loc[cold["customer_id"] == c] for c in (9001, 9002, 9003))
    assert set(fr["source"]) == {"segment_popularity"} and set(fr["reason"]) == {"popular in your segment"}
    assert fr["reason_product_id"].isna().all()
    # FR customers are groups 3-5: their segment's products, not the UK's
    assert ((fr["product_id"] - 1) // PER_GROUP >= 3).all() and ((uk["product_id"] - 1) // PER_GROUP < 3).all()
    assert set(unknown["source"]) == {"popularity"} and set(unknown["reason"]) == {"popular"}
    assert (fr["score"].diff().dropna() <= 0).all()


def test_the_pyfunc_round_trips_through_mlflow(store, trained, tmp_path):
    import mlflow
    from mlflow.models import infer_signature

    _, result = trained
    output = result.model.predict(None, result.example, result.predict_params)
    assert len(output) and np.isfinite(output["score"]).all()
    signature = infer_signature(result.example, output, params=result.predict_params)
    mlflow.pyfunc.save_model(tmp_path / "model", python_model=result.model, signature=signature,
                             pip_requirements=["pandas"])
    loaded = mlflow.pyfunc.load_model(str(tmp_path / "model"))
    tonight = FAMILY.nightly_input(store, RUN_DATE, PARAMS)
    assert list(tonight.columns) == list(result.example.columns)
    expected = result.model.predict(None, tonight, result.predict_params)
    pd.testing.assert_frame_equal(loaded.predict(tonight, params=result.predict_params), expected)
    # the nightly run's path (score_family): the same rows from the extract's frames, without the long frame
    pd.testing.assert_frame_equal(FAMILY.nightly_predict(result.model, store, RUN_DATE, PARAMS),
                                  loaded.predict(tonight, params=FAMILY.predict_params(RUN_DATE, PARAMS)))
    fewer = {**result.predict_params, "recs_k": 3, "recs_exclude_categories": json.dumps(["postage", "cat0"])}
    smaller = loaded.predict(tonight, params=fewer)
    assert smaller["rank"].max() == 3 and not (smaller["category"] == "cat0").any()


def test_shortfall_names_the_run_date_and_tables(store):
    few = planted_store(n_customers=8, days=120, seed=1)
    reason = FAMILY.shortfall(few, RUN_DATE, PARAMS)
    assert reason.startswith(f"recommendations for {RUN_DATE}: 7 customers bought") and "at least 20 customers" in reason
    assert "shop.orders" in reason and "shop.order_lines" in reason
    items = store["order_items"]
    stopped = {**store, "order_items": items.loc[items["order_ts"] < pd.Timestamp("2024-04-06", tz="UTC")]}
    reason = FAMILY.shortfall(stopped, RUN_DATE, PARAMS)
    assert "only 0 customers" in reason and "validation window [2024-04-06, 2024-05-04)" in reason
    empty = {**store, "order_items": typed_order_items(pd.DataFrame())}
    assert "0 customers" in FAMILY.shortfall(empty, RUN_DATE, PARAMS)
    assert FAMILY.shortfall(store, RUN_DATE, PARAMS) is None


def test_the_nightly_input_round_trips(store):
    tonight = FAMILY.nightly_input(store, RUN_DATE, PARAMS)
    parts = split_recommendation_input(tonight)
    pd.testing.assert_frame_equal(split_recommendation_input(recommendation_input(parts)).purchases, parts.purchases)
    assert len(parts.customers) == 300 and parts.purchases["day"].max() < pd.Timestamp(RUN_DATE)
    assert set(parts.catalogue.columns) == {"product_id", "category", "name", "on_hand"}
    assert parts.catalogue["name"].iloc[0] == "Product 1" and parts.catalogue["on_hand"].isna().all()


@pytest.mark.parametrize("item_pairs", ["looked up", "computed per customer"])
def test_fold_in_matches_implicit_and_its_explanations(item_pairs, monkeypatch):
    import scipy.sparse as sp
    from implicit.als import AlternatingLeastSquares

    from ml.families.recommend import kernels

    if item_pairs == "computed per customer":  # a catalogue too big for the items x items table
        monkeypatch.setattr(kernels, "ITEM_KERNEL_BYTES", 0)

    rng = np.random.default_rng(0)
    matrix = sp.random(200, 40, density=0.15, random_state=1, format="csr")
    matrix.data = rng.integers(1, 5, matrix.nnz).astype(float)
    for factors in (8, 32):  # histories longer and shorter than the factors: both solves
        config = RecsConfig(factors=factors, regularization=1.0, alpha=2.0, iterations=4, random_state=0)
        weighted = matrix.copy()
        weighted.data = weights(weighted.data, config).astype(np.float32)
        als = AlternatingLeastSquares(factors=factors, regularization=1.0, alpha=2.0, iterations=4, random_state=0,
                                      use_gpu=False, num_threads=1)
        als.fit(weighted, show_progress=False)
        model = ItemFactors(np.arange(40), np.asarray(als.item_factors, dtype=np.float64), config)
        cells = matrix.tocoo()
        solved = list(fold_in(model, cells.row.astype(np.int64), cells.col.astype(np.int64), cells.data,
                              np.ones(cells.nnz, dtype=bool)))
        x = np.zeros((200, factors))
        for batch in solved:
            x[batch.positions] = batch.x
        np.testing.assert_allclose(x, als.recalculate_user(np.arange(200), weighted), atol=1e-5)
        batch = solved[-1]
        user, item = int(batch.positions[0]), 7
        terms = batch.contributions(np.full((len(batch.positions), 1), item))[0, 0]
        total, top, _ = als.explain(user, weighted, itemid=item, N=1)
        assert terms.sum() == pytest.approx(total, abs=1e-5) == pytest.approx(x[user] @ model.factors[item], abs=1e-5)
        assert batch.items[0][np.where(batch.items[0] >= 0, terms, -np.inf).argmax()] == top[0][0]


@pytest.mark.parametrize("item_pairs", ["looked up", "computed per customer"])
def test_a_customer_folds_in_to_the_same_bits_alone_or_in_any_batch(item_pairs, monkeypatch):
    """Each customer is solved on their own (ml/families/recommend/kernels.py): the partitions of a night, or
    the order of the customers, cannot move a score or an explanation by a bit."""
    from ml.families.recommend import kernels

    if item_pairs == "computed per customer":
        monkeypatch.setattr(kernels, "ITEM_KERNEL_BYTES", 0)
    rng = np.random.default_rng(3)
    n_items, factors = 60, 16
    config = RecsConfig(factors=factors, regularization=1.0, alpha=2.0, iterations=1, random_state=0)
    model = ItemFactors(np.arange(n_items), rng.standard_normal((n_items, factors)) * 0.3, config)
    lengths = rng.integers(1, 30, 40)  # shorter and longer than the factors: both solves
    rows = np.repeat(np.arange(40), lengths)
    items = np.concatenate([rng.choice(n_items, size, replace=False) for size in lengths])
    n = rng.integers(1, 6, len(rows)).astype(float)
    chosen = rng.integers(-1, n_items, (40, 3))

    def solve(customers):
        keep = np.isin(rows, customers)
        x, terms = {}, {}
        for batch in fold_in(model, rows[keep], items[keep], n[keep], np.ones(int(keep.sum()), dtype=bool)):
            contributions = batch.contributions(chosen[batch.positions])
            for at, customer in enumerate(batch.positions):
                x[int(customer)] = batch.x[at]
                terms[int(customer)] = contributions[at][:, batch.items[at] >= 0]
        return x, terms

    together = solve(np.arange(40))
    for customer in (0, 7, 39):
        alone = solve([customer])
        assert alone[0][customer].tobytes() == together[0][customer].tobytes()
        assert alone[1][customer].tobytes() == together[1][customer].tobytes()
    evens = solve(np.arange(0, 40, 2))
    assert all(evens[0][c].tobytes() == together[0][c].tobytes() for c in evens[0])


def test_top_k_takes_the_best_scores_under_the_category_cap():
    scores = np.array([[9.0, 8.0, 7.0, 6.0, 5.0, -np.inf], [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]])
    categories = np.array([0, 0, 0, 1, 1, 2])
    chosen, values = top_k(scores, categories, k=4, cap=2)
    assert chosen.tolist() == [[0, 1, 3, 4], [5, 4, 3, 2]] and values[0].tolist() == [9.0, 8.0, 6.0, 5.0]
    chosen, _ = top_k(scores[:1], categories, k=4, cap=1)
    assert chosen.tolist() == [[0, 3, -1, -1]]  # nothing else qualifies: a shorter list


def test_ranking_metrics():
    y = np.array([[1, 2, -1], [3, -1, -1]], dtype=float)
    predicted = np.array([[2, 5, 1], [4, 6, 7]], dtype=float)
    ideal = 1 + 1 / np.log2(3)
    assert ndcg_at_k(y, predicted) == pytest.approx(((1 + 1 / np.log2(4)) / ideal + 0) / 2)
    assert precision_at_k(y, predicted) == pytest.approx((2 / 3 + 0) / 2)
    assert recall_at_k(y, predicted) == pytest.approx((1 + 0) / 2)
    assert ndcg_at_k(y[:1], np.array([[1, 2, 5]], dtype=float)) == pytest.approx(1.0)


def test_rules_validate_and_the_input_keeps_dtypes():
    with pytest.raises(ValueError, match="recs_k"):
        Rules(k=0)
    with pytest.raises(ValueError, match="weighting"):
        RecsConfig(weighting="bm25")
    empty = typed_order_items(pd.DataFrame())
    assert str(empty["order_ts"].dtype) == "datetime64[ns, UTC]" and str(empty["product_id"].dtype) == "int64"
    data = RecommendationInput(pd.DataFrame({"customer_id": [1], "country": [None], "acquisition_channel": ["x"]}),
                               daily_purchases(empty), pd.DataFrame({"customer_id": [1], "product_id": [2],
                                                                     "day": [pd.Timestamp("2024-01-01")], "views": [3]}),
                               pd.DataFrame({"product_id": [2], "category": ["a"], "name": ["n"], "on_hand": [np.nan]}))
    back = split_recommendation_input(recommendation_input(data))
    assert back.customers["country"].tolist() == [None] and back.views["views"].tolist() == [3]
    assert str(back.purchases["customer_id"].dtype) == "int64" and len(back.purchases) == 0


def test_the_product_views_extract_counts_known_customers_views_per_utc_day(tmp_path):
    import pyarrow as pa

    from revopt.platform.events import open_event_store
    from revopt.platform.extract import product_views
    from revopt.platform.stack import close_event_stores

    at = pd.Timestamp("2025-03-01 23:00", tz="UTC")
    rows = [  # (minutes after `at`, customer, event type, product, is_machine)
        (5, 1, "product_view", 11, 0), (50, 1, "product_view", 11, 0), (65, 1, "product_view", 11, 0),  # 2 days
        (10, 1, "add_to_cart", 11, 0), (10, 0, "product_view", 11, 0), (10, 2, "product_view", 11, 1),
        (10, 2, "product_view", 0, 0), (-60 * 24, 2, "product_view", 12, 0), (60 * 24, 2, "product_view", 12, 0),
        (20, 3, "product_view", 12, 0),
    ]
    events = pd.DataFrame({
        "event_time": [at + pd.Timedelta(minutes=m) for m, *_ in rows],
        "session_id": np.arange(1, len(rows) + 1, dtype="uint64"),
        "customer_id": np.array([r[1] for r in rows], dtype="uint64"), "event_type": [r[2] for r in rows],
        "product_id": np.array([r[3] for r in rows], dtype="uint64"), "channel": "direct", "device": "desktop",
        "is_machine": np.array([r[4] for r in rows], dtype="uint8"), "campaign": "",
    })
    close_event_stores()  # chDB serves one data folder per process at a time
    store = open_event_store(url=None, chdb_path=tmp_path / "chdb", database="revopt")
    try:
        store.insert_arrow("events", pa.Table.from_pandas(events, preserve_index=False))
        views = product_views(store, pd.Timestamp("2025-03-01", tz="UTC"), pd.Timestamp("2025-03-02 12:00", tz="UTC"))
    finally:
        store.close()
    assert views.to_dict("records") == [
        {"customer_id": 1, "product_id": 11, "day": pd.Timestamp("2025-03-01"), "views": 2},
        {"customer_id": 1, "product_id": 11, "day": pd.Timestamp("2025-03-02"), "views": 1},
        {"customer_id": 3, "product_id": 12, "day": pd.Timestamp("2025-03-01"), "views": 1},
    ]
    assert str(views["day"].dtype) == "datetime64[ns]" and str(views["customer_id"].dtype) == "int64"


def test_daily_views_are_in_customer_product_day_order_whatever_order_they_came_in():
    """The extract's query orders the views (one row per customer, product and day) already, and then they are not
    sorted again (27M rows at a million customers); any other order is sorted, ties in the earlier keys decided by
    the later ones."""
    rng = np.random.default_rng(4)
    n = 2_000
    views = pd.DataFrame({"customer_id": rng.integers(1, 40, n), "product_id": rng.integers(1, 6, n),
                          "day": pd.Timestamp("2025-01-01") + pd.to_timedelta(rng.integers(0, 9, n), unit="D"),
                          "views": rng.integers(1, 4, n)}).drop_duplicates(["customer_id", "product_id", "day"])
    expected = views.sort_values(["customer_id", "product_id", "day"], kind="stable").reset_index(drop=True)
    for order in (views, expected, expected.iloc[::-1], expected.sample(frac=1.0, random_state=1)):
        pd.testing.assert_frame_equal(daily_views(order), daily_views(expected))
    pd.testing.assert_frame_equal(daily_views(views), expected)
    # out of order in the last key alone, and in the first key alone
    for swapped in ([0, 2, 1], [2, 1, 0]):
        rows = pd.DataFrame({"customer_id": [1, 1, 1], "product_id": [5, 5, 5], "day": pd.to_datetime(
            ["2025-01-01", "2025-01-02", "2025-01-03"]), "views": [1, 2, 3]}).iloc[swapped]
        assert daily_views(rows)["views"].tolist() == [1, 2, 3]
    assert daily_views(pd.DataFrame({"customer_id": [2, 1], "product_id": [1, 9], "day": pd.to_datetime(
        ["2025-01-01", "2025-01-05"]), "views": [7, 8]}))["views"].tolist() == [8, 7]


def test_the_extract_suites_take_the_typed_extracts_and_catch_a_leak(store):
    from revopt.platform.extract import empty_product_views
    from revopt.platform.validation import validate_frame

    items = typed_order_items(store["order_items"])
    for name, frame in (("order_items", items), ("order_items", typed_order_items(pd.DataFrame())),
                        ("product_views", empty_product_views())):
        assert validate_frame(name, frame, RUN_DATE).success, name
    late = items.assign(order_ts=items["order_ts"].where(items.index > 0, pd.Timestamp(RUN_DATE, tz="UTC")))
    assert not validate_frame("order_items", late, RUN_DATE).success
    assert not validate_frame("order_items", pd.concat([items, items.head(1)]), RUN_DATE).success


def test_a_customer_the_model_can_recommend_nothing_to_gets_popularity():
    from ml.families.recommend import recommend

    day = pd.Timestamp("2024-05-20")
    data = RecommendationInput(
        pd.DataFrame({"customer_id": [1, 2, 3], "country": ["UK"] * 3, "acquisition_channel": ["x"] * 3}),
        pd.DataFrame({"customer_id": [1, 2, 3, 3], "product_id": [1, 3, 3, 4], "day": day, "orders": 1}),
        pd.DataFrame({"customer_id": pd.Series(dtype="int64"), "product_id": pd.Series(dtype="int64"),
                      "day": pd.Series(dtype="datetime64[ns]"), "views": pd.Series(dtype="int64")}),
        pd.DataFrame({"product_id": [3, 4], "category": ["a", "b"], "name": ["c", "d"], "on_hand": np.nan}))
    model = ItemFactors(np.array([1, 2]), np.array([[1.0, 0.0], [0.0, 1.0]]), RecsConfig(factors=2))
    ranked, catalogue = recommend(model, data, pd.Timestamp(RUN_DATE), Rules(exclude_bought_days=0))
    frame = ranked.frame(catalogue)
    assert frame.loc[frame["customer_id"] == 1, "product_id"].tolist() == [3, 4]  # product 1 left the catalogue
    assert set(frame.loc[frame["customer_id"] == 1, "source"]) == {"popularity"}


def test_training_reads_the_training_sample_customers_alone_and_the_whole_catalogue(store):
    """With fewer ``training_sample_customers`` than customers, tuning, the test window and the registered item
    factors learn from the seeded sample (the other families' customers): its customers, purchases and views."""
    from features.customer import sample_customers

    params = dataclasses.replace(PARAMS, training_sample_customers=120)
    data = FAMILY.training_data(store, RUN_DATE, params)
    everyone = FAMILY.training_data(store, RUN_DATE, PARAMS)
    chosen = sample_customers(pd.Index(store["customers"]["customer_id"]), 120, params.seed)
    assert len(everyone.interactions.customers) == 300 and set(everyone.interactions.purchases["customer_id"]) - set(chosen)
    assert list(data.interactions.customers["customer_id"]) == list(chosen)
    expected = everyone.interactions.purchases.loc[everyone.interactions.purchases["customer_id"].isin(chosen)]
    pd.testing.assert_frame_equal(data.interactions.purchases, expected.reset_index(drop=True))
    pd.testing.assert_frame_equal(data.interactions.catalogue, everyone.interactions.catalogue)
    assert set(data.test_window().customer_ids) <= set(chosen)


def test_an_als_fit_past_its_deadline_is_a_whole_fit_of_the_sweeps_it_made(store):
    from ml.families.recommend.backtest import search_space
    from ml.families.recommend.estimator import fit_als, strengths

    data = FAMILY.training_data(store, RUN_DATE, PARAMS)
    cells = strengths(data.interactions, 0.0)
    config = RecsConfig(factors=8, iterations=6, random_state=3)
    stopped = fit_als(cells, config, deadline=time.monotonic() - 1)
    assert stopped.config == dataclasses.replace(config, iterations=1)
    np.testing.assert_array_equal(stopped.factors, fit_als(cells, stopped.config).factors)
    whole = fit_als(cells, config, deadline=time.monotonic() + 3600)
    assert whole.config == config
    np.testing.assert_array_equal(whole.factors, fit_als(cells, config).factors)
    # in the search a trial past the deadline is scored as the fit it is; the default is always fitted whole
    space = search_space(data.valid_window(), config, deadline=time.monotonic() - 1)
    assert space.score(dataclasses.replace(config, factors=4)).config.iterations == 1
    assert space.score(config).config is config
