"""The (key digest, version hash) lists an ownership transfer compares instead of pulling a
partition's records again from every replica, and the records it then fetches by digest.

A version hash here is `merkle.version_hash` of the stored DVVSet (anti-entropy's), read
without copying the values: dotted values are not hashed (a dot names one write), so only
the shape of the state (actors, counters, tombstone flags) is decoded. Equal hashes mean
equal states, and merging a state into an equal one changes nothing. Pure and synchronous:
storage through the store's engine, no network here.
"""

from __future__ import annotations

from dynakv import versions
from dynakv.core.merkle import version_hash
from dynakv.core.replica import CorruptRecord, ReplicaStore, unseal_state
from dynakv.errors import InvalidRequest
from dynakv.item_keys import DIGEST_BYTES, MAX_STORAGE_KEY

__all__ = [
    "check_digests",
    "fetch_records",
    "local_differs",
    "scan_versions",
    "state_version_hash",
]


def state_version_hash(state: bytes | memoryview) -> bytes:
    """`merkle.version_hash` of an encoded DVVSet, without copying its dotted values (a
    state with undotted values, which stored states normally lack, is decoded whole: their
    bytes are part of the hash). InvalidRequest if it is not an encoded clock."""
    shape = versions.decode_shape(state)
    if shape.anonymous:
        return version_hash(versions.decode(bytes(state)))
    # version_hash reads a dotted sibling's tombstone flag only: its value stands empty.
    entries = tuple(
        versions.Entry(
            e.actor, e.counter, tuple([versions.Sibling(b"", s.deleted) for s in e.values])
        )
        for e in shape.entries
    )
    return version_hash(versions.Clock(entries))


def scan_versions(
    store: ReplicaStore, start: bytes, end: bytes, after: bytes, limit: int, max_bytes: int
) -> tuple[list[tuple[bytes, bytes]], bytes, bool]:
    """(key, version hash) of the records of [start, end) after key `after`, at most
    `limit` of them and about `max_bytes` of records read: (pairs, last key, done). A
    corrupt record is left out (and noted for the node to repair): the other replicas, and
    the copy the puller already merged, hold the key."""
    return store.scan_read(start, end, after, limit, max_bytes, _version_of)


def _version_of(digest: bytes, raw: bytes) -> tuple[tuple[bytes, bytes], int]:
    return (digest, state_version_hash(unseal_state(raw))), len(raw)


def local_differs(store: ReplicaStore, pairs: list[tuple[bytes, bytes]]) -> list[bytes]:
    """The digests of `pairs` whose local record is missing, corrupt or of another version:
    those whose remote copy must be fetched and merged. Sorted, as the pairs come."""
    wanted: list[bytes] = []
    for digest, remote in pairs:
        raw = store.engine.get(digest)
        if raw is None:
            wanted.append(digest)
            continue
        try:
            local = state_version_hash(unseal_state(raw))
        except (CorruptRecord, InvalidRequest):
            wanted.append(digest)  # the merge of the fetched copy replaces it
            continue
        if local != remote:
            wanted.append(digest)
    return wanted


def fetch_records(
    store: ReplicaStore, digests: list[bytes], max_bytes: int
) -> tuple[list[bytes], bytes, bool]:
    """Records of `digests` (sorted) as handed on (replica.handed_on: format v1), in order,
    until about `max_bytes`: (records, last digest looked at, whether every digest was).
    Absent and corrupt ones are left out: the puller then has nothing to merge for them
    from this replica."""
    records: list[bytes] = []
    size = 0
    last = b""
    for i, digest in enumerate(digests):
        last = digest
        raw = store.engine.get(digest)
        record = None if raw is None else store.handed_on(digest, raw)  # corrupt: noted
        if record is None:
            continue
        records.append(record)
        size += len(record)
        if size >= max_bytes:
            return records, last, i == len(digests) - 1
    return records, last, True


def check_digests(digests: list[bytes], start: bytes, end: bytes) -> None:
    """InvalidRequest unless every digest is a storage key in [start, end) (end b"": none)."""
    for digest in digests:
        size = len(digest)
        if not DIGEST_BYTES <= size <= MAX_STORAGE_KEY or digest < start or (end and digest >= end):
            raise InvalidRequest("a transfer digest outside the partition")
