"""How many gossip rounds a membership change needs to reach every node (issue 4's figures).

Simulates synchronous rounds of push-pull gossip with the real `membership.merge`: in each
round every node picks one peer uniformly at random (not itself) and both keep the merge of
the two states they held at the start of the round, so news moves at most one hop a round.
Seeds follow Cassandra's rule: a node whose random peer was not a seed also exchanges with a
random seed, with probability seeds / nodes (3 seeds; for 500 nodes that is 0.6%), which is
what keeps a cluster from splitting into groups that only gossip among themselves.

At round 0 one random node applies a change (`--change leave`: it marks another random
member leaving; `--change bucket-type`: it creates a bucket type, as `dynakv bucket create`
does); the figure is the number of rounds until every node's state holds it. (A bucket type
change is also sent to every member at once by the node that takes it; these rounds are what
gossip needs alone, for the members that missed that message.) Seeded: the same command
prints the same table.

    .venv/bin/python benchmarks/gossip_convergence.py [--nodes 10 100 500] [--trials 50]
                                                      [--change leave|bucket-type]
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import time

from dynakv import bucket_types
from dynakv.config import NodeConfig, with_resp_bucket
from dynakv.core.membership import (
    MemberRecord,
    Membership,
    install_ring,
    member,
    merge,
    new_cluster,
    plan_ring,
    request_join,
    request_leave,
    set_type,
)


def founded_cluster(count: int, ring_size: int) -> Membership:
    """A cluster of count members, all up, built through the real join and install path."""
    names = [f"n{i:04d}" for i in range(count)]

    def record(name: str, i: int) -> MemberRecord:
        return MemberRecord(name, f"10.0.{i // 250}.{i % 250}:7000", "", "inc-1", "joining", 0)

    types = with_resp_bucket(NodeConfig()).bucket_types()  # what a founder's file seeds
    state = new_cluster("bench", record(names[0], 0), ring_size, types)
    for i, name in enumerate(names[1:], 1):
        state = request_join(state, record(name, i))
    ring = plan_ring(state)
    assert ring is not None
    return install_ring(state, ring, names[0])


def rounds_to_converge(
    base: Membership, rng: random.Random, seeds: int, change: str = "leave", limit: int = 1000
) -> int:
    count = len(base.members)
    names = [record.name for record in base.members]
    origin = rng.randrange(count)
    target = rng.choice([name for i, name in enumerate(names) if i != origin])
    states = [base] * count
    if change == "leave":
        states[origin] = request_leave(base, target)

        def informed(state: Membership) -> bool:
            return member(state, target).status == "leaving"

    else:
        created = bucket_types.change(base.types, "carts", {"r": "local_quorum"}, "create")
        states[origin] = set_type(base, created)

        def informed(state: Membership) -> bool:
            return created in state.types

    seed_nodes = list(range(min(seeds, count)))
    seed_probability = len(seed_nodes) / count

    for round_ in range(1, limit + 1):
        start = list(states)

        def exchange(i: int, j: int, start: list[Membership] = start) -> None:
            both = merge(start[i], start[j])
            states[i] = merge(states[i], both)
            states[j] = merge(states[j], both)

        for i in range(count):
            j = rng.randrange(count - 1)
            j += j >= i  # a peer other than itself
            exchange(i, j)
            if j not in seed_nodes and rng.random() < seed_probability:
                seed = rng.choice(seed_nodes)
                if seed != i:
                    exchange(i, seed)
        if all(informed(state) for state in states):
            return round_
    raise AssertionError(f"no convergence within {limit} rounds")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, nargs="+", default=[10, 100, 500])
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--seeds", type=int, default=3, help="seed nodes")
    parser.add_argument("--seed", type=int, default=1, help="random seed")
    parser.add_argument("--ring-size", type=int, default=1024)
    parser.add_argument("--change", choices=("leave", "bucket-type"), default="leave")
    args = parser.parse_args()

    print(
        f"push-pull gossip, one random peer a round, {args.seeds} seeds (probability "
        f"seeds/nodes), {args.trials} trials, seed {args.seed}, change {args.change}"
    )
    print(f"{'nodes':>6} {'median':>7} {'p90':>5} {'max':>5} {'min':>5} {'log2 n':>7} {'secs':>6}")
    for count in args.nodes:
        base = founded_cluster(count, args.ring_size)
        rng = random.Random(f"{args.seed}/{count}")
        started = time.perf_counter()
        results = sorted(
            rounds_to_converge(base, rng, args.seeds, args.change) for _ in range(args.trials)
        )
        elapsed = time.perf_counter() - started
        p90 = results[min(len(results) - 1, math.ceil(0.9 * len(results)) - 1)]
        print(
            f"{count:>6} {statistics.median(results):>7g} {p90:>5} {results[-1]:>5} "
            f"{results[0]:>5} {math.log2(count):>7.2f} {elapsed:>6.1f}"
        )


if __name__ == "__main__":
    main()
