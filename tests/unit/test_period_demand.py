"""The demand panel of aggregated sales (features.demand.period_history): periods not recorded are left
out, listed periods without a row sold nothing, recorded promotions set the price in force."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.demand import PROMOTION_COLUMNS, period_history, promotion_cover

RUN = pd.Timestamp("2024-04-01")
WEEKS = pd.date_range("2024-01-01", periods=13, freq="7D")  # Mondays; the 13th week ends on the run date


def _products() -> pd.DataFrame:
    return pd.DataFrame({"product_id": np.array([1, 2, 3], dtype="int64"), "category": ["a", "a", "a"],
                         "cost": [1.0, 1.0, 1.0], "current_price": [2.0, 3.0, 4.0]})


def _sales(skip: dict[int, list[int]] | None = None) -> pd.DataFrame:
    rows = []
    for product, price in ((1, 2.0), (2, 3.0), (3, 4.0)):
        for week, start in enumerate(WEEKS):
            if week in (skip or {}).get(product, []):
                continue
            units = float(10 + product + (week % 3))
            rows.append((product, start, 7, units, units * price, price))
    return pd.DataFrame(rows, columns=["product_id", "period_start", "period_days", "units", "revenue", "list_price"])


def test_one_row_per_recorded_period_at_the_weekly_grain():
    panel = period_history(_sales(), _products(), RUN, 91)
    assert len(panel) == 3 * 13 and set(panel["period_days"]) == {7}
    assert panel["day"].min() == WEEKS[0] and panel["day"].max() == WEEKS[-1]
    assert not panel[["log_price_in_force", "log_lines", *PROMOTION_COLUMNS]].isna().any().any()
    # the offset is a week of demand: log(7 x index), the index averaging 1
    assert np.exp(panel.groupby("day")["log_lines"].first()).mean() == pytest.approx(7.0, rel=0.05)


def test_a_period_not_recorded_is_left_out_not_zero():
    panel = period_history(_sales(skip={2: [4, 5, 6]}), _products(), RUN, 91)
    weeks = set(panel.loc[panel["product_id"] == 2, "day"])
    assert len(weeks) == 10 and not weeks & set(WEEKS[4:7])
    assert (panel["units"] > 0).all()


def test_a_listed_period_without_a_row_sold_nothing():
    listings = pd.DataFrame({"product_id": np.array([2, 2], dtype="int64"),
                             "start_date": pd.to_datetime(["2023-06-01", WEEKS[6]]),
                             "end_date": pd.to_datetime([WEEKS[4], None])})
    panel = period_history(_sales(skip={2: [4, 5, 6]}), _products(), RUN, 91, listings=listings)
    mine = panel[panel["product_id"] == 2].set_index("day")
    # listed in weeks 4 and 6 (no row: zero sales), not in week 5 (between the two listings: not recorded)
    assert mine.loc[WEEKS[4], "units"] == 0 and mine.loc[WEEKS[6], "units"] == 0
    assert WEEKS[5] not in mine.index
    assert mine.loc[WEEKS[4], "list_price"] == 3.0


def test_recorded_price_reductions_set_the_price_in_force():
    sales = _sales()
    cut = (sales["product_id"] == 1) & (sales["period_start"] == WEEKS[3])
    sales.loc[cut, "revenue"] = sales.loc[cut, "units"] * 2.0 * 0.7
    zero = (sales["product_id"] == 3) & (sales["period_start"] == WEEKS[8])
    sales.loc[zero, ["units", "revenue"]] = 0.0
    promotions = pd.DataFrame({
        "product_id": np.array([1, 3, 3], dtype="int64"),
        "start_date": pd.to_datetime([WEEKS[3], WEEKS[8], WEEKS[8] + pd.Timedelta(days=2)]),
        "end_date": pd.to_datetime([WEEKS[3] + pd.Timedelta(days=6), WEEKS[8] + pd.Timedelta(days=6),
                                    WEEKS[8] + pd.Timedelta(days=3)]),
        "promo_type": ["price_reduction", "price_reduction", "display"],
        "depth": [0.3, 0.2, np.nan],
    })
    panel = period_history(sales, _products(), RUN, 91, promotions=promotions).set_index(["product_id", "day"])
    assert panel.loc[(1, WEEKS[3]), "price"] == pytest.approx(1.4)
    assert panel.loc[(1, WEEKS[3]), "promo_depth"] == pytest.approx(0.3)
    # a reduction nobody bought at is still the price in force: 4.0 x (1 - 0.2), not the list price
    assert np.exp(panel.loc[(3, WEEKS[8]), "log_price_in_force"]) == pytest.approx(3.2)
    assert panel.loc[(3, WEEKS[8]), "promo_display"] == pytest.approx(2 / 7)
    assert panel.loc[(2, WEEKS[8]), list(PROMOTION_COLUMNS)].tolist() == [0.0, 0.0, 0.0]


def test_promotion_cover_counts_the_share_of_the_period():
    promotions = pd.DataFrame({"product_id": np.array([7, 7], dtype="int64"),
                               "start_date": pd.to_datetime(["2024-01-06", "2024-01-01"]),
                               "end_date": pd.to_datetime(["2024-01-09", "2024-01-01"]),
                               "promo_type": ["price_reduction", "feature"], "depth": [0.25, np.nan]})
    cover = promotion_cover(promotions, np.array([7, 7, 8]), pd.to_datetime(["2024-01-01", "2024-01-08", "2024-01-01"]).to_numpy(),
                            np.array([7, 7, 7]))
    # 6-7 Jan in the first week, 8-9 Jan in the second; the feature ran on 1 Jan only; product 8 had none
    assert cover["promo_depth"].tolist() == pytest.approx([0.25 * 2 / 7, 0.25 * 2 / 7, 0.0])
    assert cover["promo_feature"].tolist() == pytest.approx([1 / 7, 0.0, 0.0])


def test_no_sales_at_all_is_a_clear_error():
    sales = _sales().assign(units=0.0, revenue=0.0)
    with pytest.raises(ValueError, match="no product sold in the 91 days before 2024-04-01"):
        period_history(sales, _products(), RUN, 91)


def test_the_daily_panel_leaves_out_days_a_product_was_not_listed():
    from features.demand import demand_history

    days = pd.date_range("2024-01-01", "2024-03-31", freq="D")
    sales = pd.DataFrame({"product_id": np.int64(1), "day": days[::3], "units": np.int64(2), "revenue": 4.0,
                          "list_price": 2.0, "avg_discount": 0.0})
    totals = pd.DataFrame({"day": days, "lines": np.int64(50)})
    listings = pd.DataFrame({"product_id": np.array([1, 1], dtype="int64"),
                             "start_date": pd.to_datetime(["2023-12-01", "2024-02-15"]),
                             "end_date": pd.to_datetime(["2024-01-31", None])})
    panel = demand_history(sales, _products(), totals, RUN, 91, listings=listings)
    listed_days = set(panel["day"])
    assert not listed_days & set(pd.date_range("2024-02-01", "2024-02-14", freq="D"))
    assert set(pd.date_range("2024-01-01", "2024-01-31", freq="D")) <= listed_days
    assert set(pd.date_range("2024-02-15", "2024-03-31", freq="D")) <= listed_days
    assert len(panel) == 31 + 46
