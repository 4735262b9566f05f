"""Named records of the gossiped cluster metadata (bucket types, users): merging two
name-sorted tuples of them, keeping for each name the record a winner rule picks. Pure."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, TypeVar


class Named(Protocol):
    @property
    def name(self) -> str: ...


R = TypeVar("R", bound=Named)


def merge_by_name(
    a: tuple[R, ...], b: tuple[R, ...], greater: Callable[[R, R], R]
) -> tuple[R, ...]:
    """Per-name winners of two name-sorted tuples; a or b itself when it covers the other
    (so states that gossip has made equal share their records)."""
    if a == b:
        return a
    winners = {r.name: r for r in a}
    for r in b:
        mine = winners.get(r.name)
        winners[r.name] = r if mine is None else greater(mine, r)
    merged = tuple(winners[name] for name in sorted(winners))
    if merged == a:
        return a
    if merged == b:
        return b
    return merged
