"""Errors with stable codes, shared by the core, the HTTP API, the binary protocol and the client.

Each class has a `code` (the JSON/binary error code) and an HTTP `status`; the layers map
them to responses and back. Never raise a bare Exception across a public boundary.
"""

from __future__ import annotations


class DynakvError(Exception):
    """Base class: every error a user can see."""

    code = "internal"
    status = 500

    def __init__(self, message: str = "") -> None:
        super().__init__(message or self.code)
        self.message = message or self.code


class InvalidRequest(DynakvError):
    """The request itself is wrong: bad bucket, key, parameter, context or frame."""

    code = "invalid_request"
    status = 400


class ValueTooLarge(InvalidRequest):
    """A value above the node's max_value_bytes."""

    code = "value_too_large"
    status = 413


class RequestTimeout(InvalidRequest):
    """A request that did not arrive whole within the node's request_read_timeout."""

    code = "request_timeout"
    status = 408


class NotFound(DynakvError):
    code = "not_found"
    status = 404


class MethodNotAllowed(DynakvError):
    """An HTTP method the path does not take (the answer's Allow header lists those it does)."""

    code = "method_not_allowed"
    status = 405


class Unavailable(DynakvError):
    """Too few replicas answered before the request timeout."""

    code = "unavailable"
    status = 503

    def __init__(self, message: str = "", needed: int = 0, got: int = 0) -> None:
        super().__init__(message or f"needed {needed} replicas, got {got}")
        self.needed = needed
        self.got = got


class Timeout(DynakvError):
    code = "timeout"
    status = 504


class SiblingsError(DynakvError):
    """A read found several concurrent values and no resolver was given."""

    code = "siblings"
    status = 300

    def __init__(self, values: list[bytes], context: str) -> None:
        super().__init__(f"{len(values)} siblings; pass resolve= or put with the context")
        self.values = values
        self.context = context


class ClusterError(DynakvError):
    """A membership change was refused (duplicate name, other cluster, ...)."""

    code = "cluster_error"
    status = 409


class Unauthenticated(DynakvError):
    """Authentication is on and the request carries no valid credentials."""

    code = "unauthenticated"
    status = 401


class TooManyLogins(Unauthenticated):
    """Too many failed logins from the client's address (runtime/login_limits.py): refused
    without checking the credentials until the address's bucket refills."""

    code = "too_many_logins"
    status = 429


class Forbidden(DynakvError):
    """The authenticated user lacks the permission the request needs (access.py)."""

    code = "forbidden"
    status = 403


class InternalError(DynakvError):
    code = "internal"
    status = 500


_BY_CODE: dict[str, type[DynakvError]] = {
    cls.code: cls
    for cls in (
        InvalidRequest,
        ValueTooLarge,
        NotFound,
        MethodNotAllowed,
        Unavailable,
        Timeout,
        ClusterError,
        Unauthenticated,
        TooManyLogins,
        Forbidden,
    )
}


def from_code(code: str, message: str, needed: int = 0, got: int = 0) -> DynakvError:
    """Rebuild the error a remote side reported by its code."""
    cls = _BY_CODE.get(code, InternalError)
    if cls is Unavailable:
        return Unavailable(message, needed=needed, got=got)
    return cls(message)
