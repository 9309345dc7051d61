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

The authorize and token endpoints, and the codes and tokens they issue, live
in ``_idme_oauth``; the keys in ``_idme_keys``.
"""

from __future__ import annotations

import copy
import json
import secrets
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal, TypeAlias
from urllib.parse import parse_qs

import attrs

from ..clock import Clock, MonotonicClock
from ._idme_keys import FakeKeys
from ._idme_oauth import IdMeAnswer, OAuthEndpoints, json_answer

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
        self._oauth = OAuthEndpoints(self)
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
        return self._oauth.check_access_token(token)

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
            answer = json_answer(
                405, {"error": "method_not_allowed", "error_description": f"Use {allowed}."}
            )
            return endpoint, attrs.evolve(answer, headers=(("allow", allowed),))
        if endpoint == "authorize":
            return endpoint, self._oauth.authorize({k: v[0] for k, v in query.items()})
        if endpoint == "token":
            form = {k: v[0] for k, v in parse_qs(body.decode("latin-1")).items()}
            return endpoint, self._oauth.token(form, headers.get("authorization", ""), base)
        if endpoint == "jwks":
            return endpoint, json_answer(200, self.keys.jwks())
        return endpoint, json_answer(200, self.discovery(base))

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
