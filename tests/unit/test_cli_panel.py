"""``revopt seed-panel``: its options become generate_panel's arguments, bad values stop before any
store is touched, and what was loaded is printed (the database calls replaced, no stack started)."""

from __future__ import annotations

import datetime as dt
import inspect

import pytest

from revopt import cli
from revopt.platform import stack
from revopt.sample_data import panel as panel_module
from revopt.sample_data.panel import generate_panel


def _parse(*argv: str):
    return cli._parser().parse_args(["seed-panel", *argv])


def test_every_option_reaches_the_generator() -> None:
    args = _parse("--stores", "6", "--brands", "3", "--categories", "2", "--periods", "52", "--period-days", "1",
                  "--seed", "9", "--start", "2024-03-04", "--misspecified")
    assert args.handler is cli._seed_panel
    assert cli.panel_arguments(args) == {
        "n_stores": 6, "n_brands": 3, "n_categories": 2, "periods": 52, "period_days": 1,
        "start": dt.date(2024, 3, 4), "seed": 9, "misspecified": True}


def test_the_defaults_are_the_generators() -> None:
    defaults = {name: parameter.default for name, parameter in inspect.signature(generate_panel).parameters.items()}
    arguments = cli.panel_arguments(_parse())
    assert arguments == {name: defaults[name] for name in arguments}
    assert arguments["misspecified"] is False


def test_a_bad_date_is_a_usage_error() -> None:
    with pytest.raises(SystemExit):
        _parse("--start", "2024-13-01")


def test_a_value_the_generator_refuses_stops_before_the_stack_starts(monkeypatch, capsys) -> None:
    monkeypatch.setattr(stack, "start_stack", lambda settings: pytest.fail("the stack was started"))
    assert cli.main(["seed-panel", "--categories", "4"]) == 1
    printed = capsys.readouterr()
    assert "FAILED" in printed.out
    assert "revopt: error: n_categories must be 1..3, got 4" in printed.err


def test_what_was_loaded_is_printed(monkeypatch, capsys) -> None:
    loaded = []
    monkeypatch.setattr(stack, "start_stack", lambda settings: None)
    monkeypatch.setattr(panel_module, "load_panel", lambda settings, panel: loaded.append(panel) or {
        f"shop.{name}": len(frame) for name, frame in panel.shop.items()})
    status = cli.main(["seed-panel", "--stores", "3", "--brands", "2", "--periods", "20", "--start", "2024-01-01",
                       "--seed", "4"])
    out = capsys.readouterr().out
    assert status == 0 and len(loaded) == 1
    assert len(loaded[0].shop["products"]) == 6 and loaded[0].shop["product_sales"]["period_days"].eq(7).all()
    assert "3 stores x 2 brands x 1 category, 20 periods of 7 days from 2024-01-01 (seed 4)" in out
    assert "shop.product_groups=6" in out and "shop.orders" not in out  # empty tables are not listed
    assert "6 products, " in out and "promoted product-periods: price reduction" in out
    assert "natural run date: 2024-05-20" in out  # the day after the last period: 2024-01-01 + 20 weeks
