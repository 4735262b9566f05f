"""Bucket types alone: the struct, how a change is checked, how r and w resolve, which type a
bucket uses, and what a node's file seeds."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dynakv import bucket_types as bt
from dynakv.bucket_types import DEFAULT, BucketType
from dynakv.config import BucketProps, NodeConfig, with_resp_bucket
from dynakv.errors import InvalidRequest

SEEDED = with_resp_bucket(NodeConfig()).bucket_types()


def test_levels_resolve_against_n_and_numbers_stay_as_given():
    assert [bt.resolve_level(level, 5) for level in ("one", "quorum", "all", 2)] == [1, 3, 5, 2]
    props = bt.resolve(BucketType("carts", 4, "quorum", "all", "siblings", 100, 1))
    assert (props.n, props.r, props.w, props.type) == (4, 3, 4, "carts")


def test_levels_that_name_data_centers_stay_names_for_each_key_to_resolve():
    carts = bt.change(SEEDED, "carts", {"r": "local_quorum", "w": "each_quorum"}, "create")
    props = bt.resolve(carts)
    assert (props.r, props.w) == ("local_quorum", "each_quorum")
    with pytest.raises(InvalidRequest, match="local_quorum"):
        bt.change(SEEDED, "carts", {"w": "local_many"}, "create")


def test_a_bucket_uses_its_own_type_else_the_default_type():
    assert bt.type_of(SEEDED, "default").policy == "lww"  # the RESP bucket's own type
    assert bt.type_of(SEEDED, "carts").name == DEFAULT
    assert bt.type_of((), "carts") is None


def test_a_file_seeds_the_default_type_and_one_per_bucket_with_levels_as_given():
    config = NodeConfig(
        defaults=BucketProps(n=3, r="quorum", w=2),
        buckets={"sessions": BucketProps(n=2, r=1, w="all", policy="lww", max_value_bytes=9)},
        max_value_bytes=1000,
    )
    default, sessions = config.bucket_types()
    assert default == BucketType(DEFAULT, 3, "quorum", 2, "siblings", 1000, 1)
    assert sessions == BucketType("sessions", 2, 1, "all", "lww", 9, 1)


def test_a_file_may_not_name_the_default_type_as_a_bucket():
    with pytest.raises(ValueError, match="use \\[defaults\\]"):
        NodeConfig(buckets={DEFAULT: BucketProps()})


def test_a_new_type_starts_from_what_its_bucket_has_now():
    carts = bt.change(SEEDED, "carts", {"n": 5, "w": "quorum"}, "create")
    assert carts == BucketType("carts", 5, 2, "quorum", "siblings", 1 << 20, 1, (), ())
    again = bt.change((*SEEDED, carts), "carts", {"r": "one"}, "update")
    assert again.version == 2 and (again.n, again.r, again.w) == (5, "one", "quorum")


def test_the_policy_of_an_existing_type_is_fixed_once_set():
    with pytest.raises(InvalidRequest, match="fixed once set"):
        bt.change(SEEDED, DEFAULT, {"policy": "lww"})
    same = bt.change(SEEDED, DEFAULT, {"policy": "siblings", "r": 1})
    assert same.policy == "siblings" and same.version == 2
    new = bt.change(SEEDED, "sessions", {"policy": "lww"})  # a new type may choose
    assert new.policy == "lww"


@pytest.mark.parametrize(
    ("props", "mode", "message"),
    [
        ({"r": "most"}, "put", "r must be a number or one of one, quorum, all"),
        ({"w": 4}, "put", "w must be between 1 and n=3, got 4"),
        ({"n": 1}, "put", "r must be between 1 and n=1, got 2"),  # r=2 of the default
        ({"n": 0}, "put", "n must be an integer >= 1"),
        ({"n": True}, "put", "n must be an integer >= 1"),
        ({"n": 3, "colour": "red"}, "put", "unknown bucket property colour"),
        ({"policy": "merge"}, "put", "policy must be one of siblings, lww"),
        ({"max_value_bytes": 0}, "put", "max_value_bytes must be an integer in 1.."),
        ({}, "create", "exists; use update"),
        ({}, "rename", "unknown bucket type change"),
    ],
)
def test_bad_changes_are_refused_with_a_clear_message(props, mode, message):
    with pytest.raises(InvalidRequest, match=message):
        bt.change(SEEDED, DEFAULT, props, mode)


def test_updating_a_type_that_does_not_exist_is_refused():
    with pytest.raises(InvalidRequest, match="no bucket type 'carts'; create it first"):
        bt.change(SEEDED, "carts", {"n": 2}, "update")
    with pytest.raises(InvalidRequest, match="no NUL"):
        bt.change(SEEDED, "a\0b", {"n": 2})


def test_a_type_that_breaks_the_rules_cannot_be_built_or_decoded():
    with pytest.raises(ValueError, match="r must be between"):
        BucketType("x", 2, 3, 1, "siblings", 10, 1)
    raw = msgspec.msgpack.encode(["x", 2, 1, 1, "siblings", 10, 0])  # version 0
    with pytest.raises(msgspec.ValidationError):
        msgspec.msgpack.decode(raw, type=BucketType)


def test_a_type_gains_a_trailing_field_without_breaking_old_encodings():
    raw = msgspec.msgpack.encode(["x", 2, 1, "quorum", "lww", 10, 3])
    assert msgspec.msgpack.decode(raw, type=BucketType).w == "quorum"


def test_merge_keeps_the_higher_version_of_each_name():
    default, resp = SEEDED
    newer = bt.change(SEEDED, DEFAULT, {"r": 1})
    carts = BucketType("carts", 2, 1, 1, "lww", 10, 1)
    merged = bt.merge_types((newer, resp), (default, carts, resp))
    assert merged == (newer, carts, resp)
    assert bt.merge_types(merged, (default,)) is merged


_holders = st.one_of(
    st.none(), st.lists(st.sampled_from(["n1", "n2", "n3"]), unique=True).map(sorted).map(tuple)
)
_versions_of_carts = st.builds(
    lambda version, policy, seen: BucketType("carts", 2, 1, 1, policy, 10, version, (), seen),
    st.integers(1, 2),
    st.sampled_from(bt.POLICIES),
    _holders,
)


@given(_versions_of_carts, _versions_of_carts, _versions_of_carts)
def test_merging_types_with_their_holders_is_a_semilattice(a, b, c):
    def merge(x: tuple[BucketType, ...], y: tuple[BucketType, ...]) -> tuple[BucketType, ...]:
        return bt.merge_types(x, y)

    assert merge((a,), (b,)) == merge((b,), (a,))
    assert merge(merge((a,), (b,)), (c,)) == merge((a,), merge((b,), (c,)))
    assert merge((a,), (a,)) == (a,)
    (winner,) = merge((a,), (b,))
    if a.version == b.version and a.policy == b.policy:  # same change: holders join
        assert bt.covers(winner, a) and bt.covers(winner, b)


def test_a_type_is_held_by_every_member_once_each_has_said_so():
    carts = BucketType("carts", 2, 1, 1, "lww", 10, 1, (), ())
    members = ["n1", "n2", "n3"]
    one = bt.held(carts, "n1", members)
    assert one.seen == ("n1",) and bt.holders_missing(one, members) == ["n2", "n3"]
    assert bt.held(one, "n1", members) is one
    both = bt.merge_types((one,), (bt.held(carts, "n3", members),))[0]
    assert both.seen == ("n1", "n3")
    assert bt.held(both, "n2", members).seen is None  # everyone: nothing more to keep
    assert bt.held(both, "n1", ["n1", "n3"]).seen is None  # n2 was removed meanwhile


def test_differences_name_each_property_the_file_has_otherwise():
    cluster = bt.change(SEEDED, DEFAULT, {"n": 4, "w": 3})
    assert bt.differences(cluster, SEEDED[0]) == {"n": "3 -> 4", "w": "2 -> 3"}
    assert "none" in bt.differences(None, SEEDED[1])["type"]


# --- replicas per data center ----------------------------------------------------------------


def test_a_type_with_datacenters_round_trips_and_an_old_encoding_has_none():
    carts = BucketType("carts", 5, "local_quorum", 2, "siblings", 10, 1, (("dc1", 3), ("dc2", 2)))
    raw = msgspec.msgpack.encode(carts)
    assert msgspec.msgpack.decode(raw, type=BucketType) == carts
    raw = msgspec.msgpack.encode(["x", 2, 1, 1, "lww", 10, 3])
    old = msgspec.msgpack.decode(raw, type=BucketType)
    assert old.datacenters == ()
    with pytest.raises(ValueError, match="sum"):
        BucketType("x", 4, 1, 1, "lww", 10, 1, (("dc1", 3), ("dc2", 2)))


def test_datacenters_set_n_to_their_sum_and_r_w_to_local_quorum():
    carts = bt.change(SEEDED, "carts", {"datacenters": {"dc2": 2, "dc1": 3}}, "create")
    assert carts.datacenters == (("dc1", 3), ("dc2", 2))
    assert (carts.n, carts.r, carts.w) == (5, "local_quorum", "local_quorum")
    assert bt.resolve(carts).datacenters == carts.datacenters
    raised = bt.change((carts,), "carts", {"datacenters": {"dc1": 3, "dc2": 3}}, "update")
    assert (raised.n, raised.r, raised.version) == (6, "local_quorum", 2)
    given = bt.change(SEEDED, "carts", {"datacenters": {"dc1": 2}, "r": 1, "w": "all"})
    assert (given.n, given.r, given.w) == (2, 1, "all")
    dropped = bt.change((carts,), "carts", {"datacenters": {}, "n": 3, "r": 2, "w": 2})
    assert (dropped.datacenters, dropped.n) == ((), 3)


@pytest.mark.parametrize(
    ("datacenters", "message"),
    [
        ({"dc1": 0}, "count of data center dc1 must be an integer >= 1, got 0"),
        ({"dc1": "3"}, "count of data center dc1 must be an integer >= 1"),
        ({"dc1": True}, "count of data center dc1 must be an integer >= 1"),
        ({"d c": 1}, "invalid data center name 'd c'"),
        ({"": 1}, "invalid data center name ''"),
        ([1, 2], "datacenters must map data center names to counts"),
        ("dc1=3", "datacenters must map data center names to counts"),
    ],
)
def test_bad_datacenters_are_refused(datacenters, message):
    with pytest.raises(InvalidRequest, match=message):
        bt.change(SEEDED, "carts", {"datacenters": datacenters})


def test_n_must_agree_with_the_datacenters_it_sums():
    with pytest.raises(InvalidRequest, match=r"n is the sum of the datacenters' counts \(3\)"):
        bt.change(SEEDED, "carts", {"datacenters": {"dc1": 2, "dc2": 1}, "n": 4})


def test_datacenters_must_name_data_centers_with_enough_members():
    carts = bt.change(SEEDED, "carts", {"datacenters": {"dc1": 2, "dc2": 3}})
    with pytest.raises(InvalidRequest, match="dc2 has 2 nodes, asked for 3"):
        bt.check_datacenters(carts, {"dc1": 2, "dc2": 2})
    with pytest.raises(InvalidRequest, match="unknown data center dc2: members are in dc1, dc9"):
        bt.check_datacenters(carts, {"dc1": 2, "dc9": 4})
    bt.check_datacenters(carts, {"dc1": 2, "dc2": 3})


def test_a_file_may_list_replicas_per_data_center(tmp_path):
    from dynakv import config

    path = tmp_path / "node.toml"
    path.write_text("[buckets.carts]\ndatacenters = {dc1 = 3, dc2 = 2}\n")
    carts = next(t for t in config.load(path).bucket_types() if t.name == "carts")
    assert (carts.n, carts.r, carts.w) == (5, "local_quorum", "local_quorum")
    assert carts.datacenters == (("dc1", 3), ("dc2", 2))


@pytest.mark.parametrize("field", ["name", "datacenter", "rack"])
def test_a_name_with_a_trailing_newline_is_refused(field):
    with pytest.raises(ValueError, match=f"invalid {'node name' if field == 'name' else field}"):
        NodeConfig(**{field: "x1\n"})
