"""Test doubles for the Document Passback API: a fake server and a fake clock.

Example::

    fake = FakePassbackServer(clock=FakeClock())
    client = PassbackClient(fake.api_token, base_url="http://fake/",
                            transport=httpx.ASGITransport(app=fake))

The fake is a plain ASGI 3 application: use it in-process through
``httpx.ASGITransport`` or serve it on loopback with uvicorn. Pytest users get
it as the ``passback_fake`` fixture. Drawing images needs Pillow
(``pip install idme-passback[fake]``).
"""

from __future__ import annotations

from ._clock import FakeClock, wait_all_tasks_blocked
from ._server import (
    DEFAULT_ACCESS_TOKEN,
    DEFAULT_API_TOKEN,
    Endpoint,
    FakePassbackServer,
    RequestRecord,
    ScriptStep,
)

__all__ = [
    "DEFAULT_ACCESS_TOKEN",
    "DEFAULT_API_TOKEN",
    "Endpoint",
    "FakeClock",
    "FakePassbackServer",
    "RequestRecord",
    "ScriptStep",
    "wait_all_tasks_blocked",
]
