"""The fake ID.me's OAuth 2.0 endpoints, ``/oauth/authorize`` and ``/oauth/token``.

:class:`OAuthEndpoints` answers both for one :class:`FakeIdMe`, reading its
settings at every request, and keeps what they issued: authorization codes
(bound to their redirect URI, PKCE challenge and nonce) and the access and
refresh tokens each code or refresh bought. :class:`IdMeAnswer` and its
builders (:func:`json_answer`) are the answers of the whole fake ID.me.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import attrs

if TYPE_CHECKING:
    from ._idme import FakeIdMe

__all__ = ["IdMeAnswer", "OAuthEndpoints", "json_answer"]

_GRANT_GONE = "The provided authorization grant is expired or revoked"


@attrs.frozen
class IdMeAnswer:
    """One answer of the fake ID.me, for the server to send."""

    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()


def json_answer(status: int, payload: object) -> IdMeAnswer:
    """A JSON answer that no cache may keep."""
    no_store = (("cache-control", "no-store"), ("pragma", "no-cache"))
    return IdMeAnswer(status, json.dumps(payload).encode(), "application/json", no_store)


def _token_error(code: str, description: str) -> IdMeAnswer:
    return json_answer(400, {"error": code, "error_description": description})


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


class OAuthEndpoints:
    """The authorize and token endpoints of ``idme``, and the codes and tokens they issued."""

    def __init__(self, idme: FakeIdMe) -> None:
        self._idme = idme
        self._codes: dict[str, _Code] = {}
        self._grants: dict[str, _Grant] = {}

    def check_access_token(self, token: str) -> Literal["ok", "unknown", "used", "expired"]:
        """Spend an issued access token on one attributes call, if it still buys one."""
        idme = self._idme
        grant = self._grants.get(token)
        if grant is None or grant.kind != "access":
            return "unknown"
        if grant.revoked or grant.used:
            return "used"
        if idme.clock.now() >= grant.expires_at:
            return "expired"
        if idme.single_use_access_tokens:
            grant.used = True
        return "ok"

    def authorize(self, params: dict[str, str]) -> IdMeAnswer:
        """Answer an authorization request: a redirect with a code or an error."""
        idme = self._idme
        uri = params.get("redirect_uri", "")
        if not self._redirect_ok(uri):
            # Never redirect to an unregistered URI: the error shows on ID.me's own page.
            return _page(400, "invalid_redirect_uri", "The redirect URI is not registered.")
        state = {"state": params["state"]} if "state" in params else {}

        def error(code: str, description: str) -> IdMeAnswer:
            return _redirect(uri, {"error": code, "error_description": description, **state})

        wanted = params.get("scope", "").split()
        challenge, method = params.get("code_challenge"), params.get("code_challenge_method")
        if params.get("client_id") != idme.client_id:
            return error("invalid_client", "The client is unknown.")
        if params.get("response_type") != "code":
            return error("unsupported_response_type", "Only response_type=code is supported.")
        if challenge is not None and method != "S256":
            return error("invalid_request", "code_challenge_method must be S256.")
        if not wanted or (idme.scopes is not None and not set(wanted) <= idme.scopes):
            return error("invalid_scope", "The scope is not mapped to a policy of this consumer.")
        if idme.authorize_error is not None:
            return error(idme.authorize_error, f"The fake answers {idme.authorize_error}.")
        code = secrets.token_urlsafe(24)
        self._codes[code] = _Code(
            client_id=idme.client_id,
            redirect_uri=uri,
            scope=" ".join(wanted),
            challenge=challenge,
            nonce=params.get("nonce"),
            expires_at=idme.clock.now() + idme.code_lifetime,
        )
        return _redirect(uri, {"code": code, **state})

    def token(self, form: dict[str, str], authorization: str, base: str) -> IdMeAnswer:
        """Answer a token request (a code or a refresh token) for a fake served at ``base``."""
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

    def _redirect_ok(self, uri: str) -> bool:
        if self._idme.redirect_uris is not None:
            return uri in self._idme.redirect_uris
        parts = urlsplit(uri)
        secure = parts.scheme == "https" or (parts.scheme == "http" and _loopback(parts.hostname))
        return secure and bool(parts.hostname) and not parts.fragment

    def _client(self, form: dict[str, str], authorization: str) -> str | None:
        """Return an error description if the client does not authenticate, else ``None``."""
        idme = self._idme
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
        if client_id != idme.client_id:
            return "The client is unknown."
        if secret is not None and secret != idme.client_secret:
            return "The client secret is wrong."
        if secret is None and idme.require_client_secret:
            return "This client must send its secret."
        return None

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
        if self._idme.clock.now() >= code.expires_at:
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
        return json_answer(200, answer)

    def _refresh(self, form: dict[str, str]) -> IdMeAnswer:
        token = form.get("refresh_token", "")
        grant = self._grants.get(token)
        if grant is None or grant.kind != "refresh" or grant.revoked or grant.used:
            return _token_error("invalid_grant", _GRANT_GONE)
        if self._idme.clock.now() >= grant.expires_at:
            return _token_error("invalid_grant", _GRANT_GONE)
        grant.used = True  # refresh tokens rotate
        return json_answer(200, self._issue(grant.scope, refresh=True))

    def _issue(self, scope: str, *, refresh: bool) -> dict[str, Any]:
        idme = self._idme
        now = idme.clock.now()
        access = secrets.token_hex(16)
        self._grants[access] = _Grant(
            "access", idme.client_id, scope, now + idme.access_token_lifetime
        )
        answer: dict[str, Any] = {
            "access_token": access,
            "token_type": "bearer",
            "expires_in": int(idme.access_token_lifetime),
            "scope": scope,
        }
        if refresh:
            token = secrets.token_hex(16)
            expires = now + idme.refresh_token_lifetime
            self._grants[token] = _Grant("refresh", idme.client_id, scope, expires)
            answer["refresh_token"] = token
            answer["refresh_expires_in"] = int(idme.refresh_token_lifetime)
        return answer

    def _id_token(self, base: str, nonce: str | None) -> str:
        idme = self._idme
        now = int(idme.wall_time())
        claims: dict[str, Any] = {
            "iss": base + "oidc",
            "sub": idme.subject,
            "aud": idme.client_id,
            "iat": now,
            "exp": now + int(idme.access_token_lifetime),
            "auth_time": now,
        }
        if nonce is not None:
            claims["nonce"] = nonce
        return idme.keys.sign(claims)


def _challenge(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _unquote(text: str) -> str:
    return parse_qs(f"v={text}").get("v", [""])[0]
