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
first. Everything is vectorised: the pieces of every factor's JSON are gathered as arrays of strings
(numbers from lookup tables of their digits) and each row's pieces joined by one C-level
``str.join``, no Python code per row (``benchmarks/factors.py`` measures it). Written here rather than taken from a library
because the JSON shape and its words are this product's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from itertools import repeat
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import expit

from features.descriptions import CURRENCY_UNITS, PERCENT_UNITS, describe

#: the units of converted contributions
POINTS = "points"
CURRENCY = "currency"
#: published precision: probability points with one decimal, currency with two, link values with four
_DECIMALS = {POINTS: 1, CURRENCY: 2}
_LINK_DECIMALS = 4
_EPS = 1e-6
#: whole parts below this come from a lookup table, others are formatted (rare: amounts of a million)
_TABLE = 100_000
_ROWS_PER_CHUNK = 50_000
_SIGNS = np.array(["", "-"], dtype=object)


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
    amount's unit for "log")."""
    c = np.asarray(link_contributions, dtype="float64")
    score = np.asarray(score, dtype="float64")[:, None]
    if link == "logit":
        p = np.clip(score, _EPS, 1 - _EPS)
        return 100.0 * (p - expit(np.log(p / (1 - p)) - c))
    if link == "log":
        return score * -np.expm1(-c)
    raise ValueError(f"unknown link {link!r}; expected 'logit' or 'log'")


def top_factors(contributions: pd.DataFrame, values: pd.DataFrame, score: np.ndarray, terms: ScoreTerms, k: int = 3,
                currency: str | None = None) -> pd.Series:
    """The ``k`` factors that move each row's published ``score`` most, as a JSON list per row:
    ``feature``, ``label``, ``unit``, ``value`` (the row's value of the feature from ``values``; null
    when missing), ``contribution`` (converted, :func:`converted_contributions`), ``contribution_link``
    (the TreeSHAP value) and ``sentence``. ``contributions`` are link-space, without the bias column;
    ``currency`` (e.g. "EUR ") prefixes amounts of money in sentences, none: plain amounts."""
    if currency is not None and ('"' in currency or "\\" in currency):
        raise ValueError(f"currency {currency!r}: no quotes or backslashes (it is written into JSON unescaped)")
    link = contributions.to_numpy(dtype="float64")
    value_matrix = values.reindex(index=contributions.index, columns=contributions.columns).to_numpy(dtype="float64")
    converted = converted_contributions(link, score, terms.link)
    k = min(k, link.shape[1])
    catalogue = _Catalogue.of(tuple(contributions.columns), terms, currency or "")
    texts = []
    for start in range(0, len(link), _ROWS_PER_CHUNK):
        rows = slice(start, start + _ROWS_PER_CHUNK)
        texts.extend(_json_rows(link[rows], converted[rows], value_matrix[rows], catalogue, k))
    return pd.Series(np.array(texts, dtype=object), index=contributions.index, name="top_factors")


def _json_rows(link: np.ndarray, converted: np.ndarray, values: np.ndarray, catalogue: _Catalogue, k: int) -> list[str]:
    if not len(link):
        return []
    ranked = -np.abs(np.nan_to_num(converted, nan=0.0))
    if k < ranked.shape[1]:  # the k largest, then in order: cheaper than sorting every feature
        order = np.argpartition(ranked, k - 1, axis=1)[:, :k]
        order = np.take_along_axis(order, np.argsort(np.take_along_axis(ranked, order, axis=1), axis=1, kind="stable"),
                                   axis=1)
    else:
        order = np.argsort(ranked, axis=1, kind="stable")
    pieces: list[np.ndarray | str] = ["["]
    for position in range(k):
        if position:
            pieces.append(",")
        picked = (np.take_along_axis(m, order[:, position:position + 1], axis=1)[:, 0] for m in (link, converted, values))
        pieces.extend(_factor_pieces(catalogue, order[:, position], *picked))
    pieces.append("]")
    columns = [repeat(piece, len(link)) if isinstance(piece, str) else piece.tolist() for piece in pieces]
    return list(map("".join, zip(*columns)))  # one C-level join per row, no Python code per row


def _factor_pieces(catalogue: _Catalogue, feature: np.ndarray, link: np.ndarray, converted: np.ndarray,
                   value: np.ndarray) -> list[np.ndarray]:
    """The strings that, concatenated, are one factor's JSON object, each an array over the rows."""
    decimals = catalogue.decimals[feature]
    known = np.isfinite(value)
    value_text = _number(value, decimals)
    percent = catalogue.percent[feature]
    shown = _number(np.where(percent, value * 100.0, value), np.where(percent, 0, decimals))
    scale = 10.0 ** decimals
    one = known & (np.rint(np.where(known, value, 0.0) * scale) == scale)  # shown as exactly 1
    phrase = [catalogue.before[feature], catalogue.shown_prefix[feature], *shown, catalogue.shown_suffix[feature],
              catalogue.between[feature], np.where(one, catalogue.one[feature], catalogue.many[feature]),
              catalogue.after[feature]]
    if not known.all():  # "share of spend on discount unknown lowers ..."
        phrase[0][~known] = catalogue.missing[feature[~known]]
        for piece in phrase[1:]:
            piece[~known] = ""
    up = converted > 0
    many_verb = catalogue.counted[feature] & ~one
    amount = _number(np.abs(converted), catalogue.amount_decimals)
    zero = _is_zero(amount)  # "barely changes ...", not "raises ... by 0.0 points"
    negative_amount = (converted < 0) & ~zero
    sign = _SIGNS[negative_amount.astype("int64")]
    said = [np.where(zero, "", piece) for piece in amount]
    return [
        catalogue.head[feature], *value_text,
        catalogue.contribution_key, sign, *amount,
        catalogue.link_key, *_number(link, _LINK_DECIMALS),
        catalogue.sentence_key, *phrase,
        catalogue.verbs[np.where(zero, 4, 2 * (~up)) + many_verb],
        *said, np.where(zero, catalogue.end_unsaid, catalogue.end),
    ]


def _is_zero(number: list[np.ndarray]) -> np.ndarray:
    """Where a number's pieces (sign, whole, fraction) show zero."""
    return (number[1] == "0") & np.isin(number[2], ("", ".0", ".00", ".000", ".0000"))


def _number(x: np.ndarray, decimals: np.ndarray | int) -> list[np.ndarray]:
    """``x`` with fixed ``decimals`` (per row or one for all) as three object arrays of strings: sign,
    whole part and fraction (with its point); "null" for a value that is not finite."""
    x = np.asarray(x, dtype="float64")
    decimals = np.broadcast_to(np.asarray(decimals, dtype="int64"), x.shape)
    finite = np.isfinite(x)
    scale = 10 ** decimals
    scaled = np.rint(np.abs(np.where(finite, x, 0.0)) * scale)
    huge = scaled >= 2.0**53
    scaled = np.where(huge, 0.0, scaled).astype("int64")
    whole, fraction = np.divmod(scaled, scale)
    sign = _SIGNS[(finite & (x < 0) & ((scaled > 0) | huge)).astype("int64")]
    small = whole < _TABLE
    whole_text = _whole_table()[np.where(small, whole, 0)]
    if not small.all():
        whole_text[~small] = whole[~small].astype(str).astype(object)
    fraction_text = np.empty(x.shape, dtype=object)
    for d in np.unique(decimals):
        rows = decimals == d
        fraction_text[rows] = _fraction_table(int(d))[fraction[rows]]
    if huge.any():  # beyond exact integers: Python's own formatting, rows this big are rare
        whole_text[huge] = np.array([f"{abs(v):.{d}f}" for v, d in zip(x[huge], decimals[huge])], dtype=object)
        fraction_text[huge] = ""
    sign[~finite], whole_text[~finite], fraction_text[~finite] = "", "null", ""
    return [sign, whole_text, fraction_text]


@lru_cache(maxsize=1)
def _whole_table() -> np.ndarray:
    return np.array([str(i) for i in range(_TABLE)], dtype=object)


@lru_cache(maxsize=8)
def _fraction_table(decimals: int) -> np.ndarray:
    if decimals == 0:
        return np.array([""], dtype=object)
    return np.array([f".{i:0{decimals}d}" for i in range(10**decimals)], dtype=object)


_PLURAL = re.compile(r"\{([^{}|]*)\|([^{}|]*)\}")


@dataclass(frozen=True)
class _Catalogue:
    """Per feature (in the contributions' column order) the fixed pieces of its JSON and sentence."""

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
    contribution_key: str = ',"contribution":'
    link_key: str = ',"contribution_link":'
    sentence_key: str = ',"sentence":"'
    end: str = '"}'
    end_unsaid: str = '"}'  # after a sentence without an amount

    @classmethod
    def of(cls, features: tuple[str, ...], terms: ScoreTerms, currency: str) -> _Catalogue:
        described = [describe(feature) for feature in features]
        parts = [_template_parts(d.phrase) for d in described]
        objects = lambda values: np.array(values, dtype=object)  # noqa: E731
        money = currency if terms.unit == CURRENCY else ""
        return cls(
            head=objects([f'{{"feature":"{f}","label":"{d.label}","unit":"{d.unit}","value":'
                          for f, d in zip(features, described)]),
            decimals=np.array([d.decimals for d in described], dtype="int64"),
            percent=np.array([d.unit in PERCENT_UNITS for d in described]),
            counted=np.array([d.counted for d in described]),
            before=objects([p[0] for p in parts]), between=objects([p[1] for p in parts]),
            one=objects([p[2] for p in parts]), many=objects([p[3] for p in parts]), after=objects([p[4] for p in parts]),
            shown_prefix=objects([currency if d.unit in CURRENCY_UNITS else "" for d in described]),
            shown_suffix=objects(["%" if d.unit in PERCENT_UNITS else "" for d in described]),
            missing=objects([f"{d.label[:1].lower()}{d.label[1:]} unknown" for d in described]),
            amount_decimals=_DECIMALS[terms.unit],
            verbs=objects([f" {verb} {terms.subject} by {money}" for verb in ("raises", "raise", "lowers", "lower")]
                          + [f" barely {verb} {terms.subject}" for verb in ("changes", "change")]),
            end=' points"}' if terms.unit == POINTS else '"}',
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
