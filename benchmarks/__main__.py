"""Run the benchmark suite and print (or save) one Markdown report.

Usage::

    python -m benchmarks [--quick|--full] [--only NAME ...] [--output FILE]

Each benchmark module runs in a fresh process, one after another (never in
parallel: they would share the cores they measure). A module that fails
gives an ERROR row and the suite goes on.
"""

from __future__ import annotations

import argparse
import datetime
import shlex
import sys
import time
from pathlib import Path

from benchmarks._util import Row, error_row, machine_info, markdown_table, notes, run_module

#: Module name -> (row ids it produces, what it measures), in running order.
BENCHMARKS: dict[str, tuple[str, str]] = {
    "overhead": ("1, 1m", "client overhead vs raw httpx, over loopback and in memory"),
    "limiter_servers": ("2a-2c", "limiter vs sliding / fixed / bucket servers"),
    "limiter_throughput": ("3a-3b", "limiter acquire+complete ops/s"),
    "limiter_memory": ("3c", "limiter memory after 1,000,000 one-shot keys"),
    "redis_processes": ("4", "three processes sharing a Redis budget"),
    "bulk": ("5", "bulk head-of-line blocking"),
    "bulk_memory": ("6", "bulk download memory"),
    "lazy_tokens": ("7, 7m", "a long lazy input through fetch_many"),
    "instructions": ("7i", "row 7's two sides in CPU instructions (callgrind)"),
    "bulk_loopback": ("8", "download_many over loopback vs a bare gather loop"),
}


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Run idme_passback's benchmarks; print one Markdown report.",
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--quick", dest="quick", action="store_true", default=True, help="under 2 minutes"
    )
    mode.add_argument("--full", dest="quick", action="store_false", help="larger runs, ≤ 10 min")
    p.add_argument(
        "--only",
        nargs="+",
        metavar="NAME",
        choices=sorted(BENCHMARKS),
        help="run only these: " + ", ".join(BENCHMARKS),
    )
    p.add_argument("--output", type=Path, help="also write the report to this file")
    return p.parse_args(argv)


def _header(command: str, quick: bool, elapsed: float) -> str:
    info = machine_info()
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# idme_passback benchmarks",
        "",
        f"- date: {now}",
        f"- command: `{command}` ({'quick' if quick else 'full'} mode, {elapsed:.0f} s)",
        *(f"- {key}: {value}" for key, value in info.items()),
        "",
        "Every figure and its peer were measured in this invocation on this machine. "
        "'ratio' is ours / peer; 'met?' judges our figure against the target. "
        "Wall-clock figures on a shared 2-core machine move by several percent between runs.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    names = args.only or list(BENCHMARKS)
    command = "python -m benchmarks " + shlex.join(sys.argv[1:] if argv is None else argv)
    timeout = 300.0 if args.quick else 1800.0
    rows: list[Row] = []
    started = time.perf_counter()
    for name in (n for n in BENCHMARKS if n in names):
        row_ids, what = BENCHMARKS[name]
        print(f"running {name} ({what}) ...", file=sys.stderr, flush=True)
        begun = time.perf_counter()
        try:
            rows.extend(run_module(name, args.quick, timeout=timeout))
        except Exception as exc:  # one broken benchmark must not hide the others
            rows.append(error_row(row_ids, name, f"{type(exc).__name__}: {exc}"))
        print(f"  {name}: {time.perf_counter() - begun:.1f} s", file=sys.stderr, flush=True)
    elapsed = time.perf_counter() - started
    report = (
        _header(command.strip(), args.quick, elapsed)
        + "\n"
        + markdown_table(rows)
        + "\n### Notes\n\n"
        + notes(rows)
    )
    print(report)
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(report, encoding="utf-8")
        print(f"written to {args.output}", file=sys.stderr)
    failed = [r for r in rows if r.figure == "ERROR"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
