"""Python client for the ERP sync gateway (Fast's API): Client (blocking) and AsyncClient (asyncio)."""

from ._core import RetryEvent, RetryPolicy
from .aio import AsyncClient
from .client import Client
from .errors import (
                     AuthenticationError,
                     BadRequest,
                     Conflict,
                     ConnectionFailed,
                     DataStructureError,
                     FormNotFound,
                     GatewayError,
                     KeyReused,
                     NotFound,
                     PayloadTooLarge,
                     PermissionDenied,
                     RateLimited,
                     RecordError,
                     ServerError,
                     ServiceUnavailable,
)
from .results import ChunkResult, Outcome, Page, Rejected, SyncResult

__all__ = [
    "AsyncClient", "AuthenticationError", "BadRequest", "ChunkResult", "Client", "Conflict", "ConnectionFailed",
    "DataStructureError", "FormNotFound", "GatewayError", "KeyReused", "NotFound", "Outcome", "Page",
    "PayloadTooLarge", "PermissionDenied", "RateLimited", "RecordError", "Rejected", "RetryEvent", "RetryPolicy",
    "ServerError", "ServiceUnavailable", "SyncResult",
]
