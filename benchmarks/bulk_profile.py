"""Where row 8's time goes: each side's event-loop time per item, sampled by py-spy.

Row 8 says how much slower ``download_many`` is than the bare loop; this
says why. Each side runs row 8's own work (:class:`OursSide` and
:class:`PeerSide` of :mod:`benchmarks.bulk_loopback`, the same uvicorn-served
fake, jobs of 500) in a child process, one side after the other. After a
500-item warm-up job, ``py-spy record --pid --threads --nonblocking`` attaches
at 500 samples a second; it samples the measured jobs only (not the imports,
the warm-up or the clean-up) and is stopped as soon as they end. The main
thread's samples (the event loop) are split, per measured item, into:

* **file creation**: the ``open`` of each image's temporary file (ours
  ``OpenFolder._open``; the peer's ``tempfile.mkstemp``, whose
  ``_mkstemp_inner`` also makes the random name), the same call on both sides;
* **own code**: the deepest frame of the side's own code (the library, or
  the peer's loop) with no httpx, httpcore or h11 frame below it: what that
  code does itself, the system calls and helpers it makes directly (``os``,
  ``hashlib``, attrs' generated methods, OpenTelemetry) and its own anyio and
  asyncio calls (cancel scopes, semaphores, handing work to threads);
* **httpx and below**: everything else the loop runs (httpx, httpcore, h11,
  the event loop's own work).

Also: the other threads' samples per item (the fsyncs), how busy the loop
was (its samples over the measured time), the samples py-spy could not
read, and what one file creation costs in the benchmark's temporary folder
and on tmpfs (wall and system CPU, a loop of creates with nothing else
running). Samples whose leaf is a wait (``select``, a worker thread waiting
for work) are left out. Not part of the suite: it needs ``py-spy`` (``pip
install py-spy``) and the right to trace a child process, and it reports,
with no target.

Usage::

    python -m benchmarks.bulk_profile [--quick|--full]   # 4,000 or 20,000 items a side
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import IO, Any

from benchmarks._util import REPO, ServedFake, _child_env, _stop
from benchmarks.bulk_loopback import OursSide, PeerSide

RATE = 500  # samples a second
JOB = 500
#: Frames of the HTTP stack both sides run on: a sample below one of them is not the side's own.
_STACK = ("httpx/", "httpcore/", "h11/")
#: The side's own code, by side (py-spy names files relative to the path they came from).
_OWN = {"ours": "idme_passback/", "peer": "bulk_loopback.py"}
#: The frame that creates each image's temporary file, by side.
_CREATE = {"ours": "OpenFolder._open", "peer": "_mkstemp_inner"}
#: Leaf frames of a thread that is waiting, not working (py-spy cannot always tell).
_WAITING = (
    "Condition.wait",
    "EpollSelector.select",
    "PollSelector.select",
    "SelectSelector.select",
)
_FRAME = re.compile(r"^(?P<name>.*) \((?P<file>.*?):-?\d+\)$")
_THREAD = re.compile(r"^thread \((?P<tid>\d+)\)(: .*)?$")
_PARTS = ("file creation", "own code", "httpx and below")


# ---------------------------------------------------------------- the child


async def _child(side: str, items: int, control: IO[str]) -> None:
    """Warm up, say so, wait for py-spy, run ``items`` in jobs of 500, report."""
    with ServedFake(documents=items + JOB, latency=[0.001, 0.02], limit=2) as served:
        folder = Path(tempfile.mkdtemp(prefix=f"idme-profile-{side}-"))
        try:
            runner = (OursSide if side == "ours" else PeerSide)(served.base_url, folder)
            try:
                await runner.run(served.tokens[items:], 10**6)
                print("ready", flush=True)
                control.readline()  # py-spy is sampling
                start = time.perf_counter()
                for first in range(0, items, JOB):
                    await runner.run(served.tokens[first : first + JOB], first)
                seconds = time.perf_counter() - start
                print(json.dumps({"items_per_s": items / seconds, "seconds": seconds}), flush=True)
                control.readline()  # py-spy has stopped
            finally:
                await runner.aclose()
        finally:
            shutil.rmtree(folder, ignore_errors=True)


# ---------------------------------------------------------------- the parent


def _py_spy() -> str:
    """py-spy on the PATH, or beside this interpreter (a venv not activated)."""
    found = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if found is None:
        sys.exit("bulk_profile needs py-spy: pip install py-spy")
    return found


def _line(proc: subprocess.Popen[str], what: str) -> str:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.wait(timeout=30)
        raise RuntimeError(f"{what} ended early (exit code {proc.returncode})")
    return line.strip()


def _sample(side: str, items: int, raw: Path) -> dict[str, Any]:
    """Run one side's child, sampled by py-spy over its measured jobs only."""
    command = [
        sys.executable,
        "-m",
        "benchmarks.bulk_profile",
        "--side",
        side,
        "--items",
        str(items),
    ]
    child = subprocess.Popen(
        command,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=_child_env(),
    )
    spy: subprocess.Popen[str] | None = None
    try:
        assert child.stdin is not None
        if _line(child, "the child") != "ready":
            raise RuntimeError("the child did not get ready")
        spy = subprocess.Popen(
            [
                _py_spy(), "record", "--pid", str(child.pid), "--threads", "--nonblocking",
                "--rate", str(RATE), "--format", "raw", "--output", str(raw),
            ],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        while "Sampling process" not in _line(spy, "py-spy"):
            pass
        child.stdin.write("go\n")
        child.stdin.flush()
        figures: dict[str, Any] = json.loads(_line(child, "the child"))
        spy.send_signal(signal.SIGINT)
        said, _ = spy.communicate(timeout=120)
        written = re.search(r"Samples: (\d+) Errors: (\d+)", said)
        if spy.returncode != 0 or written is None:
            raise RuntimeError(f"py-spy failed: {said.strip()[-500:]}")
        figures["py-spy samples"], figures["py-spy errors"] = map(int, written.groups())
        child.stdin.write("exit\n")
        child.stdin.flush()
        child.wait(timeout=300)
    finally:
        for proc in (spy, child):
            if proc is not None and proc.poll() is None:
                _stop(proc)
    figures["pid"] = child.pid
    return figures


def _budget(
    side: str, raw: Path, items: int, main_thread: int
) -> tuple[dict[str, float], dict[str, float], dict[str, int]]:
    """Split py-spy's collapsed stacks into µs per item.

    Returns the parts, the own code's share by its deepest function, and the
    count of samples left out, by why.
    """
    parts: Counter[str] = Counter()
    functions: Counter[str] = Counter()
    left_out: Counter[str] = Counter()
    per_sample = 1e6 / RATE / items
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        count = int(count_text)
        root, _, rest = stack.partition(";")
        thread = _THREAD.match(root)
        frames = [m.groupdict() for m in map(_FRAME.match, rest.split(";")) if m]
        if thread is None or not frames:
            left_out["unreadable"] += count
            continue
        if frames[-1]["name"] in _WAITING:
            left_out["waiting"] += count
            continue
        if int(thread["tid"]) != main_thread:
            parts["other threads"] += count
            continue
        own = [i for i, f in enumerate(frames) if _OWN[side] in f["file"]]
        if any(f["name"] == _CREATE[side] for f in frames):
            part = "file creation"
        elif own and not any(s in f["file"] for f in frames[own[-1] + 1 :] for s in _STACK):
            part = "own code"
            functions[frames[own[-1]]["name"]] += count
        else:
            part = "httpx and below"
        parts[part] += count
    budget = {part: count * per_sample for part, count in parts.items()}
    budget["event loop"] = sum(budget.get(p, 0.0) for p in _PARTS)
    top = {name: count * per_sample for name, count in functions.most_common(15)}
    return budget, top, dict(left_out)


def _profile(side: str, items: int) -> tuple[dict[str, Any], dict[str, float]]:
    with tempfile.TemporaryDirectory() as scratch:
        raw = Path(scratch) / "stacks.txt"
        figures = _sample(side, items, raw)
        parts, functions, left_out = _budget(side, raw, items, figures["pid"])
    figures.update(parts)
    figures["left out"] = left_out
    figures["loop busy"] = figures["event loop"] * items / 1e6 / figures["seconds"]
    return figures, functions


def _create_cost(parent: str, count: int = 300) -> tuple[float, float]:
    """µs of wall time and of system CPU per ``O_CREAT | O_EXCL`` open in a fresh folder."""
    folder = tempfile.mkdtemp(prefix="idme-profile-creates-", dir=parent)
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        system, wall = os.times().system, time.perf_counter()
        for i in range(count):
            os.close(os.open(f"f{i:06d}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600, dir_fd=fd))
        wall, system = time.perf_counter() - wall, os.times().system - system
    finally:
        os.close(fd)
        shutil.rmtree(folder, ignore_errors=True)
    return wall / count * 1e6, system / count * 1e6


def _report(items: int, profiled: dict[str, tuple[dict[str, Any], dict[str, float]]]) -> None:
    sides = {side: figures for side, (figures, _) in profiled.items()}
    ours, peer = sides["ours"], sides["peer"]
    print(f"row 8's work under py-spy ({items:,} items a side, {RATE} samples/s); µs per item\n")
    print("| | ours | peer | ours - peer |\n| --- | --- | --- | --- |")
    ratio = ours["items_per_s"] / peer["items_per_s"]
    print(f"| items/s | {ours['items_per_s']:.0f} | {peer['items_per_s']:.0f} | {ratio:.2f}x |")
    for row in ("event loop", *_PARTS, "other threads"):
        a, b = ours.get(row, 0.0), peer.get(row, 0.0)
        print(f"| {row} | {a:,.0f} | {b:,.0f} | {a - b:+,.0f} |")
    print(f"| loop busy | {ours['loop busy']:.0%} | {peer['loop busy']:.0%} | |")
    for side, figures in sides.items():
        print(
            f"\n{side}: {figures['py-spy samples']:,} samples written, {figures['py-spy errors']} "
            f"errors; left out: {figures['left out'] or 'none'}"
        )
    for side, (_, functions) in profiled.items():
        print(f"\n{side}: own code by its deepest function, µs per item")
        for name, us in functions.items():
            print(f"  {us:6.0f}  {name}")
    print("\ncreating a file in a fresh folder (300 creates, nothing else running), µs each")
    places = [tempfile.gettempdir()] + (["/dev/shm"] if os.path.isdir("/dev/shm") else [])
    for place in places:
        wall, system = _create_cost(place)
        print(f"  {place}: {wall:.0f} wall, {system:.0f} system CPU")


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="4,000 items a side (the default)")
    size.add_argument("--full", action="store_true", help="20,000 items a side")
    p.add_argument("--side", choices=("ours", "peer"), help=argparse.SUPPRESS)
    p.add_argument("--items", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.side is not None:  # the child py-spy samples
        asyncio.run(_child(args.side, args.items, sys.stdin))
        return
    _py_spy()
    items = 20_000 if args.full else 4000
    _report(items, {side: _profile(side, items) for side in ("ours", "peer")})


if __name__ == "__main__":
    main()
