"""Matplotlib figures logged to MLflow as artifacts (headless backend, no global state left behind)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from sklearn.metrics import precision_recall_curve, roc_curve  # noqa: E402


def feature_importance_figure(importance: pd.Series, title: str) -> Figure:
    ordered = importance.sort_values()
    fig, ax = plt.subplots(figsize=(7, 0.3 * len(ordered) + 1.5))
    ax.barh(ordered.index, ordered.to_numpy())
    ax.set_xlabel("total gain")
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


def close(fig: Figure) -> None:
    plt.close(fig)
