"""Node configuration: one frozen dataclass, built once from a TOML file and flags.

Nothing reads the environment after start-up; the core receives this object.
"""

from __future__ import annotations

import json
import math
import os
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from dynakv.bucket_types import DEFAULT, LEVELS, MAX_VALUE_LIMIT, PLACE_NAME, BucketType
from dynakv.errors import InvalidRequest

Policy = Literal["siblings", "lww"]
NAME_PATTERN = PLACE_NAME  # node names, data centers and racks alike
# Names the cluster secret file when [security] names none: an environment variable, never
# the secret itself, which a command line or environment would show to other users.
SECRET_FILE_ENV = "DYNAKV_CLUSTER_SECRET_FILE"


@dataclass(frozen=True)
class BucketProps:
    """Replication and conflict settings of a bucket (Dynamo's N, R, W) as a node's file
    gives them. They seed the cluster's bucket types when this node founds the cluster;
    after that the cluster's types rule (bucket_types.py, ClusterView.bucket)."""

    n: int = 3
    r: int | str = 2  # a number 1..n, or a level name (levels.py: one, quorum, local_quorum...)
    w: int | str = 2
    policy: Policy = "siblings"
    max_value_bytes: int | None = None  # None: the node's max_value_bytes
    # Replicas per data center ({} for n along the walk); n is their sum, and r and w
    # default to local_quorum when the file lists data centers (see load).
    datacenters: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError("n must be at least 1")
        if self.datacenters and self.n != sum(self.datacenters.values()):
            raise ValueError("n must be the sum of datacenters' counts")
        for level in (self.r, self.w):
            if isinstance(level, str) and level not in LEVELS:
                raise ValueError(f"r and w must be numbers or one of {', '.join(LEVELS)}")
            if isinstance(level, int) and not 1 <= level <= self.n:
                raise ValueError(f"r and w must be between 1 and n={self.n}")
        if self.policy not in ("siblings", "lww"):
            raise ValueError(f"unknown conflict policy {self.policy!r}")


@dataclass(frozen=True)
class SecurityConfig:
    """The `[security]` table: who may talk to this node. Everything is off by default (a
    trusted network, as `make run` assumes); docs/DESIGN.md's security section says what each
    setting protects."""

    # Peers prove they hold the cluster secret before anything else on the node port. A
    # file, never a flag: command lines are visible to every user of the machine.
    cluster_secret_file: str | None = None
    # Users and permissions on every client port (HTTP, RESP, binary).
    authentication: bool = False
    # TLS: this node's certificate and key (PEM), and the CA that signed the cluster's.
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_ca: str | None = None
    # Failed logins from one address (any client port) are limited by a token bucket: this
    # many at once, then this many a minute; meanwhile its logins are refused unchecked.
    failed_login_burst: int = 10
    failed_logins_per_minute: float = 6.0

    def __post_init__(self) -> None:
        if self.failed_login_burst < 1 or self.failed_logins_per_minute <= 0:
            raise ValueError(
                "[security] failed_login_burst must be at least 1 and failed_logins_per_minute "
                "more than 0"
            )
        # TLS is on with a certificate; its key, and the CA peers are checked against, must
        # come with it (tls_ca alone turns nothing on).
        if (self.tls_cert or self.tls_key) and not (self.tls_cert and self.tls_key and self.tls_ca):
            raise ValueError(
                "[security] tls_cert, tls_key and tls_ca go together: this node's certificate, "
                "its key, and the CA that signed the cluster's certificates"
            )


@dataclass(frozen=True)
class NodeConfig:
    """Everything a node needs; defaults are the documented ones."""

    name: str = "node1"
    cluster: str = "dynakv"
    data_dir: str = "./data/node1"
    node_addr: str = "127.0.0.1:7000"  # binary protocol: clients and peers
    http_addr: str = "127.0.0.1:8000"
    resp_addr: str | None = None  # HOST:PORT for the Redis protocol (RESP2); None: off
    resp_bucket: str = "default"  # the bucket Redis commands read and write
    dynamodb_addr: str | None = None  # HOST:PORT for the DynamoDB-compatible API; None: off
    # Where the node runs, gossiped with its membership record. Nodes sharing a machine
    # (one per core) share a rack, so that no two replicas of a key share a machine.
    datacenter: str = "dc1"
    rack: str = "rack1"
    ring_size: int = 64  # Q, power of two, fixed when the cluster is created
    defaults: BucketProps = field(default_factory=BucketProps)
    buckets: dict[str, BucketProps] = field(default_factory=dict)
    max_value_bytes: int = 1 << 20
    request_timeout: float = 5.0  # seconds a coordinator waits for replicas
    durability: Literal["fsync", "os", "none"] = "fsync"
    # fsync mode: the least time between the starts of two group commits (Cassandra's
    # commitlog group window). Writes arriving meanwhile share the next commit and its
    # fsync: fewer, larger commits cost less CPU per write (benchmarks/README.md), and a
    # write waits up to this much longer for its acknowledgement. 0: commit at once.
    commit_interval: float = 0.005
    # "wal": LMDB behind a write-ahead log (storage/wal.py), logged on the writer thread;
    # "lmdb": LMDB alone, one synced LMDB commit per group commit
    engine: Literal["lmdb", "wal", "memory"] = "wal"
    gossip_interval: float = 1.0
    sweep_interval: float = 0.05  # how often pending requests are checked for their deadline
    hint_window: float = 3 * 3600.0  # hints older than this are dropped (Cassandra's default)
    hint_budget_bytes: int = 1 << 30  # hinted writes beyond this many bytes are refused
    handoff_interval: float = 1.0  # how often hints are offered to their owners
    handoff_batch: int = 64  # hints in flight per owner
    transfer_concurrency: int = 2  # key partitions pulled at once (Riak's handoff_concurrency)
    transfer_interval: float = 0.2  # how often transfers are started and retried
    transfer_batch: int = 256  # objects per transfer batch
    transfer_batch_bytes: int = 4 << 20  # and at most about this many bytes
    read_repair: bool = True  # tests switch it off to prove anti-entropy alone converges
    # Which replicas a read asks: "r", the coordinator and R-1 more (Cassandra), a next one
    # only when one fails or is slower than read_speculation; "n", all N (Dynamo, Riak).
    read_fanout: Literal["r", "n"] = "r"
    read_speculation: float = 0.1  # s a read waits for its R before asking the rest too
    anti_entropy: bool = True  # false: no Merkle trees, no exchanges (benchmarks compare)
    aae_interval: float = 2.0  # seconds between starts of anti-entropy exchanges
    aae_concurrency: int = 2  # exchanges (one partition, one peer each) in flight at once
    aae_segments: int = 16384  # Merkle tree leaves per partition (benchmarks/merkle_cost.py)
    aae_branching: int = 16
    tombstone_grace: float = 3600.0  # s after a delete before its tombstone may be reaped
    # The tombstone sweep reads reap_scan records every reap_interval (512/s). Small steps:
    # each one holds the event loop (128 records: ~3-6 ms under load, 512: 7-11 ms).
    reap_interval: float = 0.25  # s between two steps of the tombstone sweep
    reap_scan: int = 128  # stored records the sweep reads per step
    background_p99_threshold: float = 0.2  # s: foreground p99 above it slows background work
    heartbeat_interval: float = 1.0  # each node heartbeats every other member this often
    phi_threshold: float = 8.0  # phi-accrual failure detector (Akka's defaults)
    phi_window: int = 1000
    phi_min_std_deviation: float = 0.1
    phi_acceptable_pause: float = 3.0
    # The log (runtime/logs.py): lines below log_level are not written; "json" writes one
    # JSON object a line. Both name the node on every line.
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = "text"
    security: SecurityConfig = field(default_factory=SecurityConfig)
    # Limits against careless and hostile clients (runtime/limits.py), on each of the node,
    # HTTP and RESP ports: connections beyond max_connections are closed at once; a client
    # connection silent for idle_timeout s with nothing in flight is closed (0: never); one
    # whose request takes more than request_read_timeout s to arrive whole is cut off (a
    # slowloris); a client with max_inflight_per_connection requests unanswered is not read
    # from until some are answered.
    max_connections: int = 4096
    idle_timeout: float = 300.0
    request_read_timeout: float = 30.0
    max_inflight_per_connection: int = 1024

    def __post_init__(self) -> None:
        if not NAME_PATTERN.fullmatch(self.name):
            raise ValueError(
                f"invalid node name {self.name!r}: use 1-64 letters, digits, '.', '_' or '-'"
            )
        for what, value in (("datacenter", self.datacenter), ("rack", self.rack)):
            if not NAME_PATTERN.fullmatch(value):
                raise ValueError(
                    f"invalid {what} {value!r}: use 1-64 letters, digits, '.', '_' or '-'"
                )
        if self.ring_size < 1 or self.ring_size & (self.ring_size - 1):
            raise ValueError("ring_size must be a power of two")
        security = self.security
        if self.dynamodb_addr and security.authentication and not security.cluster_secret_file:
            # SigV4 needs each access key's secret itself, kept sealed under the cluster
            # secret (key_sealing.py): without one, no signature could be checked.
            raise ValueError(
                "the DynamoDB endpoint (dynamodb_addr, --dynamodb) with [security] "
                "authentication needs cluster_secret_file (or env "
                f"{SECRET_FILE_ENV}): access keys are sealed under the cluster secret"
            )
        if self.durability not in ("fsync", "os", "none"):
            raise ValueError(f"unknown durability mode {self.durability!r}")
        if self.tombstone_grace <= 0:
            raise ValueError("tombstone_grace must be positive (seconds)")
        if not 0 <= self.commit_interval <= 1:
            raise ValueError("commit_interval must be between 0 and 1 second")
        if self.reap_interval <= 0 or self.reap_scan < 1:
            raise ValueError("reap_interval and reap_scan must be positive")
        if self.read_fanout not in ("r", "n"):
            raise ValueError(f"read_fanout must be 'r' or 'n', got {self.read_fanout!r}")
        if not 1 <= self.max_value_bytes <= MAX_VALUE_LIMIT:
            raise ValueError(f"max_value_bytes must be between 1 and {MAX_VALUE_LIMIT}")
        if self.max_connections < 1 or self.max_inflight_per_connection < 1:
            raise ValueError("max_connections and max_inflight_per_connection must be at least 1")
        if self.idle_timeout < 0 or self.request_read_timeout <= 0:
            raise ValueError(
                "idle_timeout must be 0 (never) or more, request_read_timeout more than 0 (s)"
            )
        if DEFAULT in self.buckets:
            raise ValueError(f"[buckets.{DEFAULT}] names the default type: use [defaults]")

    def bucket(self, name: str) -> BucketProps:
        """The props this node's file gives bucket `name` (the cluster's types rule: see
        ClusterView.bucket)."""
        return self.buckets.get(name, self.defaults)

    def bucket_types(self) -> tuple[BucketType, ...]:
        """The bucket types this file describes, sorted by name: `default` from [defaults],
        one per [buckets.NAME]. A founder seeds the cluster with them (version 1)."""
        seeded = {DEFAULT: self._bucket_type(DEFAULT, self.defaults)}
        for name, props in self.buckets.items():
            seeded[name] = self._bucket_type(name, props)
        return tuple(seeded[name] for name in sorted(seeded))

    def _bucket_type(self, name: str, props: BucketProps) -> BucketType:
        limit = props.max_value_bytes or self.max_value_bytes
        datacenters = tuple(sorted(props.datacenters.items()))
        return BucketType(name, props.n, props.r, props.w, props.policy, limit, 1, datacenters)


def load(path: str | Path | None = None, **overrides: Any) -> NodeConfig:
    """Build the config from an optional TOML file, then flag overrides (None means unset).

    File layout: top-level keys are NodeConfig fields; `[defaults]` holds
    n/r/w/policy/max_value_bytes; `[buckets.NAME]` holds per-bucket props. They seed the
    cluster's bucket types when this node founds the cluster (NodeConfig.bucket_types).
    Every value is checked against its field's type here, so a wrong one (`request_timeout
    = "5s"`) stops the node at start with the key, the type and the file named, instead of
    failing every request later. Errors are ValueError.
    """
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path, "rb") as handle:
                raw = tomllib.load(handle)
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"{path}: not valid TOML: {exc}") from exc
        except RecursionError:  # tomllib recurses once per nested array or inline table
            raise ValueError(f"{path}: not valid TOML: arrays or tables nested too deep") from None
        except UnicodeDecodeError as exc:  # tomllib.load decodes the bytes first
            raise ValueError(f"{path}: not UTF-8: {exc.reason} at byte {exc.start}") from None
        try:
            raw = _checked(raw)
            _with_secret_file_env(raw)
            config = NodeConfig(**raw)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from exc
    else:
        config = NodeConfig()
    changes = {k: v for k, v in overrides.items() if v is not None}
    if changes:
        config = replace(config, **changes)
    secret_file = os.environ.get(SECRET_FILE_ENV)
    if secret_file and config.security.cluster_secret_file is None:
        security = replace(config.security, cluster_secret_file=secret_file)
        config = replace(config, security=security)
    try:
        return with_resp_bucket(config)
    except ValueError as exc:
        if path is None or "resp_bucket" in changes:
            raise
        raise ValueError(f"{path}: {exc}") from exc  # the file's resp_bucket


def _with_secret_file_env(raw: dict[str, Any]) -> None:
    """The environment's secret file into the file's [security] before the config is built
    (checks that need a secret then see it); the file's own setting wins."""
    secret_file = os.environ.get(SECRET_FILE_ENV)
    security = raw.get("security")
    if secret_file and isinstance(security, SecurityConfig) and not security.cluster_secret_file:
        raw["security"] = replace(security, cluster_secret_file=secret_file)


def _checked(raw: dict[str, Any]) -> dict[str, Any]:
    """The file's top-level table with every key known and every value of its field's
    type; [defaults] and [buckets.NAME] become BucketProps."""
    known = {f.name for f in fields(NodeConfig)}
    unknown = set(raw) - known
    if unknown:
        raise ValueError(f"unknown config keys: {', '.join(sorted(unknown))}")
    hints = get_type_hints(NodeConfig)
    for key, value in raw.items():
        if key not in ("defaults", "buckets", "security"):
            _check_type(key, value, hints[key])
    checked = dict(raw)
    if "defaults" in raw:
        checked["defaults"] = _bucket_props("[defaults]", raw["defaults"])
    if "security" in raw:
        checked["security"] = SecurityConfig(
            **_table("[security]", raw["security"], SecurityConfig)
        )
    if "buckets" in raw:
        buckets = raw["buckets"]
        if not isinstance(buckets, dict):
            raise ValueError("buckets must be tables: [buckets.NAME]")
        checked["buckets"] = {
            name: _bucket_props(f"[buckets.{name}]", props) for name, props in buckets.items()
        }
    return checked


def _type_name(hint: Any) -> str:
    """A field's type as an operator reads it: 'a number', 'one of "r", "n"', ..."""
    if get_origin(hint) is Literal:
        return "one of " + ", ".join(json.dumps(a) for a in get_args(hint))
    if get_origin(hint) in (UnionType, Union):
        return " or ".join(_type_name(a) for a in get_args(hint) if a is not type(None))
    if get_origin(hint) is dict:
        key_type, value_type = get_args(hint)
        return f"a table of {_type_name(key_type)} -> {_type_name(value_type)}"
    return {
        bool: "true or false",
        int: "an integer",
        float: "a number",
        str: "a string",
    }.get(hint, str(hint))


def _fits(value: Any, hint: Any) -> bool:
    if get_origin(hint) is Literal:
        return value in get_args(hint) and not isinstance(value, bool)
    if get_origin(hint) in (UnionType, Union):
        return any(_fits(value, a) for a in get_args(hint))
    if get_origin(hint) is dict:
        key_type, value_type = get_args(hint)
        return isinstance(value, dict) and all(
            _fits(k, key_type) and _fits(v, value_type) for k, v in value.items()
        )
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if isinstance(value, bool):  # TOML's true is no number
        return False
    if hint is float:  # nan and inf are TOML floats, but no duration or threshold
        return isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))
    return isinstance(value, hint)


def _check_type(key: str, value: Any, hint: Any) -> None:
    if not _fits(value, hint):
        shown = json.dumps(value) if isinstance(value, str | int | float | bool) else repr(value)
        raise ValueError(f"{key} must be {_type_name(hint)}, got {shown}")


def _bucket_props(table: str, props: Any) -> BucketProps:
    """A [defaults] or [buckets.NAME] table; one that lists datacenters has n = their sum
    and r = w = local_quorum unless it says otherwise."""
    props = _table(table, props, BucketProps)
    datacenters = props.get("datacenters")
    if isinstance(datacenters, dict) and datacenters:
        props = {"r": "local_quorum", "w": "local_quorum", **props}
        props.setdefault("n", sum(datacenters.values()))
    try:
        return BucketProps(**props)
    except ValueError as exc:
        raise ValueError(f"{table}: {exc}") from exc


def _table(table: str, values: Any, cls: type) -> dict[str, Any]:
    """A TOML table for dataclass `cls`: every key one of its fields, every value of its type."""
    if not isinstance(values, dict):
        raise ValueError(f"{table} must be a table")
    hints = get_type_hints(cls)
    unknown = set(values) - set(hints)
    if unknown:
        raise ValueError(
            f"{table}: unknown keys {', '.join(sorted(unknown))} (known: {', '.join(hints)})"
        )
    for key, value in values.items():
        _check_type(f"{table} {key}", value, hints[key])
    return values


def with_resp_bucket(config: NodeConfig) -> NodeConfig:
    """The RESP bucket is `lww` (with the default N, R, W) unless `[buckets.NAME]` says more.

    Added whether or not this node listens for RESP, so that every node of a cluster, which
    all merge that bucket's replicas, agrees on its policy.
    """
    try:
        validate_location(config.resp_bucket, "k")
    except InvalidRequest as exc:
        raise ValueError(f"resp_bucket: {exc.message}") from exc
    if config.resp_bucket == DEFAULT:
        raise ValueError(f"resp_bucket: {DEFAULT} is the default type's name, not a bucket")
    if config.resp_bucket in config.buckets:
        return config
    props = replace(config.defaults, policy="lww")
    return replace(config, buckets={**config.buckets, config.resp_bucket: props})


def validate_location(bucket: str, key: str) -> None:
    """Bucket 1-255 bytes without NUL, key 1-1024 bytes, both valid UTF-8 strings."""
    try:
        bucket_len = len(bucket.encode())
        key_len = len(key.encode())
    except UnicodeEncodeError as exc:
        raise InvalidRequest("bucket and key must be valid UTF-8") from exc
    if not 1 <= bucket_len <= 255:
        raise InvalidRequest(f"bucket must be 1-255 bytes of UTF-8, got {bucket_len}")
    if "\0" in bucket:
        raise InvalidRequest("bucket must not contain NUL")
    if not 1 <= key_len <= 1024:
        raise InvalidRequest(f"key must be 1-1024 bytes of UTF-8, got {key_len}")
