"""The nightly report: one self-contained HTML page per run date that a person reads instead of querying.

:func:`build_nightly_report` reads what the run published (``scores.*``) and writes ``report.html`` into the
run folder and as an artifact of the MLflow run ``nightly-report-<date>`` (experiment :data:`MLFLOW_EXPERIMENT`).
The page compares the run date with each table's previous run date: rows per published table (and the means
of its scores, :func:`revopt.platform.changes.published_changes`), the score distributions, the price moves,
the recommended send hours, the budget per channel, the data-quality results, the drift check, the model
versions that scored and the latest promotion-gate decisions. A section whose table has nothing for the
run date says so in one line.

Written in three parts so the page is testable without a database: :func:`read_report_data` (one read-only
query per part), :func:`render_report` (pure: frames in, HTML out; jinja2 template ``report_template.html.j2``,
matplotlib figures from :mod:`ml.plots` inlined as PNG data URIs, no external script or style, so it renders
offline), and :func:`build_nightly_report` (writes the file and the MLflow run; re-running a date replaces
both). Aggregates only: no customer id is read, so none can reach the page (score distributions are
histograms computed in PostgreSQL, send hours are counts, and the examples GX keeps of a failed
expectation's values are cut from the data-quality lines).
"""

from __future__ import annotations

import base64
import datetime as dt
import io
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ml import plots
from ml.params import RunParams
from revopt.platform.changes import published_changes, published_tables
from revopt.platform.postgres import read_frame
from revopt.platform.resources import Resources

logger = logging.getLogger(__name__)

#: the MLflow experiment holding one run per nightly report
MLFLOW_EXPERIMENT = "revopt/nightly"
#: the tag naming a report run's run date (how a re-run finds the run to replace)
DATE_TAG = "revopt.report_date"
REPORT_FILE = "report.html"
TEMPLATE = "report_template.html.j2"
#: customer_scores' score columns: (column, axis label, fixed range or None for [min, 99th percentile])
SCORE_HISTOGRAMS = (
    ("purchase_propensity", "purchase propensity (probability)", (0.0, 1.0)),
    ("churn_risk", "churn risk (probability)", (0.0, 1.0)),
    ("clv", "predicted CLV (currency; last bin: 99th percentile and above)", None),
)
HISTOGRAM_BINS = 40
#: the biggest price moves listed
TOP_MOVES = 10
#: a model and its version per published table: (name column, version column) pairs looked for in the catalogue
_MODEL_COLUMNS = (("model_name", "model_version"), ("propensity_model", "propensity_version"),
                  ("churn_model", "churn_version"), ("clv_model", "clv_version"))
#: GX's examples of unexpected values (they could be customer ids): cut from a failure line
_EXAMPLES = re.compile(r", e\.g\. .*$")


@dataclass(frozen=True)
class ReportData:
    """What the report shows for one run date, read from the published tables (aggregates and products only)."""

    run_date: dt.date
    changes: pd.DataFrame            # published_changes
    score_histograms: dict[str, pd.DataFrame]  # score column -> run_date, bucket (1..bins), n, lo, hi
    prices: pd.DataFrame             # tonight's price recommendations: product_id, current / recommended price, guardrail
    send_hours: pd.DataFrame         # run_date, best_hour, n
    budget: pd.DataFrame             # run_date, channel, current_spend, recommended_spend, binding_constraint
    quality: pd.DataFrame            # scores.data_quality of the run date
    drift_decision: pd.DataFrame     # scores.drift_checks of the run date (0 or 1 row)
    drift: pd.DataFrame              # scores.feature_drift of the run date
    model_versions: pd.DataFrame     # table, model_name, model_version, rows
    gate_decisions: pd.DataFrame     # the latest decision per model up to the run date

    def previous_date(self, table: str) -> dt.date | None:
        """The table's run date before this one (None: none, or the table is not there)."""
        return _previous(self.changes, table)


def build_nightly_report(resources: Resources, run_date: dt.date, params: RunParams) -> dict[str, Any]:
    """Write the run date's report into its run folder and log it to MLflow (replacing an earlier report of
    the date: its file and its MLflow run). Returns the page's path, the MLflow run id, the artifact's URI and
    the summary {published table: rows on the run date} (JSON-serialisable, for XCom)."""
    with resources.sources() as conn:
        conn.read_only = True  # the report only reads
        data = read_report_data(conn, run_date)
    html = render_report(data, params)
    path = resources.run_folder(run_date) / REPORT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".html.tmp")
    temporary.write_text(html, encoding="utf-8")
    temporary.replace(path)  # a reader never sees half a page
    summary = rows_summary(data.changes)
    run_id, artifact_uri = _log_report(resources, run_date, path, summary)
    logger.info("nightly report for %s: %s (MLflow run %s)", run_date, path, run_id)
    return {"path": str(path), "mlflow_run_id": run_id, "artifact_uri": artifact_uri, "summary": summary}


def rows_summary(changes: pd.DataFrame) -> dict[str, int]:
    """Rows on the run date per published table."""
    rows = changes[changes["kind"] == "rows"]
    return {str(table): int(count) for table, count in zip(rows["table"], rows["today"])}


# --- reading -------------------------------------------------------------------------------------------------

def read_report_data(conn: Any, run_date: dt.date) -> ReportData:
    """Everything the report shows, read-only, from the published tables."""
    changes = published_changes(conn, run_date)
    previous = {table: _previous(changes, table) for table in changes["table"].unique()}

    def dates(table: str) -> list[dt.date]:
        return [run_date] + ([previous[table]] if previous.get(table) else [])

    tables = published_tables(conn)
    histograms = {}
    if "customer_scores" in tables:
        for column, _, bounds in SCORE_HISTOGRAMS:
            if column in tables["customer_scores"]:
                histograms[column] = read_frame(conn, _histogram_sql(column, bounds), {
                    "dates": dates("customer_scores"), "bins": HISTOGRAM_BINS})
    return ReportData(
        run_date=run_date,
        changes=changes,
        score_histograms=histograms,
        prices=_read_if(conn, tables, "price_recommendations",
                        "SELECT product_id, current_price, recommended_price, binding_guardrail, confidence "
                        "FROM scores.price_recommendations WHERE run_date = %s ORDER BY product_id", (run_date,)),
        send_hours=_read_if(conn, tables, "send_time_recommendations",
                            "SELECT run_date, best_hour, count(*) AS n FROM scores.send_time_recommendations "
                            "WHERE run_date = ANY(%s) GROUP BY run_date, best_hour", (dates("send_time_recommendations"),)),
        budget=_read_if(conn, tables, "budget_allocations",
                        "SELECT run_date, channel, current_spend, recommended_spend, binding_constraint "
                        "FROM scores.budget_allocations WHERE run_date = ANY(%s) ORDER BY channel",
                        (dates("budget_allocations"),)),
        quality=_read_if(conn, tables, "data_quality",
                         "SELECT dataset, success, row_count, evaluated, failed, failures FROM scores.data_quality "
                         "WHERE run_date = %s ORDER BY success, dataset", (run_date,)),
        drift_decision=_read_if(conn, tables, "drift_checks",
                                "SELECT drift_share, threshold, retrain_requested, reason, reference_model, "
                                "reference_version FROM scores.drift_checks WHERE run_date = %s", (run_date,)),
        drift=_read_if(conn, tables, "feature_drift",
                       "SELECT column_name, kind, stattest, drift_score, threshold, drifted FROM scores.feature_drift "
                       "WHERE run_date = %s ORDER BY drifted DESC, kind, column_name", (run_date,)),
        model_versions=_model_versions(conn, tables, run_date),
        gate_decisions=_read_if(conn, tables, "model_promotions", _gate_sql(tables.get("model_promotions", [])),
                                (run_date,)),
    )


def _previous(changes: pd.DataFrame, table: str) -> dt.date | None:
    """``table``'s previous run date in :func:`published_changes`' frame (None: none, or no such table)."""
    found = changes[(changes["table"] == table) & (changes["kind"] == "rows")]["previous_run_date"]
    value = found.iloc[0] if len(found) else None
    return value if isinstance(value, dt.date) else None


def _read_if(conn: Any, tables: dict[str, list[str]], table: str, query: str, params: tuple) -> pd.DataFrame:
    """The query's rows, or an empty frame when the database has no such table (it predates the migration)."""
    return read_frame(conn, query, params) if table in tables else pd.DataFrame()


def _gate_sql(columns: list[str]) -> str:
    """The latest promotion-gate decision per model up to the run date ``%s`` (the gate's rows only where the
    table also records moves by hand, revision 0011)."""
    gate_only = "AND action = 'gate' " if "action" in columns else ""
    return ("SELECT DISTINCT ON (model_name) model_name, run_date, candidate_version, champion_version, metric, "
            "candidate_value, champion_value, promoted, reason FROM scores.model_promotions "
            f"WHERE run_date <= %s {gate_only}"
            "ORDER BY model_name, run_date DESC, length(candidate_version) DESC, candidate_version DESC")


def _histogram_sql(column: str, bounds: tuple[float, float] | None) -> str:
    """Counts per bin of ``column`` of ``scores.customer_scores`` for the run dates ``%(dates)s``, the bins
    shared by the dates: ``bounds``, or the values' minimum to their 99th percentile (the last bin takes the
    tail). Values outside the bounds fall into the first or the last bin."""
    if bounds is None:
        limits = "SELECT min(x) AS lo, percentile_cont(0.99) WITHIN GROUP (ORDER BY x) AS hi FROM v"
    else:
        limits = f"SELECT {float(bounds[0])}::float8 AS lo, {float(bounds[1])}::float8 AS hi"
    return (
        f'WITH v AS (SELECT run_date, "{column}"::float8 AS x FROM scores.customer_scores '
        f'WHERE run_date = ANY(%(dates)s) AND "{column}" IS NOT NULL), '
        f"l AS ({limits}), "
        "b AS (SELECT lo, CASE WHEN hi > lo THEN hi ELSE lo + 1 END AS hi FROM l WHERE lo IS NOT NULL) "
        "SELECT v.run_date, least(greatest(width_bucket(v.x, b.lo, b.hi, %(bins)s), 1), %(bins)s) AS bucket, "
        "count(*) AS n, min(b.lo) AS lo, min(b.hi) AS hi FROM v CROSS JOIN b GROUP BY v.run_date, bucket"
    )


def _model_versions(conn: Any, tables: dict[str, list[str]], run_date: dt.date) -> pd.DataFrame:
    """Which model versions produced each published table's rows on the run date (one query)."""
    parts, params = [], []
    for table, columns in tables.items():
        for name, version in _MODEL_COLUMNS:
            if name in columns and version in columns:
                parts.append(f"SELECT '{table}' AS table_name, \"{name}\"::text AS model_name, \"{version}\"::text "
                             f"AS model_version, count(*) AS rows FROM scores.\"{table}\" WHERE run_date = %s "
                             f"AND \"{name}\" IS NOT NULL GROUP BY 2, 3")
                params.append(run_date)
    if not parts:
        return pd.DataFrame(columns=["table_name", "model_name", "model_version", "rows"])
    return read_frame(conn, " UNION ALL ".join(parts) + " ORDER BY 2, 1, 3", tuple(params))


# --- rendering (pure) ------------------------------------------------------------------------------------------

def render_report(data: ReportData, params: RunParams) -> str:
    """The page's HTML for ``data`` (see the module doc)."""
    import jinja2

    environment = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).resolve().parent),
                                     autoescape=True, undefined=jinja2.StrictUndefined)
    sections = [
        _published_section(data), _scores_section(data), _prices_section(data, params), _send_hours_section(data, params),
        _budget_section(data), _quality_section(data), _drift_section(data), _models_section(data),
    ]
    return environment.get_template(TEMPLATE).render(run_date=data.run_date.isoformat(), sections=sections)


def _section(key: str, title: str, missing: str | None = None, **parts: Any) -> dict[str, Any]:
    """One section of the page: ``missing`` (one line) when its table has nothing for the run date, else its
    ``lines`` (sentences), ``images`` (data URIs) and ``tables`` ({title, columns, rows} of strings)."""
    return {"id": key, "title": title, "missing": missing, "lines": parts.get("lines", []),
            "images": parts.get("images", []), "tables": parts.get("tables", [])}


def _nothing(table: str, run_date: dt.date) -> str:
    return f"scores.{table} has nothing for {run_date}: this store does not publish it, or the run skipped it."


def _published_section(data: ReportData) -> dict[str, Any]:
    changes = data.changes
    if changes.empty:
        return _section("published", "Published tables", "revopt's schema has no published table yet.")
    rows = changes[changes["kind"] == "rows"]
    seen = rows[(rows["today"] > 0) | rows["previous"].notna()]
    never = sorted(set(rows["table"]) - set(seen["table"]))
    lines = [f"{int((rows['today'] > 0).sum())} of {len(rows)} tables have rows for {data.run_date}; each is compared "
             "with its own previous run date."]
    if never:
        lines.append(f"Nothing published on or before {data.run_date} in: {', '.join(never)}.")
    tables = [_table("Rows per table", seen.sort_values(["today", "table"], ascending=[False, True]), {
        "table": "table", "today": "rows", "previous": "rows before", "change": "change",
        "previous_run_date": "previous run date"})]
    measures = changes[(changes["kind"] != "rows") & changes["table"].isin(seen["table"])
                       & (changes["today"].notna() | changes["previous"].notna())]
    if len(measures):
        tables.append(_table("Means and counts", measures, {
            "table": "table", "measure": "measure", "kind": "kind", "today": "tonight", "previous": "before",
            "change": "change"}))
    return _section("published", "Published tables", lines=lines, tables=tables)


def _scores_section(data: ReportData) -> dict[str, Any]:
    title = "Score distributions"
    images, lines = [], []
    previous = data.previous_date("customer_scores")
    for column, label, _ in SCORE_HISTOGRAMS:
        frame = data.score_histograms.get(column)
        if frame is None or frame.empty or not (frame["run_date"] == data.run_date).any():
            lines.append(f"{column}: nothing scored for {data.run_date}.")
            continue
        edges, counts = histogram_counts(frame, HISTOGRAM_BINS)
        named = {("tonight" if day == data.run_date else f"{day}"): values for day, values in counts.items()}
        images.append(_png(plots.score_distribution_figure(edges, named, column.replace("_", " "), label)))
    if not images:
        return _section("scores", title, _nothing("customer_scores", data.run_date))
    lines.insert(0, f"Tonight's scores against {previous}." if previous else "The first scored run: no earlier scores to compare.")
    return _section("scores", title, lines=lines, images=images)


def histogram_counts(frame: pd.DataFrame, bins: int) -> tuple[np.ndarray, dict[dt.date, np.ndarray]]:
    """Bin edges and counts per run date from the histogram query's rows (run_date, bucket, n, lo, hi)."""
    lo, hi = float(frame["lo"].iloc[0]), float(frame["hi"].iloc[0])
    edges = np.linspace(lo, hi, bins + 1)
    counts = {}
    for day, rows in frame.groupby("run_date", sort=True):
        values = np.zeros(bins)
        np.add.at(values, rows["bucket"].astype(int).to_numpy() - 1, rows["n"].astype(float).to_numpy())
        counts[day] = values
    return edges, dict(sorted(counts.items(), key=lambda item: item[0], reverse=True))


def _prices_section(data: ReportData, params: RunParams) -> dict[str, Any]:
    prices = data.prices
    if prices.empty:
        return _section("prices", "Price moves", _nothing("price_recommendations", data.run_date))
    moves = price_moves(prices)
    moved = moves[moves["change"].abs() >= 0.0005]
    lines = [f"{len(moved)} of {len(moves)} products get a new price (up {int((moved['change'] > 0).sum())}, "
             f"down {int((moved['change'] < 0).sum())}); the run allows at most {params.price_max_change:.0%} per run."]
    top = moved.reindex(moved["change"].abs().sort_values(ascending=False, kind="stable").index).head(TOP_MOVES)
    top = top.assign(change=top["change"].map(lambda v: f"{v:+.1%}"))
    tables = [_table(f"The {len(top)} biggest moves", top, {
        "product_id": "product", "current_price": "current price", "recommended_price": "recommended",
        "change": "change", "binding_guardrail": "bound by", "confidence": "confidence"})] if len(top) else []
    return _section("prices", "Price moves", lines=lines, tables=tables,
                    images=[_png(plots.price_moves_figure(moves["change"], "recommended price changes",
                                                          params.price_max_change))])


def price_moves(prices: pd.DataFrame) -> pd.DataFrame:
    """Each product's recommended change as a share of its current price (``change``)."""
    current = prices["current_price"].astype(float)
    change = (prices["recommended_price"].astype(float) / current.where(current > 0) - 1).fillna(0.0)
    return prices.assign(change=change)


def _send_hours_section(data: ReportData, params: RunParams) -> dict[str, Any]:
    hours = data.send_hours
    if hours.empty or not (hours["run_date"] == data.run_date).any():
        return _section("send-times", "Send hours", _nothing("send_time_recommendations", data.run_date))
    counts = {("tonight" if day == data.run_date else str(day)): rows.set_index("best_hour")["n"].astype(float)
              for day, rows in sorted(hours.groupby("run_date"), key=lambda item: item[0], reverse=True)}
    tonight = counts["tonight"]
    busiest = int(tonight.idxmax())
    figure = plots.hour_counts_figure(counts, "recommended send hours", (params.send_quiet_start, params.send_quiet_end),
                                      params.default_send_hour)
    return _section("send-times", "Send hours", images=[_png(figure)], lines=[
        f"{int(tonight.sum())} recommendations; the most common hour is {busiest}:00 "
        f"({tonight[busiest] / tonight.sum():.0%}); the default is {params.default_send_hour}:00."])


def _budget_section(data: ReportData) -> dict[str, Any]:
    budget = data.budget
    if budget.empty or not (budget["run_date"] == data.run_date).any():
        return _section("budget", "Budget per channel", _nothing("budget_allocations", data.run_date))
    shifts = budget_shifts(budget, data.run_date)
    spend = shifts.set_index("channel")[[c for c in ("current_spend", "recommended_before", "recommended_spend")
                                         if shifts[c].notna().any()]]
    spend = spend.rename(columns={"current_spend": "current", "recommended_before": "recommended before",
                                  "recommended_spend": "recommended tonight"}).T
    return _section("budget", "Budget per channel", images=[_png(plots.budget_shift_figure(spend, "daily spend per channel"))],
                    tables=[_table("Daily spend", shifts, {
                        "channel": "channel", "current_spend": "current", "recommended_before": "recommended before",
                        "recommended_spend": "recommended tonight", "shift": "vs current", "binding_constraint": "bound by"})])


def budget_shifts(budget: pd.DataFrame, run_date: dt.date) -> pd.DataFrame:
    """Tonight's recommendation per channel beside the previous run's (``recommended_before``) and its shift
    from the current spend."""
    tonight = budget[budget["run_date"] == run_date].drop(columns="run_date")
    before = budget[budget["run_date"] != run_date][["channel", "recommended_spend"]].rename(
        columns={"recommended_spend": "recommended_before"})
    merged = tonight.merge(before, on="channel", how="left")
    return merged.assign(shift=merged["recommended_spend"].astype(float) - merged["current_spend"].astype(float))


def _quality_section(data: ReportData) -> dict[str, Any]:
    quality = data.quality
    if quality.empty:
        return _section("quality", "Data quality", _nothing("data_quality", data.run_date))
    failed = quality[~quality["success"].astype(bool)]
    shown = quality.assign(success=quality["success"].map(lambda ok: "passed" if ok else "FAILED"),
                           failures=quality["failures"].fillna("").map(_without_examples))
    lines = [f"{len(quality) - len(failed)} of {len(quality)} datasets passed validation"
             + (f"; failed: {', '.join(failed['dataset'])}." if len(failed) else ".")]
    return _section("quality", "Data quality", lines=lines, tables=[_table("Validation results", shown, {
        "dataset": "dataset", "success": "result", "row_count": "rows", "evaluated": "expectations",
        "failed": "failed", "failures": "failures"})])


def _without_examples(failures: str) -> str:
    """The failure lines without GX's example values (they may be customer ids)."""
    return "\n".join(_EXAMPLES.sub("", line) for line in failures.splitlines())


def _drift_section(data: ReportData) -> dict[str, Any]:
    if data.drift_decision.empty and data.drift.empty:
        return _section("drift", "Drift", _nothing("drift_checks", data.run_date))
    lines = []
    if not data.drift_decision.empty:
        d = data.drift_decision.iloc[0]
        lines.append(f"{d['drift_share']:.0%} of the features drifted (threshold {d['threshold']:.0%}) against "
                     f"{d['reference_model']} v{d['reference_version']}'s training data: "
                     + ("retraining requested. " if d["retrain_requested"] else "no retraining. ") + str(d["reason"]))
    tables = [_table("Per column", data.drift, {"column_name": "column", "kind": "kind", "stattest": "test",
                                                "drift_score": "score", "threshold": "threshold", "drifted": "drifted"})] \
        if not data.drift.empty else []
    return _section("drift", "Drift", lines=lines, tables=tables)


def _models_section(data: ReportData) -> dict[str, Any]:
    if data.model_versions.empty and data.gate_decisions.empty:
        return _section("models", "Models", "No model scored for this run date and no gate has decided yet.")
    tables = []
    if not data.model_versions.empty:
        tables.append(_table("Versions that produced tonight's rows", data.model_versions, {
            "model_name": "model", "model_version": "version", "table_name": "table", "rows": "rows"}))
    if not data.gate_decisions.empty:
        decisions = data.gate_decisions.assign(
            promoted=data.gate_decisions["promoted"].map(lambda p: "promoted" if p else "refused"),
            reason=data.gate_decisions["reason"].map(lambda r: str(r)[:300]))
        tables.append(_table("Latest gate decision per model", decisions, {
            "model_name": "model", "run_date": "decided", "candidate_version": "candidate",
            "champion_version": "champion", "metric": "metric", "candidate_value": "candidate value",
            "champion_value": "champion value", "promoted": "decision", "reason": "reason"}))
    return _section("models", "Models", tables=tables)


def _table(title: str, frame: pd.DataFrame, columns: dict[str, str]) -> dict[str, Any]:
    """A table for the template: the ``columns`` of ``frame`` present (renamed) and each cell as text."""
    present = [c for c in columns if c in frame.columns]
    return {"title": title, "columns": [columns[c] for c in present],
            "rows": [[_cell(value) for value in row] for row in frame[present].itertuples(index=False)]}


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "–"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"
    return str(value)


def _png(figure: Any) -> str:
    """A figure as a PNG data URI (inline: the page needs no other file)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    plots.close(figure)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


# --- MLflow ------------------------------------------------------------------------------------------------

def _log_report(resources: Resources, run_date: dt.date, path: Path, summary: dict[str, int]) -> tuple[str, str]:
    """Log the page to the run date's one MLflow run (``nightly-report-<date>``), reusing the run an earlier
    report of the date made and deleting any other; returns the run id and the page's artifact URI."""
    import mlflow
    from mlflow import MlflowClient

    tracking = Resources(resources.settings, experiment=MLFLOW_EXPERIMENT)
    experiment_id = tracking.use_tracking()
    client = MlflowClient()
    earlier = client.search_runs([experiment_id], filter_string=f"tags.`{DATE_TAG}` = '{run_date.isoformat()}'",
                                 order_by=["attributes.start_time ASC"])
    for extra in earlier[1:]:
        client.delete_run(extra.info.run_id)
    with mlflow.start_run(run_id=earlier[0].info.run_id if earlier else None, experiment_id=experiment_id,
                          run_name=None if earlier else f"nightly-report-{run_date.isoformat()}") as run:
        mlflow.set_tags({DATE_TAG: run_date.isoformat(), "revopt.run_date": run_date.isoformat()})
        mlflow.log_artifact(str(path))
        mlflow.log_dict({"run_date": run_date.isoformat(), "rows": summary}, "summary.json")
        return run.info.run_id, f"{run.info.artifact_uri.rstrip('/')}/{REPORT_FILE}"
