"""The run parameters: one definition, read by every family and step, from which the DAGs' Airflow
``Param``s are generated (``dags/_support.py``: :func:`param_specs`).

Each field carries its default (the DAG's default), its JSON-schema type and bounds, its description and
the DAGs that offer it. Families turn these plain values into their own configuration
(``ml.families.pricing.guardrails(params)`` and so on); nothing here imports a family.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

TRAINING = "training"
NIGHTLY = "nightly"
#: the experiments' nightly analysis (revopt_experiments)
EXPERIMENTS = "experiments"
#: the customer-affinity refresh (revopt_affinity, several times a day)
AFFINITY = "affinity"
BOTH = (TRAINING, NIGHTLY)

#: The longest test window of the families tested on the last days before the run date: pricing 28 days,
#: send time 28 (``holdout_days``), budget 8 weeks (``holdout_weeks``; their tests check these). Each earlier
#: origin of their rolling-origin backtest moves the run date back one window.
LONGEST_TEST_WINDOW_DAYS = 56


def _param(default: Any, schema: Mapping[str, Any], description: str, dags: tuple[str, ...] = BOTH) -> Any:
    """A dataclass field with its Airflow ``Param`` (JSON schema, description, which DAGs offer it)."""
    metadata = {"schema": dict(schema), "description": description, "dags": dags}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class RunParams:
    """Run-level settings, one field per DAG param."""

    lookback_days: int = _param(730, {"type": "integer", "minimum": 30}, "History read before the run date (days).",
                                (TRAINING, NIGHTLY, EXPERIMENTS))
    churn_active_days: int = _param(365, {"type": "integer", "minimum": 1},
                                    "A customer is active (gets a churn score) with an order this recently (days).")
    propensity_horizon_days: int = _param(30, {"type": "integer", "minimum": 1, "maximum": 365},
                                          "Purchase window N (days).", (TRAINING,))
    churn_horizon_days: int = _param(60, {"type": "integer", "minimum": 1, "maximum": 365},
                                     "No-purchase window M (days) for churn.", (TRAINING,))
    clv_horizon_days: int = _param(90, {"type": "integer", "minimum": 1, "maximum": 730}, "CLV horizon H (days).",
                                   (TRAINING,))
    clv_selection_metric: str = _param(
        "rmse", {"type": "string", "enum": ["rmse", "mae", "spearman"]},
        "What picks the CLV model on the validation customers and what the promotion gate compares on the test "
        "window: rmse (expected spend in currency), mae, or spearman (rank correlation: for a store that uses CLV to "
        "rank customers).", (TRAINING,))
    n_trials: int = _param(12, {"type": "integer", "minimum": 1, "maximum": 500}, "Optuna trials per family.",
                           (TRAINING,))
    tuning_timeout_seconds: float = _param(300.0, {"type": "number", "minimum": 1},
                                           "Wall-clock tuning budget per family, counted from the search's start "
                                           "(scoring a default configuration included).", (TRAINING,))
    seed: int = _param(42, {"type": "integer"}, "Seed for tuning and fitting (every family's random_state).",
                       (TRAINING,))
    promotion_margin: float = _param(
        0.005, {"type": "number", "minimum": 0},
        "How much a new model must beat the champion by (ROC AUC and Qini points; CLV, pricing, send time and budget: "
        "share of the champion's error; recommendations: share of the champion's NDCG).", (TRAINING,))
    promotion_alpha: float = _param(
        0.05, {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
        "Significance level of the promotion gate: a model is promoted only when its paired comparison on the test "
        "window beats the naive baseline, and the champion, with a one-sided p-value below this.", (TRAINING,))
    backtest_origins: int = _param(
        3, {"type": "integer", "minimum": 1, "maximum": 12},
        "Test windows of every family's rolling-origin backtest: the latest, then one window earlier each, where "
        "history allows (customer models: one horizon; pricing and send time: 28 days; budget: 8 weeks). Each "
        "repeats selection on the data before its own test window, with a quarter of n_trials (at least 2) and of "
        "tuning_timeout_seconds; the gate decides on the latest alone.", (TRAINING,))
    training_sample_customers: int = _param(
        200_000, {"type": "integer", "minimum": 0},
        "Customers the customer models (propensity, churn, CLV) are tuned and fitted on at each fit cutoff (CLV's "
        "published model too, on the latest labelled window): a seeded "
        "sample by customer-id hash, the same customers at every cutoff and re-run (0: every customer). Their test "
        "window the gate decides on always holds every customer. Send time and recommendations train and test "
        "on the sample alone (send time's training extract reads only its hourly engagement). On a 200k-customer "
        "store (docs/scale.md, Training at 1M) fitting on 50k instead of all cost propensity 0.0016 and churn 0.0020 "
        "test ROC AUC, and send time 1.1 % of its log loss on everyone; 200k keeps a fit at a million customers as "
        "costly as a full fit at 200k.", (TRAINING,))
    price_min_margin: float = _param(0.10, {"type": "number", "minimum": 0}, "Recommended price >= cost x (1 + this).")
    price_max_change: float = _param(0.10, {"type": "number", "minimum": 0, "maximum": 0.99},
                                     "Largest price move per run, as a share of the current price.")
    price_ending: float | None = _param(None, {"type": ["null", "number"], "minimum": 0, "maximum": 0.99},
                                        "Price ending, e.g. 0.99; empty for whole cents.")
    price_horizon_days: int = _param(7, {"type": "integer", "minimum": 1},
                                     "Days the expected units / revenue / profit cover.")
    price_joint_substitutes: bool = _param(True, {"type": "boolean"},
                                           "Price substitutes jointly when the model found a significant "
                                           "cross-price elasticity (off: each product alone).")
    # Products in these categories (services, fees, vouchers: not goods with a demand curve) are never priced.
    price_exclude_categories: list[str] = _param(["postage", "fee", "adjustment", "gift_voucher"],
                                                 {"type": "array", "items": {"type": "string"}},
                                                 "Product categories never priced (services, fees, vouchers).")
    send_quiet_start: int = _param(23, {"type": "integer", "minimum": 0, "maximum": 23},
                                   "Quiet hours start (local hour): nothing is recommended from here ...")
    send_quiet_end: int = _param(6, {"type": "integer", "minimum": 0, "maximum": 23},
                                 "... up to (not including) this local hour. Equal start and end: no quiet hours.")
    default_send_hour: int = _param(10, {"type": "integer", "minimum": 0, "maximum": 23},
                                    "The store's default send hour (local), the baseline the lift is measured against.")
    budget_total: float | None = _param(None, {"type": ["null", "number"], "minimum": 0},
                                        "Total daily marketing budget to allocate; empty for the current total.")
    budget_max_change: float = _param(0.3, {"type": "number", "minimum": 0},
                                      "Largest change per channel vs its current daily spend, as a share.")
    budget_min_spend: dict[str, float] = _param({}, {"type": "object"},
                                                'Minimum daily spend per channel, e.g. {"display": 100}.')
    budget_max_spend: dict[str, float] = _param({}, {"type": "object"},
                                                'Maximum daily spend per channel, e.g. {"paid_search": 5000}.')
    budget_horizon_days: int = _param(28, {"type": "integer", "minimum": 1}, "Days the expected revenue figures cover.")
    attribution_lookback_days: int = _param(
        30, {"type": "integer", "minimum": 1, "maximum": 365},
        "Touchpoints this many days before an order (and after the customer's previous order) make its conversion "
        "path (docs/attribution.md).")
    attribution_window_days: int = _param(
        28, {"type": "integer", "minimum": 1, "maximum": 365},
        "Orders of this many days before the run date are attributed and published each night.", (NIGHTLY,))
    attribution_half_life_days: float = _param(
        7.0, {"type": "number", "exclusiveMinimum": 0}, "Half-life of the time-decay attribution model (days).",
        (NIGHTLY,))
    markov_order: int = _param(1, {"type": "integer", "minimum": 1, "maximum": 3},
                               "Order of the Markov-chain attribution model (states are the last k channels).")
    attribution_model: str = _param(
        "excess_exposure", {"type": "string", "enum": ["first_touch", "last_non_direct_touch", "linear", "time_decay",
                                              "position_based", "markov", "shapley", "excess_exposure",
                                              "recorded"]},
        "The attribution model whose credits the budget model's attributed target, the acquisition economics and "
        "the campaign analytics use (default the data-driven excess-exposure model, the closest to the true "
        "incremental shares in docs/attribution.md); 'recorded' is the channel the store recorded on the order "
        "(needs no clickstream). Without clickstream every model falls back to 'recorded'.")
    campaign_days: int = _param(28, {"type": "integer", "minimum": 1, "maximum": 365},
                                "Days of daily campaign analytics published each night.", (NIGHTLY,))
    campaign_min_roas: float = _param(
        1.0, {"type": "number", "minimum": 0},
        "Recommend pausing a campaign whose attributed 28-day ROAS is below this even at the upper end of its "
        "interval.", (NIGHTLY,))
    affinity_half_life_days: float = _param(
        30.0, {"type": "number", "exclusiveMinimum": 0},
        "Half-life of a purchase's or product view's weight in the customer affinity scores (days).", (AFFINITY,))
    affinity_view_weight: float = _param(
        0.1, {"type": "number", "minimum": 0},
        "Weight of one product view relative to one purchase line in the affinity scores.",
        (AFFINITY,))
    affinity_lookback_days: int = _param(
        365, {"type": "integer", "minimum": 1},
        "History the first affinity refresh (or one after a gap this long) reads; later refreshes read only what "
        "arrived since the previous one.", (AFFINITY,))
    recs_k: int = _param(10, {"type": "integer", "minimum": 1, "maximum": 100},
                         "Products recommended per customer (and K of the NDCG@K the recommender is gated on).")
    recs_test_days: int = _param(
        28, {"type": "integer", "minimum": 7, "maximum": 180},
        "Test window of the recommender: what customers bought in the last this many days before the run date; "
        "tuning validates on the same length of window before it.", (TRAINING,))
    recs_exclude_bought_days: int = _param(
        30, {"type": "integer", "minimum": 0},
        "Never recommend a product the customer bought this recently (days; 0: reorders may be recommended).")
    recs_exclude_categories: list[str] = _param(
        ["postage", "fee", "adjustment", "gift_voucher"], {"type": "array", "items": {"type": "string"}},
        "Product categories never recommended (services, fees, vouchers).")
    recs_max_per_category: int = _param(
        4, {"type": "integer", "minimum": 1},
        "Diversity cap: at most this many of a customer's recommendations from one category.")
    recs_exclude_out_of_stock: bool = _param(
        True, {"type": "boolean"},
        "Leave out products whose latest shop.inventory row has nothing on hand (stores without inventory rows: "
        "no effect).")
    segment_new_days: int = _param(30, {"type": "integer", "minimum": 1},
                                   "Lifecycle segment 'new': first order this recently (days; a customer without "
                                   "orders is a 'prospect').", (NIGHTLY,))
    segment_active_days: int = _param(90, {"type": "integer", "minimum": 1},
                                      "Lifecycle segments 'active' / 'champion' / 'at_risk': last order this "
                                      "recently (days).", (NIGHTLY,))
    segment_lost_days: int = _param(365, {"type": "integer", "minimum": 1},
                                    "Lifecycle segment 'lost': no order for this long (days); between "
                                    "segment_active_days and this: 'hibernating'.", (NIGHTLY,))
    segment_at_risk_churn: float = _param(
        0.6, {"type": "number", "minimum": 0, "maximum": 1},
        "An active customer whose churn risk is at least this is 'at_risk'.", (NIGHTLY,))
    segment_champion_quantile: float = _param(
        0.8, {"type": "number", "minimum": 0, "maximum": 1},
        "An active customer whose predicted CLV (else spend to date) is in the top (1 - this) share is 'champion'.",
        (NIGHTLY,))
    segment_clusters: int = _param(5, {"type": "integer", "minimum": 2, "maximum": 20},
                                   "Behavioural clusters (k-means on standardised RFM and engagement features).",
                                   (NIGHTLY,))
    uplift_horizon_days: int = _param(
        60, {"type": "integer", "minimum": 7, "maximum": 365},
        "Outcome window of a historical offer for the uplift model: ordering (and revenue) within this many days "
        "after it was sent.", (TRAINING,))
    nba_offer_budget: float | None = _param(
        None, {"type": ["null", "number"], "minimum": 0},
        "Total expected cost of tonight's next-best-action offers (discounts given away); empty: no limit, every "
        "action with a positive expected incremental value.", (NIGHTLY,))
    nba_discount_levels: list[float] = _param(
        [0.1, 0.2], {"type": "array", "items": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1}},
        "Discount levels a retention or win-back offer may carry.", (NIGHTLY,))
    nba_contact_cap_days: int = _param(
        7, {"type": "integer", "minimum": 0},
        "Contact-frequency cap window (days; 0: no cap): see nba_max_contacts.", (NIGHTLY,))
    nba_max_contacts: int = _param(
        2, {"type": "integer", "minimum": 1},
        "A customer with this many marketing contacts (email sends and revopt's own published actions) in the last "
        "nba_contact_cap_days gets 'do nothing' tonight.", (NIGHTLY,))
    nba_min_order_uplift: float = _param(
        0.05, {"type": "number", "minimum": 0, "maximum": 1},
        "An offer is made only when the uplift model expects it to raise the customer's probability of ordering by "
        "at least this much (0.05 = 5 points): below, the predicted effect is within the model's noise (tuned on the "
        "synthetic store, docs/personalisation.md; a store whose offers move little needs it lower).", (NIGHTLY,))
    nba_contact_cost: float = _param(0.05, {"type": "number", "minimum": 0},
                                     "Cost of one marketing contact (currency), charged to every action.", (NIGHTLY,))
    drift_share_threshold: float = _param(
        0.3, {"type": "number", "minimum": 0, "maximum": 1},
        "Request retraining when more than this share of the features drifted from the training reference.",
        (NIGHTLY,))
    performance_drop_threshold: float = _param(
        0.05, {"type": "number", "minimum": 0, "maximum": 1},
        "Request retraining when a published score's realised primary metric, once its horizon has passed, is more "
        "than this many points below the version's test value (ROC AUC for propensity and churn, Spearman rank "
        "correlation for CLV, deviance skill over no price response for pricing, open-rate lift near the best hour "
        "for send time; for budget, revenue's absolute percentage error this much above the test MAPE; "
        "docs/monitoring.md).", (NIGHTLY,))
    identity_match_threshold: float = _param(
        0.5, {"type": "number", "minimum": 0.5, "maximum": 1},
        "Two accounts whose contact details (shop.customer_contacts) give a Fellegi-Sunter match probability at least "
        "this high are merged into one customer (docs/privacy.md: at 0.5, precision 0.97-0.99 and recall 0.93-0.95 "
        "of merges on the synthetic stores; higher trades recall for precision); 1 turns probabilistic merging off "
        "(a shared e-mail hash still merges, logins still link devices).")
    run_folder_retention_days: int = _param(
        30, {"type": "integer", "minimum": 1},
        "Run folders (extracts, features, outputs: personal data) of run dates older than this many days before the "
        "run date are deleted by the nightly run (`revopt gc` by hand; docs/privacy.md).", (NIGHTLY,))
    published_retention_days: int = _param(
        0, {"type": "integer", "minimum": 0},
        "Run dates of the partitioned published tables (scores.customer_scores and the other per-customer ones) "
        "older than this many days before the run date are detached and dropped by the nightly run; 0 (the "
        "default) keeps every run date: they are what downstream apps read as history, and the outcome checks "
        "read past nights back to the longest horizon (e.g. clv_horizon_days), so set it above that "
        "(docs/scale.md, \"Publishing\").", (NIGHTLY,))
    partitions: int = _param(
        1, {"type": "integer", "minimum": 1, "maximum": 64},
        "Customer-hash partitions the nightly customer scoring and its publishing are mapped over (one task per "
        "partition, the same published rows for any number). 1 for the embedded stack, whose tasks run one at a "
        "time; raise it to about the Celery worker slots (compose profile celery) so the slices run side by side "
        "(docs/scale.md, partitioned execution).", (NIGHTLY,))

    experiment_holdout_share: float = _param(
        0.0, {"type": "number", "minimum": 0, "maximum": 0.5},
        "Share of customers and products held out of every experiment (a global holdout: they always get the "
        "default treatment; docs/experiments.md).", (NIGHTLY,))
    experiment_pre_days: int = _param(
        90, {"type": "integer", "minimum": 1, "maximum": 365},
        "Days before a unit's first assignment whose metric is its CUPED covariate.", (EXPERIMENTS,))
    experiment_followup_days: int = _param(
        28, {"type": "integer", "minimum": 0, "maximum": 365},
        "An experiment that stopped assigning units is still analysed this many days (its units' outcomes keep "
        "accruing).", (EXPERIMENTS,))

    @classmethod
    def from_mapping(cls, params: Mapping[str, Any]) -> RunParams:
        """Build from DAG params, ignoring keys this object does not know."""
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in params.items() if key in known})

    @property
    def training_extract_days(self) -> int:
        """History the training extract reads: the nightly ``lookback_days`` plus the furthest cutoff back,
        so every cutoff's inputs come from the same length of history as tonight's. The customer models
        fit at ``D - 2h`` for their horizon h and test at ``D - h``, and each earlier backtest origin moves
        both back by h; pricing, send time and budget build their data as of ``D - k x window`` for
        origin k (:data:`LONGEST_TEST_WINDOW_DAYS`)."""
        longest = max(self.propensity_horizon_days, self.churn_horizon_days, self.clv_horizon_days)
        return self.lookback_days + max((1 + self.backtest_origins) * longest,
                                        (self.backtest_origins - 1) * LONGEST_TEST_WINDOW_DAYS)

    def extract_days(self, purpose: str) -> int:
        """Days of history the ``purpose`` DAG's extract reads: ``lookback_days`` at night; training
        reads further back (:attr:`training_extract_days`)."""
        return self.training_extract_days if purpose == TRAINING else self.lookback_days


@dataclass(frozen=True)
class ParamSpec:
    """One run parameter as a DAG offers it: its name, default, JSON schema and description."""

    name: str
    default: Any
    schema: dict[str, Any]
    description: str


def param_specs(dag: str) -> list[ParamSpec]:
    """The run parameters the ``dag`` (``"training"`` or ``"nightly"``) offers, in definition order."""
    specs = []
    for f in fields(RunParams):
        if dag not in f.metadata["dags"]:
            continue
        default = f.default if f.default is not MISSING else f.default_factory()
        specs.append(ParamSpec(f.name, default, {"$schema": SCHEMA_DRAFT, **f.metadata["schema"]},
                               f.metadata["description"]))
    return specs


#: The JSON-schema draft of every param's schema (they use its keywords only). Airflow checks a param's value with
#: ``jsonschema.validate``, which first checks the schema against its draft's metaschema, every time: each task
#: serialises the run's ~50 params about ten times (21k checks in one nightly run). Without ``$schema`` that is draft
#: 2020-12, whose metaschema costs three times draft 7's: 0.20 against 0.064 ms a check (docs/scale.md, "Session 21").
SCHEMA_DRAFT = "http://json-schema.org/draft-07/schema#"
