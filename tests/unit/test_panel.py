"""Unit tests for the synthetic scanner panel: contract shape, determinism, listings, prices paid, and
known truth (elasticities, promotion lifts, cross-price effects) recoverable by simple estimates."""

from __future__ import annotations

import datetime as dt
import json
import time

import numpy as np
import pandas as pd
import pytest

from revopt.platform.contract import PROMO_TYPES, SHOP_DDL, TRUTH_DDL, ddl_columns
from revopt.sample_data.panel import SyntheticPanel, generate_panel, panel_summary

SEED = 7
#: no display, feature or substitution, and list prices independent of demand: price is the only
#: systematic driver of units besides noise
CLEAN = dict(display_share=0.0, feature_share=0.0, cross_elasticity_scale=0.0, price_confounding=0.0)


@pytest.fixture(scope="module")
def panel() -> SyntheticPanel:
    return generate_panel(seed=SEED)


@pytest.fixture(scope="module")
def rows(panel: SyntheticPanel) -> pd.DataFrame:
    return _period_rows(panel)


# --- helpers: what a user of the panel would compute from the source tables alone ---------------


def _expand(frame: pd.DataFrame, start: str, end: str, period_days: int, last_period: pd.Timestamp) -> pd.DataFrame:
    """One row per (product_id, period_start) covered by each [start, end] row (NULL end: to the last period)."""
    end_date = frame[end].fillna(last_period)
    count = ((end_date - frame[start]).dt.days // period_days + 1).to_numpy()
    repeated = frame.loc[frame.index.repeat(count)].reset_index(drop=True)
    offset = np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count)
    repeated["period_start"] = repeated[start] + pd.to_timedelta(offset * period_days, unit="D")
    return repeated


def _period_rows(panel: SyntheticPanel) -> pd.DataFrame:
    """``product_sales`` with the list price, the TPR depth (0: none), display / feature flags and the price paid."""
    sales = panel.shop["product_sales"]
    period_days = int(sales["period_days"].iloc[0])
    last = sales["period_start"].max()
    prices = panel.shop["product_prices"].rename(columns={"valid_from": "period_start"}).sort_values("period_start")
    rows = pd.merge_asof(sales.sort_values("period_start"), prices, on="period_start", by="product_id")
    promotions = _expand(panel.shop["promotions"], "start_date", "end_date", period_days, last)
    keys = ["product_id", "period_start"]
    for promo_type in PROMO_TYPES:
        on = promotions.loc[promotions["promo_type"] == promo_type, [*keys, "depth"]]
        rows = rows.merge(on.rename(columns={"depth": f"{promo_type}_depth"}).assign(**{promo_type: True}), on=keys, how="left")
        rows[promo_type] = rows[promo_type].eq(True)
    rows["depth"] = rows.pop("price_reduction_depth").fillna(0.0)
    rows = rows.drop(columns=["display_depth", "feature_depth"])
    rows["paid"] = np.round(rows["list_price"] * (1.0 - rows["depth"]), 2)
    return rows.sort_values(keys).reset_index(drop=True)


def _poisson_slopes(product: np.ndarray, log_price: np.ndarray, units: np.ndarray) -> pd.Series:
    """Per-product Poisson regression ``units ~ exp(a_j + b_j log_price)``: the slopes b_j (Newton, vectorised)."""
    ids, group = np.unique(product, return_inverse=True)
    x = log_price - (np.bincount(group, log_price) / np.bincount(group))[group]
    a, b = np.log(np.bincount(group, units) / np.bincount(group)), np.zeros(len(ids))
    for _ in range(30):
        mean = np.exp(a[group] + b[group] * x)
        g0, g1 = np.bincount(group, units - mean), np.bincount(group, (units - mean) * x)
        h00, h01, h11 = np.bincount(group, mean), np.bincount(group, mean * x), np.bincount(group, mean * x * x)
        det = h00 * h11 - h01**2
        a, b = a + (h11 * g0 - h01 * g1) / det, b + (h00 * g1 - h01 * g0) / det
    return pd.Series(b, index=ids)


def _brand_errors(panel: SyntheticPanel) -> pd.Series:
    """Mean over a brand's products of the per-product Poisson slope, minus the brand's true elasticity."""
    rows = _period_rows(panel)
    slopes = _poisson_slopes(rows["product_id"].to_numpy(), np.log(rows["paid"].to_numpy()), rows["units"].to_numpy())
    brands = panel.brands.set_index("product_id").assign(estimate=slopes)
    by_brand = brands.groupby("brand").agg(estimate=("estimate", "mean"), truth=("brand_elasticity", "first"))
    return by_brand["estimate"] - by_brand["truth"]


# --- shape ---------------------------------------------------------------------------------------

_DTYPE_OF_SQL = {"bigint": "int64", "integer": "int32", "text": "object", "boolean": "bool", "numeric": "float64",
                 "double": "float64", "date": "datetime64[ns]", "timestamptz": "datetime64[ns, UTC]"}


def _ddl_dtypes(ddl: str, table: str) -> dict[str, str]:
    body = ddl.split(f".{table} (", 1)[1].split("\n);", 1)[0]
    dtypes = {}
    for line in body.splitlines():
        parts = line.split("--")[0].split()
        if parts and parts[0] != "PRIMARY":
            dtypes[parts[0]] = next(d for sql, d in _DTYPE_OF_SQL.items() if parts[1].startswith(sql))
    return dtypes


def test_frames_have_the_contract_columns_and_dtypes(panel: SyntheticPanel) -> None:
    for ddl, frames in ((SHOP_DDL, panel.shop), (TRUTH_DDL, panel.truth)):
        assert set(frames) == set(ddl_columns(ddl))
        for name, columns in ddl_columns(ddl).items():
            assert list(frames[name].columns) == columns, name
            assert frames[name].dtypes.astype(str).to_dict() == _ddl_dtypes(ddl, name), name
    for name in ("customers", "orders", "order_lines", "marketing_spend", "competitor_prices", "inventory"):
        assert panel.shop[name].empty, name
    for name in ("products", "product_prices", "promotions", "product_sales", "listings", "product_groups"):
        assert len(panel.shop[name]) > 0, name
    assert panel.brands.dtypes.astype(str).to_dict() == {
        "product_id": "int64", "brand": "object", "store": "int64", "brand_elasticity": "float64"}


def test_primary_keys_are_unique_and_rows_sorted(panel: SyntheticPanel) -> None:
    keys = {"products": ["product_id"], "product_prices": ["product_id", "valid_from"],
            "promotions": ["product_id", "start_date", "promo_type"], "product_sales": ["product_id", "period_start"],
            "listings": ["product_id", "start_date"], "product_groups": ["product_id"]}
    for name, key in keys.items():
        assert not panel.shop[name].duplicated(key).any(), name
        assert panel.shop[name][key[:2]].equals(panel.shop[name][key[:2]].sort_values(key[:2])), name
    assert not panel.truth["cross_elasticities"].duplicated(["product_id", "other_product_id"]).any()


def test_same_seed_gives_identical_frames_and_another_seed_does_not() -> None:
    first, second = generate_panel(n_stores=6, periods=30, seed=3), generate_panel(n_stores=6, periods=30, seed=3)
    for name in first.shop:
        pd.testing.assert_frame_equal(first.shop[name], second.shop[name])
    for name in first.truth:
        pd.testing.assert_frame_equal(first.truth[name], second.truth[name])
    pd.testing.assert_frame_equal(first.brands, second.brands)
    other = generate_panel(n_stores=6, periods=30, seed=4)
    assert not first.shop["product_sales"].equals(other.shop["product_sales"])
    assert not first.truth["products"].equals(other.truth["products"])


def test_default_size_generates_in_under_three_seconds() -> None:
    began = time.perf_counter()
    panel = generate_panel()
    elapsed = time.perf_counter() - began
    assert len(panel.shop["products"]) == 80 * 11
    assert panel.shop["product_sales"]["period_start"].nunique() == 160
    assert elapsed < 3.0, f"{elapsed:.2f}s"


def test_arguments_are_checked() -> None:
    for bad in (dict(n_stores=0), dict(n_categories=4), dict(price_reduction_share=0.4, display_share=0.3),
                dict(display_share=-0.1), dict(delisted_share=0.9), dict(overdispersion=-1.0)):
        with pytest.raises(ValueError):
            generate_panel(**bad)


# --- products, brands and the hierarchy -------------------------------------------------------------


def test_products_name_their_brand_and_store(panel: SyntheticPanel) -> None:
    products = panel.shop["products"].merge(panel.brands, on="product_id")
    assert (products["name"] == products["brand"] + " @ store " + products["store"].astype(str).str.zfill(3)).all()
    assert (products["sku"].str.split("-").str[1] == "B" + products["brand"].str[-2:]).all()
    assert products["category"].eq("coffee").all()
    assert products.groupby("store").size().eq(11).all() and products.groupby("brand").size().eq(80).all()
    # the brand's own cost, with a little store noise
    assert products.groupby("brand")["cost"].agg(lambda c: c.std() / c.mean()).max() < 0.05
    last_price = panel.shop["product_prices"].groupby("product_id")["list_price"].last()
    assert (panel.shop["products"].set_index("product_id")["current_price"] == last_price).all()
    run = dict(zip(panel.truth["generator_run"]["key"], panel.truth["generator_run"]["value"]))
    assert run["seed"] == str(SEED) and run["n_products"] == "880"
    brand_truth = json.loads(run["brands"])
    assert brand_truth["Brand 03"]["elasticity"] == pytest.approx(
        panel.brands.loc[panel.brands["brand"] == "Brand 03", "brand_elasticity"].iloc[0], abs=1e-4)


def test_product_groups_hold_every_products_brand_and_store(panel: SyntheticPanel) -> None:
    groups = panel.shop["product_groups"]
    assert groups["product_id"].tolist() == panel.shop["products"]["product_id"].tolist()
    expected = panel.brands.assign(location="store " + panel.brands["store"].astype(str).str.zfill(3))
    pd.testing.assert_frame_equal(groups, expected[["product_id", "brand", "location"]])
    assert groups["brand"].nunique() == 11 and groups["location"].nunique() == 80
    assert groups.iloc[0].tolist() == [1, "Brand 01", "store 001"]
    names = panel.shop["products"].set_index("product_id")["name"]
    assert (groups["brand"] + " @ " + groups["location"]).tolist() == names.tolist()


def test_a_brand_elasticity_is_the_mean_of_its_products(panel: SyntheticPanel) -> None:
    truth = panel.truth["products"].merge(panel.brands, on="product_id")
    by_brand = truth.groupby("brand").agg(mean=("elasticity", "mean"), brand=("brand_elasticity", "first"),
                                          spread=("elasticity", "std"))
    assert np.allclose(by_brand["mean"], by_brand["brand"], atol=1e-9)
    assert by_brand["spread"].between(0.1, 0.4).all()  # stores differ
    assert truth["elasticity"].between(-4.5, -1.0).all()


def test_several_categories_and_a_daily_grain() -> None:
    panel = generate_panel(n_stores=5, n_brands=4, n_categories=2, periods=120, period_days=1, seed=2)
    products = panel.shop["products"].merge(panel.brands, on="product_id")
    assert len(products) == 5 * 2 * 4 and products.groupby("brand")["category"].nunique().eq(1).all()
    assert products.groupby("category")["brand"].nunique().eq(4).all()
    assert panel.shop["product_sales"]["period_days"].eq(1).all()
    assert panel.shop["product_sales"]["period_start"].nunique() == 120
    promotions = panel.shop["promotions"]
    length = (promotions["end_date"] - promotions["start_date"]).dt.days + 1
    last_day = panel.shop["product_sales"]["period_start"].max()
    assert length[promotions["end_date"] < last_day].isin([7, 14]).all()  # 1 or 2 weeks of daily periods
    cross = panel.truth["cross_elasticities"]
    category = products.set_index("product_id")["category"]
    assert (category[cross["product_id"]].to_numpy() == category[cross["other_product_id"]].to_numpy()).all()


# --- listings, promotions and prices ----------------------------------------------------------------


def test_delisted_periods_have_no_sales_rows_and_lie_outside_listings(panel: SyntheticPanel) -> None:
    sales, listings = panel.shop["product_sales"], panel.shop["listings"]
    last = sales["period_start"].max()
    listed = _expand(listings, "start_date", "end_date", 7, last)[["product_id", "period_start"]]
    pd.testing.assert_frame_equal(listed.sort_values(["product_id", "period_start"]).reset_index(drop=True),
                                  sales[["product_id", "period_start"]].reset_index(drop=True))
    summary = panel_summary(panel)
    assert 0.02 < summary["delisted_share"] < 0.04
    # in runs of several periods: gaps between listing periods, and runs touching the start or the end
    gaps = listings.groupby("product_id").apply(
        lambda g: ((g["start_date"].iloc[1:].to_numpy() - g["end_date"].iloc[:-1].to_numpy()) / np.timedelta64(7, "D")),
        include_groups=False)
    gap_weeks = np.concatenate(gaps.to_numpy())
    assert len(gap_weeks) > 100 and np.median(gap_weeks) >= 3
    assert listings["end_date"].isna().sum() > 800  # most products are still listed at the end
    assert (listings["end_date"] < last).any() and (listings.groupby("product_id")["start_date"].min() > sales["period_start"].min()).any()
    # promotions run only while the product is listed
    promoted = _expand(panel.shop["promotions"], "start_date", "end_date", 7, last)
    assert len(promoted.merge(listed, on=["product_id", "period_start"])) == len(promoted)


def test_listed_periods_with_no_sales_have_zero_units(panel: SyntheticPanel) -> None:
    units = panel.shop["product_sales"]["units"]
    assert (units == 0).sum() > 100
    assert (units == np.round(units)).all() and (units >= 0).all()
    zero = panel.shop["product_sales"][units == 0]
    assert (zero["revenue"] == 0).all()


def test_revenue_per_unit_is_the_list_price_less_the_price_cut(rows: pd.DataFrame) -> None:
    sold = rows[rows["units"] > 0]
    price = sold["revenue"] / sold["units"]
    tolerance = 0.005 / sold["units"] + 1e-9  # revenue is rounded to cents
    cut = sold["depth"] > 0
    assert cut.sum() > 5000
    assert ((price - sold["list_price"] * (1 - sold["depth"])).abs() <= 0.005 + tolerance).all()
    assert ((price[~cut] - sold.loc[~cut, "list_price"]).abs() <= tolerance[~cut]).all()
    assert sold.loc[cut, "depth"].between(0.05, 0.35).all() and (sold.loc[cut, "depth"] >= 0.10).mean() > 0.95


def test_promotions_cover_their_shares_in_whole_periods(panel: SyntheticPanel, rows: pd.DataFrame) -> None:
    promotions = panel.shop["promotions"]
    assert promotions["start_date"].dt.dayofweek.eq(0).all()  # periods start on Mondays like the data
    length = (promotions["end_date"] - promotions["start_date"]).dt.days + 1
    assert length.isin([7, 14]).all()
    assert promotions["depth"].isna().eq(promotions["promo_type"] != "price_reduction").all()
    assert rows["price_reduction"].mean() == pytest.approx(0.12, abs=0.01)
    assert rows["display"].mean() == pytest.approx(0.06, abs=0.01)
    assert rows["feature"].mean() == pytest.approx(0.06, abs=0.01)
    # displays and features come with a price cut more often than not, and without one too
    assert rows.loc[rows["display"], "price_reduction"].mean() == pytest.approx(0.6, abs=0.06)
    assert rows.loc[rows["feature"], "price_reduction"].mean() == pytest.approx(0.6, abs=0.06)
    assert set(promotions["promo_type"]) == set(PROMO_TYPES)


def test_list_prices_move_every_few_months_by_a_few_percent(panel: SyntheticPanel) -> None:
    prices = panel.shop["product_prices"]
    changes = prices.groupby("product_id").size() - 1
    assert 4 <= changes.mean() <= 16  # 160 weeks, a change every 8-26 weeks
    step = prices.groupby("product_id")["list_price"].pct_change().dropna().abs()
    assert step.median() < 0.1 and step.min() > 0
    assert ((prices["list_price"] * 100).round() % 10 == 9).all()  # prices end in 9 cents


# --- known truth, recovered --------------------------------------------------------------------------


def test_brand_elasticities_are_recovered_without_promotion_lifts_or_cross_effects() -> None:
    errors = _brand_errors(generate_panel(seed=SEED, **CLEAN))
    assert errors.abs().max() < 0.2, errors
    assert abs(errors.mean()) < 0.08


def test_misspecified_demand_is_not_constant_elasticity() -> None:
    errors = _brand_errors(generate_panel(seed=SEED, misspecified=True, **CLEAN))
    assert errors.mean() > 0.25, errors  # a saturating response: slopes are flatter than the truth


def test_promotion_lifts_show_in_matched_periods(panel: SyntheticPanel, rows: pd.DataFrame) -> None:
    """Units in display-only (feature-only) periods over the product's mean units in unpromoted periods
    at the same list price."""
    lifts = panel.truth["promotion_effects"].set_index("promo_type")["lift"]
    assert lifts["price_reduction"] == 1.0
    unpromoted = rows[~rows[list(PROMO_TYPES)].any(axis=1)]
    base = unpromoted.groupby(["product_id", "list_price"])["units"].mean().rename("base")
    for promo_type, other in (("display", "feature"), ("feature", "display")):
        alone = rows[rows[promo_type] & ~rows[other] & ~rows["price_reduction"]].join(base, on=["product_id", "list_price"])
        alone = alone.dropna(subset=["base"])
        assert len(alone) > 1000
        assert alone["units"].sum() / alone["base"].sum() == pytest.approx(lifts[promo_type], abs=0.1), promo_type


def test_competitor_price_cuts_take_units_as_the_cross_elasticities_say() -> None:
    """Same draws with and without substitution: in a product's unpromoted periods, units over its
    mean at the same list price follow ``prod_k (1 - depth_k) ** c_jk`` of the competitors' cuts."""
    factors = {}
    for scale in (0.4, 0.0):
        panel = generate_panel(seed=SEED, n_stores=40, cross_elasticity_scale=scale)
        rows = _period_rows(panel)
        factors[scale] = _cross_factor(rows, generate_panel(seed=SEED, n_stores=40).truth["cross_elasticities"])
    assert len(generate_panel(seed=SEED, n_stores=4, cross_elasticity_scale=0.0).truth["cross_elasticities"]) == 0
    observed, predicted = factors[0.4]
    assert predicted < 0.95 and observed == pytest.approx(predicted, abs=0.02)
    observed, _ = factors[0.0]
    assert observed == pytest.approx(1.0, abs=0.02)


def _cross_factor(rows: pd.DataFrame, cross: pd.DataFrame) -> tuple[float, float]:
    """(observed, predicted) ratio of units to the matched base in periods where competitors cut prices."""
    cuts = rows.loc[rows["depth"] > 0, ["product_id", "period_start", "depth"]].rename(columns={"product_id": "other_product_id"})
    pressure = cross.merge(cuts, on="other_product_id")
    pressure["log_factor"] = pressure["cross_elasticity"] * np.log1p(-pressure["depth"])
    log_factor = pressure.groupby(["product_id", "period_start"])["log_factor"].sum().rename("log_factor")
    unpromoted = rows[~rows[list(PROMO_TYPES)].any(axis=1)].join(log_factor, on=["product_id", "period_start"])
    unpromoted["log_factor"] = unpromoted["log_factor"].fillna(0.0)
    quiet = unpromoted[unpromoted["log_factor"] == 0]
    base = quiet.groupby(["product_id", "list_price"])["units"].mean().rename("base")
    pressed = unpromoted[unpromoted["log_factor"] < -0.05].join(base, on=["product_id", "list_price"]).dropna(subset=["base"])
    observed = pressed["units"].sum() / pressed["base"].sum()
    predicted = (pressed["base"] * np.exp(pressed["log_factor"])).sum() / pressed["base"].sum()
    return observed, predicted


def test_summary_of_the_default_panel(panel: SyntheticPanel) -> None:
    summary = panel_summary(panel)
    assert summary["products"] == 880
    assert 25 < summary["mean_units"] < 80
    assert summary["sales_rows"] == len(panel.shop["product_sales"])
    assert panel.truth["daily_intensity"]["day"].iloc[0] == pd.Timestamp(dt.date(2023, 1, 2))
