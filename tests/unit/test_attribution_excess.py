"""Excess-exposure attribution (ml.attribution.excess): the per-order formula on a hand-made fit, campaign
credit per touch, the fit on simulated stores with a known number of causing touches (and none), the
correction for converting customers (kappa), the edges, and conservation on random journeys."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from ml.attribution.excess import (
    LAG_BINS_H,
    MAX_PI,
    MODEL_NAME,
    ExcessFit,
    credits_from_fit,
    excess_exposure,
    fit_excess,
)
from ml.attribution.models import check_conservation

T0 = pd.Timestamp("2024-03-01", tz="UTC")
CHANNELS = np.array(["a", "b", "c", "d", "x"], dtype=object)
MIX = np.array([0.35, 0.25, 0.2, 0.1, 0.1])


def _frames(paths: list[tuple[int, list[tuple], bool]], hours_apart: float = 0.0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """paths: (journey_id, [(channel, campaign, hours before the conversion)...] in position order, converted);
    journey i converts ``i x hours_apart`` hours after T0, revenue 10 x journey_id."""
    rows, outcomes = [], []
    for i, (journey_id, touches, converted) in enumerate(paths):
        conversion = T0 + pd.Timedelta(hours=i * hours_apart)
        for position, (channel, campaign, hours) in enumerate(touches):
            rows.append((journey_id, position, channel, campaign, conversion - pd.Timedelta(hours=hours)))
        outcomes.append((journey_id, converted, 10.0 * journey_id if converted else 0.0,
                         conversion if converted else pd.NaT))
    journeys = pd.DataFrame(rows, columns=["journey_id", "position", "channel", "campaign", "touch_ts"])
    journeys = journeys.astype({"journey_id": np.int64, "position": np.int64})
    journeys["touch_ts"] = pd.to_datetime(journeys["touch_ts"], utc=True)
    out = pd.DataFrame(outcomes, columns=["journey_id", "converted", "revenue", "conversion_ts"])
    out["conversion_ts"] = pd.to_datetime(out["conversion_ts"], utc=True)
    return journeys, out


def _credits(credits: pd.DataFrame) -> dict[tuple, float]:
    rows = credits[["journey_id", "channel", "campaign", "credit"]].itertuples(index=False)
    return {(j, ch, cp): c for j, ch, cp, c in rows}


def _hand_fit(likelihood: dict[tuple[int, str], float], pi: float) -> ExcessFit:
    channels = ["a", "b", "c"]
    L = np.zeros((len(LAG_BINS_H) - 1, len(channels)))
    for (lag_bin, channel), value in likelihood.items():
        L[lag_bin, channels.index(channel)] = value
    zeros = np.zeros_like(L)
    return ExcessFit(channels=np.array(channels, dtype=object), bins=LAG_BINS_H, O=zeros, E=zeros,
                     s=np.ones(len(L)), X=zeros, L=L, kappa=np.ones(3), pi=pi)


# --- the per-order formula ----------------------------------------------------------------------------


def test_credits_follow_the_per_order_formula_on_a_hand_made_fit() -> None:
    # bins: lag 1.5 h -> [1, 2) = bin 1; 30 h -> [24, 48) = bin 6; 0 h -> bin 0; 400 h -> [336, inf) = bin 10
    fit = _hand_fit({(1, "a"): 2.0, (6, "b"): 0.5, (0, "c"): 3.0, (10, "a"): 7.0}, pi=0.2)
    frames = _frames([
        # earlier a (L 2), b (L 0.5), an unseen channel z (L 0) and a at 500 h (L 7); closing c (its L ignored)
        (1, [("a", "a1", 1.5), ("b", "b1", 30.0), ("z", "z1", 2.0), ("a", "a9", 400.0), ("c", "c1", 0.0)], True),
        (2, [("c", "c1", 0.0)], True),                    # a lone touch: the closing one, all of it
        (3, [], True),                                    # no touch: "(none)"
        (4, [("a", "a1", 1.5), ("b", "b1", 0.0)], False),  # not converted: no rows
    ])
    credits = credits_from_fit(fit, *frames)
    denominator = 1 - 0.2 + 2.0 + 0.5 + 7.0
    expected = {(1, "a", "a1"): 2.0 / denominator, (1, "b", "b1"): 0.5 / denominator, (1, "a", "a9"): 7.0 / denominator,
                (1, "c", "c1"): 0.8 / denominator, (2, "c", "c1"): 1.0, (3, "(none)", None): 1.0}
    got = _credits(credits)
    assert set(got) == set(expected)  # z (L = 0) gets no row
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-12), key
    assert set(credits["model"]) == {MODEL_NAME}
    np.testing.assert_allclose(credits["revenue_credit"], credits["credit"] * 10.0 * credits["journey_id"], rtol=1e-12)
    check_conservation(credits, frames[1])


def test_each_touch_credits_its_own_campaign() -> None:
    fit = _hand_fit({(1, "a"): 2.0, (6, "a"): 1.0}, pi=0.5)
    frames = _frames([(1, [("a", "spring", 30.0), ("a", "summer", 1.5), ("a", None, 1.5), ("b", "brand", 0.0)], True)])
    got = _credits(credits_from_fit(fit, *frames))
    denominator = 0.5 + 1.0 + 2.0 + 2.0
    assert got == pytest.approx({(1, "a", "spring"): 1.0 / denominator, (1, "a", "summer"): 2.0 / denominator,
                                 (1, "a", None): 2.0 / denominator, (1, "b", "brand"): 0.5 / denominator}, abs=1e-12)


# --- simulated stores -----------------------------------------------------------------------------------


def _store(seed: int, planted_share: float, converting_mix: np.ndarray = MIX, n_converting: int = 3000,
           n_other: int = 4000) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """Background touches (Poisson(4) per journey, uniform over the 30 days before the order or the window's end,
    channels from a fixed mix; campaign "bg"), a closing touch at the order (campaign "close") and, in
    ``planted_share`` of the converting journeys, one extra touch of channel x up to 72 hours before the order
    (campaign "planted"). Returns (journeys, outcomes, number of planted touches)."""
    rng = np.random.default_rng(seed)
    n = n_converting + n_other
    converting = np.arange(n) < n_converting
    end = rng.uniform(40.0, 120.0, n)  # days after T0
    count = rng.poisson(4.0, n)
    journey = np.repeat(np.arange(n), count)
    day = end[journey] - rng.uniform(0.0, 30.0, len(journey))
    channel = np.where(converting[journey], rng.choice(5, len(journey), p=converting_mix / converting_mix.sum()),
                       rng.choice(5, len(journey), p=MIX))
    planted = np.flatnonzero(converting & (rng.random(n) < planted_share))
    closing = np.arange(n_converting)
    journey = np.r_[journey, planted, closing]
    day = np.r_[day, end[planted] - rng.uniform(0.0, 72.0, len(planted)) / 24.0, end[closing]]
    channel = np.r_[channel, np.full(len(planted), 4), rng.choice(5, n_converting, p=MIX)]
    campaign = np.r_[np.full(len(journey) - len(planted) - n_converting, "bg"), np.full(len(planted), "planted"),
                     np.full(n_converting, "close")].astype(object)
    order = np.lexsort((day, journey))
    journeys = pd.DataFrame({"journey_id": journey[order], "channel": CHANNELS[channel[order]],
                             "campaign": campaign[order], "touch_ts": T0 + pd.to_timedelta(day[order], unit="D")})
    journeys.insert(1, "position", journeys.groupby("journey_id").cumcount().astype(np.int64))
    outcomes = pd.DataFrame({"journey_id": np.arange(n), "converted": converting,
                             "revenue": np.where(converting, 10.0, 0.0),
                             "conversion_ts": (T0 + pd.to_timedelta(end, unit="D")).where(converting, pd.NaT)})
    return journeys, outcomes, len(planted)


def test_the_planted_touches_get_the_planted_number_of_orders() -> None:
    journeys, outcomes, planted = _store(seed=0, planted_share=0.25)
    fit = fit_excess(journeys, outcomes)
    credits = credits_from_fit(fit, journeys, outcomes)
    check_conservation(credits, outcomes)
    # The model cannot tell a planted x touch from a background x touch at the same lag, so the measure is all
    # credit to earlier (non-closing) x touches. Tolerance 8 % of the planted number: the z = 2 threshold
    # withholds up to z sqrt(s E) per cell and the per-order formula hands some back; over 20 seeds of this
    # store the error was -1.2 % +- 2.5 % (range -5.5 % .. +4.9 %, this seed the +4.9 %), so 8 % is over 3 sd.
    earlier_x = credits[(credits["channel"] == "x") & (credits["campaign"] != "close")]["credit"].sum()
    assert planted > 600
    assert earlier_x == pytest.approx(planted, rel=0.08)
    closing = credits.loc[credits["campaign"] == "close", "credit"].sum()
    assert closing == pytest.approx(len(outcomes[outcomes["converted"]]) - planted, rel=0.05)
    assert fit.pi == pytest.approx(planted / 3000, rel=0.1)
    # the background expected per bin totals the earlier touches observed (each touch's mix sums to 1) ...
    np.testing.assert_allclose(fit.E.sum(axis=1), fit.O.sum(axis=1), rtol=1e-9)
    # ... and the anchor is the E-weighted median of O / E, recomputed here channel by channel
    for lag_bin in range(len(fit.s)):
        ratios = sorted((o / e, e) for o, e in zip(fit.O[lag_bin], fit.E[lag_bin]) if e > 0)
        weight, half = 0.0, fit.E[lag_bin].sum() / 2
        for ratio, e in ratios:
            weight += e
            if weight >= half * (1 - 1e-12):
                assert fit.s[lag_bin] == pytest.approx(ratio, rel=1e-12)
                break
    expected = fit.s[:, None] * fit.E
    np.testing.assert_allclose(fit.X, np.maximum(fit.O - expected - 2.0 * np.sqrt(expected), 0.0), atol=1e-9)
    np.testing.assert_allclose(fit.L * expected, fit.X, atol=1e-9)  # L = X / (s E)


def test_without_planted_touches_the_closing_touch_keeps_the_orders() -> None:
    journeys, outcomes, planted = _store(seed=1, planted_share=0.0)
    credits = excess_exposure(journeys, outcomes)
    assert planted == 0
    closing = credits.loc[credits["campaign"] == "close", "credit"].sum()
    assert closing >= 0.95 * outcomes["converted"].sum()


def test_converting_customers_own_mix_is_not_excess() -> None:
    # converting customers see d three times as often as everyone else, at every lag: kappa absorbs it
    journeys, outcomes, _ = _store(seed=2, planted_share=0.0, converting_mix=MIX * np.array([1, 1, 1, 3, 1]))
    fit = fit_excess(journeys, outcomes)
    assert fit.kappa[list(fit.channels).index("d")] == pytest.approx(2.5, rel=0.15)  # 0.3 / 1.2 against 0.1
    credits = credits_from_fit(fit, journeys, outcomes)
    assert credits.loc[credits["campaign"] == "close", "credit"].sum() >= 0.95 * outcomes["converted"].sum()


# --- edges ----------------------------------------------------------------------------------------------


def _last_touch(journeys: pd.DataFrame, outcomes: pd.DataFrame) -> dict[tuple, float]:
    converted = set(outcomes.loc[outcomes["converted"], "journey_id"])
    last = (journeys[journeys["journey_id"].isin(converted)].sort_values(["journey_id", "position"])
            .groupby("journey_id").tail(1))
    expected = {(j, ch, cp): 1.0 for j, ch, cp in last[["journey_id", "channel", "campaign"]].itertuples(index=False)}
    expected.update({(j, "(none)", None): 1.0 for j in converted - set(last["journey_id"])})
    return expected


def test_without_background_every_order_goes_to_its_last_touch(caplog) -> None:
    journeys, outcomes, _ = _store(seed=3, planted_share=0.3)
    converted = outcomes[outcomes["converted"]]
    journeys = journeys[journeys["journey_id"].isin(converted["journey_id"])]
    with caplog.at_level(logging.WARNING, logger="ml.attribution.excess"):
        fit = fit_excess(journeys, converted)
    assert fit.pi == 0.0 and not fit.L.any()
    assert "no background" in caplog.text
    assert _credits(credits_from_fit(fit, journeys, converted)) == _last_touch(journeys, converted)


def test_one_channel_no_earlier_touches_and_equal_timestamps_go_to_the_last_touch() -> None:
    one_channel = _frames([(i, [("a", None, 50.0 + i), ("a", "c1", 1.0), ("a", "c2", 0.0)], i % 2 == 0)
                           for i in range(40)], hours_apart=5.0)
    lone = _frames([(i, [("ab"[i % 2], None, 0.0)], i % 3 > 0) for i in range(30)], hours_apart=5.0)
    # equal timestamps: the position decides which touch closes the order
    tied = _frames([(1, [("b", "late", 0.0), ("a", "closing", 0.0)], True), (2, [("a", None, 5.0)], False)])
    for frames in (one_channel, lone, tied):
        fit = fit_excess(*frames)
        assert fit.pi == 0.0
        assert _credits(credits_from_fit(fit, *frames)) == pytest.approx(_last_touch(*frames), abs=1e-12)


def test_pi_is_capped_so_the_closing_touch_keeps_a_share() -> None:
    # every order has three x touches in its last hour against a background that is 90 % a: pi would be ~2.7
    background = [(i, [("a", None, 2.0)] * 9 + [("x", None, 2.0)], False) for i in range(40)]
    orders = [(100 + i, [("a", None, 0.9), ("a", None, 0.8), ("x", None, 0.7), ("x", None, 0.6), ("x", None, 0.5),
                         ("a", "close", 0.0)], True) for i in range(60)]
    frames = _frames(background + orders, hours_apart=1.0)
    fit = fit_excess(*frames)
    assert fit.pi == MAX_PI
    credits = credits_from_fit(fit, *frames)
    check_conservation(credits, frames[1])
    assert (credits.loc[credits["campaign"] == "close", "credit"] > 0).sum() == 60


def test_converted_journeys_need_conversion_times_and_settings_are_checked() -> None:
    journeys, outcomes = _frames([(1, [("a", None, 2.0), ("b", None, 0.0)], True)])
    with pytest.raises(ValueError, match="no conversion_ts"):
        fit_excess(journeys, outcomes.assign(conversion_ts=pd.NaT))
    with pytest.raises(ValueError, match="far_days"):
        fit_excess(journeys, outcomes, far_days=0.0)
    fit = fit_excess(journeys, outcomes)
    with pytest.raises(ValueError):
        fit.L[0, 0] = 1.0  # the fit is read-only


# --- conservation on random journeys -------------------------------------------------------------------------

try:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
except ImportError:  # pragma: no cover - hypothesis is a test-only extra
    given = None

if given is not None:
    _hours = st.one_of(st.sampled_from([0.0, 1.5, 30.0, 400.0]), st.floats(-24.0, 1000.0, allow_nan=False))
    _touch = st.tuples(st.sampled_from(["direct", "email", "search", "social"]), st.sampled_from([None, "c1", "c2"]),
                       _hours)
    _journey = st.tuples(st.lists(_touch, max_size=6), st.booleans())

    @settings(max_examples=80, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.lists(_journey, max_size=30), st.booleans(), st.sampled_from([0, 7]), st.sampled_from([0.0, 2.0]))
    def test_credits_conserve_on_random_journeys(paths, background, smooth_days, z) -> None:
        # the converting journeys' touches sorted oldest first, so the last touch is the closing one
        frames = _frames([(10 * i + 3, sorted(touches, key=lambda t: -t[2]), converted or not background)
                          for i, (touches, converted) in enumerate(paths)], hours_apart=7.0)
        credits = excess_exposure(*frames, smooth_days=smooth_days, z=z)
        check_conservation(credits, frames[1])
        assert credits["credit"].sum() == pytest.approx(frames[1]["converted"].sum(), abs=1e-9)
        assert (credits["credit"] > 0).all()
        if not background:
            assert _credits(credits) == pytest.approx(_last_touch(*frames), abs=1e-12)
