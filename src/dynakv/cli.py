"""The `dynakv` command: run nodes, a local dev cluster, and talk to a running cluster."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import TextIO

import click
from rich.console import Console
from rich.table import Table

from dynakv import bucket_types as bt
from dynakv import config as config_mod
from dynakv import levels
from dynakv.cli_access_keys import key_group
from dynakv.cli_bench import bench_options, client_settings, scan_settings
from dynakv.cli_cert import CACERT_OPTION, cacert, cert_command, http_url, https_context
from dynakv.cli_user import USER_OPTION, credentials, http_request, user_group
from dynakv.client import Client
from dynakv.errors import DynakvError, InvalidRequest
from dynakv.processes import stop_processes

console = Console()
DEFAULT_NODE = "127.0.0.1:7001"
_NODE = click.option(
    "--node",
    default=DEFAULT_NODE,
    show_default=True,
    help="Any member's node port (binary protocol), HOST:PORT; not its HTTP or Redis port.",
)


def NODE_OPTION(command):  # type: ignore[no-untyped-def]  # a decorator, named as the others
    """--node, and --cacert for a cluster with TLS on (cli_cert.py)."""
    return CACERT_OPTION(_NODE(command))
# serve's flags default to None so that a --config file's values stand unless a flag is
# given; their help shows the default that applies when neither says anything.
SERVE_DEFAULTS = config_mod.NodeConfig()


def _with_default(text: str, setting: str) -> str:
    return f"{text} [default: {getattr(SERVE_DEFAULTS, setting)}]"


LOG_LEVEL_OPTION = click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    help=_with_default("Lines below this level are not written.", "log_level"),
)
LOG_FORMAT_OPTION = click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    help=_with_default("text, or one JSON object a line; both name the node.", "log_format"),
)


@click.group()
@click.version_option(package_name="dynakv")
@USER_OPTION
def main(user: str | None) -> None:
    """dynakv: a Dynamo-style, always-writable key-value store."""


@main.command()
@click.option(
    "--name", help=_with_default("Member name: this node's identity in the ring.", "name")
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False),
    help=_with_default("Where LMDB keeps this node's data.", "data_dir"),
)
@click.option(
    "--listen",
    "node_addr",
    help=_with_default("HOST:PORT for the binary protocol (clients and peers).", "node_addr"),
)
@click.option("--http", "http_addr", help=_with_default("HOST:PORT for the HTTP API.", "http_addr"))
@click.option("--resp", "resp_addr", help="HOST:PORT for the Redis protocol (RESP2); off if unset.")
@click.option("--dynamodb", "dynamodb_addr", help="HOST:PORT for the DynamoDB API; off if unset.")
@click.option(
    "--join",
    help="Join the cluster through this member's node port HOST:PORT; unset: found a "
    "cluster, or rejoin the one in --data-dir.",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, exists=True),
    help="A TOML file of settings (README, Configuration); flags override it.",
)
@click.option(
    "--cluster",
    help=_with_default("Cluster name; nodes of another cluster are refused.", "cluster"),
)
@click.option(
    "--durability",
    type=click.Choice(["fsync", "os", "none"]),
    help="fsync: a write is acknowledged once on disk (group commit); os: once written, "
    "not synced; none: in memory until the OS writes it. [default: fsync]",
)
@click.option(
    "--ring-size",
    type=int,
    help=_with_default("Partitions Q (a power of two), fixed at creation.", "ring_size"),
)
@click.option("--datacenter", help=_with_default("This node's data center.", "datacenter"))
@click.option(
    "--rack", help=_with_default("This node's rack; nodes on one machine share one.", "rack")
)
@LOG_LEVEL_OPTION
@LOG_FORMAT_OPTION
def serve(
    name: str | None,
    data_dir: str | None,
    node_addr: str | None,
    http_addr: str | None,
    resp_addr: str | None,
    dynamodb_addr: str | None,
    join: str | None,
    config_file: str | None,
    cluster: str | None,
    durability: str | None,
    ring_size: int | None,
    datacenter: str | None,
    rack: str | None,
    log_level: str | None,
    log_format: str | None,
) -> None:
    """Run one node until SIGINT or SIGTERM."""
    from dynakv.runtime.process import CannotListen, run
    from dynakv.tls import SecurityFilesError

    try:
        cfg = config_mod.load(
            config_file,
            name=name,
            data_dir=data_dir,
            node_addr=node_addr,
            http_addr=http_addr,
            resp_addr=resp_addr,
            dynamodb_addr=dynamodb_addr,
            cluster=cluster,
            durability=durability,
            ring_size=ring_size,
            datacenter=datacenter,
            rack=rack,
            log_level=log_level,
            log_format=log_format,
        )
    except (ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    try:
        status = run(cfg, join)
    except CannotListen as exc:
        raise click.ClickException(exc.strerror) from exc
    except SecurityFilesError as exc:
        raise click.ClickException(str(exc)) from exc
    sys.exit(status)


def _wait_http(addr: str, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(f"http://{addr}/v1/status", timeout=1) as response:
                if response.status == 200:
                    return True
        except OSError:
            time.sleep(0.1)
    return False


def _members_of(addr: str) -> int:
    """Members of the cluster as the node at HTTP `addr` knows them, not counting removed
    ones; 0 when it does not answer."""
    try:
        with urllib.request.urlopen(f"http://{addr}/v1/cluster", timeout=2) as response:
            members = json.load(response)["members"]
    except (OSError, ValueError):
        return 0
    return sum(1 for m in members if m["status"] != "removed")


def _exit_reason(code: int) -> str:
    """A node's exit status as an operator reads it."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    if code == 0:
        return "stopped (code 0: it left the cluster, or was told to stop)"
    return f"failed with code {code}; its log lines above say why"


@main.command("dev-cluster")
@click.option(
    "--nodes",
    "count",
    default=3,
    show_default=True,
    type=click.IntRange(1, 64),
    help="How many nodes, node1..nodeN.",
)
@click.option(
    "--data-dir",
    default="./data",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Node i keeps its data in DATA_DIR/nodeI; a second run keeps it.",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address every port uses.")
@click.option("--base-port", default=7000, show_default=True, help="Node i listens on base+i.")
@click.option("--base-http-port", default=8000, show_default=True, help="HTTP on base+i.")
@click.option("--resp-base-port", type=int, help="Redis protocol (RESP2) on base+i; off if unset.")
@click.option(
    "--dynamodb-base-port", default=8100, show_default=True, help="DynamoDB API on base+i; 0: off."
)
@click.option(
    "--datacenters", default=1, show_default=True, type=click.IntRange(1, 64),
    help="Spread the nodes over this many data centers (dc1, dc2, ...), in turn.",
)  # fmt: skip
@LOG_LEVEL_OPTION
@LOG_FORMAT_OPTION
def dev_cluster(
    count: int, data_dir: str, host: str, base_port: int, base_http_port: int,
    resp_base_port: int | None, dynamodb_base_port: int, datacenters: int, log_level: str | None,
    log_format: str | None,
) -> None:  # fmt: skip
    """Start COUNT local nodes joined into one cluster; Ctrl-C stops them all.

    Every node gets a rack of its own (rackI): on one machine they share it, but each stands
    for a machine of a real cluster. A node that exits (it left the cluster, was killed,
    failed) is named and the others keep serving; one that left earlier does not start
    again (its log says how to add it back)."""
    procs: list[subprocess.Popen[bytes]] = []
    running: dict[str, subprocess.Popen[bytes]] = {}
    root = Path(data_dir)
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    # Handle SIGINT ourselves too: a shell that starts us in the background ignores it.
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        for i in range(1, count + 1):
            if stopping:
                return
            node_addr = f"{host}:{base_port + i}"
            http_addr = f"{host}:{base_http_port + i}"
            args = [
                sys.executable, "-m", "dynakv", "serve",
                "--name", f"node{i}",
                "--data-dir", str(root / f"node{i}"),
                "--listen", node_addr,
                "--http", http_addr,
                "--datacenter", f"dc{(i - 1) % datacenters + 1}",
                "--rack", f"rack{i}",
            ]  # fmt: skip
            if i > 1:
                args += ["--join", f"{host}:{base_port + 1}"]
            for flag, value in (("--log-level", log_level), ("--log-format", log_format)):
                if value is not None:
                    args += [flag, value]
            resp = "" if resp_base_port is None else f"{host}:{resp_base_port + i}"
            if resp:
                args += ["--resp", resp]
            dynamodb = f"{host}:{dynamodb_base_port + i}" if dynamodb_base_port else ""
            if dynamodb:
                args += ["--dynamodb", dynamodb]
            proc = subprocess.Popen(args, start_new_session=True)
            procs.append(proc)
            if not _wait_http(http_addr, 30, proc):
                if proc.poll() is None:
                    raise click.ClickException(f"node{i} did not start (HTTP {http_addr})")
                console.print(f"[red]node{i} did not start: {_exit_reason(proc.returncode)}[/]")
                continue
            running[f"node{i}"] = proc
            place = f"dc{(i - 1) % datacenters + 1}/rack{i}"
            line = f"node{i} ({place}): node port [bold]{node_addr}[/]  http [bold]{http_addr}[/]"
            line += f"  resp [bold]{resp}[/]" if resp else ""
            line += f"  dynamodb [bold]{dynamodb}[/]" if dynamodb else ""
            console.print(line, soft_wrap=True)  # one line per node, also when piped
        if not running:
            raise click.ClickException("no node started")
        first = int(next(iter(running))[len("node") :])
        first_http = f"{host}:{base_http_port + first}"
        deadline = time.monotonic() + 30
        while _members_of(first_http) < len(running) and time.monotonic() < deadline:
            time.sleep(0.2)
        console.print(f"cluster of {len(running)} up; console: http://{first_http}/")
        console.print("Ctrl-C stops all nodes.")
        while not stopping and running:
            for name, proc in list(running.items()):
                if proc.poll() is not None:
                    del running[name]
                    others = ", ".join(running) or "none"
                    console.print(
                        f"[red]{name} exited: {_exit_reason(proc.returncode)}[/]; still "
                        f"serving: {others}"
                    )
            time.sleep(0.3)
    except KeyboardInterrupt:
        pass
    finally:
        stop_processes(procs)
        console.print("all nodes stopped")


def _client(node: str, timeout: float = 10.0) -> Client:
    return Client(node, timeout=timeout, tls=cacert(), **credentials())


TIMEOUT_OPTION = click.option(
    "--timeout",
    default=10.0,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds to wait for the node to connect and to answer.",
)


def _fail(exc: DynakvError) -> None:
    raise click.ClickException(f"{exc.code}: {exc.message}")


class _Level(click.ParamType):
    """A consistency level: a number, or one, quorum, all, local_one, local_quorum,
    each_quorum (levels.py)."""

    name = "level"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None):
        if isinstance(value, int):
            return value
        try:
            return levels.parse(param.name if param and param.name else "level", str(value))
        except InvalidRequest as exc:
            self.fail(exc.message, param, ctx)


LEVEL = _Level()
LEVEL_HELP = "a count, or one|quorum|all|local_one|local_quorum|each_quorum"
CONTEXT_HELP = (
    "The context of a get: replace the values it read (default: none, a blind write kept "
    "beside the others as a sibling)."
)


@main.command()
@click.argument("bucket")
@click.argument("key")
@NODE_OPTION
@click.option("--r", "r", type=LEVEL, help=LEVEL_HELP)
@TIMEOUT_OPTION
def get(bucket: str, key: str, node: str, r: int | str | None, timeout: float) -> None:
    """Print the value of BUCKET/KEY and a newline; the context goes to stderr. Siblings:
    each value base64-encoded on a line of its own, and their count on stderr."""
    import base64

    try:
        with _client(node, timeout) as client:
            result = client.get(bucket, key, r=r)
    except DynakvError as exc:
        _fail(exc)
        return
    if not result.values:
        click.echo("not found", err=True)
        if result.context:
            click.echo(f"context: {result.context}", err=True)
        sys.exit(1)
    if len(result.values) == 1:
        sys.stdout.buffer.write(result.values[0] + b"\n")
        sys.stdout.flush()
    else:
        click.echo(f"{len(result.values)} siblings, base64, one per line:", err=True)
        for value in result.values:
            click.echo(base64.b64encode(value).decode())
    click.echo(f"context: {result.context}", err=True)


@main.command()
@click.argument("bucket")
@click.argument("key")
@click.argument("value")
@NODE_OPTION
@click.option("--context", default=None, help=CONTEXT_HELP)
@click.option("--w", "w", type=LEVEL, help=LEVEL_HELP)
@click.option("--content-type", default="", help="Stored with the value, returned by reads.")
@TIMEOUT_OPTION
def put(
    bucket: str, key: str, value: str, node: str, context: str | None, w: int | str | None,
    content_type: str, timeout: float,
) -> None:  # fmt: skip
    """Store VALUE (or stdin when VALUE is '-') at BUCKET/KEY; prints the new context."""
    data = sys.stdin.buffer.read() if value == "-" else value.encode()
    try:
        with _client(node, timeout) as client:
            new_context = client.put(
                bucket, key, data, context=context, w=w, content_type=content_type
            )
    except DynakvError as exc:
        _fail(exc)
        return
    click.echo(new_context)


@main.command()
@click.argument("bucket")
@click.argument("key")
@NODE_OPTION
@click.option(
    "--context",
    default=None,
    help="The context of a get: delete what it read (default: what the coordinator holds).",
)
@click.option("--w", "w", type=LEVEL, help=LEVEL_HELP)
@TIMEOUT_OPTION
def delete(
    bucket: str, key: str, node: str, context: str | None, w: int | str | None, timeout: float
) -> None:
    """Delete BUCKET/KEY (a tombstone, reaped later)."""
    try:
        with _client(node, timeout) as client:
            client.delete(bucket, key, context=context, w=w)
    except DynakvError as exc:
        _fail(exc)


@main.command("keys")
@click.argument("bucket")
@NODE_OPTION
@TIMEOUT_OPTION
def keys_command(bucket: str, node: str, timeout: float) -> None:
    """Print every live key of BUCKET, one a line: a full scan of every partition, each
    merged from its replicas (costly whatever the bucket's size). Deleted keys are left out."""
    unreachable: set[str] = set()
    try:
        with _client(node, timeout) as client:
            out = click.get_text_stream("stdout")
            for key in client.list_keys(bucket, unreachable=unreachable):
                out.write(key + "\n")
            out.flush()
    except DynakvError as exc:
        _fail(exc)
        return
    if unreachable:
        click.echo(
            "could not read from " + ", ".join(sorted(unreachable))
            + ": a key only they hold is missing",
            err=True,
        )  # fmt: skip
        sys.exit(2)


@main.command("export")
@NODE_OPTION
@click.option("--bucket", default=None, help="Only this bucket's keys (still a full scan).")
@click.option("--no-progress", is_flag=True, help="No progress bar on stderr.")
@TIMEOUT_OPTION
def export_command(node: str, bucket: str | None, no_progress: bool, timeout: float) -> None:
    """Write every live key to stdout as JSON lines, siblings with their context: a full
    scan of every partition, each merged from its replicas. Keys that are only tombstones
    are left out. Restore with `dynakv import`."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from dynakv import export as export_mod

    progress = Progress(
        TextColumn("exporting"), BarColumn(), MofNCompleteColumn(), TextColumn("partitions"),
        TextColumn("{task.fields[keys]} keys"),
        console=Console(stderr=True), disable=no_progress, transient=True,
    )  # fmt: skip
    try:
        with _client(node, timeout) as client, progress:
            size = client.cluster().ring.ring.size
            task = progress.add_task("export", total=size, keys=0)

            def advance(done: int, totals: export_mod.ExportTotals) -> None:
                progress.update(task, completed=done, keys=totals.keys)

            out = click.get_text_stream("stdout")
            totals = export_mod.export_cluster(client, out, bucket, advance)
            out.flush()
    except DynakvError as exc:
        _fail(exc)
        return
    click.echo(
        f"exported {totals.keys} keys ({totals.skipped_tombstones} deleted keys left out)",
        err=True,
    )
    if totals.unreachable:
        click.echo(
            "could not read from " + ", ".join(sorted(totals.unreachable))
            + ": a key only they hold is missing",
            err=True,
        )  # fmt: skip
        sys.exit(2)


@main.command("import")
@click.argument("file", type=click.File("r", encoding="utf-8"))
@NODE_OPTION
@click.option("--w", "w", type=LEVEL, help=LEVEL_HELP)
@click.option("--window", default=64, show_default=True, type=click.IntRange(1, 4096),
              help="Writes in flight at once.")  # fmt: skip
@click.option("--no-progress", is_flag=True, help="No progress bar on stderr.")
@TIMEOUT_OPTION
def import_command(
    file: TextIO, node: str, w: int | str | None, window: int, no_progress: bool, timeout: float
) -> None:
    """Write back the keys of FILE (JSON lines of `dynakv export`; - for stdin), siblings as
    siblings: each key's exported state is merged into its replicas, minting nothing. The
    whole file is checked first; a bad line is named and nothing is written."""
    import asyncio

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from dynakv import export as export_mod

    lines = file.readlines()
    try:
        count = sum(1 for _ in export_mod.read_lines(lines))
    except export_mod.BadLine as exc:
        raise click.ClickException(f"{file.name}: {exc.message}; nothing imported") from None
    progress = Progress(
        TextColumn("importing"), BarColumn(), MofNCompleteColumn(), TextColumn("keys"),
        console=Console(stderr=True), disable=no_progress, transient=True,
    )  # fmt: skip
    try:
        with progress:
            task = progress.add_task("import", total=count)
            written = asyncio.run(
                export_mod.import_lines(
                    [node], lines, w, window,
                    lambda done: progress.update(task, completed=done),
                )
            )  # fmt: skip
    except DynakvError as exc:
        _fail(exc)
        return
    click.echo(f"imported {written} keys", err=True)


@main.command("backup")
@click.argument("directory", type=click.Path(file_okay=False, resolve_path=True))
@NODE_OPTION
@click.option("--timeout", default=600.0, show_default=True,
              type=click.FloatRange(min=0, min_open=True),
              help="Seconds to wait for the copy.")  # fmt: skip
def backup_command(directory: str, node: str, timeout: float) -> None:
    """Have the node at --node copy its store, consistently and while it serves, into
    DIRECTORY on that node's host (new or empty). See the README's restore procedure."""
    try:
        with _client(node, timeout) as client:
            result = client.backup(directory)
    except DynakvError as exc:
        _fail(exc)
        return
    click.echo(f"backup of {node} in {result.path}: {result.bytes} bytes, {result.seconds} s")


@main.group()
def cluster() -> None:
    """Inspect the cluster (status, ring, repair) and change its membership (leave, remove);
    nodes join with `dynakv serve --join`."""


def _cluster_json(node: str) -> dict:
    """Ask the node for its HTTP address, then read /v1/cluster and each member's status."""
    try:
        with _client(node) as client:
            state = client.cluster()
    except DynakvError as exc:
        _fail(exc)
        raise
    me = next((m for m in state.members if m.node_addr == node), state.members[0])
    request = http_request(http_url(me.http_addr, "/v1/cluster"))
    with urllib.request.urlopen(request, timeout=5, context=https_context()) as response:
        return json.load(response)


_STATUS_COLOURS = {"up": "green", "joining": "yellow", "leaving": "yellow", "removed": "dim"}


def _member_status(http_addr: str) -> dict | None:
    try:
        request = http_request(http_url(http_addr, "/v1/status"))
        with urllib.request.urlopen(request, timeout=3, context=https_context()) as response:
            return json.load(response)
    except OSError:
        return None


def _reaping_waits(status: dict | None) -> str:
    """Why this node's tombstone sweep waits, if it does ("" if not)."""
    return str((status or {}).get("tombstone_reaping", {}).get("blocked") or "")


def _addresses(member: dict) -> str:
    """Node port and HTTP port in one cell: the HTTP host only when it differs."""
    node_host, _, _ = member["node_addr"].rpartition(":")
    http_host, _, http_port = member["http_addr"].rpartition(":")
    http = f":{http_port}" if http_host == node_host else member["http_addr"]
    return f"{member['node_addr']} {http}"


def _replication_change(replication: dict) -> str:
    """"replication rising/falling from .. to .." while a transfer changes the replication
    (N, or a data center's count); "" when none does."""
    placed, target = replication.get("placed"), replication.get("next")
    before = replication.get("datacenters") or {}
    after = replication.get("next_datacenters")
    if target is None:
        return ""
    parts = []
    if target != placed:
        parts.append(f"{'rising' if target > placed else 'falling'} from {placed} to {target}")
    for dc in sorted(set(before) | set(after or {})):
        old, new = before.get(dc, 0), (after or {}).get(dc, 0)
        if old != new:
            trend = "rising" if new > old else "falling"
            parts.append(f"{trend} in {dc} from {old} to {new}")
    return "replication " + "; ".join(parts) if parts else ""


@cluster.command("status")
@NODE_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON instead.")
def cluster_status(node: str, as_json: bool) -> None:
    """Members (status, place, node and HTTP ports, ownership share, hints, tombstones
    reaped) and transfers in progress."""
    from rich import box
    from rich.progress import BarColumn, Progress, TextColumn

    view = _cluster_json(node)
    size = view["ring"]["size"]
    members = sorted(view["members"], key=lambda m: (m.get("datacenter", ""), m["name"]))
    statuses = {
        m["name"]: _member_status(m["http_addr"]) if m["status"] != "removed" else None
        for m in members
    }
    if as_json:
        click.echo(json.dumps({**view, "member_status": statuses}, indent=2))
        return
    title = f"cluster {view['cluster']} (epoch {view['epoch']}, {size} partitions)"
    # Fits 80 columns: place and ports share a cell each, and cells fold rather than cut.
    table = Table(
        title=title, box=box.SIMPLE_HEAD, show_edge=False, title_justify="left",
        collapse_padding=True, pad_edge=False,
    )  # fmt: skip
    for column in ("name", "status", "place", "node, http port"):
        table.add_column(column, overflow="fold")
    for column in ("parts", "share", "hints", "reaped"):
        table.add_column(column, justify="right", overflow="fold")
    transfers: list[tuple[str, dict]] = []
    for i, m in enumerate(members):
        dc = m.get("datacenter", "")
        if i and dc != members[i - 1].get("datacenter", ""):
            table.add_section()  # one section per data center
        status = statuses[m["name"]]
        if status is not None:
            transfers.extend((m["name"], t) for t in status.get("transfers", []))
        colour = _STATUS_COLOURS.get(m["status"], "red")
        table.add_row(
            m["name"], f"[{colour}]{m['status']}[/]", f"{dc}/{m.get('rack', '')}",
            _addresses(m), str(m["partitions"]), f"{100 * m['partitions'] / size:.1f}%",
            "-" if status is None else str(status.get("hints_pending", 0)),
            "-" if status is None else str(status.get("tombstone_reaping", {}).get("reaped", 0)),
        )  # fmt: skip
    console.print(table)
    for name, status in statuses.items():
        if _reaping_waits(status):
            console.print(f"{name}: tombstone reaping waits: {_reaping_waits(status)}")
    line = _replication_change(view.get("replication") or {})
    if line:
        console.print(line)
    pending = view.get("transfers_pending", 0)
    if not pending:
        console.print("no transfers in progress")
        return
    console.print(f"{pending} partition transfers pending towards the next ring")
    progress = Progress(
        TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[moved]}"),
        console=console, auto_refresh=False,
    )  # fmt: skip
    for name, t in transfers:
        moved = f"{t['keys']} keys, {t['bytes'] / 1e6:.1f} MB; source {t['from']} has "
        moved += f"{t['source_total_keys']} keys, {t['source_total_bytes'] / 1e6:.1f} MB"
        description = f"partition {t['partition']} -> {name}"
        progress.add_task(description, total=1.0, completed=t["fraction"], moved=moved)
    progress.refresh()
    console.print(progress)


@cluster.command("repair")
@NODE_OPTION
@click.option("--partition", type=int, default=-1, help="One partition (default: all of them).")
def cluster_repair(node: str, partition: int) -> None:
    """Run anti-entropy now between NODE and the other replicas of its partitions."""
    view = _cluster_json(node)
    size = view["ring"]["size"]
    if not -1 <= partition < size:
        raise click.BadParameter(
            f"{partition} is no partition: the ring has {size}, 0 to {size - 1}",
            param_hint="--partition",
        )
    me = next((m for m in view["members"] if m["node_addr"] == node), view["members"][0])
    url = http_url(me["http_addr"], f"/v1/repair?partition={partition}")
    request = http_request(url, "POST")
    try:
        with urllib.request.urlopen(request, timeout=120, context=https_context()) as response:
            result = json.load(response)
    except urllib.error.HTTPError as exc:
        body = json.load(exc)
        raise click.ClickException(f"{body['error']}: {body['message']}") from exc
    click.echo(
        f"{result['exchanges']} exchanges; {result['keys_pushed']} keys pushed to other "
        f"replicas, {result['keys_pulled']} pulled from them"
    )


def _change(node: str, op: str, name: str) -> None:
    try:
        with _client(node) as client:
            state = client.cluster_change(op, name)
    except DynakvError as exc:
        _fail(exc)
        return
    record = next((m for m in state.members if m.name == name), None)
    click.echo(f"{name}: {record.status if record else 'unknown'}")


@cluster.command("leave")
@click.argument("name")
@NODE_OPTION
def cluster_leave(name: str, node: str) -> None:
    """Hand every partition of NAME to its new owner; then NAME stops."""
    _change(node, "leave", name)


@cluster.command("remove")
@click.argument("name")
@NODE_OPTION
def cluster_remove(name: str, node: str) -> None:
    """Take dead member NAME out; new owners rebuild its partitions from the other replicas."""
    _change(node, "remove", name)


@main.group()
def bucket() -> None:
    """Bucket types: the N, R, W, conflict policy and value limit of buckets, kept by the
    cluster. A bucket uses the type of its name, else the default type (_default)."""


def _level(value: str | None) -> int | str | None:
    """An R or W option: a number, or one | quorum | all."""
    if value is None:
        return None
    return int(value) if value.isdigit() else value


def _bucket_options(function):  # type: ignore[no-untyped-def]
    options = [
        click.option("--n", "n", type=int, help="Replicas of each key."),
        click.option("--r", "r", help="Default read quorum: a number or one, quorum, all."),
        click.option("--w", "w", help="Default write quorum: a number or one, quorum, all."),
        click.option("--policy", type=click.Choice(["siblings", "lww"]), help="Fixed once set."),
        click.option("--max-value-bytes", type=int, help="The largest value a put may store."),
        click.option(
            "--datacenters",
            help="Replicas per data center, e.g. dc1=3,dc2=2 (n is their sum); '' drops them.",
        ),
        NODE_OPTION,
    ]
    for option in reversed(options):
        function = option(function)
    return function


def _set_bucket(mode: str, name: str, node: str, **given: object) -> None:
    props = {k: v for k, v in given.items() if v is not None}
    if "r" in props or "w" in props:
        props.update({k: _level(props[k]) for k in ("r", "w") if k in props})  # type: ignore[arg-type]
    if "datacenters" in props:
        props["datacenters"] = _datacenter_counts(str(props["datacenters"]))
    try:
        with _client(node) as client:
            changed = client.set_bucket_type(name, mode, **props)  # type: ignore[arg-type]
            _show_bucket(client, name)
            members = [m.name for m in client.cluster().members if m.status != "removed"]
            missing = bt.holders_missing(changed, members)
            if missing:
                click.echo(
                    f"warning: not yet held by {', '.join(missing)} (down or not reached in "
                    f"time): requests they coordinate use the old properties until gossip "
                    f"brings them the change",
                    err=True,
                )
    except DynakvError as exc:
        _fail(exc)


def _datacenter_counts(text: str) -> dict[str, int]:
    """--datacenters dc1=3,dc2=2 as {"dc1": 3, "dc2": 2} ("" for none)."""
    counts: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        dc, sep, count = item.partition("=")
        if not sep or not count.strip().lstrip("-").isdigit():
            raise click.BadParameter(f"{item!r} is not DC=COUNT", param_hint="--datacenters")
        counts[dc.strip()] = int(count)
    return counts


def _show_bucket(client: Client, name: str) -> None:
    props = client.bucket(name)
    source = "its own type" if props.type == name else f"the default type {props.type}"
    placed = ""
    if props.datacenters:
        placed = " datacenters=" + ",".join(f"{dc}={c}" for dc, c in props.datacenters)
    click.echo(
        f"{name}: n={props.n} r={props.r} w={props.w} policy={props.policy} "
        f"max_value_bytes={props.max_value_bytes}{placed} (from {source})"
    )
    members = [m for m in client.cluster().members if m.status != "removed"]
    if props.n > len(members):
        click.echo(
            f"note: n={props.n} is more than the {len(members)} members: each key has "
            f"{len(members)} replicas until more nodes join"
        )


@bucket.command("create")
@click.argument("name")
@_bucket_options
def bucket_create(name: str, node: str, **props: object) -> None:
    """Create the bucket type NAME (unset props: the default type's)."""
    _set_bucket("create", name, node, **props)


@bucket.command("update")
@click.argument("name")
@_bucket_options
def bucket_update(name: str, node: str, **props: object) -> None:
    """Change the bucket type NAME: R and W apply at once, a higher N moves data."""
    _set_bucket("update", name, node, **props)


@bucket.command("show")
@click.argument("name")
@NODE_OPTION
def bucket_show(name: str, node: str) -> None:
    """The props bucket NAME has now, and which type they come from."""
    try:
        with _client(node) as client:
            _show_bucket(client, name)
    except DynakvError as exc:
        _fail(exc)


@bucket.command("list")
@NODE_OPTION
def bucket_list(node: str) -> None:
    """Every bucket type of the cluster."""
    try:
        with _client(node) as client:
            types = client.bucket_types()
    except DynakvError as exc:
        _fail(exc)
        return
    table = Table(title="bucket types")
    for column in ("name", "n", "r", "w", "policy", "max_value_bytes", "datacenters", "version"):
        table.add_column(column)
    for t in types:
        datacenters = ",".join(f"{dc}={count}" for dc, count in t.datacenters)
        table.add_row(
            t.name, str(t.n), str(t.r), str(t.w), t.policy, str(t.max_value_bytes),
            datacenters, str(t.version),
        )  # fmt: skip
    console.print(table)


@cluster.command("ring")
@NODE_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print the ring as JSON instead.")
def cluster_ring(node: str, as_json: bool) -> None:
    """The owner of every partition."""
    view = _cluster_json(node)
    if as_json:
        click.echo(json.dumps({"epoch": view["epoch"], **view["ring"]}, indent=2))
        return
    for index, owner in enumerate(view["ring"]["owners"]):
        click.echo(f"{index:5d} {owner}")


@main.command()
@click.option(
    "--nodes",
    default=DEFAULT_NODE,
    show_default=True,
    help="Comma-separated node ports HOST:PORT of an existing cluster.",
)
@click.option(
    "--local",
    "local",
    type=click.IntRange(1, 16),
    help="Start a local cluster of this many nodes, and stop it at the end.",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False),
    help="Data directory of the local cluster (default: a temporary one, removed).",
)
@click.option(
    "--durability",
    type=click.Choice(["fsync", "os", "none"]),
    default="fsync",
    show_default=True,
    help="Durability of the local cluster.",
)
@click.option("--n", "n", type=int, help="N of the local cluster (default min(3, nodes)).")
@click.option(
    "--node-setting",
    "node_settings",
    multiple=True,
    metavar="KEY=VALUE",
    help="A node config setting of the local cluster (TOML value), e.g. anti_entropy=false.",
)
@click.option("--r", "r", type=int, help="R: local cluster default and per-request override.")
@click.option("--w", "w", type=int, help="W: local cluster default and per-request override.")
@click.option(
    "--workload",
    type=click.Choice(["a", "b", "c", "e", "f", "w"], case_sensitive=False),
    default="a",
    show_default=True,
    help="A 50/50 read/update, B 95/5, C read, E short ranges (95% scans as Queries, 5% "
    "inserts; --api dynamodb), F read-modify-write, W write.",
)
@click.option(
    "--distribution",
    type=click.Choice(["zipfian", "uniform"]),
    default="zipfian",
    show_default=True,
    help="How keys are chosen: a few hot ones (YCSB's zipfian), or all alike.",
)
@click.option(
    "--records",
    default=10_000,
    show_default=True,
    type=click.IntRange(1),
    help="Records inserted by the load phase; keys are user0..user<records-1>.",
)
@click.option("--operations", type=click.IntRange(1), help="Operations in the run phase.")
@click.option(
    "--duration", type=float, help="Seconds of run phase (default 10 unless --operations is given)."
)
@click.option(
    "--concurrency",
    default=64,
    show_default=True,
    type=click.IntRange(1),
    help="Requests in flight.",
)
@click.option(
    "--connections",
    type=click.IntRange(1),
    help="Connections per generator process (default about one per 8-16 in flight).",
)
@click.option(
    "--value-size",
    default=1024,
    show_default=True,
    type=click.IntRange(0),
    help="Bytes per value.",
)
@click.option(
    "--rate",
    type=float,
    help="Target ops/s (open loop, latency from the scheduled time); default: max.",
)
@click.option(
    "--processes",
    default=1,
    show_default=True,
    type=click.IntRange(1),
    help="Generator processes; their histograms are merged.",
)
@click.option("--bucket", default="bench", show_default=True, help="The bucket written and read.")
@click.option("--seed", default=1, show_default=True, type=int, help="Seed of the key choice.")
@click.option("--no-load", is_flag=True, help="Skip the load phase (records already there).")
@click.option(
    "--blind-writes", is_flag=True, help="Updates without the context last seen (siblings pile up)."
)
@click.option("--timeout", default=10.0, show_default=True, help="Per-request timeout, seconds.")
@click.option(
    "--no-route", is_flag=True, help="Send requests to the given nodes in turn, not to a replica."
)
@click.option(
    "--json",
    "json_file",
    type=click.Path(dir_okay=False),
    help="Also write the figures to this JSON file.",
)
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@CACERT_OPTION
@bench_options
def bench(
    nodes: str, local: int | None, data_dir: str | None, durability: str, n: int | None,
    node_settings: tuple[str, ...], r: int | None, w: int | None, workload: str,
    distribution: str, records: int, operations: int | None, duration: float | None,
    concurrency: int, connections: int | None,
    value_size: int, rate: float | None, processes: int, bucket: str, seed: int, no_load: bool,
    blind_writes: bool, timeout: float, no_route: bool, json_file: str | None,
    no_progress: bool, api: str, consistent_read: bool, bench_user: str | None, secure: bool,
    items_per_key: int | None, max_scan_length: int | None, query_page: int | None,
) -> None:  # fmt: skip
    """YCSB-style load: a load phase, then a run phase; latency percentiles per operation."""
    from dynakv import bench as bench_mod

    if duration is None and operations is None:
        duration = 10.0
    try:
        api_spec, api_cluster = client_settings(api, consistent_read, bench_user, secure, local)
        api_spec.update(scan_settings(workload.lower(), items_per_key, max_scan_length, query_page))
        spec = bench_mod.BenchSpec(
            nodes=tuple(a.strip() for a in nodes.split(",") if a.strip()),
            workload=workload.lower(), distribution=distribution, records=records,
            operations=operations, duration=duration, concurrency=concurrency,
            connections=connections, value_size=value_size, rate=rate, r=r, w=w,
            processes=processes, seed=seed, bucket=bucket, load=not no_load,
            blind_writes=blind_writes, timeout=timeout, route=not no_route, cacert=cacert(),
            **api_spec,
        )  # fmt: skip
        local_cluster = None
        if local is not None:
            settings = {}
            for item in node_settings:
                key, sep, value = item.partition("=")
                if not sep:
                    raise ValueError(f"--node-setting {item!r}: expected KEY=VALUE")
                settings[key.strip()] = value.strip()
            local_cluster = bench_mod.LocalCluster(
                local, data_dir, durability, n, r, w, settings, cacert(), **api_cluster
            )
        elif n is not None or data_dir is not None or node_settings:
            raise ValueError("--n, --data-dir and --node-setting apply to a --local cluster only")
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    try:
        report = bench_mod.bench(spec, local_cluster, console, show_progress=not no_progress)
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from exc
    bench_mod.render(report, console)
    if json_file:
        Path(json_file).write_text(json.dumps(report, indent=2) + "\n")
        console.print(f"figures written to {json_file}")


main.add_command(cert_command)
main.add_command(user_group)
user_group.add_command(key_group)

if __name__ == "__main__":  # pragma: no cover
    main()
