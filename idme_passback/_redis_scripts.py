"""The Lua scripts of :class:`~idme_passback.RedisStore`, one per store operation.

Each runs atomically on the server and begins with a shared preamble: the
time in milliseconds (the server's ``TIME``, unless a test clock sends it in
``ARGV[1]``), ``keep`` (a sorted set expires at its last score) and ``epoch``
(the group's reset detection). The comment above each script lists its
``KEYS``, its ``ARGV`` and its reply; ``redis_store`` builds both and reads
the reply. Plain strings: this module imports nothing, redis least of all.
"""

from __future__ import annotations

__all__ = ["DISCARD", "RELEASE", "RESERVE"]

# Shared preamble: the time in ms (the server's, unless a test clock is given
# in ARGV[1]), keeping a sorted set's expiry at its last score, and the epoch.
_PREAMBLE = """
local now
if ARGV[1] ~= '' then
  now = tonumber(ARGV[1])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function keep(key)
  local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  if last[2] then
    redis.call('PEXPIRE', key, math.ceil(tonumber(last[2]) - now) + 1000)
  end
end
-- The group's epoch (a hash: id, created, until, n). Returns its id, its
-- write count after this call, and the time until which the group is spent.
local function epoch(key, seen_id, seen_n, fresh_id, trust_empty, period)
  local e = redis.call('HMGET', key, 'id', 'created', 'until', 'n')
  local id, created, until_ = e[1], tonumber(e[2]), tonumber(e[3])
  if not id then
    -- Never used, or forgotten: only a caller who knows it is new may trust it.
    if seen_id ~= '' or trust_empty ~= '1' then until_ = now + period else until_ = 0 end
    id, created = fresh_id, now
    redis.call('HSET', key, 'id', id, 'created', created, 'until', until_, 'n', 0)
  elseif seen_id == id and tonumber(e[4] or '0') < seen_n then
    -- Counted back: an older snapshot, or a failover that lost writes.
    id, created, until_ = fresh_id, now, now + period
    redis.call('HSET', key, 'id', id, 'created', created, 'until', until_)
  elseif seen_id ~= '' and seen_id ~= id and until_ < created + period then
    -- Replaced since we saw it, maybe by a process that took it for new.
    until_ = created + period
    redis.call('HSET', key, 'until', until_)
  end
  return id, redis.call('HINCRBY', key, 'n', 1), until_
end
"""

# KEYS: epoch, alias, bucket, hold, tombstones (one hash slot)
# ARGV: now|'', resolve (1/0), limit, period_ms, lease_ms, reservation,
#       seen epoch id|'', seen count, fresh epoch id, trust empty (1/0), digest
# Returns {1, root, epoch, n} granted, {0, delay_ms, epoch, n} denied,
# or {2, root} when the digest is a refreshed token of another root.
RESERVE = (
    _PREAMBLE
    + """
if ARGV[2] == '1' then
  local root = redis.call('GET', KEYS[2])
  if root and root ~= ARGV[11] then return {2, root} end
end
if redis.call('ZSCORE', KEYS[5], ARGV[6]) then
  return {0, 1, '', 0}  -- discarded before it arrived: its caller is gone
end
local limit = tonumber(ARGV[3])
local period = tonumber(ARGV[4])
local id, n, spent = epoch(KEYS[1], ARGV[7], tonumber(ARGV[8]), ARGV[9], ARGV[10], period)
if spent > now then
  return {0, spent - now, id, n}
end
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
local hold = tonumber(redis.call('GET', KEYS[4]) or '0')
if hold > now then
  return {0, hold - now, id, n}
end
local out = redis.call('ZRANGE', KEYS[3], 0, -1, 'WITHSCORES')
if #out / 2 < limit then
  redis.call('ZADD', KEYS[3], now + tonumber(ARGV[5]) + period, 'i:' .. ARGV[6])
  keep(KEYS[3])
  return {1, ARGV[11], id, n}
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
return {0, math.max(soonest - now, 1), id, n}
"""
)

# KEYS: epoch, bucket, hold (of the root)
# ARGV: now|'', sent (1/0), period_ms, hold_ms (0 for none), reservation,
#       seen epoch id|'', seen count, fresh epoch id, trust empty (1/0), max hold ms
# Returns {epoch, n}.
RELEASE = (
    _PREAMBLE
    + """
local period = tonumber(ARGV[3])
local id, n = epoch(KEYS[1], ARGV[6], tonumber(ARGV[7]), ARGV[8], ARGV[9], period)
local hold = math.min(math.max(tonumber(ARGV[4]) or 0, 0), tonumber(ARGV[10]))
if hold > 0 then
  local until_ = now + math.ceil(hold)
  if until_ > tonumber(redis.call('GET', KEYS[3]) or '0') then
    redis.call('SET', KEYS[3], until_, 'PX', math.ceil(hold) + 1000)
  end
end
redis.call('ZREM', KEYS[2], 'i:' .. ARGV[5])
if ARGV[2] == '1' then
  -- Even if the lease ran out and the reservation is gone, the server has
  -- just counted this request: it cools for a period all the same.
  redis.call('ZADD', KEYS[2], now + period, 'c:' .. ARGV[5])
end
keep(KEYS[2])
return {id, n}
"""
)

# KEYS: alias, bucket, tombstones
# ARGV: now|'', resolve (1/0), reservation, tombstone_ms, digest
# Returns {1} done, or {2, root} when the digest is a refreshed token.
DISCARD = (
    _PREAMBLE
    + """
if ARGV[2] == '1' then
  local root = redis.call('GET', KEYS[1])
  if root and root ~= ARGV[5] then return {2, root} end
end
redis.call('ZREM', KEYS[2], 'i:' .. ARGV[3])
keep(KEYS[2])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[4]), ARGV[3])
keep(KEYS[3])
return {1}
"""
)
