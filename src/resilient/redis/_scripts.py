"""The Lua scripts that make each shared decision one atomic round trip.

Redis runs Lua 5.1, whose numbers are doubles: exact integers only up to 2**53, while
nanoseconds since the epoch are near 2**61. So a time is kept as a pair (whole seconds,
nanoseconds within the second), both exact, and stored as the decimal string of its
integer nanoseconds (``"1764748155123456789"``, readable in ``redis-cli``), split at the
ninth digit from the right. Every comparison and sum is done on the pairs: the
arithmetic is the integer arithmetic of the local GCRA core
(:class:`resilient._ratelimit.GcraCore`), to the nanosecond.

``now`` is the server's ``TIME`` (microseconds), never a client's clock. The tests may
pass a ``now`` of their own (the last argument) to drive the script and the local core
with the same times; a key written under such a test time gets a fixed minute of life,
since its expiry cannot be derived from a clock the server does not have.
"""

from __future__ import annotations

import hashlib
from typing import Final

__all__ = ["GCRA", "GIVE_BACK", "Script"]

_PAIRS: Final = """
local E9 = 1000000000
local function parse(s)
  local n = #s
  if n <= 9 then return 0, tonumber(s) end
  return tonumber(string.sub(s, 1, n - 9)), tonumber(string.sub(s, n - 8))
end
local function add(as, an, bs, bn)
  local s, n = as + bs, an + bn
  if n >= E9 then return s + 1, n - E9 end
  return s, n
end
local function sub(as, an, bs, bn)
  local s, n = as - bs, an - bn
  if n < 0 then return s - 1, n + E9 end
  return s, n
end
local function le(as, an, bs, bn)
  return as < bs or (as == bs and an <= bn)
end
local function fmt(s, n)
  if s == 0 then return string.format('%d', n) end
  return string.format('%d%09d', s, n)
end
local function now_pair(given)
  if given then return parse(given) end
  local t = redis.call('TIME')
  return tonumber(t[1]), tonumber(t[2]) * 1000
end
-- Store `tat` so that the key vanishes once the TAT has passed: from then on an absent
-- key and the stored one decide the same.
local function store(key, s, n, now_s, now_n, test_now)
  local ttl = 60000
  if not test_now then
    local ls, ln = sub(s, n, now_s, now_n)
    ttl = ls * 1000 + math.ceil(ln / 1000000)
  end
  redis.call('SET', key, fmt(s, n), 'PX', ttl)
end
"""

_GCRA_BODY: Final = """
-- KEYS[1]: the TAT. ARGV: interval, tolerance, allowed wait (integer ns as decimal
-- strings), [now]. Returns {admitted, delay seconds, delay ns, TAT, now}: delay is
-- `new TAT - tolerance - now`, the wait before the call is due (<= 0: at once).
local is, inn = parse(ARGV[1])
local ts, tn = parse(ARGV[2])
local ws, wn = parse(ARGV[3])
local now_s, now_n = now_pair(ARGV[4])
local tat_s, tat_n = now_s, now_n
local stored = redis.call('GET', KEYS[1])
if stored then
  local s, n = parse(stored)
  if not le(s, n, now_s, now_n) then tat_s, tat_n = s, n end
end
local new_s, new_n = add(tat_s, tat_n, is, inn)
local ds, dn = sub(new_s, new_n, ts, tn)
ds, dn = sub(ds, dn, now_s, now_n)
if le(ds, dn, 0, 0) or le(ds, dn, ws, wn) then
  store(KEYS[1], new_s, new_n, now_s, now_n, ARGV[4])
  return {1, ds, dn, fmt(new_s, new_n), fmt(now_s, now_n)}
end
return {0, ds, dn, fmt(tat_s, tat_n), fmt(now_s, now_n)}
"""

_GIVE_BACK_BODY: Final = """
-- KEYS[1]: the TAT. ARGV: the TAT a caller reserved, interval, [now]. Gives the slot
-- back only if nobody reserved after it (the TAT is still the reserved one).
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local s, n = parse(ARGV[1])
local is, inn = parse(ARGV[2])
local now_s, now_n = now_pair(ARGV[3])
local bs, bn = sub(s, n, is, inn)
if le(bs, bn, now_s, now_n) then
  redis.call('DEL', KEYS[1])
else
  store(KEYS[1], bs, bn, now_s, now_n, ARGV[3])
end
return 1
"""


class Script:
    """A Lua script's source and SHA1, run with ``EVALSHA`` (``EVAL`` after ``NOSCRIPT``)."""

    __slots__ = ("name", "sha", "source")

    def __init__(self, name: str, source: str) -> None:
        self.name = name
        self.source = source
        # SHA1 is how Redis names a cached script, not a security measure.
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()

    def __repr__(self) -> str:
        return f"<Script {self.name} {self.sha[:8]}>"


GCRA: Final = Script("gcra", f"-- resilient: GCRA decision\n{_PAIRS}{_GCRA_BODY}")
GIVE_BACK: Final = Script("give_back", f"-- resilient: GCRA give-back\n{_PAIRS}{_GIVE_BACK_BODY}")
