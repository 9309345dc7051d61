"""Where row 8's time goes: each side's event-loop time per item, sampled by py-spy.

Row 8 says how much slower ``download_many`` is than the bare loop; this
says why. Each side runs row 8's own work (:class:`OursSide` and
:class:`PeerSide` of :mod:`benchmarks.bulk_loopback`, the uvicorn-served
fake, jobs of 500) in a child process of its own, with its own fake; the two
children's jobs alternate in ABBA order, as row 8's do, so both meet the same
moments of a shared machine. After a 500-item warm-up job, ``py-spy record
--pid --threads --nonblocking`` attaches to each child at 500 samples a
second; a child waiting for its next job is idle and gives no samples, so
only the measured jobs are sampled (not the imports, the warm-up or the
clean-up). Each child's main-thread samples (its event loop) are split, per
measured item, into:

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

Also: the other threads' samples per item (the fsyncs' CPU), how busy the
loop was (a range: its samples over all of py-spy's looks, and over the
looks without an error, since an error may or may not have lost the loop's
stack), how many looks failed (py-spy reads the process without stopping
it, so 4-25% fail while the stacks change; stopping it slowed the process
tenfold), and what one file creation costs in a fresh folder of the
temporary directory, ``/var/tmp`` and tmpfs, with nothing else running
(wall time and system CPU). Samples whose leaf is a wait (``select``, a
worker thread waiting for work) are left out; py-spy sees only threads on a
CPU, so time a thread spends blocked in the kernel is not counted at all.

Not part of the suite, no target. It needs Python 3.11 or later (for
py-spy's thread ids), ``py-spy`` (``pip install py-spy``) and the right to
trace the child it starts (root, or Yama's ``ptrace_scope`` at 0 or 1: the
child names the parent as its tracer's parent).

Usage::

    python -m benchmarks.bulk_profile [--quick|--full]   # 4,000 or 20,000 items a side
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import os
import re
import resource
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
from benchmarks.bulk_loopback import OursSide, PeerSide, abba

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


def _let_parent_trace() -> None:
    """Let the parent's other children (py-spy) trace this process under Yama's ptrace_scope=1."""
    if sys.platform != "linux":
        return
    pr_set_ptracer = 0x59616D61
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_ptracer, os.getppid(), 0, 0, 0)


async def _child(side: str, items: int, control: IO[str]) -> None:
    """Warm up, say so, then run one job of 500 for every ``go`` the parent sends.

    After the last job it waits for one more line (the parent's word that
    py-spy has stopped). Anything but ``go`` before then, or the parent
    closing the pipe, ends it through its clean-up: the fake server and the
    folder.
    """
    _let_parent_trace()
    with ServedFake(documents=items + JOB, latency=[0.001, 0.02], limit=2) as served:
        folder = Path(tempfile.mkdtemp(prefix=f"idme-profile-{side}-"))
        try:
            runner = (OursSide if side == "ours" else PeerSide)(served.base_url, folder)
            try:
                await runner.run(served.tokens[items:], 10**6)
                print("ready", flush=True)
                first = 0
                # Blocked here between jobs, the process is idle: py-spy takes no sample.
                while first < items and control.readline().strip() == "go":
                    start = time.perf_counter()
                    await runner.run(served.tokens[first : first + JOB], first)
                    print(json.dumps({"seconds": time.perf_counter() - start}), flush=True)
                    first += JOB
                control.readline()  # py-spy has stopped: the clean-up is not sampled
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


def _tell(child: subprocess.Popen[str], word: str) -> None:
    assert child.stdin is not None
    child.stdin.write(word + "\n")
    child.stdin.flush()


def _attach(pid: int, raw: Path) -> subprocess.Popen[str]:
    """Start py-spy on ``pid``; return once it is sampling."""
    spy = subprocess.Popen(
        [
            _py_spy(), "record", "--pid", str(pid), "--threads", "--nonblocking",
            "--hideprogress", "--rate", str(RATE), "--format", "raw", "--output", str(raw),
        ],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    said: list[str] = []
    try:
        while not said or "Sampling process" not in said[-1]:
            said.append(_line(spy, "py-spy"))
    except RuntimeError as exc:  # it could not attach: say what it said
        raise RuntimeError(f"{exc}: {' / '.join(said)[-500:]}") from None
    return spy


def _detach(spy: subprocess.Popen[str]) -> tuple[int, int]:
    """Stop py-spy (it writes its file); the samples it wrote and the looks it could not read."""
    spy.send_signal(signal.SIGINT)
    summary, _ = spy.communicate(timeout=120)
    written = re.search(r"Samples: (\d+) Errors: (\d+)", summary)
    if spy.returncode != 0 or written is None:
        raise RuntimeError(f"py-spy failed: {summary.strip()[-500:]}")
    samples, errors = map(int, written.groups())
    return samples, errors


def _end(proc: subprocess.Popen[str] | None) -> None:
    """Stop ``proc`` if it still runs; a child first gets its input closed, to clean up."""
    if proc is None or proc.poll() is not None:
        return
    if proc.stdin is not None:
        with contextlib.suppress(OSError):
            proc.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=120)
    if proc.poll() is None:
        _stop(proc)


def _sample(items: int, raws: dict[str, Path]) -> dict[str, dict[str, Any]]:
    """Run both sides' children, their jobs interleaved ABBA, each sampled by its own py-spy."""
    children: dict[str, subprocess.Popen[str]] = {}
    spies: dict[str, subprocess.Popen[str]] = {}
    try:
        for side in raws:
            children[side] = subprocess.Popen(
                [sys.executable, "-m", "benchmarks.bulk_profile",
                 "--side", side, "--items", str(items)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                cwd=REPO, env=_child_env(),
            )  # fmt: skip
        for side, child in children.items():
            if _line(child, f"{side}'s child") != "ready":
                raise RuntimeError(f"{side}'s child did not get ready")
            spies[side] = _attach(child.pid, raws[side])
        seconds = dict.fromkeys(raws, 0.0)
        for index in range(items // JOB):
            for side in abba(index):
                _tell(children[side], "go")
                seconds[side] += json.loads(_line(children[side], f"{side}'s child"))["seconds"]
        figures: dict[str, dict[str, Any]] = {}
        for side, spy in spies.items():
            samples, errors = _detach(spy)
            figures[side] = {
                "seconds": seconds[side],
                "items_per_s": items / seconds[side],
                "py-spy samples": samples,
                "py-spy errors": errors,
                "pid": children[side].pid,
            }
    finally:
        # py-spy first: once it has stopped, each child may clean up (its input closed) and end.
        for proc in [*spies.values(), *children.values()]:
            _end(proc)
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
    main_samples = sum(parts[p] for p in _PARTS)
    read = main_samples + parts["other threads"] + sum(left_out.values())
    if main_samples == 0 or left_out["unreadable"] > 0.1 * read:
        raise RuntimeError(
            f"py-spy's stacks were not as expected ({main_samples} of the main thread, "
            f"{left_out['unreadable']} unreadable of {read}): is this Python 3.11 or later?"
        )
    budget = {part: count * per_sample for part, count in parts.items()}
    budget["event loop"] = sum(budget.get(p, 0.0) for p in _PARTS)
    budget["main samples"] = main_samples
    top = {name: count * per_sample for name, count in functions.most_common(15)}
    return budget, top, dict(left_out)


def _profile(items: int) -> dict[str, tuple[dict[str, Any], dict[str, float]]]:
    with tempfile.TemporaryDirectory() as scratch:
        raws = {side: Path(scratch) / f"{side}.txt" for side in ("ours", "peer")}
        sampled = _sample(items, raws)
        profiled = {}
        for side, figures in sampled.items():
            parts, functions, left_out = _budget(side, raws[side], items, figures["pid"])
            figures.update(parts)
            figures["left out"] = left_out
            # py-spy looks at the process RATE times a second during the side's own jobs
            # (an idle process gives neither samples nor errors). How busy the loop was
            # lies between its samples over every look and over the looks with no error
            # (an error may lose the main thread's stack, or only another thread's).
            figures["instants"] = instants = figures["seconds"] * RATE
            main = figures["main samples"]
            figures["loop busy"] = (
                main / instants,
                min(1.0, main / max(instants - figures["py-spy errors"], 1.0)),
            )
            profiled[side] = (figures, functions)
    return profiled


def _create_cost(parent: str, count: int = 1000) -> tuple[float, float]:
    """µs of wall time and of system CPU per ``O_CREAT | O_EXCL`` open in a fresh folder."""
    folder = tempfile.mkdtemp(prefix="idme-profile-creates-", dir=parent)
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        system, wall = resource.getrusage(resource.RUSAGE_SELF).ru_stime, time.perf_counter()
        for i in range(count):
            os.close(os.open(f"f{i:06d}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600, dir_fd=fd))
        wall = time.perf_counter() - wall
        system = resource.getrusage(resource.RUSAGE_SELF).ru_stime - system
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
    busy = {side: "{:.0%}-{:.0%}".format(*figures["loop busy"]) for side, figures in sides.items()}
    print(f"| loop busy | {busy['ours']} | {busy['peer']} | |")
    for side, figures in sides.items():
        errors, instants = figures["py-spy errors"], figures["instants"]
        print(
            f"\n{side}: {instants:,.0f} instants, {errors:,} unread ({errors / instants:.0%}); "
            f"{figures['py-spy samples']:,} thread samples written, left out of them: "
            f"{figures['left out'] or 'none'}"
        )
    for side, (_, functions) in profiled.items():
        print(f"\n{side}: own code by its deepest function, µs per item")
        for name, us in functions.items():
            print(f"  {us:6.0f}  {name}")
    print("\ncreating a file in a fresh folder (1,000 creates, nothing else running), µs each")
    places = list(dict.fromkeys([tempfile.gettempdir(), "/var/tmp", "/dev/shm"]))
    places = [place for place in places if os.path.isdir(place) and os.access(place, os.W_OK)]
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
    if sys.version_info < (3, 11):
        sys.exit("bulk_profile needs Python 3.11 or later (py-spy's thread ids and names)")
    _py_spy()
    items = 20_000 if args.full else 4000
    _report(items, _profile(items))


if __name__ == "__main__":
    main()
