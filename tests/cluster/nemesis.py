"""Real `dynakv serve` processes under a nemesis (SIGKILL, SIGSTOP, nftables partitions in a
network namespace of the test's own) while the cart workload runs, then a check of the run.

Every process is stopped by PID and the namespace deleted by the caller's finally, even on
failure. Network faults only touch loopback addresses inside a namespace this module made.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.cluster import secure_mode
from tests.cluster.cart_client import BUCKET, FAILED, OK, UNKNOWN
from tests.cluster.harness import NodeProcess, engine_setting, free_port

try:
    from dynakv.sim import checker
except ImportError:  # a checkout from before the simulator's checker: the item checks only
    checker = None  # type: ignore[assignment]

HERE = Path(__file__).resolve().parent
CART_CLIENT = HERE / "cart_client.py"
NODE_SHIM = HERE / "node_shim.py"
# A short coordinator timeout keeps a run short: a put waiting on a cut replica gives up
# after 2 s instead of 5.
NODE_CONFIG = "request_timeout = 2.0\n"
CLIENT_TIMEOUT = 4.0


# --- the network namespace and its nftables table -----------------------------------------
def netns_unavailable() -> str | None:
    """Why partition tests cannot run here, or None when they can."""
    if os.geteuid() != 0:
        return "network partitions need root (ip netns add, nft)"
    if shutil.which("ip") is None:
        return "network partitions need iproute2's `ip` (ip netns)"
    if shutil.which("nft") is None:
        return "network partitions need `nft` (apt-get install nftables; .ci/run does it as root)"
    return None


NETNS_PREFIX = "dynakv-nemesis-"


class Netns:
    """A fresh network namespace: lo up, and table `inet nemesis` whose output chain holds a
    rule per cut link (on lo every packet passes output, with its real addresses)."""

    def __init__(self) -> None:
        self.name = f"{NETNS_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.prefix = ["ip", "netns", "exec", self.name]
        self.created = False
        self.cuts: set[tuple[str, str]] = set()

    def create(self) -> None:
        delete_stale_namespaces()
        _run(["ip", "netns", "add", self.name])
        self.created = True
        _run(["ip", "-n", self.name, "link", "set", "lo", "up"])
        table = (
            "table inet nemesis {\n"
            "  chain output { type filter hook output priority 0; policy accept; }\n"
            "}\n"
        )
        _run([*self.prefix, "nft", "-f", "-"], stdin=table)

    def delete(self) -> None:
        if self.created:
            subprocess.run(["ip", "netns", "delete", self.name], capture_output=True, timeout=30)
            self.created = False

    def cut(self, src: str, dst: str, reset: bool = False) -> None:
        """From address src to address dst (one way), drop every packet, or with `reset`
        reject TCP with a reset: the sender's connections break and what they held is lost,
        where a plain drop lets TCP deliver it late, after the heal."""
        if (src, dst) not in self.cuts:
            verdict = ["meta", "l4proto", "tcp", "reject", "with", "tcp", "reset"]
            rule = ["ip", "saddr", src, "ip", "daddr", dst, *(verdict if reset else ["drop"])]
            _run([*self.prefix, "nft", "add", "rule", "inet", "nemesis", "output", *rule])
            self.cuts.add((src, dst))

    def heal(self) -> None:
        _run([*self.prefix, "nft", "flush", "chain", "inet", "nemesis", "output"])
        self.cuts.clear()


def delete_stale_namespaces() -> None:
    """Namespaces this module made in a test process that is gone (killed before its
    finally could run); only names it gives, only when their process no longer exists."""
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=30)
    for line in listing.stdout.splitlines():
        name = line.split()[0] if line.strip() else ""
        pid = name.removeprefix(NETNS_PREFIX).split("-")[0]
        if name.startswith(NETNS_PREFIX) and pid.isdigit() and not Path(f"/proc/{pid}").exists():
            subprocess.run(["ip", "netns", "delete", name], capture_output=True, timeout=30)


def _run(args: list[str], stdin: str | None = None, timeout: float = 30.0) -> str:
    done = subprocess.run(args, input=stdin, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


# --- the cluster and the nemesis operations -----------------------------------------------
class NemesisCluster:
    """N nodes named node1..nodeN. Without a namespace they listen on 127.0.0.1 at free ports;
    inside one, node i is 127.0.0.(i+1) with ports 7000 and 8000, and connects out from it.

    Everything that talks HTTP or the binary protocol to the nodes runs as a subprocess with
    the namespace's prefix (Python 3.11 has no os.setns), so one code path serves both."""

    def __init__(
        self,
        root: Path,
        size: int,
        netns: Netns | None = None,
        inject_bug: str | None = None,
        datacenters: int = 1,
    ) -> None:
        self.root = root
        self.netns = netns
        self.prefix = netns.prefix if netns else []
        config = root / "node.toml"
        config.write_text(NODE_CONFIG + engine_setting())
        launcher = [sys.executable, "-m", "dynakv"]
        if netns or inject_bug:
            launcher = [*self.prefix, sys.executable, str(NODE_SHIM)]
            launcher += ["--inject-bug", inject_bug] if inject_bug else []
        self.nodes: list[NodeProcess] = []
        self.datacenter: dict[str, str] = {}  # node name -> its data center
        for i in range(1, size + 1):
            place: list[str] = []
            if datacenters > 1:  # node i in dc((i-1) mod D)+1, each node a rack of its own
                self.datacenter[f"node{i}"] = f"dc{(i - 1) % datacenters + 1}"
                place = ["--datacenter", self.datacenter[f"node{i}"], "--rack", f"rack{i}"]
            if netns:
                host = f"127.0.0.{i + 1}"
                node_addr, http_addr = f"{host}:7000", f"{host}:8000"
            else:
                node_addr = f"127.0.0.1:{free_port()}"
                http_addr = f"127.0.0.1:{free_port()}"
            self.nodes.append(
                NodeProcess(
                    name=f"node{i}",
                    data_dir=root / f"node{i}",
                    node_addr=node_addr,
                    http_addr=http_addr,
                    log_path=root / f"node{i}.log",
                    extra_args=["--config", str(config), *place],
                    launcher=launcher,
                )
            )
        self.events: list[dict[str, Any]] = []  # the nemesis's own history
        self.paused: set[str] = set()

    # lifecycle
    def start(self) -> None:
        first, rest = self.nodes[0], self.nodes[1:]
        first.start()
        if secure_mode.current() is not None:  # the admin every helper logs in as
            done = self.inside(["bootstrap", "--nodes", first.node_addr])
            if done.returncode != 0:
                raise RuntimeError(f"no admin made: {done.stderr[-2000:]}")
        self.wait_ready([first])
        for node in rest:
            node.start(join=first.node_addr)
        self.wait_ready()
        if self.netns:  # proc.pid must be the node, not a wrapper, for kill and pause
            for node in self.nodes:
                assert node.proc is not None
                cmdline = Path(f"/proc/{node.proc.pid}/cmdline").read_bytes()
                assert NODE_SHIM.name.encode() in cmdline, cmdline

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> NemesisCluster:
        """Started; stopped by PID on exit, also when the start itself fails."""
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def site(self, datacenter: str) -> list[NodeProcess]:
        """The nodes of one data center."""
        return [n for n in self.nodes if self.datacenter.get(n.name, "dc1") == datacenter]

    def host(self, node: NodeProcess) -> str:
        return node.node_addr.rpartition(":")[0]

    def inside(self, args: list[str], timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """Run the cart client's `args` next to the nodes (in the namespace, if any)."""
        command = [*self.prefix, sys.executable, str(CART_CLIENT), *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout)

    def wait_ready(self, nodes: list[NodeProcess] | None = None, deadline: float = 30.0) -> None:
        """Until `nodes` (default all) serve, agree on the ring and see every member up; fails
        at once if a started node exits."""
        nodes = nodes or self.nodes
        members = len(self.nodes) if len(nodes) > 1 else 1
        args = ["wait", "--http", ",".join(n.http_addr for n in nodes)]
        args += ["--members", str(members), "--deadline", str(deadline)]
        waiter = subprocess.Popen(
            [*self.prefix, sys.executable, str(CART_CLIENT), *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            while waiter.poll() is None:
                for node in self.nodes:
                    if node.proc is not None and node.proc.poll() is not None:
                        raise RuntimeError(f"{node.name} exited: {self.log_tail(node)}")
                time.sleep(0.1)
            if waiter.returncode != 0:
                assert waiter.stderr is not None
                raise RuntimeError(f"cluster not ready: {waiter.stderr.read()[-2000:]}")
        finally:
            if waiter.poll() is None:
                waiter.kill()
            waiter.communicate()

    def log_tail(self, node: NodeProcess, lines: int = 20) -> str:
        text = node.log_path.read_text(errors="replace") if node.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def record(self, f: str, value: Any) -> None:
        self.events.append({"process": "nemesis", "f": f, "value": value, "time": time.time()})

    # faults
    def kill(self, node: NodeProcess) -> None:
        self.record("kill", node.name)
        node.kill(signal.SIGKILL)

    def restart(self, node: NodeProcess) -> None:
        self.record("start", node.name)
        node.start()

    def pause(self, node: NodeProcess) -> None:
        self.record("pause", node.name)
        node.kill(signal.SIGSTOP)
        self.paused.add(node.name)

    def resume(self, node: NodeProcess) -> None:
        self.record("resume", node.name)
        node.kill(signal.SIGCONT)
        self.paused.discard(node.name)

    def cut(
        self,
        sources: list[NodeProcess],
        targets: list[NodeProcess],
        both: bool,
        reset: bool = False,
    ) -> None:
        """Cut each source off from each target (and back, if `both`): see Netns.cut."""
        assert self.netns is not None, "partitions need the cluster inside a netns"
        names = {"from": [s.name for s in sources], "to": [t.name for t in targets]}
        self.record("cut", {**names, "both": both, "reset": reset})
        for s in sources:
            for t in targets:
                if s is not t:
                    self.netns.cut(self.host(s), self.host(t), reset)
                    if both:
                        self.netns.cut(self.host(t), self.host(s), reset)

    def heal(self) -> None:
        """End every fault: links restored, paused nodes resumed, dead nodes restarted."""
        if self.netns and self.netns.cuts:
            self.record("heal", "network")
            self.netns.heal()
        for node in self.nodes:
            if node.proc is None or node.proc.poll() is not None:
                self.restart(node)
            elif node.name in self.paused:
                self.resume(node)
        self.wait_ready()


@contextlib.contextmanager
def cluster_in_netns(root: Path, size: int, datacenters: int = 1) -> Iterator[NemesisCluster]:
    """A started cluster inside a namespace of its own, both gone on exit; skips the test
    (saying why) where namespaces or nftables are not available."""
    import pytest

    reason = netns_unavailable()
    if reason:
        pytest.skip(reason)
    netns = Netns()
    try:
        try:
            netns.create()
        except RuntimeError as exc:
            pytest.skip(f"cannot create a network namespace with nftables here: {exc}")
        with NemesisCluster(root, size, netns, datacenters=datacenters) as cluster:
            yield cluster
    finally:
        netns.delete()


# --- the workload ---------------------------------------------------------------------------
@dataclass
class CartWorkload:
    """The cart client as a subprocess beside the nodes; stop() closes its stdin."""

    cluster: NemesisCluster
    history_path: Path
    prefix: str = ""  # of the cart keys
    clients: int = 5
    carts: int = 3
    rate: float = 6.0  # adds per second per client
    max_adds: int = 150  # per client
    seed: str = "0"
    level: str = ""  # r and w of every request, when set (e.g. local_quorum)
    nodes: list[NodeProcess] | None = None  # the nodes the clients talk to (default: all)
    client_prefix: str = ""  # of client names and item ids: workloads side by side differ
    proc: subprocess.Popen[str] | None = field(default=None, init=False)

    def start(self) -> None:
        nodes = ",".join(n.node_addr for n in self.nodes or self.cluster.nodes)
        args = [
            *self.cluster.prefix, sys.executable, str(CART_CLIENT), "run",
            "--nodes", nodes, "--clients", str(self.clients), "--carts", str(self.carts),
            "--prefix", self.prefix,
            "--rate", str(self.rate), "--max-adds", str(self.max_adds), "--seed", self.seed,
            "--timeout", str(CLIENT_TIMEOUT), "--out", str(self.history_path),
            "--level", self.level, "--client-prefix", self.client_prefix,
        ]  # fmt: skip
        stderr = open(self.history_path.with_suffix(".stderr"), "w")  # noqa: SIM115 - to child
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stderr=stderr, text=True)
        stderr.close()

    def stop(self) -> list[dict[str, Any]]:
        """Let every client finish its current add (at most a client timeout), then read."""
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.close()
        code = self.proc.wait(timeout=2 * CLIENT_TIMEOUT + 10)
        if code != 0:
            err = self.history_path.with_suffix(".stderr").read_text()[-2000:]
            raise RuntimeError(f"cart client exited {code}: {err}")
        return read_history(self.history_path)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def read_history(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def final_state(cluster: NemesisCluster, carts: int, prefix: str) -> dict[str, Any]:
    """Reads with r=3 through every node until the primaries' copies agree (read repair
    heals what hinted handoff has not), and every primary's own copy of each cart."""
    args = [
        "final",
        "--nodes", ",".join(n.node_addr for n in cluster.nodes),
        "--http", cluster.nodes[0].http_addr, "--carts", str(carts), "--prefix", prefix,
        "--timeout", str(CLIENT_TIMEOUT), "--deadline", "30",
    ]  # fmt: skip
    done = cluster.inside(args, timeout=90)
    if done.returncode != 0:
        raise RuntimeError(f"final reads failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout)


# --- the check ------------------------------------------------------------------------------
@dataclass
class CartCheck:
    """What a cart run shows. Valid when dynakv.sim.checker.check_cart finds no violation
    (lost, never_written, merged, came_back, divergent) and, item by item: no acknowledged
    add missing from the final r=3 read, nothing present that no write added to that cart
    (or whose write surely never reached a node), every cart read, every replica the same."""

    adds: int  # writes attempted (an add whose read failed never wrote)
    ok: int
    failed: int
    unknown: int
    unknown_present: int  # indeterminate adds that did land: allowed either way
    reads_failed: int  # adds that ended at their read (no write attempted)
    sibling_reads: int  # reads that found concurrent values (conflicts did happen)
    repaired: int  # carts whose replicas differed before the final reads (read repair's work)
    lost: list[str]  # acknowledged, yet missing from the final r=3 read
    unexpected: list[str]  # in a final read or replica, never written to that cart
    failed_present: list[str]  # recorded as never sent, yet present
    divergent: dict[str, dict[str, Any]]  # cart -> node -> items it lacks ("no copy")
    unread: list[str]  # carts no final r=3 read succeeded for
    checker: str  # dynakv.sim.checker's summary
    violations: list[str]  # dynakv.sim.checker's violations

    @property
    def valid(self) -> bool:
        return not (
            self.lost
            or self.unexpected
            or self.failed_present
            or self.divergent
            or self.unread
            or self.violations
        )

    def summary(self) -> str:
        return (
            f"adds={self.adds} ok={self.ok} failed={self.failed} unknown={self.unknown} "
            f"(landed {self.unknown_present}) reads_failed={self.reads_failed} "
            f"sibling_reads={self.sibling_reads} "
            f"repaired={self.repaired} lost={len(self.lost)} "
            f"unexpected={len(self.unexpected)} failed_present={len(self.failed_present)} "
            f"converged={not self.divergent} unread={len(self.unread)} "
            f"checker=[{self.checker}]"
        )


def _bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def checker_inputs(
    history: list[dict[str, Any]], final: dict[str, Any]
) -> tuple[list[checker.Op], list[checker.ReplicaRead]]:
    """The history and the final replica copies in dynakv.sim.checker's types."""
    ops: list[checker.Op] = []
    for r in history:
        times = {"invoke": r["invoke"], "complete": r["complete"], "outcome": r["outcome"]}
        where = {"process": r["process"], "bucket": BUCKET, "key": r["cart"], **times}
        if r["type"] == "write":
            value, seen = _bytes(r["value"]), tuple(r["seen"])
            ops.append(checker.Write(**where, id=r["id"], value=value, seen=seen, delete=False))
        else:
            values = tuple(_bytes(v) for v in r.get("values", []))
            ops.append(checker.Read(**where, values=values))
    replicas = [
        checker.ReplicaRead(
            node=node,
            bucket=BUCKET,
            key=cart,
            values=tuple(_bytes(v) for v in copy["values"]),
            tombstones=copy["tombstones"],
            context=copy["context"],
        )
        for cart, entry in final["carts"].items()
        for node, copy in entry["replicas"].items()
    ]
    return ops, replicas


def check_cart_history(history: list[dict[str, Any]], final: dict[str, Any]) -> CartCheck:
    """Judge a run: dynakv.sim.checker.check_cart on the whole history and the replicas'
    copies, plus the item-level checks of the final r=3 reads and replicas."""
    if checker is not None:
        report = checker.check_cart(*checker_inputs(history, final))
        verdict, violations = report.summary(), [str(v) for v in report.violations]
    else:
        verdict, violations = "dynakv.sim.checker absent", []
    adds = {op["id"]: op for op in history if op["type"] == "write"}
    outcomes = [op["outcome"] for op in adds.values()]
    lost: list[str] = []
    unexpected: list[str] = []
    failed_present: list[str] = []
    divergent: dict[str, dict[str, Any]] = {}
    unread: list[str] = []
    unknown_present = 0
    for cart, entry in sorted(final["carts"].items()):
        read = set(entry["read"] or [])
        copies = {
            node: None if copy["items"] is None else set(copy["items"])
            for node, copy in entry["replicas"].items()
        }
        present = read.union(*(c for c in copies.values() if c is not None))
        if entry["read"] is None:
            unread.append(cart)
        mine = {item: op for item, op in adds.items() if op["cart"] == cart}
        lost += sorted(i for i, op in mine.items() if op["outcome"] == OK and i not in read)
        unexpected += sorted(i for i in present if i not in mine)
        failed_present += sorted(i for i in present & mine.keys() if mine[i]["outcome"] == FAILED)
        unknown_present += sum(1 for i in present & mine.keys() if mine[i]["outcome"] == UNKNOWN)
        lacking = {
            node: "no copy" if held is None else sorted(present - held)
            for node, held in copies.items()
            if held is None or held != present
        }
        if lacking:
            divergent[cart] = lacking
    return CartCheck(
        adds=len(adds),
        ok=outcomes.count(OK),
        failed=outcomes.count(FAILED),
        unknown=outcomes.count(UNKNOWN),
        unknown_present=unknown_present,
        reads_failed=sum(1 for op in history if op["type"] == "read" and op["outcome"] != OK),
        sibling_reads=sum(1 for op in history if len(op.get("values", [])) > 1),
        repaired=len(final.get("divergent_before", [])),
        lost=lost,
        unexpected=unexpected,
        failed_present=failed_present,
        divergent=divergent,
        unread=unread,
        checker=verdict,
        violations=violations,
    )


# --- one run: workload + nemesis + heal + final reads + check --------------------------------
@dataclass
class CartRun:
    name: str
    check: CartCheck
    history: list[dict[str, Any]]
    final: dict[str, Any]
    events: list[dict[str, Any]]
    seconds: float
    root: Path
    seed: str

    def report(self) -> str:
        """A one-line summary, and on failure what is needed to study the run."""
        line = (
            f"NEMESIS {self.name} seed={self.seed}: {self.check.summary()} "
            f"seconds={self.seconds:.1f}"
        )
        if self.check.valid:
            return line
        by_item = {op["id"]: op for op in self.history if op["type"] == "write"}
        suspects = self.check.lost + self.check.unexpected + self.check.failed_present
        parts = [
            line,
            *(f"checker: {violation}"[:1000] for violation in self.check.violations[:20]),
            f"lost: {self.check.lost}",
            f"unexpected: {self.check.unexpected}",
            f"failed but present: {self.check.failed_present}",
            f"divergent replicas: {json.dumps(self.check.divergent)[:3000]}",
            f"unread carts: {self.check.unread}",
            "history of the suspects:",
            *(json.dumps(by_item.get(item, {"id": item})) for item in suspects[:20]),
            "nemesis:",
            *(json.dumps(event) for event in self.events),
            f"final: {json.dumps(self.final)[:3000]}",
            f"history, final.json (node logs one folder up): {self.root}",
        ]
        return "\n".join(parts)


def run_cart_under_nemesis(
    name: str,
    cluster: NemesisCluster,
    schedule: Callable[[NemesisCluster], None],
    *,
    carts: int = 3,
    clients: int = 5,
    rate: float = 6.0,
    seed: str = "0",
    warmup: float = 1.0,
    sites: tuple[str, ...] = (),
    level: str = "",
) -> CartRun:
    """Start the workload, let `schedule` apply its faults, stop the workload (the schedule
    may leave its last fault on, so replicas differ), heal everything, read the final state
    (read repair must make the replicas converge), check it. Runs on one cluster one after
    another keep apart: each has its own cart keys and its own folder for the records.
    With `sites` (data centers), each has a workload of its own that talks to its nodes
    only, on the same carts; `level` is the r and w of every request."""
    started = time.monotonic()
    slug = "".join(c if c.isalnum() else "-" for c in name)
    out = cluster.root / slug
    out.mkdir()
    cluster.events = []
    workloads = [
        CartWorkload(
            cluster,
            out / f"history{'-' + site if site else ''}.jsonl",
            f"{slug}-",
            clients,
            carts,
            rate,
            seed=f"{seed}-{site}" if site else seed,
            level=level,
            nodes=cluster.site(site) if site else None,
            client_prefix=f"{site}-" if site else "",
        )
        for site in sites or ("",)
    ]
    try:
        for workload in workloads:
            workload.start()
        time.sleep(warmup)
        schedule(cluster)
        history = [op for workload in workloads for op in workload.stop()]
    finally:
        for workload in workloads:
            workload.close()
        cluster.heal()
    final = final_state(cluster, carts, f"{slug}-")
    (out / "final.json").write_text(json.dumps(final, indent=1))
    (out / "nemesis.jsonl").write_text("".join(json.dumps(e) + "\n" for e in cluster.events))
    check = check_cart_history(history, final)
    seconds = time.monotonic() - started
    run = CartRun(name, check, history, final, cluster.events, seconds, out, seed)
    (out / "summary.txt").write_text(run.report() + "\n")
    print(run.report().splitlines()[0])
    return run
