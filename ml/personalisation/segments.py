"""Customer segments: interpretable lifecycle rules and behavioural clusters described in words.

Every customer of tonight's customer features (signed up before the run date) gets two views, published
to ``scores.customer_segments``, with one profile row per segment in ``scores.segment_profiles``.

**Lifecycle segment.** Rules on RFM and tonight's churn / CLV scores, thresholds from the run params; the
first rule that matches wins. ``recency`` is the days since the customer's last completed order, "active"
means recency <= ``segment_active_days``:

=============  ==========================================================================================
segment        rule (checked in this order)
=============  ==========================================================================================
prospect       no completed order in the history window
new            first completed order at most ``segment_new_days`` ago
lost           recency >= ``segment_lost_days``
hibernating    ``segment_active_days`` < recency < ``segment_lost_days``
at_risk        active and churn risk >= ``segment_at_risk_churn``; a customer without a churn score (the
               churn family skipped tonight, or the customer outside its population) is at risk with 2+
               orders and recency > :data:`OVERDUE_FACTOR` x their mean gap between orders
champion       active and predicted CLV in the top (1 - ``segment_champion_quantile``) of the active
               customers' (spend to date, ``monetary``, when tonight has no CLV score for them all)
active         every other active customer
=============  ==========================================================================================

``at_risk`` is checked before ``champion``: a valuable customer about to leave is the one to act on (the
reason then says both). Each row's ``lifecycle_reason`` states the rule in words with the customer's
numbers, e.g. "last order 212 days ago (hibernating: 90-365 days)". A customer who signed up recently and
has not ordered is a prospect, not new: "new" is about the first order.

**Behavioural cluster.** k-means (scikit-learn, seeded, ``segment_clusters`` clusters) on the standardised
log of RFM and the engagement features the store has (:data:`CLUSTER_FEATURES` present and not constant),
over the customers with an order. Customers without one are not clustered (their RFM is "nothing yet" and
would only pull a cluster of its own out of the others): they get cluster -1, :data:`NO_ORDERS_LABEL`.
Clusters are numbered by mean spend, 0 the highest, so a store's cluster ids read the same from night to
night when the base changes little. Each cluster is described from its profile relative to the whole
clustered base: the (up to) 3 features whose cluster mean lies furthest from the base mean in standard
deviations (at least :data:`MIN_DEVIATION` away) become phrases ("frequent buyers, high spenders, recent");
clusters whose phrases coincide get more of them until the labels differ. The rules, the profiles and the
describer are written here because they are the product's idea of a segment; the clustering and scaling
are scikit-learn's.

:func:`segment_customers` returns both frames (the published columns minus ``run_date``) and the standardised
profiles that :func:`segment_profile_figure` draws for MLflow; :func:`segment_of` looks customers' segments up
(for the send-time model's segment prior or the campaign analytics). Pure functions, inputs never mutated.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ml.params import RunParams

logger = logging.getLogger(__name__)

LIFECYCLE_SEGMENTS: tuple[str, ...] = ("prospect", "new", "champion", "active", "at_risk", "hibernating", "lost")

SEGMENT_COLUMNS: tuple[str, ...] = (
    "customer_id", "lifecycle_segment", "lifecycle_reason", "cluster", "cluster_label", "recency_days", "frequency",
    "monetary", "churn_risk", "predicted_clv",
)
PROFILE_COLUMNS: tuple[str, ...] = ("kind", "segment", "customers", "share", "description", "profile")

#: Without a churn score, an active customer is at risk when their last order is this many times their
#: usual gap between orders ago.
OVERDUE_FACTOR = 2.0
#: Cluster id and label of the customers without an order (not clustered).
NO_ORDERS_CLUSTER = -1
NO_ORDERS_LABEL = "no orders yet"
#: A feature describes a cluster when its mean is at least this many standard deviations from the base's.
MIN_DEVIATION = 0.25
#: Phrases per cluster label (more only to tell two clusters apart).
LABEL_PHRASES = 3
#: k-means is fitted on at most this many customers (a seeded sample) and then assigns everyone.
FIT_SAMPLE = 200_000
#: The segment of a customer :func:`segment_of` does not find.
UNKNOWN_SEGMENT = "unknown"

#: Behavioural features clustered (those the features frame has), with the phrase for a cluster whose mean is
#: above / below the base's. All but the shares are counts or amounts, clustered on log(1 + x).
CLUSTER_FEATURES: dict[str, tuple[str, str]] = {
    "frequency": ("frequent buyers", "one-off buyers"),
    "monetary": ("high spenders", "low spenders"),
    "avg_order_value": ("large baskets", "small baskets"),
    "recency_days": ("lapsed", "recent"),
    "tenure_days": ("long-standing", "recently joined"),
    "sessions_30d": ("visit often", "rarely visit"),
    "product_views_30d": ("browse many products", "browse few products"),
    "add_to_carts_30d": ("fill carts", "rarely add to cart"),
    "email_opens_30d": ("open many emails", "rarely open emails"),
    "email_clicks_30d": ("click emails", "rarely click emails"),
    "categories_bought": ("buy across categories", "stick to one category"),
    "discount_share": ("buy on discount", "pay full price"),
}
_SHARES = frozenset({"discount_share"})
_REQUIRED = ("recency_days", "days_since_first_order", "frequency", "monetary")


@dataclass(frozen=True)
class Segmentation:
    """Tonight's segments: ``customers`` and ``profiles`` as published (minus ``run_date``), ``standardised``
    (kind, segment) x feature: each segment's mean of the clustered (log) features in standard deviations of
    the clustered base, for :func:`segment_profile_figure`; ``metrics`` to log (clusters, silhouette...)."""

    customers: pd.DataFrame
    profiles: pd.DataFrame
    standardised: pd.DataFrame
    metrics: dict[str, float] = field(default_factory=dict)


def segment_customers(features: pd.DataFrame, customers: pd.DataFrame, scores: pd.DataFrame | None,
                      run_date: dt.date, params: RunParams) -> Segmentation:
    """Lifecycle segment and behavioural cluster of every customer of ``features`` (tonight's customer
    features, indexed by customer_id or with a customer_id column), with ``customers`` (customer_id,
    signup_date, email_opt_in) and tonight's customer ``scores`` (customer_id, churn_risk, clv; either column,
    or the frame, may be missing when its family is skipped)."""
    base = _features_frame(features, run_date)
    _check_params(params, run_date)
    ids = base.index
    churn = _score(scores, "churn_risk", ids)
    clv = _score(scores, "clv", ids)
    has_orders = base["frequency"] > 0
    recency = base["recency_days"].astype("float64").where(has_orders)
    signup = _signup_age(customers, ids, run_date)
    lifecycle, reason = lifecycle_segments(base, churn, clv, signup, params)

    columns = [c for c in CLUSTER_FEATURES if c in base and base.loc[has_orders, c].nunique() > 1]
    transformed = _transform(base.assign(recency_days=recency), columns)
    cluster, metrics = _clusters(transformed[has_orders], params)
    cluster = cluster.reindex(ids, fill_value=NO_ORDERS_CLUSTER).astype("int64")
    centre, scale = _base_moments(transformed[has_orders])
    z = (transformed - centre) / scale
    labels = describe_clusters(z[has_orders].groupby(cluster[has_orders]).mean())
    labels[NO_ORDERS_CLUSTER] = NO_ORDERS_LABEL

    segments = pd.DataFrame({
        "customer_id": ids.to_numpy(dtype="int64"),
        "lifecycle_segment": lifecycle.to_numpy(),
        "lifecycle_reason": reason.to_numpy(),
        "cluster": cluster.to_numpy(),
        "cluster_label": cluster.map(labels).to_numpy(),
        "recency_days": recency.to_numpy(),
        "frequency": base["frequency"].astype("int64").to_numpy(),
        "monetary": base["monetary"].astype("float64").to_numpy(),
        "churn_risk": churn.to_numpy(),
        "predicted_clv": clv.to_numpy(),
    })
    profile_values = base.assign(recency_days=recency, churn_risk=churn, predicted_clv=clv,
                                 email_opt_in=_opt_in(customers, ids))
    profiles, standardised = _profiles(segments, profile_values, z, params)
    metrics = {**metrics, "customers": float(len(segments)), "prospects": float((~has_orders).sum()),
               "clustered_features": float(len(columns))}
    logger.info("segmented %d customers for %s: %s; %d clusters", len(segments), run_date,
                segments["lifecycle_segment"].value_counts().to_dict(), int(metrics.get("clusters", 0)))
    return Segmentation(segments, profiles, standardised, metrics)


def lifecycle_segments(features: pd.DataFrame, churn: pd.Series, clv: pd.Series, signup_age: pd.Series,
                       params: RunParams) -> tuple[pd.Series, pd.Series]:
    """(segment, reason) per customer of ``features`` by the rules of the module docstring. ``churn`` and
    ``clv`` are aligned to its index, NaN where there is no score; ``signup_age`` the days since signup."""
    new_days, active_days, lost_days = params.segment_new_days, params.segment_active_days, params.segment_lost_days
    frequency = features["frequency"]
    recency = features["recency_days"].astype("float64")
    first = features["days_since_first_order"].astype("float64")
    mean_gap = (features["mean_gap_days"].astype("float64") if "mean_gap_days" in features
                else pd.Series(np.nan, index=features.index))
    active = (frequency > 0) & (recency <= active_days)

    # champions: the top share of the active customers by predicted CLV, by spend when CLV is not there for all
    use_clv = bool(active.any() and clv[active].notna().all())
    value, value_name = (clv, "predicted CLV") if use_clv else (features["monetary"].astype("float64"), "spend")
    champion_cut = float(np.quantile(value[active], params.segment_champion_quantile)) if active.any() else np.inf
    top_share = f"top {1 - params.segment_champion_quantile:.0%}"
    top_value = active & (value >= champion_cut)

    at_risk_churn = active & (churn >= params.segment_at_risk_churn)
    overdue = active & churn.isna() & (frequency >= 2) & (mean_gap > 0) & (recency > OVERDUE_FACTOR * mean_gap)
    at_risk = at_risk_churn | overdue

    lost = (frequency > 0) & (recency >= lost_days)
    hibernating = (frequency > 0) & (recency > active_days) & ~lost
    new = (frequency > 0) & (first <= new_days)
    prospect = frequency <= 0
    # the first rule of the docstring's table wins: np.select takes the first true condition
    segment = pd.Series(np.select([prospect, new, lost, hibernating, at_risk, active & top_value, active],
                                  ["prospect", "new", "lost", "hibernating", "at_risk", "champion", "active"],
                                  default="active"), index=features.index, dtype=object)

    last = "last order " + _days(recency) + " ago"
    top = pd.Series(f"; {value_name} in the {top_share}", index=features.index).where(top_value, "")
    by_churn = (last + ", churn risk " + churn.map("{:.2f}".format)
                + f" (at risk: >= {params.segment_at_risk_churn:.2f})")
    by_gap = (last + ", " + (recency / mean_gap).map("{:.1f}".format) + "x their usual " + _days(mean_gap)
              + f" between orders (at risk without a churn score: over {OVERDUE_FACTOR:g}x)")
    signed_up = (" (signed up " + _days(signup_age) + " ago)").where(signup_age.notna(), "")
    reasons = {
        "prospect": "no completed order yet" + signed_up,
        "new": "first order " + _days(first) + f" ago (new: within {new_days} days)",
        "lost": last + f" (lost: {lost_days}+ days)",
        "hibernating": last + f" (hibernating: {active_days}-{lost_days} days)",
        "at_risk": by_churn.where(churn.notna(), by_gap) + top,
        "champion": (last + " and " + value_name + " " + value.map("{:,.2f}".format) + f" in the {top_share} of "
                     f"active customers (>= {champion_cut:,.2f})"),
        "active": last + f" (active: within {active_days} days)",
    }
    reason = pd.Series("", index=features.index, dtype=object)
    for name, text in reasons.items():
        mask = (segment == name).to_numpy()
        reason[mask] = text[mask]
    return segment, reason


def describe_clusters(standardised_means: pd.DataFrame) -> dict[int, str]:
    """A distinct label in words per cluster (rows) from its mean of each feature (columns) in standard
    deviations from the base: the :data:`LABEL_PHRASES` furthest features at least :data:`MIN_DEVIATION`
    away, mapped to :data:`CLUSTER_FEATURES` phrases; clusters with the same label get more phrases, then a
    number. "typical buyers" when no feature stands out."""
    ranked = {cluster: row.abs().sort_values(ascending=False, kind="stable").index.tolist()
              for cluster, row in standardised_means.iterrows()}

    def label(cluster, count: int, floor: float) -> str:
        row = standardised_means.loc[cluster]
        chosen = [f for f in ranked[cluster][:count] if abs(row[f]) >= floor and pd.notna(row[f])]
        return ", ".join(CLUSTER_FEATURES[f][0 if row[f] > 0 else 1] for f in chosen) or "typical buyers"

    count = {cluster: LABEL_PHRASES for cluster in ranked}
    labels = {cluster: label(cluster, LABEL_PHRASES, MIN_DEVIATION) for cluster in ranked}
    width = standardised_means.shape[1]
    while True:
        seen = pd.Series(labels).duplicated(keep=False)
        clashing = [c for c in seen.index[seen.to_numpy()] if count[c] < width]
        if not clashing:
            break
        for cluster in clashing:  # past the first phrases, any deviation helps tell two clusters apart
            count[cluster] += 1
            labels[cluster] = label(cluster, count[cluster], 0.0)
    taken: dict[str, int] = {}
    for cluster in sorted(labels):
        text = labels[cluster]
        taken[text] = taken.get(text, 0) + 1
        if taken[text] > 1:
            labels[cluster] = f"{text} ({taken[text]})"
    return {int(cluster): text for cluster, text in labels.items()}


def segment_of(customer_ids, segments: pd.DataFrame, column: str = "lifecycle_segment") -> pd.Series:
    """Each customer's segment (``column`` of :func:`segment_customers`' ``customers`` frame: lifecycle_segment
    or cluster_label), indexed by ``customer_ids`` in their order; :data:`UNKNOWN_SEGMENT` for a customer the
    segments do not have (signed up after them)."""
    ids = pd.Index(np.asarray(customer_ids, dtype="int64"), name="customer_id")
    lookup = segments.set_index("customer_id")[column]
    return lookup.reindex(ids).fillna(UNKNOWN_SEGMENT).astype(object).rename(column)


def segment_profile_figure(segmentation: Segmentation, title: str):
    """Heatmaps of each lifecycle segment's and cluster's mean clustered features, in standard deviations of the
    clustered base (red above, blue below), the segment sizes in the row labels."""
    from ml.plots import plt  # ml.plots selects matplotlib's headless backend first

    z = segmentation.standardised
    sizes = segmentation.profiles.set_index(["kind", "segment"])["customers"]
    kinds = [kind for kind in ("lifecycle", "cluster") if kind in z.index.get_level_values("kind")]
    heights = [max(int((z.index.get_level_values("kind") == kind).sum()), 1) for kind in kinds]
    fig, axes = plt.subplots(len(kinds), 1, figsize=(max(8.0, 0.8 * z.shape[1] + 4), 0.45 * sum(heights) + 2.5),
                             gridspec_kw={"height_ratios": heights}, squeeze=False, layout="constrained")
    image = None
    for ax, kind in zip(axes[:, 0], kinds):
        rows = z.xs(kind, level="kind")
        image = ax.imshow(rows.to_numpy(dtype=float), cmap="RdBu_r", vmin=-2, vmax=2, aspect="auto")
        ax.set_yticks(range(len(rows)), [f"{s} (n={int(sizes.get((kind, s), 0)):,})" for s in rows.index], fontsize=8)
        last = kind == kinds[-1]  # feature names under the bottom panel only (same columns in both)
        ax.set_xticks(range(rows.shape[1]), list(rows.columns) if last else [], rotation=35, ha="right", fontsize=8)
        for (r, c), value in np.ndenumerate(rows.to_numpy(dtype=float)):
            if np.isfinite(value):
                ax.text(c, r, f"{value:.1f}", ha="center", va="center", fontsize=7)
        ax.set_title(f"{kind} segments", fontsize=10)
    if image is not None:
        fig.colorbar(image, ax=axes[:, 0].tolist(), label="mean (log) feature, sd from the customers with orders")
    fig.suptitle(title)
    return fig


# --- helpers ----------------------------------------------------------------------------------------


def _features_frame(features: pd.DataFrame, run_date: dt.date) -> pd.DataFrame:
    frame = features.set_index("customer_id") if "customer_id" in features.columns else features
    missing = [c for c in _REQUIRED if c not in frame.columns]
    if missing:
        raise ValueError(f"customer_features for {run_date} lack column(s) {', '.join(missing)}: cannot segment")
    if frame.index.has_duplicates:
        raise ValueError(f"customer_features for {run_date} have duplicate customer_id rows: cannot segment")
    frame = frame.copy()
    frame.index = pd.Index(frame.index.to_numpy(dtype="int64"), name="customer_id")
    return frame


def _check_params(params: RunParams, run_date: dt.date) -> None:
    if params.segment_active_days >= params.segment_lost_days:
        raise ValueError(f"segments for {run_date}: segment_active_days ({params.segment_active_days}) must be below "
                         f"segment_lost_days ({params.segment_lost_days})")


def _score(scores: pd.DataFrame | None, column: str, ids: pd.Index) -> pd.Series:
    if scores is None or column not in scores.columns:
        return pd.Series(np.nan, index=ids, dtype="float64")
    return scores.set_index("customer_id")[column].astype("float64").reindex(ids)


def _signup_age(customers: pd.DataFrame, ids: pd.Index, run_date: dt.date) -> pd.Series:
    signup = pd.to_datetime(customers.set_index("customer_id")["signup_date"]).reindex(ids)
    if getattr(signup.dt, "tz", None) is not None:
        signup = signup.dt.tz_convert("UTC").dt.tz_localize(None)
    return (pd.Timestamp(run_date) - signup).dt.total_seconds() / 86_400.0


def _opt_in(customers: pd.DataFrame, ids: pd.Index) -> pd.Series:
    if "email_opt_in" not in customers.columns:
        return pd.Series(np.nan, index=ids)
    return customers.set_index("customer_id")["email_opt_in"].reindex(ids).astype("float64")


def _days(values: pd.Series) -> pd.Series:
    """Whole days in words ("1 day", "12 days"); "?" where unknown."""
    return values.map(_day_text).astype(object)


def _day_text(value: float) -> str:
    if pd.isna(value):
        return "?"
    days = int(round(float(value)))
    return "1 day" if days == 1 else f"{days} days"


def _transform(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """The clustered features: log(1 + x) of counts and amounts, shares as they are."""
    values = {c: frame[c].astype("float64") for c in columns}
    return pd.DataFrame({c: v if c in _SHARES else np.log1p(v.clip(lower=0)) for c, v in values.items()},
                        index=frame.index)


def _base_moments(transformed: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    std = transformed.std(ddof=0)
    return transformed.mean(), std.where(std > 0, 1.0)


def _clusters(transformed: pd.DataFrame, params: RunParams) -> tuple[pd.Series, dict[str, float]]:
    """k-means cluster per customer of ``transformed`` (customers with orders), numbered by mean spend."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score
    from sklearn.preprocessing import StandardScaler

    if transformed.empty or transformed.shape[1] == 0:
        return pd.Series(0, index=transformed.index, dtype="int64"), {"clusters": float(min(len(transformed), 1))}
    X = StandardScaler().fit_transform(transformed.to_numpy())
    k = min(params.segment_clusters, len(transformed.drop_duplicates()))  # no more clusters than distinct customers
    if k < 2:
        return pd.Series(0, index=transformed.index, dtype="int64"), {"clusters": 1.0}
    rng = np.random.default_rng(params.seed)
    fit_rows = rng.choice(len(X), FIT_SAMPLE, replace=False) if len(X) > FIT_SAMPLE else slice(None)
    model = KMeans(n_clusters=k, n_init=10, random_state=params.seed).fit(X[fit_rows])
    raw = model.predict(X)
    spend = transformed["monetary"] if "monetary" in transformed else pd.Series(0.0, index=transformed.index)
    order = spend.groupby(raw).mean().sort_values(ascending=False, kind="stable").index
    renumber = {int(old): new for new, old in enumerate(order)}
    cluster = pd.Series(raw, index=transformed.index).map(renumber).astype("int64")
    sample = min(len(X), 5_000)
    silhouette = float(silhouette_score(X, raw, sample_size=sample, random_state=params.seed)) \
        if 1 < len(np.unique(raw)) < len(X) else float("nan")
    return cluster, {"clusters": float(len(order)), "silhouette": silhouette, "inertia": float(model.inertia_)}


_PROFILE_FEATURES = ("recency_days", "frequency", "monetary", "avg_order_value", "sessions_30d", "email_opens_30d",
                     "churn_risk", "predicted_clv", "email_opt_in")


def _profiles(segments: pd.DataFrame, values: pd.DataFrame, z: pd.DataFrame,
              params: RunParams) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One row per lifecycle segment (all of them, empty ones with 0 customers) and per cluster."""
    total = len(segments)
    shown = [c for c in _PROFILE_FEATURES if c in values]
    rows, standardised = [], {}
    groups = [("lifecycle", s, segments["lifecycle_segment"].to_numpy() == s) for s in LIFECYCLE_SEGMENTS]
    clusters = segments.drop_duplicates("cluster").sort_values("cluster")
    groups += [("cluster", label, segments["cluster"].to_numpy() == c)
               for c, label in zip(clusters["cluster"], clusters["cluster_label"])]
    for kind, name, mask in groups:
        members = values[mask]
        means = {c: float(members[c].mean()) for c in shown if members[c].notna().any()}
        rows.append({
            "kind": kind, "segment": name, "customers": int(mask.sum()),
            "share": float(mask.sum() / total) if total else 0.0,
            "description": _describe_segment(kind, name, int(mask.sum()), total, means, params),
            "profile": json.dumps({c: round(v, 4) for c, v in means.items()}, sort_keys=True),
        })
        if mask.any():
            standardised[(kind, name)] = z[mask].mean()
    profiles = pd.DataFrame(rows, columns=list(PROFILE_COLUMNS)).astype({"customers": "int64", "share": "float64"})
    index = pd.MultiIndex.from_tuples(list(standardised), names=["kind", "segment"])
    return profiles, pd.DataFrame(list(standardised.values()), index=index, columns=z.columns)


_RULES_IN_WORDS = {
    "prospect": "no completed order yet",
    "new": "first order within {new} days",
    "champion": "active, top {top} by {value}",
    "active": "last order within {active} days",
    "at_risk": "active, churn risk >= {churn} (without a churn score: over {overdue:g}x their usual gap between "
               "orders)",
    "hibernating": "last order {active}-{lost} days ago",
    "lost": "no order for {lost}+ days",
}


def _describe_segment(kind: str, name: str, size: int, total: int, means: dict[str, float], params: RunParams) -> str:
    share = f"{size:,} customers ({size / total:.1%})" if total else f"{size:,} customers"
    if kind == "lifecycle":
        rule = _RULES_IN_WORDS[name].format(
            new=params.segment_new_days, active=params.segment_active_days, lost=params.segment_lost_days,
            churn=params.segment_at_risk_churn, overdue=OVERDUE_FACTOR,
            top=f"{1 - params.segment_champion_quantile:.0%}", value="predicted CLV (else spend)")
        head = f"{name}: {rule}; {share}"
    else:
        head = f"{name}: {share}"
    facts = []
    if "recency_days" in means:
        facts.append(f"last order {_day_text(means['recency_days'])} ago on average")
    if "frequency" in means and "monetary" in means:
        facts.append(f"{means['frequency']:.1f} orders, spend {means['monetary']:,.2f}")
    return "; ".join([head, *facts])
