"""The ``serve-fake`` command: the fake ID.me on a loopback port, for trying things out.

It serves the Passback API and the OAuth/OpenID Connect side (authorize,
token, discovery, JWKS), so a backend can run its whole login against it.
"""

from __future__ import annotations

import argparse
import socket
import ssl
from typing import Any

from ._commands import BASE_URL_ENV
from ._context import Context
from ._exitcodes import ExitCode, UsageError
from ._secrets import ACCESS_TOKEN_ENV, API_TOKEN_ENV

__all__ = ["CLIENT_ID_ENV", "CLIENT_SECRET_ENV", "serve_fake"]

#: Where a backend (the web example) reads its OAuth client credentials.
CLIENT_ID_ENV = "IDME_CLIENT_ID"
CLIENT_SECRET_ENV = "IDME_CLIENT_SECRET"


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        made = socket.create_server((host, port), family=family)
    except (OSError, OverflowError, ValueError) as exc:
        detail = getattr(exc, "strerror", None) or exc
        raise UsageError(f"cannot listen on {host}:{port}: {detail}") from None
    # The same socket, told it is TCP: asyncio turns Nagle's algorithm off only on
    # accepted sockets whose protocol says so, and with it on, every answer (its
    # headers and body are two writes) waits ~40 ms for the client's delayed ACK.
    sock = socket.socket(made.family, made.type, socket.IPPROTO_TCP, fileno=made.detach())
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _tls(args: argparse.Namespace) -> dict[str, Any]:
    """uvicorn's TLS settings, once the certificate and key are known to load."""
    if args.certfile is None and args.keyfile is None:
        return {}
    if args.certfile is None or args.keyfile is None:
        raise UsageError("--certfile and --keyfile go together")
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
            args.certfile, args.keyfile
        )
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(f"cannot use that certificate and key: {exc}") from None
    return {"ssl_certfile": args.certfile, "ssl_keyfile": args.keyfile}


def _fake(args: argparse.Namespace, cls: Any) -> Any:
    try:
        return cls(
            limit=args.limit,
            period=args.period,
            algorithm=args.algorithm,
            latency=args.latency,
            error_rate=args.error_rate,
            cut_body_rate=args.cut_body_rate,
            non_image_rate=args.non_image_rate,
            throttle_rate=args.throttle_rate,
            retry_after=args.retry_after,
            seed=args.seed,
            image_format=args.image_format,
            original_size=args.original_size,
            single_use_access_tokens=args.single_use_access_tokens,
        )
    except (TypeError, ValueError) as exc:
        raise UsageError(f"the fake cannot be set up so: {exc}") from None


async def serve_fake(args: argparse.Namespace, ctx: Context) -> int:
    """Serve a :class:`FakePassbackServer` with uvicorn until interrupted; print how to use it."""
    try:
        import uvicorn  # noqa: PLC0415 - an optional extra

        from ..testing import FakePassbackServer  # noqa: PLC0415 - needs the fake extra
    except ImportError:
        raise UsageError("serve-fake needs uvicorn: pip install 'idme-passback[fake]'") from None

    fake = _fake(args, FakePassbackServer)
    tls = _tls(args)
    # Bound here rather than by uvicorn: the real port of --port 0 is known before serving.
    sock = _listen(args.host, args.port)
    port = sock.getsockname()[1]
    host = f"[{args.host}]" if ":" in args.host else args.host
    url = f"{'https' if tls else 'http'}://{host}:{port}/"
    # No access log: it would print every request's query string, API token included.
    config = uvicorn.Config(fake, log_level="warning", access_log=False, lifespan="off", **tls)
    server = uvicorn.Server(config)

    # The socket already listens: a client that connects now waits in the backlog.
    ctx.out(f"Fake Passback API at {url} (Ctrl+C to stop)")
    ctx.out(
        f"It allows {fake.limit} document requests per {fake.period:g} s per document "
        f"({fake.algorithm}). Its credentials are fake, so here they are:"
    )
    ctx.out(f"  export {BASE_URL_ENV}={url}")
    ctx.out(f"  export {API_TOKEN_ENV}={fake.api_token}")
    ctx.out(f"  export {ACCESS_TOKEN_ENV}={fake.access_token}")
    ctx.out(f"  export {CLIENT_ID_ENV}={fake.client_id}")
    ctx.out(f"  export {CLIENT_SECRET_ENV}={fake.client_secret}")
    ctx.out(
        f"Login: {url}oauth/authorize consents at once and redirects to any https:// (or "
        f"loopback http://) redirect_uri; keys at {url}oidc/.well-known/jwks."
    )
    try:
        await server.serve(sockets=[sock])
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()
    ctx.note("idme-passback: the fake server stopped")
    return ExitCode.OK
