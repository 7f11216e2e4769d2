"""The budget family's figure: each channel's response curve with its interval and the allocation's
current and recommended spend (logged to MLflow by training; drawn headless by :mod:`ml.plots`)."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from ml.families.budget.estimator import MediaFit
from ml.families.budget.optimiser import BudgetAllocation, response_curves
from ml.plots import plt


def response_curves_figure(fit: MediaFit, allocation: BudgetAllocation, title: str) -> Figure:
    """Per channel: expected incremental revenue over the allocation's horizon against daily spend,
    with the bootstrap band, and markers at the current and the recommended spend.

    ``fit`` is a :class:`ml.families.budget.MediaFit`, ``allocation`` a :class:`ml.families.budget.BudgetAllocation`
    made from it; channels the allocation held (not estimated) get a panel with the reason.
    """
    rows = allocation.table.reset_index(drop=True)
    n = max(len(rows), 1)
    ncols = min(n, 2)
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.5 * ncols, 3.8 * nrows), squeeze=False)
    known = fit.channels.set_index("channel")
    for ax, (_, row) in zip(axes.ravel(), rows.iterrows()):
        channel = row["channel"]
        if row["binding_constraint"] == "excluded" or channel not in known.index or not bool(known.loc[channel, "fitted"]):
            ax.text(0.5, 0.5, f"{channel}: not optimised\n{row['reason']}", ha="center", va="center", wrap=True, fontsize=8)
            ax.set_axis_off()
            continue
        top = max(2.0 * max(row["current_spend"], row["recommended_spend"]), 1.5 * float(known.loc[channel, "half_saturation_spend"]))
        grid = np.linspace(0.0, top, 121)
        curve = response_curves(fit, {channel: grid}, horizon_days=allocation.horizon_days)
        curve = curve[curve["channel"] == channel]
        ax.fill_between(curve["spend"], curve["revenue_low"], curve["revenue_high"], alpha=0.25, label="interval")
        ax.plot(curve["spend"], curve["revenue"], label="expected")
        ax.plot(row["current_spend"], row["expected_revenue_current"], "o", color="grey", label="current")
        ax.plot(row["recommended_spend"], row["expected_revenue_recommended"], "*", markersize=12, color="C3",
                label="recommended")
        ax.set(xlabel="daily spend", ylabel=f"incremental revenue over {allocation.horizon_days} days",
               title=f"{channel} ({row['binding_constraint']})")
        ax.legend(fontsize=7)
    for ax in axes.ravel()[len(rows):]:
        ax.set_axis_off()
    fig.suptitle(title)
    fig.tight_layout()
    return fig
