"""This node as a replica of its peers' coordination: it answers their replica reads and
merges the states they write (and, as a fallback, records the hint for the primary).

Pure: storage through the synchronous ReplicaStore; time is the `now` passed in.
"""

from __future__ import annotations

from dynakv import versions
from dynakv.config import validate_location
from dynakv.core.bugs import InjectedBugs
from dynakv.core.component import Component, Context
from dynakv.core.events import Effect, Send
from dynakv.core.handoff import HintStore
from dynakv.core.replica import ReplicaStore
from dynakv.errors import ClusterError, Unavailable
from dynakv.item_keys import storage_key
from dynakv.messages import (
    Message,
    ReplicaGet,
    ReplicaGetReply,
    ReplicaPut,
    ReplicaPutReply,
    error_reply,
)
from dynakv.versions import HybridClock


class ReplicaService(Component):
    """ReplicaGet and ReplicaPut from coordinators, read repair, anti-entropy and handoff."""

    def __init__(
        self,
        context: Context,
        store: ReplicaStore,
        hints: HintStore,
        hlc: HybridClock,
        bugs: InjectedBugs,
    ) -> None:
        super().__init__(context)
        self.store = store
        self.hints = hints
        self.hlc = hlc
        self.bugs = bugs

    def on_get(self, now: float, source: str, msg: Message) -> list[Effect]:
        assert isinstance(msg, ReplicaGet)
        validate_location(msg.bucket, msg.key)
        return [Send(source, ReplicaGetReply(msg.rid, self.store.get_state(msg.bucket, msg.key)))]

    def on_put(self, now: float, source: str, msg: Message) -> list[Effect]:
        assert isinstance(msg, ReplicaPut)
        origin = msg.reply_to or source  # the coordinator, also of a write relayed to us
        for sender in {source, origin}:
            if sender in self.view.removed:
                # A removed node that comes back with its old disk must not hand old copies
                # around (they could bring back keys reaped since); it stops once it learns.
                raise ClusterError(f"{sender} was removed from the cluster")
        validate_location(msg.bucket, msg.key)
        incoming = versions.decode(msg.state)
        for sibling in versions.values(incoming):
            self.hlc.observe(sibling.timestamp)
        lww = self.view.is_lww(msg.bucket)
        if msg.hint and msg.hint != self.view.name:
            digest = storage_key(msg.bucket, msg.key)
            if not self.hints.record(msg.hint, digest, msg.bucket, msg.key, now, len(msg.state)):
                self.logs.append(self.hints.drop_log(msg.hint, msg.bucket, msg.key, "budget"))
                error = Unavailable("this fallback's hint budget is spent", needed=1, got=0)
                return [Send(origin, error_reply(msg.rid, error))] if msg.rid else []
        if msg.overwrite and self.bugs.read_repair_overwrites:
            self.store.put(msg.bucket, msg.key, incoming)
        else:
            self.store.merge(msg.bucket, msg.key, incoming, lww, msg.state)
        if not msg.rid:
            return []
        effects: list[Effect] = [Send(origin, ReplicaPutReply(msg.rid))]
        if msg.relay:  # the coordinator's one copy into this data center: pass it on
            onward = ReplicaPut(msg.rid, msg.bucket, msg.key, msg.state, reply_to=source)
            effects.extend(Send(node, onward) for node in msg.relay if node != self.view.name)
        return effects
