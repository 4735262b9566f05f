"""The checker of the `expiry` workload: values with a lifetime. Pure, as checker.py.

What holds, whatever the faults:
- `expired_shown`: no read that started after a value's expiry returns it. A coordinator
  hides a value once its own clock reaches the expiry; the simulator's clocks run ahead of
  true time by a skew in [0, clock_skew_max], never behind, so the bound is the expiry
  itself. Against real processes, pass `skew`: how far a coordinator's clock may lag the
  clock the expiries were set by.
- `never_written`: a read or a replica returned bytes no write of that key wrote (or whose
  write failed, or was not yet invoked when the read completed).

Not checked here: lost writes (a value may have expired before any read could see it; the
register workload checks durability) and divergence (the background deletion of expired
values may still be on its way when the replicas are read).
"""

from __future__ import annotations

from collections.abc import Sequence

from dynakv.sim.checker import (
    EXPIRED_SHOWN,
    NEVER_WRITTEN,
    Op,
    Read,
    ReplicaRead,
    Report,
    Violation,
    Write,
    value_id,
)


def check_expiry(
    history: Sequence[Op], replicas: Sequence[ReplicaRead], skew: float = 0.0
) -> Report:
    report = Report("expiry")
    writes: dict[str, Write] = {}
    keys: set[tuple[str, str]] = set()
    for op in history:
        keys.add((op.bucket, op.key))
        if isinstance(op, Write):
            writes[op.id] = op
            report.writes += 1
            report.acknowledged += op.outcome == "ok"
            report.unknown += op.outcome == "unknown"
        else:
            report.reads += 1
    report.keys = len(keys)

    def written(
        bucket: str, key: str, value: bytes, before: float | None, where: str
    ) -> Write | None:
        write = writes.get(value_id(value) or "")
        if (
            write is None
            or (write.bucket, write.key) != (bucket, key)
            or write.value != value
            or write.outcome == "failed"
            or (before is not None and write.invoke > before)
        ):
            report.violations.append(
                Violation(NEVER_WRITTEN, bucket, key, f"{where} returned {value!r}")
            )
            return None
        return write

    for op in history:
        if not isinstance(op, Read) or op.outcome != "ok":
            continue
        for value in op.values:
            where = f"read by {op.process} at {op.complete:.6f}"
            write = written(op.bucket, op.key, value, op.complete, where)
            if write is not None and write.expires and op.invoke > write.expires / 1000 + skew:
                detail = (
                    f"read by {op.process} started at {op.invoke:.6f} returned {write.id}, "
                    f"which expired at {write.expires / 1000:.3f}"
                )
                report.violations.append(Violation(EXPIRED_SHOWN, op.bucket, op.key, detail))
    for replica in replicas:
        for value in replica.values:
            written(replica.bucket, replica.key, value, None, f"replica {replica.node}")
    return report
