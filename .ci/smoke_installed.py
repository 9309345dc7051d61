"""Check the wheel as a user installs it: no extras, only the declared dependencies.

Run with the interpreter of a fresh venv that holds nothing but the wheel.
Exits non-zero, saying why, if any check fails.
"""

from __future__ import annotations

import subprocess
import sys

OPTIONAL = (
    "redis",
    "PIL",
    "uvicorn",
    "starlette",
    "trio",
    "joserfc",
    "sentry_sdk",
    "opentelemetry",
)


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - fixed arguments, our own interpreter
        [sys.executable, "-m", "idme_passback", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def main() -> int:
    import idme_passback  # noqa: PLC0415
    import idme_passback.cli  # noqa: PLC0415
    import idme_passback.testing  # noqa: PLC0415

    imported = sorted(name for name in OPTIONAL if name in sys.modules)
    if imported:
        print(f"FAIL: importing the package pulled in optional packages: {imported}")
        return 1
    version = run("--version")
    if version.returncode != 0 or idme_passback.__version__ not in version.stdout:
        print(f"FAIL: --version: exit {version.returncode}: {version.stdout!r} {version.stderr!r}")
        return 1
    helped = run("--help")
    if helped.returncode != 0 or "download-many" not in helped.stdout:
        print(f"FAIL: --help: exit {helped.returncode}")
        return 1
    demo = run("demo")
    if demo.returncode != 2 or "fake" not in demo.stderr:
        print(f"FAIL: demo without the fake extra: exit {demo.returncode}: {demo.stderr!r}")
        return 1
    print(
        f"ok: idme_passback {idme_passback.__version__} imports bare (no {', '.join(OPTIONAL)}); "
        "--version, --help; demo exits 2 naming the 'fake' extra"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
