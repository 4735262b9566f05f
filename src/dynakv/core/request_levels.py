"""What a request's consistency level asks of a key's replicas: the count, the data center a
local level counts in, and the per-data-center or per-placement-list requirements its
quorum must meet (shared by the read and the write coordinators). Pure.
"""

from __future__ import annotations

from dynakv.core.quorum import Requirements
from dynakv.core.quorum import requirements as quorum_requirements
from dynakv.core.view import ClusterView
from dynakv.errors import Unavailable
from dynakv.levels import Need, resolve


def level_need(
    view: ClusterView, name: str, level: int | str, n: int, primaries: list[str], local: str
) -> Need:
    """What a request's level needs of the key's replicas (`local`: the data center a
    forwarding node named, else this node's own)."""
    if type(level) is int and 1 <= level <= n:
        return Need(level)  # the common case: no data centers to look up
    here = local or view.datacenter(view.name)
    return resolve(name, level, n, primaries, view.datacenter, here)


def level_requirements(
    view: ClusterView,
    name: str,
    level: int | str,
    n: int,
    primaries: list[str],
    targets: list[str],
    hints: dict[str, str],
    lists: tuple[list[str], ...],
    local: str,
) -> tuple[Need, Requirements]:
    """What a request's level needs (`need.total`, `need.local`) and the requirements
    its quorum must meet: none in the common case (need.total answers from anywhere),
    one per data center for a level naming them, and during a transfer that changes the
    key's primaries, the level in the old list and in the new one (placement `lists`)."""
    if not lists:
        need = level_need(view, name, level, n, primaries, local)
        if not need.by_dc:
            return need, ()
        return need, quorum_requirements([(need, primaries)], targets, hints, view.datacenter)
    needs: list[tuple[Need, list[str]]] = []
    refused: Unavailable | None = None
    for members in lists:
        try:
            needs.append((level_need(view, name, level, n, members, local), members))
        except Unavailable as exc:
            # A local level in a data center where this list has no replica: no node
            # counting over this list alone serves it there either, so only the other
            # list's count can be missed, and that one is met.
            refused = exc
    if not needs:
        assert refused is not None
        raise refused
    wanted = quorum_requirements(needs, targets, hints, view.datacenter)
    # Every list's need has the same local data center (the coordinator's); the total
    # only sizes an error when no requirement names what is missing.
    return Need(max(need.total for need, _ in needs), (), needs[0][0].local), wanted
