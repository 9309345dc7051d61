"""Turning an attributes answer's body into a JSON object, whatever shape ID.me sent.

ID.me answers the attributes call with plain JSON, with a JWT (a raw body,
``application/jwt``, or a JSON string holding it), or with a JWE (raw or a
JSON string) encrypted to the consumer's key. :class:`AttributesDecoder`
accepts each, verifies what is signed and decrypts what is encrypted, and
for anything else says what the body looked like. It never puts a byte of
the body in a message: the body holds a person's identity.

The client's wiring::

    payload = await decoder.decode(body, content_type)
    attributes = parse_attributes(payload, secrets=...)
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from typing import Any

from . import _jose
from ._jose import JWKSSource
from .errors import (
    ConfigurationError,
    MalformedResponseError,
    PassbackError,
    TokenVerificationError,
)

__all__ = ["AttributesDecoder"]

#: The constructor option a JWE answer needs, named in the error when it is missing.
DECRYPTION_KEY_OPTION = "attributes_decryption_key"
_WHAT = "the attributes answer"


class AttributesDecoder:
    """Decode an attributes body (JSON, JWT or JWE) into its JSON object.

    Args:
        jwks: where the signing keys come from (``None``: a signed answer can
            only be read with ``verify=False``).
        decryption_key: the consumer's RSA private key for JWE answers (PEM
            text or bytes, a JWK dict, or a joserfc ``RSAKey``).
        verify: verify a JWT's signature and time claims (the default); off,
            its claims are read unverified, for a proxy that re-signs.
        leeway: seconds of clock skew allowed on ``exp``/``nbf``/``iat``.
        wall_clock: the Unix time those claims are checked against.

    Raises:
        ConfigurationError: a ``decryption_key`` that is not an RSA private key,
            or one given without joserfc installed.
    """

    def __init__(
        self,
        jwks: JWKSSource | None,
        *,
        decryption_key: object | None = None,
        verify: bool = True,
        leeway: float = 60.0,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._jwks = jwks
        # Loaded now, so a bad key fails at construction, before any access token is spent.
        self._key = (
            None
            if decryption_key is None
            else _jose.load_private_key(decryption_key, option=DECRYPTION_KEY_OPTION)
        )
        self._verify = verify
        self._leeway = leeway
        self._wall_clock = wall_clock

    def __repr__(self) -> str:
        key = "none" if self._key is None else "<hidden>"
        return f"AttributesDecoder(verify={self._verify}, decryption_key={key})"

    async def prepare(self) -> None:
        """Fetch the JWKS ahead of need, before the access token is spent; never raises.

        A failure here is forgotten: :meth:`decode` tries again, and reports
        it only if the answer really is signed.
        """
        if self._jwks is None or not self._verify:
            return
        with contextlib.suppress(PassbackError):
            await self._jwks.load()

    async def decode(self, body: bytes, content_type: str | None) -> dict[str, object]:
        """Return the attributes answer's JSON object.

        Raises:
            MalformedResponseError: the body is none of the accepted shapes
                (the message says what it looked like).
            TokenVerificationError: a JWT whose signature, key or time claims
                fail, or a JWE that does not decrypt.
            ConfigurationError: a JWE arrived and no decryption key was given
                (the message names the option), or joserfc is missing.
            TransportError, APIStatusError: the JWKS could not be fetched.
        """
        text = _text(body)
        media = (content_type or "").split(";")[0].strip().lower()
        if text.startswith("{"):
            return _object(_json(text, "a JSON object"), "JSON")
        if text.startswith('"'):
            inner = _json(text, "a JSON string")
            if not isinstance(inner, str) or _jose.compact_kind(inner.strip()) is None:
                raise MalformedResponseError(
                    f"{_WHAT} is a JSON string, but not a JWT or a JWE in compact form"
                )
            text = inner.strip()
        kind = _jose.compact_kind(text)
        if kind == "jws":
            return await self._jwt(text)
        if kind == "jwe":
            return await self._jwe(text)
        raise MalformedResponseError(_describe(text, media))

    async def _jwt(self, token: str) -> dict[str, object]:
        if not self._verify:
            return _object(_unverified_claims(token), "JWT")
        if self._jwks is None:
            raise ConfigurationError(
                f"{_WHAT} is a signed JWT and no JWKS is configured to verify it"
            )
        claims = await _jose.verify_jwt(
            token, self._jwks, what=_WHAT, now=self._wall_clock(), leeway=self._leeway
        )
        return _object(claims, "JWT")

    async def _jwe(self, token: str) -> dict[str, object]:
        if self._key is None:
            raise ConfigurationError(
                f"{_WHAT} is a JWE (encrypted to the consumer's key): pass the consumer's RSA "
                f"private key as {DECRYPTION_KEY_OPTION}= to read it"
            )
        plaintext = _text(_jose.decrypt_jwe(token, self._key, what=_WHAT))
        # A JWE usually wraps a signed JWT (nested); it may also hold the JSON itself.
        if _jose.compact_kind(plaintext) == "jws":
            return await self._jwt(plaintext)
        if plaintext.startswith("{"):
            return _object(_json(plaintext, "a decrypted JWE"), "decrypted JWE")
        raise MalformedResponseError(
            f"{_WHAT} is a JWE that decrypts to neither a JSON object nor a signed JWT"
        )


def _text(body: bytes) -> str:
    try:
        return body.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise MalformedResponseError(f"{_WHAT} is not UTF-8 text") from None


def _json(text: str, shape: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        raise MalformedResponseError(f"{_WHAT} looks like {shape} but is not valid JSON") from None


def _object(value: object, shape: str) -> dict[str, object]:
    if not isinstance(value, dict):
        raise MalformedResponseError(f"{_WHAT}'s {shape} is not an object")
    return value


def _unverified_claims(token: str) -> object:
    claims = _jose.segment_json(token.split(".")[1])
    if claims is None:
        raise TokenVerificationError(
            f"{_WHAT} looks like a JWT but its payload is not base64url JSON"
        )
    return claims


def _describe(text: str, media: str) -> str:
    """Say what a body that is none of the accepted shapes looked like."""
    if not text:
        return f"{_WHAT} is empty"
    if text.startswith("<"):
        return f"{_WHAT} looks like an HTML or XML page, not JSON, a JWT or a JWE"
    if text.startswith("["):
        return f"{_WHAT} is a JSON array, not an object"
    if text.startswith("eyJ") or media in ("application/jwt", "application/jose"):
        dots = text.count(".")
        return (
            f"{_WHAT} looks like a JWT but has {dots + 1} dot-separated parts "
            "(a JWT has 3, a JWE 5) or characters outside base64url"
        )
    return f"{_WHAT} is not JSON, a JWT or a JWE (it is {len(text)} characters of text)"
