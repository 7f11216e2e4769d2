"""The source contract: the tables revopt reads and the ground-truth tables the generator writes.

The tables revopt publishes (schema ``scores``) are not here: they are revopt's own schema,
versioned by the migrations in :mod:`revopt.platform.migrations` and applied by ``revopt init-db``.

A store maps its own schema onto the ``shop`` tables (PostgreSQL) and the ``events`` table
(ClickHouse) with views of the same names and columns. All timestamps are UTC.
"""

from __future__ import annotations

import re

SHOP_SCHEMA = "shop"
TRUTH_SCHEMA = "truth"
SCORES_SCHEMA = "scores"

#: PostgreSQL source tables (schema ``shop``).
SHOP_DDL = """
CREATE SCHEMA IF NOT EXISTS shop;

CREATE TABLE IF NOT EXISTS shop.customers (
    customer_id          bigint PRIMARY KEY,
    signup_date          date NOT NULL,
    country              text NOT NULL,
    timezone             text NOT NULL,           -- IANA name, e.g. 'Europe/London'
    acquisition_channel  text NOT NULL,
    email_opt_in         boolean NOT NULL,        -- marketing consent: false gets no send time, no marketing action,
                                                  -- no campaign targeting
    do_not_profile       boolean NOT NULL DEFAULT false  -- optional in a store's view: true keeps the customer out of
                                                  -- every score and every per-customer table revopt publishes
);

CREATE TABLE IF NOT EXISTS shop.products (
    product_id     bigint PRIMARY KEY,
    sku            text NOT NULL,
    name           text NOT NULL,
    category       text NOT NULL,
    cost           numeric(12, 2) NOT NULL,       -- unit cost to the store
    current_price  numeric(12, 2) NOT NULL        -- list price today
);

CREATE TABLE IF NOT EXISTS shop.product_prices (  -- list-price history
    product_id  bigint NOT NULL,
    valid_from  date NOT NULL,
    list_price  numeric(12, 2) NOT NULL,
    PRIMARY KEY (product_id, valid_from)
);

CREATE TABLE IF NOT EXISTS shop.orders (
    order_id     bigint PRIMARY KEY,
    customer_id  bigint NOT NULL,
    order_ts     timestamptz NOT NULL,
    channel      text NOT NULL,                   -- marketing channel of the session that converted
    status       text NOT NULL                    -- 'completed' | 'cancelled'
);

CREATE TABLE IF NOT EXISTS shop.order_lines (
    order_id    bigint NOT NULL,
    line_no     integer NOT NULL,
    product_id  bigint NOT NULL,
    quantity    integer NOT NULL,
    unit_price  numeric(12, 2) NOT NULL,          -- price actually paid per unit, after discount
    discount    numeric(5, 4) NOT NULL,           -- fraction of list price taken off, 0..1
    PRIMARY KEY (order_id, line_no)
);

-- Optional: stores that track them fill these; empty tables switch the guardrails off.
CREATE TABLE IF NOT EXISTS shop.competitor_prices (
    day               date NOT NULL,
    product_id        bigint NOT NULL,
    competitor_price  numeric(12, 2) NOT NULL,    -- a comparable offer seen that day
    PRIMARY KEY (day, product_id)
);

CREATE TABLE IF NOT EXISTS shop.inventory (
    day         date NOT NULL,
    product_id  bigint NOT NULL,
    on_hand     integer NOT NULL,                 -- units in stock at the start of the day
    PRIMARY KEY (day, product_id)
);

-- Optional: the promotions the store ran, one row per product, promotion period and type.
-- 'price_reduction' is a temporary price cut of ``depth`` off the list price; 'display' (in-store
-- display, end cap, homepage slot) and 'feature' (flyer, newsletter, ad) move demand without a
-- price cut of their own. Several types may overlap (a cut that is also featured).
CREATE TABLE IF NOT EXISTS shop.promotions (
    product_id  bigint NOT NULL,
    start_date  date NOT NULL,                    -- first day of the promotion
    end_date    date NOT NULL,                    -- last day of the promotion (inclusive)
    promo_type  text NOT NULL,                    -- 'price_reduction' | 'display' | 'feature'
    depth       numeric(5, 4),                    -- price_reduction: fraction off the list price, 0..1; else NULL
    PRIMARY KEY (product_id, start_date, promo_type)
);

-- Optional: sales kept as aggregates per product and period (weekly scanner data, daily sales
-- reports) by stores without order lines for them. When it has rows, pricing reads demand from
-- here at the data's own grain instead of from order_lines.
CREATE TABLE IF NOT EXISTS shop.product_sales (
    product_id    bigint NOT NULL,
    period_start  date NOT NULL,                  -- first day of the period
    period_days   integer NOT NULL,               -- its length: 7 for weekly data, 1 for daily
    units         numeric(14, 3) NOT NULL,        -- units sold in the period (0: listed, none sold)
    revenue       numeric(14, 2) NOT NULL,        -- money taken for them (units x average price paid)
    PRIMARY KEY (product_id, period_start)
);

-- Optional: when each product was listed (on sale and recorded). Outside its listing periods a
-- product's sales are "not recorded" (delisted, out of range, store closed), never zero sales.
-- Without rows, a product is listed from its first list price or sale on.
CREATE TABLE IF NOT EXISTS shop.listings (
    product_id  bigint NOT NULL,
    start_date  date NOT NULL,                    -- first listed day
    end_date    date,                             -- last listed day (inclusive); NULL: listed today
    PRIMARY KEY (product_id, start_date)
);

-- Optional: the hierarchy above a product, for stores whose product is one brand (or item) at one
-- location, like a scanner panel of brand x store. Pricing shrinks a product's elasticity towards its
-- brand's and the brand's towards its category's and publishes the brand's beside the product's
-- (location is carried, not used yet). Without rows, products stand alone in their category.
CREATE TABLE IF NOT EXISTS shop.product_groups (
    product_id  bigint PRIMARY KEY,
    brand       text NOT NULL,                    -- the brand or item the product is an instance of
    location    text                              -- the store / outlet / region selling it; NULL: the only one
);

-- Optional: the exposure log of experiments. One row per experiment and unit: the first time the
-- store's app actually served the unit its variant (the unit is customer_id or product_id, as the
-- experiment's unit says; revopt assigns and publishes variants in scores.experiment_assignments).
-- With rows, an experiment is analysed on its exposed units and its sample-ratio check counts
-- exposures, so a serving path that loses one variant's exposures shows up; without rows, the
-- analysis is intention-to-treat on every assigned unit.
CREATE TABLE IF NOT EXISTS shop.experiment_exposures (
    experiment_id     text NOT NULL,              -- scores.experiments.experiment_id
    unit_id           bigint NOT NULL,            -- customer_id or product_id, per the experiment's unit
    first_exposed_at  timestamptz NOT NULL,       -- when the unit was first served its variant
    PRIMARY KEY (experiment_id, unit_id)
);

-- Optional: the store's retention and win-back offers with their randomised control groups, one row per
-- customer and campaign: the customers sent the offer (treated) and those of the same campaign held out
-- at random and not contacted (treated = false). The uplift model learns from them what an offer changes;
-- without rows (or without a control group) it is not trained.
CREATE TABLE IF NOT EXISTS shop.offers (
    offer_id     bigint PRIMARY KEY,
    customer_id  bigint NOT NULL,
    sent_at      timestamptz NOT NULL,            -- when the offer was sent (or, for the control, would have been)
    offer_type   text NOT NULL,                   -- 'retention' | 'win_back' | the store's own kinds
    discount     numeric(5, 4) NOT NULL,          -- fraction off the customer's next order, 0..1
    treated      boolean NOT NULL                 -- true: sent; false: the campaign's randomised control, not contacted
);

-- Optional: contact attributes used ONLY to find the same person behind two accounts (identity resolution).
-- revopt never copies them into run folders, MLflow or its published tables; the identity map names only which
-- fields agreed. Every column but customer_id may be NULL; a store without the table keeps working (accounts are
-- then merged by logins only). email_hash / phone_hash: the store's own hash (e.g. SHA-256 hex) of the normalised
-- address / number, compared exactly; names, postcode and birth date are compared approximately.
CREATE TABLE IF NOT EXISTS shop.customer_contacts (
    customer_id  bigint PRIMARY KEY,
    email_hash   text,                            -- hash of the lower-cased, trimmed e-mail address
    phone_hash   text,                            -- hash of the number in E.164 form
    first_name   text,
    last_name    text,
    postcode     text,
    birth_date   date
);

-- Spend per day, channel and (optionally) campaign. ``campaign`` is optional in a store's view: a store
-- without campaigns leaves it out (or '' for every row) and every campaign analysis runs per channel.
CREATE TABLE IF NOT EXISTS shop.marketing_spend (
    day          date NOT NULL,
    channel      text NOT NULL,
    spend        numeric(14, 2) NOT NULL,
    impressions  bigint NOT NULL,
    clicks       bigint NOT NULL,
    campaign     text NOT NULL DEFAULT '',        -- '' : no campaign (channel-level spend)
    PRIMARY KEY (day, channel, campaign)
);
"""

#: Ground truth the synthetic generator drew from (schema ``truth``). Never read by the pipeline,
#: only by benchmarks and tests that measure how well models recover it.
TRUTH_DDL = """
CREATE SCHEMA IF NOT EXISTS truth;

CREATE TABLE IF NOT EXISTS truth.generator_run (
    key    text PRIMARY KEY,
    value  text NOT NULL
);

CREATE TABLE IF NOT EXISTS truth.customers (
    customer_id        bigint PRIMARY KEY,
    segment            text NOT NULL,
    purchase_rate      double precision NOT NULL,  -- expected purchases per day while alive, before seasonality and marketing
    dropout_rate       double precision NOT NULL,  -- per-day hazard of becoming inactive for good
    churn_date         date,                       -- first day the customer is inactive; NULL if still alive at the end
    mean_basket_value  double precision NOT NULL,  -- customer's mean order value at reference prices
    best_hour_local    integer NOT NULL,           -- hour of day (local time) with the highest email open rate
    open_rate_at_best  double precision NOT NULL   -- probability an email sent at best hour is opened
);

CREATE TABLE IF NOT EXISTS truth.products (
    product_id     bigint PRIMARY KEY,
    elasticity     double precision NOT NULL,      -- own-price elasticity: units ~ (price / reference_price) ** elasticity
    reference_price double precision NOT NULL,
    popularity     double precision NOT NULL       -- relative choice weight at the reference price
);

CREATE TABLE IF NOT EXISTS truth.promotion_effects (
    promo_type  text PRIMARY KEY,                 -- as in shop.promotions
    lift        double precision NOT NULL         -- multiplicative effect on demand beyond the price cut (1: none)
);

CREATE TABLE IF NOT EXISTS truth.cross_elasticities (
    product_id        bigint NOT NULL,            -- whose demand responds
    other_product_id  bigint NOT NULL,            -- to this product's price
    cross_elasticity  double precision NOT NULL,  -- units_j ~ (p_k / reference_k) ** cross_elasticity (> 0: substitutes)
    PRIMARY KEY (product_id, other_product_id)
);

CREATE TABLE IF NOT EXISTS truth.channels (
    channel          text PRIMARY KEY,
    adstock_decay    double precision NOT NULL,    -- geometric adstock carry-over per day
    half_saturation  double precision NOT NULL,    -- adstocked spend giving half the maximum lift (Hill K)
    hill_slope       double precision NOT NULL,    -- Hill exponent S
    max_lift         double precision NOT NULL     -- maximum multiplicative lift on purchase intensity
);

CREATE TABLE IF NOT EXISTS truth.daily_intensity (
    day              date PRIMARY KEY,
    seasonality      double precision NOT NULL,    -- multiplicative day-of-week x yearly factor
    marketing_lift   double precision NOT NULL     -- 1 + sum over channels of Hill(adstock(spend))
);

CREATE TABLE IF NOT EXISTS truth.campaigns (      -- the paid campaigns of shop.marketing_spend
    campaign    text PRIMARY KEY,
    channel     text NOT NULL,
    efficiency  double precision NOT NULL         -- incremental orders per unit of spend, relative to its channel's (spend-weighted mean 1)
);

CREATE TABLE IF NOT EXISTS truth.order_causes (   -- what brought each order about (shop.orders.channel is only its last touch)
    order_id  bigint PRIMARY KEY,
    channel   text NOT NULL,                      -- a paid channel (the order is its incremental effect), organic, direct or email
    campaign  text                                -- the paid campaign or email newsletter; none ('' in the generator's
                                                  -- frame, NULL once COPYed: copy_frame loads '' as NULL) for organic and direct
);

CREATE TABLE IF NOT EXISTS truth.customer_taste ( -- each customer's category preference; empty when the store has no taste
    customer_id  bigint NOT NULL,
    category     text NOT NULL,                   -- every category the store sells
    share        double precision NOT NULL,       -- expected share of the customer's lines in the category at the
                                                  -- store's mean prices (sums to 1 per customer)
    PRIMARY KEY (customer_id, category)
);

CREATE TABLE IF NOT EXISTS truth.identities (     -- which person stands behind each account (duplicate accounts share one)
    customer_id  bigint PRIMARY KEY,
    person_id    bigint NOT NULL                  -- the person's first account's customer_id
);

CREATE TABLE IF NOT EXISTS truth.devices (        -- which person (or people, for a shared device) used each anonymous id
    anonymous_id  text NOT NULL,
    person_id     bigint NOT NULL,
    PRIMARY KEY (anonymous_id, person_id)
);

CREATE TABLE IF NOT EXISTS truth.offer_effects (  -- what each offer of shop.offers did (or would have done, for the control)
    offer_id         bigint PRIMARY KEY,
    customer_id      bigint NOT NULL,
    response_type    text NOT NULL,               -- 'persuadable' | 'sure_thing' | 'lost_cause' | 'sleeping_dog'
    p_order_control  double precision NOT NULL,   -- P(an order within the horizon) without the offer
    p_order_treated  double precision NOT NULL,   -- P(an order within the horizon) with it
    revenue_effect   double precision NOT NULL    -- expected incremental revenue in the horizon, before the discount
);
"""

#: ClickHouse events table. ``customer_id = 0`` means an anonymous visitor, ``product_id = 0``
#: an event about no product. ``anonymous_id`` (optional in a store's table: '' or absent when it has none)
#: is the browser cookie / device id the event came from, logged in or not: a session that carries both an
#: ``anonymous_id`` and a ``customer_id`` (a login) links the two, so the device's anonymous sessions count
#: towards the customer (revopt.platform.identity). The same DDL runs on chDB and on a ClickHouse server.
EVENTS_TABLE = "events"
EVENT_TYPES = (
    "page_view", "product_view", "add_to_cart", "checkout", "purchase",
    "email_send", "email_open", "email_click",
)
EVENTS_DDL = """
CREATE TABLE IF NOT EXISTS {database}.events (
    event_time   DateTime64(3, 'UTC'),
    session_id   UInt64,
    customer_id  UInt64,
    anonymous_id String DEFAULT '',
    event_type   LowCardinality(String),
    product_id   UInt64,
    channel      LowCardinality(String),
    device       LowCardinality(String),
    is_machine   UInt8,
    campaign     LowCardinality(String) DEFAULT ''
) ENGINE = MergeTree
PARTITION BY toYYYYMM(event_time)
ORDER BY (customer_id, event_time)
"""

#: Source tables in load order (parents first).
SHOP_TABLES = ("customers", "products", "product_prices", "orders", "order_lines", "marketing_spend")
#: Ground-truth tables of the synthetic generator (schema ``truth``).
TRUTH_TABLES = ("generator_run", "customers", "products", "promotion_effects", "cross_elasticities", "channels",
                "daily_intensity", "campaigns", "order_causes", "customer_taste", "offer_effects", "identities",
                "devices")
#: Optional source tables: a store may leave them empty (their guardrails, the promotion terms, the
#: aggregated demand, the listing periods, the exposure-based experiment analysis or the uplift model are then off).
SHOP_OPTIONAL_TABLES = ("competitor_prices", "inventory", "promotions", "product_sales", "listings", "product_groups",
                        "experiment_exposures", "offers", "customer_contacts")
#: The values of ``shop.promotions.promo_type``.
PROMO_TYPES = ("price_reduction", "display", "feature")

#: The source columns revopt reads and their type family, checked before every extract so a store
#: whose views drifted from the contract gets one clear error (revopt.platform.extract.check_source_contract).
SOURCE_COLUMNS = {
    "customers": {"customer_id": "integer", "signup_date": "date", "country": "text", "timezone": "text",
                  "acquisition_channel": "text", "email_opt_in": "boolean"},
    "products": {"product_id": "integer", "category": "text", "cost": "numeric", "current_price": "numeric"},
    "product_prices": {"product_id": "integer", "valid_from": "date", "list_price": "numeric"},
    "orders": {"order_id": "integer", "customer_id": "integer", "order_ts": "timestamp", "channel": "text", "status": "text"},
    "order_lines": {"order_id": "integer", "line_no": "integer", "product_id": "integer", "quantity": "integer",
                    "unit_price": "numeric", "discount": "numeric"},
    "marketing_spend": {"day": "date", "channel": "text", "spend": "numeric", "impressions": "integer", "clicks": "integer"},
}
#: The columns revopt reads from an optional source, checked like :data:`SOURCE_COLUMNS` when the
#: store has the table (a store without it just goes without).
OPTIONAL_SOURCE_COLUMNS = {
    "promotions": {"product_id": "integer", "start_date": "date", "end_date": "date", "promo_type": "text",
                   "depth": "numeric"},
    "product_sales": {"product_id": "integer", "period_start": "date", "period_days": "integer", "units": "numeric",
                      "revenue": "numeric"},
    "listings": {"product_id": "integer", "start_date": "date", "end_date": "date"},
    "product_groups": {"product_id": "integer", "brand": "text", "location": "text"},
    "experiment_exposures": {"experiment_id": "text", "unit_id": "integer", "first_exposed_at": "timestamp"},
    "offers": {"offer_id": "integer", "customer_id": "integer", "sent_at": "timestamp", "offer_type": "text",
               "discount": "numeric", "treated": "boolean"},
    "customer_contacts": {"customer_id": "integer", "email_hash": "text", "phone_hash": "text", "first_name": "text",
                          "last_name": "text", "postcode": "text", "birth_date": "date"},
}
EVENT_COLUMNS = {"event_time": "datetime", "session_id": "integer", "customer_id": "integer", "event_type": "string",
                 "product_id": "integer", "is_machine": "integer"}


def ddl_column_types(ddl: str) -> dict[str, list[tuple[str, str]]]:
    """Table name (without schema) -> (column name, SQL type) in DDL order, parsed from a DDL script
    above (``CREATE TABLE`` statements only; ``ALTER TABLE ... ADD COLUMN`` is not followed)."""
    tables = {}
    for name, body in re.findall(r"CREATE TABLE IF NOT EXISTS (\S+) \((.*?)\n\)", ddl, flags=re.DOTALL):
        columns = []
        for line in body.splitlines():
            parts = line.split("--")[0].split()
            if parts and not " ".join(parts).upper().startswith("PRIMARY KEY"):
                columns.append((parts[0], parts[1].rstrip(",")))
        tables[name.split(".")[-1]] = columns
    return tables


def ddl_columns(ddl: str) -> dict[str, list[str]]:
    """Table name (without schema) -> column names in DDL order (:func:`ddl_column_types`)."""
    return {table: [column for column, _ in columns] for table, columns in ddl_column_types(ddl).items()}
