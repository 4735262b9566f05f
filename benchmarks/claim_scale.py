"""What adding a data center moves, at scale: 500 nodes in 5 data centers, then a sixth of 20.

    .venv/bin/python benchmarks/claim_scale.py [--size 1024] [--n 3] [--racks 5]

Pure computation with the real claim (dynakv.claim) and the real walk: 500 nodes, 100 per
data center, `--racks` racks per data center, claimed fresh on Q partitions; then 20 nodes in
dc6 (4 racks) join, claimed from that ring (the claimant's minimal-movement path). Prints how
many partitions changed owner, how many (partition, replica) pairs of the spreading walk's
first N are new (the data that must move: each new pair is a copy of a partition streamed
to a new replica), both as a share of the total, against the lower bound (the joiners' fair
share), and the replicas-per-node spread in each data center before and after.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from dynakv.claim import claim  # noqa: E402
from dynakv.ring import Place, Ring  # noqa: E402


def pairs(ring: Ring, n: int) -> set[tuple[int, str]]:
    return {(p, name) for p in range(ring.size) for name in ring.preference_list(p, n)}


def spread(ring: Ring, n: int, places: dict[str, Place]) -> str:
    counts = Counter(name for _, name in pairs(ring, n))
    by_dc: dict[str, list[int]] = {}
    for name in ring.members():
        by_dc.setdefault(places[name][0], []).append(counts[name])
    return "  ".join(
        f"{dc}: {min(v)}-{max(v)} (mean {statistics.mean(v):.1f})"
        for dc, v in sorted(by_dc.items())
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=1024, help="Q, partitions")
    parser.add_argument("--n", type=int, default=3, help="N, replicas per partition")
    parser.add_argument("--racks", type=int, default=5, help="racks per data center")
    args = parser.parse_args()
    places: dict[str, Place] = {}
    for dc in range(1, 6):
        for i in range(100):
            places[f"d{dc}n{i:03d}"] = (f"dc{dc}", f"r{i % args.racks + 1}")
    started = time.perf_counter()
    before = claim(sorted(places), args.size, None, places)
    fresh_s = time.perf_counter() - started
    grown = dict(places)
    for i in range(20):
        grown[f"d6n{i:03d}"] = ("dc6", f"r{i % 4 + 1}")
    started = time.perf_counter()
    after = claim(sorted(grown), args.size, before, grown)
    join_s = time.perf_counter() - started
    owners_moved = sum(1 for a, b in zip(before.owners, after.owners, strict=True) if a != b)
    old, new = pairs(before, args.n), pairs(after, args.n)
    moved = len(new - old)
    fair = 20 / len(grown)  # the joiners' share of the ring: the least that must move
    print(
        f"Q={args.size} N={args.n}: 500 nodes in 5 data centers of {args.racks} racks, "
        f"+20 in dc6 (claim {fresh_s:.2f} s fresh, {join_s:.2f} s for the join)"
    )
    print(
        f"partitions that changed owner: {owners_moved} of {args.size} "
        f"({100 * owners_moved / args.size:.1f}%; the joiners' fair share {100 * fair:.1f}%)"
    )
    print(
        f"replica copies to stream: {moved} of {len(new)} "
        f"({100 * moved / len(new):.1f}% of the data)"
    )
    print(f"replicas per node before: {spread(before, args.n, places)}")
    print(f"replicas per node after:  {spread(after, args.n, grown)}")


if __name__ == "__main__":
    main()
