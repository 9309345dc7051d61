"""JOSE for ID.me: the JWKS, signed JWTs, encrypted JWEs and id_token checks.

Every cryptographic step goes through ``joserfc`` (the ``jose`` extra),
imported only when a JWT or JWE actually turns up, so ``import
idme_passback`` and plain-JSON consumers never need it. Nothing here logs,
and no message names a token: only what was wrong with it.
"""

from __future__ import annotations

import base64
import hmac
import json
import re
from collections.abc import Mapping
from types import ModuleType
from typing import Any, Literal

import anyio
import httpx

from . import _oauth_wire as _wire
from .clock import Clock, MonotonicClock
from .errors import (
    ConfigurationError,
    MalformedResponseError,
    TokenVerificationError,
)

__all__ = [
    "JOSE_EXTRA",
    "JWKS_PATH",
    "JWKSSource",
    "check_claims",
    "compact_kind",
    "decrypt_jwe",
    "joserfc",
    "load_private_key",
    "segment_json",
    "verify_id_token",
    "verify_jwt",
]

#: How to install what the JOSE work needs.
JOSE_EXTRA = 'pip install "idme-passback[jose]"'
#: Where ID.me publishes its signing keys, below the environment's base URL.
JWKS_PATH = "oidc/.well-known/jwks"

# Asymmetric signatures only: an HMAC "signed" with a public key proves nothing.
SIGNATURE_ALGORITHMS = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
)
# RSA-OAEP with A256CBC-HS512 is what ID.me's recorded answers use; the others are
# their common neighbours. RSA1_5 is left out (padding-oracle attacks).
ENCRYPTION_ALGORITHMS = (
    "RSA-OAEP",
    "RSA-OAEP-256",
    "A256CBC-HS512",
    "A128CBC-HS256",
    "A256GCM",
    "A128GCM",
)
_JWKS_TIMEOUT = httpx.Timeout(10.0)
_SEGMENT = r"[A-Za-z0-9_-]*"
_JWS = re.compile(rf"{_SEGMENT}\.{_SEGMENT}\.{_SEGMENT}")
_QUOTED = re.compile(r"""["']([a-z_]{1,32})["']""")
_JWE = re.compile(rf"{_SEGMENT}\.{_SEGMENT}\.{_SEGMENT}\.{_SEGMENT}\.{_SEGMENT}")


def joserfc(what: str) -> ModuleType:
    """Return the ``joserfc`` package, imported on first need.

    Raises:
        ConfigurationError: it is not installed; the message says which extra brings it.
    """
    try:
        import joserfc as package  # noqa: PLC0415 - an optional extra, loaded on first need
        import joserfc.jwe  # noqa: PLC0415
        import joserfc.jwk  # noqa: PLC0415
        import joserfc.jws  # noqa: PLC0415
        import joserfc.jwt  # noqa: PLC0415
    except ImportError:
        raise ConfigurationError(f"{what} needs joserfc: {JOSE_EXTRA}") from None
    return package


def compact_kind(text: str) -> Literal["jws", "jwe"] | None:
    """Say whether ``text`` has the shape of a compact JWS (a JWT) or JWE; ``None`` if neither."""
    if _JWS.fullmatch(text):
        return "jws"
    if _JWE.fullmatch(text):
        return "jwe"
    return None


def load_private_key(key: object, *, option: str) -> Any:
    """Return ``key`` (PEM text or bytes, a JWK dict, or a joserfc key) as a joserfc RSA key.

    Raises:
        ConfigurationError: joserfc is missing, or ``key`` is not an RSA private key.
    """
    jose = joserfc(f"{option}=")
    if isinstance(key, jose.jwk.RSAKey):
        loaded = key
    elif isinstance(key, str | bytes | Mapping):
        try:
            loaded = jose.jwk.RSAKey.import_key(dict(key) if isinstance(key, Mapping) else key)
        except (jose.errors.JoseError, ValueError, TypeError, KeyError):
            loaded = None
    else:
        loaded = None
    if loaded is None or not loaded.is_private:
        raise ConfigurationError(
            f"{option} must be an RSA private key (PEM text or bytes, a JWK dict, or a "
            "joserfc RSAKey)"
        )
    return loaded


class JWKSSource:
    """ID.me's signing keys for one base URL: fetched once, refetched for an unknown ``kid``.

    An unknown ``kid`` is how a key rotation shows: the set is fetched again,
    but at most once per ``min_refetch_interval`` seconds, so a stream of
    tokens under a bogus ``kid`` cannot turn into a stream of requests.

    Args:
        base_url: the environment's base URL; the keys are at ``{base_url}oidc/.well-known/jwks``.
        http: the client to fetch through (it stays the caller's to close).
        clock: where the refetch interval is measured.
        min_refetch_interval: seconds between two fetches at the least.
        timeout: for the fetch.
    """

    def __init__(
        self,
        base_url: str | httpx.URL,
        http: httpx.AsyncClient,
        *,
        clock: Clock | None = None,
        min_refetch_interval: float = 60.0,
        timeout: float | httpx.Timeout | None = _JWKS_TIMEOUT,
    ) -> None:
        base = str(base_url)
        self.url = base + JWKS_PATH if base.endswith("/") else f"{base}/{JWKS_PATH}"
        self._http = http
        self._clock: Clock = clock if clock is not None else MonotonicClock()
        self._min_interval = min_refetch_interval
        self._timeout = timeout
        self._keys: dict[str, Any] | None = None
        self._fetched_at = float("-inf")
        # Made on first use: anyio before 4.7 binds a lock to the event loop running
        # when it is made, and a source may be built before any loop runs.
        self._lock_made: anyio.Lock | None = None

    def _lock(self) -> anyio.Lock:
        if self._lock_made is None:
            self._lock_made = anyio.Lock()
        return self._lock_made

    def __repr__(self) -> str:
        held = "not fetched" if self._keys is None else f"{len(self._keys)} keys"
        return f"JWKSSource(url={self.url!r}, {held})"

    async def load(self) -> None:
        """Fetch the keys unless they are already held.

        Raises:
            TransportError, APIStatusError, MalformedResponseError: the fetch failed.
        """
        if self._keys is None:
            async with self._lock():
                if self._keys is None:
                    await self._fetch()

    async def key(self, kid: str | None) -> Any:
        """Return the key named ``kid`` (or the only key, when the token names none).

        Raises:
            TokenVerificationError: no such key, even after a refetch.
            TransportError, APIStatusError, MalformedResponseError: a fetch failed.
        """
        await self.load()
        found = self._find(kid)
        if found is None:
            async with self._lock():
                found = self._find(kid)
                if found is None and self._clock.now() - self._fetched_at >= self._min_interval:
                    await self._fetch()
                    found = self._find(kid)
        if found is None:
            named = "names no key" if kid is None else f"names key {kid[:64]!r}"
            raise TokenVerificationError(
                f"the token {named}, which is not in the JWKS at {self.url}"
            )
        return found

    def _find(self, kid: str | None) -> Any:
        keys = self._keys or {}
        if kid is None:
            return next(iter(keys.values())) if len(keys) == 1 else None
        return keys.get(kid)

    async def _fetch(self) -> None:
        jose = joserfc("verifying a signed token")
        # Counted from the attempt, so a failing endpoint is not hammered either.
        self._fetched_at = self._clock.now()
        # One request through the OAuth side's edge: never redirected, read to a cap, typed.
        request = self._http.build_request("GET", self.url, timeout=self._timeout)
        response, body = await _wire.send(self._http, request, (), "JWKS request")
        if response.status_code != 200:
            raise _wire.status_error(response, body, (), "JWKS request")
        data = _wire.json_object(body, "JWKS request")
        try:
            key_set = jose.jwk.KeySet.import_key_set(data)
        except (jose.errors.JoseError, ValueError, TypeError, KeyError):
            key_set = None
        if key_set is None:
            raise MalformedResponseError(f"the JWKS at {self.url} is not a usable key set")
        self._keys = {key.kid: key for key in key_set}


async def verify_jwt(
    token: str,
    source: JWKSSource,
    *,
    what: str,
    checks: Mapping[str, Mapping[str, Any]] | None = None,
    now: float,
    leeway: float = 0.0,
) -> dict[str, Any]:
    """Verify a compact JWS against ``source`` and return its claims.

    The signature must verify under a key of the JWKS with an asymmetric
    algorithm; ``exp``, ``nbf`` and ``iat`` are checked against ``now`` (Unix
    time) when present, and ``checks`` adds joserfc claim options (``{"iss":
    {"essential": True, "value": ...}}``).

    Raises:
        TokenVerificationError: naming what failed, never the token.
        ConfigurationError: joserfc is not installed.
        TransportError, APIStatusError, MalformedResponseError: the JWKS could not be fetched.
    """
    jose = joserfc(f"verifying {what}")
    header = _header(token, what)
    alg, kid = header.get("alg"), header.get("kid")
    if alg not in SIGNATURE_ALGORITHMS:
        shown = alg if isinstance(alg, str) else type(alg).__name__
        raise TokenVerificationError(
            f"{what} is signed with {shown[:16]!r}, not one of {', '.join(SIGNATURE_ALGORITHMS)}"
        )
    if kid is not None and not isinstance(kid, str):
        raise TokenVerificationError(f"{what} has a 'kid' that is not a string")
    key = await source.key(kid)
    problem = None
    try:
        claims: dict[str, Any] = jose.jwt.decode(token, key, algorithms=[alg]).claims
    except jose.errors.BadSignatureError:
        problem = f"{what}'s signature does not verify against the JWKS"
    except (jose.errors.JoseError, ValueError, TypeError):
        problem = f"{what} looks like a JWT but cannot be decoded"
    if problem is not None:
        raise TokenVerificationError(problem)
    check_claims(jose, claims, what=what, checks=checks, now=now, leeway=leeway)
    return claims


def check_claims(
    jose: ModuleType,
    claims: Mapping[str, Any],
    *,
    what: str,
    checks: Mapping[str, Mapping[str, Any]] | None,
    now: float,
    leeway: float,
) -> None:
    """Check the time claims and ``checks`` with joserfc's claims registry.

    Raises:
        TokenVerificationError: naming the claim that failed.
    """
    registry = jose.jwt.JWTClaimsRegistry(now=int(now), leeway=int(leeway), **(checks or {}))
    problem = None
    try:
        registry.validate(dict(claims))
    except jose.errors.ExpiredTokenError:
        problem = f"{what} has expired"
    except jose.errors.JoseError as exc:
        # Older joserfc releases name the claim only in the description.
        quoted = _QUOTED.search(exc.description or "")
        claim = getattr(exc, "claim", None) or (quoted[1] if quoted else None)
        if isinstance(exc, jose.errors.MissingClaimError) and claim:
            problem = f"{what} lacks the {claim!r} claim"
        elif claim:
            problem = f"{what} has a wrong {claim!r} claim"
        else:
            problem = f"{what} fails its claims check ({exc.description})"
    if problem is not None:
        raise TokenVerificationError(problem)


async def verify_id_token(
    id_token: str,
    source: JWKSSource,
    *,
    issuer: str,
    client_id: str,
    nonce: str | None,
    now: float,
    leeway: float,
) -> dict[str, Any]:
    """Verify an OpenID Connect ``id_token``: signature, ``iss``, ``aud``, ``exp`` and ``nonce``.

    Raises:
        TokenVerificationError: naming the check that failed.
        ConfigurationError: joserfc is not installed.
        TransportError, APIStatusError, MalformedResponseError: the JWKS could not be fetched.
    """
    checks: dict[str, dict[str, Any]] = {
        "iss": {"essential": True, "value": issuer},
        "aud": {"essential": True, "value": client_id},
        "exp": {"essential": True},
        "sub": {"essential": True},
    }
    claims = await verify_jwt(
        id_token, source, what="the id_token", checks=checks, now=now, leeway=leeway
    )
    audience = claims.get("aud")
    # OpenID Connect Core 3.1.3.7: with several audiences, azp must name this client.
    if isinstance(audience, list) and len(audience) > 1 and claims.get("azp") != client_id:
        raise TokenVerificationError(
            "the id_token is for several audiences and not authorized for this client"
        )
    if nonce is not None:
        got = claims.get("nonce")
        if not isinstance(got, str) or not hmac.compare_digest(got, nonce):
            raise TokenVerificationError("the id_token's nonce is not this login's")
    return claims


def decrypt_jwe(token: str, key: Any, *, what: str) -> bytes:
    """Decrypt a compact JWE with the private ``key`` and return the plaintext.

    Raises:
        TokenVerificationError: the JWE does not decrypt with this key, or uses
            an algorithm that is not accepted.
        ConfigurationError: joserfc is not installed.
    """
    jose = joserfc(f"decrypting {what}")
    header = _header(token, what, "JWE")
    if header.get("alg") not in ENCRYPTION_ALGORITHMS or header.get("enc") not in (
        ENCRYPTION_ALGORITHMS
    ):
        raise TokenVerificationError(
            f"{what} is a JWE with an algorithm that is not accepted "
            f"(accepted: {', '.join(ENCRYPTION_ALGORITHMS)})"
        )
    problem = None
    try:
        plaintext: bytes = jose.jwe.decrypt_compact(
            token, key, algorithms=[header["alg"], header["enc"]]
        ).plaintext
    except (jose.errors.JoseError, ValueError, TypeError):
        problem = f"{what} is a JWE that does not decrypt with the configured private key"
    if problem is not None:
        raise TokenVerificationError(problem)
    return plaintext


def _header(token: str, what: str, shape: str = "JWT") -> dict[str, Any]:
    """The protected header of a compact JWS or JWE (parsing only: nothing is trusted yet)."""
    value = segment_json(token.split(".", 1)[0])
    if not isinstance(value, dict):
        raise TokenVerificationError(
            f"{what} looks like a {shape} but its header is not base64url JSON"
        )
    return value


def segment_json(segment: str) -> object:
    """Decode one base64url segment of a compact token as JSON; ``None`` if it is not."""
    try:
        return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (ValueError, TypeError):
        return None
