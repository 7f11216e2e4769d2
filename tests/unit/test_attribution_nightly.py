"""Tonight's attribution (ml.attribution.nightly): the window's orders, every model conserving, spend and ROAS
per channel and campaign, the recorded channel, and the flat conversion_paths dataset round trip."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from features.attribution import paths_dataset, split_paths
from ml.attribution import nightly

RUN = dt.date(2024, 3, 1)
T = pd.Timestamp("2024-03-01", tz="UTC")


def _paths() -> pd.DataFrame:
    """Journey 1: display then direct, order 2 days before the run (100); journey 2: search, order 40 days before
    (outside a 28-day window, 50); journey 3: no touches, order 1 day before (30); journey 9: display, no order."""
    journeys = pd.DataFrame({
        "journey_id": [1, 1, 2, 9], "position": [0, 1, 0, 0],
        "channel": ["display", "direct", "paid_search", "display"],
        "campaign": ["display_awareness", None, "search_brand", "display_awareness"],
        "touch_ts": [T - pd.Timedelta(days=5), T - pd.Timedelta(days=2, hours=1), T - pd.Timedelta(days=41),
                     T - pd.Timedelta(days=3)],
    })
    outcomes = pd.DataFrame({
        "journey_id": [1, 2, 3, 9], "converted": [True, True, True, False], "revenue": [100.0, 50.0, 30.0, 0.0],
        "conversion_ts": [T - pd.Timedelta(days=2), T - pd.Timedelta(days=40), T - pd.Timedelta(days=1), pd.NaT],
    })
    return paths_dataset(journeys, outcomes, pd.Series({1: 11, 2: 12, 3: 13, 9: 19}))


def _orders() -> pd.DataFrame:
    """The orders of :func:`_paths`' journeys (1, 2, 3) and a cancelled one (7) the store recorded as display."""
    return pd.DataFrame({"order_id": [1, 2, 3, 7], "customer_id": [11, 12, 13, 17],
                         "channel": ["direct", "paid_search", "organic", "display"],
                         "status": ["completed", "completed", "completed", "cancelled"],
                         "order_value": [100.0, 50.0, 30.0, 80.0],
                         "order_ts": [T - pd.Timedelta(days=2), T - pd.Timedelta(days=40), T - pd.Timedelta(days=1),
                                      T - pd.Timedelta(days=1)]})


def test_the_flat_dataset_gives_the_model_frames_back():
    journeys, outcomes = split_paths(_paths())
    assert list(journeys["journey_id"]) == [1, 1, 2, 9]
    assert journeys["campaign"].tolist() == ["display_awareness", None, "search_brand", "display_awareness"]
    assert outcomes.set_index("journey_id")["revenue"].to_dict() == {1: 100.0, 2: 50.0, 3: 30.0, 9: 0.0}
    assert _paths().loc[lambda f: f["journey_id"] == 3, "position"].tolist() == [-1]


def test_every_model_credits_exactly_the_window_orders():
    credits = nightly.attribute(_paths(), RUN, nightly.AttributionSettings(window_days=28))
    assert set(credits["model"]) == set(nightly.MODEL_NAMES)
    for model, rows in credits.groupby("model"):
        assert set(rows["journey_id"]) == {1, 3}, model  # journey 2's order is 40 days old, 9 never converted
        assert rows["credit"].sum() == pytest.approx(2.0) and rows["revenue_credit"].sum() == pytest.approx(130.0)
    last = credits[credits["model"] == "last_non_direct_touch"].set_index("journey_id")
    assert last.loc[1, "channel"] == "display" and last.loc[3, "channel"] == "(none)"


def test_rows_carry_spend_roas_and_zero_conversion_spenders():
    credits = nightly.attribute(_paths(), RUN, nightly.AttributionSettings(window_days=28), names=("first_touch",))
    spend = pd.DataFrame({"day": pd.to_datetime(["2024-02-20", "2024-02-21", "2024-01-01", "2024-02-25"]),
                          "channel": ["display", "display", "display", "affiliate"],
                          "campaign": ["display_awareness", "display_awareness", "display_awareness", ""],
                          "spend": [40.0, 10.0, 999.0, 7.0]})
    rows = nightly.attribution_rows(credits, spend, RUN, 28).set_index(["channel", "campaign"])
    assert rows.loc[("display", "display_awareness"), "spend"] == 50.0  # the January day is outside the window
    assert rows.loc[("display", "display_awareness"), "roas"] == pytest.approx(100.0 / 50.0)
    assert rows.loc[("affiliate", ""), "conversions"] == 0.0 and rows.loc[("affiliate", ""), "spend"] == 7.0
    assert np.isnan(rows.loc[("(none)", ""), "roas"])  # credited without spend: no ROAS
    assert rows["conversions"].sum() == pytest.approx(2.0) and (rows["run_date"] == RUN).all()


def test_a_store_without_any_marketing_spend_gets_rows_without_roas():
    credits = nightly.attribute(_paths(), RUN, nightly.AttributionSettings(window_days=28), names=("first_touch",))
    # as the extract types an empty shop.marketing_spend (UCI has none)
    spend = pd.DataFrame({"day": pd.Series(dtype="datetime64[ns]"), "channel": pd.Series(dtype=object),
                          "campaign": pd.Series(dtype=object), "spend": pd.Series(dtype=object)})
    rows = nightly.attribution_rows(credits, spend, RUN, 28)
    assert len(rows) and (rows["spend"] == 0.0).all() and rows["roas"].isna().all()
    assert rows["conversions"].sum() == pytest.approx(2.0)


def test_order_rows_and_the_recorded_channel():
    orders = pd.DataFrame({"order_id": [1, 3, 4, 5], "channel": ["direct", "organic", "email", "direct"],
                           "status": ["completed", "completed", "cancelled", "completed"],
                           "order_value": [100.0, 30.0, 20.0, 10.0],
                           "order_ts": [T - pd.Timedelta(days=2), T - pd.Timedelta(days=1), T - pd.Timedelta(days=1),
                                        T + pd.Timedelta(hours=1)]})
    recorded = nightly.recorded_credits(orders, RUN, 28)
    assert recorded.set_index("journey_id")["channel"].to_dict() == {1: "direct", 3: "organic"}  # not cancelled / future
    rows = nightly.order_rows(recorded, RUN)
    assert list(rows.columns) == ["run_date", "order_id", "model", "channel", "campaign", "credit", "revenue_credit"]
    assert rows["campaign"].tolist() == ["", ""]
    with pytest.raises(ValueError, match="'shapley' was not run"):
        nightly.credits_by_order(recorded, "shapley")


def test_a_model_that_loses_credit_stops_the_night(monkeypatch):
    real = nightly.models.linear
    monkeypatch.setattr(nightly.models, "linear", lambda j, o: real(j, o).assign(credit=lambda f: f["credit"] * 0.9))
    with pytest.raises(ValueError, match="'linear'"):
        nightly.attribute(_paths(), RUN, nightly.AttributionSettings(window_days=28))


def test_orders_split_by_a_model_feed_the_media_history_by_their_shares():
    from features.media import media_history

    orders = _orders()
    settings = nightly.AttributionSettings()
    split = nightly.attributed_orders(orders, nightly.history_credits(_paths(), orders, RUN, "linear", settings))
    by_order = split.groupby("order_id")["credit"].sum()
    assert by_order.to_dict() == pytest.approx({1: 1.0, 2: 1.0, 3: 1.0, 7: 1.0})  # the 40-day-old order too
    assert split[split["order_id"] == 1].set_index("channel")["credit"].to_dict() == {"direct": 0.5, "display": 0.5}
    assert split.set_index("order_id").loc[7, "channel"] == "display"  # cancelled: as recorded
    recorded = nightly.history_credits(_paths(), orders, RUN, nightly.RECORDED, settings)
    assert nightly.attributed_orders(orders, recorded)["channel"].tolist() == ["direct", "paid_search", "organic",
                                                                               "display"]

    spend = pd.DataFrame({"day": pd.date_range("2024-01-01", "2024-02-29"), "channel": "display", "spend": 10.0})
    history = media_history(spend, split, RUN, 60, min_days=7).set_index("day")
    day = pd.Timestamp("2024-02-28")  # order 1 (2 days before the run), split half display, half direct
    assert history.loc[day, "orders_display"] == 0.5 and history.loc[day, "revenue_display"] == 50.0
    assert history.loc[day, "orders_direct"] == 0.5 and history.loc[day, "orders"] == 1
    assert history["orders"].sum() == 3 and history["revenue"].sum() == pytest.approx(180.0)


def test_journey_windows_put_every_touch_of_a_customer_in_exactly_one_journey():
    from features.attribution import journey_windows

    since = T - pd.Timedelta(days=120)
    orders = pd.DataFrame({"order_id": [1, 2, 3, 4], "customer_id": [5, 5, 5, 6],
                           "order_ts": [T - pd.Timedelta(days=100), T - pd.Timedelta(days=90), T - pd.Timedelta(days=20),
                                        T - pd.Timedelta(days=3)],
                           "status": ["completed", "completed", "completed", "cancelled"], "order_value": 10.0})
    windows, outcomes = journey_windows(orders, T, 30, since, customers=[5, 6, 7])
    mine = windows[windows["customer_id"] == 5].sort_values("window_start")
    bounds = list(zip(mine["window_start"], mine["window_end"]))
    day = pd.Timedelta(days=1)
    assert bounds[0] == (since, T - 100 * day)  # order 1: the lookback reaches past the extract's start
    assert bounds[1] == (T - 100 * day, T - 90 * day)  # order 2: after order 1, 10 days later
    assert bounds[2] == (T - 90 * day, T - 50 * day)  # the 40-day gap: no order within 30 days of these touches
    assert bounds[3] == (T - 50 * day, T - 20 * day)  # order 3
    assert bounds[4][0] == T - 20 * day and bounds[4][1] == T - pd.Timedelta(milliseconds=1)  # since the last order
    for (_, end), (start, _) in zip(bounds, bounds[1:]):
        assert end == start  # (start, end] windows that tile the customer's time
    converted = outcomes.set_index("journey_id")["converted"]
    assert converted.loc[[1, 2, 3]].all() and not converted.drop([1, 2, 3]).any()
    # the cancelled order's customer and a customer without orders: one window each, over all their time
    for customer in (6, 7):
        only = windows[windows["customer_id"] == customer]
        assert len(only) == 1 and only["window_start"].iloc[0] == since


def test_touches_get_their_positions_in_journey_time_and_channel_order_however_they_arrive():
    from features.attribution import _typed_journeys

    touches = pd.DataFrame({
        "journey_id": [7, 7, 7, 3, 3, 9],
        "channel": ["email", "direct", "display", "paid_search", "email", "direct"],
        "campaign": ["", "", "d1", "s1", "", ""],
        "touch_ts": [T - pd.Timedelta(days=1), T - pd.Timedelta(days=1), T - pd.Timedelta(days=3),
                     T - pd.Timedelta(days=2), T - pd.Timedelta(days=5), T],
    })
    shuffled = _typed_journeys(touches)
    ordered = _typed_journeys(touches.sort_values(["journey_id", "touch_ts", "channel"]))
    pd.testing.assert_frame_equal(shuffled, ordered)
    assert shuffled[["journey_id", "position", "channel"]].values.tolist() == [
        [3, 0, "email"], [3, 1, "paid_search"], [7, 0, "display"], [7, 1, "direct"], [7, 2, "email"], [9, 0, "direct"]]
    assert shuffled["campaign"].tolist() == [None, "s1", "d1", None, None, None]


def test_a_touch_of_a_journey_without_an_outcome_is_refused():
    journeys = pd.DataFrame({"journey_id": [1, 4], "position": [0, 0], "channel": ["direct", "email"],
                             "campaign": [None, None], "touch_ts": [T, T]})
    outcomes = pd.DataFrame({"journey_id": [1], "converted": [True], "revenue": [5.0], "conversion_ts": [T]})
    with pytest.raises(ValueError, match=r"without an outcome: \[4\]"):
        paths_dataset(journeys, outcomes, pd.Series({1: 11, 4: 14}))


@pytest.mark.parametrize("model", [*nightly.MODEL_NAMES, nightly.RECORDED])
def test_the_attribute_steps_order_credits_are_the_budget_targets_credits(model):
    """The attribute step's ``order_credits`` (the run's model on every order, fitted beside the other models) are
    the credits the budget model's attributed target computes on its own, and split the orders as it does."""
    from ml.attribution.steps import night_credits
    from ml.families import budget
    from ml.params import RunParams

    orders = _orders()
    params = RunParams(attribution_model=model)
    _, credits = night_credits(_paths(), orders, RUN, params)
    settings = nightly.settings_of(params)
    pd.testing.assert_frame_equal(credits, nightly.history_credits(_paths(), orders, RUN, model, settings))
    from_paths = budget.target_orders({"orders": orders, "conversion_paths": _paths()}, RUN, params)
    pd.testing.assert_frame_equal(nightly.attributed_orders(orders, credits), from_paths)
