"""The lifecycle both clients share: ``async with``, and closing the HTTP client they made."""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import TypeVar

import httpx

H = TypeVar("H", bound="OwnsHTTP")


class OwnsHTTP:
    """The lifecycle both clients share: ``async with``, and closing the HTTP client they made."""

    _http: httpx.AsyncClient
    _owns_http: bool

    def _adopt(
        self, http_client: httpx.AsyncClient | None, make: Callable[[], httpx.AsyncClient]
    ) -> None:
        """Send through ``http_client`` (the caller's to close), or one of our own."""
        self._owns_http = http_client is None
        self._http = http_client if http_client is not None else make()

    async def __aenter__(self: H) -> H:
        """Return the client; leaving the block closes it."""
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the client."""
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP client this client made (a caller-supplied one stays open)."""
        if self._owns_http:
            await self._http.aclose()
