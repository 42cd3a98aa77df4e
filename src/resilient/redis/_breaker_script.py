"""The Lua script that keeps a circuit breaker's shared state: one atomic step per call.

Three keys share one hash tag (``{namespace:name}``), so every step touches one Cluster
slot: the *record* (a hash: state, version, when it opened, for how long, the opening
count, the half-open stay's start and its trial outcomes), the *buckets* (a hash of
per-interval outcome counts flushed by the processes while CLOSED) and the *leases*
(a sorted set of half-open trial leases, scored by their expiry).

Every change bumps the version, the fencing token: a compare-and-set (``cas``) names
the version its decision was made on and changes nothing if the record has moved on
since. Times are the server's (``TIME``, in milliseconds, exact in Lua's doubles); a
client's clock never enters the record. A missing record is CLOSED at version 0, so a
process that starts never has to write anything, and a CLOSED record that nobody
touches expires.

Arguments: ``ARGV[1]`` the step (``read``, ``flush``, ``cas``, ``control``,
``acquire``, ``report``), ``ARGV[2]`` the pub/sub channel, ``ARGV[3]`` the breaker's
name, then the breaker's settings (``ARGV[4..9]``) and the step's own (``ARGV[10..]``).
Returns ``{state, version, open ms left, opening count, granted, changed}``.
"""

from __future__ import annotations

from typing import Final

from resilient.redis._scripts import Script

__all__ = ["BREAKER"]

_SOURCE: Final = """-- resilient: circuit breaker step
local rec, buckets, leases = KEYS[1], KEYS[2], KEYS[3]
local op = ARGV[1]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
-- The breaker's settings: open durations (ms) for openings 1, 2, ... (the last one
-- repeats), trials per half-open stay, the two thresholds, the half-open limit (ms,
-- 0: none), and how long an untouched CLOSED record lives (ms).
local durations = {}
for d in string.gmatch(ARGV[4], '[^,]+') do durations[#durations + 1] = tonumber(d) end
local trials = tonumber(ARGV[5])
local failure_threshold, slow_threshold = tonumber(ARGV[6]), tonumber(ARGV[7])
local half_open_max, idle_ttl = tonumber(ARGV[8]), tonumber(ARGV[9])

local r = redis.call('HMGET', rec, 's', 'v', 'oa', 'of', 'at', 'hs', 'd', 'f', 'sl')
local state = r[1] or 'closed'
local version = tonumber(r[2] or '0')
local opened_at, open_for = tonumber(r[3] or '0'), tonumber(r[4] or '0')
local attempt, since = tonumber(r[5] or '0'), tonumber(r[6] or '0')
local done, failed, slow = tonumber(r[7] or '0'), tonumber(r[8] or '0'), tonumber(r[9] or '0')
local changed, granted = 0, 0

local function enter(to, at)
  if to == 'open' then
    attempt = attempt + 1
    opened_at = at
    open_for = durations[math.min(attempt, #durations)]
  elseif to == 'closed' then
    attempt = 0
  end
  if to == 'half_open' then since = at end
  done, failed, slow = 0, 0, 0
  redis.call('DEL', leases)
  if state == 'closed' or to == 'closed' then redis.call('DEL', buckets) end
  state = to
  version = version + 1
  changed = 1
end

local function tripped(calls, bad, slower, minimum)
  return calls >= minimum and calls > 0
    and (bad / calls >= failure_threshold or slower / calls >= slow_threshold)
end

-- Time-driven: a half-open stay past its limit is OPEN from the moment it ran out.
if state == 'half_open' and half_open_max > 0 and now >= since + half_open_max then
  enter('open', since + half_open_max)
end

if op == 'flush' then
  -- ARGV[10..15]: calls, failures, slow calls, bucket ms, buckets kept, minimum calls.
  if state == 'closed' then
    local width, kept = tonumber(ARGV[13]), tonumber(ARGV[14])
    local current = math.floor(now / width)
    local calls, bad, slower = tonumber(ARGV[10]), tonumber(ARGV[11]), tonumber(ARGV[12])
    if calls > 0 then
      redis.call('HINCRBY', buckets, current .. ':c', calls)
      if bad > 0 then redis.call('HINCRBY', buckets, current .. ':f', bad) end
      if slower > 0 then redis.call('HINCRBY', buckets, current .. ':s', slower) end
      redis.call('PEXPIRE', buckets, width * (kept + 1))
    end
    local sums = {c = 0, f = 0, s = 0}
    local all = redis.call('HGETALL', buckets)
    for i = 1, #all, 2 do
      local index, kind = string.match(all[i], '^(%-?%d+):(%a)$')
      if index and tonumber(index) > current - kept then
        sums[kind] = sums[kind] + tonumber(all[i + 1])
      else
        redis.call('HDEL', buckets, all[i])
      end
    end
    if tripped(sums.c, sums.f, sums.s, tonumber(ARGV[15])) then enter('open', now) end
  end
elseif op == 'cas' then
  -- ARGV[10..12]: the version and state a decision was made on, and its new state.
  if version == tonumber(ARGV[10]) and state == ARGV[11] and state ~= ARGV[12] then
    enter(ARGV[12], now)
  end
elseif op == 'control' then
  -- ARGV[10]: the manual state (or 'closed': reset, always a new stay).
  if ARGV[10] == 'closed' or state ~= ARGV[10] then enter(ARGV[10], now) end
elseif op == 'acquire' then
  -- ARGV[10..11]: the lease's id and its time to live (ms).
  if state == 'open' and now >= opened_at + open_for then enter('half_open', now) end
  if state == 'half_open' then
    redis.call('ZREMRANGEBYSCORE', leases, '-inf', now)
    if done + redis.call('ZCARD', leases) < trials then
      local ttl = tonumber(ARGV[11])
      redis.call('ZADD', leases, now + ttl, ARGV[10])
      redis.call('PEXPIRE', leases, ttl + 1000)
      granted = 1
    end
  end
elseif op == 'report' then
  -- ARGV[10..12]: the lease's id, the version it was granted in, its outcome
  -- (bit 1: failure, bit 2: slow; -1: given back unused). A lease that expired, or
  -- of an earlier stay, decides nothing.
  if state == 'half_open' and version == tonumber(ARGV[11])
      and redis.call('ZREM', leases, ARGV[10]) == 1 then
    local outcome = tonumber(ARGV[12])
    if outcome >= 0 then
      done = done + 1
      if outcome % 2 == 1 then failed = failed + 1 end
      if outcome >= 2 then slow = slow + 1 end
      if done >= trials then
        if tripped(done, failed, slow, 1) then enter('open', now) else enter('closed', now) end
      else
        changed = 1
      end
    end
  end
end

if changed == 1 then
  redis.call('HSET', rec, 's', state, 'v', version, 'oa', opened_at, 'of', open_for,
    'at', attempt, 'hs', since, 'd', done, 'f', failed, 'sl', slow)
  if state == 'closed' then
    redis.call('PEXPIRE', rec, idle_ttl)
  else
    redis.call('PERSIST', rec)
  end
  if version > tonumber(r[2] or '0') then
    redis.call('PUBLISH', ARGV[2], ARGV[3])
  end
elseif state == 'closed' and r[1] then
  redis.call('PEXPIRE', rec, idle_ttl)
end
local left = 0
if state == 'open' then left = math.max(opened_at + open_for - now, 0) end
return {state, version, left, attempt, granted, changed}
"""

BREAKER: Final = Script("breaker", _SOURCE)
