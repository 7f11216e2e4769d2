"""The SQL the extract runs (:mod:`revopt.platform.extract`), each query with what it reads, and the columns
of the optional sources it reads: PostgreSQL (the ``shop`` views of the source contract, docs/) and the ClickHouse
events (``{events}``: :func:`revopt.platform.identity.events_source`). Every query reads strictly before the run
date (``%(run_date)s`` / ``{run_ts:...}``)."""

# ``do_not_profile`` is optional in a store's view: {do_not_profile} is the column, or false without it.
CUSTOMERS_SQL = """
SELECT customer_id, signup_date, country, timezone, acquisition_channel, email_opt_in,
       coalesce({do_not_profile}, false) AS do_not_profile
FROM shop.customers
WHERE signup_date < %(run_date)s
ORDER BY customer_id
"""

ORDERS_SQL = """
WITH o AS (
    SELECT order_id, customer_id, order_ts, channel, status
    FROM shop.orders
    WHERE order_ts < %(run_ts)s AND order_ts >= %(since_ts)s
),
l AS (  -- lines aggregated per order first, so a duplicated order row cannot multiply its lines
    SELECT order_id, count(*)::bigint AS n_lines, sum(quantity * unit_price)::float8 AS order_value,
           count(*) FILTER (WHERE product_id IS NULL)::bigint AS lines_without_product_id,
           coalesce(sum(quantity * unit_price) FILTER (WHERE discount > 0), 0)::float8 AS discounted_value
    FROM shop.order_lines
    WHERE order_id IN (SELECT order_id FROM o)
    GROUP BY order_id
)
SELECT o.order_id, o.customer_id, o.order_ts, o.channel, o.status,
       coalesce(l.n_lines, 0)::bigint AS n_lines, coalesce(l.order_value, 0)::float8 AS order_value,
       coalesce(l.lines_without_product_id, 0)::bigint AS lines_without_product_id,
       coalesce(l.discounted_value, 0)::float8 AS discounted_value
FROM o LEFT JOIN l ON l.order_id = o.order_id
ORDER BY o.order_id
"""

# Each order's spend per product category (the customers' category mix); lines without a known
# product are left out. Orders are picked by id, so a duplicated order row cannot multiply lines.
ORDER_CATEGORIES_SQL = """
SELECT l.order_id, p.category, sum(l.quantity * l.unit_price)::float8 AS value
FROM shop.order_lines AS l
JOIN shop.products AS p ON p.product_id = l.product_id
WHERE l.order_id IN (SELECT order_id FROM shop.orders WHERE order_ts < %(run_ts)s AND order_ts >= %(since_ts)s)
GROUP BY l.order_id, p.category
ORDER BY l.order_id, p.category
"""

# Per customer, day and ``known_from`` (revopt.platform.identity: the day an anonymous event's device link became
# known; 1970-01-01 for every other event), so features at a cutoff before a login leave its earlier sessions out.
DAILY_EVENTS_SQL = """
SELECT
    toInt64(customer_id) AS customer_id,
    toDate(event_time) AS day,
    toInt64(uniqExactIf(session_id, event_type NOT LIKE 'email_%')) AS sessions,
    toInt64(countIf(event_type = 'page_view')) AS page_views,
    toInt64(countIf(event_type = 'product_view')) AS product_views,
    toInt64(countIf(event_type = 'add_to_cart')) AS add_to_carts,
    toInt64(countIf(event_type = 'checkout')) AS checkouts,
    toInt64(countIf(event_type = 'purchase')) AS purchases,
    toInt64(countIf(event_type = 'email_send')) AS email_sends,
    toInt64(countIf(event_type = 'email_open' AND is_machine = 0)) AS email_opens,
    toInt64(countIf(event_type = 'email_click' AND is_machine = 0)) AS email_clicks,
    known_from
FROM {events}
WHERE customer_id != 0
  AND event_time >= {{since:DateTime64(3, 'UTC')}}
  AND event_time < {{run_ts:DateTime64(3, 'UTC')}}
GROUP BY customer_id, day, known_from
ORDER BY customer_id, day, known_from
"""

# ``campaign`` is optional in a store's view (contract): {campaign} is the column, or '' when the view has none.
MARKETING_SPEND_SQL = """
SELECT day, channel, coalesce({campaign}, '') AS campaign, spend::float8 AS spend, impressions, clicks
FROM shop.marketing_spend
WHERE day >= %(since)s AND day < %(run_date)s
ORDER BY day, channel, campaign
"""

# current_price as of the run date: the latest list price valid before D (shop.products holds
# today's price, which a run for an earlier date must not see); products without history keep it.
PRODUCTS_SQL = """
SELECT p.product_id, p.category, p.cost::float8 AS cost,
       coalesce(h.list_price, p.current_price)::float8 AS current_price,
       p.current_price::float8 AS listed_current_price
FROM shop.products AS p
LEFT JOIN LATERAL (
    SELECT pp.list_price FROM shop.product_prices AS pp
    WHERE pp.product_id = p.product_id AND pp.valid_from < %(run_date)s
    ORDER BY pp.valid_from DESC
    LIMIT 1
) AS h ON true
ORDER BY p.product_id
"""

# Dense product x day panel of completed-order demand for every day a product had a list price
# (from shop.product_prices; a product without price history uses its current price throughout).
PRODUCT_DAILY_SALES_SQL = """
WITH days AS (
    SELECT generate_series(%(since)s::date, %(run_date)s::date - 1, interval '1 day')::date AS day
),
history AS (
    SELECT product_id, valid_from, list_price FROM shop.product_prices WHERE valid_from < %(run_date)s
    UNION ALL
    SELECT p.product_id, DATE '1900-01-01', p.current_price FROM shop.products AS p
    WHERE NOT EXISTS (SELECT 1 FROM shop.product_prices AS pp WHERE pp.product_id = p.product_id)
),
spells AS (
    SELECT product_id, valid_from, list_price,
           lead(valid_from) OVER (PARTITION BY product_id ORDER BY valid_from) AS valid_to
    FROM history
),
sales AS (
    SELECT l.product_id, (o.order_ts AT TIME ZONE 'UTC')::date AS day,
           sum(l.quantity)::bigint AS units,
           sum(l.quantity * l.unit_price)::float8 AS revenue,
           (sum(l.quantity * l.discount) / nullif(sum(l.quantity), 0))::float8 AS avg_discount
    FROM shop.order_lines AS l
    JOIN shop.orders AS o ON o.order_id = l.order_id
    WHERE o.status = 'completed' AND o.order_ts >= %(since_ts)s AND o.order_ts < %(run_ts)s
    GROUP BY l.product_id, (o.order_ts AT TIME ZONE 'UTC')::date
)
SELECT s.product_id, d.day,
       coalesce(x.units, 0)::bigint AS units,
       coalesce(x.revenue, 0)::float8 AS revenue,
       s.list_price::float8 AS list_price,
       coalesce(x.avg_discount, 0)::float8 AS avg_discount
FROM spells AS s
JOIN days AS d ON d.day >= s.valid_from AND (s.valid_to IS NULL OR d.day < s.valid_to)
LEFT JOIN sales AS x ON x.product_id = s.product_id AND x.day = d.day
ORDER BY s.product_id, d.day
"""

DAY_TOTALS_SQL = """
SELECT (o.order_ts AT TIME ZONE 'UTC')::date AS day, count(*)::bigint AS lines
FROM shop.order_lines AS l
JOIN shop.orders AS o ON o.order_id = l.order_id
WHERE o.status = 'completed' AND o.order_ts >= %(since_ts)s AND o.order_ts < %(run_ts)s
GROUP BY 1
ORDER BY 1
"""

# Optional sources: the latest observation per product before the run date (empty if not tracked).
COMPETITOR_PRICES_SQL = """
SELECT DISTINCT ON (product_id) product_id, day, competitor_price::float8 AS competitor_price
FROM shop.competitor_prices
WHERE day < %(run_date)s
ORDER BY product_id, day DESC
"""

INVENTORY_SQL = """
SELECT DISTINCT ON (product_id) product_id, day, on_hand::bigint AS on_hand
FROM shop.inventory
WHERE day < %(run_date)s
ORDER BY product_id, day DESC
"""

# Optional pricing sources (empty when the store does not keep them): the promotions that started
# before the run date; the aggregated sales of every period that ended before it (a period still
# running on D is incomplete and left out); the listing periods that overlap the window.
PROMOTIONS_SQL = """
SELECT product_id, start_date, end_date, promo_type, depth::float8 AS depth
FROM shop.promotions
WHERE start_date < %(run_date)s AND end_date >= %(since)s
ORDER BY product_id, start_date, promo_type
"""

PRODUCT_SALES_SQL = """
SELECT s.product_id, s.period_start, s.period_days, s.units::float8 AS units, s.revenue::float8 AS revenue,
       coalesce(h.list_price, p.current_price)::float8 AS list_price  -- the list price the period began with
FROM shop.product_sales AS s
JOIN shop.products AS p ON p.product_id = s.product_id
LEFT JOIN LATERAL (
    SELECT pp.list_price FROM shop.product_prices AS pp
    WHERE pp.product_id = s.product_id AND pp.valid_from <= s.period_start
    ORDER BY pp.valid_from DESC
    LIMIT 1
) AS h ON true
WHERE s.period_start >= %(since)s AND s.period_start + s.period_days <= %(run_date)s
ORDER BY s.product_id, s.period_start
"""

LISTINGS_SQL = """
SELECT product_id, start_date, end_date
FROM shop.listings
WHERE start_date < %(run_date)s AND (end_date IS NULL OR end_date >= %(since)s)
ORDER BY product_id, start_date
"""

PRODUCT_GROUPS_SQL = """
SELECT product_id, brand, location FROM shop.product_groups ORDER BY product_id
"""

# Optional experiment source (empty when the store does not log exposures): the units first served
# their variant in the extract window. The window is the one of the other optional sources and of the
# orders the analysis reads, for consistency: a unit first exposed before it is left out like its
# orders are, so the experiments DAG's lookback must reach back to the start of the experiments it
# analyses.
EXPERIMENT_EXPOSURES_SQL = """
SELECT experiment_id, unit_id, first_exposed_at
FROM shop.experiment_exposures
WHERE first_exposed_at < %(run_ts)s AND first_exposed_at >= %(since_ts)s
ORDER BY experiment_id, unit_id
"""
EXPOSURE_COLUMNS = ("experiment_id", "unit_id", "first_exposed_at")

# Optional uplift source (empty when the store keeps no offers): the offers, sent and held-out control
# alike, of campaigns sent in the extract window (their outcomes are the orders of the same window).
OFFERS_SQL = """
SELECT offer_id, customer_id, sent_at, offer_type, discount::float8 AS discount, treated
FROM shop.offers
WHERE sent_at < %(run_ts)s AND sent_at >= %(since_ts)s
ORDER BY sent_at, offer_id
"""
OFFER_COLUMNS = ("offer_id", "customer_id", "sent_at", "offer_type", "discount", "treated")

# The recommender's purchases: completed orders in the window, one row per order and product (a product on
# several lines of one order counts once), with the product's name where the store's shop.products has
# one ({name}: ``name::text`` or ``NULL::text``). Orders and products are deduplicated first, so duplicated
# source rows cannot multiply a purchase. Plain joins: an ``IN (SELECT ... FROM <CTE>)`` form of it took
# minutes on the 5,000-customer demo (a CTE scan per order line).
ORDER_ITEMS_SQL = """
SELECT o.order_id, o.customer_id, o.order_ts, l.product_id, sum(l.quantity)::bigint AS quantity,
       sum(l.quantity * l.unit_price)::float8 AS value, p.product_name
FROM (
    SELECT DISTINCT ON (order_id) order_id, customer_id, order_ts
    FROM shop.orders
    WHERE status = 'completed' AND order_ts < %(run_ts)s AND order_ts >= %(since_ts)s
    ORDER BY order_id
) AS o
JOIN shop.order_lines AS l ON l.order_id = o.order_id
LEFT JOIN (
    SELECT DISTINCT ON (product_id) product_id, {name} AS product_name FROM shop.products ORDER BY product_id
) AS p ON p.product_id = l.product_id
WHERE l.product_id IS NOT NULL
GROUP BY o.order_id, o.customer_id, o.order_ts, l.product_id, p.product_name
ORDER BY o.order_id, l.product_id
"""
ORDER_ITEM_COLUMNS = ("order_id", "customer_id", "order_ts", "product_id", "quantity", "value", "product_name")

# The recommender's product views: per known customer, product and UTC day (machine events left out).
PRODUCT_VIEWS_SQL = """
SELECT toInt64(customer_id) AS customer_id, toInt64(product_id) AS product_id, toDate(event_time) AS day,
       toInt64(count()) AS views
FROM {events}
WHERE event_type = 'product_view' AND customer_id != 0 AND product_id != 0 AND is_machine = 0
  AND event_time >= {{since:DateTime64(3, 'UTC')}}
  AND event_time < {{run_ts:DateTime64(3, 'UTC')}}
GROUP BY customer_id, product_id, day
ORDER BY customer_id, product_id, day
"""
PRODUCT_VIEW_COLUMNS = ("customer_id", "product_id", "day", "views")
