"""What the DAG tasks call for experiments (through :mod:`ml.pipeline`): tonight's assignment, published
before anything is served, and the nightly analysis with one MLflow run per experiment.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import mlflow
import pandas as pd
from mlflow.tracking import MlflowClient

from ml.experiments.analysis import RESULT_TABLE_COLUMNS, ExperimentLook, analyse_experiment, previous_results
from ml.experiments.assignment import assign
from ml.experiments.definitions import Experiment
from ml.experiments.serving import MODELS_KEY, resolve_version
from ml.experiments.store import assignments_as_of, assignments_before, load_experiments
from ml.experiments.variants import experimental_elasticity
from ml.params import RunParams
from revopt.platform.extract import read_extract
from revopt.platform.postgres import publish_partition, read_frame, upsert_rows
from revopt.platform.resources import Resources

logger = logging.getLogger(__name__)

#: the MLflow experiment holding one run per A/B test (kept apart from the model families' runs)
MLFLOW_EXPERIMENT = "revopt/ab_tests"
#: what the analysis reads from the run's extract
ANALYSIS_DATASETS = ("customers", "orders", "customer_daily_events", "product_daily_sales", "experiment_exposures")


def assign_units(resources: Resources, run_date: dt.date, extract_paths: dict[str, str], params: RunParams) -> dict[str, Any]:
    """Assign tonight's new units of every active experiment and publish them
    (``scores.experiment_assignments``, keyed by this run date; units assigned earlier keep their rows)."""
    with resources.scores() as conn:
        experiments = load_experiments(conn)
        if not experiments:
            publish_partition(conn, "scores.experiment_assignments", run_date, _assignment_rows(None, run_date))
            return {"rows": 0, "experiments": 0}
        previous = assignments_before(conn, run_date)
    frames = read_extract({name: extract_paths[name] for name in ("customers", "products") if name in extract_paths})
    units = _units(frames, {e.unit for e in experiments})
    assigned = assign(experiments, units, run_date, previous, holdout_share=params.experiment_holdout_share)
    new = assigned[pd.to_datetime(assigned["first_assigned"]) == pd.Timestamp(run_date)]
    with resources.scores() as conn:
        rows = publish_partition(conn, "scores.experiment_assignments", run_date, _assignment_rows(new, run_date))
    active = sum(e.is_active(run_date) for e in experiments)
    logger.info("experiments on %s: %d active, %d units assigned tonight", run_date, active, rows)
    return {"rows": rows, "experiments": active}


def _units(frames: dict[str, pd.DataFrame], kinds: set[str]) -> pd.DataFrame:
    """Every unit an experiment could take, with the day it first appeared (customers: signup; products:
    in tonight's catalogue, so eligible from the run they first appear in)."""
    parts = []
    if "customer" in kinds and "customers" in frames:
        c = frames["customers"]
        parts.append(pd.DataFrame({"unit_id": c["customer_id"].astype("int64"), "first_seen": pd.to_datetime(c["signup_date"]),
                                   "unit": "customer"}))
    if "product" in kinds and "products" in frames:
        p = frames["products"]
        parts.append(pd.DataFrame({"unit_id": p["product_id"].astype("int64"), "first_seen": pd.Timestamp("1970-01-01"),
                                   "unit": "product"}))
    if not parts:
        return pd.DataFrame({"unit_id": pd.Series(dtype="int64"), "first_seen": pd.Series(dtype="datetime64[ns]"),
                             "unit": pd.Series(dtype=object)})
    return pd.concat(parts, ignore_index=True)


def _assignment_rows(new: pd.DataFrame | None, run_date: dt.date) -> pd.DataFrame:
    if new is None or new.empty:
        return pd.DataFrame({"run_date": pd.Series(dtype=object), "experiment_id": pd.Series(dtype=object),
                             "unit_id": pd.Series(dtype="int64"), "variant": pd.Series(dtype=object)})
    return pd.DataFrame({"run_date": run_date, "experiment_id": new["experiment_id"].to_numpy(),
                         "unit_id": new["unit_id"].astype("int64").to_numpy(), "variant": new["variant"].to_numpy()})


def analyse_all(resources: Resources, run_date: dt.date, extract_paths: dict[str, str], params: RunParams,
                model_names: dict[str, str]) -> dict[str, Any]:
    """Analyse every experiment that is running or ended within ``experiment_followup_days``, log each
    to its MLflow run and publish ``scores.experiment_results`` for the run date (replacing a re-run's);
    a finished model experiment's evidence goes to ``scores.model_promotions`` (:func:`online_evidence`;
    ``model_names``: the customer-score families' registered model names by family name)."""
    with resources.scores() as conn:
        experiments = load_experiments(conn)
        assignments = assignments_as_of(conn, run_date)
        history = previous_results(conn, run_date)
    frames = read_extract({name: path for name, path in extract_paths.items() if name in ANALYSIS_DATASETS})
    looks: list[ExperimentLook] = []
    for experiment in experiments:
        if not _under_analysis(experiment, run_date, params.experiment_followup_days):
            continue
        previous = history[history["experiment_id"] == experiment.experiment_id]
        look = analyse_experiment(experiment, assignments, run_date, orders=frames.get("orders"),
                                  daily_events=frames.get("customer_daily_events"),
                                  product_sales=frames.get("product_daily_sales"), previous=previous,
                                  exposures=frames.get("experiment_exposures"),
                                  pre_days=params.experiment_pre_days)
        if look is None:
            logger.info("experiment %s: no unit has been in it for a night yet on %s", experiment.experiment_id, run_date)
            continue
        evidence = _price_evidence(resources, experiment, assignments, frames, run_date)
        run_id = _log_look(resources, look, previous, evidence)
        look = ExperimentLook(look.experiment, look.rows.assign(mlflow_run_id=run_id), look.decision, look.n_units)
        looks.append(look)
        logger.info("experiment %s on %s: %s (%s)", experiment.experiment_id, run_date, look.decision.action,
                    look.decision.reason)
    rows = (pd.concat([look.rows for look in looks], ignore_index=True) if looks
            else pd.DataFrame({c: pd.Series(dtype=object) for c in RESULT_TABLE_COLUMNS}))
    evidence = [row for look in looks for row in online_evidence(look, run_date, model_names)]
    with resources.scores() as conn:
        published = publish_partition(conn, "scores.experiment_results", run_date, rows)
        if evidence:  # beside the offline gate's decisions (same table, same shape)
            upsert_rows(conn, "scores.model_promotions", [{**row, "actor": "experiment analysis"} for row in evidence],
                        key=("run_date", "model_name", "candidate_version", "action_seq"))
    return {"rows": published, "experiments": len(looks),
            "decisions": {look.experiment.experiment_id: look.decision.action for look in looks}}


def online_evidence(look: ExperimentLook, run_date: dt.date, model_names: dict[str, str]) -> list[dict[str, Any]]:
    """A finished model experiment as ``scores.model_promotions`` rows: for each family a treatment variant
    serves with its own version, the online comparison with the control on the primary metric, in the
    offline gate's columns. ``promoted`` is false: the evidence is recorded beside the offline test, and
    moving ``@champion`` stays a person's decision (docs/experiments.md). Nothing while it keeps running."""
    e = look.experiment
    if (e.kind != "model" or e.unit != "customer" or look.decision.action == "keep running"
            or look.decision.reason.startswith("decided on ")):  # recorded once, on the night it was decided
        return []
    control_versions = dict(next(v for v in e.variants if v.name == e.control).config.get(MODELS_KEY, {}))
    primary = look.rows[look.rows["is_primary"].astype(bool)].set_index("variant")
    group = primary["sequential_test"].iloc[0] == "group"
    low, high, p_column = ("gs_low", "gs_high", "p_value_gs") if group else ("cs_low", "cs_high", "p_value_sequential_adjusted")
    rows = []
    for variant in e.variants:
        if variant.name == e.control or variant.name not in primary.index:
            continue
        r, c = primary.loc[variant.name], primary.loc[e.control]
        for family, ref in variant.config.get(MODELS_KEY, {}).items():
            model_name = model_names.get(family, family)
            try:  # model_promotions holds version numbers: the aliases as they stand tonight
                version = resolve_version(e, variant.name, model_name, str(ref))
                champion = resolve_version(e, e.control, model_name, str(control_versions.get(family, "champion")))
            except ValueError as exc:
                logger.warning("experiment %s: no online evidence recorded for %s: %s", e.experiment_id, family, exc)
                continue
            rows.append({
                "run_date": run_date, "model_name": model_name, "candidate_version": version,
                "champion_version": champion,
                "metric": f"online {e.primary_metric}", "higher_is_better": True,
                "candidate_value": float(r["mean"]), "champion_value": float(c["mean"]), "margin": 0.0,
                "promoted": False,
                "reason": f"online A/B evidence, experiment {e.experiment_id} ({variant.name} vs {e.control}): "
                          f"{look.decision.action}; {look.decision.reason}"[:4000],
                "mlflow_run_id": str(r["mlflow_run_id"]),
                "test_window": f"units assigned {e.start} to {e.last_active_day() or run_date}, outcomes to {run_date}",
                "n_test": int(r["n"] + c["n"]), "alpha": e.alpha, "difference": float(r["estimate"]),
                "ci_low": float(r[low]), "ci_high": float(r[high]), "p_value": float(r[p_column]),
                "test_method": "group-sequential (online A/B)" if group else "always-valid mSPRT (online A/B)",
            })
    return rows


def _under_analysis(experiment: Experiment, run_date: dt.date, followup_days: int) -> bool:
    if run_date <= experiment.start:
        return False
    last = experiment.last_active_day()
    return last is None or run_date <= last + dt.timedelta(days=followup_days)


def _price_evidence(resources: Resources, experiment: Experiment, assignments: pd.DataFrame,
                    frames: dict[str, pd.DataFrame], run_date: dt.date) -> dict[str, float]:
    """A price experiment's unconfounded elasticity (:func:`ml.experiments.variants.experimental_elasticity`)
    beside the pricing model's published (observational) elasticities of the same products: the check
    that randomised prices give the model. Empty for other experiments or too little price difference."""
    if experiment.kind != "price" or frames.get("product_daily_sales") is None:
        return {}
    mine = assignments[assignments["experiment_id"] == experiment.experiment_id]
    found = experimental_elasticity(frames["product_daily_sales"], mine, experiment, run_date)
    if found is None:
        return {}
    with resources.scores() as conn:
        published = read_frame(conn, "SELECT avg(elasticity) FROM scores.price_recommendations WHERE run_date = "
                                     "(SELECT max(run_date) FROM scores.price_recommendations WHERE run_date <= %s) "
                                     "AND product_id = ANY(%s)", (run_date, [int(i) for i in found["product_ids"]]))
    observational = published.iloc[0, 0] if len(published) else None
    out = {f"price_experiment.{key}": float(found[key]) for key in ("elasticity", "se", "first_stage_t")
           if key in found and found[key] is not None}
    if observational is not None and pd.notna(observational):
        out["price_experiment.model_elasticity_same_products"] = float(observational)
    logger.info("price experiment %s: randomised elasticity %s vs the model's %s on the same products",
                experiment.experiment_id, out.get("price_experiment.elasticity"),
                out.get("price_experiment.model_elasticity_same_products"))
    return out


def _log_look(resources: Resources, look: ExperimentLook, previous: pd.DataFrame, extra: dict[str, float]) -> str:
    """Log tonight's look to the experiment's one MLflow run (created on its first look): metrics at step
    = days since its start, the decision as tags, and the cumulative-lift plot over every look so far."""
    from ml.experiments.plots import cumulative_lift_figure
    from ml.plots import close

    tracking = Resources(resources.settings, experiment=MLFLOW_EXPERIMENT)
    experiment_id = tracking.use_tracking()
    e = look.experiment
    found = MlflowClient().search_runs([experiment_id], filter_string=f"tags.`revopt.ab_test` = '{e.experiment_id}'",
                                       max_results=1)
    step = (look.rows["run_date"].iloc[0] - e.start).days
    with mlflow.start_run(run_id=found[0].info.run_id if found else None, experiment_id=experiment_id,
                          run_name=None if found else f"ab-test {e.experiment_id}") as run:
        if not found:
            mlflow.set_tags({"revopt.ab_test": e.experiment_id, "revopt.kind": e.kind, "revopt.unit": e.unit})
            mlflow.log_params({"name": e.name, "primary_metric": e.primary_metric, "mde": e.mde, "alpha": e.alpha,
                               "power": e.power, "control": e.control, "layer": e.layer, "traffic": e.traffic,
                               **{f"weight.{v}": round(w, 6) for v, w in e.weights().items()}})
        metrics = {"units": float(look.n_units), **extra}
        for row in look.rows.itertuples():
            if row.variant == e.control:
                continue
            for name in ("lift", "p_value", "p_value_sequential_adjusted", "chance_to_beat"):
                value = getattr(row, name)
                if pd.notna(value):
                    metrics[f"{row.metric}.{row.variant}.{name}"] = float(value)
        mlflow.log_metrics(metrics, step=step)
        mlflow.set_tags({"revopt.decision": look.decision.action, "revopt.decision_reason": look.decision.reason[:4000],
                         "revopt.last_look": str(look.rows["run_date"].iloc[0])})
        history = pd.concat([previous, look.rows], ignore_index=True)
        figure = cumulative_lift_figure(history[history["is_primary"].astype(bool)], e.control,
                                        f"{e.experiment_id}: {e.primary_metric} vs {e.control}")
        mlflow.log_figure(figure, "plots/cumulative_lift.png")
        close(figure)
        return run.info.run_id
