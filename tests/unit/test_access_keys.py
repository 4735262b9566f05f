"""Access keys: kept on the user's record with the secret sealed (users.py, key_sealing.py),
sealed at the node's door and never shown to clients (gatekeeper.py), checked by SigV4 and
mapped to the grants each DynamoDB operation needs (dynamodb_auth.py)."""

from __future__ import annotations

import time

import msgspec
import pytest

from dynakv import peer_credential
from dynakv import users as us
from dynakv.access import Need
from dynakv.errors import InvalidRequest
from dynakv.item_keys import table_bucket
from dynakv.messages import ClientUserChange
from dynakv.runtime.dynamodb_auth import needs
from dynakv.runtime.gatekeeper import Gatekeeper, without_secrets
from tests.unit.test_gatekeeper import Lines, _state
from tests.unit.test_sigv4 import KEY_ID, SECRET, signed

CLUSTER_SECRETS = (b"cluster-secret-one",)


def _alice() -> us.UserRecord:
    return us.changed((), "alice", us.hash_password("pw", b"s" * 16), b"", [("*", "admin")])


def _gate(*users: us.UserRecord) -> Gatekeeper:
    return Gatekeeper(True, lambda: _state(*users), Lines(), None, CLUSTER_SECRETS)  # type: ignore[arg-type]


def _with_key(gate: Gatekeeper, user: us.UserRecord) -> us.UserRecord:
    change = ClientUserChange(0, "key_create", user.name, key_id=KEY_ID, key_secret=SECRET.encode())
    sealed = gate.sealed(change)
    return us.key_added((user,), user.name, sealed.key_id, sealed.key_secret)


def test_a_key_is_sealed_at_the_door_and_signs_for_its_user() -> None:
    alice = _alice()
    gate = _gate(alice)
    with_key = _with_key(gate, alice)
    assert SECRET.encode() not in msgspec.msgpack.encode(with_key)
    gate = _gate(with_key)
    assert gate.signer(signed(), "dynamodb", "10.0.0.1").name == "alice"


def test_a_key_sealed_under_another_cluster_secret_is_an_unknown_key() -> None:
    from dynakv import sigv4

    with_key = _with_key(_gate(_alice()), _alice())
    other = Gatekeeper(True, lambda: _state(with_key), Lines(), None, (b"another",))  # type: ignore[arg-type]
    with pytest.raises(sigv4.SignatureError) as info:
        other.signer(signed(), "dynamodb", "10.0.0.1")
    assert info.value.reason == "unknown_key"


def test_without_a_cluster_secret_no_key_can_be_made() -> None:
    gate = Gatekeeper(True, lambda: _state(), Lines())  # type: ignore[arg-type]
    change = ClientUserChange(0, "key_create", "alice", key_id=KEY_ID, key_secret=b"s" * 40)
    with pytest.raises(InvalidRequest, match="cluster secret"):
        gate.sealed(change)


def test_clients_see_key_ids_never_sealed_secrets() -> None:
    with_key = _with_key(_gate(_alice()), _alice())
    shown = without_secrets(_state(with_key)).users[0]
    assert [(k.key_id, k.sealed) for k in shown.access_keys] == [(KEY_ID, b"")]


def test_keys_survive_grants_and_new_passwords_and_go_with_the_user() -> None:
    with_key = _with_key(_gate(_alice()), _alice())
    granted = us.granted((with_key,), "alice", [("a", "read")])
    assert granted.access_keys == with_key.access_keys
    renewed = us.changed((granted,), "alice", us.hash_password("new", b"t" * 16), b"", [])
    assert renewed.access_keys == with_key.access_keys
    assert us.deleted((renewed,), "alice").access_keys == ()
    removed = us.key_removed((renewed,), "alice", KEY_ID)
    assert removed.access_keys == () and removed.version == renewed.version + 1


def test_key_changes_refuse_bad_ids_repeats_and_unknown_keys() -> None:
    with_key = _with_key(_gate(_alice()), _alice())
    with pytest.raises(InvalidRequest, match="in use"):
        us.key_added((with_key,), "alice", KEY_ID, b"sealed")
    with pytest.raises(InvalidRequest, match="invalid access key id"):
        us.key_added((with_key,), "alice", "lower-case", b"sealed")
    with pytest.raises(InvalidRequest, match="no access key"):
        us.key_removed((with_key,), "alice", "DKIANOSUCHKEY0000000")


def test_each_operation_needs_its_permission_on_each_table_it_touches() -> None:
    orders = table_bucket("orders")
    assert needs("GetItem", {"TableName": "orders"}) == [Need("read", orders)]
    assert needs("UpdateItem", {"TableName": "orders"}) == [Need("write", orders)]
    assert needs("CreateTable", {"TableName": "orders"}) == [Need("admin", orders)]
    assert needs("ListTables", {}) == [None]
    batch = needs("BatchWriteItem", {"RequestItems": {"orders": [], "carts": []}})
    assert batch == [Need("write", orders), Need("write", table_bucket("carts"))]
    assert needs("TransactWriteItems", {}) == [Need("admin", "*")]  # not mapped: closed


def test_a_peer_credential_holds_for_a_minute_under_the_cluster_secret() -> None:
    now = time.time()
    value = peer_credential.make(b"k", "node1", now).split(" ", 1)[1]
    assert peer_credential.check(value, (b"x", b"k"), now + 30) == "node1"
    assert peer_credential.check(value, (b"x",), now) is None
    assert peer_credential.check(value, (b"k",), now + 61) is None
    assert peer_credential.check("node1 12 zz", (b"k",), now) is None
