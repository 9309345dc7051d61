"""A limiter store in Redis, so many processes and hosts share one budget per document.

Works with a single Redis or Valkey server (or a primary with replicas, or
Sentinel) through ``redis.asyncio.Redis``, and with Redis Cluster or Valkey
Cluster through ``redis.asyncio.cluster.RedisCluster`` (``valkey-py``'s
``Valkey`` and ``ValkeyCluster`` too). Any other client is refused at
construction.

Every operation is one Lua script, so it is atomic on the server, and reads
the server's ``TIME``: the hosts' own clocks may disagree, the server's is
the one every process sees. Per document it keeps a sorted set of the
tokens that are out (member ``i:<id>`` while in flight, ``c:<id>`` while
cooling, scored by the time each comes back) and a hold key for 429s.

**Cluster.** Every key a document needs carries one hash tag, taken from
the SHA-256 digest of the document's first token (its *root*), so each
script touches one hash slot. A refreshed token's link to its root lives in
the refreshed token's own slot: a call on a refreshed token first reads the
link there, then runs on the root's slot (one more round trip, only for
refreshed tokens the limiter has not seen linked itself).

**Reservations.** The limiter names each reservation before asking for it,
so a reservation whose answer was lost (a cancellation or a failure
mid-round-trip) can be discarded by name at once; a discard that reaches
Redis before its reservation does forbids that reservation. An in-flight
reservation nobody settles (its process crashed) is scored at *lease +
period*, so it comes back by itself.

**Lost state.** Redis can forget: a restart without persistence, a
``FLUSHALL``, a failover to a replica that had not received the last
writes, a restore from an older snapshot. Forgetting the tokens that are
out would let a document be granted again within its period, so each group
of documents (one hash slot) carries an *epoch*: an id and a write counter.
When a script finds the epoch gone, replaced, or counted back behind what
this process has already seen, the store was reset, and every document of
that group counts as fully spent for one period from that moment. The cost
is one period's pause (60 s for the API's limit); the gain is that the
limit holds even when Redis forgets. A store (or key prefix) that no
process has used yet looks exactly like one that forgot, so the first use
pauses too, unless you pass ``assume_fresh=True`` because you know nothing
was sent in the last period.

To avoid the pause, let Redis keep its data across restarts: ``appendonly
yes`` with ``appendfsync always`` (or ``everysec``: a crash of redis-server
loses nothing, a crash of its host can lose the last second, which running
processes then detect through the write counter). RDB snapshots alone
(``save``) restore an old state, which the counter catches only in
processes that saw the later writes: do not rely on them. Use
``maxmemory-policy noeviction``: an evicted bucket is a forgotten one.

A refreshed token's link is lost with the rest; a process that made the
link keeps it itself and goes on charging the refreshed token to its root.

Documents are named by the SHA-256 of their token, never by the token itself.
Needs the optional extra: ``pip install "idme-passback[redis]"``.

Example::

    import redis.asyncio as redis
    store = RedisStore(redis.Redis(host="127.0.0.1", port=6379))
    limiter = RateLimiter(limit=2, period=60.0, store=store)

    from redis.asyncio.cluster import RedisCluster
    store = RedisStore(RedisCluster(host="10.0.0.1", port=7000))
"""

from __future__ import annotations

import hashlib
import math
import secrets
from collections.abc import Sequence
from typing import Any, cast

from ._lines import MAX_HOLD
from ._redis_scripts import DISCARD, RELEASE, RESERVE
from .clock import Clock
from .errors import ConfigurationError, LimiterUnavailableError, PassbackError
from .store import Denied, Grant

__all__ = ["RedisStore"]

#: Seconds an in-flight reservation may stay unsettled before it is presumed dead.
DEFAULT_LEASE = 600.0
#: Seconds a discarded reservation id stays forbidden (its reserve may still be on the way).
_TOMBSTONE = 120.0
#: Hex digits of the root digest that make a document's hash tag: 4096 groups,
#: enough to spread over any cluster, few enough that their epochs cost nothing.
_TAG_DIGITS = 3
_MAX_HOLD_MS = round(MAX_HOLD * 1000)
#: The longest duration of any other kind sent to Redis (a year), so none overflows.
_MAX_MS = 365 * 86_400_000


def _digest(token: str) -> str:
    # Keys and script arguments name documents by digest: a document token is a
    # secret, and whoever can read Redis (or MONITOR it) must not learn one.
    return hashlib.sha256(token.encode()).hexdigest()


def _ms(seconds: float, cap: int = _MAX_MS) -> int:
    """Whole milliseconds, clamped to ``0..cap`` (NaN is 0): never an overflow in Redis."""
    if not seconds > 0:  # negative, zero or NaN
        return 0
    return round(min(seconds * 1000, cap))


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _failed(operation: str, exc: Exception) -> LimiterUnavailableError:
    # The type only: redis-py's messages hold nothing secret (keys are digests),
    # but they do hold addresses, and the type is what a reader of a 503 needs.
    return LimiterUnavailableError(f"Redis failed during {operation} ({type(exc).__name__})")


def _unexpected(operation: str) -> LimiterUnavailableError:
    return LimiterUnavailableError(f"Redis answered {operation} with an unexpected reply")


def _client_types() -> tuple[tuple[type, ...], tuple[type, ...]]:
    """The supported asyncio clients, and the pipelines that look like them."""
    clients: list[type] = []
    pipelines: list[type] = []
    try:
        from redis.asyncio import Redis, RedisCluster  # noqa: PLC0415 - an optional extra
        from redis.asyncio.client import Pipeline  # noqa: PLC0415
        from redis.asyncio.cluster import ClusterPipeline  # noqa: PLC0415
    except ImportError:
        pass
    else:
        clients += [Redis, RedisCluster]
        pipelines += [Pipeline, ClusterPipeline]
    try:
        # valkey-py, optional; mypy may not find it installed.
        from valkey.asyncio import (  # type: ignore[import-not-found, unused-ignore]  # noqa: PLC0415
            Valkey,
            ValkeyCluster,
        )
        from valkey.asyncio.client import (  # type: ignore[import-not-found, unused-ignore]  # noqa: PLC0415
            Pipeline as VPipeline,
        )
        from valkey.asyncio.cluster import (  # type: ignore[import-not-found, unused-ignore]  # noqa: PLC0415
            ClusterPipeline as VClusterPipeline,
        )
    except ImportError:
        pass
    else:
        clients += [Valkey, ValkeyCluster]
        pipelines += [VPipeline, VClusterPipeline]
    return tuple(clients), tuple(pipelines)


def _check_client(redis: object) -> None:
    clients, pipelines = _client_types()
    name = f"{type(redis).__module__}.{type(redis).__qualname__}"
    if not clients:
        raise ConfigurationError('RedisStore needs redis-py: pip install "idme-passback[redis]"')
    if isinstance(redis, pipelines):
        raise ConfigurationError(f"RedisStore needs a client, not a pipeline ({name})")
    if not isinstance(redis, clients):
        raise ConfigurationError(
            "RedisStore needs an asyncio client: redis.asyncio.Redis or "
            f"redis.asyncio.cluster.RedisCluster (or valkey-py's), got {name}"
        )


class RedisStore:
    """A :class:`~idme_passback.LimiterStore` shared through Redis, Redis Cluster or Valkey.

    Args:
        redis: a ``redis.asyncio.Redis`` or ``redis.asyncio.cluster.RedisCluster``
            client, or valkey-py's ``Valkey`` or ``ValkeyCluster`` (their
            ``decode_responses`` setting does not matter).
        prefix: the prefix of every key this store writes (no ``{`` or ``}``:
            the store chooses the hash tags).
        lease: seconds a reservation may stay unsettled before it is
            presumed dead (its process crashed); keep it above the longest
            call deadline.
        assume_fresh: trust a group of documents that has no epoch yet as
            never used, instead of pausing it for one period. Only where
            that is certain: a brand-new Redis or prefix, tests. A reset
            that a running process has seen is detected all the same. By
            default, true with a test ``clock`` (tests start on an empty
            prefix) and false otherwise.
        clock: for tests only: read this clock instead of the server's ``TIME``.

    Raises:
        ConfigurationError: for a client of another kind (a synchronous
            client, a pipeline), or a prefix with a brace in it.

    Every Redis failure is raised as :class:`~idme_passback.LimiterUnavailableError`.
    """

    __slots__ = ("_clock", "_epochs", "_fresh", "_lease", "_prefix", "_redis", "_scripts")

    def __init__(
        self,
        redis: object,
        *,
        prefix: str = "idme-passback:",
        lease: float = DEFAULT_LEASE,
        assume_fresh: bool | None = None,
        clock: Clock | None = None,
    ) -> None:
        _check_client(redis)
        if not isinstance(prefix, str) or "{" in prefix or "}" in prefix:
            raise ConfigurationError(
                "prefix must be a str without '{' or '}' (the store chooses the hash tags)"
            )
        if not (isinstance(lease, int | float) and math.isfinite(lease) and lease > 0):
            raise ConfigurationError(f"lease must be a positive number of seconds, got {lease!r}")
        self._redis = cast("Any", redis)
        self._prefix = prefix
        self._lease = float(lease)
        if assume_fresh is None:
            assume_fresh = clock is not None
        self._fresh = "1" if assume_fresh else "0"
        self._clock = clock
        # Per group: the epoch id and the highest write count this store has seen.
        self._epochs: dict[str, tuple[str, int]] = {}
        self._scripts = {
            name: self._redis.register_script(body)
            for name, body in (("reserve", RESERVE), ("release", RELEASE), ("discard", DISCARD))
        }

    def __repr__(self) -> str:
        return f"RedisStore(prefix={self._prefix!r})"

    def _now(self) -> str:
        return "" if self._clock is None else str(round(self._clock.now() * 1000))

    def _key(self, kind: str, digest: str) -> str:
        return f"{self._prefix}{{{digest[:_TAG_DIGITS]}}}:{kind}:{digest}"

    def _epoch_key(self, digest: str) -> str:
        return f"{self._prefix}{{{digest[:_TAG_DIGITS]}}}:e"

    def _epoch_args(self, digest: str) -> list[object]:
        seen_id, seen_n = self._epochs.get(digest[:_TAG_DIGITS], ("", 0))
        return [seen_id, seen_n, secrets.token_hex(8), self._fresh]

    def _saw(self, digest: str, epoch: object, count: object) -> None:
        epoch_id, n = _text(epoch), int(_text(count))
        if not epoch_id:
            return
        group = digest[:_TAG_DIGITS]
        seen = self._epochs.get(group)
        if seen is None or seen[0] != epoch_id or seen[1] < n:
            self._epochs[group] = (epoch_id, n)

    async def _run(self, name: str, keys: Sequence[str], args: Sequence[object]) -> list[Any]:
        """Run one script; every failure leaves as a :class:`LimiterUnavailableError`."""
        try:
            reply = await self._scripts[name](keys=list(keys), args=[self._now(), *args])
        except PassbackError:
            raise
        except Exception as exc:
            raise _failed(name, exc) from exc
        if not isinstance(reply, list) or not reply:
            raise _unexpected(name)
        return reply

    async def _reserve(
        self, digest: str, resolve: bool, reservation: str, limit: int, period: float
    ) -> list[Any]:
        keys = [
            self._epoch_key(digest),
            self._key("a", digest),
            self._key("b", digest),
            self._key("h", digest),
            self._key("x", digest),
        ]
        args = [
            1 if resolve else 0,
            limit,
            _ms(period),
            _ms(self._lease),
            reservation,
            *self._epoch_args(digest),
            digest,
        ]
        return await self._run("reserve", keys, args)

    async def reserve(
        self, token: str, *, reservation: str, limit: int, period: float
    ) -> Grant | Denied:
        """Take a token of ``token``'s document under ``reservation``, or say how long to wait.

        Raises:
            LimiterUnavailableError: Redis failed or answered nonsense.
        """
        digest = _digest(token)
        reply = await self._reserve(digest, True, reservation, limit, period)
        try:
            if int(reply[0]) == 2:
                digest = _text(reply[1])
                reply = await self._reserve(digest, False, reservation, limit, period)
            code, value, epoch, count = reply
            self._saw(digest, epoch, count)
            if int(code) == 1:
                return Grant(_text(value), reservation)
            return Denied(int(value) / 1000.0)
        except (ValueError, TypeError) as exc:
            raise LimiterUnavailableError(
                "Redis answered reserve with an unexpected reply"
            ) from exc

    async def release(
        self, grant: Grant, *, sent: bool, period: float, hold: float | None = None
    ) -> None:
        """Settle a grant (and, with ``hold``, pause its document) in one round trip.

        A ``hold`` is clamped to a day: a hostile Retry-After cannot overflow Redis.

        Raises:
            LimiterUnavailableError: Redis failed.
        """
        digest = grant.key
        keys = [self._epoch_key(digest), self._key("b", digest), self._key("h", digest)]
        args = [
            1 if sent else 0,
            _ms(period),
            0 if hold is None else _ms(hold, _MAX_HOLD_MS),
            grant.reservation,
            *self._epoch_args(digest),
            _MAX_HOLD_MS,
        ]
        reply = await self._run("release", keys, args)
        try:
            self._saw(digest, *reply)
        except (ValueError, TypeError) as exc:
            raise LimiterUnavailableError(
                "Redis answered release with an unexpected reply"
            ) from exc

    async def discard(self, token: str, *, reservation: str) -> None:
        """Free the reservation ``reservation`` of ``token``'s document, if it was made.

        If the reservation has not reached Redis yet, it never takes effect.

        Raises:
            LimiterUnavailableError: Redis failed.
        """
        digest = _digest(token)
        resolve = True
        for _ in range(2):
            keys = [self._key("a", digest), self._key("b", digest), self._key("x", digest)]
            args = [1 if resolve else 0, reservation, _ms(_TOMBSTONE), digest]
            reply = await self._run("discard", keys, args)
            if _text(reply[0]) != "2":
                return
            digest, resolve = _text(reply[1]), False

    async def link(self, alias: str, token: str, ttl: float) -> None:
        """Make ``alias`` share ``token``'s budget for ``ttl`` seconds.

        Raises:
            LimiterUnavailableError: Redis failed.
        """
        alias_digest, digest = _digest(alias), _digest(token)
        if alias_digest == digest:
            return
        try:
            # Two slots in a cluster: the token's link (if it was refreshed
            # itself), then the alias's. Links are written once, so two steps
            # are as good as one.
            root = await self._redis.get(self._key("a", digest))
            root = digest if root is None else _text(root)
            if root != alias_digest:
                await self._redis.set(self._key("a", alias_digest), root, px=max(_ms(ttl), 1))
        except PassbackError:
            raise
        except Exception as exc:
            raise LimiterUnavailableError(
                f"Redis failed during link ({type(exc).__name__})"
            ) from exc
