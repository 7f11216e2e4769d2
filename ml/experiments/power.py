"""Power and sample size of an A/B test (the statistics engine's point 7, :mod:`ml.experiments.stats`, which
re-exports these names): the normal-approximation power of the fixed-horizon and the sequential tests, and the
sample a planned experiment needs.

7. **Sample size** (:func:`plan_sample_size`): the normal-approximation power of a two-sided test of
   standardised effect ``es`` with ``n_c`` control and ``ratio n_c`` treatment units,
   ``Phi(es sqrt(n_eff) - z) + Phi(-es sqrt(n_eff) - z)``, ``n_eff = 1 / (1/n_c + 1/n_t)`` (statsmodels
   ``NormalIndPower``), solved for ``n_c``. ``es`` is Cohen's h for a proportion
   (``2 asin sqrt(p (1 + mde)) - 2 asin sqrt(p)``, statsmodels ``proportion_effectsize``) and Cohen's d
   for a mean, ``mde mean / sd_pooled`` with ``sd_pooled^2 = (sd^2 + (sd (1 + mde))^2) / 2``: the
   treatment's sd is taken to scale with its mean (an effect that scales every basket), which a plain
   ``mde mean / sd`` ignores (at a 20 % lift on skewed revenue that overstated the power by ~9 points).
   Alpha is divided by the number of treatments (Bonferroni: a bound on the Holm analysis). The sequential design's sample: the smallest comparison size at which, with the
   interval tuned there, the always-valid interval excludes 0 with the given power *at that look alone*
   (earlier looks only add chances, so this is an upper bound on what the mSPRT needs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np
import numpy.typing as npt
from scipy import optimize, stats

from ml.experiments.sequential import mixing_ratio

Array = npt.ArrayLike  # a number or an array of them (leading batch dimensions)


# --- power and sample size -------------------------------------------------------------------------


def standardised_effect(baseline: float, mde: float, sd: float | None = None) -> float:
    """Cohen's h for a proportion (``sd`` None) or Cohen's d for a mean (module docstring, point 7)."""
    if sd is None:
        treated = baseline * (1 + mde)
        if not (0 < baseline < 1 and 0 < treated < 1):
            raise ValueError(f"a proportion and its lift must lie in (0, 1), got {baseline} x (1 + {mde})")
        return float(abs(2 * np.arcsin(np.sqrt(treated)) - 2 * np.arcsin(np.sqrt(baseline))))
    if sd <= 0:
        raise ValueError(f"sd must be positive, got {sd}")
    # the treatment's sd scales with its mean (a constant coefficient of variation)
    return float(abs(mde * baseline) / (sd * np.sqrt((1 + (1 + mde) ** 2) / 2)))


def fixed_power(effect_size: Array, n_control: Array, ratio: Array = 1.0, alpha: float = 0.05) -> np.ndarray:
    """Power of the two-sided fixed-horizon test (statsmodels ``NormalIndPower().power``)."""
    n_c = np.asarray(n_control, float)
    n_eff = 1 / (1 / n_c + 1 / (n_c * np.asarray(ratio, float)))
    shift, z = np.asarray(effect_size) * np.sqrt(n_eff), stats.norm.isf(alpha / 2)
    return stats.norm.sf(z - shift) + stats.norm.cdf(-z - shift)


def _sequential_power(effect_size: float, n_control: float, ratio: float, alpha: float) -> float:
    # at the tuning look tau^2 = r V, and the interval's half width is sqrt(V) sqrt((1 + r) / r (2L + log(1 + r)))
    r = mixing_ratio(alpha)
    k = np.sqrt((1 + r) / r * (2 * np.log(1 / alpha) + np.log1p(r)))
    shift = effect_size / np.sqrt(1 / n_control + 1 / (n_control * ratio))
    return float(stats.norm.sf(k - shift) + stats.norm.cdf(-k - shift))


@dataclass(frozen=True)
class SamplePlan:
    """Units per variant, in total and days of traffic, for the fixed-horizon and the sequential test.

    ``sequential_tuning_n`` is the comparison size (control + one treatment) to pass as
    :attr:`ExperimentConfig.sequential_tuning_n` so the sequential test's interval is narrowest there.
    """

    n_per_variant: dict[str, int]
    total: int
    days: int
    effect_size: float
    alpha_per_comparison: float
    power: float
    sequential_n_per_variant: dict[str, int]
    sequential_total: int
    sequential_days: int
    sequential_tuning_n: int
    note: str


def plan_sample_size(*, baseline: float, mde: float, weights: Mapping[str, float], control: str,
                     units_per_day: float, sd: float | None = None, alpha: float = 0.05, power: float = 0.8,
                     correct_for_variants: bool = True) -> SamplePlan:
    """Sample size and duration to detect a relative ``mde`` on every treatment vs ``control``.

    ``baseline`` is the control's rate (proportion, ``sd`` None) or mean (``sd`` its standard
    deviation per unit). ``weights``: the traffic split over all variants, control included;
    ``units_per_day``: new units entering the experiment per day, all variants together.
    """
    shares = variant_shares(weights, control)
    if not (0 < alpha < 1 and 0 < power < 1) or units_per_day <= 0 or mde == 0:
        raise ValueError(f"need 0 < alpha, power < 1, units_per_day > 0 and mde != 0 "
                         f"(alpha={alpha}, power={power}, units_per_day={units_per_day}, mde={mde})")
    effect = standardised_effect(baseline, mde, sd)
    treatments = [v for v in shares if v != control]
    alpha_c = alpha / len(treatments) if correct_for_variants else alpha

    def solve(power_of: Callable[[float, float, float, float], float]) -> float:
        # the comparison needing the most traffic decides the total
        totals = []
        for v in treatments:
            ratio = shares[v] / shares[control]
            n_c = optimize.brentq(lambda n: power_of(effect, n, ratio, alpha_c) - power, 1e-6, 1e12, xtol=1e-9)
            totals.append(n_c / shares[control])
        return max(totals)

    total = solve(lambda es, n, ratio, a: float(fixed_power(es, n, ratio, a)))
    seq_total = solve(_sequential_power)
    per_variant = {v: int(np.ceil(total * s)) for v, s in shares.items()}
    seq_per_variant = {v: int(np.ceil(seq_total * s)) for v, s in shares.items()}
    tuning = max(seq_per_variant[control] + seq_per_variant[v] for v in treatments)
    note = ("fixed-horizon sizes are for one analysis at the planned sample; the sequential sizes are for the "
            "always-valid test read daily, tuned at sequential_tuning_n (an upper bound: earlier looks add power)")
    return SamplePlan(per_variant, sum(per_variant.values()), int(np.ceil(sum(per_variant.values()) / units_per_day)),
                      effect, alpha_c, power, seq_per_variant, sum(seq_per_variant.values()),
                      int(np.ceil(sum(seq_per_variant.values()) / units_per_day)), tuning, note)


def variant_shares(weights: Mapping[str, float], control: str) -> dict[str, float]:
    """Each variant's share of the units from its weight; raises without the control, a treatment or a
    positive weight."""
    if control not in weights or len(weights) < 2:
        raise ValueError(f"weights need the control {control!r} and at least one treatment, got {dict(weights)}")
    if any(w <= 0 for w in weights.values()):
        raise ValueError(f"weights must be positive, got {dict(weights)}")
    total = float(sum(weights.values()))
    return {str(v): w / total for v, w in weights.items()}
