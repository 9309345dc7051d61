"""The idme-passback command line, in-process against the fake server, and twice as a process."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import queue
import re
import shutil
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest

from idme_passback import PassbackClient, Progress, RateLimiter, RateLimitError, cli
from idme_passback.cli import ExitCode, ProgressLine, main, run
from idme_passback.cli._exitcodes import DESCRIPTIONS
from idme_passback.testing import DEFAULT_ACCESS_TOKEN, DEFAULT_API_TOKEN, FakePassbackServer

OTHER_API_TOKEN = "7654321-fd03-4ca4-a93e-aae6fce8e82b"
UNKNOWN_TOKEN = "d9ec9c13-f3e6-4b2e-a34f-e3f45b21206f"
DOCUMENTS = "/api/public/v3/documents/"
SECRET_ENV = ("IDME_API_TOKEN", "IDME_ACCESS_TOKEN", "IDME_PASSBACK_BASE_URL")


@attrs.frozen
class Outcome:
    code: int
    out: str
    err: str

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.startswith("idme-passback:")]


@pytest.fixture(autouse=True)
def environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with the fake's API token in the environment and nothing else set."""
    for name in SECRET_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("IDME_API_TOKEN", DEFAULT_API_TOKEN)


@pytest.fixture
def fake() -> FakePassbackServer:
    return FakePassbackServer()


async def cli_run(fake: FakePassbackServer, *argv: str, stdin: str = "") -> Outcome:
    out, err = io.StringIO(), io.StringIO()
    code = await run(
        list(argv),
        transport=httpx.ASGITransport(app=fake),
        stdin=io.StringIO(stdin),
        stdout=out,
        stderr=err,
    )
    return Outcome(code, out.getvalue(), err.getvalue())


def write_listing(tmp_path: Path, tokens: list[str]) -> Path:
    """A ``download-many`` input file: one token a line."""
    listing = tmp_path / "tokens.txt"
    listing.write_text("\n".join(tokens) + "\n")
    return listing


async def download(fake: FakePassbackServer, listing: Path, out: Path, *options: str) -> Outcome:
    """``download-many LISTING --out OUT OPTIONS`` against ``fake``."""
    return await cli_run(fake, "download-many", str(listing), "--out", str(out), *options)


def read_manifest(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# -- secrets ------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    "argv",
    [
        ["fetch", "--api-token", "SECRET-VALUE-1", "-o", "x.jpg"],
        ["fetch", "--api-token=SECRET-VALUE-1", "-o", "x.jpg"],
        ["attributes", "--access-token", "SECRET-VALUE-1"],
        ["download-many", "--out", "x", "--token=SECRET-VALUE-1"],
    ],
)
async def test_no_option_takes_a_secret_and_the_value_is_not_echoed(
    fake: FakePassbackServer, argv: list[str]
) -> None:
    result = await cli_run(fake, *argv)
    assert result.code == ExitCode.USAGE
    assert "SECRET-VALUE-1" not in result.err + result.out
    assert "never taken from the command line" in result.err
    assert fake.requests == []


@pytest.mark.anyio
async def test_api_token_is_not_an_abbreviation_of_api_token_file(
    fake: FakePassbackServer, tmp_path: Path
) -> None:
    # argparse would otherwise read '--api-token X' as '--api-token-file X'.
    result = await cli_run(fake, "attributes", "--api-token", str(tmp_path / "nope"))
    assert result.code == ExitCode.USAGE
    assert "unrecognized arguments: --api-token" in result.err


@pytest.mark.anyio
async def test_a_document_token_in_argv_is_refused_unechoed(
    fake: FakePassbackServer, tmp_path: Path
) -> None:
    token = fake.issue_document()
    result = await cli_run(fake, "fetch", token, "-o", str(tmp_path / "front.jpg"))
    assert result.code == ExitCode.USAGE
    assert token not in result.err
    assert "stdin" in result.err
    assert fake.requests == []


def test_missing_api_token_is_one_clear_line_and_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("IDME_API_TOKEN")
    assert main(["attributes"]) == ExitCode.USAGE
    err = capsys.readouterr().err
    assert err.splitlines() == [
        "idme-passback: error: no API token: set IDME_API_TOKEN or pass --api-token-file "
        "PATH (secrets are never taken from the command line)"
    ]


@pytest.mark.anyio
async def test_api_token_file_is_read_and_stripped(
    fake: FakePassbackServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("IDME_API_TOKEN")
    monkeypatch.setenv("IDME_ACCESS_TOKEN", fake.access_token)
    secret = tmp_path / "api-token"
    secret.write_text(f"  {fake.api_token}\n")
    result = await cli_run(fake, "attributes", "--api-token-file", str(secret))
    assert result.code == ExitCode.OK, result.err


@pytest.mark.anyio
async def test_an_unreadable_token_file_does_not_echo_its_path(fake: FakePassbackServer) -> None:
    # Someone may pass the token itself where the path belongs.
    result = await cli_run(fake, "attributes", "--api-token-file", UNKNOWN_TOKEN)
    assert result.code == ExitCode.USAGE
    assert UNKNOWN_TOKEN not in result.err


# -- attributes, fetch, refresh ----------------------------------------------------------------


@pytest.mark.anyio
async def test_attributes_prints_json_with_the_document_tokens(
    fake: FakePassbackServer, tmp_path: Path
) -> None:
    access = tmp_path / "access"
    access.write_text(DEFAULT_ACCESS_TOKEN)
    result = await cli_run(fake, "attributes", "--access-token-file", str(access))
    assert result.code == ExitCode.OK, result.err
    payload = json.loads(result.out)
    values = {item["handle"]: item["value"] for item in payload["attributes"]}
    assert values["fname"] == "Jane"
    assert fake.document_id(values["document_tokens"]["front"]) == 1
    assert fake.document_id(values["document_tokens"]["back"]) == 2
    assert payload["status"] == [{"group": "identity", "subgroups": ["IAL2"], "verified": True}]


@pytest.mark.anyio
async def test_attributes_without_an_access_token_exits_2(fake: FakePassbackServer) -> None:
    result = await cli_run(fake, "attributes")
    assert result.code == ExitCode.USAGE
    assert "IDME_ACCESS_TOKEN" in result.err
    assert fake.requests == []


@pytest.mark.anyio
async def test_fetch_reads_the_token_from_stdin_and_writes_the_image(
    fake: FakePassbackServer, tmp_path: Path
) -> None:
    token = fake.issue_document()
    target = tmp_path / "front.jpg"
    result = await cli_run(
        fake, "fetch", "-o", str(target), "--size", "300x200", stdin=token + "\n"
    )
    assert result.code == ExitCode.OK, result.err
    assert result.out.strip() == str(target)
    assert target.read_bytes() == fake.served_bytes(token, "300x200")


@pytest.mark.anyio
async def test_fetch_does_not_replace_a_file_unless_told(
    fake: FakePassbackServer, tmp_path: Path
) -> None:
    token = fake.issue_document()
    target = tmp_path / "front.jpg"
    target.write_bytes(b"mine")
    refused = await cli_run(fake, "fetch", "-", "-o", str(target), stdin=token)
    assert refused.code == ExitCode.USAGE
    assert target.read_bytes() == b"mine"
    assert fake.requests == []
    replaced = await cli_run(fake, "fetch", "-o", str(target), "--overwrite", stdin=token)
    assert replaced.code == ExitCode.OK, replaced.err
    assert target.read_bytes() == fake.served_bytes(token)


@pytest.mark.anyio
async def test_a_bad_size_exits_2_before_anything_is_sent(
    fake: FakePassbackServer, tmp_path: Path
) -> None:
    token = fake.issue_document()
    result = await cli_run(
        fake, "fetch", "-o", str(tmp_path / "x.jpg"), "--size", "50x50", stdin=token
    )
    assert result.code == ExitCode.USAGE
    assert "below the minimum of 100" in result.err
    assert fake.requests == []


@pytest.mark.anyio
async def test_refresh_prints_a_token_for_the_same_document(fake: FakePassbackServer) -> None:
    token = fake.issue_document()
    result = await cli_run(fake, "refresh", stdin=token)
    assert result.code == ExitCode.OK, result.err
    new_token = result.out.strip()
    assert new_token != token
    assert fake.document_id(new_token) == fake.document_id(token)


@pytest.mark.anyio
async def test_a_refused_api_token_exits_4_without_leaking_it(
    fake: FakePassbackServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("IDME_API_TOKEN", OTHER_API_TOKEN)
    token = fake.issue_document()
    result = await cli_run(fake, "fetch", "-o", str(tmp_path / "x.jpg"), stdin=token)
    assert result.code == ExitCode.AUTHENTICATION
    assert len(result.error_lines) == 1
    assert "401" in result.err
    assert "Traceback" not in result.err
    for secret in (OTHER_API_TOKEN, token):
        assert secret not in result.err


@pytest.mark.anyio
async def test_an_unknown_document_exits_5(fake: FakePassbackServer, tmp_path: Path) -> None:
    result = await cli_run(fake, "fetch", "-o", str(tmp_path / "x.jpg"), stdin=UNKNOWN_TOKEN)
    assert result.code == ExitCode.NOT_FOUND
    assert result.error_lines == [result.err.strip()]
    assert "404" in result.err
    assert UNKNOWN_TOKEN not in result.err
    assert not (tmp_path / "x.jpg").exists()


# -- download-many ----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_download_many_reports_each_bad_item_and_exits_3(
    fake: FakePassbackServer, tmp_path: Path
) -> None:
    good = [fake.issue_document() for _ in range(3)]
    bad_token = "bad/token-with-a-slash"
    csv_text = (
        "token,size,filename\n"
        f"{good[0]},,\n"
        f"{bad_token},,\n"
        f"{good[1]},300x200,named.jpg\n"
        f"{good[2]},50x50,\n"
        f"{fake.issue_document()},,\n"
    )
    out = tmp_path / "out"
    result = await cli_run(fake, "download-many", "--out", str(out), stdin=csv_text)

    assert result.code == ExitCode.ITEMS_FAILED, result.err
    records = sorted(read_manifest(out / "manifest.jsonl"), key=lambda record: record["index"])
    assert [r["status"] for r in records] == ["ok", "error", "ok", "error", "ok"]
    assert records[1]["error"] == "InvalidTokenError"
    assert records[3]["error"] == "InvalidSizeError"
    assert records[2]["size"] == "300x200"
    assert Path(records[2]["path"]) == (out / "named.jpg").resolve()
    assert (out / "named.jpg").read_bytes() == fake.served_bytes(good[1], "300x200")
    assert Path(records[0]["path"]).name.startswith("000000-")
    # The bad token and the bad size never cost a request.
    assert fake.count(endpoint="document") == 3
    assert "3 downloaded, 2 failed" in result.out
    assert "InvalidSizeError 1" in result.err


@pytest.mark.anyio
async def test_the_manifest_never_holds_a_whole_token(
    fake: FakePassbackServer, tmp_path: Path
) -> None:
    tokens = [fake.issue_document() for _ in range(3)] + [UNKNOWN_TOKEN, "bad/token-x"]
    out = tmp_path / "out"
    result = await cli_run(fake, "download-many", "--out", str(out), stdin="\n".join(tokens))
    assert result.code == ExitCode.ITEMS_FAILED
    text = (out / "manifest.jsonl").read_text(encoding="utf-8")
    for token in tokens:
        assert token not in text
    assert oct((out / "manifest.jsonl").stat().st_mode & 0o777) == "0o600"
    for token in tokens:
        assert token not in result.out + result.err


@pytest.mark.anyio
async def test_resume_skips_finished_items_and_retries_failed_ones(
    fake: FakePassbackServer, tmp_path: Path
) -> None:
    tokens = [fake.issue_document() for _ in range(4)]
    fake.script(tokens[2], [404])  # only the first request for it fails
    listing = write_listing(tmp_path, tokens)
    out = tmp_path / "out"

    first = await download(fake, listing, out)
    assert first.code == ExitCode.ITEMS_FAILED
    assert fake.count(endpoint="document") == 4

    again = await download(fake, listing, out, "--resume")
    assert again.code == ExitCode.OK, again.err
    assert fake.count(endpoint="document") == 5  # only the failed item was asked for again
    assert "1 downloaded, 0 failed, 3 skipped" in again.out
    last = read_manifest(out / "manifest.jsonl")[-1]
    assert (last["index"], last["status"]) == (2, "ok")
    # Named after its place in the input, as a first-run file would be.
    assert Path(last["path"]).name.startswith("000002-")
    assert Path(last["path"]).read_bytes() == fake.served_bytes(tokens[2])

    nothing_left = await download(fake, listing, out, "--resume")
    assert nothing_left.code == ExitCode.OK
    assert fake.count(endpoint="document") == 5


@pytest.mark.anyio
async def test_resume_fetches_again_an_item_whose_file_is_gone(
    fake: FakePassbackServer, tmp_path: Path
) -> None:
    token = fake.issue_document()
    out = tmp_path / "out"
    assert (await cli_run(fake, "download-many", "--out", str(out), stdin=token)).code == 0
    (path,) = out.glob("000000-*")
    path.unlink()
    again = await cli_run(fake, "download-many", "--out", str(out), "--resume", stdin=token)
    assert again.code == ExitCode.OK
    assert path.exists()
    assert fake.count(endpoint="document") == 2


@pytest.mark.anyio
async def test_download_many_names_files_after_their_image_type(
    fake: FakePassbackServer, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    result = await cli_run(fake, "download-many", "--out", str(out), stdin=fake.issue_document())
    assert result.code == ExitCode.OK
    (record,) = read_manifest(out / "manifest.jsonl")
    assert record["path"].endswith(".jpg")


@pytest.mark.anyio
async def test_an_existing_manifest_needs_resume_or_overwrite(
    fake: FakePassbackServer, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "manifest.jsonl").write_text('{"index": 0}\n')
    result = await cli_run(fake, "download-many", "--out", str(out), stdin=fake.issue_document())
    assert result.code == ExitCode.USAGE
    assert "--resume" in result.err
    assert fake.requests == []


@pytest.mark.anyio
async def test_download_many_stops_at_a_refused_api_token(
    fake: FakePassbackServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("IDME_API_TOKEN", OTHER_API_TOKEN)
    tokens = "\n".join(fake.issue_document() for _ in range(10))
    result = await cli_run(
        fake, "download-many", "--out", str(tmp_path / "o"), "--concurrency", "1", stdin=tokens
    )
    assert result.code == ExitCode.AUTHENTICATION
    assert "stopped early" in result.err
    assert fake.count(endpoint="document") < 10
    assert OTHER_API_TOKEN not in result.err


@pytest.mark.anyio
async def test_download_many_prints_plain_progress_lines_off_a_terminal(
    fake: FakePassbackServer, tmp_path: Path
) -> None:
    tokens = "\n".join(fake.issue_document() for _ in range(3))
    result = await cli_run(
        fake, "download-many", "--out", str(tmp_path / "o"), "--size", "300x200", stdin=tokens
    )
    assert result.code == ExitCode.OK, result.err
    assert re.search(r"^progress: 3/3 done, 0 failed, .* kB", result.err, re.MULTILINE)
    assert "\r" not in result.err
    assert {r["size"] for r in read_manifest(tmp_path / "o" / "manifest.jsonl")} == {"300x200"}


def test_progress_on_a_terminal_redraws_one_line() -> None:
    now = [0.0]
    stream = io.StringIO()
    progress = ProgressLine(stream, tty=True, clock=lambda: now[0])
    for done in range(1, 5):
        now[0] += 0.5
        progress(Progress(done=done, failed=1, total=4, bytes=done * 1500))
    progress.finish()
    text = stream.getvalue()
    assert text.count("\r") == 4
    assert text.endswith("\n")
    assert text.count("\n") == 1
    assert "[########################] 4/4 done, 1 failed, 6.0 kB, 2.0/s" in text


def test_progress_off_a_terminal_writes_every_n_items_and_the_last() -> None:
    stream = io.StringIO()
    progress = ProgressLine(stream, tty=False, every=2, interval=3600, clock=lambda: 1.0)
    for done in range(1, 6):
        progress(Progress(done=done, failed=0, total=None, bytes=0))
    progress.finish()
    assert [line.split(" done")[0] for line in stream.getvalue().splitlines()] == [
        "progress: 2/?",
        "progress: 4/?",
        "progress: 5/?",
    ]


# -- help and exit codes ----------------------------------------------------------------------


@pytest.mark.anyio
async def test_help_lists_every_exit_code_as_the_docstring_does(fake: FakePassbackServer) -> None:
    result = await cli_run(fake, "download-many", "--help")
    assert result.code == ExitCode.OK
    doc = cli.__doc__ or ""
    for code, text in DESCRIPTIONS.items():
        assert re.search(rf"^  {int(code)}\s+{re.escape(text)}$", result.out, re.MULTILINE)
        assert re.search(rf"^{int(code)}\s+{re.escape(text)}$", doc, re.MULTILINE)


# -- as a process ----------------------------------------------------------------------------


def _clean_env() -> dict[str, str]:
    return {name: value for name, value in os.environ.items() if name not in SECRET_ENV}


def test_python_m_demo_runs_the_whole_flow(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    done = subprocess.run(  # noqa: S603 - this interpreter, fixed arguments
        [sys.executable, "-m", "idme_passback", "demo", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
        env=_clean_env(),
        check=False,
    )
    assert done.returncode == 0, done.stderr
    for name in ("front-original.jpg", "front-300x200.jpg", "back-original.jpg"):
        assert str(out / name) in done.stdout
        assert (out / name).is_file()
    assert "got 300x189" in done.stdout
    assert "the fake answered 0 requests with 429" in done.stdout


@pytest.fixture
def served() -> Iterator[str]:
    """``idme-passback serve-fake --port 0`` in a process; yields its base URL."""
    with subprocess.Popen(
        [sys.executable, "-m", "idme_passback", "serve-fake", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_clean_env(),
    ) as process:
        lines: queue.Queue[str] = queue.Queue()

        def pump() -> None:
            for line in process.stdout or ():
                lines.put(line)

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        try:
            first = lines.get(timeout=10)
            match = re.search(r"http://127\.0\.0\.1:\d+/", first)
            assert match, first
            yield match.group(0)
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            reader.join(timeout=5)
        stderr = process.stderr.read() if process.stderr else ""
        # No access log: it would print the API token from each query string.
        assert DEFAULT_API_TOKEN not in stderr


def test_serve_fake_answers_raw_http(served: str) -> None:
    with httpx.Client(base_url=served, timeout=5) as http:
        attributes = http.get(
            "api/public/v3/attributes.json", params={"access_token": DEFAULT_ACCESS_TOKEN}
        )
        assert attributes.status_code == 200
        values = {a["handle"]: a["value"] for a in attributes.json()["attributes"]}
        front = values["document_tokens"]["front"]
        image = http.post(DOCUMENTS + front, params={"token": DEFAULT_API_TOKEN, "size": "300x200"})
        assert image.status_code == 200
        assert image.headers["content-type"] == "image/jpeg"
        assert image.content.startswith(b"\xff\xd8\xff")


# -- hostile input, hostile servers, torn manifests (issue 13) ------------------------------


def _no_traceback(outcome: Outcome) -> None:
    assert "Traceback" not in outcome.err + outcome.out
    assert len(outcome.error_lines) <= 2, outcome.err


@pytest.mark.anyio
async def test_a_row_that_is_not_utf8_fails_alone(fake: FakePassbackServer, tmp_path: Path) -> None:
    good = [fake.issue_document() for _ in range(2)]
    listing = tmp_path / "tokens.csv"
    listing.write_bytes(good[0].encode() + b"\n\xff\xfe not utf-8\n" + good[1].encode() + b"\n")
    out = tmp_path / "out"
    result = await download(fake, listing, out)
    _no_traceback(result)
    assert result.code == ExitCode.ITEMS_FAILED, result.err
    records = sorted(read_manifest(out / "manifest.jsonl"), key=lambda r: r["index"])
    assert [(r["index"], r["status"]) for r in records] == [(0, "ok"), (1, "error"), (2, "ok")]
    assert records[1]["error"] == "InvalidRow"
    assert "not UTF-8" in records[1]["message"]
    assert fake.count(endpoint="document") == 2


@pytest.mark.anyio
@pytest.mark.parametrize(
    "bad_row",
    ["x" * 200_000, "a\x00b", '"' + "y" * 70_000],
    ids=["a-200-kb-field", "a-nul", "an-endless-quote"],
)
async def test_a_row_that_is_not_csv_or_too_long_fails_alone(
    fake: FakePassbackServer, tmp_path: Path, bad_row: str
) -> None:
    # (A NUL is CSV to Python 3.11+, and then not a token: it fails alone either way.)
    good = [fake.issue_document() for _ in range(2)]
    out = tmp_path / "out"
    stdin = f"{good[0]}\n{bad_row}\n{good[1]}\n"
    result = await cli_run(fake, "download-many", "--out", str(out), stdin=stdin)
    _no_traceback(result)
    assert result.code == ExitCode.ITEMS_FAILED, result.err
    records = sorted(read_manifest(out / "manifest.jsonl"), key=lambda r: r["index"])
    assert [r["status"] for r in records] == ["ok", "error", "ok"]
    assert (
        records[1]["message"].startswith("line 2: ") or records[1]["error"] == "InvalidTokenError"
    )
    assert bad_row[:100] not in (out / "manifest.jsonl").read_text(encoding="utf-8")


@pytest.mark.anyio
async def test_a_deeply_nested_attributes_answer_is_one_line_and_exit_7(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("IDME_ACCESS_TOKEN", DEFAULT_ACCESS_TOKEN)
    deep = b'{"attributes": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    transport = httpx.MockTransport(
        lambda request: httpx.Response(
            200, content=deep, headers={"content-type": "application/json"}
        )
    )
    out, err = io.StringIO(), io.StringIO()
    code = await run(["attributes"], transport=transport, stdout=out, stderr=err)
    outcome = Outcome(code, out.getvalue(), err.getvalue())
    _no_traceback(outcome)
    assert code == ExitCode.UNAVAILABLE
    assert (
        outcome.error_lines
        == ["idme-passback: error: the attributes answer is nested too deeply to decode"]
        or "not JSON" in outcome.err
    )


@pytest.mark.anyio
async def test_an_error_the_cli_cannot_explain_is_called_a_bug_and_shown_only_on_request(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def broken(request: httpx.Request) -> httpx.Response:
        raise ZeroDivisionError("a bug in a transport")

    async def fetch() -> Outcome:
        out, err = io.StringIO(), io.StringIO()
        code = await run(
            ["fetch", "-o", str(tmp_path / "x.jpg")],
            transport=httpx.MockTransport(broken),
            stdin=io.StringIO(UNKNOWN_TOKEN),
            stdout=out,
            stderr=err,
        )
        return Outcome(code, out.getvalue(), err.getvalue())

    quiet = await fetch()
    assert quiet.code == ExitCode.ERROR
    assert "Traceback" not in quiet.err
    assert "internal error: ZeroDivisionError: a bug in a transport" in quiet.err
    assert "IDME_PASSBACK_DEBUG=1" in quiet.err
    monkeypatch.setenv(cli.DEBUG_ENV, "1")
    loud = await fetch()
    assert "Traceback" in loud.err
    assert UNKNOWN_TOKEN not in loud.err  # the traceback is scrubbed like every line


@pytest.mark.anyio
@pytest.mark.parametrize(
    "argv",
    [
        ["serve-fake", "--port", "99999"],
        ["serve-fake", "--port", "-1"],
        ["serve-fake", "--error-rate", "2"],
        ["serve-fake", "--period", "0"],
        ["serve-fake", "--latency", "nan"],
        ["serve-fake", "--limit", "0"],
        ["serve-fake", "--original-size", "big"],
        ["serve-fake", "--error-rate", "0.6", "--cut-body-rate", "0.6"],
        ["serve-fake", "--certfile", "cert.pem"],
        ["serve-fake", "--certfile", "missing.pem", "--keyfile", "missing.pem"],
    ],
)
async def test_bad_serve_fake_options_are_one_line_and_exit_2(
    fake: FakePassbackServer, argv: list[str]
) -> None:
    outcome = await cli_run(fake, *argv)
    _no_traceback(outcome)
    assert outcome.code == ExitCode.USAGE, outcome.err
    assert len(outcome.error_lines) == 1


@pytest.mark.anyio
async def test_resume_repairs_a_manifest_cut_mid_line(
    fake: FakePassbackServer, tmp_path: Path
) -> None:
    tokens = [fake.issue_document() for _ in range(4)]
    listing = write_listing(tmp_path, tokens)
    out = tmp_path / "out"
    assert (await download(fake, listing, out)).code == 0
    manifest = out / "manifest.jsonl"
    text = manifest.read_bytes()
    manifest.write_bytes(text[: len(text) - 40])  # the last record, cut by a crash

    resumed = await download(fake, listing, out, "--resume")
    _no_traceback(resumed)
    assert resumed.code == ExitCode.OK, resumed.err
    assert "last line was cut short" in resumed.err
    assert fake.count(endpoint="document") == 4  # the cut record's file was complete on disk
    records = read_manifest(manifest)  # every line whole
    assert sorted(r["index"] for r in records) == [0, 1, 2, 3]
    again = await download(fake, listing, out, "--resume")
    assert again.code == ExitCode.OK, again.err
    assert "0 downloaded, 0 failed, 4 skipped" in again.out
    assert sorted(p.name for p in out.iterdir() if p.suffix == ".jpg") == sorted(
        Path(r["path"]).name for r in records
    )


@pytest.mark.anyio
async def test_resume_records_complete_files_the_manifest_never_heard_of(
    fake: FakePassbackServer, tmp_path: Path
) -> None:
    tokens = [fake.issue_document() for _ in range(5)]
    listing = write_listing(tmp_path, tokens)
    out = tmp_path / "out"
    assert (await download(fake, listing, out)).code == 0
    manifest = out / "manifest.jsonl"
    lines = manifest.read_text(encoding="utf-8").splitlines(keepends=True)
    manifest.write_text("".join(lines[:2]), encoding="utf-8")  # killed before recording 3

    resumed = await download(fake, listing, out, "--resume")
    assert resumed.code == ExitCode.OK, resumed.err
    assert fake.count(endpoint="document") == 5  # nothing fetched twice
    assert "3 found complete on disk" in resumed.out
    records = read_manifest(manifest)
    assert sorted(r["index"] for r in records) == [0, 1, 2, 3, 4]
    for record in records:
        path = Path(record["path"])
        assert path.stat().st_size == record["bytes"]
        assert record["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert sum(bool(r.get("recovered")) for r in records) == 3


def test_stdin_that_is_not_utf8_is_one_line_and_exit_2(tmp_path: Path) -> None:
    done = subprocess.run(  # noqa: S603 - this interpreter, fixed arguments
        [sys.executable, "-m", "idme_passback", "download-many", "--out", str(tmp_path / "o")],
        input=b"\xff\xfe\xfa\n",
        capture_output=True,
        timeout=60,
        env={**_clean_env(), "IDME_API_TOKEN": DEFAULT_API_TOKEN, "PYTHONIOENCODING": "utf-8"},
        check=False,
    )
    err = done.stderr.decode()
    assert done.returncode == ExitCode.USAGE, err
    assert "Traceback" not in err
    assert "not UTF-8" in err


@contextlib.contextmanager
def serving_fake(*options: str) -> Iterator[tuple[str, list[str]]]:
    """``idme-passback serve-fake --port 0 OPTIONS`` in a process; yields its URL and output."""
    with subprocess.Popen(  # noqa: S603 - this interpreter, fixed arguments
        [sys.executable, "-m", "idme_passback", "serve-fake", "--port", "0", *options],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_clean_env(),
    ) as process:
        lines: queue.Queue[str] = queue.Queue()
        seen: list[str] = []

        def pump() -> None:
            for line in process.stdout or ():
                lines.put(line)

        threading.Thread(target=pump, daemon=True).start()
        try:
            first = lines.get(timeout=10)
            seen.append(first)
            match = re.search(r"https?://127\.0\.0\.1:\d+/", first)
            assert match, first + (process.stderr.read() if process.stderr else "")
            seen.append(lines.get(timeout=10))
            yield match.group(0), seen
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.mark.anyio
async def test_serve_fake_takes_the_fakes_limit_period_algorithm_latency_and_faults() -> None:
    with serving_fake(
        "--limit", "3", "--period", "3600", "--algorithm", "fixed", "--latency", "0.2",
        "--original-size", "200x120", "--image-format", "PNG", "--seed", "7",
        "--throttle-rate", "0", "--error-rate", "0",
    ) as (url, lines):  # fmt: skip
        assert "3 document requests per 3600 s per document (fixed)" in lines[1]
        async with PassbackClient(
            DEFAULT_API_TOKEN,
            base_url=url,
            limiter=RateLimiter(limit=10, period=3600.0),
            max_retries=0,
        ) as client:
            attributes = await client.get_attributes(DEFAULT_ACCESS_TOKEN)
            front = attributes.document_tokens.front
            started = time.monotonic()
            image = await client.get_document(front)
            assert time.monotonic() - started >= 0.2
            assert image.media_type == "image/png"
            await client.get_document(front)
            await client.get_document(front)
            with pytest.raises(RateLimitError):
                await client.get_document(front)


@pytest.mark.anyio
async def test_serve_fake_serves_https_with_a_certificate_and_key(tmp_path: Path) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(  # noqa: S603 - a fixed binary, fixed arguments
        [
            openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    with serving_fake("--certfile", str(cert), "--keyfile", str(key)) as (url, _):
        assert url.startswith("https://")
        context = ssl.create_default_context(cafile=str(cert))
        async with (
            httpx.AsyncClient(verify=context) as http,
            PassbackClient(DEFAULT_API_TOKEN, base_url=url, http_client=http) as client,
        ):
            attributes = await client.get_attributes(DEFAULT_ACCESS_TOKEN)
            image = await client.get_document(attributes.document_tokens.front)
    assert image.content.startswith(b"\xff\xd8\xff")


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_serve_fake_listens_so_that_every_connection_turns_nagle_off(host: str) -> None:
    # With Nagle's algorithm on, each answer (headers, then body: two writes) waits
    # ~40 ms for the client's delayed ACK. asyncio turns it off on the connections
    # it accepts only when the listening socket says it is TCP: check exactly that,
    # on a connection accepted the way uvicorn accepts them.
    import asyncio  # noqa: PLC0415 - this one test drives a bare asyncio server
    import socket  # noqa: PLC0415

    from idme_passback.cli._serve import _listen  # noqa: PLC0415 - the socket serve-fake uses

    try:
        listener = _listen(host, 0)
    except cli.UsageError:
        pytest.skip(f"no {host} here")
    nodelay: list[int] = []

    async def main() -> None:
        done = asyncio.Event()

        def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            conn = writer.get_extra_info("socket")
            nodelay.append(conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()
            done.set()

        server = await asyncio.start_server(accepted, sock=listener)
        async with server:
            port = listener.getsockname()[1]
            _, writer = await asyncio.open_connection(host, port)
            await asyncio.wait_for(done.wait(), 10)
            writer.close()

    asyncio.run(main())
    assert listener.proto == socket.IPPROTO_TCP
    assert len(nodelay) == 1
    assert nodelay[0] != 0
