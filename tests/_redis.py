"""Real redis-server processes for tests: single nodes, a 3-master cluster, faults.

Every process here is started and stopped by the test that needs it (or by a
session fixture): nothing is left behind. Faults are real: ``kill`` sends
SIGKILL, ``pause`` SIGSTOP, and a restart brings the server back on the same
port with no data (nothing is persisted), as a restart without persistence
does. :class:`DelayProxy` sits between a client and a server and holds every
reply back for a while, so a test can cancel a caller mid-round-trip.

In CI (``CI`` set) a missing ``redis-server`` is a failure, never a skip.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Coroutine, Iterator
from types import TracebackType
from typing import Any

import pytest

#: How long a cluster node may be unreachable before the others mark it failing (ms).
NODE_TIMEOUT_MS = 2000


def binary(name: str) -> str:
    """Return the path of ``name``, or fail (in CI) or skip (elsewhere) the test."""
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is not installed; CI must install redis-server")
        pytest.skip(f"{name} is not installed (CI installs it)")
    return path


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(*, cluster: bool = False) -> int:
    """A free loopback port; for a cluster node, its bus port (+10000) is free too."""
    for _ in range(200):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if not cluster or (port + 10000 <= 65535 and _port_free(port + 10000)):
            return port
    raise RuntimeError("no free port pair for a cluster node")


def _command(port: int, *words: str, timeout: float = 0.5) -> bytes:
    """Send one inline command to a server and return its raw reply (one read)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(" ".join(words).encode() + b"\r\n")
        return sock.recv(65536)


class RedisNode:
    """One ``redis-server`` on a free loopback port, without persistence.

    :meth:`start` returns once it answers PING; :meth:`stop` kills it and removes
    its directory. As a context manager: started on entry, stopped on exit.
    """

    def __init__(self, *, cluster: bool = False) -> None:
        self.cluster = cluster
        self.binary = binary("redis-server")  # skips (or fails in CI) before making anything
        self.port = free_port(cluster=cluster)
        self.workdir = tempfile.mkdtemp(prefix="idme-passback-redis-")
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisNode:
        args = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            self.workdir,
        ]
        if self.cluster:
            # nodes.conf survives a restart (the node keeps its id and slots);
            # the data does not.
            args += [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                str(NODE_TIMEOUT_MS),
            ]
        self._process = subprocess.Popen(  # noqa: S603 - a fixed local binary and arguments
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError):
                if _command(self.port, "PING").startswith(b"+PONG"):
                    return self
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("redis-server did not start")
            time.sleep(0.02)

    def command(self, *words: str) -> bytes:
        """One command on this node, for the test's own checks."""
        return _command(self.port, *words)

    def kill(self) -> None:
        """SIGKILL the server: everything it held is gone."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGCONT)  # a stopped process cannot die otherwise
            self._process.kill()
            self._process.wait(timeout=10)
        self._process = None

    def restart(self) -> None:
        """Kill the server and start it again on the same port, empty."""
        self.kill()
        self.start()

    def pause(self) -> None:
        """SIGSTOP: connections are accepted by the kernel, nothing is answered."""
        assert self._process is not None
        self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self._process is not None
        self._process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        self.kill()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> RedisNode:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class RedisClusterNodes:
    """Three masters, no replicas, all slots covered: a real Redis Cluster."""

    def __init__(self, size: int = 3) -> None:
        self.nodes = [RedisNode(cluster=True) for _ in range(size)]

    def start(self) -> RedisClusterNodes:
        try:
            for node in self.nodes:
                node.start()
            subprocess.run(  # noqa: S603 - a fixed local binary and arguments
                [
                    binary("redis-cli"),
                    "--cluster",
                    "create",
                    *(f"127.0.0.1:{node.port}" for node in self.nodes),
                    "--cluster-replicas",
                    "0",
                    "--cluster-yes",
                ],
                check=True,
                capture_output=True,
                timeout=30,
            )
            self.wait_ok()
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ok(self, timeout: float = 15.0) -> None:
        """Wait until every node says the cluster is ok (all slots served, all agree)."""
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(OSError):
                if all(
                    b"cluster_state:ok" in node.command("CLUSTER", "INFO") for node in self.nodes
                ):
                    return
            if time.monotonic() > deadline:
                raise RuntimeError("the cluster did not become ok")
            time.sleep(0.05)

    @property
    def startup(self) -> tuple[str, int]:
        return "127.0.0.1", self.nodes[0].port

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> RedisClusterNodes:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


@contextlib.contextmanager
def paused(node: RedisNode) -> Iterator[None]:
    """SIGSTOP ``node`` for the block, SIGCONT on leaving however it is left."""
    node.pause()
    try:
        yield
    finally:
        node.resume()


class DelayProxy:
    """A TCP proxy to a server that holds every reply back ``delay`` seconds.

    Requests go through at once (so the server acts on them); replies come
    late, in order. Runs on the test's own event loop.
    """

    def __init__(self, target_port: int, delay: float = 0.0) -> None:
        self.target_port = target_port
        self.delay = delay
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> DelayProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
        await self._server.wait_closed()

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._spawn(self._pipe(client_r, server_w, delayed=False))
        self._spawn(self._pipe(server_r, client_w, delayed=True))

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, delayed: bool
    ) -> None:
        loop = asyncio.get_running_loop()
        try:
            while chunk := await reader.read(65536):
                if delayed and self.delay > 0:
                    # Each chunk leaves ``delay`` after it arrived: order is kept.
                    due = loop.time() + self.delay
                    self._spawn(self._later(due, chunk, writer))
                else:
                    writer.write(chunk)
                    await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def _later(self, due: float, chunk: bytes, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(max(0.0, due - asyncio.get_running_loop().time()))
        if not writer.is_closing():
            writer.write(chunk)


def over_the_limit(
    requests: list[tuple[float, float]], limit: int, period: float, slack: float = 0.005
) -> int:
    """Count the requests that a server could see as one too many in some window.

    Each request is ``(sent, answered)``: the server counts it at some moment
    between the two. Request ``k`` is one too many if ``limit`` others, sent
    before it, could still be counted less than ``period`` before it
    (answered after ``sent_k - period``). ``slack`` forgives the milliseconds
    the server's clock is kept in.
    """
    ordered = sorted(requests)
    over = 0
    for k, (sent, _) in enumerate(ordered):
        close = sum(1 for _, answered in ordered[:k] if answered > sent - period + slack)
        if close >= limit:
            over += 1
    return over
