"""A limiter store in Redis, so many processes and hosts share one budget per document.

Every operation is one Lua script, so it is atomic on the server, and reads
the Redis server's ``TIME``: the hosts' own clocks may disagree, the
server's is the one every process sees. Per document it keeps a sorted set
of the tokens that are out (member ``i:<id>`` while in flight, ``c:<id>``
while cooling, scored by the time each comes back) and a hold key for 429s.

An in-flight token is scored pessimistically at *lease expiry + period*, so
a process that dies mid-request never blocks the document for good: its
reservation simply comes back once the lease has run out and the period has
passed. Every key carries an expiry, so idle documents leave nothing behind.
Documents are named by the SHA-256 of their token, never by the token itself.

Needs the optional extra: ``pip install "idme-passback[redis]"``. The scripts
touch keys derived inside the script (to follow refresh lineage atomically),
so a single Redis server (or a primary with replicas) is supported, not
Redis Cluster.

Example::

    import redis.asyncio as redis
    store = RedisStore(redis.Redis(host="127.0.0.1", port=6379))
    limiter = RateLimiter(limit=2, period=60.0, store=store)
"""

from __future__ import annotations

import hashlib
from typing import Any

from .clock import Clock
from .store import Denied, Grant

__all__ = ["RedisStore"]

#: Seconds an in-flight reservation may stay unsettled before it is presumed dead.
DEFAULT_LEASE = 600.0

# Shared preamble: the time in ms (the server's, unless a test clock is given)
# and the document (root) a token belongs to. Release is given the root
# itself (RESOLVE false), so it settles exactly the bucket it reserved in.
_PREAMBLE = """
local prefix = ARGV[1]
local now
if ARGV[2] ~= '' then
  now = tonumber(ARGV[2])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local root = ARGV[3]
if RESOLVE then
  root = redis.call('GET', prefix .. 'a:' .. root) or root
end
local bucket = prefix .. 'b:' .. root
local holdkey = prefix .. 'h:' .. root
local function keep(key)
  local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  if last[2] then
    redis.call('PEXPIRE', key, math.ceil(tonumber(last[2]) - now) + 1000)
  end
end
"""

# ARGV: prefix, now|'', token, limit, period_ms, lease_ms, reservation id
# Returns {1, root} when granted, {0, delay_ms} otherwise.
_RESERVE = (
    _PREAMBLE.replace("RESOLVE", "true")
    + """
local limit = tonumber(ARGV[4])
local period = tonumber(ARGV[5])
local lease = tonumber(ARGV[6])
redis.call('ZREMRANGEBYSCORE', bucket, '-inf', now)
local hold = tonumber(redis.call('GET', holdkey) or '0')
if hold > now then
  return {0, hold - now}
end
local out = redis.call('ZRANGE', bucket, 0, -1, 'WITHSCORES')
if #out / 2 < limit then
  redis.call('ZADD', bucket, now + lease + period, 'i:' .. ARGV[7])
  keep(bucket)
  return {1, root}
end
local soonest = nil
for i = 1, #out, 2 do
  local at = tonumber(out[i + 1])
  if string.sub(out[i], 1, 2) == 'i:' then
    -- in flight: back no sooner than a period after a response that could come now
    at = math.min(at, now + period)
  end
  if soonest == nil or at < soonest then soonest = at end
end
return {0, math.max(soonest - now, 1)}
"""
)

# ARGV: prefix, now|'', root, sent (1/0), period_ms, hold_ms (0 for none), reservation id
_RELEASE = (
    _PREAMBLE.replace("RESOLVE", "false")
    + """
if tonumber(ARGV[6]) > 0 then
  local until_ = now + tonumber(ARGV[6])
  local hold = tonumber(redis.call('GET', holdkey) or '0')
  if until_ > hold then
    redis.call('SET', holdkey, until_, 'PX', math.ceil(until_ - now) + 1000)
  end
end
redis.call('ZREM', bucket, 'i:' .. ARGV[7])
if ARGV[4] == '1' then
  -- Even if the lease ran out and the reservation is gone, the server has
  -- just counted this request: it cools for a period all the same.
  redis.call('ZADD', bucket, now + tonumber(ARGV[5]), 'c:' .. ARGV[7])
end
keep(bucket)
return 1
"""
)

# ARGV: prefix, now|'', token, reservation id
_DISCARD = (
    _PREAMBLE.replace("RESOLVE", "true")
    + """
redis.call('ZREM', bucket, 'i:' .. ARGV[4])
keep(bucket)
return 1
"""
)

# ARGV: prefix, now|'', token (existing), ttl_ms, alias
_LINK = (
    _PREAMBLE.replace("RESOLVE", "true")
    + """
if ARGV[5] ~= root then
  redis.call('SET', prefix .. 'a:' .. ARGV[5], root, 'PX', tonumber(ARGV[4]))
end
return 1
"""
)


def _digest(token: str) -> str:
    # Keys and script arguments name documents by digest: a document token is a
    # secret, and whoever can read Redis (or MONITOR it) must not learn one.
    return hashlib.sha256(token.encode()).hexdigest()


def _ms(seconds: float) -> int:
    return max(0, round(seconds * 1000))


class RedisStore:
    """A :class:`~idme_passback.limiter.LimiterStore` shared through a Redis server.

    Args:
        redis: a ``redis.asyncio.Redis`` client (its ``decode_responses``
            setting does not matter).
        prefix: the prefix of every key this store writes.
        lease: seconds a reservation may stay unsettled before it is
            presumed dead (its process crashed); keep it above the longest
            call deadline.
        clock: for tests only: read this clock instead of the server's ``TIME``.
    """

    __slots__ = ("_clock", "_lease", "_prefix", "_redis", "_scripts")

    def __init__(
        self,
        redis: Any,
        *,
        prefix: str = "idme-passback:",
        lease: float = DEFAULT_LEASE,
        clock: Clock | None = None,
    ) -> None:
        self._redis = redis
        self._prefix = prefix
        self._lease = lease
        self._clock = clock
        self._scripts = {
            name: redis.register_script(body)
            for name, body in (
                ("reserve", _RESERVE),
                ("release", _RELEASE),
                ("discard", _DISCARD),
                ("link", _LINK),
            )
        }

    def __repr__(self) -> str:
        return f"RedisStore(prefix={self._prefix!r})"

    def _now(self) -> str:
        return "" if self._clock is None else str(_ms(self._clock.now()))

    async def _run(self, name: str, *args: object) -> Any:
        return await self._scripts[name](keys=[], args=[self._prefix, self._now(), *args])

    async def reserve(
        self, token: str, *, reservation: str, limit: int, period: float
    ) -> Grant | Denied:
        """Take a token of ``token``'s document, or say how long at least to wait."""
        granted, value = await self._run(
            "reserve", _digest(token), limit, _ms(period), _ms(self._lease), reservation
        )
        if int(granted) == 1:
            root = value.decode() if isinstance(value, bytes) else str(value)
            return Grant(root, reservation)
        return Denied(int(value) / 1000.0)

    async def release(
        self, grant: Grant, *, sent: bool, period: float, hold: float | None = None
    ) -> None:
        """Settle a grant (and, with ``hold``, pause its document) in one round trip."""
        await self._run(
            "release",
            grant.key,
            1 if sent else 0,
            _ms(period),
            _ms(hold) if hold else 0,
            grant.reservation,
        )

    async def discard(self, token: str, *, reservation: str) -> None:
        """Free the reservation ``reservation`` of ``token``'s document, if it was made."""
        await self._run("discard", _digest(token), reservation)

    async def link(self, alias: str, token: str, ttl: float) -> None:
        """Make ``alias`` share ``token``'s budget for ``ttl`` seconds."""
        await self._run("link", _digest(token), _ms(ttl), _digest(alias))
