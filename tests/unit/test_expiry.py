"""Expiry's pure parts: which siblings a read shows, when a whole state expires, the TTL
header's checks, the stored record's expiry marker (found by the reaper from raw bytes),
and that states and records written before expiry existed still decode."""

from __future__ import annotations

import msgspec
import pytest

from dynakv import expiry, versions
from dynakv.core.reaper import may_hold_tombstone
from dynakv.core.replica import VIEW_FROM, record_expiry, seal, unseal_record
from dynakv.errors import InvalidRequest
from dynakv.versions import Clock, Entry, Sibling

NOW = 1_700_000_000.0
NOW_MS = int(NOW * 1000)


def clock_of(*siblings: Sibling) -> Clock:
    return Clock(tuple(Entry(f"a{i}", 1, (s,)) for i, s in enumerate(siblings)))


def test_a_read_hides_siblings_once_their_expiry_is_reached():
    lasting = Sibling(b"lasting")
    going = Sibling(b"going", expires=NOW_MS + 1000)
    clock = clock_of(lasting, going, Sibling(b"", deleted=True))
    assert [s.value for s in expiry.visible(clock, NOW)] == [b"lasting", b"going"]
    assert [s.value for s in expiry.visible(clock, NOW + 0.999)] == [b"lasting", b"going"]
    assert [s.value for s in expiry.visible(clock, NOW + 1.0)] == [b"lasting"]


def test_a_state_expires_only_when_every_live_sibling_has_an_expiry():
    a = Sibling(b"a", expires=NOW_MS + 1000)
    b = Sibling(b"b", expires=NOW_MS + 5000)
    assert expiry.state_expiry(clock_of(a, b)) == NOW_MS + 5000
    assert expiry.state_expiry(clock_of(a, Sibling(b"c"))) == 0
    assert expiry.state_expiry(clock_of(a, Sibling(b"", deleted=True))) == NOW_MS + 1000
    assert expiry.state_expiry(clock_of(Sibling(b"", deleted=True))) == 0  # the sweep's
    assert expiry.state_expiry(Clock()) == 0


def test_remaining_lifetime_is_never_zero_while_the_value_shows():
    assert expiry.remaining_ms(0, NOW) == -1
    assert expiry.remaining_ms(NOW_MS + 2500, NOW) == 2500
    assert expiry.remaining_ms(NOW_MS, NOW) == 1


@pytest.mark.parametrize(
    ("header", "why"),
    [
        ("-1", "must be positive"),
        ("0", "must be positive"),
        ("abc", "must be a number"),
        ("", "must be a number"),
        ("nan", "must be positive"),
        ("inf", "the most is"),
        (str(expiry.MAX_TTL_SECONDS + 1), "the most is"),
    ],
)
def test_a_bad_ttl_header_is_refused_with_the_reason(header, why):
    with pytest.raises(InvalidRequest, match=why):
        expiry.ttl_header(header, NOW)


def test_a_ttl_header_gives_an_absolute_expiry():
    assert expiry.ttl_header("2", NOW) == NOW_MS + 2000
    assert expiry.ttl_header("0.25", NOW) == NOW_MS + 250
    assert expiry.ttl_header(str(expiry.MAX_TTL_SECONDS), NOW) == NOW_MS + expiry.MAX_TTL_MS


def test_expiry_times_a_record_cannot_hold_are_refused():
    expiry.check_expires(0)
    expiry.check_expires(2**63 - 1)
    for bad in (-1, 2**63):
        with pytest.raises(InvalidRequest, match="expires must be"):
            expiry.check_expires(bad)


def test_a_sibling_written_before_expiry_existed_decodes_as_never_expiring():
    old = msgspec.msgpack.encode([[["n1@x", 1, [[b"v", False, "text/plain", 42]]]], []])
    clock = versions.decode(old)
    (sibling,) = versions.values(clock)
    assert sibling == Sibling(b"v", False, "text/plain", 42, 0)


def test_the_expiry_travels_with_its_dot_in_the_replicated_state():
    """Replicas hand states on whole, so the expiry goes wherever the value's dot goes; a
    new lifetime is a new write (a new dot), which anti-entropy's trees see like any other."""
    plain = versions.update(versions.new((), Sibling(b"v", timestamp=1)), None, "n1@a")
    client = versions.new(versions.join(plain), Sibling(b"v", timestamp=2, expires=NOW_MS))
    expiring = versions.update(client, plain, "n1@a")
    merged = versions.sync(plain, versions.decode(versions.encode(expiring)))
    assert [(s.value, s.expires) for s in versions.values(merged)] == [(b"v", NOW_MS)]


@pytest.mark.parametrize("size", [10, 300, VIEW_FROM + 10, 70_000])
@pytest.mark.parametrize("minted", [("", 0), ("n1@abc", 7)])
def test_an_expiring_record_carries_its_expiry_where_the_sweep_reads_it(size, minted):
    state = versions.encode(clock_of(Sibling(b"x" * size, expires=NOW_MS + 5)))
    raw = seal("b", "k", state, minted, NOW_MS + 5)
    assert record_expiry(raw) == NOW_MS + 5
    record = unseal_record(raw)
    assert (record.bucket, record.key, bytes(record.state)) == ("b", "k", state)
    assert (record.minted_actor, record.minted_counter) == minted
    assert record.expires == NOW_MS + 5


@pytest.mark.parametrize("size", [10, VIEW_FROM + 10])
def test_a_record_without_expiry_keeps_its_shape_and_shows_none(size):
    state = versions.encode(clock_of(Sibling(b"x" * size)))
    for minted in (("", 0), ("n1@abc", 7)):
        raw = seal("b", "k", state, minted)
        assert raw[0] in (0x93, 0x95)
        assert record_expiry(raw) == 0
        assert unseal_record(raw).expires == 0


def test_the_sweep_still_finds_tombstones_written_before_expiry_existed():
    old_tombstone = msgspec.msgpack.encode([[["n1@x", 1, [[b"", True, "", 42]]]], []])
    assert may_hold_tombstone(seal("b", "k", old_tombstone))
    new_tombstone = versions.encode(clock_of(Sibling(b"", deleted=True, timestamp=42)))
    assert may_hold_tombstone(seal("b", "k", new_tombstone))
    assert not may_hold_tombstone(seal("b", "k", versions.encode(clock_of(Sibling(b"v")))))
