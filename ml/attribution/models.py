"""Multi-touch attribution models: which channels (and campaigns) get the credit for each order.

Five heuristic rules (first touch, last non-direct touch, linear, time decay, position based) and two
data-driven ones (Markov-chain removal effect, Shapley values over channels). Everything is pure (pandas /
numpy / scipy in, pandas out; no database, MLflow or Airflow) and vectorised: no Python loop runs over
journeys (the only loops are over channels, Markov orders and subset bits), so a million journeys take
seconds (``benchmarks/attribution_models.py``). Why hand-written: the reference implementation of the
Markov model, ChannelAttribution (Altomare & Loris, R/Python), estimates the chain's conversion
probabilities by *simulating* paths (``nsim_start``) and credits channels only in aggregate; neither it nor
any maintained Python package gives per-order credits, campaign credits or an exact Shapley value over
channels. The computations are short and each is checked in ``tests/unit/test_attribution_models.py``
against a reference written there from the definition by a different route.

**Input.** A *journeys* frame, one row per touchpoint:

- ``journey_id`` (int64), ``position`` (0-based order within the journey), ``channel`` (str),
  ``campaign`` (str or None: stores without campaigns leave it None), ``touch_ts`` (datetime64[ns, UTC]);

and an *outcomes* frame, one row per journey: ``journey_id`` (unique), ``converted`` (bool), ``revenue``
(float, 0 when not converted; ignored for journeys that did not convert), ``conversion_ts`` (NaT when
not converted). A converting journey is an order's touchpoints in the lookback window before the order;
a non-converting one is the touchpoints of a customer / period that did not convert (only the Markov model
reads them, to learn which paths lead nowhere). Every ``journey_id`` of *journeys* must be in *outcomes*;
a journey of *outcomes* with no touchpoint is allowed.

Order within a journey is ``position`` alone (touches are sorted by it, stably, so equal positions keep
their row order); ``touch_ts`` is read only by the time-decay model, so equal timestamps never reorder
touches.

**Output.** Every model returns one row per converted journey and (channel, campaign) it credits:
``model``, ``journey_id``, ``channel``, ``campaign``, ``credit`` (the share of the order, summing to 1 per
converted journey), ``revenue_credit`` (``credit x revenue``). Non-converted journeys get no rows. A
converted journey without touchpoints is credited in full to the channel ``"(none)"`` (campaign None) by
every model. :func:`summarise_credits` sums credits per channel (and campaign) into conversions and
revenue; :func:`check_conservation` raises when a model lost or created credit.

**Campaigns.** Credit is computed per touch and then summed per (channel, campaign) within a journey.
For the position rules each touch carries its own weight. The data-driven models credit *channels*; a
journey's credit for channel c is split equally over that journey's touches of c, so each campaign gets
the share of c's touches that carry it (a None campaign is a campaign like any other).

**Direct.** ``direct_channels`` (default ``("direct",)``) names the channels that mean "came by itself"
(typed URL, bookmark). Only the last-non-direct rule treats them specially: it ignores direct touches
unless a journey has nothing else, then the last (direct) touch gets the order. Every other model treats
direct as an ordinary channel: it is data, and hiding it would hand its conversions to whatever touched
the customer before.

1. **First touch**: the touch at position 0 gets 1.
2. **Last non-direct touch**: the last touch whose channel is not direct gets 1; the last touch if all are
   direct (Google Analytics' historical default).
3. **Linear**: each of the n touches gets 1/n (a channel touched twice gets 2/n).
4. **Time decay**: touch i gets weight ``2^(-age_i / half_life)`` with ``age_i`` the days from the touch to
   the conversion (clipped at 0 for touches stamped after it), normalised over the journey. Computed as
   ``2^(-(age_i - min age) / half_life)``, the same after normalising, so old journeys do not underflow.
   Default half-life 7 days (Google Analytics' time-decay default).
5. **Position based** (U-shaped, 40/20/40): with n >= 3 touches the first gets ``first_share`` (0.4), the
   last ``last_share`` (0.4) and the n - 2 middle ones share the rest equally. One touch gets 100 %; two
   touches split in the ratio first_share : last_share (50/50 at the defaults), since there is no middle.
6. **Markov-chain removal effect** (Anderl, Becker, von Wangenheim, Schumann, "Mapping the customer
   journey: Lessons learned from graph-based online attribution modeling", IJRM 33(3), 2016; the
   ChannelAttribution package). Each journey is a walk ``start -> s_1 -> ... -> s_n -> conversion | null``;
   with order k a state is the tuple of the last k channels, ``s_t = (c_{t-k+1}, ..., c_t)``, the places
   before the first touch filled with the start marker (so every touch is a state, a journey shorter than k
   included; order 1 is one state per channel). Repeated channels are kept (self-loops). The transition
   probabilities are the counted transitions of *all* journeys with at least one touch (converting and
   not) divided by the counts out of each state. With Q the transitions
   among the transient states (start included) and r the one-step probabilities into conversion, the
   absorption probabilities solve ``(I - Q) x = r`` and ``P(conv) = x[start]``, solved as a linear system,
   not simulated: by sparse LU, or past ``DIRECT_SOLVE_STATES`` states by GMRES to a checked residual of
   1e-13 (error ~1e-13 in P). Removing channel c sends every state containing c to null (rows of those
   states dropped from the system; a state with c earlier in its tuple is only reachable through one with
   c as its last entry, so "containing" and "ending in" give the same answer): ``P_{-c}(conv)``, and the removal effect
   ``RE_c = 1 - P_{-c}(conv) / P(conv)``, in [0, 1] since removing paths cannot add conversions.
   ChannelAttribution then splits the *total* conversions over channels in proportion to RE; so does this
   model, and it also credits **each order**: converted journey j gives channel c in it ``w_c / sum of w
   over the distinct channels of j``, with one weight per channel **raked** (:func:`raked_weights`) so
   that channel c's credits over all orders total ``N RE_c / sum RE`` (N converted journeys with touches,
   RE summed over the channels on converting paths). Every order's credit sums to 1 and each channel's
   total is ChannelAttribution's. (Splitting each order by ``RE_c / sum RE`` instead would hand the
   frequent channels, present in most orders, nearly all of every mixed order, and their totals would
   no longer be the model's split.) When no weights can reach those totals (a channel that is the lone
   touch of more orders than its share), the nearest reachable totals are used and the gap is logged. A
   channel seen only on paths that never convert can still have RE > 0 (at order 1, D -> A -> null
   borrows A's odds of converting elsewhere: the chain forgets where it came from), but it gets credit
   only from the orders it appears in, so it is left out of the split. Journeys without touches are left out of
   the chain: including them only rescales every ``P - P_{-c}`` by the same factor, so no per-order share
   would change.
7. **Shapley values over channels** (Shapley 1953; Zhao, Mahboobi, Bagheri, "Shapley value methods for
   attribution modeling in online advertising", arXiv 1804.05327, 2018). Players are the channels of the
   converting journeys, R(T) the conversions of the converting journeys whose channel *set* is exactly T,
   and the worth of a coalition the **subset sum** ``v(S) = sum_{T subset of S} R(T)``: the conversions
   the channels in S bring without help from outside S. Why this game and not ``v(S) = R(S)`` (the exact
   set's conversions): that one is not monotone (no journey touched every channel gives
   ``v(all) = 0``), so channels get negative values and the values sum to ``v(all)``, the conversions of
   journeys that touched every channel, not to the total. The subset-sum game is monotone, its values are
   >= 0 and sum to all conversions, and Zhao et al.'s "simplified Shapley value" is its closed form,
   ``phi_c = sum_{T containing c} R(T) / |T|``. Conversions (not revenue) are the worth: one game gives one
   share per order, applied to both credit and revenue so revenue_credit stays credit x revenue.
   Computed exactly by the definition ``phi_c = sum_{S not containing c} |S|! (n-|S|-1)! / n!
   (v(S + c) - v(S))`` over all subsets of the n channels (v by a subset-sum transform over the 2^n
   masks), for n <= ``MAX_ENUMERATED_CHANNELS`` (20: 2^20 x 20 terms); above that by the closed form,
   which equals it (tested). Non-converting journeys do not enter this game. Per order, the weights are
   raked to the totals ``phi`` as for the Markov model; for this game that is each order split equally
   over its distinct channels (the closed form above says those splits total ``phi``), so the per-order
   credit is the simplified Shapley value's own allocation.

**Conservation**: every model's credits sum to 1 per converted journey (to 1e-12: each journey's weights
are normalised by their own sum) and so revenue_credit sums to the converted revenue;
:func:`check_conservation` checks it and raises ``ValueError`` naming the model and the gap.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import optimize, sparse
from scipy.sparse.linalg import gmres, spsolve

logger = logging.getLogger(__name__)

NO_TOUCH_CHANNEL = "(none)"
DIRECT_CHANNELS: tuple[str, ...] = ("direct",)
MAX_ENUMERATED_CHANNELS = 20
#: Markov chains with more transient states are solved iteratively (see ``_absorption``)
DIRECT_SOLVE_STATES = 2000
CREDIT_COLUMNS = ("model", "journey_id", "channel", "campaign", "credit", "revenue_credit")
JOURNEY_COLUMNS = ("journey_id", "position", "channel", "campaign", "touch_ts")
OUTCOME_COLUMNS = ("journey_id", "converted", "revenue", "conversion_ts")
#: per-journey credit must sum to 1 within this; totals within this relative to the converted total
CREDIT_TOLERANCE = 1e-12
REVENUE_TOLERANCE = 1e-9
_NS_PER_DAY = 86_400 * 10**9
_NAT = np.iinfo(np.int64).min


@dataclass(frozen=True)
class _Paths:
    """Journeys as flat arrays: journeys ascending by id, touches grouped by journey in position order."""

    journey_id: np.ndarray  # (J,) int64 ascending, every journey of the outcomes
    converted: np.ndarray  # (J,) bool
    revenue: np.ndarray  # (J,) float64
    conversion_ns: np.ndarray  # (J,) int64 ns since the epoch (``_NAT`` when missing)
    start: np.ndarray  # (J,) offset of the journey's first touch
    n_touches: np.ndarray  # (J,) int64
    journey: np.ndarray  # (T,) journey index of each touch (non-decreasing)
    rank: np.ndarray  # (T,) 0-based order within the journey
    channel: np.ndarray  # (T,) code into ``channels``
    campaign: np.ndarray  # (T,) code into ``campaigns``, -1 for None
    touch_ns: np.ndarray  # (T,) int64 ns (``_NAT`` when missing)
    channels: np.ndarray  # (C,) object: channel names, sorted
    campaigns: np.ndarray  # object: campaign names

    def converted_touches(self) -> np.ndarray:
        """Indices of the touches of converted journeys (still grouped by journey)."""
        return np.flatnonzero(self.converted[self.journey])


# --- the models ----------------------------------------------------------------------------------


def first_touch(journeys: pd.DataFrame, outcomes: pd.DataFrame) -> pd.DataFrame:
    """Each order to its first touch (position 0)."""
    paths = _prepare(journeys, outcomes)
    touch = paths.converted_touches()
    touch = touch[paths.rank[touch] == 0]
    return _credit_frame(paths, "first_touch", touch, np.ones(len(touch)))


def last_non_direct_touch(journeys: pd.DataFrame, outcomes: pd.DataFrame,
                          direct_channels: Sequence[str] = DIRECT_CHANNELS) -> pd.DataFrame:
    """Each order to its last touch whose channel is not in ``direct_channels``; to the last touch when all are."""
    paths = _prepare(journeys, outcomes)
    direct = np.isin(paths.channels, list(direct_channels))
    touched = np.flatnonzero(paths.n_touches > 0)
    if len(touched) == 0:
        return _credit_frame(paths, "last_non_direct_touch", np.empty(0, np.int64), np.empty(0))
    # reduce over every touched journey (their touches are contiguous), then keep the converted ones
    candidate = np.where(direct[paths.channel], -1, np.arange(len(paths.channel)))
    last_non_direct = np.maximum.reduceat(candidate, paths.start[touched])
    last = paths.start[touched] + paths.n_touches[touched] - 1
    pick = np.where(last_non_direct >= 0, last_non_direct, last)[paths.converted[touched]]
    return _credit_frame(paths, "last_non_direct_touch", pick, np.ones(len(pick)))


def linear(journeys: pd.DataFrame, outcomes: pd.DataFrame) -> pd.DataFrame:
    """Each of a journey's n touches gets 1/n of the order."""
    paths = _prepare(journeys, outcomes)
    touch = paths.converted_touches()
    return _credit_frame(paths, "linear", touch, np.ones(len(touch)))


def time_decay(journeys: pd.DataFrame, outcomes: pd.DataFrame, half_life_days: float = 7.0) -> pd.DataFrame:
    """Touch weight ``2^(-age / half_life_days)``, age = days before the conversion, normalised per journey."""
    if not half_life_days > 0:
        raise ValueError(f"half_life_days must be > 0, got {half_life_days}")
    paths = _prepare(journeys, outcomes)
    touch = paths.converted_touches()
    if (paths.touch_ns[touch] == _NAT).any():
        raise ValueError("time_decay: touches of converted journeys need a touch_ts")
    conversion = paths.conversion_ns[paths.journey[touch]]
    if (conversion == _NAT).any():
        bad = paths.journey_id[paths.journey[touch][conversion == _NAT][0]]
        raise ValueError(f"time_decay: converted journey {bad} has no conversion_ts")
    age_days = np.maximum(conversion - paths.touch_ns[touch], 0) / _NS_PER_DAY
    if len(touch) == 0:
        return _credit_frame(paths, "time_decay", touch, age_days)
    runs = _segment_starts(paths.journey[touch])
    youngest = np.repeat(np.minimum.reduceat(age_days, runs), np.diff(np.r_[runs, len(touch)]))
    return _credit_frame(paths, "time_decay", touch, np.exp2(-(age_days - youngest) / half_life_days))


def position_based(journeys: pd.DataFrame, outcomes: pd.DataFrame,
                   first_share: float = 0.4, last_share: float = 0.4) -> pd.DataFrame:
    """U-shaped: first and last touch ``first_share`` / ``last_share``, the middle ones share the rest.
    One touch gets all; two split first_share : last_share (50/50 at the defaults)."""
    if first_share < 0 or last_share < 0 or first_share + last_share > 1 or first_share + last_share == 0:
        raise ValueError(f"need first_share, last_share >= 0 with 0 < sum <= 1, got {first_share}, {last_share}")
    paths = _prepare(journeys, outcomes)
    touch = paths.converted_touches()
    n = paths.n_touches[paths.journey[touch]]
    rank = paths.rank[touch]
    middle = (1.0 - first_share - last_share) / np.maximum(n - 2, 1)
    # two touches: first_share and last_share, normalised to their ratio
    weight = np.where(rank == 0, first_share, np.where(rank == n - 1, last_share, middle))
    weight = np.where(n == 1, 1.0, weight)  # a lone touch gets all, also when first_share is 0
    return _credit_frame(paths, "position_based", touch, weight)


def markov_chain(journeys: pd.DataFrame, outcomes: pd.DataFrame, order: int = 1) -> pd.DataFrame:
    """Per order, channel c present in it gets ``RE_c / sum of RE over its channels`` (point 6 above)."""
    paths = _prepare(journeys, outcomes)
    return _channel_share_credits(paths, "markov", _removal_effects(paths, order))


def shapley(journeys: pd.DataFrame, outcomes: pd.DataFrame) -> pd.DataFrame:
    """Per order, channel c present in it gets ``phi_c / sum of phi over its channels`` (point 7 above)."""
    paths = _prepare(journeys, outcomes)
    return _channel_share_credits(paths, "shapley", _shapley_values(paths))


def markov_removal_effects(journeys: pd.DataFrame, outcomes: pd.DataFrame, order: int = 1) -> pd.Series:
    """Removal effect ``1 - P_{-c}(conv) / P(conv)`` of every channel touched in any journey, by channel."""
    paths = _prepare(journeys, outcomes)
    return pd.Series(_removal_effects(paths, order), index=pd.Index(paths.channels, name="channel"),
                     name="removal_effect")


def shapley_values(journeys: pd.DataFrame, outcomes: pd.DataFrame) -> pd.Series:
    """Shapley value (in conversions) of every channel touched in any journey under the subset-sum game;
    they sum to the conversions of the converted journeys with at least one touch."""
    paths = _prepare(journeys, outcomes)
    return pd.Series(_shapley_values(paths), index=pd.Index(paths.channels, name="channel"), name="shapley_value")


# --- summaries and checks ---------------------------------------------------------------------------


def summarise_credits(credits: pd.DataFrame, by_campaign: bool = False) -> pd.DataFrame:
    """Conversions (sum of credit) and revenue (sum of revenue_credit) per model and channel (and campaign)."""
    keys = ["model", "channel", "campaign"] if by_campaign else ["model", "channel"]
    summary = (credits.groupby(keys, dropna=False, sort=True, observed=True)
               .agg(conversions=("credit", "sum"), revenue=("revenue_credit", "sum")).reset_index())
    if by_campaign:  # groupby turns None into NaN
        summary["campaign"] = summary["campaign"].astype(object).where(summary["campaign"].notna(), None)
    return summary


def check_conservation(credits: pd.DataFrame, outcomes: pd.DataFrame) -> None:
    """Raise ``ValueError`` naming the model and the gap unless, for every model in ``credits``, each converted
    journey's credits sum to 1 (within ``CREDIT_TOLERANCE``), credits are >= 0, no other journey is credited,
    and each journey's and the total revenue_credit equal the converted revenue (``REVENUE_TOLERANCE``,
    relative)."""
    converted = outcomes.loc[outcomes["converted"].to_numpy(bool), ["journey_id", "revenue"]]
    revenue = pd.Series(converted["revenue"].to_numpy(np.float64), index=converted["journey_id"].to_numpy(np.int64))
    total_revenue = float(revenue.sum())
    for model, rows in credits.groupby("model", sort=True):
        if (rows["credit"] < 0).any():
            raise ValueError(f"attribution model {model!r}: negative credit {rows['credit'].min():.3g}")
        per_journey = rows.groupby("journey_id")[["credit", "revenue_credit"]].sum()
        extra = per_journey.index.difference(revenue.index)
        if len(extra):
            raise ValueError(f"attribution model {model!r} credits {len(extra)} journeys that did not convert "
                             f"(e.g. {extra[0]}): gap {per_journey.loc[extra, 'credit'].sum():.6g} conversions")
        missing = revenue.index.difference(per_journey.index)
        if len(missing):
            raise ValueError(f"attribution model {model!r} leaves {len(missing)} converted journeys uncredited "
                             f"(e.g. {missing[0]}): gap {len(missing)} conversions, "
                             f"{revenue.loc[missing].sum():.6g} revenue")
        gap = (per_journey["credit"] - 1.0).abs()
        if gap.max() > CREDIT_TOLERANCE:
            worst = gap.idxmax()
            raise ValueError(f"attribution model {model!r}: journey {worst} credits sum to "
                             f"{per_journey.loc[worst, 'credit']!r} (gap {gap.max():.3g}); total credit "
                             f"{per_journey['credit'].sum():.12g} for {len(revenue)} conversions")
        expected = revenue.loc[per_journey.index]
        revenue_gap = (per_journey["revenue_credit"] - expected).abs()
        limit = REVENUE_TOLERANCE * np.maximum(1.0, expected.abs())
        if (revenue_gap > limit).any():
            worst = (revenue_gap / limit).idxmax()
            raise ValueError(f"attribution model {model!r}: journey {worst} revenue_credit "
                             f"{per_journey.loc[worst, 'revenue_credit']!r} != revenue {expected.loc[worst]!r}")
        total_gap = float(rows["revenue_credit"].sum()) - total_revenue
        if abs(total_gap) > REVENUE_TOLERANCE * max(1.0, abs(total_revenue)):
            raise ValueError(f"attribution model {model!r}: revenue_credit totals {total_revenue + total_gap!r}, "
                             f"converted revenue {total_revenue!r} (gap {total_gap:.6g})")


# --- preparation ------------------------------------------------------------------------------------


def _require(frame: pd.DataFrame, columns: Sequence[str], name: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{name} lacks columns {missing}")


def _nanoseconds(values: pd.Series) -> np.ndarray:
    """UTC nanoseconds since the epoch, ``_NAT`` for NaT."""
    return pd.DatetimeIndex(pd.to_datetime(values, utc=True)).as_unit("ns").asi8


#: while :func:`sharing_preparation` is open: the frames last prepared and their :class:`_Paths` (the frames are
#: held, so their ids cannot be reused by others meanwhile)
_shared: dict | None = None


@contextmanager
def sharing_preparation() -> Iterator[None]:
    """Within it, models called on the same two frames (the same objects, unchanged meanwhile) prepare them once:
    every model of a night runs on one history, and preparing 15M touches costs ~4 s a time at a million
    customers. What was prepared is let go on leaving."""
    global _shared
    outer, _shared = _shared, {}
    try:
        yield
    finally:
        _shared = outer


def _prepare(journeys: pd.DataFrame, outcomes: pd.DataFrame) -> _Paths:
    if _shared is not None:
        if _shared.get("frames") is not None and _shared["frames"][0] is journeys and _shared["frames"][1] is outcomes:
            return _shared["paths"]
        _shared.clear()
        _shared["paths"] = paths = _prepared(journeys, outcomes)
        for value in vars(paths).values():  # shared by the models: none may change it
            if isinstance(value, np.ndarray):
                value.flags.writeable = False
        _shared["frames"] = (journeys, outcomes)
        return _shared["paths"]
    return _prepared(journeys, outcomes)


def _prepared(journeys: pd.DataFrame, outcomes: pd.DataFrame) -> _Paths:
    _require(journeys, JOURNEY_COLUMNS, "journeys")
    _require(outcomes, OUTCOME_COLUMNS, "outcomes")
    ids = outcomes["journey_id"].to_numpy(np.int64)
    by_id = np.argsort(ids, kind="stable")
    ids = ids[by_id]
    if len(ids) > 1 and (ids[1:] == ids[:-1]).any():
        raise ValueError(f"outcomes: journey_id {ids[1:][ids[1:] == ids[:-1]][0]} appears more than once")
    converted = outcomes["converted"].to_numpy(bool)[by_id]
    revenue = outcomes["revenue"].to_numpy(np.float64)[by_id]
    if not np.isfinite(revenue[converted]).all():
        raise ValueError("outcomes: every converted journey needs a finite revenue")

    touch_journey_id = journeys["journey_id"].to_numpy(np.int64)
    by_position = np.lexsort((journeys["position"].to_numpy(np.int64), touch_journey_id))  # stable
    touch_journey_id = touch_journey_id[by_position]
    journey = np.searchsorted(ids, touch_journey_id)
    known = journey < len(ids)
    known[known] = ids[journey[known]] == touch_journey_id[known]
    if not known.all():
        raise ValueError(f"journeys: journey_id {touch_journey_id[~known][0]} is not in outcomes")
    channel_codes, channels = pd.factorize(journeys["channel"], sort=True)
    if (channel_codes < 0).any():
        raise ValueError("journeys: every touch needs a channel")
    channels = np.asarray(channels, dtype=object)
    if NO_TOUCH_CHANNEL in set(channels):
        raise ValueError(f"journeys: {NO_TOUCH_CHANNEL!r} is reserved for converted journeys without touches")
    campaign_codes, campaigns = pd.factorize(journeys["campaign"], sort=True)
    n_touches = np.bincount(journey, minlength=len(ids)).astype(np.int64)
    start = np.cumsum(n_touches) - n_touches
    return _Paths(
        journey_id=ids, converted=converted, revenue=revenue,
        conversion_ns=_nanoseconds(outcomes["conversion_ts"])[by_id],
        start=start, n_touches=n_touches, journey=journey, rank=np.arange(len(journey)) - start[journey],
        channel=channel_codes[by_position].astype(np.int64), campaign=campaign_codes[by_position].astype(np.int64),
        touch_ns=_nanoseconds(journeys["touch_ts"])[by_position], channels=channels,
        campaigns=np.asarray(campaigns, dtype=object),
    )


def _segment_starts(group: np.ndarray) -> np.ndarray:
    """Offsets where a non-decreasing group array changes (its runs)."""
    return np.flatnonzero(np.r_[True, group[1:] != group[:-1]]) if len(group) else np.empty(0, np.int64)


# --- credits from weights ------------------------------------------------------------------------------


def _credit_frame(paths: _Paths, model: str, touch: np.ndarray, weight: np.ndarray) -> pd.DataFrame:
    """Credits from per-touch weights (>= 0, a positive sum per journey) of the given touches of converted
    journeys: normalised per journey, summed per (journey, channel, campaign); converted journeys without
    touches go to ``NO_TOUCH_CHANNEL``."""
    journey = paths.journey[touch]
    total = np.bincount(journey, weights=weight, minlength=len(paths.journey_id))
    credit = weight / total[journey]
    n_campaign_codes = len(paths.campaigns) + 1  # + None
    n_pairs = len(paths.channels) * n_campaign_codes
    key = journey * n_pairs + paths.channel[touch] * n_campaign_codes + (paths.campaign[touch] + 1)
    order = np.argsort(key, kind="stable")
    key = key[order]
    first = _segment_starts(key)
    credit = np.add.reduceat(credit[order], first) if len(first) else np.empty(0)
    key = key[first]
    pair = key % n_pairs
    untouched = np.flatnonzero(paths.converted & (paths.n_touches == 0))
    journey = np.r_[key // n_pairs, untouched]
    channel_names = np.r_[paths.channels, np.array([NO_TOUCH_CHANNEL], dtype=object)]
    campaign_names = np.r_[paths.campaigns, np.array([None], dtype=object)]  # code -1 reads the last: None
    channel = np.r_[pair // n_campaign_codes, np.full(len(untouched), len(paths.channels))]
    campaign = np.r_[pair % n_campaign_codes - 1, np.full(len(untouched), -1)]
    credit = np.r_[credit, np.ones(len(untouched))]
    by_journey = np.argsort(journey, kind="stable")
    journey, channel = journey[by_journey], channel[by_journey]
    campaign, credit = campaign[by_journey], credit[by_journey]
    return pd.DataFrame({
        "model": np.full(len(journey), model, dtype=object),
        "journey_id": paths.journey_id[journey],
        "channel": channel_names[channel],
        "campaign": campaign_names[campaign],
        "credit": credit,
        "revenue_credit": credit * paths.revenue[journey],
    }, columns=list(CREDIT_COLUMNS))


def _channel_share_credits(paths: _Paths, model: str, channel_value: np.ndarray) -> pd.DataFrame:
    """Per converted journey, channel c in it gets ``w_c / sum of w over its distinct channels``, split equally
    over its touches of c, with the weights ``w`` raked so each channel's total credit is its share of the
    conversions in proportion to ``channel_value`` (:func:`raked_weights`)."""
    touch = paths.converted_touches()
    journey = paths.journey[touch]
    channel = paths.channel[touch]
    _, pair, touches_per_pair = np.unique(journey * len(paths.channels) + channel, return_inverse=True,
                                          return_counts=True)
    first_of_pair = np.unique(pair, return_index=True)[1]
    weights = raked_weights(journey[first_of_pair], channel[first_of_pair], channel_value, model)
    return _credit_frame(paths, model, touch, weights[channel] / touches_per_pair[pair])


#: iterative proportional fitting steps after the solver (each one sparse product; usually a few are needed)
_POLISH_STEPS = 200


def raked_weights(journey: np.ndarray, channel: np.ndarray, value: np.ndarray, model: str = "") -> np.ndarray:
    """Channel weights ``w`` (one per channel code) such that splitting each converted journey over its
    distinct channels in proportion to ``w`` gives each channel a total credit of ``N value_c / sum value``
    (N: the journeys, ``value`` summed over the channels present), i.e. the model's aggregate split.

    ``journey`` and ``channel`` list each converted journey's distinct (journey, channel) pairs. The weights
    are the exponentials of the minimiser of the convex dual ``sum_j log sum_{c in j} e^{mu_c} - sum_c T_c
    mu_c`` (its gradient is the credit totals minus the targets; iterative proportional fitting solves the
    same problem), found by L-BFGS-B with mu bounded to [-30, 30]. When no weights reach the targets (a
    channel is the lone touch of more orders than its target, or its target exceeds the orders it is in)
    the bounds stop the solver at the nearest reachable totals; the largest gap is logged."""
    weights = np.ones(len(value))
    present = np.unique(channel)
    if len(present) <= 1:
        return weights
    rows = np.unique(journey, return_inverse=True)[1]
    journeys = int(rows.max()) + 1
    sets, count = _channel_sets(rows, np.searchsorted(present, channel), len(present))
    worth = np.clip(value[present], 0.0, None)
    if not worth.sum() > 0:
        return weights
    target = journeys * worth / worth.sum()

    def dual(mu: np.ndarray) -> tuple[float, np.ndarray]:
        shift = mu.max()
        exp = np.exp(mu - shift)
        per_set = sets @ exp
        totals = exp * (sets.T @ (count / per_set))
        return float(count @ np.log(per_set) + journeys * shift - target @ mu), totals - target

    start = np.log(np.maximum(worth, 1e-12 * worth.max()))
    start = np.clip(start - start.mean(), -30.0, 30.0)
    found = optimize.minimize(dual, start, jac=True, method="L-BFGS-B", bounds=[(-30.0, 30.0)] * len(present),
                              options={"maxiter": 5000, "ftol": 1e-15, "gtol": 1e-11})
    mu = found.x
    gap = np.abs(dual(mu)[1]).max()
    if gap > 1e-6 * journeys:
        logger.warning("%s: the aggregate split is not reachable per order; largest gap %.3g conversions", model, gap)
    else:  # polish: L-BFGS-B stops within ~1e-8 of the targets, as far as the machine's BLAS takes it; iterative
        # proportional fitting from there reaches them to rounding on every machine
        reached, best = target > 0, (gap, mu)
        for _ in range(_POLISH_STEPS):
            totals = dual(mu)[1] + target
            gap = np.abs(totals - target).max()
            best = min(best, (gap, mu), key=lambda candidate: candidate[0])  # never worse than the solver's
            if gap <= 1e-13 * journeys:
                break
            mu = np.where(reached, np.clip(mu + np.log(np.where(reached, target, 1.0) / np.maximum(totals, 1e-300)),
                                           -60.0, 60.0), mu)
        mu = best[1]
    weights[present] = np.exp(mu - mu.max())
    return weights


def _channel_sets(rows: np.ndarray, cols: np.ndarray, channels: int) -> tuple[sparse.csr_matrix, np.ndarray]:
    """The distinct sets of channels of the journeys (journey ``rows``, channel ``cols``: distinct pairs), one row
    each, and how many journeys have each set. Every journey of a set has the same terms in the dual, so they are
    summed once per set: a few hundred sets at most in practice (2^channels), where a million customers' window has
    millions of journeys. Beyond 52 channels (a set as the bits of one exact float sum) one row per journey."""
    journeys = int(rows.max()) + 1
    if channels > 52:
        return sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(journeys, channels)), np.ones(journeys)
    code = np.bincount(rows, weights=np.ldexp(1.0, cols), minlength=journeys).astype(np.int64)
    sets, count = np.unique(code, return_counts=True)
    bits = (sets[:, None] >> np.arange(channels, dtype=np.int64)) & 1
    return sparse.csr_matrix(bits.astype(np.float64)), count.astype(np.float64)


# --- Markov chain -------------------------------------------------------------------------------------


def _markov_states(paths: _Paths, order: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(state index of every touch, the states' codes, base): a state's code is ``sum_m c_{t-m} base^m`` over
    its last ``order`` channels, ``base - 1`` standing for "before the first touch"."""
    if order < 1:
        raise ValueError(f"order must be >= 1, got {order}")
    base = len(paths.channels) + 1
    if order * math.log2(max(base, 2)) > 62:
        raise ValueError(f"Markov order {order} with {base - 1} channels does not fit the state encoding")
    code = np.zeros(len(paths.channel), np.int64)
    for lag in range(order):
        earlier = np.full(len(paths.channel), base - 1, np.int64)
        if lag < len(paths.channel):
            earlier[lag:] = paths.channel[: len(paths.channel) - lag]
        earlier[paths.rank < lag] = base - 1
        code += earlier * base**lag
    states, state = np.unique(code, return_inverse=True)
    return state.astype(np.int64), states, base


def _removal_effects(paths: _Paths, order: int) -> np.ndarray:
    """RE_c per channel code (point 6): the absorbing chain solved exactly, once whole and once per channel."""
    state, states, base = _markov_states(paths, order)
    n = len(states)
    start, conversion, null = n, n + 1, n + 2
    touched = np.flatnonzero(paths.n_touches > 0)
    first = paths.start[touched]
    last = first + paths.n_touches[touched] - 1
    same = np.flatnonzero(paths.journey[1:] == paths.journey[:-1])
    source = np.r_[np.full(len(touched), start), state[same], state[last]]
    target = np.r_[state[first], state[same + 1], np.where(paths.converted[touched], conversion, null)]
    counts = sparse.coo_matrix((np.ones(len(source)), (source, target)), shape=(n + 1, n + 3)).tocsr()
    out = np.asarray(counts.sum(axis=1)).ravel()
    probability = sparse.diags(1.0 / np.where(out > 0, out, 1.0)) @ counts
    transient = probability[:, : n + 1].tocsc()
    into_conversion = probability[:, conversion].toarray().ravel()
    base_probability = _absorption(transient, into_conversion, np.ones(n + 1, bool))
    effects = np.zeros(len(paths.channels))
    if base_probability <= 0:
        return effects
    digits = np.stack([(states // base**lag) % base for lag in range(order)]) if n else np.empty((order, 0), np.int64)
    for code in range(len(paths.channels)):
        keep = np.r_[~(digits == code).any(axis=0), True]
        effects[code] = 1.0 - _absorption(transient, into_conversion, keep) / base_probability
    return np.clip(effects, 0.0, 1.0)


def _absorption(transient: sparse.csc_matrix, into_conversion: np.ndarray, keep: np.ndarray) -> float:
    """P(conversion | start) with the states not kept sent to null; the start is the last state, always kept.

    Up to ``DIRECT_SOLVE_STATES`` states by sparse LU. Above (high orders over many channels: an order-k
    chain's successor structure makes LU fill in to millions of entries, seconds per solve) by GMRES to
    a residual of 1e-14, checked: the error in x is at most the residual times the expected number of
    steps left before absorption (the row sums of ``(I - Q)^-1``), a few touches; LU if it did not get there."""
    kept = np.flatnonzero(keep)
    system = (sparse.identity(len(kept), format="csr") - transient[kept][:, kept]).tocsc()
    rhs = into_conversion[kept]
    if len(kept) > DIRECT_SOLVE_STATES:
        solution, info = gmres(system, rhs, rtol=1e-14, atol=0.0, restart=50, maxiter=1000)
        if info == 0 and np.abs(system @ solution - rhs).max() <= 1e-13:
            return float(solution[-1])
        logger.warning("Markov chain: GMRES did not converge on %d states (info %d); solving by LU", len(kept), info)
    return float(np.atleast_1d(spsolve(system, rhs))[-1])


# --- Shapley --------------------------------------------------------------------------------------------


def _shapley_values(paths: _Paths) -> np.ndarray:
    """phi_c per channel code (point 7), in conversions; 0 for channels on no converting path."""
    touch = paths.converted_touches()
    journey = paths.journey[touch]
    pairs = np.unique(journey * len(paths.channels) + paths.channel[touch])
    pair_journey, pair_channel = pairs // max(len(paths.channels), 1), pairs % max(len(paths.channels), 1)
    players = np.unique(pair_channel)
    values = np.zeros(len(paths.channels))
    if len(players) == 0:
        return values
    if len(players) > MAX_ENUMERATED_CHANNELS:  # Zhao et al.'s closed form: each journey split over its set
        set_size = np.bincount(pair_journey, minlength=len(paths.journey_id))
        return np.bincount(pair_channel, weights=1.0 / set_size[pair_journey], minlength=len(paths.channels))
    player = np.searchsorted(players, pair_channel)
    mask = np.bincount(pair_journey, weights=(1 << player).astype(np.float64), minlength=len(paths.journey_id))
    has_set = np.bincount(pair_journey, minlength=len(paths.journey_id)) > 0
    conversions_by_set = np.bincount(mask[has_set].astype(np.int64), minlength=2 ** len(players)).astype(np.float64)
    values[players] = shapley_from_game(_subset_sums(conversions_by_set))
    return values


def _subset_sums(value: np.ndarray) -> np.ndarray:
    """``out[S] = sum over T subset of S of value[T]`` over bit masks (the zeta transform), one pass per bit."""
    out = value.astype(np.float64).copy()
    n = int(round(math.log2(len(out))))
    for bit in range(n):
        view = out.reshape(-1, 2, 2**bit)
        view[:, 1, :] += view[:, 0, :]
    return out


def shapley_from_game(worth: np.ndarray) -> np.ndarray:
    """Exact Shapley values of a game given as ``worth[mask]`` over the 2^n coalitions (bit i = player i):
    ``phi_i = sum_{S not containing i} |S|! (n - |S| - 1)! / n! (v(S + i) - v(S))``."""
    n = int(round(math.log2(len(worth))))
    if 2**n != len(worth):
        raise ValueError(f"worth must have 2^n entries, got {len(worth)}")
    masks = np.arange(2**n, dtype=np.int64)
    size = np.bitwise_count(masks).astype(np.int64)
    weight = np.array([math.factorial(s) * math.factorial(n - s - 1) / math.factorial(n) for s in range(n)])
    phi = np.empty(n)
    for player in range(n):
        without = masks[(masks >> player) & 1 == 0]
        phi[player] = weight[size[without]] @ (worth[without | (1 << player)] - worth[without])
    return phi
