"""Answers remembered for the short strings seen lately.

Catalogue descriptions, user agents and referrers recur event after event, and what the
core derives from them (a regular expression's verdict, a device class) costs more than a
dictionary lookup. :class:`ShortStringMemo` keeps those answers, bounded in two ways: only
strings up to ``length`` characters are remembered (free text is worked out each time),
and once ``count`` are held the memory starts again, so a worker's memory stays flat
whatever it reads.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import update_wrapper
from typing import Generic, TypeVar

T = TypeVar("T")


class ShortStringMemo(Generic[T]):
    """``fn`` of one string, answering from memory for short strings seen lately."""

    def __init__(self, fn: Callable[[str], T], *, length: int, count: int):
        self.fn = fn
        self.length = length
        self.count = count
        self.seen: dict[str, T] = {}
        update_wrapper(self, fn)

    def __call__(self, value: str) -> T:
        seen = self.seen
        if value in seen:
            return seen[value]
        got = self.fn(value)
        if len(value) <= self.length:
            if len(seen) >= self.count:
                seen.clear()
            seen[value] = got
        return got


def short_string_memo(
    *, length: int, count: int
) -> Callable[[Callable[[str], T]], ShortStringMemo[T]]:
    """:class:`ShortStringMemo` as a decorator."""

    def wrap(fn: Callable[[str], T]) -> ShortStringMemo[T]:
        return ShortStringMemo(fn, length=length, count=count)

    return wrap
