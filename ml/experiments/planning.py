"""``revopt experiment plan``: how many customers and days an experiment needs, from the store's own
baseline (:func:`ml.experiments.stats.plan_sample_size` does the arithmetic).

The baseline is measured the way the nightly analysis will measure the metric
(:mod:`ml.experiments.metrics`): over the ``window_days`` before the plan date, per customer who had
signed up before the window began (conversion: the share with a non-cancelled order; revenue per unit:
mean and sd of their order value, zeros included; order value: mean and sd per ordering customer).
Units enter an experiment when it starts (every customer then) and as they sign up; the
outcome window needs ``window_days`` of run after that, so the duration is the longer of the two.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

import numpy as np
import psycopg

from ml.experiments.stats import SamplePlan, plan_sample_size
from revopt.platform.postgres import read_frame

_BASELINE_SQL = """
WITH window_orders AS (
    SELECT o.customer_id, count(*) AS orders, coalesce(sum(l.value), 0) AS value
    FROM shop.orders AS o
    LEFT JOIN (SELECT order_id, sum(quantity * unit_price) AS value FROM shop.order_lines GROUP BY order_id) AS l
      ON l.order_id = o.order_id
    WHERE o.order_ts >= %(since)s AND o.order_ts < %(until)s AND o.status <> 'cancelled'
    GROUP BY o.customer_id
)
SELECT c.customer_id, coalesce(w.orders, 0)::float8 AS orders, coalesce(w.value, 0)::float8 AS value
FROM shop.customers AS c LEFT JOIN window_orders AS w ON w.customer_id = c.customer_id
WHERE c.signup_date < %(since)s
"""


@dataclass(frozen=True)
class StorePlan:
    """A sample plan with the store's numbers it came from."""

    metric: str
    baseline: float
    sd: float | None
    customers_at_start: int
    new_per_day: float
    window_days: int
    traffic: float
    plan: SamplePlan
    days_fixed: int
    days_sequential: int
    measured_before: dt.date

    def lines(self) -> list[str]:
        p = self.plan
        base = (f"{self.baseline:.2%} of customers order in {self.window_days} days" if self.sd is None
                else f"mean {self.baseline:,.2f} per unit, sd {self.sd:,.2f}")
        return [
            f"baseline ({self.metric}, the {self.window_days} days before {self.measured_before}): {base}",
            f"customers entering: {self.customers_at_start:,} at the start x traffic {self.traffic:.0%}, then "
            f"{self.new_per_day:,.1f} new per day",
            f"fixed horizon (one look at the end): {p.n_per_variant} units per variant, {p.total:,} in all "
            f"(alpha {p.alpha_per_comparison:.4g} per comparison, power {p.power:.0%}) -> {self.days_fixed} days",
            f"always-valid (mSPRT, read every night for as long as you like): {p.sequential_n_per_variant} per "
            f"variant, {p.sequential_total:,} in all -> {self.days_sequential} days",
            f"`revopt experiment create` stores the fixed-horizon size ({p.total:,} units) as the plan: the nightly "
            "analysis then decides with a group-sequential test (O'Brien-Fleming spending over the plan's "
            f"unit-days, {self.window_days} per unit), which reads every night at about the fixed test's power, "
            "and reports the always-valid mSPRT beside it",
            f"durations include the {self.window_days}-day outcome window after the last unit needed enters",
        ]


def plan_from_store(conn: psycopg.Connection, *, metric: str, mde: float, n_variants: int = 2, alpha: float = 0.05,
                    power: float = 0.8, window_days: int = 28, traffic: float = 1.0,
                    before: dt.date | None = None) -> StorePlan:
    """The plan for an experiment on customers starting at ``before`` (default: the day after the latest order)."""
    if n_variants < 2:
        raise ValueError(f"an experiment needs at least 2 variants, got {n_variants}")
    if not 0 < traffic <= 1:
        raise ValueError(f"traffic must be in (0, 1], got {traffic}")
    if before is None:
        latest = conn.execute("SELECT max(order_ts) FROM shop.orders").fetchone()[0]
        if latest is None:
            raise ValueError("shop.orders has no rows: the plan needs the store's order history (or --date)")
        before = latest.date() + dt.timedelta(days=1)
    since = before - dt.timedelta(days=window_days)
    rows = read_frame(conn, _BASELINE_SQL, {"since": since, "until": before})
    if rows.empty:
        raise ValueError(f"no customer signed up before {since}: no baseline for a {window_days}-day window before {before}")
    baseline, sd = _baseline(rows, metric)
    signups = conn.execute("SELECT count(*) FROM shop.customers WHERE signup_date >= %s AND signup_date < %s",
                           (before - dt.timedelta(days=90), before)).fetchone()[0]
    new_per_day = traffic * signups / 90.0
    at_start = int(conn.execute("SELECT count(*) FROM shop.customers WHERE signup_date < %s", (before,)).fetchone()[0])
    weights = {f"variant_{i}": 1.0 for i in range(n_variants)}
    plan = plan_sample_size(baseline=baseline, mde=mde, weights=weights, control="variant_0",
                            units_per_day=max(new_per_day, 1e-9), sd=sd, alpha=alpha, power=power)
    return StorePlan(metric, baseline, sd, at_start, new_per_day, window_days, traffic, plan,
                     _days(plan.total, traffic * at_start, new_per_day, window_days),
                     _days(plan.sequential_total, traffic * at_start, new_per_day, window_days), before)


def _baseline(rows, metric: str) -> tuple[float, float | None]:
    if metric == "conversion":
        return float((rows["orders"] > 0).mean()), None
    if metric == "revenue_per_unit":
        values = rows["value"].to_numpy(dtype=float)
    elif metric == "order_value":
        ordering = rows[rows["orders"] > 0]
        values = (ordering["value"] / ordering["orders"]).to_numpy(dtype=float)
    else:
        raise ValueError(f"plan supports conversion, revenue_per_unit and order_value, not {metric!r}")
    if len(values) < 2 or not np.std(values) > 0:
        raise ValueError(f"too few customers with orders to measure the {metric} baseline")
    return float(np.mean(values)), float(np.std(values, ddof=1))


def _days(total: int, at_start: float, new_per_day: float, window_days: int) -> int:
    """Days until ``total`` units have entered, plus the outcome window of the last one."""
    if total <= at_start:
        return window_days
    if new_per_day <= 0:
        return -1  # never: reported as such
    return int(math.ceil((total - at_start) / new_per_day)) + window_days
