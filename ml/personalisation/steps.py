"""The personalisation steps the pipeline calls (Airflow-free; docs/personalisation.md): the customer
affinity refresh (``revopt_affinity``, several times a day) and, in the nightly run, the customer segments
and the next best action. Product recommendations are a family (:mod:`ml.families.recommend`) scored like
the others (:func:`ml.pipeline.recommend`). Each step takes the task's :class:`Resources`, writes its output
tables to the run folder and returns their paths (what the publish tasks read).
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import mlflow
import pandas as pd
from psycopg import sql

from features import affinity as affinity_sources
from features import interactions
from features.contacts import email_sends
from ml.families import recommend
from ml.families import uplift as uplift_family
from ml.params import RunParams
from ml.personalisation import affinity, nba, segments
from revopt.platform.events import utc
from revopt.platform.identity import account_map, canonical_ids
from revopt.platform.postgres import publish_partition, read_frame, read_large_frame
from revopt.platform.privacy import id_secret
from revopt.platform.resources import Resources

logger = logging.getLogger(__name__)

#: Days of ``scores.affinity_state`` kept (a refresh needs only the latest; a few allow re-running recent ones).
AFFINITY_STATE_DAYS = 3


def refresh_affinity(resources: Resources, as_of: dt.datetime, params: RunParams) -> dict[str, Any]:
    """Customer affinity as of ``as_of`` (:func:`ml.personalisation.affinity.refresh`): the latest settled state
    at or before this refresh's settled cutoff, decayed, plus the order lines and product views read since
    (the full ``affinity_lookback_days`` on the first refresh or after a longer gap). Rows for
    ``scores.customer_affinity`` and ``scores.affinity_state`` in the run folder."""
    cutoff = utc(as_of)
    with resources.scores() as conn:
        state = read_frame(conn, "SELECT as_of, customer_id, dimension, value, purchases, views, last_interaction "
                                 "FROM scores.affinity_state WHERE as_of = (SELECT max(as_of) FROM "
                                 "scores.affinity_state WHERE as_of <= %(settled)s)",
                           {"settled": affinity.settled_cutoff(cutoff).to_pydatetime()})
    previous = utc(state["as_of"].iloc[0]) if len(state) else None
    since, why = affinity.window(previous, cutoff, params.affinity_lookback_days)
    if previous is None or since != previous:
        state = affinity.empty_state()
    logger.info("affinity refresh as of %s: %s", cutoff, why)
    with resources.sources() as conn:
        accounts = account_map(conn, cutoff, lambda: id_secret(resources.settings))
        changes = affinity_sources.interactions(conn, resources.events, since, cutoff, accounts)
    if accounts and len(state):  # accounts merged (or erased) since the state was settled: one person, one row
        state = canonical_ids(state, accounts).groupby(["as_of", "customer_id", "dimension", "value"], as_index=False) \
            .agg(purchases=("purchases", "sum"), views=("views", "sum"), last_interaction=("last_interaction", "max"))
    new_state, published = affinity.refresh(state, changes, cutoff, params)
    stamp = f"{cutoff:%H%M}"
    return {"customer_affinity": str(resources.write_output(cutoff.date(), f"customer_affinity_{stamp}", published)),
            "affinity_state": str(resources.write_output(cutoff.date(), f"affinity_state_{stamp}", new_state)),
            "as_of": cutoff.isoformat(), "since": since.isoformat(), "read": int(len(changes)),
            "customers": int(published["customer_id"].nunique())}


def publish_affinity(resources: Resources, run_date: dt.date, refreshed: dict[str, Any]) -> int:
    """Publish a refresh: its scores replace the day's ``scores.customer_affinity`` rows and its state the
    day's ``scores.affinity_state`` rows (each one transaction); states older than
    :data:`AFFINITY_STATE_DAYS` are deleted."""
    published = 0
    with resources.scores() as conn:
        for table in ("customer_affinity", "affinity_state"):
            rows = pd.read_parquet(refreshed[table]).assign(run_date=run_date)
            count = publish_partition(conn, f"scores.{table}", run_date, rows)
            published += count if table == "customer_affinity" else 0
        with conn.transaction():
            conn.execute(sql.SQL("DELETE FROM scores.affinity_state WHERE run_date < %s"),
                         (run_date - dt.timedelta(days=AFFINITY_STATE_DAYS),))
    return published




def next_best_action(resources: Resources, run_date: dt.date, frames: dict[str, pd.DataFrame], segments_path: str,
                     uplift: tuple[pd.DataFrame, str] | None, params: RunParams) -> dict[str, Any]:
    """One action per customer (:func:`ml.personalisation.nba.next_best_actions`) from the uplift
    ``@champion``'s offers (``uplift``: its nightly rows and version; None without one), tonight's published
    recommendations and segments, the catalogue that may be sold (excluded categories and stock-outs left
    out), and the contacts of the last ``nba_contact_cap_days`` (email sends and the actions published on
    earlier nights). Rows for ``scores.next_best_action`` in the run folder, and an MLflow run with the counts."""
    since = run_date - dt.timedelta(days=params.nba_contact_cap_days)
    with resources.scores() as conn:
        recommendations = read_large_frame(  # tonight's lists: 10M rows at a million customers
            conn, "SELECT customer_id, rank, product_id, category, score, reason, model_version "
                  "FROM scores.recommendations WHERE run_date = %s ORDER BY customer_id, rank", (run_date,))
        acted = read_frame(conn, "SELECT customer_id, run_date FROM scores.next_best_action WHERE run_date >= %s "
                                 "AND run_date < %s AND action <> 'do_nothing'", (since, run_date))
    contacts = pd.concat([email_sends(resources.events, pd.Timestamp(since, tz="UTC"), pd.Timestamp(run_date, tz="UTC")),
                          pd.DataFrame({"customer_id": acted["customer_id"].astype("int64"), "contacts": 1,
                                        "last_contact_ts": pd.to_datetime(acted["run_date"]).dt.tz_localize("UTC")})],
                         ignore_index=True)
    versions = {}
    if uplift is not None:
        versions[uplift_family.MODEL_NAME] = uplift[1]
    if len(recommendations):
        versions[recommend.MODEL_NAME] = str(recommendations["model_version"].iloc[0])
    orders, bought = frames["orders"], frames["order_categories"]
    purchased = bought.merge(orders[["order_id", "customer_id"]], on="order_id")[["customer_id", "category"]]
    actions = nba.next_best_actions(
        frames["customers"], uplift[0] if uplift is not None else None,
        recommendations.drop(columns="model_version") if len(recommendations) else None,
        pd.read_parquet(segments_path, columns=["customer_id", "lifecycle_segment"]),
        sellable_products(frames["products"], frames.get("inventory"), params), contacts, run_date, params, versions,
        purchased_categories=purchased.drop_duplicates())
    run_id = _log_actions(resources, run_date, params, actions, versions)
    return {"path": str(resources.write_output(run_date, "next_best_action", actions)), "rows": int(len(actions)),
            "mlflow_run_id": run_id}


def sellable_products(products: pd.DataFrame, inventory: pd.DataFrame | None, params: RunParams) -> pd.DataFrame:
    """The catalogue an action may suggest: products outside ``recs_exclude_categories`` and, with
    ``recs_exclude_out_of_stock``, not out of stock on their latest ``shop.inventory`` day."""
    sellable = products[~products["category"].isin(params.recs_exclude_categories)]
    if params.recs_exclude_out_of_stock:  # the recommender's stock: the latest on_hand, unknown (NaN) passes
        on_hand = interactions.catalogue(products, inventory, None).set_index("product_id")["on_hand"]
        sellable = sellable[~(sellable["product_id"].map(on_hand) <= 0)]
    return sellable.reset_index(drop=True)


def _log_actions(resources: Resources, run_date: dt.date, params: RunParams, actions: pd.DataFrame,
                 versions: dict[str, str]) -> str:
    """An MLflow run per night: the settings, customers and expected incremental value per action, the
    offer cost against the budget, and the model versions behind them."""
    resources.use_tracking()
    counts = actions["action"].value_counts()
    value = actions.groupby("action")["expected_incremental_value"].sum()
    with mlflow.start_run(run_name=f"next_best_action-{run_date}") as run:
        mlflow.set_tags({"revopt.family": "next_best_action", "revopt.run_date": run_date.isoformat(),
                         **{f"revopt.model.{name}": version for name, version in versions.items()}})
        mlflow.log_params({"run_date": run_date.isoformat(), "offer_budget": params.nba_offer_budget,
                           "discount_levels": list(params.nba_discount_levels),
                           "contact_cap_days": params.nba_contact_cap_days, "max_contacts": params.nba_max_contacts,
                           "contact_cost": params.nba_contact_cost})
        mlflow.log_metrics({**{f"customers.{action}": float(counts.get(action, 0)) for action in nba.ACTIONS},
                            **{f"expected_value.{action}": float(value.get(action, 0.0)) for action in nba.ACTIONS},
                            "expected_value.total": float(actions["expected_incremental_value"].sum()),
                            "offer_cost": float(actions.loc[actions["action"].isin(nba.OFFER_ACTIONS),
                                                            "expected_cost"].sum()),
                            "no_consent": float((~actions["email_opt_in"]).sum())})
        return run.info.run_id


def segment_customers(resources: Resources, run_date: dt.date, customers: pd.DataFrame, features_path: str,
                      params: RunParams) -> dict[str, Any]:
    """Lifecycle segments and behavioural clusters (:func:`ml.personalisation.segments.segment_customers`) of
    tonight's customer features, with tonight's published churn risk and CLV (NULL where their families were
    skipped). Rows for ``scores.customer_segments`` and ``scores.segment_profiles`` in the run folder, and an
    MLflow run with the segment sizes, the clustering's quality and the profile figure."""
    features = pd.read_parquet(features_path)
    with resources.scores() as conn:
        scored = read_large_frame(conn, "SELECT customer_id, churn_risk, clv FROM scores.customer_scores "
                                        "WHERE run_date = %s", (run_date,))
    if not len(scored):
        logger.warning("no customer scores published for %s: segments without churn risk and CLV", run_date)
    result = segments.segment_customers(features, customers, scored if len(scored) else None, run_date, params)
    run_id = _log_segments(resources, run_date, params, result)
    return {"customer_segments": str(resources.write_output(run_date, "customer_segments", result.customers)),
            "segment_profiles": str(resources.write_output(run_date, "segment_profiles", result.profiles)),
            "rows": int(len(result.customers)), "mlflow_run_id": run_id}


def _log_segments(resources: Resources, run_date: dt.date, params: RunParams, result: segments.Segmentation) -> str:
    """An MLflow run per night: the thresholds, each segment's size, the clustering's metrics, the profiles
    table and the segment-profile figure."""
    from ml import plots

    resources.use_tracking()
    sizes = result.customers["lifecycle_segment"].value_counts()
    with mlflow.start_run(run_name=f"segments-{run_date}") as run:
        mlflow.set_tags({"revopt.family": "segments", "revopt.run_date": run_date.isoformat()})
        mlflow.log_params({name: getattr(params, name) for name in (
            "segment_new_days", "segment_active_days", "segment_lost_days", "segment_at_risk_churn",
            "segment_champion_quantile", "segment_clusters", "seed")})
        mlflow.log_metrics({**{f"customers.{name}": float(count) for name, count in sizes.items()},
                            **{key: float(value) for key, value in result.metrics.items() if pd.notna(value)}})
        mlflow.log_table(result.profiles, "segment_profiles.json")
        if len(result.customers):
            figure = segments.segment_profile_figure(result, f"customer segments, {run_date}")
            mlflow.log_figure(figure, "plots/segment_profiles.png")
            plots.close(figure)
        return run.info.run_id
