"""Customer affinity per category (and brand): recency-weighted purchases and product views, refreshed
incrementally several times a day (issue 19, item 1).

**The counts.** Every interaction (an order line of a completed order, or a product view; read by
:mod:`features.affinity`, timed to its UTC hour) weighs ``2^(-age / half_life)`` at the cutoff ``as_of``,
``age`` in days, ``half_life`` = ``params.affinity_half_life_days``. Per customer, dimension ('category' |
'brand') and value, ``purchases`` and ``views`` are the sums of those weights and

    interest = purchases + view_weight x views        (view_weight = params.affinity_view_weight)

so one fresh purchase is worth 1 and a purchase one half-life old 0.5.

**The score.** ``affinity = interest / (total + PRIOR_INTEREST)``, ``total`` the customer's interest summed
over the values of that dimension. It is the customer's *share* of recent interest going to this value,
discounted for thin evidence as if :data:`PRIOR_INTEREST` (one fresh purchase) of interest went elsewhere.
So affinity is in [0, 1) and **0.8 means: at least 80 % of this customer's recent interest in this dimension
went to this value, and the customer showed at least 4 fresh purchases' worth of interest in it** (share <= 1
forces total >= 4 x PRIOR_INTEREST). It reads the same across customers (no customer needs more than the
prior to score high), across categories and brands (a share, whatever the value's size), and depends only on
the customer's own counts at ``as_of``: it does not move when other customers change, and refreshing in steps
gives the same scores as one refresh (below). Without new interactions a customer's shares stay put while
their total decays, so the scores fade towards 0. A popular category does not score higher for everyone: an
app that wants "more than the average customer" should compare with the value's mean affinity.

**Incremental refresh.** Weights are exponential, so the counts at ``as_of`` are the counts at the previous
cutoff times ``2^(-(as_of - previous) / half_life)`` plus the new interactions' own weights: a refresh reads
only what arrived since the previous one (:func:`window`) and :func:`refresh` gives the same counts as one
refresh over the whole history, up to rounding (tests/unit/test_affinity.py) and up to the rows dropped on
the way: counts whose ``purchases + views`` decayed below :data:`EPSILON` leave the state (it stays bounded;
at a 30-day half-life a single purchase is dropped after about ten half-lives), so a customer who returns to
a value after that starts it afresh, less than :data:`EPSILON` off.

**Late data.** A purchase or view stored after the refresh that covered its time would be missed for good.
The guard: the state is kept *settled* :data:`SETTLE_HOURS` behind the cutoff (at the UTC hour
``floor(as_of - SETTLE_HOURS)``), and each refresh re-reads from there: the published scores add the
interactions of the last hours on top of the settled counts without folding them in, so data up to
:data:`SETTLE_HOURS` late (a nightly batch of orders, an order cancelled the next morning, slow event
ingestion) is counted once it arrives. Later data is missed until a full refresh (the first one, one after a
gap longer than ``params.affinity_lookback_days``, or one started with no state). The state's ``as_of`` is
therefore the settled cutoff, not the refresh's.

Written by hand: it is a few lines of exponential decay and a division, the product's own definition.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from features.affinity import KINDS, typed_interactions
from revopt.platform.events import utc

logger = logging.getLogger(__name__)

KEY = ("customer_id", "dimension", "value")
STATE_COLUMNS = ("as_of", *KEY, "purchases", "views", "last_interaction")
AFFINITY_COLUMNS = ("as_of", *KEY, "affinity", "interest", "purchases", "views", "last_interaction")
#: Interest treated as going elsewhere, in fresh purchases (the evidence discount of the score).
PRIOR_INTEREST = 1.0
#: Counts (purchases + views) below this leave the state; interest below it is not published.
EPSILON = 1e-3
#: The state trails the cutoff by this much, so data arriving up to this late is still counted.
SETTLE_HOURS = 24


def window(previous_as_of: pd.Timestamp | None, as_of: pd.Timestamp, lookback_days: int) -> tuple[pd.Timestamp, str]:
    """Where a refresh as of ``as_of`` starts reading (it reads ``[since, as_of)``) and why.

    ``previous_as_of`` is the ``as_of`` of the state the previous refresh left (None without one). The
    refresh reads on from it; it reads the full ``lookback_days`` instead on the first refresh, after a gap
    longer than the lookback, or when the state is newer than ``as_of`` (a re-run of an older refresh). The
    caller starts from the previous state only when ``since == previous_as_of``, else from an empty state.
    """
    as_of = utc(as_of)
    full = as_of - pd.Timedelta(days=lookback_days)
    if previous_as_of is None or pd.isna(previous_as_of):
        return full, f"first refresh: no previous state, reading {lookback_days} days before {as_of}"
    previous = utc(previous_as_of)
    if previous > as_of:
        return full, (f"the previous state (as of {previous}) is newer than this refresh as of {as_of} "
                      f"(a re-run of an older refresh): reading {lookback_days} days from an empty state")
    if previous < full:
        return full, (f"the previous state (as of {previous}) is older than the lookback of {lookback_days} days "
                      f"before {as_of}: reading the full lookback from an empty state")
    return previous, f"incremental: reading what arrived since the previous state as of {previous}"


def settled_cutoff(as_of: pd.Timestamp, settle_hours: int = SETTLE_HOURS) -> pd.Timestamp:
    """The state's cutoff for a refresh as of ``as_of``: ``settle_hours`` earlier, down to the UTC hour (on an
    hour, so an hour's interactions, timed to its start, are never split between the state and a re-read)."""
    return (utc(as_of) - pd.Timedelta(hours=settle_hours)).floor("h")


def refresh(state: pd.DataFrame, changes: pd.DataFrame, as_of: pd.Timestamp, params,
            settle_hours: int = SETTLE_HOURS) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The new state and the published scores of a refresh as of ``as_of``.

    ``state``: the previous refresh's state rows (:data:`STATE_COLUMNS`, one ``as_of``; empty for a full
    refresh). ``changes``: the interactions read from ``[state's as_of, as_of)`` (or the full lookback),
    :data:`features.affinity.INTERACTION_COLUMNS`. ``params``: :class:`ml.params.RunParams`
    (``affinity_half_life_days``, ``affinity_view_weight``).

    Returns ``(new_state, published)``: the counts settled at :func:`settled_cutoff` (:data:`STATE_COLUMNS`,
    the next refresh's ``state``) and the scores at ``as_of`` (:data:`AFFINITY_COLUMNS`), both sorted by
    customer, dimension and value. The inputs are not modified.
    """
    as_of = utc(as_of)
    half_life = float(params.affinity_half_life_days)
    previous = _state_cutoff(state, as_of)
    changes = _checked_changes(changes, previous, as_of)
    settled = settled_cutoff(as_of, settle_hours)
    if previous is not None and previous > settled:  # a state settled later than this refresh would (a shorter lag)
        settled = previous
    fresh = changes["ts"] >= settled
    new_state = _kept(_accumulate(state, changes[~fresh], settled, half_life), settled)
    published = _accumulate(new_state, changes[fresh], as_of, half_life)
    logger.info("affinity as of %s: %d interaction rows read (%d after the settled cutoff %s), %d state rows, "
                "%d customers", as_of, len(changes), int(fresh.sum()), settled, len(new_state),
                published["customer_id"].nunique())
    return new_state, scores(published, float(params.affinity_view_weight))


def scores(counts: pd.DataFrame, view_weight: float) -> pd.DataFrame:
    """:data:`AFFINITY_COLUMNS` from decayed counts (:data:`STATE_COLUMNS` at the scores' cutoff): interest
    and affinity (module docstring); rows with interest below :data:`EPSILON` are left out."""
    out = counts.copy()
    out["interest"] = out["purchases"] + view_weight * out["views"]
    total = out.groupby(["customer_id", "dimension"])["interest"].transform("sum")
    out["affinity"] = (out["interest"] / (total + PRIOR_INTEREST)).clip(0.0, 1.0)
    out = out[out["interest"] >= EPSILON]
    return out[list(AFFINITY_COLUMNS)].reset_index(drop=True)


def decay(age_days: np.ndarray | float, half_life_days: float) -> np.ndarray | float:
    """The weight ``2^(-age / half_life)`` of an interaction ``age_days`` old."""
    return np.exp2(-np.asarray(age_days, dtype="float64") / half_life_days)


def empty_state() -> pd.DataFrame:
    """A state with no rows (a full refresh starts from it)."""
    frame = pd.DataFrame({column: pd.Series(dtype=object) for column in STATE_COLUMNS})
    return _typed_counts(frame)


def _accumulate(state: pd.DataFrame, changes: pd.DataFrame, to: pd.Timestamp, half_life: float) -> pd.DataFrame:
    """``state`` decayed to ``to`` plus ``changes`` weighted at ``to``, summed per key (:data:`STATE_COLUMNS`)."""
    parts = []
    if len(state):
        carried = state[list(STATE_COLUMNS)].copy()
        factor = decay((to - carried["as_of"]) / pd.Timedelta(days=1), half_life)
        carried["purchases"] = carried["purchases"] * factor
        carried["views"] = carried["views"] * factor
        parts.append(carried.drop(columns="as_of"))
    if len(changes):
        weight = changes["count"].to_numpy(dtype="float64") * decay((to - changes["ts"]) / pd.Timedelta(days=1), half_life)
        is_purchase = (changes["kind"] == "purchase").to_numpy()
        parts.append(pd.DataFrame({
            "customer_id": changes["customer_id"].to_numpy(dtype="int64"),
            "dimension": changes["dimension"].to_numpy(dtype=object), "value": changes["value"].to_numpy(dtype=object),
            "purchases": np.where(is_purchase, weight, 0.0), "views": np.where(is_purchase, 0.0, weight),
            "last_interaction": changes["ts"].to_numpy(),
        }))
    if not parts:
        return empty_state()
    summed = (pd.concat(parts, ignore_index=True)
              .groupby(list(KEY), as_index=False, sort=True)
              .agg(purchases=("purchases", "sum"), views=("views", "sum"), last_interaction=("last_interaction", "max")))
    summed.insert(0, "as_of", to)
    return _typed_counts(summed)


def _kept(counts: pd.DataFrame, cutoff: pd.Timestamp) -> pd.DataFrame:
    """The state rows worth keeping: counts at least :data:`EPSILON` (the state stays bounded)."""
    kept = counts[counts["purchases"] + counts["views"] >= EPSILON].reset_index(drop=True)
    kept["as_of"] = pd.Series(cutoff, index=kept.index, dtype="datetime64[ns, UTC]")
    return kept


def _state_cutoff(state: pd.DataFrame, as_of: pd.Timestamp) -> pd.Timestamp | None:
    """The previous state's ``as_of`` (None when empty); it must be one cutoff, not after ``as_of``."""
    if not len(state):
        return None
    missing = set(STATE_COLUMNS) - set(state.columns)
    if missing:
        raise ValueError(f"scores.affinity_state lacks columns {sorted(missing)} (refresh as of {as_of})")
    cutoffs = pd.to_datetime(state["as_of"], utc=True).unique()
    if len(cutoffs) != 1:
        raise ValueError(f"scores.affinity_state: column as_of holds {len(cutoffs)} cutoffs, expected one "
                         f"(refresh as of {as_of})")
    previous = pd.Timestamp(cutoffs[0])
    if previous > as_of:
        raise ValueError(f"scores.affinity_state: column as_of is {previous}, after this refresh's cutoff {as_of}; "
                         "refresh from an empty state (see window())")
    return previous


def _checked_changes(changes: pd.DataFrame, previous: pd.Timestamp | None, as_of: pd.Timestamp) -> pd.DataFrame:
    typed = typed_interactions(changes)
    where = f"the affinity interactions (refresh as of {as_of})"
    if (~typed["kind"].isin(KINDS)).any():
        raise ValueError(f"{where}: column kind holds {sorted(set(typed['kind']) - set(KINDS))}, expected {KINDS}")
    if (typed["ts"] >= as_of).any():
        raise ValueError(f"{where}: column ts reaches {typed['ts'].max()}, not before the cutoff {as_of}")
    if previous is not None and (typed["ts"] < previous).any():
        raise ValueError(f"{where}: column ts starts at {typed['ts'].min()}, before the previous state's cutoff "
                         f"{previous}: they would be counted twice")
    if (typed["count"] < 0).any():
        raise ValueError(f"{where}: column count has negative values")
    return typed


def _typed_counts(frame: pd.DataFrame) -> pd.DataFrame:
    typed = frame[list(STATE_COLUMNS)].astype({"customer_id": "int64", "dimension": object, "value": object,
                                                "purchases": "float64", "views": "float64"})
    for column in ("as_of", "last_interaction"):
        typed[column] = pd.to_datetime(typed[column], utc=True).astype("datetime64[ns, UTC]")
    return typed.reset_index(drop=True)

