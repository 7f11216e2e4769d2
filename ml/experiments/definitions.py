"""What an experiment is: the definition a data scientist writes (``revopt experiment create``) and
every nightly step reads (assignment, serving, analysis).

An :class:`Experiment` randomises one kind of *unit* (customers or products) over two or more
:class:`Variant`\\ s of what revopt serves (*kind*: a model version, a price, a message send time),
from ``start`` to ``end`` (inclusive; open-ended when ``end`` is None) or until it is stopped.
It is judged on one *primary metric*, with *guardrails* (metrics that must not get worse by more than
a relative ``tolerance``) and the *minimum detectable effect* (relative) the plan is sized for.

Layers: experiments of one ``layer`` (and one unit type) never share a unit; each takes ``traffic``,
a share of the layer (see :mod:`ml.experiments.assignment`). Experiments in different layers overlap
freely and independently.

A definition is checked when built: :meth:`Experiment.validate` runs in ``__post_init__`` (and again
wherever it is called), raising :class:`ValueError` that names the field and its value. Strings,
lists and dicts are accepted where dates, tuples and :class:`Variant` / :class:`Guardrail` are meant
(what a CLI or a database row gives), and converted once here.

Which variant is the *control*: the variant named by ``control``, by default the first one. It is
what the analysis compares every other variant with.

Weights are relative (normalised to sum 1 when used). Editing them while an experiment runs changes
the split of *new* units only: a unit keeps the variant it was first given (see
:func:`ml.experiments.assignment.assign`).

Ending: ``end`` is the last day new units are assigned; ``stop(day)`` marks the experiment
``stopped`` with ``stopped_on = day``, the first day it is no longer active. :meth:`Experiment.is_active`
is a pure function of the definition and the day, so re-running a past date reproduces that date.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

UNITS: tuple[str, ...] = ("customer", "product")
KINDS: tuple[str, ...] = ("model", "price", "message")
#: the metrics the nightly analysis computes; a primary metric or a guardrail is one of them
METRICS: tuple[str, ...] = ("conversion", "revenue_per_unit", "order_value", "open_rate")
HIGHER_IS_BETTER = "higher_is_better"
LOWER_IS_BETTER = "lower_is_better"
DIRECTIONS: tuple[str, ...] = (HIGHER_IS_BETTER, LOWER_IS_BETTER)
RUNNING = "running"
STOPPED = "stopped"
STATUSES: tuple[str, ...] = (RUNNING, STOPPED)
#: the unit type a kind of experiment must randomise; a model experiment may randomise either
UNIT_OF_KIND: Mapping[str, str] = {"price": "product", "message": "customer"}
#: experiment ids and layer names: what can be a PostgreSQL identifier fragment, a URL path and a salt
SLUG = re.compile(r"[a-z0-9_-]{1,63}")
#: the columns of :meth:`Experiment.to_row` (``scores.experiments``, migration 0006), in table order: the
#: fields, but ``start`` and ``end`` (SQL keywords) are stored as ``start_date`` and ``end_date``
ROW_COLUMNS: tuple[str, ...] = (
    "experiment_id", "name", "unit", "kind", "variants", "control", "start_date", "end_date", "primary_metric",
    "guardrails", "mde", "alpha", "power", "layer", "traffic", "salt", "status", "stopped_on", "planned_units")
_FIELD_OF_COLUMN: Mapping[str, str] = {"start_date": "start", "end_date": "end"}


@dataclass(frozen=True)
class Variant:
    """One arm: its ``name``, relative ``weight`` (> 0) and the ``config`` serving reads (JSON-able), e.g.
    ``{"model_version": "7"}`` for a model experiment, ``{"price": "recommended"}`` for a price one."""

    name: str
    weight: float = 1.0
    config: dict[str, Any] = field(default_factory=dict, hash=False)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "weight": self.weight, "config": dict(self.config)}


@dataclass(frozen=True)
class Guardrail:
    """A metric that must not get worse by more than ``tolerance`` (relative: 0.02 = 2 % harm), where
    *worse* follows ``direction``."""

    metric: str
    direction: str = HIGHER_IS_BETTER
    tolerance: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "direction": self.direction, "tolerance": self.tolerance}


@dataclass(frozen=True)
class Experiment:
    """One experiment's definition (see the module docstring). Build it with keywords."""

    experiment_id: str
    name: str
    unit: str
    kind: str
    variants: tuple[Variant, ...]
    start: dt.date
    primary_metric: str
    mde: float
    end: dt.date | None = None
    guardrails: tuple[Guardrail, ...] = ()
    alpha: float = 0.05
    power: float = 0.8
    layer: str = "default"
    traffic: float = 1.0
    #: the hashing salt of the variant pick; empty: the experiment id. A new salt re-randomises.
    salt: str = ""
    status: str = RUNNING
    stopped_on: dt.date | None = None
    #: the control variant's name; empty: the first variant
    control: str = ""
    #: units (all variants) the plan needs (``revopt experiment plan`` / create); the sequential tests are
    #: tuned to it (None: the analysis' default tuning)
    planned_units: int | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: normalise the inputs once, here
        set_(self, "variants", tuple(_as_variant(v) for v in _as_list(self.variants, "variants")))
        set_(self, "guardrails", tuple(_as_guardrail(g) for g in _as_list(self.guardrails, "guardrails")))
        for name in ("start", "end", "stopped_on"):
            set_(self, name, _as_date(getattr(self, name), name))
        if not self.salt:
            set_(self, "salt", self.experiment_id)
        if not self.control and self.variants:
            set_(self, "control", self.variants[0].name)
        self.validate()

    def validate(self) -> None:
        """Raise :class:`ValueError` naming the first invalid field and its value."""
        _check(isinstance(self.experiment_id, str) and SLUG.fullmatch(self.experiment_id),
               "experiment_id", self.experiment_id, "must be 1-63 characters of a-z, 0-9, _ and -")
        _check(isinstance(self.name, str) and self.name.strip(), "name", self.name, "must not be empty")
        _check(self.unit in UNITS, "unit", self.unit, f"must be one of {UNITS}")
        _check(self.kind in KINDS, "kind", self.kind, f"must be one of {KINDS}")
        _check(UNIT_OF_KIND.get(self.kind, self.unit) == self.unit, "unit", self.unit,
               f"a {self.kind} experiment randomises {UNIT_OF_KIND.get(self.kind)}s")
        self._validate_variants()
        _check(isinstance(self.start, dt.date), "start", self.start, "must be a date")
        _check(self.end is None or self.end >= self.start, "end", self.end, f"must be on or after start {self.start}")
        _check(self.primary_metric in METRICS, "primary_metric", self.primary_metric, f"must be one of {METRICS}")
        self._validate_guardrails()
        _check(_is_number(self.mde) and self.mde > 0, "mde", self.mde, "must be a relative effect > 0")
        _check(_is_number(self.alpha) and 0 < self.alpha < 1, "alpha", self.alpha, "must be in (0, 1)")
        _check(_is_number(self.power) and 0 < self.power < 1, "power", self.power, "must be in (0, 1)")
        _check(isinstance(self.layer, str) and SLUG.fullmatch(self.layer), "layer", self.layer,
               "must be 1-63 characters of a-z, 0-9, _ and -")
        _check(_is_number(self.traffic) and 0 < self.traffic <= 1, "traffic", self.traffic, "must be in (0, 1]")
        _check(isinstance(self.salt, str) and 0 < len(self.salt) <= 128 and self.salt.isprintable()
               and ":" not in self.salt, "salt", self.salt,
               "must be 1-128 printable characters without ':' (reserved for the layer and holdout salts)")
        _check(self.planned_units is None or (isinstance(self.planned_units, int) and self.planned_units >= 4),
               "planned_units", self.planned_units, "must be a whole number of units >= 4 or None")
        _check(self.status in STATUSES, "status", self.status, f"must be one of {STATUSES}")
        if self.status == STOPPED:
            _check(isinstance(self.stopped_on, dt.date), "stopped_on", self.stopped_on,
                   "a stopped experiment needs the date it stopped")
        else:
            _check(self.stopped_on is None, "stopped_on", self.stopped_on, "only a stopped experiment has one")

    def _validate_variants(self) -> None:
        _check(len(self.variants) >= 2, "variants", self.variants, "need at least 2")
        names = [v.name for v in self.variants]
        for i, variant in enumerate(self.variants):
            where = f"variants[{i}]"
            _check(isinstance(variant.name, str) and variant.name.strip() and len(variant.name) <= 63,
                   f"{where}.name", variant.name, "must be 1-63 characters")
            _check(variant.name not in names[:i], f"{where}.name", variant.name, "repeats an earlier variant's name")
            _check(_is_number(variant.weight) and math.isfinite(variant.weight) and variant.weight > 0,
                   f"{where}.weight", variant.weight, "must be a finite number > 0")
            _check(isinstance(variant.config, dict) and _is_json(variant.config), f"{where}.config",
                   variant.config, "must be a JSON-able dict")
        _check(self.control in names, "control", self.control, f"must name a variant of {names}")

    def _validate_guardrails(self) -> None:
        metrics = [g.metric for g in self.guardrails]
        for i, guardrail in enumerate(self.guardrails):
            where = f"guardrails[{i}]"
            _check(guardrail.metric in METRICS, f"{where}.metric", guardrail.metric, f"must be one of {METRICS}")
            _check(guardrail.metric not in metrics[:i], f"{where}.metric", guardrail.metric,
                   "repeats an earlier guardrail's metric")
            _check(guardrail.direction in DIRECTIONS, f"{where}.direction", guardrail.direction,
                   f"must be one of {DIRECTIONS}")
            _check(_is_number(guardrail.tolerance) and math.isfinite(guardrail.tolerance)
                   and guardrail.tolerance >= 0, f"{where}.tolerance", guardrail.tolerance,
                   "must be a relative harm >= 0")

    def is_active(self, day: dt.date) -> bool:
        """Whether the experiment assigns (and serves) on ``day``: on or after ``start``, on or before ``end``,
        before ``stopped_on``."""
        return self.start <= day and (self.end is None or day <= self.end) and (
            self.stopped_on is None or day < self.stopped_on)

    def last_active_day(self) -> dt.date | None:
        """The last day :meth:`is_active` holds; None while open-ended (running, no ``end``)."""
        days = [d for d in (self.end, self.stopped_on and self.stopped_on - dt.timedelta(days=1)) if d is not None]
        return min(days) if days else None

    def stop(self, on: dt.date) -> Experiment:
        """This experiment stopped on ``on`` (its first inactive day)."""
        return dataclasses.replace(self, status=STOPPED, stopped_on=on)

    def weights(self) -> dict[str, float]:
        """Each variant's share of the experiment's units (weights normalised to sum 1)."""
        total = sum(v.weight for v in self.variants)
        return {v.name: v.weight / total for v in self.variants}

    def to_row(self) -> dict[str, Any]:
        """A row of ``scores.experiments``: :data:`ROW_COLUMNS` (``start`` / ``end`` as ``start_date`` /
        ``end_date``), variants and guardrails as JSON-able lists of dicts (jsonb), dates as dates."""
        row = {column: getattr(self, _FIELD_OF_COLUMN.get(column, column)) for column in ROW_COLUMNS}
        row["variants"] = [v.to_dict() for v in self.variants]
        row["guardrails"] = [g.to_dict() for g in self.guardrails]
        return row

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Experiment:
        """The experiment of a :meth:`to_row` row (variants and guardrails as lists or as JSON text; extra
        columns such as audit timestamps are ignored)."""
        values = {_FIELD_OF_COLUMN.get(column, column): row[column] for column in ROW_COLUMNS if column in row}
        for name in ("variants", "guardrails"):
            if isinstance(values.get(name), str):
                values[name] = json.loads(values[name])
        for name in ("end", "stopped_on", "planned_units"):
            if name in values and _is_missing(values[name]):
                values[name] = None
        if values.get("planned_units") is not None:
            values["planned_units"] = int(values["planned_units"])
        return cls(**values)


def _check(ok: Any, name: str, value: Any, problem: str) -> None:
    if not ok:
        raise ValueError(f"experiment field {name}={value!r}: {problem}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)


def _is_json(value: Any) -> bool:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return False
    return True


def _is_missing(value: Any) -> bool:
    # a NULL read through pandas arrives as NaN / NaT
    return value is None or (value != value) is True


def _as_list(values: Any, name: str) -> list[Any]:
    if isinstance(values, (list, tuple)):
        return list(values)
    raise ValueError(f"experiment field {name}={values!r}: must be a list")


def _as_variant(value: Any) -> Variant:
    if isinstance(value, Variant):
        return Variant(value.name, value.weight, dict(value.config))
    if isinstance(value, Mapping):
        return Variant(value.get("name"), value.get("weight", 1.0), dict(value.get("config") or {}))
    if isinstance(value, (list, tuple)) and 1 <= len(value) <= 3:
        return _as_variant(dict(zip(("name", "weight", "config"), value)))
    raise ValueError(f"experiment field variants: {value!r} is not a variant (name, weight, config)")


def _as_guardrail(value: Any) -> Guardrail:
    if isinstance(value, Guardrail):
        return value
    if isinstance(value, Mapping):
        return Guardrail(**{k: value[k] for k in ("metric", "direction", "tolerance") if k in value})
    if isinstance(value, (list, tuple)) and 1 <= len(value) <= 3:
        return Guardrail(*value)
    raise ValueError(f"experiment field guardrails: {value!r} is not a guardrail (metric, direction, tolerance)")


def _as_date(value: Any, name: str) -> dt.date | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):  # pandas Timestamps too: a date, not an instant
        return value.date()
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            pass
    raise ValueError(f"experiment field {name}={value!r}: must be a date")
