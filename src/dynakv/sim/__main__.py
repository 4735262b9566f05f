"""`python -m dynakv.sim`: run seeds through the simulator and the checker.

    python -m dynakv.sim --seeds 1-200 --nodes 5 --faults partition,crash,loss,skew --workload cart
    python -m dynakv.sim --seed 17 --trace --workload register --faults all

Prints a line per failing seed and ends with `RUNS runs, VIOLATIONS violations`; exits 0
only when there are none. `--seed S --trace` replays one run with its whole trace.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace

from dynakv import levels
from dynakv.errors import InvalidRequest
from dynakv.sim.options import SimOptions, parse_faults
from dynakv.sim.run import BUGS, RunConfig, run_seed, run_seeds
from dynakv.sim.workload import ALL_WORKLOADS, WorkloadOptions


def parse_seeds(text: str) -> list[int]:
    """ "1-200", "7", "1,5,9-12" -> the seeds, in order."""
    seeds: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if "-" in part:
            low, high = part.split("-", 1)
            seeds.extend(range(int(low), int(high) + 1))
        elif part:
            seeds.append(int(part))
    return seeds


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m dynakv.sim", description=__doc__.split("\n")[0]
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--seeds", default="1-100", help="seeds to run: 1-200, or 3,7,9-12")
    which.add_argument("--seed", type=int, help="run (and with --trace, replay) this one seed")
    parser.add_argument("--trace", action="store_true", help="print the run's trace (--seed)")
    parser.add_argument("--nodes", type=int, default=5)
    parser.add_argument(
        "--faults", default="all", help="partition,crash,wipe,loss,skew | all | none"
    )
    parser.add_argument("--workload", choices=ALL_WORKLOADS, default="cart")
    parser.add_argument("--bug", choices=BUGS, help="switch on an injected bug (tests only)")
    parser.add_argument(
        "--read-fanout",
        choices=("r", "n"),
        default="r",
        help="replicas a read asks: R (default) or all N (NodeConfig.read_fanout)",
    )
    parser.add_argument(
        "--racks", type=int, default=1, help="node i in rack r((i-1) mod K)+1 (placement)"
    )
    parser.add_argument(
        "--datacenters",
        type=int,
        default=1,
        help="node i in dc((i-1) mod D)+1: placement, WAN delays, data-center-wide faults",
    )
    parser.add_argument(
        "--bucket-datacenters",
        default="",
        help="replicas per data center of the workload's bucket, e.g. dc1=2,dc2=1",
    )
    parser.add_argument(
        "--write-level",
        help="the workload's write level (a number, quorum, each_quorum, ...); each_quorum "
        "with --datacenters and wipes also brings crashed data centers back wiped",
    )
    parser.add_argument(
        "--lower-replication",
        action="store_true",
        help="a third into the run, lower every bucket type's n to 2 (each data center's "
        "count by one): the claimant's lowering and the hand-back of surplus copies",
    )
    parser.add_argument(
        "--storage",
        choices=("memory", "wal"),
        default="memory",
        help="the nodes' engines: memory (default) or WalEngine on disk (crashes replay its log)",
    )
    parser.add_argument("--clients", type=int, default=WorkloadOptions.clients)
    parser.add_argument("--keys", type=int, default=WorkloadOptions.keys)
    parser.add_argument(
        "--delete-probability",
        type=float,
        default=WorkloadOptions.delete_probability,
        help="register: share of writes that delete",
    )
    parser.add_argument(
        "--duration", type=float, default=WorkloadOptions.duration, help="virtual seconds"
    )
    parser.add_argument(
        "--value-padding",
        type=int,
        default=WorkloadOptions.value_padding,
        help="bytes added to each value (16384 or more: values stored apart, record format v2)",
    )
    parser.add_argument("--jobs", type=int, default=1, help="seeds run in parallel processes")
    parser.add_argument("--verbose", action="store_true", help="a line for every seed")
    return parser


def config_from(args: argparse.Namespace) -> RunConfig:
    load = replace(
        WorkloadOptions(),
        clients=args.clients,
        keys=args.keys,
        duration=args.duration,
        delete_probability=args.delete_probability,
        value_padding=args.value_padding,
    )
    options = SimOptions().with_faults(parse_faults(args.faults))
    return RunConfig(
        args.workload,
        args.nodes,
        options,
        load,
        args.bug,
        read_fanout=args.read_fanout,
        racks=args.racks,
        datacenters=args.datacenters,
        bucket_datacenters=_counts(args.bucket_datacenters),
        write_level=_level(args.write_level),
        lower_replication=args.lower_replication,
        storage=args.storage,
    )


def _level(text: str | None) -> int | str | None:
    if not text:
        return None
    try:
        return levels.parse("--write-level", text)
    except InvalidRequest as exc:
        raise ValueError(exc.message) from exc


def _counts(text: str) -> tuple[tuple[str, int], ...]:
    """dc1=2,dc2=1 as (("dc1", 2), ("dc2", 1)); ValueError when malformed."""
    counts: dict[str, int] = {}
    for item in filter(None, text.split(",")):
        dc, sep, count = item.partition("=")
        if not sep or not count.isdigit() or int(count) < 1:
            raise ValueError(f"--bucket-datacenters: {item!r} is not DC=COUNT (COUNT >= 1)")
        counts[dc] = int(count)
    return tuple(sorted(counts.items()))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = config_from(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.seed is not None:
        return _one(args.seed, config, args.trace)
    seeds = parse_seeds(args.seeds)
    started = time.monotonic()
    runs = violations = failing = 0
    lww_lost = lww_acked = reaped = 0
    increments = duplicated = forwarded = fallbacks = 0
    for result in run_seeds(seeds, config, args.jobs):
        runs += 1
        report = result.report
        lww_lost += report.lww_lost
        lww_acked += report.lww_acked
        reaped += result.reaped
        increments += getattr(report, "increments_acked", 0)
        duplicated += getattr(report, "increments_duplicated", 0)
        forwarded += getattr(report, "forwarded", 0)
        fallbacks += getattr(report, "forward_fallbacks", 0)
        if not report.ok:
            failing += 1
            violations += len(report.violations)
            first = "; ".join(str(v) for v in report.violations[:3])
            print(f"seed {result.seed}: {report.summary()} | {first}", flush=True)
        elif args.verbose:
            print(f"seed {result.seed}: {report.summary()}", flush=True)
    elapsed = time.monotonic() - started
    faults = ",".join(sorted(parse_faults(args.faults))) or "none"
    bug = f", bug {args.bug}" if args.bug else ""
    print(
        f"workload {args.workload}, {args.nodes} nodes, faults {faults}{bug}: "
        f"{failing} failing seeds, {elapsed:.1f}s"
    )
    if args.workload == "lww" and lww_acked:
        share = 100.0 * lww_lost / lww_acked
        print(f"lww lost updates: {lww_lost} of {lww_acked} acknowledged writes ({share:.1f}%)")
    if increments:
        print(
            f"increments: {increments} acknowledged, {duplicated} with a duplicated result; "
            f"read-modify-writes forwarded {forwarded}, served locally after a failed "
            f"forward {fallbacks}"
        )
    if reaped:
        print(f"tombstones reaped: {reaped}")
    print(f"{runs} runs, {violations} violations")
    return 0 if violations == 0 else 1


def _one(seed: int, config: RunConfig, trace: bool) -> int:
    result = run_seed(seed, config, trace=print if trace else None)
    report = result.report
    print(
        f"seed {seed}: {report.summary()} | {result.messages} messages, "
        f"{result.partitions} partitions, {result.crashes} crashes, {result.wipes} wipes, "
        f"{result.reaped} tombstones reaped, {result.virtual_time:.3f} virtual seconds"
    )
    for violation in report.violations:
        print(f"  {violation}")
    print(f"1 runs, {len(report.violations)} violations")
    return 0 if report.ok else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # the reader went away (`... --trace | head`): stop quietly
        sys.stderr.close()
        sys.exit(1)
