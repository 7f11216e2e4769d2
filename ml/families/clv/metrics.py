"""Holdout metrics of a spend forecast and the value tiers published with it."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

_TOP_SHARE = 0.10


def evaluate_clv(actual: pd.Series, predicted: np.ndarray) -> dict[str, float]:
    """Holdout metrics for a spend forecast.

    - ``mae``, ``rmse``: per customer, in currency;
    - ``spearman``: rank correlation of predicted and actual spend (NaN if either is constant);
    - ``top_decile_capture``: share of the total actual spend that sits in the predicted top 10 %
      (:func:`value_tier` ordering); a perfect ranking reaches the share of the actual top 10 %,
      a random one about 0.10 (NaN if nobody spent);
    - ``high_value_precision``: share of the predicted top 10 % who are actually top 10 %, i.e.
      whose actual spend is positive and at least the k-th largest actual spend, k = the size of
      the predicted top 10 % (customers tied at that threshold all count as top);
    - ``mean_actual``, ``mean_predicted``: calibration in the large.
    """
    y = np.asarray(actual, dtype="float64")
    y_hat = np.asarray(predicted, dtype="float64")
    if y.shape != y_hat.shape or y.ndim != 1 or len(y) == 0:
        raise ValueError(f"actual and predicted must be non-empty 1-d of the same length, got {y.shape} and {y_hat.shape}")
    predicted_top = _top_mask(y_hat, _TOP_SHARE)
    k = int(predicted_top.sum())
    threshold = np.sort(y)[::-1][k - 1]
    actual_top = (y >= threshold) & (y > 0)
    total = y.sum()
    constant = np.ptp(y) == 0 or np.ptp(y_hat) == 0
    return {
        "mae": float(np.mean(np.abs(y - y_hat))),
        "rmse": float(np.sqrt(np.mean((y - y_hat) ** 2))),
        "spearman": float("nan") if constant else float(spearmanr(y, y_hat).statistic),
        "top_decile_capture": float(y[predicted_top].sum() / total) if total > 0 else float("nan"),
        "high_value_precision": float((predicted_top & actual_top).sum() / k),
        "mean_actual": float(y.mean()),
        "mean_predicted": float(y_hat.mean()),
    }


def value_tier(predicted: np.ndarray, top_share: float = 0.10, mid_share: float = 0.40) -> np.ndarray:
    """'high' for the top ``top_share`` of predicted CLV, 'medium' for the next ``mid_share``, 'low'
    for the rest. Counts are ``round(share x n)``; ties are broken by position (earlier rows rank
    higher), so the same input always gives the same tiers."""
    values = np.asarray(predicted, dtype="float64")
    if values.ndim != 1 or np.isnan(values).any():
        raise ValueError("value_tier needs a 1-d array without NaN")
    if not (0 <= top_share and 0 <= mid_share and top_share + mid_share <= 1):
        raise ValueError(f"need 0 <= top_share, mid_share and top_share + mid_share <= 1, got {top_share}, {mid_share}")
    n = len(values)
    rank = np.empty(n, dtype="int64")
    rank[np.argsort(-values, kind="stable")] = np.arange(n)
    n_high = int(round(top_share * n))
    n_high_or_mid = int(round((top_share + mid_share) * n))
    return np.where(rank < n_high, "high", np.where(rank < n_high_or_mid, "medium", "low"))


def _top_mask(values: np.ndarray, share: float) -> np.ndarray:
    """The top ``round(share x n)`` (at least one) rows by value, ties broken by position."""
    n = len(values)
    k = max(1, int(round(share * n)))
    mask = np.zeros(n, dtype=bool)
    mask[np.argsort(-values, kind="stable")[:k]] = True
    return mask
