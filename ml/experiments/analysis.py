"""The nightly analysis of one experiment: its units' outcomes (:mod:`ml.experiments.metrics`), the
statistics of :mod:`ml.experiments.stats` on the primary metric and every guardrail, the sample ratio
check on the units assigned, and the decision, as rows of ``scores.experiment_results``.

Rules beyond :func:`ml.experiments.stats.decide`:
- units are analysed from the night after their first assignment (a unit assigned tonight has no
  outcome yet and would only dilute the look);
- the sample ratio check counts *assigned* units against the weights (a conditional metric such as
  order value has fewer units by design, and would raise false alarms);
- a guardrail is harmed when its always-valid interval lies wholly beyond the guardrail's tolerance
  on the harmful side (``tolerance`` x the control mean; 0: any significant harm);
- the planned sample is the sequential plan (:func:`ml.experiments.stats.plan_sample_size`) for the
  experiment's MDE, power and alpha at the control's observed mean (and sd) tonight;
- the end date is reached when the last units assigned (``end`` or the stop) have had their whole
  outcome window (:data:`PLANNED_WINDOW_DAYS`);
- each look's always-valid p-value carries on from the previous look's (``previous`` results);
- a planned experiment (group-sequential) whose information reaches the plan without a winner stops
  there ("no effect"): its alpha is spent;
- a decision other than "keep running" stands: later nights repeat it with its date (the statistics
  are still published), so nobody re-decides by looking again.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pandas as pd
import psycopg

from ml.experiments.definitions import HIGHER_IS_BETTER, Experiment
from ml.experiments.metrics import PRE_DAYS, unit_outcomes
from ml.experiments.stats import (
    Decision,
    ExperimentConfig,
    MetricAnalysis,
    MetricSpec,
    analyse_metric,
    decide,
    plan_sample_size,
    sample_ratio_test,
)
from revopt.platform.postgres import read_frame

#: how each metric is tested: a 0/1 outcome (z test) or a mean (Welch)
METRIC_KIND = {"conversion": "proportion", "revenue_per_unit": "mean", "order_value": "mean", "open_rate": "mean"}
#: the columns of scores.experiment_results (migration 0006), in table order
RESULT_TABLE_COLUMNS = (
    "run_date", "experiment_id", "variant", "metric", "is_primary", "n", "mean", "estimate", "lift", "ci_low", "ci_high",
    "p_value", "p_value_adjusted", "p_value_sequential", "p_value_sequential_adjusted", "cs_low", "cs_high",
    "z_statistic", "information_fraction", "gs_boundary", "p_value_gs", "gs_low", "gs_high",
    "chance_to_beat", "expected_loss", "cuped_variance_reduction", "srm_p_value", "sequential_test", "decision",
    "reason", "mlflow_run_id",
)
#: the outcome window the plan sizes each unit for (``revopt experiment plan``): a planned experiment's
#: information is measured in unit-days against ``planned_units`` x this
PLANNED_WINDOW_DAYS = 28


@dataclass(frozen=True)
class ExperimentLook:
    """One night's analysis of one experiment."""

    experiment: Experiment
    rows: pd.DataFrame  # RESULT_TABLE_COLUMNS, mlflow_run_id None
    decision: Decision
    n_units: int


def analyse_experiment(experiment: Experiment, assignments: pd.DataFrame, run_date: dt.date, *,
                       orders: pd.DataFrame | None = None, daily_events: pd.DataFrame | None = None,
                       product_sales: pd.DataFrame | None = None, previous: pd.DataFrame | None = None,
                       exposures: pd.DataFrame | None = None, pre_days: int = PRE_DAYS) -> ExperimentLook | None:
    """The experiment's look on ``run_date`` from its ``assignments`` (experiment_id, unit_id, variant,
    first_assigned); None when no unit has been in it for a night yet. ``previous``: its earlier
    results rows (the always-valid p-values carry on from the latest). ``exposures``: the store's
    exposure log (``shop.experiment_exposures``); when it has rows for this experiment, only units
    exposed before the run date are analysed, in the variant revopt assigned, and the sample ratio
    check counts them (a serving path that loses one variant's exposures shows up there)."""
    units = assignments[(assignments["experiment_id"] == experiment.experiment_id)
                        & (pd.to_datetime(assignments["first_assigned"]) < pd.Timestamp(run_date))]
    exposed = _exposed_units(exposures, experiment.experiment_id, run_date)
    if exposed is not None:
        units = units[units["unit_id"].isin(exposed)]
    if units.empty:
        return None
    weights = experiment.weights()
    config = ExperimentConfig(control=experiment.control, weights=weights, alpha=experiment.alpha, mde=experiment.mde,
                              **_tuning(experiment))
    counts = units["variant"].value_counts().reindex(config.variants, fill_value=0).to_numpy(dtype=float)
    srm = sample_ratio_test(counts, [weights[v] for v in config.variants], config.srm_threshold)
    srm_p = float(srm.p_value)
    sources = {"orders": orders, "daily_events": daily_events, "product_sales": product_sales}
    last_p = _previous_p_values(previous)
    looks = _previous_looks(previous)

    def analysed(metric: str, higher_is_better: bool) -> tuple[MetricAnalysis, pd.DataFrame]:
        outcomes = unit_outcomes(units, metric, run_date, unit=experiment.unit, pre_days=pre_days, **sources)
        frame = outcomes.rename(columns={"unit_id": "unit"})[["unit", "variant", "y", "x"]].assign(
            exposure=(pd.Timestamp(run_date) - pd.to_datetime(outcomes["first_assigned"])).dt.days.to_numpy(dtype=float))
        spec = MetricSpec(name=metric, kind=METRIC_KIND[metric], higher_is_better=higher_is_better)
        return analyse_metric(frame, config, spec, last_p.get(metric), history=looks.get(metric)), outcomes

    primary, outcomes = analysed(experiment.primary_metric, True)
    guardrails = [(g, analysed(g.metric, g.direction == HIGHER_IS_BETTER)[0]) for g in experiment.guardrails]
    sequential = "group" if experiment.planned_units is not None else "msprt"
    decision = _sticky(_decision(experiment, primary, outcomes, guardrails, run_date, bool(srm.detected), sequential),
                       previous)
    rows = [_rows(primary, True), *(_rows(a, False) for _, a in guardrails)]
    table = pd.concat(rows, ignore_index=True).assign(
        run_date=run_date, experiment_id=experiment.experiment_id, srm_p_value=srm_p, sequential_test=sequential,
        decision=decision.action, reason=decision.reason, mlflow_run_id=None)
    return ExperimentLook(experiment, table[list(RESULT_TABLE_COLUMNS)], decision, int(counts.sum()))


def _previous_looks(previous: pd.DataFrame | None) -> dict[str, dict[str, list[tuple[float, float]]]]:
    """metric -> variant -> the (information fraction, z) of every earlier look, oldest first (the
    group-sequential test spends its alpha along them)."""
    if previous is None or previous.empty or "information_fraction" not in previous.columns:
        return {}
    rows = previous.dropna(subset=["information_fraction", "z_statistic"]).sort_values("run_date")
    out: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for row in rows.itertuples():
        out.setdefault(row.metric, {}).setdefault(row.variant, []).append(
            (float(row.information_fraction), float(row.z_statistic)))
    return out


def _tuning(experiment: Experiment) -> dict[str, float]:
    """The always-valid test's tuning from the experiment's plan: narrowest at the planned size of a
    comparison (control + one treatment), fixed when the experiment was created (a tuning read off the
    data as it comes in would void the guarantee). Without a plan: the engine's default."""
    if experiment.planned_units is None:
        return {}
    weights = experiment.weights()
    control = weights[experiment.control]
    comparison = max(control + w for v, w in weights.items() if v != experiment.control)
    # the group-sequential information: unit-days against the plan's (units arrive at once at launch, and
    # outcomes keep accruing on units already in: counting units would spend alpha too early)
    return {"sequential_tuning_n": float(experiment.planned_units * comparison),
            "planned_exposure": float(experiment.planned_units * PLANNED_WINDOW_DAYS)}


def _exposed_units(exposures: pd.DataFrame | None, experiment_id: str, run_date: dt.date) -> pd.Index | None:
    """Units the store logged as served before the run date, or None when it logs none for the experiment."""
    if exposures is None or exposures.empty:
        return None
    mine = exposures[exposures["experiment_id"] == experiment_id]
    if mine.empty:
        return None
    before = pd.to_datetime(mine["first_exposed_at"], utc=True) < pd.Timestamp(run_date, tz="UTC")
    return pd.Index(mine.loc[before, "unit_id"].astype("int64"))


def _decision(experiment: Experiment, primary: MetricAnalysis, outcomes: pd.DataFrame, guardrails,
              run_date: dt.date, srm_detected: bool, sequential: str) -> Decision:
    last = experiment.last_active_day()
    # the experiment is over when its last units have had their whole outcome window (``end`` is the last
    # day that assigns units, not the last day they are measured)
    end_reached = last is not None and run_date > last + dt.timedelta(days=PLANNED_WINDOW_DAYS)
    if srm_detected:
        return decide(primary, planned_sample_reached=False, end_date_reached=end_reached, srm_detected=True,
                      sequential=sequential)
    for guardrail, analysis in guardrails:
        harm = _guardrail_harm(analysis, guardrail.tolerance, sequential)
        if harm is not None:
            return harm
    decision = decide(primary, planned_sample_reached=_planned_sample_reached(experiment, primary, outcomes),
                      end_date_reached=end_reached, srm_detected=False, sequential=sequential)
    complete = float(primary.table["information_fraction"].iloc[1:].min()) if sequential == "group" else float("nan")
    if decision.action == "keep running" and complete >= 1.0:
        # the group-sequential design has spent all its alpha: looking on at the final boundary would
        # inflate false positives night after night, so the plan's last look is the answer
        return Decision("stop: no effect", None,
                        f"the plan's information is complete ({complete:.0%} of its unit-days) without a "
                        f"significant difference on {primary.metric.name}; {decision.reason}")
    return decision


def _sticky(decision: Decision, previous: pd.DataFrame | None) -> Decision:
    """A decision reached on an earlier night stands (re-deciding every night would be peeking again): the
    first night's ship / stop is repeated with its date; tonight's statistics are still published."""
    if previous is None or previous.empty:
        return decision
    made = previous[previous["decision"] != "keep running"].sort_values("run_date")
    if made.empty:
        return decision
    first = made.iloc[0]
    reason = str(first["reason"])
    on = pd.Timestamp(first["run_date"]).date()
    return Decision(str(first["decision"]), None, reason if reason.startswith("decided on ") else f"decided on {on}: {reason}")


def _guardrail_harm(analysis: MetricAnalysis, tolerance: float, sequential: str) -> Decision | None:
    """The first treatment whose sequential interval (always-valid, or the group-sequential repeated one)
    lies wholly beyond the tolerated harm."""
    table = analysis.table
    margin = tolerance * abs(float(table["mean"].iloc[0]))
    low, high = ("gs_low", "gs_high") if sequential == "group" else ("cs_low", "cs_high")
    for _, row in table.iloc[1:].iterrows():
        if analysis.metric.higher_is_better:
            harmed = row[high] < -margin
        else:
            harmed = row[low] > margin
        if harmed:
            name = analysis.metric.name
            return Decision(f"stop: harm on {name}", row["variant"],
                            f"{row['variant']} moves guardrail {name} the wrong way beyond its tolerance "
                            f"({tolerance:.1%} of the control mean, {margin:.4g}): difference {row['estimate']:+.4g}, "
                            f"{sequential} interval [{row[low]:.4g}, {row[high]:.4g}]")
    return None


def _planned_sample_reached(experiment: Experiment, primary: MetricAnalysis, outcomes: pd.DataFrame) -> bool:
    """Whether the units analysed reach the sequential plan for the experiment's MDE at the control's
    observed mean (and sd, per unit) tonight."""
    control = outcomes.loc[outcomes["variant"] == experiment.control, "y"].to_numpy(dtype=float)
    mean = float(control.mean()) if len(control) else float("nan")
    if len(control) < 2 or not np.isfinite(mean) or mean == 0:
        return False
    sd = None
    if primary.metric.kind == "mean":
        sd = float(control.std(ddof=1))
        if not sd > 0:
            return False
    elif not 0 < mean < 1:
        return False
    plan = plan_sample_size(baseline=mean, mde=experiment.mde, weights=experiment.weights(),
                            control=experiment.control, units_per_day=1.0, sd=sd, alpha=experiment.alpha,
                            power=experiment.power)
    return int(primary.table["n"].sum()) >= plan.sequential_total


def _rows(analysis: MetricAnalysis, is_primary: bool) -> pd.DataFrame:
    table = analysis.table.drop(columns=["lift_ci_low", "lift_ci_high", "method"])
    return table.assign(metric=analysis.metric.name, is_primary=is_primary)


def _previous_p_values(previous: pd.DataFrame | None) -> dict[str, dict[str, float]]:
    """metric -> variant -> the always-valid p-value at the latest earlier look."""
    if previous is None or previous.empty:
        return {}
    latest = previous[previous["run_date"] == previous["run_date"].max()]
    out: dict[str, dict[str, float]] = {}
    for row in latest.itertuples():
        if pd.notna(row.p_value_sequential):
            out.setdefault(row.metric, {})[row.variant] = float(row.p_value_sequential)
    return out


def previous_results(conn: psycopg.Connection, run_date: dt.date) -> pd.DataFrame:
    """Every experiment's results before ``run_date`` (the running p-values, the plots' history)."""
    return read_frame(conn, f"SELECT {', '.join(RESULT_TABLE_COLUMNS)} FROM scores.experiment_results "
                            "WHERE run_date < %s ORDER BY experiment_id, run_date, metric, variant", (run_date,))


def report_lines(conn: psycopg.Connection, experiment: Experiment, run_date: dt.date | None = None) -> list[str]:
    """``revopt experiment report``: the experiment's analysis at ``run_date`` (default: its latest)."""
    day = run_date or conn.execute("SELECT max(run_date) FROM scores.experiment_results WHERE experiment_id = %s",
                                   (experiment.experiment_id,)).fetchone()[0]
    header = [f"experiment {experiment.experiment_id}: {experiment.name} ({experiment.kind} on {experiment.unit}s, "
              f"{experiment.status}; variants {', '.join(f'{v} {w:.0%}' for v, w in experiment.weights().items())})"]
    if day is None:
        return header + ["no analysis yet: the experiments DAG analyses it from the night after its first units "
                         "are assigned (revopt run --dag experiments --date D)"]
    rows = read_frame(conn, f"SELECT {', '.join(RESULT_TABLE_COLUMNS)} FROM scores.experiment_results "
                            "WHERE experiment_id = %s AND run_date = %s ORDER BY is_primary DESC, metric, variant",
                      (experiment.experiment_id, day))
    if rows.empty:
        return header + [f"no analysis on {day}"]
    first = rows.iloc[0]
    lines = header + [f"run date {day}: decision: {first['decision']} -- {first['reason']} "
                      f"(decided by the {first['sequential_test']} test)",
                      f"sample ratio mismatch check p = {first['srm_p_value']:.3g}"]
    for (metric, is_primary), group in rows.groupby(["metric", "is_primary"], sort=False):
        lines.append(f"{'primary' if is_primary else 'guardrail'} {metric}:")
        for r in group.itertuples():
            if r.variant == experiment.control:
                lines.append(f"  {r.variant:<14} n {r.n:>8,}  mean {r.mean:.4g} (control)")
                continue
            group = (f"group-sequential [{r.gs_low:.4g}, {r.gs_high:.4g}] p {r.p_value_gs:.3g} at "
                     f"{r.information_fraction:.0%} of the plan (|z| {abs(r.z_statistic):.2f} vs {r.gs_boundary:.2f}) | "
                     if pd.notna(r.p_value_gs) else "")
            lines.append(
                f"  {r.variant:<14} n {r.n:>8,}  mean {r.mean:.4g}  lift {r.lift:+.2%}  "
                f"diff {r.estimate:+.4g} [{r.ci_low:.4g}, {r.ci_high:.4g}] p {r.p_value:.3g} (fixed) | {group}"
                f"always-valid [{r.cs_low:.4g}, {r.cs_high:.4g}] p {r.p_value_sequential_adjusted:.3g} | "
                f"P(beat) {r.chance_to_beat:.1%}, expected loss {r.expected_loss:.3g}")
    return lines
