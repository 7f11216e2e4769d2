"""Words for every feature a customer model can use: what the published top factors say about it.

One :class:`Description` per column of :data:`features.customer.FEATURE_COLUMNS` and per column the
binary families derive from them (``ml.families.binary.BTYD_FEATURES``): a label for a table header,
the unit of the value, how many decimals the value is published with, and a phrase that puts the
customer's value into words for the factor's sentence ("no session for 41 days" + "lowers the
purchase chance by 12.3 points", :mod:`ml.families.explain`). ``tests/unit/test_explanations.py`` fails when a
feature a model can use has no entry here, so a new feature cannot be published without words.

Phrase templates: ``{value}`` is the customer's value as shown to a person (a share or probability
as a percentage, an amount of money with the store's currency when one is configured), ``{s}`` is
``s`` unless the value is 1, and ``{one|many}`` picks the word for a value of 1 or any other. A
``counted`` phrase's subject is the counted thing ("3 orders in the last 30 days"), so its verb agrees
with the value ("raise", "raises" for 1); any other phrase takes a singular verb. Texts never contain
a double quote or a backslash: they are written into JSON without escaping.
"""

from __future__ import annotations

from dataclasses import dataclass

#: units whose values are shown as a percentage of 1 in sentences (published as the 0-1 value)
PERCENT_UNITS = ("share", "probability")
#: units whose values are money in the store's currency
CURRENCY_UNITS = ("currency",)


@dataclass(frozen=True)
class Description:
    """How one feature is named and put into words."""

    label: str
    unit: str
    phrase: str
    decimals: int = 0
    counted: bool = False


_DAYS, _ORDERS, _COUNT, _MONEY, _SHARE, _RATIO = "days", "orders", "count", "currency", "share", "ratio"

DESCRIPTIONS: dict[str, Description] = {
    "recency_days": Description("Days since the last order", _DAYS, "last order {value} day{s} ago"),
    "days_since_first_order": Description("Days since the first order", _DAYS, "first order {value} day{s} ago"),
    "frequency": Description("Completed orders", _ORDERS, "{value} completed order{s} in the history", counted=True),
    "monetary": Description("Total spend", _MONEY, "total spend of {value}", 2),
    "avg_order_value": Description("Average order value", _MONEY, "an average order of {value}", 2),
    "tenure_days": Description("Days since sign-up", _DAYS, "sign-up {value} day{s} ago"),
    "orders_30d": Description("Orders in the last 30 days", _ORDERS, "{value} order{s} in the last 30 days", counted=True),
    "orders_90d": Description("Orders in the last 90 days", _ORDERS, "{value} order{s} in the last 90 days", counted=True),
    "spend_90d": Description("Spend in the last 90 days", _MONEY, "spend of {value} in the last 90 days", 2),
    "sessions_7d": Description("Sessions in the last 7 days", _COUNT, "{value} session{s} in the last 7 days",
                               counted=True),
    "sessions_30d": Description("Sessions in the last 30 days", _COUNT, "{value} session{s} in the last 30 days",
                                counted=True),
    "product_views_30d": Description("Product views in the last 30 days", _COUNT,
                                     "{value} product view{s} in the last 30 days", counted=True),
    "add_to_carts_30d": Description("Add-to-carts in the last 30 days", _COUNT,
                                    "{value} add-to-cart{s} in the last 30 days", counted=True),
    "email_opens_30d": Description("Email opens in the last 30 days", _COUNT, "{value} email open{s} in the last 30 days",
                                   counted=True),
    "email_clicks_30d": Description("Email clicks in the last 30 days", _COUNT,
                                    "{value} email click{s} in the last 30 days", counted=True),
    "days_since_last_session": Description("Days since the last session", _DAYS, "no session for {value} day{s}"),
    "orders_180d": Description("Orders in the last 180 days", _ORDERS, "{value} order{s} in the last 180 days",
                               counted=True),
    "spend_180d": Description("Spend in the last 180 days", _MONEY, "spend of {value} in the last 180 days", 2),
    "mean_gap_days": Description("Average days between orders", _DAYS, "an average gap of {value} day{s} between orders"),
    "gap_spread": Description("Spread of the gaps between orders (std / mean)", _RATIO,
                              "gaps between orders varying by {value} times their mean", 2),
    "gap_trend": Description("Last gap between orders / average gap", _RATIO,
                             "a last gap between orders {value} times the usual", 2),
    "overdue_ratio": Description("Days since the last order / average gap", _RATIO,
                                 "{value} times the usual gap since the last order", 2),
    "cancel_share": Description("Share of orders cancelled", _SHARE, "{value} of orders cancelled", 3),
    "discount_share": Description("Share of spend on discount", _SHARE, "{value} of spend on discount", 3),
    "orders_same_season_last_year": Description("Orders in the same season last year", _ORDERS,
                                                "{value} order{s} in the same season last year", counted=True),
    "spend_same_season_last_year": Description("Spend in the same season last year", _MONEY,
                                               "spend of {value} in the same season last year", 2),
    "order_hour_regularity": Description("Regularity of the hour of ordering (0 to 1)", "index",
                                         "an order-hour regularity of {value} (1: always the same hour)", 2),
    "categories_bought": Description("Product categories bought", _COUNT,
                                     "purchases in {value} product {category|categories}"),
    "category_entropy": Description("Spread of spend over categories (entropy, nats)", "nats",
                                    "a spread of spend over categories of {value} nats", 2),
    "top_category_share": Description("Share of spend in the top category", _SHARE, "{value} of spend in the top category",
                                      3),
    "category_repeat_rate": Description("How often others rebuy the customer's categories", _SHARE,
                                        "categories that others rebuy at a rate of {value}", 3),
    # derived by the binary families from the columns above (ml.families.binary.BTYD_FEATURES)
    "btyd_expected_purchases": Description("Expected orders over the horizon (BG/NBD)", _ORDERS,
                                           "a BG/NBD forecast of {value} {order|orders}", 2),
    "btyd_p_alive": Description("Probability of still being an active customer (BG/NBD)", "probability",
                                "a {value} chance of still being an active customer", 3),
}


def describe(feature: str) -> Description:
    """The words for ``feature``; a feature without an entry gets its own name, so a factor is never dropped
    (the unit test keeps every feature a model can use in :data:`DESCRIPTIONS`)."""
    return DESCRIPTIONS.get(feature) or Description(feature.replace("_", " "), "", f"{feature.replace('_', ' ')} of {{value}}", 3)
