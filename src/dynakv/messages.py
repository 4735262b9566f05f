"""Every message of the binary protocol, client-to-node and node-to-node, typed in one place.

Frames on the wire are a 4-byte big-endian length followed by one msgpack-encoded message
(a msgspec tagged union). Pure data: no behaviour beyond encoding and decoding.
"""

from __future__ import annotations

import msgspec

from dynakv.core.membership import MemberRecord, Membership
from dynakv.errors import DynakvError, Unavailable
from dynakv.users import Scrypt

MAX_FRAME_BYTES = 64 << 20


def other_protocol(head: bytes) -> str | None:
    """What speaks on a port whose first bytes `head` are too long a frame length: "HTTP"
    (a node's HTTP port), "the Redis protocol" (its RESP port), or None (unknown)."""
    if head.startswith(b"HTTP"):
        return "HTTP"
    if head[:1] in (b"-", b"+"):
        return "the Redis protocol"
    return None


class Message(msgspec.Struct, tag_field="t", array_like=True):
    """Base of every frame; `t` names the type on the wire."""


# --- client <-> node -------------------------------------------------------------------------


class ClientGet(Message, tag="get"):
    rid: int
    bucket: str
    key: str
    r: int | str | None = None  # a count or a level name (levels.py); None: the default


class ClientPut(Message, tag="put"):
    rid: int
    bucket: str
    key: str
    value: bytes
    context: str = ""
    w: int | str | None = None  # a count or a level name (levels.py); None: the default
    content_type: str = ""
    delete: bool = False
    hops: int = 0  # 1 when a node forwarded it to a coordinator: never forward again
    datacenter: str = ""  # set by a forwarding node: its data center is the local one
    # An import (`dynakv import`): an encoded DVVSet to merge in as a replica would, with
    # its dots and siblings as exported; value, context and delete are then unused.
    state: bytes = b""
    expires: int = 0  # wall-clock ms after which the value reads as absent; 0: never


class ClientClusterInfo(Message, tag="cluster"):
    rid: int


class GetResult(Message, tag="get_ok"):
    rid: int
    values: list[bytes]
    content_types: list[str]
    context: str
    # Per value, its expiry (wall-clock ms, 0: none); empty when no value expires.
    expires: list[int] = msgspec.field(default_factory=list)


class PutResult(Message, tag="put_ok"):
    rid: int
    context: str


class ClusterInfo(Message, tag="cluster_ok"):
    rid: int
    state: Membership


class ErrorReply(Message, tag="error"):
    rid: int
    code: str
    message: str
    needed: int = 0
    got: int = 0


def error_reply(rid: int, exc: DynakvError) -> ErrorReply:
    """The reply that carries `exc` (with Unavailable's counts) to request `rid`."""
    if isinstance(exc, Unavailable):
        return ErrorReply(rid, exc.code, exc.message, exc.needed, exc.got)
    return ErrorReply(rid, exc.code, exc.message)


# --- node <-> node ---------------------------------------------------------------------------


class Hello(Message, tag="hello"):
    """First frame a node sends on a connection to a peer: who it is, and of which cluster.

    With a cluster secret (peer_auth.py) it also carries the sender's fresh nonce; nodes
    without a secret leave it empty."""

    name: str
    cluster: str
    nonce: bytes = b""


class HelloProof(Message, tag="hello_proof"):
    """A node's proof that it holds the cluster secret, over both Hellos' nonces
    (peer_auth.py): the dialler's first, then the responder's."""

    proof: bytes


class ReplicaGet(Message, tag="rget"):
    rid: int
    bucket: str
    key: str


class ReplicaGetReply(Message, tag="rget_ok"):
    rid: int
    state: bytes | None  # encoded versions.Clock, None when this replica has nothing


class ReplicaPut(Message, tag="rput"):
    rid: int  # 0: read repair, no reply wanted
    bucket: str
    key: str
    state: bytes
    overwrite: bool = False  # honoured only by a node built with the read_repair_overwrites bug
    hint: str = ""  # sloppy quorum: the primary this copy stands in for; kept as a hint
    # A write crossing to another data center goes to one replica there, which passes it on
    # to these (the other replicas there; Cassandra's forwarding of a remote write)...
    relay: list[str] = msgspec.field(default_factory=list)
    reply_to: str = ""  # ... and each of them acknowledges to the coordinator named here


class ReplicaPutReply(Message, tag="rput_ok"):
    rid: int


# Membership and ring travel as the CRDT of core.membership; the old names stay as aliases.
Member = MemberRecord
ClusterState = Membership


class ClientClusterChange(Message, tag="cluster_change"):
    """An operator's membership change: op is "leave" or "remove"."""

    rid: int
    op: str
    name: str


class ClientBucketChange(Message, tag="bucket_change"):
    """An operator creates or updates bucket type `name` (bucket_types.change): mode is
    "create", "update" or "put" (either). Answered with ClusterInfo (the types after it)."""

    rid: int
    name: str
    # n, r, w, policy, max_value_bytes, datacenters (data center -> count): those to set
    props: dict[str, int | str | dict[str, int]]
    mode: str = "put"


class ClientLogin(Message, tag="login"):
    """A client's credentials, its first frame when the node has authentication on: a
    user's password or bearer token. Answered with LoginResult or ErrorReply."""

    rid: int
    user: str
    secret: str


class LoginResult(Message, tag="login_ok"):
    rid: int
    user: str
    grants: list[tuple[str, str]]  # (bucket or "*", permission)


class ClientUserChange(Message, tag="user_change"):
    """An operator adds, grants to, revokes from or deletes a user (users.py), or creates or
    deletes one of its access keys. A password arrives hashed by the client
    (users.hash_password); the node never sees it. An access key's secret arrives as is (SigV4
    needs it) and the node's door seals it (key_sealing.py) before the core sees it. Answered
    with ClusterInfo (users without their hashes and sealed secrets)."""

    rid: int
    op: str  # add | grant | revoke | delete | key_create | key_delete
    name: str
    password: Scrypt | None = None
    token_sha256: bytes = b""
    grants: list[tuple[str, str]] = msgspec.field(default_factory=list)
    key_id: str = ""  # key_create, key_delete
    key_secret: bytes = b""  # key_create: the secret from the client, sealed at the door


class TransferRequest(Message, tag="xfer"):
    """Ownership transfer: send me up to `limit` objects of key partition, after `after`."""

    rid: int
    partition: int
    after: bytes
    limit: int


class TransferBatch(Message, tag="xfer_ok"):
    rid: int
    partition: int
    records: list[bytes]  # stored records: msgpack [bucket, key, encoded clock]
    last: bytes  # the last key sent (the next request's `after`)
    done: bool
    total_keys: int = 0  # of the whole partition on the sender, with the first batch only
    total_bytes: int = 0
    share: float = 1.0  # the sender's background budget: the puller paces to the lower one


class TransferDigestRequest(Message, tag="xfer_dg"):
    """Ownership transfer from a replica other than the one copied in full: send me the
    (key, version hash) of up to `limit` objects of key partition, after `after`."""

    rid: int
    partition: int
    after: bytes
    limit: int


class TransferDigests(Message, tag="xfer_dg_ok"):
    rid: int
    partition: int
    versions: list[tuple[bytes, bytes]]  # (storage key, core.version_digests hash), in order
    last: bytes  # the last key looked at (the next request's `after`)
    done: bool
    share: float = 1.0  # the sender's background budget, as TransferBatch's


class TransferFetch(Message, tag="xfer_f"):
    """Ownership transfer: send me your stored records of these keys (sorted) of key
    partition, in order; answered with a TransferBatch whose `last` is the last key looked
    at and `done` whether all were."""

    rid: int
    partition: int
    digests: list[bytes]


class JoinRequest(Message, tag="join"):
    rid: int
    member: MemberRecord
    cluster: str


class JoinReply(Message, tag="join_ok"):
    rid: int
    state: Membership


class Heartbeat(Message, tag="hb"):
    """Sent to every member each heartbeat_interval; feeds the phi-accrual detector."""


class Gossip(Message, tag="gossip"):
    state: Membership


class AaeHashes(Message, tag="aae_h"):
    """Anti-entropy: the hashes of nodes `indices` of `level` of your tree of `partition`."""

    rid: int
    partition: int
    shape: tuple[int, int]  # (segments, branching): trees of another shape are not compared
    level: int
    indices: list[int]


class AaeHashesReply(Message, tag="aae_h_ok"):
    rid: int
    hashes: list[bytes] | None  # None: no tree built yet, or another shape


class AaeKeys(Message, tag="aae_k"):
    """Anti-entropy: your {digest: version hash} for these segments of `partition`."""

    rid: int
    partition: int
    segments: list[int]


class AaeKeysReply(Message, tag="aae_k_ok"):
    rid: int
    keys: dict[bytes, bytes] | None


class AaeFetch(Message, tag="aae_f"):
    """Anti-entropy: your stored records of these digests."""

    rid: int
    digests: list[bytes]


class AaeFetchReply(Message, tag="aae_f_ok"):
    rid: int
    records: list[bytes]


class ClientRepair(Message, tag="repair"):
    """An operator's `cluster repair`: run anti-entropy now (partition -1: all of them)."""

    rid: int
    partition: int = -1


class RepairResult(Message, tag="repair_ok"):
    rid: int
    exchanges: int
    keys_pushed: int
    keys_pulled: int


class ClientBackup(Message, tag="backup"):
    """An operator's `dynakv backup`: copy your store, consistently, into directory `path`
    (on the node's host). Served by the runtime (storage I/O), never by the core."""

    rid: int
    path: str


class BackupResult(Message, tag="backup_ok"):
    rid: int
    path: str
    bytes: int
    seconds: float


class ReapCheck(Message, tag="reap"):
    """Tombstone reaping: may these tombstone states be removed everywhere? (core.reaper)"""

    rid: int
    epoch: int
    items: list[tuple[str, str, bytes]]  # (bucket, key, encoded tombstone state)


class ReapCheckReply(Message, tag="reap_ok"):
    rid: int
    ok: list[bool]  # per item


class ReapCommit(Message, tag="reap_do"):
    """Every member agreed: delete your copy of each key if the tombstone state covers it."""

    epoch: int
    items: list[tuple[str, str, bytes]]


AnyMessage = (
    ClientGet
    | ClientPut
    | ClientClusterInfo
    | GetResult
    | PutResult
    | ClusterInfo
    | ErrorReply
    | Hello
    | HelloProof
    | ReplicaGet
    | ReplicaGetReply
    | ReplicaPut
    | ReplicaPutReply
    | JoinRequest
    | JoinReply
    | Gossip
    | Heartbeat
    | ClientClusterChange
    | ClientBucketChange
    | TransferRequest
    | TransferBatch
    | TransferDigestRequest
    | TransferDigests
    | TransferFetch
    | AaeHashes
    | AaeHashesReply
    | AaeKeys
    | AaeKeysReply
    | AaeFetch
    | AaeFetchReply
    | ClientRepair
    | RepairResult
    | ClientBackup
    | BackupResult
    | ReapCheck
    | ReapCheckReply
    | ReapCommit
    | ClientLogin
    | LoginResult
    | ClientUserChange
)

# Messages a node may send before the commit of the turn that produced them: requests to
# peers and read answers (a replica's, and a read's result to its client) acknowledge
# nothing. A read may so return a write that is not yet durable anywhere; a crash can then
# lose it, as it may lose any unacknowledged write, and the dots it carried are never
# minted again (a node renews its incarnation after an unclean stop). Everything else
# (write acknowledgements, replica acks, errors, forwarded results, gossip, transfers
# served) waits for the commit. The runtime and the simulator both follow this list.
UNGATED: frozenset[type] = frozenset(
    {
        ReplicaPut,
        ReplicaGet,
        ReplicaGetReply,
        GetResult,
        Heartbeat,
        TransferRequest,
        TransferDigestRequest,
        TransferFetch,
    }
)

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(AnyMessage)
_loose_decoder = msgspec.msgpack.Decoder()


def encode(message: Message) -> bytes:
    return _encoder.encode(message)


def decode(payload: bytes | memoryview) -> Message:
    """Decode one frame; raises msgspec.DecodeError / ValidationError on bad input."""
    return _decoder.decode(payload)


def describe_bad_frame(payload: bytes | memoryview) -> tuple[int, str, bool]:
    """For a frame that failed to decode: (rid to answer, what was wrong, connection usable?).

    A frame that is valid msgpack but names an unknown type or has bad fields gets an error
    reply and the connection stays open; a frame that is not msgpack at all cannot be trusted
    to have left the stream in sync, so the connection is closed.
    """
    try:
        loose = _loose_decoder.decode(payload)
    except (msgspec.DecodeError, ValueError, RecursionError):
        return 0, "undecodable frame", False
    if not isinstance(loose, list) or not loose:
        return 0, "frame is not a message array", True
    tag = loose[0]
    rid = loose[1] if len(loose) > 1 and isinstance(loose[1], int) else 0
    try:
        _decoder.decode(payload)
    except msgspec.ValidationError as exc:
        if "Invalid value" in str(exc) and "$[0]" in str(exc):
            return rid, f"unknown message type {tag!r}", True
        return rid, f"malformed {tag!r} message: {exc}", True
    except (msgspec.DecodeError, ValueError) as exc:
        return rid, f"malformed {tag!r} message: {exc}", True
    return rid, "frame decoded on second attempt", True
