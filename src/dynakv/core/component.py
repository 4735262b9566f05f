"""What every component of a node is given: its config, the cluster view, the request ids
and the list its operator log lines go to. Pure: no I/O, no clock."""

from __future__ import annotations

from dataclasses import dataclass

from dynakv.config import NodeConfig
from dynakv.core.events import Log
from dynakv.core.view import ClusterView, RequestIds


@dataclass(frozen=True)
class Context:
    config: NodeConfig
    view: ClusterView
    ids: RequestIds
    logs: list[Log]  # shared by every component; Node.handle hands them out, in order


class Component:
    """A node's component: one responsibility, fed events by Node, answering with effects.
    Besides the context, it is given only the collaborators it needs."""

    def __init__(self, context: Context) -> None:
        self.config = context.config
        self.view = context.view
        self.ids = context.ids
        self.logs = context.logs
