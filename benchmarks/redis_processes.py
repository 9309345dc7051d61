"""Row 4: three OS processes share one budget per document through Redis.

One FakePassbackServer (sliding window, limit 2 per 1 s, 20 ms latency) is
served by uvicorn in its own process on a loopback port. Three worker
processes each fetch the same 10 documents 4 times (40 concurrent
``get_document`` calls each, ``max_retries=0``), each with its own
``RateLimiter(2, 1.0, store=RedisStore(...))`` on one throwaway
``redis-server``. The peer does the same with per-process in-memory limiters.
Workers start together on a "go" line once all are connected.

Row 4b runs the same fleet on a throwaway Redis Cluster (three masters on
loopback, no replicas, ``redis.asyncio.cluster.RedisCluster``) and compares
its makespan with the single node's from the same run.

The servers are brand-new, so the stores are built with ``assume_fresh=True``:
without it, each group of documents pauses one period at its first use (an
empty Redis looks like one that forgot), which is not the steady state.

Ideal makespan: each document gets 3 x 4 = 12 requests at 2 per period,
so the last pair goes out 5 periods after the first: 5 x 1 s + one latency.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

from benchmarks._util import (
    API_TOKEN,
    REPO,
    RedisServer,
    Row,
    ServedFake,
    _child_env,
    emit,
    emit_result,
    free_port,
    parser,
    wait_for_redis,
)

PROCESSES = 3
DOCUMENTS = 10
REPEATS = 4
LIMIT = 2
PERIOD = 1.0
LATENCY = 0.020
IDEAL = (PROCESSES * REPEATS / LIMIT - 1) * PERIOD + LATENCY


async def worker(config: dict[str, Any]) -> dict[str, Any]:
    """One process: connect, say ready, wait for go, fire every call at once."""
    import httpx

    from idme_passback import PassbackClient, RateLimiter, RateLimitError, RedisStore

    redis_client: Any = None
    if config["redis_port"]:
        if config["cluster"]:
            from redis.asyncio.cluster import RedisCluster

            redis_client = RedisCluster(host="127.0.0.1", port=config["redis_port"])
        else:
            import redis.asyncio as redis

            redis_client = redis.Redis(host="127.0.0.1", port=config["redis_port"])
        await redis_client.ping()
        store = RedisStore(redis_client, prefix=config["prefix"], assume_fresh=True)
        limiter = RateLimiter(LIMIT, PERIOD, store=store)
    else:
        limiter = RateLimiter(LIMIT, PERIOD)
    tokens: list[str] = config["tokens"]
    async with PassbackClient(
        API_TOKEN, base_url=config["base_url"], limiter=limiter, max_retries=0
    ) as client:
        async with httpx.AsyncClient() as probe:  # warm up DNS-free loopback and imports
            await probe.get(config["base_url"] + "_bench/stats")
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.readline)
        start = time.time()
        results = await asyncio.gather(
            *(client.get_document(t) for _ in range(REPEATS) for t in tokens),
            return_exceptions=True,
        )
        end = time.time()
    if redis_client is not None:
        await redis_client.aclose()
    return {
        "start": start,
        "end": end,
        "ok": sum(not isinstance(r, BaseException) for r in results),
        "e429": sum(isinstance(r, RateLimitError) for r in results),
        "errors": [
            type(r).__name__
            for r in results
            if isinstance(r, BaseException) and not isinstance(r, RateLimitError)
        ],
    }


def _run_fleet(
    fake: ServedFake, redis_port: int | None, prefix: str, *, cluster: bool = False
) -> dict[str, Any]:
    config = {
        "base_url": fake.base_url,
        "tokens": fake.tokens,
        "redis_port": redis_port,
        "cluster": cluster,
        "prefix": prefix,
    }
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "benchmarks.redis_processes", "--variant", "worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env=_child_env(),
        )
        for _ in range(PROCESSES)
    ]
    try:
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write(json.dumps(config) + "\n")
            proc.stdin.flush()
        for proc in procs:
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "ready":
                raise RuntimeError("a worker failed: " + (proc.communicate()[1] or "")[-400:])
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        outputs = [proc.communicate(timeout=120) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    results = []
    for (stdout, stderr), proc in zip(outputs, procs, strict=True):
        lines = [line for line in stdout.splitlines() if line.startswith("@@BENCH-RESULT@@ ")]
        if not lines:
            raise RuntimeError(f"worker exited {proc.returncode}: {stderr[-400:]}")
        results.append(json.loads(lines[-1].split(" ", 1)[1]))
    stats = fake.stats()
    return {
        "makespan": max(r["end"] for r in results) - min(r["start"] for r in results),
        "e429": sum(r["e429"] for r in results),
        "ok": sum(r["ok"] for r in results),
        "errors": sum(len(r["errors"]) for r in results),
        "server_429": stats["rejected_429"],
        "max_in_window": stats["max_in_window"],
    }


def _fake() -> ServedFake:
    return ServedFake(
        algorithm="sliding",
        limit=LIMIT,
        period=PERIOD,
        latency=LATENCY,
        documents=DOCUMENTS,
        image_bytes=2048,
    )


class RedisClusterServers:
    """A throwaway Redis Cluster: three masters on loopback ports, no replicas, no persistence."""

    def __init__(self, binary: str = "/usr/bin/redis-server", size: int = 3) -> None:
        self.binary = binary
        self.size = size
        self.servers: list[RedisServer] = []
        self._dir = tempfile.TemporaryDirectory(prefix="bench-cluster-")

    @property
    def port(self) -> int:
        return self.servers[0].port

    def __enter__(self) -> RedisClusterServers:
        try:
            ports: list[int] = []
            while len(ports) < self.size:
                port = free_port()
                if port + 10000 <= 65535 and port not in ports:  # the cluster bus port
                    ports.append(port)
            for port in ports:
                workdir = os.path.join(self._dir.name, str(port))
                os.mkdir(workdir)
                cluster = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
                server = RedisServer(self.binary, port=port, args=["--dir", workdir, *cluster])
                self.servers.append(server)
                server.start()
            for server in self.servers:
                wait_for_redis(server.port, timeout=20)
            subprocess.run(
                [
                    os.path.join(os.path.dirname(self.binary), "redis-cli"),
                    "--cluster",
                    "create",
                    *(f"127.0.0.1:{port}" for port in ports),
                    "--cluster-replicas",
                    "0",
                    "--cluster-yes",
                ],
                check=True,
                capture_output=True,
                timeout=30,
            )
            for port in ports:
                wait_for_redis(
                    port, b"CLUSTER INFO\r\n", b"cluster_state:ok", within=True, timeout=20
                )
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        for server in self.servers:
            server.stop()
        self._dir.cleanup()


def measure(quick: bool) -> list[Row]:
    with RedisServer() as redis_server, _fake() as fake:
        ours = _run_fleet(fake, redis_server.port, prefix=f"bench-{time.time_ns()}:")
    with RedisClusterServers() as cluster, _fake() as fake:
        clustered = _run_fleet(fake, cluster.port, prefix=f"bench-{time.time_ns()}:", cluster=True)
    with _fake() as fake:
        peer = _run_fleet(fake, None, prefix="")
    over = ours["makespan"] / IDEAL
    total = PROCESSES * DOCUMENTS * REPEATS
    versus_single = clustered["makespan"] / ours["makespan"]
    return [
        Row(
            "4",
            "3 processes, 10 docs x 4 each, one Redis-backed budget (limit 2 / 1 s)",
            f"429s: {ours['e429']}; makespan {ours['makespan']:.2f} s = {over:.3f}x ideal",
            f"in-memory per process: 429s: {peer['e429']}; makespan {peer['makespan']:.2f} s",
            f"{ours['makespan'] / peer['makespan']:.2f}x makespan",
            "0 429s",
            f"2 req / 1 s / doc → 12 per doc ≥ {IDEAL:.2f} s",
            ours["e429"] == 0 and ours["errors"] == 0,
            f"{total} calls ({PROCESSES} processes x {DOCUMENTS} docs x {REPEATS}), all "
            "launched at once per process after a shared go signal; fake served by uvicorn "
            f"(sliding window, {LATENCY * 1000:.0f} ms latency) in another process; "
            "`max_retries=0`. Server's own count: ours "
            f"{ours['server_429']} 429s, at most {ours['max_in_window']} counted per doc in "
            f"any 1 s window, {ours['ok']} images; peer {peer['server_429']} 429s, "
            f"{peer['max_in_window']} per doc per window, {peer['ok']} images. Other errors: "
            f"ours {ours['errors']}, peer {peer['errors']}.",
        ),
        Row(
            "4b",
            "row 4 on a 3-master Redis Cluster (RedisCluster client)",
            f"429s: {clustered['e429']}; makespan {clustered['makespan']:.2f} s "
            f"= {clustered['makespan'] / IDEAL:.3f}x ideal",
            f"single node (row 4, same run): makespan {ours['makespan']:.2f} s",
            f"{versus_single:.3f}x makespan",
            "0 429s; ≤ 1.10x single node",
            f"as row 4: ≥ {IDEAL:.2f} s",
            clustered["e429"] == 0 and clustered["errors"] == 0 and versus_single <= 1.10,
            f"The same {total} calls on three masters started for the run "
            "(`--cluster-enabled yes`, `redis-cli --cluster create ... --cluster-replicas 0`), "
            "each document's keys in one hash slot. Server's own count: "
            f"{clustered['server_429']} 429s, at most {clustered['max_in_window']} counted per "
            f"doc in any 1 s window, {clustered['ok']} images. Other errors: "
            f"{clustered['errors']}.",
        ),
    ]


def main() -> None:
    args = parser(__doc__ or "").parse_args()
    if args.variant == "worker":
        config = json.loads(sys.stdin.readline())
        emit_result(asyncio.run(worker(config)))
        return
    emit(measure(args.quick), args.json)


if __name__ == "__main__":
    main()
