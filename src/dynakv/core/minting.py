"""The actor ids that dot this node's writes as a coordinator: `name@incarnation.N`, N from
a counter leased in the engine's metadata, so no dot is ever minted twice (Riak's KV679).

Pure apart from synchronous metadata writes; no clock, no randomness.
"""

from __future__ import annotations

from dynakv.core.replica import Minted
from dynakv.storage.engine import Engine
from dynakv.versions import Clock

MINT_LEASE = 4096  # minting actor ids reserved per metadata write


class Minter:
    """Chooses the actor that dots the next write of a key (see `actor_for`)."""

    def __init__(self, engine: Engine, actor: str, reuse_dots: bool = False) -> None:
        self.actor = actor  # name@incarnation
        self._engine = engine
        self._reuse_dots = reuse_dots  # the reuse_dots_after_restart bug (tests only)
        self._next = int(engine.meta_get("mint_lease") or b"0")
        self._ceiling = self._next

    def actor_for(self, local: Clock | None, minted: Minted) -> str:
        """The actor id that dots this node's next write of a key whose state is `local`.

        It continues the actor this node last minted with for the key (`minted`, kept in
        the local record) while the state's counter for it is still the one minted last;
        otherwise it takes a fresh id. A node whose copy of the key was reaped, lost or
        rebuilt cannot know which counters it used for the key before, and old contexts
        that clients still hold, or states they brought back, may name them: a fresh id
        cannot reuse a dot (Riak's KV679).
        """
        if self._reuse_dots:
            return self.actor
        actor, counter = minted
        if local is not None and actor.startswith(self.actor + "."):
            for entry in local.entries:
                if entry.actor == actor:
                    if entry.counter == counter:
                        return actor
                    break
        if self._next >= self._ceiling:
            self._ceiling = self._next + MINT_LEASE
            self._engine.meta_put("mint_lease", str(self._ceiling).encode())
        self._next += 1
        return f"{self.actor}.{self._next - 1:x}"


def counter_of(clock: Clock, actor: str) -> int:
    """The clock's counter for `actor` (which must be in it)."""
    return next(entry.counter for entry in clock.entries if entry.actor == actor)
