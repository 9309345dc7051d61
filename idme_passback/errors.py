"""The exceptions this library raises.

Everything derives from one root, so ``except PassbackError`` catches them
all. Misuse (a bad size, a malformed token, no API token) is also a
``ValueError`` so callers can catch it the way they catch other bad input.
Nothing here ever carries a secret: messages name document tokens only in
shortened form, and body excerpts are scrubbed of the secrets in play. Every
class survives a :mod:`pickle` round trip with its attributes (bulk scripts
hand results across process pools); the cause and traceback stay behind.

::

    PassbackError
    ├── ConfigurationError (ValueError)        no API token, an unsafe base URL
    ├── InvalidSizeError (ValueError)          size outside 100..1000, wrong type
    ├── InvalidTokenError (ValueError)         a token that could change the request
    ├── AuthorizationError                     the login came back with an error; has ``error``
    │   ├── AccessDeniedError                  the user declined (``access_denied``)
    │   └── StateMismatchError                 the callback's ``state`` is not the request's
    ├── TransportError                         the request did not complete
    │   ├── PassbackConnectionError            could not connect, or dropped
    │   └── PassbackTimeoutError               no answer in time (a network timeout)
    │       └── DeadlineExceededError          the call's own deadline passed
    ├── LimiterTimeoutError (TimeoutError)     no rate-limit token within the wait allowed
    ├── LimiterUnavailableError                the limiter's store failed (fails closed)
    ├── FileTargetError (OSError)              the file cannot be written where asked
    │   ├── FolderNotFoundError (FileNotFoundError)      the folder does not exist
    │   ├── FolderNotWritableError (PermissionError)     the folder refuses new files
    │   ├── TargetExistsError (FileExistsError)          the file (or a symlink) is there
    │   ├── TargetIsAFolderError (IsADirectoryError)     the path names a folder
    │   └── FileWriteError                     writing failed (disk full, I/O error)
    ├── InvalidFilenameError (ValueError)      a name that is not bare, encodable and short enough
    ├── ResponseError                          the server answered, but not usefully
    │   ├── NotAnImageError                    a 200 whose body is not an image
    │   ├── IncompleteBodyError                body shorter than its Content-Length
    │   ├── BodyTooLargeError                  a body past its size bound
    │   │   └── DecompressionBombError         decoded bytes far past the bytes received
    │   ├── ContentEncodingError               a stacked, unknown or corrupt Content-Encoding
    │   ├── MalformedResponseError             JSON that is not the documented shape
    │   ├── DocumentTokensMissingError         attributes without ``document_tokens``
    │   └── TokenVerificationError             a JWT or JWE that fails verification
    └── APIStatusError                         a non-2xx status; has ``status_code``
        ├── OAuthError                         the token endpoint refused; has ``error``
        │   └── InvalidGrantError              a spent, expired or unknown code or refresh token
        ├── BadRequestError                    400
        ├── AuthenticationError                401
        ├── PermissionDeniedError              403
        ├── NotFoundError                      404
        ├── GoneError                          410
        ├── UnprocessableEntityError           422
        ├── RateLimitError                     429; has ``retry_after``
        └── ServerError                        5xx
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "APIStatusError",
    "AccessDeniedError",
    "AuthenticationError",
    "AuthorizationError",
    "BadRequestError",
    "BodyTooLargeError",
    "ConfigurationError",
    "ContentEncodingError",
    "DeadlineExceededError",
    "DecompressionBombError",
    "DocumentTokensMissingError",
    "FileTargetError",
    "FileWriteError",
    "FolderNotFoundError",
    "FolderNotWritableError",
    "GoneError",
    "IncompleteBodyError",
    "InvalidFilenameError",
    "InvalidGrantError",
    "InvalidSizeError",
    "InvalidTokenError",
    "LimiterTimeoutError",
    "LimiterUnavailableError",
    "MalformedResponseError",
    "NotAnImageError",
    "NotFoundError",
    "OAuthError",
    "PassbackConnectionError",
    "PassbackError",
    "PassbackTimeoutError",
    "PermissionDeniedError",
    "RateLimitError",
    "ResponseError",
    "ServerError",
    "StateMismatchError",
    "TargetExistsError",
    "TargetIsAFolderError",
    "TokenVerificationError",
    "TransportError",
    "UnprocessableEntityError",
]


class PassbackError(Exception):
    """The root of every exception raised by idme_passback."""

    def __reduce__(self) -> tuple[Any, ...]:
        # Exception's own reduce calls cls(*args), which keyword-only attributes
        # defeat: rebuild from args, then restore the attributes as they were.
        state = dict(self.__dict__)
        if isinstance(self, OSError):
            state.update(
                (name, getattr(self, name))
                for name in ("errno", "strerror", "filename")
                if getattr(self, name) is not None
            )
        return (_restore, (type(self), self.args), state)


def _restore(cls: type[PassbackError], args: tuple[Any, ...]) -> PassbackError:
    """Rebuild an exception pickled by :meth:`PassbackError.__reduce__`."""
    error = cls.__new__(cls, *args)
    error.args = args
    return error


class ConfigurationError(PassbackError, ValueError):
    """The client was set up in a way that cannot work or is unsafe."""


class InvalidSizeError(PassbackError, ValueError):
    """A requested image size is malformed or outside the 100..1000 bounds."""


class InvalidTokenError(PassbackError, ValueError):
    """A token is empty, too long, or holds characters that could alter the request."""


class TransportError(PassbackError):
    """The request did not complete on the wire."""

    #: Whether the request is known never to have reached the server.
    sent: bool

    def __init__(self, message: str, *, sent: bool = True) -> None:
        super().__init__(message)
        self.sent = sent


class PassbackConnectionError(TransportError):
    """Could not connect to the server, or the connection dropped mid-exchange."""


class PassbackTimeoutError(TransportError):
    """The server did not answer within the configured timeout or deadline."""


class DeadlineExceededError(PassbackTimeoutError):
    """The call's deadline passed (limiter waits, attempts and backoff together)."""


class LimiterTimeoutError(PassbackError, TimeoutError):
    """No rate-limit token can come within the wait allowed; nothing was consumed."""


class LimiterUnavailableError(PassbackError):
    """The rate limiter's store failed or stalled; no request was sent on its word."""


class FileTargetError(PassbackError, OSError):
    """The image cannot be written where asked; raised before any request when it can be known.

    Each kind is also the built-in ``OSError`` a caller would catch for it
    (``FileExistsError``, ``FileNotFoundError``, ``PermissionError``,
    ``IsADirectoryError``); ``errno`` is the system's, when one is behind it.
    """


class FolderNotFoundError(FileTargetError, FileNotFoundError):
    """The folder to write into does not exist (or is not a folder)."""


class FolderNotWritableError(FileTargetError, PermissionError):
    """The folder refuses new files (permissions, a read-only or immutable file system)."""


class TargetExistsError(FileTargetError, FileExistsError):
    """The file exists (a dangling symlink counts), appeared meanwhile, or is being written."""


class TargetIsAFolderError(FileTargetError, IsADirectoryError):
    """The path names a folder, not a file."""


class FileWriteError(FileTargetError):
    """Writing the file failed midway (disk full, an I/O error); nothing was left behind."""


class InvalidFilenameError(PassbackError, ValueError):
    """A file name that is not bare, not encodable, or longer than the file system allows."""


class ResponseError(PassbackError):
    """The server answered, but not with what the API promises."""

    #: Whether retrying the same request may succeed.
    retryable: bool = False


class NotAnImageError(ResponseError):
    """A successful response whose body is not an image (an HTML or JSON page, or empty)."""

    retryable = True

    def __init__(self, message: str, *, content_type: str | None = None) -> None:
        super().__init__(message)
        self.content_type = content_type


class IncompleteBodyError(ResponseError):
    """The body ended before the length the server announced."""

    retryable = True

    def __init__(self, message: str, *, expected: int | None, received: int) -> None:
        super().__init__(message)
        self.expected = expected
        self.received = received


class BodyTooLargeError(ResponseError):
    """A body larger than its bound (``Bounds.max_image_bytes`` or ``max_json_bytes``).

    ``limit`` is the bound in bytes and ``received`` the decoded bytes read
    when it was passed (or the ``Content-Length`` that announced it).
    """

    def __init__(self, message: str, *, limit: int, received: int) -> None:
        super().__init__(message)
        self.limit = limit
        self.received = received


class DecompressionBombError(BodyTooLargeError):
    """A compressed body that decoded to far more than was received (a compression bomb)."""


class ContentEncodingError(ResponseError):
    """A ``Content-Encoding`` the client does not decode (stacked or unknown), or corrupt data.

    ``encoding`` is the header's value, cut short.
    """

    def __init__(self, message: str, *, encoding: str | None = None) -> None:
        super().__init__(message)
        self.encoding = encoding


class MalformedResponseError(ResponseError):
    """A JSON response that does not have the documented shape."""


class DocumentTokensMissingError(ResponseError):
    """The attributes payload has no ``document_tokens`` attribute.

    This is normal when Document Passback is not enabled on the consumer, or
    when the user verified without an identity document.
    """


class APIStatusError(PassbackError):
    """The server answered with a non-success status code."""

    status_code: int
    #: A short excerpt of the body with every known secret scrubbed out.
    body_excerpt: str
    #: The body's OAuth-style ``error`` code, when it was JSON with one (scrubbed).
    error: str | None
    #: The body's ``error_description``, when it was JSON with one (scrubbed).
    error_description: str | None

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        body_excerpt: str = "",
        error: str | None = None,
        error_description: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.body_excerpt = body_excerpt
        self.error = error
        self.error_description = error_description


class BadRequestError(APIStatusError):
    """400: the server rejected the request (for example a size it does not accept)."""


class AuthenticationError(APIStatusError):
    """401: the API token or the access token was not accepted."""


class PermissionDeniedError(APIStatusError):
    """403: the credentials are valid but not allowed to do this."""


class NotFoundError(APIStatusError):
    """404: the document token is unknown (or no longer valid)."""


class GoneError(APIStatusError):
    """410: the document token existed but has expired or been used up."""


class UnprocessableEntityError(APIStatusError):
    """422: the request was well-formed but could not be processed."""


class RateLimitError(APIStatusError):
    """429: the document's rate limit was exceeded and retries did not help."""

    #: Seconds the server asked us to wait, when it said.
    retry_after: float | None

    def __init__(
        self,
        message: str,
        *,
        status_code: int = 429,
        body_excerpt: str = "",
        error: str | None = None,
        error_description: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(
            message,
            status_code=status_code,
            body_excerpt=body_excerpt,
            error=error,
            error_description=error_description,
        )
        self.retry_after = retry_after


class ServerError(APIStatusError):
    """5xx: the server failed."""


class AuthorizationError(PassbackError):
    """The login redirect came back with an OAuth error instead of a code.

    ``error`` is the redirect's ``error`` code (``access_denied``,
    ``invalid_scope``, ``invalid_request``, ...) and ``error_description``
    its text, both cut short and stripped of control characters: they come
    from a URL anyone can forge.
    """

    error: str | None
    error_description: str | None

    def __init__(
        self, message: str, *, error: str | None = None, error_description: str | None = None
    ) -> None:
        super().__init__(message)
        self.error = error
        self.error_description = error_description


class AccessDeniedError(AuthorizationError):
    """The user declined to share their data (``access_denied``)."""


class StateMismatchError(AuthorizationError):
    """The callback's ``state`` is missing or is not the one this login sent (possible CSRF)."""


class TokenVerificationError(ResponseError):
    """A JWT or JWE (an ``id_token``, a signed or encrypted attributes answer) failed verification.

    Its signature, key, algorithm, issuer, audience, expiry or nonce did not
    hold; nothing it claims is exposed.
    """


class OAuthError(APIStatusError):
    """The OAuth token endpoint refused the request; ``error`` says why (``invalid_client``...)."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int = 400,
        body_excerpt: str = "",
        error: str | None = None,
        error_description: str | None = None,
    ) -> None:
        super().__init__(
            message,
            status_code=status_code,
            body_excerpt=body_excerpt,
            error=error,
            error_description=error_description,
        )


class InvalidGrantError(OAuthError):
    """``invalid_grant``: the code or refresh token is spent, expired, revoked or not this client's.

    Codes are single-use: start a new login.
    """


_STATUS_ERRORS: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    410: GoneError,
    422: UnprocessableEntityError,
    429: RateLimitError,
}


def status_error_class(status_code: int) -> type[APIStatusError]:
    """Return the exception class for a non-success status code."""
    if status_code >= 500:
        return ServerError
    return _STATUS_ERRORS.get(status_code, APIStatusError)
