"""Laws of the ring: hashing to partitions, balanced and minimal-movement claim, walks."""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from itertools import pairwise

import msgspec
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from dynakv.claim import claim
from dynakv.ring import (
    MAX_RING_SIZE,
    Ring,
    key_digest,
    partition_of_digest,
    partition_range,
)

SIZES = [1 << bits for bits in range(17)]


def names(count: int, start: int = 0) -> list[str]:
    return [f"node{i:03d}" for i in range(start, start + count)]


def assert_balanced(ring: Ring, members: list[str]) -> None:
    counts = ring.ownership()
    assert sorted(counts) == sorted(set(members))
    low, high = ring.size // len(counts), -(-ring.size // len(counts))
    assert all(low <= c <= high for c in counts.values()), counts
    assert sum(counts.values()) == ring.size


def minimal_moves(previous: Ring, members: list[str]) -> int:
    """Fewest owner changes that turn previous into a balanced ring of members.

    At most min(current, share) partitions of each member can stay; giving the ceil(Q/n)
    shares to the members that hold the most maximises what stays.
    """
    current = Counter(owner for owner in previous.owners if owner in set(members))
    base, extra = divmod(previous.size, len(members))
    ranked = sorted(members, key=lambda m: -current[m])
    stay = sum(min(current[m], base + (rank < extra)) for rank, m in enumerate(ranked))
    return previous.size - stay


def moved(before: Ring, after: Ring) -> list[int]:
    return [p for p in range(before.size) if before.owners[p] != after.owners[p]]


def window_violations(ring: Ring) -> int:
    """Pairs of partitions closer than min(3, n) with one owner (cyclic)."""
    window = min(3, len(ring.members()))
    q, owners = ring.size, ring.owners
    return sum(owners[p] == owners[(p + d) % q] for p in range(q) for d in range(1, window))


@st.composite
def balanced_rings(draw: st.DrawFn, max_members: int = 64) -> Ring:
    """Any balanced ring, not only the ones claim builds: round-robin counts, shuffled."""
    size = draw(st.sampled_from([8, 16, 32, 64]))
    count = draw(st.integers(1, min(size, max_members)))
    owners = draw(st.permutations([names(count)[p % count] for p in range(size)]))
    return Ring(size, tuple(owners))


member_names = st.text(min_size=1, max_size=6)
# Claims take milliseconds, but a slow CI machine should not turn that into a deadline flake;
# fewer examples keep the file under ten seconds (the laws held over 1,500 examples each).
claims = settings(deadline=None, max_examples=60)


# --- hashing and partitions ---------------------------------------------------------------


@given(bucket=st.text(), key=st.text())
def test_key_digest_is_md5_of_bucket_nul_key(bucket: str, key: str) -> None:
    digest = key_digest(bucket, key)
    assert digest == hashlib.md5(bucket.encode() + b"\0" + key.encode()).digest()
    assert len(digest) == 16


def test_key_digest_separates_bucket_from_key() -> None:
    assert key_digest("ab", "c") != key_digest("a", "bc")


@given(bucket=st.text(min_size=1), key=st.text(min_size=1), size=st.sampled_from(SIZES))
def test_digest_falls_in_the_range_of_its_own_partition(bucket: str, key: str, size: int) -> None:
    digest = key_digest(bucket, key)
    p = partition_of_digest(digest, size)
    assert 0 <= p < size
    assert p == int.from_bytes(digest, "big") * size >> 128  # the top log2(size) bits
    start, end = partition_range(p, size)
    assert start <= digest
    assert end == b"" or digest < end
    assert (end == b"") == (p == size - 1)


@given(size=st.sampled_from(SIZES), data=st.data())
def test_partition_ranges_tile_the_digest_space(size: int, data: st.DataObject) -> None:
    assert partition_range(0, size)[0] == bytes(16)
    assert partition_range(size - 1, size)[1] == b""
    p = data.draw(st.integers(0, size - 1))
    start, end = partition_range(p, size)
    assert len(start) == 16
    assert partition_of_digest(start, size) == p
    if p < size - 1:
        assert end == partition_range(p + 1, size)[0]
        last = (int.from_bytes(end, "big") - 1).to_bytes(16, "big")
        assert partition_of_digest(last, size) == p
    else:
        assert partition_of_digest(b"\xff" * 16, size) == p


def test_partition_ranges_are_contiguous_for_a_whole_ring() -> None:
    for size in (1, 2, 64, 1024):
        ranges = [partition_range(p, size) for p in range(size)]
        for (_, end), (start, _) in pairwise(ranges):
            assert end == start
        assert ranges[0][0] == bytes(16) and ranges[-1][1] == b""


@given(bucket=st.text(min_size=1), key=st.text(min_size=1))
def test_ring_partition_agrees_with_the_digest(bucket: str, key: str) -> None:
    ring = claim(names(5), 64)
    assert ring.partition(bucket, key) == partition_of_digest(key_digest(bucket, key), 64)


# --- claim: balance ------------------------------------------------------------------------


@pytest.mark.parametrize("size", [8, 64, 128, 256])
def test_claim_is_balanced_for_any_member_count(size: int) -> None:
    for count in range(1, min(size, 64) + 1):
        assert_balanced(claim(names(count), size), names(count))


@claims
@given(members=st.lists(member_names, min_size=1, max_size=16), size=st.sampled_from([16, 64]))
def test_claim_is_balanced_for_any_member_names(members: list[str], size: int) -> None:
    ring = claim(members, size)
    assert_balanced(ring, members)
    assert ring.members() == sorted(set(members))


def test_claim_handles_the_extreme_sizes() -> None:
    assert claim(["solo"], 1).owners == ("solo",)
    big = claim(names(100), MAX_RING_SIZE)
    assert_balanced(big, names(100))


# --- claim: spread of the initial ring ------------------------------------------------------


@pytest.mark.parametrize("size", [8, 64, 256])
def test_initial_claim_never_gives_neighbouring_partitions_one_owner(size: int) -> None:
    for count in range(2, min(size, 64) + 1):
        owners = claim(names(count), size).owners
        assert all(owners[p] != owners[(p + 1) % size] for p in range(size)), count


@pytest.mark.parametrize("size", [8, 64, 256])
def test_initial_claim_gives_every_window_distinct_owners_when_counts_allow(size: int) -> None:
    # A window of min(3, n) partitions can be distinct everywhere only if the largest share
    # fits: ceil(Q/n) * window <= Q. (n = 3 with Q a power of two never fits.)
    for count in range(1, min(size, 64) + 1):
        if -(-size // count) * min(3, count) <= size:
            assert window_violations(claim(names(count), size)) == 0, count


def test_round_robin_claim_when_members_divide_the_ring() -> None:
    ring = claim(["c", "a", "b", "d"], 8)
    assert ring.owners == ("a", "b", "c", "d", "a", "b", "c", "d")


# --- claim: minimal movement ---------------------------------------------------------------


@claims
@given(size=st.sampled_from([8, 64, 128]), data=st.data())
def test_join_moves_only_partitions_that_now_belong_to_a_joiner(
    size: int, data: st.DataObject
) -> None:
    old = data.draw(st.integers(1, min(size, 64) - 1), label="old members")
    joining = data.draw(st.integers(1, min(size, 64) - old), label="joiners")
    before = claim(names(old), size)
    members = names(old + joining)
    after = claim(members, size, before)
    assert_balanced(after, members)
    changed = moved(before, after)
    joiners = set(names(joining, start=old))
    assert all(after.owners[p] in joiners for p in changed)
    assert len(changed) == sum(after.ownership()[j] for j in joiners)
    assert len(changed) == minimal_moves(before, members)


@claims
@given(before=balanced_rings(max_members=63), data=st.data())
def test_join_to_any_balanced_ring_moves_only_to_joiners(before: Ring, data: st.DataObject) -> None:
    old = before.members()
    assume(len(old) < before.size)
    joining = data.draw(st.integers(1, min(before.size - len(old), 8)), label="joiners")
    members = old + names(joining, start=500)
    after = claim(members, before.size, before)
    assert_balanced(after, members)
    changed = moved(before, after)
    assert all(after.owners[p] not in old for p in changed)
    assert len(changed) == minimal_moves(before, members)


def test_growing_one_member_at_a_time_moves_only_to_the_newcomer() -> None:
    for size in (64, 256):
        ring = claim(names(1), size)
        for count in range(2, 65):
            after = claim(names(count), size, ring)
            assert_balanced(after, names(count))
            newcomer = names(1, start=count - 1)[0]
            changed = moved(ring, after)
            assert {after.owners[p] for p in changed} == {newcomer}
            assert len(changed) == minimal_moves(ring, names(count))
            ring = after


@claims
@given(before=balanced_rings(), data=st.data())
def test_leave_moves_only_partitions_of_departed_members(before: Ring, data: st.DataObject) -> None:
    old = before.members()
    if len(old) == 1:
        return
    leaving = set(data.draw(st.lists(st.sampled_from(old), min_size=1, max_size=len(old) - 1)))
    members = [m for m in old if m not in leaving]
    after = claim(members, before.size, before)
    assert_balanced(after, members)
    assert moved(before, after) == [p for p in range(before.size) if before.owners[p] in leaving]
    assert len(moved(before, after)) == minimal_moves(before, members)


@claims
@given(before=balanced_rings(max_members=32), data=st.data())
def test_join_and_leave_together_move_only_departed_partitions_or_to_joiners(
    before: Ring, data: st.DataObject
) -> None:
    old = before.members()
    leaving = set(data.draw(st.lists(st.sampled_from(old), max_size=len(old))))
    room = before.size - (len(old) - len(leaving))
    joining = names(data.draw(st.integers(1 if len(leaving) == len(old) else 0, min(room, 8))), 700)
    members = [m for m in old if m not in leaving] + joining
    after = claim(members, before.size, before)
    assert_balanced(after, members)
    for p in moved(before, after):
        assert before.owners[p] in leaving or after.owners[p] in joining
    assert len(moved(before, after)) == minimal_moves(before, members)


@settings(deadline=None, max_examples=50)
@given(
    size=st.sampled_from([16, 64]),
    steps=st.lists(st.tuples(st.integers(0, 4), st.integers(0, 3)), min_size=1, max_size=8),
)
def test_every_step_of_a_membership_history_is_balanced_and_minimal(
    size: int, steps: list[tuple[int, int]]
) -> None:
    ring = claim(names(1), size)
    fresh = iter(names(size * len(steps), start=1))
    for joining, leaving in steps:
        old = ring.members()
        leavers = old[: min(leaving, len(old) - 1)]
        joiners = [next(fresh) for _ in range(min(joining, size - len(old) + len(leavers)))]
        members = [m for m in old if m not in leavers] + joiners
        after = claim(members, size, ring)
        assert_balanced(after, members)
        for p in moved(ring, after):
            assert ring.owners[p] in leavers or after.owners[p] in joiners
        assert len(moved(ring, after)) == minimal_moves(ring, members)
        ring = after


@claims
@given(before=balanced_rings())
def test_claim_with_the_same_members_changes_nothing(before: Ring) -> None:
    assert claim(before.members(), before.size, before) == before


def test_claim_rebalances_an_unbalanced_ring_minimally() -> None:
    before = Ring(8, ("a",) * 6 + ("b", "c"))
    after = claim(["a", "b", "c"], 8, before)
    assert_balanced(after, ["a", "b", "c"])
    assert len(moved(before, after)) == minimal_moves(before, ["a", "b", "c"]) == 3
    assert all(before.owners[p] == "a" for p in moved(before, after))


def test_join_to_a_fresh_ring_keeps_windows_distinct_when_counts_allow() -> None:
    # Best effort, so a regression check on a grid rather than a law for every input; the
    # windows can all be distinct only if ceil(Q/n) * min(3, n) <= Q (never for n = 3).
    for old in range(1, 64):
        for joining in (1, 2, 3, 5, 8):
            count = old + joining
            if count <= 64 and -(-64 // count) * min(3, count) <= 64:
                after = claim(names(old + joining), 64, claim(names(old), 64))
                assert window_violations(after) == 0, (old, joining)


# --- walks and preference lists ------------------------------------------------------------


@claims
@given(before=balanced_rings(), data=st.data())
def test_walk_covers_every_member_exactly_once_in_ring_order(
    before: Ring, data: st.DataObject
) -> None:
    p = data.draw(st.integers(0, before.size - 1))
    walk = before.walk(p)
    assert sorted(walk) == before.members()
    assert walk[0] == before.owners[p]
    firsts: list[str] = []
    for i in range(before.size):
        owner = before.owners[(p + i) % before.size]
        if owner not in firsts:
            firsts.append(owner)
    assert walk == firsts


@given(members=st.lists(member_names, min_size=1, max_size=20, unique=True), data=st.data())
def test_preference_list_has_n_distinct_nodes(members: list[str], data: st.DataObject) -> None:
    ring = claim(members, 64)
    p = data.draw(st.integers(0, 63))
    n = min(3, len(members))
    preference = ring.preference_list(p, n)
    assert len(preference) == len(set(preference)) == n
    assert preference + ring.fallbacks(p, n) == ring.walk(p)
    assert ring.preference_list(p, len(members) + 5) == ring.walk(p)
    assert ring.fallbacks(p, len(members) + 5) == []


def test_walk_results_are_fresh_lists() -> None:
    ring = claim(names(4), 8)
    ring.walk(0).append("intruder")
    ring.preference_list(0, 2).clear()
    assert ring.walk(0) == ["node000", "node001", "node002", "node003"]


def test_preference_list_costs_a_few_microseconds() -> None:
    ring = claim(names(8), 64)
    calls = 20_000
    start = time.perf_counter()
    for i in range(calls):
        ring.preference_list(i & 63, 3)
    per_call = (time.perf_counter() - start) / calls
    assert per_call < 20e-6  # about 0.5 us measured; loose for slow CI machines


@claims
@given(before=balanced_rings())
def test_ownership_owned_and_members_agree(before: Ring) -> None:
    ownership = before.ownership()
    assert list(ownership) == before.members()
    for name, count in ownership.items():
        owned = before.owned(name)
        assert len(owned) == count
        assert all(before.owners[p] == name for p in owned)
    assert before.owned("nobody") == []


# --- determinism and wire format ------------------------------------------------------------


@claims
@given(members=st.lists(member_names, min_size=1, max_size=12), data=st.data())
def test_claim_is_deterministic_and_ignores_member_order(
    members: list[str], data: st.DataObject
) -> None:
    shuffled = data.draw(st.permutations(members + members[:2]))
    first = claim(members, 64)
    assert claim(shuffled, 64) == first
    joiners = ["zz-new", "aa-new"]
    assert claim(members + joiners, 64, first) == claim(joiners + shuffled, 64, first)


@claims
@given(before=balanced_rings())
def test_ring_survives_a_msgpack_round_trip(before: Ring) -> None:
    decoded = msgspec.msgpack.decode(msgspec.msgpack.encode(before), type=Ring)
    assert decoded == before
    assert decoded.walk(0) == before.walk(0)
    assert msgspec.json.decode(msgspec.json.encode(before), type=Ring) == before


def test_ring_is_encoded_as_an_array() -> None:
    assert msgspec.json.encode(Ring(2, ("a", "b"))) == b'[2,["a","b"],[]]'


@pytest.mark.parametrize("wire", [[3, ["a", "b", "c"]], [4, ["a", "b"]], [2, ["a", ""]]])
def test_decoding_a_malformed_ring_is_a_validation_error(wire: list[object]) -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.msgpack.decode(msgspec.msgpack.encode(wire), type=Ring)


# --- errors -------------------------------------------------------------------------------


def test_claim_refuses_more_members_than_partitions() -> None:
    with pytest.raises(ValueError, match="9 members cannot share a ring of 8 partitions"):
        claim(names(9), 8)


def test_claim_refuses_no_members() -> None:
    with pytest.raises(ValueError, match="at least one member"):
        claim([], 64)


@pytest.mark.parametrize("size", [0, 3, 6, 48, 100, -64, 2 * MAX_RING_SIZE])
def test_non_power_of_two_sizes_are_refused(size: int) -> None:
    with pytest.raises(ValueError, match="power of two"):
        claim(["a"], size)
    with pytest.raises(ValueError, match="power of two"):
        partition_of_digest(bytes(16), size)
    with pytest.raises(ValueError, match="power of two"):
        partition_range(0, size)
    with pytest.raises(ValueError, match="power of two"):
        Ring(size, ("a",) * max(size, 0))


def test_claim_refuses_to_change_the_ring_size() -> None:
    with pytest.raises(ValueError, match="fixed at cluster creation"):
        claim(names(3), 128, claim(names(3), 64))


@pytest.mark.parametrize("bad", ["", None, 7])
def test_claim_refuses_bad_member_names(bad: object) -> None:
    with pytest.raises(ValueError, match="non-empty strings"):
        claim(["a", bad], 8)  # type: ignore[list-item]


def test_out_of_range_partitions_and_digests_are_refused() -> None:
    ring = claim(names(3), 8)
    for p in (-1, 8):
        with pytest.raises(ValueError):
            ring.walk(p)
        with pytest.raises(ValueError):
            partition_range(p, 8)
    with pytest.raises(ValueError):
        ring.preference_list(0, -1)
    with pytest.raises(ValueError, match="16 bytes"):
        partition_of_digest(b"short", 8)
    with pytest.raises(ValueError):
        Ring(4, ("a", "b"))


# --- places: data centers and racks in the walk -------------------------------------------

_places = st.lists(
    st.tuples(st.sampled_from(["dc1", "dc2", "dc3"]), st.sampled_from(["r1", "r2", "r3"])),
    min_size=1,
    max_size=12,
)


def _placed_ring(places: list[tuple[str, str]], size: int = 64) -> tuple[Ring, dict]:
    names = [f"n{i:02d}" for i in range(len(places))]
    where = dict(zip(names, places, strict=True))
    return claim(names, size).placed(where), where


@given(_places, st.integers(0, 63))
def test_a_placed_walk_reorders_the_plain_walk_and_spreads_data_centers_then_racks(
    places: list[tuple[str, str]], partition: int
) -> None:
    ring, where = _placed_ring(places)
    plain = Ring(ring.size, ring.owners).walk(partition)
    walk = ring.walk(partition)
    assert sorted(walk) == sorted(plain)
    datacenters = len({dc for dc, _ in places})
    assert len({where[n][0] for n in walk[:datacenters]}) == datacenters
    # Within the first len(distinct places) nodes, every place is new until each is used.
    distinct = len(set(places))
    first = [where[n] for n in walk[:distinct]]
    assert len(set(first)) == distinct
    assert ring.preference_list(partition, 3) == walk[:3]
    assert ring.fallbacks(partition, 3) == walk[3:]


@given(st.integers(1, 12), st.integers(0, 63))
def test_one_place_for_everyone_is_the_plain_walk(count: int, partition: int) -> None:
    ring, _ = _placed_ring([("dc1", "rack1")] * count)
    assert ring.places == ()
    assert ring == Ring(ring.size, ring.owners)
    assert ring.walk(partition) == Ring(ring.size, ring.owners).walk(partition)


def test_two_racks_of_three_nodes_keep_n3_replicas_on_both_racks() -> None:
    ring, where = _placed_ring([("dc1", "a")] * 3 + [("dc1", "b")] * 3, size=16)
    for partition in range(16):
        racks = {where[n][1] for n in ring.preference_list(partition, 3)}
        assert racks == {"a", "b"}


def test_a_placed_ring_round_trips_and_a_wrong_count_of_places_is_refused() -> None:
    ring, _ = _placed_ring([("dc1", "a"), ("dc2", "b"), ("dc1", "c")], size=8)
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(ring), type=Ring) == ring
    wire = msgspec.to_builtins(ring)
    wire[2] = wire[2][:2]
    with pytest.raises(msgspec.ValidationError):
        msgspec.msgpack.decode(msgspec.msgpack.encode(wire), type=Ring)


# --- per-data-center preference lists -----------------------------------------------------


@given(_places, st.integers(0, 63), st.data())
def test_per_dc_lists_take_each_data_centers_count_in_ring_order_on_new_racks_first(
    places: list[tuple[str, str]], partition: int, data: st.DataObject
) -> None:
    ring, where = _placed_ring(places)
    if not ring.places:
        return  # one place: the next test
    counts = {dc: data.draw(st.integers(0, 5), label=dc) for dc in ("dc1", "dc2", "dc3")}
    lists = ring.preference_lists_by_dc(partition, counts)
    assert list(lists) == list(counts)
    plain = Ring(ring.size, ring.owners).walk(partition)
    for dc, count in counts.items():
        nodes = [name for name in plain if where[name][0] == dc]  # ring order
        racks = {where[name] for name in nodes}
        chosen = lists[dc]
        assert len(chosen) == min(count, len(nodes)) == len(set(chosen))  # all when too few
        assert set(chosen) <= set(nodes)
        # Distinct racks while the data center has racks to spare, then distinct nodes;
        # each next one the first in ring order of a new rack, else the first left.
        assert len({where[name] for name in chosen}) == min(len(chosen), len(racks))
        used: set[tuple[str, str]] = set()
        for k, name in enumerate(chosen):
            left = [n for n in nodes if n not in chosen[:k]]
            new = [n for n in left if where[n] not in used]
            assert name == (new or left)[0]
            used.add(where[name])


def test_per_dc_lists_prefer_a_new_rack_to_the_next_node() -> None:
    # dc1: a and b in rack x, c in rack y; dc2: d. Owners a b d c, twice.
    where = {"a": ("dc1", "x"), "b": ("dc1", "x"), "c": ("dc1", "y"), "d": ("dc2", "z")}
    ring = Ring(8, ("a", "b", "d", "c") * 2).placed(where)
    assert ring.preference_lists_by_dc(0, {"dc1": 2, "dc2": 1}) == {"dc1": ["a", "c"], "dc2": ["d"]}
    assert ring.preference_lists_by_dc(0, {"dc1": 3}) == {"dc1": ["a", "c", "b"]}
    assert ring.preference_lists_by_dc(1, {"dc1": 9, "dc2": 0, "dc9": 2}) == {
        "dc1": ["b", "c", "a"],
        "dc2": [],
        "dc9": [],
    }


def test_per_dc_lists_without_places_name_one_data_center() -> None:
    ring = claim(names(4), 16)
    assert ring.places == ()
    assert ring.preference_lists_by_dc(3, {"any": 3}) == {"any": ring.walk(3)[:3]}
    with pytest.raises(ValueError, match="one data center"):
        ring.preference_lists_by_dc(3, {"east": 3, "west": 3})
    with pytest.raises(ValueError, match="int >= 0"):
        ring.preference_lists_by_dc(3, {"any": -1})
    with pytest.raises(ValueError):
        ring.preference_lists_by_dc(16, {"any": 1})


@given(_places, st.integers(0, 63), st.data())
def test_per_dc_lists_at_smaller_counts_are_prefixes_of_those_at_larger_counts(
    places: list[tuple[str, str]], partition: int, data: st.DataObject
) -> None:
    # The storage set of a ring (Ring.replicas at the largest count of each data center)
    # holds every bucket's replicas only because of this law.
    ring, _ = _placed_ring(places)
    if not ring.places:
        return
    larger = {dc: data.draw(st.integers(0, 6), label=dc) for dc in ("dc1", "dc2", "dc3")}
    smaller = {dc: data.draw(st.integers(0, count), label=f"{dc}<") for dc, count in larger.items()}
    big = ring.preference_lists_by_dc(partition, larger)
    small = ring.preference_lists_by_dc(partition, smaller)
    for dc in larger:
        assert small[dc] == big[dc][: len(small[dc])]
    within = set(ring.replicas(partition, 0, tuple(larger.items())))
    assert set(ring.replicas(partition, 0, tuple(smaller.items()))) <= within


def test_replicas_are_the_walk_prefix_and_each_data_centers_list_in_walk_order() -> None:
    where = {"a": ("dc1", "x"), "b": ("dc1", "x"), "c": ("dc1", "y"), "d": ("dc2", "z")}
    ring = Ring(8, ("a", "b", "d", "c") * 2).placed(where)
    assert ring.walk(0) == ["a", "d", "c", "b"]
    assert ring.replicas(0, 0, (("dc1", 2), ("dc2", 1))) == ["a", "d", "c"]
    assert ring.replicas(0, 1, (("dc1", 3),)) == ["a", "c", "b"]
    assert ring.replicas(0, 2, ()) == ring.preference_list(0, 2) == ["a", "d"]
    plain = claim(names(4), 16)
    assert plain.replicas(3, 1, (("dc1", 2),)) == plain.walk(3)[:2]
