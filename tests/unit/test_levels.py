"""Consistency levels: what each one needs of a key's replicas, and quorums that count per
data center (`needed 2 in dc2, got 0`)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dynakv import levels
from dynakv.core.quorum import GetQuorum, PutQuorum, Requirements, requirements
from dynakv.errors import InvalidRequest, Unavailable
from dynakv.levels import Need, resolve

SITES = {"a1": "dc1", "a2": "dc1", "a3": "dc1", "b1": "dc2", "b2": "dc2", "c1": "dc3"}
where = SITES.__getitem__


def per_dc(replicas: list[str], by_dc: tuple[tuple[str, int], ...]) -> Requirements:
    """The requirements of a level that names data centers, over `replicas` (no fallbacks)."""
    need = Need(sum(count for _, count in by_dc), by_dc)
    return requirements([(need, replicas)], replicas, {}, where)


@pytest.mark.parametrize(
    ("level", "primaries", "local", "need"),
    [
        (2, ["a1", "b1", "a2"], "dc1", Need(2)),
        ("one", ["a1", "b1", "a2"], "dc1", Need(1)),
        ("quorum", ["a1", "b1", "a2", "b2", "c1"], "dc1", Need(3)),
        ("all", ["a1", "b1", "a2"], "dc2", Need(3)),
        ("local_one", ["a1", "b1", "a2"], "dc2", Need(1, (("dc2", 1),), "dc2")),
        ("local_quorum", ["a1", "b1", "a2", "a3"], "dc1", Need(2, (("dc1", 2),), "dc1")),
        ("local_quorum", ["a1", "b1", "a2"], "dc2", Need(1, (("dc2", 1),), "dc2")),
        ("each_quorum", ["a1", "b1", "a2", "b2"], "dc1", Need(4, (("dc1", 2), ("dc2", 2)))),
        ("each_quorum", ["a1", "b1", "c1"], "dc3", Need(3, (("dc1", 1), ("dc2", 1), ("dc3", 1)))),
        ("each_quorum", ["a1", "a2", "a3"], "dc1", Need(2)),  # one data center: plain quorum
    ],
)
def test_each_level_needs_what_cassandra_would(level, primaries, local, need):
    assert resolve("w", level, len(primaries), primaries, where, local) == need


def test_a_local_level_where_the_key_has_no_replica_says_so():
    with pytest.raises(Unavailable, match="needs a replica in dc3"):
        resolve("r", "local_quorum", 3, ["a1", "b1", "a2"], where, "dc3")


@pytest.mark.parametrize("text", ["0", "-1", "many", "LOCAL", "", "3.5", "²", "2²"])
def test_what_is_no_level_is_refused(text):
    with pytest.raises(InvalidRequest):
        levels.parse("w", text)


def test_levels_parse_from_text():
    assert levels.parse("r", "2") == 2
    assert levels.parse("r", "Local_Quorum") == "local_quorum"
    with pytest.raises(InvalidRequest, match="between 1 and n=3"):
        resolve("r", 4, 3, ["a1", "a2", "a3"], where, "dc1")


def test_a_write_at_local_quorum_is_done_when_its_own_data_center_is():
    replicas = ["a1", "b1", "a2", "b2"]
    quorum = PutQuorum(list(replicas), 2, requirements=per_dc(replicas, (("dc1", 2),)))
    quorum.ack("b1")
    quorum.ack("b2")
    assert not quorum.enough()  # two acks, but not from dc1
    quorum.ack("a1")
    assert not quorum.enough()
    quorum.ack("a2")
    assert quorum.enough() and quorum.succeeded()


def test_a_write_at_each_quorum_fails_naming_the_data_center_that_cannot_answer():
    replicas = ["a1", "b1", "a2", "b2"]
    quorum = PutQuorum(list(replicas), 4, requirements=per_dc(replicas, (("dc1", 2), ("dc2", 2))))
    quorum.ack("a1")
    quorum.ack("a2")
    quorum.fail("b2")
    assert quorum.enough() and not quorum.succeeded()
    assert str(quorum.error()) == "needed 2 in dc2, got 0"


def test_a_fallback_counts_in_the_data_center_of_the_replica_it_stands_in_for():
    quorum = PutQuorum(["a1", "b1"], 2, requirements=per_dc(["a1", "b1"], (("dc1", 1), ("dc2", 1))))
    quorum.replace("b1", "b9")
    quorum.ack("a1")
    quorum.ack("b9")
    assert quorum.succeeded()


def test_a_read_at_each_quorum_answers_once_every_data_center_has():
    replicas = ["a1", "b1", "a2", "b2"]
    quorum = GetQuorum(list(replicas), 4, requirements=per_dc(replicas, (("dc1", 2), ("dc2", 2))))
    for node in ("a1", "a2", "b1"):
        quorum.add(node, None)
        assert not quorum.enough()
    quorum.add("b2", None)
    assert quorum.enough() and quorum.outcome() is None


@given(
    st.lists(st.sampled_from(sorted(SITES)), min_size=1, max_size=6, unique=True),
    st.lists(st.booleans(), min_size=6, max_size=6),
)
def test_each_quorum_succeeds_exactly_when_every_data_center_has_a_majority(replicas, acks):
    need = resolve("w", "each_quorum", len(replicas), replicas, where, "dc1")
    wanted = requirements([(need, replicas)], replicas, {}, where) if need.by_dc else ()
    quorum = PutQuorum(list(replicas), need.total, requirements=wanted)
    for node, ok in zip(replicas, acks, strict=False):
        (quorum.ack if ok else quorum.fail)(node)
    assert quorum.enough()
    sites = {SITES[r] for r in replicas}
    majority = all(
        sum(1 for r, ok in zip(replicas, acks, strict=False) if ok and SITES[r] == site)
        > sum(1 for r in replicas if SITES[r] == site) / 2
        for site in sites
    )
    assert quorum.succeeded() == majority


def test_a_level_of_unicode_digits_is_labelled_other_not_an_error():
    from dynakv.runtime.metrics import consistency_label

    assert consistency_label("²") == "other"
    assert consistency_label("2") == "2"
