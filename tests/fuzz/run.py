"""`make fuzz`: every fuzz target (targets.py) for a share of FUZZ_SECONDS, then a report of
what each covered: inputs run, time, and what became of them; exit status 1 if any input broke
a contract (hypothesis prints it, shrunk, to add to tests/unit/test_fuzz_*.py).

    python -m tests.fuzz.run --seconds 300 [--target NAME ...]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, given, seed, settings

from tests.fuzz.targets import TARGETS, Target

BATCH = 200  # inputs per hypothesis run; runs repeat, each with a new seed, until time is up


@dataclass
class Covered:
    name: str
    executions: int = 0
    seconds: float = 0.0
    outcomes: Counter[str] = field(default_factory=Counter)
    failure: str | None = None


def fuzz(target: Target, seconds: float, rng: random.Random) -> Covered:
    covered = Covered(target.name)
    deadline = time.monotonic() + seconds
    started = time.monotonic()

    def check(value: Any) -> None:
        covered.executions += 1
        covered.outcomes[target.run(value)] += 1

    while time.monotonic() < deadline and covered.failure is None:
        run_seed = rng.randrange(2**32)
        test = seed(run_seed)(
            settings(
                max_examples=BATCH,
                database=None,
                deadline=None,
                suppress_health_check=list(HealthCheck),
            )(given(target.inputs)(check))
        )
        try:
            test()
        except Exception as exc:
            covered.failure = f"seed {run_seed}: {type(exc).__name__}: {exc}"[:500]
            # each failure with its shrunk input (hypothesis's note) and where it was raised
            for failure in getattr(exc, "exceptions", [exc]):
                notes = "\n".join(getattr(failure, "__notes__", []))
                where = traceback.extract_tb(failure.__traceback__)[-1]
                print(f"{target.name}: {type(failure).__name__}: {str(failure)[:300]}")
                print(f"  at {where.filename}:{where.lineno}\n  {notes[:2000]}", flush=True)
    covered.seconds = time.monotonic() - started
    return covered


def report(results: list[Covered]) -> None:
    print(f"\n{'target':16} {'executions':>11} {'seconds':>8} {'per s':>7}  result")
    for c in results:
        rate = c.executions / c.seconds if c.seconds else 0.0
        verdict = f"FAILED {c.failure}" if c.failure else "ok"
        print(f"{c.name:16} {c.executions:>11} {c.seconds:>8.1f} {rate:>7.0f}  {verdict}")
    for c in results:
        shown = ", ".join(f"{what} {n}" for what, n in c.outcomes.most_common(8))
        more = len(c.outcomes) - 8
        print(f"  {c.name}: {shown}" + (f", and {more} kinds more" if more > 0 else ""))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=300.0, help="for all targets")
    parser.add_argument("--target", action="append", choices=[t.name for t in TARGETS])
    parser.add_argument("--seed", type=int, default=None, help="repeat a run")
    args = parser.parse_args(argv)
    chosen = [t for t in TARGETS if not args.target or t.name in args.target]
    rng = random.Random(args.seed)
    share = args.seconds / len(chosen)
    results = []
    for target in chosen:
        print(f"fuzzing {target.name} for {share:.0f} s", flush=True)
        results.append(fuzz(target, share, rng))
    report(results)
    return 1 if any(c.failure for c in results) else 0


if __name__ == "__main__":
    sys.exit(main())
