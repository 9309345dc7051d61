"""Test doubles for the Document Passback API: a fake server and a fake clock.

Example::

    fake = FakePassbackServer(clock=FakeClock())
    client = PassbackClient(fake.api_token, base_url="http://fake/",
                            transport=httpx.ASGITransport(app=fake))

The fake is a plain ASGI 3 application: use it in-process through
``httpx.ASGITransport`` or serve it on loopback with uvicorn. Pytest users get
it as the ``passback_fake`` fixture. Drawing images needs Pillow
(``pip install idme-passback[fake]``).

The fake is an ID.me in a box: its :class:`FakeIdMe` (``fake.idme``) runs the
OAuth login (``fake.client_id``, ``fake.client_secret``), the OpenID Connect
keys, and the attributes answer as JSON, JWT or JWE (those two need
``pip install idme-passback[jose]``).
"""

from __future__ import annotations

from ._clock import FakeClock, wait_all_tasks_blocked
from ._idme import (
    DEFAULT_CLIENT_ID,
    DEFAULT_CLIENT_SECRET,
    AttributesFormat,
    DocumentBack,
    FakeIdMe,
    IdMeEndpoint,
)
from ._idme_keys import FakeKeys
from ._server import DEFAULT_ACCESS_TOKEN, DEFAULT_API_TOKEN, FakePassbackServer
from ._wire import Endpoint, RequestRecord, ScriptStep

__all__ = [
    "DEFAULT_ACCESS_TOKEN",
    "DEFAULT_API_TOKEN",
    "DEFAULT_CLIENT_ID",
    "DEFAULT_CLIENT_SECRET",
    "AttributesFormat",
    "DocumentBack",
    "Endpoint",
    "FakeClock",
    "FakeIdMe",
    "FakeKeys",
    "FakePassbackServer",
    "IdMeEndpoint",
    "RequestRecord",
    "ScriptStep",
    "wait_all_tasks_blocked",
]
