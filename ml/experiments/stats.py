"""The statistics of an A/B test: fixed-horizon tests, CUPED, sample ratio mismatch, always-valid and
group-sequential inference, Bayesian chance to beat, multiple-variant correction, sample size and the decision.

Everything here is pure (numpy / scipy in, frozen dataclasses out; no database, MLflow or Airflow) and
works on *sufficient statistics* per arm (:class:`ArmSummary`: n, mean, variance and the moments of the
CUPED covariates), so the same code analyses one experiment from a frame of units
(:func:`analyse_metric`) or thousands of simulated experiments at once (arrays with leading batch
dimensions; ``benchmarks/experiments.py``). Why it is written here rather than called from statsmodels:
statsmodels' tests take one comparison at a time and no array of them, its power tools know no
sequential design, and neither library has the mixture SPRT, CUPED or the decision. Each fixed-horizon
formula is checked equal to its statsmodels / scipy counterpart in ``tests/unit/test_experiment_stats.py``.

Inputs, per unit: its variant, its outcome ``y`` cumulative since its assignment as of the analysis
date (0/1 for a conversion metric, a number for revenue per unit or order value) and optionally its
pre-experiment value ``x`` of the same metric (the CUPED covariate). Every treatment is compared with
the named control; ``estimate`` is always treatment minus control.

1. **Fixed-horizon tests.** Proportions: the pooled two-proportion z test (statsmodels
   ``proportions_ztest``), interval for the difference the *unpooled* Wald interval
   ``d +/- z sqrt(p_t(1-p_t)/n_t + p_c(1-p_c)/n_c)``. Means: Welch's t test (scipy ``ttest_ind(...,
   equal_var=False)``), interval ``d +/- t_{df} sqrt(s_t^2/n_t + s_c^2/n_c)`` with the Welch-Satterthwaite df.
   Relative lift ``m_t / m_c - 1`` with a delta-method interval,
   ``se^2 = V_t / m_c^2 + m_t^2 V_c / m_c^4`` (``V = s^2 / n``, normal quantile).
2. **CUPED** (Deng, Xu, Kohavi, Walker 2013). ``y_adj = y - theta' (z - mean z)``, theta the pooled
   (all arms) least-squares slope ``Cov(z)^-1 Cov(z, y)``; the covariate is pre-treatment, so the
   adjustment changes no expectation, only the variance (by ``corr(y, x)^2`` for one covariate).
   Units without a pre-period value: ``z = [x filled with the mean of the observed x, 1 if x was
   missing]``: the indicator gives new units their own level, so filling them does not pull the slope
   towards 0 (and the fill value does not matter: the indicator absorbs it). With every x missing no
   adjustment is made. With CUPED on, *all* the comparison statistics (fixed, sequential, Bayesian) use
   the adjusted outcome and the Welch (unpooled) variance, also for a proportion metric (the adjusted
   outcome is no longer 0/1); ``method`` in the result says which test ran.
3. **Sample ratio mismatch**: Pearson's chi-square of the unit counts per variant against the configured
   weights (scipy ``chisquare``); ``p < srm_threshold`` (0.001 by default, the threshold the industry
   uses: a true mismatch of a few percent gives p far below it at any useful sample size, while daily
   checks of a healthy experiment almost never cross it) flags the experiment and blocks any winner.
4. **Always-valid and group-sequential inference**: the mixture SPRT and the Lan-DeMets group-sequential
   test live in :mod:`ml.experiments.sequential` (its docstring has their definitions, points 4 and 4b);
   their names are re-exported here. :func:`mean_difference_sequential` runs the mSPRT on two arms.
5. **Bayesian**: with a flat prior and the normal approximation ``theta ~ N(theta_hat, V)`` (GrowthBook's
   engine, without its informative prior), ``chance_to_beat = P(treatment better than control)`` and
   ``expected_loss = E[max(0, control - treatment)]`` (in the metric's units, "better" per the metric's
   direction): ``sqrt(V) phi(d / sqrt(V)) - d Phi(-d / sqrt(V))`` with ``d`` the improvement.
   Closed forms, no Monte Carlo.
6. **Several treatments**: Holm's step-down adjustment over the treatment-vs-control comparisons of
   the fixed and of the always-valid p-values. It is valid for always-valid p-values at every look: a
   false rejection by Holm needs some true null's p-value to reach ``alpha / m0``, and each does so at
   any time with probability at most ``alpha / m0``. (The group-sequential test uses Bonferroni, point 4b of :mod:`ml.experiments.sequential`.)
7. **Sample size**: :mod:`ml.experiments.power` (its docstring has the formulas); its names are re-exported here.
8. **Decision** (:func:`decide`), in this order: a sample ratio mismatch stops the experiment; a
   guardrail stops it when, for any treatment, its adjusted always-valid p-value is below alpha *in the
   harmful direction* and the whole always-valid interval lies beyond the guardrail's relative
   ``tolerance`` of the control mean (0 by default: any significant harm); a primary-metric treatment significant (adjusted always-valid p-value) in the good
   direction is shipped (the best estimate among several); a treatment significantly worse on the
   primary stops it as harm on the primary; "stop: no effect" when the planned sample is reached and
   every treatment's always-valid interval lies inside ``+/- mde x |control mean|``, or when the end date
   is reached without a winner; otherwise keep running. With ``decide(..., sequential="group")`` the same
   rules read the group-sequential p-value and repeated confidence interval instead (:mod:`ml.experiments.sequential`, 4b).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Mapping, Sequence

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy import stats

from ml.experiments.power import (  # re-exported (__all__)
    SamplePlan,
    fixed_power,
    plan_sample_size,
    standardised_effect,
    variant_shares,
)
from ml.experiments.sequential import (  # re-exported (__all__): the statistics engine's public names
    SPENDING_FUNCTIONS,
    GroupSequentialBoundaries,
    GroupSequentialTest,
    SequentialTest,
    Spending,
    _check_spending,
    group_sequential_boundaries,
    group_sequential_test,
    mixing_ratio,
    mixing_variance,
    sequential_test,
    spending_function,
)

Array = npt.ArrayLike  # a number or an array of them (leading batch dimensions)

__all__ = [
    "SPENDING_FUNCTIONS",
    "GroupSequentialBoundaries",
    "GroupSequentialTest",
    "Spending",
    "group_sequential_boundaries",
    "group_sequential_test",
    "spending_function",
    "ArmSummary",
    "BayesResult",
    "Cuped",
    "Decision",
    "ExperimentConfig",
    "FixedTest",
    "MetricAnalysis",
    "MetricSpec",
    "SamplePlan",
    "SequentialTest",
    "SrmTest",
    "analyse_metric",
    "cuped",
    "cuped_covariates",
    "decide",
    "fixed_power",
    "holm",
    "mean_difference_sequential",
    "mixing_ratio",
    "mixing_variance",
    "normal_posterior",
    "plan_sample_size",
    "proportions_z_test",
    "sample_ratio_test",
    "sequential_test",
    "standardised_effect",
    "summarise",
    "summary_from_sums",
    "welch_t_test",
]


# --- sufficient statistics -------------------------------------------------------------------------


@dataclass(frozen=True)
class ArmSummary:
    """One arm's sufficient statistics; every field may carry leading batch dimensions ``(...)``.

    ``variance`` is the sample variance (ddof 1) of y; the covariate fields are for CUPED, with ``k``
    covariates: ``covariate_mean (..., k)``, ``covariate_cov (..., k, k)`` and ``cross_cov (..., k)``
    (``Cov(z, y)``), all ddof 1. ``k = 0`` means no covariate.
    """

    n: np.ndarray
    mean: np.ndarray
    variance: np.ndarray
    covariate_mean: np.ndarray
    covariate_cov: np.ndarray
    cross_cov: np.ndarray


def summarise(y: Array, covariates: Array | None = None) -> ArmSummary:
    """The :class:`ArmSummary` of one arm's outcomes ``y (n,)`` and covariates ``(n, k)`` or ``(n,)``."""
    y = np.asarray(y, dtype=float)
    z = np.empty((len(y), 0)) if covariates is None else np.asarray(covariates, dtype=float)
    z = z[:, None] if z.ndim == 1 else z
    n = len(y)
    mean = y.mean() if n else np.nan
    variance = y.var(ddof=1) if n > 1 else np.nan
    z_mean = z.mean(axis=0) if n else np.full(z.shape[1], np.nan)
    if n > 1:
        zc, yc = z - z_mean, y - mean
        z_cov, cross = zc.T @ zc / (n - 1), zc.T @ yc / (n - 1)
    else:
        z_cov, cross = np.full((z.shape[1],) * 2, np.nan), np.full(z.shape[1], np.nan)
    return ArmSummary(np.asarray(float(n)), np.asarray(mean), np.asarray(variance), z_mean, z_cov, cross)


def summary_from_sums(n: Array, sum_y: Array, sum_y2: Array, sum_z: Array | None = None, sum_zz: Array | None = None,
                      sum_zy: Array | None = None) -> ArmSummary:
    """The :class:`ArmSummary` from raw sums (what SQL or a simulation accumulates), batched.

    ``sum_z (..., k)`` is the sum of the covariates, ``sum_zz (..., k, k)`` of their outer products and
    ``sum_zy (..., k)`` of covariates times y; leave them None for no covariate.
    """
    n = np.asarray(n, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.asarray(sum_y) / n
        variance = (np.asarray(sum_y2) - n * mean**2) / (n - 1)
        if sum_z is None:
            k0 = np.zeros(n.shape + (0,))
            return ArmSummary(n, mean, variance, k0, np.zeros(n.shape + (0, 0)), k0)
        z_mean = np.asarray(sum_z) / n[..., None]
        z_cov = (np.asarray(sum_zz) - n[..., None, None] * z_mean[..., :, None] * z_mean[..., None, :]) / (
            n[..., None, None] - 1)
        cross = (np.asarray(sum_zy) - n[..., None] * z_mean * mean[..., None]) / (n[..., None] - 1)
    return ArmSummary(n, mean, variance, z_mean, z_cov, cross)


def cuped_covariates(x: Array) -> np.ndarray:
    """The CUPED covariates ``(n, k)`` of pre-period values ``x`` with NaN for units without one.

    No NaN: ``x`` itself (k = 1). Some NaN: ``[x with NaN filled by the mean of the observed x, missing
    indicator]`` (k = 2). All NaN: no covariate (k = 0). Call it on the pooled units of all arms.
    """
    x = np.asarray(x, dtype=float)
    missing = np.isnan(x)
    if missing.all():
        return np.empty((len(x), 0))
    if not missing.any():
        return x[:, None]
    filled = np.where(missing, x[~missing].mean(), x)
    return np.column_stack([filled, missing.astype(float)])


@dataclass(frozen=True)
class Cuped:
    """CUPED-adjusted arms (``k = 0`` summaries of ``y_adj``), the pooled slope ``theta (..., k)`` and
    each arm's variance reduction ``1 - Var(y_adj) / Var(y)``."""

    arms: tuple[ArmSummary, ...]
    theta: np.ndarray
    variance_reduction: tuple[np.ndarray, ...]


def cuped(arms: Sequence[ArmSummary]) -> Cuped:
    """Adjust every arm's outcome with the slope pooled over all arms (module docstring, point 2)."""
    n = [np.asarray(a.n, dtype=float) for a in arms]
    total = sum(n)
    # an arm without units (or with one) has NaN moments: it adds nothing to the pooled sums
    parts = [tuple(np.nan_to_num(m) for m in (a.mean, a.covariate_mean, a.covariate_cov, a.cross_cov)) for a in arms]
    with np.errstate(invalid="ignore", divide="ignore"):
        z_bar = sum(ni[..., None] * z for ni, (_, z, _, _) in zip(n, parts)) / total[..., None]
        y_bar = sum(ni * y for ni, (y, _, _, _) in zip(n, parts)) / total
        s_zz = sum(np.maximum(ni - 1, 0)[..., None, None] * c + ni[..., None, None] * _outer(z - z_bar)
                   for ni, (_, z, c, _) in zip(n, parts))
        s_zy = sum(np.maximum(ni - 1, 0)[..., None] * cy + ni[..., None] * (z - z_bar) * (y - y_bar)[..., None]
                   for ni, (y, z, _, cy) in zip(n, parts))
    s_zz, s_zy = np.nan_to_num(s_zz), np.nan_to_num(s_zy)
    # pinv: a constant covariate (or k = 0) gives a singular matrix and a zero slope, not an error
    theta = (np.linalg.pinv(s_zz) @ s_zy[..., None])[..., 0]
    adjusted, reduction = [], []
    for a in arms:
        mean = a.mean - np.sum(theta * (a.covariate_mean - z_bar), axis=-1)
        variance = (a.variance - 2 * np.sum(theta * a.cross_cov, axis=-1)
                    + np.sum(theta * (a.covariate_cov @ theta[..., None])[..., 0], axis=-1))
        variance = np.maximum(variance, 0.0)
        k0 = np.zeros(np.shape(a.n) + (0,))
        adjusted.append(ArmSummary(a.n, mean, variance, k0, np.zeros(np.shape(a.n) + (0, 0)), k0))
        with np.errstate(invalid="ignore", divide="ignore"):
            reduction.append(1.0 - variance / a.variance)
    return Cuped(tuple(adjusted), theta, tuple(reduction))


def _outer(v: np.ndarray) -> np.ndarray:
    return v[..., :, None] * v[..., None, :]


# --- fixed-horizon tests --------------------------------------------------------------------------


@dataclass(frozen=True)
class FixedTest:
    """A fixed-horizon comparison (treatment minus control); fields are floats or arrays."""

    estimate: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    lift: np.ndarray
    lift_ci_low: np.ndarray
    lift_ci_high: np.ndarray
    statistic: np.ndarray
    p_value: np.ndarray


def proportions_z_test(successes_control: Array, n_control: Array, successes_treatment: Array, n_treatment: Array,
                       alpha: float = 0.05) -> FixedTest:
    """Pooled two-proportion z test, unpooled Wald interval for the difference, delta-method lift."""
    s_c, n_c = np.asarray(successes_control, float), np.asarray(n_control, float)
    s_t, n_t = np.asarray(successes_treatment, float), np.asarray(n_treatment, float)
    with np.errstate(invalid="ignore", divide="ignore"):
        p_c, p_t = s_c / n_c, s_t / n_t
        pooled = (s_c + s_t) / (n_c + n_t)
        statistic = (p_t - p_c) / np.sqrt(pooled * (1 - pooled) * (1 / n_c + 1 / n_t))
    p_value = 2 * stats.norm.sf(np.abs(statistic))
    v_c, v_t = p_c * (1 - p_c) / n_c, p_t * (1 - p_t) / n_t
    z = stats.norm.isf(alpha / 2)
    return _fixed(p_c, p_t, v_c, v_t, z, statistic, p_value, alpha)


def welch_t_test(control: ArmSummary, treatment: ArmSummary, alpha: float = 0.05) -> FixedTest:
    """Welch's t test of the means (scipy ``ttest_ind_from_stats(equal_var=False)``) with its interval."""
    v_c, v_t = control.variance / control.n, treatment.variance / treatment.n
    with np.errstate(invalid="ignore", divide="ignore"):
        df = (v_c + v_t) ** 2 / (v_c**2 / (control.n - 1) + v_t**2 / (treatment.n - 1))
        result = stats.ttest_ind_from_stats(treatment.mean, np.sqrt(treatment.variance), treatment.n,
                                            control.mean, np.sqrt(control.variance), control.n, equal_var=False)
    return _fixed(control.mean, treatment.mean, v_c, v_t, stats.t.isf(alpha / 2, df),
                  np.asarray(result.statistic), np.asarray(result.pvalue), alpha)


def _fixed(m_c, m_t, v_c, v_t, quantile, statistic, p_value, alpha: float) -> FixedTest:
    estimate = np.asarray(m_t - m_c)
    half = quantile * np.sqrt(v_c + v_t)
    lift, lift_half = _lift(m_c, m_t, v_c, v_t, stats.norm.isf(alpha / 2))
    return FixedTest(estimate, estimate - half, estimate + half, lift, lift - lift_half, lift + lift_half,
                     np.asarray(statistic), np.asarray(p_value))


def _lift(m_c, m_t, v_c, v_t, z) -> tuple[np.ndarray, np.ndarray]:
    with np.errstate(invalid="ignore", divide="ignore"):
        m_c = np.where(m_c == 0, np.nan, m_c)
        lift = m_t / m_c - 1
        se = np.sqrt(v_t / m_c**2 + m_t**2 * v_c / m_c**4)
    return np.asarray(lift), np.asarray(z * se)


# --- sample ratio mismatch --------------------------------------------------------------------------


@dataclass(frozen=True)
class SrmTest:
    """Chi-square goodness of fit of the unit counts per variant against the weights."""

    statistic: np.ndarray
    p_value: np.ndarray
    expected: np.ndarray
    detected: np.ndarray


def sample_ratio_test(counts: Array, weights: Array, threshold: float = 0.001) -> SrmTest:
    """Counts ``(..., k)`` against weights ``(k,)`` (normalised here); ``detected`` is ``p < threshold``."""
    counts = np.asarray(counts, dtype=float)
    shares = np.asarray(weights, dtype=float)
    if shares.ndim != 1 or shares.shape[0] != counts.shape[-1] or (shares <= 0).any():
        raise ValueError(f"weights must be {counts.shape[-1]} positive numbers, got {weights!r}")
    expected = counts.sum(axis=-1, keepdims=True) * shares / shares.sum()
    result = stats.chisquare(counts, expected, axis=-1)
    p_value = np.asarray(result.pvalue)
    return SrmTest(np.asarray(result.statistic), p_value, expected, p_value < threshold)


# --- always-valid inference (ml.experiments.sequential) -------------------------------------------


def mean_difference_sequential(control: ArmSummary, treatment: ArmSummary, tuning_n: float,
                               alpha: float = 0.05, previous_p_value: Array = 1.0) -> SequentialTest:
    """The mSPRT of ``treatment.mean - control.mean`` from the arms' sufficient statistics."""
    variance = control.variance / control.n + treatment.variance / treatment.n
    tau2 = mixing_variance(variance, control.n + treatment.n, tuning_n, alpha)
    return sequential_test(treatment.mean - control.mean, variance, tau2, alpha, previous_p_value)


# --- Bayesian and multiple comparisons -------------------------------------------------------------


@dataclass(frozen=True)
class BayesResult:
    chance_to_beat: np.ndarray
    expected_loss: np.ndarray


def normal_posterior(estimate: Array, variance: Array, higher_is_better: bool = True) -> BayesResult:
    """Chance to beat control and expected loss of shipping, from ``theta ~ N(estimate, variance)``."""
    d = np.asarray(estimate, float) * (1 if higher_is_better else -1)
    sd = np.sqrt(np.asarray(variance, float))
    with np.errstate(invalid="ignore", divide="ignore"):
        z = d / sd
    return BayesResult(stats.norm.cdf(z), sd * stats.norm.pdf(z) - d * stats.norm.cdf(-z))


def holm(p_values: Array) -> np.ndarray:
    """Holm's step-down adjusted p-values of a 1-D array (NaN ignored and kept)."""
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full(p.shape, np.nan)
    valid = np.flatnonzero(~np.isnan(p))
    order = valid[np.argsort(p[valid], kind="stable")]
    m = len(order)
    stepped = np.maximum.accumulate((m - np.arange(m)) * p[order])
    adjusted[order] = np.minimum(stepped, 1.0)
    return adjusted


# --- one metric of one experiment ------------------------------------------------------------------


@dataclass(frozen=True)
class MetricSpec:
    """What is measured: its name (used in decisions), ``kind`` ("proportion": y is 0/1 and the fixed
    test is the z test; "mean": Welch's t test), its direction and, as a guardrail, the harm it tolerates
    (relative to the control mean: 0.02 = 2 %; :class:`ml.experiments.definitions.Guardrail`)."""

    name: str = "y"
    kind: Literal["proportion", "mean"] = "mean"
    higher_is_better: bool = True
    tolerance: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in ("proportion", "mean"):
            raise ValueError(f"kind must be 'proportion' or 'mean', got {self.kind!r}")
        if not self.tolerance >= 0:
            raise ValueError(f"tolerance must be >= 0, got {self.tolerance}")


@dataclass(frozen=True)
class ExperimentConfig:
    """The experiment as the analysis needs it.

    ``weights``: configured traffic share per variant (control included; normalised); ``mde``: the
    relative minimum detectable effect the experiment is planned for; ``sequential_tuning_n``: units in
    a comparison (control + one treatment) at which the always-valid interval is narrowest (5000 by
    default, as GrowthBook's; pass :attr:`SamplePlan.sequential_tuning_n`); ``cuped``: use the
    pre-period ``x`` when the frame has it.

    The group-sequential test (:mod:`ml.experiments.sequential`, 4b) runs when ``planned_n`` or ``planned_exposure`` is
    set (None, the default: no group-sequential columns). Its information fraction is the frame's units
    (all variants) over ``planned_n`` (e.g. :attr:`SamplePlan.total`), or, with ``planned_exposure``, the
    sum of the frame's ``exposure`` column (days each unit has been in the experiment) over
    ``planned_exposure`` (unit-days at the planned end): the scale to use when units arrive all at once
    or outcomes keep accruing on units already counted. ``spending``: the spending function.
    """

    control: str
    weights: Mapping[str, float]
    alpha: float = 0.05
    mde: float = 0.05
    srm_threshold: float = 0.001
    sequential_tuning_n: float = 5000.0
    cuped: bool = True
    planned_n: float | None = None
    planned_exposure: float | None = None
    spending: Spending = "obrien-fleming"

    def __post_init__(self) -> None:
        variant_shares(self.weights, self.control)
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}")
        if not 0 < self.srm_threshold < 1:
            raise ValueError(f"srm_threshold must be in (0, 1), got {self.srm_threshold}")
        if self.sequential_tuning_n <= 0 or self.mde <= 0:
            raise ValueError(f"sequential_tuning_n and mde must be positive, got "
                             f"{self.sequential_tuning_n}, {self.mde}")
        for name in ("planned_n", "planned_exposure"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be positive (or None), got {value}")
        _check_spending(self.spending, self.alpha)

    @property
    def variants(self) -> list[str]:
        """Control first, then the treatments in the order of ``weights``."""
        return [self.control] + [str(v) for v in self.weights if v != self.control]


RESULT_COLUMNS = ("variant", "n", "mean", "estimate", "lift", "ci_low", "ci_high", "lift_ci_low", "lift_ci_high",
                  "p_value", "p_value_adjusted", "p_value_sequential", "p_value_sequential_adjusted",
                  "cs_low", "cs_high", "chance_to_beat", "expected_loss", "cuped_variance_reduction", "method",
                  "z_statistic", "information_fraction", "gs_boundary", "p_value_gs", "gs_low", "gs_high")


@dataclass(frozen=True)
class MetricAnalysis:
    """One metric of one experiment at one look: ``table`` (one row per variant, control first, columns
    :data:`RESULT_COLUMNS`) and the sample ratio test of the unit counts."""

    metric: MetricSpec
    config: ExperimentConfig
    table: pd.DataFrame
    srm: SrmTest = field(repr=False)

    @property
    def srm_p_value(self) -> float:
        return float(self.srm.p_value)


def analyse_metric(frame: pd.DataFrame, config: ExperimentConfig, metric: MetricSpec = MetricSpec(),
                   previous_p_values: Mapping[str, float] | None = None,
                   history: Mapping[str, Sequence[tuple[float, float]]] | None = None) -> MetricAnalysis:
    """Every treatment against the control on one metric, from one row per unit.

    ``frame``: columns ``unit``, ``variant``, ``y`` and optionally ``x`` (pre-period value, NaN when the
    unit has none) and ``exposure`` (days in the experiment; needed with ``config.planned_exposure``).
    ``previous_p_values``: each treatment's always-valid p-value at the previous look
    (the running minimum carries on from it). ``history``: each treatment's earlier looks of the
    group-sequential test, ``[(information_fraction, z_statistic), ...]`` in look order (the table's
    columns of those looks; used only with a planned sample). In the table the control row has n,
    mean and the CUPED variance reduction only; ``mean`` is the raw mean of y, ``estimate`` the
    (CUPED-adjusted when x is used) difference with the control, ``ci_*`` its fixed-horizon, ``cs_*`` its
    always-valid and ``gs_*`` its repeated confidence interval. ``z_statistic`` is ``estimate / sqrt(V)``
    (V as for the mSPRT), ``information_fraction`` the frame's units over ``planned_n`` or its exposure over
    ``planned_exposure`` (past 1 when the plan is overrun), ``gs_boundary`` tonight's boundary for ``|z|``
    and ``p_value_gs`` the repeated p-value, Bonferroni-adjusted over the treatments
    (:mod:`ml.experiments.sequential`, 4b); all NaN without a planned sample.
    """
    missing = {"unit", "variant", "y"} - set(frame.columns)
    if missing:
        raise ValueError(f"frame lacks columns {sorted(missing)}")
    if frame["unit"].duplicated().any():
        raise ValueError("a unit appears more than once: one row per unit (its cumulative outcome)")
    variants = config.variants
    unknown = set(frame["variant"].astype(str)) - set(variants)
    if unknown:
        raise ValueError(f"variants {sorted(unknown)} are not in the configured weights {dict(config.weights)}")
    labels = frame["variant"].astype(str).to_numpy()
    y = frame["y"].to_numpy(dtype=float)
    if np.isnan(y).any():
        raise ValueError("y has missing values: a unit without an outcome counts 0")
    use_x = config.cuped and "x" in frame.columns
    z = cuped_covariates(frame["x"].to_numpy(dtype=float)) if use_x else np.empty((len(y), 0))
    use_x = use_x and z.shape[1] > 0
    raw = [summarise(y[labels == v], z[labels == v]) for v in variants]
    counts = np.array([float(a.n) for a in raw])
    fraction = _information_fraction(frame, config, counts.sum())
    srm = sample_ratio_test(counts, [config.weights[v] for v in variants], config.srm_threshold)
    adjusted = cuped(raw) if use_x else None
    arms = list(adjusted.arms) if adjusted else raw
    method = ("welch (cuped)" if use_x else "z" if metric.kind == "proportion" else "welch")

    rows = [{"variant": variants[0], "n": int(counts[0]), "mean": float(raw[0].mean)}]
    for i, v in enumerate(variants[1:], start=1):
        c, t = arms[0], arms[i]
        if method == "z":
            fixed = proportions_z_test(c.mean * c.n, c.n, t.mean * t.n, t.n, config.alpha)
            c_var, t_var = c.mean * (1 - c.mean), t.mean * (1 - t.mean)
        else:
            fixed = welch_t_test(c, t, config.alpha)
            c_var, t_var = c.variance, t.variance
        variance = c_var / c.n + t_var / t.n
        previous = 1.0 if previous_p_values is None else previous_p_values.get(v, 1.0)
        sequential = sequential_test(
            fixed.estimate, variance, mixing_variance(variance, c.n + t.n, config.sequential_tuning_n, config.alpha),
            config.alpha, previous)
        bayes = normal_posterior(fixed.estimate, variance, metric.higher_is_better)
        rows.append({
            "variant": v, "n": int(counts[i]), "mean": float(raw[i].mean),
            "estimate": fixed.estimate, "lift": fixed.lift, "ci_low": fixed.ci_low, "ci_high": fixed.ci_high,
            "lift_ci_low": fixed.lift_ci_low, "lift_ci_high": fixed.lift_ci_high, "p_value": fixed.p_value,
            "p_value_sequential": sequential.p_value, "cs_low": sequential.ci_low, "cs_high": sequential.ci_high,
            "chance_to_beat": bayes.chance_to_beat, "expected_loss": bayes.expected_loss,
            **_group_sequential_columns(config, fixed.estimate, variance, fraction, (history or {}).get(v, ()),
                                        len(variants) - 1),
        })
    table = pd.DataFrame(rows).reindex(columns=RESULT_COLUMNS)
    table["method"] = [None] + [method] * (len(variants) - 1)
    table.loc[1:, "p_value_adjusted"] = holm(table["p_value"].to_numpy(dtype=float)[1:])
    table.loc[1:, "p_value_sequential_adjusted"] = holm(table["p_value_sequential"].to_numpy(dtype=float)[1:])
    table["cuped_variance_reduction"] = ([float(r) for r in adjusted.variance_reduction] if adjusted
                                         else np.nan)
    floats = [c for c in RESULT_COLUMNS if c not in ("variant", "n", "method")]
    table[floats] = table[floats].astype(float)
    return MetricAnalysis(metric, config, table, srm)


def _information_fraction(frame: pd.DataFrame, config: ExperimentConfig, units: float) -> float | None:
    """Tonight's information fraction (ExperimentConfig's docstring), None without a planned sample."""
    if config.planned_exposure is not None:
        if "exposure" not in frame.columns:
            raise ValueError("config.planned_exposure needs an 'exposure' column (days each unit has been in "
                             "the experiment)")
        exposure = frame["exposure"].to_numpy(dtype=float)
        if np.isnan(exposure).any() or (exposure < 0).any():
            raise ValueError("exposure must be a number of days >= 0 for every unit")
        return float(exposure.sum()) / float(config.planned_exposure)
    return None if config.planned_n is None else float(units) / float(config.planned_n)


def _group_sequential_columns(config: ExperimentConfig, estimate: float, variance: float, fraction: float | None,
                              history: Sequence[tuple[float, float]], comparisons: int) -> dict[str, float]:
    """One treatment row's group-sequential columns (NaN without a planned sample)."""
    if fraction is None:
        return {}
    se = float(np.sqrt(variance))
    with np.errstate(invalid="ignore", divide="ignore"):
        z = float(estimate) / se
    earlier = [(float(f), float(zk)) for f, zk in history]
    test = group_sequential_test([f for f, _ in earlier] + [fraction], [zk for _, zk in earlier] + [z],
                                 float(estimate), se, config.alpha, config.spending, comparisons)
    return {"z_statistic": z, "information_fraction": fraction, "gs_boundary": test.boundary,
            "p_value_gs": test.p_value, "gs_low": test.ci_low, "gs_high": test.ci_high}


# --- the decision ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    """``action``: "keep running", "ship <variant>", "stop: no effect", "stop: harm on <metric>" or
    "stop: sample ratio mismatch"; ``variant`` the one shipped or harming (else None); ``reason`` in words."""

    action: str
    variant: str | None
    reason: str


@dataclass(frozen=True)
class _Evidence:
    """Which p-value and interval of the table call a decision, and their names in the reasons."""

    p_value: str
    low: str
    high: str
    interval: str
    p_name: str


_EVIDENCE = {
    "msprt": _Evidence("p_value_sequential_adjusted", "cs_low", "cs_high", "always-valid interval",
                       "adjusted always-valid p"),
    "group": _Evidence("p_value_gs", "gs_low", "gs_high", "repeated confidence interval",
                       "group-sequential repeated p"),
}


def decide(primary: MetricAnalysis, guardrails: Sequence[MetricAnalysis] = (), *, planned_sample_reached: bool,
           end_date_reached: bool, srm_detected: bool | None = None,
           sequential: Literal["msprt", "group"] = "msprt") -> Decision:
    """The experiment's decision at this look (rules: module docstring, point 8).

    ``srm_detected`` defaults to the primary analysis' own sample ratio test. ``sequential`` chooses the
    evidence: "msprt" (default) the Holm-adjusted always-valid p-value and interval, "group" the
    group-sequential repeated p-value (Bonferroni over the treatments) and repeated confidence interval,
    which need a planned sample (``ExperimentConfig.planned_n`` or ``planned_exposure``).
    """
    if sequential not in _EVIDENCE:
        raise ValueError(f"sequential must be 'msprt' or 'group', got {sequential!r}")
    evidence = _EVIDENCE[sequential]
    for analysis in (primary, *guardrails) if sequential == "group" else ():
        if len(analysis.table) > 1 and analysis.table[evidence.p_value].iloc[1:].isna().all():
            raise ValueError(f"sequential={sequential!r} but {analysis.metric.name} has no {evidence.p_value} "
                             "(set ExperimentConfig.planned_n or planned_exposure for the group-sequential test)")
    config = primary.config
    alpha = config.alpha
    if srm_detected is None:
        srm_detected = bool(primary.srm.detected)
    if srm_detected:
        counts = dict(zip(primary.table["variant"], primary.table["n"]))
        return Decision("stop: sample ratio mismatch", None,
                        f"unit counts {counts} do not match the weights {dict(config.weights)} "
                        f"(chi-square p = {primary.srm_p_value:.2g} < {config.srm_threshold:g}); no winner can be called")
    for guardrail in guardrails:
        harmed = _significant(guardrail, alpha, evidence, better=False)
        # the whole interval beyond the tolerance: its bound nearest 0, signed so that "better" is positive
        allowed = guardrail.metric.tolerance * abs(float(guardrail.table["mean"].iloc[0]))
        nearest = harmed[evidence.high] if guardrail.metric.higher_is_better else -harmed[evidence.low]
        harmed = harmed[nearest < -allowed]
        if len(harmed):
            row = harmed.iloc[0]
            return Decision(f"stop: harm on {guardrail.metric.name}", row["variant"],
                            f"{row['variant']} moves {guardrail.metric.name} the wrong way: "
                            f"{_describe(row, evidence)}")
    winners = _significant(primary, alpha, evidence, better=True)
    if len(winners):
        sign = 1 if primary.metric.higher_is_better else -1
        best = winners.loc[(sign * winners["estimate"]).idxmax()]
        others = f" (also significant: {', '.join(winners['variant'][winners['variant'] != best['variant']])})" \
            if len(winners) > 1 else ""
        return Decision(f"ship {best['variant']}", best["variant"],
                        f"{best['variant']} beats {config.control} on {primary.metric.name}: "
                        f"{_describe(best, evidence)}{others}")
    losers = _significant(primary, alpha, evidence, better=False)
    if len(losers):
        row = losers.iloc[0]
        return Decision(f"stop: harm on {primary.metric.name}", row["variant"],
                        f"{row['variant']} is worse than {config.control} on {primary.metric.name}: "
                        f"{_describe(row, evidence)}")
    treatments = primary.table.iloc[1:]
    margin = config.mde * abs(float(primary.table["mean"].iloc[0]))
    inside = bool(((treatments[evidence.low] > -margin) & (treatments[evidence.high] < margin)).all())
    if planned_sample_reached and inside:
        return Decision("stop: no effect", None,
                        f"planned sample reached and every {evidence.interval} lies within +/- {margin:.4g} "
                        f"(mde {config.mde:.0%} of the control mean): no effect of the planned size")
    if end_date_reached:
        return Decision("stop: no effect", None,
                        f"end date reached without a significant difference on {primary.metric.name} "
                        f"({evidence.p_name}-values {_p_values(treatments, evidence)})")
    return Decision("keep running", None,
                    f"no significant difference on {primary.metric.name} yet ({evidence.p_name}-values "
                    f"{_p_values(treatments, evidence)}, alpha {alpha:g})"
                    + ("" if not planned_sample_reached else "; planned sample reached but the intervals are "
                       f"wider than +/- {margin:.4g}"))


def _significant(analysis: MetricAnalysis, alpha: float, evidence: _Evidence, *, better: bool) -> pd.DataFrame:
    """Treatment rows whose decision p-value is below alpha, in the better / worse direction."""
    rows = analysis.table.iloc[1:]
    sign = 1 if analysis.metric.higher_is_better else -1
    direction = sign * rows["estimate"] > 0 if better else sign * rows["estimate"] < 0
    return rows[(rows[evidence.p_value] < alpha) & direction]


def _describe(row: pd.Series, evidence: _Evidence) -> str:
    return (f"difference {row['estimate']:.4g} (lift {row['lift']:+.1%}), {evidence.interval} "
            f"[{row[evidence.low]:.4g}, {row[evidence.high]:.4g}], {evidence.p_name} = {row[evidence.p_value]:.3g}")


def _p_values(treatments: pd.DataFrame, evidence: _Evidence) -> str:
    return ", ".join(f"{v}: {p:.3g}" for v, p in zip(treatments["variant"], treatments[evidence.p_value]))
