"""Client-driven coordination, the pure part: which nodes a client tries for a key, in order."""

from __future__ import annotations

import time

import msgspec
import pytest

from dynakv.claim import claim
from dynakv.client import Routes, _Router
from dynakv.core.membership import (
    MemberRecord,
    Membership,
    RingRecord,
    install_ring,
    mark_removed,
    new_cluster,
    request_join,
    start_transfer,
)
from dynakv.ring import key_digest, partition_of_digest

RING_SIZE = 16
SEEDS = ["10.0.0.9:7000"]
KEYS = [("carts", f"user{i}") for i in range(300)]


def addr(name: str) -> str:
    return f"10.0.0.{name[1:]}:7000"


def record(name: str) -> MemberRecord:
    return MemberRecord(name, addr(name), f"10.0.0.{name[1:]}:8000", "i1", "joining", 0)


def cluster_of(*names: str) -> Membership:
    """A cluster of `names` whose ring has every one of them as an owner (epoch > 1)."""
    state = new_cluster("c", record(names[0]), RING_SIZE)
    for name in names[1:]:
        state = request_join(state, record(name))
    return install_ring(state, claim(names, RING_SIZE, previous=state.ring.ring), names[0])


def partition(bucket: str, key: str, state: Membership) -> int:
    return partition_of_digest(key_digest(bucket, key), state.ring.ring.size)


def test_a_key_goes_first_to_the_owner_of_its_partition_then_along_the_walk():
    state = cluster_of("n1", "n2", "n3", "n4", "n5")
    routes = Routes(state, SEEDS)
    ring = state.ring.ring
    owners_seen = set()
    for bucket, key in KEYS:
        p = partition(bucket, key, state)
        route = routes.for_key(bucket, key)
        assert route[0] == addr(ring.owners[p])
        for n in (1, 2, 3, 5):  # the first n tried are the key's n replicas, whatever n
            assert list(route[:n]) == [addr(x) for x in ring.preference_list(p, n)]
        assert route[-1] == SEEDS[0]  # then any node: the given ones last
        owners_seen.add(route[0])
    assert len(owners_seen) == 5  # keys spread over every owner


def test_the_route_is_the_same_value_on_every_call():
    routes = Routes(cluster_of("n1", "n2", "n3"), SEEDS)
    first = routes.for_key("carts", "alice")
    assert routes.for_key("carts", "alice") is first  # cached per partition, no rebuild


def test_removed_members_are_never_chosen_even_while_they_still_own_partitions():
    state = mark_removed(cluster_of("n1", "n2", "n3", "n4"), "n3")
    assert "n3" in state.ring.ring.owners  # the claimant has not moved its partitions yet
    routes = Routes(state, SEEDS)
    for bucket, key in KEYS:
        route = routes.for_key(bucket, key)
        assert addr("n3") not in route
        walk = state.ring.ring.walk(partition(bucket, key, state))
        assert list(route[:3]) == [addr(x) for x in walk if x != "n3"]
    assert addr("n3") not in routes.everyone


def test_members_owning_nothing_come_after_the_owners_and_before_the_given_nodes():
    state = request_join(cluster_of("n1", "n2", "n3"), record("n4"))  # joining, no partition
    routes = Routes(state, [addr("n1"), *SEEDS])
    route = routes.for_key("carts", "alice")
    assert sorted(route[:3]) == sorted(addr(x) for x in ("n1", "n2", "n3"))
    assert list(route[3:]) == [addr("n4"), SEEDS[0]]  # n1 is not repeated at the end
    assert routes.everyone == (addr("n1"), SEEDS[0], addr("n2"), addr("n3"), addr("n4"))


def test_during_a_transfer_the_installed_ring_routes():
    state = request_join(cluster_of("n1", "n2", "n3"), record("n4"))
    state = start_transfer(state, claim(["n1", "n2", "n3", "n4"], RING_SIZE, state.ring.ring), "n1")
    assert state.ring.next is not None
    routes = Routes(state, SEEDS)
    for bucket, key in KEYS:
        p = partition(bucket, key, state)
        assert routes.for_key(bucket, key)[0] == addr(state.ring.ring.owners[p])


def test_without_a_ring_the_given_nodes_are_used_in_order():
    seeds = ["a:1", "b:2", "a:1"]
    assert Routes(None, seeds).for_key("carts", "alice") == ("a:1", "b:2")
    founded = new_cluster("c", record("n1"), RING_SIZE)
    unjoined = Membership("c", founded.members, RingRecord(0, founded.ring.ring, "n1"))
    assert Routes(unjoined, seeds).for_key("carts", "alice") == ("a:1", "b:2")


def test_a_key_that_is_not_a_string_goes_to_any_node_which_refuses_it():
    routes = Routes(cluster_of("n1", "n2"), SEEDS)
    assert routes.for_key("carts", "\udc80") == routes.everyone
    assert routes.for_key(b"carts", "alice") == routes.everyone  # type: ignore[arg-type]


def test_a_single_node_cluster_routes_everything_to_it():
    routes = Routes(new_cluster("c", record("n1"), RING_SIZE), SEEDS)
    for bucket, key in KEYS[:20]:
        assert routes.for_key(bucket, key) == (addr("n1"), SEEDS[0])


# --- the router: failed nodes last, refresh timing, routing off -----------------------------


def test_nodes_that_failed_lately_are_tried_last_until_their_back_off_ends(monkeypatch):
    now = [1000.0]  # a frozen clock, advanced by hand
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    router = _Router(SEEDS, route=True)
    router.install(cluster_of("n1", "n2", "n3"), now[0])
    route = router.routes.for_key("carts", "alice")
    assert list(router.for_key("carts", "alice")) == list(route)
    router.failed(route[0])
    assert list(router.for_key("carts", "alice")) == [*route[1:], route[0]]
    router.failed(route[1])
    assert list(router.for_key("carts", "alice")) == [route[2], route[3], route[0], route[1]]
    now[0] += 1.01  # the first back-off (1 s) is over: tried in place again
    assert list(router.for_key("carts", "alice")) == list(route)
    router.failed(route[0])  # failed again: twice as long
    now[0] += 1.5
    assert list(router.for_key("carts", "alice"))[-1] == route[0]
    router.reached(route[0])  # a connection succeeded: back in place
    assert list(router.for_key("carts", "alice")) == list(route)


def test_the_view_is_refreshed_periodically_and_soon_after_a_failure_but_not_in_a_storm():
    router = _Router(SEEDS, route=True)
    assert router.refresh_at == 0.0  # first use fetches
    router.install(cluster_of("n1", "n2"), 100.0)
    assert router.refresh_at == 110.0
    router.stale()
    assert router.refresh_at == 101.0  # at most one fetch a second
    router.fetch_failed(105.0)
    assert router.refresh_at == 106.0


def test_routing_off_uses_the_given_nodes_in_order_and_never_fetches():
    router = _Router(["a:1", "b:2", "c:3"], route=False)
    assert router.refresh_at == float("inf")
    router.stale()
    assert router.refresh_at == float("inf")
    assert list(router.for_key("carts", "alice")) == ["a:1", "b:2", "c:3"]
    router.failed("a:1")
    assert list(router.for_key("carts", "alice")) == ["b:2", "c:3", "a:1"]
    assert list(router.for_any()) == ["b:2", "c:3", "a:1"]


@pytest.mark.parametrize("bad", [[], "nohost", ["host:port"]])
def test_bad_node_addresses_are_refused(bad):
    from dynakv.errors import InvalidRequest

    with pytest.raises(InvalidRequest):
        _Router(bad, route=True)


@pytest.mark.parametrize("size", [1, 2, 64, 1024, 65536])
def test_a_key_falls_in_the_partition_the_nodes_compute_for_every_ring_size(size):
    routes = Routes(new_cluster("c", record("n1"), size), SEEDS)
    for bucket, key in KEYS:
        routes.for_key(bucket, key)
    cached = {p for p, route in enumerate(routes._cache) if route is not None}
    assert cached == {partition_of_digest(key_digest(b, k), size) for b, k in KEYS}


def placed_cluster() -> Membership:
    """n1, n3, n5 in dc1 and n2, n4, n6 in dc2, each its own rack; the ring placed."""
    names = [f"n{i}" for i in range(1, 7)]
    records = {
        n: msgspec.structs.replace(record(n), datacenter=f"dc{2 - int(n[1:]) % 2}", rack=n)
        for n in names
    }
    state = new_cluster("c", records["n1"], RING_SIZE)
    for name in names[1:]:
        state = request_join(state, records[name])
    places = {n: (r.datacenter, r.rack) for n, r in records.items()}
    return install_ring(state, claim(names, RING_SIZE, state.ring.ring, places), "n1")


@pytest.mark.parametrize(("seed", "given", "local"), [
    ("n2", None, "dc2"),  # learnt from the first node given
    ("n1", None, "dc1"),
    ("n1", "dc2", "dc2"),  # said outright
])  # fmt: skip
def test_across_data_centers_a_key_goes_first_to_its_nearest_replica(seed, given, local):
    state = placed_cluster()
    ring = state.ring.ring
    site = {m.node_addr: m.datacenter for m in state.members}
    routes = Routes(state, [addr(seed)], datacenter=given)
    assert routes.datacenter == local
    for bucket, key in KEYS[:100]:
        route = routes.for_key(bucket, key)
        walk = [addr(n) for n in ring.walk(partition(bucket, key, state))]
        mine = [a for a in walk if site[a] == local]
        assert list(route[:3]) == mine  # this data center's nodes first, in walk order
        assert route[0] in [addr(n) for n in ring.preference_list(partition(bucket, key, state), 3)]
