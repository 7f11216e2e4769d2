"""Sequential tests of an A/B test (the statistics engine's points 4 and 4b, :mod:`ml.experiments.stats`):
the mixture SPRT, always valid at every look, and the group-sequential test with Lan-DeMets alpha spending,
valid at the planned looks. Pure numpy / scipy on the normal difference ``theta_hat`` and its variance ``V``
(arrays with leading batch dimensions welcome); :mod:`ml.experiments.stats` re-exports every public name.

4. **Always-valid inference**: the mixture sequential probability ratio test (mSPRT) of Johari,
   Koomen, Pekelis, Walsh, "Always valid inference: continuous monitoring of A/B tests" (Operations
   Research 70(3), 2022; arXiv 1512.04922, 2015/2017; Optimizely's Stats Engine), on the asymptotically
   normal difference ``theta_hat`` with variance ``V`` (the same sufficient statistics as Welch's test).
   With a normal mixing distribution ``theta ~ N(0, tau^2)`` over the alternative the likelihood ratio is::

       Lambda = sqrt(V / (V + tau^2)) exp(theta_hat^2 tau^2 / (2 V (V + tau^2)))

   (Johari et al. eq. 11 with ``V = 2 sigma^2 / n``), a nonnegative martingale under H0, so by Ville's
   inequality ``P(exists n: Lambda_n >= 1/alpha) <= alpha``: the always-valid p-value
   ``p_n = min(p_{n-1}, 1 / Lambda_n)`` may be read after every look (pass the previous one). Inverting
   the test gives the always-valid interval (confidence sequence)::

       theta_hat +/- sqrt(V (V + tau^2) / tau^2 (2 log(1/alpha) + log((V + tau^2) / V)))

   which is the asymptotic confidence sequence of Howard, Ramdas, McAuliffe, Sekhon ("Time-uniform,
   nonparametric, nonasymptotic confidence sequences", Ann. Statist. 2021, eq. 14) that GrowthBook and
   Eppo use, with their ``rho^2 sigma^2 = tau^2``. The mixing variance is the tuning parameter: it is set
   through ``tuning_n``, the number of units in the comparison (control + treatment) at which the interval
   is to be narrowest: ``tau^2 = r V_{tuning_n}``, ``V_{tuning_n} = V n / tuning_n`` (V scales as 1/n at a
   fixed split) and ``r`` the fixed point of ``r = 2 log(1/alpha) + log(1 + r)`` (Howard et al. sec. 3.5,
   close to their ``-2 log alpha + log(1 - 2 log alpha)``), ~8.2 at alpha 0.05. Validity assumes a
   correctly estimated V (asymptotic); outcomes that keep accruing on units already counted are not the
   i.i.d. stream of the theorem, which ``benchmarks/experiments.py`` checks by simulation. The method is
   conservative at a finite horizon: with 28 daily looks the A/A false-positive rate is ~2 %, not 5 %
   (``docs/experiments_stats.md``).

4b. **Group-sequential test with alpha spending** (Lan & DeMets, "Discrete sequential boundaries for
   clinical trials", Biometrika 70, 1983; Jennison & Turnbull, *Group Sequential Methods with
   Applications to Clinical Trials*, 2000, ch. 7, 9 and 19). Where the mSPRT is valid for ever, this
   design spends exactly alpha by a *planned* amount of information, so over the planned horizon it
   uses all of it. Each look k has an information fraction ``t_k``, known only that night: the units so
   far over ``planned_n``, or the exposure (unit-days in the experiment) over ``planned_exposure`` (see
   :class:`ExperimentConfig`); and the statistic ``Z_k = estimate / sqrt(V)`` (V as for the mSPRT).
   Two-sided and symmetric, each side spending half of alpha through the one-sided spending function at
   level ``alpha / 2``, as gsDesign (``test.type = 2``) and ldbounds do::

       O'Brien-Fleming type:  alpha*(t) = 2 (2 - 2 Phi(z_{1 - alpha/4} / sqrt(t)))
       Pocock type:           alpha*(t) = alpha log(1 + (e - 1) t)

   (the O'Brien-Fleming form written for the two-sided level, ``2 - 2 Phi(z_{1-alpha/2} / sqrt(t))``,
   spends a little more early and ends at 2.06 instead of 2.03 for 5 equal looks; we follow the
   packages so the boundaries can be checked against theirs). The boundary ``c_k`` solves
   ``P(|Z_k| >= c_k, |Z_j| < c_j for j < k) = alpha*(t_k) - alpha*(t_{k-1})`` under the canonical joint
   distribution (``S_k = Z_k sqrt(t_k)`` a Brownian motion in t), by the recursive numerical
   integration of Armitage, McPherson & Rowe (1969) as in Jennison & Turnbull ch. 19: the sub-density
   of ``S_k`` on the continuation region is carried on a grid of 201 points, interpolated by quadratics
   on pairs of grid steps (Simpson's rule's interpolant), and the Gaussian step to the next look is
   integrated against those quadratics exactly (moments of the truncated normal). That stays accurate
   however small the step in t, where a plain Simpson sum fails once the step's sd falls below the grid
   spacing. The boundaries agree with ldbounds / gsDesign to 1e-4. A look whose fraction did not grow
   spends nothing and keeps the previous boundary; fractions past 1 count as 1 (no alpha is left after
   the final boundary, and every further look re-reads it, which inflates the error: plan generously).
   A per-side increment below 1e-12 (the first looks of O'Brien-Fleming spending) gets the marginal
   boundary ``z_{1 - increment}``: conservative, and indistinguishable there.

   Reported at each look: the boundary; whether ``|Z_j| >= c_j`` at this or an earlier look; the alpha
   spent; the *repeated confidence interval* ``estimate +/- c_k sqrt(V)`` (Jennison & Turnbull ch. 9:
   the intervals of all looks cover together with probability 1 - alpha); and the *repeated p-value*
   ``inf {a : |Z_j| >= c_j(a) for some look j <= k}``, ``c_j(a)`` the boundaries of the same spending
   function and fractions at level ``a`` (ibid. ch. 9; found by a root search over a, one boundary
   computation per step). It is below alpha exactly when a boundary has been crossed, and being a
   minimum over the looks so far it never rises. Several treatments: the boundaries are at ``alpha / m``
   (Bonferroni over the m treatment-vs-control comparisons) and the p-value is m times the repeated
   p-value, so "p < alpha", "a boundary was crossed" and "a repeated interval excluded 0" stay one rule.
   (Holm over the repeated p-values would be valid too, by the argument of point 6, since
   ``P(min_k p_k <= a) <= a`` at every level a; Bonferroni keeps the one rule.)

   Validity needs the looks to be correlated as the fractions say, ``corr(Z_j, Z_k) = sqrt(t_j / t_k)``:
   exact for new units with final outcomes, approximate when outcomes accrue on units already counted.
   Then each day adds more information than its new units bring, so counting units inflates the error
   (6.7 % in the benchmark) and fails outright when every unit enters on the first day (the fraction is
   1 from the first look: naive peeking); exposure follows the information in both cases (5.0 % and
   4.1 %, ``docs/experiments_stats.md``).

   Why hand-written: neither scipy (1.17) nor statsmodels (0.15) computes spending-function boundaries
   or repeated p-values; the Python packages that do (``gsdesign``, ``earlysign`` on PyPI) are pre-1.0
   projects, and the computation is short and is checked in the tests against published ldbounds /
   gsDesign boundaries and against scipy's multivariate normal probabilities.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
from scipy import optimize, special, stats

Array = npt.ArrayLike  # a number or an array of them (leading batch dimensions)


# --- always-valid inference ------------------------------------------------------------------------


@dataclass(frozen=True)
class SequentialTest:
    """The mSPRT at one look: always-valid p-value (running minimum) and interval for the difference."""

    estimate: np.ndarray
    p_value: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    log_likelihood_ratio: np.ndarray


def mixing_ratio(alpha: float = 0.05) -> float:
    """``r = tau^2 / V`` at which the always-valid interval is narrowest: ``r = 2 log(1/alpha) + log(1 + r)``."""
    two_log = 2 * np.log(1 / alpha)
    return float(optimize.brentq(lambda r: r - two_log - np.log1p(r), two_log, 4 * two_log + 10))


def mixing_variance(variance: Array, n: Array, tuning_n: float, alpha: float = 0.05) -> np.ndarray:
    """``tau^2`` tuned so the interval is narrowest when the comparison has ``tuning_n`` units.

    ``variance`` is the current ``V`` of the estimate at ``n`` units (control + treatment); at the same
    split ``V`` scales as ``1 / n``, so ``V`` at ``tuning_n`` is ``variance n / tuning_n``.
    """
    return mixing_ratio(alpha) * np.asarray(variance) * np.asarray(n) / float(tuning_n)


def sequential_test(estimate: Array, variance: Array, mixing_variance: Array, alpha: float = 0.05,
                    previous_p_value: Array = 1.0) -> SequentialTest:
    """mSPRT with normal mixing (module docstring, point 4); ``previous_p_value``: the last look's p."""
    d, v, tau2 = np.asarray(estimate, float), np.asarray(variance, float), np.asarray(mixing_variance, float)
    with np.errstate(invalid="ignore", divide="ignore"):
        log_lr = 0.5 * np.log(v / (v + tau2)) + d**2 * tau2 / (2 * v * (v + tau2))
        half = np.sqrt(v * (v + tau2) / tau2 * (2 * np.log(1 / alpha) + np.log((v + tau2) / v)))
    p_value = np.fmin(np.asarray(previous_p_value, float), np.minimum(1.0, np.exp(-log_lr)))
    return SequentialTest(d, p_value, d - half, d + half, log_lr)


# --- group-sequential design with alpha spending -------------------------------------------------

Spending = Literal["obrien-fleming", "pocock"]
SPENDING_FUNCTIONS: tuple[str, ...] = ("obrien-fleming", "pocock")
GRID_POINTS = 201  # nodes of the recursive integration per look (odd: they pair into quadratic pieces)
_TINY_INCREMENT = 1e-12  # per side: below it the boundary is the marginal quantile (module docstring, 4b)
_GRID_HALF_WIDTH = 9.0  # the grid never reaches beyond 9 sd of S_k (mass < 1e-18 left out)
_FRACTION_STEP = 1e-9  # a look whose fraction grew less than this spends nothing
_MAX_P_SEARCH = 0.99  # repeated p-values above it are reported as 1


def spending_function(fraction: Array, alpha: float = 0.05, spending: Spending = "obrien-fleming") -> np.ndarray:
    """Two-sided alpha spent by information fraction ``t`` (capped at 1), half on each side.

    O'Brien-Fleming type: each side ``2 - 2 Phi(z_{1 - alpha/4} / sqrt(t))``; Pocock type: each side
    ``alpha/2 log(1 + (e - 1) t)`` (Lan & DeMets 1983; gsDesign's ``sfLDOF`` / ``sfLDPocock`` at one-sided
    level ``alpha / 2``).
    """
    _check_spending(spending, alpha)
    t = np.clip(np.asarray(fraction, dtype=float), 0.0, 1.0)
    side = alpha / 2
    if spending == "pocock":
        return 2 * side * np.log1p((np.e - 1) * t)
    with np.errstate(divide="ignore"):
        return 2 * (2 * stats.norm.sf(stats.norm.isf(side / 2) / np.sqrt(t)))


def _check_spending(spending: str, alpha: float) -> None:
    if spending not in SPENDING_FUNCTIONS:
        raise ValueError(f"spending must be one of {SPENDING_FUNCTIONS}, got {spending!r}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")


@dataclass(frozen=True)
class GroupSequentialBoundaries:
    """Per look ``(K,)``: the information fraction as used (capped at 1, never decreasing), the two-sided
    boundary for ``|z|`` and the two-sided alpha spent up to and including the look."""

    information_fraction: np.ndarray
    boundary: np.ndarray
    alpha_spent: np.ndarray


def group_sequential_boundaries(fractions: Array, alpha: float = 0.05, spending: Spending = "obrien-fleming",
                                grid_points: int = GRID_POINTS) -> GroupSequentialBoundaries:
    """Lan-DeMets boundaries for looks at ``fractions`` (known only as they happen; module docstring, 4b).

    A look whose fraction did not grow by 1e-9 spends nothing and keeps the previous boundary (inf
    before any information); fractions past 1 count as 1.
    """
    _check_spending(spending, alpha)
    if grid_points < 11 or grid_points % 2 == 0:
        raise ValueError(f"grid_points must be odd and >= 11, got {grid_points}")
    raw = np.atleast_1d(np.asarray(fractions, dtype=float))
    if raw.ndim != 1 or np.isnan(raw).any():
        raise ValueError(f"fractions must be a 1-D sequence of numbers, got {fractions!r}")
    used = np.maximum.accumulate(np.clip(raw, 0.0, 1.0))
    boundary, spent = np.full(len(used), np.inf), np.zeros(len(used))
    nodes = density = None  # S_k's sub-density on [-B_k, B_k] (not yet stopped), S_k = Z_k sqrt(t_k)
    last_t, last_alpha, last_c = 0.0, 0.0, np.inf
    for k, t in enumerate(used):
        if t <= last_t + _FRACTION_STEP:
            boundary[k], spent[k] = last_c, last_alpha
            continue
        total = float(spending_function(t, alpha, spending))
        increment = (total - last_alpha) / 2  # per side
        sigma = np.sqrt(t - last_t)
        if nodes is None or increment < _TINY_INCREMENT:
            c = float(stats.norm.isf(increment))
        else:
            c = _boundary_from_exit(nodes, density, sigma, increment) / np.sqrt(t)
        half = min(c, _GRID_HALF_WIDTH) * np.sqrt(t)
        grid = np.linspace(-half, half, grid_points)
        if nodes is None:
            density = stats.norm.pdf(grid, scale=np.sqrt(t))
        else:
            density = np.maximum(_propagate(nodes, density, grid, sigma), 0.0)
        nodes = grid
        boundary[k], spent[k] = c, total
        last_t, last_alpha, last_c = t, total, c
    return GroupSequentialBoundaries(used, boundary, spent)


def _quadratic_pieces(density: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Coefficients of ``f = c0 + c1 r + c2 r^2`` on each pair of grid steps, ``r`` in [-1, 1]."""
    left, middle, right = density[:-2:2], density[1:-1:2], density[2::2]
    return middle, (right - left) / 2, (right - 2 * middle + left) / 2


def _normal_mass(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``Phi(b) - Phi(a)`` for ``a <= b``, accurate in both tails."""
    return np.where(a > 0, special.ndtr(-a) - special.ndtr(-b), special.ndtr(b) - special.ndtr(a))


def _propagate(nodes: np.ndarray, density: np.ndarray, grid: np.ndarray, sigma: float) -> np.ndarray:
    """Sub-density of ``S + sigma eps`` at ``grid``: the quadratic interpolant of ``density`` on ``nodes``
    integrated exactly against the normal kernel (moments of the truncated normal)."""
    h = nodes[1] - nodes[0]
    mid = nodes[1:-1:2]
    a = (mid[None, :] - h - grid[:, None]) / sigma
    b = (mid[None, :] + h - grid[:, None]) / sigma
    m0 = _normal_mass(a, b)  # int u^q phi(u) du over [a, b], q = 0, 1, 2
    pdf_a, pdf_b = stats.norm.pdf(a), stats.norm.pdf(b)
    m1, m2 = pdf_a - pdf_b, m0 + a * pdf_a - b * pdf_b
    d, s = (grid[:, None] - mid[None, :]) / h, sigma / h  # r = d + s u
    c0, c1, c2 = _quadratic_pieces(density)
    return m0 @ c0 + (d * m0 + s * m1) @ c1 + (d * d * m0 + 2 * d * s * m1 + s * s * m2) @ c2


def _upper_exit(nodes: np.ndarray, density: np.ndarray, sigma: float, bound: float) -> float:
    """``P(S + sigma eps >= bound, not stopped before)``, the same quadratic interpolant integrated exactly
    against the normal tail (``int u^q Phi(u) du`` in closed form)."""
    h = nodes[1] - nodes[0]
    mid = nodes[1:-1:2]

    def antiderivatives(u: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        cdf, pdf = special.ndtr(u), stats.norm.pdf(u)
        return u * cdf + pdf, ((u * u - 1) * cdf + u * pdf) / 2, (u**3 * cdf + (u * u + 2) * pdf) / 3

    low, high = antiderivatives((mid - h - bound) / sigma), antiderivatives((mid + h - bound) / sigma)
    n0, n1, n2 = (hi - lo for lo, hi in zip(low, high))
    e, s = (bound - mid) / h, sigma / h  # r = e + s u
    c0, c1, c2 = _quadratic_pieces(density)
    return float(sigma * (n0 @ c0 + (e * n0 + s * n1) @ c1 + (e * e * n0 + 2 * e * s * n1 + s * s * n2) @ c2))


def _boundary_from_exit(nodes: np.ndarray, density: np.ndarray, sigma: float, increment: float) -> float:
    """The bound ``B`` on ``S`` (one side) whose exit probability at this look is ``increment``."""
    def gap(bound: float) -> float:
        return np.log(max(_upper_exit(nodes, density, sigma, bound), 1e-300)) - np.log(increment)

    if gap(1e-9) <= 0:  # (only near alpha = 1) the whole increment is spent at 0
        return 1e-9
    high = max(nodes[-1], sigma)
    while gap(high) > 0:
        high *= 2
    return float(optimize.brentq(gap, 1e-9, high, xtol=1e-12))


@dataclass(frozen=True)
class GroupSequentialTest:
    """One comparison's group-sequential test at its latest look.

    ``boundary``: tonight's ``|z|`` boundary; ``crossed``: at this look or any earlier one;
    ``alpha_spent``: two-sided, up to tonight (per comparison); ``p_value``: the repeated p-value, running
    minimum over the looks, times the number of comparisons (capped at 1): below alpha exactly when a
    boundary has been crossed; ``ci_low`` / ``ci_high``: the repeated confidence interval
    ``estimate +/- boundary x standard_error``.
    """

    information_fraction: float
    z_statistic: float
    boundary: float
    crossed: bool
    alpha_spent: float
    p_value: float
    ci_low: float
    ci_high: float


def group_sequential_test(fractions: Array, z_statistics: Array, estimate: float = float("nan"),
                          standard_error: float = float("nan"), alpha: float = 0.05,
                          spending: Spending = "obrien-fleming", comparisons: int = 1) -> GroupSequentialTest:
    """The test after the looks ``(fractions[k], z_statistics[k])``, tonight's last (module docstring, 4b).

    ``comparisons``: the number of treatments compared with the control; the boundaries are at
    ``alpha / comparisons`` (Bonferroni) and the p-value is multiplied by it. A NaN z (no estimate at
    that look) never crosses.
    """
    z = np.atleast_1d(np.asarray(z_statistics, dtype=float))
    if z.shape != np.atleast_1d(np.asarray(fractions, dtype=float)).shape or z.ndim != 1 or len(z) == 0:
        raise ValueError(f"fractions and z_statistics must be 1-D of the same length >= 1, got {fractions!r}, "
                         f"{z_statistics!r}")
    if comparisons < 1:
        raise ValueError(f"comparisons must be >= 1, got {comparisons}")
    level = alpha / comparisons
    bounds = group_sequential_boundaries(fractions, level, spending)
    crossed = bool(np.any(np.abs(z) >= bounds.boundary))
    p_value = min(1.0, comparisons * _repeated_p_value(bounds.information_fraction, np.abs(z), level, spending,
                                                       crossed))
    c = float(bounds.boundary[-1])
    with np.errstate(invalid="ignore"):
        half = c * standard_error if np.isfinite(c) else np.inf
    return GroupSequentialTest(float(bounds.information_fraction[-1]), float(z[-1]), c, crossed,
                               float(bounds.alpha_spent[-1]), p_value, estimate - half, estimate + half)


def _repeated_p_value(fractions: np.ndarray, abs_z: np.ndarray, level: float, spending: Spending,
                      crossed: bool) -> float:
    """``inf {a : some |z_k| >= c_k(a)}``, the boundaries ``c_k(a)`` for the same fractions at level ``a``.

    ``crossed`` (at ``level``) fixes the side of ``level`` the root lies on, so rounding in the root
    search cannot disagree with the boundary.
    """
    if not np.isfinite(abs_z).any():
        return 1.0

    def excess(log_a: float) -> float:  # increasing in a: the boundaries fall as more alpha is spent
        margin = abs_z - group_sequential_boundaries(fractions, float(np.exp(log_a)), spending).boundary
        # NaN z or an infinite boundary: no crossing; a finite floor keeps the root search's steps finite
        return float(np.max(np.where(np.isfinite(margin), margin, -50.0)))

    low, high = (np.log(1e-15), np.log(level)) if crossed else (np.log(level), np.log(_MAX_P_SEARCH))
    if crossed and excess(low) >= 0:
        return 1e-15
    if not crossed and (level >= _MAX_P_SEARCH or excess(high) < 0):
        return 1.0
    p = float(np.exp(optimize.brentq(excess, low, high, xtol=1e-10)))
    return min(p, level * (1 - 1e-12)) if crossed else max(p, level)
