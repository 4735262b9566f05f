"""Admission control for background work (Dynamo §6.5): anti-entropy, hint delivery and
ownership transfer share one budget that shrinks while foreground latency is high.

A feedback controller fed the recent foreground p99 latency: above the threshold the budget
is halved (multiplicative decrease), below it the budget grows back by a step (additive
increase), between a floor and 1. Pure: the runtime measures, the node asks how much it may do.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class BackgroundBudget:
    """The share (floor..1) of its normal pace that background work may use now."""

    threshold: float  # seconds of foreground p99 above which background work backs off
    floor: float = 0.1  # never stop entirely: repairs and transfers must finish eventually
    step: float = 0.1  # recovery per report below the threshold
    share: float = 1.0
    last_p99: float = 0.0
    reductions: int = 0

    def report(self, p99: float) -> None:
        """The foreground p99 latency (seconds) over the last interval."""
        self.last_p99 = p99
        if p99 > self.threshold:
            if self.share > self.floor:
                self.reductions += 1
            self.share = max(self.floor, self.share / 2)
        else:
            self.share = min(1.0, self.share + self.step)

    def scale(self, amount: int) -> int:
        """`amount` units of background work, scaled down; at least 1."""
        return max(1, int(amount * self.share))

    def stretch(self, interval: float) -> float:
        """An interval between background steps, stretched while the budget is low."""
        return interval / self.share

    def rest(self, busy: float, other: float = 1.0) -> float:
        """How long to wait after `busy` seconds of background work so that it takes no more
        than `share` of the time (or `other`'s, a peer's share, when lower): nothing at a full
        share, nine times as long at 10%."""
        share = max(self.floor, min(self.share, other))
        return busy * (1.0 / share - 1.0)

    def status(self) -> dict[str, object]:
        return {
            "share": round(self.share, 3),
            "foreground_p99_ms": round(self.last_p99 * 1000, 2),
            "threshold_ms": round(self.threshold * 1000, 2),
            "reductions": self.reductions,
        }
