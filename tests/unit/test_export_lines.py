"""The export line format and the merge of a partition's copies: a key's DVVSet survives the
round trip exactly, bad lines are named, and each key leaves a partition scan once, merged."""

from __future__ import annotations

import json

import pytest

from dynakv import versions
from dynakv.core.replica import seal
from dynakv.export import BadLine, export_line, parse_line
from dynakv.messages import TransferBatch
from dynakv.partition_scan import PartitionScan
from dynakv.ring import key_digest
from dynakv.versions import Sibling


def _put(clock, value: bytes, actor: str, context=(), deleted=False):
    client = versions.new(context, Sibling(value, deleted, "text/plain", 5))
    return versions.update(client, clock, actor)


def test_siblings_and_a_tombstone_beside_them_round_trip_exactly():
    clock = _put(None, b"apple", "a@1")
    clock = _put(clock, b"pear", "b@2")  # blind: a sibling
    clock = _put(clock, b"", "b@2", deleted=True)  # blind delete: a tombstone beside them
    line = export_line("carts", "alice", clock)
    assert line is not None and len(line["siblings"]) == 2 and len(line["tombstones"]) == 1
    assert line["context"] == versions.encode_context(versions.join(clock))
    assert parse_line(json.dumps(line), 1) == ("carts", "alice", clock)


def test_an_expiry_round_trips_and_a_bad_one_is_named():
    client = versions.new((), Sibling(b"session", expires=1_700_000_000_000))
    clock = versions.update(client, None, "a@1")
    line = export_line("b", "k", clock)
    assert line is not None and line["siblings"][0]["expires"] == 1_700_000_000_000
    assert parse_line(json.dumps(line), 1) == ("b", "k", clock)
    line["siblings"][0]["expires"] = -1
    with pytest.raises(BadLine, match="line 3: 'expires' must be epoch milliseconds"):
        parse_line(json.dumps(line), 3)
    assert "expires" not in export_line("b", "k", _put(None, b"x", "a@1"))["siblings"][0]


def test_a_key_of_tombstones_only_is_not_exported():
    clock = _put(_put(None, b"x", "a@1"), b"", "a@1", context=(("a@1", 1),), deleted=True)
    assert export_line("b", "k", clock) is None


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("{oops", "line 7: not JSON"),
        ('{"bucket": "", "key": "k", "context": ""}', "line 7: bucket must be 1-255 bytes"),
        ('{"bucket": "b", "key": "k", "context": "", "siblings": []}', "non-empty list"),
        (
            '{"bucket": "b", "key": "k", "context": "", "siblings": '
            '[{"value_b64": "eA==", "timestamp": 1, "dot": ["a", 1]}]}',
            "not in the context",
        ),
    ],
)
def test_bad_lines_are_named(text: str, says: str):
    with pytest.raises(BadLine, match=says):
        parse_line(text, 7)


def test_dots_that_are_not_the_newest_of_their_actor_are_refused():
    line = export_line("b", "k", _put(None, b"x", "a@1"))
    assert line is not None
    line["context"] = versions.encode_context((("a@1", 3),))
    with pytest.raises(BadLine, match="not its newest"):
        parse_line(json.dumps(line), 2)


def _records(keys: list[tuple[str, bytes]]):
    ordered = sorted(keys, key=lambda kv: key_digest("b", kv[0]))
    sealed = [seal("b", k, versions.encode(_put(None, v, "n@1"))) for k, v in ordered]
    return [(key_digest("b", k), raw) for (k, _), raw in zip(ordered, sealed, strict=True)]


def test_a_partition_scan_hands_each_key_out_once_merged_from_every_copy():
    one = _records([(f"k{i}", b"one") for i in range(10)])
    two = _records([(f"k{i}", b"two") for i in range(0, 10, 2)])
    scan = PartitionScan.of(0, ["one", "two"])
    out = []
    batches = {"one": [one[:3], one[3:7], one[7:]], "two": [two[:2], two[2:]]}
    while not scan.done:
        for address, _after in scan.wanted():
            batch = batches[address].pop(0)
            done = not batches[address]
            scan.add(address, TransferBatch(1, 0, [r for _, r in batch], batch[-1][0], done))
        out.extend(scan.ready())
    assert sorted(k for _, k, _ in out) == sorted(f"k{i}" for i in range(10))
    merged = {k: sorted(s.value for s in versions.values(c)) for _, k, c in out}
    assert merged["k0"] == [b"one"] or merged["k0"] == [b"two"]  # same dot n@1:1 on both
    assert [key_digest(b, k) for b, k, _ in out] == sorted(key_digest(b, k) for b, k, _ in out)
