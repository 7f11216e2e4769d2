"""Budget allocation: media history, media model (recovery, intervals, backtest, tuning), optimiser, the
registered model and the family (its test window, naive baseline and champion re-scoring)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import json

import cloudpickle
import numpy as np
import pandas as pd
import pytest
from scipy.signal import lfilter

from features.media import current_spend, daily_spend, media_history, paid_channels, spend_history
from ml.evaluation import compare
from ml.families.budget import (
    ALLOCATION_COLUMNS,
    BINDING,
    FAMILY,
    MAPE,
    BudgetConstraints,
    BudgetModel,
    MediaConfig,
    MediaData,
    allocate_budget,
    allocate_spend,
    allocation_rows,
    constraint_params,
    fit_from_curves,
    fit_media_model,
    held_out_weeks,
    media_backtest,
    media_crossval,
    no_response_baseline,
    response_curves,
    training_data_shortfall,
    tune_media_model,
)
from ml.families.budget import BACKTEST_METRICS, backtest, least_squares, optimiser
from ml.families.rolling_origin import earlier_origin_params
from ml.family import config_from_spec, config_spec
from ml.gate import decide
from ml.params import RunParams
from ml.plots import close
from revopt.sample_data.synth import generate_store

START = dt.date(2023, 1, 2)
AOV = 40.0

#: the curves the exact simulation draws from; half saturation in steady-state daily spend
TRUTH = pd.DataFrame({
    "channel": ["display", "search", "social"],
    "decay": [0.15, 0.3, 0.6],
    "half_saturation_spend": [300.0, 800.0, 500.0],
    "slope": [1.4, 1.0, 2.0],
    "max_lift": [0.10, 0.30, 0.20],
    "base_spend": [250.0, 900.0, 500.0],
})


def _simulate(days: int = 365, seed: int = 0, level: float = 2000.0) -> tuple[pd.DataFrame, np.ndarray]:
    """A media history drawn exactly from the model: geometric adstock (from zero), Hill curves, store-wide
    multiplicative lift on Poisson orders at a weekday x yearly baseline, orders attributed to a channel with
    probability ``beta_c h_c / lift`` (incremental attribution), every order worth ``AOV``. Returns the history
    and the baseline revenue per day."""
    rng = np.random.default_rng(seed)
    dates = pd.date_range(START, periods=days, freq="D")
    blocks = np.arange(days) // 14
    history = pd.DataFrame({"day": dates})
    lift, contribution = np.ones(days), {}
    for row in TRUTH.itertuples():
        x = row.base_spend * rng.lognormal(0.0, 0.5, blocks.max() + 1)[blocks] * rng.lognormal(0.0, 0.1, days)
        if row.channel == "social":
            x = x * ((np.arange(days) // 21) % 3 != 2)  # flights: one week off in three
        x = np.round(x, 2)
        adstock = lfilter([1.0], [1.0, -row.decay], x)
        half = row.half_saturation_spend / (1.0 - row.decay)
        contribution[row.channel] = row.max_lift * adstock**row.slope / (adstock**row.slope + half**row.slope)
        lift += contribution[row.channel]
        history["spend_" + row.channel] = x
    dow = np.array([0.97, 0.95, 0.96, 0.98, 1.03, 1.08, 1.03])[dates.dayofweek]
    base = level * dow * (1.0 + 0.1 * np.sin(2.0 * np.pi * np.arange(days) / 365.25))
    orders = rng.poisson(base * lift)
    shares = np.column_stack([contribution[c] / lift for c in TRUTH["channel"]] + [1.0 / lift])
    split = np.array([rng.multinomial(n, p / p.sum()) for n, p in zip(orders, shares)])
    history["revenue"] = orders * AOV
    history["orders"] = orders.astype("int64")
    for j, c in enumerate([*TRUTH["channel"], "organic"]):
        history["revenue_" + c] = split[:, j] * AOV
    for j, c in enumerate([*TRUTH["channel"], "organic"]):
        history["orders_" + c] = split[:, j].astype("int64")
    return history, base * AOV


def _true_response(spend: np.ndarray, channel: str, baseline: float) -> tuple[np.ndarray, np.ndarray]:
    row = TRUTH.set_index("channel").loc[channel]
    return optimiser._response(spend, baseline * row["max_lift"], row["half_saturation_spend"], row["slope"])


def _curves(**columns: list[float]) -> pd.DataFrame:
    return pd.DataFrame(columns)


@pytest.fixture(scope="module")
def simulated() -> tuple[pd.DataFrame, np.ndarray]:
    return _simulate()


@pytest.fixture(scope="module")
def fits(simulated):
    history, _ = simulated
    return {target: fit_media_model(history, MediaConfig(target=target, n_bootstrap=20)) for target in ("total", "attributed")}


# --- history ------------------------------------------------------------------------------------


def _extract_frames(days: int = 70) -> tuple[pd.DataFrame, pd.DataFrame, pd.Timestamp]:
    dates = pd.date_range(START, periods=days, freq="D")
    spend = pd.DataFrame({
        "day": np.repeat(dates, 3),
        "channel": np.tile(["search", "social", "tv"], days),
        "spend": np.tile([100.0, 50.0, 0.0], days),
        "impressions": np.int64(1000),
        "clicks": np.int64(10),
    })
    spend = spend[~((spend["channel"] == "social") & (spend["day"].dt.dayofweek == 6))]  # no row on Sundays
    ts = pd.to_datetime(["2023-01-02 10:00", "2023-01-02 23:59", "2023-01-03 00:01", "2023-01-03 12:00",
                         "2023-01-04 08:00", "2023-03-20 09:00"], utc=True)
    orders = pd.DataFrame({
        "order_id": np.arange(1, 7, dtype="int64"), "customer_id": np.arange(1, 7, dtype="int64"), "order_ts": ts,
        "channel": ["search", "organic", "search", "email", "social", "search"],
        "status": ["completed", "completed", "cancelled", "completed", "completed", "completed"],
        "n_lines": np.ones(6, dtype="int64"), "order_value": [10.0, 20.0, 30.0, 40.0, 50.0, 60.0],
    })
    return spend, orders, pd.Timestamp(START) + pd.Timedelta(days=days)


def test_media_history_is_dense_wide_and_leaves_inputs_alone():
    spend, orders, run = _extract_frames()
    spend_before, orders_before = spend.copy(), orders.copy()
    history = media_history(spend, orders, run, 365)
    pd.testing.assert_frame_equal(spend, spend_before)
    pd.testing.assert_frame_equal(orders, orders_before)

    assert len(history) == 70 and history["day"].is_monotonic_increasing
    assert history["day"].iloc[0] == pd.Timestamp(START) and history["day"].iloc[-1] == run - pd.Timedelta(days=1)
    assert list(history.columns[:4]) == ["day", "spend_search", "spend_social", "spend_tv"]
    assert paid_channels(history) == ["search", "social", "tv"]
    sundays = history["day"].dt.dayofweek == 6
    assert (history.loc[sundays, "spend_social"] == 0).all() and (history.loc[~sundays, "spend_social"] == 50).all()
    assert (history["spend_tv"] == 0).all()  # kept: the fit excludes it with a reason
    # completed orders only, on their UTC day; the order after the run date is out of the window
    first = history.iloc[0]
    assert first["revenue"] == 30.0 and first["orders"] == 2
    assert first["revenue_search"] == 10.0 and first["revenue_organic"] == 20.0 and first["orders_search"] == 1
    assert history.iloc[1]["revenue"] == 40.0 and history.iloc[1]["revenue_email"] == 40.0
    assert history["revenue"].sum() == 10.0 + 20.0 + 40.0 + 50.0
    for c in ("search", "social", "tv", "email", "organic"):
        assert f"revenue_{c}" in history.columns and f"orders_{c}" in history.columns
    assert history["orders"].dtype == np.int64 and history["orders_search"].dtype == np.int64


def test_media_history_window_starts_at_the_first_spend_day_and_respects_lookback():
    spend, orders, run = _extract_frames(days=120)
    assert len(media_history(spend, orders, run, 90)) == 90
    assert len(media_history(spend, orders, run, 400)) == 120


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda s, o: (s.drop(columns="spend"), o), "spend is missing columns"),
        (lambda s, o: (s, o.drop(columns="order_value")), "orders is missing columns"),
        (lambda s, o: (s[s["day"] >= s["day"].max() - pd.Timedelta(days=20)], o), "only 21 days of marketing_spend"),
        (lambda s, o: (s.assign(spend=-1.0), o), "non-negative"),
        (lambda s, o: (s.assign(spend=0.0), o), "every channel has zero spend"),
        (lambda s, o: (s, o.assign(status="cancelled")), "orders: no completed orders"),
    ],
)
def test_media_history_rejects_inputs_that_cannot_support_a_fit(mutate, message):
    spend, orders, run = _extract_frames()
    spend, orders = mutate(spend, orders)
    with pytest.raises(ValueError, match=message):
        media_history(spend, orders, run, 365)


def test_media_history_from_a_synthetic_store_matches_its_orders():
    store = generate_store(2000, 120, START, seed=3)
    orders, run = _store_orders(store), pd.Timestamp(START) + pd.Timedelta(days=120)
    history = media_history(store.shop["marketing_spend"], orders, run, 120)
    done = orders[orders["status"] == "completed"]
    assert history["revenue"].sum() == pytest.approx(done["order_value"].sum())
    assert history["orders"].sum() == len(done)
    paid = paid_channels(history)
    assert sorted(paid) == sorted(store.truth["channels"]["channel"])
    spend = store.shop["marketing_spend"].pivot_table(index="day", columns="channel", values="spend", aggfunc="sum")
    np.testing.assert_allclose(history[[f"spend_{c}" for c in paid]].to_numpy(), spend[paid].to_numpy())


def _store_orders(store) -> pd.DataFrame:
    lines = store.shop["order_lines"]
    value = (lines["quantity"] * lines["unit_price"]).groupby(lines["order_id"]).agg(["sum", "size"])
    orders = store.shop["orders"]
    return orders.assign(order_value=orders["order_id"].map(value["sum"]).fillna(0.0),
                         n_lines=orders["order_id"].map(value["size"]).fillna(0).astype("int64"))


# --- model internals ----------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["total", "attributed"])
def test_analytic_jacobians_match_finite_differences(simulated, target):
    history, _ = simulated
    history = history.iloc[:120].reset_index(drop=True)
    config = MediaConfig(target=target, n_bootstrap=0, fixed_parameters={"search": {"slope": 1.0}})
    channels = paid_channels(history)
    problem = least_squares._problem(history, config, channels, least_squares._baseline_for(pd.DatetimeIndex(history["day"]), config))
    problem = dataclasses.replace(problem, rows=np.arange(len(history)) % 5 != 0)
    if target == "total":
        model = least_squares._TotalModel(problem, config, np.log(problem.y), 0.05)
    else:
        model = least_squares._ChannelModel(problem, config, 2, problem.y[:, 2], 1.0)
    lo, hi = model.bounds()
    rng = np.random.default_rng(1)
    x = model.starts()[1]
    x = np.clip(x + rng.normal(0, 0.05, len(x)), np.maximum(lo, -5) + 0.01, np.minimum(hi, 5) - 0.01)
    analytic = model.jacobian(x)
    step = 1e-6 * np.maximum(np.abs(x), 1.0)
    numeric = np.column_stack([(model.residuals(x + e) - model.residuals(x - e)) / (2 * e.sum()) for e in np.diag(step)])
    np.testing.assert_allclose(analytic, numeric, rtol=1e-4, atol=1e-5)


def test_adstock_starts_from_the_first_weeks_steady_state():
    x = np.full(30, 10.0)
    a, _ = least_squares._adstock(x, 0.5, warm=10.0)
    np.testing.assert_allclose(a, 20.0)  # s / (1 - theta) from day one


# --- recovery -----------------------------------------------------------------------------------


def test_attributed_target_recovers_the_simulated_curves(simulated, fits):
    _, base = simulated
    fit = fits["attributed"].channels.set_index("channel")
    truth = TRUTH.set_index("channel")
    assert fit["fitted"].all()
    np.testing.assert_allclose(fit["decay"], truth["decay"], atol=0.06)
    np.testing.assert_allclose(fit["slope"], truth["slope"], rtol=0.15)
    np.testing.assert_allclose(fit["half_saturation_spend"], truth["half_saturation_spend"], rtol=0.15)
    # max lift is relative to the non-paid revenue of the history's last days: the baseline here
    np.testing.assert_allclose(fit["max_lift"], truth["max_lift"], rtol=0.15)
    for c in truth.index:
        spend = truth.loc[c, "base_spend"] * np.array([0.5, 1.0, 1.5])
        expected, marginal = _true_response(spend, c, base[-28:].mean())
        got, got_marginal = optimiser._response(spend, fit.loc[c, "max_revenue_per_day"], fit.loc[c, "half_saturation_spend"],
                                             fit.loc[c, "slope"])
        np.testing.assert_allclose(got, expected, rtol=0.10)
        np.testing.assert_allclose(got_marginal, marginal, rtol=0.10)


def test_total_target_recovers_decays_and_marginal_returns(simulated, fits):
    """From total revenue alone the *level* of an always-on channel's contribution is confounded with the
    baseline's intercept; decays and the marginal response over the spend range seen are identified."""
    _, base = simulated
    fit = fits["total"].channels.set_index("channel")
    truth = TRUTH.set_index("channel")
    np.testing.assert_allclose(fit["decay"], truth["decay"], atol=0.15)
    for c in truth.index:
        spend = truth.loc[c, "base_spend"]
        _, marginal = _true_response(spend, c, base[-28:].mean())
        _, got = optimiser._response(spend, fit.loc[c, "max_revenue_per_day"], fit.loc[c, "half_saturation_spend"], fit.loc[c, "slope"])
        # the smallest channel (display: a 10 % lift at most) is the least precise
        assert got == pytest.approx(marginal, rel=0.4 if c == "display" else 0.2), c
    # the fitted series tracks the data (2 % Poisson noise) and the baseline is the non-media revenue
    daily = fits["total"].daily
    assert fits["total"].params["mape_in_sample"] < 0.03
    np.testing.assert_allclose(daily["baseline"].iloc[-28:].mean(), base[-28:].mean(), rtol=0.15)


def test_bootstrap_intervals_bracket_the_estimates_and_mostly_cover_the_truth(fits):
    truth = TRUTH.set_index("channel")
    covered = []
    for fit in fits.values():
        table = fit.channels.set_index("channel")
        for name in ("decay", "half_saturation_spend", "slope", "max_revenue_per_day"):
            assert (table[f"{name}_low"] <= table[name] + 1e-9).all() and (table[name] <= table[f"{name}_high"] + 1e-9).all()
        for name in ("decay", "half_saturation_spend", "slope"):
            covered += list((table[f"{name}_low"] <= truth[name]) & (truth[name] <= table[f"{name}_high"]))
        assert len(fit.replicates) == 20 * len(truth)
    assert np.mean(covered) >= 0.5  # a block bootstrap of a regularised fit under-covers; it must not be degenerate


def test_fit_is_deterministic(simulated):
    history, _ = simulated
    config = MediaConfig(n_bootstrap=3, random_state=7)
    first, second = fit_media_model(history, config), fit_media_model(history, config)
    pd.testing.assert_frame_equal(first.channels, second.channels)
    pd.testing.assert_frame_equal(first.replicates, second.replicates)


def test_fixed_parameters_are_held(simulated):
    history, _ = simulated
    fixed = {"search": {"decay": 0.3, "slope": 1.0, "half_saturation_spend": 800.0}}
    fit = fit_media_model(history, MediaConfig(n_bootstrap=2, fixed_parameters=fixed)).channels.set_index("channel")
    assert fit.loc["search", "decay"] == pytest.approx(0.3)
    assert fit.loc["search", "slope"] == pytest.approx(1.0)
    assert fit.loc["search", "half_saturation_spend"] == pytest.approx(800.0)
    assert fit.loc["search", "decay_low"] == pytest.approx(0.3) and fit.loc["search", "decay_high"] == pytest.approx(0.3)


def test_zero_spend_channel_is_excluded_with_a_reason_and_held(simulated):
    history, _ = simulated
    history = history.assign(spend_tv=0.0, spend_radio=np.where(np.arange(len(history)) < 5, 100.0, 0.0))
    fit = fit_media_model(history, MediaConfig(n_bootstrap=0))
    assert set(fit.excluded) == {"tv", "radio"}
    assert "no spend" in fit.excluded["tv"] and "5 of 365 days" in fit.excluded["radio"]
    allocation = allocate_budget(fit, history)
    table = allocation.table.set_index("channel")
    assert (table.loc[["tv", "radio"], "binding_constraint"] == "excluded").all()
    assert (table.loc[["tv", "radio"], "recommended_spend"] == table.loc[["tv", "radio"], "current_spend"]).all()
    assert "tv" in allocation.reason and "held at current spend" in allocation.reason
    assert set(allocation.excluded) == {"tv", "radio"}


def test_fit_rejects_histories_that_are_not_media_histories():
    with pytest.raises(ValueError, match="media_history"):
        fit_media_model(pd.DataFrame({"day": pd.date_range(START, periods=100), "revenue": 1.0}))
    history, _ = _simulate(days=40)
    with pytest.raises(ValueError, match="at least 56"):
        fit_media_model(history)


# --- backtest and tuning ------------------------------------------------------------------------


def test_backtest_and_crossval_score_held_out_days(simulated):
    history, _ = simulated
    scores = media_backtest(history, MediaConfig(holdout_weeks=6))
    assert set(scores) == {"mape", "rmse", "r2", "weekly_mape", "mape_no_media", "days"}
    assert scores["days"] == 42
    assert scores["mape"] < 0.08 and scores["weekly_mape"] < 0.08  # 2 % Poisson noise, the trend held flat
    assert scores["mape"] < scores["mape_no_media"]  # spend explains the held-out weeks
    cv = media_crossval(history, MediaConfig(target="attributed"))
    assert cv["mape"] < 0.10 and cv["r2"] > 0.5
    with pytest.raises(ValueError, match="too few"):
        media_backtest(history.iloc[:100], MediaConfig(holdout_weeks=8))


def test_tuning_is_seeded_and_never_worse_than_the_given_config(simulated):
    history, _ = simulated
    history = history.iloc[-200:].reset_index(drop=True)
    seen = []
    runs = [tune_media_model(history, MediaConfig(random_state=3), n_trials=3, timeout_seconds=60,
                             callbacks=[lambda study, trial: seen.append(trial.number)]) for _ in range(2)]
    assert runs[0].study.best_params == runs[1].study.best_params
    assert runs[0].value <= runs[0].default_value and runs[0].n_trials == 3
    assert seen == [0, 1, 2, 0, 1, 2]
    assert {"mape", "paired_t"} <= set(runs[0].study.trials[0].user_attrs)
    assert runs[0].config == MediaConfig(random_state=3) or runs[0].metrics["paired_t"] >= 2.0  # kept unless significantly better
    last = tune_media_model(history, MediaConfig(), n_trials=2, timeout_seconds=60, holdout="last")
    assert last.value <= last.default_value


def _held_out_predictions(monkeypatch, predicted_for) -> None:
    """Held-out days with revenue 100 predicted as ``predicted_for(config)`` (no fitting at all)."""
    monkeypatch.setattr(backtest, "_crossval_predictions",
                        lambda history, config, n_folds=4: (np.full(40, 100.0), np.full(40, predicted_for(config))))


def test_tuning_keeps_the_given_config_over_trials_without_a_finite_mape(simulated, monkeypatch):
    history = simulated[0].iloc[-200:].reset_index(drop=True)
    given = MediaConfig(random_state=3)
    _held_out_predictions(monkeypatch, lambda config: 105.0 if config == given else np.nan)
    tuned = tune_media_model(history, given, n_trials=3, timeout_seconds=60)
    assert tuned.config == given and tuned.value == pytest.approx(0.05) and tuned.n_trials == 0


def test_tuning_replaces_a_given_config_without_a_finite_mape(simulated, monkeypatch):
    history = simulated[0].iloc[-200:].reset_index(drop=True)
    given = MediaConfig(random_state=3)
    _held_out_predictions(monkeypatch, lambda config: np.nan if config == given else 110.0)
    tuned = tune_media_model(history, given, n_trials=3, timeout_seconds=60)
    assert tuned.config != given and tuned.value == pytest.approx(0.10)
    assert np.isnan(tuned.default_value) and np.isnan(tuned.metrics["paired_t"])  # nothing to test the gain against


@pytest.mark.parametrize(
    ("days", "mutate", "reason"),
    [
        (130, lambda s, o: (s, o), None),
        (130, lambda s, o: (s.iloc[:0], o), "the store has no marketing spend in the 365 days before 2023-05-12"),
        (70, lambda s, o: (s, o), "only 70 days of marketing spend before 2023-03-13 (from 2023-01-02): the media model "
                                  "needs 112 (56 to fit, then 8 weeks to test on)"),
        (130, lambda s, o: (s.assign(spend=0.0), o), "every channel spent 0 in the 130 days before 2023-05-12"),
        (130, lambda s, o: (s, o.assign(status="cancelled")), "no completed orders between 2023-01-02 and 2023-05-12"),
        (130, lambda s, o: (s.assign(spend=np.where(s["day"] < s["day"].min() + pd.Timedelta(days=10), s["spend"], 0.0)), o),
         "no paid channel can be fitted on the 74 days before the test window (run date 2023-05-12): search: spend "
         "on only 10 of 74 days"),
    ],
)
def test_training_data_shortfall_names_what_is_missing(days, mutate, reason):
    spend, orders, run = _extract_frames(days)
    spend, orders = mutate(spend, orders)
    found = training_data_shortfall(spend, orders, run, 365)
    assert found == reason if reason is None else found.startswith(reason)


# --- optimiser ----------------------------------------------------------------------------------

KNOWN = _curves(channel=["a", "b", "c"], decay=[0.2, 0.5, 0.1], half_saturation_spend=[100.0, 60.0, 200.0],
                slope=[1.0, 2.5, 1.6], max_revenue_per_day=[500.0, 400.0, 900.0])


def _revenue(fit, spend: dict[str, float]) -> float:
    table = fit.channels.set_index("channel").loc[list(spend)]
    return float(optimiser._response(np.array(list(spend.values())), table["max_revenue_per_day"].to_numpy(),
                                  table["half_saturation_spend"].to_numpy(), table["slope"].to_numpy())[0].sum())


def _grid_optimum(fit, lower: np.ndarray, upper: np.ndarray, budget_total: float, n: int = 1201) -> tuple[np.ndarray, float]:
    """Brute force over a grid of the first two channels; the third takes the rest."""
    a = np.linspace(lower[0], upper[0], n)[:, None]
    b = np.linspace(lower[1], upper[1], n)[None, :]
    c = budget_total - a - b
    ok = (c >= lower[2] - 1e-9) & (c <= upper[2] + 1e-9)
    table = fit.channels.set_index("channel").loc[["a", "b", "c"]]
    value = sum(optimiser._response(x, table.loc[k, "max_revenue_per_day"], table.loc[k, "half_saturation_spend"],
                                 table.loc[k, "slope"])[0] for k, x in zip("abc", (a + 0 * b, b + 0 * a, c)))
    value = np.where(ok, value, -np.inf)
    i, j = np.unravel_index(np.argmax(value), value.shape)
    return np.array([a[i, 0], b[0, j], c[i, j]]), float(value[i, j])


@pytest.mark.parametrize(
    "constraints",
    [
        BudgetConstraints(max_change=None),
        BudgetConstraints(max_change=0.3),
        BudgetConstraints(max_change=None, total_budget=200.0),
        BudgetConstraints(max_change=None, total_budget=600.0, min_spend={"a": 50.0}, max_spend={"c": 250.0}),
        BudgetConstraints(max_change=0.5, total_budget=330.0),
    ],
)
def test_optimiser_reaches_the_brute_force_optimum(constraints):
    fit = fit_from_curves(KNOWN, baseline_revenue_per_day=10_000.0)
    current = pd.Series({"a": 150.0, "b": 20.0, "c": 130.0})
    allocation = allocate_spend(fit, current, constraints)
    spend = allocation.table.set_index("channel")["recommended_spend"]
    total = constraints.total_budget or current.sum()
    lower, upper, _, _ = optimiser._bounds(["a", "b", "c"], current, constraints, total)
    grid, best = _grid_optimum(fit, lower, upper, total)
    ours = _revenue(fit, spend.to_dict())
    assert ours >= best - 1e-6 * best  # at least as good as the grid's best point
    assert ours <= best + 1e-3 * best  # and the grid is fine enough to be close to it
    np.testing.assert_allclose(spend.to_numpy(), grid, atol=0.01 * total)
    assert allocation.solver["success"]


def test_optimiser_handles_s_shaped_curves_where_the_best_move_is_to_drop_a_channel():
    curves = _curves(channel=["a", "b", "c"], decay=[0.0, 0.0, 0.0], half_saturation_spend=[100.0, 150.0, 80.0],
                     slope=[3.0, 1.0, 3.0], max_revenue_per_day=[300.0, 600.0, 320.0])
    fit = fit_from_curves(curves, baseline_revenue_per_day=5_000.0)
    current = pd.Series({"a": 60.0, "b": 60.0, "c": 60.0})
    for total in (120.0, 180.0, 260.0, 400.0):
        constraints = BudgetConstraints(max_change=None, total_budget=total)
        spend = allocate_spend(fit, current, constraints).table.set_index("channel")["recommended_spend"]
        _, best = _grid_optimum(fit, np.zeros(3), np.full(3, total), total)
        assert _revenue(fit, spend.to_dict()) >= best * (1 - 1e-6), total


def test_a_plain_slsqp_from_the_current_split_is_the_failure_this_optimiser_avoids():
    """The known failure: SLSQP in raw units reports success at its starting point."""
    from scipy.optimize import minimize

    fit = fit_from_curves(KNOWN, baseline_revenue_per_day=10_000.0)
    current = np.array([150.0, 20.0, 130.0])
    table = KNOWN.set_index("channel")

    def revenue(x: np.ndarray) -> float:
        return float(optimiser._response(x, table["max_revenue_per_day"].to_numpy(), table["half_saturation_spend"].to_numpy(),
                                      table["slope"].to_numpy())[0].sum() / 1e4)

    naive = minimize(lambda x: -revenue(x), current, method="SLSQP", bounds=[(0, 300)] * 3,
                     constraints=[{"type": "eq", "fun": lambda x: x.sum() - 300.0}])
    ours = allocate_spend(fit, pd.Series(current, index=["a", "b", "c"]), BudgetConstraints(max_change=None))
    assert naive.success and np.allclose(naive.x, current, atol=0.5)  # stuck
    assert ours.moved and ours.table["recommended_spend"].sub(current).abs().max() > 20


def test_constraints_are_respected_and_binding_ones_named():
    fit = fit_from_curves(KNOWN, baseline_revenue_per_day=10_000.0)
    current = pd.Series({"a": 150.0, "b": 20.0, "c": 130.0})
    constraints = BudgetConstraints(max_change=0.3, min_spend={"a": 120.0}, max_spend={"c": 150.0})
    allocation = allocate_spend(fit, current, constraints)
    table = allocation.table.set_index("channel")
    spend = table["recommended_spend"]
    assert spend.sum() == pytest.approx(300.0, rel=1e-9)
    assert (spend >= current * 0.7 - 1e-6).all() and (spend <= current * 1.3 + 1e-6).all()
    assert spend["a"] >= 120.0 - 1e-6 and spend["c"] <= 150.0 + 1e-6
    assert set(table["binding_constraint"]) <= set(BINDING)
    assert table.loc["b", "binding_constraint"] == "max_change"  # b wants far more than +30 %
    for channel, row in table.iterrows():
        if row["binding_constraint"] == "none":
            continue
        bound = {"min": 120.0 if channel == "a" else 0.0, "max": 150.0 if channel == "c" else np.inf}
        at = {"max_change": [current[channel] * 0.7, current[channel] * 1.3], "min": [bound["min"]], "max": [bound["max"]]}
        assert any(abs(row["recommended_spend"] - value) < 1e-6 for value in at[row["binding_constraint"]])
    # unbound channels share one marginal ROAS, and bound ones are on the right side of it
    free = table[table["binding_constraint"] == "none"]
    assert free["marginal_roas"].max() - free["marginal_roas"].min() < 1e-3 * free["marginal_roas"].mean() + 1e-9
    horizon = constraints.horizon_days
    assert table["expected_revenue_recommended"].sum() >= table["expected_revenue_current"].sum()
    assert allocation.expected_store_revenue_recommended == pytest.approx(
        horizon * 10_000.0 + table["expected_revenue_recommended"].sum())
    assert allocation.moved and "moved" in allocation.reason


def test_current_split_already_optimal_is_not_moved_and_says_why():
    k, slope = np.array([100.0, 60.0, 200.0]), np.array([1.0, 2.5, 1.6])
    current = np.array([120.0, 70.0, 110.0])
    # scale the curves so that every channel's marginal revenue at the current split is 2.0
    _, unit_marginal = optimiser._response(current, np.ones(3), k, slope)
    curves = _curves(channel=["a", "b", "c"], decay=[0.2, 0.5, 0.1], half_saturation_spend=list(k), slope=list(slope),
                     max_revenue_per_day=list(2.0 / unit_marginal))
    fit = fit_from_curves(curves, baseline_revenue_per_day=10_000.0)
    allocation = allocate_spend(fit, pd.Series(current, index=["a", "b", "c"]), BudgetConstraints(max_change=None))
    assert not allocation.moved
    assert "marginal ROAS already equal across channels at the current split" in allocation.reason
    np.testing.assert_allclose(allocation.table["recommended_spend"], current, atol=0.005 * current.sum())
    np.testing.assert_allclose(allocation.table["marginal_roas"], 2.0, rtol=0.01)


def test_pinned_bounds_are_reported_not_silent():
    fit = fit_from_curves(KNOWN, baseline_revenue_per_day=10_000.0)
    allocation = allocate_spend(fit, pd.Series({"a": 150.0, "b": 20.0, "c": 130.0}), BudgetConstraints(max_change=0.0))
    assert not allocation.moved and "pinned by its bounds" in allocation.reason
    assert (allocation.table["binding_constraint"] == "max_change").all()


def test_equal_split_recommendation_is_reported():
    curves = _curves(channel=["a", "b"], decay=[0.1, 0.1], half_saturation_spend=[100.0, 100.0], slope=[1.0, 1.0],
                     max_revenue_per_day=[500.0, 500.0])
    fit = fit_from_curves(curves, baseline_revenue_per_day=1_000.0)
    allocation = allocate_spend(fit, pd.Series({"a": 150.0, "b": 50.0}), BudgetConstraints(max_change=None))
    assert allocation.moved
    np.testing.assert_allclose(allocation.table["recommended_spend"], [100.0, 100.0], atol=0.01)
    assert "coincides with an equal split" in allocation.reason


def test_channels_without_response_are_named():
    curves = KNOWN.assign(max_revenue_per_day=[500.0, 0.0, 900.0])
    fit = fit_from_curves(curves, baseline_revenue_per_day=10_000.0)
    allocation = allocate_spend(fit, pd.Series({"a": 150.0, "b": 20.0, "c": 130.0}), BudgetConstraints(max_change=None))
    assert "model found no response for channels b" in allocation.reason
    assert allocation.table.set_index("channel").loc["b", "recommended_spend"] == pytest.approx(0.0, abs=1e-6)


def test_an_optimiser_failure_is_reported_and_the_better_split_kept(monkeypatch):
    fit = fit_from_curves(KNOWN, baseline_revenue_per_day=10_000.0)
    current = pd.Series({"a": 150.0, "b": 20.0, "c": 130.0})
    monkeypatch.setattr(optimiser, "_optimise", lambda *args: (np.array([0.0, 0.0, 300.0]), {"message": "boom", "success": True}))
    allocation = allocate_spend(fit, current, BudgetConstraints(max_change=None))
    assert "optimiser failed to converge" in allocation.reason and "boom" in allocation.reason
    assert not allocation.solver["success"]
    assert _revenue(fit, allocation.table.set_index("channel")["recommended_spend"].to_dict()) >= _revenue(fit, current.to_dict())


@pytest.mark.parametrize(
    ("constraints", "message"),
    [
        (BudgetConstraints(max_change=None, min_spend={"a": 200.0, "c": 200.0}), "lower bounds add up to 400.00"),
        (BudgetConstraints(max_change=0.1, total_budget=500.0), "upper bounds add up to"),
        (BudgetConstraints(max_change=0.1, min_spend={"b": 100.0}), "bounds cross for b"),
        (BudgetConstraints(max_spend={"zz": 1.0}), "unknown channels"),
    ],
)
def test_infeasible_constraints_raise(constraints, message):
    fit = fit_from_curves(KNOWN, baseline_revenue_per_day=10_000.0)
    with pytest.raises(ValueError, match=message):
        allocate_spend(fit, pd.Series({"a": 150.0, "b": 20.0, "c": 130.0}), constraints)


def test_constraints_validate_their_fields():
    with pytest.raises(ValueError, match="max_change"):
        BudgetConstraints(max_change=-0.1)
    with pytest.raises(ValueError, match="target"):
        MediaConfig(target="clicks")
    with pytest.raises(ValueError, match="unknown keys"):
        MediaConfig(fixed_parameters={"a": {"adstock": 0.3}})


def test_allocation_from_a_fitted_history_has_intervals(simulated, fits):
    history, _ = simulated
    allocation = allocate_budget(fits["attributed"], history, BudgetConstraints(horizon_days=7))
    table = allocation.table
    assert list(table["channel"]) == ["display", "search", "social"]
    np.testing.assert_allclose(table["current_spend"], current_spend(history, 28).to_numpy())
    assert (table["expected_revenue_recommended_low"] <= table["expected_revenue_recommended"] + 1e-9).all()
    assert (table["expected_revenue_recommended"] <= table["expected_revenue_recommended_high"] + 1e-9).all()
    assert (table["marginal_roas_low"] <= table["marginal_roas_high"]).all()
    assert allocation.expected_store_revenue_recommended_low <= allocation.expected_store_revenue_recommended
    assert allocation.expected_store_revenue_recommended <= allocation.expected_store_revenue_recommended_high
    assert allocation.horizon_days == 7 and allocation.reason


def test_allocation_on_the_simulated_truth_beats_current_by_most_of_the_oracle_gain(simulated, fits):
    history, base = simulated
    oracle_fit = fit_from_curves(
        TRUTH.assign(max_revenue_per_day=TRUTH["max_lift"] * base[-28:].mean()), baseline_revenue_per_day=base[-28:].mean())
    current = current_spend(history)
    oracle = allocate_spend(oracle_fit, current).table.set_index("channel")["recommended_spend"]
    for target in ("total", "attributed"):
        ours = allocate_spend(fits[target], current).table.set_index("channel")["recommended_spend"]
        gain = _revenue(oracle_fit, ours.to_dict()) - _revenue(oracle_fit, current.to_dict())
        best = _revenue(oracle_fit, oracle.to_dict()) - _revenue(oracle_fit, current.to_dict())
        assert gain >= 0.9 * best, target


# --- curves, pyfunc, plot -------------------------------------------------------------------------


def test_response_curves_are_monotone_with_ordered_bands(fits):
    curves = response_curves(fits["total"], horizon_days=28)
    for _, rows in curves.groupby("channel"):
        assert rows["spend"].iloc[0] == 0 and rows["revenue"].iloc[0] == 0
        assert (np.diff(rows["revenue"]) >= -1e-9).all()
        assert (rows["revenue_low"] <= rows["revenue"] + 1e-6).all() and (rows["revenue"] <= rows["revenue_high"] + 1e-6).all()


def test_budget_model_predicts_the_published_rows_under_its_params_and_pickles(simulated, fits):
    history, _ = simulated
    logged = BudgetConstraints(max_change=0.2, horizon_days=14)
    model = cloudpickle.loads(cloudpickle.dumps(BudgetModel(fits["attributed"], logged)))
    daily = daily_spend(history)
    # with params (as MLflow passes them: scalars and JSON strings): those settings
    run = BudgetConstraints(total_budget=1500.0, max_change=0.5, min_spend={"display": 200.0},
                            max_spend={"search": 900.0}, horizon_days=7)
    predicted = model.predict(None, daily, constraint_params(run))
    allocation = allocate_budget(fits["attributed"], history, run)
    pd.testing.assert_frame_equal(predicted, allocation_rows(allocation))
    assert list(predicted.columns) == list(ALLOCATION_COLUMNS) and list(predicted["channel"]) == paid_channels(history)
    assert (predicted["horizon_days"] == 7).all() and (predicted["moved"] == allocation.moved).all()
    assert predicted["recommended_spend"].sum() == pytest.approx(1500.0)
    own = allocation.table["reason"].astype(bool).to_numpy()  # a channel's own reason, else the allocation's
    assert (predicted["reason"][own] == allocation.table["reason"][own]).all()
    assert (predicted["reason"][~own] == allocation.reason).all()
    # without params: the constraints it was logged with; only the last current_window_days days count (the
    # input example is those days)
    expected = allocation_rows(allocate_budget(fits["attributed"], history, logged))
    pd.testing.assert_frame_equal(model.predict(None, daily_spend(history.iloc[-28:])), expected)
    with pytest.raises(ValueError, match="covers 27 days"):
        model.predict(None, daily_spend(history.iloc[-27:]))
    with pytest.raises(ValueError, match="unknown budget params"):
        model.predict(None, daily, {"budget": 1.0})


def test_budget_model_holds_a_channel_it_does_not_know(simulated, fits):
    history, _ = simulated
    with_new = history.assign(spend_tiktok=5.0)
    predicted = BudgetModel(fits["total"]).predict(None, daily_spend(with_new)).set_index("channel")
    assert predicted.loc["tiktok", "binding_constraint"] == "excluded"
    assert "not in the fitted model" in predicted.loc["tiktok", "reason"]
    assert predicted.loc["tiktok", "recommended_spend"] == predicted.loc["tiktok", "current_spend"] == 5.0
    assert predicted["recommended_spend"].sum() == pytest.approx(predicted["current_spend"].sum())


def test_constraint_params_are_mlflow_scalars_and_round_trip():
    from ml.families.budget.model import constraints_from_params

    params = constraint_params(BudgetConstraints(min_spend={"display": 100}, max_spend={"search": 5000.5}))
    assert all(isinstance(value, (str, int, float)) for value in params.values())
    assert params["total_budget"] == "null" and params["min_spend"] == '{"display": 100}'
    base = BudgetConstraints(current_window_days=14)
    for constraints in (BudgetConstraints(), BudgetConstraints(total_budget=1234.5678, max_change=0.05, horizon_days=3,
                                                               min_spend={"a": 1.5}, max_spend={"b": 2})):
        assert constraints_from_params(constraint_params(constraints), base) == dataclasses.replace(
            constraints, current_window_days=14)
    assert "max_change" not in constraint_params(BudgetConstraints(max_change=None))
    assert constraints_from_params({}, base) is base


# --- the family -----------------------------------------------------------------------------------


def test_family_nightly_input_is_the_media_history_spend_the_old_step_read():
    spend, orders, run = _extract_frames(130)
    frames = {"marketing_spend": spend, "orders": orders}
    params = RunParams(lookback_days=100)
    daily = FAMILY.nightly_input(frames, run.date(), params)
    history = media_history(spend, orders, run, 100)
    assert list(daily.columns) == ["day", "channel", "spend"] and len(daily) == 100 * 3
    pd.testing.assert_frame_equal(spend_history(daily), history[["day", *[f"spend_{c}" for c in paid_channels(history)]]])
    # sparse rows mean days without spend, as in the extract
    sparse = daily[daily["spend"] > 0]
    pd.testing.assert_frame_equal(spend_history(sparse)[["day", "spend_search", "spend_social"]],
                                  spend_history(daily)[["day", "spend_search", "spend_social"]])


def test_family_predict_params_are_the_run_constraints():
    params = RunParams(budget_total=900.0, budget_max_change=0.1, budget_min_spend={"search": 10.0}, budget_horizon_days=7)
    assert FAMILY.predict_params(dt.date(2024, 1, 1), params) == {
        "total_budget": "900.0", "max_change": 0.1, "min_spend": '{"search": 10.0}', "max_spend": "{}", "horizon_days": 7}


def test_family_shortfall_and_config_follow_the_store():
    spend, orders, run = _extract_frames(130)
    params = RunParams(lookback_days=365, seed=5)
    frames = {"marketing_spend": spend, "orders": orders}
    assert FAMILY.shortfall(frames, run.date(), params) is None
    config = FAMILY.training_data(frames, run.date(), params).config
    assert config == MediaConfig(target="attributed", random_state=5)  # orders name the paid channels
    unattributed = {**frames, "orders": orders.assign(channel="organic")}
    assert FAMILY.training_data(unattributed, run.date(), params).config.target == "total"
    reason = FAMILY.shortfall({**frames, "marketing_spend": spend.iloc[:0]}, run.date(), params)
    assert reason.startswith("the store has no marketing spend in the 365 days before 2023-05-12")
    assert FAMILY.shortfall(frames, run.date(), RunParams(lookback_days=70)).startswith("only 70 days of marketing spend")


def test_family_evaluates_a_champion_spec_on_the_test_window(simulated):
    history, _ = simulated
    data = MediaData(history=history, config=MediaConfig(), run_date=dt.date(2024, 1, 1))
    config = MediaConfig(n_bootstrap=0, regularisation=2.0)
    spec = {"family": "budget", "config": json.loads(json.dumps(dataclasses.asdict(config)))}
    evaluation = FAMILY.evaluate(data, spec, RunParams())
    assert evaluation.value(FAMILY.metric) == media_backtest(history, config)["mape"]
    assert evaluation.n == 56 and evaluation.window.startswith("daily revenue 2023-11-07 to 2024-01-01 (8 weeks")
    assert FAMILY.evaluate(data, {"family": "pricing", "config": {}}, RunParams()) is None
    assert FAMILY.evaluate(data, {"family": "budget", "config": {"smoothing": 1.0}}, RunParams()) is None
    # a champion of another target predicts other outcomes: it cannot be compared on these rows
    assert FAMILY.evaluate(data, config_spec("budget", MediaConfig(target="attributed")), RunParams()) is None
    assert FAMILY.metric is MAPE and FAMILY.metric.name == "mape"
    assert not FAMILY.metric.higher_is_better and FAMILY.metric.relative_margin and FAMILY.metric.paired_test == "bootstrap"
    assert FAMILY.training_datasets == FAMILY.nightly_datasets == ("marketing_spend", "orders", "conversion_paths")


# --- the test window, the baseline and the gate's evaluations ---------------------------------------

TEST_DAYS = 7 * MediaConfig().holdout_weeks
OUTCOMES = ("revenue", "orders")  # and their per-channel columns


def _train(history: pd.DataFrame, trials: list | None = None):
    """The family trained as the runner trains it (3 trials, no bootstrap), recording every trial."""
    data = MediaData(history=history, config=MediaConfig(n_bootstrap=0), run_date=dt.date(2024, 1, 1))
    record = [] if trials is None else trials
    trained = FAMILY.train(data, RunParams(n_trials=3, seed=0),
                           [lambda study, trial: record.append((trial.number, trial.value, trial.params,
                                                                 dict(trial.user_attrs)))])
    for figure in trained.figures.values():
        close(figure)
    return data, trained


@pytest.fixture(scope="module")
def trained_family(simulated):
    trials = []
    data, trained = _train(simulated[0], trials)
    return data, trained, trials


def test_tuning_never_sees_the_test_window(simulated, trained_family):
    """Tripling every outcome of the last weeks leaves every trial, the choice and the spec unchanged."""
    history, _ = simulated
    _, trained, trials = trained_family
    changed = history.copy()
    outcomes = [c for c in changed.columns if c in OUTCOMES or c.startswith(("revenue_", "orders_"))]
    changed.loc[changed.index[-TEST_DAYS:], outcomes] *= 3
    seen = []
    _, retrained = _train(changed, seen)
    assert len(trials) == 3 and seen == trials  # same suggestions, same held-out MAPE and paired t
    assert retrained.spec == trained.spec
    assert {k: v for k, v in retrained.metrics.items() if k.startswith("valid_")} == {
        k: v for k, v in trained.metrics.items() if k.startswith("valid_")}
    np.testing.assert_allclose(retrained.test.y, 3 * trained.test.y)  # the test window did change
    np.testing.assert_array_equal(retrained.test.predicted, trained.test.predicted)  # and its model did not see it


def test_the_test_and_baseline_evaluations_share_rows_outcomes_and_weeks(simulated, trained_family):
    history, _ = simulated
    data, trained, _ = trained_family
    test, baseline = trained.test, trained.baseline
    assert test.n == baseline.n == TEST_DAYS
    np.testing.assert_array_equal(test.y, baseline.y)
    np.testing.assert_array_equal(test.groups, baseline.groups)
    assert test.window == baseline.window == "daily revenue 2023-11-07 to 2024-01-01 (8 weeks; fitted on the 309 days before)"
    assert len(set(test.groups)) == 8 and (pd.Series(test.groups).value_counts() == 7).all()
    assert baseline.name == "no-spend-response baseline"
    # the test rows are the target revenue of the last weeks; the baseline reads only the days before
    np.testing.assert_allclose(test.y, history["revenue"].iloc[-TEST_DAYS:])
    later = history.copy()
    later.loc[later.index[-TEST_DAYS:], "revenue"] *= 5
    np.testing.assert_array_equal(no_response_baseline(later, data.config).predicted, baseline.predicted)
    tuned = config_from_spec("budget", trained.spec, MediaConfig)
    assert trained.metrics["test_mape"] == test.value(MAPE) == held_out_weeks(history, tuned).scores()["mape"]
    assert trained.metrics["baseline_mape"] == baseline.value(MAPE)
    assert {"valid_mape", "valid_default_mape", "test_days", "test_mape_no_media"} <= set(trained.metrics)
    assert "holdout_mape" not in trained.metrics and trained.params["test_weeks"] == 8


def test_the_tuned_model_beats_the_naive_baseline_on_a_store_with_media_signal(trained_family):
    _, trained, _ = trained_family
    floor = compare(trained.test, trained.baseline, MAPE)
    assert floor.significant(0.05), floor.describe("mape")
    decision = decide(model_name=FAMILY.model_name, candidate_version="1", metric=MAPE, candidate=trained.test,
                      baseline=trained.baseline, champion_version=None, champion=None, margin=0.005)
    assert decision.promoted and "above the quality floor" in decision.reason


@pytest.mark.parametrize(
    "worse",
    [
        # no adstock: every channel's spend acts on its day only (social's true decay is 0.6)
        {"decay": 0.0},
        # no response to spend: every channel saturated at any spend
        {"half_saturation_spend": 1.0, "slope": 4.0},
    ],
    ids=["no-adstock", "no-spend-response"],
)
def test_a_truly_worse_champion_config_loses_significantly_on_the_test_window(trained_family, worse):
    data, trained, _ = trained_family
    config = MediaConfig(fixed_parameters={c: dict(worse) for c in TRUTH["channel"]})
    champion = FAMILY.evaluate(data, json.loads(json.dumps(config_spec("budget", config))), RunParams())
    versus = compare(trained.test, champion, MAPE)
    assert versus.significant(0.05), versus.describe("mape")


def test_evaluate_on_the_candidates_own_spec_reproduces_its_test_predictions(trained_family):
    data, trained, _ = trained_family
    spec = json.loads(json.dumps(trained.spec))  # as the spec tag stores it
    again = FAMILY.evaluate(data, spec, RunParams())
    np.testing.assert_array_equal(again.predicted, trained.test.predicted)
    np.testing.assert_array_equal(again.y, trained.test.y)
    np.testing.assert_array_equal(again.groups, trained.test.groups)
    assert again.window == trained.test.window
    # the test window is the store's, whatever the champion's holdout_weeks was
    other_window = {**spec, "config": {**spec["config"], "holdout_weeks": 6}}
    np.testing.assert_array_equal(FAMILY.evaluate(data, other_window, RunParams()).predicted, trained.test.predicted)


# --- the rolling-origin backtest -------------------------------------------------------------------


def _without_bootstrap(data: MediaData) -> MediaData:
    """``data`` (and its earlier origins) without the published model's bootstrap intervals (speed)."""
    return dataclasses.replace(data, config=dataclasses.replace(data.config, n_bootstrap=0),
                               earlier=tuple(_without_bootstrap(origin) for origin in data.earlier))


@pytest.fixture(scope="module")
def store_frames():
    store = generate_store(3000, 300, START, seed=11)
    frames = {"marketing_spend": store.shop["marketing_spend"], "orders": _store_orders(store)}
    return frames, (pd.Timestamp(START) + pd.Timedelta(days=300)).date()


def test_the_rolling_origin_backtest_repeats_selection_and_test_one_window_earlier_each(store_frames):
    """Two origins, 8 weeks apart: origin 0 is the run's test window, origin 1 the family trained as of
    the run date minus 8 weeks with the earlier origins' tuning budget (the same numbers as a training
    run as of that date)."""
    frames, run_date = store_frames
    params = RunParams(n_trials=2, seed=0, backtest_origins=2)
    data = FAMILY.training_data(frames, run_date, params)
    assert [origin.run_date for origin in data.earlier] == [dt.date(2023, 9, 3)]
    trained = FAMILY.train(_without_bootstrap(data), params, [])
    metrics, earlier = trained.metrics, earlier_origin_params(params)
    assert trained.params["backtest_origins"] == 2 and trained.params["backtest_window_days"] == 56
    assert trained.params["backtest_earlier_n_trials"] == earlier.n_trials == 2
    for key in BACKTEST_METRICS:
        assert {f"backtest_{key}_{suffix}" for suffix in ("origin0", "origin1", "mean", "std")} <= set(metrics)
    for key in ("mape", "weekly_mape", "r2"):
        assert metrics[f"backtest_{key}_origin0"] == metrics[f"test_{key}"]
    assert metrics["backtest_baseline_mape_origin0"] == metrics["baseline_mape"]
    origin = FAMILY.training_data(frames, dt.date(2023, 9, 3), earlier)
    pd.testing.assert_frame_equal(origin.history, data.earlier[0].history)
    direct = FAMILY.train(_without_bootstrap(origin), earlier, [])
    assert direct.test.window.startswith("daily revenue 2023-07-09 to 2023-09-02 (8 weeks")
    for key in ("mape", "weekly_mape", "r2"):
        assert metrics[f"backtest_{key}_origin1"] == direct.metrics[f"test_{key}"], key
    assert metrics["backtest_baseline_mape_origin1"] == direct.metrics["baseline_mape"]
    assert metrics["backtest_mape_origin1"] != metrics["test_mape"]
    values = [metrics["test_mape"], direct.metrics["test_mape"]]
    assert metrics["backtest_mape_mean"] == pytest.approx(np.mean(values))
    assert metrics["backtest_mape_std"] == pytest.approx(np.std(values, ddof=1))
    for figure in (*trained.figures.values(), *direct.figures.values()):
        close(figure)


def test_the_backtest_stops_at_the_first_origin_with_too_little_spend_history(store_frames, caplog):
    """300 days of spend: origin k keeps 300 - 56 k days, and the model needs 112 (56 to fit, 8 weeks to
    test): 12 requested origins are 4, with one log line saying why."""
    frames, run_date = store_frames
    with caplog.at_level("INFO", logger="ml.families.rolling_origin"):
        data = FAMILY.training_data(frames, run_date, RunParams(backtest_origins=12))
    assert [len(origin.history) for origin in data.earlier] == [244, 188, 132]
    reason = FAMILY.shortfall(frames, dt.date(2023, 3, 19), RunParams())
    assert reason.startswith("only 76 days of marketing spend before 2023-03-19")
    assert [r.getMessage() for r in caplog.records if r.name == "ml.families.rolling_origin"] == [
        f"budget backtest for {run_date}: history allows 4 origin(s); origin 4 (test window 2023-01-22 to 2023-03-18) "
        f"cannot train: {reason}"]


def test_response_curves_figure_draws_every_channel(simulated, fits):
    from ml.families.budget.figures import response_curves_figure
    from ml.plots import close

    history, _ = simulated
    allocation = allocate_budget(fits["total"], history.assign(spend_tv=0.0))
    fig = response_curves_figure(fits["total"], allocation, "test")
    assert len([ax for ax in fig.axes if ax.axison]) == 3
    close(fig)


# --- synthetic store ----------------------------------------------------------------------------


def test_synthetic_store_end_to_end_recovers_decays_with_attribution():
    store = generate_store(8000, 365, START, seed=11)
    run = pd.Timestamp(START) + pd.Timedelta(days=365)
    history = media_history(store.shop["marketing_spend"], _store_orders(store), run, 365)
    fit = fit_media_model(history, MediaConfig(target="attributed", n_bootstrap=5))
    truth = store.truth["channels"].set_index("channel")
    table = fit.channels.set_index("channel").loc[truth.index]
    # flighted channels (social, display: weeks without spend) carry their decay clearly; without flights,
    # 8,000 customers do not pin the decay of search or affiliate down (docs/budget.md)
    np.testing.assert_allclose(table.loc[["paid_social", "display"], "decay"], truth.loc[["paid_social", "display"], "adstock_decay"],
                               atol=0.12)
    assert table["fitted"].all() and (table["max_revenue_per_day"] > 0).all()
    allocation = allocate_budget(fit, history)
    assert allocation.table["recommended_spend"].sum() == pytest.approx(current_spend(history).sum())
    assert allocation.reason


def test_grid_helper_is_exhaustive_on_a_tiny_problem():
    """Guards the brute-force reference itself: on a 3-point grid it finds the best feasible combination."""
    fit = fit_from_curves(KNOWN, baseline_revenue_per_day=1.0)
    lower, upper = np.array([0.0, 0.0, 0.0]), np.array([100.0, 100.0, 100.0])
    _, value = _grid_optimum(fit, lower, upper, 100.0, n=3)
    candidates = [(a, b, 100.0 - a - b) for a, b in itertools.product([0.0, 50.0, 100.0], repeat=2) if a + b <= 100.0]
    assert value == pytest.approx(max(_revenue(fit, dict(zip("abc", c))) for c in candidates))
