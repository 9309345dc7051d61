"""ID.me login: OAuth 2.0 authorization code with PKCE, and OpenID Connect id_tokens.

Example::

    async with OAuthClient(client_id, client_secret, redirect_uri=CALLBACK) as oauth:
        request = oauth.authorization_request(scopes=["openid", IAL2])
        # keep `request` server-side, send the browser to request.url; then, on the callback:
        code = oauth.parse_callback(callback_url, request)
        tokens = await oauth.exchange_code(code, request)
        tokens = await oauth.refresh(tokens.refresh_token)   # later, for a new access token

Codes and access tokens are single-use, so nothing here is ever retried: a
:class:`~idme_passback.errors.TransportError` whose ``sent`` is false is safe
to call again, anything else means starting over. The client secret, codes,
PKCE verifiers and every token stay out of logs, messages and reprs.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

import attrs
import httpx

from . import _jose
from . import _oauth_wire as _wire
from ._config import DEFAULT_TIMEOUT
from ._lifecycle import OwnsHTTP
from ._redact import install_redaction
from ._tokens import remember
from ._version import __version__
from .clock import Clock, MonotonicClock
from .errors import (
    AccessDeniedError,
    AuthorizationError,
    ConfigurationError,
    MalformedResponseError,
    StateMismatchError,
)

__all__ = ["AuthorizationRequest", "OAuthClient", "TokenSet"]

_AUTHORIZE_PATH = "oauth/authorize"
_TOKEN_PATH = "oauth/token"


@attrs.frozen(repr=False)
class AuthorizationRequest:
    """One login in flight: the URL to send the browser to, and what checks its callback.

    Keep it server-side (``state``, ``code_verifier`` and ``nonce`` must never
    reach the browser other than through ``url``) until the callback arrives.
    """

    url: str
    state: str
    code_verifier: str
    nonce: str | None
    redirect_uri: str
    scopes: tuple[str, ...]

    def __repr__(self) -> str:
        scopes = list(self.scopes)
        return f"AuthorizationRequest(scopes={scopes!r}, redirect_uri={self.redirect_uri!r})"


@attrs.frozen(repr=False)
class TokenSet:
    """The token endpoint's answer; ``id_token_claims`` are verified, when there is an id_token.

    ``obtained_at`` is the OAuth client's clock time at the answer;
    ``expires_at`` and ``refresh_expires_at`` are on the same clock
    (``oauth.clock.now()``). ID.me's access tokens last 300 s and are
    single-use: spend one on one attributes call.
    """

    access_token: str
    token_type: str
    expires_in: float | None
    scope: str
    refresh_token: str | None
    refresh_expires_in: float | None
    id_token: str | None
    obtained_at: float
    id_token_claims: Mapping[str, Any] | None = attrs.field(default=None, eq=False)

    @property
    def scopes(self) -> tuple[str, ...]:
        """The granted scopes."""
        return tuple(self.scope.split())

    @property
    def expires_at(self) -> float | None:
        """When the access token expires, on the OAuth client's clock."""
        return None if self.expires_in is None else self.obtained_at + self.expires_in

    @property
    def refresh_expires_at(self) -> float | None:
        """When the refresh token expires, on the OAuth client's clock."""
        if self.refresh_expires_in is None:
            return None
        return self.obtained_at + self.refresh_expires_in

    def __repr__(self) -> str:
        return (
            f"TokenSet(token_type={self.token_type!r}, expires_in={self.expires_in!r}, "
            f"scope={self.scope!r}, access_token=<hidden>, "
            f"refresh_token={'<hidden>' if self.refresh_token else None}, "
            f"id_token={'<verified>' if self.id_token else None})"
        )


class OAuthClient(OwnsHTTP):
    """ID.me's OAuth 2.0 login for one consumer (client id and secret); create once, share.

    Args:
        client_id: the consumer's client id.
        client_secret: its secret; ``None`` for a public client (PKCE alone).
            ID.me's sandbox may want both: PKCE is always sent.
        redirect_uri: the callback registered with ID.me (``https://``, or
            ``http://`` on loopback).
        environment: ``"sandbox"`` or ``"production"``.
        base_url: a base URL of your own (a proxy, a fake); overrides ``environment``.
        transport, http_client: as for :class:`~idme_passback.PassbackClient`
            (a caller's ``http_client`` stays theirs to close).
        clock: where ``TokenSet.obtained_at`` and the JWKS refetch interval are read.
        timeout: per request.
        client_auth: send the secret in the form (``"client_secret_post"``) or
            as HTTP Basic (``"client_secret_basic"``).
        issuer: the ``iss`` an id_token must carry (``{base_url}oidc`` by default).
        leeway: seconds of clock skew allowed on an id_token's ``exp`` and ``iat``.
        wall_clock: the Unix time id_tokens are checked against.
        allow_insecure_http: allow plain ``http://`` to a non-loopback host.

    Raises:
        ConfigurationError: a missing client id or redirect URI, an unknown
            environment, an unsafe base URL, or ``transport`` with ``http_client``.
    """

    def __init__(
        self,
        client_id: str,
        client_secret: str | None = None,
        *,
        redirect_uri: str,
        environment: Literal["sandbox", "production"] = "sandbox",
        base_url: str | httpx.URL | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        http_client: httpx.AsyncClient | None = None,
        clock: Clock | None = None,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        client_auth: Literal["client_secret_post", "client_secret_basic"] = "client_secret_post",
        issuer: str | None = None,
        leeway: float = 60.0,
        wall_clock: Callable[[], float] = time.time,
        allow_insecure_http: bool = False,
    ) -> None:
        if not isinstance(client_id, str) or not client_id.strip():
            raise ConfigurationError("client_id must be a non-empty string")
        if client_secret is not None and (not isinstance(client_secret, str) or not client_secret):
            raise ConfigurationError("client_secret must be a non-empty string or None")
        if transport is not None and http_client is not None:
            raise ConfigurationError("pass transport= or http_client=, not both")
        if client_auth not in ("client_secret_post", "client_secret_basic"):
            raise ConfigurationError(
                "client_auth must be 'client_secret_post' or 'client_secret_basic'"
            )
        in_process = isinstance(transport, httpx.ASGITransport | httpx.MockTransport)
        self._base_url = _wire.base_url(environment, base_url, in_process or allow_insecure_http)
        self.redirect_uri = _wire.redirect_uri(redirect_uri)
        self.client_id = client_id
        self._client_secret = client_secret
        self._client_auth = client_auth
        self.clock: Clock = clock if clock is not None else MonotonicClock()
        self._timeout = timeout
        self._issuer = issuer if issuer is not None else f"{self._base_url}oidc"
        self._leeway = leeway
        self._wall_clock = wall_clock
        self._adopt(
            http_client,
            lambda: httpx.AsyncClient(transport=transport, timeout=timeout, follow_redirects=False),
        )
        self._jwks = _jose.JWKSSource(self._base_url, self._http, clock=self.clock)
        install_redaction()

    def __repr__(self) -> str:
        secret = None if self._client_secret is None else "<hidden>"
        return (
            f"OAuthClient(base_url={self._base_url!r}, client_id={self.client_id!r}, "
            f"client_secret={secret})"
        )

    @property
    def base_url(self) -> str:
        """The base URL the login goes to."""
        return self._base_url

    def authorization_request(
        self, scopes: Iterable[str], *, nonce: str | None = None, op: str | None = None
    ) -> AuthorizationRequest:
        """Start a login: a fresh ``state``, PKCE (S256) verifier and, for ``openid``, a nonce.

        Args:
            scopes: the policies to ask for, for example ``["openid",
                "http://idmanagement.gov/ns/assurance/ial/2/aal/2"]``.
            nonce: the OpenID Connect nonce; one is made when ``openid`` is asked
                for and none is given.
            op: ID.me's ``op`` parameter (for example ``"signup"``), passed as is.

        Raises:
            ConfigurationError: no scopes, a scope with whitespace, a bare string
                for ``scopes``, or ``openid`` without joserfc to verify the id_token.
        """
        wanted = _wire.scopes(scopes)
        if "openid" in wanted:
            # The id_token must be verified once the code is spent: fail before, not after.
            _jose.joserfc("verifying the id_token of an 'openid' login")
            nonce = nonce if nonce is not None else secrets.token_urlsafe(24)
        state = secrets.token_urlsafe(32)
        verifier = secrets.token_urlsafe(64)
        params = {
            "client_id": self.client_id,
            "redirect_uri": self.redirect_uri,
            "response_type": "code",
            "scope": " ".join(wanted),
            "state": state,
            "code_challenge": _wire.pkce_challenge(verifier),
            "code_challenge_method": "S256",
        }
        if nonce is not None:
            params["nonce"] = nonce
        if op is not None:
            params["op"] = op
        url = str(httpx.URL(self._base_url + _AUTHORIZE_PATH, params=params))
        return AuthorizationRequest(url, state, verifier, nonce, self.redirect_uri, wanted)

    def parse_callback(self, url: str | httpx.URL, request: AuthorizationRequest) -> str:
        """Return the authorization code from the callback URL, once its ``state`` checks out.

        Raises:
            StateMismatchError: the ``state`` is missing or not ``request``'s (nothing is trusted).
            AccessDeniedError: the user declined.
            AuthorizationError: any other error on the redirect (``error`` says
                which), or a callback without a code.
        """
        params = httpx.URL(str(url)).params
        for name in ("state", "code", "error"):
            if len(params.get_list(name)) > 1:
                raise AuthorizationError(f"the callback repeats its {name!r} parameter")
        state, error = params.get("state"), params.get("error")
        if state is not None and not hmac.compare_digest(state, request.state):
            raise StateMismatchError("the callback's state is not this login's (possible CSRF)")
        if error is not None:
            code_word = _wire.words(error, ()) or "unknown_error"
            description = _wire.words(params.get("error_description"), ())
            cls = AccessDeniedError if code_word == "access_denied" else AuthorizationError
            message = f"the login came back with {code_word}"
            if description:
                message += f" ({description})"
            raise cls(message, error=code_word, error_description=description)
        if state is None:
            raise StateMismatchError("the callback has no state: it is not this login's")
        code = params.get("code")
        if not code:
            raise AuthorizationError("the callback has neither a code nor an error")
        if not _wire.plausible(code):
            raise AuthorizationError("the callback's code is not a plausible authorization code")
        return code

    async def exchange_code(self, code: str, request: AuthorizationRequest) -> TokenSet:
        """Trade the callback's code for tokens (once: codes are single-use).

        The id_token, when there is one, is verified (signature against the
        JWKS, ``iss``, ``aud``, ``exp`` and the request's nonce) before any
        of it is returned.

        Raises:
            InvalidGrantError: the code is spent, expired or not this request's
                (a wrong PKCE verifier or redirect URI).
            OAuthError: any other refusal (``error`` says which).
            TokenVerificationError: the id_token does not verify.
            TransportError, APIStatusError, MalformedResponseError: other failures.
        """
        code = _wire.opaque(code, "authorization code")
        if "openid" in request.scopes:
            # Fetched before the code is spent: a JWKS outage must not cost the login.
            await self._jwks.load()
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": request.redirect_uri,
            "code_verifier": request.code_verifier,
        }
        secrets_ = (code, request.code_verifier)
        answer = await self._token(form, secrets_, "code exchange")
        return await self._token_set(answer, " ".join(request.scopes), request.nonce)

    async def refresh(self, refresh_token: str) -> TokenSet:
        """Trade a refresh token for a new access token (and usually a new refresh token).

        The answer's refresh token, or ``refresh_token`` itself when the
        server keeps it, is the one to use next time.

        Raises:
            InvalidGrantError: the refresh token is expired, revoked or spent.
            OAuthError, TokenVerificationError, TransportError, APIStatusError,
            MalformedResponseError: as for :meth:`exchange_code`.
        """
        refresh_token = _wire.opaque(refresh_token, "refresh token")
        form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
        answer = await self._token(form, (refresh_token,), "refresh")
        answer.setdefault("refresh_token", refresh_token)
        return await self._token_set(answer, "", None)

    async def _token(
        self, form: dict[str, str], secrets_: tuple[str, ...], what: str
    ) -> dict[str, Any]:
        headers = {"User-Agent": f"idme-passback/{__version__}", "Accept": "application/json"}
        secret = self._client_secret
        hidden = (*secrets_, secret) if secret else secrets_
        remember(*hidden)  # every scrub in this process hides them from now on
        if secret is not None and self._client_auth == "client_secret_basic":
            headers["Authorization"] = _wire.basic_credentials(self.client_id, secret)
        else:
            form["client_id"] = self.client_id
            if secret is not None:
                form["client_secret"] = secret
        request = self._http.build_request(
            "POST", self._base_url + _TOKEN_PATH, data=form, headers=headers, timeout=self._timeout
        )
        response, body = await _wire.send(self._http, request, hidden, what)
        if response.status_code != 200:
            raise _wire.status_error(response, body, hidden, what)
        return _wire.json_object(body, what)

    async def _token_set(self, answer: dict[str, Any], scope: str, nonce: str | None) -> TokenSet:
        access_token = answer.get("access_token")
        if not isinstance(access_token, str) or not access_token:
            raise MalformedResponseError("the token endpoint's answer has no access_token")
        id_token = _wire.optional_str(answer, "id_token")
        claims = None
        if id_token is not None:
            claims = await _jose.verify_id_token(
                id_token,
                self._jwks,
                issuer=self._issuer,
                client_id=self.client_id,
                nonce=nonce,
                now=self._wall_clock(),
                leeway=self._leeway,
            )
        remember(access_token, _wire.optional_str(answer, "refresh_token"), id_token)
        return TokenSet(
            access_token=access_token,
            token_type=_wire.optional_str(answer, "token_type") or "bearer",
            expires_in=_wire.seconds(answer, "expires_in"),
            scope=_wire.optional_str(answer, "scope") or scope,
            refresh_token=_wire.optional_str(answer, "refresh_token"),
            refresh_expires_in=_wire.seconds(answer, "refresh_expires_in"),
            id_token=id_token,
            obtained_at=self.clock.now(),
            id_token_claims=claims,
        )
