"""Unit tests for the chunked generator used by the scale benchmark (benchmarks/scale.py)."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from revopt.sample_data.synth import generate_store_chunks

START = dt.date(2024, 1, 1)


@pytest.fixture(scope="module")
def chunks():
    return list(generate_store_chunks(2_500, 60, START, seed=3, chunk_customers=1_000))


def test_chunks_cover_every_customer_once_with_continuous_ids(chunks) -> None:
    assert [len(chunk.shop["customers"]) for chunk in chunks] == [1_000, 1_000, 500]
    customers = pd.concat([chunk.shop["customers"] for chunk in chunks])
    assert customers["customer_id"].tolist() == list(range(1, 2_501))
    truth = pd.concat([chunk.truth["customers"] for chunk in chunks])
    assert truth["customer_id"].tolist() == list(range(1, 2_501))


def test_ids_do_not_collide_across_chunks(chunks) -> None:
    orders = pd.concat([chunk.shop["orders"] for chunk in chunks])
    lines = pd.concat([chunk.shop["order_lines"] for chunk in chunks])
    events = pd.concat([chunk.events for chunk in chunks])
    assert orders["order_id"].is_unique
    assert set(lines["order_id"]) <= set(orders["order_id"])
    assert orders["customer_id"].between(1, 2_500).all()
    known = events[events["customer_id"] != 0]
    assert known["customer_id"].astype("int64").between(1, 2_500).all()
    web = events[events["session_id"] != 0]
    assert (web.groupby("session_id")["customer_id"].nunique() == 1).all()  # a session never spans two chunks
    assert (events.loc[events["event_type"].astype(str).str.startswith("email_"), "session_id"] == 0).all()


def test_store_wide_tables_come_once_and_chunks_are_deterministic(chunks) -> None:
    assert set(chunks[0].shop) > {"customers", "orders", "order_lines"}
    assert all(set(chunk.shop) == {"customers", "orders", "order_lines"} for chunk in chunks[1:])
    again = list(generate_store_chunks(2_500, 60, START, seed=3, chunk_customers=1_000))
    for first, second in zip(chunks, again):
        for name in first.shop:
            pd.testing.assert_frame_equal(first.shop[name], second.shop[name])
        pd.testing.assert_frame_equal(first.events, second.events)
    # Products and marketing are drawn from the store's seed: the same whatever the chunk size.
    single = next(generate_store_chunks(2_500, 60, START, seed=3, chunk_customers=2_500))
    for name in ("products", "product_prices", "marketing_spend"):
        pd.testing.assert_frame_equal(chunks[0].shop[name], single.shop[name])
