"""The rolling-origin backtest of the families tested on the last days before the run date: pricing (28
days), send time (``holdout_days``) and budget (``holdout_weeks`` weeks); and the earlier origins' tuning budget,
which the customer families (propensity, churn, CLV: one label horizon earlier per origin, their own cutoffs) use
too.

Origin 0 is the run itself. Origin k (1 .. ``backtest_origins`` - 1) is the same evaluation as of the run
date moved back k test windows, ``D - k x window``: selection (tuning) on the data before that origin's test
window, the chosen configuration fitted on the data before it and scored on it, and the family's naive
baseline scored on the same rows. An origin's data are built from the training extract exactly as the
run's are, from the ``lookback_days`` before its own run date (the extract reads that far back:
:attr:`ml.params.RunParams.training_extract_days`). The origins stop at the first one the family's own
shortfall refuses (too little history before it), with one log line naming the family, the run date and
that origin's test window. The family logs each test metric per origin, with its mean and spread
(:func:`ml.evaluation.summarise_backtest`); the gate decides on origin 0 alone.

Earlier origins tune with a smaller budget (:func:`earlier_origin_params`): ``n_trials // 4`` trials (at
least 2, never more than the run's) and a quarter of the seconds; the family logs it as the params
``backtest_earlier_n_trials`` / ``backtest_earlier_timeout_seconds``. Measured on the demo store (5,000
customers x 365 days, ``n_trials`` 12, ``benchmarks/backtest_cost.py``), two earlier origins re-tuned with
the run's full budget added 92-161 % to budget's training time (+8.6 to +14.1 s), 160-170 % to pricing's
(+1.1 s) and 180-200 % to send time's (+2.7 to +3.4 s); with this budget they add 32 % to budget's (+2.8 s)
and +0.6 s / +0.5 s to pricing and send time, whose whole training takes about a second (what remains is
each origin's fixed work: its data, the default configuration's score and the test fit). An earlier origin's number is therefore that of a
slightly less tuned model than origin 0's; every family keeps its default configuration unless a trial
beats it, so fewer trials mostly mean the default more often. The customer families' earlier origins took the
run's full budget until issue 22: at a million customers each of their three selections ran its 300 s and more
(docs/scale.md, "Training at 1M").
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Callable
from typing import Any

from ml.params import RunParams

logger = logging.getLogger(__name__)

#: An earlier origin tunes with the run's ``n_trials`` divided by this (at least
#: :data:`EARLIER_ORIGIN_MIN_TRIALS`), and its seconds divided by it too.
EARLIER_ORIGIN_BUDGET_DIVISOR = 4
EARLIER_ORIGIN_MIN_TRIALS = 2


def earlier_origin_params(params: RunParams) -> RunParams:
    """The run's params as an earlier origin trains with them: the smaller tuning budget (see the module
    docstring) and no backtest of its own."""
    n_trials = min(params.n_trials, max(EARLIER_ORIGIN_MIN_TRIALS, params.n_trials // EARLIER_ORIGIN_BUDGET_DIVISOR))
    return dataclasses.replace(params, n_trials=n_trials, backtest_origins=1,
                               tuning_timeout_seconds=params.tuning_timeout_seconds / EARLIER_ORIGIN_BUDGET_DIVISOR)


def earlier_origins(family: str, run_date: dt.date, window_days: int, params: RunParams,
                    shortfall: Callable[[dt.date], str | None]) -> list[dt.date]:
    """The run dates of origins 1 .. ``params.backtest_origins - 1`` (``run_date - k x window_days``) that
    history allows: up to the first one whose ``shortfall`` (the family's, as of that date) is not None."""
    origins: list[dt.date] = []
    for k in range(1, params.backtest_origins):
        origin = run_date - dt.timedelta(days=k * window_days)
        reason = shortfall(origin)
        if reason is not None:
            logger.info("%s backtest for %s: history allows %d origin(s); origin %d (test window %s to %s) cannot "
                        "train: %s", family, run_date, k, k, origin - dt.timedelta(days=window_days),
                        origin - dt.timedelta(days=1), reason)
            break
        origins.append(origin)
    return origins


def backtest_params(params: RunParams, origins: int, window_days: int) -> dict[str, Any]:
    """The backtest's logged params: the origins actually used, the days between them and the tuning
    budget of the earlier ones."""
    earlier = earlier_origin_params(params)
    return {"backtest_origins": origins, "backtest_window_days": window_days,
            "backtest_earlier_n_trials": earlier.n_trials,
            "backtest_earlier_timeout_seconds": earlier.tuning_timeout_seconds}
