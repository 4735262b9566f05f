"""Consistency levels: how many replicas, and in which data centers, a read or write waits for.

A level is a number (that many replicas, anywhere) or a name, after Cassandra's:

- `one`, `quorum`, `all`: 1, a majority, or all of the key's N replicas, anywhere.
- `local_one`, `local_quorum`: 1 or a majority of the replicas in the coordinator's own data
  center. A read asks only those replicas (and repairs only those); a write is still sent to
  every replica, and waits for the local ones only — so a cut link between data centers
  costs such a request nothing.
- `each_quorum`: a majority of the replicas in every data center that holds some.

`resolve` turns a level into a `Need` for one key's replicas. Pure: the caller says which
data center each replica is in and which one is local.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from dynakv.errors import InvalidRequest, Unavailable

Level = int | str
NAMED = ("one", "quorum", "all", "local_one", "local_quorum", "each_quorum")
LOCAL = ("local_one", "local_quorum")


@dataclass(frozen=True, slots=True)
class Need:
    """`total` answers in all, of which at least `count` from `datacenter` for each pair of
    `by_dc` (data centers distinct, so `total` is their sum when there are any). `local`:
    the data center a local level confines a read to, else None."""

    total: int
    by_dc: tuple[tuple[str, int], ...] = ()
    local: str | None = None


def check(name: str, level: Level | None) -> None:
    """Refuse what is neither a positive number nor a known level name (InvalidRequest)."""
    if level is None:
        return
    if isinstance(level, bool) or not isinstance(level, int | str):
        raise InvalidRequest(f"{name} must be a number or one of {', '.join(NAMED)}")
    if isinstance(level, int):
        if level < 1:
            raise InvalidRequest(f"{name} must be at least 1, got {level}")
    elif level not in NAMED:
        raise InvalidRequest(
            f"unknown {name} level {level!r}: use a number or one of {', '.join(NAMED)}"
        )


def parse(name: str, text: str) -> Level:
    """A level from text (a query parameter, a CLI flag): digits make a number."""
    text = text.strip()
    # isdecimal, not isdigit: "²" is a digit int() refuses (a 500 the HTTP fuzzer found).
    level: Level = int(text) if text.isdecimal() else text.lower()
    check(name, level)
    return level


def plain(level: Level, n: int) -> int | None:
    """What a level needs of n replicas anywhere: a number itself, one 1, quorum a majority,
    all n; None for a level that names data centers (it depends on where the replicas are)."""
    if isinstance(level, int):
        return level
    return {"one": 1, "quorum": n // 2 + 1, "all": n}.get(level)


def resolve(
    name: str,
    level: Level,
    n: int,
    primaries: Sequence[str],
    datacenter_of: Callable[[str], str],
    local: str,
) -> Need:
    """What `level` needs of a key of a bucket with `n` replicas, placed on `primaries` (fewer
    than n while the cluster has fewer nodes; the caller caps a plain count at the replicas
    it has).

    A number above n is refused (InvalidRequest); a local level in a data center that holds
    no replica of the key cannot be met (Unavailable, naming it).
    """
    if isinstance(level, int) and not isinstance(level, bool):
        if not 1 <= level <= n:
            raise InvalidRequest(f"{name} must be between 1 and n={n}, got {level}")
        return Need(level)
    check(name, level)
    count = plain(level, n)
    if count is not None:
        return Need(count)
    counts: dict[str, int] = {}
    for node in primaries:
        site = datacenter_of(node)
        counts[site] = counts.get(site, 0) + 1
    if level in LOCAL:
        here = counts.get(local, 0)
        if not here:
            raise Unavailable(
                f"{name}={level} needs a replica in {local}, the coordinator's data center, "
                f"and this key has none there (its replicas are in {', '.join(sorted(counts))})",
                needed=1,
                got=0,
            )
        count = 1 if level == "local_one" else here // 2 + 1
        return Need(count, ((local, count),), local)
    if len(counts) == 1:  # every replica in one data center: a plain quorum of them
        return Need(len(primaries) // 2 + 1)
    by_dc = tuple((site, here // 2 + 1) for site, here in counts.items())
    return Need(sum(count for _, count in by_dc), by_dc)
