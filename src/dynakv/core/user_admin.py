"""Operators' user changes (add, grant, revoke, delete): applied to the membership this
node holds and gossiped to every peer, as bucket type changes are. Who may make them is
for the front door (access.py) to decide before the change reaches the core. Pure.
"""

from __future__ import annotations

from dynakv import users as us
from dynakv.core import membership as ms
from dynakv.core.component import Component
from dynakv.core.events import Effect, Log, Send
from dynakv.errors import InvalidRequest
from dynakv.messages import ClientUserChange, ClusterInfo, Gossip, Message


class UserAdmin(Component):
    """The cluster's users: changes by operators, through any member."""

    def on_user_change(self, now: float, source: str, msg: Message) -> list[Effect]:
        assert isinstance(msg, ClientUserChange)
        view = self.view
        if view.epoch == 0:
            raise InvalidRequest("this node has not joined a cluster yet")
        users = view.state.users
        grants = [tuple(g) for g in msg.grants]
        if msg.op == "add":
            record = us.changed(users, msg.name, msg.password, msg.token_sha256, grants)  # type: ignore[arg-type]
        elif msg.op == "grant":
            record = us.granted(users, msg.name, grants)  # type: ignore[arg-type]
        elif msg.op == "revoke":
            record = us.revoked(users, msg.name, grants)  # type: ignore[arg-type]
        elif msg.op == "delete":
            record = us.deleted(users, msg.name)
        elif msg.op == "key_create":
            # The door sealed the secret (runtime/gatekeeper.py): what is stored and gossiped
            # is only readable with the cluster secret.
            record = us.key_added(users, msg.name, msg.key_id, msg.key_secret)
        elif msg.op == "key_delete":
            record = us.key_removed(users, msg.name, msg.key_id)
        else:
            raise InvalidRequest(
                f"unknown user change {msg.op!r}; use add, grant, revoke, delete, key_create, "
                "key_delete"
            )
        us.check_admin_left(users, record)
        view.adopt(ms.set_user(view.state, record))
        # The operator's log line names the change, never a credential.
        fields = {"name": record.name, "op": msg.op, "version": record.version}
        fields["grants"] = ",".join(f"{p}:{b}" for b, p in record.grants)
        if msg.key_id:
            fields["key_id"] = msg.key_id
        self.logs.append(Log("info", "user_changed", fields))
        effects: list[Effect] = [Send(peer, Gossip(view.state)) for peer in view.peers()]
        effects.append(Send(source, ClusterInfo(msg.rid, view.state)))
        return effects
