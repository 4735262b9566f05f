"""Bucket types: named sets of bucket properties kept in the cluster's gossiped metadata.

A bucket uses the type of its own name if there is one, else the default type, `_default`
(not `default`: that is the name of the Redis front end's bucket, which is lww). A type
stores r and w as given (a number or a level: one, quorum, all) and they are resolved
against its n when used. A type may list replication counts per data center
(`datacenters`, as Cassandra's NetworkTopologyStrategy): its n is then their sum. Pure
values and functions: no I/O, no clock.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import msgspec

from dynakv.errors import InvalidRequest
from dynakv.levels import NAMED, plain
from dynakv.records import merge_by_name

__all__ = [
    "DEFAULT",
    "LEVELS",
    "MAX_VALUE_LIMIT",
    "PLACE_NAME",
    "POLICIES",
    "PROPS",
    "BucketType",
    "Datacenters",
    "ResolvedProps",
    "change",
    "check_datacenters",
    "covers",
    "differences",
    "held",
    "holders_missing",
    "merge_types",
    "resolve",
    "resolve_level",
    "storage_rule",
    "type_of",
    "valid_datacenter",
    "widest",
    "with_type",
]

DEFAULT = "_default"  # the type of every bucket that has none of its own
LEVELS = NAMED  # one, quorum, all, local_one, local_quorum, each_quorum (levels.py)
POLICIES = ("siblings", "lww")
# what a change may set
PROPS = ("n", "r", "w", "policy", "max_value_bytes", "datacenters", "table")
PLACE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")  # a data center's or rack's
MAX_VALUE_LIMIT = 32 << 20  # a value must fit a 64 MiB frame with its siblings' company

Level = int | str
Datacenters = tuple[tuple[str, int], ...]  # (data center, replicas there), sorted by name


class BucketType(msgspec.Struct, frozen=True, array_like=True):
    """One bucket type as the cluster knows it; a newer version replaces an older one."""

    name: str
    n: int  # replicas of each key
    r: Level  # default read quorum: a number 1..n or one | quorum | all
    w: Level  # default write quorum, likewise
    policy: str  # siblings | lww; fixed once the type exists
    max_value_bytes: int
    version: int  # bumped by whoever changes the type
    # Replicas per data center, sorted by name; n is their sum. () (and in an encoding from
    # before the field): n replicas along the ring's walk, whatever their data centers.
    datacenters: Datacenters = ()
    # The members that hold this version, sorted; None once every member does (and in an
    # encoding from before the field). A change answers its operator only when every member
    # that is up holds it, so no request after that finds a node with the old properties.
    seen: tuple[str, ...] | None = None
    # The DynamoDB table this type is, as JSON (dynamodb/tables.py); "" for a plain bucket
    # (and in an encoding from before the field). Opaque here: gossiped like any property.
    table: str = ""

    def __post_init__(self) -> None:
        problems = _problems(self.n, self.r, self.w, self.policy, self.max_value_bytes)
        problems.extend(_datacenter_problems(self.datacenters))
        if self.datacenters and not problems:
            if list(self.datacenters) != sorted(self.datacenters):
                problems.append("datacenters must be sorted by name")
            if self.n != sum(count for _, count in self.datacenters):
                problems.append(f"n must be the sum of the datacenters' counts, got {self.n}")
        if not self.name or "\0" in self.name:
            problems.append("a type name must be non-empty and without NUL")
        if self.version < 1:
            problems.append(f"a type version must be >= 1, got {self.version}")
        if problems:
            raise ValueError(f"bucket type {self.name!r}: " + "; ".join(problems))


@dataclass(frozen=True, slots=True)
class ResolvedProps:
    """A bucket's properties with r and w as numbers: what requests use."""

    n: int
    r: int | str  # a number, or a level naming data centers (resolved per key's replicas)
    w: int | str
    policy: str
    max_value_bytes: int
    type: str  # the type they come from: the bucket's own name, `_default`, or "" (the
    # node's file, while it knows no types: before it has joined a cluster)
    datacenters: Datacenters = ()  # replicas per data center; () for n along the walk


def resolve_level(level: Level, n: int) -> int | str:
    """A quorum as a number against n: one 1, quorum n // 2 + 1, all n, a number itself; a
    level that names data centers (local_quorum, ...) stays a name: what it needs depends on
    where each key's replicas are (levels.resolve)."""
    count = plain(level, n)
    return level if count is None else count


def resolve(bucket_type: BucketType) -> ResolvedProps:
    t = bucket_type
    n = t.n
    return ResolvedProps(
        n,
        resolve_level(t.r, n),
        resolve_level(t.w, n),
        t.policy,
        t.max_value_bytes,
        t.name,
        t.datacenters,
    )


def type_of(types: Iterable[BucketType], bucket: str) -> BucketType | None:
    """The type bucket uses: its own, else the default type, else None (no types known)."""
    fallback = None
    for t in types:
        if t.name == bucket:
            return t
        if t.name == DEFAULT:
            fallback = t
    return fallback


def storage_rule(types: tuple[BucketType, ...]) -> tuple[int, Datacenters]:
    """What the types ask the ring to hold: the largest n of a type that lists no data
    centers (0 when none), and the largest count of each data center the others list."""
    n = max((t.n for t in types if not t.datacenters), default=0)
    return n, widest(*(t.datacenters for t in types))


def widest(*rules: Datacenters) -> Datacenters:
    """The largest count of each data center any of `rules` lists, sorted by name."""
    counts: dict[str, int] = {}
    for rule in rules:
        for dc, count in rule:
            counts[dc] = max(count, counts.get(dc, 0))
    return tuple(sorted(counts.items()))


# --- merge -----------------------------------------------------------------------------------

_encoder = msgspec.msgpack.Encoder()


def _greater(a: BucketType, b: BucketType) -> BucketType:
    """The type that wins for one name: higher version, ties by the encoding of the
    properties (a total order); one version with the same properties joins who holds it."""
    if a is b or a == b:
        return a
    if a.version != b.version:
        return a if a.version > b.version else b
    mine, theirs = _content(a), _content(b)
    if mine == theirs:
        return a if covers(a, b) else b if covers(b, a) else _joined(a, b)
    return a if mine > theirs else b


def _content(t: BucketType) -> bytes:
    return _encoder.encode(msgspec.structs.replace(t, seen=None))


def covers(a: BucketType, b: BucketType) -> bool:
    """Whether a's holders include b's (None: every member)."""
    return a.seen is None or (b.seen is not None and set(b.seen) <= set(a.seen))


def _joined(a: BucketType, b: BucketType) -> BucketType:
    assert a.seen is not None and b.seen is not None
    return msgspec.structs.replace(a, seen=tuple(sorted(set(a.seen) | set(b.seen))))


def held(t: BucketType, name: str, members: Iterable[str]) -> BucketType:
    """t once member `name` holds it: `name` added to its holders, and None for holders
    once they cover `members` (every member that is not removed); t itself when nothing
    changes."""
    if t.seen is None:
        return t
    seen = set(t.seen)
    seen.add(name)
    if seen.issuperset(members):
        return msgspec.structs.replace(t, seen=None)
    if len(seen) == len(t.seen):
        return t
    return msgspec.structs.replace(t, seen=tuple(sorted(seen)))


def holders_missing(t: BucketType, members: Iterable[str]) -> list[str]:
    """The members that are not known to hold t yet (none once every member does)."""
    if t.seen is None:
        return []
    return sorted(set(members) - set(t.seen))


def merge_types(a: tuple[BucketType, ...], b: tuple[BucketType, ...]) -> tuple[BucketType, ...]:
    """Per-name winners of two name-sorted tuples; a or b itself when it covers the other."""
    return merge_by_name(a, b, _greater)


# --- changes ---------------------------------------------------------------------------------


def change(
    types: tuple[BucketType, ...], name: str, props: Mapping[str, object], mode: str = "put"
) -> BucketType:
    """The type `name` after setting `props` (InvalidRequest for anything wrong).

    mode "create" refuses an existing type, "update" a missing one, "put" does either. A new
    type starts from the properties its bucket has now (the default type's); its version is
    one above any it had. The policy of an existing type cannot change: copies written under
    one policy would merge differently under the other. `datacenters` (data center -> count,
    a mapping or pairs; empty to drop them) sets n to the sum of the counts; a type that
    starts listing data centers without a given r or w gets local_quorum for them. Whether
    each data center has that many members is for the caller (check_datacenters).
    """
    if mode not in ("create", "update", "put"):
        raise InvalidRequest(f"unknown bucket type change {mode!r}; use create, update or put")
    _check_name(name)
    unknown = sorted(set(props) - set(PROPS))
    if unknown:
        raise InvalidRequest(
            f"unknown bucket propert{'ies' if len(unknown) > 1 else 'y'} {', '.join(unknown)}; "
            f"known: {', '.join(PROPS)}"
        )
    existing = next((t for t in types if t.name == name), None)
    if mode == "create" and existing is not None:
        raise InvalidRequest(f"bucket type {name!r} exists; use update to change it")
    if mode == "update" and existing is None:
        raise InvalidRequest(f"no bucket type {name!r}; create it first")
    base = existing or type_of(types, name)
    if base is None:
        raise InvalidRequest("this node knows no bucket types yet: it has not joined a cluster")
    values: dict[str, object] = {p: getattr(base, p) for p in PROPS}
    values.update(props)
    problems: list[str] = []
    if "datacenters" in props:
        given, problems = _datacenters(props["datacenters"])
        if problems:
            raise InvalidRequest(f"bucket type {name!r}: " + "; ".join(problems))
        values["datacenters"] = given
        if given and not base.datacenters:
            for level in ("r", "w"):
                values[level] = props.get(level, "local_quorum")
    datacenters = values["datacenters"]
    if datacenters:
        total = sum(count for _, count in datacenters)  # type: ignore[attr-defined]
        if "n" in props and props["n"] != total:
            problems.append(
                f"n is the sum of the datacenters' counts ({total}) when a type lists them, "
                f"got {props['n']!r}"
            )
        values["n"] = total
    n, r, w = values["n"], values["r"], values["w"]
    policy, limit = values["policy"], values["max_value_bytes"]
    problems.extend(_problems(n, r, w, policy, limit))
    if problems:
        raise InvalidRequest(f"bucket type {name!r}: " + "; ".join(problems))
    if existing is not None and policy != existing.policy:
        raise InvalidRequest(
            f"the conflict policy of {name!r} is {existing.policy!r} and fixed once set: "
            f"copies written under it would merge differently under {policy!r}"
        )
    version = existing.version + 1 if existing is not None else 1
    table = values["table"]
    if not isinstance(table, str):
        raise InvalidRequest(f"bucket type {name!r}: table must be a string, got {table!r}")
    return BucketType(name, n, r, w, policy, limit, version, datacenters, (), table)  # type: ignore[arg-type]


def check_datacenters(bucket_type: BucketType, members: Mapping[str, int]) -> None:
    """InvalidRequest unless every data center the type lists has members (`members`: data
    center -> how many members it has) and at least as many as the replicas asked of it."""
    known = ", ".join(sorted(members)) or "none"
    for dc, count in bucket_type.datacenters:
        have = members.get(dc, 0)
        if not have:
            raise InvalidRequest(f"unknown data center {dc}: members are in {known}")
        if count > have:
            raise InvalidRequest(
                f"{dc} has {have} node{'s' if have != 1 else ''}, asked for {count}"
            )


def with_type(types: tuple[BucketType, ...], bucket_type: BucketType) -> tuple[BucketType, ...]:
    """types with bucket_type in place of the type of its name (or added), sorted by name."""
    rest = [t for t in types if t.name != bucket_type.name]
    return tuple(sorted([*rest, bucket_type], key=lambda t: t.name))


def differences(cluster: BucketType | None, mine: BucketType) -> dict[str, str]:
    """prop -> "file value -> cluster value" where the node's file disagrees with the cluster."""
    if cluster is None:
        return {"type": f"{mine.name} -> none (the bucket uses the default type)"}
    return {
        p: f"{getattr(mine, p)} -> {getattr(cluster, p)}"
        for p in PROPS
        if getattr(mine, p) != getattr(cluster, p)
    }


# --- validation ------------------------------------------------------------------------------


def _datacenters(given: object) -> tuple[Datacenters, list[str]]:
    """A change's datacenters as sorted pairs, and what is wrong with them."""
    pairs: list[object]
    if isinstance(given, Mapping):
        pairs = list(given.items())
    elif isinstance(given, list | tuple):
        pairs = list(given)
    else:
        return (), [f"datacenters must map data center names to counts, got {given!r}"]
    if not all(isinstance(p, list | tuple) and len(p) == 2 for p in pairs):
        return (), [f"datacenters must map data center names to counts, got {given!r}"]
    chosen = tuple(sorted((tuple(p) for p in pairs), key=lambda p: str(p[0])))
    problems = _datacenter_problems(chosen)  # type: ignore[arg-type]
    names = [dc for dc, _ in chosen]
    if len(set(names)) != len(names):
        problems.append("datacenters names a data center twice")
    return chosen, problems  # type: ignore[return-value]


def _datacenter_problems(datacenters: object) -> list[str]:
    problems: list[str] = []
    for dc, count in datacenters:  # type: ignore[attr-defined]
        if not isinstance(dc, str) or not valid_datacenter(dc):
            problems.append(
                f"invalid data center name {dc!r}: use 1-64 letters, digits, '.', '_' or '-'"
            )
        elif not _is_int(count) or count < 1:
            problems.append(f"the count of data center {dc} must be an integer >= 1, got {count!r}")
    return problems


def valid_datacenter(name: str) -> bool:
    """Whether name can be a data center's, as a node's --datacenter must be (PLACE_NAME)."""
    return PLACE_NAME.fullmatch(name) is not None


def _check_name(name: object) -> None:
    if not isinstance(name, str):
        raise InvalidRequest("a bucket type name must be a string")
    try:
        size = len(name.encode())
    except UnicodeEncodeError as exc:
        raise InvalidRequest("a bucket type name must be valid UTF-8") from exc
    if not 1 <= size <= 255 or "\0" in name:
        raise InvalidRequest("a bucket type name is a bucket name: 1-255 bytes of UTF-8, no NUL")


def _problems(n: object, r: object, w: object, policy: object, limit: object) -> list[str]:
    """What is wrong with these properties, in words (empty when nothing is)."""
    problems: list[str] = []
    if not _is_int(n) or n < 1:  # type: ignore[operator]
        problems.append(f"n must be an integer >= 1, got {n!r}")
        n = None
    for which, level in (("r", r), ("w", w)):
        if _is_int(level):
            if level < 1 or (n is not None and level > n):  # type: ignore[operator]
                problems.append(f"{which} must be between 1 and n={n}, got {level}")
        elif level not in LEVELS:
            levels = ", ".join(LEVELS)
            problems.append(f"{which} must be a number or one of {levels}, got {level!r}")
    if policy not in POLICIES:
        problems.append(f"policy must be one of {', '.join(POLICIES)}, got {policy!r}")
    if not _is_int(limit) or not 1 <= limit <= MAX_VALUE_LIMIT:  # type: ignore[operator]
        problems.append(
            f"max_value_bytes must be an integer in 1..{MAX_VALUE_LIMIT}, got {limit!r}"
        )
    return problems


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
