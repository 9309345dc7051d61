"""Files on a disk that does not cooperate: checks before a request is spent, and safe writes.

Each document request spends one of the document's two requests a minute,
so whatever would make the write fail is found out before it is sent: a
folder that refuses files, a target that is taken (a dangling symlink
too), a name the file system cannot hold. The write itself goes through a
descriptor of the folder opened before the request, into a locked
temporary file that the next run removes if its writer died.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from idme_passback import (
    DocumentRequest,
    FileWriteError,
    FolderNotWritableError,
    InvalidFilenameError,
    PassbackClient,
    TargetExistsError,
    TargetIsAFolderError,
)
from idme_passback._files import PART_SUFFIX, Folder
from idme_passback.testing import FakePassbackServer

from ._loopback import serve
from .conftest import API_TOKEN, FRONT, JPEG

pytestmark = pytest.mark.anyio


@pytest.fixture
def fake() -> FakePassbackServer:
    return FakePassbackServer(original_size=(160, 100))


@pytest.fixture
async def client(fake: FakePassbackServer) -> Any:
    async with PassbackClient(
        fake.api_token, base_url="http://fake/", transport=httpx.ASGITransport(app=fake)
    ) as passback:
        yield passback


def _names(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


# -- checks before a request is spent ---------------------------------------------------------


@contextlib.contextmanager
def unwritable(folder: Path) -> Iterator[None]:
    """Make ``folder`` refuse new files, even to root (immutable), or skip."""
    if os.geteuid() != 0:
        folder.chmod(0o500)
        try:
            yield
        finally:
            folder.chmod(0o700)
        return
    chattr = shutil.which("chattr")
    if chattr is None or subprocess.run([chattr, "+i", str(folder)], check=False).returncode:  # noqa: S603 - a fixed binary on our own folder
        pytest.skip("running as root without chattr +i: no folder refuses root's files")
    try:
        yield
    finally:
        subprocess.run([chattr, "-i", str(folder)], check=True)  # noqa: S603 - as above


async def test_a_folder_that_refuses_files_spends_no_request(
    client: PassbackClient, fake: FakePassbackServer, tmp_path: Path
) -> None:
    token = fake.issue_document()
    with unwritable(tmp_path):
        with pytest.raises(FolderNotWritableError) as caught:
            await client.download_document(token, tmp_path / "front.jpg")
        async with client.download_many([token], tmp_path) as job:
            [result] = [result async for result in job]
    assert isinstance(caught.value, PermissionError)
    assert isinstance(result.error, FolderNotWritableError)
    assert fake.requests == []
    assert _names(tmp_path) == []


async def test_a_folder_that_stops_taking_files_is_proved_again_before_the_next_request(
    client: PassbackClient, fake: FakePassbackServer, tmp_path: Path
) -> None:
    tokens = [fake.issue_document() for _ in range(3)]
    with contextlib.ExitStack() as stack:

        def items() -> Iterator[str]:
            yield tokens[0]
            yield tokens[1]
            # Read ahead of the second item's turn: the folder refuses files from now.
            stack.enter_context(unwritable(tmp_path))
            yield tokens[2]

        async with client.download_many(items(), tmp_path, concurrency=1) as job:
            results = sorted([result async for result in job], key=lambda r: r.index)
    first, second, third = results
    assert first.ok
    # The folder was proved once, so the second item's request went out and its
    # write failed; that failure has the third proved again: it spends nothing.
    assert isinstance(second.error, OSError)
    assert isinstance(third.error, FolderNotWritableError)
    assert len(fake.requests) == 2
    assert first.path is not None
    assert _names(tmp_path) == [first.path.name]  # no partial file of the second


@pytest.mark.parametrize("access", ["working", "refusing"])
async def test_a_dangling_symlink_is_not_a_free_target(
    client: PassbackClient,
    fake: FakePassbackServer,
    tmp_path: Path,
    access: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if access == "refusing":
        # A system whose faccessat refuses the no-follow form (an old musl or kernel,
        # a seccomp filter): os.access says False for every name. lstat answers then.
        monkeypatch.setattr(os, "access", lambda *args, **kwargs: False)
    token = fake.issue_document()
    (tmp_path / "front.jpg").symlink_to(tmp_path / "nowhere")
    with pytest.raises(TargetExistsError, match="symlink") as caught:
        await client.download_document(token, tmp_path / "front.jpg")
    assert isinstance(caught.value, FileExistsError)
    stem = f"000000-{token[:6]}"
    (tmp_path / f"{stem}.png").symlink_to(tmp_path / "nowhere")
    async with client.download_many([token], tmp_path) as job:
        [result] = [result async for result in job]
    assert isinstance(result.error, TargetExistsError)
    assert fake.requests == []
    assert not (tmp_path / "nowhere").exists()


async def test_a_name_longer_than_the_file_system_allows_spends_no_request(
    client: PassbackClient, fake: FakePassbackServer, tmp_path: Path
) -> None:
    token = fake.issue_document()
    name = "é" * 200 + ".jpg"  # 404 bytes of UTF-8
    with pytest.raises(InvalidFilenameError, match="404 bytes") as caught:
        await client.download_document(token, tmp_path / name)
    assert isinstance(caught.value, ValueError)
    good = fake.issue_document()
    items = [DocumentRequest(token, filename="a" * 250 + ".jpg"), good]
    async with client.download_many(items, tmp_path) as job:
        results = sorted([result async for result in job], key=lambda r: r.index)
    assert isinstance(results[0].error, InvalidFilenameError)  # before any request
    assert results[1].ok
    assert fake.count(endpoint="document") == 1


@pytest.mark.parametrize(
    "name", ["\ud800.jpg", ".front.jpg" + PART_SUFFIX], ids=["unencodable", "a-temporary-name"]
)
async def test_a_name_that_cannot_be_ours_spends_no_request(
    client: PassbackClient, fake: FakePassbackServer, tmp_path: Path, name: str
) -> None:
    with pytest.raises(InvalidFilenameError):
        await client.download_document(fake.issue_document(), tmp_path / name)
    assert fake.requests == []


async def test_a_folder_as_the_target_spends_no_request(
    client: PassbackClient, fake: FakePassbackServer, tmp_path: Path
) -> None:
    (tmp_path / "front.jpg").mkdir()
    for overwrite in (False, True):
        with pytest.raises(TargetIsAFolderError):
            await client.download_document(
                fake.issue_document(), tmp_path / "front.jpg", overwrite=overwrite
            )
    assert fake.requests == []


# -- writing through the folder's descriptor ---------------------------------------------------


async def test_swapping_the_folder_for_a_symlink_mid_request_moves_nothing(
    fake: FakePassbackServer, tmp_path: Path
) -> None:
    out, moved, elsewhere = tmp_path / "out", tmp_path / "moved", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()

    async def swapping(scope: dict[str, Any], receive: Any, send: Any) -> None:
        # Between the checks and the write: the folder's path now leads elsewhere.
        out.rename(moved)
        out.symlink_to(elsewhere, target_is_directory=True)
        await fake(scope, receive, send)

    token = fake.issue_document()
    async with PassbackClient(
        fake.api_token, base_url="http://fake/", transport=httpx.ASGITransport(app=swapping)
    ) as client:
        await client.download_document(token, out / "front.jpg")
    assert _names(elsewhere) == []
    assert _names(moved) == ["front.jpg"]
    assert (moved / "front.jpg").read_bytes() == fake.served_bytes(token)


# -- temporary files: locked while written, removed when their writer died ---------------------


def _part(folder: Path, name: str) -> Path:
    return folder / f".{name}{PART_SUFFIX}"


async def test_a_dead_writers_temporary_file_is_removed_by_the_next_write(
    client: PassbackClient, fake: FakePassbackServer, tmp_path: Path
) -> None:
    stale = _part(tmp_path, "front.jpg")
    stale.write_bytes(b"half an identity document")
    token = fake.issue_document()
    await client.download_document(token, tmp_path / "front.jpg")
    assert _names(tmp_path) == ["front.jpg"]
    assert (tmp_path / "front.jpg").read_bytes() == fake.served_bytes(token)


async def test_a_live_writers_temporary_file_is_left_alone(
    client: PassbackClient, fake: FakePassbackServer, tmp_path: Path
) -> None:
    live = _part(tmp_path, "front.jpg")
    live.write_bytes(b"being written")
    with live.open("rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # as a writer in another process holds it
        with pytest.raises(TargetExistsError, match="another download"):
            await client.download_document(fake.issue_document(), tmp_path / "front.jpg")
        async with client.download_many([], tmp_path) as job:
            assert [result async for result in job] == []
        assert live.read_bytes() == b"being written"
    assert fake.requests == []


@pytest.mark.parametrize("extension", [".jpg", ".webp"])
async def test_a_bulk_item_whose_file_a_live_writer_holds_is_refused_before_sending(
    client: PassbackClient, fake: FakePassbackServer, tmp_path: Path, extension: str
) -> None:
    # Under the item's own name or another image extension of it: no request either way.
    tokens = [fake.issue_document(), fake.issue_document()]
    live = _part(tmp_path, f"000000-{tokens[0][:6]}{extension}")
    live.write_bytes(b"being written")
    with live.open("rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # as a writer in another process holds it
        async with client.download_many(tokens, tmp_path) as job:
            results = sorted([result async for result in job], key=lambda r: r.index)
        assert live.read_bytes() == b"being written"
    assert isinstance(results[0].error, TargetExistsError)
    assert "another download" in str(results[0].error)
    assert results[1].ok
    assert [r.document for r in fake.requests if r.endpoint == "document"] == [
        fake.document_id(tokens[1])
    ]


async def test_a_bulk_job_sweeps_only_the_stale_temporary_files_that_are_ours(
    client: PassbackClient, tmp_path: Path
) -> None:
    stale = [_part(tmp_path, f"{i:06d}-abcdef.jpg") for i in range(3)]
    for path in stale:
        path.write_bytes(b"cut short")
    locked = _part(tmp_path, "locked.jpg")
    locked.write_bytes(b"live")
    kept_target = tmp_path / "precious.txt"
    kept_target.write_bytes(b"not ours")
    symlink = _part(tmp_path, "evil.jpg")
    symlink.symlink_to(kept_target)
    folder_named_so = _part(tmp_path, "folder.jpg")
    folder_named_so.mkdir()
    theirs = _part(tmp_path, "theirs.jpg")
    theirs.write_bytes(b"another user's")
    if os.geteuid() == 0:
        os.chown(theirs, 65534, 65534)
    legacy_old, legacy_new = (
        tmp_path / ".idme-passback-old.part",
        tmp_path / ".idme-passback-new.part",
    )
    legacy_old.write_bytes(b"from an old release")
    legacy_new.write_bytes(b"maybe still written")
    hour_ago = time.time() - 3700
    os.utime(legacy_old, (hour_ago, hour_ago))
    unrelated = tmp_path / "notes.part"
    unrelated.write_bytes(b"the user's")
    with locked.open("rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        async with client.download_many([], tmp_path) as job:
            assert [result async for result in job] == []
    left = set(_names(tmp_path))
    assert not any(path.name in left for path in stale)
    assert legacy_old.name not in left
    expected = {locked, symlink, folder_named_so, legacy_new, unrelated, kept_target}
    if os.geteuid() == 0:
        expected.add(theirs)
    assert {path.name for path in expected} <= left
    assert kept_target.read_bytes() == b"not ours"


async def test_a_disk_that_fails_midway_is_a_typed_error_and_leaves_nothing(
    client: PassbackClient,
    fake: FakePassbackServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_write = os.write
    calls = 0

    def full(fd: int, data: Any) -> int:
        nonlocal calls
        calls += 1
        if calls > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data[:10])

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(FileWriteError) as caught:
        await client.download_document(fake.issue_document(), tmp_path / "front.jpg")
    monkeypatch.undo()
    assert isinstance(caught.value, OSError)
    assert caught.value.errno == errno.ENOSPC
    assert "No space left" in str(caught.value)
    assert _names(tmp_path) == []


_KILLED_WRITER = """
import asyncio, sys
from idme_passback import PassbackClient

async def main():
    async with PassbackClient(sys.argv[1], base_url=sys.argv[2], max_retries=0) as client:
        await client.download_document(sys.argv[3], sys.argv[4])

asyncio.run(main())
"""


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # one process kill is enough
async def test_a_download_killed_outright_is_cleaned_up_by_the_next_run(
    anyio_backend: str, tmp_path: Path
) -> None:
    released = threading.Event()
    body = JPEG * 400

    async def stalling(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"image/jpeg")],
            }
        )
        await send({"type": "http.response.body", "body": body[:5000], "more_body": True})
        while not released.is_set():  # the first client is killed meanwhile
            await anyio.sleep(0.02)
        await send({"type": "http.response.body", "body": body[5000:]})

    target = tmp_path / "front.jpg"
    part = _part(tmp_path, "front.jpg")
    with serve(stalling) as url:
        process = subprocess.Popen(  # noqa: S603 - this interpreter, our script
            [
                sys.executable,
                "-c",
                textwrap.dedent(_KILLED_WRITER),
                API_TOKEN,
                url,
                FRONT,
                str(target),
            ]
        )
        try:
            with anyio.fail_after(20):
                while not (part.exists() and part.stat().st_size >= 5000):
                    await anyio.sleep(0.02)
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)
        assert _names(tmp_path) == [part.name]  # half an identity document, left behind
        released.set()
        async with PassbackClient(API_TOKEN, base_url=url) as client:
            await client.download_document(FRONT, target)
    assert _names(tmp_path) == ["front.jpg"]
    assert target.read_bytes() == body


def test_a_folder_is_opened_once_and_held() -> None:
    with Folder.open(".") as folder:
        assert folder.name_max >= 14
    assert repr(folder) == "Folder('.')"


async def test_an_item_refused_on_a_name_in_writing_leaves_the_writers_claim(
    tmp_path: Path,
) -> None:
    # a writes same.jpg slowly; b, checked before a's claim, is refused when it writes;
    # c, checked after, must still be refused before its request: b took nothing away.
    tokens = {"a": "a" * 32, "b": "b" * 32, "c": "c" * 32}
    sent: list[str] = []
    release = anyio.Event()
    part = tmp_path / f".same.jpg{PART_SUFFIX}"

    async def slow_body() -> AsyncIterator[bytes]:
        yield JPEG[:16]
        await release.wait()
        yield JPEG[16:]

    async def handler(request: httpx.Request) -> httpx.Response:
        who = next(k for k, v in tokens.items() if request.url.path.endswith(v))
        sent.append(who)
        if who == "a":
            while "b" not in sent:  # a answers once b has passed its checks and is sent
                await anyio.sleep(0)
            return httpx.Response(200, content=slow_body())
        while not part.exists():  # b answers once a is writing
            await anyio.sleep(0)
        return httpx.Response(200, content=JPEG)

    items = [DocumentRequest(tokens[k], filename="same.jpg") for k in "abc"]
    results = {}
    async with (
        PassbackClient(API_TOKEN, transport=httpx.MockTransport(handler)) as client,
        client.download_many(items, tmp_path, concurrency=2) as job,
    ):
        async for result in job:
            results[result.index] = result
            if result.index == 2:
                release.set()
    assert sent == ["a", "b"]
    assert results[0].ok
    assert isinstance(results[1].error, TargetExistsError)
    assert isinstance(results[2].error, TargetExistsError)
    assert (tmp_path / "same.jpg").read_bytes() == JPEG


async def test_a_writer_that_starts_mid_job_is_refused_when_the_item_writes(
    tmp_path: Path,
) -> None:
    # Not known at the job's start, so found at the write (after the request): nothing
    # of the other writer's is touched.
    live = tmp_path / f".late.jpg{PART_SUFFIX}"
    with contextlib.ExitStack() as stack:

        def handler(request: httpx.Request) -> httpx.Response:
            held = stack.enter_context(live.open("wb"))
            held.write(b"being written")
            held.flush()
            fcntl.flock(held, fcntl.LOCK_EX)  # as a writer in another process holds it
            return httpx.Response(200, content=JPEG)

        items = [DocumentRequest("d" * 32, filename="late.jpg")]
        async with (
            PassbackClient(API_TOKEN, transport=httpx.MockTransport(handler)) as client,
            client.download_many(items, tmp_path) as job,
        ):
            [result] = [result async for result in job]
        assert isinstance(result.error, TargetExistsError)
        assert "another download" in str(result.error)
        assert live.read_bytes() == b"being written"
    assert not (tmp_path / "late.jpg").exists()


async def test_two_items_naming_one_file_write_it_once(
    client: PassbackClient, fake: FakePassbackServer, tmp_path: Path
) -> None:
    first, second = fake.issue_document(), fake.issue_document()
    items = [
        DocumentRequest(first, filename="same.jpg"),
        DocumentRequest(second, filename="same.jpg"),
    ]
    async with client.download_many(items, tmp_path, concurrency=2) as job:
        results = [result async for result in job]
    assert sorted(result.ok for result in results) == [False, True]
    [refused] = [result for result in results if not result.ok]
    assert isinstance(refused.error, TargetExistsError)
    [written] = [result for result in results if result.ok]
    assert (tmp_path / "same.jpg").read_bytes() == fake.served_bytes(written.token)
    assert _names(tmp_path) == ["same.jpg"]
