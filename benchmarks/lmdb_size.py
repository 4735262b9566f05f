"""What LMDB costs per commit and per read as the store grows (issue 6: data size).

    .venv/bin/python benchmarks/lmdb_size.py [--records 10000 100000 1000000] [--commits 1500]
                                             [--writes 6 15 60] [--durability fsync]

For each record count: loads that many 1,200-byte values under MD5 keys into an
`LmdbEngine` (durability `os`, in a temporary directory under /tmp), reopens it in
`--durability` mode (`fsync` unless told), then times commits of random overwrites, for each
`--writes` group size (6 unless told: what a node commits per fsync under YCSB-A; bigger
groups show what a commit costs per write when more writes share it), `--commits` times 6 writes
in all (CPU user and sys per commit, from getrusage), and 20,000 random `get_committed`
reads (CPU and page faults per read, first pass and second pass). One process, no network:
the storage engine alone.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import resource
import shutil
import tempfile
import time

from dynakv.storage.lmdb import LmdbEngine

VALUE = os.urandom(1200)
WRITES_PER_COMMIT = 6
READS = 20_000


def _usage() -> tuple[float, float, int]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime, usage.ru_minflt


def measure(records: int, commits: int, groups: list[int], durability: str) -> None:
    path = tempfile.mkdtemp(prefix="lmdb-size-", dir="/tmp")
    try:
        keys = [hashlib.md5(str(i).encode()).digest() for i in range(records)]
        engine = LmdbEngine(path, "os")
        for start in range(0, records, 50_000):
            for key in keys[start : start + 50_000]:
                engine.put(key, VALUE)
            engine.commit()
        engine.close()

        engine = LmdbEngine(path, durability)
        rng = random.Random(1)
        for _ in range(100):  # warm-up after reopening, untimed
            engine.put(keys[rng.randrange(records)], VALUE)
            engine.commit()
        for writes in groups:
            count = max(1, commits * WRITES_PER_COMMIT // writes)
            user0, sys0, _ = _usage()
            wall0 = time.perf_counter()
            for _ in range(count):
                for _ in range(writes):
                    engine.put(keys[rng.randrange(records)], VALUE)
                engine.commit()
            wall = (time.perf_counter() - wall0) / count
            user1, sys1, _ = _usage()
            size = os.path.getsize(os.path.join(path, "data.mdb")) / 1e6
            cpu = (user1 - user0 + sys1 - sys0) / count * 1e6
            print(
                f"{records:>9,} records, file {size:,.0f} MB: commit of {writes} writes"
                f" {wall * 1e3:.2f} ms wall, CPU {(user1 - user0) / count * 1e6:.0f} us user"
                f" + {(sys1 - sys0) / count * 1e6:.0f} us sys ({cpu / writes:.1f} us per write)"
            )
        for label in ("first", "second"):
            rng = random.Random(2)
            user0, sys0, faults0 = _usage()
            for _ in range(READS):
                engine.get_committed(keys[rng.randrange(records)])
            user1, sys1, faults1 = _usage()
            cpu = (user1 - user0 + sys1 - sys0) / READS * 1e6
            print(
                f"{'':>9}  random read, {label} pass: {cpu:.2f} us CPU,"
                f" {(faults1 - faults0) / READS:.2f} page faults"
            )
        engine.close()
    finally:
        shutil.rmtree(path, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--commits", type=int, default=1500)
    parser.add_argument("--writes", type=int, nargs="+", default=[WRITES_PER_COMMIT])
    parser.add_argument("--durability", choices=("fsync", "os"), default="fsync")
    opts = parser.parse_args()
    for records in opts.records:
        measure(records, opts.commits, opts.writes, opts.durability)


if __name__ == "__main__":
    main()
