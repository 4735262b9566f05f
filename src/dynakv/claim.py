"""Claim: which member owns each partition of a ring (Dynamo strategy 3, after Riak's claim).

Pure (no I/O, clock or randomness): the same members and previous ring give the same owners.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence

from dynakv.ring import Ring, log2_size

__all__ = ["TARGET_N_VAL", "claim"]

TARGET_N_VAL = 3  # claim tries to give every window of this many partitions distinct owners

# Window-violation weights by distance: two neighbours with one owner (distance 1) cost more
# than any number of distance-2 repeats a single swap can create (at most 4).
_WEIGHT = (0, 5, 1)


def claim(members: Iterable[str], size: int = 64, previous: Ring | None = None) -> Ring:
    """A balanced ring owned by exactly `members` (Dynamo strategy 3, after Riak's claim).

    Every member owns floor(Q/n) or ceil(Q/n) partitions. Without `previous`, owners go
    round-robin over the sorted names, so windows of TARGET_N_VAL partitions have distinct
    owners wherever the counts allow. With `previous`, only the partitions that must move do:
    those of departed members and, when members join, the excess of the most-loaded owners,
    placed to keep windows distinct where possible. Deterministic: no randomness.
    """
    log2_size(size)
    given = list(members)
    for name in given:
        if not isinstance(name, str) or not name:
            raise ValueError(f"member names must be non-empty strings, got {name!r}")
    names = sorted(set(given))
    if not names:
        raise ValueError("a ring needs at least one member")
    if len(names) > size:
        raise ValueError(
            f"{len(names)} members cannot share a ring of {size} partitions: every member needs "
            f"at least one partition (the ring size is fixed at cluster creation)"
        )
    if previous is None:
        owners = _initial_owners(names, size)
    elif previous.size != size:
        raise ValueError(
            f"the ring size is fixed at cluster creation: previous ring has {previous.size} "
            f"partitions, asked for {size}"
        )
    else:
        owners = _rebalanced_owners(names, previous.owners)
    return Ring(size, tuple(owners))


def _window(member_count: int) -> int:
    return min(TARGET_N_VAL, member_count)


def _initial_owners(names: list[str], size: int) -> list[str]:
    """Round-robin over the sorted names, then mend the wrap-around where Q % n is small."""
    count = len(names)
    owners = [names[p % count] for p in range(size)]
    _repair(owners, _window(count), dict.fromkeys(names, 0))
    return owners


def _rebalanced_owners(names: list[str], previous: Sequence[str]) -> list[str]:
    """Move the fewest partitions that make `previous` a balanced ring owned by `names`."""
    size = len(previous)
    window = _window(len(names))
    staying = set(names)
    count = dict.fromkeys(names, 0)
    owners: list[str | None] = []
    for owner in previous:
        if owner in staying:
            count[owner] += 1
            owners.append(owner)
        else:
            owners.append(None)  # a departed member's partition: must move

    # The ceil(Q/n) shares go to the currently most-loaded members: that moves the least.
    kept = dict(count)
    base, extra = divmod(size, len(names))
    by_load = sorted(names, key=lambda name: (-count[name], name))
    target = {name: base + (rank < extra) for rank, name in enumerate(by_load)}
    excess = {name: count[name] - target[name] for name in names if count[name] > target[name]}
    gainers = [(count[name], name) for name in names if count[name] < target[name]]
    heapq.heapify(gainers)

    def take(p: int, strict: bool) -> str | None:
        """Give p to the least-loaded gainer (one that keeps p's window distinct, if strict)."""
        skipped = []
        chosen = None
        while gainers:
            item = heapq.heappop(gainers)
            if not strict or not _conflicts(owners, p, item[1], window):
                chosen = item
                break
            skipped.append(item)  # at most 2 * (window - 1) names conflict
        for item in skipped:
            heapq.heappush(gainers, item)
        if chosen is None:
            return None
        load, name = chosen[0] + 1, chosen[1]
        count[name] = load
        if load < target[name]:
            heapq.heappush(gainers, (load, name))
        owners[p] = name
        return name

    for p in range(size):
        if owners[p] is None and take(p, strict=True) is None:
            take(p, strict=False)

    # Take the excess of over-loaded members, each spread evenly over its own partitions (a
    # Bresenham schedule, phase-shifted per member so that they do not shed side by side), and
    # only to a gainer that keeps the window distinct; then anywhere such a gainer fits; then
    # anywhere at all: balance always wins over spread.
    losers = sorted(excess)
    quota = dict(excess)
    phase = {name: rank * kept[name] // len(losers) for rank, name in enumerate(losers)}
    remaining = sum(excess.values())
    for mode in range(3):
        seen = dict.fromkeys(losers, 0)
        shed = dict.fromkeys(losers, 0)
        for p in range(size):
            if not remaining:
                break
            owner = owners[p]
            if owner is None or owner not in excess:
                continue
            seen[owner] += 1
            if not excess[owner]:
                continue
            if mode == 0:
                due = (seen[owner] * quota[owner] + phase[owner]) // kept[owner]
                if shed[owner] >= due:
                    continue
            if take(p, strict=mode < 2) is not None:
                excess[owner] -= 1
                shed[owner] += 1
                remaining -= 1

    result = [owner for owner in owners if owner is not None]
    assert len(result) == size and not remaining, "claim accounting is off"
    _repair(result, window, kept, previous)
    return result


def _conflicts(owners: Sequence[str | None], p: int, name: str, window: int) -> bool:
    """Whether name owns a partition within window - 1 of p (other than p itself)."""
    size = len(owners)
    for d in range(1, window):
        if owners[(p - d) % size] == name or owners[(p + d) % size] == name:
            return True
    return False


def _local_cost(owners: list[str], p: int, window: int) -> int:
    size = len(owners)
    name = owners[p]
    cost = 0
    for d in range(1, window):
        cost += _WEIGHT[d] * ((owners[(p - d) % size] == name) + (owners[(p + d) % size] == name))
    return cost


def _repair(
    owners: list[str],
    window: int,
    kept: dict[str, int],
    previous: Sequence[str] | None = None,
    budget: int = 300_000,
) -> None:
    """Improve window distinctness in place without losing balance or minimal movement.

    Two steps, each taken only when it lowers the window-violation cost: swap the owners of
    two partitions (every count stays), where against `previous` the number of partitions
    that changed hands may not grow (so a swap trades which partition of a loser moves, or
    which gainer gets one); or hand a moved partition from a member at ceil(Q/n) to one at
    floor(Q/n) that started with the same count in `kept` (the other tie-break for who gets
    the larger share). Deterministic first-improvement local search in index order, bounded
    by a budget of `budget` steps examined.
    """
    size = len(owners)
    if window < 2 or size < 2:
        return
    floor, extra = divmod(size, len(kept))
    ceil = floor + (extra > 0)
    counts = dict.fromkeys(sorted(kept), 0)
    for owner in owners:
        counts[owner] += 1
    improved = True
    while improved:
        improved = False
        for i in range(size):
            budget -= 1
            if budget < 0:
                return
            if not _local_cost(owners, i, window):
                continue
            a = owners[i]
            for j in range(size):
                budget -= 1
                if budget < 0:
                    return
                b = owners[j]
                if a == b:
                    continue
                if previous is not None and (a != previous[j]) + (b != previous[i]) > (
                    a != previous[i]
                ) + (b != previous[j]):
                    continue
                before = _local_cost(owners, i, window) + _local_cost(owners, j, window)
                owners[i], owners[j] = b, a
                if _local_cost(owners, i, window) + _local_cost(owners, j, window) < before:
                    improved = True
                    break
                owners[i], owners[j] = a, b
            if improved or ceil == floor or counts[a] != ceil:
                continue
            if previous is not None and a == previous[i]:
                continue  # moving a partition that stayed put would add movement
            before = _local_cost(owners, i, window)
            for b, held in counts.items():
                if held != floor or kept[b] != kept[a] or (previous and b == previous[i]):
                    continue
                budget -= 1
                if budget < 0:
                    return
                owners[i] = b
                if _local_cost(owners, i, window) < before:
                    counts[a] -= 1
                    counts[b] += 1
                    improved = True
                    break
                owners[i] = a
