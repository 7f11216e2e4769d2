"""Uplift: what a retention or win-back offer changes in a customer's probability of ordering (and in
their revenue) over the next ``uplift_horizon_days``, learnt from the store's randomised offers
(``shop.offers``: the customers sent an offer and the campaign's control group, not contacted).

Targeting by churn risk sends offers to the customers likeliest to leave; many of them are lost
causes, and some are "sleeping dogs" whom an offer reminds to leave. The uplift model ranks customers
by the *incremental* effect of the offer instead (:mod:`ml.families.uplift.model`: EconML's X-learner
over LightGBM); the next-best-action step spends the offer budget on it.

Training at run date D, three ways in time over the offer campaigns whose horizon ended before D
(:mod:`ml.families.uplift.data`):

- **test**: the latest such campaign. The chosen configuration, fitted on every earlier campaign,
  ranks its offers; the metric is the normalised Qini coefficient (:data:`model.QINI`), compared paired
  (bootstrap over offers) with the naive baseline, targeting by churn risk (days since the last order,
  the policy the seeds describe), and with the champion's configuration refitted the same way;
- **selection** (:func:`ml.tuning.search`) sees only the earlier campaigns: fitted on all but the last
  of them and validated on the last; with a single earlier campaign, on a seeded quarter of its
  customers held out;
- **published**: the chosen configuration refitted on every known campaign (the test one included: an
  uplift model learns from few randomised offers, and the latest campaign is the closest to tonight).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
import pandas as pd

from features.customer import EVENT_FEATURES_AT_CUTOFFS, FEATURE_COLUMNS
from ml import plots
from ml.evaluation import Evaluation
from ml.families.uplift.data import OfferSet, known_offers, offer_set, training_cutoffs
from ml.families.uplift.model import (
    BOOTSTRAP_MODELS, QINI, Candidates, UpliftConfig, UpliftModel, config_dict, config_from, fit_uplift, qini_curve,
)
from ml.family import DataWindow, Frames, Trained, require_finite
from ml.params import RunParams
from ml.tuning import Budget, Callback, Scored, SearchSpace, search

logger = logging.getLogger(__name__)

MODEL_NAME = "revopt_uplift"
#: Fewest treated and fewest control offers (and buyers among each) of the test campaign and of the
#: earlier ones together.
MIN_PER_ARM = 20
#: Share of a single earlier campaign's offers held out for selection.
VALIDATION_SHARE = 0.25
CUSTOMER_DATASETS = ("customers", "orders", "order_categories")


@dataclass(frozen=True)
class UpliftData:
    """The known offers of one training run: ``fit`` (the campaigns before the test one) and ``test``
    (the latest campaign), and the selection split of ``fit`` (``select_train`` / ``select_valid``)."""

    run_date: dt.date
    horizon: int
    fit: OfferSet
    test: OfferSet
    select_train: OfferSet
    select_valid: OfferSet

    @property
    def window(self) -> str:
        campaign = self.test.campaign[0] if len(self.test) else "none"
        return (f"{len(self.test):,} offers of the campaign of {campaign} ({int(self.test.treated.sum()):,} sent), "
                f"orders within {self.horizon} days (fitted on {len(self.fit):,} offers of "
                f"{len(set(self.fit.campaign))} earlier campaign(s))")


def _window(offers: OfferSet, horizon: int, what: str) -> DataWindow:
    """``offers`` as a logged window: features, treatment, outcome, offer and campaign of each offer,
    from the first campaign's first send day to the last one's outcome horizon."""
    frame = offers.X.reset_index(drop=True).assign(
        treated=offers.treated, ordered=offers.ordered, revenue=offers.revenue, offer_type=offers.offer_type,
        discount=offers.discount, campaign=offers.campaign)
    campaigns = sorted(set(offers.campaign))
    first = dt.date.fromisoformat(campaigns[0]) if campaigns else dt.date.min
    last = dt.date.fromisoformat(campaigns[-1]) + dt.timedelta(days=horizon) if campaigns else first
    return DataWindow(frame, first, last, f"{len(frame):,} {what}, {len(campaigns)} campaign(s) from {first}, "
                                          f"orders within {horizon} days of each send", target="ordered")


def _fit(config: UpliftConfig, offers: OfferSet, seed: int, revenue: bool = False):
    return fit_uplift(config, offers.X, offers.treated, offers.ordered, offers.revenue if revenue else None,
                         offers.discount, offers.offer_type, seed, bootstrap=BOOTSTRAP_MODELS - 1 if revenue else 0)


def _ranking(config: UpliftConfig, fit: OfferSet, scored: OfferSet, seed: int) -> np.ndarray:
    """Each ``scored`` offer's predicted uplift (of its own offer) by ``config`` fitted on ``fit``."""
    return _fit(config, fit, seed).uplift(scored.X, scored.discount, scored.offer_type)


@dataclass(frozen=True)
class UpliftFamily:
    name: str = "uplift"
    model_name: str = MODEL_NAME
    training_datasets: tuple[str, ...] = (*CUSTOMER_DATASETS, EVENT_FEATURES_AT_CUTOFFS, "offers")
    nightly_datasets: tuple[str, ...] = (*CUSTOMER_DATASETS, "customer_event_features", "offers")
    metric = QINI
    description = ("The uplift of an offer for each customer: how much more likely (and how much more revenue) they "
                   "order within uplift_horizon_days when sent it than when not, per offer type and discount "
                   "(an X-learner on past randomised campaigns); the next best action chooses offers with it.")

    def shortfall(self, frames: Frames, run_date: dt.date, params: RunParams) -> str | None:
        """No offers, no control group, or fewer than two campaigns (one to learn from, one to test on)
        whose horizon ended before the run date, each with :data:`MIN_PER_ARM` treated and control
        offers and buyers."""
        horizon = params.uplift_horizon_days
        offers = frames.get("offers")
        where = f"uplift for {run_date}"
        if offers is None or not len(offers):
            return (f"{where}: shop.offers has no offers sent in the {params.lookback_days} days before {run_date}; "
                    "the uplift model learns from a store's randomised offers (sent and held-out control)")
        if offers["treated"].all():
            return (f"{where}: shop.offers has no control group (every offer has treated = true): an offer's effect "
                    "cannot be measured without the randomised customers who were not contacted")
        known = known_offers(offers, run_date, horizon)
        campaigns = sorted(set(known["campaign"]))
        if len(campaigns) < 2:
            return (f"{where}: {len(campaigns)} offer campaign(s) in shop.offers ended their {horizon}-day horizon "
                    f"before {run_date}; two are needed (one to learn from, the latest to test on)")
        for role, part in (("the test campaign of " + campaigns[-1], known[known["campaign"] == campaigns[-1]]),
                           ("the earlier campaigns", known[known["campaign"] != campaigns[-1]])):
            arms = part["treated"].value_counts()
            if min(int(arms.get(True, 0)), int(arms.get(False, 0))) < MIN_PER_ARM:
                return (f"{where}: {role} has {int(arms.get(True, 0))} sent and {int(arms.get(False, 0))} control "
                        f"offers in shop.offers; at least {MIN_PER_ARM} of each are needed")
        return None

    def training_cutoffs(self, frames: Frames, run_date: dt.date, params: RunParams) -> list[pd.Timestamp]:
        """Every cutoff :meth:`training_data` builds customer features at: each known campaign's first day."""
        return training_cutoffs(frames.get("offers"), run_date, params.uplift_horizon_days)

    def training_data(self, frames: Frames, run_date: dt.date, params: RunParams) -> UpliftData:
        horizon = params.uplift_horizon_days
        known = known_offers(frames["offers"], run_date, horizon)
        offers = offer_set(frames, known, horizon, params.lookback_days)
        campaigns = sorted(set(offers.campaign))
        fit, test = offers.subset(offers.campaign != campaigns[-1]), offers.subset(offers.campaign == campaigns[-1])
        earlier = sorted(set(fit.campaign))
        if len(earlier) >= 2:
            select_train, select_valid = fit.subset(fit.campaign != earlier[-1]), fit.subset(fit.campaign == earlier[-1])
        else:
            valid = np.random.default_rng(params.seed).random(len(fit)) < VALIDATION_SHARE
            select_train, select_valid = fit.subset(~valid), fit.subset(valid)
        return UpliftData(run_date, horizon, fit, test, select_train, select_valid)

    def _space(self, data: UpliftData, params: RunParams) -> SearchSpace[UpliftConfig]:
        def suggest(trial: optuna.Trial) -> UpliftConfig:
            return UpliftConfig(num_leaves=trial.suggest_int("num_leaves", 4, 31, log=True),
                                min_child_samples=trial.suggest_int("min_child_samples", 10, 200, log=True),
                                learning_rate=trial.suggest_float("learning_rate", 0.02, 0.2, log=True),
                                n_estimators=trial.suggest_int("n_estimators", 50, 400, log=True),
                                reg_lambda=trial.suggest_float("reg_lambda", 1e-3, 10.0, log=True),
                                subsample=trial.suggest_float("subsample", 0.5, 1.0))

        def score(config: UpliftConfig) -> Scored[UpliftConfig]:
            ranking = _ranking(config, data.select_train, data.select_valid, params.seed)
            return Scored(config, {"valid_qini": QINI.score(data.select_valid.y, ranking)})

        return SearchSpace(f"{self.name}-{data.run_date}", suggest, score, "valid_qini", "maximize",
                           default=UpliftConfig())

    def train(self, data: UpliftData, params: RunParams, callbacks: Sequence[Callback]) -> Trained:
        tuned = search(self._space(data, params), Budget(params.n_trials, params.tuning_timeout_seconds, params.seed),
                       callbacks)
        config = tuned.config
        ranking = _ranking(config, data.fit, data.test, params.seed)
        require_finite(self.name, self.model_name, data.run_date, "test-campaign uplifts", ranking)
        test = Evaluation("candidate", data.test.y, ranking, data.window)
        baseline = self.baseline_evaluation(data)
        everything = _concat(data.fit, data.test)
        learner = _fit(config, everything, params.seed, revenue=True)
        model = UpliftModel(learner, Candidates.from_history(everything.X, everything.offer_type, everything.discount),
                            data.horizon)
        example = data.test.X.head(20).reset_index(drop=True).assign(customer_id=data.test.customer_id[:20])
        example = example[["customer_id", *FEATURE_COLUMNS]]
        output = model.predict(None, example, {})
        require_finite(self.name, self.model_name, data.run_date, "example outputs",
                       output.drop(columns=["customer_id", "offer_type"]))
        metrics = {"test_qini": test.value(self.metric), "baseline_qini": baseline.value(self.metric),
                   "valid_qini": float(tuned.value), "test_offers": float(len(data.test)),
                   "test_treated_share": float(data.test.treated.mean()),
                   **_observed_uplift(data.test, ranking, "test")}
        spec = {"family": self.name, "config": config_dict(config), "features": list(FEATURE_COLUMNS)}
        return Trained(model=model, spec=spec, test=test, baseline=baseline, example=example,
                       predict_params=self.predict_params(data.run_date, params),
                       params={"learner": "econml_x_learner_lightgbm", **{f"uplift_{k}": v for k, v in spec["config"].items()},
                               "uplift_horizon_days": data.horizon, "test_campaign": data.test.campaign[0]},
                       metrics=metrics, tables={"uplift_by_decile.json": _deciles(data.test, ranking)},
                       windows={"train": _window(data.select_train, data.horizon, "offers the search fits on"),
                                "validation": _window(data.select_valid, data.horizon,
                                                      "offers the search scores (the latest earlier campaign, or "
                                                      "a random share when there is one)"),
                                "test": _window(data.test, data.horizon, "offers of the latest campaign")},
                       figures={"qini.png": plots.qini_figure(
                           {"uplift model": qini_curve(data.test.y, ranking),
                            baseline.name: qini_curve(data.test.y, baseline.predicted)},
                           f"Qini curves, test campaign {data.test.campaign[0]}")})

    def baseline_evaluation(self, data: UpliftData) -> Evaluation:
        """Targeting by churn risk: the longest since the last order first."""
        return Evaluation("baseline: churn risk (recency)", data.test.y,
                          data.test.X["recency_days"].to_numpy(dtype="float64"), data.window)

    def evaluate(self, data: UpliftData, spec: Mapping[str, Any], params: RunParams) -> Evaluation | None:
        if spec.get("family") != self.name or list(spec.get("features", [])) != list(FEATURE_COLUMNS):
            return None
        try:
            config = config_from(spec["config"])
        except (KeyError, TypeError, ValueError) as error:
            logger.warning("uplift: a champion spec this version cannot rebuild (%s)", error)
            return None
        return Evaluation("champion", data.test.y, _ranking(config, data.fit, data.test, params.seed), data.window)

    def nightly_input(self, frames: Frames, run_date: dt.date, params: RunParams) -> pd.DataFrame:
        """Tonight's customer features of the customers who have ordered, with ``customer_id``; the features
        as float64, the type the model was trained and its signature logged with (tonight's ``frequency`` is an
        integer count, which MLflow's schema check refuses to narrow silently)."""
        features = frames["customer_features"]
        rows = features.loc[features["frequency"] > 0, ["customer_id", *FEATURE_COLUMNS]].reset_index(drop=True)
        return rows.astype({column: "float64" for column in FEATURE_COLUMNS})

    def predict_params(self, run_date: dt.date, params: RunParams) -> dict[str, Any]:
        return {"discount_levels": json.dumps([float(d) for d in params.nba_discount_levels])}


FAMILY = UpliftFamily()


def _concat(first: OfferSet, second: OfferSet) -> OfferSet:
    return OfferSet(pd.concat([first.X, second.X]), *(np.concatenate([getattr(first, f), getattr(second, f)]) for f in
                                                       ("treated", "ordered", "revenue", "offer_type", "discount",
                                                        "customer_id", "campaign")))


def _observed_uplift(offers: OfferSet, ranking: np.ndarray, prefix: str, share: float = 0.3) -> dict[str, float]:
    """The realised order-rate difference (treated - control) among the top ``share`` of the ranking
    and among all offers."""
    top = ranking >= np.quantile(ranking, 1.0 - share)
    out = {}
    for name, mask in (("top30", top), ("all", np.ones(len(ranking), dtype=bool))):
        t, c = mask & offers.treated, mask & ~offers.treated
        if t.any() and c.any():
            out[f"{prefix}_observed_uplift_{name}"] = float(offers.ordered[t].mean() - offers.ordered[c].mean())
    return out


def _deciles(offers: OfferSet, ranking: np.ndarray) -> pd.DataFrame:
    """Per decile of predicted uplift (1: highest): offers, the mean prediction and the realised
    treated and control order rates."""
    decile = 10 - pd.qcut(pd.Series(ranking).rank(method="first"), 10, labels=False).to_numpy()
    frame = pd.DataFrame({"decile": decile, "predicted": ranking, "treated": offers.treated, "ordered": offers.ordered})
    rows = []
    for d, part in frame.groupby("decile"):
        rows.append({"decile": int(d), "offers": len(part), "predicted_uplift": float(part["predicted"].mean()),
                     "treated_rate": float(part.loc[part["treated"], "ordered"].mean()),
                     "control_rate": float(part.loc[~part["treated"], "ordered"].mean())})
    return pd.DataFrame(rows)
