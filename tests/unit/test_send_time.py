"""Send time: local time, empirical-Bayes curves, recommendations, backtest and tuning, the one-frame
nightly input, the pyfunc and the family."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path

import cloudpickle
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from features.engagement import engagement_input, local_time, split_engagement_input
from ml.evaluation import compare
from ml.families.rolling_origin import earlier_origin_params
from ml.families.send_time import (
    BACKTEST_METRICS,
    FAMILY,
    GLOBAL_SEGMENT,
    MODEL_NAME,
    PUBLISHED_COLUMNS,
    RECOMMENDATION_COLUMNS,
    SendTimeConfig,
    SendTimeModel,
    fit_send_time,
    log_loss,
    prior_recommendations,
    quiet_mask,
    recommend_send_times,
    send_time_backtest,
    send_time_config,
    training_data_shortfall,
    tune_send_time,
)
from ml.family import config_spec
from ml.gate import decide
from ml.params import RunParams
from revopt.sample_data.synth import generate_store

START = dt.date(2024, 1, 1)
DAYS = 365
AS_OF = pd.Timestamp("2024-07-01", tz="UTC")


# --- hand-built stores --------------------------------------------------------------------------


def _bell(hours: np.ndarray, peak: float, sd: float = 2.0) -> np.ndarray:
    distance = np.abs(hours - peak) % 24
    distance = np.minimum(distance, 24 - distance)
    return np.exp(-0.5 * (distance / sd) ** 2)


def _engagement(customer: np.ndarray, hour_utc: np.ndarray, sends: np.ndarray, opens: np.ndarray,
                sessions: np.ndarray | None = None) -> pd.DataFrame:
    n = len(customer)
    frame = pd.DataFrame({
        "customer_id": np.asarray(customer, dtype="int64"),
        "hour_utc": pd.to_datetime(np.asarray(hour_utc, dtype="datetime64[ns]")).tz_localize("UTC"),
        "sends": np.asarray(sends, dtype="int64"), "opens": np.asarray(opens, dtype="int64"),
        "clicks": np.zeros(n, dtype="int64"),
        "sessions": np.zeros(n, dtype="int64") if sessions is None else np.asarray(sessions, dtype="int64"),
    })
    # one row per customer and hour, as the extract returns it
    return frame.groupby(["customer_id", "hour_utc"], as_index=False).sum()


def _no_orders() -> pd.DataFrame:
    return pd.DataFrame({"customer_id": pd.Series(dtype="int64"), "order_ts": pd.Series(dtype="datetime64[ns, UTC]")})


def _customers(ids: np.ndarray, timezone: str = "UTC", country: str = "GB") -> pd.DataFrame:
    return pd.DataFrame({"customer_id": np.asarray(ids, dtype="int64"), "signup_date": pd.Timestamp("2023-01-01"),
                         "country": country, "timezone": timezone, "acquisition_channel": "organic",
                         "email_opt_in": True})


def _email_sends(rng: np.random.Generator, customer: int, n_sends: int, peak: float, level: float,
                 hours: tuple[int, int] = (6, 22)) -> tuple[np.ndarray, ...]:
    """``n_sends`` sends at uniform UTC hours (one per day, going back from AS_OF), opened with
    probability level x (0.1 + 0.9 bell(hour - peak))."""
    hour = rng.integers(hours[0], hours[1] + 1, n_sends)
    day = AS_OF.tz_localize(None).normalize() - pd.to_timedelta(np.arange(1, n_sends + 1), unit="D")
    instant = day.to_numpy() + hour.astype("timedelta64[h]")
    opened = rng.random(n_sends) < level * (0.1 + 0.9 * _bell(hour, peak))
    return np.full(n_sends, customer), instant, np.ones(n_sends, dtype=int), opened.astype(int)


@pytest.fixture(scope="module")
def hand_store():
    """300 background customers whose opens peak at 10:00 UTC, plus customer 1001 (one opened send
    at 15:00), 1002 (300 sends, peak at 19:00) and 1003 (no history)."""
    rng = np.random.default_rng(11)
    parts = [_email_sends(rng, c, 40, 10.0, 0.4) for c in range(1, 301)]
    parts.append((np.array([1001]), np.array([np.datetime64("2024-06-20T15:00")]), np.array([1]), np.array([1])))
    parts.append(_email_sends(rng, 1002, 300, 19.0, 0.6))
    engagement = _engagement(*(np.concatenate([p[i] for p in parts]) for i in range(4)))
    customers = _customers(np.r_[np.arange(1, 301), 1001, 1002, 1003])
    return engagement, customers


def _curve(fit, customer_id: int, day_type: int = 0) -> np.ndarray:
    return fit.curves[int(np.flatnonzero(fit.customer_id == customer_id)[0]), day_type]


# --- local time -------------------------------------------------------------------------------------


def test_local_time_respects_dst_day_types_and_reads_unknown_zones_as_utc():
    rows = [
        ("2024-03-31 00:30", "Europe/London", 0, "weekend"),  # Sunday, GMT until 01:00 UTC
        ("2024-03-31 01:30", "Europe/London", 2, "weekend"),  # BST from 01:00 UTC
        ("2024-10-27 00:30", "Europe/London", 1, "weekend"),  # still BST
        ("2024-10-27 01:30", "Europe/London", 1, "weekend"),  # back to GMT: 01:xx twice
        ("2024-07-01 12:00", "America/New_York", 8, "weekday"),
        ("2024-01-01 12:00", "America/New_York", 7, "weekday"),
        ("2024-07-01 12:00", "Australia/Sydney", 22, "weekday"),
        ("2024-01-05 20:00", "Asia/Kolkata", 1, "weekend"),  # Friday UTC = Saturday 01:30 local
        ("2024-07-05 22:30", "Europe/Berlin", 0, "weekend"),  # Friday UTC = Saturday 00:30 local
        ("2024-07-06 22:30", "America/Los_Angeles", 15, "weekend"),
        ("2024-07-06 22:30", "Mars/Olympus", 22, "weekend"),
        ("2024-07-08 03:00", None, 3, "weekday"),
        ("2024-07-08 03:00", "", 3, "weekday"),
    ]
    instants = pd.Series(pd.to_datetime([r[0] for r in rows]).tz_localize("UTC"))
    zones = pd.Series([r[1] for r in rows], dtype=object)
    local = local_time(instants, zones)
    assert local["local_hour"].tolist() == [r[2] for r in rows]
    assert local["day_type"].tolist() == [r[3] for r in rows]
    assert local["timezone_known"].tolist() == [True] * 10 + [False] * 3
    assert local["timezone"].iloc[-3:].tolist() == ["UTC"] * 3
    with pytest.raises(ValueError, match="timezone-aware"):
        local_time(pd.Series(pd.to_datetime(["2024-01-01"])), pd.Series(["UTC"]))


def test_quiet_hours_convention():
    assert np.flatnonzero(quiet_mask((23, 6))).tolist() == [0, 1, 2, 3, 4, 5, 23]
    assert np.flatnonzero(quiet_mask((1, 3))).tolist() == [1, 2]
    assert not quiet_mask(None).any()
    assert SendTimeConfig(quiet_hours=[22, 7]).quiet_hours == (22, 7)  # JSON round trip
    with pytest.raises(ValueError, match="ambiguous"):
        SendTimeConfig(quiet_hours=(5, 5))


# --- shrinkage, cold start, recommendations ---------------------------------------------------------


def test_one_send_stays_near_the_prior_many_sends_find_their_own_peak(hand_store):
    engagement, customers = hand_store
    fit = fit_send_time(engagement, _no_orders(), customers, AS_OF, SendTimeConfig(quiet_hours=None))
    prior = _curve(fit, 1003)  # no history: the prior
    assert int(prior.argmax()) in (9, 10, 11)
    one_send = _curve(fit, 1001)
    assert int(one_send.argmax()) == int(prior.argmax())
    # the one opened send raises the level, and a little more around 15:00, but keeps the prior's shape
    shape = one_send / one_send.mean() - prior / prior.mean()
    assert np.abs(shape).max() < 0.35
    many = _curve(fit, 1002)
    assert abs(int(many.argmax()) - 19) <= 1
    assert many[19] > 2 * prior[19]


def test_cold_starts_get_the_prior_and_match_prior_recommendations(hand_store):
    engagement, customers = hand_store
    config = SendTimeConfig()
    fit = fit_send_time(engagement, _no_orders(), customers, AS_OF, config)
    table = recommend_send_times(fit).set_index("customer_id")
    cold = table.loc[1003]
    assert cold["signal"] == "prior" and cold["n_events"] == 0
    prior_curve = fit.priors.query("segment == 'GB' and day_type == 'any'").sort_values("hour")["open_rate"]
    np.testing.assert_allclose(_curve(fit, 1003), prior_curve.to_numpy(), rtol=1e-5)
    from_priors = prior_recommendations(fit.priors, customers[customers["customer_id"] == 1003], config).iloc[0]
    assert from_priors["best_hour"] == cold["best_hour"]
    assert from_priors["expected_rate_best"] == pytest.approx(cold["expected_rate_best"], rel=1e-5)
    assert table.loc[1002, "signal"] == "email" and table.loc[1002, "n_events"] == 300 + engagement.query("customer_id == 1002")["opens"].sum()


def test_recommendations_avoid_quiet_hours_and_runner_up_is_two_hours_away(hand_store):
    engagement, customers = hand_store
    # customer 1002 peaks at 19:00, inside these quiet hours
    config = SendTimeConfig(quiet_hours=(18, 9), default_send_hour=20)
    fit = fit_send_time(engagement, _no_orders(), customers, AS_OF, config)
    table = recommend_send_times(fit)
    assert list(table.columns) == list(RECOMMENDATION_COLUMNS)
    assert len(table) == len(customers) and table["customer_id"].is_unique
    quiet = set(np.flatnonzero(quiet_mask(config.quiet_hours)))
    assert not set(table["best_hour"]) & quiet
    assert not set(table["runner_up_hour"].dropna().astype(int)) & quiet
    distance = (table["best_hour"] - table["runner_up_hour"]).abs() % 24
    assert (np.minimum(distance, 24 - distance).dropna() >= 2).all()
    # the runner-up is the best of the allowed hours at least 2 h away
    row = table.set_index("customer_id").loc[1002]
    curve = _curve(fit, 1002)
    assert row["best_hour"] == 17  # nearest allowed hour to the 19:00 peak
    assert row["runner_up_hour"] == 15
    assert row["expected_rate_best"] == pytest.approx(curve[17], rel=1e-6)
    assert row["expected_rate_default"] == pytest.approx(curve[20], rel=1e-6)  # reported though quiet
    assert row["lift_vs_default"] == pytest.approx(curve[17] / curve[20] - 1, rel=1e-5)
    # 9..17 allowed: a best hour at 9 or 10 has a runner-up; none is missing here
    assert table["runner_up_hour"].notna().all()
    narrow = recommend_send_times(fit_send_time(engagement, _no_orders(), customers, AS_OF,
                                                SendTimeConfig(quiet_hours=(12, 10))))
    assert set(narrow["best_hour"]) <= {10, 11} and narrow["runner_up_hour"].isna().all()


def test_hours_without_send_history_are_not_recommended(hand_store):
    engagement, customers = hand_store  # sends only at 06:00-22:00
    table = recommend_send_times(fit_send_time(engagement, _no_orders(), customers, AS_OF, SendTimeConfig(quiet_hours=None)))
    assert table["best_hour"].between(6, 22).all()


def test_by_day_type_gives_weekday_and_weekend_rows(hand_store):
    engagement, customers = hand_store
    fit = fit_send_time(engagement, _no_orders(), customers, AS_OF, SendTimeConfig(by_day_type=True, day_type_pooling=1.0))
    assert fit.curves.shape == (len(customers), 2, 24)
    table = recommend_send_times(fit)
    assert len(table) == 2 * len(customers)
    assert (table.groupby("customer_id")["day_type"].agg(lambda d: tuple(sorted(d))) == ("weekday", "weekend")).all()
    # no weekday / weekend difference in the data: with full pooling both curves of 1002 peak alike
    assert abs(int(_curve(fit, 1002, 0).argmax()) - int(_curve(fit, 1002, 1).argmax())) <= 1


def test_tuning_chooses_day_types_when_weekends_differ():
    rng = np.random.default_rng(5)
    n_customers, n_sends = 400, 60
    customer = np.repeat(np.arange(1, n_customers + 1), n_sends)
    day = AS_OF.tz_localize(None).normalize() - pd.to_timedelta(rng.integers(1, 150, len(customer)), unit="D")
    hour = rng.integers(6, 23, len(customer))
    peak = np.where(day.dayofweek >= 5, 19.0, 9.0)
    opened = rng.random(len(customer)) < 0.5 * (0.1 + 0.9 * _bell(hour, peak))
    engagement = _engagement(customer, day.to_numpy() + hour.astype("timedelta64[h]"), np.ones(len(customer)), opened)
    customers = _customers(np.arange(1, n_customers + 1))
    tuning = tune_send_time(engagement, _no_orders(), customers, AS_OF, SendTimeConfig(holdout_days=56), n_trials=10)
    assert tuning.config.by_day_type
    table = recommend_send_times(fit_send_time(engagement, _no_orders(), customers, AS_OF, tuning.config))
    best = table.groupby("day_type")["best_hour"].median()
    assert abs(best["weekday"] - 9) <= 1 and abs(best["weekend"] - 19) <= 1


def test_the_objective_is_the_policy_value_only_where_send_hours_vary():
    rng = np.random.default_rng(8)
    n_customers, n_sends = 300, 40
    customer = np.repeat(np.arange(1, n_customers + 1), n_sends)
    day = AS_OF.tz_localize(None).normalize() - pd.to_timedelta(rng.integers(1, 150, len(customer)), unit="D")
    peak = np.repeat(rng.choice([9.0, 14.0, 19.0], n_customers), n_sends)
    customers = _customers(np.arange(1, n_customers + 1))

    def store(hour: np.ndarray) -> pd.DataFrame:
        opened = rng.random(len(customer)) < 0.4 * (0.1 + 0.9 * _bell(hour, peak))
        return _engagement(customer, day.to_numpy() + hour.astype("timedelta64[h]"), np.ones(len(customer)), opened)

    varied = store(rng.integers(6, 23, len(customer)))
    scores = send_time_backtest(varied, _no_orders(), customers, AS_OF)
    assert scores["policy_hours"] == 17 and scores["objective_is_policy"] == 1.0
    assert scores["objective"] == pytest.approx(1.0 / scores["policy_lift"]) and scores["policy_lift"] > 1.3
    # recommending the customers' own peaks beats recommending nothing personal (one hour for everyone)
    assert scores["policy_lift"] > send_time_backtest(varied, _no_orders(), customers, AS_OF,
                                                      SendTimeConfig(prior_strength=1e9))["policy_lift"] + 0.2
    forced = send_time_backtest(varied, _no_orders(), customers, AS_OF, SendTimeConfig(objective="log_loss"))
    assert forced["objective_is_policy"] == 0.0 and forced["objective"] == forced["log_loss"]
    # two send hours (below POLICY_MIN_HOURS): the policy value is too thin to tune on, log loss decides
    two_hours = store(rng.choice([10, 18], len(customer)))
    scores = send_time_backtest(two_hours, _no_orders(), customers, AS_OF)
    assert scores["policy_hours"] == 2 and scores["objective_is_policy"] == 0.0 and scores["objective"] == scores["log_loss"]
    tuning = tune_send_time(two_hours, _no_orders(), customers, AS_OF, n_trials=3)
    assert tuning.value == pytest.approx(tuning.metrics["log_loss"])
    with pytest.raises(ValueError, match="objective"):
        SendTimeConfig(objective="open_rate")
    config = SendTimeConfig(objective="policy", policy_folds=3)
    assert SendTimeConfig(**json.loads(json.dumps(dataclasses.asdict(config)))) == config


def test_segments_below_the_minimum_use_the_global_prior(hand_store):
    engagement, customers = hand_store
    customers = customers.assign(country=np.where(customers["customer_id"] <= 250, "GB", "FR"))
    fit = fit_send_time(engagement, _no_orders(), customers, AS_OF, SendTimeConfig(min_segment_customers=100))
    assert set(fit.priors["segment"]) == {"GB", GLOBAL_SEGMENT}
    assert set(fit.segment[fit.customer_id > 250]) == {GLOBAL_SEGMENT}
    assert set(fit.segment[fit.customer_id <= 250]) == {"GB"}


# --- activity-only stores ---------------------------------------------------------------------------


def _activity_store() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """No email at all: customers 1-75 browse around 09:00 UTC, 76-150 around 20:00, 190 only orders
    between 13:00 and 14:00, the rest nothing (engagement, orders, customers)."""
    rng = np.random.default_rng(3)
    ids = np.arange(1, 201)
    day = AS_OF.tz_localize(None).normalize() - pd.to_timedelta(rng.integers(1, 120, 4000), unit="D")
    customer = rng.choice(ids[:150], 4000)
    hour = np.where(customer <= 75, rng.normal(9, 1.0, 4000), rng.normal(20, 1.0, 4000)).round().astype(int) % 24
    engagement = _engagement(customer, day.to_numpy() + hour.astype("timedelta64[h]"), np.zeros(4000), np.zeros(4000),
                             sessions=np.ones(4000))
    order_ts = pd.Series(pd.date_range("2024-05-01 13:20", periods=12, freq="5D", tz="UTC"))
    orders = pd.DataFrame({"order_id": np.arange(1, 13), "customer_id": 190, "order_ts": order_ts, "status": "completed"})
    return engagement, orders, _customers(ids)


def test_a_store_without_email_recommends_from_sessions_and_order_hours():
    engagement, orders, customers = _activity_store()
    ids = customers["customer_id"].to_numpy()
    fit = fit_send_time(engagement, orders, customers, AS_OF, SendTimeConfig())
    assert not fit.uses_email
    np.testing.assert_allclose(fit.curves.sum(axis=-1), 1.0, rtol=1e-5)  # activity shares
    table = recommend_send_times(fit).set_index("customer_id")
    assert set(table.loc[ids[:150], "signal"]) == {"activity"}
    assert table.loc[190, "signal"] == "activity" and table.loc[190, "n_events"] == 12
    assert table.loc[200, "signal"] == "prior"
    assert table.loc[ids[:75], "best_hour"].between(8, 10).mean() > 0.95
    assert table.loc[ids[75:150], "best_hour"].between(19, 21).mean() > 0.95
    assert table.loc[190, "best_hour"] == 13
    # orders only (no clickstream at all, like UCI Online Retail)
    only_orders = fit_send_time(engagement.iloc[:0], orders, customers, AS_OF)
    assert recommend_send_times(only_orders).set_index("customer_id").loc[190, "best_hour"] == 13
    scores = send_time_backtest(engagement, orders, customers, AS_OF)
    assert scores["email_evidence"] == 0.0 and scores["log_loss"] < scores["log_loss_global"]
    assert scores["objective_is_policy"] == 0.0 and scores["objective"] == scores["log_loss"]  # no opens to measure
    assert send_time_backtest(engagement, orders, customers, AS_OF, SendTimeConfig(objective="policy"))["objective"] == scores["log_loss"]


def test_an_activity_only_store_is_tested_on_its_sessions_and_orders():
    engagement, orders, customers = _activity_store()
    frames = {"engagement_by_hour": engagement, "orders": orders, "customers": customers}
    params = RunParams(n_trials=2, seed=1)
    data = FAMILY.training_data(frames, AS_OF.date(), params)
    trained = FAMILY.train(data, params, [])
    test, baseline = trained.test, trained.baseline
    assert test.window.startswith("sessions and orders in [2024-06-03, 2024-07-01)")
    inside = engagement["hour_utc"] >= AS_OF - pd.Timedelta(days=28)
    assert test.y[:, 0].sum() == engagement.loc[inside, "sessions"].sum() + (orders["order_ts"] >= AS_OF - pd.Timedelta(days=28)).sum()
    np.testing.assert_array_equal(test.y[:, 0], test.y[:, 1])  # every event a success: the categorical log loss
    np.testing.assert_allclose(baseline.predicted, 1 / 24)  # no hour preference: a flat share
    assert baseline.value(FAMILY.metric) == pytest.approx(np.log(24))
    assert compare(test, baseline, FAMILY.metric).significant(0.05)
    assert trained.metrics["test_log_loss"] < trained.metrics["test_log_loss_global"]  # two groups of hours: personal wins


# --- synthetic store through the real extract SQL ---------------------------------------------------


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    from revopt.platform.events import open_event_store
    from revopt.platform.extract import engagement_by_hour
    from revopt.platform.stack import close_event_stores

    store = generate_store(4000, DAYS, START, seed=3)
    run_ts = pd.Timestamp(START, tz="UTC") + pd.Timedelta(days=DAYS)
    close_event_stores()  # chDB serves one data folder per process at a time
    events = open_event_store(url=None, chdb_path=Path(tmp_path_factory.mktemp("chdb")), database="revopt")
    try:
        events.insert_arrow("events", pa.Table.from_pandas(store.events, preserve_index=False))
        engagement = engagement_by_hour(events, run_ts - pd.Timedelta(days=DAYS), run_ts)
    finally:
        events.close()
    return store, engagement, run_ts


def _within_one_hour(table: pd.DataFrame, truth: pd.Series, ids: pd.Index) -> float:
    best = table.set_index("customer_id")["best_hour"].reindex(ids).to_numpy()
    distance = np.abs(best - truth.reindex(ids).to_numpy()) % 24
    return float((np.minimum(distance, 24 - distance) <= 1).mean())


def test_synthetic_store_beats_the_global_curve_and_recovers_best_hours(synthetic):
    store, engagement, run_ts = synthetic
    customers, orders = store.shop["customers"], store.shop["orders"]
    customers_before, engagement_before = customers.copy(), engagement.copy()
    scores = send_time_backtest(engagement, orders, customers, run_ts)
    assert scores["log_loss"] < 0.97 * scores["log_loss_global"]
    assert scores["log_loss"] < scores["log_loss_prior"] < scores["log_loss_flat"]
    assert scores["lift_near_best"] > 1.4
    truth = store.truth["customers"].set_index("customer_id")["best_hour_local"]
    sends = engagement.groupby("customer_id")["sends"].sum()
    ids = sends.index[sends >= 20]
    assert len(ids) > 1000
    ours = recommend_send_times(fit_send_time(engagement, orders, customers, run_ts))
    prior_only = recommend_send_times(fit_send_time(engagement, orders, customers, run_ts, SendTimeConfig(prior_strength=1e9)))
    assert _within_one_hour(ours, truth, ids) > _within_one_hour(prior_only, truth, ids) + 0.2
    assert set(ours["signal"]) == {"email", "prior"}  # activity_weight 0: sessions do not tilt email curves
    pd.testing.assert_frame_equal(customers, customers_before)
    pd.testing.assert_frame_equal(engagement, engagement_before)


def test_tuning_is_seeded_logs_trials_and_never_loses_to_the_default(synthetic):
    store, engagement, run_ts = synthetic
    customers, orders = store.shop["customers"], store.shop["orders"]
    seen = []
    config = SendTimeConfig(random_state=4)
    first = tune_send_time(engagement, orders, customers, run_ts, config, n_trials=6, timeout_seconds=60,
                           callbacks=[lambda study, trial: seen.append(trial.number)])
    again = tune_send_time(engagement, orders, customers, run_ts, config, n_trials=6, timeout_seconds=60)
    assert seen == list(range(6)) and first.n_trials == 6
    assert first.config == again.config and first.value == again.value
    assert first.value <= first.default_value
    # the value is the backtest's objective: here the policy value (the store sends at 17 local hours)
    backtest = send_time_backtest(engagement, orders, customers, run_ts, first.config)
    assert first.value == pytest.approx(backtest["objective"])
    assert backtest["objective_is_policy"] == 1.0 and backtest["objective"] == pytest.approx(1.0 / backtest["policy_lift"])
    assert first.metrics["log_loss"] == pytest.approx(backtest["log_loss"]) and "complexity" not in first.metrics
    assert first.config.quiet_hours == config.quiet_hours and first.config.random_state == 4
    assert not first.config.by_day_type  # the synthetic store has no weekday / weekend difference


def _objective_of(monkeypatch, objective) -> None:
    """Make the backtest's objective ``objective(config)`` (the other scores stay real)."""
    from ml.families.send_time import backtest

    real = backtest._score

    def scored(backtest, config, policy=True):
        return {**real(backtest, config, policy), "objective": objective(config)}

    monkeypatch.setattr(backtest, "_score", scored)


@pytest.mark.parametrize("broken", [float("nan"), float("-inf")])
def test_tuning_keeps_the_given_config_over_trials_with_a_non_finite_objective(hand_store, monkeypatch, broken):
    engagement, customers = hand_store
    given = SendTimeConfig(random_state=2)
    _objective_of(monkeypatch, lambda config: 0.7 if config == given else broken)
    tuned = tune_send_time(engagement, _no_orders(), customers, AS_OF, given, n_trials=3, timeout_seconds=60)
    assert tuned.config == given and tuned.value == 0.7 and tuned.n_trials == 0


def test_tuning_replaces_a_given_config_without_a_finite_objective(hand_store, monkeypatch):
    engagement, customers = hand_store
    given = SendTimeConfig(random_state=2)
    _objective_of(monkeypatch, lambda config: float("nan") if config == given else 0.9)
    tuned = tune_send_time(engagement, _no_orders(), customers, AS_OF, given, n_trials=3, timeout_seconds=60)
    assert tuned.config != given and tuned.value == 0.9
    _objective_of(monkeypatch, lambda config: float("nan"))  # nothing scores: the given config, its NaN for the gate
    tuned = tune_send_time(engagement, _no_orders(), customers, AS_OF, given, n_trials=2, timeout_seconds=60)
    assert tuned.config == given and np.isnan(tuned.value)


def test_training_data_shortfall_needs_evidence_in_the_tuning_and_the_test_windows(hand_store):
    engagement, customers = hand_store
    assert training_data_shortfall(engagement, _no_orders(), customers, AS_OF) is None
    # tuning fits before 2024-05-06 and scores to 2024-06-03; the test window is 2024-06-03 to 2024-07-01
    recent = engagement[engagement["hour_utc"] >= AS_OF - pd.Timedelta(days=5)]
    reason = training_data_shortfall(recent, _no_orders(), customers, AS_OF)
    assert reason.startswith("0 email sends / sessions / orders of known customers before 2024-05-06, 0 from then to "
                             "2024-06-03 and ")
    assert "the gate tests on the last 28 days" in reason and "2024-07-01" in reason
    old = engagement[engagement["hour_utc"] < AS_OF - pd.Timedelta(days=30)]
    assert "and 0 from then to 2024-07-01" in training_data_shortfall(old, _no_orders(), customers, AS_OF)
    strangers = customers.assign(customer_id=customers["customer_id"] + 10_000)
    assert training_data_shortfall(engagement, _no_orders(), strangers, AS_OF).startswith("0 email sends")
    # the store stopped emailing before the tuning's held-out window: no opens to score there
    stopped = engagement.assign(sessions=1)
    late = stopped["hour_utc"] >= AS_OF - pd.Timedelta(days=56)
    stopped.loc[late, ["sends", "opens"]] = 0
    reason = training_data_shortfall(stopped, _no_orders(), customers, AS_OF)
    assert reason.startswith("244 email sends of known customers before 2024-05-06, 0 from then to 2024-06-03 and 0 ")
    assert reason.endswith("each later window needs sends to score opens on")
    # a store that starts emailing in the test window is scored on its sessions before that: fine
    started = engagement.assign(sessions=1)
    started.loc[started["hour_utc"] < AS_OF - pd.Timedelta(days=28), ["sends", "opens"]] = 0
    assert training_data_shortfall(started, _no_orders(), customers, AS_OF) is None


def test_prior_recommendations_need_no_history(synthetic):
    store, engagement, run_ts = synthetic
    config = SendTimeConfig(by_day_type=True)
    fit = fit_send_time(engagement, store.shop["orders"], store.shop["customers"], run_ts, config)
    newcomers = pd.DataFrame({"customer_id": [9_000_001, 9_000_002, 9_000_003],
                              "timezone": ["Europe/London", "Not/AZone", "Australia/Sydney"], "country": ["GB", "GB", "ZZ"]})
    predicted = prior_recommendations(fit.priors, newcomers, config)
    assert len(predicted) == 6 and set(predicted["signal"]) == {"prior"}
    assert predicted["timezone"].tolist()[2:4] == ["UTC", "UTC"]
    assert not set(predicted["best_hour"]) & set(np.flatnonzero(quiet_mask(config.quiet_hours)))


# --- the nightly input, the pyfunc and the family ---------------------------------------------------


def _frames(store, engagement) -> dict[str, pd.DataFrame]:
    return {"engagement_by_hour": engagement, "orders": store.shop["orders"], "customers": store.shop["customers"]}


def test_the_one_frame_input_splits_back_into_the_frames_the_model_reads(synthetic):
    store, engagement, run_ts = synthetic
    customers, orders = store.shop["customers"], store.shop["orders"]
    recent = engagement[engagement["hour_utc"] >= run_ts - pd.Timedelta(days=100)]  # an index with gaps
    frame = engagement_input(recent, orders, customers)
    assert frame["source"].value_counts().to_dict() == {"engagement_by_hour": len(recent), "orders": len(orders),
                                                        "customers": len(customers)}
    e, o, c = split_engagement_input(frame)
    pd.testing.assert_frame_equal(e, recent.reset_index(drop=True))
    pd.testing.assert_frame_equal(o, orders[["customer_id", "order_ts"]].reset_index(drop=True))
    pd.testing.assert_frame_equal(c, customers[["customer_id", "timezone", "country"]].reset_index(drop=True))
    # the model reads the same evidence from the split frames as from the extracts
    pd.testing.assert_frame_equal(recommend_send_times(fit_send_time(e, o, c, run_ts)),
                                  recommend_send_times(fit_send_time(recent, orders, customers, run_ts)))
    # a store without clickstream, and a customer without a time zone or country
    missing = customers.assign(timezone=customers["timezone"].where(customers["customer_id"] != 1, None),
                               country=customers["country"].where(customers["customer_id"] != 2, None))
    e, o, c = split_engagement_input(engagement_input(engagement.iloc[:0], orders, missing))
    assert e.empty and list(e.columns) == list(engagement.columns) and (e.dtypes == engagement.dtypes).all()
    pd.testing.assert_frame_equal(c, missing[["customer_id", "timezone", "country"]].reset_index(drop=True))
    with pytest.raises(ValueError, match="source"):
        split_engagement_input(frame.drop(columns="source"))


def test_the_nightly_input_is_the_nightly_window(synthetic):
    store, engagement, run_ts = synthetic
    params = RunParams(lookback_days=90)
    frames = _frames(store, engagement)
    since = run_ts - pd.Timedelta(days=90)
    window = engagement_input(engagement[engagement["hour_utc"] >= since], store.shop["orders"].loc[lambda f: f["order_ts"] >= since],
                              store.shop["customers"])
    pd.testing.assert_frame_equal(FAMILY.nightly_input(frames, run_ts.date(), params), window)
    assert FAMILY.predict_params(run_ts.date(), params) == {"as_of": run_ts.date().isoformat(), "send_quiet_start": 23,
                                                            "send_quiet_end": 6, "default_send_hour": 10}


def test_send_time_model_predicts_the_nightly_recommendations_and_pickles(synthetic):
    store, engagement, run_ts = synthetic
    customers, orders = store.shop["customers"], store.shop["orders"]
    config = SendTimeConfig(by_day_type=True, prior_strength=3.0)
    fit = fit_send_time(engagement, orders, customers, run_ts, config)
    model = cloudpickle.loads(cloudpickle.dumps(SendTimeModel(config, run_ts.date().isoformat(), fit.priors)))
    inputs = engagement_input(engagement, orders, customers)
    # without params: the logged config at the training run date
    predicted = model.predict(None, inputs)
    assert tuple(predicted.columns) == PUBLISHED_COLUMNS
    pd.testing.assert_frame_equal(predicted, recommend_send_times(fit)[list(PUBLISHED_COLUMNS)])
    # tonight's settings: another date, quiet hours and default hour (the logged config otherwise)
    as_of = run_ts - pd.Timedelta(days=30)
    params = {"as_of": as_of.date().isoformat(), "send_quiet_start": 21, "send_quiet_end": 8, "default_send_hour": 9}
    tonight = dataclasses.replace(config, quiet_hours=(21, 8), default_send_hour=9)
    expected = recommend_send_times(fit_send_time(engagement, orders, customers, as_of, tonight))[list(PUBLISHED_COLUMNS)]
    pd.testing.assert_frame_equal(model.predict(None, inputs, params), expected)
    assert not set(expected["best_hour"]) & set(np.flatnonzero(quiet_mask((21, 8))))
    no_quiet = model.predict(None, inputs, {"send_quiet_start": 5, "send_quiet_end": 5})
    pd.testing.assert_frame_equal(no_quiet, recommend_send_times(fit_send_time(
        engagement, orders, customers, run_ts, dataclasses.replace(config, quiet_hours=None)))[list(PUBLISHED_COLUMNS)])
    with pytest.raises(ValueError, match="together"):
        model.predict(None, inputs, {"send_quiet_start": 21})
    with pytest.raises(ValueError, match="unknown send-time params"):
        model.predict(None, inputs, {"quiet": 21})


def test_the_evidence_summed_over_slices_of_rows_is_the_cube_of_every_row(synthetic):
    """fit_send_time sums the cube over slices of rows (memory at scale): the same cube as one pass, to the bit."""
    from ml.families.send_time.evidence import _cube, _customers, _row_slices, _rows

    store, engagement, run_ts = synthetic
    orders, customers = store.shop["orders"], store.shop["customers"]
    people = _customers(customers, SendTimeConfig())
    whole = _cube(_rows(engagement, orders, people, run_ts), len(people.customer_id))
    sliced = _cube(_row_slices(engagement, orders, people, run_ts, slice_rows=997), len(people.customer_id))
    assert len(engagement) > 10 * 997 and whole.sends.sum() > 0
    for name in ("sends", "opens", "activity", "n_events"):
        np.testing.assert_array_equal(getattr(sliced, name), getattr(whole, name), err_msg=name)


def test_family_shortfall_reads_the_nightly_window(hand_store):
    engagement, customers = hand_store
    frames = {"engagement_by_hour": engagement, "orders": _no_orders(), "customers": customers}
    assert FAMILY.shortfall(frames, AS_OF.date(), RunParams()) is None
    # a window no longer than the tuning's and the test's held-out days leaves nothing to fit on
    reason = FAMILY.shortfall(frames, AS_OF.date(), RunParams(lookback_days=56))
    assert reason.startswith("0 email sends / sessions / orders of known customers before 2024-05-06, ")
    assert send_time_config(RunParams(send_quiet_start=4, send_quiet_end=4, seed=9)) == SendTimeConfig(quiet_hours=None,
                                                                                                     random_state=9)


FAMILY_PARAMS = RunParams(n_trials=3, seed=4, backtest_origins=2)


@pytest.fixture(scope="module")
def family_run(synthetic):
    """The family trained on the synthetic store: its data, the Trained and the (number, value) of
    every tuning trial."""
    store, engagement, run_ts = synthetic
    data = FAMILY.training_data(_frames(store, engagement), run_ts.date(), FAMILY_PARAMS)
    trials = []
    trained = FAMILY.train(data, FAMILY_PARAMS, [lambda study, trial: trials.append((trial.number, trial.value))])
    return data, trained, trials


def test_family_trains_a_model_whose_example_predicts_and_evaluates_its_spec(family_run):
    from mlflow.models import infer_signature

    from ml import plots

    data, trained, trials = family_run
    metric = FAMILY.metric
    assert FAMILY.name == "send_time" and FAMILY.model_name == MODEL_NAME == "revopt_send_time"
    assert [number for number, _ in trials] == [0, 1, 2] and trained.spec["family"] == "send_time"
    spec = json.loads(json.dumps(trained.spec))
    assert SendTimeConfig(**spec["config"]) == trained.model.config and trained.model.as_of == data.run_date.isoformat()
    assert FAMILY.evaluate(data, {"family": "pricing", "config": {}}, FAMILY_PARAMS) is None
    assert FAMILY.evaluate(data, {"family": "send_time", "config": {"no_such_field": 1}}, FAMILY_PARAMS) is None
    # tuning's numbers are valid_*, the test window's test_* (the same log loss the gate computes)
    assert metric.name == "log_loss" and not metric.higher_is_better and metric.relative_margin
    assert np.isfinite(trained.test.value(metric)) and trained.metrics["test_log_loss"] == trained.test.value(metric)
    assert trained.metrics["baseline_log_loss"] == trained.baseline.value(metric)
    assert trained.metrics["test_log_loss"] < trained.metrics["test_log_loss_global"]
    assert {"valid_objective", "valid_log_loss", "test_lift_near_best", "test_sends"} <= set(trained.metrics)
    assert trained.metrics["test_sends"] == trained.test.y[:, 0].sum()
    assert trained.params["quiet_hours"] == "(23, 6)" and "seed" not in trained.params  # the runner logs the seed
    assert trained.params["test_start"] == "2024-12-03"
    assert set(trained.tables) == {"send_time_priors.json"} and set(trained.figures) == {"send_times.png"}
    assert trained.example["customer_id"].nunique() == 5 and set(trained.example["source"]) <= {"customers", "engagement_by_hour", "orders"}
    output = trained.model.predict(None, trained.example, trained.predict_params)
    assert output["customer_id"].nunique() == 5 and tuple(output.columns) == PUBLISHED_COLUMNS
    infer_signature(trained.example, output, params=trained.predict_params)
    for values in trained.checks.values():
        assert np.isfinite(values.to_numpy(dtype="float64")).all()
    plots.close(trained.figures["send_times.png"])


def test_the_test_rows_are_the_last_28_days_of_sends_grouped_by_customer(synthetic, family_run):
    store, engagement, run_ts = synthetic
    _, trained, _ = family_run
    test = trained.test
    assert test.window == "sends in [2024-12-03, 2024-12-31), customers' curves fitted on the history before 2024-12-03"
    inside = engagement[(engagement["hour_utc"] >= run_ts - pd.Timedelta(days=28)) & (engagement["sends"] > 0)]
    assert test.n == len(inside) and test.y[:, 0].sum() == inside["sends"].sum() and test.y[:, 1].sum() == inside["opens"].sum()
    assert sorted(test.groups.tolist()) == sorted(inside["customer_id"].tolist())
    assert np.array_equal(trained.baseline.y, test.y) and np.array_equal(trained.baseline.groups, test.groups)


def test_tuning_never_sees_the_test_window(synthetic, family_run):
    """Every send of the test window opened: tuning (its trials, its choice, its validation numbers),
    the test models fitted before the window and the backtest's earlier origin are unchanged; only the
    test outcomes move."""
    store, engagement, run_ts = synthetic
    data, trained, trials = family_run
    inside = engagement["hour_utc"] >= run_ts - pd.Timedelta(days=28)
    opened = engagement.assign(opens=engagement["opens"].where(~inside, engagement["sends"]))
    changed_data = FAMILY.training_data(_frames(store, opened), run_ts.date(), FAMILY_PARAMS)
    changed_trials = []
    changed = FAMILY.train(changed_data, FAMILY_PARAMS, [lambda study, trial: changed_trials.append((trial.number, trial.value))])
    assert changed_trials == trials and changed.spec == trained.spec
    valid = {key: value for key, value in trained.metrics.items() if key.startswith("valid_")}
    assert valid and {key: changed.metrics[key] for key in valid} == valid
    earlier = {key: value for key, value in trained.metrics.items() if key.endswith("_origin1")}
    assert earlier and {key: changed.metrics[key] for key in earlier} == earlier
    assert changed.metrics["backtest_log_loss_origin0"] == changed.metrics["test_log_loss"] != trained.metrics["test_log_loss"]
    np.testing.assert_array_equal(changed.test.predicted, trained.test.predicted)
    np.testing.assert_array_equal(changed.baseline.predicted, trained.baseline.predicted)
    assert changed.test.value(FAMILY.metric) > 5 * trained.test.value(FAMILY.metric)  # the outcomes did change


def test_the_rolling_origin_backtest_repeats_selection_and_test_one_window_earlier(synthetic, family_run):
    """Origin 0 is the run's test window; origin 1 is the family trained as of the run date minus one
    test window (28 days), with the earlier origins' tuning budget: the same numbers as a training run
    as of that date."""
    store, engagement, run_ts = synthetic
    _, trained, _ = family_run
    metrics, earlier = trained.metrics, earlier_origin_params(FAMILY_PARAMS)
    assert trained.params["backtest_origins"] == 2 and trained.params["backtest_window_days"] == 28
    assert trained.params["backtest_earlier_n_trials"] == earlier.n_trials == 2
    for key in BACKTEST_METRICS:
        assert {f"backtest_{key}_{suffix}" for suffix in ("origin0", "origin1", "mean", "std")} <= set(metrics), key
    assert metrics["backtest_log_loss_origin0"] == metrics["test_log_loss"]
    assert metrics["backtest_baseline_log_loss_origin0"] == metrics["baseline_log_loss"]
    assert metrics["backtest_lift_near_best_origin0"] == metrics["test_lift_near_best"]
    direct = FAMILY.train(FAMILY.training_data(_frames(store, engagement), run_ts.date() - dt.timedelta(days=28), earlier),
                          earlier, [])
    assert direct.test.window.startswith("sends in [2024-11-05, 2024-12-03)")
    assert metrics["backtest_log_loss_origin1"] == direct.metrics["test_log_loss"] != metrics["test_log_loss"]
    assert metrics["backtest_baseline_log_loss_origin1"] == direct.metrics["baseline_log_loss"]
    assert metrics["backtest_lift_near_best_origin1"] == direct.metrics["test_lift_near_best"]
    both = [metrics["test_log_loss"], direct.metrics["test_log_loss"]]
    assert metrics["backtest_log_loss_mean"] == pytest.approx(np.mean(both))
    assert metrics["backtest_log_loss_std"] == pytest.approx(np.std(both, ddof=1))


def test_the_backtest_stops_where_history_does_not_allow_an_origin(hand_store, caplog):
    """Sends from 70 days before the run date: origin 0 can fit before its tuning window (56 days back),
    origin 1 (28 days earlier) cannot; the backtest says so once and keeps origin 0."""
    engagement, customers = hand_store
    recent = engagement[engagement["hour_utc"] >= AS_OF - pd.Timedelta(days=70)]
    frames = {"engagement_by_hour": recent, "orders": _no_orders(), "customers": customers}
    with caplog.at_level("INFO", logger="ml.families.rolling_origin"):
        data = FAMILY.training_data(frames, AS_OF.date(), RunParams(backtest_origins=3))
    assert data.earlier == ()
    reason = FAMILY.shortfall(frames, dt.date(2024, 6, 3), RunParams())
    assert reason.startswith("0 email sends / sessions / orders of known customers before 2024-04-08, ")
    assert [r.getMessage() for r in caplog.records if r.name == "ml.families.rolling_origin"] == [
        "send_time backtest for 2024-07-01: history allows 1 origin(s); origin 1 (test window 2024-05-06 to 2024-06-02) "
        f"cannot train: {reason}"]
    two = FAMILY.training_data({**frames, "engagement_by_hour": engagement}, AS_OF.date(), RunParams(backtest_origins=2))
    assert [origin.run_date for origin in two.earlier] == [dt.date(2024, 6, 3)]
    assert two.earlier[0].engagement["hour_utc"].max() < pd.Timestamp("2024-06-03", tz="UTC")


def test_evaluate_refits_a_spec_exactly_as_the_candidates_test_model(family_run):
    data, trained, _ = family_run
    again = FAMILY.evaluate(data, json.loads(json.dumps(trained.spec)), FAMILY_PARAMS)
    np.testing.assert_array_equal(again.y, trained.test.y)
    np.testing.assert_array_equal(again.predicted, trained.test.predicted)
    np.testing.assert_array_equal(again.groups, trained.test.groups)
    # the run's test window, whatever holdout_days the champion's configuration carries
    older = {"family": "send_time", "config": {**trained.spec["config"], "holdout_days": 14}}
    shifted = FAMILY.evaluate(data, older, FAMILY_PARAMS)
    np.testing.assert_array_equal(shifted.y, trained.test.y)
    np.testing.assert_array_equal(shifted.predicted, trained.test.predicted)


def test_a_config_without_personal_hours_loses_to_the_tuned_one_on_the_test_window(family_run):
    """Customers in the synthetic store have their own best hours: a champion that ignores them
    (prior_strength 1e6: every curve is the customer's level x the segment's) is beaten on the test
    window, significantly, and the gate promotes the candidate over it."""
    data, trained, _ = family_run
    worse = dataclasses.replace(trained.model.config, prior_strength=1e6)
    champion = FAMILY.evaluate(data, config_spec("send_time", worse), FAMILY_PARAMS)
    comparison = compare(trained.test, champion, FAMILY.metric)
    assert comparison.gain > 0 and comparison.p_value < 0.05
    decision = decide(model_name=MODEL_NAME, candidate_version="2", metric=FAMILY.metric, candidate=trained.test,
                      baseline=trained.baseline, champion_version="1", champion=champion, margin=0.005)
    assert decision.promoted, decision.reason


def test_the_no_hour_preference_baseline_loses_to_the_trained_model(synthetic, family_run):
    _, engagement, _ = synthetic
    _, trained, _ = family_run
    baseline = trained.baseline
    assert baseline.name == "no-hour-preference baseline"
    # one rate per customer, whatever the hour
    assert (pd.Series(baseline.predicted).groupby(baseline.groups).nunique() == 1).all()
    comparison = compare(trained.test, baseline, FAMILY.metric)
    assert comparison.significant(0.05), comparison.describe(FAMILY.metric.name)
    decision = decide(model_name=MODEL_NAME, candidate_version="1", metric=FAMILY.metric, candidate=trained.test,
                      baseline=baseline, champion_version=None, champion=None, margin=0.005)
    assert decision.promoted and decision.baseline == "no-hour-preference baseline"


def test_log_loss_is_the_backtests_and_recomputes_from_rows():
    y = np.array([[2.0, 1.0], [1.0, 0.0], [3.0, 3.0]])
    p = np.array([0.5, 0.2, 0.9])
    expected = -(np.log(0.5) + np.log(0.5) + np.log(0.8) + 3 * np.log(0.9)) / 6
    assert log_loss(y, p) == pytest.approx(expected)
    assert log_loss(y[[0, 0, 2]], p[[0, 0, 2]]) == pytest.approx(-(4 * np.log(0.5) + 3 * np.log(0.9)) / 7)
    with pytest.raises(ValueError, match="without sends"):
        log_loss(np.zeros((2, 2)), np.full(2, 0.5))


def test_send_time_figure_draws_priors_and_recommended_hours(synthetic):
    from ml import plots

    store, engagement, run_ts = synthetic
    fit = fit_send_time(engagement, store.shop["orders"], store.shop["customers"], run_ts)
    fig = plots.send_time_figure(fit.priors, recommend_send_times(fit), "send time", quiet_hours=(23, 6))
    assert len(fig.axes) == 2
    plots.close(fig)


# --- malformed input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda e, o, c: (e.drop(columns="opens"), o, c), r"engagement is missing column\(s\) \['opens'\]"),
        (lambda e, o, c: (e.assign(sends=-e["sends"]), o, c), "engagement.sends must be non-negative"),
        (lambda e, o, c: (e.assign(opens=e["sends"] + 1), o, c), "engagement.opens exceeds engagement.sends"),
        (lambda e, o, c: (e.assign(hour_utc=e["hour_utc"].dt.tz_localize(None)), o, c), "engagement.hour_utc must be timezone-aware"),
        (lambda e, o, c: (e, o.drop(columns="order_ts"), c), r"orders is missing column\(s\) \['order_ts'\]"),
        (lambda e, o, c: (e, o, c.drop(columns="timezone")), r"customers is missing column\(s\) \['timezone'\]"),
        (lambda e, o, c: (e, o, c.drop(columns="country")), "segment column 'country'"),
        (lambda e, o, c: (e, o, pd.concat([c, c.head(1)])), "customers.customer_id has 1 duplicates"),
        (lambda e, o, c: (e.assign(customer_id=e["customer_id"].astype(float)), o, c), "engagement.customer_id must be integer"),
    ],
)
def test_malformed_inputs_are_named_in_the_error(hand_store, change, message):
    engagement, customers = hand_store
    e, o, c = change(engagement, _no_orders(), customers)
    with pytest.raises(ValueError, match=message):
        fit_send_time(e, o, c, AS_OF)


@pytest.mark.parametrize("field", ["prior_strength", "level_strength", "activity_strength", "segment_strength"])
def test_config_rejects_out_of_range_values(field):
    with pytest.raises(ValueError, match=field):
        dataclasses.replace(SendTimeConfig(), **{field: 0.0})
    with pytest.raises(ValueError, match="default_send_hour"):
        SendTimeConfig(default_send_hour=24)
