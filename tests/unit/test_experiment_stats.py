"""Experiment statistics: equal to statsmodels / scipy where they have the test, and right by construction
(A/A batches, crafted imbalances, correlated covariates, decision rules) where they have not."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import NormalIndPower, zt_ind_solve_power
from statsmodels.stats.proportion import confint_proportions_2indep, proportion_effectsize, proportions_ztest

from ml.experiments.stats import (
    RESULT_COLUMNS,
    ExperimentConfig,
    MetricAnalysis,
    MetricSpec,
    SrmTest,
    analyse_metric,
    cuped,
    cuped_covariates,
    decide,
    fixed_power,
    group_sequential_boundaries,
    group_sequential_test,
    holm,
    mean_difference_sequential,
    mixing_ratio,
    mixing_variance,
    normal_posterior,
    plan_sample_size,
    proportions_z_test,
    sample_ratio_test,
    sequential_test,
    spending_function,
    standardised_effect,
    summarise,
    summary_from_sums,
    welch_t_test,
)


# --- fixed-horizon tests: equal to the libraries --------------------------------------------------------


@pytest.mark.parametrize("counts", [(480, 10_000, 540, 10_050), (30, 200, 12, 180), (5, 50, 5, 50)])
def test_z_test_equals_statsmodels(counts):
    s_c, n_c, s_t, n_t = counts
    ours = proportions_z_test(s_c, n_c, s_t, n_t, alpha=0.05)
    statistic, p_value = proportions_ztest([s_t, s_c], [n_t, n_c])
    low, high = confint_proportions_2indep(s_t, n_t, s_c, n_c, method="wald", compare="diff", alpha=0.05)
    np.testing.assert_allclose([ours.statistic, ours.p_value], [statistic, p_value], rtol=1e-10)
    np.testing.assert_allclose([ours.ci_low, ours.ci_high], [low, high], rtol=1e-10)
    assert ours.estimate == pytest.approx(s_t / n_t - s_c / n_c)


def test_welch_equals_scipy_and_is_batched():
    rng = np.random.default_rng(3)
    control, treatment = rng.gamma(2.0, 10.0, 400), rng.gamma(2.0, 11.0, 350)
    ours = welch_t_test(summarise(control), summarise(treatment), alpha=0.1)
    reference = stats.ttest_ind(treatment, control, equal_var=False)
    interval = reference.confidence_interval(confidence_level=0.9)
    np.testing.assert_allclose([ours.statistic, ours.p_value], [reference.statistic, reference.pvalue], rtol=1e-10)
    np.testing.assert_allclose([ours.ci_low, ours.ci_high], [interval.low, interval.high], rtol=1e-10)
    # the same test from raw sums, three experiments at once (the benchmark's path)
    arms = [rng.gamma(2.0, 10.0, (3, 300)), rng.gamma(2.0, 12.0, (3, 250))]
    summaries = [summary_from_sums(np.full(3, a.shape[1]), a.sum(1), (a**2).sum(1)) for a in arms]
    batched = welch_t_test(*summaries)
    for i in range(3):
        one = stats.ttest_ind(arms[1][i], arms[0][i], equal_var=False)
        assert batched.p_value[i] == pytest.approx(one.pvalue, rel=1e-9)


def test_lift_and_its_delta_method_interval():
    control, treatment = summarise(np.r_[np.zeros(50), np.full(50, 10.0)]), summarise(np.full(80, 6.0))
    result = welch_t_test(control, treatment)  # means 5 and 6, treatment variance 0
    assert result.lift == pytest.approx(0.2)
    se = np.sqrt(36.0 * (control.variance / 100) / 5.0**4)  # se^2 = V_t / m_c^2 + m_t^2 V_c / m_c^4 with V_t = 0
    assert result.lift_ci_high - result.lift == pytest.approx(stats.norm.isf(0.025) * se)


# --- CUPED ------------------------------------------------------------------------------------------


def _correlated(n: int, rho: float, seed: int):
    rng = np.random.default_rng(seed)
    x = rng.gamma(2.0, 25.0, n)
    y = 10 + rho * (x - 50) / 35.36 * 20 + np.sqrt(1 - rho**2) * 20 * rng.standard_normal(n)
    return x, y


def test_cuped_slope_variance_and_reduction():
    x, y = _correlated(20_000, 0.6, seed=1)
    arm = np.arange(len(y)) % 2
    result = cuped([summarise(y[arm == a], x[arm == a]) for a in (0, 1)])
    slope = np.polyfit(x, y, 1)[0]  # pooled least squares
    assert float(result.theta[0]) == pytest.approx(slope, rel=1e-9)
    adjusted = y - slope * (x - x.mean())
    for a in (0, 1):
        assert float(result.arms[a].variance) == pytest.approx(adjusted[arm == a].var(ddof=1), rel=1e-9)
        assert float(result.arms[a].mean) == pytest.approx(adjusted[arm == a].mean(), rel=1e-9)
        assert float(result.variance_reduction[a]) > 0.30  # corr 0.6: ~0.36
    x_noise, _ = _correlated(20_000, 0.6, seed=2)  # unrelated covariate: nothing to gain
    none = cuped([summarise(y[arm == a], x_noise[arm == a]) for a in (0, 1)])
    assert abs(float(none.variance_reduction[0])) < 0.01


def test_missing_pre_period_values_get_an_indicator_and_the_fill_does_not_matter():
    x, y = _correlated(10_000, 0.6, seed=4)
    rng = np.random.default_rng(5)
    new = rng.random(len(x)) < 0.3
    y = y + 15 * new  # new units spend differently: the indicator must carry that, not the slope
    x_seen = np.where(new, np.nan, x)
    z = cuped_covariates(x_seen)
    assert z.shape == (len(x), 2) and np.array_equal(z[:, 1], new.astype(float))
    assert np.allclose(z[new, 0], x[~new].mean())
    arm = np.arange(len(y)) % 2
    by_mean = cuped([summarise(y[arm == a], z[arm == a]) for a in (0, 1)])
    z_zero = np.column_stack([np.where(new, 0.0, x), new])
    by_zero = cuped([summarise(y[arm == a], z_zero[arm == a]) for a in (0, 1)])
    for a in (0, 1):
        assert float(by_mean.arms[a].mean) == pytest.approx(float(by_zero.arms[a].mean), rel=1e-9)
        assert float(by_mean.arms[a].variance) == pytest.approx(float(by_zero.arms[a].variance), rel=1e-9)
    assert float(by_mean.theta[0]) == pytest.approx(np.polyfit(x[~new], y[~new], 1)[0], rel=0.05)
    assert cuped_covariates(np.full(4, np.nan)).shape == (4, 0)
    assert cuped_covariates(np.arange(4.0)).shape == (4, 1)


def test_sums_and_units_give_the_same_summary():
    x, y = _correlated(500, 0.5, seed=6)
    z = np.column_stack([x, x > 60])
    direct = summarise(y, z)
    from_sums = summary_from_sums(len(y), y.sum(), (y**2).sum(), z.sum(0), z.T @ z, z.T @ y)
    for name in ("mean", "variance", "covariate_mean", "covariate_cov", "cross_cov"):
        np.testing.assert_allclose(getattr(from_sums, name), getattr(direct, name), rtol=1e-8)


# --- sample ratio mismatch ----------------------------------------------------------------------------


def test_sample_ratio_mismatch():
    lost = sample_ratio_test([10_000, 9_500], [1, 1])  # 5 % of the treatment lost
    assert bool(lost.detected) and float(lost.p_value) < 1e-3
    assert float(lost.p_value) == pytest.approx(stats.chisquare([10_000, 9_500]).pvalue, rel=1e-10)
    healthy = sample_ratio_test([10_000, 9_950], [1, 1])
    assert not bool(healthy.detected)
    weighted = sample_ratio_test([2_000, 1_000, 1_000], [50, 25, 25])  # weights are shares, not counts
    assert float(weighted.p_value) == pytest.approx(1.0)
    assert bool(sample_ratio_test([1_000, 1_000, 1_000], [50, 25, 25]).detected)
    batched = sample_ratio_test(np.array([[10_000, 9_500], [10_000, 9_950]]), [1, 1])
    assert batched.detected.tolist() == [True, False]


# --- always-valid inference ---------------------------------------------------------------------------


def test_msprt_matches_johari_et_al_equal_sample_form():
    # Johari et al. eq. 11, two streams of n each with known variance sigma^2:
    # Lambda = sqrt(2 s2 / (2 s2 + n tau2)) exp(n^2 tau2 d^2 / (4 s2 (2 s2 + n tau2)))
    n, sigma2, tau2, d = 2_000, 4.0, 0.01, 0.25
    expected = np.sqrt(2 * sigma2 / (2 * sigma2 + n * tau2)) * np.exp(
        n**2 * tau2 * d**2 / (4 * sigma2 * (2 * sigma2 + n * tau2)))
    result = sequential_test(d, 2 * sigma2 / n, tau2)
    assert np.exp(result.log_likelihood_ratio) == pytest.approx(expected, rel=1e-10)
    assert float(result.p_value) == pytest.approx(min(1.0, 1 / expected), rel=1e-10)


def test_always_valid_interval_is_the_inverted_test_and_p_is_a_running_minimum():
    rng = np.random.default_rng(7)
    estimate, variance = rng.normal(0, 1, 500), rng.uniform(0.05, 0.5, 500)
    tau2 = mixing_variance(variance, 1000, 4000)
    result = sequential_test(estimate, variance, tau2, alpha=0.05)
    excludes_zero = (result.ci_low > 0) | (result.ci_high < 0)
    assert np.array_equal(excludes_zero, result.p_value < 0.05)
    assert 0 < excludes_zero.sum() < 500
    later = sequential_test(0.0, 0.1, 0.5, previous_p_value=0.03)  # no evidence now; the minimum carries
    assert float(later.p_value) == pytest.approx(0.03)


def test_mixing_variance_makes_the_interval_narrowest_at_the_tuning_sample():
    r = mixing_ratio(0.05)
    assert r == pytest.approx(2 * np.log(20) + np.log1p(r))
    variance, n = 0.02, 5_000

    def width(tuning_n):
        result = sequential_test(0.0, variance, mixing_variance(variance, n, tuning_n))
        return float(result.ci_high - result.ci_low)

    assert width(n) < min(width(0.7 * n), width(1.4 * n))
    # tau^2 is fixed for the experiment: V shrinks as 1 / n and tau^2 must not follow it
    sigma2, tuning_n = 3.0, 8_000
    taus = [float(mixing_variance(sigma2 / m, m, tuning_n)) for m in (500, 2_000, 8_000)]
    assert taus == pytest.approx([r * sigma2 / tuning_n] * 3)


def _aa_batch(sims: int, looks: int, per_look: int, seed: int):
    """A/A conversion experiments read at every look: running-min sequential p and naive fixed p."""
    rng = np.random.default_rng(seed)
    conversions = np.cumsum(rng.binomial(per_look, 0.1, (2, sims, looks)), axis=2)
    n = per_look * np.arange(1, looks + 1)
    previous, fixed_any = np.ones(sims), np.zeros(sims, dtype=bool)
    for k in range(looks):
        fixed = proportions_z_test(conversions[0, :, k], n[k], conversions[1, :, k], n[k])
        fixed_any |= fixed.p_value < 0.05
        arms = [summary_from_sums(np.full(sims, n[k]), c[:, k], c[:, k]) for c in conversions]
        previous = mean_difference_sequential(arms[0], arms[1], tuning_n=2 * n[-1] / 4,
                                              previous_p_value=previous).p_value
    return float(np.mean(previous < 0.05)), float(np.mean(fixed_any))


def test_a_small_aa_batch_keeps_its_false_positives_while_naive_peeking_does_not():
    sequential, naive = _aa_batch(sims=100, looks=28, per_look=200, seed=11)
    assert sequential <= 0.05
    assert naive >= 0.15 and naive > sequential + 0.1


# --- Bayesian and multiple comparisons ---------------------------------------------------------------


def test_chance_to_beat_and_expected_loss():
    result = normal_posterior(0.3, 0.04)
    assert float(result.chance_to_beat) == pytest.approx(stats.norm.cdf(0.3 / 0.2))
    draws = np.random.default_rng(0).normal(0.3, 0.2, 1_000_000)
    assert float(result.expected_loss) == pytest.approx(np.mean(np.maximum(0, -draws)), rel=0.02)
    lower_is_better = normal_posterior(0.3, 0.04, higher_is_better=False)
    assert float(lower_is_better.chance_to_beat) == pytest.approx(1 - float(result.chance_to_beat))
    assert float(lower_is_better.expected_loss) == pytest.approx(np.mean(np.maximum(0, draws)), rel=0.02)


def test_holm_equals_statsmodels():
    p = np.array([0.01, 0.04, 0.03, 0.20, 0.005])
    assert np.allclose(holm(p), multipletests(p, method="holm")[1])
    with_missing = holm(np.array([0.01, np.nan, 0.04]))
    assert np.isnan(with_missing[1]) and np.allclose(with_missing[[0, 2]], multipletests([0.01, 0.04], method="holm")[1])


# --- power and sample size ---------------------------------------------------------------------------


def test_power_and_sample_size_equal_statsmodels():
    effect = standardised_effect(0.05, 0.10)
    assert effect == pytest.approx(abs(proportion_effectsize(0.055, 0.05)))
    for n, ratio in ((10_000, 1.0), (4_000, 2.0)):
        assert float(fixed_power(effect, n, ratio)) == pytest.approx(NormalIndPower().power(effect, n, 0.05, ratio),
                                                                     rel=1e-10)
    plan = plan_sample_size(baseline=0.05, mde=0.10, weights={"A": 1, "B": 1}, control="A", units_per_day=1_000)
    expected = NormalIndPower().solve_power(effect_size=effect, alpha=0.05, power=0.8, ratio=1.0)
    assert plan.n_per_variant == {"A": int(np.ceil(expected)), "B": int(np.ceil(expected))}
    assert plan.days == int(np.ceil(plan.total / 1_000))
    # a mean, unequal split: control 2/3 of the traffic, the treatment 1/3
    unequal = plan_sample_size(baseline=50.0, sd=80.0, mde=0.05, weights={"A": 2, "B": 1}, control="A",
                               units_per_day=500)
    d = standardised_effect(50.0, 0.05, 80.0)
    n_control = zt_ind_solve_power(effect_size=d, alpha=0.05, power=0.8, ratio=0.5)
    assert unequal.n_per_variant["A"] == int(np.ceil(n_control))
    assert unequal.n_per_variant["B"] == int(np.ceil(n_control / 2))


def test_sample_size_corrects_for_several_treatments_and_sizes_the_sequential_design():
    two = plan_sample_size(baseline=0.1, mde=0.1, weights={"A": 1, "B": 1}, control="A", units_per_day=100)
    three = plan_sample_size(baseline=0.1, mde=0.1, weights={"A": 1, "B": 1, "C": 1}, control="A", units_per_day=100)
    assert three.alpha_per_comparison == pytest.approx(0.025)
    assert three.n_per_variant["A"] > two.n_per_variant["A"]
    assert two.sequential_n_per_variant["A"] > two.n_per_variant["A"]
    assert two.sequential_tuning_n == two.sequential_n_per_variant["A"] + two.sequential_n_per_variant["B"]
    with pytest.raises(ValueError, match="control"):
        plan_sample_size(baseline=0.1, mde=0.1, weights={"B": 1, "C": 1}, control="A", units_per_day=100)


# --- one metric from a frame -------------------------------------------------------------------------


def _frame(n: int, seed: int, lifts: dict[str, float], with_x: bool = True) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    variant = rng.choice(["control", "b", "c"], n)
    x, y = _correlated(n, 0.6, seed + 1)
    y = y + np.vectorize(lambda v: lifts.get(v, 0.0))(variant)
    frame = pd.DataFrame({"unit": np.arange(n), "variant": variant, "y": y})
    return frame.assign(x=x) if with_x else frame


CONFIG = ExperimentConfig(control="control", weights={"control": 1, "b": 1, "c": 1})


def test_analyse_metric_table_matches_the_building_blocks():
    frame = _frame(3_000, 1, {"c": 2.0})
    analysis = analyse_metric(frame, CONFIG, MetricSpec("revenue"), previous_p_values={"b": 0.5})
    table = analysis.table
    assert list(table.columns) == list(RESULT_COLUMNS) and table["variant"].tolist() == ["control", "b", "c"]
    arms = [frame[frame["variant"] == v] for v in ("control", "b", "c")]
    z = cuped_covariates(frame["x"].to_numpy())
    adjusted = cuped([summarise(a["y"], z[a.index]) for a in arms])
    welch = welch_t_test(adjusted.arms[0], adjusted.arms[2])
    sequential = mean_difference_sequential(adjusted.arms[0], adjusted.arms[2], CONFIG.sequential_tuning_n)
    row = table.iloc[2]
    assert row["estimate"] == pytest.approx(float(welch.estimate)) and row["p_value"] == pytest.approx(float(welch.p_value))
    assert row["p_value_sequential"] == pytest.approx(float(sequential.p_value))
    assert row["cs_low"] == pytest.approx(float(sequential.ci_low)) and row["method"] == "welch (cuped)"
    assert table["p_value_adjusted"].iloc[1:].tolist() == pytest.approx(holm(table["p_value"].iloc[1:]).tolist())
    assert table.loc[1, "p_value_sequential"] <= 0.5  # the running minimum from the previous look
    assert table["cuped_variance_reduction"].gt(0.25).all()
    assert analysis.srm_p_value == pytest.approx(float(sample_ratio_test(table["n"], [1, 1, 1]).p_value))
    assert row["mean"] == pytest.approx(arms[2]["y"].mean())


def test_analyse_metric_proportions_use_the_z_test_without_covariate():
    rng = np.random.default_rng(2)
    variant = np.repeat(["control", "b"], [4_000, 4_100])
    y = (rng.random(len(variant)) < np.where(variant == "b", 0.12, 0.10)).astype(float)
    frame = pd.DataFrame({"unit": np.arange(len(y)), "variant": variant, "y": y})
    config = ExperimentConfig(control="control", weights={"control": 1, "b": 1})
    row = analyse_metric(frame, config, MetricSpec("conversion", kind="proportion")).table.iloc[1]
    s_c, s_t = y[variant == "control"].sum(), y[variant == "b"].sum()
    statistic, p_value = proportions_ztest([s_t, s_c], [4_100, 4_000])
    assert row["method"] == "z" and row["p_value"] == pytest.approx(p_value, rel=1e-9)


def test_analyse_metric_refuses_bad_frames():
    frame = _frame(100, 3, {})
    with pytest.raises(ValueError, match="not in the configured weights"):
        analyse_metric(frame.assign(variant="d"), CONFIG)
    with pytest.raises(ValueError, match="more than once"):
        analyse_metric(pd.concat([frame, frame.head(1)]), CONFIG)


# --- the decision ------------------------------------------------------------------------------------


def _analysis(name: str, rows: list[dict], higher_is_better: bool = True, srm_p: float = 0.5,
              config: ExperimentConfig = CONFIG, tolerance: float = 0.0) -> MetricAnalysis:
    """An analysis with a hand-written table: each row gives variant, estimate, sequential adjusted p, cs."""
    table = pd.DataFrame([{"variant": "control", "n": 10_000, "mean": 10.0}] + [
        {"n": 10_000, "mean": 10.0 + r["estimate"], "lift": r["estimate"] / 10, **r} for r in rows
    ]).reindex(columns=RESULT_COLUMNS)
    srm = SrmTest(np.asarray(1.0), np.asarray(srm_p), np.asarray([]), np.asarray(srm_p < config.srm_threshold))
    return MetricAnalysis(MetricSpec(name, "mean", higher_is_better, tolerance), config, table, srm)


def _row(variant, estimate, p, half=0.2):
    return {"variant": variant, "estimate": estimate, "p_value_sequential_adjusted": p,
            "cs_low": estimate - half, "cs_high": estimate + half}


FLAT = dict(planned_sample_reached=False, end_date_reached=False)


def test_decide_ships_the_best_significant_variant():
    primary = _analysis("revenue", [_row("b", 0.4, 0.01), _row("c", 0.6, 0.02)])
    decision = decide(primary, **FLAT)
    assert decision.action == "ship c" and decision.variant == "c" and "also significant: b" in decision.reason
    lower = _analysis("cost", [_row("b", -0.4, 0.01), _row("c", 0.6, 0.02)], higher_is_better=False)
    assert decide(lower, **FLAT).action == "ship b"


def test_decide_sample_ratio_mismatch_blocks_a_winner():
    primary = _analysis("revenue", [_row("b", 0.4, 0.001), _row("c", 0.0, 0.9)], srm_p=1e-5)
    decision = decide(primary, **FLAT)
    assert decision.action == "stop: sample ratio mismatch" and "no winner" in decision.reason
    assert decide(_analysis("revenue", [_row("b", 0.4, 0.001)]), srm_detected=True, **FLAT).action == \
        "stop: sample ratio mismatch"


def test_decide_stops_on_harm_to_a_guardrail_in_its_own_direction():
    primary = _analysis("revenue", [_row("b", 0.4, 0.01), _row("c", 0.0, 0.9)])
    refunds_up = _analysis("refund_rate", [_row("b", 0.0, 0.9), _row("c", 0.05, 0.01, half=0.04)],
                           higher_is_better=False)
    decision = decide(primary, [refunds_up], **FLAT)
    assert decision.action == "stop: harm on refund_rate" and decision.variant == "c"
    refunds_down = _analysis("refund_rate", [_row("b", 0.0, 0.9), _row("c", -0.05, 0.01, half=0.04)],
                             higher_is_better=False)
    assert decide(primary, [refunds_down], **FLAT).action == "ship b"
    not_yet = _analysis("refund_rate", [_row("b", 0.0, 0.9), _row("c", 0.05, 0.2)], higher_is_better=False)
    assert decide(primary, [not_yet], **FLAT).action == "ship b"
    # a tolerated harm: refunds up 0.5 (interval [0.3, 0.7]) on a control mean of 10, 10 % tolerated
    tolerated = _analysis("refund_rate", [_row("b", 0.5, 0.01)], higher_is_better=False, tolerance=0.1)
    assert decide(primary, [tolerated], **FLAT).action == "ship b"
    beyond = _analysis("refund_rate", [_row("b", 0.5, 0.01)], higher_is_better=False, tolerance=0.02)
    assert decide(primary, [beyond], **FLAT).action == "stop: harm on refund_rate"
    orders_down = _analysis("orders", [_row("b", -0.5, 0.01)], tolerance=0.02)  # higher is better
    assert decide(primary, [orders_down], **FLAT).action == "stop: harm on orders"
    assert decide(primary, [_analysis("orders", [_row("b", -0.5, 0.01)], tolerance=0.05)], **FLAT).action == "ship b"


def test_decide_stops_on_harm_to_the_primary():
    primary = _analysis("revenue", [_row("b", -0.5, 0.01), _row("c", 0.1, 0.6)])
    assert decide(primary, **FLAT).action == "stop: harm on revenue"


def test_decide_no_effect_and_keep_running():
    narrow = _analysis("revenue", [_row("b", 0.05, 0.8, half=0.3), _row("c", -0.1, 0.7, half=0.3)])  # mde 5 % of 10
    wide = _analysis("revenue", [_row("b", 0.05, 0.8, half=0.6), _row("c", -0.1, 0.7, half=0.3)])
    assert decide(narrow, planned_sample_reached=True, end_date_reached=False).action == "stop: no effect"
    assert decide(narrow, **FLAT).action == "keep running"
    kept = decide(wide, planned_sample_reached=True, end_date_reached=False)
    assert kept.action == "keep running" and "wider" in kept.reason
    ended = decide(wide, planned_sample_reached=False, end_date_reached=True)
    assert ended.action == "stop: no effect" and "end date" in ended.reason



def test_a_variant_without_units_leaves_the_others_intact():
    frame = _frame(3_000, 5, {"c": 2.0})
    config = ExperimentConfig(control="control", weights={"control": 1, "b": 1, "c": 1, "d": 1})
    table = analyse_metric(frame, config).table
    assert table["n"].tolist()[-1] == 0 and np.isnan(table["estimate"].iloc[-1])
    expected = analyse_metric(frame, CONFIG).table  # the same units without the empty arm
    assert table["estimate"].iloc[1:3].tolist() == pytest.approx(expected["estimate"].iloc[1:].tolist())
    assert table["p_value_sequential"].iloc[-1] == 1.0


# --- group-sequential design ---------------------------------------------------------------------------


def _equicorrelated_non_crossing(fractions, boundary):
    """P(|Z_j| < c_j for every look) from scipy's multivariate normal (Genz), independent of the recursion."""
    t = np.asarray(fractions, dtype=float)
    cov = np.sqrt(np.minimum.outer(t, t) / np.maximum.outer(t, t))
    normal = stats.multivariate_normal(mean=np.zeros(len(t)), cov=cov, abseps=1e-8, releps=1e-8, maxpts=2_000_000)
    return float(normal.cdf(boundary, lower_limit=-np.asarray(boundary)))


def test_boundaries_equal_published_lan_demets_values():
    # O'Brien-Fleming-type Lan-DeMets spending, two-sided symmetric alpha 0.05 (0.025 a side), 5 equal looks:
    # gsDesign's gsDesign(k = 5, test.type = 2, sfu = sfLDOF)$upper$bound and ldbounds'
    # bounds(seq(0.2, 1, 0.2), iuse = c(1, 1), alpha = c(0.025, 0.025)) print 4.8769 3.3569 2.6803 2.2898 2.0310
    equal = group_sequential_boundaries(np.arange(1, 6) / 5, alpha=0.05)
    np.testing.assert_allclose(equal.boundary, [4.8769, 3.3569, 2.6803, 2.2898, 2.0310], atol=3e-4)
    # looks at 0.10, 0.33, 1: ldbounds' transcript (R-help, "output of bounds function ldbounds package",
    # March 2020, https://thr3ads.net/r-help/2020/03/3271445-output-of-bounds-function-ldbounds-package):
    # bounds 6.9913, 3.7308, 1.9605 and cumulative exit probabilities 2.7227e-12, 1.9097e-04, 0.05
    unequal = group_sequential_boundaries([0.10, 0.33, 1.0], alpha=0.05)
    np.testing.assert_allclose(unequal.boundary, [6.9913, 3.7308, 1.9605], atol=3e-4)
    np.testing.assert_allclose(unequal.alpha_spent, [2.7227e-12, 1.9097e-04, 0.05], rtol=1e-3)
    assert spending_function(1.0, 0.05) == pytest.approx(0.05) and spending_function(1.0, 0.05, "pocock") == \
        pytest.approx(0.05)


@pytest.mark.parametrize("spending", ["obrien-fleming", "pocock"])
@pytest.mark.parametrize("fractions", [[0.2, 0.45, 0.7, 1.0], [0.05, 0.1, 0.12, 0.5, 0.51, 0.9]])
def test_boundaries_spend_exactly_the_alpha_of_the_spending_function(spending, fractions):
    # the joint probability of crossing by look k, by scipy's multivariate normal, is alpha*(t_k)
    bounds = group_sequential_boundaries(fractions, alpha=0.05, spending=spending)
    np.testing.assert_allclose(bounds.alpha_spent, spending_function(fractions, 0.05, spending), rtol=1e-12)
    for k in range(1, len(fractions) + 1):
        crossed = 1 - _equicorrelated_non_crossing(fractions[:k], bounds.boundary[:k])
        assert crossed == pytest.approx(bounds.alpha_spent[k - 1], rel=1e-4, abs=1e-7)


def test_a_single_look_at_the_planned_end_is_the_fixed_test():
    z_975 = stats.norm.isf(0.025)
    for fraction in (1.0, 1.4):  # past the plan counts as the plan
        assert group_sequential_boundaries([fraction]).boundary[0] == pytest.approx(z_975, rel=1e-12)
    test = group_sequential_test([1.0], [2.3], estimate=0.46, standard_error=0.2)
    assert test.crossed and test.p_value == pytest.approx(2 * stats.norm.sf(2.3), rel=1e-6)
    assert [test.ci_low, test.ci_high] == pytest.approx([0.46 - z_975 * 0.2, 0.46 + z_975 * 0.2])
    calm = group_sequential_test([1.0], [-0.8])
    assert not calm.crossed and calm.p_value == pytest.approx(2 * stats.norm.sf(0.8), rel=1e-6)


def test_looks_without_new_information_spend_nothing_and_keep_the_boundary():
    bounds = group_sequential_boundaries([0.0, 0.3, 0.3, 0.2, 0.6, 1.0, 1.5])
    assert bounds.information_fraction.tolist() == [0.0, 0.3, 0.3, 0.3, 0.6, 1.0, 1.0]
    assert np.isinf(bounds.boundary[0]) and bounds.alpha_spent[0] == 0.0
    assert bounds.boundary[1] == bounds.boundary[2] == bounds.boundary[3]
    assert bounds.alpha_spent[1] == bounds.alpha_spent[3] and bounds.boundary[5] == bounds.boundary[6]
    # the repeats change nothing downstream: the same boundaries as the looks at 0.3, 0.6 and 1 alone
    np.testing.assert_allclose(bounds.boundary[[1, 4, 5]], group_sequential_boundaries([0.3, 0.6, 1.0]).boundary,
                               rtol=1e-10)
    # a crossing stays a crossing: a later look with nothing in it keeps the p-value below alpha
    history = group_sequential_test([0.3, 0.6, 0.6, 0.8], [0.5, 3.1, 0.2, 0.1])
    assert history.crossed and history.p_value < 0.05
    assert not group_sequential_test([0.3, 0.6, 0.8], [0.5, 0.2, 0.1]).crossed


def test_repeated_p_value_is_below_alpha_exactly_when_a_boundary_was_crossed():
    rng = np.random.default_rng(21)
    fractions = [0.15, 0.4, 0.55, 0.8, 1.0]
    outcomes = []
    for case in range(24):
        comparisons = 1 + case % 2
        bounds = group_sequential_boundaries(fractions, 0.05 / comparisons).boundary
        z = bounds * rng.uniform(0.55, 1.04, len(fractions)) * rng.choice([-1, 1], len(fractions))
        looks = [group_sequential_test(fractions[:k], z[:k], comparisons=comparisons) for k in (3, 5)]
        for test in looks:
            assert (test.p_value < 0.05) == test.crossed
        assert looks[1].p_value <= looks[0].p_value * (1 + 1e-8)  # a running minimum (up to the root search)
        outcomes += [test.crossed for test in looks]
    assert 8 <= sum(outcomes) <= len(outcomes) - 8  # both sides exercised


def test_repeated_confidence_intervals_cover_together():
    # a Brownian motion with drift read at 6 looks: every interval covers the effect at once in ~95 % of runs
    rng = np.random.default_rng(5)
    fractions, theta, sims = np.array([0.1, 0.3, 0.45, 0.6, 0.8, 1.0]), 0.7, 20_000
    info = 40.0 * fractions  # Fisher information at each look
    score = np.cumsum(rng.normal(theta * np.diff(info, prepend=0.0), np.sqrt(np.diff(info, prepend=0.0)),
                                 (sims, len(info))), axis=1)
    estimate, se = score / info, 1 / np.sqrt(info)
    boundary = group_sequential_boundaries(fractions).boundary
    covered = (np.abs(estimate - theta) < boundary * se).all(axis=1)
    assert covered.mean() == pytest.approx(0.95, abs=0.006)
    one = group_sequential_test(fractions, estimate[0] / se, estimate[0, -1], se[-1])
    assert [one.ci_low, one.ci_high] == pytest.approx([estimate[0, -1] - boundary[-1] * se[-1],
                                                       estimate[0, -1] + boundary[-1] * se[-1]])


def test_a_daily_aa_batch_keeps_its_false_positives_near_alpha_with_group_sequential_boundaries():
    rng = np.random.default_rng(13)
    sims, looks, per_look = 4_000, 20, 150
    conversions = np.cumsum(rng.binomial(per_look, 0.1, (2, sims, looks)), axis=2)
    n = per_look * np.arange(1, looks + 1)
    p = conversions / n
    z = (p[1] - p[0]) / np.sqrt((p[0] * (1 - p[0]) + p[1] * (1 - p[1])) / n)
    naive = float(np.mean((np.abs(z) >= stats.norm.isf(0.025)).any(axis=1)))
    for spending in ("obrien-fleming", "pocock"):
        boundary = group_sequential_boundaries(n / n[-1], spending=spending).boundary
        rate = float(np.mean((np.abs(z) >= boundary).any(axis=1)))
        assert 0.035 <= rate <= 0.065, (spending, rate)
    assert naive >= 0.2


def test_analyse_metric_group_sequential_columns():
    frame = _frame(3_000, 7, {"c": 1.5})
    assert analyse_metric(frame, CONFIG).table[["z_statistic", "gs_boundary", "p_value_gs"]].isna().all().all()
    config = ExperimentConfig(control="control", weights={"control": 1, "b": 1, "c": 1}, planned_n=10_000)
    history = {"c": [(0.1, 0.4), (0.2, 1.7)]}
    table = analyse_metric(frame, config, MetricSpec("revenue"), history=history).table
    row = table.iloc[2]
    variance = ((row["estimate"] - row["ci_low"]) / stats.t.isf(0.025, 2_000)) ** 2  # the Welch variance
    assert row["information_fraction"] == pytest.approx(0.3)
    assert row["z_statistic"] == pytest.approx(row["estimate"] / np.sqrt(variance), rel=1e-3)
    expected = group_sequential_test([0.1, 0.2, 0.3], [0.4, 1.7, row["z_statistic"]], row["estimate"],
                                     row["estimate"] / row["z_statistic"], comparisons=2)
    assert row["gs_boundary"] == pytest.approx(expected.boundary) and row["p_value_gs"] == pytest.approx(expected.p_value)
    assert [row["gs_low"], row["gs_high"]] == pytest.approx([expected.ci_low, expected.ci_high])
    assert table.iloc[1]["gs_boundary"] == pytest.approx(
        group_sequential_test([0.3], [0.0], comparisons=2).boundary)  # b has no history: its first look
    # exposure as the information: the unit-days of the frame over the planned unit-days
    by_exposure = ExperimentConfig(control="control", weights={"control": 1, "b": 1, "c": 1}, planned_exposure=60_000)
    exposed = analyse_metric(frame.assign(exposure=10.0), by_exposure).table
    assert exposed["information_fraction"].iloc[1:].tolist() == pytest.approx([0.5, 0.5])
    with pytest.raises(ValueError, match="exposure"):
        analyse_metric(frame, by_exposure)


def _gs_row(variant, estimate, p_msprt, p_gs, half=0.2, gs_half=0.3):
    return {**_row(variant, estimate, p_msprt, half), "p_value_gs": p_gs, "gs_low": estimate - gs_half,
            "gs_high": estimate + gs_half}


def test_decide_reads_the_group_sequential_columns_when_asked():
    primary = _analysis("revenue", [_gs_row("b", 0.4, 0.2, 0.01), _gs_row("c", 0.1, 0.01, 0.3)])
    assert decide(primary, **FLAT).action == "ship c"  # the mSPRT's evidence, unchanged by default
    grouped = decide(primary, sequential="group", **FLAT)
    assert grouped.action == "ship b" and "repeated confidence interval" in grouped.reason
    # refunds up 0.5, repeated interval [0.3, 0.7]: beyond 2 % of the control mean 10 (the always-valid one is not)
    guardrail = _analysis("refund_rate", [_gs_row("b", 0.5, 0.5, 0.01, half=0.4, gs_half=0.2)], higher_is_better=False,
                          tolerance=0.02)
    assert decide(primary, [guardrail], sequential="group", **FLAT).action == "stop: harm on refund_rate"
    assert decide(primary, [guardrail], **FLAT).action == "ship c"
    no_plan = _analysis("revenue", [_row("b", 0.4, 0.01)])
    with pytest.raises(ValueError, match="planned_n"):
        decide(no_plan, sequential="group", **FLAT)
