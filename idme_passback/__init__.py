"""idme_passback: an asyncio client for ID.me's Document Passback API.

Fetch the images of the identity documents your users verified with ID.me,
with a typed error for every failure, the per-document rate limit (2
requests a minute) never broken, and the three secrets (API token, access
token, document tokens) kept out of logs, exceptions and reprs.

Example::

    from idme_passback import PassbackClient

    async with PassbackClient(api_token, environment="sandbox") as client:
        attributes = await client.get_attributes(access_token)
        tokens = attributes.document_tokens
        image = await client.get_document(tokens.front, size="300x200")
        await client.download_document(tokens.back, "back.jpg")
"""

from __future__ import annotations

from ._version import __version__
from .bounds import Bounds
from .bulk import BulkResults, DocumentRequest, FetchResult, Progress
from .client import DEFAULT_DEADLINE, DEFAULT_TIMEOUT, ENVIRONMENTS, PassbackClient
from .clock import Clock, MonotonicClock
from .errors import (
    AccessDeniedError,
    APIStatusError,
    AuthenticationError,
    AuthorizationError,
    BadRequestError,
    BodyTooLargeError,
    ConfigurationError,
    ContentEncodingError,
    DeadlineExceededError,
    DecompressionBombError,
    DocumentTokensMissingError,
    FileTargetError,
    FileWriteError,
    FolderNotFoundError,
    FolderNotWritableError,
    GoneError,
    IncompleteBodyError,
    InvalidFilenameError,
    InvalidGrantError,
    InvalidSizeError,
    InvalidTokenError,
    LimiterTimeoutError,
    LimiterUnavailableError,
    MalformedResponseError,
    NotAnImageError,
    NotFoundError,
    OAuthError,
    PassbackConnectionError,
    PassbackError,
    PassbackTimeoutError,
    PermissionDeniedError,
    RateLimitError,
    ResponseError,
    ServerError,
    StateMismatchError,
    TargetExistsError,
    TargetIsAFolderError,
    TokenVerificationError,
    TransportError,
    UnprocessableEntityError,
)
from .limiter import Permit, RateLimiter
from .models import Attribute, Attributes, DocumentImage, DocumentTokens, StatusEntry
from .oauth import AuthorizationRequest, OAuthClient, TokenSet
from .redis_store import RedisStore
from .retry import RetryPolicy, parse_retry_after
from .sizing import MAX_DIMENSION, MIN_DIMENSION, Size, delivered_size, parse_size
from .store import Denied, Grant, LimiterStore, MemoryStore

__all__ = [
    "DEFAULT_DEADLINE",
    "DEFAULT_TIMEOUT",
    "ENVIRONMENTS",
    "MAX_DIMENSION",
    "MIN_DIMENSION",
    "APIStatusError",
    "AccessDeniedError",
    "Attribute",
    "Attributes",
    "AuthenticationError",
    "AuthorizationError",
    "AuthorizationRequest",
    "BadRequestError",
    "BodyTooLargeError",
    "Bounds",
    "BulkResults",
    "Clock",
    "ConfigurationError",
    "ContentEncodingError",
    "DeadlineExceededError",
    "DecompressionBombError",
    "Denied",
    "DocumentImage",
    "DocumentRequest",
    "DocumentTokens",
    "DocumentTokensMissingError",
    "FetchResult",
    "FileTargetError",
    "FileWriteError",
    "FolderNotFoundError",
    "FolderNotWritableError",
    "GoneError",
    "Grant",
    "IncompleteBodyError",
    "InvalidFilenameError",
    "InvalidGrantError",
    "InvalidSizeError",
    "InvalidTokenError",
    "LimiterStore",
    "LimiterTimeoutError",
    "LimiterUnavailableError",
    "MalformedResponseError",
    "MemoryStore",
    "MonotonicClock",
    "NotAnImageError",
    "NotFoundError",
    "OAuthClient",
    "OAuthError",
    "PassbackClient",
    "PassbackConnectionError",
    "PassbackError",
    "PassbackTimeoutError",
    "PermissionDeniedError",
    "Permit",
    "Progress",
    "RateLimitError",
    "RateLimiter",
    "RedisStore",
    "ResponseError",
    "RetryPolicy",
    "ServerError",
    "Size",
    "StateMismatchError",
    "StatusEntry",
    "TargetExistsError",
    "TargetIsAFolderError",
    "TokenSet",
    "TokenVerificationError",
    "TransportError",
    "UnprocessableEntityError",
    "__version__",
    "delivered_size",
    "parse_retry_after",
    "parse_size",
]
