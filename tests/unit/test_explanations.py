"""The published top factors: words for every feature, contributions converted into the score's unit
(checked against brute force), and the JSON a downstream app reads (docs/explanations.md)."""

from __future__ import annotations

import json

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression, PoissonRegressor

from features.customer import FEATURE_COLUMNS
from features.descriptions import DESCRIPTIONS
from ml.families.explain import _template_parts, converted_contributions, score_terms, top_factors
from ml.families.text_rows import Pool, numbers, render
from ml.families.binary import BTYD_FEATURES
from ml.families.explain import factors_json
from ml.pipeline import _combine_json

KEYS = {"feature", "label", "unit", "value", "contribution", "contribution_link", "sentence"}


def _parsed(series: pd.Series) -> list[list[dict]]:
    return [json.loads(row) for row in series]


def test_every_feature_a_customer_model_can_use_has_words():
    usable = {*FEATURE_COLUMNS, *BTYD_FEATURES}
    assert usable <= set(DESCRIPTIONS), f"no description for {sorted(usable - set(DESCRIPTIONS))}"
    for feature, description in DESCRIPTIONS.items():
        texts = (description.label, description.unit, description.phrase)
        assert not any(c in text for text in texts for c in '"\\\n'), feature  # written into JSON unescaped
        assert description.phrase.count("{value}") == 1, feature
        before, between, one, many, after = _template_parts(description.phrase)
        assert "{" not in before + between + one + many + after, feature


def test_template_parts_split_the_value_and_the_plural_word():
    assert _template_parts("no session for {value} day{s}") == ("no session for ", " day", "", "s", "")
    assert _template_parts("in {value} categor{y|ies} bought") == ("in ", " categor", "y", "ies", " bought")
    assert _template_parts("a spread of {value}") == ("a spread of ", "", "", "", "")


def _texts(x: list[float], decimals: list[int]) -> list[str]:
    """Each number alone as a row of text."""
    pool = Pool()
    slots = numbers(np.array(x)[None, None, :], np.array(decimals)[None, None, :], pool)
    return render(pool, [-1], np.zeros((1, 0, len(x)), dtype=np.int32), slots)


def test_numbers_have_fixed_decimals_and_null_when_not_finite():
    assert _texts([-0.04, -12.346, 3.0, 0.996, np.nan, np.inf, -np.inf, 123_456.7, -2.5e17, 0.05, 7.0, -1e-9],
                  [1, 2, 0, 2, 1, 1, 1, 1, 1, 4, 3, 2]) == [
        "0.0", "-12.35", "3", "1.00", "null", "null", "null", "123456.7", "-250000000000000000.0", "0.0500", "7.000",
        "0.00"]


def test_rows_of_text_are_written_from_pooled_pieces_of_any_length_and_bytes():
    pool = Pool()
    euro, word, comma = pool.id("€"), pool.id("spend"), pool.id(", ")
    strings = np.array([[[euro, pool.id(""), euro]], [[word, word, pool.id("a longer piece than the others")]]],
                       dtype=np.int32).reshape(2, 1, 3)  # repeats x string slots x rows
    slots = numbers(np.array([[[1.5, -2.25, 1e18]], [[3.0, np.nan, 0.004]]]).reshape(2, 1, 3), 2, pool)
    rows = render(pool, [0, -1], strings, slots, opening=pool.id("<"), separator=comma, closing=pool.id(">"))
    assert rows == ["<€1.50, spend3.00>", "<-2.25, spendnull>", "<€1000000000000000000.00, a longer piece than the others0.00>"]
    assert render(pool, [0], np.zeros((1, 1, 0), dtype=np.int32), slots) == []
    with pytest.raises(ValueError, match="line break"):
        pool.id("two\nlines")


def test_factors_of_equal_size_keep_the_column_order():
    contributions = pd.DataFrame({"orders_90d": [0.2, 0.2], "monetary": [0.1, 0.2], "recency_days": [0.2, 0.0],
                                  "tenure_days": [0.5, 0.0]})
    rows = _parsed(top_factors(contributions, contributions * 0 + 1, np.array([0.5, 0.5]), score_terms("churn_risk"), k=3))
    assert [[f["feature"] for f in row] for row in rows] == [["tenure_days", "orders_90d", "recency_days"],
                                                            ["orders_90d", "monetary", "recency_days"]]


def _linear_data(seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"recency_days": rng.gamma(2.0, 30.0, 400), "orders_90d": rng.poisson(2.0, 400).astype(float),
                         "discount_share": rng.uniform(0, 1, 400)})


def _brute_force(model, X: pd.DataFrame, predict) -> pd.DataFrame:
    """Each feature's effect removed the slow way: the feature set to its mean (where a linear model's
    exact SHAP value ``coef * (x - mean)`` is zero) and the model asked again."""
    published = predict(model, X)
    return pd.DataFrame({feature: published - predict(model, X.assign(**{feature: X[feature].mean()}))
                         for feature in X.columns}, index=X.index)


def test_probability_points_equal_the_score_change_when_the_feature_is_removed():
    X = _linear_data()
    y = (X["orders_90d"] - 0.02 * X["recency_days"] + np.random.default_rng(1).normal(0, 1, len(X)) > 1).astype(int)
    model = LogisticRegression().fit(X, y)
    shap = pd.DataFrame((X - X.mean()).to_numpy() * model.coef_[0], index=X.index, columns=X.columns)
    p = model.predict_proba(X)[:, 1]
    expected = 100 * _brute_force(model, X, lambda m, frame: m.predict_proba(frame)[:, 1])
    np.testing.assert_allclose(converted_contributions(shap.to_numpy(), p, "logit"), expected.to_numpy(), atol=1e-9)

    factors = _parsed(top_factors(shap, X, p, score_terms("purchase_propensity"), k=3))
    for row, listed in enumerate(factors):
        assert [f["feature"] for f in listed] == list(expected.iloc[row].abs().sort_values(ascending=False, kind="stable").index)
        for factor in listed:
            assert factor["contribution"] == pytest.approx(expected.iloc[row][factor["feature"]], abs=0.05 + 1e-9)
            assert factor["contribution_link"] == pytest.approx(shap.iloc[row][factor["feature"]], abs=5e-5 + 1e-12)
            assert factor["value"] == pytest.approx(X.iloc[row][factor["feature"]], abs=0.5)  # days: whole
            assert 0 <= 100 * p[row] - factor["contribution"] <= 100


def test_currency_equals_the_spend_change_when_the_feature_is_removed_through_a_log_link():
    X = _linear_data(2)
    spend = np.random.default_rng(3).gamma(1.0, np.exp(3 + 0.3 * X["orders_90d"] - 0.01 * X["recency_days"]))
    model = PoissonRegressor(alpha=0.0).fit(X, spend)
    shap = pd.DataFrame((X - X.mean()).to_numpy() * model.coef_, index=X.index, columns=X.columns)
    published = model.predict(X) * 3.0  # a horizon scaling: a constant factor carries through exactly
    expected = 3.0 * _brute_force(model, X, lambda m, frame: m.predict(frame))
    np.testing.assert_allclose(converted_contributions(shap.to_numpy(), published, "log"), expected.to_numpy(), rtol=1e-9)

    factors = _parsed(top_factors(shap, X, published, score_terms("clv", 90), k=2))
    for row, listed in enumerate(factors):
        for factor in listed:
            assert factor["contribution"] == pytest.approx(expected.iloc[row][factor["feature"]], abs=0.005 + 1e-9)
            assert "expected 90-day spend by " in factor["sentence"]


def test_tree_factors_match_a_row_by_row_reference():
    """LightGBM's exact TreeSHAP, converted and ranked one row at a time in plain Python, against the
    vectorised JSON."""
    rng = np.random.default_rng(4)
    X = pd.DataFrame({name: rng.poisson(3 + i, 3000).astype(float) for i, name in enumerate(FEATURE_COLUMNS[:8])})
    y = (X.iloc[:, 0] - X.iloc[:, 1] + rng.normal(0, 2, len(X)) > 0).astype(int)
    booster = lgb.train({"objective": "binary", "verbosity": -1, "num_leaves": 8, "seed": 0}, lgb.Dataset(X, label=y), 30)
    raw = booster.predict(X, pred_contrib=True)
    shap = pd.DataFrame(raw[:, :-1], index=X.index + 100, columns=X.columns)
    p = booster.predict(X)
    factors = _parsed(top_factors(shap, X.set_index(shap.index), p, score_terms("churn_risk"), k=3))
    for row in range(0, len(X), 97):
        log_odds = raw[row].sum()
        assert 1 / (1 + np.exp(-log_odds)) == pytest.approx(p[row])
        points = {f: 100 * (p[row] - 1 / (1 + np.exp(-(log_odds - raw[row, j])))) for j, f in enumerate(X.columns)}
        ranked = sorted(points, key=lambda f: -abs(points[f]))[:3]
        listed = factors[row]
        assert [f["feature"] for f in listed] == ranked
        for factor in listed:
            assert set(factor) == KEYS
            assert factor["contribution"] == pytest.approx(points[factor["feature"]], abs=0.05 + 1e-9)
            assert factor["value"] == X.iloc[row][factor["feature"]]
            if factor["contribution"] == 0:  # rounds to 0.0 points
                assert factor["sentence"].endswith(" the churn risk") and " barely change" in factor["sentence"]
                continue
            verb = "raise" if points[factor["feature"]] > 0 else "lower"
            assert f" {verb}" in factor["sentence"] and factor["sentence"].endswith(
                f"the churn risk by {abs(factor['contribution']):.1f} points")


def test_sentences_put_the_value_and_the_direction_into_words():
    contributions = pd.DataFrame({"days_since_last_session": [-0.5, 0.4], "orders_90d": [0.3, -0.6],
                                  "discount_share": [0.1, 0.2], "monetary": [0.0, 0.05]}, index=[1, 2])
    values = pd.DataFrame({"days_since_last_session": [41, 1], "orders_90d": [3, 1], "discount_share": [0.25, np.nan],
                           "monetary": [10.0, 1234.5]}, index=[1, 2])
    first, second = _parsed(top_factors(contributions, values, np.array([0.3, 0.5]), score_terms("purchase_propensity"), k=4))
    sentences = {f["feature"]: f["sentence"] for f in first}
    assert sentences["days_since_last_session"] == "no session for 41 days lowers the purchase chance by 11.4 points"
    assert sentences["orders_90d"] == "3 orders in the last 90 days raise the purchase chance by 5.9 points"
    assert sentences["discount_share"].startswith("25% of spend on discount raises")
    assert sentences["monetary"].endswith(" barely changes the purchase chance")  # not "raises ... by 0.0 points"
    assert {f["feature"]: f for f in first}["monetary"]["contribution"] == 0
    by_feature = {f["feature"]: f for f in second}
    assert by_feature["orders_90d"]["sentence"].startswith("1 order in the last 90 days lowers")
    assert by_feature["days_since_last_session"]["sentence"].startswith("no session for 1 day raises")
    assert by_feature["discount_share"]["value"] is None
    assert by_feature["discount_share"]["sentence"].startswith("share of spend on discount unknown raises")
    assert (by_feature["days_since_last_session"]["unit"], by_feature["discount_share"]["unit"]) == ("days", "share")

    clv = _parsed(top_factors(contributions, values, np.array([80.0, 200.0]), score_terms("clv", 90), k=4, currency="EUR "))
    money = {f["feature"]: f for f in clv[1]}["monetary"]
    assert money["sentence"] == "total spend of EUR 1234.50 raises expected 90-day spend by EUR 9.75"
    assert money["contribution"] == pytest.approx(9.75) and money["unit"] == "currency"
    plain = _parsed(top_factors(contributions, values, np.array([80.0, 200.0]), score_terms("clv", 90), k=4))
    assert {f["feature"]: f for f in plain[1]}["monetary"]["sentence"].endswith("raises expected 90-day spend by 9.75")


def test_the_pipeline_explains_each_score_with_the_models_own_columns():
    class Btyd:  # stands in for ml.families.binary.BtydFeatures: a column derived from the features
        def transform(self, X):
            return X.assign(btyd_p_alive=0.25)

    class Model:
        btyd = Btyd()

        def contributions(self, X):
            return pd.DataFrame({"orders_90d": 0.1 * X["orders_90d"], "btyd_p_alive": -0.7, "bias": -2.0}, index=X.index)

    class Btyd_only:
        def contributions(self, X):
            return None

    X = pd.DataFrame({"orders_90d": [0.0, 4.0]}, index=pd.Index([5, 6], name="customer_id"))
    propensity = factors_json(Model(), X, "purchase_propensity", np.array([0.2, 0.4]))
    rows = _parsed(propensity)
    assert [[f["feature"] for f in row] for row in rows] == [["btyd_p_alive", "orders_90d"]] * 2
    assert rows[0][0]["value"] == 0.25 and rows[1][1]["value"] == 4
    assert rows[0][0]["sentence"].startswith("a 25% chance of still being an active customer lowers the purchase chance")
    assert list(factors_json(Btyd_only(), X, "clv", np.array([1.0, 2.0]))) == ["null", "null"]
    combined = _combine_json({"purchase_propensity": propensity, "churn_risk": pd.Series("null", index=X.index)})
    assert json.loads(combined[1])["purchase_propensity"][1]["contribution_link"] == pytest.approx(0.4)
    assert json.loads(combined[1])["churn_risk"] is None


def test_unknown_scores_and_links_are_refused():
    with pytest.raises(ValueError, match="no explanation terms"):
        score_terms("send_time")
    with pytest.raises(ValueError, match="unknown link"):
        converted_contributions(np.zeros((1, 1)), np.ones(1), "identity")
