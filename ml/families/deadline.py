"""Boosters that stop at the tuning budget's deadline.

``tuning_timeout_seconds`` is a wall-clock budget, but Optuna's ``timeout`` only stops the study from starting new
trials: a trial started a second before it ran on to its last boosting round. At a million customers one CatBoost
or XGBoost trial on the 200k sample can take minutes, so a selection overran its budget by a trial's length, at each
backtest origin of each family (docs/scale.md, "Training at 1M").

These callbacks stop a booster that is still early-stopping on its validation customers once the deadline has
passed, the way early stopping stops it: the model keeps its best round so far, and the trial is scored on that
round. It is a real, complete model (a spec with that round count refits to the same trees), only less tuned; a
trial that ends before the deadline is not touched, so a search bounded by its trials stays deterministic.
"""

from __future__ import annotations

import time
from typing import Any

import lightgbm as lgb
import xgboost as xgb


def passed(deadline: float | None) -> bool:
    """Whether the ``time.monotonic()`` deadline (None: none) has passed."""
    return deadline is not None and time.monotonic() >= deadline


def lightgbm_callback(deadline: float) -> Any:
    """A ``lgb.train`` callback: past the deadline, stop at the best iteration of the first validation metric so
    far (as :func:`lightgbm.early_stopping` would, it runs after it)."""
    best: dict[str, Any] = {"iteration": 0, "score": None, "results": []}

    def callback(env: lgb.callback.CallbackEnv) -> None:
        results = env.evaluation_result_list or []
        if results:
            _, _, value, higher_is_better = results[0][:4]
            if best["score"] is None or (value > best["score"] if higher_is_better else value < best["score"]):
                best.update(iteration=env.iteration, score=value, results=list(results))
        if passed(deadline):
            raise lgb.callback.EarlyStopException(best["iteration"], best["results"])

    callback.order = 40  # type: ignore[attr-defined]  # after early stopping (30)
    return callback


class XGBoostDeadline(xgb.callback.TrainingCallback):
    """An ``xgb.train`` callback: past the deadline, stop; the booster's ``best_iteration`` is early stopping's so far.
    List it after :class:`xgboost.callback.EarlyStopping`: XGBoost stops asking the callbacks after the first that
    says stop."""

    def __init__(self, deadline: float) -> None:
        super().__init__()
        self.deadline = deadline

    def after_iteration(self, model: Any, epoch: int, evals_log: Any) -> bool:
        return passed(self.deadline)


class CatBoostDeadline:
    """A CatBoost ``fit`` callback: past the deadline, stop (``use_best_model`` then keeps the best round so far)."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline

    def after_iteration(self, info: Any) -> bool:
        return not passed(self.deadline)
