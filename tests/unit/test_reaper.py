"""The reaper alone: its sweep asks every member about tombstones past their grace, and it
answers other drivers' checks and commits (compare-and-delete)."""

from __future__ import annotations

from dynakv import versions
from dynakv.core.bugs import NO_BUGS
from dynakv.core.reaper import Reaper
from dynakv.messages import ReapCheck, ReapCheckReply, ReapCommit
from dynakv.ring import key_digest
from tests.unit.components import Parts, key_placed, parts, sends

GRACE = 4.0


def reaper(p: Parts) -> Reaper:
    return Reaper(p.context, p.store, p.engine, p.hints, p.budget, NO_BUGS)


def tombstone(p: Parts, key: str, at: float) -> bytes:
    """Store a tombstone-only state for `key`, written at virtual time `at`."""
    sibling = versions.Sibling(b"", deleted=True, timestamp=versions.HybridClock().now(at))
    clock = versions.update(versions.new(None, sibling), None, "n1@x.0")
    state = versions.encode(clock)
    p.store.put("b", key, clock, state=state)
    return state


def test_a_tombstone_past_its_grace_is_checked_with_every_member_then_reaped_everywhere():
    p = parts("n1", tombstone_grace=GRACE)
    r = reaper(p)
    key = key_placed(p.view, "n1")
    state = tombstone(p, key, at=0.0)
    assert sends(r.on_tick(1.0), ReapCheck) == []  # not yet past the grace
    checks = sends(r.on_tick(GRACE + 1.0), ReapCheck)
    assert sorted(to for to, _ in checks) == ["n2", "n3"]
    rid = checks[0][1].rid
    assert r.on_check_reply(6.0, "n2", ReapCheckReply(rid, [True])) == []
    commits = sends(r.on_check_reply(6.0, "n3", ReapCheckReply(rid, [True])), ReapCommit)
    assert sorted(to for to, _ in commits) == ["n2", "n3"]
    assert commits[0][1].items == [("b", key, state)]
    assert p.store.get("b", key) is None and r.stats.reaped == 1


def test_one_member_saying_no_keeps_the_tombstone():
    p = parts("n1", tombstone_grace=GRACE)
    r = reaper(p)
    key = key_placed(p.view, "n1")
    tombstone(p, key, at=0.0)
    rid = sends(r.on_tick(GRACE + 1.0), ReapCheck)[0][1].rid
    r.on_check_reply(6.0, "n2", ReapCheckReply(rid, [True]))
    assert r.on_check_reply(6.0, "n3", ReapCheckReply(rid, [False])) == []
    assert p.store.get("b", key) is not None and r.stats.refused == 1


def test_nothing_is_reaped_while_a_member_is_down():
    p = parts("n1", tombstone_grace=GRACE)
    r = reaper(p)
    tombstone(p, key_placed(p.view, "n1"), at=0.0)
    p.view.down = {"n3"}
    assert sends(r.on_tick(GRACE + 1.0), ReapCheck) == []
    assert r.stats.blocked == "members down: n3"


def test_a_commit_deletes_only_a_copy_the_tombstone_covers():
    p = parts("n2", tombstone_grace=GRACE)
    r = reaper(p)
    key = key_placed(p.view, "n1")
    state = tombstone(p, key, at=0.0)
    newer = versions.update(
        versions.new(versions.join(versions.decode(state)), versions.Sibling(b"back")),
        versions.decode(state),
        "n3@x.0",
    )
    p.store.put("b", key, newer)  # a write after the delete reached this member
    r.on_commit(6.0, "n1", ReapCommit(p.view.epoch, [("b", key, state)]))
    assert p.store.get("b", key) is not None
    p.store.put("b", key, versions.decode(state))
    r.on_commit(6.0, "n1", ReapCommit(p.view.epoch, [("b", key, state)]))
    assert p.store.get("b", key) is None


def test_a_check_from_another_epoch_is_answered_no():
    p = parts("n2", tombstone_grace=GRACE)
    r = reaper(p)
    state = tombstone(p, "k", at=0.0)
    check = ReapCheck(9, p.view.epoch + 1, [("b", "k", state)])
    (_, reply), = sends(r.on_check(6.0, "n1", check))  # fmt: skip
    assert reply == ReapCheckReply(9, [False])


def test_a_node_handing_its_copy_back_holds_the_reap_until_the_push_has_landed():
    p = parts("n1", tombstone_grace=GRACE, names=["n1", "n2", "n3", "n4", "n5"])
    key = next(f"k{i}" for i in range(1000) if "n1" not in p.view.placement("b", f"k{i}").primaries)
    state = tombstone(parts("n2", tombstone_grace=GRACE), key, at=0.0)  # a primary's state
    pushing: set[bytes] = set()
    r = Reaper(p.context, p.store, p.engine, p.hints, p.budget, NO_BUGS, pushing.__contains__)
    pushing.add(key_digest("b", key))  # n1 is pushing an old copy of the key to its primaries
    assert r._may_reap(GRACE + 1.0, "b", key, state, clean=True) is False
    pushing.clear()
    assert r._may_reap(GRACE + 1.0, "b", key, state, clean=True) is True
