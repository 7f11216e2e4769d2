"""Empirical-Bayes shrinkage of per-product elasticities: within category
(:func:`shrink_within_category`), or within brand and the brand within its category
(:func:`shrink_within_brand`). Pure numpy / scipy, vectorised over products."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import optimize, stats


def _normal_posterior(raw: np.ndarray, se: np.ndarray, finite: np.ndarray, prior_mean: np.ndarray,
                      prior_mean_var: np.ndarray, tau: float, z: float) -> pd.DataFrame:
    """Normal-normal posterior of ``raw ~ N(e, se^2)``, ``e ~ N(prior_mean, tau^2)`` with the prior mean
    itself uncertain (variance ``prior_mean_var``): elasticity (posterior mean), elasticity_sd, the
    ``z`` interval, prior_elasticity, prior_sd and shrinkage (the prior's weight); NaN where not
    ``finite``. The posterior mean is exact with the prior mean's uncertainty integrated out when
    ``prior_mean`` already conditions on ``raw`` (a brand's posterior, :func:`shrink_within_brand`)."""
    shrink = tau**2 / (tau**2 + se**2)  # weight on the product's own estimate
    posterior = prior_mean + shrink * (raw - prior_mean)
    posterior_sd = np.sqrt(shrink * se**2 + (1.0 - shrink) ** 2 * prior_mean_var)
    return pd.DataFrame(
        {
            "elasticity": np.where(finite, posterior, np.nan),
            "elasticity_sd": np.where(finite, posterior_sd, np.nan),
            "elasticity_low": np.where(finite, posterior - z * posterior_sd, np.nan),
            "elasticity_high": np.where(finite, posterior + z * posterior_sd, np.nan),
            "prior_elasticity": prior_mean,
            "prior_sd": np.sqrt(tau**2 + prior_mean_var),
            "shrinkage": np.where(finite, 1.0 - shrink, np.nan),
        }
    )


def shrink_within_category(
    raw: np.ndarray, se: np.ndarray, category: np.ndarray, *, min_category_products: int = 3, interval: float = 0.90,
    tau: float | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, float]:
    """Normal-normal empirical Bayes: ``raw ~ N(e, se^2)``, ``e ~ N(mu_category, tau^2)``.

    Category means and a tau shared by all categories are estimated by REML over the products with
    a finite raw estimate; categories with fewer than ``min_category_products`` of them share one
    pooled mean. A given ``tau`` is used as it is (:func:`shrink_within_brand` chooses it jointly with
    the level below). Returns (per product: elasticity, elasticity_sd, elasticity_low, elasticity_high,
    prior_elasticity, prior_sd, shrinkage; NaN where raw is NaN), the per-group table, and tau.
    """
    category = np.asarray(category, dtype=object)
    finite = np.isfinite(raw) & np.isfinite(se) & (se > 0)
    counts = pd.Series(category[finite]).value_counts()
    big = set(counts[counts >= min_category_products].index)
    group = np.where(pd.Series(category).isin(big).to_numpy(), category, "(pooled)")
    codes, groups = pd.factorize(group, sort=True)
    z = stats.norm.ppf(0.5 + interval / 2.0)
    n_groups = len(groups)
    theta, s2, g = raw[finite], se[finite] ** 2, codes[finite]

    def group_means(tau2: float) -> tuple[np.ndarray, np.ndarray]:
        w = 1.0 / (s2 + tau2)
        total = np.bincount(g, w, n_groups)
        return np.bincount(g, w * theta, n_groups) / np.where(total > 0, total, np.nan), total

    def negative_reml(log_tau: float) -> float:
        tau2 = np.exp(2.0 * log_tau)
        means, total = group_means(tau2)
        present = total > 0
        return 0.5 * (np.sum(np.log(s2 + tau2)) + np.sum(np.log(total[present]))
                      + np.sum((theta - means[g]) ** 2 / (s2 + tau2)))

    if tau is not None:
        tau = float(tau)
    elif finite.sum() >= 2:
        tau = float(np.exp(optimize.minimize_scalar(negative_reml, bounds=(np.log(0.02), np.log(5.0)), method="bounded").x))
    else:
        tau = 0.5  # one product cannot tell how much products differ: a wide, fixed prior
    means, total = group_means(tau**2)
    if finite.any():
        pooled_mean = float(np.sum(theta / (s2 + tau**2)) / np.sum(1.0 / (s2 + tau**2)))
        pooled_var = float(1.0 / np.sum(1.0 / (s2 + tau**2)))
    else:
        pooled_mean, pooled_var = np.nan, np.nan
    mean_var = np.where(total > 0, 1.0 / np.where(total > 0, total, 1.0), pooled_var)
    means = np.where(total > 0, means, pooled_mean)
    per_product = _normal_posterior(raw, se, finite, means[codes], mean_var[codes], tau, z)
    table = pd.DataFrame(
        {"group": groups, "prior_mean": means, "prior_mean_se": np.sqrt(mean_var), "tau": tau,
         "n_products": np.bincount(g, minlength=n_groups)}
    )
    return per_product, table, tau


def shrink_within_brand(
    raw: np.ndarray, se: np.ndarray, category: np.ndarray, brand: np.ndarray, *, min_category_products: int = 3,
    interval: float = 0.90,
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, float]]:
    """Two-level normal empirical Bayes for products that are instances of a brand (a brand at each of
    several locations): ``raw ~ N(e, se^2)``, ``e ~ N(b_brand, tau_product^2)``, ``b_brand ~
    N(mu_category, tau_brand^2)``.

    The likelihood of a brand's raw estimates factorises exactly into their precision-weighted mean
    ``m_b ~ N(b, v_b)`` and the contrasts around it, so the restricted likelihood of both taus (and the
    category means) is the within-brand part plus :func:`shrink_within_category`'s over the ``m_b``;
    both taus are chosen by it. A brand's posterior shrinks ``m_b`` towards its category; a product's
    is ``(1 - k) E[b | data] + k raw`` with ``k = tau_product^2 / (tau_product^2 + se^2)``, its variance
    ``k se^2 + (1 - k)^2 Var[b | data]`` (exact: the product's estimate enters the brand's posterior
    once). Products without a raw estimate get their brand's posterior widened by ``tau_product``, or
    their category's prior when the brand has no estimate either.

    Returns (the columns of :func:`shrink_within_category` plus brand_elasticity, brand_elasticity_low /
    _high per product), the per-brand table (brand, category, m_b, its se, the brand's posterior and
    interval, n_products) and the taus.
    """
    raw, se = np.asarray(raw, dtype=float), np.asarray(se, dtype=float)
    brand = np.asarray(brand, dtype=object)
    category = np.asarray(category, dtype=object)
    finite = np.isfinite(raw) & np.isfinite(se) & (se > 0)
    b_codes, brands = pd.factorize(brand, sort=True)
    n_brands = len(brands)
    brand_category = pd.Series(category).groupby(b_codes).first().reindex(range(n_brands)).to_numpy(dtype=object)
    theta, s2, g = raw[finite], se[finite] ** 2, b_codes[finite]
    z = stats.norm.ppf(0.5 + interval / 2.0)

    def brand_means(tau_p2: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        w = 1.0 / (s2 + tau_p2)
        total = np.bincount(g, w, n_brands)
        means = np.bincount(g, w * theta, n_brands) / np.where(total > 0, total, np.nan)
        return means, total, w

    def negative_reml(params: np.ndarray) -> float:
        tau_p2, tau_b2 = np.exp(2.0 * params[0]), np.exp(2.0 * params[1])
        means, total, w = brand_means(tau_p2)
        present = total > 0
        within = (np.sum(np.log(s2 + tau_p2)) + np.sum(np.log(total[present]))
                  + np.sum(w * (theta - means[g]) ** 2))
        v = 1.0 / total[present]
        m = means[present]
        cats, c = np.unique(brand_category[present].astype(str), return_inverse=True)
        u = 1.0 / (v + tau_b2)
        u_total = np.bincount(c, u, len(cats))
        mu = np.bincount(c, u * m, len(cats)) / u_total
        between = np.sum(np.log(v + tau_b2)) + np.sum(np.log(u_total)) + np.sum(u * (m - mu[c]) ** 2)
        return 0.5 * (within + between)

    if finite.sum() >= 3 and len(np.unique(g)) >= 2:
        fitted = optimize.minimize(negative_reml, x0=np.log([0.2, 0.4]), method="L-BFGS-B",
                                   bounds=[(np.log(0.01), np.log(5.0))] * 2)
        tau_p, tau_b = (float(v) for v in np.exp(fitted.x))
    else:
        tau_p, tau_b = 0.3, 0.5  # too few estimates to tell the levels apart: wide, fixed priors
    means, total, _ = brand_means(tau_p**2)
    present = total > 0
    se_b = np.sqrt(np.where(present, 1.0 / np.where(present, total, 1.0), np.nan))
    # the brands' level: the brand means shrunk within category with tau_brand (a brand without an
    # estimate gets its category's prior)
    level, _, _ = shrink_within_category(np.where(present, means, np.nan), se_b, brand_category,
                                         min_category_products=min_category_products, interval=interval, tau=tau_b)
    brand_post = np.where(present, level["elasticity"], level["prior_elasticity"])
    brand_sd = np.where(present, level["elasticity_sd"], level["prior_sd"])

    b_mean = brand_post[b_codes]
    per_product = _normal_posterior(raw, se, finite, b_mean, brand_sd[b_codes] ** 2, tau_p, z).assign(
        brand_elasticity=b_mean, brand_elasticity_low=b_mean - z * brand_sd[b_codes],
        brand_elasticity_high=b_mean + z * brand_sd[b_codes])
    table = pd.DataFrame({
        "brand": brands, "category": brand_category, "raw_mean": means, "raw_mean_se": se_b,
        "elasticity": brand_post, "elasticity_low": brand_post - z * brand_sd, "elasticity_high": brand_post + z * brand_sd,
        "n_products": np.bincount(g, minlength=n_brands),
    })
    return per_product, table, {"tau_product": tau_p, "tau_brand": tau_b}
