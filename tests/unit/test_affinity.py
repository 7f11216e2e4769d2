"""Customer affinity: the decay, the score, incremental refresh equal to a full one, the late-data guard, the
read window, and the product-view SQL on chDB (features.affinity, ml.personalisation.affinity)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from features.affinity import (
    INTERACTION_COLUMNS,
    purchases_sql,
    typed_interactions,
    view_interactions,
    views_params,
    views_sql,
)
from ml.params import RunParams
from ml.personalisation.affinity import (
    AFFINITY_COLUMNS,
    EPSILON,
    PRIOR_INTEREST,
    SETTLE_HOURS,
    STATE_COLUMNS,
    empty_state,
    refresh,
    settled_cutoff,
    window,
)

PARAMS = RunParams()
T0 = pd.Timestamp("2025-03-01", tz="UTC")
DAY = pd.Timedelta(days=1)
HOUR = pd.Timedelta(hours=1)


def _changes(rows: list[tuple]) -> pd.DataFrame:
    """Interactions from (customer_id, dimension, value, ts, kind, count) tuples."""
    return typed_interactions(pd.DataFrame(rows, columns=list(INTERACTION_COLUMNS)))


def _log(seed: int, start: pd.Timestamp, end: pd.Timestamp, n: int = 3000) -> pd.DataFrame:
    """A random interaction log of 40 customers over categories and brands, timed to the hour."""
    rng = np.random.default_rng(seed)
    seconds = rng.uniform(0, (end - start).total_seconds(), n)
    dimension = rng.choice(["category", "brand"], n, p=[0.7, 0.3])
    value = np.where(dimension == "category", rng.choice(["shoes", "books", "toys"], n),
                     rng.choice(["acme", "zenith"], n))
    return _changes(list(zip(rng.integers(1, 41, n), dimension, value,
                             (start + pd.to_timedelta(seconds, unit="s")).floor("h"),
                             rng.choice(["purchase", "view"], n, p=[0.3, 0.7]), rng.integers(1, 4, n))))


def _between(log: pd.DataFrame, since: pd.Timestamp, until: pd.Timestamp) -> pd.DataFrame:
    return log[(log["ts"] >= since) & (log["ts"] < until)]


def _refresh_in_steps(log: pd.DataFrame, cutoffs, lookback_days: int = 365, params=PARAMS):
    """Refresh at each cutoff, reading what :func:`window` says from ``log`` (as the DAG does)."""
    state = empty_state()
    for as_of in cutoffs:
        previous = state["as_of"].iloc[0] if len(state) else None
        since, _ = window(previous, as_of, lookback_days)
        start = state if previous is not None and since == previous else empty_state()
        state, published = refresh(start, _between(log, since, as_of), as_of, params)
    return state, published


def _assert_same(left: pd.DataFrame, right: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(left, right, check_exact=False, rtol=1e-9, atol=1e-12)


# --- the decay and the score -------------------------------------------------------------------------------


def test_one_half_life_halves_the_weight_and_views_count_at_their_weight():
    as_of = T0 + 60 * DAY
    half = PARAMS.affinity_half_life_days
    changes = _changes([
        (1, "category", "shoes", as_of - half * DAY, "purchase", 2),
        (1, "category", "shoes", as_of - 2 * half * DAY, "view", 4),
        (1, "category", "books", as_of - HOUR, "view", 1),
    ])
    state, published = refresh(empty_state(), changes, as_of, PARAMS)
    shoes = published.set_index("value").loc["shoes"]
    assert shoes["purchases"] == pytest.approx(2 * 0.5, rel=1e-12)
    assert shoes["views"] == pytest.approx(4 * 0.25, rel=1e-12)
    assert shoes["interest"] == pytest.approx(1.0 + PARAMS.affinity_view_weight * 1.0, rel=1e-12)
    assert shoes["last_interaction"] == as_of - half * DAY
    books = published.set_index("value").loc["books"]
    assert books["views"] == pytest.approx(2 ** (-1 / 24 / half), rel=1e-12)
    total = shoes["interest"] + books["interest"]
    assert shoes["affinity"] == pytest.approx(shoes["interest"] / (total + PRIOR_INTEREST), rel=1e-12)
    assert list(published.columns) == list(AFFINITY_COLUMNS) and list(state.columns) == list(STATE_COLUMNS)
    assert (published["as_of"] == as_of).all() and (state["as_of"] == settled_cutoff(as_of)).all()
    # the state holds the interactions before the settled cutoff only (the book view is an hour old)
    assert set(state["value"]) == {"shoes"}


def test_scores_are_in_0_1_a_share_discounted_for_thin_evidence_and_per_dimension():
    as_of = T0 + 30 * DAY
    log = _log(1, T0, as_of)
    _, published = refresh(empty_state(), log, as_of, PARAMS)
    assert published["affinity"].between(0, 1).all() and published["affinity"].max() > 0.3
    shares = published.groupby(["customer_id", "dimension"])["affinity"].sum()
    assert (shares < 1).all()  # shares of one customer's interest in one dimension, minus the prior
    # 0.8 means: at least 80 % of the interest, backed by at least 4 fresh purchases' worth
    loyal = [(7, "category", "shoes", as_of - HOUR * (i + 1), "purchase", 1) for i in range(5)]
    _, one = refresh(empty_state(), _changes(loyal), as_of, PARAMS)
    assert one["affinity"].iloc[0] == pytest.approx(one["interest"].iloc[0] / (one["interest"].iloc[0] + 1))
    assert 0.8 < one["affinity"].iloc[0] < 5 / 6
    _, single = refresh(empty_state(), _changes(loyal[:1]), as_of, PARAMS)
    assert single["affinity"].iloc[0] < 0.5  # one purchase is no strong affinity, however exclusive
    # adding brands does not move the category scores
    categories = log[log["dimension"] == "category"]
    _, without_brands = refresh(empty_state(), categories, as_of, PARAMS)
    _assert_same(without_brands, published[published["dimension"] == "category"].reset_index(drop=True))


def test_view_weight_zero_ignores_views():
    as_of = T0 + 30 * DAY
    log = _log(2, T0, as_of)
    no_views = dataclasses.replace(PARAMS, affinity_view_weight=0.0)
    _, published = refresh(empty_state(), log, as_of, no_views)
    _, purchases_only = refresh(empty_state(), log[log["kind"] == "purchase"], as_of, no_views)
    ignored = ["views", "last_interaction"]  # the latest interaction may be a view: activity, not interest
    _assert_same(published.drop(columns=ignored), purchases_only.drop(columns=ignored))
    assert (published["interest"] == published["purchases"]).all()
    _, weighted = refresh(empty_state(), log, as_of, PARAMS)
    assert len(weighted) > len(published)  # with a weight, views-only values score


def test_empty_changes_keep_the_state_decayed():
    as_of = T0 + 10 * DAY
    state, _ = refresh(empty_state(), _log(3, T0, as_of), as_of, PARAMS)
    later = as_of + 7 * DAY
    # nothing happened between the settled cutoff and the later refresh
    new_state, published = refresh(state, _changes([]), later, PARAMS)
    factor = 2 ** (-(settled_cutoff(later) - settled_cutoff(as_of)) / DAY / PARAMS.affinity_half_life_days)
    np.testing.assert_allclose(new_state["purchases"], state["purchases"] * factor, rtol=1e-12)
    np.testing.assert_allclose(new_state["views"], state["views"] * factor, rtol=1e-12)
    pd.testing.assert_series_equal(new_state["last_interaction"], state["last_interaction"])
    # same shares, less evidence: every score fades
    before = refresh(state, _changes([]), settled_cutoff(as_of) + SETTLE_HOURS * HOUR, PARAMS)[1]
    assert (published.set_index(["customer_id", "dimension", "value"])["affinity"]
            < before.set_index(["customer_id", "dimension", "value"])["affinity"]).all()


def test_counts_that_decayed_below_epsilon_leave_the_state():
    as_of = T0 + 1000 * DAY
    changes = _changes([(1, "category", "old", T0, "purchase", 1), (1, "category", "new", as_of - 2 * DAY, "view", 1)])
    state, published = refresh(empty_state(), changes, as_of, PARAMS)
    assert set(state["value"]) == set(published["value"]) == {"new"}
    assert 2 ** (-1000 / PARAMS.affinity_half_life_days) < EPSILON


# --- incremental == full -----------------------------------------------------------------------------------


def test_refreshing_every_few_hours_equals_one_refresh_over_the_whole_period():
    end = T0 + 40 * DAY
    log = _log(4, T0, end, n=5000)
    # every 6 hours, then a gap of three days, then cutoffs off the hour
    cutoffs = [T0 + 5 * DAY + i * 6 * HOUR for i in range(60)]
    cutoffs += [cutoffs[-1] + 3 * DAY + pd.Timedelta(minutes=m) for m in (17, 400, 1300)] + [end]
    incremental_state, incremental = _refresh_in_steps(log, cutoffs)
    full_state, full = refresh(empty_state(), _between(log, T0, end), end, PARAMS)
    assert len(full) > 150
    _assert_same(incremental, full)
    _assert_same(incremental_state, full_state)


def test_a_refresh_repeated_at_the_same_cutoff_changes_nothing():
    as_of = T0 + 20 * DAY
    log = _log(5, T0, as_of + DAY)
    state, published = _refresh_in_steps(log, [as_of - DAY, as_of])
    since, reason = window(state["as_of"].iloc[0], as_of, 365)
    assert since == settled_cutoff(as_of) and reason.startswith("incremental")
    again_state, again = refresh(state, _between(log, since, as_of), as_of, PARAMS)
    _assert_same(again, published)
    _assert_same(again_state, state)


def test_data_arriving_late_is_counted_within_the_settle_hours_only():
    as_of = T0 + 20 * DAY
    log = _log(6, T0, as_of + 2 * DAY)
    late = _changes([(99, "category", "shoes", as_of - 20 * HOUR, "purchase", 1),
                     (98, "category", "shoes", as_of - 30 * HOUR, "purchase", 1)])
    # the refresh as of as_of ran before the two orders were stored; they are in the data for the next one
    state, _ = refresh(empty_state(), _between(log, as_of - 365 * DAY, as_of), as_of, PARAMS)
    later = as_of + 6 * HOUR
    since, _ = window(state["as_of"].iloc[0], later, 365)
    _, published = refresh(state, pd.concat([_between(log, since, later), _between(late, since, later)]), later, PARAMS)
    assert 99 in set(published["customer_id"])  # 20 hours late: counted
    assert 98 not in set(published["customer_id"])  # 30 hours late: missed until a full refresh
    _, full = refresh(empty_state(), pd.concat([_between(log, T0, later), late]), later, PARAMS)
    _assert_same(published, full[full["customer_id"] != 98].reset_index(drop=True))


def test_window_reads_on_from_the_state_or_the_full_lookback():
    as_of = T0 + 100 * DAY
    assert window(None, as_of, 365)[0] == as_of - 365 * DAY
    assert window(pd.NaT, as_of, 365)[0] == as_of - 365 * DAY
    since, reason = window(as_of - 10 * HOUR, as_of, 365)
    assert since == as_of - 10 * HOUR and reason.startswith("incremental")
    since, reason = window(as_of - 400 * DAY, as_of, 365)
    assert since == as_of - 365 * DAY and "older than the lookback" in reason
    since, reason = window(as_of + DAY, as_of, 365)
    assert since == as_of - 365 * DAY and "newer" in reason
    assert window(pd.Timestamp("2025-06-09 00:00"), pd.Timestamp("2025-06-09 06:00"), 30)[0] == pd.Timestamp(
        "2025-06-09", tz="UTC")  # naive timestamps read as UTC


def test_inconsistent_inputs_fail_naming_the_column_and_cutoff():
    as_of = T0 + 10 * DAY
    state, _ = refresh(empty_state(), _log(7, T0, as_of), as_of, PARAMS)
    with pytest.raises(ValueError, match=r"column ts reaches .* not before the cutoff"):
        refresh(empty_state(), _changes([(1, "category", "a", as_of, "view", 1)]), as_of, PARAMS)
    with pytest.raises(ValueError, match=r"before the previous state's cutoff .* counted twice"):
        refresh(state, _changes([(1, "category", "a", T0, "view", 1)]), as_of + DAY, PARAMS)
    with pytest.raises(ValueError, match=r"scores.affinity_state: column as_of is .* after this refresh"):
        refresh(state, _changes([]), T0, PARAMS)
    two = pd.concat([state, state.assign(as_of=state["as_of"] - HOUR)])
    with pytest.raises(ValueError, match="column as_of holds 2 cutoffs"):
        refresh(two, _changes([]), as_of + DAY, PARAMS)
    with pytest.raises(ValueError, match="column kind"):
        refresh(empty_state(), _changes([(1, "category", "a", T0, "click", 1)]), as_of, PARAMS)


def test_refresh_does_not_modify_its_inputs():
    as_of = T0 + 10 * DAY
    log = _log(8, T0, as_of + DAY)
    state, _ = refresh(empty_state(), _between(log, T0, as_of), as_of, PARAMS)
    changes = _between(log, state["as_of"].iloc[0], as_of + DAY)
    state_before, changes_before = state.copy(), changes.copy()
    refresh(state, changes, as_of + DAY, PARAMS)
    pd.testing.assert_frame_equal(state, state_before)
    pd.testing.assert_frame_equal(changes, changes_before)


# --- the readers' SQL ---------------------------------------------------------------------------------------


def test_purchases_read_brands_only_where_the_store_has_them():
    assert "product_groups" not in purchases_sql(False) and "'brand'" not in purchases_sql(False)
    assert "JOIN shop.product_groups" in purchases_sql(True) and "'brand'" in purchases_sql(True)
    for sql in (purchases_sql(False), purchases_sql(True)):
        assert "status = 'completed'" in sql and "order_ts < %(until)s" in sql and "now()" not in sql.lower()


@pytest.fixture(scope="module")
def chdb_store(tmp_path_factory):
    from revopt.platform.events import open_event_store
    from revopt.platform.stack import close_event_stores

    close_event_stores()  # chDB serves one data folder per process at a time
    store = open_event_store(url=None, chdb_path=Path(tmp_path_factory.mktemp("chdb")), database="revopt")
    at = pd.Timestamp("2025-03-01 10:00", tz="UTC")
    rows = [  # (minutes after `at`, customer, event type, product, is_machine)
        (5, 1, "product_view", 11, 0), (50, 1, "product_view", 11, 0), (65, 1, "product_view", 12, 0),
        (10, 1, "add_to_cart", 11, 0), (10, 0, "product_view", 11, 0), (10, 2, "product_view", 11, 1),
        (10, 2, "product_view", 99, 0), (-1, 2, "product_view", 11, 0), (120, 2, "product_view", 11, 0),
        (119, 3, "product_view", 12, 0),
    ]
    events = pd.DataFrame({
        "event_time": [at + pd.Timedelta(minutes=m) for m, *_ in rows],
        "session_id": np.arange(1, len(rows) + 1, dtype="uint64"),
        "customer_id": np.array([r[1] for r in rows], dtype="uint64"),
        "event_type": [r[2] for r in rows], "product_id": np.array([r[3] for r in rows], dtype="uint64"),
        "channel": "direct", "device": "desktop", "is_machine": np.array([r[4] for r in rows], dtype="uint8"),
        "campaign": "",
    })
    store.insert_arrow("events", pa.Table.from_pandas(events, preserve_index=False))
    yield store, at
    store.close()


def test_product_views_are_counted_per_customer_value_and_hour_in_clickhouse(chdb_store):
    store, at = chdb_store
    dimensions = pd.DataFrame({"product_id": [11, 12, 11], "dimension": ["category", "category", "brand"],
                               "value": ["shoes", "books", "acme"]})
    views = view_interactions(store, dimensions, at, at + 2 * HOUR)
    got = {(r.customer_id, r.dimension, r.value, r.ts, r.count) for r in views.itertuples()}
    assert got == {
        (1, "category", "shoes", at, 2), (1, "brand", "acme", at, 2), (1, "category", "books", at + HOUR, 1),
        (3, "category", "books", at + HOUR, 1),
    }  # not: anonymous, machine, unknown product, before `since`, at `until`, add_to_cart
    assert (views["kind"] == "view").all() and list(views.columns) == list(INTERACTION_COLUMNS)
    assert str(views["ts"].dtype) == "datetime64[ns, UTC]" and str(views["customer_id"].dtype) == "int64"
    # a store without brands: no brand rows; the table is refilled on every call
    no_brands = view_interactions(store, dimensions[dimensions["dimension"] == "category"], at, at + 2 * HOUR)
    assert set(no_brands["dimension"]) == {"category"} and len(no_brands) == 3
    # no clickstream: no views
    assert view_interactions(None, dimensions, at, at + 2 * HOUR).empty
    # the SQL binds its window as parameters (the same text goes to a server, tests/unit/test_event_store_sql.py)
    sql, params = views_sql("revopt"), views_params(at, at + 2 * HOUR)
    assert params == {"since": "2025-03-01 10:00:00.000", "until": "2025-03-01 12:00:00.000"}
    assert all(f"{{{name}:DateTime64(3, 'UTC')}}" in sql for name in params)
