"""Benchmark: the experiment statistics (:mod:`ml.experiments.stats`) on simulated experiments with known truth.

Writes ``docs/experiments_stats.md`` (and prints it). Every simulation is vectorised across experiments
through the module's own batched functions (:func:`~ml.experiments.stats.summary_from_sums`,
:func:`~ml.experiments.stats.cuped`, the tests); nothing here re-implements a statistic.

1. **A/A, conversion, daily looks.** ``--aa-sims`` experiments, ``--units-per-day`` new units a day split
   50/50 at random for ``--days`` days; each unit orders at a rate ``lambda ~ Gamma(0.3, mean 0.02 / day)``
   and converts on its first order, so outcomes keep accruing on units already counted. Every day: the
   z test (naive peeking: significant on any day), the mSPRT (always-valid p-value, running minimum),
   the group-sequential test (Lan-DeMets alpha spending, information fraction = units so far over
   ``planned_n``, with ``planned_n`` the final sample and 20 % below and above it) and, at the last day
   only, the fixed test. The mSPRT's tuning (``sequential_tuning_n``) is swept over fractions of the
   final sample.
2. **A/A, revenue per unit with CUPED, daily looks.** ``--revenue-sims`` experiments; each unit has an
   order rate ``Gamma(0.3, mean 0.03 / day)`` and its own mean order value (lognormal); ``x`` is its
   revenue over the 56 days before the experiment (missing for a share of new units: the covariates
   are ``[x filled, missing indicator]``), ``y`` its revenue since its assignment. Welch with and
   without CUPED, the mSPRT and the group-sequential test on both; the variance reduction and
   ``corr(x, y)`` at the last day per missing share.
3. **Power vs the calculator.** :func:`~ml.experiments.stats.plan_sample_size` for a conversion and a
   revenue metric, then ``--power-sims`` experiments at the planned sample (and at half of it) with the
   planted effect: share significant at alpha 0.05 against :func:`~ml.experiments.stats.fixed_power`.
   The group-sequential test and the mSPRT read at 28 equal looks up to the planned (fixed-horizon)
   sample, and the mSPRT at 28 looks up to the plan's *sequential* sample.
4. **Sample ratio mismatch.** ``--srm-sims`` healthy 50/50 experiments and as many where 5 % of the
   treatment's units are lost, at ``--srm-units-per-day`` x 7, 14 and 28 days; and the A/A runs of
   section 1 checked every day.

Run from the repository root (under a minute on 2 cores)::

    .venv/bin/python benchmarks/experiments.py
    .venv/bin/python benchmarks/experiments.py --aa-sims 2000 --seed 7 --output /tmp/experiments_stats.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from ml.experiments.stats import (
    ArmSummary,
    cuped,
    fixed_power,
    group_sequential_boundaries,
    mean_difference_sequential,
    mixing_variance,
    plan_sample_size,
    proportions_z_test,
    sample_ratio_test,
    sequential_test,
    standardised_effect,
    summary_from_sums,
    welch_t_test,
)

ROOT = Path(__file__).resolve().parents[1]
ALPHA = 0.05
PRE_DAYS = 56
TUNING_FRACTIONS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0)
#: group-sequential designs of section 1: (spending function, planned_n as a multiple of the final sample)
GS_DESIGNS = (("obrien-fleming", 1.0), ("obrien-fleming", 0.8), ("obrien-fleming", 1.2), ("pocock", 1.0))
LOOKS = 28


def group_sequential_rejects(fractions: np.ndarray, z: np.ndarray, spending: str = "obrien-fleming") -> np.ndarray:
    """Whether each run's ``|z| (runs, looks)`` ever crosses its Lan-DeMets boundary at ``fractions (runs, looks)``
    (the boundaries of :func:`~ml.experiments.stats.group_sequential_boundaries`, computed once per distinct
    sequence of fractions). A NaN z (no estimate yet) never crosses."""
    crossed = np.zeros(len(z), dtype=bool)
    sequences, which = np.unique(np.asarray(fractions, dtype=float), axis=0, return_inverse=True)
    which = np.asarray(which).reshape(-1)
    for i, sequence in enumerate(sequences):
        boundary = group_sequential_boundaries(sequence, ALPHA, spending).boundary
        runs = which == i
        crossed[runs] = (np.abs(z[runs]) >= boundary).any(axis=1)
    return crossed


def _z(estimate: np.ndarray, variance: np.ndarray) -> np.ndarray:
    """The statistic the group-sequential test reads (as ``analyse_metric``): estimate over sqrt(V)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return estimate / np.sqrt(variance)


# --- 1. A/A conversion --------------------------------------------------------------------------------


def simulate_conversions(sims: int, days: int, units_per_day: int, rng: np.random.Generator,
                         chunk: int = 100, all_at_start: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative units and converted units, each ``(sims, 2 arms, days)``, of A/A experiments; with
    ``all_at_start`` the same ``days x units_per_day`` units all enter on the first day."""
    n = np.zeros((sims, 2, days))
    converted = np.zeros((sims, 2, days))
    for start in range(0, sims, chunk):
        size = min(chunk, sims - start)
        units = size * days * units_per_day
        sim = np.repeat(np.arange(size), days * units_per_day)
        day = np.tile(np.repeat(np.arange(days), units_per_day), size)
        if all_at_start:
            day = np.zeros_like(day)
        arm = (rng.random(units) < 0.5).astype(np.int64)
        rate = rng.gamma(0.3, 0.02 / 0.3, units)
        with np.errstate(divide="ignore"):
            conversion_day = day + np.floor(rng.exponential(1.0, units) / rate)
        cell = (sim * 2 + arm) * days
        n[start:start + size] = np.bincount(cell + day, minlength=size * 2 * days).reshape(size, 2, days)
        seen = conversion_day < days
        converted[start:start + size] = np.bincount(
            cell[seen] + conversion_day[seen].astype(np.int64), minlength=size * 2 * days).reshape(size, 2, days)
    return np.cumsum(n, axis=2), np.cumsum(converted, axis=2)


def aa_conversion(sims: int, days: int, units_per_day: int, seed: int, fractions: tuple[float, ...],
                  all_at_start: bool = False) -> dict:
    rng = np.random.default_rng(seed)
    n, converted = simulate_conversions(sims, days, units_per_day, rng, all_at_start=all_at_start)
    fixed = proportions_z_test(converted[:, 0], n[:, 0], converted[:, 1], n[:, 1], ALPHA)  # (sims, days)
    p_c, p_t = converted[:, 0] / n[:, 0], converted[:, 1] / n[:, 1]
    variance = p_c * (1 - p_c) / n[:, 0] + p_t * (1 - p_t) / n[:, 1]
    horizon = days * units_per_day
    sweep = {}
    for fraction in fractions:
        tuning_n = fraction * horizon
        previous = np.ones(sims)
        for t in range(days):  # one look a day, the running minimum carried like the nightly job does
            look = sequential_test(fixed.estimate[:, t], variance[:, t],
                                   mixing_variance(variance[:, t], n[:, 0, t] + n[:, 1, t], tuning_n, ALPHA),
                                   ALPHA, previous)
            previous = look.p_value
        sweep[fraction] = float(np.mean(previous < ALPHA))
    z = _z(fixed.estimate, variance)
    units = n.sum(axis=1)  # (sims, days): all variants, as analyse_metric counts them
    exposure = np.cumsum(units, axis=1)  # unit-days: every unit present adds a day at every look
    group = {(scale_name, spending, scale): float(np.mean(group_sequential_rejects(
                 information / (scale * information[:, -1:]), z, spending)))
             for scale_name, information in (("units", units), ("exposure", exposure))
             for spending, scale in GS_DESIGNS}
    srm = sample_ratio_test(n.transpose(0, 2, 1), [1, 1])
    return {
        "sims": sims, "days": days, "units_per_day": units_per_day, "seed": seed, "horizon": horizon,
        "all_at_start": all_at_start,
        "conversion_rate": float(converted[:, :, -1].sum() / n[:, :, -1].sum()),
        "naive": float(np.mean((fixed.p_value < ALPHA).any(axis=1))),
        "final": float(np.mean(fixed.p_value[:, -1] < ALPHA)),
        "sweep": sweep,
        "group": group,
        "srm_any_day": float(np.mean(srm.detected.any(axis=1))),
        "srm_final": float(np.mean(srm.detected[:, -1])),
    }


# --- 2. A/A revenue with CUPED -----------------------------------------------------------------------


def simulate_revenue_sums(sims: int, days: int, units_per_day: int, missing_share: float,
                          rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Per (sim, arm, day) the sums the analysis needs, for covariates ``z = [x filled with 0, missing]``."""
    units = sims * days * units_per_day
    sim = np.repeat(np.arange(sims), days * units_per_day)
    day = np.tile(np.repeat(np.arange(days), units_per_day), sims)
    arm = (rng.random(units) < 0.5).astype(np.int64)
    rate = rng.gamma(0.3, 0.03 / 0.3, units)  # corr(x, y) ~0.6 at the last look
    order_value = rng.lognormal(np.log(40.0), 0.5, units)  # the unit's own typical basket

    def orders(exposure: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        count = rng.poisson(rate * exposure)
        owner = np.repeat(np.arange(units), count)
        return owner, order_value[owner] * rng.lognormal(-0.125, 0.5, len(owner))

    owner, value = orders(np.full(units, float(PRE_DAYS)))
    x = np.bincount(owner, weights=value, minlength=units)
    missing = rng.random(units) < missing_share
    x[missing] = 0.0  # the fill value does not matter beside the missing indicator
    m = missing.astype(float)
    owner, value = orders(days - day)
    order_day = day[owner] + np.floor(rng.random(len(owner)) * (days - day[owner])).astype(np.int64)
    by_day = np.argsort(order_day, kind="stable")
    owner, value, order_day = owner[by_day], value[by_day], order_day[by_day]
    bounds = np.searchsorted(order_day, np.arange(days + 1))
    group = sim * 2 + arm
    cells = sims * 2
    sums = {name: np.zeros((cells, days)) for name in ("n", "y", "y2", "x", "m", "xx", "xm", "xy", "my", "my2")}
    y = np.zeros(units)
    for t in range(days):
        y += np.bincount(owner[bounds[t]:bounds[t + 1]], weights=value[bounds[t]:bounds[t + 1]], minlength=units)
        here = day <= t
        g = group[here]
        for name, weights in (("n", None), ("y", y[here]), ("y2", y[here] ** 2), ("x", x[here]), ("m", m[here]),
                              ("xx", x[here] ** 2), ("xm", x[here] * m[here]), ("xy", x[here] * y[here]),
                              ("my", m[here] * y[here]), ("my2", m[here] * y[here] ** 2)):
            sums[name][:, t] = np.bincount(g, weights=weights, minlength=cells)
    return {name: s.reshape(sims, 2, days) for name, s in sums.items()}


def _arm_summaries(sums: dict[str, np.ndarray], arm: int, covariates: bool):
    s = {name: value[:, arm] for name, value in sums.items()}  # (sims, days)
    if not covariates:
        return summary_from_sums(s["n"], s["y"], s["y2"])
    sum_z = np.stack([s["x"], s["m"]], axis=-1)
    sum_zz = np.stack([np.stack([s["xx"], s["xm"]], -1), np.stack([s["xm"], s["m"]], -1)], axis=-2)
    sum_zy = np.stack([s["xy"], s["my"]], axis=-1)
    return summary_from_sums(s["n"], s["y"], s["y2"], sum_z, sum_zz, sum_zy)


def _pooled_correlation(sums: dict[str, np.ndarray]) -> float:
    """corr(x, y) at the last day over the units with a pre-period value (both arms; per run, averaged)."""
    last = {name: value[..., -1].sum(axis=1) for name, value in sums.items()}
    # units without x have x = 0 and m = 1: their x-sums vanish, their y-sums are taken out
    n, y, y2 = last["n"] - last["m"], last["y"] - last["my"], last["y2"] - last["my2"]
    cov = last["xy"] / n - (last["x"] / n) * (y / n)
    var_x = last["xx"] / n - (last["x"] / n) ** 2
    var_y = y2 / n - (y / n) ** 2
    return float(np.mean(cov / np.sqrt(var_x * var_y)))


def _look(arm: ArmSummary, t: int) -> ArmSummary:
    """Day ``t`` of an arm summarised as ``(sims, days, ...)``."""
    return ArmSummary(*(np.asarray(f)[:, t] for f in (arm.n, arm.mean, arm.variance, arm.covariate_mean,
                                                       arm.covariate_cov, arm.cross_cov)))


def aa_revenue(sims: int, days: int, units_per_day: int, missing_share: float, seed: int,
               tuning_fraction: float) -> dict:
    rng = np.random.default_rng(seed)
    sums = simulate_revenue_sums(sims, days, units_per_day, missing_share, rng)
    raw = [_arm_summaries(sums, a, covariates=False) for a in (0, 1)]
    full = [_arm_summaries(sums, a, covariates=True) for a in (0, 1)]
    adjusted = cuped(full)
    welch_raw = welch_t_test(raw[0], raw[1], ALPHA)
    welch_cuped = welch_t_test(adjusted.arms[0], adjusted.arms[1], ALPHA)
    tuning_n = tuning_fraction * days * units_per_day
    group = {}
    for label, arms, test in (("raw", raw, welch_raw), ("cuped", adjusted.arms, welch_cuped)):
        variance = arms[0].variance / arms[0].n + arms[1].variance / arms[1].n
        units = arms[0].n + arms[1].n
        exposure = np.cumsum(units, axis=1)
        for scale_name, information in (("units", units), ("exposure", exposure)):
            group[label, scale_name] = float(np.mean(group_sequential_rejects(information / information[:, -1:],
                                                                              _z(test.estimate, variance))))
    previous_raw, previous_cuped = np.ones(sims), np.ones(sims)
    for t in range(days):  # one look a day, the running minimum carried
        previous_raw = mean_difference_sequential(_look(raw[0], t), _look(raw[1], t), tuning_n, ALPHA,
                                                  previous_raw).p_value
        previous_cuped = mean_difference_sequential(_look(adjusted.arms[0], t), _look(adjusted.arms[1], t), tuning_n,
                                                    ALPHA, previous_cuped).p_value
    last = [{"n": a.n[:, -1], "variance": a.variance[:, -1]} for a in (*adjusted.arms, *raw)]
    width_ratio = np.sqrt(sum(a["variance"] / a["n"] for a in last[:2]) / sum(a["variance"] / a["n"] for a in last[2:]))
    return {
        "sims": sims, "missing_share": missing_share, "seed": seed, "tuning_fraction": tuning_fraction,
        "mean_y": float(np.mean(raw[0].mean[:, -1])),
        "corr": _pooled_correlation(sums),
        "reduction": float(np.mean(adjusted.variance_reduction[0][:, -1])),
        "reduction_day7": float(np.mean(adjusted.variance_reduction[0][:, 6])) if days > 6 else float("nan"),
        "width_ratio": float(np.mean(width_ratio)),
        "naive_raw": float(np.mean((welch_raw.p_value < ALPHA).any(axis=1))),
        "naive_cuped": float(np.mean((welch_cuped.p_value < ALPHA).any(axis=1))),
        "final_raw": float(np.mean(welch_raw.p_value[:, -1] < ALPHA)),
        "final_cuped": float(np.mean(welch_cuped.p_value[:, -1] < ALPHA)),
        "sequential_raw": float(np.mean(previous_raw < ALPHA)),
        "sequential_cuped": float(np.mean(previous_cuped < ALPHA)),
        "group": group,
    }


# --- 3. power ----------------------------------------------------------------------------------------


def power_proportion(baseline: float, mde: float, sims: int, rng: np.random.Generator,
                     planned_rng: np.random.Generator) -> list[dict]:
    """Fixed test at the planned n and half of it, mSPRT at the sequential n (``rng``); the sequential tests
    at 28 looks up to the planned n (``planned_rng``, so the other rows draw as they always did)."""
    plan = plan_sample_size(baseline=baseline, mde=mde, weights={"A": 1, "B": 1}, control="A", units_per_day=1000)
    effect = standardised_effect(baseline, mde)
    rows = []
    for label, n in (("planned n", plan.n_per_variant["A"]), ("half the planned n", plan.n_per_variant["A"] // 2)):
        c = rng.binomial(n, baseline, sims)
        t = rng.binomial(n, baseline * (1 + mde), sims)
        test = proportions_z_test(c, n, t, n, ALPHA)
        rows.append({"metric": f"conversion {baseline:.0%}, lift {mde:+.0%}", "design": label, "n": n,
                     "predicted": float(fixed_power(effect, n, 1.0, ALPHA)),
                     "observed": float(np.mean(test.p_value < ALPHA)), "fixed": True})
    metric = f"conversion {baseline:.0%}, lift {mde:+.0%}"
    # the always-valid test read at 28 equal looks up to the sequential plan's sample
    n_seq = plan.sequential_n_per_variant["A"]
    looks = _equal_looks(n_seq, baseline, mde, sims, rng)
    rows.append({"metric": metric, "design": f"sequential n, mSPRT at {LOOKS} looks", "n": n_seq,
                 "predicted": plan.power, "observed": float(np.mean(_msprt_rejects(looks, plan.sequential_tuning_n))),
                 "fixed": False})
    # both sequential tests read at 28 equal looks up to the fixed-horizon plan's sample
    n_fixed = plan.n_per_variant["A"]
    looks = _equal_looks(n_fixed, baseline, mde, sims, planned_rng)
    fractions = np.broadcast_to(looks["n"] / n_fixed, looks["estimate"].shape)
    for spending in ("obrien-fleming", "pocock"):
        crossed = group_sequential_rejects(fractions, _z(looks["estimate"], looks["variance"]), spending)
        rows.append({"metric": metric, "design": f"planned n, group-sequential ({spending}) at {LOOKS} looks",
                     "n": n_fixed, "predicted": float(fixed_power(effect, n_fixed, 1.0, ALPHA)),
                     "observed": float(np.mean(crossed)), "fixed": False})
    rows.append({"metric": metric, "design": f"planned n, mSPRT at {LOOKS} looks (tuned at the planned n)",
                 "n": n_fixed, "predicted": float(fixed_power(effect, n_fixed, 1.0, ALPHA)),
                 "observed": float(np.mean(_msprt_rejects(looks, 2 * n_fixed))), "fixed": False})
    return rows


def _equal_looks(n_final: int, baseline: float, mde: float, sims: int, rng: np.random.Generator) -> dict:
    """A/B conversion experiments read at LOOKS equal looks up to ``n_final`` units per arm: per look the
    units per arm ``n (looks,)``, the difference and its (unpooled) variance ``(sims, looks)``."""
    steps = np.diff(np.linspace(0, n_final, LOOKS + 1).round().astype(int))
    c = np.cumsum(rng.binomial(steps, baseline, (sims, LOOKS)), axis=1)
    t = np.cumsum(rng.binomial(steps, baseline * (1 + mde), (sims, LOOKS)), axis=1)
    n = np.cumsum(steps)
    p_c, p_t = c / n, t / n
    return {"n": n, "estimate": p_t - p_c, "variance": (p_c * (1 - p_c) + p_t * (1 - p_t)) / n}


def _msprt_rejects(looks: dict, tuning_n: float) -> np.ndarray:
    previous = np.ones(looks["estimate"].shape[0])
    for k, n in enumerate(looks["n"]):
        variance = looks["variance"][:, k]
        previous = sequential_test(looks["estimate"][:, k], variance, mixing_variance(variance, 2 * n, tuning_n),
                                   ALPHA, previous).p_value
    return previous < ALPHA


def power_revenue(buy_rate: float, value_mean: float, value_sd: float, mde: float, sims: int,
                  rng: np.random.Generator) -> list[dict]:
    """Revenue per unit: zero unless the unit buys, then a lognormal basket (skewed, zero-inflated)."""
    mean = buy_rate * value_mean
    sd = np.sqrt(buy_rate * (value_sd**2 + value_mean**2) - mean**2)
    plan = plan_sample_size(baseline=mean, sd=sd, mde=mde, weights={"A": 1, "B": 1}, control="A", units_per_day=1000)
    sigma2 = np.log1p((value_sd / value_mean) ** 2)
    rows = []
    for label, n in (("planned n", plan.n_per_variant["A"]), ("half the planned n", plan.n_per_variant["A"] // 2)):
        arms = []
        for scale in (1.0, 1 + mde):  # the effect scales every basket
            buyers = rng.binomial(n, buy_rate, sims)
            values = scale * rng.lognormal(np.log(value_mean) - sigma2 / 2, np.sqrt(sigma2), buyers.sum())
            owner = np.repeat(np.arange(sims), buyers)
            arms.append(summary_from_sums(np.full(sims, n), np.bincount(owner, values, sims),
                                          np.bincount(owner, values**2, sims)))
        test = welch_t_test(arms[0], arms[1], ALPHA)
        rows.append({"metric": f"revenue/unit (mean {mean:.1f}, sd {sd:.1f}), lift {mde:+.0%}", "design": label,
                     "n": n, "predicted": float(fixed_power(plan.effect_size, n, 1.0, ALPHA)),
                     "observed": float(np.mean(test.p_value < ALPHA)), "fixed": True})
    return rows


# --- 4. SRM ------------------------------------------------------------------------------------------


def srm(sims: int, units_per_day: int, loss: float, rng: np.random.Generator) -> list[dict]:
    rows = []
    for days in (7, 14, 28):
        arrived = units_per_day * days
        treatment = rng.binomial(arrived, 0.5, sims)
        control = arrived - treatment
        lost = rng.binomial(treatment, 1 - loss)
        healthy = sample_ratio_test(np.stack([control, treatment], -1), [1, 1])
        broken = sample_ratio_test(np.stack([control, lost], -1), [1, 1])
        rows.append({"days": days, "units": arrived, "false_alarms": float(np.mean(healthy.detected)),
                     "detected": float(np.mean(broken.detected))})
    return rows


# --- report ------------------------------------------------------------------------------------------


def _tree() -> str:
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True,
                           cwd=ROOT).stdout.strip()
    return head + (" + uncommitted changes (the experiment modules are new, untracked files)" if dirty else
                   " (the experiment modules are new, untracked files)")


def _pct(value: float) -> str:
    return f"{100 * value:.1f} %"


def _group_rows(aa: dict) -> list[str]:
    """The group-sequential rows of an A/A conversion table."""
    names = {"units": "units / planned_n", "exposure": "exposure / planned_exposure"}
    plans = {1.0: "planned at the final sample", 0.8: "planned 20 % too small", 1.2: "planned 20 % too large"}
    return [f"| group-sequential ({spending}), information {names[scale_name]}, {plans[scale]} | {_pct(rate)} |"
            for (scale_name, spending, scale), rate in aa["group"].items()]


def render(args: argparse.Namespace, results: dict, seconds: dict[str, float]) -> str:
    aa, revenue, power, srm_rows = results["aa"], results["revenue"], results["power"], results["srm"]
    start = results["aa_start"]
    best = max(aa["sweep"], key=aa["sweep"].get)
    gap = max(abs(100 * (r["observed"] - r["predicted"])) for r in power if r["fixed"])
    gs_exposure, gs_units = aa["group"]["exposure", "obrien-fleming", 1.0], aa["group"]["units", "obrien-fleming", 1.0]
    gs_start = start["group"]["exposure", "obrien-fleming", 1.0]
    band = all(0.03 <= rate <= 0.07 for rate in (gs_exposure, gs_start))
    lines = [
        "# Experiment statistics: validation by simulation",
        "",
        "Generated by `benchmarks/experiments.py` (do not edit by hand); the statistics are",
        "`ml/experiments/stats.py` (its docstring has the formulas and the papers), tests",
        "`tests/unit/test_experiment_stats.py`.",
        "",
        f"- command: `{results['command']}`",
        f"- date: {results['date']}; tree: {results['tree']}",
        f"- seeds: {args.seed} (A/A conversion), {args.seed + 1}, {args.seed + 2}, {args.seed + 3} (revenue, "
        "0 / 30 / 60 % without a pre-period), "
        f"{args.seed + 10}, {args.seed + 12} (power; the second for the sequential tests at the planned n), "
        f"{args.seed + 20} (SRM), {args.seed + 30} (A/A conversion, all units at the start)",
        f"- wall time: {sum(seconds.values()):.0f} s in total ("
        + ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items()) + ") on 2 shared cores",
        "",
        "## Against the issue's criteria",
        "",
        "| criterion | measured | met |",
        "|---|---|---|",
        f"| sequential false-positive rate at alpha 0.05 in [3 %, 7 %] ({aa['sims']} A/A runs, {aa['days']} daily looks) "
        f"| group-sequential (O'Brien-Fleming spending, information = exposure, planned at the final sample): "
        f"{_pct(gs_exposure)}, and {_pct(gs_start)} when every unit enters on the first day ({start['sims']} runs); "
        f"(information = units: {_pct(gs_units)}, and {_pct(start['group']['units', 'obrien-fleming', 1.0])} with "
        f"every unit on the first day); mSPRT {_pct(aa['sweep'][args.tuning_fraction])} (tuned at "
        f"{args.tuning_fraction:g} x the final sample; best tuning {_pct(max(aa['sweep'].values()))}); naive daily "
        f"peeking {_pct(aa['naive'])}, last day only {_pct(aa['final'])} | "
        f"{'yes, group-sequential by exposure' if band else 'no, see 1'}; the mSPRT is valid but conservative |",
        f"| power within +/- 5 points of the calculator (fixed test at the planned n and at half of it) | largest gap "
        f"{gap:.1f} points | {'yes' if gap <= 5 else 'no'} |",
        f"| CUPED variance reduction >= 30 % where corr(x, y) ~0.6 | {_pct(revenue[0]['reduction'])} at corr "
        f"{revenue[0]['corr']:.2f} | {'yes' if revenue[0]['reduction'] >= 0.3 else 'no'} |",
        f"| SRM detected in >= 95 % of broken runs, false alarms <= 1 % | {_pct(srm_rows[-1]['detected'])} / "
        f"{_pct(srm_rows[-1]['false_alarms'])} at {srm_rows[-1]['units']:,} units | "
        f"{'yes' if srm_rows[-1]['detected'] >= 0.95 and srm_rows[-1]['false_alarms'] <= 0.01 else 'no'} |",
        "| fixed-horizon tests equal statsmodels / scipy | asserted in `tests/unit/test_experiment_stats.py` | yes |",
        "",
        "## 1. A/A conversion, analysed every day",
        "",
        f"{aa['sims']} A/A experiments, {aa['units_per_day']} new units a day split 50/50 at random, "
        f"{aa['days']} daily looks; outcomes accrue on units already counted (conversion by the look's day: "
        f"{_pct(aa['conversion_rate'])} at the last look). Rejection at alpha = {ALPHA} on any day "
        f"(the false-positive rate of a team that looks daily):",
        "",
        "| method | false-positive rate |",
        "|---|---|",
        f"| fixed z test, every day (naive peeking) | {_pct(aa['naive'])} |",
        f"| fixed z test, last day only | {_pct(aa['final'])} |",
    ]
    for fraction, rate in aa["sweep"].items():
        lines.append(f"| mSPRT, tuned at {fraction:g} x the final sample ({fraction * aa['horizon']:,.0f} units)"
                     f"{' (default of the report)' if fraction == args.tuning_fraction else ''} | {_pct(rate)} |")
    lines += _group_rows(aa)
    se = np.sqrt(0.05 * 0.95 / aa["sims"])
    lines += [
        "",
        f"Monte Carlo standard error of a rate near 5 %: {100 * se:.1f} points. The always-valid test stays "
        f"below alpha for every tuning (the guarantee holds); its highest rate here is {_pct(aa['sweep'][best])} "
        f"(tuned at {best:g} x the final sample), **below the [3 %, 7 %] band the issue asks for**. That is "
        "the price of validity at *every* look for ever: the mixture boundary is built for continuous "
        "monitoring over an unbounded horizon, and 28 discrete looks use only part of the alpha it spends. "
        "No honest mixing variance brings it to 5 %. Accruing outcomes did not break the bound. (The report's "
        "tuning, 0.25 x the final sample, was chosen before this run from a Gaussian model of the same looks; "
        "`ExperimentConfig`'s default is 5,000 units as GrowthBook's, and `plan_sample_size(...).sequential_tuning_n` "
        "is the one to pass.)",
        "",
        "The group-sequential test (`ExperimentConfig(planned_n=...)` or `planned_exposure=...`) spends alpha over "
        "the planned information instead, so it uses all of it by the planned end: "
        f"{_pct(gs_exposure)} when its information fraction is the *exposure* (unit-days in the experiment) over "
        f"the planned exposure. Counting *units* instead gives {_pct(gs_units)}: outcomes keep accruing on units "
        "already counted, so each day adds more information than its new units, the looks are less correlated "
        "than the design assumes (corr(Z_7, Z_28) ~0.29 measured, 0.50 assumed by units, 0.26 by exposure) and the "
        "early, stricter boundaries are wasted. A plan that is too small ends the spending early: past the planned "
        "information every look is read against the final boundary again, and each such look inflates the rate; "
        "a plan that is too large leaves alpha unspent (conservative).",
        "",
        f"Sample ratio check on the same A/A runs: false alarms {_pct(aa['srm_final'])} at the last day, "
        f"{_pct(aa['srm_any_day'])} on any of the {aa['days']} days (threshold p < 0.001).",
        "",
        "### 1b. Every unit enters on the first day",
        "",
        "What revopt's assignment does for existing customers and for products (eligible from the first night): "
        f"{start['sims']} A/A runs, the same {start['horizon']:,} units all assigned on day 1, the same outcome "
        f"process, {start['days']} daily looks (conversion {_pct(start['conversion_rate'])} at the last look).",
        "",
        "| method | false-positive rate |",
        "|---|---|",
        f"| fixed z test, every day (naive peeking) | {_pct(start['naive'])} |",
        f"| fixed z test, last day only | {_pct(start['final'])} |",
        f"| mSPRT, tuned at {args.tuning_fraction:g} x the final sample | {_pct(start['sweep'][args.tuning_fraction])} |",
        *_group_rows(start),
        "",
        "Counted in units the information fraction is 1 from the first look: the whole alpha is spent on day 1 and "
        "every later look is read against the fixed-horizon boundary, i.e. naive peeking. Only the exposure "
        "scale follows the information here; pass `planned_exposure` (and each unit's `exposure`) for such "
        "experiments.",
        "",
        "## 2. A/A revenue per unit with CUPED, analysed every day",
        "",
        "Each unit orders at its own rate (Gamma with shape 0.3, mean 0.03 a day) with its own basket size (lognormal around "
        f"40); x = its revenue over the {PRE_DAYS} days before the experiment, y = its revenue since assignment. "
        "CUPED covariates: x (missing x filled) and a missing indicator; theta pooled over both arms.",
        "",
        "| units without a pre-period | sims | corr(x, y) (units with x) | variance reduction, last day | (day 7) | "
        "interval width vs no CUPED | FPR fixed last day (raw / CUPED) | FPR naive peeking (raw / CUPED) | "
        "FPR mSPRT (raw / CUPED) | FPR group-sequential by exposure (raw / CUPED) | (by units) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in revenue:
        lines.append(
            f"| {r['missing_share']:.0%} | {r['sims']} | {r['corr']:.2f} | {_pct(r['reduction'])} | {_pct(r['reduction_day7'])} | "
            f"{r['width_ratio']:.2f} | {_pct(r['final_raw'])} / {_pct(r['final_cuped'])} | "
            f"{_pct(r['naive_raw'])} / {_pct(r['naive_cuped'])} | {_pct(r['sequential_raw'])} / "
            f"{_pct(r['sequential_cuped'])} | {_pct(r['group']['raw', 'exposure'])} / "
            f"{_pct(r['group']['cuped', 'exposure'])} | {_pct(r['group']['raw', 'units'])} / "
            f"{_pct(r['group']['cuped', 'units'])} |")
    lines += [
        "",
        "The reduction is the control arm's `1 - Var(y_adj) / Var(y)` averaged over the runs (the treatment's "
        "is the same in A/A); with one covariate it is corr(x, y)^2. It grows with the exposure: early in the "
        "experiment y covers only a few days of each unit's spending. The mSPRT is tuned at "
        f"{args.tuning_fraction:g} x the final sample; the group-sequential test (O'Brien-Fleming) is planned at the "
        "final exposure or units. Monte Carlo standard error of a rate near 5 %: "
        f"{100 * np.sqrt(0.05 * 0.95 / revenue[0]['sims']):.1f} points at {revenue[0]['sims']} runs, "
        f"{100 * np.sqrt(0.05 * 0.95 / revenue[-1]['sims']):.1f} at {revenue[-1]['sims']}.",
        "",
        "## 3. Power against the calculator",
        "",
        "`plan_sample_size` (alpha 0.05, power 0.8, 50/50) then simulated experiments with the planted effect, "
        f"{args.power_sims} each; \"predicted\" is `fixed_power` (statsmodels `NormalIndPower`), \"observed\" "
        "the share significant.",
        "",
        "| metric | design | n per variant | predicted | observed | difference |",
        "|---|---|---|---|---|---|",
    ]
    for r in power:
        lines.append(f"| {r['metric']} | {r['design']} | {r['n']:,} | {_pct(r['predicted'])} | {_pct(r['observed'])} | "
                     f"{100 * (r['observed'] - r['predicted']):+.1f} points |")
    lines += [
        "",
        "The mSPRT row at the sequential n: \"predicted\" is the target power: the plan's sequential sample is sized "
        "so the always-valid interval at that look alone excludes 0 with it, an upper bound (earlier looks add "
        "power), hence the higher observed power. The rows at the planned n read the sequential tests at 28 equal "
        "looks up to the fixed-horizon sample, against the fixed test's power there: the group-sequential test "
        "with O'Brien-Fleming spending keeps nearly all of it (its early boundaries are strict and its final one "
        "close to 1.96), Pocock spending gives more up for earlier stopping, and the always-valid mSPRT needs "
        "about twice the sample for the same power. Only the fixed-test rows count for the criterion above.",
        "",
        "## 4. Sample ratio mismatch",
        "",
        f"{args.srm_sims} healthy 50/50 runs and {args.srm_sims} where 5 % of the treatment's units are lost "
        f"(e.g. a logging bug), {args.srm_units_per_day} units a day, chi-square p < 0.001:",
        "",
        "| days | units | false alarms (healthy) | detected (broken) |",
        "|---|---|---|---|",
    ]
    for r in srm_rows:
        lines.append(f"| {r['days']} | {r['units']:,} | {_pct(r['false_alarms'])} | {_pct(r['detected'])} |")
    lines += [
        "",
        "A 5 % loss shows only with enough units: at p < 0.001 it takes ~50,000 units for >= 95 % detection.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--aa-sims", type=int, default=5000)
    parser.add_argument("--revenue-sims", type=int, default=1000)
    parser.add_argument("--power-sims", type=int, default=2000)
    parser.add_argument("--srm-sims", type=int, default=2000)
    parser.add_argument("--days", type=int, default=28)
    parser.add_argument("--units-per-day", type=int, default=500)
    parser.add_argument("--srm-units-per-day", type=int, default=2000)
    parser.add_argument("--tuning-fraction", type=float, default=0.25,
                        help="the mSPRT's sequential_tuning_n as a fraction of the final sample (sections 1 and 2)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "experiments_stats.md")
    args = parser.parse_args(argv)
    argv = sys.argv[1:] if argv is None else argv

    seconds, results = {}, {"command": " ".join(["python benchmarks/experiments.py", shlex.join(argv)]).strip(),
                            "date": dt.date.today().isoformat(), "tree": _tree()}
    began = time.perf_counter()
    results["aa"] = aa_conversion(args.aa_sims, args.days, args.units_per_day, args.seed,
                                  tuple(sorted({*TUNING_FRACTIONS, args.tuning_fraction})))
    results["aa_start"] = aa_conversion(args.aa_sims // 2, args.days, args.units_per_day, args.seed + 30,
                                        (args.tuning_fraction,), all_at_start=True)
    seconds["A/A conversion"] = time.perf_counter() - began
    began = time.perf_counter()
    results["revenue"] = [aa_revenue(sims, args.days, args.units_per_day // 2, share, args.seed + 1 + i,
                                     args.tuning_fraction)
                          for i, (share, sims) in enumerate(((0.0, args.revenue_sims), (0.3, args.revenue_sims // 2),
                                                             (0.6, args.revenue_sims // 2)))]
    seconds["A/A revenue"] = time.perf_counter() - began
    began = time.perf_counter()
    rng, planned_rng = np.random.default_rng(args.seed + 10), np.random.default_rng(args.seed + 12)
    results["power"] = (power_proportion(0.05, 0.10, args.power_sims, rng, planned_rng)
                        + power_proportion(0.20, 0.05, args.power_sims, rng, planned_rng)
                        + power_revenue(0.1, 60.0, 60.0, 0.2, args.power_sims // 2, rng))
    seconds["power"] = time.perf_counter() - began
    began = time.perf_counter()
    results["srm"] = srm(args.srm_sims, args.srm_units_per_day, 0.05, np.random.default_rng(args.seed + 20))
    seconds["SRM"] = time.perf_counter() - began
    report = render(args, results, seconds)
    args.output.write_text(report)
    print(report)


if __name__ == "__main__":
    main()
