"""The nightly attribution steps the pipeline calls (Airflow-free): tonight's attribution with its MLflow run,
the acquisition economics with the CAC forecast and its MLflow run, and the campaign analytics with their
recommendations. Each takes the task's :class:`Resources`, the run date, the extract frames it reads and the
run's params, writes its output tables to the run folder and returns their paths (what the publish tasks
read); docs/attribution.md describes the tables.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from typing import Any

import mlflow
import numpy as np
import pandas as pd

from features import campaigns
from features.media import media_history
from ml.attribution import campaigns as campaign_rules
from ml.attribution import economics
from ml.attribution import nightly as attribution
from ml.families import budget
from ml.params import RunParams
from revopt.platform.postgres import read_frame, read_large_frame
from revopt.platform.resources import Resources

logger = logging.getLogger(__name__)


def attribute(resources: Resources, run_date: dt.date, frames: dict[str, pd.DataFrame], params: RunParams) -> dict[str, Any]:
    """Every attribution model on the window's conversion paths, checked for conservation, and the store's
    recorded channel beside them (:mod:`ml.attribution.nightly`): ``scores.attribution`` and
    ``scores.order_attribution`` rows in the run folder. Without touchpoints (no clickstream) only the
    recorded channel is published. Also written: ``order_credits``, the run's ``attribution_model`` on every
    order of the extract (:func:`ml.attribution.nightly.history_credits`), which the acquisition economics
    and the campaign analytics read (the budget step attributes its target itself: docs/scale.md, "Session 22")."""
    settings = attribution.settings_of(params)
    credits, history = night_credits(frames["conversion_paths"], frames["orders"], run_date, params)
    summary = attribution.attribution_rows(credits, frames["marketing_spend"], run_date, settings.window_days)
    shares = attribution.channel_shares(credits)
    logger.info("attributed channel shares of the %d days before %s:\n%s", settings.window_days, run_date,
                shares.round(3).to_string())
    run_id = _log_attribution(resources, run_date, params, summary, shares)
    return {"attribution": str(resources.write_output(run_date, "attribution", summary)),
            "order_credits": str(resources.write_output(run_date, "order_credits", history)),
            "order_attribution": str(resources.write_output(run_date, "order_attribution",
                                                   attribution.order_rows(credits, run_date))),
            "orders": int(credits.loc[credits["model"] == attribution.RECORDED, "journey_id"].nunique()),
            "models": sorted(set(credits["model"])),
            "mlflow_run_id": run_id}


def night_credits(paths: pd.DataFrame, orders: pd.DataFrame, run_date: dt.date,
                  params: RunParams) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Tonight's credits (every model on the window's orders, and the recorded channel beside them; the recorded
    channel alone without touchpoints) and the ``order_credits``: the run's ``attribution_model`` on every order
    of the extract, fitted beside the other models (the same as
    :func:`ml.attribution.nightly.history_credits` of that model, tested)."""
    settings = attribution.settings_of(params)
    recorded = attribution.recorded_credits(orders, run_date, settings.window_days)
    history = attribution.history_credits(paths, orders, run_date, attribution.RECORDED, settings)
    if (paths["position"] >= 0).any():
        window, chosen = attribution.credits_in_window(paths, run_date, settings, params.attribution_model)
        credits = pd.concat([window, recorded], ignore_index=True)
        if chosen is not None:
            history = chosen
    else:
        logger.warning("no touchpoints in the conversion paths for %s (no clickstream?): only the channel the store "
                       "recorded on each order is published", run_date)
        credits = recorded
    return credits, history


#: the acquisition economics step's horizon of the CAC forecast (days)
CAC_HORIZON_DAYS = 28


def acquisition_economics(resources: Resources, run_date: dt.date, frames: dict[str, pd.DataFrame],
                          attributed: dict[str, Any], media: tuple[Any, str] | None,
                          params: RunParams) -> dict[str, Any]:
    """Cohort economics per channel and per campaign (:func:`ml.attribution.economics.channel_economics`,
    with tonight's published CLV when there is one) and the next 28 days' CAC per paid channel from the
    budget ``@champion``'s response curves (:func:`~ml.attribution.economics.cac_forecast`), the forecasts
    whose window has ended scored against what happened; an MLflow run holds the forecast, its backtest and
    a figure. Rows for ``scores.channel_economics`` and ``scores.cac_forecasts`` in the run folder."""
    orders, spend = frames["orders"], frames["marketing_spend"]
    credits = pd.read_parquet(attributed["order_credits"])
    with resources.scores() as conn:
        clv = read_large_frame(conn, "SELECT customer_id, clv FROM scores.customer_scores WHERE run_date = %s "
                                     "AND clv IS NOT NULL", (run_date,))
        past = read_frame(conn, "SELECT * FROM scores.cac_forecasts WHERE run_date = (SELECT max(run_date) FROM "
                                "scores.cac_forecasts WHERE run_date <= %(due)s)",
                          {"due": run_date - dt.timedelta(days=CAC_HORIZON_DAYS)})
    clv = clv if len(clv) else None
    levels = []
    for level, by_campaign in (("channel", False), ("campaign", True)):
        rows = economics.channel_economics(orders, credits, spend, clv, run_date, by_campaign=by_campaign,
                                           clv_horizon_days=params.clv_horizon_days)
        levels.append(rows.assign(level=level, campaign=rows["campaign"].fillna("") if by_campaign else ""))
    cohorts = pd.concat(levels, ignore_index=True).assign(run_date=run_date,
                                                          attribution_model=params.attribution_model)
    forecast, champion = _cac_forecast(media, run_date, orders, spend, credits, params)
    backtest = (economics.cac_backtest(past.rename(columns={"run_date": "origin"}), orders, credits, spend, run_date)
                if len(past) else pd.DataFrame(columns=list(economics.BACKTEST_COLUMNS)))
    run_id = _log_cac_forecast(resources, run_date, params, forecast, backtest, cohorts, champion)
    forecast = forecast.assign(run_date=run_date, attribution_model=params.attribution_model,
                               model_name=budget.MODEL_NAME, model_version=champion or "", mlflow_run_id=run_id)
    return {"channel_economics": str(resources.write_output(run_date, "channel_economics", cohorts)),
            "cac_forecasts": str(resources.write_output(run_date, "cac_forecasts", forecast)),
            "mlflow_run_id": run_id}


def _cac_forecast(media: tuple[Any, str] | None, run_date: dt.date, orders: pd.DataFrame, spend: pd.DataFrame,
                  credits: pd.DataFrame, params: RunParams) -> tuple[pd.DataFrame, str | None]:
    """The CAC forecast from the budget champion's media fit (and its version), or no rows when there is
    none or the store has no media history."""
    empty = pd.DataFrame(columns=list(economics.FORECAST_COLUMNS))
    if media is None:
        return empty, None
    fit, version = media
    try:
        history = media_history(spend, attribution.attributed_orders(orders, credits), run_date, params.lookback_days)
    except ValueError as exc:
        logger.warning("no CAC forecast for %s: %s", run_date, exc)
        return empty, None
    shares = economics.new_customer_shares(orders, credits, run_date)
    forecast = economics.cac_forecast(fit, history, shares, horizon_days=CAC_HORIZON_DAYS, random_state=params.seed)
    return forecast, version


def _log_cac_forecast(resources: Resources, run_date: dt.date, params: RunParams, forecast: pd.DataFrame,
                      backtest: pd.DataFrame, cohorts: pd.DataFrame, champion: str | None) -> str:
    """The CAC forecast's MLflow run: per channel the CAC and its interval, the backtest of the forecasts
    whose window ended (absolute percentage error, interval coverage), the tables and a figure."""
    from ml import plots

    resources.use_tracking()
    with mlflow.start_run(run_name=f"cac_forecast-{run_date}") as run:
        mlflow.set_tags({"revopt.family": "cac_forecast", "revopt.run_date": run_date.isoformat(),
                         "revopt.budget_champion": f"{budget.MODEL_NAME}/{champion}" if champion else "none"})
        mlflow.log_params({"run_date": run_date.isoformat(), "horizon_days": CAC_HORIZON_DAYS,
                           "attribution_model": params.attribution_model, "seed": params.seed})
        numbers = {_metric_name(column, row.channel): float(getattr(row, column))
                   for row in forecast.itertuples(index=False) for column in ("cac", "cac_low", "cac_high")
                   if pd.notna(getattr(row, column))}
        scored = backtest.dropna(subset=["ape"]) if len(backtest) else backtest
        if len(scored):
            numbers.update({"backtest_mape": float(scored["ape"].mean()),
                            "backtest_coverage": float(scored["inside_interval"].dropna().astype(float).mean()),
                            **{_metric_name("backtest_ape", row.channel): float(row.ape)
                               for row in scored.itertuples(index=False)}})
        mlflow.log_metrics({key: value for key, value in numbers.items() if np.isfinite(value)})
        for name, table in (("cac_forecast.json", forecast), ("cac_backtest.json", backtest),
                            ("channel_economics.json", cohorts)):
            mlflow.log_table(table.astype({c: str for c in table.columns if table[c].dtype.kind in "Mm" or
                                           c in ("run_date", "origin")}), name)
        if forecast["cac"].notna().any():
            figure = plots.cac_forecast_figure(forecast, f"CAC over the next {CAC_HORIZON_DAYS} days, {run_date}")
            mlflow.log_figure(figure, "plots/cac_forecast.png")
            plots.close(figure)
        return run.info.run_id


def campaign_analytics(resources: Resources, run_date: dt.date, frames: dict[str, pd.DataFrame],
                       attributed: dict[str, Any], params: RunParams) -> dict[str, Any]:
    """Daily campaign analytics of the last ``campaign_days`` in ClickHouse, per campaign and per value tier
    (:mod:`features.campaigns`), with tonight's ``attribution_model`` crediting the orders, and the campaign
    recommendations (:func:`ml.attribution.campaigns.campaign_recommendations`) from them, tonight's published
    budget allocation and send times. Rows for ``scores.campaign_daily``, ``scores.campaign_segment_daily`` and
    ``scores.campaign_recommendations`` in the run folder; skipped without clickstream."""
    store = resources.events
    if store is None:
        return {"skipped": "no clickstream (REVOPT_CLICKSTREAM off): campaign analytics count sessions and emails"}
    orders, customers = frames["orders"], frames["customers"]
    credits = _credits_by_day(pd.read_parquet(attributed["order_credits"]), orders)
    since = run_date - dt.timedelta(days=params.campaign_days)
    daily = campaigns.campaign_daily_in_store(store, frames["marketing_spend"], credits, since, run_date)
    tiers = campaigns.value_tiers(orders, run_date, customers["customer_id"])
    segments = campaigns.campaign_segment_daily_in_store(store, frames["marketing_spend"], credits, tiers, since,
                                                         run_date)
    with resources.scores() as conn:
        allocations = read_frame(conn, "SELECT * FROM scores.budget_allocations WHERE run_date = %s", (run_date,))
        send_times = read_frame(conn, "SELECT * FROM scores.send_time_recommendations WHERE run_date = %s "
                                      "ORDER BY customer_id, day_type <> 'any', day_type", (run_date,))
    send_hours = campaigns.email_send_hours_in_store(store, customers[["customer_id", "timezone"]],
                                                     run_date - dt.timedelta(days=campaign_rules.WINDOW_DAYS), run_date)
    recommendations = campaign_rules.campaign_recommendations(
        daily, allocations if len(allocations) else None,
        send_times.drop_duplicates("customer_id") if len(send_times) else None, send_hours,
        min_roas=params.campaign_min_roas, horizon_days=params.budget_horizon_days)
    logger.info("campaign analytics for %s: %d campaign-days, %d tier rows, %d recommendations (%s)", run_date,
                len(daily), len(segments), len(recommendations),
                recommendations["recommendation"].value_counts().to_dict() if len(recommendations) else "none")
    model = {"attribution_model": params.attribution_model}
    return {name: str(resources.write_output(run_date, name, table.assign(run_date=run_date, **model)))
            for name, table in (("campaign_daily", daily), ("campaign_segment_daily", segments),
                                ("campaign_recommendations", recommendations))}


def _credits_by_day(credits: pd.DataFrame, orders: pd.DataFrame) -> pd.DataFrame:
    """Order credits (:func:`ml.attribution.nightly.history_credits`) with the order's UTC day and customer, as
    :mod:`features.campaigns` reads them."""
    order = orders.set_index("order_id")
    ids = credits["journey_id"].to_numpy()
    stamps = pd.DatetimeIndex(pd.to_datetime(order["order_ts"].reindex(ids), utc=True))  # no object per order
    return pd.DataFrame({"day": stamps.tz_convert("UTC").tz_localize(None).floor("D"),
                         "channel": credits["channel"].to_numpy(), "campaign": credits["campaign"].to_numpy(),
                         "conversions": credits["credit"].to_numpy(float),
                         "revenue": credits["revenue_credit"].to_numpy(float),
                         "customer_id": order["customer_id"].reindex(ids).to_numpy()})


def _metric_name(*parts: str) -> str:
    """An MLflow metric name from store-given parts (channel names may hold characters MLflow refuses)."""
    return ".".join(re.sub(r"[^\w\-/ ]", "_", str(part)) for part in parts)


def _log_attribution(resources: Resources, run_date: dt.date, params: RunParams, summary: pd.DataFrame,
                     shares: pd.DataFrame) -> str:
    """An MLflow run per night: the settings, each model's channel shares (``share.<model>.<channel>``) and
    ROAS, the comparison figure and the published table, so models can be compared in the UI."""
    from ml import plots

    resources.use_tracking()
    by_channel = summary.groupby(["model", "channel"])[["revenue", "spend"]].sum()
    roas = (by_channel["revenue"] / by_channel["spend"]).where(by_channel["spend"] > 0).dropna()
    with mlflow.start_run(run_name=f"attribution-{run_date}") as run:
        mlflow.set_tags({"revopt.family": "attribution", "revopt.run_date": run_date.isoformat()})
        mlflow.log_params({"run_date": run_date.isoformat(), "window_days": params.attribution_window_days,
                           "lookback_days": params.attribution_lookback_days,
                           "half_life_days": params.attribution_half_life_days, "markov_order": params.markov_order,
                           "attribution_model": params.attribution_model})
        mlflow.log_metrics({**{_metric_name("share", model, channel): float(value)
                               for (model, channel), value in shares.stack().items()},
                            **{_metric_name("roas", model, channel): float(value)
                               for (model, channel), value in roas.items()}})
        figure = plots.attribution_shares_figure(shares, f"channel shares of conversions, {run_date}")
        mlflow.log_figure(figure, "plots/attribution_shares.png")
        plots.close(figure)
        mlflow.log_table(summary.assign(run_date=summary["run_date"].astype(str)), "attribution.json")
        return run.info.run_id
