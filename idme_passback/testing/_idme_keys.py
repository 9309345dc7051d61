"""The fake ID.me's keys: signing keys that rotate, and the consumer's encryption key pair.

All cryptography goes through joserfc (the ``jose`` extra), imported on
first need so the fake's plain-JSON modes work without it. Keys are made
on first use, too: RSA key generation costs tens of milliseconds, and most
fakes never sign anything.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

__all__ = ["FakeKeys"]

SIGNING_ALGORITHM = "RS256"
KEY_WRAPPING = "RSA-OAEP"
CONTENT_ENCRYPTION = "A256CBC-HS512"


def _jose() -> Any:
    try:
        import joserfc.jwe  # noqa: PLC0415 - an optional extra
        import joserfc.jwk  # noqa: PLC0415
        import joserfc.jwt  # noqa: PLC0415
    except ImportError:
        raise ImportError(
            'the fake signs and encrypts with joserfc: pip install "idme-passback[jose]"'
        ) from None
    return joserfc


class FakeKeys:
    """Signing keys with rotation, and a consumer key pair to encrypt attributes to."""

    def __init__(self) -> None:
        self._published: list[Any] = []
        self._current: Any = None
        self._consumer: Any = None
        self._encrypt_to: Any = None
        self._count = 0

    def _new_signing_key(self) -> Any:
        jose = _jose()
        self._count += 1
        kid = f"fake-idme-{self._count}"
        parameters = {"kid": kid, "use": "sig", "alg": SIGNING_ALGORITHM}
        return jose.jwk.RSAKey.generate_key(2048, parameters=parameters)

    @property
    def current(self) -> Any:
        """The key that signs now (made on first use)."""
        if self._current is None:
            self._current = self._new_signing_key()
            self._published.append(self._current)
        return self._current

    def rotate(self, *, keep_old: bool = True) -> str:
        """Sign with a new key from now on; return its ``kid``.

        With ``keep_old`` the old keys stay in the JWKS (a graceful rotation);
        without, the JWKS holds the new key only.
        """
        key = self._new_signing_key()
        if not keep_old:
            self._published.clear()
        self._published.append(key)
        self._current = key
        return str(key.kid)

    def jwks(self) -> dict[str, Any]:
        """The published key set, public parts only."""
        _ = self.current
        return {"keys": [key.as_dict(private=False) for key in self._published]}

    def sign(
        self,
        claims: Mapping[str, Any],
        *,
        kid: str | None = None,
        header: Mapping[str, Any] | None = None,
    ) -> str:
        """Return a JWT of ``claims`` signed with the current key.

        ``kid`` overrides the header's key id (a key the JWKS does not hold,
        for example) without changing the signing key; ``header`` adds to it.
        """
        jose = _jose()
        key = self.current
        protected = {"alg": SIGNING_ALGORITHM, "kid": kid or key.kid, **(header or {})}
        return str(jose.jwt.encode(protected, dict(claims), key))

    @property
    def consumer_key(self) -> Any:
        """The consumer's RSA key pair (made on first use): its private half decrypts."""
        if self._consumer is None:
            self._consumer = _jose().jwk.RSAKey.generate_key(2048, parameters={"kid": "consumer"})
        return self._consumer

    def encrypt_to(self, public_key: Mapping[str, Any] | str | bytes | None) -> None:
        """Encrypt to ``public_key`` (a JWK dict or PEM) instead of the fake's consumer key."""
        if public_key is None:
            self._encrypt_to = None
            return
        data = dict(public_key) if isinstance(public_key, Mapping) else public_key
        self._encrypt_to = _jose().jwk.RSAKey.import_key(data)

    def encrypt(self, plaintext: str | bytes, *, content_type: str | None = None) -> str:
        """Return a compact JWE (RSA-OAEP / A256CBC-HS512) of ``plaintext`` for the consumer."""
        jose = _jose()
        header = {"alg": KEY_WRAPPING, "enc": CONTENT_ENCRYPTION}
        if content_type:
            header["cty"] = content_type
        key = self._encrypt_to if self._encrypt_to is not None else self.consumer_key
        algorithms = [KEY_WRAPPING, CONTENT_ENCRYPTION]
        return str(jose.jwe.encrypt_compact(header, plaintext, key, algorithms=algorithms))

    def encrypt_json(self, payload: object) -> str:
        """Return a compact JWE holding ``payload`` as JSON."""
        return self.encrypt(json.dumps(payload))
