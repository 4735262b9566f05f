"""Claim: which member owns each partition of a ring (Dynamo strategy 3, after Riak's claim),
arranged, when members sit in several data centers and racks, so that the nodes of each
place hold even shares of the replicas.

Pure (no I/O, clock or randomness): the same members, previous ring and places give the same
owners.
"""

from __future__ import annotations

import heapq
from bisect import bisect_left, insort
from collections.abc import Iterable, Mapping, Sequence
from itertools import chain, islice
from typing import TypeVar

from dynakv.ring import DEFAULT_PLACE, Place, Ring, log2_size, spread

__all__ = ["TARGET_N_VAL", "claim"]

TARGET_N_VAL = 3  # claim tries to give every window of this many partitions distinct owners

# Window-violation weights by distance: two neighbours with one owner (distance 1) cost more
# than any number of distance-2 repeats a single swap can create (at most 4).
_WEIGHT = (0, 5, 1)


def claim(
    members: Iterable[str],
    size: int = 64,
    previous: Ring | None = None,
    places: Mapping[str, Place] | None = None,
) -> Ring:
    """A balanced ring owned by exactly `members` (Dynamo strategy 3, after Riak's claim).

    Every member owns floor(Q/n) or ceil(Q/n) partitions. Without `previous`, owners go
    round-robin over the sorted names, so windows of TARGET_N_VAL partitions have distinct
    owners wherever the counts allow. With `previous`, only the partitions that must move do:
    those of departed members and, when members join, the excess of the most-loaded owners,
    placed to keep windows distinct where possible. Deterministic: no randomness.

    `places` gives members' (data center, rack) (DEFAULT_PLACE for one it leaves out). With
    members in more than one place the ring carries them (Ring.places), and the owners are
    arranged so that the nodes of one place hold about as many replicas as each other, in
    the spreading walk and in the per-data-center lists, while a change moves at most twice
    the fewest partitions possible (_placed_owners). With no places, or all members in one
    place, the owners are exactly those above.
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
    if previous is not None and previous.size != size:
        raise ValueError(
            f"the ring size is fixed at cluster creation: previous ring has {previous.size} "
            f"partitions, asked for {size}"
        )
    where = {name: (places or {}).get(name, DEFAULT_PLACE) for name in names}
    if len(set(where.values())) > 1:
        owners = _placed_owners(names, size, where, previous)
        return Ring(size, tuple(owners)).placed(where)
    if previous is None:
        owners = _initial_owners(names, size)
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


# --- places: data centers and racks ----------------------------------------------------------
#
# The spreading walk (Ring.walk) takes a partition's first replica from its owner, the next
# from the data center first met in ring order that has none yet, then from a new rack, then
# the first left. A node so holds a replica of partition q when the walk from q picks it; say
# the walk picks it at its first position from q on. The "heat" of a position is how many
# partitions' first TARGET_N_VAL replicas it provides, and a node's replicas are the heat of
# its positions. Heat depends on the sequence of places around the ring, hardly on which node
# of a place stands where. Hence two steps: lay out the places evenly (each data center's
# partitions evenly spaced, each rack's too), then deal each place's positions out to its
# nodes so that their heat sums come out even.
# Some unevenness is the walk's and no claim can remove it: with N >= the number of data
# centers every data center holds a replica of every partition, so a lone node in its data
# center (or its data center's lone rack, while racks are left) holds Q replicas.

_Key = TypeVar("_Key")
_PASSES = 4  # rounds of evening out; each recomputes the heat, which swaps nudge
_SEARCH_BUDGET = 2_000_000  # pairs of positions examined at most, bounds a huge ring's time
_TRIES = 256  # pairs of positions one swap of two heat values looks at, at most


def _placed_owners(
    names: list[str], size: int, where: dict[str, Place], previous: Ring | None
) -> list[str]:
    """Owners for members in several places, balanced as the plain claim is.

    Without `previous`: _nested lays the places and nodes out evenly, then _even_out deals
    each place's positions to its nodes by heat, swapping freely. With `previous`: the plain
    minimal-movement rebalance, whose M moves are the fewest that any balanced ring needs;
    _respread re-chooses which partitions move without moving more, and _even_out may spend
    up to M further moves on nodes whose replicas are off their place's mean by more than
    its hottest position gives. So a join or a leave moves at most 2M partitions (about M
    on average: 1.05 M measured over 750 joins and as many leaves).
    """
    if previous is None:
        order = _nested(dict.fromkeys(names, 1), where)
        base, extra = divmod(size, len(names))
        # The ceil(Q/n) shares go to the first members of one interleaved round, so they too
        # spread over the data centers and racks in proportion.
        counts = {name: base + (rank < extra) for rank, name in enumerate(order)}
        owners = _nested(counts, where)
        _even_out(owners, where, None, 0)
        return owners
    owners = _rebalanced_owners(names, previous.owners)
    moves = sum(a != b for a, b in zip(owners, previous.owners, strict=True))
    _respread(owners, where, previous.owners)
    _even_out(owners, where, previous.owners, moves)
    return owners


def _interleave(counts: dict[_Key, int]) -> list[_Key]:
    """Each key counts[key] times, each spread evenly and apart from the others.

    The two shortest sequences merge into one, their items at (i + 1/2) / length of the way
    round, until one is left (as Huffman's code is built): so equal counts alternate (a b a
    b), and two rare keys share the slots between a common one's (a c b c) rather than
    stand side by side (a b c c). Ties go in the order of `counts`."""
    queue = [(count, rank, [key] * count) for rank, (key, count) in enumerate(counts.items())]
    heapq.heapify(queue)
    rank = len(queue)
    while len(queue) > 1:
        _, _, first = heapq.heappop(queue)
        _, _, second = heapq.heappop(queue)
        heapq.heappush(queue, (len(first) + len(second), rank, _merge(first, second)))
        rank += 1
    return queue[0][2] if queue else []


def _merge(first: list[_Key], second: list[_Key]) -> list[_Key]:
    """The items of both, each list's i-th at (i + 1/2) / its length of the way; first wins ties."""
    merged = []
    i = k = 0
    while i < len(first) or k < len(second):
        if k == len(second) or (
            i < len(first) and (2 * i + 1) * len(second) <= (2 * k + 1) * len(first)
        ):
            merged.append(first[i])
            i += 1
        else:
            merged.append(second[k])
            k += 1
    return merged


def _nested(counts: dict[str, int], where: dict[str, Place]) -> list[str]:
    """counts[name] positions for each member: data centers interleaved around the ring,
    each data center's racks interleaved over its positions, each rack's members over its."""
    tree: dict[str, dict[str, dict[str, int]]] = {}
    for name in sorted(counts):
        datacenter, rack = where[name]
        tree.setdefault(datacenter, {}).setdefault(rack, {})[name] = counts[name]
    racks = {
        dc: iter(_interleave({rack: sum(m.values()) for rack, m in sorted(tree[dc].items())}))
        for dc in tree
    }
    members = {(dc, rack): iter(_interleave(m)) for dc in tree for rack, m in tree[dc].items()}
    datacenters = {dc: sum(sum(m.values()) for m in tree[dc].values()) for dc in sorted(tree)}
    owners = []
    for dc in _interleave(datacenters):
        owners.append(next(members[(dc, next(racks[dc]))]))
    return owners


def _heat(owners: Sequence[str], where: dict[str, Place], n: int) -> list[tuple[int, int]]:
    """For each position, how many partitions' replicas it gives: (in the spreading walk's
    first n, in the per-data-center lists with min(n, its nodes) from each data center).

    Both are decided by the prefix of the walk from q that has met every place, n members
    and min(n, its nodes) of each data center, so only that prefix is read: ring.spread picks
    on it as on the whole walk (Ring.preference_list, Ring.preference_lists_by_dc)."""
    size = len(owners)
    everywhere = set(where.values())
    enough = min(n, len(where))
    nodes: dict[str, list[str]] = {}
    for name in where:
        nodes.setdefault(where[name][0], []).append(name)
    wanted = {dc: min(n, len(names)) for dc, names in nodes.items()}
    heat = [[0, 0] for _ in range(size)]
    for q in range(size):
        first: dict[str, int] = {}
        unmet = set(everywhere)
        short = dict(wanted)
        lacking = len(short)
        for i in range(q, q + size):
            name = owners[i % size]
            if name not in first:
                first[name] = i % size
                unmet.discard(where[name])
                dc = where[name][0]
                short[dc] -= 1
                lacking -= short[dc] == 0
                if not unmet and not lacking and len(first) >= enough:
                    break
        walk = list(first)
        for name in spread(walk, where, n):
            heat[first[name]][0] += 1
        for dc, count in wanted.items():
            for name in spread([m for m in walk if where[m][0] == dc], where, count):
                heat[first[name]][1] += 1
    return [(walk, local) for walk, local in heat]


def _added_moves(owners: Sequence[str], previous: Sequence[str] | None, i: int, j: int) -> int:
    """How many more partitions would change hands against previous if i and j swapped."""
    if previous is None:
        return 0
    a, b = owners[i], owners[j]
    return (a != previous[j]) + (b != previous[i]) - (a != previous[i]) - (b != previous[j])


def _window_cost(owners: Sequence[str], name: str, p: int, window: int, skip: int) -> int:
    """Partitions within window - 1 of p, other than skip, that name owns."""
    size = len(owners)
    near = [(p - d) % size for d in range(1, window)] + [(p + d) % size for d in range(1, window)]
    return sum(owners[k] == name for k in near if k != skip)


def _swap_window_cost(owners: Sequence[str], i: int, j: int, window: int) -> int:
    """The change in same-owner pairs closer than window if i and j swapped owners."""
    a, b = owners[i], owners[j]
    before = _window_cost(owners, a, i, window, j) + _window_cost(owners, b, j, window, i)
    after = _window_cost(owners, a, j, window, i) + _window_cost(owners, b, i, window, j)
    return after - before


def _adds_neighbours(owners: Sequence[str], i: int, j: int) -> bool:
    """Whether swapping the owners of i and j puts one of them next to itself more often."""
    return _swap_window_cost(owners, i, j, 2) > 0


def _gap_change(positions: list[int], leaves: int, joins: int, size: int) -> int:
    """Change in the sum of squared cyclic gaps of sorted `positions` if `leaves` is replaced
    by `joins` (not in it). Even spacing minimises the sum."""
    count = len(positions)
    if count == 1:
        return 0  # a lone position's gap is the whole ring wherever it stands
    # Taking x out merges its gaps g1, g2: (g1 + g2)^2 - g1^2 - g2^2 = 2 g1 g2; putting z in
    # splits a gap the other way. With two positions the formulas still hold (gaps sum to Q).
    k = bisect_left(positions, leaves)
    before, after = positions[k - 1], positions[(k + 1) % count]
    change = 2 * ((leaves - before) % size) * ((after - leaves) % size)
    rest = positions[:k] + positions[k + 1 :]
    m = bisect_left(rest, joins)
    before, after = rest[m - 1], rest[m % len(rest)]
    return change - 2 * ((joins - before) % size) * ((after - joins) % size)


def _respread(owners: list[str], where: dict[str, Place], previous: Sequence[str]) -> None:
    """Re-choose which partitions move, never more of them, so that each data center's and
    each rack's partitions are evenly spaced around the ring, in place.

    The swaps are the plain claim's repair's: two moved partitions trade gainers, or a loser
    keeps a partition it was to give and gives another. One is taken as soon as found when
    it adds no same-owner pair within a window and lowers the sum over data centers and racks
    of (their partitions)^2 * (sum of squared gaps between their partitions): scaled so that
    a data center's gap of 2 where 1 is even weighs as a rack's of 20 where 10 is.
    """
    spacer = _Spacer(owners, where)
    size = len(owners)
    improved = True
    while improved and spacer.examined < _SEARCH_BUDGET:
        improved = False
        for i in [p for p in range(size) if owners[p] != previous[p]]:
            for j in range(size):
                if _added_moves(owners, previous, i, j) <= 0 and spacer.change(i, j) < 0:
                    spacer.swap(i, j)
                    improved = True
                    break  # owners[i] changed: go on with the next moved partition


class _Spacer:
    """The state of _respread: owners and the sorted positions of each data center and rack."""

    def __init__(self, owners: list[str], where: dict[str, Place]) -> None:
        self.owners, self.where = owners, where
        self.window = _window(len(where))
        self.examined = 0  # swaps looked at, against _SEARCH_BUDGET
        self.spots: dict[object, list[int]] = {}
        for p, name in enumerate(owners):
            for key in self._keys(name):
                self.spots.setdefault(key, []).append(p)

    def _keys(self, name: str) -> tuple[object, object]:
        place = self.where[name]
        return place[0], place

    def _groups(self, i: int, j: int) -> list[tuple[list[int], list[int]]]:
        """Positions of i's owner's and of j's owner's data centers, then racks, if different."""
        mine, theirs = self._keys(self.owners[i]), self._keys(self.owners[j])
        return [(self.spots[x], self.spots[y]) for x, y in zip(mine, theirs, strict=True) if x != y]

    def change(self, i: int, j: int) -> int:
        """The change in spacing cost if i and j swapped owners; 0 when the swap is refused."""
        self.examined += 1
        groups = self._groups(i, j) if self.owners[i] != self.owners[j] else []
        if not groups or _swap_window_cost(self.owners, i, j, self.window) > 0:
            return 0
        size = len(self.owners)
        return sum(
            len(x) ** 2 * _gap_change(x, i, j, size) + len(y) ** 2 * _gap_change(y, j, i, size)
            for x, y in groups
        )

    def swap(self, i: int, j: int) -> None:
        for x, y in self._groups(i, j):
            x.remove(i)
            insort(x, j)
            y.remove(j)
            insort(y, i)
        self.owners[i], self.owners[j] = self.owners[j], self.owners[i]


def _even_out(
    owners: list[str], where: dict[str, Place], previous: Sequence[str] | None, budget: int
) -> None:
    """Deal each place's positions among its nodes so that their replicas even out, in place.

    A node's replicas are the heat of its positions (_heat), counted twice: in the
    spreading walk and in the per-data-center lists. Swaps stay within one (data center,
    rack), so the places around the ring, and with them the heat, hardly change. A swap
    takes heat d from a node with load L_a to one with L_b, which changes the sum of
    squared loads by -2 d (L_a - L_b - d); it is taken when the sum over both counts, each
    divided by the square of the place's mean, falls, and when it puts no node on two
    neighbouring partitions. Against `previous` it must move no more partitions, or spend
    from `budget` the moves it adds, for a node off the place's mean by more than the
    place's hottest position. The swap that lowers the sum most goes first, those that
    spend moves last.

    Why the hottest position: were heat one count and every swap allowed, where no swap is
    left two nodes of a place with k partitions each would differ by at most the spread
    of heat h_max - h_min over the place's positions (else one holds a hotter position
    than the other's coolest: their swap takes d < their difference, and is taken); with
    k + 1 and k partitions, by at most h_max (all of the first's would be no hotter than
    the second's coolest, m: at most (k + 1) m against at least k m). So every node would
    be within h_max of its place's mean. Two counts, the budget, the neighbour rule and
    heat that a swap nudges keep this from being a theorem; the tests hold it to 2 h_max.
    """
    dealer = _Dealer(owners, where, previous, budget)
    for _ in range(_PASSES):
        if not dealer.deal():
            return


class _Dealer:
    """The state of _even_out: owners, one pass's heat and loads, the budgets left."""

    def __init__(
        self,
        owners: list[str],
        where: dict[str, Place],
        previous: Sequence[str] | None,
        budget: int,
    ) -> None:
        self.owners, self.where, self.previous, self.budget = owners, where, previous, budget
        self.examined = 0  # pairs of positions looked at, against _SEARCH_BUDGET
        self.heat: list[tuple[int, int]] = []
        self.load: dict[str, list[int]] = {}
        self.totals: dict[Place, tuple[int, int]] = {}  # each place's heat, both counts

    def deal(self) -> bool:
        """One pass: heat afresh, then the best swaps until none is left; whether any was."""
        owners = self.owners
        self.heat = _heat(owners, self.where, TARGET_N_VAL)
        self.load = {name: [0, 0] for name in self.where}
        by_place: dict[Place, list[int]] = {}
        for p, name in enumerate(owners):
            for count in (0, 1):
                self.load[name][count] += self.heat[p][count]
            by_place.setdefault(self.where[name], []).append(p)
        self.totals = {
            place: (sum(self.heat[p][0] for p in spots), sum(self.heat[p][1] for p in spots))
            for place, spots in by_place.items()
        }
        best = {place: self.best(place, spots) for place, spots in sorted(by_place.items())}
        swapped = False
        while self.examined < _SEARCH_BUDGET:
            found = min(
                ((swap, place) for place, swap in best.items() if swap is not None), default=None
            )
            if found is None:
                break
            (_, i, j, added), place = found
            if added <= self.budget:  # else spent meanwhile: look again
                a, b = owners[i], owners[j]
                for count in (0, 1):
                    d = self.heat[i][count] - self.heat[j][count]
                    self.load[a][count] -= d
                    self.load[b][count] += d
                owners[i], owners[j] = b, a
                self.budget -= max(added, 0)
                swapped = True
            best[place] = self.best(place, by_place[place])
        return swapped

    def best(
        self, place: Place, spots: list[int]
    ) -> tuple[tuple[bool, float], int, int, int] | None:
        """The best swap among one place's positions: (rank, i, j, moves it adds) or None.

        Whether a swap helps depends only on the two owners and the heat of the two
        positions, so the search ranks pairs of owners and heat values, and looks at
        positions only for the best ones: first for a swap that adds no move, then for one
        the budget allows."""
        owners, heat, load = self.owners, self.heat, self.load
        groups: dict[str, dict[tuple[int, int], list[int]]] = {}
        for p in spots:
            groups.setdefault(owners[p], {}).setdefault(heat[p], []).append(p)
        walk_total, local_total = self.totals[place]
        # The fall in sum((L / mean)^2) over both counts, times the squared totals (an int,
        # so its sign is exact), and as a float comparable across places (a mean is total/k).
        scale = len(groups) ** 2 / (walk_total * local_total) ** 2
        # Moves are spent only on a node further from the place's mean than its hottest
        # position gives, in either count: the bound a search without a budget would reach.
        hottest = [max(max(hot[c] for hot in heats) for heats in groups.values()) for c in (0, 1)]
        totals = (walk_total, local_total)
        far = {
            name: any(
                abs(len(groups) * load[name][c] - totals[c]) > len(groups) * hottest[c]
                for c in (0, 1)
            )
            for name in groups
        }
        options = []
        nodes = sorted(groups)
        for x, a in enumerate(nodes):
            for b in nodes[x + 1 :]:
                for hot, mine in groups[a].items():
                    for cold, theirs in groups[b].items():
                        walk, local = (
                            (hot[c] - cold[c]) * (load[a][c] - load[b][c] - hot[c] + cold[c])
                            for c in (0, 1)
                        )
                        fall = walk * local_total**2 + local * walk_total**2
                        if fall > 0:
                            options.append((-fall, len(options), mine, theirs, far[a] or far[b]))
        options.sort(key=lambda option: option[:2])
        for spend in (False, True) if self.previous is not None else (False,):
            for fall, _, mine, theirs, worth in options:
                if spend and not worth:
                    continue
                self.examined += 1
                pair = self.pair(mine, theirs, spend)
                if pair is not None:
                    return (spend, fall * scale), pair[1], pair[2], pair[0]
        return None

    def pair(self, mine: list[int], theirs: list[int], spend: bool) -> tuple[int, int, int] | None:
        """Positions i of `mine` and j of `theirs` whose swap adds no move, or with `spend`
        as few as the budget allows: (moves added, i, j), or None. One node on two
        neighbouring partitions is refused (further repeats the heat weighs)."""
        owners, previous = self.owners, self.previous
        if previous is None:
            pairs = ((i, j) for i in mine for j in theirs)
        elif not spend:
            # Swapping two partitions that stayed put moves both: a swap adds no move only
            # when one of its partitions has moved already.
            pairs = chain(
                ((i, j) for i in mine if owners[i] != previous[i] for j in theirs),
                ((i, j) for j in theirs if owners[j] != previous[j] for i in mine),
            )
        else:
            pairs = ((i, j) for i in mine for j in theirs)
        found = None
        for i, j in islice(pairs, _TRIES):
            self.examined += 1
            added = _added_moves(owners, previous, i, j)
            if added > (self.budget if spend else 0) or _adds_neighbours(owners, i, j):
                continue
            if not spend or added <= 1:
                return added, i, j
            if found is None:
                found = (added, i, j)
        return found
