"""What each consistency level costs across two data centers, in the simulator's virtual time.

    .venv/bin/python benchmarks/datacenters.py [--ops 400] [--seed 1]

Six simulated nodes running the real core, in two data centers (node i in dc((i-1) mod 2)+1,
each its own rack), N=3: every key has replicas in both. The network is calm: 0.5-2 ms one
way within a data center, 30-80 ms between them (SimOptions). For each level, `--ops`
sequential puts then gets, each from a client next to a random node of dc1 (a put's context
is the previous get's), and the virtual latency of each. Prints p50/p99/p99.9 per level and
the messages that crossed between the data centers per put (by type), which is what a WAN
link carries.
"""

from __future__ import annotations

import argparse
import functools
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from dynakv.messages import ClientGet, ClientPut, GetResult, PutResult  # noqa: E402
from dynakv.sim.cluster import SimCluster  # noqa: E402
from dynakv.sim.run import node_config  # noqa: E402

LEVELS = ("local_one", "local_quorum", "one", "quorum", "each_quorum", "all")
NAMES = [f"n{i}" for i in range(1, 7)]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def measure(level: str, ops: int, seed: int) -> tuple[list[float], list[float], dict[str, int]]:
    config = functools.partial(node_config, request_timeout=2.0, racks=6, datacenters=2)
    cluster = SimCluster(NAMES, seed=seed, config=config)
    assert cluster.run_until(cluster.members_agree, limit=60.0)
    cluster.run_for(5.0)  # heartbeats settle
    rng = random.Random(seed)
    local = [n for n in NAMES if cluster.datacenters[n] == "dc1"]
    puts: list[float] = []
    gets: list[float] = []
    context = ""
    crossed_before = dict(cluster.crossings)
    for i in range(ops):
        key = f"k{rng.randrange(100)}"
        for kind in ("get", "put"):
            node = rng.choice(local)
            client = f"#c-{node}"
            inbox = cluster.inbox.setdefault(client, [])
            before = len(inbox)
            if kind == "get":
                message = ClientGet(i, "bench", key, r=level)
            else:
                message = ClientPut(i, "bench", key, b"x" * 100, context, w=level)
            start = cluster.now
            cluster.request(node, client, message)
            cluster.run_until(lambda inbox=inbox, before=before: len(inbox) > before, limit=5.0)
            reply = inbox[-1]
            if isinstance(reply, GetResult):
                context = reply.context
                gets.append(cluster.now - start)
            elif isinstance(reply, PutResult):
                puts.append(cluster.now - start)
            else:
                raise RuntimeError(f"{level}: {reply}")
    crossed = {k: v - crossed_before.get(k, 0) for k, v in cluster.crossings.items()}
    return puts, gets, crossed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ops", type=int, default=400)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    print(
        f"{'level':<13} {'put p50':>8} {'p99':>7} {'p99.9':>7}   {'get p50':>8} {'p99':>7}"
        f" {'p99.9':>7}   crossing per put (get+put pairs; by type)"
    )
    for level in LEVELS:
        puts, gets, crossed = measure(level, args.ops, args.seed)
        ms = [1000 * percentile(x, q) for x in (puts, gets) for q in (0.5, 0.99, 0.999)]
        per = {k: round(v / args.ops, 2) for k, v in sorted(crossed.items()) if v}
        print(
            f"{level:<13} {ms[0]:8.1f} {ms[1]:7.1f} {ms[2]:7.1f}   {ms[3]:8.1f} {ms[4]:7.1f}"
            f" {ms[5]:7.1f}   {per}"
        )


if __name__ == "__main__":
    main()
