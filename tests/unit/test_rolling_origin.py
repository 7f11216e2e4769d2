"""The rolling-origin backtest's shared rules for pricing, send time and budget (ml.families.rolling_origin)
and the training extract that has to reach back far enough for it (ml.params)."""

from __future__ import annotations

import datetime as dt

import pytest

from ml.families.budget import MediaConfig
from ml.families.pricing import BACKTEST_DAYS
from ml.families.rolling_origin import backtest_params, earlier_origin_params, earlier_origins
from ml.families.send_time import SendTimeConfig
from ml.params import LONGEST_TEST_WINDOW_DAYS, RunParams

RUN = dt.date(2024, 7, 1)


@pytest.mark.parametrize(("n_trials", "earlier"), [(12, 3), (40, 10), (7, 2), (2, 2), (1, 1)])
def test_earlier_origins_tune_with_a_quarter_of_the_trials_at_least_two_never_more_than_the_run(n_trials, earlier):
    params = RunParams(n_trials=n_trials, tuning_timeout_seconds=300.0, backtest_origins=5, seed=7)
    reduced = earlier_origin_params(params)
    assert reduced.n_trials == earlier and reduced.tuning_timeout_seconds == 75.0
    assert reduced.backtest_origins == 1 and reduced.seed == 7 and reduced.lookback_days == params.lookback_days
    assert backtest_params(params, 4, 28) == {"backtest_origins": 4, "backtest_window_days": 28,
                                              "backtest_earlier_n_trials": earlier,
                                              "backtest_earlier_timeout_seconds": 75.0}


def test_origins_move_back_one_window_each_and_stop_at_the_first_shortfall(caplog):
    asked = []

    def shortfall(origin: dt.date) -> str | None:
        asked.append(origin)
        return "too little history" if origin < dt.date(2024, 5, 1) else None

    with caplog.at_level("INFO", logger="ml.families.rolling_origin"):
        origins = earlier_origins("pricing", RUN, 28, RunParams(backtest_origins=6), shortfall)
    assert origins == [dt.date(2024, 6, 3), dt.date(2024, 5, 6)]
    assert asked == [*origins, dt.date(2024, 4, 8)]  # nothing asked after the first refusal
    assert [r.getMessage() for r in caplog.records if r.name == "ml.families.rolling_origin"] == [
        "pricing backtest for 2024-07-01: history allows 3 origin(s); origin 3 (test window 2024-03-11 to 2024-04-07) "
        "cannot train: too little history"]
    caplog.clear()
    assert earlier_origins("budget", RUN, 56, RunParams(backtest_origins=1), shortfall) == [] and not caplog.records
    assert earlier_origins("budget", RUN, 56, RunParams(backtest_origins=2), lambda origin: None) == [dt.date(2024, 5, 6)]


def test_the_longest_test_window_is_the_families_own():
    assert LONGEST_TEST_WINDOW_DAYS == max(BACKTEST_DAYS, SendTimeConfig().holdout_days, 7 * MediaConfig().holdout_weeks)


@pytest.mark.parametrize("horizon", [1, 7, 30, 90])
@pytest.mark.parametrize("origins", [1, 2, 3, 12])
def test_the_training_extract_reaches_every_origins_lookback(horizon, origins):
    """Origin k of pricing, send time and budget reads ``lookback_days`` before ``D - k x window``; the
    customer models' furthest cutoff is ``(1 + origins) x horizon`` back, then ``lookback_days`` more."""
    params = RunParams(lookback_days=365, propensity_horizon_days=horizon, churn_horizon_days=horizon,
                       clv_horizon_days=horizon, backtest_origins=origins)
    for window in (BACKTEST_DAYS, SendTimeConfig().holdout_days, 7 * MediaConfig().holdout_weeks):
        assert params.training_extract_days >= 365 + (origins - 1) * window
    assert params.training_extract_days >= 365 + (1 + origins) * horizon
    assert RunParams().training_extract_days == 730 + 4 * 90  # the default: the customer models' reach
