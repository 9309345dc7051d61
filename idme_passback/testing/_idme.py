"""The ID.me side of the fake: OAuth 2.0 login, OpenID Connect keys, and attribute shapes.

:class:`FakeIdMe` answers ``/oauth/authorize`` (an auto-consent redirect
with ``code`` and ``state``, or an error redirect), ``/oauth/token`` (codes
and refresh tokens, PKCE S256, client secrets in the form or as HTTP
Basic), ``/oidc/.well-known/openid-configuration`` and the JWKS, and decides
how the attributes answer looks (JSON, JWT or JWE; names or none; front-only
documents). It keeps its own clock: codes last 60 s, access tokens 300 s
and are single-use, refresh tokens last 7 days, as ID.me documents.

Choices made here once: every token endpoint error is a 400 JSON body;
reusing a code revokes what it bought (RFC 6749, section 4.1.2); refresh
tokens rotate; any ``https://`` (or loopback ``http://``) redirect URI is
accepted unless ``redirect_uris`` says which.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import secrets
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal, TypeAlias
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import attrs

from ..clock import Clock, MonotonicClock
from ._idme_keys import FakeKeys

__all__ = [
    "DEFAULT_CLIENT_ID",
    "DEFAULT_CLIENT_SECRET",
    "DEFAULT_STATUS",
    "AttributesFormat",
    "DocumentBack",
    "FakeIdMe",
    "IdMeAnswer",
    "IdMeEndpoint",
]

#: The client id a fake accepts unless told otherwise.
DEFAULT_CLIENT_ID = "fake-idme-client-28c4b1d0"
#: The client secret a fake accepts unless told otherwise.
DEFAULT_CLIENT_SECRET = "fake-idme-secret-5f0e9a7c3b2d4e61"

#: How the attributes answer is sent: plain JSON; a JWT as ``application/jwt`` or as a
#: JSON string; a JWE (wrapping a signed JWT) raw or as a JSON string.
AttributesFormat: TypeAlias = Literal["json", "jwt", "jwt_quoted", "jwe", "jwe_quoted"]
#: The endpoints of the OAuth and OpenID Connect side.
IdMeEndpoint: TypeAlias = Literal["authorize", "token", "discovery", "jwks"]
#: How a document's back travels: a token, ``null``, left out, or ``""`` (a passport).
DocumentBack: TypeAlias = Literal["present", "null", "missing", "empty"]

#: The status list of a person verified at IAL2, as ID.me sends it.
DEFAULT_STATUS: tuple[dict[str, Any], ...] = (
    {"group": "identity", "subgroups": ["IAL2"], "verified": True},
)
_FORMATS = ("json", "jwt", "jwt_quoted", "jwe", "jwe_quoted")
_BACKS = ("present", "null", "missing", "empty")
_GRANT_GONE = "The provided authorization grant is expired or revoked"


@attrs.frozen
class IdMeAnswer:
    """One answer of the fake ID.me, for the server to send."""

    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()


def _json(status: int, payload: object) -> IdMeAnswer:
    no_store = (("cache-control", "no-store"), ("pragma", "no-cache"))
    return IdMeAnswer(status, json.dumps(payload).encode(), "application/json", no_store)


def _token_error(code: str, description: str) -> IdMeAnswer:
    return _json(400, {"error": code, "error_description": description})


def _page(status: int, title: str, text: str) -> IdMeAnswer:
    body = (
        f"<!DOCTYPE html>\n<html><head><title>{title}</title></head>"
        f"<body><h1>{title}</h1><p>{text}</p></body></html>\n"
    )
    return IdMeAnswer(status, body.encode(), "text/html; charset=utf-8")


def _redirect(uri: str, params: Mapping[str, str]) -> IdMeAnswer:
    parts = urlsplit(uri)
    query = "&".join(filter(None, [parts.query, urlencode(params)]))
    location = urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))
    return IdMeAnswer(302, b"", "text/plain", (("location", location),))


def _loopback(host: str | None) -> bool:
    return host in ("localhost", "127.0.0.1", "::1") or (host or "").endswith(".localhost")


@attrs.define
class _Code:
    client_id: str
    redirect_uri: str
    scope: str
    challenge: str | None
    nonce: str | None
    expires_at: float
    used: bool = False
    bought: list[str] = attrs.Factory(list)


@attrs.define
class _Grant:
    kind: Literal["access", "refresh"]
    client_id: str
    scope: str
    expires_at: float
    used: bool = False
    revoked: bool = False


class FakeIdMe:
    """The OAuth 2.0 / OpenID Connect side of ID.me, for :class:`FakePassbackServer`.

    Every option is also a plain attribute: a test may change one between
    requests (``fake.idme.authorize_error = "access_denied"``).

    Args:
        client_id, client_secret: the consumer credentials the token endpoint accepts.
        clock: lifetimes are measured on it (the server's clock by default).
        redirect_uris: the registered callbacks; ``None`` accepts any
            ``https://`` URI and ``http://`` on loopback.
        require_client_secret: refuse a token request without the secret even
            with PKCE (one report says ID.me's sandbox does).
        authorize_error: answer every authorization with this error redirect
            (``"access_denied"``, ``"invalid_scope"``, ...) instead of a code.
        scopes: the scopes the consumer has policies for; ``None`` accepts any.
        code_lifetime, access_token_lifetime, refresh_token_lifetime: seconds.
        single_use_access_tokens: an issued access token buys one attributes call.
        attributes_format: see :data:`AttributesFormat`.
        attribute_names: ``False`` leaves ``name`` out of every attribute.
        status: the attributes answer's ``status`` list, as sent (``None`` sends ``null``).
        document_back: see :data:`DocumentBack`.
    """

    def __init__(
        self,
        client_id: str = DEFAULT_CLIENT_ID,
        client_secret: str | None = DEFAULT_CLIENT_SECRET,
        *,
        clock: Clock | None = None,
        redirect_uris: Iterable[str] | None = None,
        require_client_secret: bool = False,
        authorize_error: str | None = None,
        scopes: Iterable[str] | None = None,
        code_lifetime: float = 60.0,
        access_token_lifetime: float = 300.0,
        refresh_token_lifetime: float = 604800.0,
        single_use_access_tokens: bool = True,
        attributes_format: AttributesFormat = "json",
        attribute_names: bool = True,
        status: Sequence[Any] | None = DEFAULT_STATUS,
        document_back: DocumentBack = "present",
    ) -> None:
        if attributes_format not in _FORMATS:
            raise ValueError(f"attributes_format must be one of {_FORMATS}")
        if document_back not in _BACKS:
            raise ValueError(f"document_back must be one of {_BACKS}")
        self.client_id = client_id
        self.client_secret = client_secret
        self.redirect_uris = None if redirect_uris is None else set(redirect_uris)
        self.require_client_secret = require_client_secret
        self.authorize_error = authorize_error
        self.scopes = None if scopes is None else set(scopes)
        self.code_lifetime = code_lifetime
        self.access_token_lifetime = access_token_lifetime
        self.refresh_token_lifetime = refresh_token_lifetime
        self.single_use_access_tokens = single_use_access_tokens
        self.attributes_format: AttributesFormat = attributes_format
        self.attribute_names = attribute_names
        self.status = None if status is None else copy.deepcopy(list(status))
        self.document_back: DocumentBack = document_back
        #: The person every login is: the ``sub`` of each id_token.
        self.subject = secrets.token_hex(16)
        #: Signing keys (``rotate``, ``sign``) and the consumer's key pair.
        self.keys = FakeKeys()
        self._codes: dict[str, _Code] = {}
        self._grants: dict[str, _Grant] = {}
        self.clock: Clock = MonotonicClock()
        self._epoch = 0.0
        self.bind(clock if clock is not None else MonotonicClock())

    def bind(self, clock: Clock) -> None:
        """Measure lifetimes and id_token times on ``clock`` from now on."""
        self.clock = clock
        # Unix time moves with the clock, so a fake clock also ages id_tokens.
        self._epoch = time.time() - clock.now()

    def wall_time(self) -> float:
        """The fake's Unix time: real time at binding, moved along by its clock."""
        return self._epoch + self.clock.now()

    @property
    def decryption_key(self) -> dict[str, Any]:
        """The consumer's private key (a JWK dict) that opens the fake's JWE answers."""
        return dict(self.keys.consumer_key.as_dict(private=True))

    # ------------------------------------------------------------ the passback side asks

    def check_access_token(self, token: str) -> Literal["ok", "unknown", "used", "expired"]:
        """Spend an issued access token on one attributes call, if it still buys one."""
        grant = self._grants.get(token)
        if grant is None or grant.kind != "access":
            return "unknown"
        if grant.revoked or grant.used:
            return "used"
        if self.clock.now() >= grant.expires_at:
            return "expired"
        if self.single_use_access_tokens:
            grant.used = True
        return "ok"

    def document_tokens(self, front: str, back: str | None) -> dict[str, Any]:
        """The ``document_tokens`` value as :attr:`document_back` shapes it."""
        if self.document_back == "missing":
            return {"front": front}
        if self.document_back == "present":
            return {"front": front, "back": back}
        return {"front": front, "back": None if self.document_back == "null" else ""}

    def attributes(self, attributes: list[dict[str, Any]], base: str) -> IdMeAnswer:
        """The attributes answer in :attr:`attributes_format`."""
        if not self.attribute_names:
            attributes = [{k: v for k, v in a.items() if k != "name"} for a in attributes]
        payload: dict[str, Any] = {"attributes": attributes, "status": self.status}
        if self.attributes_format == "json":
            return IdMeAnswer(200, json.dumps(payload).encode())
        now = int(self.wall_time())
        claims = {"iss": base + "oidc", "aud": self.client_id, "sub": self.subject, "iat": now}
        token = self.keys.sign({**claims, "exp": now + 300, **payload})
        if self.attributes_format.startswith("jwe"):
            token = self.keys.encrypt(token, content_type="JWT")
        if self.attributes_format.endswith("_quoted"):
            return IdMeAnswer(200, json.dumps(token).encode())
        return IdMeAnswer(200, token.encode(), "application/jwt")

    # ------------------------------------------------------------ the OAuth and OIDC side

    def handle(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, list[str]],
        headers: Mapping[str, str],
        body: bytes,
        base: str,
    ) -> tuple[IdMeEndpoint, IdMeAnswer] | None:
        """Answer a request under ``/oauth/`` or ``/oidc/``; ``None`` if no endpoint is there."""
        routes: dict[str, tuple[IdMeEndpoint, str]] = {
            "/oauth/authorize": ("authorize", "GET"),
            "/oauth/token": ("token", "POST"),
            "/oidc/.well-known/openid-configuration": ("discovery", "GET"),
            "/oidc/.well-known/jwks": ("jwks", "GET"),
        }
        if path not in routes:
            return None
        endpoint, allowed = routes[path]
        if method != allowed:
            answer = _json(
                405, {"error": "method_not_allowed", "error_description": f"Use {allowed}."}
            )
            return endpoint, attrs.evolve(answer, headers=(("allow", allowed),))
        if endpoint == "authorize":
            return endpoint, self._authorize({k: v[0] for k, v in query.items()})
        if endpoint == "token":
            form = {k: v[0] for k, v in parse_qs(body.decode("latin-1")).items()}
            return endpoint, self._token(form, headers.get("authorization", ""), base)
        if endpoint == "jwks":
            return endpoint, _json(200, self.keys.jwks())
        return endpoint, _json(200, self.discovery(base))

    def discovery(self, base: str) -> dict[str, Any]:
        """The OpenID Connect discovery document for a fake served at ``base``."""
        return {
            "issuer": base + "oidc",
            "authorization_endpoint": base + "oauth/authorize",
            "token_endpoint": base + "oauth/token",
            "jwks_uri": base + "oidc/.well-known/jwks",
            "response_types_supported": ["code"],
            "grant_types_supported": ["authorization_code", "refresh_token"],
            "code_challenge_methods_supported": ["S256"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "subject_types_supported": ["public"],
            "token_endpoint_auth_methods_supported": [
                "client_secret_post",
                "client_secret_basic",
                "none",
            ],
        }

    def _redirect_ok(self, uri: str) -> bool:
        if self.redirect_uris is not None:
            return uri in self.redirect_uris
        parts = urlsplit(uri)
        secure = parts.scheme == "https" or (parts.scheme == "http" and _loopback(parts.hostname))
        return secure and bool(parts.hostname) and not parts.fragment

    def _authorize(self, params: dict[str, str]) -> IdMeAnswer:
        uri = params.get("redirect_uri", "")
        if not self._redirect_ok(uri):
            # Never redirect to an unregistered URI: the error shows on ID.me's own page.
            return _page(400, "invalid_redirect_uri", "The redirect URI is not registered.")
        state = {"state": params["state"]} if "state" in params else {}

        def error(code: str, description: str) -> IdMeAnswer:
            return _redirect(uri, {"error": code, "error_description": description, **state})

        wanted = params.get("scope", "").split()
        challenge, method = params.get("code_challenge"), params.get("code_challenge_method")
        if params.get("client_id") != self.client_id:
            return error("invalid_client", "The client is unknown.")
        if params.get("response_type") != "code":
            return error("unsupported_response_type", "Only response_type=code is supported.")
        if challenge is not None and method != "S256":
            return error("invalid_request", "code_challenge_method must be S256.")
        if not wanted or (self.scopes is not None and not set(wanted) <= self.scopes):
            return error("invalid_scope", "The scope is not mapped to a policy of this consumer.")
        if self.authorize_error is not None:
            return error(self.authorize_error, f"The fake answers {self.authorize_error}.")
        code = secrets.token_urlsafe(24)
        self._codes[code] = _Code(
            client_id=self.client_id,
            redirect_uri=uri,
            scope=" ".join(wanted),
            challenge=challenge,
            nonce=params.get("nonce"),
            expires_at=self.clock.now() + self.code_lifetime,
        )
        return _redirect(uri, {"code": code, **state})

    def _client(self, form: dict[str, str], authorization: str) -> str | None:
        """Return an error description if the client does not authenticate, else ``None``."""
        scheme, _, value = authorization.partition(" ")
        client_id, secret = form.get("client_id"), form.get("client_secret")
        if scheme.lower() == "basic":
            if secret is not None:
                return "Use one way of sending the client secret, not two."
            try:
                pair = base64.b64decode(value, validate=True).decode()
            except ValueError:
                return "The Basic credentials are malformed."
            user, _, password = pair.partition(":")
            client_id, secret = _unquote(user), _unquote(password)
        if client_id != self.client_id:
            return "The client is unknown."
        if secret is not None and secret != self.client_secret:
            return "The client secret is wrong."
        if secret is None and self.require_client_secret:
            return "This client must send its secret."
        return None

    def _token(self, form: dict[str, str], authorization: str, base: str) -> IdMeAnswer:
        refused = self._client(form, authorization)
        if refused is not None:
            return _token_error("invalid_client", refused)
        authenticated = "client_secret" in form or authorization.lower().startswith("basic ")
        grant_type = form.get("grant_type")
        if grant_type == "authorization_code":
            return self._exchange(form, authenticated, base)
        if grant_type == "refresh_token":
            return self._refresh(form)
        return _token_error("unsupported_grant_type", "Use authorization_code or refresh_token.")

    def _exchange(self, form: dict[str, str], authenticated: bool, base: str) -> IdMeAnswer:
        code = self._codes.get(form.get("code", ""))
        if code is None:
            return _token_error("invalid_grant", _GRANT_GONE)
        if code.used:
            # RFC 6749, 4.1.2: a reused code revokes what it bought.
            for token in code.bought:
                self._grants[token].revoked = True
            return _token_error("invalid_grant", _GRANT_GONE)
        code.used = True
        if self.clock.now() >= code.expires_at:
            return _token_error("invalid_grant", _GRANT_GONE)
        if form.get("redirect_uri") != code.redirect_uri:
            return _token_error("invalid_grant", "The redirect_uri does not match.")
        verifier = form.get("code_verifier")
        if code.challenge is None:
            if not authenticated:
                return _token_error("invalid_client", "A public client must use PKCE.")
        elif verifier is None or _challenge(verifier) != code.challenge:
            return _token_error("invalid_grant", "The code_verifier does not match.")
        answer = self._issue(code.scope, refresh=True)
        code.bought.extend([answer["access_token"], answer["refresh_token"]])
        if "openid" in code.scope.split():
            answer["id_token"] = self._id_token(base, code.nonce)
        return _json(200, answer)

    def _refresh(self, form: dict[str, str]) -> IdMeAnswer:
        token = form.get("refresh_token", "")
        grant = self._grants.get(token)
        if grant is None or grant.kind != "refresh" or grant.revoked or grant.used:
            return _token_error("invalid_grant", _GRANT_GONE)
        if self.clock.now() >= grant.expires_at:
            return _token_error("invalid_grant", _GRANT_GONE)
        grant.used = True  # refresh tokens rotate
        return _json(200, self._issue(grant.scope, refresh=True))

    def _issue(self, scope: str, *, refresh: bool) -> dict[str, Any]:
        now = self.clock.now()
        access = secrets.token_hex(16)
        self._grants[access] = _Grant(
            "access", self.client_id, scope, now + self.access_token_lifetime
        )
        answer: dict[str, Any] = {
            "access_token": access,
            "token_type": "bearer",
            "expires_in": int(self.access_token_lifetime),
            "scope": scope,
        }
        if refresh:
            token = secrets.token_hex(16)
            expires = now + self.refresh_token_lifetime
            self._grants[token] = _Grant("refresh", self.client_id, scope, expires)
            answer["refresh_token"] = token
            answer["refresh_expires_in"] = int(self.refresh_token_lifetime)
        return answer

    def _id_token(self, base: str, nonce: str | None) -> str:
        now = int(self.wall_time())
        claims: dict[str, Any] = {
            "iss": base + "oidc",
            "sub": self.subject,
            "aud": self.client_id,
            "iat": now,
            "exp": now + int(self.access_token_lifetime),
            "auth_time": now,
        }
        if nonce is not None:
            claims["nonce"] = nonce
        return self.keys.sign(claims)


def _challenge(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _unquote(text: str) -> str:
    return parse_qs(f"v={text}").get("v", [""])[0]
