"""``python -m idme_passback``: the command line (see :mod:`idme_passback.cli`)."""

from __future__ import annotations

from .cli import main

__all__ = ["main"]

if __name__ == "__main__":
    raise SystemExit(main())
