"""dynakv: a highly available, eventually consistent key-value store on Dynamo's techniques."""

from dynakv.client import AsyncClient, Client, ReadResult
from dynakv.errors import (
    ClusterError,
    DynakvError,
    Forbidden,
    InternalError,
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
    RequestTimeout,
    SiblingsError,
    Timeout,
    TooManyLogins,
    Unauthenticated,
    Unavailable,
    ValueTooLarge,
)

__version__ = "0.1.0"
__all__ = [
    "AsyncClient",
    "Client",
    "ClusterError",
    "DynakvError",
    "Forbidden",
    "InternalError",
    "InvalidRequest",
    "MethodNotAllowed",
    "NotFound",
    "ReadResult",
    "RequestTimeout",
    "SiblingsError",
    "Timeout",
    "TooManyLogins",
    "Unauthenticated",
    "Unavailable",
    "ValueTooLarge",
]
