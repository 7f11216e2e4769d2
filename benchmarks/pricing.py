"""Benchmark: the pricing family (:mod:`ml.families.pricing`) on synthetic stores with known
elasticities and on the UCI Online Retail data set.

1. **synthetic**: :func:`revopt.sample_data.synth.generate_store`; truth is ``truth.products`` (elasticity,
   reference price). For each store: elasticity MAE and bias of the estimator (local level, the
   default, and the DML variant) against naive log-log OLS, 90 % interval coverage, and the
   realised profit of the recommended prices as a share of the oracle's: the oracle is the same
   optimiser with the same guardrails fed the true elasticities (interval of zero width, so it
   never holds a price). Realised profit is evaluated under the *true* constant-elasticity curve
   anchored where the optimiser's curve is: ``q0 (p / p0) ** e_true (p - cost)`` with p0 the
   current price and q0 the estimated expected daily units at p0 (the true level of demand on the
   run date, ``exp(u_j)``, is unknown to both and scales every price of a product alike, so only the
   weighting of products in the total depends on q0). Also shown: the same optimiser fed naive OLS
   elasticities, and keeping every current price.
2. **uci**: UCI Online Retail (``../shared/data/online_retail.csv.gz`` beside the repository) mapped onto the extract
   frames (see :func:`uci_frames`): how many products have enough price variation, the elasticity
   distribution with intervals, a few examples, and how many get a confident recommendation.

Prints markdown tables, with the command, date and wall times::

    .venv/bin/python benchmarks/pricing.py                       # both sections
    .venv/bin/python benchmarks/pricing.py --section uci --cost-share 0.6
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import logging
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from features.demand import demand_history
from ml.families.pricing import (
    POISSON_DEVIANCE,
    ElasticityConfig,
    PricingGuardrails,
    baseline_on_test_window,
    demand_search_space,
    estimate_elasticities,
    evaluate_on_test_window,
    naive_loglog_ols,
    recommend_prices,
    split_test_window,
)
from ml.tuning import Budget, search
from revopt.sample_data.importer import default_uci_path
from revopt.sample_data.synth import generate_store, pricing_extract

logger = logging.getLogger("benchmarks.pricing")

SYNTHETIC_START = dt.date(2024, 1, 1)
# ../shared/data beside the repository, as on the project machines and in CI.
UCI_PATH = default_uci_path()
UCI_RUN_DATE = dt.date(2011, 12, 10)  # the day after the last invoice
GUARDRAIL_SETS = {
    "default (+/-10 %, observed range +/-5 %)": PricingGuardrails(),
    "+/-20 %, .99 endings": PricingGuardrails(max_change=0.2, price_ending=0.99),
    "+/-30 %, no observed-range limit": PricingGuardrails(max_change=0.3, observed_range_slack=None),
}


# --- frames -------------------------------------------------------------------------------------


def uci_frames(path: Path, cost_share: float, category: str) -> tuple[dict[str, pd.DataFrame], dict[str, int]]:
    """UCI Online Retail as the pricing extract.

    - cancellations (InvoiceNo "C...") and rows with Quantity <= 0 or UnitPrice <= 0 are dropped, and
      so are non-product StockCodes (postage, manual, fees: codes not starting with a digit);
    - product = StockCode; day = the InvoiceDate's date; units = sum of Quantity;
    - the day's posted price (``list_price``) = the most common UnitPrice among the product's lines
      that day (ties: the higher). UnitPrice falls with the quantity bought (wholesale tiers), and
      a daily revenue / units would read a big order as a price cut that *caused* it, so revenue
      is taken as units x posted price and avg_discount is 0: the estimated response is that of
      total demand to the posted price;
    - category = the first word of the most common Description (``category="word"``) or one
      category for all (``"single"``); cost = ``cost_share`` x the product's median posted price
      (no cost data in the set); current price = the last posted price.
    """
    raw = pd.read_csv(path, dtype={"InvoiceNo": str, "StockCode": str, "Description": str})
    sizes = {"rows": len(raw)}
    keep = (~raw["InvoiceNo"].str.startswith("C")) & (raw["Quantity"] > 0) & (raw["UnitPrice"] > 0)
    keep &= raw["StockCode"].str.match(r"^\d")
    rows = raw[keep].copy()
    sizes["rows_kept"] = len(rows)
    rows["day"] = pd.to_datetime(rows["InvoiceDate"], format="%Y-%m-%d %H:%M:%S").dt.floor("D")
    codes, stock_codes = pd.factorize(rows["StockCode"], sort=True)
    rows["product_id"] = codes.astype("int64") + 1
    counts = rows.groupby(["product_id", "day", "UnitPrice"]).size().rename("n").reset_index()
    posted = counts.sort_values(["product_id", "day", "n", "UnitPrice"]).groupby(["product_id", "day"]).tail(1)
    daily = rows.groupby(["product_id", "day"], as_index=False)["Quantity"].sum().rename(columns={"Quantity": "units"})
    daily = daily.merge(posted[["product_id", "day", "UnitPrice"]].rename(columns={"UnitPrice": "list_price"}), on=["product_id", "day"])
    daily["revenue"] = daily["units"] * daily["list_price"]
    daily["avg_discount"] = 0.0
    description = rows.groupby("product_id")["Description"].agg(lambda s: s.value_counts().index[0] if s.notna().any() else "")
    if category == "word":
        names = description.fillna("").str.strip().str.split().str[0].fillna("OTHER").str.upper()
    else:
        names = pd.Series("all", index=description.index)
    last = daily.sort_values("day").groupby("product_id").tail(1).set_index("product_id")["list_price"]
    products = pd.DataFrame({
        "product_id": description.index.to_numpy(dtype="int64"),
        "category": names.reindex(description.index).to_numpy(dtype=object),
        "cost": (cost_share * daily.groupby("product_id")["list_price"].median()).reindex(description.index).to_numpy(),
        "current_price": last.reindex(description.index).to_numpy(),
    })
    products["stock_code"] = stock_codes[products["product_id"] - 1]
    products["description"] = description.reindex(products["product_id"]).to_numpy()
    day_totals = rows.groupby("day").size().rename("lines").reset_index()
    sizes["products"] = len(products)
    sales = daily[["product_id", "day", "units", "revenue", "list_price", "avg_discount"]].astype({"units": "int64"})
    return {"sales": sales, "products": products, "day_totals": day_totals}, sizes


# --- synthetic ----------------------------------------------------------------------------------


def _mae(estimate: pd.Series, truth: pd.Series) -> tuple[float, float]:
    error = (estimate - truth.reindex(estimate.index)).dropna()
    return float(error.abs().mean()), float(error.mean())


def _true_profit(recommended: pd.DataFrame, estimates: pd.DataFrame, products: pd.DataFrame, truth: pd.Series) -> float:
    frame = recommended.merge(estimates[["product_id", "expected_daily_units", "current_list_price"]], on="product_id", how="left")
    frame = frame.merge(products[["product_id", "cost"]], on="product_id")
    e = truth.reindex(frame["product_id"]).to_numpy()
    # the optimiser's anchor: q0 at the current price (re-anchored when the list price moved on the run date)
    q0 = frame["expected_daily_units"].fillna(0.0) * (frame["current_price"] / frame["current_list_price"].fillna(frame["current_price"])) ** e
    price = frame["recommended_price"]
    return float((q0 * (price / frame["current_price"]) ** e * (price - frame["cost"])).sum())


def run_synthetic(n_customers: int, days: int, seed: int, trials: int, dml: bool) -> dict[str, object]:
    began = time.perf_counter()
    store = generate_store(n_customers, days, SYNTHETIC_START, seed=seed)
    run_date = pd.Timestamp(SYNTHETIC_START) + pd.Timedelta(days=days)
    frames = pricing_extract(store, run_date)
    truth = store.truth["products"].set_index("product_id")["elasticity"]
    t0 = time.perf_counter()
    panel = demand_history(frames["sales"], frames["products"], frames["day_totals"], run_date, days,
                           list_prices=frames["list_prices"])
    seconds = {"generate": t0 - began, "panel": time.perf_counter() - t0}
    result = {"store": f"{n_customers:,} x {days}", "seed": seed, "products": len(frames["products"]),
              "units_per_product_day": float(panel["units"].mean())}
    naive = naive_loglog_ols(panel).set_index("product_id")
    result["naive"] = _mae(naive["elasticity"], truth)

    def scored(name: str, config: ElasticityConfig) -> pd.DataFrame:
        t = time.perf_counter()
        est = estimate_elasticities(panel, config)
        seconds[name] = time.perf_counter() - t
        p = est.products.set_index("product_id")
        t_ = truth.reindex(p.index)
        ok = p["estimated"]
        result[name] = {
            "mae": _mae(p["elasticity"], truth), "raw_mae": _mae(p["raw_elasticity"], truth),
            "coverage": float(((p["elasticity_low"] <= t_) & (t_ <= p["elasticity_high"]))[ok].mean()),
            "raw_coverage": float((((p["raw_elasticity"] - t_).abs() <= 1.645 * p["raw_se"]))[ok].mean()),
            "width": float((p["elasticity_high"] - p["elasticity_low"])[ok].median()),
            "estimated": int(ok.sum()), "tau": est.params["tau"], "level_sd": est.params["level_sd"],
        }
        return est.products

    ours = scored("local_level", ElasticityConfig())
    t = time.perf_counter()
    tuned = _tune_before_test_window(panel, trials)
    seconds["tune"] = time.perf_counter() - t
    tuned_products = scored("tuned", tuned.config)
    result["tuning"] = {"level_sd": tuned.config.level_sd, "valid": tuned.value, "valid_default": tuned.default_value,
                        **_test_window_deviances(panel, tuned.config)}
    dml_products = scored("dml", ElasticityConfig(method="dml")) if dml else None
    if dml:
        result["dml_test"] = evaluate_on_test_window(panel, ElasticityConfig(method="dml"))[0].value(POISSON_DEVIANCE)

    e_true = truth.reindex(ours["product_id"]).to_numpy()
    oracle = ours.assign(elasticity=e_true, elasticity_low=e_true, elasticity_high=e_true, has_price_variation=True,
                         n_days=10**6)
    naive_e = naive.reindex(ours["product_id"])
    naive_est = ours.assign(elasticity=naive_e["elasticity"].to_numpy(),
                            elasticity_low=(naive_e["elasticity"] - 1.645 * naive_e["se"]).to_numpy(),
                            elasticity_high=(naive_e["elasticity"] + 1.645 * naive_e["se"]).to_numpy())
    profit = {}
    for label, guardrails in GUARDRAIL_SETS.items():
        best = _true_profit(recommend_prices(oracle, frames["products"], guardrails), ours, frames["products"], truth)
        row = {}
        candidates = {"ours": ours, "tuned": tuned_products, "naive OLS": naive_est, "dml": dml_products}
        for name, est in candidates.items():
            if est is None:
                continue
            rec = recommend_prices(est, frames["products"], guardrails)
            row[name] = _true_profit(rec, ours, frames["products"], truth) / best
            if name == "ours":
                row["confident"] = float((rec["confidence"] == "high").mean())
        hold = recommend_prices(ours, frames["products"], guardrails).assign(recommended_price=lambda f: f["current_price"])
        row["keep current"] = _true_profit(hold, ours, frames["products"], truth) / best
        row["ours, never hold"] = _true_profit(
            recommend_prices(ours, frames["products"], dataclasses.replace(guardrails, max_interval_width=1e9, min_days=0)),
            ours, frames["products"], truth) / best
        profit[label] = row
    result["profit"] = profit
    result["seconds"] = seconds
    result["wall"] = time.perf_counter() - began
    return result


def _tune_before_test_window(panel: pd.DataFrame, trials: int):
    """The family's search, as training runs it: on the panel before the test window only."""
    before, _ = split_test_window(panel)
    return search(demand_search_space(before, ElasticityConfig()), Budget(trials, 120, ElasticityConfig().random_state))


def _test_window_deviances(panel: pd.DataFrame, tuned: ElasticityConfig) -> dict[str, float]:
    """Test-window deviances (fitted on the days before it): the default config, the tuned one, the
    tuned one without price response, and the no-price-response baseline."""
    default = evaluate_on_test_window(panel, ElasticityConfig())[0]
    chosen, no_price = evaluate_on_test_window(panel, tuned)
    baseline = baseline_on_test_window(panel)
    return {name: evaluation.value(POISSON_DEVIANCE) for name, evaluation in
            {"default": default, "tuned": chosen, "no_price": no_price, "baseline": baseline}.items()}


def print_synthetic(results: list[dict[str, object]]) -> None:
    print("\n### Elasticity recovery (truth: truth.products.elasticity)\n")
    print("| store (customers x days) | seed | products | units / product-day | naive OLS MAE (bias) | ours MAE (bias) | ours raw MAE | 90 % coverage (raw) | median width | tau | level_sd | tuned level_sd: MAE | DML MAE (bias), coverage |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        ours, tuned = r["local_level"], r["tuned"]
        dml = r.get("dml")
        dml_text = f"{dml['mae'][0]:.3f} ({dml['mae'][1]:+.3f}), {dml['coverage']:.2f}" if dml else "-"
        print(f"| {r['store']} | {r['seed']} | {r['products']} | {r['units_per_product_day']:.1f} | "
              f"{r['naive'][0]:.3f} ({r['naive'][1]:+.3f}) | {ours['mae'][0]:.3f} ({ours['mae'][1]:+.3f}) | "
              f"{ours['raw_mae'][0]:.3f} | {ours['coverage']:.2f} ({ours['raw_coverage']:.2f}) | {ours['width']:.2f} | "
              f"{ours['tau']:.2f} | {ours['level_sd']:.2f} | {tuned['level_sd']:.3f}: {tuned['mae'][0]:.3f} | {dml_text} |")
    print("\n### Realised profit as a share of the oracle's (same guardrails, true elasticities)\n")
    print("| store | seed | guardrails | ours | confident share | ours, never hold | tuned | DML | naive OLS | keep current |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        for label, row in r["profit"].items():
            dml = f"{row['dml']:.4f}" if "dml" in row else "-"
            print(f"| {r['store']} | {r['seed']} | {label} | **{row['ours']:.4f}** | {row['confident']:.2f} | "
                  f"{row['ours, never hold']:.4f} | {row['tuned']:.4f} | {dml} | {row['naive OLS']:.4f} | {row['keep current']:.4f} |")
    print("\n### Test window (last 28 days; tuning saw only the days before), mean Poisson deviance per product-day, "
          "and wall times\n")
    print("| store | seed | local level (ML level_sd) | tuned (its validation value) | tuned, no price effect | "
          "no-price-response baseline | DML | seconds: generate / panel / estimate / tune / DML | total |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        t, s = r["tuning"], r["seconds"]
        dml = f"{r['dml_test']:.3f}" if "dml_test" in r else "-"
        print(f"| {r['store']} | {r['seed']} | {t['default']:.3f} | {t['tuned']:.3f} ({t['valid']:.3f}) | {t['no_price']:.3f} | "
              f"{t['baseline']:.3f} | {dml} | {s['generate']:.1f} / {s['panel']:.1f} / {s['local_level']:.1f} / "
              f"{s['tune']:.1f} / {s.get('dml', float('nan')):.1f} | {r['wall']:.1f} |")


# --- UCI ----------------------------------------------------------------------------------------


def run_uci(cost_share: float, category: str, trials: int) -> None:
    began = time.perf_counter()
    frames, sizes = uci_frames(UCI_PATH, cost_share, category)
    run_date = pd.Timestamp(UCI_RUN_DATE)
    panel = demand_history(frames["sales"], frames["products"], frames["day_totals"], run_date, 365)
    t = time.perf_counter()
    result = estimate_elasticities(panel)
    estimate_seconds = time.perf_counter() - t
    t = time.perf_counter()
    tuned = _tune_before_test_window(panel, trials)
    tune_seconds = time.perf_counter() - t
    test = _test_window_deviances(panel, tuned.config)
    est = result.products
    naive = naive_loglog_ols(panel).set_index("product_id")["elasticity"]
    products = frames["products"][frames["products"]["product_id"].isin(est["product_id"])]
    rec = recommend_prices(est, products[["product_id", "cost", "current_price"]], PricingGuardrails())
    strict = recommend_prices(est, products[["product_id", "cost", "current_price"]],
                              PricingGuardrails(act_when_direction_certain=False))
    wall = time.perf_counter() - began
    varied = est["has_price_variation"]
    ok = est["estimated"]
    print(f"\nUCI Online Retail: {sizes['rows']:,} rows, {sizes['rows_kept']:,} kept (no cancellations, positive quantity and price, "
          f"product stock codes), {sizes['products']:,} products; run date {UCI_RUN_DATE}, 365-day lookback, "
          f"cost = {cost_share:.0%} of median posted price, categories: {category} ({result.categories.shape[0]} groups)\n")
    print("| products in the window | with price variation | estimated | confident recommendations | of which price changes | confident, width rule only |")
    print("|---|---|---|---|---|---|")
    changed = (rec["confidence"] == "high") & (rec["recommended_price"] != rec["current_price"])
    print(f"| {len(est):,} | {int(varied.sum()):,} | {int(ok.sum()):,} | {int((rec['confidence'] == 'high').sum()):,} | "
          f"{int(changed.sum()):,} | {int((strict['confidence'] == 'high').sum()):,} |")
    print("\nHold reasons:\n")
    reasons = rec.loc[rec["confidence"] == "low", "reason"].str.split(";").str[0].str.replace(r" \(.*", "", regex=True).value_counts()
    for text, n in reasons.items():
        print(f"- {text}: {n:,}")
    quant = [0.1, 0.25, 0.5, 0.75, 0.9]
    e = est.loc[ok, "elasticity"]
    print("\n| quantity (estimated products) | p10 | p25 | median | p75 | p90 |")
    print("|---|---|---|---|---|---|")
    for label, values in {
        "elasticity (posterior mean)": e,
        "90 % interval width": (est["elasticity_high"] - est["elasticity_low"])[ok],
        "raw estimate": est.loc[ok, "raw_elasticity"],
        "raw se": est.loc[ok, "raw_se"],
        "naive OLS, same products": naive.reindex(est.loc[ok, "product_id"]),
        "std of log price": est.loc[ok, "log_price_std"],
    }.items():
        q = values.quantile(quant).to_numpy()
        print(f"| {label} | " + " | ".join(f"{v:.2f}" for v in q) + " |")
    print(f"\nShare of estimated products whose 90 % interval lies below -1 (elastic): {(est.loc[ok, 'elasticity_high'] < -1).mean():.2f}; "
          f"above -1: {(est.loc[ok, 'elasticity_low'] > -1).mean():.2f}; tau = {result.params['tau']:.2f}, "
          f"level_sd = {result.params['level_sd']}, tuned level_sd = {tuned.config.level_sd or 'unchanged'} "
          f"(validation deviance {tuned.default_value:.3f} -> {tuned.value:.3f}; test window: default {test['default']:.3f}, "
          f"tuned {test['tuned']:.3f}, tuned without price response {test['no_price']:.3f}, no-price-response baseline "
          f"{test['baseline']:.3f})")
    top = est[ok].sort_values("units", ascending=False).head(8).merge(products[["product_id", "stock_code", "description"]], on="product_id")
    top = top.merge(rec[["product_id", "current_price", "recommended_price", "confidence"]], on="product_id")
    print("\nBest sellers among the estimated products:\n")
    print("| stock code | description | units | std log price | elasticity [90 % interval] | raw (se) | naive OLS | price now -> recommended |")
    print("|---|---|---|---|---|---|---|---|")
    for _, row in top.iterrows():
        print(f"| {row['stock_code']} | {row['description']} | {row['units']:,} | {row['log_price_std']:.2f} | "
              f"{row['elasticity']:.2f} [{row['elasticity_low']:.2f}, {row['elasticity_high']:.2f}] | "
              f"{row['raw_elasticity']:.2f} ({row['raw_se']:.2f}) | {naive.get(row['product_id'], np.nan):.2f} | "
              f"{row['current_price']:.2f} -> {row['recommended_price']:.2f} ({row['confidence']}) |")
    print(f"\nUCI wall time {wall:.1f} s (estimate {estimate_seconds:.1f} s, tuning {trials} trials {tune_seconds:.1f} s)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--section", choices=("all", "synthetic", "uci"), default="all")
    parser.add_argument("--trials", type=int, default=12, help="Optuna trials of the tuning (before the test window)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--cost-share", type=float, default=0.6, help="UCI cost as a share of the median posted price")
    parser.add_argument("--category", choices=("word", "single"), default="word")
    parser.add_argument("--no-dml", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    began = time.perf_counter()
    print(f"command: `{' '.join(shlex.quote(a) for a in ['.venv/bin/python', 'benchmarks/pricing.py', *(argv if argv is not None else sys.argv[1:])])}`"
          f"  date: {dt.date.today()}")
    if args.section in ("all", "synthetic"):
        results = []
        for n_customers, days in ((3000, 300), (20_000, 365), (100_000, 365)):
            for seed in args.seeds if n_customers < 100_000 else args.seeds[:1]:
                results.append(run_synthetic(n_customers, days, seed, args.trials, dml=not args.no_dml))
        print_synthetic(results)
    if args.section in ("all", "uci"):
        run_uci(args.cost_share, args.category, args.trials)
    print(f"\ntotal wall time {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
