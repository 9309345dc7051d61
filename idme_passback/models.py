"""The values the client returns: attributes, document tokens and document images.

Reprs never show a secret or a person's data: document tokens appear
shortened (``d9ec9c…``) and attribute values not at all.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, TypeAlias

import attrs

from ._tokens import shorten
from .errors import DocumentTokensMissingError, MalformedResponseError
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
    """

    front: str
    back: str

    def __iter__(self) -> Iterator[str]:
        """Yield the front token, then the back token."""
        yield self.front
        yield self.back

    def __repr__(self) -> str:
        return f"DocumentTokens(front={shorten(self.front)!r}, back={shorten(self.back)!r})"


@attrs.frozen(repr=False)
class Attribute:
    """One attribute of the payload: ``handle``, human ``name`` and a JSON ``value``."""

    handle: str
    name: str
    value: JSONValue = attrs.field(eq=False, hash=False)

    def __repr__(self) -> str:
        return f"Attribute(handle={self.handle!r}, name={self.name!r}, value=<hidden>)"


@attrs.frozen
class StatusEntry:
    """One entry of the status list, for example ``identity`` verified at ``IAL2``."""

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
        """The front and back document tokens.

        Raises:
            DocumentTokensMissingError: when the payload has none (Document
                Passback not enabled on the consumer, or no document verified).
            MalformedResponseError: when the attribute is not ``{front, back}`` strings.
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
        if not isinstance(front, str) or not isinstance(back, str) or not front or not back:
            raise MalformedResponseError(
                "'document_tokens' must hold non-empty 'front' and 'back' strings"
            )
        return DocumentTokens(front, back)

    def __repr__(self) -> str:
        handles = ", ".join(self)
        return f"Attributes(handles=[{handles}], status={list(self.status)!r})"


def _status_entry(item: object) -> StatusEntry:
    if not isinstance(item, Mapping):
        raise MalformedResponseError("a status entry is not an object")
    group, subgroups, verified = item.get("group"), item.get("subgroups"), item.get("verified")
    if not isinstance(group, str) or not isinstance(verified, bool):
        raise MalformedResponseError(
            "a status entry needs a string 'group' and a boolean 'verified'"
        )
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


def parse_attributes(payload: object) -> Attributes:
    """Build :class:`Attributes` from a decoded v3 attributes payload.

    Raises:
        MalformedResponseError: when the payload is not the documented shape.
    """
    if not isinstance(payload, Mapping):
        raise MalformedResponseError("the attributes payload is not a JSON object")
    attributes = payload.get("attributes", [])
    status = payload.get("status", [])
    if not isinstance(attributes, list):
        raise MalformedResponseError("'attributes' is not a list")
    if status is None:
        status = []
    if not isinstance(status, list):
        raise MalformedResponseError("'status' is not a list")
    return Attributes(
        tuple(_attribute(item) for item in attributes),
        tuple(_status_entry(item) for item in status),
        payload,
    )


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
