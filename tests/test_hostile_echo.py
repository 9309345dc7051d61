"""A server is not trusted with what it echoes: every echo path is scrubbed, on the wire.

Each case is a raw HTTP/1.1 server on a loopback socket that sends back the
secrets of the request it received (the API token from the query, the
access token from the header or query, the document token from the path),
verbatim, percent-encoded or in base64, into the reason phrase, a header,
the content type, the body, or a malformed status line, header line or chunk
header that h11 quotes in its own error.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import traceback
import urllib.parse
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from idme_passback import (
    APIStatusError,
    NotAnImageError,
    NotFoundError,
    OAuthClient,
    PassbackClient,
    PassbackConnectionError,
    PassbackError,
    RateLimiter,
    ServerError,
)
from idme_passback.cli import run
from idme_passback.cli._context import Context

from ._hostile import Request, hostile_server, response
from ._leaks import all_logs, assert_no_leak, exposed

pytestmark = pytest.mark.anyio

API_TOKEN = "5550123-abcd-4ef0-9123-456789abcdef"
ACCESS_TOKEN = "t0k3nacc3ss-0f-th3-us3r-4ft3r-l0g1n"
FRONT = "d9ec9c13-f3e6-4b2e-a34f-e3f45b21206f"
BACK = "fb4ad373-45a6-4a64-bb3c-43e0c59d1ab5"
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00" + bytes(200)

ENCODINGS: dict[str, Callable[[str], str]] = {
    "verbatim": lambda s: s,
    "percent": lambda s: "".join(f"%{b:02X}" for b in s.encode()),
    "percent-lower": lambda s: urllib.parse.quote(s, safe="").lower().replace("-", "%2d"),
    "base64": lambda s: base64.b64encode(s.encode()).decode(),
    "base64+1": lambda s: base64.b64encode(b"x" + s.encode()).decode(),
    "base64+2": lambda s: base64.b64encode(b"xy" + s.encode()).decode(),
    "base64url+1": lambda s: base64.urlsafe_b64encode(b"?" + s.encode()).decode(),
}


def echo(request: Request, encode: Callable[[str], str] = ENCODINGS["verbatim"]) -> str:
    return " ".join(encode(s) for s in request.secrets)


async def failure_of(
    base_url: str, call: str = "document", **options: object
) -> tuple[BaseException, str]:
    """Make one call that fails; return its error and every log line of it."""
    with all_logs() as logs:
        async with PassbackClient(API_TOKEN, base_url=base_url, max_retries=0, **options) as c:  # type: ignore[arg-type]
            calls = {
                "attributes": lambda: c.get_attributes(ACCESS_TOKEN),
                "refresh": lambda: c.refresh_document_token(FRONT),
                "document": lambda: c.get_document(FRONT),
            }
            with pytest.raises(PassbackError) as caught:
                await calls[call]()
        try:
            raise caught.value
        except PassbackError:
            logging.getLogger("an_application").exception("it failed")
    return caught.value, logs.text


# -- the reason phrase ----------------------------------------------------------------


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
async def test_a_reason_phrase_echo_reaches_no_message_and_no_log_line(encoding: str) -> None:
    def answer(request: Request) -> bytes:
        phrase = "Unavailable " + echo(request, ENCODINGS[encoding])
        return response(503, b"down", reason=phrase.encode())

    with hostile_server(answer) as server:
        error, logs = await failure_of(server.base_url)
    assert isinstance(error, ServerError)
    # httpx's own INFO line was there, and clean.
    [line] = [line for line in logs.splitlines() if "HTTP Request: POST" in line]
    assert "503 Unavailable" in line
    assert "[REDACTED]" in line
    assert_no_leak(exposed(error) + logs, [API_TOKEN, FRONT], "the error or the logs")


async def test_the_attributes_call_scrubs_the_access_token_from_a_reason_phrase() -> None:
    def answer(request: Request) -> bytes:
        return response(401, b"", reason=("Refused " + echo(request)).encode())

    for mode in ("header", "query"):
        with hostile_server(answer) as server:
            error, logs = await failure_of(server.base_url, "attributes", access_token_in=mode)
        assert isinstance(error, APIStatusError)
        assert error.status_code == 401
        assert_no_leak(exposed(error) + logs, [API_TOKEN, ACCESS_TOKEN], f"{mode} mode")


# -- content types and non-image bodies ----------------------------------------------


@pytest.mark.parametrize("encoding", ["verbatim", "percent", "base64+1"])
async def test_a_content_type_and_body_echo_stay_out_of_not_an_image(encoding: str) -> None:
    def answer(request: Request) -> bytes:
        echoed = echo(request, ENCODINGS[encoding])
        return response(
            200,
            # The body begins with the echo: its first bytes are never quoted.
            echoed.encode() + b" <html>not an image</html>",
            headers={"Content-Type": f"text/html; charset={echoed}"},
        )

    with hostile_server(answer) as server:
        error, logs = await failure_of(server.base_url)
    assert isinstance(error, NotAnImageError)
    assert error.content_type is not None
    assert error.content_type.startswith("text/html; charset=")
    assert "[REDACTED]" in error.content_type
    assert "no known image signature" in str(error)
    assert API_TOKEN[:8] not in exposed(error)  # not even the body's first bytes
    assert_no_leak(exposed(error) + logs, [API_TOKEN, FRONT], "NotAnImageError")


async def test_an_images_content_type_is_scrubbed_too() -> None:
    def answer(request: Request) -> bytes:
        return response(200, JPEG, headers={"Content-Type": f"image/jpeg; x={echo(request)}"})

    with hostile_server(answer) as server:
        async with PassbackClient(API_TOKEN, base_url=server.base_url) as client:
            image = await client.get_document(FRONT)
    assert image.content == JPEG
    assert image.content_type == "image/jpeg; x=[REDACTED] [REDACTED]"
    assert_no_leak(repr(image) + str(image.content_type), [API_TOKEN, FRONT], "the image")


# -- malformed answers h11 quotes in its own errors -------------------------------------


def malformed(part: str, secret: bytes) -> bytes:
    if part == "status line":
        return b"HTTP/1.1 20" + secret + b"\r\nContent-Length: 0\r\n\r\n"
    if part == "header line":
        return b"HTTP/1.1 200 OK\r\nX-Echo" + secret + b"\r\nContent-Length: 0\r\n\r\n"
    if part == "header name":
        return b"HTTP/1.1 200 OK\r\nX(" + secret + b": 1\r\nContent-Length: 0\r\n\r\n"
    assert part == "chunk header"
    return b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nTransfer-Encoding: chunked\r\n\r\n" + (
        secret + b"\r\n"
    )


@pytest.mark.parametrize("call", ["document", "attributes"])
@pytest.mark.parametrize("part", ["status line", "header line", "header name", "chunk header"])
async def test_a_malformed_answer_keeps_its_type_and_chains_nothing(part: str, call: str) -> None:
    def answer(request: Request) -> bytes:
        return malformed(part, echo(request).replace(" ", "").encode())

    with hostile_server(answer) as server:
        error, logs = await failure_of(server.base_url, call, access_token_in="query")
    assert isinstance(error, PassbackConnectionError)
    assert "RemoteProtocolError" in str(error)  # the type is kept, in a scrubbed message
    assert error.__cause__ is None
    assert error.__context__ is None
    printed = "".join(traceback.format_exception(error))
    assert "[REDACTED]" in printed
    assert_no_leak(exposed(error) + logs, [API_TOKEN, FRONT, ACCESS_TOKEN], part)


# -- excerpts --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pad", "counts"),
    # Whitespace and unprintable padding collapses, bringing the token to the excerpt's start.
    [("\u3000", range(330, 356)), (" ", range(990, 1070, 3)), ("\u0085", range(495, 530))],
)
async def test_an_excerpt_never_keeps_part_of_a_secret_cut_at_its_end(
    pad: str, counts: range
) -> None:
    padding = iter(counts)

    def answer(request: Request) -> bytes:
        body = (pad * next(padding) + API_TOKEN + " trailing words " * 200).encode()
        return response(404, body)

    limiter = RateLimiter(limit=1000, period=1.0)  # one document, asked many times
    with hostile_server(answer) as server:
        async with PassbackClient(
            API_TOKEN, base_url=server.base_url, max_retries=0, limiter=limiter
        ) as c:
            excerpts = []
            for _ in counts:
                with pytest.raises(NotFoundError) as caught:
                    await c.get_document(FRONT)
                excerpts.append(caught.value.body_excerpt)
    # Not one excerpt keeps so much as eight characters of the token.
    pieces = [API_TOKEN[i : i + 8] for i in range(len(API_TOKEN) - 7)]
    assert not [e for e in excerpts if any(p in e for p in pieces)]


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
async def test_an_error_body_echo_is_scrubbed_in_every_encoding(encoding: str) -> None:
    def answer(request: Request) -> bytes:
        echoed = echo(request, ENCODINGS[encoding])
        body = json.dumps({"error": "invalid_request", "error_description": f"bad {echoed}"})
        return response(400, f"{body}".encode(), headers={"Content-Type": "application/json"})

    with hostile_server(answer) as server:
        error, logs = await failure_of(server.base_url)
    assert isinstance(error, APIStatusError)
    assert error.error == "invalid_request"
    assert error.error_description is not None
    assert "[REDACTED]" in error.error_description
    assert_no_leak(exposed(error) + logs, [API_TOKEN, FRONT], "the error body")


# -- httpcore's own log lines ------------------------------------------------------------


async def test_httpcore_debug_lines_print_no_echoed_header() -> None:
    def answer(request: Request) -> bytes:
        return response(
            404,
            b"",
            headers={
                "Location": f"{server.base_url}elsewhere?token={API_TOKEN}",
                "X-Echo": echo(request),
                "X-Echo-B64": base64.b64encode(echo(request).encode()).decode(),
            },
        )

    with hostile_server(answer) as server:
        error, logs = await failure_of(server.base_url)
    assert "httpcore.http11 DEBUG receive_response_headers.complete" in logs
    assert_no_leak(logs + exposed(error), [API_TOKEN, FRONT], "httpcore's log lines")


# -- redirects ---------------------------------------------------------------------------


async def test_a_redirect_is_never_followed_whatever_the_callers_client_says() -> None:
    def elsewhere(request: Request) -> bytes:
        return response(200, JPEG, headers={"Content-Type": "image/jpeg"})

    with hostile_server(elsewhere, host="127.0.0.2") as other:

        def redirect(request: Request) -> bytes:
            return response(
                307, b"", headers={"Location": other.base_url.rstrip("/") + request.target}
            )

        with hostile_server(redirect) as server:
            async with httpx.AsyncClient(follow_redirects=True) as http:
                client = PassbackClient(API_TOKEN, base_url=server.base_url, http_client=http)
                with pytest.raises(APIStatusError) as caught:
                    await client.get_document(FRONT, max_retries=0)
                with pytest.raises(APIStatusError):
                    await client.refresh_document_token(FRONT, max_retries=0)
    assert caught.value.status_code == 307
    assert len(server.requests) == 2
    assert other.requests == []  # the other host never saw the API token


# -- the command line ----------------------------------------------------------------------


async def test_the_cli_manifest_and_error_lines_hold_no_secret_a_server_echoes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first_token: list[str] = []

    def answer(request: Request) -> bytes:
        token = request.document_token
        if not first_token:
            first_token.append(token)
            return response(200, JPEG, headers={"Content-Type": "image/jpeg"})
        # The second item's answer echoes the API token (in base64) and the *first*
        # item's token, which the library did not send with this request.
        echoed = base64.b64encode(b"k=" + API_TOKEN.encode()).decode()
        return response(404, f"{echoed} {first_token[0]}".encode(), reason=first_token[0].encode())

    tokens = tmp_path / "tokens.txt"
    tokens.write_text(f"{FRONT}\n{BACK}\n")
    out = tmp_path / "out"
    stdout, stderr = io.StringIO(), io.StringIO()
    with hostile_server(answer) as server:
        monkeypatch.setenv("IDME_API_TOKEN", API_TOKEN)
        monkeypatch.setenv("IDME_PASSBACK_BASE_URL", server.base_url)
        code = await run(
            ["download-many", str(tokens), "--out", str(out), "--concurrency", "1"],
            stdout=stdout,
            stderr=stderr,
        )
    assert code == 3
    manifest = (out / "manifest.jsonl").read_text()
    records = [json.loads(line) for line in manifest.splitlines()]
    assert [r["status"] for r in sorted(records, key=lambda r: r["index"])] == ["ok", "error"]
    assert "[REDACTED]" in manifest
    assert_no_leak(
        manifest + stdout.getvalue() + stderr.getvalue(), [API_TOKEN, FRONT, BACK], "the CLI"
    )
    os.environ.pop("IDME_API_TOKEN", None)


def test_the_cli_context_repr_hides_its_secrets() -> None:
    ctx = Context(io.StringIO(), io.StringIO(), io.StringIO())
    ctx.keep_secret(API_TOKEN)
    ctx.keep_secret(FRONT)
    assert API_TOKEN not in repr(ctx)
    assert FRONT not in repr(ctx)
    assert "<2 hidden>" in repr(ctx)
    assert ctx.safe(f"x {base64.b64encode(FRONT.encode()).decode()}") == "x [REDACTED]"


# -- the OAuth client -----------------------------------------------------------------------


async def test_the_token_endpoints_reason_phrase_is_scrubbed() -> None:
    code = "c0d3-th4t-th3-us3r-br0ught-b4ck-1234"

    def answer(request: Request) -> bytes:
        return response(400, b"{}", reason=("Bad " + code).encode())

    with hostile_server(answer) as server:
        async with OAuthClient(
            "client-id",
            client_secret="s3cr3t-0f-th3-c0nsum3r-4pp-5678",
            redirect_uri="https://app.example/callback",
            base_url=server.base_url,
        ) as oauth:
            request = oauth.authorization_request(scopes=["login"])
            with pytest.raises(PassbackError) as caught:
                await oauth.exchange_code(code, request)
    assert_no_leak(exposed(caught.value), [code], "the OAuth error")
