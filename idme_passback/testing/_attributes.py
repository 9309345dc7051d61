"""The fake server's attributes endpoint: which access tokens buy a call, and the person.

:func:`access_token` finds the access token of an attributes call (the
``access_token`` query parameter, else an ``Authorization: Bearer`` header);
:class:`AccessTokens` says whether it buys the call; :func:`person` is the
attributes list of the fake's one person, to which the server appends the
``document_tokens`` attribute (:func:`document_tokens`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from ._idme import FakeIdMe

__all__ = ["AccessTokens", "access_token", "document_tokens", "person"]

_MISSING = "The access token is invalid or missing."
_USED = "The access token has been used."


def access_token(
    query: Mapping[str, list[str]], headers: Mapping[str, str]
) -> tuple[str | None, Literal["query", "header"] | None]:
    """The access token of an attributes call and how it arrived (``None`` twice if not)."""
    if "access_token" in query:
        return query["access_token"][0], "query"
    scheme, _, value = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip(), "header"
    return None, None


class AccessTokens:
    """The access tokens the server issued itself, beside the fake ID.me's.

    Args:
        first: the server's ``access_token``.
    """

    def __init__(self, first: str) -> None:
        self._issued = {first}
        self._used: set[str] = set()

    def add(self, token: str) -> None:
        """Accept ``token`` from now on."""
        self._issued.add(token)

    def refused(self, token: str | None, idme: FakeIdMe, *, single_use: bool) -> str | None:
        """Why the attributes call refuses ``token``; ``None`` when it buys the call.

        A token ``idme`` issued follows ``idme``'s rules; one of ours is spent
        by the call when ``single_use``.
        """
        if token is None:
            return _MISSING
        issued = idme.check_access_token(token)
        if issued != "unknown":
            words = {"ok": None, "used": "has been used", "expired": "has expired"}[issued]
            return None if words is None else f"The access token {words}."
        if token not in self._issued:
            return _MISSING
        if single_use:
            if token in self._used:
                return _USED
            self._used.add(token)
        return None


def person(uuid: str) -> list[dict[str, object]]:
    """The attributes of the fake's one person, with ``uuid`` as its unique identifier."""
    return [
        {"handle": "fname", "name": "First Name", "value": "Jane"},
        {"handle": "lname", "name": "Last Name", "value": "Doe"},
        {"handle": "email", "name": "Email", "value": "jane.doe@example.com"},
        {"handle": "birth_date", "name": "Birth Date", "value": "1990-01-31"},
        {"handle": "uuid", "name": "Unique Identifier", "value": uuid},
    ]


def document_tokens(value: dict[str, Any]) -> dict[str, object]:
    """The ``document_tokens`` attribute holding ``value``."""
    return {"handle": "document_tokens", "name": "Document Passback Tokens", "value": value}
