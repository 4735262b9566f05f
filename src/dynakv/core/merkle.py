"""Merkle hash trees for anti-entropy: one per partition, compared top-down between replicas.

Pure: no I/O, no clock, no randomness. The node feeds it digests and version hashes and
carries the exchange's requests and replies in its own messages.

Shape (Riak ``hashtree.erl`` style)
-----------------------------------
A `HashTree` covers one ring partition, the digest range ``ring.partition_range(p, Q)``.
Its leaves are ``segments`` (a power of two) *segments*: a 16-byte key digest falls in
segment ``(digest >> (128 - log2 Q - log2 segments)) mod segments`` — the digest bits just
below the partition bits — so a segment is a contiguous sub-range of the partition
(`segment_range`) that storage can rescan cheaply. Above the segments sit inner levels of
fan-out ``branching`` (a power of two): level 0 is the root (one node), level `depth` is the
segment level, and level ``i`` has ``level_size(i)`` nodes; when log2(segments) is not a
multiple of log2(branching), the root alone has a smaller fan-out. Defaults: 16384 segments,
branching 16: levels of 1, 4, 64, 1024 and 16384 nodes, so an exchange takes five round
trips of hashes and one of key maps; a tree takes 20 bytes a segment (a 16-byte sum and a
4-byte key count), 320 KiB. Chosen with benchmarks/merkle_cost.py: two replicas of 1M keys
differing in 100 exchange 0.27% of the data size as one tree, 0.10% as 64 partition trees
(the issue's target is 1%); 1024 segments would need 3.4% for a 1M-key partition.

Hashes
------
- A key contributes ``leaf = blake2b-128(digest || version_hash)`` (personalised
  ``dynakv:aae:key``), where `version_hash` is what `version_hash(clock)` returns for the
  key's DVVSet: its causal version, not its value bytes (equal dots imply equal values).
- A segment's hash is the **sum modulo 2^128** of its keys' leaves (16 bytes, big-endian;
  an empty segment is 16 zero bytes). A sum is an invertible combination, so an insert,
  replace or delete is O(1): add the new leaf, subtract the old one, no rescan of the segment.
  XOR (what several AAE implementations use) is invertible too, but an entry counted twice
  cancels out under XOR, so a bookkeeping slip (a replace reported as an insert) would make
  the key look *absent* and hide a real divergence; under a sum it leaves a value no honest
  state produces, so the slip shows as a spurious difference that the leaf diff resolves
  (and `reset_segment` repairs). A sum is also much harder to collide on purpose than XOR,
  whose collisions are plain linear algebra over GF(2). A key has exactly one entry, so
  neither suffers from genuine duplicates here.
- An inner node's hash is ``blake2b-128`` (personalised ``dynakv:aae:node``) of the
  concatenation of its children's hashes, left to right.

Updates mark their segment dirty; `root` and `level_hashes` first rehash the inner nodes
on the paths from dirty segments to the root, and only those (`inner_rehashes` counts them).

API
---
- ``HashTree(partition, ring_size, segments=16384, branching=16)``
- ``tree.update(digest, old, new)``: the key's version hash went from `old` to `new`
  (``None`` = absent), so ``update(d, None, h)`` inserts, ``update(d, h1, h2)`` replaces and
  ``update(d, h, None)`` deletes. `insert` / `delete` are shorthands. The caller must pass
  the true old version hash (it reads the stored record before writing anyway).
- ``tree.rebuild(items)``: replace the contents by ``(digest, version_hash)`` pairs, e.g.
  from a storage scan of the partition; ``tree.reset_segment(s, items)`` does the same for
  one segment (after a leaf diff, with the local map just scanned: this self-heals drift).
- ``tree.root()``, ``tree.level_hashes(level, indices)``, ``tree.children(level, i)``,
  ``tree.level_size(level)``, ``tree.depth``, ``tree.shape``, ``len(tree)`` (keys),
  ``tree.segment_keys(s)`` (keys in a segment: the size of its key map).
- ``tree.segment_of(digest)``, ``tree.segment_range(segment)`` → ``[start, end)`` digests
  (``end == b""``: unbounded, for the very last segment of the ring).
- ``tree.to_bytes()`` / ``HashTree.from_bytes(data)``: the segment sums and shape. Only valid
  if the stored form cannot be older than the data (e.g. written in the same commit, or
  after a clean stop); otherwise rebuild.
- ``Exchange(tree)``: the initiator's side of a top-down comparison. ``start()`` returns a
  `HashRequest` (level 0, the root); the other replica answers it with
  ``level_hashes(level, indices)`` of its own tree (of the same `shape` — send the shape with
  the first request and refuse a mismatch); ``on_hashes(level, indices, hashes)`` returns the
  next `HashRequest` (the children of the nodes that differ), or `SegmentDiff` with the
  differing segments when it reached the leaves (empty: the trees are equal), or ``None``
  for a reply that does not answer the pending request (stale or duplicated: ignore it).
  The initiator then gets the other side's ``{digest: version_hash}`` for those segments,
  scans its own, and calls ``diff_keys(local, remote)`` → missing / remote_missing /
  different. Trees may change during an exchange; differences found are re-checked at the
  leaves, and one missed is found by the next round.
- ``version_hash(clock)``: the 16-byte hash of a DVVSet's causal version (see there).
"""

from __future__ import annotations

import hashlib
import struct
import sys
from array import array
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import NamedTuple

import msgspec

from dynakv import versions

__all__ = [
    "DEFAULT_BRANCHING",
    "DEFAULT_SEGMENTS",
    "HASH_BYTES",
    "Exchange",
    "HashRequest",
    "HashTree",
    "KeyDiff",
    "SegmentDiff",
    "TreeShape",
    "diff_keys",
    "version_hash",
]

HASH_BYTES = 16
DEFAULT_SEGMENTS = 16384
DEFAULT_BRANCHING = 16
MAX_SEGMENTS = 1 << 24

_DIGEST_BYTES = 16
_DIGEST_BITS = 8 * _DIGEST_BYTES
_MASK = (1 << 128) - 1
_EMPTY_HASH = bytes(HASH_BYTES)
# Personalised base hashers: copy() is about twice as fast as a new blake2b(...) call.
_KEY_HASHER = hashlib.blake2b(digest_size=HASH_BYTES, person=b"dynakv:aae:key")
_NODE_HASHER = hashlib.blake2b(digest_size=HASH_BYTES, person=b"dynakv:aae:node")
_VERSION_HASHER = hashlib.blake2b(digest_size=HASH_BYTES, person=b"dynakv:version")
_encoder = msgspec.msgpack.Encoder()
_SNAPSHOT = struct.Struct(">4sBIIII")  # magic, format, Q, partition, segments, branching
_MAGIC = b"DKHT"
_FORMAT = 1


def version_hash(clock: versions.Clock) -> bytes:
    """The 16-byte hash of a key's causal version, equal on replicas with equal clocks.

    Hashed (blake2b-128, personalised ``dynakv:version``): the msgpack encoding of
    ``[entries, anonymous]`` where ``entries`` lists, per actor in the clock's (sorted)
    order, ``[actor, counter, [deleted flag of each surviving value, newest dot first]]`` —
    that is ``versions.join(clock)`` together with the exact set of sibling dots (the value
    at index i of an entry has dot ``(actor, counter - i)``) and which dots are tombstones —
    and ``anonymous`` lists the undotted values, if any, as ``[timestamp, value,
    content_type, deleted]`` sorted (they have no dot to stand for them, so their bytes are
    hashed; stored states normally have none). Dotted values are not hashed: a dot names
    one write, so equal dots imply equal values. Any difference in the version vector, in
    which siblings survive, or in a tombstone flag gives a different hash.
    """
    entries = [(e.actor, e.counter, [s.deleted for s in e.values]) for e in clock.entries]
    anonymous = (
        sorted([(s.timestamp, s.value, s.content_type, s.deleted) for s in clock.anonymous])
        if clock.anonymous
        else ()
    )
    hasher = _VERSION_HASHER.copy()
    hasher.update(_encoder.encode((entries, anonymous)))
    return hasher.digest()


def _log2(value: int, what: str) -> int:
    if type(value) is not int or value < 1 or value & (value - 1):
        raise ValueError(f"{what} must be a power of two, got {value!r}")
    return value.bit_length() - 1


def _leaf(digest: bytes, vhash: bytes) -> int:
    hasher = _KEY_HASHER.copy()
    hasher.update(digest + vhash)
    return int.from_bytes(hasher.digest(), "big")


def _check_version_hash(vhash: bytes | None) -> None:
    if vhash is not None and (type(vhash) is not bytes or not 8 <= len(vhash) <= 64):
        raise ValueError(f"a version hash is 8..64 bytes, got {vhash!r}")


class TreeShape(NamedTuple):
    """What two trees must share to be compared."""

    partition: int
    ring_size: int
    segments: int
    branching: int


class HashTree:
    """The hash tree of one partition's keys: segment sums below, blake2b inner nodes above."""

    __slots__ = (
        "_all_dirty",
        "_counts",
        "_dirty",
        "_fan_bits",
        "_levels",
        "_partition_shift",
        "_segment_mask",
        "_segment_shift",
        "depth",
        "inner_rehashes",
        "keys",
        "shape",
    )

    def __init__(
        self,
        partition: int,
        ring_size: int,
        segments: int = DEFAULT_SEGMENTS,
        branching: int = DEFAULT_BRANCHING,
    ) -> None:
        partition_bits = _log2(ring_size, "ring size")
        segment_bits = _log2(segments, "segments")
        branch_bits = _log2(branching, "branching")
        if type(partition) is not int or not 0 <= partition < ring_size:
            raise ValueError(f"partition {partition!r} is not in 0..{ring_size - 1}")
        if branching < 2:
            raise ValueError(f"branching must be at least 2, got {branching}")
        if segments > MAX_SEGMENTS or partition_bits + segment_bits > _DIGEST_BITS:
            raise ValueError(f"too many segments: {segments}")
        self.shape = TreeShape(partition, ring_size, segments, branching)
        self._partition_shift = _DIGEST_BITS - partition_bits
        self._segment_shift = _DIGEST_BITS - partition_bits - segment_bits
        self._segment_mask = segments - 1
        self.depth = -(-segment_bits // branch_bits)  # levels below the root
        # level i has 2**bits[i] nodes; the root alone may have fewer than `branching` children
        bits = [max(0, segment_bits - branch_bits * (self.depth - i)) for i in range(self.depth)]
        bits.append(segment_bits)
        self._fan_bits = [bits[i + 1] - bits[i] for i in range(self.depth)]
        self._levels = [bytearray(HASH_BYTES << b) for b in bits]
        self._counts = array("I", bytes(4 * segments))  # keys per segment
        self._dirty: set[int] = set()
        self._all_dirty = True
        self.inner_rehashes = 0  # inner nodes hashed so far: lets tests see what a rehash did
        self.keys = 0

    # --- geometry ----------------------------------------------------------------------------

    def __len__(self) -> int:
        """The number of keys in the tree."""
        return self.keys

    def level_size(self, level: int) -> int:
        """How many nodes level `level` has (0: the root, `depth`: the segments)."""
        self._check_level(level)
        return len(self._levels[level]) // HASH_BYTES

    def children(self, level: int, index: int) -> list[int]:
        """The indices at ``level + 1`` of the children of node `index` of `level`."""
        self._check_level(level)
        if level == self.depth:
            raise ValueError(f"level {level} holds the segments: they have no children")
        self._check_index(level, index)
        fan_bits = self._fan_bits[level]
        return list(range(index << fan_bits, (index + 1) << fan_bits))

    def segment_of(self, digest: bytes) -> int:
        """The segment of a key digest; ValueError if it is not a digest of this partition."""
        # A table item's storage key is longer (item_keys): its first 16 bytes place it.
        if type(digest) is not bytes or len(digest) < _DIGEST_BYTES:
            raise ValueError(f"a digest is {_DIGEST_BYTES} bytes or more, got {digest!r}")
        position = int.from_bytes(digest[:_DIGEST_BYTES], "big")
        if position >> self._partition_shift != self.shape.partition:
            raise ValueError(f"digest {digest.hex()} is not in partition {self.shape.partition}")
        return (position >> self._segment_shift) & self._segment_mask

    def segment_range(self, segment: int) -> tuple[bytes, bytes]:
        """``[start, end)`` of the digests in a segment; end is b"" past the ring's last digest."""
        self._check_index(self.depth, segment)
        start = (self.shape.partition << self._partition_shift) | (segment << self._segment_shift)
        end = start + (1 << self._segment_shift)
        end_bytes = b"" if end >> _DIGEST_BITS else end.to_bytes(_DIGEST_BYTES, "big")
        return start.to_bytes(_DIGEST_BYTES, "big"), end_bytes

    # --- updates -----------------------------------------------------------------------------

    def update(self, digest: bytes, old: bytes | None, new: bytes | None) -> None:
        """The key's version hash changed from `old` to `new` (None: absent). O(1)."""
        # Runs on every write a node takes: segment_of and _leaf are inlined, the digest is
        # read as an integer once, and each leaf is hashed from one base hasher copy.
        if type(digest) is not bytes or len(digest) < _DIGEST_BYTES:
            self.segment_of(digest)  # raises, naming what is wrong
        position = int.from_bytes(digest[:_DIGEST_BYTES], "big")
        if position >> self._partition_shift != self.shape.partition:
            self.segment_of(digest)
        segment = (position >> self._segment_shift) & self._segment_mask
        if old is not None and (type(old) is not bytes or not 8 <= len(old) <= 64):
            _check_version_hash(old)
        if new is not None and (type(new) is not bytes or not 8 <= len(new) <= 64):
            _check_version_hash(new)
        if old == new:
            return
        counts = self._counts
        delta = 0
        if new is not None:
            hasher = _KEY_HASHER.copy()
            hasher.update(digest + new)
            delta = int.from_bytes(hasher.digest(), "big")
            if old is None:  # insert
                counts[segment] += 1
                self.keys += 1
        if old is not None:
            if new is None:  # delete
                if counts[segment] == 0:
                    raise ValueError(f"delete of {digest.hex()} from an empty segment {segment}")
                counts[segment] -= 1
                self.keys -= 1
            hasher = _KEY_HASHER.copy()
            hasher.update(digest + old)
            delta -= int.from_bytes(hasher.digest(), "big")
        sums = self._levels[self.depth]
        at = segment * HASH_BYTES
        total = (int.from_bytes(sums[at : at + HASH_BYTES], "big") + delta) & _MASK
        sums[at : at + HASH_BYTES] = total.to_bytes(HASH_BYTES, "big")
        self._dirty.add(segment)

    def insert(self, digest: bytes, vhash: bytes) -> None:
        """A key the tree does not hold yet."""
        self.update(digest, None, vhash)

    def delete(self, digest: bytes, vhash: bytes) -> None:
        """Remove a key the tree holds with version hash `vhash`."""
        self.update(digest, vhash, None)

    def rebuild(self, items: Iterable[tuple[bytes, bytes]]) -> None:
        """Replace the whole contents by ``(digest, version_hash)`` pairs, one per key.

        Digests must be distinct and of this partition (ValueError otherwise — the tree is
        then left unchanged). Version hashes are taken as given (not length-checked).
        """
        sums = [0] * (self._segment_mask + 1)
        partition = self.shape.partition
        partition_shift = self._partition_shift
        segment_shift = self._segment_shift
        mask = self._segment_mask
        from_bytes = int.from_bytes
        copy = _KEY_HASHER.copy
        counts = array("I", bytes(4 * len(sums)))
        for digest, vhash in items:
            position = from_bytes(digest[:_DIGEST_BYTES], "big")
            if position >> partition_shift != partition or len(digest) < _DIGEST_BYTES:
                raise ValueError(f"digest {digest.hex()} is not in partition {partition}")
            hasher = copy()
            hasher.update(digest + vhash)
            segment = (position >> segment_shift) & mask
            sums[segment] += from_bytes(hasher.digest(), "big")
            counts[segment] += 1
        self._levels[self.depth] = bytearray(
            b"".join([(total & _MASK).to_bytes(HASH_BYTES, "big") for total in sums])
        )
        self._counts = counts
        self.keys = sum(counts)
        self._dirty.clear()
        self._all_dirty = True

    def reset_segment(self, segment: int, items: Iterable[tuple[bytes, bytes]]) -> None:
        """Replace one segment's contents by ``(digest, version_hash)`` pairs (all of it).

        For a node that has just scanned the segment from storage: whatever the tree
        believed about it (say after a missed update) is corrected.
        """
        self._check_index(self.depth, segment)
        total = 0
        count = 0
        for digest, vhash in items:
            if self.segment_of(digest) != segment:
                raise ValueError(f"digest {digest.hex()} is not in segment {segment}")
            _check_version_hash(vhash)
            total += _leaf(digest, vhash)
            count += 1
        sums = self._levels[self.depth]
        at = segment * HASH_BYTES
        sums[at : at + HASH_BYTES] = (total & _MASK).to_bytes(HASH_BYTES, "big")
        self.keys += count - self._counts[segment]
        self._counts[segment] = count
        self._dirty.add(segment)

    def segment_keys(self, segment: int) -> int:
        """How many keys a segment holds (what a request for its key map will return)."""
        self._check_index(self.depth, segment)
        return self._counts[segment]

    # --- hashes ------------------------------------------------------------------------------

    def root(self) -> bytes:
        """The root hash: equal roots mean (with overwhelming probability) equal contents."""
        self._rehash()
        return bytes(self._levels[0])

    def level_hashes(self, level: int, indices: Iterable[int]) -> list[bytes]:
        """The hashes of nodes `indices` of `level`: what a replica answers a `HashRequest`."""
        self._check_level(level)
        self._rehash()
        hashes = self._levels[level]
        size = len(hashes) // HASH_BYTES
        out = []
        for index in indices:
            if type(index) is not int or not 0 <= index < size:
                raise ValueError(f"level {level} has nodes 0..{size - 1}, not {index!r}")
            out.append(bytes(hashes[index * HASH_BYTES : (index + 1) * HASH_BYTES]))
        return out

    def _rehash(self) -> None:
        """Recompute the inner nodes above dirty segments (all of them after a rebuild)."""
        levels = self._levels
        copy = _NODE_HASHER.copy
        if self._all_dirty:
            for level in range(self.depth - 1, -1, -1):
                child_bytes = HASH_BYTES << self._fan_bits[level]
                below = levels[level + 1]
                parents = bytearray()
                for at in range(0, len(below), child_bytes):
                    hasher = copy()
                    hasher.update(below[at : at + child_bytes])
                    parents += hasher.digest()
                levels[level] = parents
                self.inner_rehashes += len(parents) // HASH_BYTES
            self._all_dirty = False
            self._dirty.clear()
            return
        dirty = self._dirty
        if not dirty:
            return
        for level in range(self.depth - 1, -1, -1):
            fan_bits = self._fan_bits[level]
            child_bytes = HASH_BYTES << fan_bits
            below = levels[level + 1]
            here = levels[level]
            parents = {index >> fan_bits for index in dirty}
            for parent in parents:
                hasher = copy()
                hasher.update(below[parent * child_bytes : (parent + 1) * child_bytes])
                here[parent * HASH_BYTES : (parent + 1) * HASH_BYTES] = hasher.digest()
            self.inner_rehashes += len(parents)
            dirty = parents
        self._dirty = set()

    # --- persistence -------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """The shape, segment sums and key counts (inner nodes are recomputed on load)."""
        partition, ring_size, segments, branching = self.shape
        header = _SNAPSHOT.pack(_MAGIC, _FORMAT, ring_size, partition, segments, branching)
        counts = array("I", self._counts)
        if sys.byteorder != "big":
            counts.byteswap()
        return header + bytes(self._levels[self.depth]) + counts.tobytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> HashTree:
        """A tree from `to_bytes`; ValueError if `data` is anything else."""
        if len(data) < _SNAPSHOT.size:
            raise ValueError("not a hash tree snapshot: too short")
        magic, fmt, ring_size, partition, segments, branching = _SNAPSHOT.unpack_from(data)
        if magic != _MAGIC or fmt != _FORMAT:
            raise ValueError("not a hash tree snapshot: bad magic or format")
        tree = cls(partition, ring_size, segments, branching)
        body = data[_SNAPSHOT.size :]
        sums_size = segments * HASH_BYTES
        if len(body) != sums_size + 4 * segments:
            raise ValueError(
                f"hash tree snapshot holds {len(body)} bytes after its header, "
                f"expected {sums_size + 4 * segments}"
            )
        counts = array("I", body[sums_size:])
        if sys.byteorder != "big":
            counts.byteswap()
        tree._levels[tree.depth] = bytearray(body[:sums_size])
        tree._counts = counts
        tree.keys = sum(counts)
        return tree

    # --- checks ------------------------------------------------------------------------------

    def _check_level(self, level: int) -> None:
        if type(level) is not int or not 0 <= level <= self.depth:
            raise ValueError(f"the tree has levels 0..{self.depth}, not {level!r}")

    def _check_index(self, level: int, index: int) -> None:
        size = len(self._levels[level]) // HASH_BYTES
        if type(index) is not int or not 0 <= index < size:
            raise ValueError(f"level {level} has nodes 0..{size - 1}, not {index!r}")


@dataclass(frozen=True, slots=True)
class HashRequest:
    """Ask the other replica for the hashes of nodes `indices` (ascending) of `level`."""

    level: int
    indices: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class SegmentDiff:
    """The exchange's answer: the segments whose hashes differ (ascending; empty: equal)."""

    segments: tuple[int, ...]


class Exchange:
    """The initiator's side of a top-down tree comparison; the node carries the messages.

    Descends level by level, only into nodes whose hashes differ, and ends with the
    differing segments. Counts what it asked for, so its cost can be reported.
    """

    __slots__ = ("hashes_received", "pending", "requests", "result", "tree")

    def __init__(self, tree: HashTree) -> None:
        self.tree = tree
        self.pending: HashRequest | None = None
        self.result: SegmentDiff | None = None
        self.requests = 0
        self.hashes_received = 0

    def start(self) -> HashRequest:
        """The first request: the other tree's root."""
        self.result = None
        return self._ask(HashRequest(0, (0,)))

    def on_hashes(
        self, level: int, indices: Iterable[int], hashes: list[bytes]
    ) -> HashRequest | SegmentDiff | None:
        """Feed the reply to the pending request: the next request, the result, or None.

        None means the reply answers no pending request (a duplicate or a stale one): ignore
        it. A reply to the pending request with the wrong number or size of hashes is a
        ValueError.
        """
        request = self.pending
        if request is None or level != request.level or tuple(indices) != request.indices:
            return None
        if len(hashes) != len(request.indices) or any(
            type(h) is not bytes or len(h) != HASH_BYTES for h in hashes
        ):
            raise ValueError(
                f"expected {len(request.indices)} hashes of {HASH_BYTES} bytes for level {level}"
            )
        self.hashes_received += len(hashes)
        local = self.tree.level_hashes(level, request.indices)
        pairs = zip(request.indices, local, hashes, strict=True)
        differing = [i for i, mine, theirs in pairs if mine != theirs]
        if level == self.tree.depth or not differing:
            self.pending = None
            self.result = SegmentDiff(tuple(differing) if level == self.tree.depth else ())
            return self.result
        below = [child for i in differing for child in self.tree.children(level, i)]
        return self._ask(HashRequest(level + 1, tuple(below)))

    def _ask(self, request: HashRequest) -> HashRequest:
        self.pending = request
        self.requests += 1
        return request


class KeyDiff(NamedTuple):
    """How the local side differs from the remote one, as sorted digests (Riak's terms)."""

    missing: list[bytes]  # the remote side has the key, the local side does not
    remote_missing: list[bytes]  # the local side has the key, the remote side does not
    different: list[bytes]  # both have it, with different versions


def diff_keys(local: Mapping[bytes, bytes], remote: Mapping[bytes, bytes]) -> KeyDiff:
    """Compare ``{digest: version_hash}`` maps of the same segments on the two sides."""
    missing = sorted(digest for digest in remote if digest not in local)
    remote_missing = sorted(digest for digest in local if digest not in remote)
    different = sorted(
        digest for digest, vhash in local.items() if digest in remote and remote[digest] != vhash
    )
    return KeyDiff(missing, remote_missing, different)
