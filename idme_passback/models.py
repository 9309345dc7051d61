"""The values the client returns: attributes, document tokens and document images.

Reprs never show a secret or a person's data: document tokens appear
shortened (``d9ec9c…``) and attribute values not at all.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any, TypeAlias

import attrs

from ._tokens import scrub, shorten
from .errors import (
    APIStatusError,
    AuthenticationError,
    BadRequestError,
    DocumentTokensMissingError,
    MalformedResponseError,
    PermissionDeniedError,
)
from .sizing import Size

__all__ = [
    "Attribute",
    "Attributes",
    "DocumentImage",
    "DocumentTokens",
    "JSONValue",
    "StatusEntry",
    "parse_attributes",
]

#: Any value JSON can hold.
JSONValue: TypeAlias = Any

DOCUMENT_TOKENS_HANDLE = "document_tokens"


@attrs.frozen(repr=False)
class DocumentTokens:
    """The front and back document tokens of one attributes call.

    They are unique per attributes call: store them at once if they are
    needed later (or use :meth:`PassbackClient.refresh_document_token`).
    ``back`` is ``None`` for a document with one side only (a passport).
    """

    front: str
    back: str | None = None

    def __iter__(self) -> Iterator[str]:
        """Yield each token there is: the front, then the back if the document has one."""
        yield self.front
        if self.back is not None:
            yield self.back

    def __repr__(self) -> str:
        back = None if self.back is None else shorten(self.back)
        return f"DocumentTokens(front={shorten(self.front)!r}, back={back!r})"


@attrs.frozen(repr=False)
class Attribute:
    """One attribute of the payload: ``handle``, human ``name`` and a JSON ``value``.

    ``name`` is ``""`` when the payload gives none (ID.me's sandbox omits it).
    """

    handle: str
    name: str
    value: JSONValue = attrs.field(eq=False, hash=False)

    def __repr__(self) -> str:
        return f"Attribute(handle={self.handle!r}, name={self.name!r}, value=<hidden>)"


@attrs.frozen
class StatusEntry:
    """One entry of the status list, for example ``identity`` verified at ``IAL2``.

    ``subgroups`` is ``None`` when the payload gives none, and a one-item
    tuple when it gives a singular ``subgroup`` string.
    """

    group: str
    subgroups: tuple[str, ...] | None
    verified: bool


@attrs.frozen(repr=False)
class Attributes(Mapping[str, Attribute]):
    """The attributes payload, every attribute kept, looked up by handle.

    ``attributes["email"].value`` reads one; ``attributes.document_tokens``
    gives the front and back tokens or raises
    :class:`~idme_passback.errors.DocumentTokensMissingError`. ``raw`` is
    the whole payload as received (it holds secrets and personal data: do
    not log it).
    """

    attributes: tuple[Attribute, ...]
    status: tuple[StatusEntry, ...]
    raw: Mapping[str, JSONValue] = attrs.field(eq=False, hash=False)

    def __getitem__(self, handle: str) -> Attribute:
        """Return the attribute with ``handle`` (the first, if several share it)."""
        for attribute in self.attributes:
            if attribute.handle == handle:
                return attribute
        raise KeyError(handle)

    def __iter__(self) -> Iterator[str]:
        """Yield each distinct handle, in payload order."""
        return iter(dict.fromkeys(a.handle for a in self.attributes))

    def __len__(self) -> int:
        """Return the number of distinct handles."""
        return len(dict.fromkeys(a.handle for a in self.attributes))

    @property
    def has_document_tokens(self) -> bool:
        """Whether the payload carries document tokens."""
        return DOCUMENT_TOKENS_HANDLE in self

    @property
    def document_tokens(self) -> DocumentTokens:
        """The front and back document tokens (``back`` is ``None`` for a one-sided document).

        Raises:
            DocumentTokensMissingError: when the payload has none (Document
                Passback not enabled on the consumer, or no document verified).
            MalformedResponseError: when the attribute is not an object with a
                non-empty ``front`` string and a string, null or missing ``back``.
        """
        try:
            value = self[DOCUMENT_TOKENS_HANDLE].value
        except KeyError:
            raise DocumentTokensMissingError(
                "the attributes payload has no 'document_tokens' attribute: Document "
                "Passback is not enabled on this consumer, or the user verified no document"
            ) from None
        if not isinstance(value, Mapping):
            raise MalformedResponseError("'document_tokens' is not an object")
        front, back = value.get("front"), value.get("back")
        if not isinstance(front, str) or not front:
            raise MalformedResponseError("'document_tokens' must hold a non-empty 'front' string")
        if back is not None and not isinstance(back, str):
            raise MalformedResponseError("'document_tokens' has a 'back' that is not a string")
        # A passport has one side: ID.me sends the back as null, "" or not at all.
        return DocumentTokens(front, back or None)

    def __repr__(self) -> str:
        handles = ", ".join(self)
        return f"Attributes(handles=[{handles}], status={list(self.status)!r})"


def _status_entry(item: object) -> StatusEntry:
    if not isinstance(item, Mapping):
        raise MalformedResponseError("a status entry is not an object")
    group, verified = item.get("group"), item.get("verified")
    if not isinstance(group, str) or not isinstance(verified, bool):
        raise MalformedResponseError(
            "a status entry needs a string 'group' and a boolean 'verified'"
        )
    # One third-party spec shows a singular "subgroup" string: kept as a one-item tuple.
    subgroups = item["subgroups"] if "subgroups" in item else item.get("subgroup")
    if isinstance(subgroups, str):
        subgroups = [subgroups]
    if subgroups is not None and (
        not isinstance(subgroups, list) or not all(isinstance(s, str) for s in subgroups)
    ):
        raise MalformedResponseError("a status entry's 'subgroups' must be strings or null")
    return StatusEntry(group, None if subgroups is None else tuple(subgroups), verified)


def _attribute(item: object) -> Attribute:
    if not isinstance(item, Mapping):
        raise MalformedResponseError("an attribute is not an object")
    handle, name = item.get("handle"), item.get("name")
    if not isinstance(handle, str):
        raise MalformedResponseError("an attribute has no string 'handle'")
    if name is not None and not isinstance(name, str):
        raise MalformedResponseError("an attribute's 'name' is not a string")
    return Attribute(handle, name or "", item.get("value"))


def parse_attributes(payload: object, *, secrets: Iterable[str] = ()) -> Attributes:
    """Build :class:`Attributes` from a decoded v3 attributes payload.

    Strict where it matters: a payload with a top-level ``error`` is the
    server's refusal, never empty attributes, and one without an
    ``attributes`` list is malformed. Lenient where ID.me is: attributes
    without ``name``, an empty or null status, empty or singular sub-groups.
    ``secrets`` are scrubbed from the server's words before an error keeps them.

    Raises:
        AuthenticationError: the payload is an ``invalid_token`` error (status 401).
        APIStatusError: the payload is another error (``PermissionDeniedError``
            for ``insufficient_scope``, ``BadRequestError`` for ``invalid_request``).
        MalformedResponseError: when the payload is not the documented shape.
    """
    if not isinstance(payload, Mapping):
        raise MalformedResponseError("the attributes payload is not a JSON object")
    if payload.get("error") is not None:
        raise _refusal(payload, tuple(secrets))
    attributes = payload.get("attributes")
    if not isinstance(attributes, list):
        found = "no" if attributes is None else f"a {type(attributes).__name__} for its"
        raise MalformedResponseError(f"the attributes payload has {found} 'attributes' list")
    status = payload.get("status", [])
    if status is None:
        status = []
    if not isinstance(status, list):
        raise MalformedResponseError("'status' is not a list")
    return Attributes(
        tuple(_attribute(item) for item in attributes),
        tuple(_status_entry(item) for item in status),
        payload,
    )


# The OAuth bearer-token error codes (RFC 6750, section 3.1) and the status each implies.
_REFUSALS: dict[str, tuple[type[APIStatusError], int]] = {
    "invalid_token": (AuthenticationError, 401),
    "insufficient_scope": (PermissionDeniedError, 403),
    "invalid_request": (BadRequestError, 400),
}
_WORDS_CHARS = 200


def _words(value: object, secrets: tuple[str, ...]) -> str | None:
    """The server's own words, scrubbed, printable and short; ``None`` if not a string."""
    if not isinstance(value, str):
        return None
    text = "".join(c if c.isprintable() else " " for c in scrub(value, secrets))
    return " ".join(text.split())[:_WORDS_CHARS]


def _refusal(payload: Mapping[str, JSONValue], secrets: tuple[str, ...]) -> APIStatusError:
    error = _words(payload.get("error"), secrets) or "unknown_error"
    description = _words(payload.get("error_description"), secrets)
    cls, status = _REFUSALS.get(error, (APIStatusError, 200))
    message = f"the attributes endpoint answered 200 with an error: {error}"
    if description:
        message += f" ({description})"
    return cls(message, status_code=status, error=error, error_description=description)


@attrs.frozen(repr=False)
class DocumentImage:
    """One side of an identity document, as returned by the document endpoint.

    ``content_type`` is the server's header; ``media_type`` and
    ``extension`` come from the bytes' own signature.
    """

    content: bytes = attrs.field(eq=False)
    content_type: str | None
    media_type: str
    extension: str
    token: str
    size: Size | None

    def __len__(self) -> int:
        """Return the number of bytes."""
        return len(self.content)

    def __repr__(self) -> str:
        return (
            f"DocumentImage(token={shorten(self.token)!r}, size={self.size!s}, "
            f"media_type={self.media_type!r}, bytes={len(self.content)})"
        )
