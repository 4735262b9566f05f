"""Replicas per node when members sit in several data centers and racks: the claim that
ignored places against the place-aware claim (issue 16).

    .venv/bin/python benchmarks/claim_places.py [--size 64] [--n 3]

For each layout, six nodes n1..n6 (named in the order of their places, so "3+3" is
n1-n3 in dc1 and n4-n6 in dc2), counts the partitions whose preference list (the
spreading walk's first N nodes) holds each node. Rows: `before`, the owners of the claim
without places (round-robin over the sorted names) with the places attached afterwards, as
the claimant planned until issue 16; `fresh`, the place-aware claim of all six at once;
`grown`, the place-aware claim as a cluster forms: n1 alone, then one join at a time in name
order, each from the ring before. Pure computation; runs in a second or two.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from dynakv.claim import claim  # noqa: E402
from dynakv.ring import Place, Ring  # noqa: E402

LAYOUTS: dict[str, list[Place]] = {
    "2 DCs 3+3": [("dc1", "r1")] * 3 + [("dc2", "r1")] * 3,
    "2 DCs 4+2": [("dc1", "r1")] * 4 + [("dc2", "r1")] * 2,
    "3 DCs 2+2+2": [("dc1", "r1")] * 2 + [("dc2", "r1")] * 2 + [("dc3", "r1")] * 2,
    "1 DC, racks 5+1": [("dc1", "r1")] * 5 + [("dc1", "r2")],
    "2 DCs, 2 racks each": [("dc1", "r1"), ("dc1", "r2")] * 2 + [("dc2", "r1"), ("dc2", "r2")],
}


def replicas(ring: Ring, n: int) -> list[int]:
    counts = Counter(name for p in range(ring.size) for name in ring.preference_list(p, n))
    return [counts[name] for name in ring.members()]


def rings(places: dict[str, Place], size: int) -> dict[str, Ring]:
    names = sorted(places)
    grown = claim(names[:1], size, places=places)
    for count in range(2, len(names) + 1):
        grown = claim(names[:count], size, grown, places)
    return {
        "before": claim(names, size).placed(places),
        "fresh": claim(names, size, places=places),
        "grown": grown,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=64, help="Q, partitions (64)")
    parser.add_argument("--n", type=int, default=3, help="N, replicas per partition (3)")
    args = parser.parse_args()
    even = args.size * args.n // 6
    print(f"Q={args.size}, N={args.n}: replicas per node (n1..n6), even = {even}")
    print()
    print("| layout | claim | n1 | n2 | n3 | n4 | n5 | n6 | min-max |")
    print("|---|---|---|---|---|---|---|---|---|")
    for label, layout in LAYOUTS.items():
        places = {f"n{i + 1}": place for i, place in enumerate(layout)}
        for kind, ring in rings(places, args.size).items():
            counts = replicas(ring, args.n)
            cells = " | ".join(str(c) for c in counts)
            print(f"| {label} | {kind} | {cells} | {min(counts)}-{max(counts)} |")


if __name__ == "__main__":
    main()
