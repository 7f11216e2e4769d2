"""Synthetic retail scanner panel: weekly (or daily) sales of store x brand products with promotions.

Stores that sell through shelves (grocery, pharmacy, DIY) keep aggregated sales per product and
period instead of order lines, and know their promotions.  :func:`generate_panel` draws such a
panel -- by default 80 stores x 11 brands of one category (880 products) over 160 weeks -- and
returns a :class:`SyntheticPanel`:

- ``shop``: every table of :data:`revopt.platform.contract.SHOP_DDL`; ``products``,
  ``product_prices``, ``promotions``, ``product_sales``, ``listings`` and ``product_groups`` (brand
  ``'Brand 03'``, location ``'store 017'``) are filled, the rest (customers, orders, order lines,
  marketing spend, competitor prices, inventory) are empty frames,
- ``truth``: every table of :data:`revopt.platform.contract.TRUTH_DDL`; ``generator_run``,
  ``products``, ``promotion_effects``, ``cross_elasticities`` and ``daily_intensity`` are filled,
- ``brands``: (product_id, brand, store, brand_elasticity), not a contract table, for benchmarks
  (the brand's true elasticity; brand and store are also in ``shop.product_groups``, in the name of
  ``shop.products``, ``'Brand 03 @ store 017'``, and in the middle of ``sku``, ``'COF-B03-S017'``).

There are no customers and no clickstream.  :func:`load_panel` loads the panel into the sources
(:func:`revopt.sample_data.seed.load_sources`).  Everything is a pure function of the arguments:
randomness comes from named child streams of ``np.random.SeedSequence(seed)``, draws are
vectorised over products (Python loops run only over periods).

Generative model
----------------
Products.  A product is one brand in one store: ``n_stores x n_categories x n_brands`` of them,
``product_id`` 1..N in (store, category, brand) order; ``n_brands`` is per category, brands are
numbered 1..``n_categories x n_brands`` across categories.  Store size ~ LogNormal(0, 0.35), brand
share ~ LogNormal(0, 0.9) (a few big brands, a tail of small ones), store-brand noise
~ LogNormal(0, 0.2); their product, normalised to mean 1, is the product's ``popularity``: its
expected units per period at reference prices relative to the mean product, which sells
``weekly_units x period_days / 7``.  Brand reference price = the category's typical price x
LogNormal(0, 0.25); the product's = brand x store price index LogNormal(0, 0.04) x LogNormal(0, 0.02).
Brand cost = brand reference price / Uniform(1.4, 1.8); the product's = brand cost x LogNormal(0, 0.02).

Elasticities (hierarchical: store within brand within category).  Category mean (literature for
grocery categories: -1.5 .. -4, meta-analysis mean about -2.6), brand elasticity = category mean +
N(0, 0.4); product elasticity = brand + store effect N(0, 0.2) (shared by every brand of the store)
+ N(0, 0.1).  Store effects are centred over stores and the product noise within each brand, so a
brand's elasticity is exactly the mean of its products' (bounds [-6, -0.3] aside, which bind
almost never).

Demand level.  Each product has a slowly moving log demand level ``u_j(t)``: AR(1) with
per-day persistence 0.995 (so 0.966 per week), stationary sd 0.15; each store adds an i.i.d.
log shock N(0, 0.08) per period shared by its products.  Both enter as ``exp(. - var / 2)``, mean 1.

Calendar.  Daily seasonality = day-of-week factor (visible in daily panels only) x (1 + 0.06 cos,
peaking mid January) + a Christmas bump of 0.2; a period's factor is the mean over its days.

Regular (list) prices.  Piecewise constant on a price grid ending in 9 cents, starting within 3 %
of the reference price.  Every 8-26 weeks a product's list price moves 2-8 % (to the next grid
point up or down), up with probability ``sigmoid(price_confounding x u_j(t) / 0.15 - 5 log(list /
reference))``: prices rise when demand is high (confounding: a naive log-log regression is biased
towards zero unless it sees the level) and revert towards the reference price; between 1.15 x
cost and 1.6 x reference.  ``price_confounding=0`` makes price changes independent of demand.

Promotions (``shop.promotions``).  Promotion events run 1 or 2 weeks (probability 0.6 / 0.4;
rounded to whole periods), start on a period and are separated by at least one period (an event still running at
the end of the data ends with it); their timing is independent of demand.  Each event is a temporary price reduction (TPR) or not; a TPR
carries a display and / or a feature with some probability, and display-only and feature-only
events without a price cut make up the rest, such that ``price_reduction_share``,
``display_share`` and ``feature_share`` of the product-periods carry each type and 60 % of the
display and feature periods (at most all TPR periods) come with a price cut.  TPR depth is a
whole percent in 10-35 %, capped so the price paid stays at or above cost (a TPR whose cap is
under 5 % is dropped).  Events that touch a delisted period are dropped, so the shares are of
listed periods, about.  The price paid is ``round(list x (1 - depth), 2)``.  Display and feature
multiply demand by ``display_lift`` and ``feature_lift`` (``truth.promotion_effects``; the TPR's
lift is 1.0, its effect is the price).  No pre- or post-promotion dip (stockpiling) is modelled.

Cross-price effects (``truth.cross_elasticities``).  Within a store and category, product ``j``'s
demand responds to every other brand ``k``'s price paid with ``c_jk = cross_elasticity_scale x
|e_j| x s_k / (1 - s_j) x LogNormal(0, 0.25)``, where ``s`` are popularity shares in the
(store, category): substitution goes to the big brands, and a product's cross-elasticities sum
to about ``cross_elasticity_scale x |e_j|`` (default 0.4: a category elasticity about 60 % of the
own-price one).  A delisted competitor's term is 1.  0 turns substitution off.

Listings (``shop.listings``).  About ``delisted_share`` of the product-periods are not listed, in
runs: a third in store closures (renovation, fire: every product of a store for 2-8 weeks), the
rest in temporary delistings of one product (3-15 weeks); runs may touch the start (listed late)
or the end (delisted).  Delisted periods have no ``product_sales`` row and lie outside every
listing period; listed periods always have a row, with ``units = 0`` if none sold.

Units.  For a listed product ``j`` in period ``t``
``mean = weekly_units x period_days / 7 x popularity_j x season(t) x level_j(t)
x (paid_j(t) / reference_j) ** e_j x display_lift ** display_j(t) x feature_lift ** feature_j(t)
x prod_k (paid_k(t) / reference_k) ** c_jk``
and units ~ negative binomial with that mean and variance ``mean + overdispersion x mean ** 2``
(a Gamma-Poisson mixture; 0 gives Poisson).  Revenue = units x price paid, in cents.

Misspecified demand (``misspecified=True``, for coverage tests).  The own-price term becomes
``exp(e_j(t) x tanh(2.5 x) / 2.5)`` with ``x = log(paid / reference)``: the response saturates,
so a 30 % cut sells about a fifth less than constant elasticity says; and ``e_j(t) = e_j x (1 + 0.2
sin(2 pi day / 730 + phase_j))`` drifts over a two-year cycle.  ``truth.products.elasticity`` is
still ``e_j``: the elasticity at the reference price, on average over time.

Frames and dtypes
-----------------
As :mod:`revopt.sample_data.synth`: columns exactly those of the contract DDL, in DDL order; ids
``int64``, ``integer`` columns ``int32``, text ``object``, ``boolean`` ``bool``, ``numeric`` and
``double precision`` ``float64`` (money in cents, depth to 4 decimals, units whole numbers),
dates ``datetime64[ns]`` at midnight (``NaT`` for NULL), ``timestamptz`` ``datetime64[ns, UTC]``.
Rows are sorted by their primary key.  ``truth.daily_intensity`` holds the daily seasonality with
``marketing_lift`` 1.

Why hand-written: known structural parameters (elasticities by level, lifts, cross-elasticities,
listings) are the point of this module, and no library draws a scanner panel from them.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from revopt.platform.contract import PROMO_TYPES, SHOP_DDL, TRUTH_DDL, ddl_column_types
from revopt.platform.config import Settings
from revopt.sample_data.draws import choice as _choice, named_streams, positions_in_group as _positions_in_group

logger = logging.getLogger(__name__)

GENERATOR_VERSION = "1.0.0"

_STREAMS = ("products", "levels", "prices", "promotions", "listings", "units")

#: (category, mean own-price elasticity, typical brand price, sku prefix)
_CATEGORIES = (
    ("coffee", -2.6, 4.50, "COF"),
    ("cereal", -2.3, 3.20, "CER"),
    ("yogurt", -2.9, 1.20, "YOG"),
)
_BRAND_ELASTICITY_SD = 0.4
_STORE_ELASTICITY_SD = 0.2
_PRODUCT_ELASTICITY_SD = 0.1
_ELASTICITY_BOUNDS = (-6.0, -0.3)
_STORE_SIZE_SD = 0.35
_BRAND_SHARE_SD = 0.9
_PRODUCT_SIZE_SD = 0.2
_BRAND_PRICE_SD = 0.25
_STORE_PRICE_SD = 0.04
_PRODUCT_PRICE_SD = 0.02
_MARKUP = (1.4, 1.8)  # reference price / cost
_COST_SD = 0.02

_LEVEL_PHI_PER_DAY = 0.995
_LEVEL_SD = 0.15
_STORE_SHOCK_SD = 0.08

_DOW_FACTOR = (0.92, 0.90, 0.93, 0.98, 1.08, 1.22, 0.97)  # Monday .. Sunday
_YEARLY_AMPLITUDE = 0.06
_HOLIDAY_BUMP = 0.2

_PRICE_GAP_DAYS = (56, 182)
_PRICE_STEP = (0.02, 0.08)
_PRICE_REVERSION = 5.0
_PRICE_FLOOR_MARKUP = 1.15
_PRICE_CEILING = 1.6  # x reference

_PROMO_WEEKS = (1, 2)
_PROMO_WEEKS_SHARE = (0.6, 0.4)
_PROMO_DEPTH_PERCENT = (10, 35)
_MIN_DEPTH = 0.05
_WITH_PRICE_CUT = 0.6  # share of display and feature periods that come with a price cut
_MAX_PROMOTED_SHARE = 0.5

_CROSS_NOISE_SD = 0.25

_CLOSURE_SHARE = 1 / 3  # of the delisted periods
_CLOSURE_DAYS = (14, 56)
_DELISTING_DAYS = (21, 105)

_CURVATURE = 2.5  # misspecified: tanh saturation of the log-price response
_DRIFT = 0.2  # misspecified: relative amplitude of the elasticity's two-year cycle
_DRIFT_CYCLE_DAYS = 730.0


@dataclass(frozen=True)
class SyntheticPanel:
    """A generated panel: source tables, ground truth and the product -> brand, store mapping."""

    shop: dict[str, pd.DataFrame]
    truth: dict[str, pd.DataFrame]
    brands: pd.DataFrame


@dataclass(frozen=True)
class _Products:
    store: np.ndarray  # 0-based, per product
    category: np.ndarray  # 0-based
    brand: np.ndarray  # 0-based across categories
    elasticity: np.ndarray
    reference: np.ndarray
    cost: np.ndarray
    popularity: np.ndarray
    brand_elasticity: np.ndarray  # per brand


@dataclass(frozen=True)
class _Promotions:
    product: np.ndarray  # per event
    first: np.ndarray  # first period
    last: np.ndarray  # last period (inclusive)
    depth: np.ndarray  # 0: no price cut
    display: np.ndarray
    feature: np.ndarray


def generate_panel(
    *,
    n_stores: int = 80,
    n_brands: int = 11,
    n_categories: int = 1,
    periods: int = 160,
    period_days: int = 7,
    start: dt.date = dt.date(2023, 1, 2),
    seed: int = 0,
    weekly_units: float = 40.0,
    price_reduction_share: float = 0.12,
    display_share: float = 0.06,
    feature_share: float = 0.06,
    display_lift: float = 1.6,
    feature_lift: float = 1.4,
    delisted_share: float = 0.03,
    cross_elasticity_scale: float = 0.4,
    overdispersion: float = 0.15,
    price_confounding: float = 1.0,
    misspecified: bool = False,
) -> SyntheticPanel:
    """Draw a scanner panel of ``n_stores x n_categories x n_brands`` products over ``periods``
    periods of ``period_days`` days from ``start`` (see the module docstring for the model).

    ``n_brands`` is per category (at most 3 categories); ``weekly_units`` is the mean product's
    expected units per 7 days at reference prices; the three ``*_share`` are the shares of
    product-periods with a price reduction, a display and a feature (together at most 0.5);
    ``display_lift`` / ``feature_lift`` the true multiplicative lifts; ``delisted_share`` the share
    of product-periods not listed; ``cross_elasticity_scale`` the sum of a product's
    cross-elasticities as a fraction of its own |elasticity| (0: no substitution);
    ``overdispersion`` the negative binomial ``alpha`` (variance = mean + alpha mean^2, 0: Poisson);
    ``price_confounding`` how strongly list price changes follow the demand level (0: not at all);
    ``misspecified`` a saturating, time-varying price response instead of constant elasticity.
    The same arguments always give identical frames.
    """
    _check_arguments(n_stores, n_brands, n_categories, periods, period_days, weekly_units,
                     price_reduction_share, display_share, feature_share, display_lift, feature_lift,
                     delisted_share, cross_elasticity_scale, overdispersion)
    began = time.perf_counter()
    rngs = _streams(seed)
    days = pd.date_range(pd.Timestamp(start).normalize(), periods=periods * period_days, freq="D")
    period_start = days[::period_days]
    daily_season = _seasonality(days)
    season = daily_season.reshape(periods, period_days).mean(axis=1)

    products = _draw_products(rngs["products"], n_stores, n_categories, n_brands)
    n = len(products.store)
    level, level_z = _draw_levels(rngs["levels"], periods, period_days, products.store, n_stores)
    listed = _draw_listings(rngs["listings"], periods, period_days, products.store, n_stores, delisted_share)
    list_price = _draw_list_prices(rngs["prices"], level_z, products, period_days, price_confounding)
    promotions = _draw_promotions(rngs["promotions"], listed, list_price, products.cost, period_days,
                                  price_reduction_share, display_share, feature_share)
    depth, display, feature = _promotion_grid(promotions, periods, n)
    paid = np.round(list_price * (1.0 - depth), 2)
    cross = _draw_cross_elasticities(rngs["products"], products, n_stores, n_categories, n_brands, cross_elasticity_scale)

    log_price = np.log(paid / products.reference)
    own = _own_price_response(rngs["products"], log_price, products.elasticity, period_start, misspecified)
    competitors = np.where(listed, log_price, 0.0).reshape(periods, n_stores, n_categories, n_brands)
    substitution = np.einsum("tsck,scjk->tscj", competitors, cross).reshape(periods, n)
    base = weekly_units * period_days / 7.0 * products.popularity
    mean = (base * season[:, None] * level * np.exp(own + substitution)
            * np.where(display, display_lift, 1.0) * np.where(feature, feature_lift, 1.0))
    units = _negative_binomial(rngs["units"], mean, overdispersion)
    logger.info("drew %d products x %d periods (%.2fs)", n, periods, time.perf_counter() - began)

    ids = np.arange(1, n + 1, dtype=np.int64)
    shop = _empty_frames(SHOP_DDL)
    shop.update(_product_frames(products, list_price, period_start))
    shop["promotions"] = _promotions_frame(promotions, period_start, period_days)
    shop["product_sales"] = _sales_frame(listed, units, paid, period_start, period_days)
    shop["listings"] = _listings_frame(listed, period_start, period_days)

    truth = _empty_frames(TRUTH_DDL)
    truth["products"] = pd.DataFrame({"product_id": ids, "elasticity": products.elasticity,
                                      "reference_price": products.reference, "popularity": products.popularity})
    lifts = {"price_reduction": 1.0, "display": display_lift, "feature": feature_lift}
    truth["promotion_effects"] = pd.DataFrame({"promo_type": np.asarray(PROMO_TYPES, dtype=object),
                                               "lift": [lifts[t] for t in PROMO_TYPES]})
    truth["cross_elasticities"] = _cross_frame(cross, n_stores, n_categories, n_brands)
    truth["daily_intensity"] = pd.DataFrame({"day": days.to_numpy(), "seasonality": daily_season,
                                             "marketing_lift": np.ones(len(days))})
    brand_labels = np.asarray([_brand_label(b, n_brands * n_categories) for b in range(n_brands * n_categories)],
                              dtype=object)
    parameters = {
        "generator": "panel", "generator_version": GENERATOR_VERSION, "seed": seed, "n_stores": n_stores,
        "n_brands": n_brands, "n_categories": n_categories, "n_products": n, "periods": periods,
        "period_days": period_days, "start": pd.Timestamp(start).date().isoformat(), "weekly_units": weekly_units,
        "price_reduction_share": price_reduction_share, "display_share": display_share,
        "feature_share": feature_share, "display_lift": display_lift, "feature_lift": feature_lift,
        "delisted_share": delisted_share, "cross_elasticity_scale": cross_elasticity_scale,
        "overdispersion": overdispersion, "price_confounding": price_confounding, "misspecified": misspecified,
        "brand_mapping": "shop.products.name is 'Brand <b> @ store <s>', sku '<category>-B<b>-S<s>'",
        "brands": json.dumps({label: {"category": _CATEGORIES[b // n_brands][0],
                                      "elasticity": round(float(products.brand_elasticity[b]), 4)}
                              for b, label in enumerate(brand_labels)}),
    }
    truth["generator_run"] = pd.DataFrame({"key": list(parameters), "value": [str(v) for v in parameters.values()]})
    brands = pd.DataFrame({"product_id": ids, "brand": brand_labels[products.brand],
                           "store": products.store.astype(np.int64) + 1,
                           "brand_elasticity": products.brand_elasticity[products.brand]})
    logger.info("generated panel seed=%d: %d products, %d sales rows, %d promotions (%.2fs)", seed, n,
                len(shop["product_sales"]), len(shop["promotions"]), time.perf_counter() - began)
    return SyntheticPanel(shop=shop, truth=truth, brands=brands)


def load_panel(settings: Settings, panel: SyntheticPanel) -> dict[str, int]:
    """Replace the source tables with ``panel``'s frames (and empty the ClickHouse events): see
    :func:`revopt.sample_data.seed.load_sources`. Returns row counts per table."""
    from revopt.sample_data.seed import load_sources  # the database clients, only when loading

    return load_sources(settings, panel.shop, panel.truth, events=None)


def panel_summary(panel: SyntheticPanel) -> dict[str, float]:
    """Row counts and shares that describe a panel (for reports and benchmarks)."""
    sales, promotions = panel.shop["product_sales"], panel.shop["promotions"]
    n_products = len(panel.shop["products"])
    periods = int(dict(zip(panel.truth["generator_run"]["key"], panel.truth["generator_run"]["value"]))["periods"])
    period_days = sales["period_days"].iloc[0] if len(sales) else 1
    promoted = promotions.assign(periods=((promotions["end_date"] - promotions["start_date"]).dt.days + 1) // period_days)
    share = promoted.groupby("promo_type")["periods"].sum() / max(len(sales), 1)
    return {
        "products": n_products,
        "sales_rows": len(sales),
        "delisted_share": 1.0 - len(sales) / (n_products * periods),
        "zero_unit_share": float((sales["units"] == 0).mean()),
        "mean_units": float(sales["units"].mean()),
        **{f"{t}_share": float(share.get(t, 0.0)) for t in PROMO_TYPES},
    }


def _check_arguments(n_stores: int, n_brands: int, n_categories: int, periods: int, period_days: int,
                     weekly_units: float, price_reduction_share: float, display_share: float, feature_share: float,
                     display_lift: float, feature_lift: float, delisted_share: float,
                     cross_elasticity_scale: float, overdispersion: float) -> None:
    if min(n_stores, n_brands, periods, period_days) < 1:
        raise ValueError("n_stores, n_brands, periods and period_days must be at least 1")
    if not 1 <= n_categories <= len(_CATEGORIES):
        raise ValueError(f"n_categories must be 1..{len(_CATEGORIES)}, got {n_categories}")
    shares = (price_reduction_share, display_share, feature_share)
    if min(shares) < 0 or _promoted_share(*shares) > _MAX_PROMOTED_SHARE:
        raise ValueError(f"promotion shares must be >= 0 and promote at most {_MAX_PROMOTED_SHARE:.0%} of the "
                         f"periods, got {shares}")
    if not 0 <= delisted_share <= 0.5:
        raise ValueError(f"delisted_share must be in [0, 0.5], got {delisted_share}")
    if weekly_units <= 0 or display_lift <= 0 or feature_lift <= 0:
        raise ValueError("weekly_units and the lifts must be positive")
    if cross_elasticity_scale < 0 or overdispersion < 0:
        raise ValueError("cross_elasticity_scale and overdispersion must be >= 0")


def _streams(seed: int) -> dict[str, np.random.Generator]:
    return named_streams(seed, _STREAMS)


def _seasonality(days: pd.DatetimeIndex) -> np.ndarray:
    dow = np.asarray(_DOW_FACTOR)
    dow = dow / dow.mean()
    day_of_year = days.dayofyear.to_numpy().astype(np.float64)
    yearly = 1.0 + _YEARLY_AMPLITUDE * np.cos(2.0 * np.pi * (day_of_year - 15.0) / 365.25)
    distance = np.abs(day_of_year - 355.0)
    distance = np.minimum(distance, 365.25 - distance)
    holiday = _HOLIDAY_BUMP * np.exp(-0.5 * (distance / 6.0) ** 2)
    return dow[days.dayofweek.to_numpy()] * (yearly + holiday)


def _brand_label(brand: int, n_total: int) -> str:
    return f"Brand {brand + 1:0{max(2, len(str(n_total)))}d}"


# --- products --------------------------------------------------------------------------------------


def _draw_products(rng: np.random.Generator, n_stores: int, n_categories: int, n_brands: int) -> _Products:
    grid = np.indices((n_stores, n_categories, n_brands)).reshape(3, -1)
    store, category, brand_in_category = grid
    brand = category * n_brands + brand_in_category
    n, n_all_brands = len(store), n_categories * n_brands
    brand_category = np.repeat(np.arange(n_categories), n_brands)

    category_elasticity = np.asarray([c[1] for c in _CATEGORIES])[:n_categories]
    brand_elasticity = category_elasticity[brand_category] + rng.normal(0.0, _BRAND_ELASTICITY_SD, n_all_brands)
    store_effect = rng.normal(0.0, _STORE_ELASTICITY_SD, n_stores)
    store_effect -= store_effect.mean()
    noise = rng.normal(0.0, _PRODUCT_ELASTICITY_SD, n)
    noise -= (np.bincount(brand, weights=noise, minlength=n_all_brands) / np.bincount(brand, minlength=n_all_brands))[brand]
    elasticity = np.clip(brand_elasticity[brand] + store_effect[store] + noise, *_ELASTICITY_BOUNDS)

    store_size = rng.lognormal(0.0, _STORE_SIZE_SD, n_stores)
    brand_share = rng.lognormal(0.0, _BRAND_SHARE_SD, n_all_brands)
    popularity = store_size[store] * brand_share[brand] * rng.lognormal(0.0, _PRODUCT_SIZE_SD, n)
    popularity /= popularity.mean()

    category_price = np.asarray([c[2] for c in _CATEGORIES])[:n_categories]
    brand_price = category_price[brand_category] * rng.lognormal(0.0, _BRAND_PRICE_SD, n_all_brands)
    brand_cost = brand_price / rng.uniform(*_MARKUP, n_all_brands)
    store_index = rng.lognormal(0.0, _STORE_PRICE_SD, n_stores)
    reference = np.round(brand_price[brand] * store_index[store] * rng.lognormal(0.0, _PRODUCT_PRICE_SD, n), 2)
    cost = np.round(brand_cost[brand] * rng.lognormal(0.0, _COST_SD, n), 2)
    return _Products(store=store, category=category, brand=brand, elasticity=elasticity, reference=reference,
                     cost=cost, popularity=popularity, brand_elasticity=brand_elasticity)


def _draw_levels(rng: np.random.Generator, periods: int, period_days: int, store: np.ndarray,
                 n_stores: int) -> tuple[np.ndarray, np.ndarray]:
    """Multiplicative demand level (mean 1) and the product's standardised log level ``u / sd``."""
    phi = _LEVEL_PHI_PER_DAY**period_days
    shocks = rng.normal(0.0, 1.0, (periods, len(store)))
    z = np.empty_like(shocks)
    z[0] = shocks[0]  # start the AR(1) in its stationary distribution (variance 1)
    for t in range(1, periods):  # a loop, not scipy.signal.lfilter: that import alone takes 2 s
        z[t] = phi * z[t - 1] + np.sqrt(1.0 - phi**2) * shocks[t]
    store_shock = rng.normal(0.0, _STORE_SHOCK_SD, (periods, n_stores))[:, store]
    log_level = _LEVEL_SD * z - _LEVEL_SD**2 / 2 + store_shock - _STORE_SHOCK_SD**2 / 2
    return np.exp(log_level), z


def _periods(days: int, period_days: int) -> int:
    return max(1, round(days / period_days))


def _draw_list_prices(rng: np.random.Generator, level_z: np.ndarray, products: _Products, period_days: int,
                      confounding: float) -> np.ndarray:
    """List price per (period, product): loop over periods, vectorised over products."""
    periods, n = level_z.shape
    lo, hi = (_periods(d, period_days) for d in _PRICE_GAP_DAYS)
    up_draw = rng.random((periods, n))
    step = rng.uniform(*_PRICE_STEP, (periods, n))
    gap = rng.integers(lo, hi + 1, (periods, n))
    reference = products.reference
    floor = _grid_up(_PRICE_FLOOR_MARKUP * products.cost)
    ceiling = np.maximum(_grid_down(_PRICE_CEILING * reference), floor)
    price = np.clip(_grid_nearest(reference * rng.uniform(0.97, 1.03, n)), floor, ceiling)
    next_change = rng.integers(1, hi + 1, n)
    list_price = np.empty((periods, n))
    for t in range(periods):
        change = next_change == t
        if change.any():
            pressure = confounding * level_z[t] - _PRICE_REVERSION * np.log(price / reference)
            up = up_draw[t] < 1.0 / (1.0 + np.exp(-pressure))
            target = price * np.where(up, 1.0 + step[t], 1.0 - step[t])
            moved = np.clip(np.where(up, _grid_up(target), _grid_down(target)), floor, ceiling)
            price = np.where(change, moved, price)
            next_change = np.where(change, t + gap[t], next_change)
        list_price[t] = price
    return list_price


# Prices end in 9 cents: x.09, x.19, ..., x.99.
def _grid_up(price: np.ndarray) -> np.ndarray:
    return np.round(np.maximum(np.ceil(np.round((price - 0.09) * 10.0, 6)), 0.0) / 10.0 + 0.09, 2)


def _grid_down(price: np.ndarray) -> np.ndarray:
    return np.round(np.maximum(np.floor(np.round((price - 0.09) * 10.0, 6)), 0.0) / 10.0 + 0.09, 2)


def _grid_nearest(price: np.ndarray) -> np.ndarray:
    return np.round(np.maximum(np.round((price - 0.09) * 10.0), 0.0) / 10.0 + 0.09, 2)


# --- listings -----------------------------------------------------------------------------------


def _draw_listings(rng: np.random.Generator, periods: int, period_days: int, store: np.ndarray, n_stores: int,
                   share: float) -> np.ndarray:
    """Listed flag per (period, product): store closures and single-product delistings, in runs."""
    listed = np.ones((periods, len(store)), dtype=bool)
    if share <= 0:
        return listed
    closed = _draw_runs(rng, periods, n_stores, share * _CLOSURE_SHARE, [_periods(d, period_days) for d in _CLOSURE_DAYS])
    delisted = _draw_runs(rng, periods, len(store), share * (1 - _CLOSURE_SHARE),
                          [_periods(d, period_days) for d in _DELISTING_DAYS])
    return ~(closed[:, store] | delisted)


def _draw_runs(rng: np.random.Generator, periods: int, n: int, share: float, length_range: list[int]) -> np.ndarray:
    """Flags per (period, unit) covering about ``share`` of the periods, in runs of ``length_range``
    periods (inclusive) starting anywhere, so a run may begin before the data or end after it."""
    lo, hi = length_range
    mean_length = (lo + hi) / 2
    span = periods + mean_length - 1  # starts from -(length - 1): every period equally often covered
    counts = rng.poisson(share * span / mean_length, n)
    unit = np.repeat(np.arange(n), counts)
    length = rng.integers(lo, hi + 1, len(unit))
    first = rng.integers(-(length - 1), periods)
    flags = np.zeros((periods + 1, n), dtype=np.int64)  # +1 / -1 at run boundaries, then cumulated
    np.add.at(flags, (np.clip(first, 0, periods), unit), 1)
    np.add.at(flags, (np.clip(first + length, 0, periods), unit), -1)
    return np.cumsum(flags, axis=0)[:periods] > 0


# --- promotions ---------------------------------------------------------------------------------


def _promoted_share(tpr: float, display: float, feature: float) -> float:
    """Share of periods inside a promotion event of any type (module docstring)."""
    return tpr + sum(share - _with_price_cut(share, tpr) for share in (display, feature))


def _with_price_cut(share: float, tpr: float) -> float:
    return min(_WITH_PRICE_CUT * share, tpr)


def _draw_promotions(rng: np.random.Generator, listed: np.ndarray, list_price: np.ndarray, cost: np.ndarray,
                     period_days: int, tpr: float, display: float, feature: float) -> _Promotions:
    periods, n = listed.shape
    promoted = _promoted_share(tpr, display, feature)
    lengths = np.asarray([_periods(7 * w, period_days) for w in _PROMO_WEEKS])
    if promoted <= 0:
        empty = np.zeros(0, dtype=np.int64)
        return _Promotions(empty, empty, empty, np.zeros(0), np.zeros(0, dtype=bool), np.zeros(0, dtype=bool))
    mean_length = float(np.dot(lengths, _PROMO_WEEKS_SHARE))
    mean_gap = max(mean_length * (1.0 - promoted) / promoted, 1.0)
    slots = periods // (1 + lengths.min()) + 2  # more events than fit
    length = lengths[_choice(rng, _PROMO_WEEKS_SHARE, (n, slots))]
    gap = rng.geometric(1.0 / mean_gap, (n, slots))
    gap[:, 0] = rng.integers(0, int(np.ceil(mean_gap + mean_length)), n)  # a random phase, not a common start
    first = np.cumsum(gap + length, axis=1) - length
    product, slot = np.nonzero(first < periods)
    first = first[product, slot]
    last = np.minimum(first + length[product, slot] - 1, periods - 1)

    # Drop events touching a delisted period.
    unlisted = np.vstack([np.zeros((1, n), dtype=np.int64), np.cumsum(~listed, axis=0)])
    keep = unlisted[last + 1, product] == unlisted[first, product]
    product, first, last = product[keep], first[keep], last[keep]

    k = len(product)
    is_tpr = rng.random(k) < tpr / promoted
    with_display, with_feature = _with_price_cut(display, tpr), _with_price_cut(feature, tpr)
    display_only = rng.random(k) < _ratio(display - with_display, promoted - tpr)
    has_display = np.where(is_tpr, rng.random(k) < _ratio(with_display, tpr), display_only)
    has_feature = np.where(is_tpr, rng.random(k) < _ratio(with_feature, tpr), ~display_only)

    # Depth in whole percent, capped so the price paid stays at or above cost over the whole event.
    depth = rng.integers(_PROMO_DEPTH_PERCENT[0], _PROMO_DEPTH_PERCENT[1] + 1, k) / 100.0
    span = last - first + 1
    at = np.repeat(first, span) + _positions_in_group(span)
    lowest_list = np.minimum.reduceat(list_price[at, np.repeat(product, span)], np.cumsum(span) - span) if k else np.zeros(0)
    cap = np.floor(100.0 * (1.0 - cost[product] / lowest_list) + 1e-9) / 100.0
    depth = np.where(is_tpr, np.minimum(depth, cap), 0.0)
    depth = np.where(depth >= _MIN_DEPTH, depth, 0.0)
    keep = (depth > 0) | has_display | has_feature
    order = np.lexsort((first[keep], product[keep]))
    return _Promotions(product=product[keep][order], first=first[keep][order], last=last[keep][order],
                       depth=depth[keep][order], display=has_display[keep][order], feature=has_feature[keep][order])


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator > 0 else 0.0


def _promotion_grid(promotions: _Promotions, periods: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Depth, display flag and feature flag per (period, product)."""
    span = promotions.last - promotions.first + 1
    event = np.repeat(np.arange(len(span)), span)
    at = (np.repeat(promotions.first, span) + _positions_in_group(span), promotions.product[event])
    depth, display, feature = np.zeros((periods, n)), np.zeros((periods, n), dtype=bool), np.zeros((periods, n), dtype=bool)
    depth[at] = promotions.depth[event]
    display[at] = promotions.display[event]
    feature[at] = promotions.feature[event]
    return depth, display, feature


# --- demand -------------------------------------------------------------------------------------


def _draw_cross_elasticities(rng: np.random.Generator, products: _Products, n_stores: int, n_categories: int,
                             n_brands: int, scale: float) -> np.ndarray:
    """Cross-elasticity ``c[s, c, j, k]`` of brand j's demand to brand k's price in store s, category c."""
    shape = (n_stores, n_categories, n_brands)
    share = products.popularity.reshape(shape)
    share = share / share.sum(axis=2, keepdims=True)
    own = np.abs(products.elasticity).reshape(shape)
    noise = rng.lognormal(0.0, _CROSS_NOISE_SD, (*shape, n_brands))
    with np.errstate(divide="ignore", invalid="ignore"):
        cross = scale * own[..., :, None] * share[..., None, :] / (1.0 - share[..., :, None]) * noise
    cross[..., np.arange(n_brands), np.arange(n_brands)] = 0.0
    return np.nan_to_num(cross, nan=0.0, posinf=0.0)


def _own_price_response(rng: np.random.Generator, log_price: np.ndarray, elasticity: np.ndarray,
                        period_start: pd.DatetimeIndex, misspecified: bool) -> np.ndarray:
    """Log-demand response to the own price paid, per (period, product)."""
    phase = rng.uniform(0.0, 2.0 * np.pi, len(elasticity))  # drawn either way: same stream state
    if not misspecified:
        return elasticity * log_price
    day = (period_start - period_start[0]).days.to_numpy()[:, None]
    drifting = elasticity * (1.0 + _DRIFT * np.sin(2.0 * np.pi * day / _DRIFT_CYCLE_DAYS + phase))
    return drifting * np.tanh(_CURVATURE * log_price) / _CURVATURE


def _negative_binomial(rng: np.random.Generator, mean: np.ndarray, alpha: float) -> np.ndarray:
    """Counts with the given mean and variance ``mean + alpha mean^2`` (Gamma-Poisson)."""
    if alpha > 0:
        mean = mean * rng.gamma(1.0 / alpha, alpha, mean.shape)
    return rng.poisson(mean)


# --- frames -------------------------------------------------------------------------------------

_DTYPES = (("bigint", "int64"), ("integer", "int32"), ("text", "object"), ("boolean", "bool"),
           ("numeric", "float64"), ("double", "float64"), ("date", "datetime64[ns]"),
           ("timestamptz", "datetime64[ns, UTC]"))


def _empty_frames(ddl: str) -> dict[str, pd.DataFrame]:
    """An empty frame per table of ``ddl``, columns in DDL order with the dtypes of the module docstring."""
    return {table: pd.DataFrame({column: pd.Series(dtype=next(d for t, d in _DTYPES if sql_type.startswith(t)))
                                 for column, sql_type in columns})
            for table, columns in ddl_column_types(ddl).items()}


def _product_frames(products: _Products, list_price: np.ndarray,
                    period_start: pd.DatetimeIndex) -> dict[str, pd.DataFrame]:
    periods, n = list_price.shape
    ids = np.arange(1, n + 1, dtype=np.int64)
    n_all = len(products.brand_elasticity)
    brand = np.asarray([_brand_label(b, n_all).removeprefix("Brand ") for b in range(n_all)], dtype=object)[products.brand]
    store = pd.Series(products.store + 1).astype(str).str.zfill(max(3, len(str(products.store.max() + 1))))
    store = store.to_numpy(dtype=object)
    prefix = np.asarray([c[3] for c in _CATEGORIES], dtype=object)[products.category]
    category = np.asarray([c[0] for c in _CATEGORIES], dtype=object)[products.category]
    changed = np.vstack([np.ones((1, n), dtype=bool), list_price[1:] != list_price[:-1]])
    product_index, period_index = np.nonzero(changed.T)  # product-major: sorted by (product, period)
    return {
        "products": pd.DataFrame({"product_id": ids, "sku": prefix + "-B" + brand + "-S" + store,
                                  "name": "Brand " + brand + " @ store " + store, "category": category,
                                  "cost": products.cost, "current_price": list_price[-1]}),
        "product_groups": pd.DataFrame({"product_id": ids, "brand": "Brand " + brand, "location": "store " + store}),
        "product_prices": pd.DataFrame({"product_id": ids[product_index],
                                        "valid_from": period_start.to_numpy()[period_index],
                                        "list_price": list_price[period_index, product_index]}),
    }


def _promotions_frame(promotions: _Promotions, period_start: pd.DatetimeIndex, period_days: int) -> pd.DataFrame:
    starts = period_start.to_numpy()
    end = starts[promotions.last] + np.timedelta64(period_days - 1, "D")
    has = {"price_reduction": promotions.depth > 0, "display": promotions.display, "feature": promotions.feature}
    parts = []
    for code, promo_type in enumerate(PROMO_TYPES):
        on = has[promo_type]
        parts.append(pd.DataFrame({
            "product_id": promotions.product[on].astype(np.int64) + 1,
            "start_date": starts[promotions.first[on]],
            "end_date": end[on],
            "promo_type": np.full(int(on.sum()), promo_type, dtype=object),
            "depth": np.round(promotions.depth[on], 4) if promo_type == "price_reduction" else np.full(int(on.sum()), np.nan),
            "_code": code,
        }))
    frame = pd.concat(parts, ignore_index=True).sort_values(["product_id", "start_date", "_code"], kind="stable")
    return frame.drop(columns="_code").reset_index(drop=True)


def _sales_frame(listed: np.ndarray, units: np.ndarray, paid: np.ndarray, period_start: pd.DatetimeIndex,
                 period_days: int) -> pd.DataFrame:
    product, period = np.nonzero(listed.T)  # product-major
    sold = units[period, product].astype(np.float64)
    return pd.DataFrame({
        "product_id": product.astype(np.int64) + 1,
        "period_start": period_start.to_numpy()[period],
        "period_days": np.full(len(product), period_days, dtype=np.int32),
        "units": sold,
        "revenue": np.round(sold * paid[period, product], 2),
    })


def _listings_frame(listed: np.ndarray, period_start: pd.DatetimeIndex, period_days: int) -> pd.DataFrame:
    """One row per run of listed periods; the end is NULL when the run reaches the last period."""
    by_product = listed.T
    padded = np.pad(by_product, ((0, 0), (1, 1)))
    product, first = np.nonzero(padded[:, 1:-1] & ~padded[:, :-2])
    _, last = np.nonzero(padded[:, 1:-1] & ~padded[:, 2:])
    starts = period_start.to_numpy()
    end = pd.Series(starts[last] + np.timedelta64(period_days - 1, "D")).where(last < listed.shape[0] - 1)
    return pd.DataFrame({"product_id": product.astype(np.int64) + 1, "start_date": starts[first],
                         "end_date": end.to_numpy()})


def _cross_frame(cross: np.ndarray, n_stores: int, n_categories: int, n_brands: int) -> pd.DataFrame:
    ids = np.arange(1, n_stores * n_categories * n_brands + 1, dtype=np.int64).reshape(n_stores, n_categories, n_brands)
    s, c, j, k = np.nonzero(cross)
    return pd.DataFrame({"product_id": ids[s, c, j], "other_product_id": ids[s, c, k],
                         "cross_elasticity": cross[s, c, j, k]})
