"""A hostile server on a real loopback socket: trickles, bombs, huge bodies, lying headers.

Every case here was reproduced against the client before it held (issue 13).
The servers are small: raw sockets in threads (a script of delays and
bytes, for what no HTTP server would send) or ASGI apps under uvicorn
(``tests/_loopback.serve``). Big bodies are generated lazily, a chunk at a
time; nothing here holds more than a few MiB. Real waits are short: the
trickling servers send a byte every half second against a 0.6 s deadline,
so each of those tests takes well under a second.
"""

from __future__ import annotations

import contextlib
import gzip
import inspect
import json
import pickle
import socket
import threading
import time
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from email.utils import formatdate
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

import idme_passback
from idme_passback import (
    BodyTooLargeError,
    Bounds,
    ConfigurationError,
    ContentEncodingError,
    DeadlineExceededError,
    DecompressionBombError,
    MalformedResponseError,
    PassbackClient,
    PassbackError,
    RateLimiter,
    RateLimitError,
    errors,
)
from idme_passback.retry import MAX_RETRY_AFTER, parse_retry_after
from idme_passback.testing import FakeClock, FakePassbackServer

from ._loopback import serve
from .conftest import ACCESS_TOKEN, API_TOKEN, FRONT, JPEG, REFRESHED, ClientOf

pytestmark = pytest.mark.anyio

MiB = 1024 * 1024
#: The deadline of the trickle tests, and how late past it a call may end.
DEADLINE = 0.6
SLACK = 0.3
#: One byte every this many seconds: under the per-read timeout the deadline
#: leaves (so no read ever times out), yet a body of any size never ends.
TRICKLE = 0.5


# -- a raw hostile server -------------------------------------------------------------------

#: A script: (seconds to wait, bytes to send) steps, produced lazily.
Script = Iterable[tuple[float, bytes]]


class RawServer:
    """An HTTP/1.1 server that answers every request with ``respond(head)``'s script.

    ``head`` is the request's head (request line and headers, as bytes);
    ``heads`` keeps every one received.
    """

    def __init__(self, respond: Callable[[bytes], Script]) -> None:
        self._respond = respond
        self._stop = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/"
        self.heads: list[bytes] = []
        self._threads: list[threading.Thread] = []

    def __enter__(self) -> RawServer:
        thread = threading.Thread(target=self._accept, daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
        self._listener.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            head = b""
            try:
                while b"\r\n\r\n" not in head:
                    data = conn.recv(65536)
                    if not data:
                        return
                    head += data
                self.heads.append(head.split(b"\r\n\r\n", 1)[0])
                for delay, data in self._respond(head):
                    if delay and self._stop.wait(delay):
                        return
                    conn.sendall(data)
            except OSError:
                return  # the client hung up: what it is meant to do


def trickle(data: bytes, every: float = TRICKLE) -> Script:
    """``data`` a byte at a time, ``every`` seconds apart."""
    for byte in data:
        yield every, bytes([byte])


def head(status: str, *headers: str) -> bytes:
    return ("\r\n".join([f"HTTP/1.1 {status}", *headers]) + "\r\n\r\n").encode()


@contextlib.contextmanager
def raw(respond: Callable[[bytes], Script]) -> Iterator[RawServer]:
    with RawServer(respond) as server:
        yield server


def client_for(url: str, **options: Any) -> PassbackClient:
    return PassbackClient(API_TOKEN, base_url=url, **options)


@contextlib.asynccontextmanager
async def timed(limit: float) -> AsyncIterator[Callable[[], float]]:
    """Time the block; fail it (instead of hanging) if it runs past ``limit`` + 3 s."""
    start = time.monotonic()
    with anyio.fail_after(limit + 3):
        yield lambda: time.monotonic() - start


# -- one deadline for every wait, over a real socket ------------------------------------------


def _trickled_headers(_: bytes) -> Script:
    yield from trickle(head("200 OK", "Content-Type: image/jpeg", "Content-Length: 220"), 0.1)


def _trickled_500(_: bytes) -> Script:
    yield 0.0, head("500 Internal Server Error", "Content-Type: text/html", "Content-Length: 4000")
    yield from trickle(b"<html>" + b"x" * 3994)


def _trickled_json(_: bytes) -> Script:
    yield 0.0, head("200 OK", "Content-Type: application/json", "Content-Length: 4000")
    yield from trickle(b'{"document_token": "' + b"a" * 3978 + b'"}')


def _trickled_image(_: bytes) -> Script:
    yield 0.0, head("200 OK", "Content-Type: image/jpeg", "Content-Length: 100000")
    yield 0.0, JPEG[:32]
    yield from trickle(bytes(100000 - 32))


async def _document(client: PassbackClient) -> object:
    return await client.get_document(FRONT, deadline=DEADLINE)


async def _download(client: PassbackClient, folder: Path) -> object:
    return await client.download_document(FRONT, folder / "front.jpg", deadline=DEADLINE)


async def _attributes(client: PassbackClient) -> object:
    return await client.get_attributes(ACCESS_TOKEN, deadline=DEADLINE)


async def _refresh(client: PassbackClient) -> object:
    return await client.refresh_document_token(FRONT, deadline=DEADLINE)


@pytest.mark.parametrize(
    ("script", "call"),
    [
        pytest.param(_trickled_headers, _document, id="headers-a-byte-at-a-time"),
        pytest.param(_trickled_500, _refresh, id="a-500-body"),
        pytest.param(_trickled_json, _attributes, id="attributes-json"),
        pytest.param(_trickled_json, _refresh, id="refresh-json"),
        pytest.param(_trickled_image, _document, id="image-body"),
    ],
)
async def test_a_trickling_server_cannot_outlast_the_deadline(
    script: Callable[[bytes], Script], call: Callable[[PassbackClient], Any]
) -> None:
    with raw(script) as server:
        async with client_for(server.url) as client, timed(DEADLINE) as elapsed:
            with pytest.raises(DeadlineExceededError) as caught:
                await call(client)
    assert elapsed() < DEADLINE + SLACK
    assert caught.value.sent


async def test_a_trickled_image_leaves_no_file_when_the_deadline_passes(tmp_path: Path) -> None:
    with raw(_trickled_image) as server:
        async with client_for(server.url) as client, timed(DEADLINE) as elapsed:
            with pytest.raises(DeadlineExceededError):
                await _download(client, tmp_path)
    assert elapsed() < DEADLINE + SLACK
    assert list(tmp_path.iterdir()) == []


async def test_a_trickled_image_in_a_bulk_job_fails_at_the_clients_deadline(
    tmp_path: Path,
) -> None:
    # Bulk items have no deadline for their turn, but each attempt has the client's.
    with raw(_trickled_image) as server:
        client = client_for(server.url, deadline=DEADLINE, max_retries=0)
        async with (
            client,
            timed(DEADLINE) as elapsed,
            client.download_many([FRONT], tmp_path) as job,
        ):
            [result] = [result async for result in job]
    assert isinstance(result.error, DeadlineExceededError)
    assert elapsed() < DEADLINE + SLACK
    assert list(tmp_path.iterdir()) == []


async def test_a_token_that_leaves_no_time_for_the_request_is_not_spent(
    clock: FakeClock, client_of: ClientOf
) -> None:
    # The document's budget is spent; the limiter could grant again at 60 s, but
    # a deadline of 60.5 s would leave half a second, less than min_send_time.
    fake = FakePassbackServer(clock=clock)
    token = fake.issue_document()
    async with client_of(fake) as client:
        await client.get_document(token)
        await client.get_document(token)
        with pytest.raises(DeadlineExceededError) as caught:
            await client.get_document(token, deadline=60.5)
        assert not caught.value.sent
        assert fake.count(endpoint="document") == 2
        assert clock.now() == 0.0  # refused at once: the limiter knew the wait
        # The document kept its request for a call with time to use it.
        await clock.advance(60.0)
        await client.get_document(token, deadline=5.0)
    assert fake.count(endpoint="document", status=200) == 3


async def test_a_grant_that_came_too_late_is_given_back_unsent(
    clock: FakeClock, client_of: ClientOf
) -> None:
    # A limiter that takes its time (a slow store) grants with 0.2 s left of 1 s.
    fake = FakePassbackServer(clock=clock)
    token = fake.issue_document()

    class SlowLimiter(RateLimiter):
        @contextlib.asynccontextmanager
        async def acquire(  # type: ignore[override]
            self, token: str, *, timeout: float | None = None
        ) -> AsyncIterator[Any]:
            await clock.sleep(0.8)
            async with super().acquire(token, timeout=timeout) as permit:
                yield permit

    limiter = SlowLimiter(clock=clock)
    async with (
        client_of(fake, limiter=limiter, bounds=Bounds(min_send_time=0.5)) as client,
        anyio.create_task_group() as group,
    ):
        outcome: list[BaseException] = []

        async def call() -> None:
            try:
                await client.get_document(token, deadline=1.0)
            except DeadlineExceededError as exc:
                outcome.append(exc)

        group.start_soon(call)
        await clock.run_until_idle()
    assert len(outcome) == 1
    assert fake.count(endpoint="document") == 0


@pytest.mark.parametrize("deadline", [0, -5, float("nan"), float("inf"), True, "1"])
async def test_a_deadline_that_is_not_positive_and_finite_sends_nothing(
    deadline: Any, tmp_path: Path, client_of: ClientOf
) -> None:
    fake = FakePassbackServer()
    token = fake.issue_document()
    async with client_of(fake, limiter=None) as client:  # the default limiter, on real time
        for call in (
            lambda: client.get_document(token, deadline=deadline),
            lambda: client.download_document(token, tmp_path / "x.jpg", deadline=deadline),
            lambda: client.refresh_document_token(token, deadline=deadline),
            lambda: client.get_attributes(fake.access_token, deadline=deadline),
        ):
            with pytest.raises(ConfigurationError, match="deadline"):
                await call()
    assert fake.requests == []
    assert list(tmp_path.iterdir()) == []


# -- bounded bodies -----------------------------------------------------------------------------


def _chunks_of(total: int, first: bytes = b"", chunk: int = MiB) -> Iterator[bytes]:
    """``first``, then zeros up to ``total`` bytes, a chunk at a time."""
    yield first
    sent = len(first)
    while sent < total:
        size = min(chunk, total - sent)
        yield _ZEROS if size == MiB else bytes(size)
        sent += size


_ZEROS = bytes(MiB)


def _bomb_parts(wrap: str) -> tuple[bytes, bytes]:
    """A compressed stream's start, and the bytes that add 1 MiB of zeros to it, again and again."""
    deflate = zlib.compressobj(9, zlib.DEFLATED, 31 if wrap == "gzip" else 15)
    start = deflate.compress(JPEG[:32]) + deflate.flush(zlib.Z_SYNC_FLUSH)
    blocks = [deflate.compress(_ZEROS) + deflate.flush(zlib.Z_SYNC_FLUSH) for _ in range(3)]
    assert blocks[1] == blocks[2]  # the steady state: the same bytes for every MiB
    return start + blocks[0], blocks[1]


_BOMBS = {wrap: _bomb_parts(wrap) for wrap in ("gzip", "deflate")}


def _bomb(total: int, *, wrap: str = "gzip") -> Iterator[bytes]:
    """A compressed stream of ``total`` zero bytes, sent lazily (about 1 KiB per MiB).

    It never ends properly: the client must give up long before its end.
    """
    start, block = _BOMBS[wrap]
    yield start
    for _ in range(total // MiB - 1):
        yield block


def asgi(
    body: Callable[[], Iterable[bytes]], *headers: tuple[str, str], status: int = 200
) -> Callable[..., Any]:
    """An ASGI app streaming ``body()`` under ``headers``."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        gone = anyio.Event()

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()

        async with anyio.create_task_group() as group:
            group.start_soon(watch)
            await send(
                {
                    "type": "http.response.start",
                    "status": status,
                    "headers": [(k.encode(), v.encode()) for k, v in headers],
                }
            )
            try:
                for part in body():
                    if gone.is_set():
                        break  # the client hung up: stop making the rest
                    await send({"type": "http.response.body", "body": part, "more_body": True})
                else:
                    await send({"type": "http.response.body", "body": b""})
            except (OSError, RuntimeError):
                pass
            group.cancel_scope.cancel()

    return app


GiB_IMAGE = asgi(lambda: _chunks_of(1024 * MiB, JPEG[:32]), ("content-type", "image/jpeg"))


async def test_a_1_gib_image_stops_at_the_bound_without_holding_it() -> None:
    with serve(GiB_IMAGE) as url:
        async with client_for(url, bounds=Bounds(max_image_bytes=4 * MiB)) as client:
            tracemalloc.start()
            try:
                with pytest.raises(BodyTooLargeError) as caught:
                    await client.get_document(FRONT)
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
    assert caught.value.limit == 4 * MiB
    assert 4 * MiB < caught.value.received <= 4 * MiB + 64 * 1024
    assert peak < 12 * MiB  # the image held up to its bound (x2 to join it), no more


async def test_the_default_image_bound_is_32_mib(tmp_path: Path) -> None:
    with serve(GiB_IMAGE) as url:
        async with client_for(url, max_retries=0) as client:
            with pytest.raises(BodyTooLargeError) as caught:
                await client.download_document(FRONT, tmp_path / "front.jpg")
    assert caught.value.limit == 32 * MiB == Bounds().max_image_bytes
    assert list(tmp_path.iterdir()) == []


async def test_an_announced_length_past_the_bound_is_refused_before_reading(tmp_path: Path) -> None:
    app = asgi(
        lambda: _chunks_of(1024 * MiB, JPEG[:32]),
        ("content-type", "image/jpeg"),
        ("content-length", str(1024 * MiB)),
    )
    with serve(app) as url:
        async with client_for(url, max_retries=0) as client, timed(1.0) as elapsed:
            with pytest.raises(BodyTooLargeError, match="announces"):
                await client.download_document(FRONT, tmp_path / "front.jpg")
    assert elapsed() < 1.0
    assert list(tmp_path.iterdir()) == []


async def test_a_512_mib_attributes_body_stops_at_1_mib() -> None:
    app = asgi(
        lambda: _chunks_of(512 * MiB, b'{"attributes": "'), ("content-type", "application/json")
    )
    with serve(app) as url:
        async with client_for(url) as client:
            with pytest.raises(BodyTooLargeError) as caught:
                await client.get_attributes(ACCESS_TOKEN)
    assert caught.value.limit == MiB == Bounds().max_json_bytes


async def test_a_gzip_bomb_image_is_refused_by_the_ratio_and_leaves_no_file(tmp_path: Path) -> None:
    app = asgi(
        lambda: _bomb(1024 * MiB), ("content-type", "image/jpeg"), ("content-encoding", "gzip")
    )
    with serve(app) as url:
        async with client_for(url, max_retries=0) as client, timed(2.0):
            tracemalloc.start()
            try:
                with pytest.raises(DecompressionBombError) as caught:
                    await client.download_document(FRONT, tmp_path / "front.jpg")
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
    assert caught.value.received <= 2 * MiB  # caught at the 1 MiB floor, not at 32 MiB
    assert peak < 4 * MiB
    assert list(tmp_path.iterdir()) == []


async def test_stacked_encodings_are_refused_before_a_byte_is_decoded(tmp_path: Path) -> None:
    # 2 KiB on the wire that httpx would have turned into 1 GiB in memory.
    inner = b"".join(_bomb(1024 * MiB))
    outer = gzip.compress(inner)
    app = asgi(lambda: [outer], ("content-type", "image/jpeg"), ("content-encoding", "gzip, gzip"))
    with serve(app) as url:
        async with client_for(url, max_retries=0) as client, timed(1.0) as elapsed:
            with pytest.raises(ContentEncodingError, match="stacked") as caught:
                await client.download_document(FRONT, tmp_path / "front.jpg")
    assert elapsed() < 1.0
    assert caught.value.encoding == "gzip, gzip"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("encoding", ["br", "compress", "zstd", "gzip;q=1"])
async def test_an_unknown_encoding_is_refused(encoding: str) -> None:
    app = asgi(lambda: [JPEG], ("content-type", "image/jpeg"), ("content-encoding", encoding))
    with serve(app) as url:
        async with client_for(url, max_retries=0) as client:
            with pytest.raises(ContentEncodingError, match="unknown"):
                await client.get_document(FRONT)


async def test_a_compressed_attributes_bomb_stops_at_the_json_bound() -> None:
    def body() -> Iterator[bytes]:
        yield from _bomb(512 * MiB, wrap="deflate")

    app = asgi(body, ("content-type", "application/json"), ("content-encoding", "deflate"))
    with serve(app) as url:
        async with client_for(url) as client:
            with pytest.raises(BodyTooLargeError):
                await client.get_attributes(ACCESS_TOKEN)


async def test_sixteen_bombs_in_a_bulk_job_stay_within_the_documented_memory(
    tmp_path: Path,
) -> None:
    app = asgi(
        lambda: _bomb(1024 * MiB), ("content-type", "image/jpeg"), ("content-encoding", "gzip")
    )
    fake = FakePassbackServer()
    tokens = [fake.issue_document() for _ in range(16)]
    with serve(app) as url:
        async with client_for(url, max_retries=0) as client:
            tracemalloc.start()
            try:
                async with client.download_many(tokens, tmp_path, concurrency=16) as job:
                    results = [result async for result in job]
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
    assert len(results) == 16
    assert all(isinstance(r.error, DecompressionBombError) for r in results)
    # 16 x (a 64 KiB wire chunk + a 64 KiB decoded chunk + zlib's window), with room.
    assert peak < 16 * MiB
    assert list(tmp_path.iterdir()) == []


async def test_a_compressed_body_within_bounds_is_decoded(tmp_path: Path) -> None:
    payload = {
        "attributes": [{"handle": "document_tokens", "value": {"front": FRONT, "back": None}}],
        "status": [],
    }
    json_app = asgi(
        lambda: [gzip.compress(json.dumps(payload).encode())],
        ("content-type", "application/json"),
        ("content-encoding", "gzip"),
    )
    with serve(json_app) as url:
        async with client_for(url) as client:
            attributes = await client.get_attributes(ACCESS_TOKEN)
    assert attributes.document_tokens.front == FRONT
    image = JPEG * 50
    image_app = asgi(
        lambda: [zlib.compress(image)],
        ("content-type", "image/jpeg"),
        ("content-encoding", "deflate"),
    )
    with serve(image_app) as url:
        async with client_for(url) as client:
            path = await client.download_document(FRONT, tmp_path / "front.jpg")
    assert path.read_bytes() == image


async def test_only_the_encodings_the_client_decodes_are_asked_for() -> None:
    def answer(request: bytes) -> Script:
        line = request.split(b"\r\n", 1)[0]
        body = b'{"document_token": "%s"}' % REFRESHED.encode() if b"refresh" in line else JPEG
        # The raw server closes after each answer, so it says so: httpx 0.27 would
        # otherwise send the second request down the closed connection.
        yield 0.0, head("200 OK", f"Content-Length: {len(body)}", "Connection: close") + body

    with raw(answer) as server:
        async with client_for(server.url, max_retries=0) as client:
            await client.get_document(FRONT)
            await client.refresh_document_token(FRONT)
    document, refresh = (h.lower() for h in server.heads)
    assert b"accept-encoding: identity" in document
    assert b"accept-encoding: gzip, deflate\r\n" in refresh + b"\r\n"


# -- typed errors -------------------------------------------------------------------------------


def _answer_json(body: bytes) -> httpx.MockTransport:
    return httpx.MockTransport(
        lambda request: httpx.Response(
            200, content=body, headers={"content-type": "application/json"}
        )
    )


@pytest.mark.parametrize(
    "body",
    [
        b'{"attributes": ' + b"[" * 100_000 + b"]" * 100_000 + b', "status": []}',
        b'{"attributes": [{"handle": "x", "value": '
        + b"[" * 100_000
        + b"]" * 100_000
        + b'}], "status": []}',
    ],
    ids=["in-the-list", "in-a-value"],
)
async def test_deeply_nested_attributes_are_a_malformed_response(body: bytes) -> None:
    async with PassbackClient(API_TOKEN, transport=_answer_json(body)) as client:
        with pytest.raises(MalformedResponseError, match=r"nested|not JSON"):
            await client.get_attributes(ACCESS_TOKEN)


async def test_a_deeply_nested_refresh_answer_is_a_malformed_response() -> None:
    body = b'{"document_token": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    async with PassbackClient(API_TOKEN, transport=_answer_json(body)) as client:
        with pytest.raises(MalformedResponseError):
            await client.refresh_document_token(FRONT)


@pytest.mark.parametrize("value", ["1e308", "9" * 60, "1e30"])
def test_a_huge_retry_after_is_capped_at_a_day(value: str) -> None:
    assert parse_retry_after(value) == MAX_RETRY_AFTER == 86_400.0


async def test_a_huge_retry_after_is_a_rate_limit_error_with_a_finite_wait() -> None:
    clock = FakeClock()
    transport = httpx.MockTransport(
        lambda request: httpx.Response(429, headers={"retry-after": "1e308"})
    )
    limiter = RateLimiter(clock=clock)
    async with PassbackClient(API_TOKEN, transport=transport, limiter=limiter) as client:
        with pytest.raises(RateLimitError) as caught:
            await client.get_document(FRONT)
        assert caught.value.retry_after == MAX_RETRY_AFTER
        # The document is held for that long, and no longer.
        with pytest.raises(DeadlineExceededError):
            await client.get_document(FRONT, deadline=MAX_RETRY_AFTER - 10)


async def test_an_http_date_retry_after_is_read_against_the_answers_date() -> None:
    # Our clock runs 5 minutes ahead of the server's: its "30 s from now" is,
    # by our clock, in the past. Read against its own Date, it is 30 s.
    server_now = time.time() - 300

    def answer(_: bytes) -> Script:
        yield (
            0.0,
            head(
                "429 Too Many Requests",
                f"Date: {formatdate(server_now, usegmt=True)}",
                f"Retry-After: {formatdate(server_now + 30, usegmt=True)}",
                "Content-Length: 0",
            ),
        )

    with raw(answer) as server:
        async with client_for(server.url, max_retries=0) as client:
            with pytest.raises(RateLimitError) as caught:
                await client.get_document(FRONT)
    assert caught.value.retry_after == pytest.approx(30, abs=1)


def _all_errors() -> list[type[PassbackError]]:
    """Every exception class of the library (not those a test module may define)."""
    found: list[type[PassbackError]] = []
    pending: list[type[PassbackError]] = [PassbackError]
    while pending:
        cls = pending.pop()
        if cls.__module__.startswith("idme_passback"):
            found.append(cls)
        pending.extend(cls.__subclasses__())
    return sorted(found, key=lambda cls: cls.__name__)


_SAMPLES: dict[str, Any] = {
    "status_code": 418,
    "body_excerpt": "a scrubbed excerpt",
    "error": "invalid_grant",
    "error_description": "spent",
    "retry_after": 12.5,
    "sent": False,
    "content_type": "text/html",
    "expected": 100,
    "received": 40,
    "limit": 64,
    "encoding": "gzip, gzip",
}


def _sample(cls: type[PassbackError]) -> PassbackError:
    try:
        parameters = inspect.signature(cls).parameters
    except ValueError:  # no __init__ of its own: a message is all it takes
        parameters = {}  # type: ignore[assignment]
    keywords = {
        name: _SAMPLES[name]
        for name, parameter in parameters.items()
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY
    }
    return cls(f"a {cls.__name__}", **keywords)


def test_every_error_class_is_reachable_from_the_package() -> None:
    public = [getattr(idme_passback, name) for name in idme_passback.__all__]
    assert all(cls in public for cls in _all_errors())
    assert set(_all_errors()) == {getattr(errors, name) for name in errors.__all__}


@pytest.mark.parametrize("cls", _all_errors(), ids=lambda cls: cls.__name__)
def test_every_error_survives_a_pickle_round_trip(cls: type[PassbackError]) -> None:
    error = _sample(cls)
    if isinstance(error, OSError):
        error.errno = 28
    error.__notes__ = ["with a note"]
    again = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own bytes
    assert type(again) is cls
    assert str(again) == str(error)
    assert again.args == error.args
    assert vars(again) == vars(error)
    if isinstance(error, OSError):
        assert isinstance(again, OSError)
        assert again.errno == 28
