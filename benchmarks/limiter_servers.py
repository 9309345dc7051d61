"""Rows 2a-2c: the limiter against a server counting by sliding window, fixed window, bucket.

20 documents x 5 requests, limit 2 per 1 s period, all 100 calls launched
at once through ``client.get_document`` (``max_retries=0``: a 429 is an
error, not a silent retry). The fake runs in-process (``httpx.ASGITransport``)
and sleeps a random 20-50 ms per request after counting it. The peer gates
the same requests with one ``aiolimiter.AsyncLimiter(2, 1.0)`` per document
around a raw httpx POST.

Ideal makespan: 5 requests at 2 per period need 2 periods, plus one
latency for the last answer: 2 periods of 1 s + 50 ms (the latency's upper bound).
"""

from __future__ import annotations

import asyncio
import random
import time

import httpx
from aiolimiter import AsyncLimiter

from benchmarks._util import API_TOKEN, DOCUMENT_PATH, FAKE_BASE, Row, emit, jpeg_body, parser
from idme_passback import PassbackClient, RateLimiter, RateLimitError
from idme_passback.testing import FakePassbackServer

DOCUMENTS = 20
PER_DOCUMENT = 5
LIMIT = 2
PERIOD = 1.0
LATENCY = (0.020, 0.050)
IDEAL = 2 * PERIOD + LATENCY[1]
BODY = jpeg_body(2048)
_DESCRIPTION = (
    f"In-process fake (`httpx.ASGITransport`), latency uniform {LATENCY[0] * 1000:.0f}-"
    f"{LATENCY[1] * 1000:.0f} ms (seeded), `max_retries=0`. Ideal = 2 periods + the latency's "
    "upper bound. Our limiter cools a token from the *response*, so a document's chain is "
    "at least 2 periods + 3 latencies (≤ 2.15 s here). Peer: one `aiolimiter.AsyncLimiter(2, "
    "1.0)` per document around a raw httpx POST. "
)


def _fake(algorithm: str, seed: int) -> tuple[FakePassbackServer, list[str]]:
    rng = random.Random(seed)
    fake = FakePassbackServer(
        API_TOKEN,
        limit=LIMIT,
        period=PERIOD,
        algorithm=algorithm,  # type: ignore[arg-type]
        latency=lambda: rng.uniform(*LATENCY),
        image_bytes=BODY,
        seed=seed,
    )
    tokens = [fake.issue_document() for _ in range(DOCUMENTS)]
    return fake, tokens


def _calls(tokens: list[str]) -> list[str]:
    return [token for _ in range(PER_DOCUMENT) for token in tokens]


async def _ours(algorithm: str) -> dict[str, float]:
    fake, tokens = _fake(algorithm, seed=7)
    async with PassbackClient(
        API_TOKEN,
        base_url=FAKE_BASE,
        transport=httpx.ASGITransport(app=fake),
        limiter=RateLimiter(LIMIT, PERIOD),
        max_retries=0,
    ) as client:
        start = time.perf_counter()
        results = await asyncio.gather(
            *(client.get_document(t) for t in _calls(tokens)), return_exceptions=True
        )
        makespan = time.perf_counter() - start
    return {
        "makespan": makespan,
        "e429": sum(isinstance(r, RateLimitError) for r in results),
        "errors": sum(
            isinstance(r, BaseException) and not isinstance(r, RateLimitError) for r in results
        ),
        "server_429": fake.count(endpoint="document", status=429),
        "max_in_window": fake.max_in_window(),
    }


async def _peer(algorithm: str) -> dict[str, float]:
    fake, tokens = _fake(algorithm, seed=7)
    limiters = {t: AsyncLimiter(LIMIT, PERIOD) for t in tokens}

    async def one(http: httpx.AsyncClient, token: str) -> int:
        async with limiters[token]:
            response = await http.post(
                f"{FAKE_BASE}{DOCUMENT_PATH}{token}", params={"token": API_TOKEN}
            )
            await response.aread()
        return response.status_code

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=fake)) as http:
        start = time.perf_counter()
        statuses = await asyncio.gather(*(one(http, t) for t in _calls(tokens)))
        makespan = time.perf_counter() - start
    return {
        "makespan": makespan,
        "e429": sum(s == 429 for s in statuses),
        "errors": sum(s not in (200, 429) for s in statuses),
        "server_429": fake.count(endpoint="document", status=429),
        "max_in_window": fake.max_in_window(),
    }


async def measure(quick: bool) -> list[Row]:
    rows = []
    for letter, algorithm in zip("abc", ("sliding", "fixed", "bucket"), strict=True):
        ours = await _ours(algorithm)
        peer = await _peer(algorithm)
        over = ours["makespan"] / IDEAL
        rows.append(
            Row(
                f"2{letter}",
                f"limiter vs server `{algorithm}`: 20 docs x 5 at once, limit 2 / 1 s",
                f"429s: {ours['e429']:.0f}; makespan {ours['makespan']:.2f} s = {over:.3f}x ideal",
                f"aiolimiter per doc: 429s: {peer['e429']:.0f}; makespan {peer['makespan']:.2f} s",
                f"{ours['makespan'] / peer['makespan']:.2f}x makespan",
                "0 429s, ≤ 1.05x ideal",
                f"2 req / 1 s / doc → {IDEAL:.2f} s",
                ours["e429"] == 0 and ours["errors"] == 0 and over <= 1.05,
                (_DESCRIPTION if letter == "a" else "")
                + f"Server's own count: ours {ours['server_429']:.0f} 429s, at most "
                f"{ours['max_in_window']:.0f} counted per doc in any 1 s window; peer "
                f"{peer['server_429']:.0f} 429s. Other errors: ours {ours['errors']:.0f}, "
                f"peer {peer['errors']:.0f}.",
            )
        )
    return rows


def main() -> None:
    args = parser(__doc__ or "").parse_args()
    emit(asyncio.run(measure(args.quick)), args.json)


if __name__ == "__main__":
    main()
