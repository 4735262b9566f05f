"""`dynakv export` and `dynakv import`: every live key of a cluster as JSON lines, and back.

The exporter walks the key partitions and pulls each one's stored records from its replicas
with the ownership transfer's own messages (TransferRequest / TransferBatch), merging the
copies of a key with `versions.sync_all` (partition_scan.PartitionScan): a key written to
only some replicas is still exported, once, with every sibling. A line is the HTTP API's
sibling JSON plus what restores the exact DVVSet: each sibling's dot and timestamp, and the
tombstones kept beside live values. The importer rebuilds that DVVSet and writes it with a
restoring put (ClientPut with `state`): the coordinator merges it as a replica merges a
peer's copy, minting no dot, so siblings stay siblings and the exported context stays valid.
`export_line` and `parse_line` are pure; the drivers below them do the I/O through the
clients.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO

from dynakv import versions
from dynakv.client import AsyncClient, Client
from dynakv.config import validate_location
from dynakv.core.membership import Membership
from dynakv.errors import DynakvError, InvalidRequest, Unavailable
from dynakv.partition_scan import PartitionScan, partition_replicas
from dynakv.versions import Clock, Entry, Sibling

BATCH = 512  # records per TransferRequest (a node serves at most 10 000)


class BadLine(InvalidRequest):
    """An import line that is not an exported key; the message names the line."""


# --- the line format: pure ------------------------------------------------------------------


def _sibling_json(sibling: Sibling, actor: str, counter: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if not sibling.deleted:
        out["value_b64"] = base64.b64encode(sibling.value).decode("ascii")
    out["content_type"] = sibling.content_type
    out["timestamp"] = sibling.timestamp
    if sibling.expires:
        out["expires"] = sibling.expires  # epoch ms; absent: never
    out["dot"] = [actor, counter]
    return out


def export_line(bucket: str, key: str, clock: Clock) -> dict[str, Any] | None:
    """The JSON object of one key (None for a key that holds only tombstones): `context` as
    a get returns it, `siblings` as the HTTP API shows them plus each one's dot and
    timestamp, and `tombstones` (dots and timestamps) when some stand beside live values."""
    siblings: list[dict[str, Any]] = []
    tombstones: list[dict[str, Any]] = []
    for entry in clock.entries:
        for i, sibling in enumerate(entry.values):
            kept = tombstones if sibling.deleted else siblings
            kept.append(_sibling_json(sibling, entry.actor, entry.counter - i))
    if not siblings:
        return None
    line: dict[str, Any] = {
        "bucket": bucket,
        "key": key,
        "context": versions.encode_context(versions.join(clock)),
        "siblings": siblings,
    }
    if tombstones:
        line["tombstones"] = tombstones
    return line


def _field(obj: dict[str, Any], name: str, kind: type, number: int) -> Any:
    value = obj.get(name)
    if not isinstance(value, kind) or isinstance(value, bool) is not (kind is bool):
        raise BadLine(f"line {number}: {name!r} must be a {kind.__name__}")
    return value


def _dotted(item: Any, deleted: bool, number: int) -> tuple[str, int, Sibling]:
    what = "tombstone" if deleted else "sibling"
    if not isinstance(item, dict):
        raise BadLine(f"line {number}: each {what} must be an object")
    dot = item.get("dot")
    if (
        not isinstance(dot, list)
        or len(dot) != 2
        or not isinstance(dot[0], str)
        or not isinstance(dot[1], int)
        or isinstance(dot[1], bool)
    ):
        raise BadLine(f"line {number}: each {what} needs a 'dot': [actor, counter]")
    timestamp = _field(item, "timestamp", int, number)
    content_type = item.get("content_type", "")
    if not isinstance(content_type, str):
        raise BadLine(f"line {number}: 'content_type' must be a string")
    if deleted:
        return dot[0], dot[1], Sibling(b"", True, content_type, timestamp)
    try:
        value = base64.b64decode(_field(item, "value_b64", str, number), validate=True)
    except binascii.Error as exc:
        raise BadLine(f"line {number}: 'value_b64' is not base64 ({exc})") from None
    expires = _field(item, "expires", int, number) if "expires" in item else 0
    if not 0 <= expires < 2**63:
        raise BadLine(f"line {number}: 'expires' must be epoch milliseconds, got {expires}")
    return dot[0], dot[1], Sibling(value, False, content_type, timestamp, expires)


def parse_line(text: str, number: int) -> tuple[str, str, Clock]:
    """(bucket, key, DVVSet) of one exported line; BadLine naming line `number` if it is
    malformed, names an invalid bucket or key, or its dots do not fit its context."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadLine(f"line {number}: not JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise BadLine(f"line {number}: not a JSON object")
    bucket = _field(obj, "bucket", str, number)
    key = _field(obj, "key", str, number)
    try:
        validate_location(bucket, key)
        context = versions.decode_context(_field(obj, "context", str, number))
    except InvalidRequest as exc:
        raise BadLine(f"line {number}: {exc.message}") from None
    items = obj.get("siblings")
    if not isinstance(items, list) or not items:
        raise BadLine(f"line {number}: 'siblings' must be a non-empty list")
    tombs = obj.get("tombstones", [])
    if not isinstance(tombs, list):
        raise BadLine(f"line {number}: 'tombstones' must be a list")
    dotted = [_dotted(x, False, number) for x in items] + [_dotted(x, True, number) for x in tombs]
    by_actor: dict[str, dict[int, Sibling]] = {}
    for actor, counter, sibling in dotted:
        by_actor.setdefault(actor, {})[counter] = sibling
    known = dict(context)
    for actor in by_actor:
        if actor not in known:
            raise BadLine(f"line {number}: dot of actor {actor!r} is not in the context")
    entries = []
    for actor, counter in context:
        values = by_actor.get(actor, {})
        # A DVVSet keeps, per actor, its newest dots: counter, counter - 1, ... in a row.
        if sorted(values, reverse=True) != list(range(counter, counter - len(values), -1)):
            raise BadLine(
                f"line {number}: the dots of actor {actor!r} are not its newest "
                f"({counter} and below, in a row)"
            )
        entries.append(Entry(actor, counter, tuple(values[c] for c in sorted(values)[::-1])))
    return bucket, key, Clock(tuple(entries))


# --- the drivers: I/O -----------------------------------------------------------------------


@dataclass
class ExportTotals:
    keys: int = 0
    skipped_tombstones: int = 0
    unreachable: set[str] = field(default_factory=set)


def export_cluster(
    client: Client,
    out: TextIO,
    bucket: str | None = None,
    on_partition: Callable[[int, ExportTotals], None] | None = None,
) -> ExportTotals:
    """Write one JSON line per live key (of `bucket`, or every bucket) to `out`, walking
    the partitions in order; `on_partition(partitions_done, totals)` after each."""
    state = client.cluster()
    totals = ExportTotals()
    size = state.ring.ring.size
    for partition in range(size):
        for clock_line in _export_partition(client, state, partition, bucket, totals):
            out.write(json.dumps(clock_line, separators=(",", ":")))
            out.write("\n")
            totals.keys += 1
        if on_partition is not None:
            on_partition(partition + 1, totals)
    return totals


def _export_partition(
    client: Client, state: Membership, partition: int, bucket: str | None, totals: ExportTotals
) -> Iterator[dict[str, Any]]:
    scan = PartitionScan.of(partition, partition_replicas(state, partition))
    answered = False
    while not scan.done:
        for address, after in scan.wanted():
            try:
                scan.add(address, client.partition_batch(address, partition, after, BATCH))
                answered = True
            except DynakvError:
                # Unreachable or failing: the other replicas hold its keys (a key only it
                # holds is missed; the export says which nodes it could not read).
                totals.unreachable.add(address)
                scan.drop(address)
        if not scan.sources and not answered:
            raise Unavailable(f"no replica of partition {partition} could be read", 1, 0)
        for b, k, clock in scan.ready():
            if bucket is not None and b != bucket:
                continue
            line = export_line(b, k, clock)
            if line is None:
                totals.skipped_tombstones += 1
            else:
                yield line


def read_lines(lines: Iterable[str]) -> Iterator[tuple[int, str, str, Clock]]:
    """(line number, bucket, key, clock) of each non-blank line; BadLine at the first bad."""
    for number, text in enumerate(lines, 1):
        if text.strip():
            yield (number, *parse_line(text, number))


async def import_lines(
    nodes: list[str],
    lines: Iterable[str],
    w: int | str | None = None,
    window: int = 64,
    on_done: Callable[[int], None] | None = None,
) -> int:
    """Write every line's key back with restoring puts, `window` at a time; returns the
    keys written. A bad line (BadLine) or a failed write stops the import; check the lines
    first (`read_lines`) to write nothing from a file with a bad one."""
    written = 0
    failure: BaseException | None = None
    slots = asyncio.Semaphore(window)

    async def one(number: int, bucket: str, key: str, clock: Clock) -> None:
        nonlocal written, failure
        try:
            await client.restore(bucket, key, versions.encode(clock), w=w)
            written += 1
            if on_done is not None:
                on_done(written)
        except DynakvError as exc:
            if failure is None:
                exc.message = f"line {number} ({bucket}/{key}): {exc.message}"
                failure = exc
        finally:
            slots.release()

    async with AsyncClient(nodes) as client:
        tasks = set()
        for number, bucket, key, clock in read_lines(lines):
            await slots.acquire()
            if failure is not None:
                break
            task = asyncio.create_task(one(number, bucket, key, clock))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks)
    if failure is not None:
        raise failure
    return written
