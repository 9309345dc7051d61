"""Where row 8's time goes: each side's event-loop time per item, sampled by py-spy.

Row 8 says how much slower ``download_many`` is than the bare loop; this
says why. Each side runs row 8's own work (:class:`OursSide` and
:class:`PeerSide` of :mod:`benchmarks.bulk_loopback`, the same uvicorn-served
fake, jobs of 500, a 500-item warm-up job first) in its own process under
``py-spy record --nonblocking`` at 500 samples a second, one side after the
other. The samples of the main thread (the event loop) are split, per item,
into:

* **file creation**: the ``open`` of each image's temporary file (ours
  ``OpenFolder._open``, the peer's ``tempfile.mkstemp``), kernel time on
  most file systems, the same call on both sides;
* **own code**: the deepest frame of the side's own code (the library, or
  the peer's loop) with no httpx, httpcore, h11, anyio or asyncio frame below
  it, so what that code does itself and the helpers it calls directly
  (``os``, ``hashlib``, attrs' generated methods, OpenTelemetry);
* **http and event loop**: everything else the loop runs.

It also gives the worker threads' samples per item (the fsyncs) and how busy
the loop was (its samples over the wall time). Samples of a thread waiting
(in ``select``, or a worker thread waiting for work) are left out. Not part of the suite: it
needs ``py-spy`` (``pip install py-spy``) and reports, with no target.

Usage::

    python -m benchmarks.bulk_profile [--quick|--full]   # 4,000 or 20,000 items a side
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from benchmarks._util import REPO, ServedFake, _child_env
from benchmarks.bulk_loopback import OursSide, PeerSide

RATE = 500  # samples a second
JOB = 500
#: Frames of the stack both sides run on: a sample below one of these is not the side's own.
_STACK = ("httpx/", "httpcore/", "h11/", "anyio/", "asyncio/", "sniffio/", "selectors.py")
#: The side's own code, by side (py-spy names files relative to the path they came from).
_OWN = {"ours": "idme_passback/", "peer": "bulk_loopback.py"}
#: Leaf frames of a thread that is waiting, not working (py-spy cannot always tell).
_WAITING = (
    "Condition.wait",
    "EpollSelector.select",
    "PollSelector.select",
    "SelectSelector.select",
)
#: The frame that creates each image's temporary file, by side.
_CREATE = {"ours": "OpenFolder._open", "peer": "_mkstemp_inner"}
_FRAME = re.compile(r"^(?P<name>.*) \((?P<file>.*?):\d+\)$")


async def _child(side: str, items: int) -> dict[str, float]:
    """Run one side: a warm-up job, then ``items`` in jobs of 500; its figures."""
    with ServedFake(documents=items + JOB, latency=[0.001, 0.02], limit=2) as served:
        folder = Path(tempfile.mkdtemp(prefix=f"idme-profile-{side}-"))
        runner = (OursSide if side == "ours" else PeerSide)(served.base_url, folder)
        try:
            await runner.run(served.tokens[items:], 10**6)
            start = time.perf_counter()
            for first in range(0, items, JOB):
                await runner.run(served.tokens[first : first + JOB], first)
            seconds = time.perf_counter() - start
        finally:
            await runner.aclose()
            shutil.rmtree(folder, ignore_errors=True)
    return {"items_per_s": items / seconds}


def _budget(side: str, raw: Path, items: int) -> tuple[dict[str, float], dict[str, float]]:
    """Split py-spy's collapsed stacks into µs per item (warm-up items included).

    Returns the parts, and the own code's share by its deepest function.
    """
    parts: Counter[str] = Counter()
    functions: Counter[str] = Counter()
    per_sample = 1e6 / RATE / (items + JOB)
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        frames = [m.groupdict() for m in map(_FRAME.match, stack.split(";")) if m]
        if not frames or frames[-1]["name"] in _WAITING:
            continue
        if any(f["name"] == "Thread._bootstrap" for f in frames):
            parts["worker threads"] += int(count)
            continue
        own = [i for i, f in enumerate(frames) if _OWN[side] in f["file"]]
        if any(f["name"] == _CREATE[side] for f in frames):
            part = "file creation"
        elif own and not any(s in f["file"] for f in frames[own[-1] + 1 :] for s in _STACK):
            part = "own code"
            functions[frames[own[-1]]["name"]] += int(count)
        else:
            part = "http and event loop"
        parts[part] += int(count)
    budget = {part: count * per_sample for part, count in parts.items()}
    budget["loop total"] = sum(
        budget[p] for p in ("file creation", "own code", "http and event loop") if p in budget
    )
    return budget, {name: count * per_sample for name, count in functions.most_common(15)}


def _profile(side: str, items: int) -> tuple[dict[str, float], dict[str, float]]:
    with tempfile.TemporaryDirectory() as scratch:
        raw, result = Path(scratch) / "stacks.txt", Path(scratch) / "result.json"
        command = [
            "py-spy", "record", "--nonblocking", "--rate", str(RATE), "--format", "raw",
            "--output", str(raw), "--",
            sys.executable, "-m", "benchmarks.bulk_profile",
            "--side", side, "--items", str(items), "--result", str(result),
        ]  # fmt: skip
        subprocess.run(command, check=True, capture_output=True, cwd=REPO, env=_child_env())
        figures = json.loads(result.read_text())
        parts, functions = _budget(side, raw, items)
    figures.update(parts)
    figures["loop busy"] = figures["loop total"] * figures["items_per_s"] / 1e6
    return figures, functions


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="4,000 items a side (the default)")
    size.add_argument("--full", action="store_true", help="20,000 items a side")
    p.add_argument("--side", choices=("ours", "peer"), help=argparse.SUPPRESS)
    p.add_argument("--items", type=int, help=argparse.SUPPRESS)
    p.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.side is not None:  # the child py-spy samples
        args.result.write_text(json.dumps(asyncio.run(_child(args.side, args.items))))
        return
    if shutil.which("py-spy") is None:
        sys.exit("bulk_profile needs py-spy on the PATH: pip install py-spy")
    items = 20_000 if args.full else 4000
    profiled = {side: _profile(side, items) for side in ("ours", "peer")}
    sides = {side: figures for side, (figures, _) in profiled.items()}
    rows = (
        "items_per_s", "loop total", "file creation", "own code", "http and event loop",
        "worker threads", "loop busy",
    )  # fmt: skip
    print(f"row 8's work under py-spy ({items:,} items a side, {RATE} samples/s); µs per item\n")
    print("| | ours | peer | ours - peer |\n| --- | --- | --- | --- |")
    for row in rows:
        ours, peer = sides["ours"].get(row, 0.0), sides["peer"].get(row, 0.0)
        if row == "items_per_s":
            print(f"| items/s | {ours:.0f} | {peer:.0f} | ratio {ours / peer:.2f}x |")
        elif row == "loop busy":
            print(f"| loop busy | {ours:.0%} | {peer:.0%} | |")
        else:
            print(f"| {row} | {ours:.0f} | {peer:.0f} | {ours - peer:+.0f} |")
    for side, (_, functions) in profiled.items():
        print(f"\n{side}: own code by its deepest function, µs per item")
        for name, us in functions.items():
            print(f"  {us:6.0f}  {name}")


if __name__ == "__main__":
    main()
