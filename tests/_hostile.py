"""A raw HTTP/1.1 server on a loopback socket, for answers no ASGI server would send.

Malformed status lines, header lines and chunk headers, arbitrary reason
phrases, echoes of whatever the request carried: the test scripts the exact
bytes. One connection at a time, each closed after its answer.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import urllib.parse
from collections.abc import Callable, Iterator

import attrs


@attrs.frozen
class Request:
    """What the server read of one request."""

    method: str
    target: str
    headers: dict[str, str]

    @property
    def path(self) -> str:
        return urllib.parse.urlsplit(self.target).path

    @property
    def query(self) -> dict[str, str]:
        return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.target).query))

    @property
    def document_token(self) -> str:
        """The last path segment (the document token of a document or refresh call)."""
        return self.path.rsplit("/", 1)[-1]

    @property
    def secrets(self) -> list[str]:
        """Every secret the request carried: what a hostile server can echo."""
        found = [v for k, v in self.query.items() if k in ("token", "access_token")]
        bearer = self.headers.get("authorization", "")
        if bearer.lower().startswith("bearer "):
            found.append(bearer[7:])
        if "/documents/" in self.path:
            found.append(self.document_token)
        return found


Answer = Callable[[Request], bytes]


def response(
    status: int | str,
    body: bytes = b"",
    *,
    reason: bytes = b"",
    headers: dict[str, str | bytes] | None = None,
) -> bytes:
    """Return an HTTP/1.1 response's bytes (``Connection: close`` and a Content-Length added)."""
    lines = [b"HTTP/1.1 " + str(status).encode() + (b" " + reason if reason else b"")]
    merged: dict[str, str | bytes] = {"Content-Length": str(len(body)), "Connection": "close"}
    merged.update(headers or {})
    for name, value in merged.items():
        lines.append(
            name.encode() + b": " + (value if isinstance(value, bytes) else value.encode())
        )
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def _read_request(conn: socket.socket) -> Request | None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        data += chunk
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    request_line, *header_lines = head.split("\r\n")
    method, target, _ = request_line.split(" ", 2)
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Request(method, target, headers)


@attrs.define
class Hostile:
    """A running server: its base URL, and the requests it received."""

    base_url: str
    requests: list[Request] = attrs.Factory(list)


@contextlib.contextmanager
def hostile_server(answer: Answer, *, host: str = "127.0.0.1") -> Iterator[Hostile]:
    """Serve ``answer`` on ``host`` (any loopback address) in a thread."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, 0))
    listener.listen(16)
    listener.settimeout(0.05)
    server = Hostile(f"http://{host}:{listener.getsockname()[1]}/")
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                try:
                    request = _read_request(conn)
                    if request is None:
                        continue
                    server.requests.append(request)
                    conn.sendall(answer(request))
                    conn.shutdown(socket.SHUT_WR)
                except OSError:
                    continue

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        stop.set()
        thread.join(timeout=5)
        listener.close()
