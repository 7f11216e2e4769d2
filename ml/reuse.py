"""Work a family's ``shortfall`` and ``training_data`` both do, done once per training run.

:func:`ml.registry.train_family` asks a family whether the store can train it (``shortfall``), then for its
training data (``training_data``), on the same frames. Some families answer the first from the second:
recommendations build their whole training data to count its customers and products, and the budget splits
every order over its channels (the attribution model) for both. At a million customers that was ~23 s and
~35 s done twice (docs/scale.md, "Session 29").

A function decorated with :func:`kept` and called inside :func:`reuse_scope` returns the result of its earlier
call with the same arguments; outside a scope it simply runs. Arguments are the same when they are the same
object (a family, a model) or, for a mapping of frames, the same mapping holding the same frame objects; run
dates, run params, strings and numbers compare by value. Results are dropped when the scope ends, so nothing
outlives the registry call that made them. A kept result is shared, not copied: its callers only read it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from typing import Any, TypeVar

from ml.params import RunParams

F = TypeVar("F", bound=Callable[..., Any])

#: (function, its arguments as :func:`_snapshot` keeps them, its result), in the current scope
_SCOPE: ContextVar[list[tuple[Callable[..., Any], tuple[Any, ...], Any]] | None] = ContextVar(
    "revopt_reuse_scope", default=None)


@contextlib.contextmanager
def reuse_scope() -> Iterator[None]:
    """Within it, :func:`kept` functions reuse their results; they are dropped at its end."""
    token = _SCOPE.set([])
    try:
        yield
    finally:
        _SCOPE.reset(token)


def kept(function: F) -> F:
    """``function``, reusing its result within a :func:`reuse_scope` when called again with the same positional
    arguments; a call with keyword arguments simply runs."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        scope = _SCOPE.get()
        if scope is None or kwargs:
            return function(*args, **kwargs)
        for seen_function, seen, result in scope:
            if seen_function is function and len(seen) == len(args) and all(map(_same, seen, args)):
                return result
        result = function(*args)
        scope.append((function, tuple(map(_snapshot, args)), result))
        return result

    return wrapper  # type: ignore[return-value]


def _snapshot(argument: Any) -> Any:
    """What identifies an argument later: a mapping with the frames it held then (it may be changed in place)."""
    return (argument, tuple(argument.items())) if isinstance(argument, Mapping) else argument


def _same(seen: Any, argument: Any) -> bool:
    if isinstance(argument, Mapping):
        return (isinstance(seen, tuple) and seen[0] is argument and len(seen[1]) == len(argument)
                and all(name in argument and argument[name] is frame for name, frame in seen[1]))
    if isinstance(argument, (dt.date, RunParams, str, int, float)):
        return type(seen) is type(argument) and seen == argument
    return seen is argument
