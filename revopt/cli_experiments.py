"""``revopt experiment``: create, list, stop, plan and report A/B tests (docs/experiments.md).

Definitions live in ``scores.experiments`` (:mod:`ml.experiments.store`); the nightly DAG assigns
and serves, ``revopt_experiments`` analyses. Imports of numpy / pandas / ml happen inside the
handlers, so building the parser stays cheap.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from pathlib import Path
from typing import Any

from revopt.platform.config import Settings


def add_parser(commands: Any) -> None:
    experiment = commands.add_parser("experiment", help="create, list, stop, plan and report A/B tests")
    actions = experiment.add_subparsers(required=True, metavar="ACTION")

    create = actions.add_parser(
        "create", help="define an experiment (scores.experiments); the next nightly run starts assigning units",
        description="Define an experiment from options or a JSON file (--file, the same keys as scores.experiments: "
                    "experiment_id, name, unit, kind, variants, start_date, ...; options override the file).")
    create.add_argument("--file", type=Path, help="a JSON definition")
    create.add_argument("--id", dest="experiment_id", help="short id: lower-case letters, digits, - and _")
    create.add_argument("--name", help="what is tested, in words")
    create.add_argument("--unit", choices=["customer", "product"], help="what is randomised")
    create.add_argument("--kind", choices=["model", "price", "message"],
                        help="what is served: model (customer scores by model version), price, message (send time)")
    create.add_argument("--variant", action="append", default=[], metavar="NAME[:WEIGHT[:JSON]]",
                        help="a variant, repeated; the first is the control. JSON: its config, e.g. "
                             "'challenger:1:{\"models\": {\"purchase_propensity\": \"7\"}}'")
    create.add_argument("--start", type=dt.date.fromisoformat, help="first run date that assigns units")
    create.add_argument("--end", type=dt.date.fromisoformat, help="last run date that assigns units (default: until stopped)")
    create.add_argument("--metric", dest="primary_metric",
                        choices=["conversion", "revenue_per_unit", "order_value", "open_rate"], help="primary metric")
    create.add_argument("--guardrail", action="append", default=[], metavar="METRIC[:DIRECTION[:TOLERANCE]]",
                        help="a guardrail metric, repeated; direction higher_is_better (default) or lower_is_better, "
                             "tolerance the relative harm allowed (default 0)")
    create.add_argument("--mde", type=float, help="relative minimum detectable effect, e.g. 0.05")
    create.add_argument("--alpha", type=float)
    create.add_argument("--power", type=float)
    create.add_argument("--layer", help="experiments of one layer never share a unit (default: default)")
    create.add_argument("--traffic", type=float, help="share of the layer's units this experiment takes (default 1)")
    create.add_argument("--planned-units", dest="planned_units", type=int,
                        help="units (all variants) the experiment is planned for (default: from `revopt experiment "
                             "plan` on the store's own baseline, for customer experiments on order metrics)")
    create.set_defaults(handler=_create)

    listed = actions.add_parser("list", help="every experiment and its status")
    listed.set_defaults(handler=_list)

    stop = actions.add_parser("stop", help="stop assigning new units from a run date (units keep their variant)")
    stop.add_argument("experiment_id")
    stop.add_argument("--date", type=dt.date.fromisoformat, default=None,
                      help="first run date without new units (default: today, UTC)")
    stop.set_defaults(handler=_stop)

    plan = actions.add_parser(
        "plan", help="units and days an experiment needs, from the store's own baseline rate and variance")
    plan.add_argument("--metric", choices=["conversion", "revenue_per_unit", "order_value"], default="conversion")
    plan.add_argument("--mde", type=float, required=True, help="relative minimum detectable effect, e.g. 0.05")
    plan.add_argument("--variants", type=int, default=2, help="variants including the control (equal weights)")
    plan.add_argument("--alpha", type=float, default=0.05)
    plan.add_argument("--power", type=float, default=0.8)
    plan.add_argument("--window-days", type=int, default=28, help="outcome window the baseline is measured over")
    plan.add_argument("--traffic", type=float, default=1.0, help="share of the customers that enter the experiment")
    plan.add_argument("--date", type=dt.date.fromisoformat, default=None,
                      help="measure the baseline before this date (default: the day after the latest order)")
    plan.set_defaults(handler=_plan)

    report = actions.add_parser("report", help="the latest nightly analysis of an experiment and its decision")
    report.add_argument("experiment_id")
    report.add_argument("--date", type=dt.date.fromisoformat, default=None, help="run date (default: the latest)")
    report.set_defaults(handler=_report)


# --- handlers ---------------------------------------------------------------------------------------


def _create(settings: Settings, args: argparse.Namespace) -> int:
    from ml.experiments.definitions import Experiment
    from ml.experiments.store import create_experiment

    definition = definition_from_args(args)
    experiment = Experiment(**definition)
    with _scores(settings) as conn:
        if experiment.planned_units is None:
            experiment = _with_plan(conn, experiment)
        create_experiment(conn, experiment)
    weights = ", ".join(f"{name} {share:.0%}" for name, share in experiment.weights().items())
    print(f"created experiment {experiment.experiment_id}: {experiment.kind} on {experiment.unit}s, {weights}; "
          f"primary metric {experiment.primary_metric}, from {experiment.start}"
          f"{f' to {experiment.end}' if experiment.end else ''} (layer {experiment.layer}, traffic {experiment.traffic:.0%})")
    return 0


def _with_plan(conn, experiment):
    """The experiment with ``planned_units`` from the store's baseline (the plan is printed), or as it is
    when no plan can be made (a product or open-rate experiment, no order history)."""
    import dataclasses

    from ml.experiments.planning import plan_from_store

    if experiment.unit != "customer" or experiment.primary_metric == "open_rate":
        print(f"no sample plan for a {experiment.unit} experiment on {experiment.primary_metric}: the analysis uses "
              "its default tuning (pass --planned-units to set one)")
        return experiment
    try:
        plan = plan_from_store(conn, metric=experiment.primary_metric, mde=experiment.mde,
                               n_variants=len(experiment.variants), alpha=experiment.alpha, power=experiment.power,
                               traffic=experiment.traffic, before=experiment.start)
    except ValueError as exc:
        print(f"no sample plan ({exc}): the analysis uses its default tuning (pass --planned-units to set one)")
        return experiment
    for line in plan.lines():
        print(line)
    return dataclasses.replace(experiment, planned_units=int(plan.plan.total))


def definition_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The experiment's fields from ``--file`` and the options (options win). Raises ValueError naming a
    malformed ``--variant`` / ``--guardrail``."""
    definition: dict[str, Any] = json.loads(args.file.read_text()) if args.file else {}
    if "start_date" in definition:  # a scores.experiments row: the field names
        definition["start"] = definition.pop("start_date")
        if "end_date" in definition:
            definition["end"] = definition.pop("end_date")
    for name in ("experiment_id", "name", "unit", "kind", "start", "end", "primary_metric", "mde", "alpha", "power",
                 "layer", "traffic", "planned_units"):
        value = getattr(args, name, None)
        if value is not None:
            definition[name] = value
    if args.variant:
        definition["variants"] = [_variant(text) for text in args.variant]
    if args.guardrail:
        definition["guardrails"] = [_guardrail(text) for text in args.guardrail]
    missing = [name for name in ("experiment_id", "name", "unit", "kind", "variants", "start", "primary_metric", "mde")
               if name not in definition]
    if missing:
        raise ValueError(f"experiment create needs {', '.join(missing)} (options or --file)")
    return definition


def _variant(text: str) -> dict[str, Any]:
    name, _, rest = text.partition(":")
    weight, _, config = rest.partition(":")
    try:
        return {"name": name, "weight": float(weight) if weight else 1.0, "config": json.loads(config) if config else {}}
    except ValueError as exc:
        raise ValueError(f"--variant {text!r}: expected NAME[:WEIGHT[:JSON]] ({exc})") from None


def _guardrail(text: str) -> dict[str, Any]:
    metric, _, rest = text.partition(":")
    direction, _, tolerance = rest.partition(":")
    try:
        return {"metric": metric, "direction": direction or "higher_is_better",
                "tolerance": float(tolerance) if tolerance else 0.0}
    except ValueError:
        raise ValueError(f"--guardrail {text!r}: expected METRIC[:DIRECTION[:TOLERANCE]]") from None


def _list(settings: Settings, args: argparse.Namespace) -> int:
    from ml.experiments.store import load_experiments

    with _scores(settings) as conn:
        experiments = load_experiments(conn)
        counts = dict(conn.execute("SELECT experiment_id, count(*) FROM scores.experiment_assignments "
                                   "GROUP BY experiment_id").fetchall())
    if not experiments:
        print("no experiments (revopt experiment create)")
        return 0
    today = dt.datetime.now(dt.timezone.utc).date()
    for e in experiments:
        period = f"{e.start} to {e.end or 'open'}" + (f", stopped from {e.stopped_on}" if e.stopped_on else "")
        status = "ended" if e.status == "running" and e.end is not None and e.end < today else e.status
        variants = " / ".join(f"{name} {share:.0%}" for name, share in e.weights().items())
        print(f"{e.experiment_id:<24} {status:<8} {e.kind:<7} {e.unit:<8} {variants:<28} {e.primary_metric:<16} "
              f"{period}; {counts.get(e.experiment_id, 0):,} units assigned")
    return 0


def _stop(settings: Settings, args: argparse.Namespace) -> int:
    from ml.experiments.store import stop_experiment

    on = args.date or dt.datetime.now(dt.timezone.utc).date()
    with _scores(settings) as conn:
        stopped = stop_experiment(conn, args.experiment_id, on)
    print(f"stopped {stopped.experiment_id}: no new units from run date {on}; units already in it keep their variant "
          "and are still analysed")
    return 0


def _plan(settings: Settings, args: argparse.Namespace) -> int:
    from ml.experiments.planning import plan_from_store

    with _scores(settings) as conn:
        plan = plan_from_store(conn, metric=args.metric, mde=args.mde, n_variants=args.variants, alpha=args.alpha,
                               power=args.power, window_days=args.window_days, traffic=args.traffic, before=args.date)
    for line in plan.lines():
        print(line)
    return 0


def _report(settings: Settings, args: argparse.Namespace) -> int:
    from ml.experiments.analysis import report_lines
    from ml.experiments.store import get_experiment

    with _scores(settings) as conn:
        experiment = get_experiment(conn, args.experiment_id)
        lines = report_lines(conn, experiment, args.date)
    for line in lines:
        print(line)
    return 0


def _scores(settings: Settings):
    from revopt.platform.schema import scores_connection
    from revopt.platform.stack import start_stack

    start_stack(settings)
    return scores_connection(settings)


def planted_effect(experiment_id: str, day: int, lift: float, n_customers: int, start: dt.date):
    """The generator's :class:`revopt.sample_data.synth.ExperimentEffect` for a two-variant 50/50 experiment
    ``experiment_id`` (control / treatment, default layer and salt): each customer's variant is the one
    revopt's assignment will give it, so the planted effect lands on the arms the analysis compares."""
    import numpy as np

    from ml.experiments.assignment import pick_variants
    from ml.experiments.definitions import Experiment
    from revopt.sample_data.synth import ExperimentEffect

    experiment = Experiment(experiment_id=experiment_id, name="planted", unit="customer", kind="model",
                            variants=[{"name": "control"}, {"name": "treatment"}],
                            start=start + dt.timedelta(days=day), primary_metric="conversion", mde=max(abs(lift), 0.01))
    variants = pick_variants(experiment, np.arange(1, n_customers + 1))
    return ExperimentEffect(experiment_id, day, variants, {"control": 1.0, "treatment": 1.0 + lift})
