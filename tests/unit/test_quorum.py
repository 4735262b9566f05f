"""GetQuorum: a read's answers and their merge, with and without their encodings at hand."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from dynakv.core.quorum import GetQuorum
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
