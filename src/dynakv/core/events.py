"""What the outside world tells a Node (events) and what a Node asks of it (effects).

A source or destination is a member name for a peer, "@HOST:PORT" for a peer known only by
address (joining), or "#..." for a client connection or HTTP request (runtime tokens).
"""

from __future__ import annotations

from dataclasses import dataclass

from dynakv.messages import Message


# --- events ---------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Start:
    """The node process started; `join` is a member's address to join through, if any."""

    join: str | None = None


# Received and Send are made for every message; a frozen dataclass's __init__ costs 2.5
# times a plain one's (object.__setattr__ per field), so these two are not frozen. Nothing
# changes them after they are made.
@dataclass(slots=True)
class Received:
    source: str
    message: Message


@dataclass(frozen=True, slots=True)
class TimerFired:
    name: str


@dataclass(frozen=True, slots=True)
class PeerUp:
    name: str


@dataclass(frozen=True, slots=True)
class PeerDown:
    """The runtime could not reach the peer (connect refused, connection lost)."""

    name: str


@dataclass(frozen=True, slots=True)
class LoadReport:
    """The runtime's measure of foreground latency, for admission control of background work."""

    p99: float  # seconds, over the last report interval


Event = Start | Received | TimerFired | PeerUp | PeerDown | LoadReport


# --- effects --------------------------------------------------------------------------------
@dataclass(slots=True)  # not frozen: see Received
class Send:
    to: str
    message: Message
    # -1: a reply that is not UNGATED leaves once every write of the turn that sent it is
    # durable. Otherwise an Engine.mark(): it leaves once the writes up to it are (a put's
    # result acknowledges its own write, not those of the turn its last ack came in).
    mark: int = -1


@dataclass(frozen=True, slots=True)
class SetTimer:
    name: str
    at: float  # absolute time, same clock as the `now` given to Node.handle


@dataclass(frozen=True, slots=True)
class Log:
    """A line for operators: one event that matters, with its facts as fields."""

    level: str
    event: str
    fields: dict[str, object]


@dataclass(frozen=True, slots=True)
class Stop:
    """The node has left the cluster, or cannot be a member of it (a refused join): the
    runtime shuts the process down and exits with `status` (non-zero: it failed)."""

    reason: str
    status: int = 0


Effect = Send | SetTimer | Log | Stop


def is_client(source: str) -> bool:
    return source.startswith("#")
