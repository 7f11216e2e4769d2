"""The backtest and the search: how a configuration is scored on held-out sends (the log loss and the
policy value, see the package docstring) and the search space :func:`ml.tuning.search` explores,
with its rule for choosing among the scored configurations (the simplest model class whose
objective is within ``simplicity_margin`` of the best)."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
import pandas as pd

from ml.families.send_time.config import (
    _ANY,
    _MIN_RATE,
    _MAX_RATE,
    _MIN_SUPPORT_SHARE,
    HOURS,
    POLICY_MIN_HOUR_SHARE,
    POLICY_MIN_HOURS,
    SendTimeConfig,
    _as_of,
    _circular_distance,
)
from ml.families.send_time.estimator import _allowed_hours, _Curves, _posterior, _Priors, _priors
from ml.families.send_time.evidence import _Cube, _cube, _Prepared, _prepare, _Rows
from ml.families.send_time.recommender import _best_hours
from ml.gate import is_finite, rank_key
from ml.tuning import Budget, Callback, Scored, SearchSpace, Tuned, search

logger = logging.getLogger(__name__)

#: a simpler model class (no day types, no activity tilt) wins when its objective is within this share of the best
SIMPLICITY_MARGIN = 0.002


@dataclass(frozen=True)
class Backtest:
    """The prepared data of a backtest as of ``as_of``: the evidence rows split at ``split``
    (``as_of - holdout_days``), the policy value's folds, and the cache shared by every scoring."""

    prepared: _Prepared
    train: _Rows
    holdout: _Rows
    split: pd.Timestamp
    as_of: pd.Timestamp
    fold: np.ndarray  # (rows,) int8: the policy value's fold of each row of prepared.rows
    send_share: np.ndarray  # (24,) share of the sends before as_of at each local hour (zeros without sends)
    #: evidence cubes and priors of the training rows of the holdout and of each fold, computed once per
    #: backtest (tuning trials change only the posterior); keyed by (fold or -1, segment_strength)
    cache: dict[tuple[int, float], tuple[_Cube, _Priors]] = dataclasses.field(default_factory=dict, repr=False)


def training_data_shortfall(engagement: pd.DataFrame, orders: pd.DataFrame, customers: pd.DataFrame, as_of: Any,
                            config: SendTimeConfig | None = None) -> str | None:
    """Why the store cannot train the send-time model as of ``as_of`` (None when it can). Training
    splits the evidence (email sends, sessions, orders of known customers) before ``as_of`` three
    ways in time: tuning fits before ``as_of - 2 x holdout_days`` and scores the ``holdout_days``
    after, and the last ``holdout_days`` before ``as_of`` are the test window the gate scores; each
    needs some evidence, and each window from the first with email sends on needs email sends (opens
    to score). The reason names the dates and tables."""
    config = config or SendTimeConfig()
    as_of = _as_of(as_of)
    test_start = holdout_start(as_of, config)
    split = holdout_start(test_start, config)
    known = customers["customer_id"]
    engagement = engagement[engagement["customer_id"].isin(known)]
    evidence = engagement[(engagement["sends"] > 0) | (engagement["sessions"] > 0)]
    instants = pd.concat([evidence["hour_utc"], orders.loc[orders["customer_id"].isin(known), "order_ts"]])
    sends = engagement.loc[engagement["sends"] > 0, "hour_utc"]

    def counts(times: pd.Series) -> list[int]:
        times = times[times < as_of]
        return [int((times < split).sum()), int(((times >= split) & (times < test_start)).sum()), int((times >= test_start).sum())]

    windows = (f"before {split.date()}", f"from then to {test_start.date()}", f"from then to {as_of.date()}")
    what = (f"tuning fits on the first window and scores the second, the gate tests on the last {config.holdout_days} "
            "days (engagement_by_hour from the events, shop.orders, shop.customers)")
    found = counts(instants)
    if not all(found):
        return (f"{found[0]} email sends / sessions / orders of known customers {windows[0]}, {found[1]} {windows[1]} "
                f"and {found[2]} {windows[2]}: {what}; each needs some")
    sent = counts(sends)
    first = next((i for i, n in enumerate(sent) if n), None)
    if first is not None and not all(sent[first:]):
        return (f"{sent[0]} email sends of known customers {windows[0]}, {sent[1]} {windows[1]} and {sent[2]} "
                f"{windows[2]}: {what}; once the store sends email, each later window needs sends to score opens on")
    return None


def holdout_start(as_of: Any, config: SendTimeConfig) -> pd.Timestamp:
    """``as_of - holdout_days``: where the held-out window of a backtest as of ``as_of`` starts. A
    training run as of its run date tests on ``[holdout_start(run date), run date)`` and tunes on the
    backtest as of ``holdout_start(run date)``, which fits and scores only before the test window."""
    return _as_of(as_of) - pd.Timedelta(days=config.holdout_days)


def prepare_backtest(engagement: pd.DataFrame, orders: pd.DataFrame, customers: pd.DataFrame, as_of: Any,
                     config: SendTimeConfig) -> Backtest:
    """The evidence before ``as_of`` prepared once for every configuration scored on it (those that
    share ``config``'s segments, holdout, folds and seed)."""
    as_of = _as_of(as_of)
    split = holdout_start(as_of, config)
    prepared = _prepare(engagement, orders, customers, as_of, config)
    rows = prepared.rows
    before = rows.instant < split.value
    train, holdout = rows.take(before), rows.take(~before)
    if holdout.sends.sum() <= 0 and holdout.activity.sum() <= 0:
        raise ValueError(f"no held-out sends or activity in [{split}, {as_of}): nothing to backtest on")
    fold = np.random.default_rng(config.random_state).integers(0, config.policy_folds, len(rows.customer)).astype(np.int8)
    sends_by_hour = np.bincount(rows.hour.astype(np.int64), weights=rows.sends, minlength=HOURS)
    send_share = sends_by_hour / sends_by_hour.sum() if sends_by_hour.sum() > 0 else np.zeros(HOURS)
    return Backtest(prepared, train, holdout, split, as_of, fold, send_share)


def _policy_hours(backtest: Backtest, config: SendTimeConfig) -> int:
    """Allowed local hours (not quiet) holding at least :data:`POLICY_MIN_HOUR_SHARE` of the sends."""
    return int((config.allowed_hours() & (backtest.send_share >= POLICY_MIN_HOUR_SHARE)).sum())


def _resolved_objective(backtest: Backtest, config: SendTimeConfig) -> str:
    """``'policy'`` or ``'log_loss'``: what ``config.objective`` means on this store."""
    if backtest.train.sends.sum() <= 0 or backtest.prepared.rows.opens.sum() <= 0 or config.objective == "log_loss":
        return "log_loss"  # no opens to measure a policy by (activity-only stores keep their own log loss)
    if config.objective == "policy":
        return "policy"
    return "policy" if _policy_hours(backtest, config) >= POLICY_MIN_HOURS else "log_loss"


def _backtest_fit(backtest: Backtest, config: SendTimeConfig, fold: int = -1) -> tuple[_Priors, _Curves]:
    """Priors and posterior curves fitted on the training rows of the holdout (``fold`` -1) or of a
    policy fold (every row before ``as_of`` but that fold's sends, opens and clicks)."""
    key = (fold, config.segment_strength)
    if key not in backtest.cache:
        if fold < 0:
            rows = backtest.train
        else:
            rows = backtest.prepared.rows
            held = backtest.fold == fold
            rows = dataclasses.replace(rows, **{c: np.where(held, 0.0, getattr(rows, c)) for c in ("sends", "opens", "clicks")})
        cube = _cube(rows, len(backtest.prepared.people.customer_id))
        shared = next((c for (f, _), (c, _) in backtest.cache.items() if f >= 0), None) if fold >= 0 else None
        if shared is not None:  # the folds differ only in email evidence: one activity cube for all (memory)
            cube = dataclasses.replace(cube, activity=shared.activity)
        backtest.cache[key] = (cube, _priors(cube, backtest.prepared.segment, backtest.prepared.names, config))
    cube, priors = backtest.cache[key]
    uses_email = bool(cube.sends.sum() > 0)
    return priors, _posterior(cube, backtest.prepared.segment, priors, config, uses_email)


def _policy_value(backtest: Backtest, config: SendTimeConfig) -> dict[str, float]:
    """Cross-fitted open rate of the sends that went out exactly at the recommended hour.

    Every send before ``as_of`` is in one of ``config.policy_folds`` random folds; each fold's sends
    are scored against the recommendations of a fit on the other folds (the customer's own sends
    there, their activity, everything else unchanged). A send counts when its local hour (and day
    type) is the hour recommended for its customer; each counted send is weighted by the inverse of
    the share of the store's sends at that local hour (inverse propensity, self-normalised), so the
    estimate does not favour recommendations at the hours the store happens to send at most. Where
    send hours are randomised per send (an A/B test of send hours), it is an unbiased off-policy
    estimate of the open rate the recommendations would get.
    """
    rows = backtest.prepared.rows
    sent = rows.sends > 0
    hour = rows.hour.astype(np.int64)
    day = rows.weekend.astype(np.int64) if config.by_day_type else np.zeros(len(hour), dtype=np.int64)
    at_best = np.zeros(len(hour), dtype=bool)
    for f in range(config.policy_folds):
        held = backtest.fold == f
        priors, curves = _backtest_fit(backtest, config, f)
        best, _ = _best_hours(curves.curves, config, _allowed_hours(config, priors.supported))
        scored = held & sent
        at_best[scored] = hour[scored] == best[rows.customer[scored], day[scored]]
    weight = 1.0 / np.maximum(backtest.send_share[hour], _MIN_SUPPORT_SHARE)
    n, k = weight * rows.sends, weight * rows.opens
    rate_all = k[sent].sum() / n[sent].sum()
    rate_best = k[at_best].sum() / n[at_best].sum() if n[at_best].sum() > 0 else 0.0
    return {"policy_open_rate": float(rate_best), "policy_lift": float(rate_best / rate_all) if rate_all > 0 else float("nan"),
            "policy_sends": float(rows.sends[at_best].sum())}


def log_loss(y: np.ndarray, predicted: np.ndarray) -> float:
    """The backtest's (and the gate's) ``log_loss`` from per-row arrays: ``y`` (rows, 2) = [trials,
    successes] and ``predicted`` the probability of a success, ``-sum(k log p + (n - k) log(1 - p)) /
    sum(n)``. With email data a row is the sends of one customer and UTC hour and their opens (the mean
    Bernoulli log loss per send); without, its sessions / orders counted as trials and successes
    alike with ``p`` the customer's activity share at that hour (the mean categorical log loss per
    event over 24 hours). Raises ValueError on rows without trials (nothing to score)."""
    losses, trials = log_loss_terms(y, predicted)
    if not trials.sum() > 0:
        raise ValueError("log loss of rows without sends or activity")
    return float(losses.sum() / trials.sum())


def log_loss_terms(y: np.ndarray, predicted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`log_loss` as a ratio of sums (:data:`ml.evaluation.RowTerms`, the gate's paired bootstrap): each row's
    negative log likelihood over its trials."""
    y = np.asarray(y, dtype=np.float64).reshape(-1, 2)
    n, k = np.ascontiguousarray(y[:, 0]), y[:, 1]
    p = np.clip(np.asarray(predicted, dtype=np.float64), _MIN_RATE, _MAX_RATE)
    return -(k * np.log(p) + (n - k) * np.log1p(-p)), n


def _uses_email(backtest: Backtest) -> bool:
    """Whether the backtest's fit sees email sends (else its curves are activity shares)."""
    return bool(backtest.train.sends.sum() > 0)


def held_out_rows(backtest: Backtest) -> tuple[np.ndarray, np.ndarray]:
    """The held-out rows :func:`log_loss` scores, as ``(y, customer_id)``: ``y`` (rows, 2) = [sends,
    opens] of the held-out rows with sends when the fit sees email data, else [activity, activity] of
    those with activity; one customer id per row. The same for every configuration of the backtest."""
    h = backtest.holdout
    if _uses_email(backtest):
        rows = h.sends > 0
        y = np.column_stack([h.sends[rows], h.opens[rows]])
    else:
        rows = h.activity > 0
        y = np.column_stack([h.activity[rows], h.activity[rows]])
    return y.astype(np.float64), backtest.prepared.people.customer_id[h.customer[rows]]


def held_out_predictions(backtest: Backtest, config: SendTimeConfig) -> np.ndarray:
    """``config``'s curves fitted on the backtest's training rows, read at each row of
    :func:`held_out_rows` (its customer, local hour and day type): an open probability, or an activity
    share without email data."""
    _, curves = _backtest_fit(backtest, config)
    return _at_held_out(backtest, config, curves)[_held_out_mask(backtest)]


def no_hour_preference(backtest: Backtest, level_strength: float) -> np.ndarray:
    """The naive baseline at each row of :func:`held_out_rows`: no hour preference, i.e. the same rate
    at every hour ("send at the default hour" knows nothing better). With email data the customer's open
    rate before the held-out window shrunk towards the store's mean rate (the model's customer level
    with a flat segment curve: ``mean x (opens_i + level_strength) / (mean x sends_i + level_strength)``);
    without, the flat activity share 1/24."""
    customer = backtest.holdout.customer[_held_out_mask(backtest)]
    if not _uses_email(backtest):
        return np.full(len(customer), 1.0 / HOURS)
    train, n_customers = backtest.train, len(backtest.prepared.people.customer_id)
    sends = np.bincount(train.customer, weights=train.sends, minlength=n_customers)
    opens = np.bincount(train.customer, weights=train.opens, minlength=n_customers)
    mean = opens.sum() / sends.sum()
    rate = mean * (opens + level_strength) / (mean * sends + level_strength)
    return np.clip(rate[customer], _MIN_RATE, _MAX_RATE)


def _held_out_mask(backtest: Backtest) -> np.ndarray:
    h = backtest.holdout
    return h.sends > 0 if _uses_email(backtest) else h.activity > 0


def _at_held_out(backtest: Backtest, config: SendTimeConfig, curves: _Curves) -> np.ndarray:
    """The curves at every held-out row's customer, day type and local hour."""
    h = backtest.holdout
    day = h.weekend.astype(np.int64) if config.by_day_type else np.zeros(len(h.customer), dtype=np.int64)
    return curves.curves[h.customer, day, h.hour.astype(np.int64)].astype(np.float64)


def _score(backtest: Backtest, config: SendTimeConfig, policy: bool = True) -> dict[str, float]:
    """The backtest's scores; the policy value (``policy_*``, ``K`` fits) only when ``policy`` is True
    or the config's objective needs it."""
    priors, curves = _backtest_fit(backtest, config)
    uses_email = _uses_email(backtest)
    h = backtest.holdout
    day = h.weekend.astype(np.int64) if config.by_day_type else np.zeros(len(h.customer), dtype=np.int64)
    hour = h.hour.astype(np.int64)
    predicted = _at_held_out(backtest, config, curves)
    segment = backtest.prepared.segment[h.customer]
    allowed = _allowed_hours(config, priors.supported)
    best, _ = _best_hours(curves.curves, config, allowed)
    near_best = _circular_distance(hour, best[h.customer, day]) <= 1
    global_any = priors.open_rate[-1, _ANY] if uses_email else priors.activity_share[-1, _ANY]
    global_best, _ = _best_hours(global_any[None, :], config, allowed)
    near_global = _circular_distance(hour, global_best[0]) <= 1
    if uses_email:
        if h.sends.sum() <= 0:
            raise ValueError(f"the training window has email sends but the held-out window [{backtest.split}, "
                             f"{backtest.as_of}) has none: lengthen holdout_days")
        e = h.sends > 0
        n, k = h.sends[e], h.opens[e]
        y = np.column_stack([n, k])
        rate = k.sum() / n.sum()
        scores = {
            "log_loss": log_loss(y, predicted[e]),
            "log_loss_global": log_loss(y, global_any[hour[e]]),
            "log_loss_prior": log_loss(y, curves.level[h.customer[e]] * priors.open_rate[segment[e], _ANY, hour[e]]),
            "log_loss_flat": log_loss(y, np.full(len(n), priors.mean_open_rate)),
            # held-out sends are those the store happened to send; where the hour was randomised (an A/B
            # test, as in the synthetic store) these are unbiased estimates of a policy's open rate
            "lift_near_best": float(k[near_best[e]].sum() / max(n[near_best[e]].sum(), 1.0) / rate) if rate > 0 else float("nan"),
            "lift_near_global_best": float(k[near_global[e]].sum() / max(n[near_global[e]].sum(), 1.0) / rate) if rate > 0 else float("nan"),
            "share_sends_near_best": float(n[near_best[e]].sum() / n.sum()),
            "holdout_sends": float(n.sum()), "holdout_opens": float(k.sum()),
            "holdout_customers": float(len(np.unique(h.customer[e]))), "email_evidence": 1.0,
        }
    else:
        a = h.activity > 0
        weight = h.activity[a]
        scores = {
            "log_loss": log_loss(np.column_stack([weight, weight]), predicted[a]),
            "log_loss_global": float(-(weight * np.log(global_any[hour[a]])).sum() / weight.sum()),
            "log_loss_flat": float(np.log(HOURS)),
            "share_near_best": float(weight[near_best[a]].sum() / weight.sum()),
            "share_near_global_best": float(weight[near_global[a]].sum() / weight.sum()),
            "holdout_activity": float(weight.sum()),
            "holdout_customers": float(len(np.unique(h.customer[a]))), "email_evidence": 0.0,
        }
    scores["improvement_vs_global"] = 1.0 - scores["log_loss"] / scores["log_loss_global"]
    objective = _resolved_objective(backtest, config)
    if uses_email and (policy or objective == "policy"):
        scores.update(_policy_value(backtest, config))
    scores["policy_hours"] = float(_policy_hours(backtest, config)) if uses_email else 0.0
    scores["objective_is_policy"] = float(objective == "policy")
    # lower is better either way: held-out open rate / policy open rate, or the log loss
    scores["objective"] = 1.0 / max(scores["policy_lift"], _MIN_RATE) if objective == "policy" else scores["log_loss"]
    return scores


def held_out_scores(backtest: Backtest, config: SendTimeConfig) -> dict[str, float]:
    """``config``'s scores on the backtest's held-out rows only (:func:`send_time_backtest`'s keys but
    the policy value, which is cross-fitted over every send before ``as_of``, held-out ones included);
    ``objective`` is the log loss."""
    return _score(backtest, dataclasses.replace(config, objective="log_loss"), policy=False)


def send_time_backtest(engagement: pd.DataFrame, orders: pd.DataFrame, customers: pd.DataFrame, as_of: Any,
                       config: SendTimeConfig | None = None) -> dict[str, float]:
    """Fit on the data before ``as_of - holdout_days`` and score the held-out window ``[split, as_of)``.

    With email data: ``log_loss`` = mean Bernoulli log loss per held-out send of its opens at the
    send's local hour (and day type); ``log_loss_global`` the same for the global pooled curve (no
    personalisation), ``log_loss_prior`` for the customer's level x segment curve (personal level, no
    personal hours), ``log_loss_flat`` for the store's mean rate; ``lift_near_best`` = open rate of
    held-out sends within +/-1 h of the customer's recommended hour / overall held-out open rate
    (``lift_near_global_best`` the same for the one global best hour).

    Without email data in the training window: ``log_loss`` = mean negative log activity share of
    the held-out sessions / orders at their local hour (a categorical log loss over 24 hours,
    ``log(24)`` for a flat profile), against the global activity profile; ``share_near_best`` =
    share of held-out activity within +/-1 h of the recommended hour.

    With email data also the policy value (see the package docstring; ``policy_folds`` extra fits):
    ``policy_open_rate`` = inverse-propensity weighted open rate of the sends before ``as_of`` that
    went out exactly at the hour a fit without them recommends, ``policy_lift`` = that / the weighted
    open rate of all sends, ``policy_sends`` the sends counted. Always: ``policy_hours`` = allowed
    local hours with at least :data:`POLICY_MIN_HOUR_SHARE` of the sends, ``objective_is_policy``
    (1.0 / 0.0) and ``objective`` = ``1 / policy_lift`` or ``log_loss`` (lower is better), what
    :func:`tune_send_time` minimises: compare configs on ``objective``.
    """
    config = config or SendTimeConfig()
    return _score(prepare_backtest(engagement, orders, customers, as_of, config), config)


# --- the search -------------------------------------------------------------------------------------


def _suggest(trial: optuna.Trial, config: SendTimeConfig, uses_email: bool, has_activity: bool) -> SendTimeConfig:
    values: dict[str, Any] = {
        "bandwidth_hours": trial.suggest_float("bandwidth_hours", 0.0, 4.0),
        "by_day_type": trial.suggest_categorical("by_day_type", [False, True]),
    }
    if values["by_day_type"]:
        values["day_type_pooling"] = trial.suggest_float("day_type_pooling", 0.0, 1.0)
    uses_activity = has_activity and not uses_email
    if uses_email:
        values["prior_strength"] = trial.suggest_float("prior_strength", 0.3, 300.0, log=True)
        values["level_strength"] = trial.suggest_float("level_strength", 0.3, 100.0, log=True)
        # an explicit switch, so "activity says nothing about email hours" (weight exactly 0) is a candidate
        uses_activity = has_activity and trial.suggest_categorical("use_activity", [False, True])
        values["activity_weight"] = trial.suggest_float("activity_weight", 0.05, 1.5, log=True) if uses_activity else 0.0
    if uses_activity:
        values["activity_strength"] = trial.suggest_float("activity_strength", 1.0, 300.0, log=True)
    return dataclasses.replace(config, **values)


def _complexity(config: SendTimeConfig) -> int:
    """0 for one curve per customer without activity tilt; +1 each for day types and the tilt."""
    return int(config.by_day_type) + int(config.activity_weight > 0)


def search_space(backtest: Backtest, config: SendTimeConfig, simplicity_margin: float = SIMPLICITY_MARGIN) -> SearchSpace[SendTimeConfig]:
    """The search :func:`ml.tuning.search` runs on a prepared backtest (:func:`prepare_backtest`):
    prior and level strength, kernel bandwidth, the activity tilt (on / off, weight, strength) and
    ``by_day_type`` (with ``day_type_pooling``), only the activity parameters when the store has no
    email data, minimising the backtest's ``objective`` (``1 / policy_lift`` or ``log_loss``, see
    ``SendTimeConfig.objective``). ``config`` is the default, scored before the study; its other
    fields (quiet hours, default hour, seed, ...) are kept by every candidate.

    Separate weekday / weekend curves and the activity tilt are used only if the data support them:
    the leading configuration is also scored with either or both switched off, and the simplest model
    class (see :func:`_complexity`) whose objective is within ``simplicity_margin`` (relative) of
    the overall best wins, with its best config. (On a 20k-customer synthetic store the paired
    bootstrap sd, over customers, of a log-loss difference between two configs is 0.01-0.16 % of the
    loss.) The chosen configuration's metrics are the full backtest (:func:`send_time_backtest`'s
    keys, the policy value included where the store has email data); its ``objective`` is the one
    it was chosen by. Trials are scored without the policy value unless the objective is the policy
    value, and carry their ``complexity``."""
    uses_email = bool(backtest.train.sends.sum() > 0)
    has_activity = bool(backtest.train.activity.sum() > 0)

    def score(candidate: SendTimeConfig) -> Scored[SendTimeConfig]:
        scores = _score(backtest, candidate, policy=False)
        return Scored(candidate, {**scores, "complexity": float(_complexity(candidate))})

    def choose(default: Scored[SendTimeConfig] | None, finished: list[Scored[SendTimeConfig]]) -> Scored[SendTimeConfig]:
        # (objective, complexity, scored): the default config, every finished trial, and the leader
        # with its day types and / or activity tilt switched off (TPE rarely tries exactly that pair)
        candidates = [(float(c.metrics["objective"]), _complexity(c.config), c) for c in (default, *finished) if c is not None]
        # a non-finite objective loses every comparison: it can be neither the leader nor within the margin of it
        leader = min(candidates, key=lambda c: rank_key(c[0], higher_is_better=False))[2].config
        one_curve = {"by_day_type": False, "day_type_pooling": config.day_type_pooling}
        no_tilt = {"activity_weight": 0.0, "activity_strength": config.activity_strength}
        variants = [dataclasses.replace(leader, **change) for change in (one_curve, no_tilt, {**one_curve, **no_tilt})]
        for simpler in dict.fromkeys(v for v in variants if v != leader):
            scored = score(simpler)
            candidates.append((float(scored.metrics["objective"]), _complexity(simpler), scored))
        finite = [c for c in candidates if is_finite(c[0])]
        if finite:
            overall = min(c[0] for c in finite)
            loss, _, chosen = min((c for c in finite if c[0] <= overall + simplicity_margin * abs(overall)),
                                  key=lambda c: (c[1], c[0]))
        else:  # nothing scored: keep the given config (training refuses to register a non-finite objective)
            overall = float("nan")
            loss, _, chosen = candidates[0]
        scores = {name: value for name, value in chosen.metrics.items() if name != "complexity"}
        if uses_email and "policy_lift" not in scores:
            scores = _score(backtest, chosen.config)  # the full backtest of the chosen config, as send_time_backtest gives it
        logger.info("send time tuning (%s, objective %s): %d trials, held-out objective %.5f (lowest %.5f, default "
                    "config %.5f), log loss %.5f (global curve %.5f), by_day_type=%s, activity_weight=%.2f",
                    "email" if uses_email else "activity", _resolved_objective(backtest, config), len(finished), loss,
                    overall, candidates[0][0], scores["log_loss"], scores["log_loss_global"], chosen.config.by_day_type,
                    chosen.config.activity_weight)
        return Scored(chosen.config, {**scores, "objective": loss}, chosen.trial)

    def suggest(trial: optuna.Trial) -> SendTimeConfig:
        return _suggest(trial, config, uses_email, has_activity)

    return SearchSpace(name="send-time", suggest=suggest, score=score, objective="objective", direction="minimize",
                       default=config, choose=choose)


def log_progress(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """An Optuna callback logging each finished trial's objective and the best so far."""
    scored = any(t.value is not None for t in study.trials)
    logger.info("send time trial %d: objective %.5f (best %.5f)", trial.number,
                trial.value if trial.value is not None else float("nan"), study.best_value if scored else float("nan"))


def tune_send_time(engagement: pd.DataFrame, orders: pd.DataFrame, customers: pd.DataFrame, as_of: Any,
                   config: SendTimeConfig | None = None, n_trials: int = 30, timeout_seconds: float = 120.0,
                   callbacks: Sequence[Callback] = (), simplicity_margin: float = SIMPLICITY_MARGIN) -> Tuned[SendTimeConfig]:
    """Tune :class:`SendTimeConfig` on the backtest as of ``as_of`` (:func:`search_space`; the data
    are prepared once for all trials, and ``config`` is scored too and kept unless beaten; the family
    tunes as of the start of its test window, :func:`holdout_start` of the run date). The
    result's ``value`` and ``default_value`` are the backtest ``objective`` of the chosen and the given
    config, its ``metrics`` the chosen config's full backtest. Seeded with ``config.random_state``;
    deterministic when bounded by ``n_trials`` rather than ``timeout_seconds``; ``callbacks`` get every
    finished trial (e.g. MLflow nested runs)."""
    config = config or SendTimeConfig()
    backtest = prepare_backtest(engagement, orders, customers, as_of, config)
    return search(search_space(backtest, config, simplicity_margin),
                  Budget(n_trials=n_trials, timeout_seconds=timeout_seconds, random_state=config.random_state),
                  [log_progress, *callbacks])
