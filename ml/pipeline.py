"""What the DAG tasks call, by name: each step takes the task's :class:`Resources`, the run date and
plain parameters, knows nothing of Airflow, and returns a small JSON-serialisable reference for XCom
(paths, run ids, versions, counts) or ``{"skipped": reason}``.

Training: :func:`extract` -> :func:`validate_extracts` -> :func:`train` (one per family, through
:func:`ml.registry.train_family`). Nightly: :func:`extract` -> :func:`validate_extracts` ->
:func:`build_features` -> :func:`score_customers` -> :func:`publish` and :func:`check_drift`; per
config family :func:`recommend` -> :func:`publish` (through :func:`ml.registry.score_family`); and
:func:`evaluate_outcomes`, which compares earlier published scores with what then happened.
"""

from __future__ import annotations

import datetime as dt
import logging
import tempfile
from collections.abc import Collection, Mapping
from itertools import repeat
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd

from features.customer import EVENT_FEATURES_AT_CUTOFFS, FEATURE_COLUMNS, customer_features
from ml import drift
from ml.attribution import steps
from ml.extracting import EVENT_BUILDERS, PATH_DATASETS, extract_datasets
from ml.families import FAMILIES, budget, churn, clv, outcomes, pricing, propensity, send_time, uplift
from ml.families.explain import factors_json
from ml.experiments.nightly import ANALYSIS_DATASETS, analyse_all, assign_units
from ml.experiments.serving import model_variants
from ml.experiments.store import served_as_of
from ml.experiments.variants import serve_price_variants, serve_send_time_variants
from ml.families.clv import value_tier
from ml.family import Family
from ml.params import EXPERIMENTS, NIGHTLY, TRAINING, RunParams
from ml.partitioning import Partition
from ml.personalisation import steps as personalisation
from ml.registry import REFERENCE_FEATURES, Scored, load_champion, score_family, skipped, train_family
from revopt.platform.extract import DATASETS, EVENT_DATASETS, ExtractFiles, read_extract
from revopt.platform.postgres import publish_partition, read_frame, upsert_rows
from revopt.platform.quality import raise_if_failed, validate_and_record
from revopt.platform.resources import Resources

logger = logging.getLogger(__name__)

#: The customer families scored together into ``scores.customer_scores``.
CUSTOMER_FAMILIES = (propensity.FAMILY, churn.FAMILY, clv.FAMILY)


#: What the nightly attribution step reads besides the families' datasets.
ATTRIBUTION_DATASETS = ("orders", "marketing_spend", "conversion_paths")
#: What the next-best-action step reads from tonight's extract besides the uplift family's datasets.
NBA_DATASETS = ("customers", "orders", "order_categories", "products", "inventory")


def _datasets(purpose: str) -> tuple[str, ...]:
    """What the ``purpose`` DAG's extract writes: every dataset a registered family reads for it, in
    extract order (training reads the event features at its past cutoffs, the nightly run at the run date:
    rows per customer computed in ClickHouse, never the daily event rows), and at night what the
    attribution step reads."""
    wanted = {name for family in FAMILIES
              for name in (family.training_datasets if purpose == TRAINING else family.nightly_datasets)}
    if purpose == NIGHTLY:
        wanted |= {*ATTRIBUTION_DATASETS, *NBA_DATASETS}
    return tuple(name for name in (*DATASETS, *EVENT_BUILDERS, EVENT_FEATURES_AT_CUTOFFS, *PATH_DATASETS) if name in wanted)


DAG_DATASETS = {TRAINING: _datasets(TRAINING), NIGHTLY: _datasets(NIGHTLY),
                EXPERIMENTS: tuple(name for name in (*DATASETS, *EVENT_BUILDERS) if name in ANALYSIS_DATASETS)}
#: What the nightly customer-scores path reads (features -> score -> publish).
CUSTOMER_SCORE_DATASETS = ("customers", "orders", "order_categories", "customer_event_features")


def extract(resources: Resources, run_date: dt.date, purpose: str, params: RunParams,
            part: str | None = None) -> dict[str, str]:
    """The datasets the ``purpose`` DAG reads (:data:`DAG_DATASETS`), over its history
    (:meth:`RunParams.extract_days`), written to the run folder; their paths by name. ``part``: one of the
    extract's parts alone (:mod:`ml.extracting`; the DAGs' mapped ``extract`` task), or None for all of it."""
    return extract_datasets(resources, run_date, params.extract_days(purpose), DAG_DATASETS[purpose],
                            params.attribution_lookback_days, params, part)


#: The datasets built from customers and orders (empty for a store that keeps aggregated sales only).
ORDER_DATASETS = ("customers", "orders", "order_categories", "product_daily_sales", "day_totals", "customer_daily_events",
                  "customer_event_features", "engagement_by_hour", "engagement_by_local_hour", EVENT_FEATURES_AT_CUTOFFS)


def aggregates_only(frames: Mapping[str, pd.DataFrame]) -> bool:
    """Whether the extract is of a store that keeps aggregated sales and no orders (an :class:`ExtractFiles` is
    answered from its files' metadata)."""
    rows = frames.rows if isinstance(frames, ExtractFiles) else (lambda name: len(frames[name]))
    return "product_sales" in frames and rows("product_sales") > 0 and ("orders" not in frames or rows("orders") == 0)


def validate_extracts(resources: Resources, run_date: dt.date, extract_paths: dict[str, str],
                      lookback_days: int | None = None, share: tuple[int, int] = (0, 1),
                      only: Collection[str] | None = None) -> dict[str, str]:
    """Gate: validate every extract against its suite in ``expectations/`` and its row count
    against recent runs; any failure raises after every dataset was validated and recorded.

    Each result is stored as JSON and as a data-docs HTML page in the run folder and summarised
    in ``scores.data_quality`` (:mod:`revopt.platform.quality`). A store without clickstream has
    nothing to validate in the event datasets (they were not read). A store that keeps **aggregated
    sales only** (``shop.product_sales`` has rows, ``shop.orders`` none: a scanner panel) has nothing
    to validate in the datasets built from orders (:data:`ORDER_DATASETS`, all empty): the families
    that need them skip with their reasons, pricing reads the aggregates. Returns the paths unchanged
    so downstream tasks depend on the gate having passed. ``share`` ``(k, n)``: the k-th of n shares of
    those datasets alone (:meth:`ExtractFiles.share`: the DAGs' ``validate_events`` tasks, side by side). ``only``:
    validate these of the datasets alone (one part of the extract: the DAGs validate each as it ends); the others
    still tell the store's kind."""
    frames = ExtractFiles(extract_paths)  # read one dataset at a time: together they outgrow a task's memory
    if not resources.settings.clickstream:
        events = (*EVENT_DATASETS, *EVENT_BUILDERS, EVENT_FEATURES_AT_CUTOFFS)
        logger.warning("clickstream off (REVOPT_CLICKSTREAM): %s not validated for %s", ", ".join(events), run_date)
        frames = frames.only(name for name in frames if name not in events)
    if aggregates_only(frames):
        empty = [name for name in ORDER_DATASETS if name in frames and frames.rows(name) == 0]
        logger.warning("the store keeps aggregated sales only (shop.product_sales has rows, shop.orders none): %s "
                       "are empty and not validated for %s", ", ".join(empty), run_date)
        frames = frames.only(name for name in frames if name not in empty)
    if only is not None:
        frames = frames.only(name for name in frames if name in only)
    raise_if_failed(validate_and_record(resources.settings, run_date, frames.share(*share), lookback_days))
    return extract_paths


def build_features(resources: Resources, run_date: dt.date, extract_paths: dict[str, str]) -> dict[str, str | int]:
    """Customer features as of the run date, validated and written to the run folder.

    The engagement columns come from ``customer_event_features`` (one row per customer, computed
    inside ClickHouse) when the extract has it, else from ``customer_daily_events``; both give
    identical features (tests/e2e/test_event_features.py). Only the datasets used are read.
    """
    events_dataset = "customer_event_features" if "customer_event_features" in extract_paths else "customer_daily_events"
    used = ("customers", "orders", "order_categories", events_dataset)
    frames = read_extract({name: extract_paths[name] for name in used if name in extract_paths})
    path = resources.run_folder(run_date) / "features" / "customer_features.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    if len(frames["customers"]) == 0:  # validation let it through: a store that keeps aggregated sales only
        features = pd.DataFrame({"customer_id": pd.Series(dtype="int64"),
                                 **{column: pd.Series(dtype="float64") for column in FEATURE_COLUMNS}})
        features.to_parquet(path, index=False)
        logger.warning("no customers as of %s (the store keeps aggregated sales only): no customer features", run_date)
        return {"path": str(path), "rows": 0}
    customers = frames["customers"]
    if "do_not_profile" in customers.columns and customers["do_not_profile"].any():  # no score of any kind for them
        logger.info("%d customers asked not to be profiled: no features, hence no scores, for them on %s",
                    int(customers["do_not_profile"].sum()), run_date)
        frames["customers"] = customers.loc[~customers["do_not_profile"]].reset_index(drop=True)
    events = frames[events_dataset]
    unknown = ~events["customer_id"].isin(customers["customer_id"])
    if unknown.any():
        logger.warning("%d %s rows of %d customers unknown to shop.customers are left out of the features for %s",
                       int(unknown.sum()), events_dataset, events.loc[unknown, "customer_id"].nunique(), run_date)
    features = customer_features(
        frames["customers"], frames["orders"], frames.get("customer_daily_events"), pd.Timestamp(run_date, tz="UTC"),
        event_features=frames.get("customer_event_features"), order_categories=frames.get("order_categories"),
    )
    raise_if_failed(validate_and_record(resources.settings, run_date, {"customer_features": features}, lookback_days=None))
    features.to_parquet(path, index=False)
    logger.info("built %d customer feature rows for %s -> %s", len(features), run_date, path)
    return {"path": str(path), "rows": len(features)}


def train(family: Family, resources: Resources, run_date: dt.date, extract_paths: dict[str, str],
          params: RunParams) -> dict[str, str]:
    """Train, register and gate ``family`` from the training extract (skipped, with the reason, when the
    store cannot train it)."""
    frames = read_extract({name: extract_paths[name] for name in family.training_datasets})
    return train_family(family, resources, run_date, frames, params)


def score_customers(resources: Resources, run_date: dt.date, features_path: str, extract_paths: dict[str, str],
                    params: RunParams, partition: Partition | None = None) -> dict[str, Any]:
    """Score every customer with each customer family's ``@champion``: propensity, churn risk
    (active customers only, else NULL), CLV with value tier, and the top 3 factors of each.
    Skipped, with the reasons, when purchase propensity cannot score (the store cannot train it, the
    same question as training on this run's customers and orders, or no version passed the gate);
    churn and CLV are NULL, with their reasons logged and returned (``without``), when they cannot.
    ``partition``: its hash slice only, with the champions pinned for the run and no value tier (it ranks the
    whole population: ml.partitioned.gather_scores); docs/scale.md, partitioned execution."""
    if partition is None:
        frames = {**read_extract({name: extract_paths[name] for name in ("customers", "orders")}),
                  "customer_features": pd.read_parquet(features_path)}
        results = {family.name: score_family(family, resources, run_date, frames, params) for family in CUSTOMER_FAMILIES}
    else:
        frames = {"customer_features": partition.rows(pd.read_parquet(features_path))}
        results = partition.score(resources, run_date, frames["customer_features"], CUSTOMER_FAMILIES, params)
    reasons = {name: result["skipped"] for name, result in results.items() if isinstance(result, dict)}
    if propensity.FAMILY.name in reasons:  # every published row has a purchase propensity
        return skipped("customer scores", run_date, "; ".join(reasons.values()))
    features = frames["customer_features"].set_index("customer_id")[list(FEATURE_COLUMNS)]
    columns: dict[str, Scored] = {name: results[family.name] for name, family in _SCORE_FAMILIES.items()
                                  if family.name not in reasons}
    # each score on its family's nightly input (churn: the active customers), NULL for the others and
    # for a family skipped tonight (no champion, or the store cannot train it: the reason is logged)
    values = {name: pd.Series(np.asarray(s.output, dtype="float64"), index=s.inputs.index).reindex(features.index)
              for name, s in columns.items()}
    factors = {name: factors_json(s.champion.python_model, s.inputs, name, s.output).reindex(features.index, fill_value="null")
               for name, s in columns.items()}
    values, factors, versions, experiment_of, variant_of = _serve_model_experiments(
        resources, run_date, params, features.index, columns, values, factors)
    missing = pd.Series(np.nan, index=features.index)
    clv_score = values.get("clv", missing).to_numpy()
    scores = pd.DataFrame(
        {
            "run_date": run_date,
            "customer_id": features.index.to_numpy(dtype="int64"),
            "purchase_propensity": values["purchase_propensity"].to_numpy(),
            "churn_risk": values.get("churn_risk", missing).to_numpy(),
            "clv": clv_score,
            "value_tier": value_tier(clv_score) if "clv" in columns and partition is None else None,
            "top_factors": _combine_json({name: factors.get(name, pd.Series("null", index=features.index))
                                          for name in _SCORE_FAMILIES}),
            **{f"{prefix}_model": columns[name].champion.name if name in columns else None
               for prefix, name in _VERSION_COLUMNS.items()},
            **{f"{prefix}_version": versions[name] if name in columns else None
               for prefix, name in _VERSION_COLUMNS.items()},
            "experiment_id": experiment_of,
            "variant": variant_of,
        }
    )
    for reason in reasons.values():
        logger.warning("customer scores for %s published without a family: %s", run_date, reason)
    path = _write_output(resources, run_date, "customer_scores" if partition is None else partition.name, scores)
    versions = {name: s.champion.version for name, s in columns.items()}
    logger.info("scored %d customers with %s", len(scores), {n: f"v{v}" for n, v in versions.items()})
    return {"path": str(path), "features_path": features_path, "rows": len(scores), "versions": versions,
            "without": reasons}


_VERSION_COLUMNS = {"propensity": "purchase_propensity", "churn": "churn_risk", "clv": "clv"}
_SCORE_FAMILIES = {"purchase_propensity": propensity.FAMILY, "churn_risk": churn.FAMILY, "clv": clv.FAMILY}


def _serve_model_experiments(resources: Resources, run_date: dt.date, params: RunParams, index: pd.Index,
                             columns: dict[str, Scored], values: dict[str, pd.Series], factors: dict[str, pd.Series]):
    """Tonight's scores with each running model experiment's variant served to its customers
    (:mod:`ml.experiments.serving`): returns new values and factors per score, the version that scored
    each row per score, and each row's experiment and variant (None outside model experiments)."""
    with resources.scores() as conn:
        experiments, assignments = served_as_of(conn, run_date)
    values, factors = dict(values), dict(factors)
    versions = {name: np.full(len(index), s.champion.version, dtype=object) for name, s in columns.items()}
    experiment_of = np.full(len(index), None, dtype=object)
    variant_of = np.full(len(index), None, dtype=object)
    if not experiments:
        return values, factors, versions, experiment_of, variant_of
    model_names = {family.name: family.model_name for family in _SCORE_FAMILIES.values()}
    score_of = {family.name: name for name, family in _SCORE_FAMILIES.items()}
    for served in model_variants(experiments, assignments, run_date, model_names):
        in_variant = index.isin(served.customer_ids)
        experiment_of[in_variant], variant_of[in_variant] = served.experiment_id, served.variant
        for family_name, version in served.versions.items():
            name = score_of[family_name]
            if name not in columns:
                logger.warning("experiment %s variant %s: %s is not scored tonight, its customers get no %s",
                               served.experiment_id, served.variant, family_name, name)
                continue
            scored = columns[name]
            inputs = scored.inputs[scored.inputs.index.isin(served.customer_ids)]
            model = load_champion(resources, scored.champion.name, version)
            output = model.model.predict(inputs, params=_SCORE_FAMILIES[name].predict_params(run_date, params) or None)
            values[name] = values[name].copy()
            values[name].loc[inputs.index] = np.asarray(output, dtype="float64")
            factors[name] = factors[name].copy()
            factors[name].loc[inputs.index] = factors_json(model.python_model, inputs, name, output)
            versions[name][index.isin(inputs.index)] = version
        logger.info("experiment %s variant %s: %d customers scored with %s", served.experiment_id, served.variant,
                    int(in_variant.sum()), served.versions or "the champions")
    return values, factors, versions, experiment_of, variant_of


def recommend(family: Family, resources: Resources, run_date: dt.date, extract_paths: dict[str, str],
              params: RunParams, output: str, features_path: str | None = None) -> dict[str, Any]:
    """``family``'s ``@champion`` on tonight's input under this run's settings, written to the run folder
    as ``output`` with the run date and the model's name and version on every row; skipped, as
    training is, when the store cannot train the family. A family scored from tonight's customer
    features (:func:`build_features`) finds them as ``frames["customer_features"]`` when
    ``features_path`` is given."""
    frames = read_extract({name: extract_paths[name] for name in family.nightly_datasets if name in extract_paths})
    if features_path is not None:
        frames["customer_features"] = pd.read_parquet(features_path)
    result = score_family(family, resources, run_date, frames, params)
    if isinstance(result, dict):
        return result
    table = pd.DataFrame(result.output).assign(run_date=run_date, model_name=result.champion.name,
                                               model_version=result.champion.version)
    if family.name in _SERVE_VARIANTS:
        table = _serve_experiments(resources, run_date, table, _SERVE_VARIANTS[family.name])
    path = _write_output(resources, run_date, output, table)
    logger.info("%s for %s: %d rows, %s v%s", output, run_date, len(table), result.champion.name, result.champion.version)
    return {"path": str(path), "rows": len(table), "model_name": result.champion.name,
            "model_version": result.champion.version}


#: families whose published rows a price or message experiment changes (ml.experiments.variants)
_SERVE_VARIANTS = {pricing.FAMILY.name: serve_price_variants, send_time.FAMILY.name: serve_send_time_variants}


def _serve_experiments(resources: Resources, run_date: dt.date, table: pd.DataFrame, serve) -> pd.DataFrame:
    """Tonight's recommendations with every running experiment's variants served (controls held at the
    current price / the default hour), each row carrying its experiment and variant (None: none)."""
    with resources.scores() as conn:
        experiments, assignments = served_as_of(conn, run_date)
    if not experiments:
        return table.assign(experiment_id=None, variant=None)
    return serve(table, experiments, assignments, run_date)


def assign_experiments(resources: Resources, run_date: dt.date, extract_paths: dict[str, str],
                       params: RunParams) -> dict[str, Any]:
    """Tonight's new units of every active experiment, published before anything is served
    (:func:`ml.experiments.nightly.assign_units`)."""
    return assign_units(resources, run_date, extract_paths, params)


def analyse_experiments(resources: Resources, run_date: dt.date, extract_paths: dict[str, str],
                        params: RunParams) -> dict[str, Any]:
    """Every running experiment's analysis and decision (:func:`ml.experiments.nightly.analyse_all`)."""
    return analyse_all(resources, run_date, extract_paths, params,
                       model_names={family.name: family.model_name for family in CUSTOMER_FAMILIES})


def attribute(resources: Resources, run_date: dt.date, extract_paths: dict[str, str], params: RunParams) -> dict[str, Any]:
    """Every attribution model on the window's conversion paths (:func:`ml.attribution.steps.attribute`)."""
    return steps.attribute(resources, run_date, read_extract({name: extract_paths[name] for name in ATTRIBUTION_DATASETS}),
                           params)


def acquisition_economics(resources: Resources, run_date: dt.date, extract_paths: dict[str, str],
                          attributed: dict[str, Any], params: RunParams) -> dict[str, Any]:
    """Cohort economics and the CAC forecast from the budget ``@champion``
    (:func:`ml.attribution.steps.acquisition_economics`; no forecast without a champion)."""
    try:
        champion = load_champion(resources, budget.MODEL_NAME)
        media = (champion.python_model.media_fit, champion.version)
    except LookupError as exc:
        logger.warning("no CAC forecast for %s: %s", run_date, exc)
        media = None
    frames = read_extract({name: extract_paths[name] for name in ("orders", "marketing_spend")})
    return steps.acquisition_economics(resources, run_date, frames, attributed, media, params)


def campaign_analytics(resources: Resources, run_date: dt.date, extract_paths: dict[str, str],
                       attributed: dict[str, Any], params: RunParams) -> dict[str, Any]:
    """Daily campaign analytics and recommendations (:func:`ml.attribution.steps.campaign_analytics`)."""
    frames = read_extract({name: extract_paths[name] for name in ("customers", "orders", "marketing_spend")})
    return steps.campaign_analytics(resources, run_date, frames, attributed, params)


def refresh_affinity(resources: Resources, as_of: dt.datetime, params: RunParams) -> dict[str, Any]:
    """Customer affinity as of ``as_of`` from what arrived since the last refresh
    (:func:`ml.personalisation.steps.refresh_affinity`)."""
    return personalisation.refresh_affinity(resources, as_of, params)


def publish_affinity(resources: Resources, run_date: dt.date, refreshed: dict[str, Any]) -> int:
    """Publish an affinity refresh's scores and state (:func:`ml.personalisation.steps.publish_affinity`)."""
    return personalisation.publish_affinity(resources, run_date, refreshed)


def segment_customers(resources: Resources, run_date: dt.date, extract_paths: dict[str, str], features_path: str,
                      params: RunParams) -> dict[str, Any]:
    """Lifecycle segments and behavioural clusters of tonight's customers
    (:func:`ml.personalisation.steps.segment_customers`)."""
    customers = read_extract({"customers": extract_paths["customers"]})["customers"]
    return personalisation.segment_customers(resources, run_date, customers, features_path, params)


def next_best_action(resources: Resources, run_date: dt.date, extract_paths: dict[str, str], features_path: str,
                     segments_path: str, params: RunParams) -> dict[str, Any]:
    """One action per customer (:func:`ml.personalisation.steps.next_best_action`) with the uplift
    ``@champion``'s offers on tonight's customer features (none, and every reason says so, without one)."""
    wanted = {*NBA_DATASETS, *uplift.FAMILY.nightly_datasets}
    frames = read_extract({name: path for name, path in extract_paths.items() if name in wanted})
    frames["customer_features"] = pd.read_parquet(features_path)
    scored = score_family(uplift.FAMILY, resources, run_date, frames, params)
    if isinstance(scored, dict):
        logger.warning("no retention or win-back offers for %s: %s", run_date, scored["skipped"])
        offers = None
    else:
        offers = (pd.DataFrame(scored.output), scored.champion.version)
    return personalisation.next_best_action(resources, run_date, frames, segments_path, offers, params)


DRIFT_SCORES = {"purchase_propensity": propensity.FAMILY, "clv": clv.FAMILY}


def check_drift(resources: Resources, run_date: dt.date, scored: dict[str, Any], params: RunParams) -> dict[str, Any]:
    """Tonight's features and scores against the propensity ``@champion``'s training features
    (scored by tonight's champions): an Evidently report logged to MLflow, one row per column in
    ``scores.feature_drift`` and the decision in ``scores.drift_checks``. ``retrain`` is True when
    the share of drifted features exceeds ``drift_share_threshold``."""
    reference_model = load_champion(resources, propensity.MODEL_NAME)
    reference_run = mlflow.MlflowClient().get_model_version(reference_model.name, reference_model.version).run_id
    with tempfile.TemporaryDirectory(prefix="revopt-drift-") as tmp:
        reference = pd.read_parquet(mlflow.artifacts.download_artifacts(
            run_id=reference_run, artifact_path=REFERENCE_FEATURES, dst_path=tmp))
    # a champion trained before a feature was added has no reference for it: compare what both have
    columns = [column for column in FEATURE_COLUMNS if column in reference.columns]
    current = pd.read_parquet(scored["features_path"])
    tonight = pd.read_parquet(scored["path"])
    scored_reference = reference.reindex(columns=list(FEATURE_COLUMNS))
    current, reference = current[columns].copy(), reference[columns].copy()
    for column, family in DRIFT_SCORES.items():
        if tonight[column].isna().all():  # the family had no champion tonight
            continue
        current[column] = tonight[column].to_numpy()
        champion = load_champion(resources, family.model_name)
        reference[column] = np.asarray(champion.model.predict(scored_reference), dtype="float64")
    config = drift.DriftConfig(drift_share_threshold=params.drift_share_threshold, random_state=params.seed)
    result = drift.check_drift(reference, current, columns, config,
                               score_columns=[column for column in DRIFT_SCORES if column in current])

    with mlflow.start_run(run_name=f"drift-{run_date}") as run:
        mlflow.set_tags({"revopt.family": "drift", "revopt.run_date": run_date.isoformat(),
                         "revopt.drift.retrain": str(result.retrain), "revopt.drift.reason": result.reason[:5000],
                         "revopt.drift.reference": f"{reference_model.name}/{reference_model.version}"})
        mlflow.log_params({"run_date": run_date.isoformat(), "drift_share_threshold": params.drift_share_threshold,
                           "n_reference": result.n_reference, "n_current": result.n_current})
        mlflow.log_metrics({"drift_share": result.drift_share, "drifted_columns": int(result.table["drifted"].sum()),
                            **{f"drift_score.{row.column}": float(row.drift_score) for row in result.table.itertuples()
                               if pd.notna(row.drift_score)}})
        mlflow.log_text(result.html, "drift/report.html")
        run_id = run.info.run_id
    reference_columns = {"reference_model": reference_model.name, "reference_version": reference_model.version}
    columns = result.table.rename(columns={"column": "column_name"}).assign(run_date=run_date, **reference_columns)
    decision = pd.DataFrame([{
        "run_date": run_date, "drift_share": result.drift_share, "threshold": params.drift_share_threshold,
        "retrain_requested": result.retrain, "reason": result.reason, "n_reference": result.n_reference,
        "n_current": result.n_current, **reference_columns, "mlflow_run_id": run_id,
    }])
    with resources.scores() as conn:
        publish_partition(conn, "scores.feature_drift", run_date, columns[[
            "run_date", "column_name", "kind", "stattest", "drift_score", "threshold", "drifted",
            "reference_model", "reference_version"]])
        publish_partition(conn, "scores.drift_checks", run_date, decision)
    log = logger.warning if result.retrain else logger.info
    log("drift check for %s: %s (MLflow run %s)", run_date, result.reason, run_id)
    return {"retrain": bool(result.retrain), "drift_share": float(result.drift_share), "reason": result.reason,
            "mlflow_run_id": run_id}


def _write_output(resources: Resources, run_date: dt.date, name: str, table: pd.DataFrame) -> Path:
    return resources.write_output(run_date, name, table)


def _combine_json(factors: dict[str, pd.Series]) -> np.ndarray:
    """One JSON object per customer: {"purchase_propensity": [...], "churn_risk": [...], "clv": [...]}, each
    row joined once (adding the pieces column by column copied every row's growing text at each step)."""
    rows = len(next(iter(factors.values())))
    columns: list = []
    for i, (name, series) in enumerate(factors.items()):
        columns += [repeat(("," if i else "{") + f'"{name}":', rows), series.to_numpy(dtype=object).tolist()]
    columns.append(repeat("}", rows))
    combined = np.empty(rows, dtype=object)
    combined[:] = list(map("".join, zip(*columns)))
    return combined


def evaluate_outcomes(resources: Resources, run_date: dt.date, extract_paths: dict[str, str],
                      params: RunParams) -> dict[str, Any]:
    """Outcome monitoring (:mod:`ml.families.outcomes`): every night in the last ``lookback_days`` of
    ``scores.customer_scores``, ``scores.price_recommendations``, ``scores.send_time_recommendations``
    and ``scores.budget_allocations`` whose family's horizon has passed by ``run_date`` (``R + h <= D``;
    h per family: :func:`outcomes.horizon_days`) is compared with tonight's extract of what happened
    (orders, daily product sales, hourly engagement, marketing spend). Each (night, family, version)
    is evaluated once: on the first run date its horizon has passed, or again by a re-run of that run
    date, which replaces its rows. A night with no published rows of a family (no champion) has
    nothing to evaluate. The rows go to ``scores.model_performance`` with the version's comparable
    test value next to each; each is logged as ``outcome_<metric>`` on the version's training run
    (step: days from its training run date to the night scored, timestamp: that night) with Evidently's
    classification / regression report where the family has one (``outcomes/<night>/<family>.html``).
    ``retrain`` is True when a primary metric realised more than ``performance_drop_threshold`` worse
    than its test value (:func:`outcomes.performance_drops`)."""
    since = run_date - dt.timedelta(days=params.lookback_days)  # the extract's history starts here
    with resources.scores() as conn:
        published = _published_nights(conn, since, run_date)
        held = read_frame(conn, "SELECT DISTINCT run_date_scored, family, model_version, run_date_evaluated "
                                "FROM scores.model_performance WHERE run_date_scored >= %(since)s", {"since": since})
    done = {(row.run_date_scored, row.family, row.model_version) for row in held.itertuples()
            if row.run_date_evaluated != run_date}  # tonight's own rows (an earlier try) are recomputed
    resources.use_tracking()
    runs = {(name, version): _training_run(name, version)
            for name, version in published[["model_name", "model_version"]].drop_duplicates().itertuples(index=False)}
    due: dict[tuple[dt.date, str, str], int] = {}
    for row in published.itertuples(index=False):
        run = runs[(row.model_name, row.model_version)]
        key = (row.run_date, row.family, row.model_version)
        horizon = outcomes.horizon_days(row.family, run.data.params if run is not None else None, row.horizon_days, params)
        if horizon is None:
            logger.warning("%s v%s has no horizon (%s): its %s of %s cannot be evaluated", row.model_name,
                           row.model_version, outcomes.CHECKS[row.family].horizon, outcomes.CHECKS[row.family].table,
                           row.run_date)
        elif key not in done and outcomes.is_due(row.run_date, horizon, run_date):
            due[key] = horizon
            logger.info("outcome monitoring for %s: %s of %s (%s %s v%s) is due: its %d days have passed", run_date,
                        outcomes.CHECKS[row.family].table, row.run_date, row.family, row.model_name,
                        row.model_version, horizon)
    if not due:
        logger.info("outcome monitoring for %s: no published scores whose horizon has just passed", run_date)
        return {"retrain": False, "reason": "no published scores whose horizon has just passed", "rows": 0}

    names = {(row.run_date, row.family, row.model_version): row.model_name for row in published.itertuples(index=False)}
    wanted = {dataset for night, family, _ in due for dataset in _OUTCOME_DATASETS[family]}
    missing = sorted(wanted - set(extract_paths))
    if missing:
        logger.warning("outcome monitoring for %s: the extract has no %s; the families that need it are not evaluated",
                       run_date, ", ".join(missing))
    if budget.FAMILY.name in {family for _, family, _ in due}:
        wanted.add("conversion_paths")  # the budget's realised attributed revenue splits orders like its target
    frames = read_extract({name: extract_paths[name] for name in sorted(wanted) if name in extract_paths})
    if "conversion_paths" in frames and "orders" in frames:
        frames["attributed_orders"] = budget.target_orders(frames, run_date, params)
    evaluated: list[outcomes.Outcome] = []
    with resources.scores() as conn:
        customer_due = {key: h for key, h in due.items() if outcomes.CHECKS[key[1]].table == "scores.customer_scores"}
        if customer_due and "orders" in frames:
            evaluated += _customer_outcomes(conn, run_date, customer_due, frames["orders"])
        for (night, family, version), horizon in sorted(due.items()):
            if (night, family, version) in customer_due or not set(_OUTCOME_DATASETS[family]) <= set(frames):
                continue
            scored = outcomes.Scored(night, family, names[(night, family, version)], version)
            evaluated.append(_RECOMMENDATION_OUTCOMES[family](conn, scored, horizon, frames,
                                                              runs[(scored.model_name, version)]))
    for outcome in evaluated:
        check = outcomes.CHECKS[outcome.scored.family]
        logger.info("outcome monitoring for %s: %s of %s (%s v%s) over %d days, %d %s: %s", run_date, check.table,
                    outcome.scored.run_date, outcome.scored.family, outcome.scored.model_version, outcome.horizon_days,
                    len(outcome.labelled), check.unit,
                    ", ".join(f"{name} {value:.4g}" for name, value in outcome.metrics.items()) or "nothing to measure")
    evaluated = [outcome for outcome in evaluated if outcome.metrics]
    test_values = {(o.scored.family, o.scored.model_version, name): value
                   for o in evaluated for run in [runs[(o.scored.model_name, o.scored.model_version)]] if run is not None
                   for name, value in outcomes.comparable_test_values(o.scored.family, run.data.metrics).items()
                   if name in o.metrics}
    rows = outcomes.performance_rows(evaluated, run_date, test_values)
    for outcome in evaluated:
        run = runs[(outcome.scored.model_name, outcome.scored.model_version)]
        if run is not None:
            _log_outcome(run, outcome, params.seed)
    with resources.scores() as conn:
        # a re-run replaces tonight's rows of these nights, also metrics it no longer computes
        for key in sorted(due):
            conn.execute("DELETE FROM scores.model_performance WHERE run_date_scored = %s AND family = %s "
                         "AND model_version = %s AND run_date_evaluated = %s", (*key, run_date))
        upsert_rows(conn, "scores.model_performance",
                    [{key: (None if isinstance(value, float) and not np.isfinite(value) else value)
                      for key, value in row.items()} for row in rows.to_dict("records")],
                    key=("run_date_scored", "family", "model_version", "metric"))
    drops = outcomes.performance_drops(rows, params.performance_drop_threshold)
    nights = ", ".join(f"{o.scored.family} v{o.scored.model_version} of {o.scored.run_date}" for o in evaluated)
    reason = (f"realised performance fell more than {params.performance_drop_threshold:g} below the test value: "
              + "; ".join(drops) if drops else
              f"realised performance within {params.performance_drop_threshold:g} of the test values ({nights})")
    (logger.warning if drops else logger.info)("outcome monitoring for %s: %d rows; %s", run_date, len(rows), reason)
    return {"retrain": bool(drops), "reason": reason, "rows": len(rows)}


#: What each family's outcome check reads from tonight's extract.
_OUTCOME_DATASETS = {propensity.FAMILY.name: ("orders",), churn.FAMILY.name: ("orders",), clv.FAMILY.name: ("orders",),
                     pricing.FAMILY.name: ("product_daily_sales", "product_sales"),
                     send_time.FAMILY.name: ("engagement_by_local_hour", "orders"),
                     budget.FAMILY.name: ("marketing_spend", "orders")}


def _published_nights(conn, since: dt.date, run_date: dt.date) -> pd.DataFrame:
    """run_date, family, model_name, model_version and horizon_days (budget's published one, else NULL) of
    every night in ``[since, run_date)`` of every published table, one row per family and version."""
    window = {"since": since, "run_date": run_date}
    nights = [read_frame(conn, (
        f"SELECT run_date, %(family)s AS family, {s.prefix}_model AS model_name, {s.prefix}_version AS model_version, "
        f"NULL::integer AS horizon_days FROM scores.customer_scores WHERE run_date >= %(since)s "
        f"AND run_date < %(run_date)s AND {s.column} IS NOT NULL GROUP BY 1, 2, 3, 4"), {"family": s.family, **window})
        for s in outcomes.SCORE_COLUMNS]
    for family in (pricing.FAMILY.name, send_time.FAMILY.name, budget.FAMILY.name):
        horizon = "min(horizon_days)" if family == budget.FAMILY.name else "NULL::integer"
        nights.append(read_frame(conn, (
            f"SELECT run_date, %(family)s AS family, model_name, model_version, {horizon} AS horizon_days "
            f"FROM {outcomes.CHECKS[family].table} WHERE run_date >= %(since)s AND run_date < %(run_date)s "
            "GROUP BY 1, 2, 3, 4"), {"family": family, **window}))
    return pd.concat(nights, ignore_index=True)


def _customer_outcomes(conn, run_date: dt.date, due: dict[tuple[dt.date, str, str], int],
                       orders: pd.DataFrame) -> list[outcomes.Outcome]:
    columns = ["run_date", "customer_id"] + [c for s in outcomes.SCORE_COLUMNS
                                             for c in (s.column, f"{s.prefix}_model", f"{s.prefix}_version")]
    evaluated = []
    for night in sorted({key[0] for key in due}):
        scores = read_frame(conn, f"SELECT {', '.join(columns)} FROM scores.customer_scores WHERE run_date = %s "
                                  "ORDER BY customer_id", (night,))
        evaluated += outcomes.customer_outcomes(scores, orders, run_date, due)
    return evaluated


def _published_rows(conn, scored: outcomes.Scored, columns: tuple[str, ...]) -> pd.DataFrame:
    """``columns`` of ``scored``'s night and version in its family's published table."""
    return read_frame(conn, f"SELECT {', '.join(columns)} FROM {outcomes.CHECKS[scored.family].table} "
                            "WHERE run_date = %s AND model_version = %s ORDER BY 1", (scored.run_date, scored.model_version))


def _pricing_outcome(conn, scored: outcomes.Scored, horizon: int, frames: dict[str, pd.DataFrame],
                     run: mlflow.entities.Run | None) -> outcomes.Outcome:
    recommendations = _published_rows(conn, scored, outcomes.PRICE_RECOMMENDATION_COLUMNS)
    # realised demand from the source the pricing family trains on
    sales = (frames["product_sales"].rename(columns={"period_start": "day"}) if pricing.reads_aggregated_sales(frames)
             else frames["product_daily_sales"])
    return outcomes.pricing_outcome(scored, horizon, recommendations, sales)


def _send_time_outcome(conn, scored: outcomes.Scored, horizon: int, frames: dict[str, pd.DataFrame],
                       run: mlflow.entities.Run | None) -> outcomes.Outcome:
    recommendations = _published_rows(conn, scored, outcomes.SEND_TIME_RECOMMENDATION_COLUMNS)
    return outcomes.send_time_outcome(scored, horizon, recommendations, frames["engagement_by_local_hour"], frames["orders"])


def _budget_outcome(conn, scored: outcomes.Scored, horizon: int, frames: dict[str, pd.DataFrame],
                    run: mlflow.entities.Run | None) -> outcomes.Outcome:
    allocations = _published_rows(conn, scored, outcomes.ALLOCATION_COLUMNS)
    spend, orders = frames["marketing_spend"], frames.get("attributed_orders", frames["orders"])
    target = outcomes.model_target(run.data.params if run is not None else None, spend, orders)
    if target != outcomes.ATTRIBUTED:
        logger.info("budget v%s models %s revenue: its channels' incremental revenue of %s is not observable, only "
                    "the spend is compared", scored.model_version, target, scored.run_date)
    return outcomes.budget_outcome(scored, horizon, allocations, spend, orders, target)


_RECOMMENDATION_OUTCOMES = {pricing.FAMILY.name: _pricing_outcome, send_time.FAMILY.name: _send_time_outcome,
                            budget.FAMILY.name: _budget_outcome}


def _training_run(model_name: str, version: str) -> mlflow.entities.Run | None:
    """The MLflow run that trained ``model_name`` v``version`` (None when the registry does not know it)."""
    client = mlflow.MlflowClient()
    try:
        run_id = client.get_model_version(model_name, version).run_id
        return client.get_run(run_id) if run_id else None
    except mlflow.exceptions.MlflowException:
        logger.warning("%s v%s is not in the model registry: its published scores cannot be evaluated", model_name, version)
        return None


def _log_outcome(run: mlflow.entities.Run, outcome: outcomes.Outcome, seed: int) -> None:
    """``outcome_<metric>`` on the version's training run, step = days from its training run date to the
    night scored, and the Evidently report (where the family has one) as ``outcomes/<night>/<family>.html``."""
    night = outcome.scored.run_date
    trained = run.data.params.get("run_date")
    step = (night - dt.date.fromisoformat(trained)).days if trained else 0
    timestamp = int(pd.Timestamp(night, tz="UTC").timestamp() * 1000)
    client = mlflow.MlflowClient()
    client.log_batch(run.info.run_id, metrics=[mlflow.entities.Metric(f"outcome_{name}", float(value), timestamp, step)
                                               for name, value in outcome.metrics.items()])
    report = outcomes.outcome_report(outcome, random_state=seed)
    if report is not None:
        client.log_text(run.info.run_id, report, f"outcomes/{night.isoformat()}/{outcome.scored.family}.html")
