"""Daily campaign analytics (issue 18, item 5): per day, channel and campaign the traffic, the credited
conversions and revenue, the cost, ROAS and their 7- and 28-day trends, and the same per customer tier;
aggregated inside ClickHouse.

**Inputs.** The clickstream stays in ClickHouse. The two small PostgreSQL-side frames are inserted into
ClickHouse tables (replaced on every build) and joined there, so only the result comes back:

- *spend* (``shop.marketing_spend``): ``day`` (midnight), ``channel``, ``campaign`` (optional: missing,
  None or '' all mean no campaign), ``spend``, ``impressions``, ``clicks`` (the ad platform's clicks);
- *credits* (one row per order and credited (channel, campaign), from the attribution model the run
  chose): ``day`` (the UTC date of the order), ``channel``, ``campaign`` (None or '' for none),
  ``conversions`` (the model's ``credit``: the order's share) and ``revenue`` (its ``revenue_credit``),
  and ``customer_id`` for the per-tier table. Orders without touchpoints carry the channel ``"(none)"``
  and show up as that channel.

A store whose ``events`` table predates the ``campaign`` column (checked in ``system.columns``) reads
every event as campaign ''; so does a store that never fills it. Everything then runs per channel.

**What is counted**, for each UTC day in ``[since, run_date)``:

- ``sessions``: distinct web sessions (``session_id != 0``, non-email events, anonymous ones included)
  whose *first* event in the read window is on that day; the session's channel and campaign are those of
  that first event (as in :mod:`features.attribution`);
- ``email_sends``, ``human_opens``, ``human_clicks``: email events by their own day, channel and campaign;
  opens and clicks with ``is_machine = 1`` (security scanners) are left out;
- ``impressions``, ``ad_clicks``, ``cost``: the spend rows' sums;
- ``clicks`` = ``ad_clicks + human_clicks``: the paid clicks the store reports plus the people who clicked
  an email. (A store whose spend rows for its email channel also report clicks counts both.)
- ``conversions``, ``revenue``: the credits' sums (attributed, not incremental);
- ``roas`` = revenue / cost, NULL when the cost is 0 (under half a cent: money is in cents);
- trailing sums over the day and the 6 / 27 days before it, ``revenue_7d``, ``cost_7d``,
  ``conversions_7d``, ``revenue_28d``, ``cost_28d``, ``conversions_28d``; ``roas_7d``, ``roas_28d``
  (NULL at zero cost); ``roas_trend_7d_vs_28d`` = roas_7d / roas_28d - 1 (NULL when either is NULL or
  roas_28d is 0); ``conversions_trend_7d_vs_28d`` = (conversions_7d / 7) / (conversions_28d / 28) - 1,
  the last week's daily rate against the last four weeks' (NULL without conversions in 28 days).

The trailing windows are ClickHouse window functions over a *dense* day grid: every (channel, campaign)
with any event, spend row or credit row in ``[since, run_date)`` gets a row for every day of that window
(zero on days without activity) and the grid starts 27 days before ``since``, so the first day's 28-day
sums are complete. A campaign active only before ``since`` has no rows.

**Per tier** (:func:`campaign_segment_daily_in_store`): sessions, email sends, human opens and clicks,
conversions and revenue split by the tier of the customer (the caller's tiers frame, as of the run date,
not of the day): customer 0 is ``'anonymous'``, a customer without a tier ``'unknown'``. Cost, impressions
and ad clicks are per campaign, not per customer, so they are **not split** (no allocation rule is
defensible without per-customer ad exposure); the per-tier table leaves them out. Only days with activity
have rows, and its sums over tiers equal :func:`campaign_daily_in_store`'s columns on every day.
:func:`value_tiers` gives a store without other segments its tiers (new / high / mid / low).

**Send hours** (:func:`email_send_hours_in_store`): the email sends of a window per campaign, customer and
local send hour, the input of the send-time rule of :mod:`ml.attribution.campaigns`.

The inputs' ClickHouse tables are fixed names, truncated and refilled by each build (as
:mod:`features.attribution` does): two builds must not run at once against one database.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pyarrow as pa

from features.engagement import local_time
from revopt.platform.identity import events_source

SPEND_TABLE = "campaign_spend"
CREDITS_TABLE = "campaign_credits"
TIERS_TABLE = "campaign_tiers"
#: the trailing windows, in days (the day itself included)
SHORT_DAYS, LONG_DAYS = 7, 28
#: a cost below half a cent is no cost (ROAS NULL)
_ZERO_COST = 0.005

_DDL = (
    """CREATE TABLE IF NOT EXISTS {database}.campaign_spend (
        day Date, channel String, campaign String, spend Float64, impressions Int64, clicks Int64
    ) ENGINE = MergeTree ORDER BY (channel, campaign, day)""",
    """CREATE TABLE IF NOT EXISTS {database}.campaign_credits (
        day Date, channel String, campaign String, customer_id UInt64, conversions Float64, revenue Float64
    ) ENGINE = MergeTree ORDER BY (channel, campaign, day)""",
    """CREATE TABLE IF NOT EXISTS {database}.campaign_tiers (
        customer_id UInt64, tier String
    ) ENGINE = MergeTree ORDER BY customer_id""",
)

COUNT_COLUMNS = ("sessions", "email_sends", "human_opens", "human_clicks", "impressions", "ad_clicks", "clicks")
DAILY_COLUMNS = ("day", "channel", "campaign", *COUNT_COLUMNS, "conversions", "revenue", "cost", "roas",
                 "revenue_7d", "cost_7d", "conversions_7d", "revenue_28d", "cost_28d", "conversions_28d",
                 "roas_7d", "roas_28d", "roas_trend_7d_vs_28d", "conversions_trend_7d_vs_28d")
SEGMENT_COLUMNS = ("day", "channel", "campaign", "tier", "sessions", "email_sends", "human_opens", "human_clicks",
                   "conversions", "revenue")

# One row per source row or group: (day, channel, campaign, customer_id, measures...). {campaign} is the events'
# campaign column or '' for a table without it.
_FACTS_SQL = """
web AS (
    SELECT toDate(min(event_time)) AS day, toString(argMin(channel, event_time)) AS channel,
           toString(argMin({campaign}, event_time)) AS campaign, customer_id
    FROM {events}
    WHERE session_id != 0 AND event_type NOT LIKE 'email_%'
      AND event_time >= {{start_ts:DateTime64(3, 'UTC')}} AND event_time < {{run_ts:DateTime64(3, 'UTC')}}
    GROUP BY customer_id, session_id
),
facts AS (
    SELECT day, channel, campaign, customer_id, toUInt64(count()) AS sessions, toUInt64(0) AS email_sends,
           toUInt64(0) AS human_opens, toUInt64(0) AS human_clicks, toUInt64(0) AS impressions,
           toUInt64(0) AS ad_clicks, toFloat64(0) AS cost, toFloat64(0) AS conversions, toFloat64(0) AS revenue
    FROM web GROUP BY day, channel, campaign, customer_id
    UNION ALL
    SELECT toDate(event_time), toString(channel), toString({campaign}), customer_id, toUInt64(0),
           toUInt64(countIf(event_type = 'email_send')),
           toUInt64(countIf(event_type = 'email_open' AND is_machine = 0)),
           toUInt64(countIf(event_type = 'email_click' AND is_machine = 0)), toUInt64(0), toUInt64(0),
           toFloat64(0), toFloat64(0), toFloat64(0)
    FROM {events}
    WHERE event_type IN ('email_send', 'email_open', 'email_click')
      AND event_time >= {{start_ts:DateTime64(3, 'UTC')}} AND event_time < {{run_ts:DateTime64(3, 'UTC')}}
    GROUP BY 1, 2, 3, 4
    UNION ALL
    SELECT day, channel, campaign, toUInt64(0), toUInt64(0), toUInt64(0), toUInt64(0), toUInt64(0),
           toUInt64(sum(impressions)), toUInt64(sum(clicks)), sum(spend), toFloat64(0), toFloat64(0)
    FROM {database}.campaign_spend
    WHERE day >= {{start:Date}} AND day < {{run_date:Date}} AND {with_spend}
    GROUP BY day, channel, campaign
    UNION ALL
    SELECT day, channel, campaign, customer_id, toUInt64(0), toUInt64(0), toUInt64(0), toUInt64(0),
           toUInt64(0), toUInt64(0), toFloat64(0), sum(conversions), sum(revenue)
    FROM {database}.campaign_credits
    WHERE day >= {{start:Date}} AND day < {{run_date:Date}}
    GROUP BY day, channel, campaign, customer_id
)"""

_SUMS = ", ".join(f"sum({c}) AS {c}" for c in ("sessions", "email_sends", "human_opens", "human_clicks",
                                                "impressions", "ad_clicks", "cost", "conversions", "revenue"))


def _ratio(numerator: str, denominator: str) -> str:
    return f"if({denominator} > {_ZERO_COST}, {numerator} / {denominator}, NULL)"


_DAILY_SQL = f"""
WITH {{facts}},
daily AS (SELECT day, channel, campaign, {_SUMS} FROM facts GROUP BY day, channel, campaign),
active AS (SELECT DISTINCT channel, campaign FROM daily WHERE day >= {{{{since:Date}}}}),
grid AS (
    SELECT a.channel AS channel, a.campaign AS campaign, toDate({{{{start:Date}}}} + n) AS day
    FROM active AS a ARRAY JOIN range({{{{grid_days:UInt32}}}}) AS n
),
windowed AS (
    SELECT g.day AS day, g.channel AS channel, g.campaign AS campaign,
           coalesce(d.sessions, 0) AS sessions, coalesce(d.email_sends, 0) AS email_sends,
           coalesce(d.human_opens, 0) AS human_opens, coalesce(d.human_clicks, 0) AS human_clicks,
           coalesce(d.impressions, 0) AS impressions, coalesce(d.ad_clicks, 0) AS ad_clicks,
           coalesce(d.cost, 0) AS cost, coalesce(d.conversions, 0) AS conversions, coalesce(d.revenue, 0) AS revenue,
           sum(cost) OVER w7 AS cost_7d, sum(revenue) OVER w7 AS revenue_7d, sum(conversions) OVER w7 AS conversions_7d,
           sum(cost) OVER w28 AS cost_28d, sum(revenue) OVER w28 AS revenue_28d,
           sum(conversions) OVER w28 AS conversions_28d
    FROM grid AS g
    LEFT JOIN daily AS d ON d.day = g.day AND d.channel = g.channel AND d.campaign = g.campaign
    WINDOW w7 AS (PARTITION BY g.channel, g.campaign ORDER BY g.day ROWS BETWEEN {SHORT_DAYS - 1} PRECEDING AND CURRENT ROW),
           w28 AS (PARTITION BY g.channel, g.campaign ORDER BY g.day ROWS BETWEEN {LONG_DAYS - 1} PRECEDING AND CURRENT ROW)
)
SELECT day, channel, campaign, sessions, email_sends, human_opens, human_clicks, impressions, ad_clicks,
       ad_clicks + human_clicks AS clicks, conversions, revenue, cost, {_ratio('revenue', 'cost')} AS roas,
       revenue_7d, cost_7d, conversions_7d, revenue_28d, cost_28d, conversions_28d,
       {_ratio('revenue_7d', 'cost_7d')} AS roas_7d, {_ratio('revenue_28d', 'cost_28d')} AS roas_28d,
       if(cost_7d > {_ZERO_COST} AND cost_28d > {_ZERO_COST} AND revenue_28d > 0,
          (revenue_7d / cost_7d) / (revenue_28d / cost_28d) - 1, NULL) AS roas_trend_7d_vs_28d,
       if(conversions_28d > 0, (conversions_7d / {SHORT_DAYS}) / (conversions_28d / {LONG_DAYS}) - 1, NULL)
           AS conversions_trend_7d_vs_28d
FROM windowed
WHERE day >= {{{{since:Date}}}}
ORDER BY channel, campaign, day
"""

_SEGMENT_SQL = """
WITH {facts}
SELECT f.day AS day, f.channel AS channel, f.campaign AS campaign,
       multiIf(f.customer_id = 0, 'anonymous', ifNull(nullIf(t.tier, ''), 'unknown')) AS tier,
       sum(f.sessions) AS sessions, sum(f.email_sends) AS email_sends, sum(f.human_opens) AS human_opens,
       sum(f.human_clicks) AS human_clicks, sum(f.conversions) AS conversions, sum(f.revenue) AS revenue
FROM facts AS f
LEFT JOIN {database}.campaign_tiers AS t ON t.customer_id = f.customer_id
GROUP BY day, channel, campaign, tier
ORDER BY channel, campaign, day, tier
"""

_SEND_HOURS_SQL = """
SELECT toString({campaign}) AS campaign, customer_id, toStartOfFifteenMinutes(event_time) AS sent_at,
       toUInt64(count()) AS sends
FROM {events}
WHERE event_type = 'email_send' AND customer_id != 0
  AND event_time >= {{since_ts:DateTime64(3, 'UTC')}} AND event_time < {{run_ts:DateTime64(3, 'UTC')}}
GROUP BY campaign, customer_id, sent_at
"""


def campaign_daily_in_store(store, spend: pd.DataFrame, credits: pd.DataFrame, since: dt.date,
                            run_date: dt.date) -> pd.DataFrame:
    """One row per day in ``[since, run_date)`` and (channel, campaign) active in that window: columns
    :data:`DAILY_COLUMNS` (module docstring), sorted by channel, campaign, day. ``store`` is a
    :class:`revopt.platform.events.EventStore`; ``spend`` and ``credits`` are loaded into its
    ``campaign_spend`` / ``campaign_credits`` tables, replacing what an earlier build left there."""
    start = since - dt.timedelta(days=LONG_DAYS - 1)
    _load_inputs(store, spend, credits)
    sql = _DAILY_SQL.format(facts=_facts(store, with_spend=True))
    result = store.query_df(sql, {**_window_params(start, run_date), "since": since.isoformat(),
                                  "grid_days": (run_date - start).days})
    return _typed(result, DAILY_COLUMNS)


def campaign_segment_daily_in_store(store, spend: pd.DataFrame, credits_with_customer: pd.DataFrame,
                                    tiers: pd.DataFrame, since: dt.date, run_date: dt.date) -> pd.DataFrame:
    """One row per day in ``[since, run_date)``, (channel, campaign) and customer tier with activity:
    columns :data:`SEGMENT_COLUMNS` (module docstring: no cost, impressions or ad clicks). ``tiers`` has
    ``customer_id`` and a non-empty text ``tier`` (e.g. :func:`value_tiers`); credits without
    ``customer_id`` count as anonymous. ``spend`` is loaded like :func:`campaign_daily_in_store` does (so
    both tables come from one load) but not read."""
    if tiers["customer_id"].duplicated().any():
        raise ValueError("tiers must have one row per customer_id")
    names = tiers["tier"].astype(str)
    if tiers["tier"].isna().any() or (names == "").any():
        raise ValueError("every tier must be a non-empty text")
    _load_inputs(store, spend, credits_with_customer)
    _replace(store, TIERS_TABLE, pa.table({"customer_id": pa.array(tiers["customer_id"].to_numpy(dtype="uint64")),
                                           "tier": pa.array(names.to_numpy(dtype=object), pa.string())}))
    sql = _SEGMENT_SQL.format(facts=_facts(store, with_spend=False), database=store.database)
    result = store.query_df(sql, _window_params(since, run_date))  # no trailing windows: nothing before since
    return _typed(result, SEGMENT_COLUMNS)


def value_tiers(orders: pd.DataFrame, run_date: dt.date, customers=None) -> pd.DataFrame:
    """Each customer's value tier as of ``run_date`` (customer_id, tier) from the orders extract
    (customer_id, order_ts UTC, status, order_value), counting completed orders before ``run_date`` only:
    ``'new'`` without a completed order before the last 28 days (``run_date - 28``), else ``'high'`` /
    ``'mid'`` / ``'low'`` by terciles of the completed revenue of the 365 days before ``run_date`` among
    those customers (by percentile rank, ties sharing a tier: top third high, bottom third low).
    ``customers`` (ids) adds customers without orders, who are 'new'."""
    run_ts = pd.Timestamp(run_date, tz="UTC")
    done = orders[(orders["status"].astype(str) == "completed") & (orders["order_ts"] < run_ts)]
    ids = pd.Index(pd.unique(np.r_[orders["customer_id"].to_numpy(dtype="int64"),
                                   np.asarray([] if customers is None else customers, dtype="int64")]))
    established = done.loc[done["order_ts"] < run_ts - pd.Timedelta(days=LONG_DAYS), "customer_id"].unique()
    recent = done[done["order_ts"] >= run_ts - pd.Timedelta(days=365)]
    revenue = recent.groupby("customer_id")["order_value"].sum().reindex(established, fill_value=0.0)
    rank = revenue.rank(pct=True, method="average")
    tier = pd.Series(np.where(rank > 2 / 3, "high", np.where(rank > 1 / 3, "mid", "low")), index=revenue.index)
    out = pd.DataFrame({"customer_id": np.sort(ids.to_numpy())})
    out["tier"] = out["customer_id"].map(tier).fillna("new").astype(object)
    return out


def email_send_hours_in_store(store, timezones: pd.DataFrame, since: dt.date, run_date: dt.date) -> pd.DataFrame:
    """The email sends of ``[since, run_date)`` per campaign, customer and local send hour: columns
    campaign, customer_id, send_hour (0..23 in the customer's zone from ``timezones``: customer_id,
    timezone; unknown zones read as UTC), sends. Grouped in ClickHouse by quarter hour (every zone's UTC
    offset is a multiple of 15 minutes), so the local hour is exact, DST included."""
    sql = _SEND_HOURS_SQL.format(campaign=_campaign_column(store), events=events_source(store))
    sends = store.query_df(sql, {"since_ts": f"{since.isoformat()} 00:00:00", "run_ts": f"{run_date.isoformat()} 00:00:00"})
    if sends.empty:
        return pd.DataFrame({"campaign": pd.Series(dtype=object), "customer_id": pd.Series(dtype="int64"),
                             "send_hour": pd.Series(dtype="int64"), "sends": pd.Series(dtype="int64")})
    sends["customer_id"] = sends["customer_id"].astype("int64")
    zone = sends["customer_id"].map(timezones.drop_duplicates("customer_id").set_index("customer_id")["timezone"])
    sent_at = pd.to_datetime(sends["sent_at"], utc=True)
    sends["send_hour"] = local_time(sent_at, zone.to_numpy(dtype=object))["local_hour"].to_numpy()
    out = sends.groupby(["campaign", "customer_id", "send_hour"], as_index=False)["sends"].sum()
    return out.astype({"campaign": object, "send_hour": "int64", "sends": "int64"})


# --- loading and typing -----------------------------------------------------------------------------------


def has_campaign_column(store) -> bool:
    """Whether the store's ``events`` table has the ``campaign`` column (older tables lack it)."""
    found = store.query_df("SELECT count() AS n FROM system.columns WHERE database = {database:String} "
                           "AND table = 'events' AND name = 'campaign'", {"database": store.database})
    return int(found["n"].iloc[0]) > 0


def _campaign_column(store) -> str:
    return "campaign" if has_campaign_column(store) else "''"


def _facts(store, *, with_spend: bool) -> str:
    return _FACTS_SQL.format(campaign=_campaign_column(store), database=store.database, events=events_source(store),
                             with_spend="1" if with_spend else "0")


def _window_params(start: dt.date, run_date: dt.date) -> dict[str, str]:
    return {"start": start.isoformat(), "run_date": run_date.isoformat(),
            "start_ts": f"{start.isoformat()} 00:00:00", "run_ts": f"{run_date.isoformat()} 00:00:00"}


def _campaigns(frame: pd.DataFrame) -> np.ndarray:
    if "campaign" not in frame.columns:
        return np.full(len(frame), "", dtype=object)
    return frame["campaign"].where(frame["campaign"].notna(), "").astype(str).to_numpy(dtype=object)


def _days(frame: pd.DataFrame) -> pa.Array:
    return pa.array(pd.to_datetime(frame["day"]).dt.date.to_numpy(dtype=object), pa.date32())


def _load_inputs(store, spend: pd.DataFrame, credits: pd.DataFrame) -> None:
    for ddl in _DDL:
        store.command(ddl.format(database=store.database))
    _replace(store, SPEND_TABLE, pa.table({
        "day": _days(spend), "channel": pa.array(spend["channel"].astype(str).to_numpy(dtype=object), pa.string()),
        "campaign": pa.array(_campaigns(spend), pa.string()),
        "spend": pa.array(spend["spend"].to_numpy(dtype="float64")),
        "impressions": pa.array(spend["impressions"].to_numpy(dtype="int64")),
        "clicks": pa.array(spend["clicks"].to_numpy(dtype="int64"))}))
    customer = (credits["customer_id"].fillna(0).to_numpy(dtype="uint64") if "customer_id" in credits.columns
                else np.zeros(len(credits), dtype="uint64"))
    _replace(store, CREDITS_TABLE, pa.table({
        "day": _days(credits), "channel": pa.array(credits["channel"].astype(str).to_numpy(dtype=object), pa.string()),
        "campaign": pa.array(_campaigns(credits), pa.string()), "customer_id": pa.array(customer),
        "conversions": pa.array(credits["conversions"].to_numpy(dtype="float64")),
        "revenue": pa.array(credits["revenue"].to_numpy(dtype="float64"))}))


def _replace(store, table: str, data: pa.Table) -> None:
    store.command(f"TRUNCATE TABLE {store.database}.{table}")
    if data.num_rows:
        store.insert_arrow(table, data)


def _typed(result: pd.DataFrame, columns: tuple[str, ...]) -> pd.DataFrame:
    out = pd.DataFrame({c: result[c] for c in columns}) if len(result) else pd.DataFrame({c: [] for c in columns})
    out["day"] = pd.to_datetime(out["day"]).astype("datetime64[ns]")
    for c in columns:
        if c in ("channel", "campaign", "tier"):
            out[c] = out[c].astype(str).astype(object)
        elif c in COUNT_COLUMNS:
            out[c] = out[c].astype("int64")
        elif c != "day":
            out[c] = pd.to_numeric(out[c], errors="coerce").astype("float64")
    return out.reset_index(drop=True)
