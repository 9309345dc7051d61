"""What every benchmark module shares: rows, child processes, RSS sampling, servers.

A benchmark module runs as ``python -m benchmarks.<module> [--quick|--full] [--json]``
and prints its rows; with ``--json`` it prints them as one marker line the
suite reads. Memory-sensitive variants run in fresh child processes through
:func:`run_child`, so one measurement never inflates another's RSS.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from types import TracebackType
from typing import Any

import psutil

#: Marks the line of a child's stdout that carries its rows or its result.
ROWS_MARKER = "@@BENCH-ROWS@@ "
RESULT_MARKER = "@@BENCH-RESULT@@ "

#: The fake's default API token (the seed's example format).
API_TOKEN = "1234567-fd03-4ca4-a93e-aae6fce8e82b"
#: Where in-process transports pretend to live.
FAKE_BASE = "http://bench/"
DOCUMENT_PATH = "api/public/v3/documents/"

REPO = Path(__file__).resolve().parent.parent

_JPEG_HEAD = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"


def jpeg_body(size: int) -> bytes:
    """Return ``size`` bytes that start like a JPEG (enough for the library's sniffing)."""
    return _JPEG_HEAD + bytes(max(0, size - len(_JPEG_HEAD)))


def hex_tokens(count: int, prefix: str = "") -> list[str]:
    """Return ``count`` distinct 32-character document tokens."""
    width = 32 - len(prefix)
    return [f"{prefix}{i:0{width}x}" for i in range(count)]


# ---------------------------------------------------------------- rows


@dataclass
class Row:
    """One line of the table: our figure beside the peer's, and the target."""

    id: str
    name: str
    figure: str
    peer: str
    ratio: str
    target: str
    limit: str
    met: bool | None
    note: str = ""

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Row:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def error_row(row_id: str, name: str, message: str) -> Row:
    """A row for a benchmark that could not run: the suite goes on."""
    return Row(row_id, name, "ERROR", "", "", "", "", None, message)


def ratio(ours: float, peer: float) -> str:
    """Return ``ours / peer`` as ``1.23x`` (or ``n/a``)."""
    if peer == 0:
        return "n/a"
    return f"{ours / peer:.2f}x"


def mib(n_bytes: float) -> str:
    """Format bytes as MiB with a sign."""
    return f"{n_bytes / 2**20:+.1f} MiB"


def met_text(met: bool | None) -> str:
    """The table's last cell."""
    return {True: "yes", False: "**NO**", None: "n/a"}[met]


def markdown_table(rows: Sequence[Row]) -> str:
    """Render rows as a Markdown table (notes go below it, numbered by row id)."""
    head = (
        "| # | benchmark | figure | peer (same run) | ratio | target | physical limit | met? |\n"
        "|---|---|---|---|---|---|---|---|\n"
    )
    body = "".join(
        f"| {r.id} | {r.name} | {r.figure} | {r.peer} | {r.ratio} | {r.target} | {r.limit} "
        f"| {met_text(r.met)} |\n"
        for r in rows
    )
    return head + body


def notes(rows: Sequence[Row]) -> str:
    """The notes under the table: what each row did exactly."""
    return "".join(f"- **{r.id}** {r.note}\n" for r in rows if r.note)


# ---------------------------------------------------------------- module plumbing


def parser(description: str) -> argparse.ArgumentParser:
    """The arguments every benchmark module takes."""
    p = argparse.ArgumentParser(description=description)
    group = p.add_mutually_exclusive_group()
    group.add_argument("--quick", dest="quick", action="store_true", default=True)
    group.add_argument("--full", dest="quick", action="store_false")
    p.add_argument("--json", action="store_true", help="print rows as one JSON line")
    p.add_argument("--variant", help="internal: run one measurement in this process")
    return p


def emit(rows: Sequence[Row], as_json: bool) -> None:
    """Print rows for the suite (``--json``) or for a person."""
    if as_json:
        print(ROWS_MARKER + json.dumps([asdict(r) for r in rows]), flush=True)
    else:
        print(markdown_table(rows) + "\n" + notes(rows), flush=True)


def emit_result(result: dict[str, Any]) -> None:
    """Print a variant's measurements for the coordinating process."""
    print(RESULT_MARKER + json.dumps(result), flush=True)


def _last_marked(stdout: str, marker: str) -> Any:
    for line in reversed(stdout.splitlines()):
        if line.startswith(marker):
            return json.loads(line[len(marker) :])
    raise ValueError("no result line")


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _run_marked(
    module: str, args: Sequence[str], marker: str, *, timeout: float, stdin: str | None = None
) -> Any:
    """Run ``python -m benchmarks.<module> <args>`` in a fresh process; return its marked line.

    Raises:
        RuntimeError: with the tail of the child's stderr if it failed.
    """
    proc = subprocess.run(
        [sys.executable, "-m", f"benchmarks.{module}", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env=_child_env(),
        check=False,
    )
    try:
        return _last_marked(proc.stdout, marker)
    except ValueError:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-6:]
        raise RuntimeError(
            f"benchmarks.{module} {' '.join(args)} exited {proc.returncode}: " + " / ".join(tail)
        ) from None


def run_child(
    module: str, args: Sequence[str], *, timeout: float, stdin: str | None = None
) -> dict[str, Any]:
    """Run one side of a benchmark in a fresh process; return its result."""
    result: dict[str, Any] = _run_marked(module, args, RESULT_MARKER, timeout=timeout, stdin=stdin)
    return result


def run_module(module: str, quick: bool, *, timeout: float) -> list[Row]:
    """Run one benchmark module in a fresh process and return its rows."""
    args = ["--json", "--quick" if quick else "--full"]
    data = _run_marked(module, args, ROWS_MARKER, timeout=timeout)
    return [Row.from_dict(item) for item in data]


# ---------------------------------------------------------------- memory


def rss() -> int:
    """This process's resident set size in bytes."""
    return int(psutil.Process().memory_info().rss)


def settle_memory() -> None:
    """Collect garbage and hand freed heap back to the OS (glibc), so RSS shows live memory."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class RssSampler:
    """Sample this process's RSS every ``interval`` seconds in a thread; keep the peak."""

    def __init__(self, interval: float = 0.01) -> None:
        self.interval = interval
        self.baseline = 0
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._process = psutil.Process()

    def _run(self) -> None:
        while not self._stop.is_set():
            value = self._process.memory_info().rss
            self.samples += 1
            self.peak = max(self.peak, value)
            self._stop.wait(self.interval)

    @property
    def growth(self) -> int:
        """Peak RSS minus the RSS when sampling started."""
        return self.peak - self.baseline

    def __enter__(self) -> RssSampler:
        self.baseline = self.peak = self._process.memory_info().rss
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._process.memory_info().rss)


# ---------------------------------------------------------------- servers


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _stop(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_for_redis(
    port: int,
    command: bytes = b"PING\r\n",
    answer: bytes = b"+PONG",
    *,
    within: bool = False,
    timeout: float = 10.0,
) -> None:
    """Ask the server on ``port`` ``command`` until its reply starts with (or holds) ``answer``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock,
        ):
            sock.sendall(command)
            reply = sock.recv(4096)
            if (answer in reply) if within else reply.startswith(answer):
                return
        time.sleep(0.05)
    raise RuntimeError(f"redis-server on port {port} did not become ready")


class RedisServer:
    """A throwaway ``redis-server`` on a loopback port (no persistence).

    The port is a free one unless given; ``args`` are passed on to the server.
    As a context manager it is started and waited for (PING) on entry.
    """

    def __init__(
        self,
        binary: str = "/usr/bin/redis-server",
        *,
        port: int | None = None,
        args: Sequence[str] = (),
    ) -> None:
        self.binary = binary
        self.port = free_port() if port is None else port
        self.args = list(args)
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the server; do not wait for it."""
        self._proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                *self.args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        if self._proc is not None:
            _stop(self._proc)

    def __enter__(self) -> RedisServer:
        self.start()
        try:
            wait_for_redis(self.port)
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class ServedFake:
    """A :class:`FakePassbackServer` served by uvicorn in another process, on loopback.

    The config keys are those of ``benchmarks._serve``: ``algorithm``,
    ``limit``, ``period``, ``latency`` (seconds, or ``[low, high]`` drawn
    uniformly), ``documents``, ``image_bytes``.
    """

    def __init__(self, **config: Any) -> None:
        self.config = config
        self.port = 0
        self.tokens: list[str] = []
        self._proc: subprocess.Popen[str] | None = None
        self._log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - closed in __exit__

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def __enter__(self) -> ServedFake:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks._serve", json.dumps(self.config)],
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            cwd=REPO,
            env=_child_env(),
        )
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line:
            self._log.seek(0)
            tail = self._log.read().strip().splitlines()[-5:]
            _stop(self._proc)
            raise RuntimeError("the fake server did not start: " + " / ".join(tail))
        info = json.loads(line)
        self.port = int(info["port"])
        self.tokens = list(info["tokens"])
        return self

    def stats(self) -> dict[str, Any]:
        """The server's own count of what it answered."""
        import httpx

        response = httpx.get(self.base_url + "_bench/stats", timeout=10)
        data: dict[str, Any] = response.json()
        return data

    def __exit__(self, *exc_info: object) -> None:
        if self._proc is not None:
            _stop(self._proc)
        self._log.close()


# ---------------------------------------------------------------- machine


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _version(package: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "absent"


def _git_head() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=REPO,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "idme_passback"],
            capture_output=True,
            text=True,
            cwd=REPO,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + (" (idme_passback/ has uncommitted changes)" if dirty else "")


def _redis_version() -> str:
    try:
        out = subprocess.run(
            ["/usr/bin/redis-server", "--version"], capture_output=True, text=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return "absent"
    for part in out.split():
        if part.startswith("v="):
            return part[2:]
    return out.strip()


def machine_info() -> dict[str, str]:
    """CPU, cores, memory, Python and the versions every row depends on."""
    memory = psutil.virtual_memory().total
    return {
        "CPU": _cpu_model(),
        "cores": f"{os.cpu_count()} logical",
        "memory": f"{memory / 2**30:.1f} GiB",
        "OS": f"{platform.system()} {platform.release()}",
        "Python": f"{platform.python_implementation()} {platform.python_version()}",
        "commit": _git_head(),
        "packages": ", ".join(
            f"{name} {_version(name)}"
            for name in (
                "idme-passback",
                "httpx",
                "anyio",
                "aiolimiter",
                "pyrate-limiter",
                "redis",
                "uvicorn",
            )
        )
        + f", redis-server {_redis_version()}",
    }


@contextlib.contextmanager
def timed() -> Iterator[list[float]]:
    """``with timed() as t: ...`` leaves the elapsed seconds in ``t[0]``."""
    box = [0.0]
    start = time.perf_counter()
    try:
        yield box
    finally:
        box[0] = time.perf_counter() - start
