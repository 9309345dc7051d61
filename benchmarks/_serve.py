"""Serve a FakePassbackServer with uvicorn on a loopback port (run by ``ServedFake``).

Usage: ``python -m benchmarks._serve '<json config>'``. The first line on
stdout is ``{"port": ..., "tokens": [...]}``; the socket already listens by
then. ``GET /_bench/stats`` answers what the fake counted.
"""

from __future__ import annotations

import json
import random
import socket
import sys
from collections.abc import Callable
from typing import Any

import uvicorn

from benchmarks._util import API_TOKEN, jpeg_body
from idme_passback.testing import FakePassbackServer


class StatsApp:
    """The fake, plus one extra route for the benchmark to read its counters."""

    def __init__(self, fake: FakePassbackServer) -> None:
        self.fake = fake

    def stats(self) -> dict[str, Any]:
        fake = self.fake
        return {
            "requests": fake.count(endpoint="document"),
            "ok": fake.count(endpoint="document", status=200),
            "rejected_429": fake.count(endpoint="document", status=429),
            "max_in_window": fake.max_in_window(),
        }

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/_bench/stats":
            body = json.dumps(self.stats()).encode()
            headers = [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        await self.fake(scope, receive, send)


def _latency(value: Any, seed: int) -> float | Callable[[], float]:
    if isinstance(value, list):
        low, high = float(value[0]), float(value[1])
        rng = random.Random(seed)
        return lambda: rng.uniform(low, high)
    return float(value)


def main() -> None:
    config: dict[str, Any] = json.loads(sys.argv[1])
    fake = FakePassbackServer(
        API_TOKEN,
        limit=int(config.get("limit", 2)),
        period=float(config.get("period", 60.0)),
        algorithm=config.get("algorithm", "sliding"),
        latency=_latency(config.get("latency", 0.0), int(config.get("seed", 1))),
        image_bytes=jpeg_body(int(config.get("image_bytes", 2048))),
        seed=int(config.get("seed", 1)),
    )
    tokens = [fake.issue_document() for _ in range(int(config.get("documents", 10)))]
    # IPPROTO_TCP, not 0: asyncio turns Nagle off only on accepted sockets whose
    # proto says TCP, and with it on each response waits ~40 ms for a delayed ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(2048)
    print(json.dumps({"port": sock.getsockname()[1], "tokens": tokens}), flush=True)
    server = uvicorn.Server(
        uvicorn.Config(
            StatsApp(fake),
            log_level="warning",
            access_log=False,
            lifespan="off",
            http="h11",
            backlog=2048,
            timeout_graceful_shutdown=1,
        )
    )
    server.run(sockets=[sock])


if __name__ == "__main__":
    main()
