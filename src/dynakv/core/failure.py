"""Failure detection: phi accrual (Hayashibara et al.; Akka's PhiAccrualFailureDetector)
over heartbeats, and `Liveness`, which turns heartbeats and broken connections into the
node's down set.

Pure: no I/O, no clock (time is the `now` passed in, in seconds), no randomness. A node's
"down" view drives sloppy quorum only; it never changes ring ownership.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from dynakv.core.component import Component, Context
from dynakv.core.events import Effect, Log, Send, SetTimer, is_client
from dynakv.messages import Heartbeat, Message

__all__ = [
    "DEFAULT_SETTINGS",
    "DetectorSettings",
    "FailureDetector",
    "Liveness",
    "PhiAccrual",
    "phi_of",
]

_NS = 1_000_000_000  # intervals are kept in integer nanoseconds: the running sums stay exact
_LN10 = math.log(10.0)
# exp overflows above ~709.78; past this z, log10(1 + e^z) is z / ln 10 to the last bit.
_Z_EXP_LIMIT = 700.0
_PHI_AT_EXP_LIMIT = math.log10(1.0 + math.exp(_Z_EXP_LIMIT))


@dataclass(frozen=True)
class DetectorSettings:
    """How suspicious silence must be before a peer counts as unavailable (Akka's defaults)."""

    threshold: float = 8.0  # phi at or above which a peer is unavailable
    window: int = 1000  # heartbeat inter-arrival intervals kept per peer
    min_std_deviation: float = 0.1  # seconds (Akka: 100 ms); floor of the fitted deviation
    acceptable_pause: float = 3.0  # seconds added to the mean interval (GC pauses, hiccups)
    first_heartbeat_estimate: float = 1.0  # seconds: the interval assumed before any is seen

    def __post_init__(self) -> None:
        if not self.threshold > 0:
            raise ValueError(f"threshold must be > 0, got {self.threshold!r}")
        if self.window < 1:
            raise ValueError(f"window must be >= 1, got {self.window!r}")
        if not self.min_std_deviation > 0:
            raise ValueError(f"min_std_deviation must be > 0, got {self.min_std_deviation!r}")
        if not self.acceptable_pause >= 0:
            raise ValueError(f"acceptable_pause must be >= 0, got {self.acceptable_pause!r}")
        if not self.first_heartbeat_estimate > 0:
            raise ValueError(
                f"first_heartbeat_estimate must be > 0, got {self.first_heartbeat_estimate!r}"
            )


DEFAULT_SETTINGS = DetectorSettings()


def phi_of(elapsed: float, mean: float, std_deviation: float) -> float:
    """phi = -log10(1 - F(elapsed)) for F the normal CDF of (mean, std_deviation).

    F is Akka's logistic approximation, 1 - F(x) = 1 / (1 + e^z) with
    z = y (1.5976 + 0.070566 y^2) and y = (x - mean) / std, so phi = log10(1 + e^z).
    Written that way it never takes log(0): finite for every finite elapsed, 0.0 well
    before the mean, and non-decreasing in elapsed (a composition of monotone steps).
    """
    y = (elapsed - mean) / std_deviation
    z = y * (1.5976 + 0.070566 * y * y)
    if z <= _Z_EXP_LIMIT:
        return math.log10(1.0 + math.exp(z))
    return max(_PHI_AT_EXP_LIMIT, z / _LN10)


class PhiAccrual:
    """The heartbeat history of one peer and how suspicious its silence is now.

    The inter-arrival intervals of the last `window` heartbeats are fitted with a normal
    distribution (running sums: O(1) per heartbeat). The first heartbeat seeds the window
    with two intervals, estimate -+ estimate/4 (Akka), so phi is meaningful at once. As in
    Akka, an interval that ends a period in which the peer was already unavailable is not
    recorded: one long outage would otherwise inflate the mean for the next thousand beats.
    A heartbeat at or before the previous one (reordered or duplicated) is ignored.
    """

    __slots__ = ("_intervals", "_last", "_settings", "_sum", "_sum_squares")

    def __init__(self, settings: DetectorSettings) -> None:
        self._settings = settings
        self._intervals: deque[int] = deque()  # nanoseconds
        self._sum = 0
        self._sum_squares = 0
        self._last: float | None = None

    @property
    def last_heartbeat(self) -> float | None:
        """When the latest heartbeat arrived, or None before the first."""
        return self._last

    @property
    def samples(self) -> int:
        """How many intervals the window holds (at most settings.window)."""
        return len(self._intervals)

    def heartbeat(self, now: float) -> None:
        """Record a heartbeat that arrived at `now`."""
        last = self._last
        if last is None:
            estimate = self._settings.first_heartbeat_estimate
            self._record(estimate - estimate / 4)
            self._record(estimate + estimate / 4)
        elif now <= last:
            return
        elif self.phi(now) < self._settings.threshold:
            self._record(now - last)
        self._last = now

    def phi(self, now: float) -> float:
        """Suspicion that the peer is down: 0.0 before any heartbeat; grows with silence."""
        last = self._last
        if last is None:
            return 0.0
        count = len(self._intervals)
        mean = self._sum / count / _NS
        variance = (count * self._sum_squares - self._sum * self._sum) / (count * count)
        std_deviation = max(math.sqrt(variance) / _NS, self._settings.min_std_deviation)
        elapsed = max(0.0, now - last)
        return phi_of(elapsed, mean + self._settings.acceptable_pause, std_deviation)

    def _record(self, interval: float) -> None:
        ns = round(interval * _NS)
        self._intervals.append(ns)
        self._sum += ns
        self._sum_squares += ns * ns
        if len(self._intervals) > self._settings.window:
            old = self._intervals.popleft()
            self._sum -= old
            self._sum_squares -= old * old


class FailureDetector:
    """Phi-accrual detection for every peer, by name.

    `watch` a peer when heartbeats from it become due (it joined, or this node started).
    Availability of a peer:
    - never watched and never heard from: available (nothing is expected of it);
    - watched, never heard from: available until first_heartbeat_estimate + acceptable_pause
      seconds after it was first watched, then unavailable; its phi is 0.0 before that
      deadline and infinity after it, so `is_available` is always `phi < threshold`;
    - heard from: `phi < threshold`, phi from its heartbeat history.
    """

    def __init__(self, settings: DetectorSettings = DEFAULT_SETTINGS) -> None:
        self.settings = settings
        self._peers: dict[str, PhiAccrual] = {}
        self._watched_since: dict[str, float] = {}  # watched peers not heard from yet

    def watch(self, peer: str, now: float) -> None:
        """Start expecting heartbeats from peer; a no-op if it is watched or heard already."""
        if peer not in self._peers and peer not in self._watched_since:
            self._watched_since[peer] = now

    def heartbeat(self, peer: str, now: float) -> None:
        """A heartbeat (any message that proves liveness) from peer arrived at `now`."""
        detector = self._peers.get(peer)
        if detector is None:
            detector = self._peers[peer] = PhiAccrual(self.settings)
            self._watched_since.pop(peer, None)
        detector.heartbeat(now)

    def phi(self, peer: str, now: float) -> float:
        detector = self._peers.get(peer)
        if detector is not None:
            return detector.phi(now)
        since = self._watched_since.get(peer)
        if since is None:
            return 0.0
        grace = self.settings.first_heartbeat_estimate + self.settings.acceptable_pause
        return 0.0 if now - since < grace else math.inf

    def is_available(self, peer: str, now: float) -> bool:
        return self.phi(peer, now) < self.settings.threshold

    def forget(self, peer: str) -> None:
        """Stop tracking peer (it left the cluster); unknown peers are ignored."""
        self._peers.pop(peer, None)
        self._watched_since.pop(peer, None)

    def peers(self) -> list[str]:
        """Every watched or heard-from peer, sorted."""
        return sorted(self._peers.keys() | self._watched_since.keys())


class Liveness(Component):
    """Which peers this node treats as down: those the runtime could not reach (`PeerDown`)
    and those phi-accrual suspects. Sends a heartbeat to every member each interval; the
    down set it keeps in the view steers sloppy quorum and waits, never ownership."""

    def __init__(self, context: Context) -> None:
        super().__init__(context)
        config = context.config
        self.unreachable: set[str] = set()
        self.suspected: set[str] = set()
        self.detector = FailureDetector(
            DetectorSettings(
                threshold=config.phi_threshold,
                window=config.phi_window,
                min_std_deviation=config.phi_min_std_deviation,
                acceptable_pause=config.phi_acceptable_pause,
                first_heartbeat_estimate=config.heartbeat_interval,
            )
        )

    def on_tick(self, now: float) -> list[Effect]:
        """Heartbeat every member, and re-judge which of them are suspected."""
        effects: list[Effect] = [SetTimer("heartbeat", now + self.config.heartbeat_interval)]
        beat = Heartbeat()
        detector = self.detector
        for peer in self.view.peers():
            detector.watch(peer, now)
            effects.append(Send(peer, beat))
        suspected = {peer for peer in detector.peers() if not detector.is_available(peer, now)}
        for peer in sorted(suspected - self.suspected):
            phi = detector.phi(peer, now)
            self.logs.append(Log("warning", "peer_suspected", {"peer": peer, "phi": phi}))
        for peer in sorted(self.suspected - suspected):
            self.logs.append(Log("info", "peer_recovered", {"peer": peer}))
        if suspected != self.suspected:
            self.suspected = suspected
            self._refresh_down()
        return effects

    def on_heartbeat(self, now: float, source: str, msg: Message) -> list[Effect]:
        if is_client(source):
            return []
        self.detector.heartbeat(source, now)
        self.reachable(source)
        if source in self.suspected and self.detector.is_available(source, now):
            self.suspected.discard(source)
            self.logs.append(Log("info", "peer_recovered", {"peer": source}))
            self._refresh_down()
        return []

    def unreachable_peer(self, name: str) -> None:
        """The runtime's connection to `name` failed (or the simulator's peer stopped)."""
        if name not in self.unreachable and name != self.view.name:
            self.unreachable.add(name)
            self.logs.append(Log("warning", "peer_unreachable", {"peer": name}))
            self._refresh_down()

    def reachable(self, name: str) -> None:
        """A message or connection from `name` arrived."""
        if name in self.unreachable:
            self.unreachable.discard(name)
            self._refresh_down()

    def _refresh_down(self) -> None:
        self.view.down = (self.unreachable | self.suspected) - {self.view.name}
