"""dynakv: a highly available, eventually consistent key-value store on Dynamo's techniques."""

from dynakv.client import AsyncClient, Client, ReadResult
from dynakv.errors import InvalidRequest, SiblingsError, Timeout, Unavailable

__version__ = "0.1.0"
__all__ = [
    "AsyncClient",
    "Client",
    "InvalidRequest",
    "ReadResult",
    "SiblingsError",
    "Timeout",
    "Unavailable",
]
