"""Attribution models (ml.attribution.models): exact credits of the heuristic rules on hand-made journeys, the
Markov removal effects and Shapley values against references written here from their definitions (by other
routes: value iteration of the chain, permutations of the players), and conservation on random journeys."""

from __future__ import annotations

import itertools
import math
from collections import Counter, defaultdict

import numpy as np
import pandas as pd
import pytest

from ml.attribution import models
from ml.attribution.models import (
    check_conservation,
    first_touch,
    last_non_direct_touch,
    linear,
    markov_chain,
    markov_removal_effects,
    position_based,
    shapley,
    shapley_from_game,
    shapley_values,
    summarise_credits,
    time_decay,
)

T0 = pd.Timestamp("2024-03-10 12:00", tz="UTC")
ALL_MODELS = {
    "first_touch": first_touch, "last_non_direct_touch": last_non_direct_touch, "linear": linear,
    "time_decay": time_decay, "position_based": position_based, "markov": markov_chain,
    "markov order 2": lambda j, o: markov_chain(j, o, order=2), "shapley": shapley,
}


def _frames(paths: list[tuple[int, list[tuple], bool, float]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """paths: (journey_id, [(channel, campaign, days before the conversion[, position])...], converted, revenue).
    Without an explicit position, the list order is the position."""
    rows, outcomes = [], []
    for journey_id, touches, converted, revenue in paths:
        for i, touch in enumerate(touches):
            channel, campaign, days = touch[:3]
            position = touch[3] if len(touch) > 3 else i
            rows.append((journey_id, position, channel, campaign, T0 - pd.Timedelta(days=days)))
        outcomes.append((journey_id, converted, revenue if converted else 0.0, T0 if converted else pd.NaT))
    journeys = pd.DataFrame(rows, columns=["journey_id", "position", "channel", "campaign", "touch_ts"])
    journeys["journey_id"] = journeys["journey_id"].astype(np.int64)
    journeys["touch_ts"] = pd.to_datetime(journeys["touch_ts"], utc=True)
    out = pd.DataFrame(outcomes, columns=["journey_id", "converted", "revenue", "conversion_ts"])
    out["conversion_ts"] = pd.to_datetime(out["conversion_ts"], utc=True)
    return journeys, out


def _as_dict(credits: pd.DataFrame) -> dict[tuple, float]:
    return {(j, ch, cp): c for j, ch, cp, c in credits[["journey_id", "channel", "campaign", "credit"]].itertuples(index=False)}


def _assert_credits(credits: pd.DataFrame, expected: dict[tuple, float]) -> None:
    got = _as_dict(credits)
    assert set(got) == set(expected)
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-12), key


# --- heuristic rules on hand-made journeys ----------------------------------------------------------------

HAND_MADE = [
    # 1: three touches, one of them direct, a day apart
    (1, [("email", "e1", 3), ("direct", None, 2), ("search", "s1", 1)], True, 10.0),
    # 2: direct only
    (2, [("direct", None, 2), ("direct", None, 1)], True, 20.0),
    # 3: a single touch
    (3, [("social", "so1", 1)], True, 30.0),
    # 4: did not convert (and display appears nowhere else)
    (4, [("display", "d1", 1), ("search", "s1", 0)], False, 0.0),
    # 5: converted without any touch
    (5, [], True, 5.0),
    # 6: equal timestamps, rows given out of order: the positions decide (email first, search last)
    (6, [("search", "s2", 1, 1), ("email", "e2", 1, 0)], True, 8.0),
    # 7: four touches, email twice with two campaigns
    (7, [("email", "e1", 4), ("search", "s1", 3), ("social", "so1", 2), ("email", "e2", 1)], True, 40.0),
    # 8: direct last after a real channel
    (8, [("social", "so1", 2), ("direct", None, 1)], True, 12.0),
]


@pytest.fixture(scope="module")
def hand_made() -> tuple[pd.DataFrame, pd.DataFrame]:
    return _frames(HAND_MADE)


def test_first_touch_credits_position_zero(hand_made) -> None:
    credits = first_touch(*hand_made)
    _assert_credits(credits, {
        (1, "email", "e1"): 1, (2, "direct", None): 1, (3, "social", "so1"): 1, (5, "(none)", None): 1,
        (6, "email", "e2"): 1, (7, "email", "e1"): 1, (8, "social", "so1"): 1,
    })
    assert set(credits["model"]) == {"first_touch"}


def test_last_non_direct_touch_skips_direct_unless_alone(hand_made) -> None:
    _assert_credits(last_non_direct_touch(*hand_made), {
        (1, "search", "s1"): 1, (2, "direct", None): 1, (3, "social", "so1"): 1, (5, "(none)", None): 1,
        (6, "search", "s2"): 1, (7, "email", "e2"): 1, (8, "social", "so1"): 1,
    })


def test_linear_splits_equally_per_touch(hand_made) -> None:
    _assert_credits(linear(*hand_made), {
        (1, "email", "e1"): 1 / 3, (1, "direct", None): 1 / 3, (1, "search", "s1"): 1 / 3,
        (2, "direct", None): 1, (3, "social", "so1"): 1, (5, "(none)", None): 1,
        (6, "email", "e2"): 0.5, (6, "search", "s2"): 0.5,
        (7, "email", "e1"): 0.25, (7, "search", "s1"): 0.25, (7, "social", "so1"): 0.25, (7, "email", "e2"): 0.25,
        (8, "social", "so1"): 0.5, (8, "direct", None): 0.5,
    })


def test_time_decay_halves_per_half_life(hand_made) -> None:
    # half-life 1 day: weights 2^-age, normalised; equal ages split equally
    _assert_credits(time_decay(*hand_made, half_life_days=1.0), {
        (1, "email", "e1"): 1 / 7, (1, "direct", None): 2 / 7, (1, "search", "s1"): 4 / 7,
        (2, "direct", None): 1, (3, "social", "so1"): 1, (5, "(none)", None): 1,
        (6, "email", "e2"): 0.5, (6, "search", "s2"): 0.5,
        (7, "email", "e1"): 1 / 15, (7, "search", "s1"): 2 / 15, (7, "social", "so1"): 4 / 15, (7, "email", "e2"): 8 / 15,
        (8, "social", "so1"): 1 / 3, (8, "direct", None): 2 / 3,
    })


def test_time_decay_survives_old_journeys_and_late_touches() -> None:
    # 4000 half-lives would underflow 2^-age to 0 / 0; a touch stamped after the conversion counts as age 0
    journeys, outcomes = _frames([(1, [("email", "e", 4000.0), ("search", "s", 3999.0)], True, 1.0),
                                  (2, [("email", "e", 1.0), ("social", None, -1.0)], True, 1.0)])
    _assert_credits(time_decay(journeys, outcomes, half_life_days=1.0),
                    {(1, "email", "e"): 1 / 3, (1, "search", "s"): 2 / 3, (2, "email", "e"): 1 / 3, (2, "social", None): 2 / 3})


def test_position_based_40_20_40(hand_made) -> None:
    _assert_credits(position_based(*hand_made), {
        (1, "email", "e1"): 0.4, (1, "direct", None): 0.2, (1, "search", "s1"): 0.4,
        (2, "direct", None): 1,  # two direct touches: 50/50, one row
        (3, "social", "so1"): 1, (5, "(none)", None): 1,
        (6, "email", "e2"): 0.5, (6, "search", "s2"): 0.5,
        (7, "email", "e1"): 0.4, (7, "search", "s1"): 0.1, (7, "social", "so1"): 0.1, (7, "email", "e2"): 0.4,
        (8, "social", "so1"): 0.5, (8, "direct", None): 0.5,
    })
    uneven = _as_dict(position_based(*hand_made, first_share=0.3, last_share=0.6))
    assert uneven[(6, "email", "e2")] == pytest.approx(1 / 3) and uneven[(6, "search", "s2")] == pytest.approx(2 / 3)
    assert uneven[(1, "direct", None)] == pytest.approx(0.1)
    last_only = position_based(*hand_made, first_share=0.0, last_share=1.0)
    check_conservation(last_only, hand_made[1])
    assert _as_dict(last_only)[(3, "social", "so1")] == 1


@pytest.mark.parametrize("name", list(ALL_MODELS))
def test_every_model_conserves_and_skips_untouched_channels(hand_made, name) -> None:
    credits = ALL_MODELS[name](*hand_made)
    check_conservation(credits, hand_made[1])
    assert credits["credit"].sum() == pytest.approx(7, abs=1e-12)
    assert credits["revenue_credit"].sum() == pytest.approx(125.0, abs=1e-9)
    # display was touched only on a journey that did not convert; journey 4 gets nothing
    assert "display" not in set(credits["channel"]) and 4 not in set(credits["journey_id"])
    # every model: the lone touch, the direct-only and the touchless journey are whole
    got = _as_dict(credits)
    assert got[(3, "social", "so1")] == 1 and got[(5, "(none)", None)] == 1 and got[(2, "direct", None)] == pytest.approx(1)
    assert (credits["revenue_credit"] == credits["credit"] * credits["journey_id"].map(dict(zip(
        hand_made[1]["journey_id"], hand_made[1]["revenue"])))).all()


def test_summarise_credits_by_channel_and_campaign(hand_made) -> None:
    credits = linear(*hand_made)
    by_channel = summarise_credits(credits).set_index("channel")
    assert by_channel.loc["email", "conversions"] == pytest.approx(1 / 3 + 0.5 + 0.5)
    assert by_channel.loc["email", "revenue"] == pytest.approx(10 / 3 + 4 + 20)
    assert by_channel["conversions"].sum() == pytest.approx(7)
    by_campaign = summarise_credits(credits, by_campaign=True)
    direct = by_campaign[by_campaign["channel"] == "direct"]
    assert direct["campaign"].tolist() == [None] and direct["conversions"].iloc[0] == pytest.approx(1 / 3 + 1 + 0.5)
    assert by_campaign.set_index(["channel", "campaign"]).loc[("email", "e1"), "conversions"] == pytest.approx(1 / 3 + 0.25)


def test_check_conservation_names_the_model_and_the_gap(hand_made) -> None:
    credits = linear(*hand_made)
    broken = credits.copy()
    broken.loc[0, "credit"] += 1e-9
    with pytest.raises(ValueError, match="'linear'.*gap 1e-09"):
        check_conservation(broken, hand_made[1])
    with pytest.raises(ValueError, match="'linear' leaves 1 converted journeys uncredited"):
        check_conservation(credits[credits["journey_id"] != 5], hand_made[1])
    with pytest.raises(ValueError, match="'linear'.*revenue_credit"):
        check_conservation(credits.assign(revenue_credit=credits["revenue_credit"] * 1.001), hand_made[1])
    extra = pd.concat([credits, credits.head(1).assign(journey_id=4)], ignore_index=True)
    with pytest.raises(ValueError, match="credits 1 journeys that did not convert"):
        check_conservation(extra, hand_made[1])


def test_journeys_must_belong_to_outcomes(hand_made) -> None:
    journeys, outcomes = hand_made
    with pytest.raises(ValueError, match="journey_id 4 is not in outcomes"):
        linear(journeys, outcomes[outcomes["journey_id"] != 4])


# --- Markov: removal effects against value iteration of the counted chain ---------------------------------

# (path, converted): repeats, loops, a channel (D) only on paths that do not convert
MARKOV_PATHS = [
    (["A", "B", "C"], True), (["A", "C"], False), (["B"], True), (["A", "A", "B"], True), (["C", "B"], False),
    (["B", "C", "A"], False), (["C"], True), (["A", "B", "A", "C"], True), (["D", "A"], False), (["B", "B"], False),
    (["C", "A", "B"], True), (["A"], False),
]


def _markov_frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    return _frames([(i, [(c, None, 1.0) for c in path], converted, 1.0 + i) for i, (path, converted) in enumerate(MARKOV_PATHS)])


def _reference_removal_effects(paths: list[tuple[list[str], bool]], order: int) -> dict[str, float]:
    """From the definition: states are the last ``order`` channels ("^" before the first touch), transition
    probabilities by counting, P(conversion) by iterating x <- r + Q x from 0 until it stops moving."""
    counts: dict[tuple, Counter] = defaultdict(Counter)
    for path, converted in paths:
        padded = ["^"] * (order - 1) + path
        states = [tuple(padded[t: t + order]) for t in range(len(path))]
        for a, b in zip(["start", *states], [*states, "conv" if converted else "null"]):
            counts[a][b] += 1
    probability = {a: {b: n / sum(out.values()) for b, n in out.items()} for a, out in counts.items()}

    def conversion(removed: str | None) -> float:
        x = dict.fromkeys(probability, 0.0)
        for _ in range(100_000):
            new = {s: 0.0 if (removed is not None and s != "start" and removed in s)
                   else sum(p * (1.0 if b == "conv" else x.get(b, 0.0)) for b, p in probability[s].items())
                   for s in probability}
            change = max(abs(new[s] - x[s]) for s in x)
            x = new
            if change < 1e-16:
                break
        return x["start"]

    base = conversion(None)
    return {c: 1 - conversion(c) / base for c in sorted({c for path, _ in paths for c in path})}


@pytest.mark.parametrize("solver", ["lu", "gmres"])
@pytest.mark.parametrize("order", [1, 2, 3])
def test_markov_removal_effects_equal_the_definition(order, solver, monkeypatch) -> None:
    if solver == "gmres":  # the iterative solve of large chains, forced on this small one
        monkeypatch.setattr(models, "DIRECT_SOLVE_STATES", 0)
    got = markov_removal_effects(*_markov_frames(), order=order)
    expected = _reference_removal_effects(MARKOV_PATHS, order)
    assert list(got.index) == list(expected)
    for channel, value in expected.items():
        assert got[channel] == pytest.approx(value, abs=1e-9), channel
    # every channel on a converting path matters; D (D -> A, never converting) only through the order-1
    # chain's memorylessness: A's onward odds do not remember that D came first
    assert (got.drop("D") > 1e-9).all() and (got["D"] > 1e-9) == (order == 1)


def test_markov_removal_effects_by_hand() -> None:
    # start -> A (1/2) -> conv; start -> B (1/2) -> null: P = 1/2, without A 0, without B 1/2
    journeys, outcomes = _frames([(1, [("A", None, 1)], True, 1.0), (2, [("B", None, 1)], False, 0.0)])
    assert markov_removal_effects(journeys, outcomes).to_dict() == {"A": 1.0, "B": 0.0}


def _reference_raking(paths: list[tuple[list[str], bool]], value: dict[str, float], sweeps: int = 20000):
    """Iterative proportional fitting from the definition: weights w with each converted path split over its
    distinct channels by w and every channel's total credit equal to N value_c / sum value; returns the
    credits of each converted path (by index) per channel."""
    sets = [sorted(set(channels)) for channels, converted in paths if converted and channels]
    present = sorted({c for members in sets for c in members})
    target = {c: len(sets) * value[c] / sum(value[c] for c in present) for c in present}
    w = {c: 1.0 for c in present}
    for _ in range(sweeps):
        totals = {c: 0.0 for c in present}
        for members in sets:
            norm = sum(w[c] for c in members)
            for c in members:
                totals[c] += w[c] / norm
        w = {c: w[c] * target[c] / totals[c] for c in present}
    return [{c: w[c] / sum(w[m] for m in members) for c in members} for members in sets], target


def test_markov_credits_rake_each_order_to_the_removal_effect_split() -> None:
    journeys, outcomes = _markov_frames()
    effects = _reference_removal_effects(MARKOV_PATHS, 1)
    expected, target = _reference_raking(MARKOV_PATHS, effects)
    credits = markov_chain(journeys, outcomes)
    totals = credits.groupby("channel")["credit"].sum()
    for channel, total in target.items():  # ChannelAttribution's split of the conversions, by removal effect
        assert totals[channel] == pytest.approx(total, abs=1e-9)
    by_order = credits.groupby(["journey_id", "channel"])["credit"].sum()
    converted = [i for i, (channels, ok) in enumerate(MARKOV_PATHS) if ok and channels]
    for index, shares in zip(converted, expected):
        for channel, share in shares.items():
            assert by_order[(index, channel)] == pytest.approx(share, abs=1e-9)


def test_markov_splits_a_channel_equally_over_its_touches_campaigns() -> None:
    journeys, outcomes = _frames([(1, [("A", "a1", 3), ("A", "a2", 2), ("A", "a1", 1), ("B", None, 0)], True, 9.0),
                                  (2, [("B", None, 1)], False, 0.0)])
    credits = _as_dict(markov_chain(journeys, outcomes))
    share_a = credits[(1, "A", "a1")] + credits[(1, "A", "a2")]
    assert credits[(1, "A", "a1")] == pytest.approx(2 * share_a / 3) and credits[(1, "A", "a2")] == pytest.approx(share_a / 3)


def test_markov_order_must_be_positive() -> None:
    with pytest.raises(ValueError, match="order"):
        markov_removal_effects(*_markov_frames(), order=0)


# --- Shapley: against the average marginal contribution over every order of the players ------------------


def _reference_shapley(paths: list[tuple[list[str], bool]]) -> dict[str, float]:
    """v(S) = conversions of converting journeys whose channel set is inside S; phi = the mean over all n!
    orders of the players of each one's marginal contribution when it joins."""
    by_set = Counter(frozenset(path) for path, converted in paths if converted and path)
    players = sorted(set().union(*by_set))

    def worth(coalition: frozenset) -> float:
        return float(sum(n for s, n in by_set.items() if s <= coalition))

    phi = dict.fromkeys(players, 0.0)
    for ordering in itertools.permutations(players):
        joined: frozenset = frozenset()
        for player in ordering:
            phi[player] += worth(joined | {player}) - worth(joined)
            joined = joined | {player}
    return {p: v / math.factorial(len(players)) for p, v in phi.items()}


SHAPLEY_PATHS = MARKOV_PATHS + [
    (["E", "A"], True), (["E", "F", "G"], True), (["G"], True), (["F", "B", "C", "A"], True), (["A", "G"], True),
    (["H"], False), (["E", "E"], True),
]


def _shapley_frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    return _frames([(i, [(c, None, 1.0) for c in path], converted, 2.0) for i, (path, converted) in enumerate(SHAPLEY_PATHS)])


def test_shapley_values_equal_the_permutation_definition() -> None:
    got = shapley_values(*_shapley_frames())
    expected = _reference_shapley(SHAPLEY_PATHS)
    for channel, value in expected.items():
        assert got[channel] == pytest.approx(value, abs=1e-9), channel
    # channels only on paths that did not convert are null players
    assert got["D"] == 0 and got["H"] == 0
    assert got.sum() == pytest.approx(sum(converted for _, converted in SHAPLEY_PATHS))


def test_shapley_closed_form_beyond_the_enumeration_limit(monkeypatch) -> None:
    enumerated = shapley_values(*_shapley_frames())
    monkeypatch.setattr(models, "MAX_ENUMERATED_CHANNELS", 2)
    closed_form = shapley_values(*_shapley_frames())
    np.testing.assert_allclose(closed_form.to_numpy(), enumerated.to_numpy(), atol=1e-9)


def test_shapley_from_game_on_a_non_additive_game() -> None:
    # glove game: player 0 holds a left glove, 1 and 2 right ones; a pair is worth 1 -> (2/3, 1/6, 1/6)
    worth = np.array([1.0 if (m & 1) and (m & 6) else 0.0 for m in range(8)])
    np.testing.assert_allclose(shapley_from_game(worth), [2 / 3, 1 / 6, 1 / 6], atol=1e-12)


def test_shapley_credits_total_the_shapley_values_split_over_each_orders_channels() -> None:
    journeys, outcomes = _shapley_frames()
    phi = _reference_shapley(SHAPLEY_PATHS)
    credits = shapley(journeys, outcomes)
    totals = credits.groupby("channel")["credit"].sum()
    for channel, value in phi.items():  # each channel's credit is its Shapley value in conversions
        assert totals.get(channel, 0.0) == pytest.approx(value, abs=1e-9)
    journey = credits[credits["journey_id"] == 15].set_index("channel")["credit"]  # F B C A
    np.testing.assert_allclose(journey.reindex(list("FBCA")).to_numpy(), 0.25, atol=1e-9)


# --- conservation on random journeys -------------------------------------------------------------------------

try:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
except ImportError:  # pragma: no cover - hypothesis is a test-only extra
    given = None

if given is not None:
    _touch = st.tuples(st.sampled_from(["direct", "email", "search", "social", "display"]),
                       st.sampled_from([None, "c1", "c2"]), st.floats(-1.0, 60.0, allow_nan=False))
    _journey = st.tuples(st.lists(_touch, max_size=6), st.booleans(),
                         st.floats(0.0, 1e6, allow_nan=False, allow_infinity=False))

    @settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.lists(_journey, max_size=25), st.sampled_from([0.5, 7.0]), st.integers(1, 3))
    def test_every_model_conserves_on_random_journeys(journeys, half_life, order) -> None:
        frames = _frames([(10 * i + 3, touches, converted, revenue)
                          for i, (touches, converted, revenue) in enumerate(journeys)])
        n_converted = sum(converted for _, converted, _ in journeys)
        for credits in (first_touch(*frames), last_non_direct_touch(*frames), linear(*frames),
                        time_decay(*frames, half_life_days=half_life), position_based(*frames),
                        markov_chain(*frames, order=order), shapley(*frames)):
            check_conservation(credits, frames[1])
            assert credits["credit"].sum() == pytest.approx(n_converted, abs=1e-9)
            assert (credits["credit"] >= 0).all()


def test_models_sharing_one_preparation_credit_as_each_alone(monkeypatch):
    from ml.attribution import excess

    journeys, outcomes = _frames(HAND_MADE)
    alone = {name: run(journeys, outcomes) for name, run in
             [("linear", models.linear), ("markov", models.markov_chain), ("excess", excess.excess_exposure)]}
    calls = []
    real = models._prepared
    monkeypatch.setattr(models, "_prepared", lambda j, o: calls.append(1) or real(j, o))
    with models.sharing_preparation():
        shared = {name: run(journeys, outcomes) for name, run in
                  [("linear", models.linear), ("markov", models.markov_chain), ("excess", excess.excess_exposure)]}
        paths = models._prepare(journeys, outcomes)
        with pytest.raises(ValueError, match="read-only"):
            paths.channel[0] = 1  # what the models share cannot be changed by one of them
        models.linear(*_frames(HAND_MADE))  # other frames: prepared again
    assert len(calls) == 2
    models.linear(journeys, outcomes)  # outside: nothing is kept
    assert len(calls) == 3 and models._shared is None
    for name in alone:
        pd.testing.assert_frame_equal(shared[name], alone[name])


@pytest.mark.parametrize("channels", [6, 60])
def test_raked_weights_give_every_channel_its_target_whether_journeys_are_summed_per_set_or_one_by_one(channels):
    """The dual is summed once per distinct set of channels (a few hundred sets against millions of journeys at a
    million customers), or per journey beyond 52 channels: either way, splitting each journey over its channels by the
    weights gives each channel its target, ``N value_c / sum value``."""
    rng = np.random.default_rng(channels)
    journeys = 3_000
    pairs = sorted({(j, int(c)) for j in range(journeys)
                    for c in rng.choice(channels, int(rng.integers(2, 5)), replace=False)})
    journey, channel = (np.array(column, dtype=np.int64) for column in zip(*pairs))
    value = rng.uniform(0.7, 1.3, channels)
    weights = models.raked_weights(journey * 7 + 11, channel, value)  # any journey ids
    share = weights[channel] / np.bincount(journey, weights=weights[channel])[journey]
    totals = np.bincount(channel, weights=share, minlength=channels)
    np.testing.assert_allclose(totals, journeys * value / value.sum(), rtol=0, atol=1e-9)
    np.testing.assert_allclose(np.bincount(journey, weights=share), 1.0)
