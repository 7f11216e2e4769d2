"""Synthetic online store: source tables that look like a real shop, plus the truth they came from.

:func:`generate_store` draws a complete store history for ``days`` days from ``start`` (the
first day after the data, ``start + days``, is the natural run date) and returns

- ``shop``: the PostgreSQL source tables of :data:`revopt.platform.contract.SHOP_DDL`,
- ``events``: the ClickHouse ``events`` table of :data:`revopt.platform.contract.EVENTS_DDL`,
- ``truth``: the parameters every row was drawn from (:data:`revopt.platform.contract.TRUTH_DDL`), so
  benchmarks and tests can measure how well the models recover them.

Everything is a pure function of the arguments: randomness comes from named child streams of
``np.random.SeedSequence(seed)``, never from the clock, and every draw is vectorised over customers,
orders, lines or events (Python loops run only over days, channels and time zones).  A new part of
the model draws from a new stream, so the existing parts draw exactly what they drew before it.

Generative model
----------------
Calendar.  ``seasonality(d)`` = day-of-week factor x (yearly cosine + a late-November /
December holiday bump).

Marketing.  Four paid channels (``paid_search``, ``paid_social``, ``display``, ``affiliate``)
spend daily budgets = base x 4-week budget level x AR(1) noise x weekly pattern x on/off
flights (social and display run in flights), so every response curve is seen at many spend
levels.  Each channel has a geometric adstock ``a_c(d) = spend_c(d) + theta_c a_c(d-1)``
(``a_c(-1) = 0``) and a Hill curve ``hill_c(a) = a^S / (a^S + K^S)``; the store-wide
``marketing_lift(d) = 1 + sum_c beta_c hill_c(a_c(d))``.  Impressions ~ Poisson(spend / CPM)
and clicks ~ Binomial(impressions, CTR).  Base spend and ``K_c`` scale with
``n_customers / 100_000``.

Campaigns.  Each paid channel runs two or three named campaigns (``search_brand``,
``search_generic``, ``search_shopping``; ``social_prospecting``, ``social_retargeting``;
``display_awareness``, ``display_retargeting``; ``affiliate_network``, ``affiliate_cashback``).  A
channel's daily spend is split over its campaigns by shares drawn per 4-week block from a
Dirichlet (concentration 20 around fixed mean shares); spend in cents, impressions and clicks are
split into integers that sum exactly to the channel's (clicks in proportion to the campaign's
impressions), so ``shop.marketing_spend`` has one row per day, channel and campaign and its sums
per (day, channel) are the channel's spend above.  Each campaign has a true *efficiency*
(``truth.campaigns``): lognormal(0, 0.4), divided by its channel's spend-weighted mean over the
data, so 1 is the channel's average and the efficiency is the campaign's incremental orders per
unit of spend relative to it (exactly so on a day whose share-weighted efficiency is 1).
Newsletters are campaigns too: each weekly send is ``newsletter_<ISO year>_w<ISO week>`` of its
send day (a second send in the same ISO week gets ``_2``).

Customers (Pareto/NBD + Gamma-Gamma).  Segment ``casual | regular | loyal`` sets the means of a
Gamma purchase rate ``lambda_i`` (about 2, 5 and 12 purchases a year, 4.4 overall) and of a Gamma
per-day dropout hazard ``mu_i``.  60 % signed up during the two years before ``start``, the
rest during the data.  Lifetime ~ Exponential(mu_i) from signup; ``churn_date`` is the first
inactive day (NULL when the customer is still alive on the last day).  With a year of data
about 40 % have churned by the end, half of them before ``start``.  The number of extra basket lines ``k_i`` is
Gamma across customers, independent of ``lambda_i``, and sets
``mean_basket_value_i = (1 + k_i) x (1 + q) x p_ref``, the mean order value at reference
prices (``q`` = mean extra quantity per line, ``p_ref`` = popularity-weighted mean reference
price).

Purchases.  While alive, customer ``i`` buys on day ``d`` at Poisson intensity
``lambda_i x seasonality(d) x marketing_lift(d)``.  Counts are drawn per customer over the
alive window and placed on days by inverse-CDF sampling of the cumulative intensity.  On top
of that, each human email open by an alive customer multiplies that day's intensity by
``1 + 2`` (the extra orders follow an email click).  Order time = the customer's preferred
local hour + N(0, 2h), mapped to UTC through the customer's time zone (an hourly table of UTC
offsets built with pandas ``tz_convert``, so DST is respected) and kept on the drawn UTC day;
days, signup and churn are UTC dates.  3 % of orders are ``cancelled``.

Causes and journeys.  Every order has a true *cause* (``truth.order_causes``).  An email-driven
order's cause is ``email`` and the newsletter whose click led to it.  Any other order's cause is
drawn from the day's mix: paid channel ``c`` with probability ``beta_c hill_c / marketing_lift``
(exactly ``c``'s incremental share of that day's intensity, which is baseline x lift), the rest
(the baseline) split organic / direct / email 55 / 37 / 8; a paid cause's campaign is drawn with
probability proportional to the campaign's spend share that day x its efficiency, an email one is
the newsletter of the day (the latest send on or before it), organic and direct have none ('').
How the order reaches the store is the :class:`AttributionDesign`: an order caused by paid channel
``c`` is *assisted* with probability ``assist_share[c]`` (paid_search 0.25, paid_social 0.65,
display 0.8, affiliate 0.35: upper-funnel channels introduce, they rarely close).  Its cause is
then an extra *exposure* session of ``c`` and its campaign, starting uniformly between
``max_assist_days`` (7) days and ``min_assist_hours`` (2) hours before the order, not before the
customer's signup day or the data; should that fall on or before the customer's previous order,
it starts uniformly between that order and 40 minutes before this one (the latest start of a
purchase session).  An order with no room for either window (within 2 hours of the data's or the
signup day's start, or 40 minutes of the previous order) is not assisted.  An assisted order's
purchase session comes through a *closer* drawn from ``closer_mix`` (direct 0.45, organic 0.30,
paid_search 0.25; a paid_search closer carries ``search_brand``).  Every other order's purchase
session comes through its cause (an email-driven order's through ``email`` and its newsletter).
``shop.orders.channel`` is the purchase session's channel: what a store's platform records, the
last touch, no longer the cause.  With :data:`NO_ASSISTS` (every assist share 0) the last touch is
the cause; with ``traffic_weight=None`` as well (Traffic, below), the store is exactly the one drawn
before causes existed (campaign columns aside).

Traffic.  Browse sessions of known customers and anonymous sessions come through the day's *traffic
mix* (``AttributionDesign.traffic_weight``), not through the order causes' mix: paid channel ``c``
has weight ``w_c x spend_c(d) / base_spend_c`` (``w``: paid_search 0.16, paid_social 0.13, display
0.10, affiliate 0.06; ``base_spend_c`` is the base of the channel's daily budget under Marketing,
recorded as ``base_spend.<channel>`` in ``truth.generator_run``), so a channel brings ad clicks in
proportion to its spend and no traffic while off air; organic 0.30, direct 0.22 and email 0.03 are
constant; the weights are normalised per day (at base spend they sum to 1).  Organic and direct
dominate, and the upper-funnel channels bring much low-intent traffic for the orders they cause (20k
customers over a year: organic 32 % and direct 23 % of the browse and anonymous sessions; display
8.6 % of them against 1.5 % of the order causes, paid_social 9 % against 4.7 %), so an averaging
attribution rule (linear, first touch) no longer reads the causal shares off the paths.
Purchase and exposure sessions follow their orders' journeys, not this mix.  With
``traffic_weight=None`` browse traffic follows the day's order-cause mix instead (the generator before
1.2); the random draws are the same either way, so only the channel and campaign of browse and
anonymous sessions differ.

Products and prices.  Eight categories with a mean own-price elasticity; product elasticity
``e_j`` = category mean + N(0, 0.35) clipped to ``[-4, -0.3]``; reference price = cost x
markup(1.3-2.5).  A latent demand shock ``u_j(d)`` (AR(1), phi 0.96, sd 0.3) multiplies
demand by ``exp(u_j(d))``.  The list price is piecewise constant: every 2-6 weeks it moves
5-20 %, *up* with probability ``sigmoid(2.5 u_j / 0.3 - 5 log(list / reference))``, so prices
rise when latent demand is high (confounding: a naive log-log regression of units on price is
biased towards zero) and drift back towards the reference price.  Independently, about one
day in 75 starts a 3-7 day promotion of 10-30 % (capped so the price paid stays at or above
cost), recorded in ``order_lines.discount``.  Each basket line picks product ``j`` with weight
``popularity_j x exp(u_j(d)) x (effective_price_j(d) / reference_price_j) ** e_j``; lines per
order = 1 + Poisson(k_i), quantity = 1 + Poisson(0.25).

Customer taste (:class:`revopt.sample_data.taste.TasteDesign`, on by default).  Each customer leans to one
or two categories (``truth.customer_taste``) and has a few favourite products they rebuy: a basket line,
and a known customer's product view, picks its category with weight the customer's category share x
the day's category choice mass over its mean, then its product in the category with the weight above,
boosted for the customer's favourites, so prices keep moving demand.  The same uniform draws pick
the products, so only product ids change; ``TasteDesign(strength=0)`` is the store before generator 1.3.

Events.  Every order has a web session ``page_view -> product_view(s) -> (product_view,
add_to_cart) per line -> checkout -> purchase`` whose purchase event is at ``order_ts``, through
its purchase channel and campaign.  Every assisted order also has its exposure session
(``page_view`` and 1-3 product views, ending before the purchase session starts).  Alive
customers also browse at 2-4x their purchase rate, ending at a random funnel depth, through a
channel drawn from the day's traffic mix independently of their orders; anonymous visitors
(``customer_id = 0``) make about 8 % of the sessions other than exposures.  Every event of a
session carries the session's ``campaign``: a browse or anonymous session of a paid channel one
of its campaigns drawn by that day's spend shares, an email session the newsletter of the day,
organic and direct none ('').  Opted-in customers get a
campaign email roughly weekly at a local send hour drawn uniformly from 6-22 per recipient (a
store-wide A/B test of send hours).  ``P(open) = open_rate_at_best_i x (0.1 + 0.9 exp(-dh^2 /
(2 x 2.5^2)))``, ``dh`` = circular distance in hours between send hour and
``best_hour_local_i`` (churned customers open at a fifth of that); human opens follow the send
by a truncated exponential delay (mean 1 h, at most 5 h), 15-30 % of them are clicked.
Security scanners add machine opens (``is_machine = 1``, about 3 % of opens) within a minute of
the send, independent of the hour.  Email events have ``session_id = 0``, ``channel = 'email'``
and their send's newsletter as ``campaign``.  ``device`` is always one of desktop / mobile /
tablet (email events use the customer's usual device).

Behaviour change (optional, off by default).  With ``behaviour_change=BehaviourChange(day)`` the
store changes on day ``day`` (days after ``start``): from then on every customer buys at the
purchase rate of the customer at the mirrored rank (the heaviest buyer like the lightest, and
so on), in the Poisson orders and the email-driven ones alike, while browsing and email opens
keep the old rates.  Past frequency and engagement, which predicted purchases before the change,
then point the wrong way: a model trained before it degrades after it (outcome monitoring,
docs/monitoring.md).  Off, the store is exactly the one drawn without the option.

Offers (optional, off by default).  With ``offers=OfferDesign()`` the store sends randomised retention
and win-back offer campaigns with a control group (``shop.offers``) whose known, heterogeneous effects
(persuadables, sure things, lost causes, sleeping dogs: ``truth.offer_effects``) act on the orders drawn
above: a treated persuadable's extra order, a treated sleeping dog's earlier dropout (its later orders
removed, ``truth.customers.churn_date`` moved), and the offer's discount on the lines of each treated
customer's next order (:mod:`revopt.sample_data.offers`).  The offers draw from their own stream, so
with ``offers=None`` the store is exactly the one drawn without the option; the newsletter opens and
sessions of a sleeping dog after its earlier dropout stay as drawn.

Planted experiment (optional, off by default).  With ``experiment_effect=ExperimentEffect(...)``
each customer in a variant buys, from the experiment's day on, at their rate times the variant's
``rate_multiplier`` (1: no effect, so equal multipliers draw an A/A test), in the Poisson orders and
the email-driven ones alike, through the same mechanism as the behaviour change.  The experiment,
its day and the multipliers go to ``truth.generator_run``; which customer is in which variant is
revopt's own deterministic assignment, so the truth needs no per-customer table.  With
``exposure_share`` the store also keeps an exposure log (``shop.experiment_exposures``): each
variant's customers active on the day are logged as served with that probability, so a share below
1 for one variant draws a broken serving path (a sample ratio mismatch).

Frames and dtypes
-----------------
Columns are exactly those of the contract DDL, in DDL order.  Ids are ``int64``; ``integer``
columns (``line_no``, ``quantity``, ``best_hour_local``) ``int32``; text ``object``;
``email_opt_in`` ``bool``; money and rates ``float64``, money rounded to cents and discounts to
4 decimals.  Dates (``signup_date``, ``valid_from``, ``day``, ``churn_date``) are
``datetime64[ns]`` at midnight (``churn_date`` is ``NaT`` when NULL); ``orders.order_ts`` (whole
seconds) and ``events.event_time`` (whole milliseconds) are ``datetime64[ns, UTC]``.  In
``events``, ``session_id``, ``customer_id`` and ``product_id`` are ``uint64``, ``is_machine``
``uint8``, and ``event_type``, ``channel``, ``device`` and ``campaign`` are ``category`` (campaign
'' for none).  ``shop.marketing_spend`` rows are sorted by day, channel and campaign in the order
above; ``truth.order_causes.campaign`` is '' for none (NULL once loaded into PostgreSQL, whose COPY
turns '' into NULL).  Events are sorted by time; session ids increase with the session start;
order ids with ``order_ts``.

Why hand-written: no library draws a store whose frequency, churn, price response, media
response and email timing follow known structural models jointly, and known parameters are
the point of this module.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
from scipy.signal import lfilter

from revopt.platform.contract import EVENT_TYPES
from revopt.sample_data.draws import choice as _choice, named_streams, positions_in_group as _positions_in_group
from revopt.sample_data.taste import CustomerTaste, TasteDesign, customer_taste_truth, draw_taste
from revopt.sample_data.offers import OfferDesign, OfferDraw, coupon_discounts, draw_offers, empty_effects

logger = logging.getLogger(__name__)

GENERATOR_VERSION = "1.4.0"  # 1.4: the events carry anonymous_id (device ids: revopt.sample_data.identity)

_MS_PER_DAY = 86_400_000
_MS_PER_MINUTE = 60_000

# New streams go at the end: a child's draws depend on its position only, so the others stay the same.
_STREAMS = ("marketing", "customers", "products", "emails", "orders", "lines", "sessions", "anonymous",
            "campaigns", "journeys", "taste", "offers")
#: streams drawn once for the whole store (every chunk of generate_store_chunks shares them)
_STORE_WIDE_STREAMS = ("marketing", "products", "campaigns")

# --- customers -------------------------------------------------------------------------------
_SEGMENTS = ("casual", "regular", "loyal")
_SEGMENT_SHARE = (0.55, 0.30, 0.15)
_SEGMENT_PURCHASES_PER_YEAR = (2.0, 5.0, 12.0)
_RATE_SHAPE = 3.0
_SEGMENT_DROPOUT_PER_DAY = (1 / 450, 1 / 1100, 1 / 3000)
_DROPOUT_SHAPE = 2.0
_SHARE_SIGNED_UP_BEFORE = 0.6
_HISTORY_DAYS_BEFORE = 730
_SEGMENT_OPT_IN = (0.65, 0.72, 0.80)
_SEGMENT_OPEN_BETA = ((2.5, 7.0), (3.0, 6.0), (4.0, 5.0))
_BASKET_K_SHAPE = 2.5
_BASKET_K_MEAN = 1.2
_EXTRA_QUANTITY_MEAN = 0.25

#: (country, IANA time zone, share of customers)
_TIMEZONES = (
    ("GB", "Europe/London", 0.30),
    ("DE", "Europe/Berlin", 0.14),
    ("FR", "Europe/Paris", 0.11),
    ("NL", "Europe/Amsterdam", 0.05),
    ("US", "America/New_York", 0.18),
    ("US", "America/Los_Angeles", 0.12),
    ("AU", "Australia/Sydney", 0.10),
)
_ACQUISITION_CHANNELS = ("organic", "paid_search", "paid_social", "display", "affiliate", "referral", "direct")
#: acquisition channel mix per segment: loyal customers come more often organically or by referral
_ACQUISITION_SHARE = (
    (0.22, 0.25, 0.22, 0.08, 0.10, 0.05, 0.08),
    (0.28, 0.22, 0.15, 0.05, 0.08, 0.10, 0.12),
    (0.32, 0.16, 0.10, 0.03, 0.06, 0.18, 0.15),
)
_DEVICES = ("desktop", "mobile", "tablet")
_DEVICE_SHARE = (0.42, 0.48, 0.10)
_SAME_DEVICE = 0.8

#: relative weight of each local hour 0..23 as a customer's preferred shopping hour
_ORDER_HOUR_PROFILE = (
    0.3, 0.15, 0.1, 0.05, 0.05, 0.1, 0.3, 0.6, 0.9, 1.0, 1.0, 1.1,
    1.4, 1.3, 1.0, 1.0, 1.0, 1.1, 1.4, 1.8, 2.1, 2.0, 1.4, 0.7,
)
#: relative weight of each local hour 0..23 as a customer's best email-open hour
_EMAIL_HOUR_PROFILE = (
    0.02, 0.01, 0.01, 0.01, 0.02, 0.1, 0.6, 1.2, 1.4, 1.0, 0.8, 0.8,
    1.1, 1.0, 0.7, 0.6, 0.6, 0.8, 1.0, 1.2, 1.3, 1.0, 0.5, 0.1,
)

# --- marketing ---------------------------------------------------------------------------------
_PAID_CHANNELS = ("paid_search", "paid_social", "display", "affiliate")
#: base daily spend at 100k customers
_BASE_SPEND = (2500.0, 1500.0, 1000.0, 600.0)
_DECAY_RANGE = ((0.15, 0.40), (0.40, 0.65), (0.55, 0.80), (0.05, 0.30))
_SLOPE_RANGE = ((0.9, 1.5), (1.2, 2.0), (1.5, 2.8), (0.9, 1.5))
_MAX_LIFT_RANGE = ((0.20, 0.35), (0.10, 0.20), (0.05, 0.12), (0.05, 0.12))
_HAS_FLIGHTS = (False, True, True, False)
_WEEKLY_AMPLITUDE = (0.10, 0.15, 0.05, 0.08)
_WEEKLY_PEAK_DOW = (1, 5, 3, 4)
_CPM = (25.0, 7.0, 2.5, 9.0)
_CTR = (0.045, 0.011, 0.0025, 0.016)
#: every order channel: the paid channels, then the unpaid ones
_ORDER_CHANNELS = (*_PAID_CHANNELS, "organic", "direct", "email")
_UNPAID_SHARE = (0.55, 0.37, 0.08)
_EMAIL_CHANNEL = _ORDER_CHANNELS.index("email")
#: (channel, campaign, mean share of the channel's spend), grouped by channel in _PAID_CHANNELS order
_CAMPAIGNS = (
    ("paid_search", "search_brand", 0.30),
    ("paid_search", "search_generic", 0.50),
    ("paid_search", "search_shopping", 0.20),
    ("paid_social", "social_prospecting", 0.60),
    ("paid_social", "social_retargeting", 0.40),
    ("display", "display_awareness", 0.65),
    ("display", "display_retargeting", 0.35),
    ("affiliate", "affiliate_network", 0.70),
    ("affiliate", "affiliate_cashback", 0.30),
)
#: Dirichlet concentration of the campaign shares of a channel's spend, redrawn every 4 weeks
_CAMPAIGN_SHARE_CONCENTRATION = 20.0
_CAMPAIGN_BLOCK_DAYS = 28
_CAMPAIGN_EFFICIENCY_SD = 0.4
_NO_CAMPAIGN = ""

# --- seasonality -------------------------------------------------------------------------------
_DOW_FACTOR = (0.97, 0.95, 0.96, 0.98, 1.03, 1.08, 1.03)  # Monday .. Sunday

# --- products ----------------------------------------------------------------------------------
#: (category, mean elasticity, median unit cost, product nouns)
_CATEGORIES = (
    ("apparel", -2.0, 14.0, ("T-Shirt", "Hoodie", "Jacket", "Jeans", "Scarf")),
    ("footwear", -1.8, 28.0, ("Sneakers", "Boots", "Sandals", "Loafers")),
    ("electronics", -2.6, 45.0, ("Headphones", "Charger", "Speaker", "Smartwatch", "Keyboard")),
    ("home", -1.5, 16.0, ("Lamp", "Cushion", "Mug Set", "Throw", "Vase")),
    ("beauty", -1.2, 7.0, ("Serum", "Lip Balm", "Shampoo", "Face Mask")),
    ("grocery", -0.8, 4.0, ("Coffee", "Tea", "Granola", "Olive Oil", "Chocolate")),
    ("toys", -2.2, 11.0, ("Puzzle", "Building Set", "Plush", "Board Game")),
    ("sports", -1.7, 20.0, ("Yoga Mat", "Water Bottle", "Dumbbells", "Running Belt")),
)
_ADJECTIVES = ("Classic", "Essential", "Premium", "Eco", "Urban", "Compact", "Deluxe", "Everyday", "Nordic", "Pro")
_ELASTICITY_NOISE = 0.35
_ELASTICITY_BOUNDS = (-4.0, -0.3)
_SHOCK_PHI = 0.96
_SHOCK_SD = 0.3
_PRICE_GAP_DAYS = (14, 43)
_PRICE_STEP = (0.05, 0.20)
_PRICE_SHOCK_RESPONSE = 2.5
_PRICE_REVERSION = 5.0
_PROMO_START_PROB = 1 / 75
_PROMO_DAYS = (3, 8)
_PROMO_DEPTHS = (0.10, 0.15, 0.20, 0.25, 0.30)

# --- events ------------------------------------------------------------------------------------
_SEND_HOURS = (6, 22)
_OPEN_BELL_SD_HOURS = 2.5
_OPEN_FLOOR = 0.1
_DEAD_OPEN_FACTOR = 0.2
_OPEN_DELAY_MEAN_MIN = 60.0
_OPEN_DELAY_MAX_MIN = 300.0
_MACHINE_SHARE = 0.03
_CLICK_PROB = (0.15, 0.30)
_EMAIL_OPEN_BOOST = 2.0
_CANCEL_SHARE = 0.03
_BROWSE_MULTIPLIER = (2.0, 4.0)
_ANONYMOUS_SHARE = 0.08
_PURCHASE_SESSION_MINUTES = (3.0, 40.0)
_EXPOSURE_SESSION_MINUTES = (0.5, 25.0)
_EXPOSURE_PRODUCT_VIEWS = (1, 3)
_BROWSE_DEPTH_SHARE = (0.40, 0.35, 0.18, 0.07)  # page_view | +product views | +add_to_cart | +checkout
_ANONYMOUS_DEPTH_SHARE = (0.55, 0.30, 0.12, 0.03)
_EVENT_CODE = {name: code for code, name in enumerate(EVENT_TYPES)}


@dataclass(frozen=True)
class BehaviourChange:
    """From ``day`` (days after ``start``) on, purchase rates are reversed by rank (module docstring)."""

    day: int


@dataclass(frozen=True)
class ExperimentEffect:
    """A planted experiment (module docstring): from ``day`` (days after ``start``) on, customer ``i``
    (``customer_id = i + 1``) buys at ``rate_multiplier[variant_of_customer[i]]`` times their rate.
    ``variant_of_customer`` is what revopt's assignment will give each customer (the caller computes it
    with :func:`ml.experiments.assignment.pick_variants`, so this module stays free of ``ml``); a
    customer in no variant has ``None`` and keeps their rate."""

    experiment_id: str
    day: int
    variant_of_customer: np.ndarray
    rate_multiplier: dict[str, float]
    #: share of each variant's customers the store's app logs as served (``shop.experiment_exposures``);
    #: None: no exposure log. Below 1 for one variant: a broken serving path (a sample ratio mismatch)
    exposure_share: dict[str, float] | None = None

    def multipliers(self) -> np.ndarray:
        """Each customer's rate multiplier from ``day`` on (1 outside every variant)."""
        return np.array([self.rate_multiplier.get(v, 1.0) if v is not None else 1.0 for v in self.variant_of_customer])


@dataclass(frozen=True)
class AttributionDesign:
    """How a paid channel's incremental orders reach the store (module docstring, Causes and journeys), and
    which channels bring the sessions without an order (Traffic).

    An order caused by paid channel ``c`` is *assisted* with probability ``assist_share[c]`` (0 for a
    channel not named): the cause is an exposure session of ``c`` between ``min_assist_hours`` and
    ``max_assist_days`` before the order, and the purchase session comes through a *closer* channel
    drawn from ``closer_mix`` (a paid closer carries ``closer_campaign[channel]``).  With every
    assist share 0 (:data:`NO_ASSISTS`) the purchase session's channel is the order's cause.  Browse and
    anonymous sessions draw their channel with weight ``traffic_weight[c]`` (0 for a channel not named),
    times the day's spend over the base spend for a paid channel, normalised per day.
    """

    assist_share: Mapping[str, float] = field(default_factory=lambda: {
        "paid_search": 0.25, "paid_social": 0.65, "display": 0.8, "affiliate": 0.35})
    closer_mix: Mapping[str, float] = field(default_factory=lambda: {
        "direct": 0.45, "organic": 0.30, "paid_search": 0.25})
    closer_campaign: Mapping[str, str] = field(default_factory=lambda: {"paid_search": "search_brand"})
    max_assist_days: float = 7.0
    min_assist_hours: float = 2.0
    #: weights of the browse and anonymous sessions' channels (module docstring, Traffic); None: the day's
    #: order-cause mix, the store before generator 1.2 (any averaging attribution rule then recovers the causes)
    traffic_weight: Mapping[str, float] | None = field(default_factory=lambda: {
        "organic": 0.30, "direct": 0.22, "email": 0.03,
        "paid_search": 0.16, "paid_social": 0.13, "display": 0.10, "affiliate": 0.06})

    def __post_init__(self) -> None:
        unknown = set(self.assist_share) - set(_PAID_CHANNELS)
        if unknown or not all(0.0 <= share <= 1.0 for share in self.assist_share.values()):
            raise ValueError(f"assist_share needs paid channels {_PAID_CHANNELS} with shares in [0, 1], "
                             f"got {dict(self.assist_share)}")
        closers = (*_PAID_CHANNELS, "organic", "direct")
        if set(self.closer_mix) - set(closers) or any(w < 0 for w in self.closer_mix.values()) \
                or not sum(self.closer_mix.values()) > 0:
            raise ValueError(f"closer_mix needs channels among {closers} with weights >= 0 and a positive sum, "
                             f"got {dict(self.closer_mix)}")
        campaigns = {campaign: channel for channel, campaign, _ in _CAMPAIGNS}
        for channel in set(self.closer_mix) & set(_PAID_CHANNELS):
            if campaigns.get(self.closer_campaign.get(channel, "")) != channel:
                raise ValueError(f"closer channel {channel!r} needs a closer_campaign among its campaigns "
                                 f"{[k for k, c in campaigns.items() if c == channel]}")
        if not 0 < self.min_assist_hours / 24.0 < self.max_assist_days:
            raise ValueError(f"need 0 < min_assist_hours < max_assist_days, got {self.min_assist_hours} h "
                             f"and {self.max_assist_days} days")
        if self.traffic_weight is not None:
            weight = self.traffic_weight
            # a positive unpaid weight gives every day traffic, whatever the paid channels spend
            if set(weight) - set(_ORDER_CHANNELS) or any(w < 0 for w in weight.values()) \
                    or not sum(weight.get(c, 0.0) for c in _ORDER_CHANNELS[len(_PAID_CHANNELS):]) > 0:
                raise ValueError(f"traffic_weight needs channels among {_ORDER_CHANNELS} with weights >= 0 and a "
                                 f"positive unpaid sum, got {dict(weight)}")

    def run_parameters(self) -> dict[str, str]:
        """The design as ``truth.generator_run`` rows (key -> value)."""
        rows = {f"assist_share.{c}": repr(float(self.assist_share.get(c, 0.0))) for c in _PAID_CHANNELS}
        rows |= {f"closer_mix.{c}": repr(float(w)) for c, w in sorted(self.closer_mix.items())}
        rows |= {f"closer_campaign.{c}": k for c, k in sorted(self.closer_campaign.items()) if c in self.closer_mix}
        rows |= {"max_assist_days": repr(float(self.max_assist_days)),
                 "min_assist_hours": repr(float(self.min_assist_hours))}
        if self.traffic_weight is None:
            return rows | {"traffic_weight": "cause_mix"}
        return rows | {f"traffic_weight.{c}": repr(float(self.traffic_weight.get(c, 0.0))) for c in _ORDER_CHANNELS}


#: every purchase session comes through its order's cause (the store's last touch is the truth)
NO_ASSISTS = AttributionDesign(assist_share={})


@dataclass(frozen=True)
class SyntheticStore:
    """A generated store: source tables, ground truth and ClickHouse events."""

    shop: dict[str, pd.DataFrame]
    truth: dict[str, pd.DataFrame]
    events: pd.DataFrame


@dataclass(frozen=True)
class _Customers:
    signup_day: np.ndarray  # int64, days from start (negative: before start)
    churn_day: np.ndarray  # int64, first inactive day, days from start
    rate: np.ndarray  # purchases per day while alive
    basket_k: np.ndarray
    tz: np.ndarray  # index into _TIMEZONES
    order_hour: np.ndarray  # preferred local shopping hour, fractional
    best_hour: np.ndarray
    open_rate: np.ndarray
    opt_in: np.ndarray
    device: np.ndarray  # index into _DEVICES
    browse_multiplier: np.ndarray
    click_prob: np.ndarray
    change_day: int | None = None  # from this day on, purchases follow rate_after (BehaviourChange)
    rate_after: np.ndarray | None = None
    taste: CustomerTaste | None = None  # None: every customer picks products from the day's choice alone

    def purchase_rate(self, customer: np.ndarray, day: np.ndarray) -> np.ndarray:
        """Customer ``customer``'s purchase rate on ``day`` (element-wise)."""
        if self.change_day is None:
            return self.rate[customer]
        return np.where(day >= self.change_day, self.rate_after[customer], self.rate[customer])


@dataclass(frozen=True)
class _Products:
    list_price: np.ndarray  # (days, products)
    discount: np.ndarray  # (days, products)
    choice_cdf: np.ndarray  # (days, products), row-wise cumulative choice probabilities
    category: np.ndarray  # (products,) index into _CATEGORIES


@dataclass(frozen=True)
class _Marketing:
    spend: pd.DataFrame
    channels: pd.DataFrame
    lift: np.ndarray  # (days,)
    channel_cdf: np.ndarray  # (days, len(_ORDER_CHANNELS)): the day's order-cause mix
    relative_spend: np.ndarray  # (days, len(_PAID_CHANNELS)): spend / the channel's base spend


@dataclass(frozen=True)
class _Campaigns:
    spend: pd.DataFrame  # shop.marketing_spend: one row per day, paid channel and campaign
    truth: pd.DataFrame  # truth.campaigns
    share: np.ndarray  # (days, len(_CAMPAIGNS)): each campaign's share of its channel's spend that day
    efficiency: np.ndarray  # (len(_CAMPAIGNS),)


@dataclass(frozen=True)
class _Emails:
    time_ms: np.ndarray
    customer: np.ndarray
    event_code: np.ndarray
    is_machine: np.ndarray
    event_send: np.ndarray  # per email event, index of its send day in send_days
    send_days: np.ndarray  # the store's newsletter send days, ascending
    order_customer: np.ndarray  # email-driven orders
    order_ms: np.ndarray
    order_click_ms: np.ndarray
    order_send: np.ndarray  # index of the send whose click led to the order


@dataclass(frozen=True)
class _Orders:
    customer: np.ndarray  # customer index, sorted like order_id
    time_ms: np.ndarray
    day: np.ndarray
    cause: np.ndarray  # index into _ORDER_CHANNELS: the channel that brought the order about
    email_send: np.ndarray  # email-driven orders: index of the clicked send (_Emails.send_days); else -1
    floor_ms: np.ndarray  # earliest possible session start


@dataclass(frozen=True)
class _Journeys:
    """How each order reached the store (module docstring, Causes and journeys); campaigns as codes into the
    store's campaign names (:func:`_campaign_names`)."""

    cause_campaign: np.ndarray  # per order
    channel: np.ndarray  # per order: the purchase session's channel (index into _ORDER_CHANNELS)
    campaign: np.ndarray  # per order: the purchase session's campaign
    exposure_order: np.ndarray  # the assisted orders (indices)
    exposure_ms: np.ndarray  # their exposure session's start


def generate_store(
    n_customers: int,
    days: int,
    start: dt.date,
    seed: int,
    n_products: int | None = None,
    behaviour_change: BehaviourChange | None = None,
    experiment_effect: ExperimentEffect | None = None,
    attribution: AttributionDesign = AttributionDesign(),
    taste: TasteDesign = TasteDesign(),
    offers: OfferDesign | None = None,
) -> SyntheticStore:
    """Draw a synthetic store with ``n_customers`` customers over ``[start, start + days)``.

    ``n_products`` defaults to ``max(50, min(500, n_customers // 200))``.  ``behaviour_change``
    (None: off) changes the customers' purchase behaviour mid-way; ``experiment_effect`` (None: off)
    plants an experiment's true effect on purchase rates (not both at once); ``attribution`` says how
    paid channels' orders reach the store (:data:`NO_ASSISTS`: always through their cause); ``taste`` how
    strongly customers prefer their own categories and favourite products (strength 0: not at all); ``offers``
    (None: off) the randomised offer campaigns and their effects (:mod:`revopt.sample_data.offers`).  The same
    arguments always give identical frames.  See the module docstring for the generative model.
    """
    if n_customers < 1 or days < 1:
        raise ValueError(f"need n_customers >= 1 and days >= 1, got {n_customers} and {days}")
    if n_products is None:
        n_products = max(50, min(500, n_customers // 200))
    if n_products < 1:
        raise ValueError(f"need n_products >= 1, got {n_products}")
    if behaviour_change is not None and not 0 < behaviour_change.day < days:
        raise ValueError(f"behaviour_change.day must be inside the data (0 < day < {days}), got {behaviour_change.day}")
    if experiment_effect is not None:
        if behaviour_change is not None:
            raise ValueError("a behaviour change and a planted experiment cannot be drawn together")
        if not 0 < experiment_effect.day < days or len(experiment_effect.variant_of_customer) != n_customers:
            raise ValueError(f"experiment_effect needs 0 < day < {days} and one variant per customer ({n_customers}), "
                             f"got day {experiment_effect.day} and {len(experiment_effect.variant_of_customer)}")
    return _generate(n_customers, days, start, seed, n_products, _streams(seed), store_customers=n_customers,
                     behaviour_change=behaviour_change, experiment_effect=experiment_effect, attribution=attribution,
                     taste=taste, offers=offers)


def generate_store_chunks(
    n_customers: int,
    days: int,
    start: dt.date,
    seed: int,
    chunk_customers: int = 100_000,
    n_products: int | None = None,
    attribution: AttributionDesign = AttributionDesign(),
    taste: TasteDesign = TasteDesign(),
) -> Iterator[SyntheticStore]:
    """One store of ``n_customers`` customers drawn in pieces of at most ``chunk_customers``, for
    sizes whose events would not fit in memory at once (benchmarks at a million customers).

    Every chunk shares the store-wide draws (calendar, marketing and campaigns at the full store's
    spend, products and prices, all from ``seed``) and draws its own customers, emails, orders,
    journeys and sessions from the child seed ``(seed, chunk number)``.  Ids continue across
    chunks: ``customer_id``, ``order_id`` and ``session_id`` are offset by the chunks before, so
    loading every chunk gives one consistent store.  Tables that describe the whole store
    (products, prices, marketing, channel, campaign and product truth, ``daily_intensity``,
    ``generator_run``) come with the first chunk only; later chunks carry just their customers,
    orders, order lines, customer truth, order causes and events.  The result is deterministic,
    but it is a different draw from :func:`generate_store` with the same arguments (order ids
    increase with time within a chunk only; purchase intensity, products and spend follow the
    same model).
    """
    if n_customers < 1 or days < 1 or chunk_customers < 1:
        raise ValueError(f"need n_customers, days and chunk_customers >= 1, got {n_customers}, {days}, {chunk_customers}")
    if n_products is None:
        n_products = max(50, min(500, n_customers // 200))
    customer_offset = order_offset = session_offset = 0
    for number, first in enumerate(range(0, n_customers, chunk_customers)):
        size = min(chunk_customers, n_customers - first)
        # Store-wide streams from the store's seed (identical in every chunk), the rest per chunk.
        store_wide = _streams(seed)
        rngs = {**_streams((seed, number + 1)), **{name: store_wide[name] for name in _STORE_WIDE_STREAMS}}
        chunk = _generate(size, days, start, seed, n_products, rngs, store_customers=n_customers,
                          attribution=attribution, taste=taste)
        shop, truth, events = chunk.shop, chunk.truth, chunk.events
        shop["customers"]["customer_id"] += customer_offset
        truth["customers"]["customer_id"] += customer_offset
        truth["customer_taste"]["customer_id"] += customer_offset
        truth["identities"][["customer_id", "person_id"]] += customer_offset
        shop["orders"]["customer_id"] += customer_offset
        shop["orders"]["order_id"] += order_offset
        shop["order_lines"]["order_id"] += order_offset
        truth["order_causes"]["order_id"] += order_offset
        # Anonymous visitors (customer 0) and email events (session 0) keep their zero.
        customer_id = events["customer_id"].to_numpy().copy()
        customer_id[customer_id != 0] += np.uint64(customer_offset)
        events["customer_id"] = customer_id
        session_id = events["session_id"].to_numpy().copy()
        session_id[session_id != 0] += np.uint64(session_offset)
        events["session_id"] = session_id
        customer_offset += size
        order_offset = max(order_offset, int(shop["orders"]["order_id"].to_numpy().max(initial=0)))
        session_offset = max(session_offset, int(events["session_id"].to_numpy().max(initial=0)))
        if number == 0:
            design = _base_spend_rows(n_customers / 100_000) | attribution.run_parameters() | taste.run_parameters()
            truth["generator_run"] = pd.DataFrame(
                {
                    "key": ["seed", "n_customers", "days", "start", "n_products", "generator_version", "chunk_customers",
                            *design],
                    "value": [str(seed), str(n_customers), str(days), pd.Timestamp(start).date().isoformat(),
                              str(n_products), GENERATOR_VERSION, str(chunk_customers), *design.values()],
                }
            )
            yield SyntheticStore(shop=shop, truth=truth, events=events)
        else:
            yield SyntheticStore(
                shop={name: shop[name] for name in ("customers", "orders", "order_lines")},
                truth={name: truth[name] for name in ("customers", "order_causes", "customer_taste", "identities")},
                events=events,
            )


def _generate(
    n_customers: int,
    days: int,
    start: dt.date,
    seed: int,
    n_products: int,
    rngs: dict[str, np.random.Generator],
    store_customers: int,
    behaviour_change: BehaviourChange | None = None,
    experiment_effect: ExperimentEffect | None = None,
    attribution: AttributionDesign = AttributionDesign(),
    taste: TasteDesign = TasteDesign(),
    offers: OfferDesign | None = None,
) -> SyntheticStore:
    began = time.perf_counter()
    dates = pd.date_range(pd.Timestamp(start).normalize(), periods=days, freq="D")
    origin = dates[0].tz_localize("UTC")
    end_ms = days * _MS_PER_DAY

    seasonality = _seasonality(dates)
    marketing = _draw_marketing(rngs["marketing"], dates, spend_scale=store_customers / 100_000)
    campaigns = _draw_campaigns(rngs["campaigns"], marketing, dates)
    intensity = seasonality * marketing.lift
    cum_intensity = np.concatenate([[0.0], np.cumsum(intensity)])
    offsets = _utc_offsets(dates)

    products, product_frames, product_truth = _draw_products(rngs["products"], n_products, dates)
    mean_reference_price = float(np.average(product_truth["reference_price"], weights=product_truth["popularity"]))
    customers, customer_frame, customer_truth = _draw_customers(
        rngs["customers"], n_customers, dates, mean_reference_price
    )
    if behaviour_change is not None:
        customers = replace(customers, change_day=behaviour_change.day, rate_after=_reversed_by_rank(customers.rate))
    if experiment_effect is not None:
        customers = replace(customers, change_day=experiment_effect.day,
                            rate_after=customers.rate * experiment_effect.multipliers())
    if taste.strength > 0:
        customers = replace(customers, taste=draw_taste(rngs["taste"], taste, products.choice_cdf, products.category,
                                                        len(_CATEGORIES), n_customers))
    logger.info("drew %d customers and %d products (%.1fs)", n_customers, n_products, time.perf_counter() - began)

    emails = _draw_emails(rngs["emails"], customers, intensity, offsets, end_ms)
    logger.info("drew %d email events (%.1fs)", len(emails.time_ms), time.perf_counter() - began)
    campaign_names, newsletter_of_day = _campaign_names(emails.send_days, dates)

    orders, orders_frame = _draw_orders(
        rngs["orders"], customers, emails, cum_intensity, marketing.channel_cdf, offsets, origin
    )
    offer_draw = None
    if offers is not None:
        customers, orders, orders_frame, offer_draw = _with_offers(
            rngs["offers"], offers, customers, orders, orders_frame, intensity, customer_truth, offsets, origin)
        customer_truth = customer_truth.assign(churn_date=pd.Series(_dates(np.minimum(customers.churn_day, days), dates))
                                               .where(customers.churn_day < days).to_numpy())
    journeys = _draw_journeys(rngs["journeys"], orders, customers, campaigns, newsletter_of_day, attribution)
    orders_frame["channel"] = np.asarray(_ORDER_CHANNELS, dtype=object)[journeys.channel]  # the store's last touch
    lines_frame, line_order, line_product = _draw_lines(rngs["lines"], orders, customers, products)
    if offer_draw is not None:
        lines_frame = _with_coupons(lines_frame, line_order, line_product, orders.day, products, coupon_discounts(
            offer_draw.offers, orders_frame["customer_id"].to_numpy(), orders_frame["order_ts"], offers.horizon_days))
    logger.info("drew %d orders and %d lines (%.1fs)", len(orders_frame), len(lines_frame), time.perf_counter() - began)

    events = _build_events(
        rngs, customers, orders, journeys, line_order, line_product, emails, products,
        _traffic_cdf(marketing, attribution), campaigns, campaign_names, newsletter_of_day, cum_intensity, offsets,
        origin,
    )
    logger.info("built %d events (%.1fs)", len(events), time.perf_counter() - began)

    design = _base_spend_rows(store_customers / 100_000) | attribution.run_parameters() | taste.run_parameters()
    design |= {} if offers is None else offers.run_parameters()
    generator_run = pd.DataFrame(
        {
            "key": ["seed", "n_customers", "days", "start", "n_products", "generator_version", *design],
            "value": [str(seed), str(n_customers), str(days), pd.Timestamp(start).date().isoformat(),
                      str(n_products), GENERATOR_VERSION, *design.values()],
        }
    )
    if behaviour_change is not None:
        generator_run = pd.concat([generator_run, pd.DataFrame(
            {"key": ["behaviour_change_day"], "value": [str(behaviour_change.day)]})], ignore_index=True)
    if experiment_effect is not None:
        variants = sorted(experiment_effect.rate_multiplier)
        generator_run = pd.concat([generator_run, pd.DataFrame({
            "key": ["experiment_id", "experiment_day", *(f"experiment_rate_multiplier.{v}" for v in variants)],
            "value": [experiment_effect.experiment_id, str(experiment_effect.day),
                      *(repr(float(experiment_effect.rate_multiplier[v])) for v in variants)]})], ignore_index=True)
    daily_intensity = pd.DataFrame({"day": dates, "seasonality": seasonality, "marketing_lift": marketing.lift})
    shop = {
        "customers": customer_frame,
        "products": product_frames["products"],
        "product_prices": product_frames["product_prices"],
        "orders": orders_frame,
        "order_lines": lines_frame,
        "marketing_spend": campaigns.spend,
    }
    if experiment_effect is not None and experiment_effect.exposure_share is not None:
        shop["experiment_exposures"] = _exposures(experiment_effect, customers, origin, days, seed)
    if offer_draw is not None:
        shop["offers"] = offer_draw.offers
    truth = {
        "generator_run": generator_run,
        "customers": customer_truth,
        "products": product_truth,
        # the store's promotions are price reductions only (no display or feature), and no product's
        # demand responds to another's price
        "promotion_effects": pd.DataFrame({"promo_type": pd.Series(dtype=object), "lift": pd.Series(dtype="float64")}),
        "cross_elasticities": pd.DataFrame({"product_id": pd.Series(dtype="int64"),
                                            "other_product_id": pd.Series(dtype="int64"),
                                            "cross_elasticity": pd.Series(dtype="float64")}),
        "channels": marketing.channels,
        "daily_intensity": daily_intensity,
        "campaigns": campaigns.truth,
        "order_causes": _order_causes(orders, journeys, campaign_names),
        "customer_taste": customer_taste_truth(customers.taste, tuple(c[0] for c in _CATEGORIES)),
        "offer_effects": empty_effects() if offer_draw is None else offer_draw.effects,
        # every account is its own person and no device is known (revopt.sample_data.identity draws both)
        "identities": pd.DataFrame({"customer_id": shop["customers"]["customer_id"].to_numpy(dtype="int64"),
                                    "person_id": shop["customers"]["customer_id"].to_numpy(dtype="int64")}),
        "devices": pd.DataFrame({"anonymous_id": pd.Series(dtype=object), "person_id": pd.Series(dtype="int64")}),
    }
    logger.info("generated store seed=%d in %.1fs", seed, time.perf_counter() - began)
    return SyntheticStore(shop=shop, truth=truth, events=events)


def _exposures(effect: ExperimentEffect, customers: _Customers, origin: pd.Timestamp, days: int, seed: int) -> pd.DataFrame:
    """The store's exposure log of a planted experiment: each customer in a variant, signed up and still
    active on the experiment's day (or on signup, when later), is logged as served at a random time of
    that day with the variant's ``exposure_share`` probability (its own random stream, so the rest of
    the store is the same with or without the log)."""
    rng = np.random.default_rng([seed, 0x5EE])
    variant = effect.variant_of_customer
    day = np.maximum(customers.signup_day, effect.day)
    share = np.array([effect.exposure_share.get(v, 0.0) if v is not None else 0.0 for v in variant])
    logged = (day < np.minimum(customers.churn_day, days)) & (rng.random(len(variant)) < share)
    at_ms = day[logged].astype(np.int64) * _MS_PER_DAY + rng.integers(0, _MS_PER_DAY // 1000, int(logged.sum())) * 1000
    return pd.DataFrame({"experiment_id": np.full(int(logged.sum()), effect.experiment_id, dtype=object),
                         "unit_id": np.flatnonzero(logged).astype(np.int64) + 1,
                         "first_exposed_at": _timestamps(at_ms, origin)})


def _with_offers(rng: np.random.Generator, design: OfferDesign, customers: _Customers, orders: _Orders,
                 frame: pd.DataFrame, intensity: np.ndarray, customer_truth: pd.DataFrame, offsets: np.ndarray,
                 origin: pd.Timestamp) -> tuple[_Customers, _Orders, pd.DataFrame, OfferDraw]:
    """The store's offer campaigns (:func:`revopt.sample_data.offers.draw_offers`) applied to its drawn
    orders: the orders of sleeping dogs who dropped out after an offer are gone, the persuadables' extra
    orders (caused by the offer's email, at the customer's usual hour) are in, order ids renumbered in
    time order. Returns the customers with their new dropout days, the orders, their frame and the draw."""
    # the newsletter's extra purchase intensity (Purchases, module docstring): weekly sends at a uniform
    # send hour, opened at open_rate x the hour's bell, each open tripling that day's intensity
    hours = np.arange(_SEND_HOURS[0], _SEND_HOURS[1] + 1)
    distance = np.abs(hours[None, :] - np.arange(24)[:, None])
    distance = np.minimum(distance, 24 - distance)
    bell = (_OPEN_FLOOR + (1.0 - _OPEN_FLOOR) * np.exp(-0.5 * (distance / _OPEN_BELL_SD_HOURS) ** 2)).mean(axis=1)
    email_boost = customers.opt_in * customers.open_rate * bell[customers.best_hour] * _EMAIL_OPEN_BOOST / 7.0
    draw = draw_offers(rng, design, signup_day=customers.signup_day, churn_day=customers.churn_day, rate=customers.rate,
                       open_rate=customers.open_rate, opt_in=customers.opt_in,
                       basket_value=customer_truth["mean_basket_value"].to_numpy(), email_boost=email_boost,
                       order_customer=orders.customer, order_day=orders.day, intensity=intensity, origin=origin,
                       completed_share=1.0 - _CANCEL_SHARE)
    kept, extra = draw.kept, draw.extra_customer
    local_hour = np.mod(customers.order_hour[extra] + rng.normal(0.0, 2.0, len(extra)), 24.0)
    extra_ms = _local_hour_to_utc_ms(draw.extra_day, local_hour, customers.tz[extra], offsets) // 1000 * 1000
    customer = np.concatenate([orders.customer[kept], extra])
    time_ms = np.concatenate([orders.time_ms[kept], extra_ms])
    cause = np.concatenate([orders.cause[kept], np.full(len(extra), _EMAIL_CHANNEL)])
    send = np.concatenate([orders.email_send[kept], np.full(len(extra), -1, dtype=np.int64)])
    floor_ms = np.concatenate([orders.floor_ms[kept], draw.extra_day.astype(np.int64) * _MS_PER_DAY])
    status = np.concatenate([frame["status"].to_numpy()[kept], np.where(
        rng.random(len(extra)) < _CANCEL_SHARE, "cancelled", "completed").astype(object)])
    order = np.lexsort((customer, time_ms))
    customer, time_ms, cause, send, floor_ms, status = (
        customer[order], time_ms[order], cause[order], send[order], floor_ms[order], status[order])
    frame = pd.DataFrame({"order_id": np.arange(1, len(customer) + 1, dtype=np.int64),
                          "customer_id": customer.astype(np.int64) + 1, "order_ts": _timestamps(time_ms, origin),
                          "channel": np.asarray(_ORDER_CHANNELS, dtype=object)[cause], "status": status})
    orders = _Orders(customer=customer, time_ms=time_ms, day=time_ms // _MS_PER_DAY, cause=cause, email_send=send,
                     floor_ms=floor_ms)
    return replace(customers, churn_day=draw.churn_day), orders, frame, draw


def _with_coupons(lines: pd.DataFrame, line_order: np.ndarray, line_product: np.ndarray, order_day: np.ndarray,
                  products: _Products, coupon: np.ndarray) -> pd.DataFrame:
    """Order lines with each redeemed offer's discount (``coupon``, per order) on its order's lines: the
    larger of it and the day's promotion off the list price."""
    offered = coupon[line_order]
    if not (offered > 0).any():
        return lines
    day = order_day[line_order]
    discount = np.maximum(products.discount[day, line_product], offered)
    list_price = products.list_price[day, line_product]
    return lines.assign(unit_price=np.round(list_price * (1.0 - discount), 2), discount=np.round(discount, 4))


# --- randomness and calendar ---------------------------------------------------------------------


def _streams(seed: int | tuple[int, ...]) -> dict[str, np.random.Generator]:
    return named_streams(seed, _STREAMS)


def _seasonality(dates: pd.DatetimeIndex) -> np.ndarray:
    dow = np.asarray(_DOW_FACTOR)
    dow = dow / dow.mean()
    day_of_year = dates.dayofyear.to_numpy().astype(np.float64)
    yearly = 1.0 + 0.08 * np.cos(2.0 * np.pi * (day_of_year - 15.0) / 365.25)
    distance = np.abs(day_of_year - 335.0)
    distance = np.minimum(distance, 365.25 - distance)
    holiday = 0.35 * np.exp(-0.5 * (distance / 12.0) ** 2)
    return dow[dates.dayofweek.to_numpy()] * (yearly + holiday)


def _utc_offsets(dates: pd.DatetimeIndex) -> np.ndarray:
    """UTC offset in seconds of every time zone during every UTC hour of the data, shape (zones, hours).

    DST transitions of the supported zones fall on whole UTC hours, so the table is exact.
    """
    hours = pd.date_range(dates[0], periods=len(dates) * 24, freq="h", tz="UTC")
    offsets = np.empty((len(_TIMEZONES), len(hours)), dtype=np.float64)
    for k, (_, zone, _) in enumerate(_TIMEZONES):
        local = hours.tz_convert(zone).tz_localize(None)
        offsets[k] = (local - hours.tz_localize(None)).total_seconds().to_numpy()
    return offsets


def _local_hour_to_utc_ms(day: np.ndarray, local_hour: np.ndarray, tz: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Milliseconds since start of the instant on UTC day ``day`` whose local clock shows ``local_hour``.

    Starts from the zone's offset at noon UTC and corrects it once with the offset in force at the
    first guess, which is exact except for local times that DST skips.
    """
    day = day.astype(np.int64)
    hour_index = day * 24 + 12
    for _ in range(2):
        offset = offsets[tz, np.clip(hour_index, 0, offsets.shape[1] - 1)]
        seconds = np.mod(local_hour * 3600.0 - offset, 86_400.0)
        hour_index = day * 24 + (seconds // 3600.0).astype(np.int64)
    return day * _MS_PER_DAY + np.floor(seconds * 1000.0).astype(np.int64)


def _sample_rows(cdf: np.ndarray, rows: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
    """Column index drawn from row ``rows[i]`` of a row-wise CDF (last column 1), for all i at once."""
    n_rows, n_cols = cdf.shape
    shifted = (cdf + np.arange(n_rows, dtype=np.float64)[:, None]).ravel()
    position = np.searchsorted(shifted, rows + uniforms, side="right") - rows.astype(np.int64) * n_cols
    return np.clip(position, 0, n_cols - 1)


def _row_cdf(weights: np.ndarray) -> np.ndarray:
    cdf = np.cumsum(weights, axis=1)
    cdf /= cdf[:, -1:]
    cdf[:, -1] = 1.0
    return cdf


def _draw_days(
    rng: np.random.Generator, rate: np.ndarray, lo: np.ndarray, hi: np.ndarray, cum_intensity: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Poisson events at ``rate x intensity(d)`` on days ``lo <= d < hi``: (owner index, day)."""
    hi = np.maximum(hi, lo)
    exposure = cum_intensity[hi] - cum_intensity[lo]
    counts = rng.poisson(rate * exposure)
    owner = np.repeat(np.arange(len(rate)), counts)
    target = cum_intensity[lo[owner]] + rng.random(len(owner)) * exposure[owner]
    day = np.searchsorted(cum_intensity, target, side="right") - 1
    return owner, np.clip(day, lo[owner], hi[owner] - 1)


def _reversed_by_rank(values: np.ndarray) -> np.ndarray:
    """Each element replaced by the element at the mirrored rank (largest <-> smallest)."""
    order = np.argsort(values, kind="stable")
    out = np.empty_like(values)
    out[order] = values[order[::-1]]
    return out




def _dates(start_day: np.ndarray, dates: pd.DatetimeIndex) -> np.ndarray:
    """``datetime64[ns]`` midnights ``start_day`` days after the first day (may be negative)."""
    return (dates[0] + pd.to_timedelta(start_day, unit="D")).to_numpy()


# --- marketing ---------------------------------------------------------------------------------


def _draw_marketing(rng: np.random.Generator, dates: pd.DatetimeIndex, spend_scale: float) -> _Marketing:
    days, n_channels = len(dates), len(_PAID_CHANNELS)
    base = np.asarray(_BASE_SPEND) * spend_scale
    block_level = rng.lognormal(0.0, 0.35, size=(days // 28 + 1, n_channels))[np.arange(days) // 28]
    noise = rng.normal(0.0, 0.06, size=(days, n_channels))
    wander = lfilter([1.0], [1.0, -0.9], noise, axis=0)
    dow = dates.dayofweek.to_numpy()[:, None]
    weekly = 1.0 + np.asarray(_WEEKLY_AMPLITUDE) * np.cos(2.0 * np.pi * (dow - np.asarray(_WEEKLY_PEAK_DOW)) / 7.0)
    on_air = np.column_stack([_flights(rng, days) if flights else np.ones(days) for flights in _HAS_FLIGHTS])
    spend = np.round(base * block_level * np.exp(wander) * weekly * on_air, 2)

    decay = _uniform_per_channel(rng, _DECAY_RANGE)
    slope = _uniform_per_channel(rng, _SLOPE_RANGE)
    max_lift = _uniform_per_channel(rng, _MAX_LIFT_RANGE)
    half_saturation = base / (1.0 - decay) * rng.uniform(0.6, 1.4, n_channels)
    adstock = np.column_stack([lfilter([1.0], [1.0, -decay[c]], spend[:, c]) for c in range(n_channels)])
    saturation = adstock**slope / (adstock**slope + half_saturation**slope)
    contribution = max_lift * saturation
    lift = 1.0 + contribution.sum(axis=1)

    impressions = rng.poisson(spend / np.asarray(_CPM) * 1000.0 * rng.lognormal(0.0, 0.1, spend.shape))
    ctr = np.clip(np.asarray(_CTR) * rng.lognormal(0.0, 0.15, spend.shape), 0.0, 1.0)
    clicks = rng.binomial(impressions, ctr)

    mix = np.column_stack([contribution / lift[:, None], (1.0 / lift)[:, None] * np.asarray(_UNPAID_SHARE)])
    spend_frame = pd.DataFrame(
        {
            "day": np.repeat(dates.to_numpy(), n_channels),
            "channel": np.tile(np.asarray(_PAID_CHANNELS, dtype=object), days),
            "spend": spend.ravel(),
            "impressions": impressions.ravel().astype(np.int64),
            "clicks": clicks.ravel().astype(np.int64),
        }
    )
    channels = pd.DataFrame(
        {
            "channel": list(_PAID_CHANNELS),
            "adstock_decay": decay,
            "half_saturation": half_saturation,
            "hill_slope": slope,
            "max_lift": max_lift,
        }
    )
    return _Marketing(spend=spend_frame, channels=channels, lift=lift, channel_cdf=_row_cdf(mix),
                      relative_spend=spend / base)


def _traffic_cdf(marketing: _Marketing, design: AttributionDesign) -> np.ndarray:
    """Each day's channel mix of browse and anonymous sessions (module docstring, Traffic), as a row-wise CDF
    over _ORDER_CHANNELS."""
    if design.traffic_weight is None:
        return marketing.channel_cdf
    weight = np.asarray([design.traffic_weight.get(c, 0.0) for c in _ORDER_CHANNELS])
    paid = len(_PAID_CHANNELS)
    days = len(marketing.lift)
    mix = np.column_stack([weight[:paid] * marketing.relative_spend, np.tile(weight[paid:], (days, 1))])
    return _row_cdf(mix)


def _base_spend_rows(spend_scale: float) -> dict[str, str]:
    """Each paid channel's base daily spend as ``truth.generator_run`` rows: the traffic mix's reference."""
    return {f"base_spend.{c}": repr(round(base * spend_scale, 2)) for c, base in zip(_PAID_CHANNELS, _BASE_SPEND)}


def _uniform_per_channel(rng: np.random.Generator, ranges: tuple[tuple[float, float], ...]) -> np.ndarray:
    bounds = np.asarray(ranges)
    return rng.uniform(bounds[:, 0], bounds[:, 1])


def _flights(rng: np.random.Generator, days: int) -> np.ndarray:
    """1 while a campaign flight is on air, 0 between flights: alternating 2-6 week / 1-3 week runs."""
    n_runs = days // 7 + 2
    on_length = rng.integers(14, 43, n_runs)
    off_length = rng.integers(7, 22, n_runs)
    lengths = np.column_stack([on_length, off_length]).ravel()
    boundaries = np.cumsum(lengths) - rng.integers(0, 21)
    run = np.searchsorted(boundaries, np.arange(days), side="right")
    return (run % 2 == 0).astype(np.float64)


# --- campaigns ---------------------------------------------------------------------------------

#: each campaign's channel, index into _PAID_CHANNELS
_CAMPAIGN_CHANNEL = np.asarray([_PAID_CHANNELS.index(channel) for channel, _, _ in _CAMPAIGNS])
#: code of the first paid campaign in the store's campaign names (code 0 is no campaign)
_FIRST_PAID_CODE = 1
#: code of the first newsletter
_FIRST_NEWSLETTER_CODE = _FIRST_PAID_CODE + len(_CAMPAIGNS)


def _draw_campaigns(rng: np.random.Generator, marketing: _Marketing, dates: pd.DatetimeIndex) -> _Campaigns:
    """Each day's spend, impressions and clicks of a paid channel split over its campaigns, and the
    campaigns' true efficiencies (module docstring, Marketing)."""
    days, n_channels, n_campaigns = len(dates), len(_PAID_CHANNELS), len(_CAMPAIGNS)
    base = np.asarray([share for _, _, share in _CAMPAIGNS])
    block = np.arange(days) // _CAMPAIGN_BLOCK_DAYS
    share = np.empty((days, n_campaigns))
    for c in range(n_channels):
        own = np.flatnonzero(_CAMPAIGN_CHANNEL == c)
        alpha = _CAMPAIGN_SHARE_CONCENTRATION * base[own] / base[own].sum()
        share[:, own] = rng.dirichlet(alpha, size=int(block[-1]) + 1)[block]
    efficiency = rng.lognormal(0.0, _CAMPAIGN_EFFICIENCY_SD, n_campaigns)

    # marketing.spend has one row per day and paid channel, channels in _PAID_CHANNELS order within a day
    per_channel = {name: marketing.spend[name].to_numpy().reshape(days, n_channels)
                   for name in ("spend", "impressions", "clicks")}
    cents = np.rint(per_channel["spend"] * 100.0).astype(np.int64)
    split = {name: np.empty((days, n_campaigns), dtype=np.int64) for name in ("cents", "impressions", "clicks")}
    for c in range(n_channels):
        own = np.flatnonzero(_CAMPAIGN_CHANNEL == c)
        split["cents"][:, own] = _split_integer(cents[:, c], share[:, own])
        impressions = _split_integer(per_channel["impressions"][:, c].astype(np.int64), share[:, own])
        split["impressions"][:, own] = impressions
        # clicks follow the campaign's impressions, so no campaign gets more clicks than impressions
        weight = np.where(impressions.sum(axis=1, keepdims=True) > 0, impressions, share[:, own])
        split["clicks"][:, own] = _split_integer(per_channel["clicks"][:, c].astype(np.int64), weight)
        spent = split["cents"][:, own].sum(axis=0).astype(np.float64)
        mean = spent @ efficiency[own] / spent.sum() if spent.sum() > 0 else efficiency[own].mean()
        efficiency[own] /= mean  # spend-weighted mean 1 over the data

    spend = pd.DataFrame(
        {
            "day": np.repeat(dates.to_numpy(), n_campaigns),
            "channel": np.tile(np.asarray([channel for channel, _, _ in _CAMPAIGNS], dtype=object), days),
            "spend": (split["cents"] / 100.0).ravel(),
            "impressions": split["impressions"].ravel(),
            "clicks": split["clicks"].ravel(),
            "campaign": np.tile(np.asarray([campaign for _, campaign, _ in _CAMPAIGNS], dtype=object), days),
        }
    )
    truth = pd.DataFrame(
        {
            "campaign": np.asarray([campaign for _, campaign, _ in _CAMPAIGNS], dtype=object),
            "channel": np.asarray([channel for channel, _, _ in _CAMPAIGNS], dtype=object),
            "efficiency": efficiency,
        }
    )
    return _Campaigns(spend=spend, truth=truth, share=share, efficiency=efficiency)


def _split_integer(total: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Non-negative integers per row of ``weights`` (positive row sums) summing to ``total`` exactly, each
    within 1 of its proportional part: the rounded cumulative shares, differenced."""
    cumulative = np.cumsum(weights, axis=1)
    bounds = np.rint(total[:, None] * (cumulative / cumulative[:, -1:])).astype(np.int64)
    bounds[:, -1] = total
    return np.diff(bounds, axis=1, prepend=0)


def _campaign_names(send_days: np.ndarray, dates: pd.DatetimeIndex) -> tuple[np.ndarray, np.ndarray]:
    """The store's campaign names (code 0: none, then the paid campaigns, then one newsletter per send
    day, named by the ISO year and week of the send) and each day's newsletter code (the latest send on or
    before the day; 0 before the first)."""
    iso = dates[send_days].isocalendar()
    names = pd.Series([f"newsletter_{year}_w{week:02d}" for year, week in zip(iso["year"], iso["week"])], dtype=object)
    # two sends can share an ISO week (six days apart, Monday and Sunday): the second is "..._2"
    repeat = names.groupby(names).cumcount()
    names = names.where(repeat == 0, names + "_" + (repeat + 1).astype(str))
    latest = np.searchsorted(send_days, np.arange(len(dates)), side="right") - 1
    newsletter_of_day = np.where(latest >= 0, _FIRST_NEWSLETTER_CODE + latest, 0)
    all_names = np.asarray([_NO_CAMPAIGN, *(campaign for _, campaign, _ in _CAMPAIGNS), *names], dtype=object)
    return all_names, newsletter_of_day


def _paid_campaign_codes(channel: np.ndarray, day: np.ndarray, uniforms: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """A paid channel's campaign drawn with probability proportional to ``weights[day, campaign]`` among
    the channel's campaigns (codes of :func:`_campaign_names`); 0 for every other channel."""
    code = np.zeros(len(channel), dtype=np.int64)
    for c in range(len(_PAID_CHANNELS)):
        rows = np.flatnonzero(channel == c)
        own = np.flatnonzero(_CAMPAIGN_CHANNEL == c)
        code[rows] = _FIRST_PAID_CODE + own[_sample_rows(_row_cdf(weights[:, own]), day[rows], uniforms[rows])]
    return code


# --- customers ---------------------------------------------------------------------------------


def _draw_customers(
    rng: np.random.Generator, n: int, dates: pd.DatetimeIndex, mean_reference_price: float
) -> tuple[_Customers, pd.DataFrame, pd.DataFrame]:
    days = len(dates)
    segment = _choice(rng, _SEGMENT_SHARE, n)
    yearly_mean = np.asarray(_SEGMENT_PURCHASES_PER_YEAR)[segment]
    rate = rng.gamma(_RATE_SHAPE, yearly_mean / _RATE_SHAPE) / 365.0
    dropout = rng.gamma(_DROPOUT_SHAPE, np.asarray(_SEGMENT_DROPOUT_PER_DAY)[segment] / _DROPOUT_SHAPE)
    before = rng.random(n) < _SHARE_SIGNED_UP_BEFORE
    signup_day = np.where(before, -rng.integers(1, _HISTORY_DAYS_BEFORE + 1, n), rng.integers(0, days, n))
    lifetime = np.minimum(rng.exponential(1.0, n) / dropout, 1e7)
    churn_day = signup_day + 1 + np.floor(lifetime).astype(np.int64)

    tz = _choice(rng, tuple(share for _, _, share in _TIMEZONES), n)
    acquisition_cdf = _row_cdf(np.asarray(_ACQUISITION_SHARE))
    acquisition = _sample_rows(acquisition_cdf, segment, rng.random(n))
    opt_in = rng.random(n) < np.asarray(_SEGMENT_OPT_IN)[segment]
    basket_k = rng.gamma(_BASKET_K_SHAPE, _BASKET_K_MEAN / _BASKET_K_SHAPE, n)
    order_hour = _choice(rng, _ORDER_HOUR_PROFILE, n) + rng.random(n)
    best_hour = _choice(rng, _EMAIL_HOUR_PROFILE, n)
    beta = np.asarray(_SEGMENT_OPEN_BETA)[segment]
    open_rate = rng.beta(beta[:, 0], beta[:, 1])
    device = _choice(rng, _DEVICE_SHARE, n)
    browse_multiplier = rng.uniform(*_BROWSE_MULTIPLIER, n)
    click_prob = rng.uniform(*_CLICK_PROB, n)

    ids = np.arange(1, n + 1, dtype=np.int64)
    countries = np.asarray([country for country, _, _ in _TIMEZONES], dtype=object)
    zones = np.asarray([zone for _, zone, _ in _TIMEZONES], dtype=object)
    frame = pd.DataFrame(
        {
            "customer_id": ids,
            "signup_date": _dates(signup_day, dates),
            "country": countries[tz],
            "timezone": zones[tz],
            "acquisition_channel": np.asarray(_ACQUISITION_CHANNELS, dtype=object)[acquisition],
            "email_opt_in": opt_in,
            "do_not_profile": np.zeros(len(ids), dtype=bool),
        }
    )
    churn_date = pd.Series(_dates(np.minimum(churn_day, days), dates)).where(churn_day < days)
    truth = pd.DataFrame(
        {
            "customer_id": ids,
            "segment": np.asarray(_SEGMENTS, dtype=object)[segment],
            "purchase_rate": rate,
            "dropout_rate": dropout,
            "churn_date": churn_date.to_numpy(),
            "mean_basket_value": (1.0 + basket_k) * (1.0 + _EXTRA_QUANTITY_MEAN) * mean_reference_price,
            "best_hour_local": best_hour.astype(np.int32),
            "open_rate_at_best": open_rate,
        }
    )
    customers = _Customers(
        signup_day=signup_day.astype(np.int64),
        churn_day=churn_day,
        rate=rate,
        basket_k=basket_k,
        tz=tz,
        order_hour=order_hour,
        best_hour=best_hour,
        open_rate=open_rate,
        opt_in=opt_in,
        device=device,
        browse_multiplier=browse_multiplier,
        click_prob=click_prob,
    )
    return customers, frame, truth


# --- products ----------------------------------------------------------------------------------


def _draw_products(
    rng: np.random.Generator, n: int, dates: pd.DatetimeIndex
) -> tuple[_Products, dict[str, pd.DataFrame], pd.DataFrame]:
    days = len(dates)
    category = rng.integers(0, len(_CATEGORIES), n)
    category_elasticity = np.asarray([c[1] for c in _CATEGORIES])
    category_cost = np.asarray([c[2] for c in _CATEGORIES])
    elasticity = np.clip(category_elasticity[category] + rng.normal(0.0, _ELASTICITY_NOISE, n), *_ELASTICITY_BOUNDS)
    cost = np.maximum(np.round(category_cost[category] * rng.lognormal(0.0, 0.35, n), 2), 0.5)
    reference = np.round(cost * rng.uniform(1.3, 2.5, n), 2)
    popularity = rng.lognormal(0.0, 0.8, n)
    popularity /= popularity.mean()

    shocks = rng.normal(0.0, 1.0, (days, n))
    shocks[0] /= np.sqrt(1.0 - _SHOCK_PHI**2)  # start the AR(1) in its stationary distribution
    latent = lfilter([_SHOCK_SD * np.sqrt(1.0 - _SHOCK_PHI**2)], [1.0, -_SHOCK_PHI], shocks, axis=0)
    list_price, discount = _price_paths(rng, latent, cost, reference)

    effective = list_price * (1.0 - discount)
    log_weight = np.log(popularity) + latent + elasticity * np.log(effective / reference)
    weights = np.exp(log_weight - log_weight.max(axis=1, keepdims=True))
    products = _Products(list_price=list_price, discount=discount, choice_cdf=_row_cdf(weights), category=category)

    ids = np.arange(1, n + 1, dtype=np.int64)
    category_names = np.asarray([c[0] for c in _CATEGORIES], dtype=object)
    nouns = np.asarray([c[3][k % len(c[3])] for c in _CATEGORIES for k in range(5)], dtype=object).reshape(-1, 5)
    adjective = np.asarray(_ADJECTIVES, dtype=object)[rng.integers(0, len(_ADJECTIVES), n)]
    noun = nouns[category, rng.integers(0, 5, n)]
    product_frame = pd.DataFrame(
        {
            "product_id": ids,
            "sku": ("SKU-" + pd.Series(ids).astype(str).str.zfill(6)).to_numpy(dtype=object),
            "name": adjective + " " + noun + " " + pd.Series(ids).astype(str).to_numpy(dtype=object),
            "category": category_names[category],
            "cost": cost,
            "current_price": list_price[-1],
        }
    )
    changed = np.vstack([np.ones((1, n), dtype=bool), list_price[1:] != list_price[:-1]])
    day_index, product_index = np.nonzero(changed)
    order = np.lexsort((day_index, product_index))
    day_index, product_index = day_index[order], product_index[order]
    prices_frame = pd.DataFrame(
        {
            "product_id": ids[product_index],
            "valid_from": dates.to_numpy()[day_index],
            "list_price": list_price[day_index, product_index],
        }
    )
    truth = pd.DataFrame(
        {"product_id": ids, "elasticity": elasticity, "reference_price": reference, "popularity": popularity}
    )
    return products, {"products": product_frame, "product_prices": prices_frame}, truth


def _price_paths(
    rng: np.random.Generator, latent: np.ndarray, cost: np.ndarray, reference: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Daily list price and promotion discount per product (loop over days, vectorised over products)."""
    days, n = latent.shape
    up_draw = rng.random((days, n))
    step = rng.uniform(*_PRICE_STEP, (days, n))
    gap = rng.integers(*_PRICE_GAP_DAYS, (days, n))
    promo_start = rng.random((days, n)) < _PROMO_START_PROB
    promo_length = rng.integers(*_PROMO_DAYS, (days, n))
    promo_depth = np.asarray(_PROMO_DEPTHS)[rng.integers(0, len(_PROMO_DEPTHS), (days, n))]

    price = np.round(reference * rng.uniform(0.95, 1.05, n), 2)
    next_change = rng.integers(7, 36, n)
    promo_left = np.zeros(n, dtype=np.int64)
    promo_discount = np.zeros(n)
    floor, ceiling = np.round(1.15 * cost, 2), np.round(2.0 * reference, 2)
    list_price = np.empty((days, n))
    discount = np.zeros((days, n))
    for d in range(days):
        change = next_change == d
        if change.any():
            pressure = _PRICE_SHOCK_RESPONSE * latent[d] / _SHOCK_SD - _PRICE_REVERSION * np.log(price / reference)
            up = up_draw[d] < 1.0 / (1.0 + np.exp(-pressure))
            moved = np.round(np.clip(price * np.where(up, 1.0 + step[d], 1.0 - step[d]), floor, ceiling), 2)
            price = np.where(change, moved, price)
            next_change = np.where(change, d + gap[d], next_change)
        list_price[d] = price
        starting = (promo_left == 0) & promo_start[d]
        promo_left = np.where(starting, promo_length[d], promo_left)
        promo_discount = np.where(starting, promo_depth[d], promo_discount)
        # never sell below cost: cap the discount at the margin, in whole percent
        cap = np.floor(100.0 * (1.0 - cost / price)) / 100.0
        discount[d] = np.where(promo_left > 0, np.minimum(promo_discount, np.maximum(cap, 0.0)), 0.0)
        promo_left = np.maximum(promo_left - 1, 0)
    return list_price, discount


# --- emails ------------------------------------------------------------------------------------


def _draw_emails(
    rng: np.random.Generator, customers: _Customers, intensity: np.ndarray, offsets: np.ndarray, end_ms: int
) -> _Emails:
    days = len(intensity)
    campaign_days = np.arange(int(rng.integers(0, 7)), days, 7)
    campaign_days = np.unique(np.clip(campaign_days + rng.integers(-1, 2, len(campaign_days)), 0, days - 1))
    opted = np.flatnonzero(customers.opt_in)
    recipient, send = np.nonzero(customers.signup_day[opted][:, None] <= campaign_days[None, :])
    customer, day = opted[recipient], campaign_days[send]
    n_sends = len(customer)

    send_hour = rng.integers(_SEND_HOURS[0], _SEND_HOURS[1] + 1, n_sends)
    send_ms = _local_hour_to_utc_ms(day, send_hour + rng.uniform(0.0, 0.25, n_sends), customers.tz[customer], offsets)
    distance = np.abs(send_hour - customers.best_hour[customer])
    distance = np.minimum(distance, 24 - distance)
    bell = _OPEN_FLOOR + (1.0 - _OPEN_FLOOR) * np.exp(-0.5 * (distance / _OPEN_BELL_SD_HOURS) ** 2)
    alive = day < customers.churn_day[customer]
    p_open = customers.open_rate[customer] * bell * np.where(alive, 1.0, _DEAD_OPEN_FACTOR)
    opened = rng.random(n_sends) < p_open
    open_ms = send_ms + _truncated_exponential_ms(rng, _OPEN_DELAY_MEAN_MIN, _OPEN_DELAY_MAX_MIN, n_sends)
    opened &= open_ms < end_ms
    # Scanners open a fixed share of mail regardless of hour: ~3 % of all opens.
    machine_rate = _MACHINE_SHARE / (1.0 - _MACHINE_SHARE) * float(p_open.mean()) if n_sends else 0.0
    machine = rng.random(n_sends) < machine_rate
    machine_ms = send_ms + rng.integers(1_000, 60_000, n_sends)
    machine &= machine_ms < end_ms

    o = np.flatnonzero(opened)
    open_customer, open_time = customer[o], open_ms[o]
    open_day = open_time // _MS_PER_DAY
    alive_at_open = open_day < customers.churn_day[open_customer]
    boost_mean = customers.purchase_rate(open_customer, open_day) * intensity[open_day] * _EMAIL_OPEN_BOOST * alive_at_open
    n_orders = rng.poisson(boost_mean)
    clicked = (rng.random(len(o)) < customers.click_prob[open_customer]) | (n_orders > 0)
    click_ms = open_time + 5_000 + np.floor(rng.exponential(120_000.0, len(o))).astype(np.int64)
    clicked &= click_ms < end_ms
    n_orders = np.where(clicked, n_orders, 0)

    buyer = np.repeat(np.arange(len(o)), n_orders)
    order_ms = click_ms[buyer] + rng.integers(2 * _MS_PER_MINUTE, 90 * _MS_PER_MINUTE, len(buyer))
    order_ms = order_ms // 1000 * 1000
    order_customer = open_customer[buyer]
    order_day = order_ms // _MS_PER_DAY
    keep = order_day < np.minimum(customers.churn_day[order_customer], days)

    c = np.flatnonzero(clicked)
    m = np.flatnonzero(machine)
    return _Emails(
        time_ms=np.concatenate([send_ms, open_time, machine_ms[m], click_ms[c]]),
        customer=np.concatenate([customer, open_customer, customer[m], open_customer[c]]),
        event_code=np.concatenate(
            [
                np.full(n_sends, _EVENT_CODE["email_send"], dtype=np.int8),
                np.full(len(o) + len(m), _EVENT_CODE["email_open"], dtype=np.int8),
                np.full(len(c), _EVENT_CODE["email_click"], dtype=np.int8),
            ]
        ),
        is_machine=np.concatenate([np.zeros(n_sends + len(o)), np.ones(len(m)), np.zeros(len(c))]).astype(np.uint8),
        event_send=np.concatenate([send, send[o], send[m], send[o[c]]]),
        send_days=campaign_days,
        order_customer=order_customer[keep],
        order_ms=order_ms[keep],
        order_click_ms=click_ms[buyer][keep],
        order_send=send[o[buyer]][keep],
    )


def _truncated_exponential_ms(rng: np.random.Generator, mean_min: float, max_min: float, size: int) -> np.ndarray:
    tail = 1.0 - np.exp(-max_min / mean_min)
    minutes = -mean_min * np.log1p(-rng.random(size) * tail)
    return np.floor(minutes * _MS_PER_MINUTE).astype(np.int64)


# --- orders and lines --------------------------------------------------------------------------


def _draw_orders(
    rng: np.random.Generator,
    customers: _Customers,
    emails: _Emails,
    cum_intensity: np.ndarray,
    channel_cdf: np.ndarray,
    offsets: np.ndarray,
    origin: pd.Timestamp,
) -> tuple[_Orders, pd.DataFrame]:
    days = len(cum_intensity) - 1
    lo = np.maximum(customers.signup_day, 0)
    hi = np.minimum(customers.churn_day, days)
    if customers.change_day is None:
        customer, day = _draw_days(rng, customers.rate, lo, hi, cum_intensity)
    else:  # before and after the behaviour change, each at its own rates
        change = customers.change_day
        before = _draw_days(rng, customers.rate, lo, np.minimum(hi, change), cum_intensity)
        after = _draw_days(rng, customers.rate_after, np.maximum(lo, change), hi, cum_intensity)
        customer, day = np.concatenate([before[0], after[0]]), np.concatenate([before[1], after[1]])
    local_hour = np.mod(customers.order_hour[customer] + rng.normal(0.0, 2.0, len(customer)), 24.0)
    time_ms = _local_hour_to_utc_ms(day, local_hour, customers.tz[customer], offsets) // 1000 * 1000
    channel = _sample_rows(channel_cdf, day, rng.random(len(customer)))

    send = np.concatenate([np.full(len(customer), -1, dtype=np.int64), emails.order_send])
    customer = np.concatenate([customer, emails.order_customer])
    time_ms = np.concatenate([time_ms, emails.order_ms])
    channel = np.concatenate([channel, np.full(len(emails.order_ms), _EMAIL_CHANNEL)])
    floor_ms = np.concatenate([day.astype(np.int64) * _MS_PER_DAY, emails.order_click_ms])
    order = np.lexsort((customer, time_ms))
    customer, time_ms, channel, floor_ms, send = (
        customer[order], time_ms[order], channel[order], floor_ms[order], send[order])
    n = len(customer)
    status = np.where(rng.random(n) < _CANCEL_SHARE, "cancelled", "completed").astype(object)
    frame = pd.DataFrame(
        {
            "order_id": np.arange(1, n + 1, dtype=np.int64),
            "customer_id": customer.astype(np.int64) + 1,
            "order_ts": _timestamps(time_ms, origin),
            "channel": np.asarray(_ORDER_CHANNELS, dtype=object)[channel],  # the cause, until the journeys
            "status": status,
        }
    )
    orders = _Orders(customer=customer, time_ms=time_ms, day=time_ms // _MS_PER_DAY, cause=channel, email_send=send,
                     floor_ms=floor_ms)
    return orders, frame


def _timestamps(time_ms: np.ndarray, origin: pd.Timestamp) -> pd.DatetimeIndex:
    """``datetime64[ns, UTC]`` from milliseconds since ``origin`` (midnight UTC of the first day)."""
    return pd.to_datetime(origin.value // 1_000_000 + time_ms, unit="ms", utc=True)


def _choose_products(
    products: _Products, taste: CustomerTaste | None, customer: np.ndarray, day: np.ndarray, uniforms: np.ndarray
) -> np.ndarray:
    """Product index of each draw by customer index ``customer`` on ``day``, one uniform each: by the customers'
    taste when the store has one (:mod:`revopt.sample_data.taste`), else from the day's choice alone."""
    if taste is None:
        return _sample_rows(products.choice_cdf, day, uniforms)
    return taste.draw(customer, day, uniforms)


def _draw_lines(
    rng: np.random.Generator, orders: _Orders, customers: _Customers, products: _Products
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    n_lines = 1 + rng.poisson(customers.basket_k[orders.customer])
    line_order = np.repeat(np.arange(len(n_lines)), n_lines)
    day = orders.day[line_order]
    product = _choose_products(products, customers.taste, orders.customer[line_order], day, rng.random(len(line_order)))
    quantity = 1 + rng.poisson(_EXTRA_QUANTITY_MEAN, len(line_order))
    list_price = products.list_price[day, product]
    discount = products.discount[day, product]
    frame = pd.DataFrame(
        {
            "order_id": line_order.astype(np.int64) + 1,
            "line_no": (_positions_in_group(n_lines) + 1).astype(np.int32),
            "product_id": product.astype(np.int64) + 1,
            "quantity": quantity.astype(np.int32),
            "unit_price": np.round(list_price * (1.0 - discount), 2),
            "discount": np.round(discount, 4),
        }
    )
    return frame, line_order, product


# --- causes and journeys -----------------------------------------------------------------------


def _draw_journeys(
    rng: np.random.Generator,
    orders: _Orders,
    customers: _Customers,
    campaigns: _Campaigns,
    newsletter_of_day: np.ndarray,
    design: AttributionDesign,
) -> _Journeys:
    """Each order's cause campaign, whether its paid cause assisted it (an exposure session before the
    order) and the purchase session's channel and campaign (module docstring, Causes and journeys)."""
    n = len(orders.time_ms)
    # every draw is made for every order, so one order's outcome does not shift another's draws
    paid_pick, assist_draw, window_draw, fallback_draw = rng.random((4, n))
    closer_names = list(design.closer_mix)
    closer_pick = _choice(rng, [design.closer_mix[c] for c in closer_names], n)

    cause_campaign = _paid_campaign_codes(orders.cause, orders.day, paid_pick, campaigns.share * campaigns.efficiency)
    is_email = orders.cause == _EMAIL_CHANNEL
    clicked = _FIRST_NEWSLETTER_CODE + orders.email_send
    cause_campaign = np.where(is_email, np.where(orders.email_send >= 0, clicked, newsletter_of_day[orders.day]),
                              cause_campaign)

    # the exposure: uniform in [order - max days, order - min hours], not before signup or the data; if
    # that falls on or before the customer's previous order, uniform between that order and the latest
    # start of this order's purchase session
    time_ms = orders.time_ms
    lo = np.maximum(time_ms - int(design.max_assist_days * _MS_PER_DAY),
                    np.maximum(customers.signup_day[orders.customer] * _MS_PER_DAY, 0))
    latest = time_ms - int(_PURCHASE_SESSION_MINUTES[1] * _MS_PER_MINUTE) - 1
    hi = np.minimum(time_ms - int(design.min_assist_hours * 60 * _MS_PER_MINUTE), latest + 1)
    exposure_ms = lo + np.floor(window_draw * np.maximum(hi - lo, 0)).astype(np.int64)
    previous = _previous_order_ms(orders)
    after_previous = previous + 1 + np.floor(fallback_draw * np.maximum(latest - previous, 0)).astype(np.int64)
    exposure_ms = np.where(exposure_ms > previous, exposure_ms, after_previous)
    room = (lo < hi) & (exposure_ms > previous) & (exposure_ms <= latest)

    share = np.zeros(len(_ORDER_CHANNELS))
    share[: len(_PAID_CHANNELS)] = [design.assist_share.get(c, 0.0) for c in _PAID_CHANNELS]
    assisted = (assist_draw < share[orders.cause]) & room

    names = _campaign_names_index()
    closer_channel = np.asarray([_ORDER_CHANNELS.index(c) for c in closer_names])[closer_pick]
    closer_code = np.asarray([names.get(design.closer_campaign.get(c, _NO_CAMPAIGN), 0) if c in _PAID_CHANNELS else 0
                              for c in closer_names])[closer_pick]
    exposed = np.flatnonzero(assisted)
    return _Journeys(
        cause_campaign=cause_campaign,
        channel=np.where(assisted, closer_channel, orders.cause),
        campaign=np.where(assisted, closer_code, cause_campaign),
        exposure_order=exposed,
        exposure_ms=exposure_ms[exposed],
    )


def _campaign_names_index() -> dict[str, int]:
    """Paid campaign name -> its code (:func:`_campaign_names`)."""
    return {campaign: _FIRST_PAID_CODE + k for k, (_, campaign, _) in enumerate(_CAMPAIGNS)}


def _previous_order_ms(orders: _Orders) -> np.ndarray:
    """Per order, the time of the same customer's previous order (-1, before the data, for the first)."""
    by_customer = np.lexsort((orders.time_ms, orders.customer))
    previous = np.full(len(by_customer), -1, dtype=np.int64)
    same = orders.customer[by_customer][1:] == orders.customer[by_customer][:-1]
    previous[by_customer[1:][same]] = orders.time_ms[by_customer[:-1][same]]
    return previous


def _order_causes(orders: _Orders, journeys: _Journeys, names: np.ndarray) -> pd.DataFrame:
    """``truth.order_causes``: the channel and campaign that brought each order about."""
    return pd.DataFrame(
        {
            "order_id": np.arange(1, len(orders.time_ms) + 1, dtype=np.int64),
            "channel": np.asarray(_ORDER_CHANNELS, dtype=object)[orders.cause],
            "campaign": names[journeys.cause_campaign],
        }
    )


# --- web sessions and the events table ---------------------------------------------------------


@dataclass(frozen=True)
class _Sessions:
    start_ms: np.ndarray  # per session
    customer_id: np.ndarray  # per session, 0 = anonymous
    channel: np.ndarray  # per session, index into _ORDER_CHANNELS
    campaign: np.ndarray  # per session, code into the store's campaign names (0: none)
    device: np.ndarray  # per session, index into _DEVICES
    event_session: np.ndarray  # per event, index of its session in this block
    event_ms: np.ndarray
    event_code: np.ndarray
    event_product: np.ndarray  # product_id, 0 = none


def _build_events(
    rngs: dict[str, np.random.Generator],
    customers: _Customers,
    orders: _Orders,
    journeys: _Journeys,
    line_order: np.ndarray,
    line_product: np.ndarray,
    emails: _Emails,
    products: _Products,
    traffic_cdf: np.ndarray,
    campaigns: _Campaigns,
    campaign_names: np.ndarray,
    newsletter_of_day: np.ndarray,
    cum_intensity: np.ndarray,
    offsets: np.ndarray,
    origin: pd.Timestamp,
) -> pd.DataFrame:
    purchase = _purchase_sessions(rngs["sessions"], orders, journeys, customers, line_order, line_product, products)
    browse = _browse_sessions(rngs["sessions"], customers, products, traffic_cdf, cum_intensity, offsets)
    anonymous = _anonymous_sessions(
        rngs["anonymous"], len(purchase.start_ms) + len(browse.start_ms), products, traffic_cdf, cum_intensity, offsets
    )
    exposure = _exposure_sessions(rngs["journeys"], orders, journeys, purchase.start_ms, customers, products)
    browse = _with_campaigns(rngs["journeys"], browse, campaigns.share, newsletter_of_day)
    anonymous = _with_campaigns(rngs["journeys"], anonymous, campaigns.share, newsletter_of_day)
    blocks = (purchase, browse, anonymous, exposure)

    # Session ids increase with the session start, like a sequence would hand them out.
    start_ms = np.concatenate([b.start_ms for b in blocks])
    session_id = np.empty(len(start_ms), dtype=np.uint64)
    session_id[np.argsort(start_ms, kind="stable")] = np.arange(1, len(start_ms) + 1, dtype=np.uint64)
    first_session = np.cumsum([0] + [len(b.start_ms) for b in blocks[:-1]])
    web_session = np.concatenate([b.event_session + first for b, first in zip(blocks, first_session)])
    session_customer = np.concatenate([b.customer_id for b in blocks])
    session_channel = np.concatenate([b.channel for b in blocks])
    session_campaign = np.concatenate([b.campaign for b in blocks])
    session_device = np.concatenate([b.device for b in blocks])

    n_web, n_email = len(web_session), len(emails.time_ms)
    time_ms = np.concatenate([np.concatenate([b.event_ms for b in blocks]), emails.time_ms])
    order = np.argsort(time_ms, kind="stable")
    columns = {
        "event_time": _timestamps(time_ms[order], origin),
        "session_id": np.concatenate([session_id[web_session], np.zeros(n_email, dtype=np.uint64)])[order],
        "customer_id": np.concatenate(
            [session_customer[web_session], emails.customer.astype(np.int64) + 1]
        ).astype(np.uint64)[order],
        "event_type": _categorical(
            np.concatenate([np.concatenate([b.event_code for b in blocks]), emails.event_code])[order], EVENT_TYPES
        ),
        "product_id": np.concatenate(
            [np.concatenate([b.event_product for b in blocks]), np.zeros(n_email, dtype=np.int64)]
        ).astype(np.uint64)[order],
        "channel": _categorical(
            np.concatenate([session_channel[web_session], np.full(n_email, _EMAIL_CHANNEL)])[order], _ORDER_CHANNELS
        ),
        "device": _categorical(
            np.concatenate([session_device[web_session], customers.device[emails.customer]])[order], _DEVICES
        ),
        "is_machine": np.concatenate([np.zeros(n_web, dtype=np.uint8), emails.is_machine])[order],
        "campaign": pd.Categorical.from_codes(
            np.concatenate([session_campaign[web_session], _FIRST_NEWSLETTER_CODE + emails.event_send])[order]
            .astype(np.int32),
            categories=list(campaign_names),
        ),
    }
    logger.info(
        "sessions: %d purchase, %d browse, %d anonymous, %d exposure",
        len(purchase.start_ms), len(browse.start_ms), len(anonymous.start_ms), len(exposure.start_ms),
    )
    frame = pd.DataFrame(columns)
    # no device ids in the plain store (revopt.sample_data.identity draws them): '' for every event, as the contract says
    frame.insert(frame.columns.get_loc("customer_id") + 1, "anonymous_id",
                 pd.Categorical.from_codes(np.zeros(len(frame), dtype=np.int8), categories=[""]))
    return frame


def _categorical(codes: np.ndarray, categories: tuple[str, ...]) -> pd.Categorical:
    return pd.Categorical.from_codes(codes.astype(np.int8), categories=list(categories))


def _purchase_sessions(
    rng: np.random.Generator,
    orders: _Orders,
    journeys: _Journeys,
    customers: _Customers,
    line_order: np.ndarray,
    line_product: np.ndarray,
    products: _Products,
) -> _Sessions:
    """One session per order through the order's purchase channel and campaign: page_view, extra product
    views, (product_view, add_to_cart) per line, checkout, purchase at ``order_ts``."""
    n = len(orders.time_ms)
    n_lines = np.bincount(line_order, minlength=n)
    n_extra = rng.poisson(0.8, n)
    n_events = 3 + n_extra + 2 * n_lines
    first = np.cumsum(n_events) - n_events
    last = first + n_events - 1
    code = np.empty(int(n_events.sum()), dtype=np.int8)
    product = np.zeros(len(code), dtype=np.int64)

    code[first] = _EVENT_CODE["page_view"]
    extra = np.repeat(np.arange(n), n_extra)
    at = first[extra] + 1 + _positions_in_group(n_extra)
    code[at] = _EVENT_CODE["product_view"]
    product[at] = _choose_products(products, customers.taste, orders.customer[extra], orders.day[extra],
                                   rng.random(len(extra))) + 1
    at = first[line_order] + 1 + n_extra[line_order] + 2 * _positions_in_group(n_lines)
    code[at] = _EVENT_CODE["product_view"]
    code[at + 1] = _EVENT_CODE["add_to_cart"]
    product[at] = product[at + 1] = line_product + 1
    code[last - 1] = _EVENT_CODE["checkout"]
    code[last] = _EVENT_CODE["purchase"]

    duration = np.floor(rng.uniform(*_PURCHASE_SESSION_MINUTES, n) * _MS_PER_MINUTE).astype(np.int64)
    duration = np.minimum(duration, orders.time_ms - orders.floor_ms)
    start = orders.time_ms - duration
    session = np.repeat(np.arange(n), n_events)
    return _Sessions(
        start_ms=start,
        customer_id=orders.customer.astype(np.int64) + 1,
        channel=journeys.channel,
        campaign=journeys.campaign,
        device=_session_device(rng, customers.device[orders.customer]),
        event_session=session,
        event_ms=_spread_over_session(rng, session, n_events, start, duration),
        event_code=code,
        event_product=product,
    )


def _browse_sessions(
    rng: np.random.Generator,
    customers: _Customers,
    products: _Products,
    traffic_cdf: np.ndarray,
    cum_intensity: np.ndarray,
    offsets: np.ndarray,
) -> _Sessions:
    """Sessions without a purchase while the customer is alive, at 2-4x the purchase rate."""
    days = len(cum_intensity) - 1
    lo = np.maximum(customers.signup_day, 0)
    hi = np.minimum(customers.churn_day, days)
    owner, day = _draw_days(rng, customers.rate * customers.browse_multiplier, lo, hi, cum_intensity)
    local_hour = np.mod(customers.order_hour[owner] + rng.normal(0.0, 3.0, len(owner)), 24.0)
    return _funnel_sessions(
        rng, day, local_hour, customers.tz[owner], owner.astype(np.int64) + 1,
        _session_device(rng, customers.device[owner]), _BROWSE_DEPTH_SHARE, products, traffic_cdf, offsets,
        taste=customers.taste,
    )


def _anonymous_sessions(
    rng: np.random.Generator,
    n_known: int,
    products: _Products,
    traffic_cdf: np.ndarray,
    cum_intensity: np.ndarray,
    offsets: np.ndarray,
) -> _Sessions:
    """Visitors who never log in: ``_ANONYMOUS_SHARE`` of all sessions, following the daily intensity."""
    n = int(rng.poisson(_ANONYMOUS_SHARE / (1.0 - _ANONYMOUS_SHARE) * n_known))
    day = np.searchsorted(cum_intensity, rng.random(n) * cum_intensity[-1], side="right") - 1
    day = np.clip(day, 0, len(cum_intensity) - 2)
    tz = _choice(rng, tuple(share for _, _, share in _TIMEZONES), n)
    local_hour = _choice(rng, _ORDER_HOUR_PROFILE, n) + rng.random(n)
    device = _choice(rng, _DEVICE_SHARE, n)
    return _funnel_sessions(
        rng, day, local_hour, tz, np.zeros(n, dtype=np.int64), device, _ANONYMOUS_DEPTH_SHARE, products,
        traffic_cdf, offsets,
    )


def _funnel_sessions(
    rng: np.random.Generator,
    day: np.ndarray,
    local_hour: np.ndarray,
    tz: np.ndarray,
    customer_id: np.ndarray,
    device: np.ndarray,
    depth_share: tuple[float, ...],
    products: _Products,
    traffic_cdf: np.ndarray,
    offsets: np.ndarray,
    taste: CustomerTaste | None = None,
) -> _Sessions:
    """Sessions that leave the funnel at a random depth: page_view, product views, add_to_cart, checkout;
    known customers' views follow ``taste`` (customer ``customer_id - 1``)."""
    n = len(day)
    depth = _choice(rng, depth_share, n) + 1
    n_views = np.where(depth >= 2, 1 + rng.poisson(1.5, n), 0)
    n_events = 1 + n_views + (depth >= 3) + (depth >= 4)
    first = np.cumsum(n_events) - n_events
    code = np.empty(int(n_events.sum()), dtype=np.int8)
    product = np.zeros(len(code), dtype=np.int64)

    code[first] = _EVENT_CODE["page_view"]
    viewer = np.repeat(np.arange(n), n_views)
    at = first[viewer] + 1 + _positions_in_group(n_views)
    code[at] = _EVENT_CODE["product_view"]
    product[at] = _choose_products(products, taste, customer_id[viewer] - 1, day[viewer], rng.random(len(viewer))) + 1
    carted = np.flatnonzero(depth >= 3)
    at = first[carted] + 1 + n_views[carted]
    code[at] = _EVENT_CODE["add_to_cart"]
    product[at] = product[at - 1]  # the product viewed last
    checked_out = np.flatnonzero(depth >= 4)
    code[first[checked_out] + 2 + n_views[checked_out]] = _EVENT_CODE["checkout"]

    duration = np.floor(rng.uniform(0.5, 25.0, n) * _MS_PER_MINUTE).astype(np.int64)
    start = _local_hour_to_utc_ms(day, local_hour, tz, offsets)
    start = np.minimum(start, (day.astype(np.int64) + 1) * _MS_PER_DAY - duration - 1)  # end on the same UTC day
    session = np.repeat(np.arange(n), n_events)
    return _Sessions(
        start_ms=start,
        customer_id=customer_id,
        channel=_sample_rows(traffic_cdf, day, rng.random(n)),
        campaign=np.zeros(n, dtype=np.int64),  # drawn afterwards from its own stream (_with_campaigns)
        device=device,
        event_session=session,
        event_ms=_spread_over_session(rng, session, n_events, start, duration),
        event_code=code,
        event_product=product,
    )


def _exposure_sessions(
    rng: np.random.Generator,
    orders: _Orders,
    journeys: _Journeys,
    purchase_start_ms: np.ndarray,
    customers: _Customers,
    products: _Products,
) -> _Sessions:
    """One session per assisted order through its cause channel and campaign: page_view and 1-3 product
    views, ending before the order's purchase session starts."""
    which = journeys.exposure_order
    n = len(which)
    start = journeys.exposure_ms
    n_views = rng.integers(_EXPOSURE_PRODUCT_VIEWS[0], _EXPOSURE_PRODUCT_VIEWS[1] + 1, n)
    n_events = 1 + n_views
    first = np.cumsum(n_events) - n_events
    code = np.empty(int(n_events.sum()), dtype=np.int8)
    product = np.zeros(len(code), dtype=np.int64)
    code[first] = _EVENT_CODE["page_view"]
    viewer = np.repeat(np.arange(n), n_views)
    at = first[viewer] + 1 + _positions_in_group(n_views)
    code[at] = _EVENT_CODE["product_view"]
    product[at] = _choose_products(products, customers.taste, orders.customer[which][viewer], start[viewer] // _MS_PER_DAY,
                                   rng.random(len(viewer))) + 1

    duration = np.floor(rng.uniform(*_EXPOSURE_SESSION_MINUTES, n) * _MS_PER_MINUTE).astype(np.int64)
    duration = np.clip(duration, 0, purchase_start_ms[which] - start - 1)
    session = np.repeat(np.arange(n), n_events)
    return _Sessions(
        start_ms=start,
        customer_id=orders.customer[which].astype(np.int64) + 1,
        channel=orders.cause[which],
        campaign=journeys.cause_campaign[which],
        device=_session_device(rng, customers.device[orders.customer[which]]),
        event_session=session,
        event_ms=_spread_over_session(rng, session, n_events, start, duration),
        event_code=code,
        event_product=product,
    )


def _with_campaigns(
    rng: np.random.Generator, sessions: _Sessions, share: np.ndarray, newsletter_of_day: np.ndarray
) -> _Sessions:
    """Browse and anonymous sessions with their campaign: a paid channel's drawn by that day's spend
    shares, email's the newsletter of the day, none for organic and direct."""
    day = sessions.start_ms // _MS_PER_DAY
    campaign = _paid_campaign_codes(sessions.channel, day, rng.random(len(day)), share)
    campaign = np.where(sessions.channel == _EMAIL_CHANNEL, newsletter_of_day[day], campaign)
    return replace(sessions, campaign=campaign)


def _session_device(rng: np.random.Generator, usual: np.ndarray) -> np.ndarray:
    other = _choice(rng, _DEVICE_SHARE, len(usual))
    return np.where(rng.random(len(usual)) < _SAME_DEVICE, usual, other)


def _spread_over_session(
    rng: np.random.Generator, session: np.ndarray, n_events: np.ndarray, start: np.ndarray, duration: np.ndarray
) -> np.ndarray:
    """Event times from ``start`` to exactly ``start + duration``, with exponential gaps between events."""
    gaps = rng.exponential(1.0, len(session))
    first = np.cumsum(n_events) - n_events
    gaps[first[n_events > 0]] = 0.0
    elapsed = np.cumsum(gaps)
    base = elapsed[first][session]
    total = elapsed[first + n_events - 1][session] - base
    fraction = np.divide(elapsed - base, total, out=np.zeros(len(session)), where=total > 0)
    return start[session] + np.floor(fraction * duration[session]).astype(np.int64)


def pricing_extract(store: SyntheticStore, run_date: pd.Timestamp) -> dict[str, pd.DataFrame]:
    """The pricing inputs of a run at ``run_date``, built in pandas from a synthetic store.

    For tests and benchmarks that skip the databases: ``sales`` holds completed-order demand per
    (product, day) with units > 0 (zero-unit days absent, unlike the nightly extract's dense
    panel), ``products``, ``day_totals`` (order lines per day) and ``list_prices`` (the price
    history, ``shop.product_prices``).
    """
    shop = store.shop
    done = shop["orders"].loc[shop["orders"]["status"] == "completed", ["order_id", "order_ts"]]
    lines = shop["order_lines"].merge(done, on="order_id")
    lines["day"] = lines["order_ts"].dt.tz_convert(None).dt.floor("D").astype("datetime64[ns]")
    lines = lines[lines["day"] < run_date]
    lines["value"] = lines["quantity"] * lines["unit_price"]
    lines["discounted"] = lines["quantity"] * lines["discount"]
    daily = lines.groupby(["product_id", "day"], as_index=False).agg(
        units=("quantity", "sum"), revenue=("value", "sum"), discounted=("discounted", "sum")
    )
    daily["avg_discount"] = daily["discounted"] / daily["units"]
    prices = shop["product_prices"].sort_values("valid_from").rename(columns={"valid_from": "day"})
    daily = pd.merge_asof(daily.sort_values("day"), prices, on="day", by="product_id")
    sales = daily[["product_id", "day", "units", "revenue", "list_price", "avg_discount"]]
    return {
        "sales": sales.sort_values(["product_id", "day"]).reset_index(drop=True).astype({"units": "int64"}),
        "products": shop["products"][["product_id", "category", "cost", "current_price"]].copy(),
        "day_totals": lines.groupby("day").size().rename("lines").reset_index(),
        "list_prices": shop["product_prices"],
    }
