"""Checks, display forms and scrubbing for every secret the library handles.

Document tokens travel as a path segment and the API token as a query value,
so each is checked against a strict alphabet before any request is built:
nothing a caller passes can turn the request into a different one.

:func:`scrub` hides secrets in any text the library lets out (messages,
excerpts, log lines, error trackers' events), in every form a server could
echo them: verbatim, percent-encoded, base64 at any alignment.
"""

from __future__ import annotations

import base64
import collections
import functools
import hashlib
import re
import threading
import urllib.parse
from collections.abc import Callable, Iterable

from .errors import InvalidTokenError

MAX_TOKEN_LENGTH = 256
MAX_ACCESS_TOKEN_LENGTH = 4096

# Letters, digits, '-', '_', '.', '~' (RFC 3986 unreserved), starting with a
# letter or digit so that '.' and '..' can never form a path segment.
_TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._~-]*")
# Access tokens go through httpx's query encoding or a header; only what
# could split a header or a log line (whitespace, control characters) is refused.
_ACCESS_TOKEN = re.compile(r"[\x21-\x7e]+")


def _describe(kind: str, token: object) -> str:
    if not isinstance(token, str):
        return f"{kind} must be a str, got {type(token).__name__}"
    if not token:
        return f"{kind} is empty"
    return ""


def check_token(token: object, *, kind: str = "document token") -> str:
    """Return ``token`` if it is safe as a path segment or query value.

    Raises:
        InvalidTokenError: naming what is wrong, without echoing the token.
    """
    problem = _describe(kind, token)
    if problem:
        raise InvalidTokenError(problem)
    assert isinstance(token, str)
    if len(token) > MAX_TOKEN_LENGTH:
        raise InvalidTokenError(
            f"{kind} is {len(token)} characters long; the limit is {MAX_TOKEN_LENGTH}"
        )
    if _TOKEN.fullmatch(token) is None or ".." in token:
        raise InvalidTokenError(
            f"{kind} may hold only letters, digits, '-', '_', '.' and '~' "
            "(starting with a letter or digit, no '..'); refusing to send it"
        )
    return token


def check_access_token(token: object) -> str:
    """Return ``token`` if it is a plausible OAuth access token.

    Raises:
        InvalidTokenError: for an empty or absurdly long token, or one with
            whitespace or control characters.
    """
    problem = _describe("access token", token)
    if problem:
        raise InvalidTokenError(problem)
    assert isinstance(token, str)
    if len(token) > MAX_ACCESS_TOKEN_LENGTH:
        raise InvalidTokenError(
            f"access token is {len(token)} characters long; the limit is {MAX_ACCESS_TOKEN_LENGTH}"
        )
    if _ACCESS_TOKEN.fullmatch(token) is None:
        raise InvalidTokenError(
            "access token holds whitespace, control or non-ASCII characters; refusing to send it"
        )
    return token


def shorten(token: str) -> str:
    """Return a correlation form of a token: a few leading characters and an ellipsis."""
    keep = min(6, len(token) // 4)
    return token[:keep] + "\u2026"


def digest(token: str) -> str:
    """Return the SHA-256 hex digest of ``token``: names a document without revealing it."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


# -- scrubbing ------------------------------------------------------------------
#
# A server is not trusted with what it echoes, and a secret may come back
# verbatim, percent-encoded (wholly or in part) or inside base64 at any of the
# three byte alignments. Every form is found on the text as a whole and
# replaced *before* anything is cut, so no prefix of a secret survives a cut.

REDACTED = "[REDACTED]"
#: Below this length a secret is scrubbed verbatim only (its encodings would match noise).
_MIN_ENCODED = 8
#: What a secret kept in view must have at least: its length and its distinct characters.
#: Real tokens have far more; a low-entropy value ("00000000") would scrub innocent text.
_MIN_KNOWN = 16
_MIN_DISTINCT = 8
#: How many recently used secrets the library keeps in view (the API token stays in view
#: while its client is used: every call puts its secrets back at the front).
_KNOWN_CAPACITY = 4096
#: Index key length for the known secrets (every indexed form is at least this long).
_KEY = 8
# A run of non-space printable ASCII: where any form of a secret must lie.
_RUN = re.compile(r"[\x21-\x7e]{%d,}" % _KEY)  # noqa: UP031 - a regex, braces are syntax
# A run holding percent-escapes (stopping at what separates query values).
# Runs of URL characters and escapes (the two alternatives never overlap: linear time);
# those holding a '%' are decoded and checked.
_PERCENT_RUN = re.compile(r"(?:%[0-9A-Fa-f]{2}|[A-Za-z0-9._~+!*()-])+")
# The run of non-space printable ASCII that ends a text, if any.
_TAIL = re.compile(r"[\x21-\x7e]+\Z")


def _base64_cores(data: bytes) -> list[str]:
    """The base64 characters that encode ``data`` alone, at offsets 0, 1 and 2 of a stream.

    At offset ``k`` the first characters also carry bits of the bytes before,
    and the last ones bits of the bytes after; only the characters between
    depend on ``data`` alone, and they are what any encoding of it contains.
    """
    cores = []
    for k in range(3):
        first = -(-8 * k // 6)  # ceil: the first character made of data bits only
        last = 8 * (k + len(data)) // 6
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            core = encode(b"\0" * k + data).decode("ascii")[first:last]
            if len(core) >= _MIN_ENCODED:
                cores.append(core)
    return cores


@functools.lru_cache(maxsize=1024)
def forms(secret: str) -> tuple[str, ...]:
    """Every form of ``secret`` to scrub directly: itself, and its base64 cores.

    Percent-encoded forms are found by decoding (see :func:`scrub`).
    """
    if len(secret) < _MIN_ENCODED:
        return (secret,)
    found = dict.fromkeys([secret, *_base64_cores(secret.encode("utf-8", "surrogatepass"))])
    return tuple(found)


class _Known:
    """The secrets the library has handled lately, indexed for scrubbing many at once.

    A bounded, thread-safe LRU: logging filters and error trackers scrub from
    any thread. The index maps each form's first characters to the forms that
    start so; its values are tuples, replaced rather than mutated, so a
    reader never sees one change under it.
    """

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._lock = threading.Lock()
        self._secrets: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._index: dict[str, tuple[str, ...]] = {}
        self.longest = 0

    def add(self, secrets: Iterable[object]) -> None:
        with self._lock:
            for secret in secrets:
                if (
                    not isinstance(secret, str)
                    or len(secret) < _MIN_KNOWN
                    or len(set(secret)) < _MIN_DISTINCT
                ):
                    continue
                if secret in self._secrets:
                    self._secrets.move_to_end(secret)
                    continue
                self._secrets[secret] = None
                self._change(secret, add=True)
                if len(self._secrets) > self._capacity:
                    old, _ = self._secrets.popitem(last=False)
                    self._change(old, add=False)

    def _change(self, secret: str, *, add: bool) -> None:
        for form in forms(secret):
            if len(form) < _KEY:
                continue
            key = form[:_KEY]
            others = tuple(f for f in self._index.get(key, ()) if f != form)
            if add:
                self._index[key] = (*others, form)
                self.longest = max(self.longest, len(form))
            elif others:
                self._index[key] = others
            else:
                self._index.pop(key, None)

    def __contains__(self, secret: object) -> bool:
        return secret in self._secrets

    def __len__(self) -> int:
        return len(self._secrets)

    def clear(self) -> None:
        with self._lock:
            self._secrets.clear()
            self._index.clear()
            self.longest = 0

    def spans(self, text: str) -> Iterable[tuple[int, int]]:
        index = self._index
        if not index:
            return
        for run in _RUN.finditer(text):
            start, end = run.span()
            for i in range(start, end - _KEY + 1):
                for form in index.get(text[i : i + _KEY], ()):
                    if text.startswith(form, i):
                        yield i, i + len(form)

    def cut_start(self, text: str) -> int:
        """Where a form of a known secret that ``text``'s end cuts off starts, or -1.

        Only cut-offs of at least eight characters count: shorter ones say no
        more than the six leading characters messages show anyway.
        """
        index = self._index
        if not index:
            return -1
        return _cut_start(text, lambda piece: index.get(piece[:_KEY], ()))


def _cut_start(text: str, candidates: Callable[[str], Iterable[str]]) -> int:
    tail = _TAIL.search(text)
    if tail is None:
        return -1
    run = tail.group()
    for i in range(len(run) - _KEY + 1):
        piece = run[i:]
        if any(form.startswith(piece) for form in candidates(piece)):
            return tail.start() + i
    return -1


_KNOWN = _Known(_KNOWN_CAPACITY)


def remember(*secrets: str | None) -> None:
    """Keep ``secrets`` in view: every scrub in this process hides them from now on.

    Only values that look like secrets are kept (16 characters or more, at
    least eight of them distinct); a scrub of the secrets in play still
    hides any of them, however short.

    The library calls this for every secret it is handed or receives, so a
    secret echoed into another call's answer, a log line or an error
    tracker's event is hidden too, not only where it was sent.
    """
    _KNOWN.add(secrets)


def is_known(secret: str) -> bool:
    """Whether ``secret`` is among the secrets kept in view."""
    return secret in _KNOWN


def _direct_spans(text: str, secrets: tuple[str, ...]) -> Iterable[tuple[int, int]]:
    for secret in secrets:
        for form in forms(secret):
            start = text.find(form)
            while start != -1:
                yield start, start + len(form)
                start = text.find(form, start + 1)
    yield from _KNOWN.spans(text)


def _holds_secret(text: str, secrets: tuple[str, ...]) -> bool:
    return next(iter(_direct_spans(text, secrets)), None) is not None


def _spans(text: str, secrets: tuple[str, ...]) -> list[tuple[int, int]]:
    """Where ``text`` holds a secret in any form, as merged ``(start, end)`` spans."""
    found = list(_direct_spans(text, secrets))
    if "%" in text:
        for run in _PERCENT_RUN.finditer(text):
            if "%" in run.group() and _holds_secret(
                urllib.parse.unquote(run.group(), errors="replace"), secrets
            ):
                found.append(run.span())
    if not found:
        return []
    found.sort()
    merged = [found[0]]
    for start, end in found[1:]:
        if start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def scrub(text: str, secrets: Iterable[str | None] = (), *, cut: int | None = None) -> str:
    """Replace every secret in ``text`` by ``[REDACTED]``, in any form it takes.

    ``secrets`` are the ones in play; every secret :func:`remember` keeps in
    view is scrubbed too. Forms: verbatim, percent-encoded (any mix of
    escapes: a run that decodes to a secret goes whole) and base64 at any
    alignment, standard or URL-safe.

    ``cut``: keep only ``text[:cut]``, after scrubbing the whole: a secret
    that starts before the cut is replaced whole, never left in part.
    """
    explicit = tuple(s for s in secrets if s)
    spans = _spans(text, explicit)
    end = len(text) if cut is None else max(0, min(cut, len(text)))
    parts = []
    position = 0
    for start, stop in spans:
        if start >= end:
            break
        parts.append(text[position:start])
        parts.append(REDACTED)
        position = stop
    if position < end:
        parts.append(text[position:end])
    return "".join(parts)


def scrub_truncated(text: str, secrets: Iterable[str | None] = ()) -> str:
    """Scrub ``text`` that was cut short elsewhere: a secret's cut-off start goes too."""
    explicit = tuple(s for s in secrets if s)
    cleaned = scrub(text, explicit)
    start = _KNOWN.cut_start(cleaned)
    if start < 0:
        mine = [form for secret in explicit for form in forms(secret)]
        start = _cut_start(cleaned, lambda piece: mine)
    return cleaned if start < 0 else cleaned[:start] + REDACTED


def tail_to_drop(secrets: Iterable[str | None]) -> int:
    """How many characters at the end of a cut text may hold part of a secret."""
    longest = max((len(s) for s in secrets if s), default=0)
    # Wholly percent-encoded, a character takes three.
    return 3 * max(longest, 64)


def forget_all() -> None:
    """Forget every secret kept in view (for tests)."""
    _KNOWN.clear()
