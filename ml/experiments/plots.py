"""The experiment's plot: the primary metric's difference with the control, look by look, with its
always-valid and fixed-horizon intervals."""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure

from ml.plots import plt  # pyplot with the Agg backend selected


def cumulative_lift_figure(history: pd.DataFrame, control: str, title: str) -> Figure:
    """``history``: scores.experiment_results rows of one metric (every look so far)."""
    fig, ax = plt.subplots(figsize=(8, 4.5))
    treated = history[history["variant"] != control].sort_values("run_date")
    for variant, rows in treated.groupby("variant", sort=True):
        days = pd.to_datetime(rows["run_date"])
        line = ax.plot(days, rows["estimate"], marker="o", label=f"{variant} - {control}")[0]
        ax.fill_between(days, rows["cs_low"].astype(float), rows["cs_high"].astype(float), color=line.get_color(),
                        alpha=0.15, label=f"{variant}: always-valid interval")
        ax.plot(days, rows["ci_low"], color=line.get_color(), linestyle=":", linewidth=1)
        ax.plot(days, rows["ci_high"], color=line.get_color(), linestyle=":", linewidth=1,
                label=f"{variant}: fixed-horizon interval (not valid when peeking)")
    ax.axhline(0.0, color="grey", linewidth=1)
    ax.set_xlabel("run date (look)")
    ax.set_ylabel("difference with the control (per unit)")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="best")
    fig.autofmt_xdate()
    fig.tight_layout()
    return fig
