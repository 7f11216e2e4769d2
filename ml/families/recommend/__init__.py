"""Product recommendations: the top-K products per customer, from an implicit-feedback ALS.

The family (:data:`FAMILY`, :class:`ml.family.Family`) and its parts, split by concern:

- :mod:`features.interactions` (data preparation): purchases per customer, product and day from the
  ``order_items`` extract, product views from ``product_views`` (ClickHouse; empty without clickstream),
  the catalogue (category, name, latest stock) and the customers' segment columns; the nightly input,
  one long frame of the four (:func:`~features.interactions.recommendation_input`);
- :mod:`.config`: :class:`RecsConfig` (what tuning chooses) and :class:`Rules` (the ``recs_*`` run params);
- :mod:`.estimator`: :func:`fit_als` (``implicit``'s ALS), folding a customer's history into the item
  factors with the explanation of each score, popularity, and ``implicit``'s BM25 item-kNN (a benchmark);
- :mod:`.recommender`: :func:`recommend` - every customer's list under the rules, ALS for customers
  with history, segment popularity for the cold start, with reasons;
- :mod:`.backtest`: evaluation windows, their test rows and truth, NDCG / precision / recall at K,
  coverage, and the Optuna search space;
- :mod:`.model`: :class:`RecommendationsModel`, the registered pyfunc.

Why ALS. Measured on UCI Online Retail with a time split before choosing (fit before 2011-09-01,
score the customers' new purchases to 2011-12-09, each library's settings chosen on the three months
before): ALS NDCG@10 0.124, BM25 item-kNN 0.117, LightFM WARP 0.096, BPR 0.093, popularity 0.052
(``benchmarks/recommendations.py`` repeats ALS, item-kNN and popularity). ``implicit`` is well kept,
has wheels for our Python, fits in seconds on one thread and is deterministic given its seed there.

Evaluation (:class:`RecommendationsFamily`), three ways in time, windows of ``recs_test_days``:

- **test window**: the last ``recs_test_days`` before the run date;
- **selection**: :func:`ml.tuning.search` (the default configuration scored first, kept unless
  beaten) chooses factors, regularization, confidence scale ``alpha``, weighting, sweeps and (with
  clickstream) the weight of a view by NDCG@K on the window before the test window, each trial fitted
  on the ``lookback_days`` before that window;
- **test** (``Trained.test``): the chosen configuration fitted on the ``lookback_days`` before the
  test window and scored on it; the popularity baseline (the gate's floor, ``Trained.baseline``),
  item-kNN (logged) and the champion's spec (:meth:`evaluate`) on the same rows;
- **production**: the chosen configuration fitted on the ``lookback_days`` before the run date.

All three learn from the ``training_sample_customers`` sample of the customers alone (the seeded sample of
the customer families); the nightly run folds every customer into the registered item factors.

Test rows and the metric are in :mod:`.backtest`: NDCG@K (K = ``recs_k``) of what the rules would
publish, one row per customer, compared paired by a bootstrap over customers; the promotion margin
is a share of the champion's NDCG.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from features.customer import customer_sampler
from features.interactions import (
    CUSTOMERS,
    INVENTORY,
    ORDER_ITEMS,
    PRODUCT_VIEWS,
    PRODUCTS,
    RecommendationInput,
    interactions_from_extract,
    recommendation_input,
)
from ml import plots
from ml.evaluation import Evaluation
from ml.families.recommend.backtest import (
    NDCG,
    Window,
    baselines,
    evaluation,
    fitted,
    ndcg_at_k,
    precision_at_k,
    predictions,
    recall_at_k,
    scores,
    search_space,
    window,
)
from ml.families.recommend.config import (
    MIN_SEGMENT_BUYERS,
    POPULARITY_DAYS,
    PREDICT_PARAMS,
    RecsConfig,
    Rules,
    cutoff,
    pyfunc_params,
    rules_from_params,
)
from ml.families.recommend.estimator import ItemFactors, fit_als, strengths
from ml.families.recommend.model import RecommendationsModel
from ml.families.recommend.recommender import PUBLISHED_COLUMNS, SOURCES, recommend, top_k
from ml.family import DataWindow, Frames, Trained, config_from_spec, config_spec, dated_window
from ml.params import RunParams
from ml.reuse import kept
from ml.tuning import Budget, Callback, search

logger = logging.getLogger(__name__)

MODEL_NAME = "revopt_recommendations"
DATASETS = (CUSTOMERS, ORDER_ITEMS, PRODUCT_VIEWS, PRODUCTS, INVENTORY)
#: the tuned fields of :class:`RecsConfig`, logged as ``best_<field>`` params
TUNED_FIELDS = ("factors", "regularization", "alpha", "iterations", "weighting", "view_weight")
#: Least history to learn from: customers and products with purchases before the validation window,
#: and test rows (customers buying in the window what may be recommended) in each of the two windows.
MIN_CUSTOMERS = 20
MIN_PRODUCTS = 10
MIN_TEST_ROWS = 10
#: customers of the logged input example, and the most popular products its catalogue adds
EXAMPLE_CUSTOMERS = 5
EXAMPLE_POPULAR_PRODUCTS = 20


@dataclass(frozen=True)
class RecommendationsData:
    """What training and the gate read: the interactions of the whole training extract, the run date,
    the run's rules, history length and window length, and the default configuration (seeded)."""

    interactions: RecommendationInput
    run_date: dt.date
    rules: Rules
    lookback_days: int
    test_days: int
    default: RecsConfig
    #: the test window's predictions of each configuration fitted on its history (:meth:`test_predictions`)
    _tested: dict[RecsConfig, np.ndarray] = field(default_factory=dict, compare=False, repr=False)

    @property
    def as_of(self) -> pd.Timestamp:
        return cutoff(self.run_date)

    @property
    def test_start(self) -> pd.Timestamp:
        return self.as_of - pd.Timedelta(days=self.test_days)

    @property
    def valid_start(self) -> pd.Timestamp:
        return self.test_start - pd.Timedelta(days=self.test_days)

    def test_window(self) -> Window:
        return window(self.interactions, self.test_start, self.as_of, self.lookback_days, self.rules)

    def valid_window(self) -> Window:
        return window(self.interactions, self.valid_start, self.test_start, self.lookback_days, self.rules)

    def test_predictions(self, config: RecsConfig, test: Window) -> np.ndarray:
        """The lists of ``config`` fitted on the history before the test window (``test``: :meth:`test_window`) for
        its rows; computed once per configuration. An ALS fit here is seeded and on one thread, so
        the gate judging a champion of the candidate's configuration reuses the candidate's fit instead of
        repeating it (minutes at a million customers, docs/scale.md)."""
        if config not in self._tested:
            self._tested[config] = predictions(test, fitted(test, config))
        return self._tested[config]


def _windows(data: RecommendationsData) -> dict[str, DataWindow]:
    """The purchases of each window: the search's models learn from the ``lookback_days`` before the
    validation window (``train``) and are scored on its purchases (``validation``); the chosen
    configuration learns from the history before the test window and is scored on its purchases (``test``)."""
    purchases = data.interactions.purchases
    day = purchases["day"]
    train_from = data.valid_start - pd.Timedelta(days=data.lookback_days)
    what = "purchases (customer, product, day) of completed orders"
    return {"train": dated_window(purchases[(day >= train_from) & (day < data.valid_start)], "day",
                                  f"{what} the search's models learn from", start=train_from,
                                  end=data.valid_start - pd.Timedelta(days=1)),
            "validation": dated_window(purchases[(day >= data.valid_start) & (day < data.test_start)], "day",
                                       f"{what}: the validation window the search scores", start=data.valid_start,
                                       end=data.test_start - pd.Timedelta(days=1)),
            "test": dated_window(purchases[(day >= data.test_start) & (day < data.as_of)], "day",
                                 f"{what}: the test window (its models learn from the {data.lookback_days} days "
                                 "before it)", start=data.test_start, end=data.as_of - pd.Timedelta(days=1))}


class RecommendationsFamily:
    """Product recommendations as a :class:`ml.family.Family` (see the module docstring)."""

    name = "recommendations"
    model_name = MODEL_NAME
    training_datasets = DATASETS
    nightly_datasets = DATASETS
    metric = NDCG
    description = ("The top products each customer is most likely to buy next, from every customer's purchases "
                   "and views (implicit-feedback ALS), within the run's rules (in stock, not bought lately, ...): "
                   "published as scores.recommendations.")

    def shortfall(self, frames: Frames, run_date: dt.date, params: RunParams) -> str | None:
        """Too few customers or products with purchases before the validation window, or too few
        customers buying in either window what the rules let us recommend."""
        data = self.training_data(frames, run_date, params)
        before = data.interactions.before(data.valid_start)
        customers, products = before.purchases["customer_id"].nunique(), before.purchases["product_id"].nunique()
        where = ("completed orders in shop.orders with their shop.order_lines (the order_items extract, "
                 f"{params.lookback_days} days of history)")
        if customers < MIN_CUSTOMERS or products < MIN_PRODUCTS:
            return (f"recommendations for {run_date}: {customers} customers bought {products} products before "
                    f"{data.valid_start.date()} (the validation window's start); at least {MIN_CUSTOMERS} customers and "
                    f"{MIN_PRODUCTS} products are needed, from {where}")
        for name, win in (("validation", data.valid_window()), ("test", data.test_window())):
            if len(win.customer_ids) < MIN_TEST_ROWS:
                return (f"recommendations for {run_date}: only {len(win.customer_ids)} customers with history bought a "
                        f"product the rules allow in the {name} window [{win.cutoff.date()}, {win.end.date()}); at least "
                        f"{MIN_TEST_ROWS} are needed to judge a model, from {where}")
        return None

    @kept  # the shortfall reads it too: built once per training run (ml.reuse)
    def training_data(self, frames: Frames, run_date: dt.date, params: RunParams) -> RecommendationsData:
        """The extract's interactions before the run date, of the ``training_sample_customers`` sample of its
        customers alone (:func:`features.customer.customer_sampler`, the other families' seeded sample): tuning,
        the test window and the registered item factors learn from them (each ALS fit of the search grows with the
        customers; at a million, trials of minutes each, docs/scale.md); every customer is folded in at night."""
        interactions = interactions_from_extract(frames, run_date)
        chosen = customer_sampler(params.training_sample_customers, params.seed)(interactions.customers["customer_id"])
        if chosen is not None:
            logger.info("recommendations: training and testing on a sample of %d of %d customers "
                        "(training_sample_customers)", len(chosen), len(interactions.customers))
            interactions = interactions.of_customers(chosen)
        return RecommendationsData(interactions, run_date, rules_from_params(params), params.lookback_days,
                                   params.recs_test_days, RecsConfig(random_state=params.seed))

    def train(self, data: RecommendationsData, params: RunParams, callbacks: Sequence[Callback]) -> Trained:
        """Tune on the validation window, score the chosen configuration, popularity and item-kNN on the
        test window, and fit the production model on the history before the run date."""
        valid = data.valid_window()
        deadline = time.monotonic() + params.tuning_timeout_seconds
        tuned = search(search_space(valid, data.default, deadline),
                       Budget(params.n_trials, params.tuning_timeout_seconds, params.seed), callbacks)
        test = data.test_window()
        candidate = data.test_predictions(tuned.config, test)
        compared = {"test": candidate, **baselines(test, tuned.config.view_weight)}
        measured = {name: scores(test, values) for name, values in compared.items()}
        history = data.interactions.before(data.as_of, data.as_of - pd.Timedelta(days=data.lookback_days))
        production = fit_als(strengths(history, tuned.config.view_weight), tuned.config)
        model = RecommendationsModel(production, data.rules, data.run_date.isoformat())
        example = _example(history)
        predict_params = self.predict_params(data.run_date, params)
        popular = measured["popularity"]["ndcg_at_k"]
        spec = config_spec(self.name, tuned.config)
        return Trained(
            model=model, spec=spec, test=evaluation(test, "candidate", candidate),
            baseline=evaluation(test, "popularity baseline", compared["popularity"]), example=example,
            predict_params=predict_params,
            params={"test_start": data.test_start.date().isoformat(), "valid_start": data.valid_start.date().isoformat(),
                    "test_days": data.test_days, "recs_k": data.rules.k, "popularity_days": POPULARITY_DAYS,
                    "training_sample_customers": params.training_sample_customers,
                    "n_customers": len(data.interactions.customers),
                    "min_segment_buyers": MIN_SEGMENT_BUYERS,
                    **{f"best_{key}": value for key, value in spec["config"].items() if key in TUNED_FIELDS}},
            metrics={"valid_objective": tuned.value, "valid_objective_default": tuned.default_value,
                     **{f"valid_{key}": value for key, value in tuned.metrics.items()},
                     **{f"{name}_{key}": value for name, values in measured.items() for key, value in values.items()},
                     "test_ndcg_over_popularity": measured["test"]["ndcg_at_k"] / popular if popular > 0 else np.nan,
                     "test_rows": float(len(test.customer_ids)), "valid_rows": float(len(valid.customer_ids)),
                     "model_products": float(len(production.product_ids))},
            tables={"test_window_scores.json": pd.DataFrame([{"model": name, **values}
                                                             for name, values in measured.items()])},
            figures={"test_window_metrics.png": plots.grouped_metrics_figure(
                pd.DataFrame(measured).T.rename(index={"test": "candidate (ALS)"}), f"top-{data.rules.k} on the test window from {data.test_start.date()}")},
            windows=_windows(data),
            checks={"scores of the input example's recommendations":
                    model.predict(None, example, predict_params)[["score"]]},
        )

    def evaluate(self, data: RecommendationsData, spec: Mapping[str, Any], params: RunParams) -> Evaluation | None:
        """The configuration in ``spec`` (a champion's) fitted on the history before the test window and
        scored on its rows, exactly as :meth:`train` scores the candidate (the candidate's fit when it is the
        same configuration: :meth:`RecommendationsData.test_predictions`); None when it cannot be rebuilt."""
        config = config_from_spec(self.name, spec, RecsConfig)
        if config is None:
            return None
        test = data.test_window()
        return evaluation(test, "champion", data.test_predictions(config, test))

    def nightly_input(self, frames: Frames, run_date: dt.date, params: RunParams) -> pd.DataFrame:
        """Every customer of the extract, the purchases and views of the last ``lookback_days`` and the
        catalogue, as one frame (:func:`features.interactions.recommendation_input`)."""
        return recommendation_input(interactions_from_extract(frames, run_date, params.lookback_days))

    def nightly_predict(self, model: RecommendationsModel, frames: Frames, run_date: dt.date,
                        params: RunParams, customers_in: Callable[[np.ndarray], np.ndarray] | None = None) -> pd.DataFrame:
        """What the champion's pyfunc ``predict`` returns on :meth:`nightly_input` (:meth:`RecommendationsModel.recommend`,
        tested equal), without that long frame and MLflow's copy of it (docs/scale.md); ``customers_in``: the rows of
        those customers only (a partition, ml.partitioned_recommendations)."""
        return model.recommend(interactions_from_extract(frames, run_date, params.lookback_days),
                               self.predict_params(run_date, params), customers_in)

    def predict_params(self, run_date: dt.date, params: RunParams) -> dict[str, Any]:
        return pyfunc_params(rules_from_params(params), run_date.isoformat())


def _example(history: RecommendationInput) -> pd.DataFrame:
    """The nightly input of the first :data:`EXAMPLE_CUSTOMERS` customers with purchases, with the
    products they touched and the most bought ones in the catalogue (the logged input example)."""
    buyers = history.purchases["customer_id"].drop_duplicates().head(EXAMPLE_CUSTOMERS)
    purchases = history.purchases.loc[history.purchases["customer_id"].isin(buyers)]
    views = history.views.loc[history.views["customer_id"].isin(buyers)]
    popular = history.purchases["product_id"].value_counts().head(EXAMPLE_POPULAR_PRODUCTS).index
    products = set(purchases["product_id"]) | set(views["product_id"]) | set(popular)
    return recommendation_input(dataclasses.replace(
        history, customers=history.customers.loc[history.customers["customer_id"].isin(buyers)],
        purchases=purchases, views=views, catalogue=history.catalogue.loc[history.catalogue["product_id"].isin(products)]))


FAMILY = RecommendationsFamily()

__all__ = [
    "DATASETS", "FAMILY", "MODEL_NAME", "NDCG", "PREDICT_PARAMS", "PUBLISHED_COLUMNS", "SOURCES", "ItemFactors",
    "RecommendationsData", "RecommendationsFamily", "RecommendationsModel", "RecsConfig", "Rules", "Window",
    "fit_als", "ndcg_at_k", "precision_at_k", "recall_at_k", "recommend", "scores", "top_k", "window",
]
