"""The published top factors, in words and in the score's own unit (docs/explanations.md).

Each model explains a score with exact TreeSHAP values (``contributions``) in its **link** space:
log-odds for the propensity and churn classifiers, log of spend for the CLV model's Tweedie log link.
They add up (with a bias) to the link of the prediction, but a log-odds of -0.52 means nothing to a
marketer. Each factor is converted into the score's own unit by **removing that feature's
contribution alone from the link** and reading the published score again:

- probability scores: ``100 * (p - sigmoid(logit(p) - c))``, in probability **points** (0-100 scale);
- CLV: ``v - v * exp(-c) = v * (1 - exp(-c))``, in the store's **currency** (``v`` the published
  expected spend; the horizon scaling is a constant factor, so it carries through exactly).

So "lowers the purchase chance by 12.3 points" means: without this feature's effect the published
chance would be 12.3 points higher. Why this rather than a proportional split of ``p - p_base``: it
answers each factor's question on its own (a split is unstable when the contributions nearly cancel),
keeps the sign of the link contribution, and needs only the published score, so it is consistent with
it by construction (``p - contribution`` is always a probability). The converted contributions do not
add up to ``p - p_base`` (the link is not linear); the link ones, published beside them, do. The
probability classifiers' calibrator (Platt or isotonic, :mod:`ml.families.classifier`) is read as a
shift of this customer's log-odds: exact for a shift, an approximation for a Platt slope other than 1.

Factors are ranked by the magnitude of the **converted** contribution (what the reader sees), largest
first. No Python code runs per row: each factor's words are chosen as pool ids and its numbers rounded, as arrays
over the rows, and :mod:`ml.families.text_rows` writes every row's JSON from them, compiled and in parallel
(``benchmarks/factors.py`` measures it). Written here rather than taken from a library because the JSON shape and its
words are this product's.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
from numba import njit, prange

from features.descriptions import CURRENCY_UNITS, PERCENT_UNITS, describe
from ml.families.text_rows import EMPTY, Numbers, Pool, numbers, render

#: the units of converted contributions
POINTS = "points"
CURRENCY = "currency"
#: published precision: probability points with one decimal, currency with two, link values with four
_DECIMALS = {POINTS: 1, CURRENCY: 2}
_LINK_DECIMALS = 4
_EPS = 1e-6
_ROWS_PER_CHUNK = 50_000


@dataclass(frozen=True)
class ScoreTerms:
    """How a score's factors are converted and worded: ``link`` ("logit": a probability through the
    log-odds; "log": an amount through a log link), ``subject`` (what a factor moves, "the purchase
    chance") and ``unit`` (:data:`POINTS` or :data:`CURRENCY`)."""

    link: str
    subject: str
    unit: str


def score_terms(score: str, horizon_days: int | None = None) -> ScoreTerms:
    """The terms of a published customer score: ``purchase_propensity``, ``churn_risk`` or ``clv``
    (``horizon_days``: the CLV model's horizon, named in its sentences)."""
    if score == "purchase_propensity":
        return ScoreTerms("logit", "the purchase chance", POINTS)
    if score == "churn_risk":
        return ScoreTerms("logit", "the churn risk", POINTS)
    if score == "clv":
        return ScoreTerms("log", f"expected {horizon_days}-day spend" if horizon_days else "expected spend", CURRENCY)
    raise ValueError(f"no explanation terms for the score {score!r}")


def converted_contributions(link_contributions: np.ndarray, score: np.ndarray, link: str) -> np.ndarray:
    """Each link-space contribution ``c`` (rows x features) in the score's unit: the published ``score``
    minus the score with ``c`` alone removed from the link (probability points for "logit", the
    amount's unit for "log"). The published factors convert with the same :func:`_converted`."""
    return _convert_all(np.asarray(link_contributions, dtype="float64"), np.asarray(score, dtype="float64"),
                        _is_logit(link))


def _is_logit(link: str) -> bool:
    """Whether ``link`` is "logit" (else "log"); any other link is refused."""
    if link not in ("logit", "log"):
        raise ValueError(f"unknown link {link!r}; expected 'logit' or 'log'")
    return link == "logit"


@njit(cache=True)
def _log_odds(score):
    """The probability the logit link reads (``score`` kept off 0 and 1) and its log-odds."""
    p = min(max(score, _EPS), 1.0 - _EPS)
    return p, math.log(p / (1.0 - p))


@njit(cache=True)
def _converted(c, score, p, log_odds, logit):
    """One contribution ``c`` converted (:func:`converted_contributions`); ``p``, ``log_odds``: :func:`_log_odds`."""
    if logit:
        return 100.0 * (p - 1.0 / (1.0 + math.exp(c - log_odds)))
    return score * -math.expm1(-c)


@njit(cache=True)
def _convert_all(c, score, logit):
    out = np.empty(c.shape)
    for row in range(c.shape[0]):
        p, log_odds = _log_odds(score[row])
        for j in range(c.shape[1]):
            out[row, j] = _converted(c[row, j], score[row], p, log_odds, logit)
    return out


def top_factors(contributions: pd.DataFrame, values: pd.DataFrame, score: np.ndarray, terms: ScoreTerms, k: int = 3,
                currency: str | None = None) -> pd.Series:
    """The ``k`` factors that move each row's published ``score`` most, as a JSON list per row:
    ``feature``, ``label``, ``unit``, ``value`` (the row's value of the feature from ``values``; null
    when missing), ``contribution`` (converted, :func:`converted_contributions`), ``contribution_link``
    (the TreeSHAP value) and ``sentence``. ``contributions`` are link-space, without the bias column;
    ``currency`` (e.g. "EUR ") prefixes amounts of money in sentences, none: plain amounts."""
    if currency is not None and ('"' in currency or "\\" in currency):
        raise ValueError(f"currency {currency!r}: no quotes or backslashes (it is written into JSON unescaped)")
    # features x rows: a frame's values are stored column by column, so these are views or one copy each
    link = contributions.to_numpy(dtype="float64").T
    value_matrix = values.reindex(index=contributions.index, columns=contributions.columns).to_numpy(dtype="float64").T
    logit = _is_logit(terms.link)
    k = min(k, link.shape[0])
    catalogue = _Catalogue.of(tuple(contributions.columns), terms, currency or "")
    score = np.ascontiguousarray(score, dtype="float64")
    texts = []
    for start in range(0, len(score), _ROWS_PER_CHUNK):
        rows = slice(start, start + _ROWS_PER_CHUNK)
        texts.extend(_json_rows(*_ranked(link[:, rows], score[rows], logit, k, value_matrix[:, rows]),
                                catalogue))
    return pd.Series(np.array(texts, dtype=object), index=contributions.index, name="top_factors")


@njit(parallel=True, cache=True)
def _ranked(link, score, logit, k, values):
    """Each row's ``k`` factors (``link`` and ``values``: features x rows), largest converted magnitude first (a
    missing one counts as 0; ties in column order, as a stable sort): their columns and their link contributions,
    converted contributions (:func:`_converted`) and values, each (rows, k); row by row, in parallel."""
    features, rows = link.shape
    order = np.empty((rows, k), dtype=np.int64)
    magnitude = np.empty((rows, k))
    converted = np.empty((rows, k))
    for row in prange(rows):
        p, log_odds = _log_odds(score[row])
        filled = 0
        for feature in range(features):
            value = _converted(link[feature, row], score[row], p, log_odds, logit)
            size = 0.0 if math.isnan(value) else abs(value)
            if filled == k and size <= magnitude[row, k - 1]:
                continue
            at = filled if filled < k else k - 1  # insert after every larger or equal one: ties keep column order
            while at > 0 and magnitude[row, at - 1] < size:
                if at < k:
                    order[row, at], magnitude[row, at], converted[row, at] = (
                        order[row, at - 1], magnitude[row, at - 1], converted[row, at - 1])
                at -= 1
            order[row, at], magnitude[row, at], converted[row, at] = feature, size, value
            filled = min(filled + 1, k)
    picked_link = np.empty((rows, k))
    picked_value = np.empty((rows, k))
    for row in prange(rows):
        for position in range(k):
            picked_link[row, position] = link[order[row, position], row]
            picked_value[row, position] = values[order[row, position], row]
    return order, picked_link, converted, picked_value


def _json_rows(order: np.ndarray, link: np.ndarray, converted: np.ndarray, values: np.ndarray,
               catalogue: _Catalogue) -> list[str]:
    if not len(order):
        return []
    pool = catalogue.pool.copy()  # numbers too large for exact integers join it as text
    factors = [_factor_slots(catalogue, pool, order[:, position], link[:, position], converted[:, position],
                             values[:, position]) for position in range(order.shape[1])]
    strings = np.stack([s for s, _ in factors])
    return render(pool, _LAYOUT, strings, Numbers.stack([n for _, n in factors], axis=0), catalogue.opening,
                  catalogue.separator, catalogue.closing)  # compiled, in parallel (ml.families.text_rows)


#: One factor's JSON object as string slots (>= 0) and number slots (< 0), in order (:func:`_factor_slots`)
_LAYOUT = [0, -1, 1, -2, 2, -3, 3, 4, 5, -4, 6, 7, 8, 9, 10, -5, 11]


def _factor_slots(catalogue: _Catalogue, pool: Pool, feature: np.ndarray, link: np.ndarray, converted: np.ndarray,
                  value: np.ndarray) -> tuple[np.ndarray, Numbers]:
    """One factor's JSON object for every row, in :data:`_LAYOUT`'s slots: the pool ids of its words (12 x rows)
    and its five numbers (value, contribution, link contribution, the value in the sentence, the amount said)."""
    decimals = catalogue.decimals[feature]
    known = np.isfinite(value)
    percent = catalogue.percent[feature]
    scale = 10.0 ** decimals
    one = known & (np.rint(np.where(known, value, 0.0) * scale) == scale)  # shown as exactly 1
    contribution = numbers(converted, catalogue.amount_decimals, pool)
    zero = (contribution.special < 0) & (contribution.whole == 0) & (contribution.fraction == 0)  # "barely changes"
    up = converted > 0
    many_verb = catalogue.counted[feature] & ~one
    rows = len(feature)
    constant = lambda piece: np.full(rows, piece, dtype=np.int32)  # noqa: E731
    when_known = lambda ids: np.where(known, ids, EMPTY)  # noqa: E731  # "share of spend on discount unknown ..."
    strings = np.stack([
        catalogue.head[feature], constant(catalogue.contribution_key), constant(catalogue.link_key),
        constant(catalogue.sentence_key), np.where(known, catalogue.before[feature], catalogue.missing[feature]),
        when_known(catalogue.shown_prefix[feature]), when_known(catalogue.shown_suffix[feature]),
        when_known(catalogue.between[feature]),
        when_known(np.where(one, catalogue.one[feature], catalogue.many[feature])),
        when_known(catalogue.after[feature]),
        catalogue.verbs[np.where(zero, 4, 2 * (~up)) + many_verb],
        np.where(zero, catalogue.end_unsaid, catalogue.end),
    ])
    shown = numbers(np.where(percent, value * 100.0, value), np.where(percent, 0, decimals), pool)
    shown.special[~known] = EMPTY
    # the contribution's digits without its minus ("lowers ... by 12.3"), nothing where they show zero
    said = replace(contribution, special=np.where(zero, EMPTY, contribution.special).astype(np.int32),
                               negative=np.zeros_like(contribution.negative))
    return strings, Numbers.stack([numbers(value, decimals, pool), contribution, numbers(link, _LINK_DECIMALS, pool),
                                   shown, said], axis=0)


_PLURAL = re.compile(r"\{([^{}|]*)\|([^{}|]*)\}")


@dataclass(frozen=True)
class _Catalogue:
    """Per feature (in the contributions' column order) the pool ids of the fixed pieces of its JSON and sentence."""

    pool: Pool
    head: np.ndarray
    decimals: np.ndarray
    percent: np.ndarray
    counted: np.ndarray
    before: np.ndarray
    between: np.ndarray
    one: np.ndarray
    many: np.ndarray
    after: np.ndarray
    shown_prefix: np.ndarray
    shown_suffix: np.ndarray
    missing: np.ndarray
    amount_decimals: int
    #: " raises <subject> by ", " raise ...", " lowers ...", " lower ...", " barely changes <subject>", " barely change
    #: ..." (by direction, zero last, then verb number)
    verbs: np.ndarray
    end: int
    contribution_key: int
    link_key: int
    sentence_key: int
    end_unsaid: int  # after a sentence without an amount
    opening: int
    separator: int
    closing: int

    @classmethod
    def of(cls, features: tuple[str, ...], terms: ScoreTerms, currency: str) -> _Catalogue:
        described = [describe(feature) for feature in features]
        parts = [_template_parts(d.phrase) for d in described]
        money = currency if terms.unit == CURRENCY else ""
        pool = Pool()
        ids = pool.ids
        return cls(
            pool=pool,
            head=ids([f'{{"feature":"{f}","label":"{d.label}","unit":"{d.unit}","value":'
                      for f, d in zip(features, described)]),
            decimals=np.array([d.decimals for d in described], dtype="int64"),
            percent=np.array([d.unit in PERCENT_UNITS for d in described]),
            counted=np.array([d.counted for d in described]),
            before=ids([p[0] for p in parts]), between=ids([p[1] for p in parts]),
            one=ids([p[2] for p in parts]), many=ids([p[3] for p in parts]), after=ids([p[4] for p in parts]),
            shown_prefix=ids([currency if d.unit in CURRENCY_UNITS else "" for d in described]),
            shown_suffix=ids(["%" if d.unit in PERCENT_UNITS else "" for d in described]),
            missing=ids([f"{d.label[:1].lower()}{d.label[1:]} unknown" for d in described]),
            amount_decimals=_DECIMALS[terms.unit],
            verbs=ids([f" {verb} {terms.subject} by {money}" for verb in ("raises", "raise", "lowers", "lower")]
                      + [f" barely {verb} {terms.subject}" for verb in ("changes", "change")]),
            end=pool.id(' points"}' if terms.unit == POINTS else '"}'),
            contribution_key=pool.id(',"contribution":'), link_key=pool.id(',"contribution_link":'),
            sentence_key=pool.id(',"sentence":"'), end_unsaid=pool.id('"}'),
            opening=pool.id("["), separator=pool.id(","), closing=pool.id("]"),
        )


def _template_parts(phrase: str) -> tuple[str, str, str, str, str]:
    """A phrase template split around ``{value}`` and its one plural marker (``{s}`` or ``{one|many}``):
    (before the value, between it and the marker, the word for 1, for other values, after the marker)."""
    before, _, rest = phrase.partition("{value}")
    rest = rest.replace("{s}", "{|s}")
    marker = _PLURAL.search(rest)
    if marker is None:
        return before, rest, "", "", ""
    return before, rest[:marker.start()], marker.group(1), marker.group(2), rest[marker.end():]


def factors_json(model: Any, X: pd.DataFrame, score_name: str, score: Any) -> pd.Series:
    """Each scored row's top 3 factors of ``score_name`` as JSON (:func:`top_factors`), null
    for a model without contributions (BTYD); only the rows the family scored: explaining is costly (docs/scale.md)."""
    if not len(X):
        return pd.Series(dtype=object)
    if hasattr(model, "explained"):  # a classifier: its contributions and the BG/NBD columns it derived for them
        contributions, values = model.explained(X)
    else:
        contributions = model.contributions(X)
        if contributions is not None:
            from ml.families.binary import with_btyd  # lazily: this module stays light (no model libraries)

            values = with_btyd(X, getattr(model, "btyd", None))  # the BG/NBD columns a model derives, when it does
    if contributions is None:
        return pd.Series("null", index=X.index)
    contributions = contributions.drop(columns="bias", errors="ignore")
    terms = score_terms(score_name, getattr(model, "horizon_days", None))
    return top_factors(contributions, values, np.asarray(score, dtype="float64"), terms, k=3)
