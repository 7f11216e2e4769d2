"""Rows of text assembled from a pool of fixed strings and fixed-decimal numbers, compiled with numba.

The published top factors are ~700 bytes of JSON per customer and score, made of ~90 pieces: words that depend on
the feature, numbers with fixed decimals. Joining them as Python strings cost ~5 us a row, a quarter of the score
step at a million customers (docs/scale.md, "Scoring speed"). Here each row is described by numbers only:

- a **layout**, the same for every row: a sequence of slots repeated ``repeats`` times between an opening, a
  separator and a closing string; a slot ``s >= 0`` is string slot ``s``, ``s < 0`` number slot ``-s - 1``;
- per repeat, string slot and row, the slot's string as an id in the **pool** (its strings encoded once as UTF-8);
- per repeat, number slot and row, the number as :class:`Numbers`: a pool id that replaces it (``null``, an empty piece,
  a number too large for exact integers), else its sign, whole part, fraction and decimals.

:func:`render` writes every row's bytes in parallel (two passes: lengths, then text) and returns one Python string
per row. Numbers are written as their integer parts are: the text is the one Python's ``str`` of those integers
would give, so the caller decides the rounding (:func:`numbers`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit, prange

#: Rows are written separated by this byte and split after decoding: no pool string may contain it.
_ROW_END = "\n"
#: Whole parts at or beyond this are not exact in a float64: such numbers are formatted by Python (rare).
HUGE = 2.0**53


@dataclass(frozen=True)
class Numbers:
    """Number slots, each array (repeats, slots, rows): ``negative`` a leading minus, ``special`` a pool id written
    after it instead of the digits (-1: none), ``whole`` and ``fraction`` the digits before and after the point (the
    fraction zero-padded to ``decimals``; no point when ``decimals`` is 0)."""

    special: np.ndarray
    negative: np.ndarray
    whole: np.ndarray
    fraction: np.ndarray
    decimals: np.ndarray

    @classmethod
    def stack(cls, parts: list[Numbers], axis: int) -> Numbers:
        """Slots or repeats built one at a time as one :class:`Numbers`, stacked along a new ``axis``."""
        return cls(*(np.stack([getattr(part, name) for part in parts], axis=axis)
                     for name in ("special", "negative", "whole", "fraction", "decimals")))


class Pool:
    """Strings by id, added as they are first needed."""

    def __init__(self, strings: tuple[str, ...] = ()):
        self.strings: list[str] = []
        self._ids: dict[str, int] = {}
        for string in ("", "null", *strings):
            self.id(string)

    def id(self, string: str) -> int:
        if _ROW_END in string:
            raise ValueError(f"{string!r}: a piece of a row cannot hold a line break")
        found = self._ids.get(string)
        if found is None:
            found = self._ids[string] = len(self.strings)
            self.strings.append(string)
        return found

    def ids(self, strings) -> np.ndarray:
        return np.array([self.id(s) for s in strings], dtype=np.int32)

    def copy(self) -> Pool:
        copied = Pool()
        copied.strings, copied._ids = list(self.strings), dict(self._ids)
        return copied

    def encoded(self) -> tuple[np.ndarray, np.ndarray]:
        """The pool as one UTF-8 byte array and each string's start in it (one more: the end)."""
        data = [s.encode("utf-8") for s in self.strings]
        starts = np.zeros(len(data) + 1, dtype=np.int64)
        starts[1:] = np.cumsum([len(d) for d in data])
        return np.frombuffer(b"".join(data), dtype=np.uint8).copy(), starts


EMPTY, NULL = 0, 1  # the ids every pool starts with


def numbers(x: np.ndarray, decimals: np.ndarray | int, pool: Pool) -> Numbers:
    """``x`` rounded to ``decimals`` (per value or one for all; ``rint`` of the scaled value, half to even) as number
    slots; ``null`` when not finite; a minus only when the rounded number is not zero. Values whose scaled
    magnitude reaches 2^53 are formatted by Python (``f"{abs(x):.{d}f}"``) and added to the pool."""
    x = np.asarray(x, dtype="float64")
    decimals = np.broadcast_to(np.asarray(decimals, dtype="int64"), x.shape)
    finite = np.isfinite(x)
    scale = 10 ** decimals
    scaled = np.rint(np.abs(np.where(finite, x, 0.0)) * scale)
    huge = scaled >= HUGE
    scaled = np.where(huge, 0.0, scaled).astype("int64")
    whole, fraction = np.divmod(scaled, scale)
    special = np.where(finite, -1, NULL).astype(np.int32)
    if huge.any():  # beyond exact integers: Python's own formatting, values this big are rare
        special[huge] = [pool.id(f"{abs(v):.{d}f}") for v, d in zip(x[huge], decimals[huge])]
    return Numbers(special, finite & (x < 0) & ((scaled > 0) | huge), whole, fraction, np.asarray(decimals, np.int64))


def render(pool: Pool, layout: list[int], strings: np.ndarray, number_slots: Numbers, opening: int = EMPTY,
           separator: int = EMPTY, closing: int = EMPTY) -> list[str]:
    """One string per row: ``opening``, then ``layout`` once per repeat (``strings`` (repeats, string slots, rows)
    of pool ids, ``number_slots`` (repeats, number slots, rows)) with ``separator`` between repeats, then
    ``closing``."""
    rows = strings.shape[2]
    if not rows:
        return []
    data, starts = pool.encoded()
    out = _render(data, starts, np.asarray(layout, dtype=np.int64), np.int64(opening), np.int64(separator),
                  np.int64(closing), np.ascontiguousarray(strings, dtype=np.int32),
                  np.ascontiguousarray(number_slots.special, dtype=np.int32),
                  np.ascontiguousarray(number_slots.negative, dtype=np.bool_),
                  np.ascontiguousarray(number_slots.whole, dtype=np.int64),
                  np.ascontiguousarray(number_slots.fraction, dtype=np.int64),
                  np.ascontiguousarray(number_slots.decimals, dtype=np.int64))
    return str(out.data, "utf-8").split(_ROW_END)


@njit(parallel=True, cache=True)
def _render(data, starts, layout, opening, separator, closing, strings, special, negative, whole, fraction, decimals):
    rows = strings.shape[2]
    ends = np.empty(rows, dtype=np.int64)
    for row in prange(rows):
        ends[row] = _row(data, starts, layout, opening, separator, closing, strings, special, negative, whole,
                         fraction, decimals, row, data, -1)
    for row in range(rows):  # each row's end, with one byte between rows
        ends[row] += ends[row - 1] + 1 if row else 0
    out = np.empty(ends[rows - 1], dtype=np.uint8)
    for row in prange(rows):
        begin = ends[row - 1] + 1 if row else 0
        _row(data, starts, layout, opening, separator, closing, strings, special, negative, whole, fraction,
             decimals, row, out, begin)
        if row + 1 < rows:
            out[ends[row]] = 10  # the row end, "\n"
    return out


@njit(cache=True, inline="always")
def _piece(data, starts, piece, out, at):
    begin, end = starts[piece], starts[piece + 1]
    if at >= 0:
        out[at:at + end - begin] = data[begin:end]
    return end - begin


@njit(cache=True)
def _row(data, starts, layout, opening, separator, closing, strings, special, negative, whole, fraction, decimals,
         row, out, at):
    """Writes one row at ``at`` in ``out`` (``at`` -1: only measures it); returns its length in bytes."""
    write = at >= 0
    position = at if write else 0
    length = _piece(data, starts, opening, out, position if write else -1)
    for repeat in range(strings.shape[0]):
        if repeat:
            length += _piece(data, starts, separator, out, position + length if write else -1)
        for slot in layout:
            if slot >= 0:
                length += _piece(data, starts, strings[repeat, slot, row], out, position + length if write else -1)
                continue
            number = -slot - 1
            if negative[repeat, number, row]:
                if write:
                    out[position + length] = 45  # "-"
                length += 1
            if special[repeat, number, row] >= 0:
                length += _piece(data, starts, special[repeat, number, row], out,
                                 position + length if write else -1)
                continue
            length += _digits(whole[repeat, number, row], 1, out, position + length if write else -1)
            places = decimals[repeat, number, row]
            if places > 0:
                if write:
                    out[position + length] = 46  # "."
                length += 1
                length += _digits(fraction[repeat, number, row], places, out, position + length if write else -1)
    length += _piece(data, starts, closing, out, position + length if write else -1)
    return length


@njit(cache=True, inline="always")
def _digits(value, width, out, at):
    """``value`` (>= 0) in decimal, zero-padded to ``width`` digits, at ``at`` (-1: only measures)."""
    count, rest = 1, value // 10
    while rest:
        count += 1
        rest //= 10
    count = max(count, width)
    if at >= 0:
        rest = value
        for i in range(count):
            out[at + count - 1 - i] = 48 + rest % 10
            rest //= 10
    return count
