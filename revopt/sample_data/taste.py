"""Customer taste for the synthetic store: which categories and products each customer prefers.

Without taste every customer picks a basket line's product from the same price-driven choice
probabilities ``p(d, j)`` of the day (:mod:`revopt.sample_data.synth`, Products and prices), so a
recommender has nothing personal to learn.  With a :class:`TasteDesign` of strength ``s > 0``:

- customer ``i`` has a category taste ``theta_i ~ Dirichlet(concentration x S)``, ``S(c)`` the
  store's mean category share ``mean_d sum_{j in c} p(d, j)``, so the population keeps the store's
  category mix while each customer leans to one or two categories; their *category share* is
  ``w_i(c) = (1 - s) S(c) + s theta_i(c)`` (``truth.customer_taste.share``);
- customer ``i`` has ``favourites`` favourite products (drawn with replacement: category from
  ``theta_i``, product in it by mean choice probability); a favourite ``j`` weighs
  ``1 + b_j`` times its choice probability within its category, ``b_j = r / (1 - r) / pbar(j | c)``
  with ``r = s x favourite_share`` and ``pbar(j | c)`` its mean share of its category, so at the
  store's mean prices about ``r`` of a customer's lines in a category holding one favourite rebuy it;
- a line (or a known customer's product view) of customer ``i`` on day ``d`` picks category ``c``
  with probability proportional to ``S_d(c) x w_i(c) / S(c)``, then product ``j`` in ``c`` with
  probability proportional to ``p(d, j) x (1 + b_j [j favourite of i])``.

Prices and promotions stay a multiplicative factor of every choice weight, so demand keeps its
price response (only its normalisers become personal), and one uniform per line picks category,
favourite and product by successive inverse-CDF steps: the generator's random streams draw exactly
what they drew without taste, only the products change.  Strength 0 is the store without taste.

Hand-written for the same reason as the generator: the known per-customer parameters are the point.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

#: lines drawn at once: bounds the (lines x categories) and (lines x favourites) work arrays
_BATCH = 250_000


@dataclass(frozen=True)
class TasteDesign:
    """How strongly customers prefer their own categories and favourite products (module docstring).

    ``strength`` in [0, 1] mixes each customer's category taste into the store's category mix and scales
    the favourites' rebuy share (0: no personal taste, the store before generator 1.3);
    ``concentration`` is the Dirichlet concentration of the category tastes (small: one or two
    categories per customer); ``favourites`` products per customer; ``favourite_share`` the share of a
    customer's lines in a category with one favourite that rebuy it, at strength 1 and mean prices.
    """

    strength: float = 0.8
    concentration: float = 2.0
    favourites: int = 3
    favourite_share: float = 0.25

    def __post_init__(self) -> None:
        if not (0.0 <= self.strength <= 1.0 and self.concentration > 0 and self.favourites >= 1
                and 0.0 <= self.favourite_share < 1.0):
            raise ValueError(f"TasteDesign needs 0 <= strength <= 1, concentration > 0, favourites >= 1 and "
                             f"0 <= favourite_share < 1, got {self}")

    def run_parameters(self) -> dict[str, str]:
        """The design as ``truth.generator_run`` rows (key -> value)."""
        return {"taste.strength": repr(float(self.strength)), "taste.concentration": repr(float(self.concentration)),
                "taste.favourites": str(int(self.favourites)),
                "taste.favourite_share": repr(float(self.favourite_share))}


#: customers pick products from the day's choice probabilities alone
NO_TASTE = TasteDesign(strength=0.0)


@dataclass(frozen=True)
class CustomerTaste:
    """Every customer's drawn taste plus the store-wide arrays that turn it into product draws."""

    category: np.ndarray  # (products,) category index of each product
    by_category: np.ndarray  # (products,) product indices sorted by category
    first_in_category: np.ndarray  # (categories + 1,) where each category starts in by_category
    shifted_cdf: np.ndarray  # (days * products,) cumulative choice in by_category order, row d shifted by d
    category_cdf: np.ndarray  # (days, categories + 1) that cumulative choice where each category starts
    mass_ratio: np.ndarray  # (days, categories) S_d(c) / S(c), 0 for a category without products
    choice: np.ndarray  # (days, products) p(d, j)
    favourite_weight: np.ndarray  # (products,) b_j
    share: np.ndarray  # (customers, categories) w_i(c)
    favourite: np.ndarray  # (customers, favourites) product indices
    favourite_category: np.ndarray  # (customers, favourites) their categories

    def draw(self, customer: np.ndarray, day: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
        """Product index of each draw ``k`` by customer ``customer[k]`` (index) on ``day[k]`` from ``uniforms[k]``."""
        out = np.empty(len(customer), dtype=np.int64)
        for lo in range(0, len(customer), _BATCH):
            part = slice(lo, lo + _BATCH)
            out[part] = self._draw(customer[part], day[part].astype(np.int64), uniforms[part])
        return out

    def _draw(self, customer: np.ndarray, day: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
        rows = np.arange(len(customer))
        weight = self.mass_ratio[day] * self.share[customer]
        cumulative = np.cumsum(weight, axis=1)
        target = uniforms * cumulative[:, -1]
        category = np.minimum((cumulative <= target[:, None]).sum(axis=1), weight.shape[1] - 1)
        # the uniform's position inside the chosen category, again uniform on [0, 1)
        inside = np.clip((target - (cumulative[rows, category] - weight[rows, category]))
                         / weight[rows, category], 0.0, np.nextafter(1.0, 0.0))

        favourite = self.favourite[customer]
        n_products = len(self.category)
        boost = np.where(self.favourite_category[customer] == category[:, None],
                         self.choice.ravel()[day[:, None] * n_products + favourite] * self.favourite_weight[favourite],
                         0.0)
        boost_cumulative = np.cumsum(boost, axis=1)
        boost_mass = boost_cumulative[:, -1]
        below = self.category_cdf[day, category]
        value = inside * (self.category_cdf[day, category + 1] - below + boost_mass)
        picked = np.minimum((boost_cumulative <= value[:, None]).sum(axis=1), favourite.shape[1] - 1)

        first, end = self.first_in_category[category], self.first_in_category[category + 1]
        position = np.searchsorted(self.shifted_cdf, day + below + (value - boost_mass), side="right")
        plain = self.by_category[np.clip(position - day * n_products, first, end - 1)]
        return np.where(value < boost_mass, favourite[rows, picked], plain)


def draw_taste(rng: np.random.Generator, design: TasteDesign, choice_cdf: np.ndarray, category: np.ndarray,
               n_categories: int, n_customers: int) -> CustomerTaste:
    """Draw ``n_customers`` customers' tastes over products of ``category`` (index < ``n_categories``) whose
    day-by-day choice is the row-wise CDF ``choice_cdf`` (days, products)."""
    days, n_products = choice_cdf.shape
    choice = np.diff(choice_cdf, axis=1, prepend=0.0)
    by_category = np.argsort(category, kind="stable")
    first_in_category = np.searchsorted(category[by_category], np.arange(n_categories + 1))
    sorted_cdf = np.cumsum(choice[:, by_category], axis=1)
    ends = np.concatenate([np.zeros((days, 1)), sorted_cdf], axis=1)[:, first_in_category]
    category_mass = np.diff(ends, axis=1)
    mean_share = category_mass.mean(axis=0)
    present = mean_share > 0
    mass_ratio = np.divide(category_mass, mean_share, out=np.zeros_like(category_mass), where=present)

    theta = np.zeros((n_customers, n_categories))
    theta[:, present] = rng.dirichlet(design.concentration * mean_share[present], n_customers)
    share = (1.0 - design.strength) * mean_share + design.strength * theta

    # favourites: category from theta, product in it by mean choice probability
    mean_choice = choice.mean(axis=0)
    favourite_category = _inverse_cdf(np.cumsum(theta, axis=1), rng.random((n_customers, design.favourites)))
    mean_cdf = np.concatenate([[0.0], np.cumsum(mean_choice[by_category])])
    first = first_in_category[favourite_category]
    value = mean_cdf[first] + rng.random(favourite_category.shape) * mean_share[favourite_category]
    position = np.clip(np.searchsorted(mean_cdf, value, side="right") - 1, first,
                       first_in_category[favourite_category + 1] - 1)
    rebuy = design.strength * design.favourite_share
    within = mean_choice / mean_share[category]
    return CustomerTaste(
        category=category, by_category=by_category, first_in_category=first_in_category,
        shifted_cdf=(sorted_cdf + np.arange(days, dtype=np.float64)[:, None]).ravel(),
        category_cdf=ends, mass_ratio=mass_ratio, choice=choice, favourite_weight=rebuy / (1.0 - rebuy) / within,
        share=share, favourite=by_category[position], favourite_category=favourite_category,
    )


def customer_taste_truth(taste: CustomerTaste | None, category_names: tuple[str, ...]) -> pd.DataFrame:
    """``truth.customer_taste``: each customer's share of every category the store sells (empty without taste)."""
    if taste is None:
        return pd.DataFrame({"customer_id": pd.Series(dtype="int64"), "category": pd.Series(dtype=object),
                             "share": pd.Series(dtype="float64")})
    n_customers, n_categories = taste.share.shape
    sold = np.flatnonzero(np.bincount(taste.category, minlength=n_categories) > 0)
    return pd.DataFrame({
        "customer_id": np.repeat(np.arange(1, n_customers + 1, dtype=np.int64), len(sold)),
        "category": np.tile(np.asarray(category_names, dtype=object)[sold], n_customers),
        "share": taste.share[:, sold].ravel(),
    })


def _inverse_cdf(cumulative: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
    """Per row ``r`` of ``cumulative`` (rows, k; last column the row total) the index drawn by each of
    ``uniforms[r]`` (rows, m)."""
    target = uniforms * cumulative[:, -1:]
    return np.minimum((cumulative[:, None, :] <= target[:, :, None]).sum(axis=2), cumulative.shape[1] - 1)
