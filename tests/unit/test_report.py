"""The nightly report's page from small frames (ml.report's pure part: no database, no MLflow)."""

from __future__ import annotations

import base64
import datetime as dt
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest

from ml.params import RunParams
from ml.report import (HISTOGRAM_BINS, ReportData, budget_shifts, histogram_counts, price_moves, render_report,
                       rows_summary)
from revopt.platform.changes import change_rows, table_measures

TODAY = dt.date(2024, 10, 27)
BEFORE = dt.date(2024, 10, 26)
SECTIONS = ("published", "scores", "prices", "send-times", "budget", "quality", "drift", "models")


def _changes() -> pd.DataFrame:
    rows = []
    for table, columns, partitions in (
        ("customer_scores", ["run_date", "purchase_propensity"],
         [{"run_date": TODAY, "m0": 3, "m1": 0.4}, {"run_date": BEFORE, "m0": 2, "m1": 0.3}]),
        ("price_recommendations", ["run_date", "recommended_price", "current_price"],
         [{"run_date": TODAY, "m0": 3, "m1": 10.5, "m2": 2}]),
        ("attribution", ["run_date"], []),
    ):
        rows += change_rows(table, TODAY, table_measures(table, columns), partitions)
    return pd.DataFrame(rows)


def _histogram(bucket_today: int, bucket_before: int) -> pd.DataFrame:
    return pd.DataFrame({"run_date": [TODAY, TODAY, BEFORE], "bucket": [bucket_today, 1, bucket_before],
                         "n": [2, 1, 2], "lo": 0.0, "hi": 1.0})


def _data(**overrides) -> ReportData:
    fields = dict(
        run_date=TODAY,
        changes=_changes(),
        score_histograms={"purchase_propensity": _histogram(30, 10), "churn_risk": _histogram(5, 6),
                          "clv": pd.DataFrame({"run_date": [TODAY], "bucket": [3], "n": [3], "lo": [0.0], "hi": [250.0]})},
        prices=pd.DataFrame({"product_id": [11, 12, 13], "current_price": [10.0, 20.0, 5.0],
                             "recommended_price": [11.0, 20.0, 4.25], "binding_guardrail": ["max_change", "none", "none"],
                             "confidence": ["high", "low", "medium"]}),
        send_hours=pd.DataFrame({"run_date": [TODAY, TODAY, BEFORE], "best_hour": [9, 18, 9], "n": [5, 2, 6]}),
        budget=pd.DataFrame({"run_date": [TODAY, TODAY, BEFORE, BEFORE], "channel": ["email", "search"] * 2,
                             "current_spend": [100.0, 50.0, 100.0, 50.0], "recommended_spend": [120.0, 40.0, 110.0, 45.0],
                             "binding_constraint": ["max_change", "none", "none", "none"]}),
        quality=pd.DataFrame({"dataset": ["orders", "customers"], "success": [False, True], "row_count": [100, 30],
                              "evaluated": [12, 9], "failed": [1, 0],
                              "failures": ["expect_column_values_to_be_unique(column='customer_id'): 2 unexpected of "
                                           "100 rows (2%), e.g. [48213, 77120]", ""]}),
        drift_decision=pd.DataFrame([{"drift_share": 0.25, "threshold": 0.5, "retrain_requested": False,
                                      "reason": "1 of 4 features drifted", "reference_model": "revopt-propensity",
                                      "reference_version": "3"}]),
        drift=pd.DataFrame({"column_name": ["recency_days", "clv"], "kind": ["feature", "score"],
                            "stattest": ["wasserstein", "psi"], "drift_score": [0.3, 0.01], "threshold": [0.1, 0.1],
                            "drifted": [True, False]}),
        model_versions=pd.DataFrame({"table_name": ["customer_scores"], "model_name": ["revopt-propensity"],
                                     "model_version": ["3"], "rows": [3]}),
        gate_decisions=pd.DataFrame([{"model_name": "revopt-propensity", "run_date": BEFORE, "candidate_version": "3",
                                      "champion_version": "2", "metric": "roc_auc", "candidate_value": 0.71,
                                      "champion_value": 0.69, "promoted": True, "reason": "better, p = 0.01"}]),
    )
    fields.update(overrides)
    return ReportData(**fields)


class _Page(HTMLParser):
    """Section ids, h2 titles, image sources and every external reference of a page."""

    def __init__(self):
        super().__init__()
        self.sections, self.titles, self.images, self.external, self._in_h2 = [], [], [], [], False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "section":
            self.sections.append(attrs.get("id"))
        if tag == "h2":
            self._in_h2 = True
        if tag == "img":
            self.images.append(attrs["src"])
        if tag in ("script", "link") or (tag in ("img", "iframe") and not attrs.get("src", "").startswith("data:")):
            self.external.append(tag)

    def handle_endtag(self, tag):
        self._in_h2 = self._in_h2 and tag != "h2"

    def handle_data(self, data):
        if self._in_h2:
            self.titles.append(data)


def _parse(html: str) -> _Page:
    page = _Page()
    page.feed(html)
    return page


def test_the_page_has_every_section_and_only_inline_images():
    html = render_report(_data(), RunParams())
    page = _parse(html)
    assert tuple(page.sections) == SECTIONS
    assert page.external == []
    # three score histograms, price moves, send hours, budget
    assert len(page.images) == 6
    for source in page.images:
        assert source.startswith("data:image/png;base64,")
        assert base64.b64decode(source.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert "2024-10-27" in page.titles[0] or "2024-10-27" in html.split("<h2>")[0]


def test_sections_say_so_in_one_line_when_a_table_has_nothing_for_the_run_date():
    empty = pd.DataFrame()
    html = render_report(_data(prices=empty, send_hours=empty, budget=empty, quality=empty, drift_decision=empty,
                               drift=empty, score_histograms={}, model_versions=empty, gate_decisions=empty),
                         RunParams())
    page = _parse(html)
    assert tuple(page.sections) == SECTIONS and page.images == []
    for table in ("customer_scores", "price_recommendations", "send_time_recommendations", "budget_allocations",
                  "data_quality", "drift_checks"):
        assert f"scores.{table} has nothing for 2024-10-27" in html
    assert "No model scored" in html


def test_no_customer_id_reaches_the_page():
    html = render_report(_data(), RunParams())
    assert "48213" not in html and "77120" not in html  # GX's example values of a failed expectation
    assert "2 unexpected of 100 rows" in html


def test_the_figures_are_numbers_a_person_can_check():
    html = render_report(_data(), RunParams(price_max_change=0.1))
    assert "2 of 3 products get a new price (up 1, down 1)" in html
    assert "<td>13</td><td>5</td><td>4.25</td><td>-15.0%</td>" in html
    assert html.index("<td>13</td>") < html.index("<td>11</td>")  # the biggest move first, up or down
    assert "1 of 2 datasets passed validation; failed: orders." in html
    assert "25% of the features drifted (threshold 50%)" in html
    assert "7 recommendations; the most common hour is 9:00 (71%)" in html
    assert "<td>revopt-propensity</td><td>3</td><td>customer_scores</td><td>3</td>" in html
    assert "promoted" in html


def test_histogram_counts_share_edges_across_nights():
    edges, counts = histogram_counts(_histogram(30, 10), HISTOGRAM_BINS)
    assert edges[0] == 0.0 and edges[-1] == 1.0 and len(edges) == HISTOGRAM_BINS + 1
    assert list(counts) == [TODAY, BEFORE]  # tonight first
    assert counts[TODAY][29] == 2 and counts[TODAY][0] == 1 and counts[BEFORE][9] == 2
    assert counts[TODAY].sum() == 3


def test_price_moves_and_budget_shifts():
    moves = price_moves(pd.DataFrame({"current_price": [10.0, 0.0], "recommended_price": [9.0, 1.0]}))
    assert moves["change"].tolist() == pytest.approx([-0.1, 0.0])  # a zero current price is no move to divide
    shifts = budget_shifts(_data().budget, TODAY).set_index("channel")
    assert shifts.loc["email", "recommended_before"] == 110.0 and shifts.loc["email", "shift"] == 20.0
    assert np.isclose(shifts.loc["search", "shift"], -10.0)


def test_the_summary_is_rows_on_the_run_date_per_table():
    assert rows_summary(_changes()) == {"customer_scores": 3, "price_recommendations": 3, "attribution": 0}
