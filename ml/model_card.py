"""The description of a registered model version, written from its training run (a "model card").

MLflow shows a version's description as Markdown on the version's page. revopt writes it once, after
the promotion gate has decided (:func:`ml.registry.train_family`), so a person reading the version
page learns without opening anything:

- **what it is**: the family, the run date and the run it was trained in;
- **data**: the train, validation and test windows (first and last date, rows, how each was cut);
- **test metrics**: the candidate beside the champion (its spec refitted on the same data and scored
  on the same test rows) and the family's naive baseline, on the test window;
- **the gate's decision** in words, with both paired comparisons (difference, interval, p-value,
  test), the margin and the significance level;
- **top features**, where the family measures feature importance.

A pure function of plain values (no MLflow, no Airflow), so it is tested on its own
(tests/unit/test_model_card.py). Numbers are shown with 4 significant digits; a value that is missing
or not a finite number shows as an en dash.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from typing import Protocol

from ml.gate import GateDecision

#: How many features the card lists.
TOP_FEATURES = 8
#: The card's columns of the test-metrics table, in order.
MODELS = ("candidate", "champion", "baseline")
MISSING = "–"


class Window(Protocol):
    """What the card reads of a split (:class:`ml.family.DataWindow` is one)."""

    start: dt.date
    end: dt.date
    description: str

    @property
    def rows(self) -> int: ...


def number(value: float | None) -> str:
    """``value`` with 4 significant digits, or an en dash when it is missing or not finite."""
    if value is None:
        return MISSING
    try:
        value = float(value)
    except (TypeError, ValueError):
        return MISSING
    return f"{value:.4g}" if math.isfinite(value) else MISSING


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def version_description(
    *,
    family: str,
    decision: GateDecision,
    run_date: dt.date,
    run_id: str,
    windows: Mapping[str, Window],
    test_metrics: Mapping[str, Mapping[str, float | None]],
    top_features: Sequence[tuple[str, float]] = (),
    importance: str = "",
) -> str:
    """The Markdown description of ``decision``'s candidate version.

    ``windows``: split name (train, validation, test) -> its window; ``test_metrics``: metric name ->
    {"candidate" | "champion" | "baseline": value} on the test window (a missing model shows as a dash;
    the gate's metric first when present); ``top_features``: (feature, importance), most important
    first, with ``importance`` saying what the number is (e.g. "mean |contribution| on the test window,
    log-odds")."""
    verdict = (f"**Promoted: @champion.** v{decision.candidate_version} replaces "
               f"{'no earlier champion' if decision.champion_version is None else f'v{decision.champion_version}'}"
               if decision.promoted else
               f"**Not promoted: @challenger.** "
               f"{'No champion is' if decision.champion_version is None else f'v{decision.champion_version} stays'}"
               f"{' published' if decision.champion_version is None else ' champion'}")
    lines = [f"## {decision.model_name} v{decision.candidate_version}",
             "",
             f"Family `{family}`, trained for run date {run_date.isoformat()} (MLflow run `{run_id}`).",
             "",
             verdict + ".",
             "",
             "### Data windows",
             ""]
    if windows:
        lines += ["| split | first date | last date | rows | what |", "|---|---|---|---:|---|"]
        for split, window in windows.items():
            lines.append(f"| {split} | {window.start.isoformat()} | {window.end.isoformat()} | {window.rows:,} | "
                         f"{_cell(window.description)} |")
        if "validation" not in windows:
            lines += ["", "No separate validation window: the search was scored on the train window (see its "
                          "description)."]
    else:
        lines.append("No data windows were recorded for this run.")
    lines += ["", "### Test metrics", "",
              f"On the test window ({decision.test_window or 'not described'}"
              f"{'' if decision.n_test is None else f', {decision.n_test:,} rows'}). The champion is "
              f"{'absent' if decision.champion_version is None else f'v{decision.champion_version}'}"
              f"{'' if decision.champion_version is None else ' refitted from its spec on the same data'}; "
              f"the baseline is {decision.baseline or 'the naive baseline'}.", "",
              "| metric | candidate | champion | baseline |", "|---|---:|---:|---:|"]
    ordered = sorted(test_metrics, key=lambda name: (name != decision.metric, name))
    for name in ordered:
        values = test_metrics[name]
        shown = f"**{name}** (gate)" if name == decision.metric else name
        lines.append(f"| {shown} | " + " | ".join(number(values.get(model)) for model in MODELS) + " |")
    direction = "higher" if decision.higher_is_better else "lower"
    lines += ["", f"{decision.metric}: {direction} is better.", "", "### Promotion gate", "",
              _cell(decision.reason[:1].upper() + decision.reason[1:]) if decision.reason else "No reason recorded.",
              ""]
    lines += [f"- quality floor, vs {decision.baseline or 'the naive baseline'}: difference "
              f"{number(decision.baseline_difference)}, one-sided p = {number(decision.baseline_p_value)}",
              "- vs the champion: " + (
                  "no champion to compare with" if decision.champion_version is None else
                  "not compared (its spec cannot be rebuilt)" if decision.difference is None and
                  decision.champion_value is None else
                  f"difference {number(decision.difference)}, 95 % interval [{number(decision.ci_low)}, "
                  f"{number(decision.ci_high)}], one-sided p = {number(decision.p_value)}"
                  f"{'' if not decision.test_method else f' ({decision.test_method})'}"),
              f"- minimum improvement (margin): {number(decision.margin)}; significance level: "
              f"{number(decision.alpha)}"]
    if top_features:
        lines += ["", "### Top features", "",
                  f"By {importance}." if importance else "By the family's feature importance.", "",
                  "| feature | importance |", "|---|---:|"]
        lines += [f"| {_cell(str(feature))} | {number(value)} |" for feature, value in top_features[:TOP_FEATURES]]
    return "\n".join(lines) + "\n"


def model_description(family: str, what: str) -> str:
    """The registered model's description: what the family predicts (``what``, a paragraph) and where
    each version's card is."""
    return (f"{what.strip()}\n\nrevopt family `{family}`. Each version's description is written from its training "
            "run: data windows, test metrics beside the champion's and the naive baseline's, the promotion gate's "
            "decision and the top features. The version aliased `@champion` is the one the nightly run publishes.\n")
