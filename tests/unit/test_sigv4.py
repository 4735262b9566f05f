"""The SigV4 verifier (sigv4.py) against requests botocore signs, as boto3 would send them."""

from __future__ import annotations

import datetime
import hashlib
import time
from unittest import mock

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from dynakv import sigv4
from dynakv.key_sealing import NONCE_BYTES, Sealer

KEY_ID, SECRET = "DKIAEXAMPLEKEY0001", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
BODY = b'{"TableName": "orders", "Key": {"pk": {"S": "a"}}}'


def signed(
    secret: str = SECRET,
    key_id: str = KEY_ID,
    when: float | None = None,
    url: str = "http://127.0.0.1:8101/",
    service: str = "dynamodb",
    headers: dict[str, str] | None = None,
) -> sigv4.SignedRequest:
    request = AWSRequest(
        method="POST",
        url=url,
        data=BODY,
        headers={
            "Content-Type": "application/x-amz-json-1.0",
            "X-Amz-Target": "DynamoDB_20120810.GetItem",
            **(headers or {}),
        },
    )
    auth = SigV4Auth(Credentials(key_id, secret), service, "eu-west-3")
    at = datetime.datetime.fromtimestamp(time.time() if when is None else when, datetime.UTC)
    # botocore's clock, moved to sign as a client whose clock is off would
    with mock.patch("botocore.auth.get_current_datetime", return_value=at.replace(tzinfo=None)):
        auth.add_auth(request)
    prepared = request.prepare()
    host = url.split("/")[2]
    pairs = [("Host", host), *prepared.headers.items()]
    path = url.split(host, 1)[1]
    return sigv4.SignedRequest("POST", path, tuple(pairs), prepared.body)


def secrets(key_id: str) -> str | None:
    return SECRET if key_id == KEY_ID else None


def reason(request: sigv4.SignedRequest, now: float | None = None) -> str:
    with pytest.raises(sigv4.SignatureError) as info:
        sigv4.verify(request, "dynamodb", secrets, time.time() if now is None else now)
    return info.value.reason


def test_a_botocore_signed_request_verifies_and_names_its_key() -> None:
    auth = sigv4.verify(signed(), "dynamodb", secrets, time.time())
    assert (auth.key_id, auth.region, auth.service) == (KEY_ID, "eu-west-3", "dynamodb")


def test_a_path_and_query_string_are_part_of_what_is_signed() -> None:
    request = signed(url="http://localhost:8000/a/./b/../c?z=1&a=%20x")
    assert sigv4.verify(request, "dynamodb", secrets, time.time()).key_id == KEY_ID
    moved = sigv4.SignedRequest("POST", "/a/c?z=2&a=%20x", request.headers, request.body)
    assert reason(moved) == "bad_signature"


def test_a_wrong_secret_is_a_bad_signature() -> None:
    assert reason(signed(secret="not-the-secret")) == "bad_signature"


def test_an_unknown_key_is_named_as_such() -> None:
    assert reason(signed(key_id="DKIAUNKNOWNKEY0000")) == "unknown_key"


def test_a_changed_body_header_or_host_breaks_the_signature() -> None:
    request = signed()
    body = sigv4.SignedRequest("POST", "/", request.headers, BODY.replace(b'"a"', b'"b"'))
    assert reason(body) == "bad_signature"
    target = tuple(
        (k, "DynamoDB_20120810.DeleteItem" if k == "X-Amz-Target" else v)
        for k, v in request.headers
    )
    assert reason(sigv4.SignedRequest("POST", "/", target, BODY)) == "bad_signature"
    host = tuple((k, "127.0.0.1:9999" if k == "Host" else v) for k, v in request.headers)
    assert reason(sigv4.SignedRequest("POST", "/", host, BODY)) == "bad_signature"


def test_a_content_sha256_header_must_state_the_body_hash() -> None:
    assert reason(signed(headers={"X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD"})) == "bad_signature"
    good = hashlib.sha256(BODY).hexdigest()
    request = signed(headers={"X-Amz-Content-SHA256": good})
    assert sigv4.verify(request, "dynamodb", secrets, time.time()).key_id == KEY_ID


@pytest.mark.parametrize("skew", [-16 * 60, 16 * 60])
def test_a_signature_more_than_15_minutes_from_now_is_refused(skew: int) -> None:
    now = time.time()
    assert reason(signed(when=now + skew), now) == "expired"
    assert sigv4.verify(signed(when=now + skew), "dynamodb", secrets, now + skew).key_id


def test_a_signature_within_15_minutes_holds() -> None:
    now = time.time()
    assert sigv4.verify(signed(when=now - 14 * 60), "dynamodb", secrets, now).key_id == KEY_ID


def test_another_service_scope_is_refused() -> None:
    assert reason(signed(service="s3")) == "bad_signature"


@pytest.mark.parametrize(
    "header",
    [
        "Basic dXNlcjpwYXNz",
        "AWS4-HMAC-SHA256 Credential=X/20250101/us-east-1/dynamodb/aws4_request",
        "AWS4-HMAC-SHA256 Credential=X/2025/dynamodb, SignedHeaders=host, Signature=00",
        "AWS4-HMAC-SHA256 Credential=X/20250101/r/dynamodb/aws4_request, SignedHeaders=x;host, "
        "Signature=00",
    ],
)
def test_malformed_authorization_headers_are_refused_as_malformed(header: str) -> None:
    request = sigv4.SignedRequest("POST", "/", (("Host", "h"), ("Authorization", header)), b"")
    assert reason(request) == "malformed"


def test_no_authorization_header_is_missing() -> None:
    assert reason(sigv4.SignedRequest("POST", "/", (("Host", "h"),), b"")) == "missing"


def test_a_sealed_secret_opens_only_with_its_key_id_and_a_cluster_secret_held() -> None:
    old, new = Sealer((b"old-cluster-secret",)), Sealer((b"new", b"old-cluster-secret"))
    sealed = old.seal(KEY_ID, SECRET, bytes(NONCE_BYTES))
    assert SECRET.encode() not in sealed
    assert old.open(KEY_ID, sealed) == SECRET
    assert new.open(KEY_ID, sealed) == SECRET  # during a rotation: any secret opens
    assert old.open("DKIAOTHERKEY000000", sealed) is None
    assert Sealer((b"new",)).open(KEY_ID, sealed) is None
    assert old.open(KEY_ID, sealed[:-1] + bytes([sealed[-1] ^ 1])) is None
