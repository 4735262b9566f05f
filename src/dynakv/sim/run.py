"""One simulated run from a seed: form a cluster, run a workload under faults, heal, check.

The phases: the nodes join (on a calm network with true clocks, once per process; each run
starts from a copy of that cluster and the seed draws everything after, clock skews
included); clients run for `duration` while the nemesis injects faults; the faults stop
(partitions heal, stopped nodes restart, the network calms), clients finish and hinted
handoff drains; then the harness drives convergence by read repair rather than wait for
anti-entropy's schedule: it reads every key through a coordinator with R=N, repeatedly,
until every primary replica holds the same state (or a bound is reached); last, it reads
each primary's own copy directly (`Node.replica`) and hands the history and those reads to
the checker.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing import get_context

from dynakv import versions
from dynakv.config import BucketProps, NodeConfig
from dynakv.core.bugs import NO_BUGS, InjectedBugs
from dynakv.item_keys import table_bucket
from dynakv.messages import (
    ClientBucketChange,
    ClientGet,
    ErrorReply,
    GetResult,
    Message,
    ReapCheck,
    ReapCheckReply,
    ReapCommit,
)
from dynakv.sim.checker import (
    Op,
    Read,
    ReplicaRead,
    Report,
    check_cart,
    check_lww,
    check_register,
)
from dynakv.sim.cluster import SimCluster, Storage, default_config, sim_wal_root
from dynakv.sim.ddb_backend import DynamoFrontends
from dynakv.sim.ddb_check import DdbOp, check_ddb
from dynakv.sim.ddb_workload import CLIENT_TIMEOUT, DdbWorkload, final_queries
from dynakv.sim.ddb_workload import table as ddb_table
from dynakv.sim.expiry_check import check_expiry
from dynakv.sim.nemesis import Nemesis
from dynakv.sim.options import SimOptions
from dynakv.sim.workload import BUCKET, Workload, WorkloadName, WorkloadOptions

CHECKERS = {
    "cart": check_cart, "register": check_register, "lww": check_lww, "expiry": check_expiry
}  # fmt: skip
BUGS = tuple(f.name for f in dataclasses.fields(InjectedBugs))
REPAIR_ROUNDS = 8  # R=N reads per key, at most, to bring its replicas together
HANDOFF_LIMIT = 60.0  # virtual seconds to wait, after the faults, for hints to drain


@dataclass(frozen=True)
class RunConfig:
    """What to run: the workload, cluster size, faults, and an injected bug (tests only)."""

    workload: WorkloadName = "cart"
    nodes: int = 5
    options: SimOptions = field(default_factory=SimOptions)
    load: WorkloadOptions = field(default_factory=WorkloadOptions)
    bug: str | None = None
    request_timeout: float = 1.0  # the nodes' coordinator timeout (virtual seconds)
    settle: float = 5.0  # after the faults stop, before the final repair reads
    read_fanout: str = "r"  # the nodes' NodeConfig.read_fanout: "r" (default) or "n"
    racks: int = 1  # node i (from 1) in rack r((i-1) mod racks)+1
    datacenters: int = 1  # node i in dc((i-1) mod datacenters)+1
    # Replicas per data center of the workload's bucket (its type lists them; r = w =
    # quorum); () for n=3 along the walk.
    bucket_datacenters: tuple[tuple[str, int], ...] = ()
    # The workload's write level (a number or a level name), else its bucket's default. With
    # each_quorum every acknowledged write has copies in every data center, so the nemesis
    # may also bring a crashed data center back wiped (SimOptions.datacenter_wipe_probability).
    write_level: int | str | None = None
    # A third into the run, lower every bucket type (n to 2, each data center's count by
    # one, at least 1), under the faults: the claimant's lowering and the hand-back.
    lower_replication: bool = False
    storage: Storage = "memory"  # the nodes' engines: MemoryEngine, or WalEngine on disk

    def __post_init__(self) -> None:
        if self.nodes < 3:
            raise ValueError("the simulator needs at least 3 nodes (N=3)")
        if self.racks < 1 or self.datacenters < 1:
            raise ValueError("racks and datacenters must be at least 1")
        if self.read_fanout not in ("r", "n"):
            raise ValueError(f"read_fanout must be 'r' or 'n', got {self.read_fanout!r}")
        if self.workload == "ddb" and (self.bucket_datacenters or self.write_level is not None):
            # Its table is a bucket type of its own, made by CreateTable's path with n=3.
            raise ValueError("the ddb workload takes no --bucket-datacenters or --write-level")
        if self.bug is not None and self.bug not in BUGS:
            raise ValueError(f"unknown bug {self.bug!r}; choose from {', '.join(BUGS)}")


@dataclass
class RunResult:
    seed: int
    report: Report
    history: list[Op] | list[DdbOp]
    replicas: list[ReplicaRead]
    virtual_time: float
    messages: int
    partitions: int
    crashes: int
    wipes: int
    reaped: int  # tombstones the nodes deleted (counted since each one's last start)
    sites_wiped: int = 0  # data centers brought back on empty disks


TOMBSTONE_GRACE = 4.0  # virtual seconds: deletes early in a run are reaped during its faults


def node_config(
    name: str,
    request_timeout: float,
    read_fanout: str = "r",
    racks: int = 1,
    datacenters: int = 1,
    bucket_datacenters: tuple[tuple[str, int], ...] = (),
    write_level: int | str | None = None,
) -> NodeConfig:
    index = int(name.lstrip("n")) - 1
    props: dict[str, object] = {}
    if bucket_datacenters:
        counts = dict(bucket_datacenters)
        props = {"n": sum(counts.values()), "r": "quorum", "w": "quorum", "datacenters": counts}
    if write_level is not None:
        props["w"] = write_level
    buckets = {"lww": BucketProps(policy="lww", **props)}  # type: ignore[arg-type]
    if props:
        buckets.update({bucket: BucketProps(**props) for bucket in set(BUCKET.values()) - {"lww"}})  # type: ignore[arg-type]
    return dataclasses.replace(
        default_config(name),
        datacenter=f"dc{index % datacenters + 1}",
        rack=f"r{index % racks + 1}" if racks > 1 else "rack1",
        request_timeout=request_timeout,
        read_fanout=read_fanout,
        buckets=buckets,
        tombstone_grace=TOMBSTONE_GRACE,
        reap_interval=0.5,
    )


def run_seed(seed: int, config: RunConfig, trace: Callable[[str], None] | None = None) -> RunResult:
    """Run one seed to the checker's verdict; `trace` gets every line of the run's trace."""
    formed = formed_cluster(
        config.nodes,
        config.bug,
        config.request_timeout,
        config.read_fanout,
        config.racks,
        config.datacenters,
        config.bucket_datacenters,
        config.write_level,
        config.storage,
        table=config.workload == "ddb",
    )
    cluster = copy.deepcopy(formed)
    each_quorum = config.write_level == "each_quorum"
    options = config.options.with_datacenters(config.datacenters, wipe_sites=each_quorum)
    cluster.reseed(seed, options, trace)
    end = cluster.now + config.load.duration
    rng = random.Random(f"workload-{seed}")
    workload: Workload | DdbWorkload
    if config.workload == "ddb":
        frontends = DynamoFrontends(cluster, config.request_timeout)
        workload = DdbWorkload(cluster, frontends, rng, config.load, end)
        idle_limit = CLIENT_TIMEOUT
    else:
        workload = Workload(config.workload, cluster, rng, config.load, end)
        idle_limit = config.load.client_timeout
    nemesis = Nemesis(cluster, options, random.Random(f"nemesis-{seed}"), end)
    if config.lower_replication:
        cluster.run_for(config.load.duration / 3)
        _lower_replication(cluster, random.Random(f"lower-{seed}"))
        cluster.run_for(end - cluster.now)
    else:
        cluster.run_for(config.load.duration)
    nemesis.stop()
    cluster.run_until(workload.idle, limit=idle_limit + 1.0)
    workload.finish()
    cluster.run_for(config.settle)
    cluster.run_until(lambda: _hints_pending(cluster) == 0, limit=HANDOFF_LIMIT)
    final_reads = _repair(cluster, workload.bucket, workload.keys, config)
    # Read the replicas between reaping rounds, not while one is deleting a tombstone.
    cluster.run_until(lambda: _reaping_quiet(cluster), limit=10.0)
    replicas = _replica_reads(cluster, workload.bucket, workload.keys)
    history: list[Op] | list[DdbOp]
    if isinstance(workload, DdbWorkload):
        history = workload.history + final_queries(cluster, frontends, workload)
        # Increments are exact only while every node agrees which primary serves a key.
        calm = not (
            options.partition_probability
            or options.crash_probability
            or options.datacenter_crash_probability
        )
        checked = check_ddb(
            history, replicas, options.clock_skew_max, calm, frontends.internal_errors
        )
        checked.forwarded = frontends.forwarded
        checked.forward_fallbacks = frontends.forward_fallbacks
        report: Report = checked
    else:
        history = workload.history + final_reads
        report = CHECKERS[config.workload](history, replicas)
    return RunResult(
        seed,
        report,
        history,
        replicas,
        cluster.now,
        cluster.delivered,
        nemesis.partitions,
        nemesis.crashes,
        cluster.wipes,
        sum(cluster.nodes[name].reaper.stats.reaped for name in cluster.up),
        nemesis.sites_wiped,
    )


def _lower_replication(cluster: SimCluster, rng: random.Random) -> None:
    """Ask a node that is up to lower every bucket type: n to 2, or each data center's
    count by one (at least 1); the answer is not awaited (gossip spreads the change)."""
    node = rng.choice(sorted(cluster.up))
    for i, bucket_type in enumerate(cluster.nodes[node].state.types):
        if bucket_type.datacenters:
            counts = {dc: max(1, c - 1) for dc, c in bucket_type.datacenters}
            change: dict[str, object] = {"datacenters": counts}
        else:
            change = {"n": 2, "r": "quorum", "w": "quorum"}
        message = ClientBucketChange(i + 1, bucket_type.name, change, "update")
        cluster.request(node, "#lower", message)


@functools.lru_cache(maxsize=8)
def formed_cluster(
    nodes: int,
    bug: str | None,
    request_timeout: float,
    read_fanout: str = "r",
    racks: int = 1,
    datacenters: int = 1,
    bucket_datacenters: tuple[tuple[str, int], ...] = (),
    write_level: int | str | None = None,
    storage: Storage = "memory",
    table: bool = False,
) -> SimCluster:
    """The cluster every run starts from (each takes a copy): the nodes joined, on a calm
    network with true clocks (and with `table`, the ddb workload's table created).
    Seed-independent, so it is formed once per process."""
    bugs = InjectedBugs(**{bug: True}) if bug else NO_BUGS
    names = [f"n{i}" for i in range(1, nodes + 1)]
    config = functools.partial(
        node_config,
        request_timeout=request_timeout,
        read_fanout=read_fanout,
        racks=racks,
        datacenters=datacenters,
        bucket_datacenters=bucket_datacenters,
        write_level=write_level,
    )
    cluster = SimCluster(names, seed=0, config=config, bugs=bugs, storage=storage)
    if not cluster.run_until(cluster.members_agree, limit=60.0):
        raise RuntimeError(f"{nodes} nodes did not form a cluster")
    if table:
        _create_table(cluster)
    return cluster


def _create_table(cluster: SimCluster) -> None:
    """The ddb workload's table, as CreateTable makes it (a bucket type with its record),
    with a fixed generation; answered once every member holds it."""
    made = ddb_table()
    props: dict[str, int | str | dict[str, int]] = {"policy": "lww", "table": made.record()}
    replies: list[Message] = []
    cluster.attach_client("#setup", lambda now, message: replies.append(message))
    change = ClientBucketChange(1, table_bucket(made.name), props, "put")
    cluster.request(cluster.names[0], "#setup", change)
    if not cluster.run_until(lambda: bool(replies), limit=30.0) or isinstance(
        replies[0], ErrorReply
    ):
        raise RuntimeError(f"the ddb table was not created: {replies}")


def run_seeds(seeds: list[int], config: RunConfig, jobs: int = 1) -> Iterator[RunResult]:
    """Run each seed (in `jobs` forked processes when > 1); results come in seed order."""
    if config.storage == "wal":
        sim_wal_root()  # before forking: the workers' engines go where this process cleans up
    if jobs <= 1 or len(seeds) < 2:
        for seed in seeds:
            yield run_seed(seed, config)
        return
    with get_context("fork").Pool(jobs) as pool:
        yield from pool.imap(_run_job, [(seed, config) for seed in seeds], chunksize=2)


def _run_job(job: tuple[int, RunConfig]) -> RunResult:
    return run_seed(*job)


def _hints_pending(cluster: SimCluster) -> int:
    return sum(int(cluster.nodes[name].status().get("hints_pending", 0)) for name in cluster.names)


def _reaping_quiet(cluster: SimCluster) -> bool:
    if any(cluster.nodes[name].reaper.rounds for name in cluster.up):
        return False
    return not cluster.in_flight(ReapCheck, ReapCheckReply, ReapCommit)


def replicas_of(cluster: SimCluster, bucket: str, key: str) -> list[str]:
    ring = cluster.nodes[cluster.names[0]].ring
    props = cluster.nodes[cluster.names[0]].view.bucket(bucket)
    n = 0 if props.datacenters else props.n
    return ring.replicas(ring.partition(bucket, key), n, props.datacenters)


def _repair(cluster: SimCluster, bucket: str, keys: list[str], config: RunConfig) -> list[Read]:
    """Read each key with R=N until its replicas agree: read repair does the converging."""
    client = "#final"
    replies: list[Message] = []
    cluster.attach_client(client, lambda now, message: replies.append(message))
    reads: list[Read] = []
    names = sorted(cluster.names)
    rid = 0
    for key in keys:
        replicas = replicas_of(cluster, bucket, key)
        n = len(replicas)
        for attempt in range(REPAIR_ROUNDS):
            rid += 1
            coordinator = names[(rid - 1) % len(names)]
            invoke = cluster.now
            cluster.request(coordinator, client, ClientGet(rid, bucket, key, r=n))
            this = rid
            answered = cluster.run_until(
                lambda this=this: any(getattr(m, "rid", None) == this for m in replies),
                limit=config.request_timeout * 2 + 1.0,
            )
            reply = next((m for m in replies if getattr(m, "rid", None) == this), None)
            ok = answered and isinstance(reply, GetResult)
            values = tuple(reply.values) if isinstance(reply, GetResult) else ()
            reads.append(
                Read("final", bucket, key, invoke, cluster.now, "ok" if ok else "failed", values)
            )
            cluster.run_for(0.2)  # let the read repair land
            states = [cluster.nodes[name].replica(bucket, key) for name in replicas]
            if ok and all(state == states[0] for state in states):
                break
            if not ok:
                cluster.run_for(1.0 + attempt)  # a replica still seen as down: gossip on
    return reads


def _replica_reads(cluster: SimCluster, bucket: str, keys: list[str]) -> list[ReplicaRead]:
    out: list[ReplicaRead] = []
    for key in keys:
        for name in replicas_of(cluster, bucket, key):
            clock = cluster.nodes[name].replica(bucket, key)
            if clock is None:
                out.append(ReplicaRead(name, bucket, key, (), 0, ""))
                continue
            every = versions.values(clock)
            live = sorted(s.value for s in every if not s.deleted)
            context = versions.encode_context(versions.join(clock))
            out.append(ReplicaRead(name, bucket, key, tuple(live), len(every) - len(live), context))
    return out
