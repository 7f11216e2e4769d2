"""Honest evaluation: a model's predictions on the test window, and the paired comparisons the
promotion gate makes there.

Every family splits its history three ways in time (docs/customer_models.md, "Evaluation"):
selection (family, hyperparameters, early stopping, calibration method) sees only data before the
**test window**; the candidate, the champion's spec and the family's naive baseline are then all fitted
on the same data and scored on the same test rows. Each scoring is an :class:`Evaluation`: the test
rows' outcomes and one model's predictions for them. Two evaluations of the same rows are compared
*paired* (:func:`compare`): DeLong's test for ROC AUC, a paired bootstrap of the metric difference for
everything else (resampling whole groups, e.g. products or weeks, where rows are not independent).

The gate (:mod:`ml.gate`) promotes on these comparisons, never on the best-of-N value a tuning loop
reports for its own validation data.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats
from sklearn.metrics import roc_auc_score

#: Resamples of the paired bootstrap: enough for a stable 95 % interval and p-values down to ~0.001.
BOOTSTRAP_RESAMPLES = 1000
#: Two-sided level of the reported interval of a difference.
INTERVAL_LEVEL = 0.95

Score = Callable[[np.ndarray, np.ndarray], float]
#: A metric that is a ratio of sums over the test rows: ``terms(y, predicted)`` returns each row's numerator and
#: denominator, and the score of any rows is ``numerator[rows].sum() / denominator[rows].sum()`` (undefined where
#: that denominator is not positive), or a function of it (:attr:`Metric.finish`: RMSE is the root of a mean); e.g.
#: a mean (denominators 1) or send time's log loss per send. The paired bootstrap sums them per resample, or per
#: group then per resample, instead of scoring each resample again.
RowTerms = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class Metric:
    """The primary test-window metric of a family: its name, direction, how it is computed from the
    test rows (``score(y, predicted)``, arrays with one row per test row), whether the run's
    ``promotion_margin`` is in the metric's units (``absolute``: ROC AUC points) or a share of the
    champion's value (``relative``: errors and deviances), and the paired test that compares two
    models on the same rows (``"delong"`` for ROC AUC, else ``"bootstrap"``). ``terms`` (optional, for a metric
    that is a ratio of sums over rows, :data:`RowTerms`, or ``finish`` of that ratio): the same score from terms
    computed once per row, which the bootstrap sums each resample; equal to ``score`` up to the order of the sums
    (tests/unit/test_evaluation.py)."""

    name: str
    higher_is_better: bool
    relative_margin: bool
    score: Score
    paired_test: str = "bootstrap"
    terms: RowTerms | None = None
    finish: Callable[[float], float] | None = None

    def __post_init__(self) -> None:
        if self.paired_test not in ("delong", "bootstrap"):
            raise ValueError(f"paired_test must be 'delong' or 'bootstrap', got {self.paired_test!r}")


@dataclass(frozen=True)
class Evaluation:
    """One model's predictions on the test rows: ``y`` the outcomes and ``predicted`` the model's
    predictions, one row each (1-D, or 2-D where the metric needs more than one number per row);
    ``groups`` (optional, one label per row) are the units the bootstrap resamples together; ``window``
    says in words which rows these are (e.g. "customers at 2011-06-11, purchases to 2011-09-10")."""

    name: str
    y: np.ndarray
    predicted: np.ndarray
    window: str = ""
    groups: np.ndarray | None = None

    def __post_init__(self) -> None:
        y, predicted = np.asarray(self.y), np.asarray(self.predicted)
        object.__setattr__(self, "y", y)
        object.__setattr__(self, "predicted", predicted)
        if len(y) != len(predicted):
            raise ValueError(f"{self.name}: {len(predicted)} predictions for {len(y)} test rows")
        if self.groups is not None:
            groups = np.asarray(self.groups)
            if len(groups) != len(y):
                raise ValueError(f"{self.name}: {len(groups)} group labels for {len(y)} test rows")
            object.__setattr__(self, "groups", groups)

    @property
    def n(self) -> int:
        return len(self.y)

    def value(self, metric: Metric) -> float:
        """The metric on these rows; NaN when it cannot be computed (e.g. non-finite predictions)."""
        return safe_score(metric.score, self.y, self.predicted)


@dataclass(frozen=True)
class Comparison:
    """``candidate`` vs ``reference`` on the same test rows. ``gain`` is the difference in the metric's
    good direction (positive: the candidate is better), ``low`` / ``high`` its two-sided
    :data:`INTERVAL_LEVEL` interval, ``p_value`` the one-sided p-value of "the candidate is not better"
    (gain <= 0), ``test`` the method."""

    candidate: str
    reference: str
    candidate_value: float
    reference_value: float
    gain: float
    low: float
    high: float
    p_value: float
    test: str
    n: int

    def significant(self, alpha: float) -> bool:
        return is_number(self.p_value) and self.p_value < alpha and self.gain > 0

    def describe(self, metric: str) -> str:
        return (f"{metric} {self.candidate_value:.4f} vs {self.reference} {self.reference_value:.4f}: gain "
                f"{self.gain:+.4f}, {INTERVAL_LEVEL:.0%} interval [{self.low:+.4f}, {self.high:+.4f}], one-sided "
                f"p = {self.p_value:.3g} ({self.test}, {self.n} test rows)")


def compare(candidate: Evaluation, reference: Evaluation, metric: Metric, *, seed: int = 0,
            resamples: int = BOOTSTRAP_RESAMPLES) -> Comparison:
    """Paired comparison of two models' predictions on the same test rows (see :class:`Comparison`).
    Raises ValueError when the two evaluations are not of the same rows (other outcomes)."""
    if candidate.y.shape != reference.y.shape or not np.array_equal(candidate.y, reference.y, equal_nan=True):
        raise ValueError(f"{candidate.name} and {reference.name} are not scored on the same test rows "
                         f"({candidate.n} vs {reference.n} rows, or other outcomes): they cannot be compared paired")
    sign = 1.0 if metric.higher_is_better else -1.0
    candidate_value, reference_value = candidate.value(metric), reference.value(metric)
    if not (is_number(candidate_value) and is_number(reference_value)):
        gain = sign * (candidate_value - reference_value)
        return Comparison(candidate.name, reference.name, candidate_value, reference_value, gain,
                          math.nan, math.nan, math.nan, metric.paired_test, candidate.n)
    if metric.paired_test == "delong":
        gain, low, high, p_value = _delong(candidate.y, candidate.predicted, reference.predicted)
        gain *= sign
        low, high = (low, high) if sign > 0 else (-high, -low)
    else:
        gain, low, high, p_value = _bootstrap(metric, candidate, reference, sign, seed, resamples)
    return Comparison(candidate.name, reference.name, candidate_value, reference_value, gain, low, high, p_value,
                      metric.paired_test, candidate.n)


def _delong(y: np.ndarray, first: np.ndarray, second: np.ndarray) -> tuple[float, float, float, float]:
    """AUC(first) - AUC(second) on the same rows, its interval and one-sided p-value (DeLong, DeLong &
    Clarke-Pearson 1988; the fast midrank form of Sun & Xu 2014)."""
    positive = np.asarray(y) == 1
    m, n = int(positive.sum()), int((~positive).sum())
    predictions = np.vstack([np.asarray(first, dtype="float64"), np.asarray(second, dtype="float64")])
    pos, neg = predictions[:, positive], predictions[:, ~positive]
    tx = stats.rankdata(pos, axis=1)
    ty = stats.rankdata(neg, axis=1)
    tz = stats.rankdata(np.hstack([pos, neg]), axis=1)
    aucs = (tz[:, :m].sum(axis=1) / m - (m + 1) / 2.0) / n
    v01 = (tz[:, :m] - tx) / n
    v10 = 1.0 - (tz[:, m:] - ty) / m
    covariance = np.cov(v01) / m + np.cov(v10) / n
    difference = float(aucs[0] - aucs[1])
    variance = float(covariance[0, 0] + covariance[1, 1] - 2 * covariance[0, 1])
    if not variance > 1e-18:  # identical rankings: no difference and no evidence of one
        return difference, difference, difference, (0.0 if difference > 0 else 1.0)
    se = math.sqrt(variance)
    z = stats.norm.ppf(0.5 + INTERVAL_LEVEL / 2)
    return difference, float(difference - z * se), float(difference + z * se), float(stats.norm.sf(difference / se))


def _bootstrap(metric: Metric, candidate: Evaluation, reference: Evaluation, sign: float, seed: int,
               resamples: int) -> tuple[float, float, float, float]:
    """The paired bootstrap: resample test rows (or whole groups) with replacement, score both models
    on each resample, and read the interval and the one-sided p-value off the gains."""
    gain = sign * (candidate.value(metric) - reference.value(metric))
    rng = np.random.default_rng(seed)
    groups = candidate.groups if candidate.groups is not None else reference.groups
    if metric.terms is not None and _all_finite(candidate.predicted) and _all_finite(reference.predicted):
        gains = _summed_gains(metric, candidate, reference, groups, sign, rng, resamples)
        return (gain, *_interval(gains))
    if groups is None:
        def draw() -> np.ndarray:
            return rng.integers(0, candidate.n, candidate.n)
    else:
        _, codes = np.unique(groups, return_inverse=True)
        order = np.argsort(codes, kind="stable")
        bounds = np.searchsorted(codes[order], np.arange(codes.max() + 2))
        starts, sizes = bounds[:-1], np.diff(bounds)

        def draw() -> np.ndarray:
            """The rows of each picked group, in the order picked (``order[starts[g]:starts[g] + sizes[g]]`` one after
            the other, built at once: a Python list of 200k group slices per resample made send time's gate take
            minutes at a million customers)."""
            picked = rng.integers(0, len(sizes), len(sizes))
            lengths = sizes[picked]
            first = np.cumsum(lengths) - lengths  # where each picked group's rows start in the resample
            return order[np.repeat(starts[picked] - first, lengths) + np.arange(int(lengths.sum()))]
    on = (lambda rows: safe_score(metric.score, candidate.y[rows], candidate.predicted[rows]),
          lambda rows: safe_score(metric.score, reference.y[rows], reference.predicted[rows]))
    gains = np.empty(resamples)
    for b in range(resamples):
        rows = draw()
        gains[b] = sign * (on[0](rows) - on[1](rows))
    return (gain, *_interval(gains))


def _summed_gains(metric: Metric, candidate: Evaluation, reference: Evaluation, groups: np.ndarray | None,
                  sign: float, rng: np.random.Generator, resamples: int) -> np.ndarray:
    """The bootstrap's gains of a ratio-of-sums metric (:data:`RowTerms`): each model's terms once, summed per
    group when rows are grouped; a resample draws the same rows or groups as :func:`_bootstrap`'s own draw and
    sums the drawn units' terms. At a million customers, rescoring every resample made the gates of send time and
    recommendations take minutes, and reading each resample's rows took send time's 110 s; CLV's RMSE, rescored,
    took 250 s of its 1,450 (docs/scale.md)."""
    terms, finish = metric.terms, metric.finish or float
    if groups is None:
        codes, units = None, candidate.n
    else:
        _, codes = np.unique(groups, return_inverse=True)
        units = int(codes.max()) + 1 if len(codes) else 0
    summed = []
    for evaluation in (candidate, reference):
        numerator, denominator = (np.asarray(part, dtype=np.float64)
                                  for part in terms(evaluation.y, evaluation.predicted))
        if codes is not None:
            numerator = np.bincount(codes, weights=numerator, minlength=units)
            denominator = np.bincount(codes, weights=denominator, minlength=units)
        summed += [numerator, denominator]
    # one row per unit: the candidate's numerator and denominator, then the reference's. A resample's sums are its
    # draw counts times these rows (one pass over a 4-column block, where gathering each column at the drawn units
    # took 3.45x as long at a million rows: benchmarks/bootstrap_sums.py)
    units_terms = np.column_stack(summed)

    def value(numerator: float, denominator: float) -> float:
        return float(finish(numerator / denominator)) if denominator > 0 else math.nan

    gains = np.empty(resamples)
    for b in range(resamples):
        picked = rng.integers(0, units, units)
        sums = np.bincount(picked, minlength=units).astype(np.float64) @ units_terms
        gains[b] = sign * (value(sums[0], sums[1]) - value(sums[2], sums[3]))
    return gains


def _interval(gains: np.ndarray) -> tuple[float, float, float]:
    """The interval and one-sided p-value read off the bootstrap's gains (NaN where no gain is finite)."""
    finite = gains[np.isfinite(gains)]
    if not len(finite):
        return math.nan, math.nan, math.nan
    tail = (1 - INTERVAL_LEVEL) / 2
    low, high = np.quantile(finite, [tail, 1 - tail])
    p_value = (1 + int((finite <= 0).sum())) / (1 + len(finite))
    return float(low), float(high), float(p_value)


def summarise_backtest(per_origin: Sequence[Mapping[str, float]], keys: Sequence[str]) -> dict[str, float]:
    """A rolling-origin backtest's metrics as MLflow metrics: ``backtest_<key>_origin<k>`` for each origin
    (the latest first) and ``backtest_<key>_mean`` / ``_std`` over them; non-finite values are left out."""
    out: dict[str, float] = {}
    for key in keys:
        values = np.array([origin.get(key, np.nan) for origin in per_origin], dtype="float64")
        out.update({f"backtest_{key}_origin{k}": float(v) for k, v in enumerate(values)})
        out[f"backtest_{key}_mean"] = float(np.nanmean(values)) if np.isfinite(values).any() else math.nan
        out[f"backtest_{key}_std"] = float(np.nanstd(values, ddof=1)) if len(values) > 1 else math.nan
    return {key: value for key, value in out.items() if math.isfinite(value)}


def _all_finite(predicted: np.ndarray) -> bool:
    values = np.asarray(predicted, dtype="float64")
    return bool(np.isfinite(values).all())


def _defined(value: Callable[[], float]) -> float:
    """``value()``, NaN when it raises ValueError (a metric undefined on its rows) or is not finite."""
    try:
        result = float(value())
    except ValueError:
        return math.nan
    return result if math.isfinite(result) else math.nan


def safe_score(score: Score, y: np.ndarray, predicted: np.ndarray) -> float:
    """``score(y, predicted)``, NaN when the predictions are not all finite or the metric is undefined
    on these rows (one class only, no variance)."""
    values = np.asarray(predicted, dtype="float64")
    if not _all_finite(values):
        return math.nan
    return _defined(lambda: score(np.asarray(y), values))


def is_number(value: float | None) -> bool:
    try:
        return value is not None and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


# --- metric functions the families share -----------------------------------------------------------


def roc_auc(y: np.ndarray, predicted: np.ndarray) -> float:
    return float(roc_auc_score(y, predicted))


def rmse(y: np.ndarray, predicted: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(y, dtype="float64") - predicted) ** 2)))


def mae(y: np.ndarray, predicted: np.ndarray) -> float:
    return float(np.mean(np.abs(np.asarray(y, dtype="float64") - predicted)))


def squared_errors(y: np.ndarray, predicted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`rmse` as terms (:data:`RowTerms`, with ``finish=math.sqrt``): each row's squared error over 1."""
    error = (np.asarray(y, dtype="float64") - predicted) ** 2
    return error, np.ones(len(error))


def absolute_errors(y: np.ndarray, predicted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`mae` as terms (:data:`RowTerms`): each row's absolute error over 1."""
    error = np.abs(np.asarray(y, dtype="float64") - predicted)
    return error, np.ones(len(error))


def spearman(y: np.ndarray, predicted: np.ndarray) -> float:
    return float(stats.spearmanr(y, predicted).statistic)


ROC_AUC = Metric("roc_auc", higher_is_better=True, relative_margin=False, score=roc_auc, paired_test="delong")
