"""The peers' handshake under a cluster secret (peer_auth.py), fed frames by hand."""

from __future__ import annotations

import pytest

from dynakv import peer_auth
from dynakv.messages import Hello, HelloProof, decode, encode
from dynakv.peer_auth import Handshake, NonceMemory, parse_secrets

OLD = b"old-secret-0123456789abcdef"
NEW = b"new-secret-0123456789abcdef"


def _pair(
    dialler_secrets: tuple[bytes, ...],
    responder_secrets: tuple[bytes, ...],
    memory: NonceMemory | None = None,
) -> tuple[Handshake, Handshake]:
    dialler = Handshake(dialler_secrets, "a", "c1", b"\x01" * 32, NonceMemory())
    responder = Handshake(responder_secrets, "b", "c1", b"\x02" * 32, memory or NonceMemory())
    return dialler, responder


def _wire(message: Hello | HelloProof) -> Hello | HelloProof:
    """Through the codec, as on a real connection."""
    decoded = decode(encode(message))
    assert isinstance(decoded, Hello | HelloProof)
    return decoded


def _run(dialler: Handshake, responder: Handshake) -> tuple[peer_auth.Step, peer_auth.Step]:
    """Play a whole handshake: (the dialler's last step, the responder's last step)."""
    challenge = responder.on_hello(_wire(dialler.start()))  # type: ignore[arg-type]
    assert challenge.refused is None
    dialler_proof = dialler.on_hello(_wire(challenge.send[0]))  # type: ignore[arg-type]
    assert dialler_proof.refused is None and dialler_proof.peer is None
    checked = responder.on_proof(_wire(dialler_proof.send[0]))  # type: ignore[arg-type]
    if checked.refused:
        return peer_auth.Step(), checked
    return dialler.on_proof(_wire(checked.send[0])), checked  # type: ignore[arg-type]


def test_both_sides_prove_the_same_secret_and_learn_each_others_name() -> None:
    dialler_step, responder_step = _run(*_pair((OLD,), (OLD,)))
    assert dialler_step.peer == "b" and dialler_step.refused is None
    assert responder_step.peer == "a" and responder_step.refused is None


def test_a_dialler_with_a_wrong_secret_is_refused_by_the_node_it_dialled() -> None:
    _, responder_step = _run(*_pair((NEW,), (OLD,)))
    assert responder_step.refused == peer_auth.BAD_PROOF
    assert responder_step.send == ()  # it proves nothing to a dialler it does not trust


def test_a_responder_with_a_wrong_secret_is_refused_by_the_dialler() -> None:
    dialler, responder = _pair((OLD,), (OLD,))
    impostor = Handshake((NEW,), "b", "c1", b"\x02" * 32, NonceMemory())
    challenge = impostor.on_hello(dialler.start())
    dialler.on_hello(challenge.send[0])  # type: ignore[arg-type]
    forged = HelloProof(peer_auth.prove(NEW, b"anything"))  # all it can offer without OLD
    assert dialler.on_proof(forged).refused == peer_auth.BAD_PROOF
    assert responder.state == "new"


def test_a_hello_without_a_nonce_is_refused_as_no_proof() -> None:
    responder = Handshake((OLD,), "b", "c1", b"\x02" * 32, NonceMemory())
    step = responder.on_hello(Hello("a", "c1"))
    assert step.refused == peer_auth.NO_PROOF and step.send == ()


def test_a_responder_without_a_secret_is_refused_by_the_dialler() -> None:
    dialler = Handshake((OLD,), "a", "c1", b"\x01" * 32, NonceMemory())
    dialler.start()
    step = dialler.on_hello(Hello("b", "c1"))  # what a node without a secret answers
    assert step.refused == peer_auth.NO_PROOF and step.send == ()


def test_a_recorded_handshake_played_again_is_refused() -> None:
    memory = NonceMemory()
    dialler, responder = _pair((OLD,), (OLD,), memory)
    hello = dialler.start()
    challenge = responder.on_hello(hello)
    proof = dialler.on_hello(challenge.send[0]).send[0]  # type: ignore[arg-type]
    assert responder.on_proof(proof).peer == "a"  # type: ignore[arg-type]
    # the same frames to the same node: its memory knows the nonce
    again = Handshake((OLD,), "b", "c1", b"\x03" * 32, memory)
    assert again.on_hello(hello).refused == peer_auth.REPLAYED
    # to a node that forgot it (restarted): a fresh responder nonce, so the old proof fails
    forgetful = Handshake((OLD,), "b", "c1", b"\x04" * 32, NonceMemory())
    assert forgetful.on_hello(hello).refused is None
    assert forgetful.on_proof(proof).refused == peer_auth.BAD_PROOF  # type: ignore[arg-type]


def test_the_responders_proof_cannot_stand_for_the_diallers() -> None:
    """Reflection: a proof over the very same nonces and names, made in the other direction,
    is refused; the same proof in the right direction is taken."""
    nonces = (b"\x06" * 32, b"\x05" * 32)

    def proof(direction: bytes) -> HelloProof:
        transcript = peer_auth._transcript(direction, "c1", "a", "b", *nonces)
        return HelloProof(peer_auth.prove(OLD, transcript))

    for direction, accepted in ((peer_auth.RESPONDER, False), (peer_auth.DIALLER, True)):
        victim = Handshake((OLD,), "b", "c1", nonces[1], NonceMemory())
        victim.on_hello(Hello("a", "c1", nonces[0]))
        step = victim.on_proof(proof(direction))
        assert (step.peer == "a") is accepted
        assert (step.refused == peer_auth.BAD_PROOF) is not accepted


def test_frames_out_of_order_are_refused() -> None:
    responder = Handshake((OLD,), "b", "c1", b"\x02" * 32, NonceMemory())
    assert responder.on_proof(HelloProof(b"x" * 32)).refused == peer_auth.OUT_OF_ORDER
    dialler, responder = _pair((OLD,), (OLD,))
    hello = dialler.start()
    responder.on_hello(hello)
    assert responder.on_hello(hello).refused == peer_auth.OUT_OF_ORDER


@pytest.mark.parametrize(
    ("dialler_secrets", "responder_secrets"),
    [
        ((OLD,), (OLD, NEW)),  # step 1: NEW added second on some nodes
        ((OLD, NEW), (NEW, OLD)),  # step 2: NEW moved first on some nodes
        ((NEW, OLD), (NEW,)),  # step 3: OLD removed on some nodes
        ((NEW,), (NEW, OLD)),
    ],
)
def test_rotation_first_secret_signs_any_verifies(
    dialler_secrets: tuple[bytes, ...], responder_secrets: tuple[bytes, ...]
) -> None:
    dialler_step, responder_step = _run(*_pair(dialler_secrets, responder_secrets))
    assert dialler_step.peer == "b" and responder_step.peer == "a"


def test_secret_files_hold_one_secret_a_line() -> None:
    text = f"# rotated 2026-12\n{NEW.decode()}\n\n  {OLD.decode()}  \n"
    assert parse_secrets(text, "s") == (NEW, OLD)
    with pytest.raises(ValueError, match="no cluster secret"):
        parse_secrets("# nothing\n\n", "s")
    with pytest.raises(ValueError, match="line 2 is shorter than 16 bytes"):
        parse_secrets(f"{OLD.decode()}\nshort\n", "s")


def test_nonce_memory_forgets_the_oldest_beyond_its_size() -> None:
    memory = NonceMemory(size=2)
    assert memory.first_time(b"1") and memory.first_time(b"2")
    assert not memory.first_time(b"1")
    assert memory.first_time(b"3")  # forgets b"1"
    assert memory.first_time(b"1")
