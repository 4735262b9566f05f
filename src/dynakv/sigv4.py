"""AWS Signature Version 4, the server's side: parse an `Authorization: AWS4-HMAC-SHA256 ...`
header, rebuild the canonical request and string to sign from what arrived, derive the
signing key from the access key's secret, and compare signatures in constant time.

Pure: the secret comes from the caller's lookup and the time from `now`; no I/O, no clock.
Only the header form (no presigned query strings, no session tokens).
"""

from __future__ import annotations

import calendar
import hashlib
import hmac
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, unquote

ALGORITHM = "AWS4-HMAC-SHA256"
MAX_SKEW = 15 * 60.0  # s between X-Amz-Date and now, either way (AWS's limit)
UNKNOWN_KEY = "The security token included in the request is invalid."
_AMZ_DATE = re.compile(r"^\d{8}T\d{6}Z$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class SignatureError(Exception):
    """A request whose signature does not hold; `reason` names why for logs and metrics:
    missing, malformed, unknown_key, expired, bad_signature."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True, slots=True)
class Authorization:
    """The parts of one Authorization header."""

    key_id: str
    date: str  # YYYYMMDD of the credential scope
    region: str
    service: str
    signed_headers: tuple[str, ...]
    signature: str


@dataclass(frozen=True, slots=True)
class SignedRequest:
    """What the signature covers, as the request arrived."""

    method: str
    raw_path: str  # path and query, undecoded
    headers: tuple[tuple[str, str], ...]  # every header, names as sent, repeats kept
    body: bytes

    def header(self, name: str) -> str | None:
        values = [v for k, v in self.headers if k.lower() == name]
        return ",".join(values) if values else None


def parse(header: str) -> Authorization:
    """The parts of `AWS4-HMAC-SHA256 Credential=ID/DATE/REGION/SERVICE/aws4_request,
    SignedHeaders=a;b, Signature=HEX`; SignatureError("malformed") otherwise."""
    algorithm, _, rest = header.strip().partition(" ")
    if algorithm != ALGORITHM:
        raise SignatureError("malformed", f"Unsupported AWS 'algorithm': '{algorithm[:64]}'")
    fields: dict[str, str] = {}
    for part in rest.split(","):
        name, sep, value = part.strip().partition("=")
        if sep:
            fields[name] = value.strip()
    missing = [n for n in ("Credential", "SignedHeaders", "Signature") if not fields.get(n)]
    if missing:
        raise SignatureError(
            "malformed",
            " ".join(f"Authorization header requires '{n}' parameter." for n in missing)
            + f" Authorization={header[:200]}",
        )
    scope = fields["Credential"].split("/")
    if len(scope) != 5 or scope[4] != "aws4_request" or not all(scope):
        raise SignatureError(
            "malformed",
            "Credential should be scoped to a valid region, a service and 'aws4_request': "
            "ID/YYYYMMDD/REGION/SERVICE/aws4_request",
        )
    signed = tuple(fields["SignedHeaders"].split(";"))
    if list(signed) != sorted({h.lower() for h in signed}) or "host" not in signed:
        raise SignatureError(
            "malformed", "SignedHeaders must be sorted, lower-case, and include host"
        )
    return Authorization(scope[0], scope[1], scope[2], scope[3], signed, fields["Signature"])


def canonical_request(request: SignedRequest, signed_headers: Iterable[str]) -> str:
    path, _, query = request.raw_path.partition("?")
    lines = [request.method.upper(), _canonical_path(path), _canonical_query(query)]
    signed = list(signed_headers)
    for name in signed:
        value = request.header(name)
        lines.append(f"{name}:{' '.join((value or '').split())}")
    lines += ["", ";".join(signed), _payload_hash(request)]
    return "\n".join(lines)


def string_to_sign(amz_date: str, auth: Authorization, canonical: str) -> str:
    scope = f"{auth.date}/{auth.region}/{auth.service}/aws4_request"
    digest = hashlib.sha256(canonical.encode()).hexdigest()
    return f"{ALGORITHM}\n{amz_date}\n{scope}\n{digest}"


def signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    key = ("AWS4" + secret).encode()
    for part in (date, region, service, "aws4_request"):
        key = hmac.digest(key, part.encode(), hashlib.sha256)
    return key


def verify(
    request: SignedRequest,
    service: str,
    secret_of: Callable[[str], str | None],
    now: float,
) -> Authorization:
    """The request's Authorization if its signature holds under the secret of its access key
    (`secret_of(key_id)`, None for an unknown key); SignatureError otherwise."""
    header = request.header("authorization")
    if not header:
        raise SignatureError("missing", "Request is missing Authentication Token")
    auth = parse(header)
    # No session tokens here: a temporary credential is a key this node never issued.
    secret = None if request.header("x-amz-security-token") else secret_of(auth.key_id)
    if secret is None:
        raise SignatureError("unknown_key", UNKNOWN_KEY)
    amz_date = request.header("x-amz-date") or ""
    _check_date(amz_date, auth, now)
    if auth.service != service:
        raise SignatureError(
            "bad_signature", f"Credential should be scoped to correct service: '{service}'. "
        )
    canonical = canonical_request(request, auth.signed_headers)
    wanted = hmac.digest(
        signing_key(secret, auth.date, auth.region, auth.service),
        string_to_sign(amz_date, auth, canonical).encode(),
        hashlib.sha256,
    ).hex()
    if not hmac.compare_digest(wanted, auth.signature.lower()):
        raise SignatureError(
            "bad_signature",
            "The request signature we calculated does not match the signature you provided. "
            "Check your AWS Secret Access Key and signing method. Consult the service "
            "documentation for details.",
        )
    return auth


def _check_date(amz_date: str, auth: Authorization, now: float) -> None:
    if "x-amz-date" not in auth.signed_headers or not _AMZ_DATE.fullmatch(amz_date):
        raise SignatureError(
            "malformed", "Authorization header requires existence of a signed X-Amz-Date header"
        )
    if amz_date[:8] != auth.date:
        raise SignatureError(
            "bad_signature",
            f"Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date "
            f"from HTTP: '{auth.date}' != '{amz_date[:8]}', from '{amz_date}'.",
        )
    try:
        signed_at = calendar.timegm(time.strptime(amz_date, "%Y%m%dT%H%M%SZ"))
    except ValueError:
        raise SignatureError("malformed", f"X-Amz-Date {amz_date!r} is not a date") from None
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    if signed_at < now - MAX_SKEW:
        earliest = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now - MAX_SKEW))
        raise SignatureError(
            "expired",
            f"Signature expired: {amz_date} is now earlier than {earliest} ({stamp} - 15 min.)",
        )
    if signed_at > now + MAX_SKEW:
        latest = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now + MAX_SKEW))
        raise SignatureError(
            "expired",
            f"Signature not yet current: {amz_date} is still later than {latest} "
            f"({stamp} + 15 min.)",
        )


def _payload_hash(request: SignedRequest) -> str:
    """The body's SHA-256; an x-amz-content-sha256 header must state exactly that (a body
    the signature does not cover would be anyone's)."""
    actual = hashlib.sha256(request.body).hexdigest()
    stated = request.header("x-amz-content-sha256")
    if stated is not None and (not _HEX64.fullmatch(stated) or stated != actual):
        raise SignatureError(
            "bad_signature",
            "The provided 'x-amz-content-sha256' header does not match what was computed.",
        )
    return actual


def _canonical_path(path: str) -> str:
    # As botocore signs: the decoded path, dot segments removed, quoted once.
    segments: list[str] = []
    for segment in unquote(path or "/").split("/"):
        if segment == "..":
            if segments:
                segments.pop()
        elif segment not in (".", ""):
            segments.append(segment)
    normal = "/" + "/".join(segments)
    if path.endswith("/") and normal != "/":
        normal += "/"
    return quote(normal, safe="/~")


def _canonical_query(query: str) -> str:
    pairs = sorted(parse_qsl(query, keep_blank_values=True))
    return "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in pairs)
