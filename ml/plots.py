"""Matplotlib figures logged to MLflow as artifacts (headless backend, no global state left behind)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from sklearn.calibration import calibration_curve  # noqa: E402
from sklearn.metrics import precision_recall_curve, roc_curve  # noqa: E402


def feature_importance_figure(importance: pd.Series, title: str, xlabel: str = "mean |contribution| (log-odds)") -> Figure:
    ordered = importance.sort_values()
    fig, ax = plt.subplots(figsize=(7, 0.3 * len(ordered) + 1.5))
    ax.barh(ordered.index, ordered.to_numpy())
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    fig.tight_layout()
    return fig


def roc_pr_figure(y_true: pd.Series, probability: np.ndarray, title: str) -> Figure:
    fpr, tpr, _ = roc_curve(y_true, probability)
    precision, recall, _ = precision_recall_curve(y_true, probability)
    fig, (roc_ax, pr_ax) = plt.subplots(1, 2, figsize=(10, 4.5))
    roc_ax.plot(fpr, tpr)
    roc_ax.plot([0, 1], [0, 1], linestyle="--", color="grey")
    roc_ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC")
    pr_ax.plot(recall, precision)
    pr_ax.axhline(float(np.mean(y_true)), linestyle="--", color="grey")
    pr_ax.set(xlabel="recall", ylabel="precision", title="precision-recall")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def calibration_figure(y_true: pd.Series, raw: np.ndarray, calibrated: np.ndarray, title: str) -> Figure:
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for label, probability in (("raw", raw), ("calibrated (cross-fitted)", calibrated)):
        observed, predicted = calibration_curve(y_true, probability, n_bins=10, strategy="quantile")
        ax.plot(predicted, observed, marker="o", label=label)
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey")
    ax.set(xlabel="mean predicted probability", ylabel="observed rate", title=title)
    ax.legend()
    fig.tight_layout()
    return fig


def lift_figure(y_true: pd.Series, probability: np.ndarray, title: str) -> Figure:
    order = np.argsort(-np.asarray(probability), kind="stable")
    deciles = np.array_split(np.asarray(y_true)[order], 10)
    overall = float(np.mean(y_true))
    lift = [float(np.mean(d)) / overall if overall > 0 and len(d) else np.nan for d in deciles]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.bar(np.arange(1, 11), lift)
    ax.axhline(1.0, linestyle="--", color="grey")
    ax.set(xlabel="decile of predicted score (1 = highest)", ylabel="lift over base rate", title=title)
    ax.set_xticks(np.arange(1, 11))
    fig.tight_layout()
    return fig


def predicted_vs_actual_figure(actual: pd.Series, predicted: dict[str, np.ndarray], title: str) -> Figure:
    fig, axes = plt.subplots(1, len(predicted), figsize=(5 * len(predicted), 4.5), squeeze=False)
    top = float(np.quantile(np.asarray(actual), 0.995)) or 1.0
    for ax, (name, values) in zip(axes[0], predicted.items()):
        ax.scatter(values, actual, s=4, alpha=0.3)
        ax.plot([0, top], [0, top], linestyle="--", color="grey")
        ax.set(xlabel=f"predicted ({name})", ylabel="actual", xlim=(0, top), ylim=(0, top), title=name)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def elasticity_figure(estimates: pd.DataFrame, title: str) -> Figure:
    """Each estimated product's elasticity with its interval, sorted, coloured by category."""
    shown = estimates[estimates["estimated"].astype(bool)].sort_values("elasticity").reset_index(drop=True)
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for category, rows in shown.groupby("category"):
        ax.errorbar(
            rows.index, rows["elasticity"],
            yerr=[rows["elasticity"] - rows["elasticity_low"], rows["elasticity_high"] - rows["elasticity"]],
            fmt="o", markersize=3, linewidth=0.8, label=str(category),
        )
    ax.axhline(-1.0, linestyle="--", color="grey")
    ax.set(xlabel="product (sorted by elasticity)", ylabel="own-price elasticity", title=title)
    if shown["category"].nunique() <= 12:
        ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


def close(fig: Figure) -> None:
    plt.close(fig)


def send_time_figure(priors: pd.DataFrame, recommendations: pd.DataFrame, title: str,
                     quiet_hours: tuple[int, int] | None = None) -> Figure:
    """Left: the prior curve by local hour per segment (all days; open rate, or activity share when
    the store has no email data), quiet hours shaded. Right: how many customers get each recommended
    hour, stacked by the evidence behind it (``signal``)."""
    value = "open_rate" if priors["sends"].sum() > 0 else "activity_share"
    curves = priors[priors["day_type"] == "any"].pivot_table(index="hour", columns="segment", values=value)
    fig, (curve_ax, hist_ax) = plt.subplots(1, 2, figsize=(12, 4.5))
    for segment in curves.columns:
        curve_ax.plot(curves.index, curves[segment], linewidth=2.5 if segment == "(all)" else 1.0,
                      color="black" if segment == "(all)" else None, label=str(segment))
    if quiet_hours is not None:
        start, end = quiet_hours
        spans = [(start, end)] if start < end else [(start, 24), (0, end)]
        for low, high in spans:
            for ax in (curve_ax, hist_ax):
                ax.axvspan(low - 0.5, high - 0.5, color="grey", alpha=0.15)
    curve_ax.set(xlabel="local hour", ylabel=value.replace("_", " "), title="prior by segment (all days)", xlim=(-0.5, 23.5))
    if curves.shape[1] <= 12:
        curve_ax.legend(fontsize=7, ncol=2)
    counts = recommendations.groupby(["best_hour", "signal"]).size().unstack(fill_value=0).reindex(range(24), fill_value=0)
    bottom = np.zeros(24)
    for signal in counts.columns:
        hist_ax.bar(counts.index, counts[signal], bottom=bottom, label=str(signal))
        bottom += counts[signal].to_numpy()
    hist_ax.set(xlabel="recommended local hour", ylabel="customers x day types", title="recommended hours", xlim=(-0.5, 23.5))
    hist_ax.legend(title="signal", fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def attribution_shares_figure(shares: pd.DataFrame, title: str) -> Figure:
    """Each attribution model's share of the conversions per channel (``shares``: model x channel), grouped
    bars per channel, so where the models disagree is visible at a glance."""
    return _grouped_bars(shares, title, "share of conversions", rotate=True)


def cac_forecast_figure(forecast: pd.DataFrame, title: str) -> Figure:
    """The forecast CAC per channel with its interval (channels without a number are left out)."""
    shown = forecast.dropna(subset=["cac"])
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(shown) + 1.8))
    y = np.arange(len(shown))
    cac = shown["cac"].to_numpy(float)
    low = np.nan_to_num(shown["cac_low"].to_numpy(float), nan=cac)
    high = np.nan_to_num(shown["cac_high"].to_numpy(float), nan=cac)
    ax.errorbar(cac, y, xerr=[cac - low, high - cac], fmt="o", capsize=4)
    ax.set_yticks(y, shown["channel"].astype(str).tolist())
    ax.set_xlabel("forecast CAC (spend per new customer)")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def grouped_metrics_figure(table: pd.DataFrame, title: str) -> Figure:
    """Metrics of several models side by side (``table``: model x metric), grouped bars per metric: e.g. the
    recommender against popularity and item-kNN on the test window."""
    return _grouped_bars(table, title, "", rotate=False)


def _grouped_bars(table: pd.DataFrame, title: str, ylabel: str, rotate: bool) -> Figure:
    """One bar per row of ``table`` in a group per column."""
    groups = list(table.columns)
    fig, ax = plt.subplots(figsize=(max(7, 1.1 * len(groups) + 2), 4.5))
    width = 0.8 / max(len(table), 1)
    x = np.arange(len(groups))
    for i, (name, row) in enumerate(table.iterrows()):
        ax.bar(x + (i - (len(table) - 1) / 2) * width, row.to_numpy(float), width, label=str(name))
    if rotate:
        ax.set_xticks(x, groups, rotation=30, ha="right")
    else:
        ax.set_xticks(x, groups)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


def qini_figure(curves: dict[str, tuple[np.ndarray, np.ndarray]], title: str) -> Figure:
    """Qini curves: for each ranking (name -> (share of offers targeted, incremental outcomes)), the
    incremental outcomes gained by offering its top share, against the random-targeting diagonal."""
    fig, ax = plt.subplots(figsize=(6, 4.5))
    end = 0.0
    for name, (share, gain) in curves.items():
        ax.plot(share, gain, label=name)
        end = float(gain[-1])
    ax.plot([0, 1], [0, end], linestyle="--", color="grey", label="random")
    ax.set_xlabel("share of offers, highest predicted first")
    ax.set_ylabel("incremental orders (treated - scaled control)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def score_distribution_figure(edges: np.ndarray, counts: dict[str, np.ndarray], title: str, xlabel: str) -> Figure:
    """Histograms of one score for several run dates overlaid (``counts``: label -> count per bin of ``edges``),
    each as its share of the customers scored that night so nights of different sizes compare."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    widths = np.diff(edges)
    for label, values in counts.items():
        values = np.asarray(values, dtype=float)
        shares = values / values.sum() if values.sum() > 0 else values
        ax.bar(edges[:-1], shares, width=widths, align="edge", alpha=0.5, label=label)
    ax.set(xlabel=xlabel, ylabel="share of customers", title=title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def price_moves_figure(change: pd.Series, title: str, max_change: float | None = None) -> Figure:
    """The recommended price change per product (% of the current price), the run's max change per run dashed."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    values = 100 * change.to_numpy(float)
    ax.hist(values, bins=min(40, max(5, len(values) // 5)), color="tab:blue")
    if max_change is not None:
        for bound in (-100 * max_change, 100 * max_change):
            ax.axvline(bound, linestyle="--", color="grey")
    ax.set(xlabel="recommended vs current price (%)", ylabel="products", title=title)
    fig.tight_layout()
    return fig


def hour_counts_figure(counts: dict[str, pd.Series], title: str, quiet_hours: tuple[int, int] | None = None,
                       default_hour: int | None = None) -> Figure:
    """How many recommendations name each local hour, per run date (``counts``: label -> count by hour 0..23),
    quiet hours shaded and the default hour dotted."""
    fig, ax = plt.subplots(figsize=(7, 3.6))
    width = 0.8 / max(len(counts), 1)
    for i, (label, series) in enumerate(counts.items()):
        hours = series.reindex(range(24), fill_value=0)
        ax.bar(np.arange(24) + (i - (len(counts) - 1) / 2) * width, hours.to_numpy(float), width, label=label)
    if quiet_hours is not None:
        start, end = quiet_hours
        for low, high in ([(start, end)] if start < end else [(start, 24), (0, end)]):
            ax.axvspan(low - 0.5, high - 0.5, color="grey", alpha=0.15)
    if default_hour is not None:
        ax.axvline(default_hour, linestyle=":", color="black", label="default hour")
    ax.set(xlabel="recommended local hour", ylabel="recommendations", title=title, xlim=(-0.5, 23.5))
    ax.set_xticks(range(0, 24, 2))
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def budget_shift_figure(spend: pd.DataFrame, title: str) -> Figure:
    """Daily spend per channel (``spend``: one row per series, e.g. current / recommended yesterday / today;
    one column per channel), grouped bars per channel."""
    return _grouped_bars(spend, title, "daily spend", rotate=True)
