"""GetQuorum: a read's answers and their merge, with and without their encodings at hand;
and the requirements a quorum meets while a transfer changes a key's replicas."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from dynakv.core.quorum import GetQuorum, PutQuorum, Requirements, missing, requirements
from dynakv.errors import Unavailable
from dynakv.levels import Need, resolve
from dynakv.versions import Clock, decode, encode, lww, sync_all
from tests.unit.test_versions import LAWS, put, s, three_states


def _answer(quorum: GetQuorum, node: str, encoded: bytes) -> None:
    """What the coordinator does with a replica's answer: reuse an identical one, else decode."""
    state = quorum.known(encoded)
    quorum.add(node, decode(encoded) if state is None else state, encoded)


@LAWS
@given(three_states(), three_states(lww_mode=True), st.booleans())
def test_answers_given_with_their_encoding_merge_as_decoded_ones(
    abc: tuple[Clock, Clock, Clock], lww_abc: tuple[Clock, Clock, Clock], lw: bool
) -> None:
    states = lww_abc if lw else abc
    replicas = ["n1", "n2", "n3"]
    plain = GetQuorum(list(replicas), 2, lww=lw)
    encoded = GetQuorum(list(replicas), 2, lww=lw)
    for node, state in zip(replicas, states, strict=True):
        plain.add(node, decode(encode(state)))
        if node == "n1":  # the coordinator's own copy, read with its encoding
            encoded.add(node, state, encode(state))
        else:
            _answer(encoded, node, encode(state))
    merged = sync_all(states)
    assert encoded.outcome() == plain.outcome() == (lww(merged) if lw else merged)
    assert encoded.stale() == plain.stale()


def test_an_answer_with_the_bytes_of_one_already_in_is_that_state_and_needs_no_merge() -> None:
    state = put(s("v", 1), None, "a@01")
    other = put(s("w", 2), state, "b@02")
    quorum = GetQuorum(["n1", "n2", "n3"], 2)
    quorum.add("n1", state, encode(state))
    assert quorum.known(encode(other)) is None
    reply = encode(state)
    assert quorum.known(reply) is state
    quorum.add("n2", state, reply)
    assert quorum.outcome() is state
    assert quorum.stale() == []
    _answer(quorum, "n3", encode(other))  # a newer copy: decoded and merged, n1 and n2 stale
    assert quorum.merged() == other
    assert quorum.stale() == ["n1", "n2"]


# --- joint quorum: while a transfer changes a key's replicas ----------------------------------

SITES = {"a": "dc1", "b": "dc1", "c": "dc1", "d": "dc1", "e": "dc1", "x": "dc2", "y": "dc2"}


def _joint(before: Need, old: list[str], after: Need, new: list[str]) -> Requirements:
    targets = old + [node for node in new if node not in old]
    return requirements([(before, old), (after, new)], targets, {}, SITES.__getitem__)


def test_a_write_during_a_transfer_needs_its_count_in_the_old_replicas_and_in_the_new():
    # Old primaries [a, b, c], new [a, b, d]: W=2 from {b, d} meets the new list only, and a
    # read at R=2 from {a, c} by a node still counting over the old list would miss it.
    wanted = _joint(Need(2), ["a", "b", "c"], Need(2), ["a", "b", "d"])
    quorum = PutQuorum(["a", "b", "c", "d"], 2, requirements=wanted)
    quorum.ack("b")
    quorum.ack("d")
    assert not quorum.enough()
    quorum.fail("a")
    quorum.fail("c")
    assert quorum.enough() and not quorum.succeeded()
    assert str(quorum.error()) == "needed 2 of a, b, c (before the transfer), got 1"


def test_a_read_during_a_transfer_answers_once_both_lists_have_their_count():
    wanted = _joint(Need(2), ["a", "b", "c"], Need(2), ["a", "b", "d"])
    quorum = GetQuorum(["a", "b", "c", "d"], 2, requirements=wanted)
    quorum.add("a", None)
    quorum.add("c", None)
    assert not quorum.enough()  # the old list's 2, not the new one's
    state = put(s("v", 1), None, "b@01")
    quorum.add("d", state)
    assert quorum.enough() and quorum.outcome() == state
    assert sorted(quorum.stale()) == ["a", "c"]


def test_a_local_quorum_during_a_raise_needs_a_majority_of_the_old_and_the_new_local_lists():
    # dc1 raised from 3 to 5: 3 of 5 from {c, d, e} leaves the old list's majority unmet.
    old, new = ["a", "b", "c", "x"], ["a", "b", "c", "d", "e", "x"]
    local = Need(2, (("dc1", 2),), "dc1")
    wanted = _joint(local, old, Need(3, (("dc1", 3),), "dc1"), new)
    quorum = PutQuorum(list(new), 3, requirements=wanted)
    for node in ("c", "d", "e"):
        quorum.ack(node)
    assert not quorum.enough()
    quorum.fail("a")
    quorum.fail("b")
    assert str(quorum.error()) == "needed 2 in dc1 (before the transfer), got 1"


def test_what_both_lists_need_alike_counts_once_and_says_so_plainly():
    # dc2 raised from 1 to 2; dc1 keeps its list: one requirement for dc1, without a side.
    old, new = ["a", "b", "x"], ["a", "b", "x", "y"]
    before = Need(3, (("dc1", 2), ("dc2", 1)))
    after = Need(4, (("dc1", 2), ("dc2", 2)))
    wanted = _joint(before, old, after, new)
    labels = sorted(requirement.label for requirement in wanted)
    assert labels == ["in dc1", "in dc2 (after the transfer)", "in dc2 (before the transfer)"]


def test_a_fallback_counts_in_every_list_of_the_replica_it_stands_in_for():
    wanted = _joint(Need(2), ["a", "b", "c"], Need(2), ["a", "b", "d"])
    quorum = PutQuorum(["a", "b", "c", "d"], 2, requirements=wanted)
    quorum.replace("b", "f")
    quorum.ack("a")
    quorum.ack("f")
    assert quorum.enough() and quorum.succeeded()


NODES = ["a", "b", "c", "d", "e", "x", "y"]


@given(
    st.lists(st.sampled_from(NODES), min_size=1, max_size=5, unique=True),
    st.lists(st.sampled_from(NODES), min_size=1, max_size=5, unique=True),
    st.sampled_from([1, 2, 3, "quorum", "all", "local_quorum", "each_quorum"]),
    st.sets(st.sampled_from(NODES)),
)
def test_a_joint_quorum_meets_whatever_a_coordinator_counting_over_either_list_needs(
    old: list[str], new: list[str], level: int | str, acked: set[str]
) -> None:
    """The law that makes two coordinators with different views of a transfer agree: a
    request met jointly is met by the count of the old list alone and of the new alone."""
    where = SITES.__getitem__
    needs = []
    for primaries in (old, new):
        try:
            needs.append((resolve("w", level, 5, primaries, where, "dc1"), primaries))
        except Unavailable:
            return  # no dc1 replica in that list: a local level is refused there anyway
    targets = old + [node for node in new if node not in old]
    quorum = PutQuorum(list(targets), 1, requirements=requirements(needs, targets, {}, where))
    for node in targets:
        (quorum.ack if node in acked else quorum.fail)(node)
    if not quorum.succeeded():
        return
    for need, primaries in needs:  # as the coordinator counts over a single list
        alone = requirements([(need, primaries)], primaries, {}, where)
        assert missing(need.total, alone, acked) is None
