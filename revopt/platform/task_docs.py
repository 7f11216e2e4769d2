"""What every revopt DAG and task does, in words a person reads in the Airflow UI (the ``doc_md`` of each DAG
and task): what it does, what it reads and writes, what a failure means and what to do about it.

Plain data, no imports: the DAG files import it when Airflow parses them (``tests/dags`` asserts parsing stays
light), and ``tests/dags`` asserts every task of every DAG has its text here.
"""

from __future__ import annotations


def _doc(does: str, reads: str, writes: str, failure: str) -> str:
    return f"{does}\n\n**Reads** {reads}\n\n**Writes** {writes}\n\n**If it fails** {failure}"


_RERUN = "Re-run the DAG for the same run date (`revopt run --dag {dag} --date D`): every write replaces that date."
_TRANSIENT = ("A connection, timeout or busy-server error is retried automatically (twice, with backoff); any other "
              "error fails at once: read the log's last lines. " + _RERUN)

#: Where a failure's notification goes and what it says (docs/workbench.md, "Airflow").
OPERATIONS = (
    "\n\n### Operating it\n"
    "- Each task's **Docs** tab says what it reads, writes and what a failure means.\n"
    "- A failed task sends a notification (webhook from the `revopt_notify` connection, e-mail when "
    "`revopt_notify_smtp` is set): DAG, run date, task, the error's first lines, the failed data-quality "
    "expectations and the log link.\n"
    "- The run's **note** (Details tab) sums up what was published, the model versions and the gates.\n"
    "- Params: the trigger form validates every value (type and bounds); rules across params are checked by "
    "the first task, which names the param, its value and the rule."
)

_SHARED = {
    "record_alias_moves": _doc(
        "Looks for `@champion` aliases moved by hand (MLflow UI) since the last recorded promotion and records each "
        "move as a manual promotion (who could not be known: `manual (UI)`).",
        "the MLflow model registry, `scores.model_promotions`.",
        "`scores.model_promotions` (one row per detected move). Returns the number of moves.",
        "Nothing else waits for it: scoring and training go on. Check the MLflow registry is reachable; " + _TRANSIENT),
    "resolve_identities": _doc(
        "Works out which accounts and devices belong to one person (shared e-mail hash, logins, Fellegi-Sunter "
        "match on contact details above `identity_match_threshold`).",
        "`shop.customers`, `shop.customer_contacts`, the login events, `scores.erasure_log`.",
        "a file in the run folder for `publish_identity_map`.",
        "Every extract waits for the identity map, so nothing runs after it. Bad contact data fails here: read the "
        "log. " + _TRANSIENT),
    "publish_identity_map": _doc(
        "Publishes tonight's identity map.", "the file `resolve_identities` wrote.",
        "`scores.identity_map` (the run date's rows, replaced in one transaction).",
        "Nothing was published; " + _TRANSIENT),
    "apply_identity_map": _doc(
        "Copies the identity map into the events store (ClickHouse / chDB) so event datasets are per person.",
        "`scores.identity_map`.", "the events store's identity table.",
        "Every extract waits for it. Check the events store is up; " + _TRANSIENT),
    "extract_tables": _doc(
        "Reads the PostgreSQL tables this DAG needs as of the run date (`lookback_days` of history; training reads "
        "further back) into Parquet files in the run folder: the extract's `tables` part. It runs beside "
        "`extract_events`, and its datasets are validated (`validate_tables`) as soon as it ends.",
        "the source tables (`shop.*`, per the contract in docs/).",
        "Parquet files under the run folder; returns their paths.",
        "A missing table or column is named in the error: fix the source or its mapping (docs/). " + _TRANSIENT),
    "extract_events": _doc(
        "Computes the extract's `events` part in the events store as of the run date: event features, engagement, "
        "product views, conversion paths. It reads the customers and orders it joins to the events from "
        "PostgreSQL itself, so it runs beside `extract_tables`; its datasets are validated (`validate_events`) as soon "
        "as it ends.",
        "the events store, and the customers, orders and offers tables.",
        "Parquet files under the run folder; returns their paths.",
        "A missing table or column is named in the error: fix the source or its mapping (docs/). " + _TRANSIENT),
    "validate_tables": _doc(
        "**Data-quality gate, the tables part.** Runs the Great Expectations suite (`expectations/`) of each "
        "dataset `extract_tables` wrote, while the events part is still extracting; a failed expectation stops "
        "everything downstream, so nothing is published from bad data.",
        "the tables part's Parquet files.",
        "`scores.data_quality` (one row per dataset, pass or fail, with the failed expectations).",
        "The error names the dataset, the column and the expectation (and a notification says the same). Fix the "
        "source data, or the suite if the expectation is wrong, then re-run the date. Retrying cannot help."),
    "validate_events": _doc(
        "**Data-quality gate, one share of the events part.** Runs the Great Expectations suite (`expectations/`) "
        "of each dataset in its share of what `extract_events` wrote (the shares, balanced by size, run side by "
        "side); a failed expectation stops everything downstream, so nothing is published from bad data.",
        "the events part's Parquet files of its share.",
        "`scores.data_quality` (one row per dataset, pass or fail, with the failed expectations).",
        "The error names the dataset, the column and the expectation (and a notification says the same). Fix the "
        "source data, or the suite if the expectation is wrong, then re-run the date. Retrying cannot help."),
    "validate": _doc(
        "**Data-quality gate.** Passes once `validate_tables` and every `validate_events` share passed: the tasks "
        "after it read only data that passed every expectation.",
        "the results of `validate_tables` and `validate_events`.",
        "the extract's paths, for the tasks after it.",
        "It fails (upstream failed) when a part's validation failed: see that task's error, which names the dataset, "
        "the column and the expectation."),
    "summarise_run": _doc(
        "Writes the run's **note** (Details tab): rows published per table, model versions (scored with, or trained "
        "with the gate's decision), data-quality and promotion gates, and the nightly report's path. Runs whatever "
        "happened upstream; it never fails the run.",
        "the return values of this run's tasks (XCom).",
        "the DAG run note (through the Airflow REST API when the `revopt_airflow_api` connection is set; "
        "`revopt run` writes it itself). Returns the note.",
        "Only the note is missing: the log says why. Nothing to re-run."),
}

_NIGHTLY = {
    "remove_old_run_folders": _doc(
        "Deletes run folders (extracts, features, outputs: personal data) older than `run_folder_retention_days`.",
        "the state folder's `runs/`.", "deletes folders; returns what it removed.",
        "Nothing else depends on it. Check the folder's permissions; `revopt gc` does the same by hand."),
    "assign_experiments": _doc(
        "Assigns tonight's customers and products to the running experiments (hash of unit and experiment, "
        "`experiment_holdout_share` held out) before anything is served.",
        "`scores.experiments`, the extracted customers and products.", "`scores.experiment_assignments`.",
        "Scores, prices and send times wait for it. An experiment definition error is named in the log. "
        + _TRANSIENT),
    "build_features": _doc(
        "Builds tonight's customer features (RFM, engagement, categories).", "the extracted datasets.",
        "a features file in the run folder.", "The log names the dataset or column. " + _TRANSIENT),
    "prepare_scores": _doc(
        "Decides once for the whole store what every scoring partition shares: which customer families can be "
        "scored tonight and the `@champion` version of each (pinned for the run), and the `partitions` to map "
        "`score` over; empties tonight's staging of `scores.customer_scores`.",
        "the extracted customers and orders, the MLflow registry (`@champion` aliases).",
        "nothing visible; returns one entry per partition (docs/scale.md, partitioned execution).",
        "No scoring partition starts; yesterday's scores stay. " + _TRANSIENT),
    "score": _doc(
        "Scores the customers of one customer-hash partition (one mapped task each; `partitions`, default 1) with "
        "the pinned `@champion` of propensity, churn and CLV, with the top factors of each score.",
        "tonight's features, the versions `prepare_scores` pinned.",
        "a scores file per partition in the run folder; returns the versions used.",
        "No champion yet: run `revopt run --dag training` first. A family the store cannot support is skipped, "
        "not failed. " + _TRANSIENT),
    "gather_scores": _doc(
        "Checks the partitions scored every customer exactly once and gives each customer a value tier (CLV ranked "
        "over the whole population: high, medium, low).",
        "every partition's scores file (customer ids and scores only), tonight's features.",
        "a small file of every customer's scores and tier (what the drift check reads).",
        "Nothing is published; yesterday's scores stay. A customer missing or scored twice is a bug: read the "
        "log. " + _TRANSIENT),
    "stage_scores": _doc(
        "Copies one partition's scores, with their value tiers, into tonight's staging of "
        "`scores.customer_scores` (one mapped task per partition).",
        "the partition's scores file, the gathered tiers.",
        "the staging table, which readers do not see.",
        "Nothing of tonight's scores is visible; yesterday's stay. " + _TRANSIENT),
    "publish": _doc(
        "Publishes tonight's customer scores: every staged partition becomes the run date's rows at once.",
        "the staged partitions.",
        "`scores.customer_scores` (the run date's rows, replaced atomically).",
        "Nothing of tonight's scores is visible; yesterday's stay. " + _TRANSIENT),
    "check_drift": _doc(
        "Compares tonight's features and scores with the training reference (Evidently); above "
        "`drift_share_threshold` it asks for retraining.", "tonight's scores and features, the champion's "
        "reference in MLflow.", "`scores.feature_drift`, `scores.drift_checks`, an Evidently report in MLflow.",
        "Scores are already published; only the drift record is missing. " + _TRANSIENT),
    "drift_above_threshold": _doc(
        "Continues to `signal_drift` only when the drift check asked for retraining (else skipped).",
        "`check_drift`'s result.", "nothing.", "Cannot fail on data; see `check_drift`."),
    "signal_drift": _doc(
        "Updates the `revopt_drift_detected` asset, which starts `revopt_training`.", "the drift reason.",
        "the asset event.", "Training is not triggered: run it by hand."),
    "evaluate_outcomes": _doc(
        "Compares earlier nights' published scores, prices, send times and budgets whose horizon has passed with "
        "what happened; more than `performance_drop_threshold` below the test value asks for retraining.",
        "earlier `scores.*` partitions and tonight's extract.", "`scores.model_performance`, MLflow metrics.",
        "Tonight's outputs are unaffected. " + _TRANSIENT),
    "performance_below_threshold": _doc(
        "Continues to `signal_performance_drop` only when outcome monitoring asked for retraining (else skipped).",
        "`evaluate_outcomes`'s result.", "nothing.", "See `evaluate_outcomes`."),
    "signal_performance_drop": _doc(
        "Updates the `revopt_performance_dropped` asset, which starts `revopt_training`.", "the reason.",
        "the asset event.", "Training is not triggered: run it by hand."),
    "recommend_prices": _doc(
        "Recommends a price per product with the pricing `@champion`, inside the guardrails (`price_min_margin`, "
        "`price_max_change`, `price_ending`).", "the extracted products, orders and prices; the registry.",
        "a file in the run folder.", "Skipped when the store has no price history to learn from. " + _TRANSIENT),
    "publish_prices": _doc("Publishes tonight's price recommendations.", "the file `recommend_prices` wrote.",
                           "`scores.price_recommendations`.", _TRANSIENT),
    "recommend_send_times": _doc(
        "Each consenting customer's best send hours (send-time `@champion`), outside the quiet hours.",
        "the extracted engagement by hour, customers; the registry.", "a file in the run folder.",
        "Skipped without e-mail or activity history. " + _TRANSIENT),
    "publish_send_times": _doc("Publishes tonight's send times.", "the file `recommend_send_times` wrote.",
                               "`scores.send_time_recommendations`.", _TRANSIENT),
    "allocate_budget": _doc(
        "Splits the daily marketing budget across channels with the budget `@champion`'s response curves, within "
        "`budget_max_change` and the per-channel bounds.", "the extracted marketing spend and orders; the registry.",
        "a file in the run folder.", "Skipped when the store has no marketing spend. " + _TRANSIENT),
    "publish_budget": _doc("Publishes tonight's budget split.", "the file `allocate_budget` wrote.",
                           "`scores.budget_allocations`.", _TRANSIENT),
    "attribute": _doc(
        "Credits the orders of the last `attribution_window_days` to channels and campaigns with every attribution "
        "model, checking each conserves orders, revenue and spend.", "the conversion paths, orders, spend.",
        "files in the run folder, an MLflow run with the shares plot.",
        "A conservation error names the model: report it as a bug. " + _TRANSIENT),
    "publish_attribution": _doc("Publishes tonight's attribution.", "the files `attribute` wrote.",
                                "`scores.attribution`, `scores.order_attribution`.", _TRANSIENT),
    "acquisition_economics": _doc(
        "Cohort CAC, LTV:CAC and payback per channel and campaign (tonight's CLV), and the next 28 days' CAC from "
        "the budget champion's curves.", "the extract, the attribution, `scores.customer_scores`.",
        "files in the run folder.", _TRANSIENT),
    "publish_economics": _doc("Publishes tonight's acquisition economics.", "the files of `acquisition_economics`.",
                              "`scores.channel_economics`, `scores.cac_forecasts`.", _TRANSIENT),
    "campaign_analytics": _doc(
        "Daily analytics per campaign and value tier, and recommendations from tonight's budget and send times.",
        "the events store, the attribution, tonight's budget and send times.", "files in the run folder.",
        "Skipped without campaigns. " + _TRANSIENT),
    "publish_campaigns": _doc(
        "Publishes tonight's campaign analytics.", "the files of `campaign_analytics`.",
        "`scores.campaign_daily`, `scores.campaign_segment_daily`, `scores.campaign_recommendations`.", _TRANSIENT),
    "segment_customers": _doc(
        "Lifecycle segments (rules on recency, churn risk and CLV) and behavioural clusters (k-means).",
        "tonight's features and `scores.customer_scores`.", "files in the run folder.", _TRANSIENT),
    "publish_segments": _doc("Publishes tonight's segments.", "the files of `segment_customers`.",
                             "`scores.customer_segments`, `scores.segment_profiles`.", _TRANSIENT),
    "prepare_recommendations": _doc(
        "Decides once for the whole store whether products can be recommended tonight and pins the "
        "recommendations `@champion` version for every partition; empties tonight's staging of "
        "`scores.recommendations`.",
        "the extracted customers, orders, views, products, inventory; the MLflow registry.",
        "nothing visible; returns one entry per partition (docs/scale.md, partitioned execution).",
        "No partition starts; yesterday's recommendations stay. " + _TRANSIENT),
    "recommend_products": _doc(
        "Top-`recs_k` products for the customers of one customer-hash partition (one mapped task each; "
        "`partitions`, default 1) with the pinned recommendations `@champion` (bought recently, excluded "
        "categories and out-of-stock products left out; at most `recs_max_per_category` per category).",
        "the extracted orders, products, inventory (whole: the cold start ranks by every buyer), the partition's "
        "product views; the registry.", "a file per partition in the run folder.",
        "Skipped when the store cannot train recommendations. " + _TRANSIENT),
    "stage_recommendations": _doc(
        "Copies one partition's recommendations into tonight's staging of `scores.recommendations` (one mapped "
        "task per partition).", "the partition's file of `recommend_products`.",
        "the staging table, which readers do not see.",
        "Nothing of tonight's recommendations is visible; yesterday's stay. " + _TRANSIENT),
    "publish_recommendations": _doc(
        "Publishes tonight's product recommendations: every staged partition becomes the run date's rows at once.",
        "the staged partitions.", "`scores.recommendations` (the run date's rows, replaced atomically).",
        _TRANSIENT),
    "next_best_action": _doc(
        "One next best action per customer: the uplift `@champion`'s offer, within the offer budget, the contact "
        "cap and consent.", "tonight's features, segments and recommendations.", "a file in the run folder.",
        _TRANSIENT),
    "publish_next_best_action": _doc("Publishes tonight's next best actions.", "the file of `next_best_action`.",
                                     "`scores.next_best_action`.", _TRANSIENT),
    "nightly_report": _doc(
        "Builds the nightly report: one HTML page summarising tonight's published tables with plots (scores vs "
        "yesterday, price moves, send hours, budget shifts, data quality, drift), kept in the run folder and as an "
        "MLflow artifact. Runs whatever happened upstream.", "tonight's `scores.*` partitions.",
        "`report.html` in the run folder, an MLflow run with it as an artifact.",
        "Only the report is missing; published tables are unaffected. " + _TRANSIENT),
}

_TRAINING = {
    f"train_{family}": _doc(
        f"Trains the {label} family: training set as of the cutoff, Optuna tuning, fit, rolling-origin backtest, "
        "evaluation on the test window, registration in MLflow and the **promotion gate** (beats the naive baseline "
        "and the champion, one-sided, at `promotion_alpha`, by `promotion_margin`).",
        "the training extract's tables part, once `validate_tables` passed (it starts while the events part is "
        "still extracting)." if family == "pricing" else "the training extract.",
        "an MLflow run (params, metrics, plots, model), a registered version, the "
        "`@champion` alias when promoted, `scores.model_promotions`.",
        "Other families go on; the run fails at the end. Skipped (not failed) when the store cannot support the "
        "family. A non-finite model or failed tuning is named in the log. " + _TRANSIENT)
    for family, label in (("propensity", "purchase propensity"), ("churn", "churn"), ("clv", "customer lifetime "
                          "value"), ("pricing", "price elasticity"), ("send_time", "send time"),
                          ("budget", "marketing budget (media mix)"), ("recommendations", "product recommendations"),
                          ("uplift", "offer uplift"))
}

_EXPERIMENTS = {
    "analyse": _doc(
        "Analyses every running (or recently ended) experiment per variant and metric: fixed-horizon and "
        "always-valid statistics, CUPED, the sample ratio check and the decision.",
        "the extract, `scores.experiments`, `scores.experiment_assignments`.",
        "`scores.experiment_results`, one MLflow run per experiment (`revopt/ab_tests`).",
        "A sample ratio mismatch is a result, not a failure. " + _TRANSIENT),
}

_AFFINITY = {
    "refresh": _doc(
        "Decays the previous refresh's recency-weighted counts to this cutoff and adds what arrived since.",
        "`scores.affinity_state`, order lines and product views since the previous refresh.",
        "a file in the run folder.", _TRANSIENT),
    "publish": _doc("Publishes the customer affinity scores and the state the next refresh starts from.",
                    "the file `refresh` wrote.", "`scores.customer_affinity`, `scores.affinity_state`.", _TRANSIENT),
}

_BY_DAG = {
    "revopt_nightly": {**_SHARED, **_NIGHTLY},
    "revopt_training": {**_SHARED, **_TRAINING},
    "revopt_experiments": {**_SHARED, **_EXPERIMENTS},
    "revopt_affinity": _AFFINITY,
}


def task_doc(dag_id: str, task_id: str) -> str:
    """The markdown shown on ``task_id``'s Docs tab in ``dag_id`` ("" when there is none: tests/dags fails then)."""
    short = dag_id.removeprefix("revopt_")
    return _BY_DAG.get(dag_id, {}).get(task_id, "").replace("{dag}", short)


def dag_doc(dag_id: str, description: str) -> str:
    """The DAG's Docs panel: its description (the DAG file's docstring) and how to operate it."""
    return description.strip() + OPERATIONS
