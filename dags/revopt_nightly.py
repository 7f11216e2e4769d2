"""Nightly scoring for logical date D, from one validated extract:

- customer scores: features -> score with every customer family's ``@champion`` -> publish
  ``scores.customer_scores``, mapped over ``partitions`` customer-hash slices (one task each);
- prices: recommendations with the pricing ``@champion`` -> publish ``scores.price_recommendations``;
- send times: each customer's best hours with the send-time ``@champion`` on the latest
  engagement -> publish ``scores.send_time_recommendations``;
- budget: the marketing budget split with the budget ``@champion`` -> publish
  ``scores.budget_allocations``;
- attribution: every attribution model on the conversion paths of the last ``attribution_window_days``,
  conservation checked -> publish ``scores.attribution`` and ``scores.order_attribution``;
- acquisition economics: cohort CAC, LTV:CAC and payback per channel and campaign (tonight's CLV), and the
  next 28 days' CAC from the budget ``@champion``'s curves -> ``scores.channel_economics``, ``scores.cac_forecasts``;
- campaigns: daily analytics per campaign and per value tier (ClickHouse) and recommendations from the budget
  allocation and send times published tonight -> ``scores.campaign_daily``, ``scores.campaign_segment_daily``,
  ``scores.campaign_recommendations``;
- personalisation (docs/personalisation.md): segments (rules and clusters) -> ``scores.customer_segments``,
  ``scores.segment_profiles``; top-K products with the recommendations ``@champion`` -> ``scores.recommendations``;
  one next best action per customer (uplift ``@champion``, budget, cap, consent) -> ``scores.next_best_action``;
- identities first (docs/privacy.md): accounts of one person and the devices they logged in from ->
  ``scores.identity_map``, copied into ClickHouse; every extract after it reads the canonical customer;
- drift: tonight's features and scores against the training reference (Evidently report in
  MLflow, ``scores.feature_drift`` and ``scores.drift_checks``); above ``drift_share_threshold``
  the ``revopt_drift_detected`` asset is updated, which triggers ``revopt_training``;
- outcomes: every earlier published night (customer scores, price recommendations, send times,
  budget allocations) whose horizon has passed against what followed (``scores.model_performance``; more than
  ``performance_drop_threshold`` below the test value updates ``revopt_performance_dropped``: training again);
- retention: run folders older than ``run_folder_retention_days`` are deleted; the note and report last.

Training runs in ``revopt_training`` (weekly and on demand); this DAG never trains, it uses
whichever versions the ``champion`` aliases point at and records them on every row.
"""

from __future__ import annotations

from datetime import datetime, timezone

from airflow.sdk import dag, task

from _gate import validate
from _partitioned import partitioned_recommendations, partitioned_scores
from _run_end import finish, nightly_report, record_alias_moves
from _support import (DEFAULT_ARGS, DRIFT_DETECTED, PERFORMANCE_DROPPED, extract, identity_resolution, publish_outputs,
                      publish_to, remove_old_run_folders, resources, retrain_signal, run_date_of, run_params,
                      run_params_of, skip_if_skipped)


@dag(
    dag_id="revopt_nightly",
    schedule="@daily",
    start_date=datetime(1970, 1, 1, tzinfo=timezone.utc),  # any run date (a store's history may be old); catchup is off
    catchup=False,
    max_active_runs=1,
    params=run_params("nightly"),
    tags=["revopt", "nightly"],
    default_args=DEFAULT_ARGS,
    doc_md=__doc__,
)
def revopt_nightly():
    @task
    def build_features(extract_paths: dict[str, str], **context) -> dict:
        from ml.pipeline import build_features

        return build_features(resources(), run_date_of(context), extract_paths)

    @task
    def assign_experiments(extract_paths: dict[str, str], **context) -> dict:
        from ml.pipeline import assign_experiments
        return assign_experiments(resources(), run_date_of(context), extract_paths, run_params_of(context))

    @task
    def recommend_prices(extract_paths: dict[str, str], **context) -> dict:
        from ml.families import pricing
        from ml.pipeline import recommend

        return skip_if_skipped(recommend(pricing.FAMILY, resources(), run_date_of(context), extract_paths,
                                         run_params_of(context), output="price_recommendations"), context)

    @task
    def recommend_send_times(extract_paths: dict[str, str], **context) -> dict:
        from ml.families import send_time
        from ml.pipeline import recommend

        return skip_if_skipped(recommend(send_time.FAMILY, resources(), run_date_of(context), extract_paths,
                                         run_params_of(context), output="send_time_recommendations"), context)

    @task
    def allocate_budget(extract_paths: dict[str, str], **context) -> dict:
        from ml.families import budget
        from ml.pipeline import recommend

        return skip_if_skipped(recommend(budget.FAMILY, resources(), run_date_of(context), extract_paths,
                                         run_params_of(context), output="budget_allocations"), context)

    @task
    def attribute(extract_paths: dict[str, str], **context) -> dict:
        from ml.pipeline import attribute

        return attribute(resources(), run_date_of(context), extract_paths, run_params_of(context))

    # after tonight's customer scores / budget / send times are published, or their family skipped
    @task(trigger_rule="none_failed")
    def acquisition_economics(extract_paths: dict[str, str], attributed: dict, **context) -> dict:
        from ml.pipeline import acquisition_economics

        return acquisition_economics(resources(), run_date_of(context), extract_paths, attributed,
                                     run_params_of(context))

    @task(trigger_rule="none_failed")
    def campaign_analytics(extract_paths: dict[str, str], attributed: dict, **context) -> dict:
        from ml.pipeline import campaign_analytics

        return skip_if_skipped(campaign_analytics(resources(), run_date_of(context), extract_paths, attributed,
                                                  run_params_of(context)), context)

    # after tonight's churn risk and CLV are published, or their families skipped
    @task(trigger_rule="none_failed")
    def segment_customers(extract_paths: dict[str, str], features: dict, **context) -> dict:
        from ml.pipeline import segment_customers

        return segment_customers(resources(), run_date_of(context), extract_paths, features["path"],
                                 run_params_of(context))

    # after tonight's segments and recommendations are published, or recommendations skipped
    @task(trigger_rule="none_failed")
    def next_best_action(extract_paths: dict[str, str], features: dict, segments: dict, **context) -> dict:
        from ml.pipeline import next_best_action

        return next_best_action(resources(), run_date_of(context), extract_paths, features["path"],
                                segments["customer_segments"], run_params_of(context))

    @task
    def check_drift(scores: dict, **context) -> dict:
        from ml.pipeline import check_drift

        return check_drift(resources(), run_date_of(context), scores, run_params_of(context))

    @task
    def evaluate_outcomes(extract_paths: dict[str, str], **context) -> dict:
        from ml.pipeline import evaluate_outcomes

        return evaluate_outcomes(resources(), run_date_of(context), extract_paths, run_params_of(context))

    record_alias_moves()  # first, beside identities (it blocks nothing)
    extracted = extract("nightly")
    identity_resolution() >> list(extracted.values())
    remove_old_run_folders()
    validated = validate(extracted, "nightly").all
    assigned = assign_experiments(validated)  # before anything is served: serving reads the assignments
    features = build_features(validated)
    # customer scores mapped over the `partitions` customer-hash slices (dags/_partitioned.py, docs/scale.md)
    scores, gathered, published_scores = partitioned_scores(validated, features)
    assigned >> scores
    drift = check_drift(gathered)
    retrain_signal("drift_above_threshold", "signal_drift", DRIFT_DETECTED)(drift)
    performance = evaluate_outcomes(validated)
    retrain_signal("performance_below_threshold", "signal_performance_drop", PERFORMANCE_DROPPED)(performance)
    prices = recommend_prices(validated)
    send_times = recommend_send_times(validated)
    assigned >> [prices, send_times]  # price and message experiments are served from tonight's assignments too
    published_prices = publish_to("publish_prices", "price_recommendations")(prices)
    published_send_times = publish_to("publish_send_times", "send_time_recommendations")(send_times)
    published_budget = publish_to("publish_budget", "budget_allocations")(allocate_budget(validated))
    attributed = attribute(validated)
    published_attribution = publish_outputs("publish_attribution", "attribution", "order_attribution")(attributed)
    economics = acquisition_economics(validated, attributed)
    published_scores >> economics  # tonight's CLV
    published_economics = publish_outputs("publish_economics", "channel_economics", "cac_forecasts")(economics)
    analytics = campaign_analytics(validated, attributed)
    [published_budget, published_send_times] >> analytics  # tonight's allocation and send times
    published_campaigns = publish_outputs("publish_campaigns", "campaign_daily", "campaign_segment_daily",
                                          "campaign_recommendations")(analytics)
    segments = segment_customers(validated, features)
    published_scores >> segments  # tonight's churn risk and CLV
    published_segments = publish_outputs("publish_segments", "customer_segments", "segment_profiles")(segments)
    published_recommendations = partitioned_recommendations(validated)  # mapped too (dags/_partitioned.py)
    actions = next_best_action(validated, features, segments)
    [published_segments, published_recommendations] >> actions
    published_actions = publish_to("publish_next_best_action", "next_best_action")(actions)
    # whatever happened: the report on tonight's tables (then the run's note: finish)
    nightly_report(published_scores, published_prices, published_send_times, published_budget, published_attribution,
                   published_economics, published_campaigns, published_segments, published_recommendations,
                   published_actions)


finish(revopt_nightly())
