"""The Lua scripts that make each shared decision one atomic round trip.

Redis runs Lua 5.1, whose numbers are doubles: exact integers only up to 2**53, while
nanoseconds since the epoch are near 2**61. So a time is kept as a pair (whole seconds,
nanoseconds within the second), both exact, and stored as the decimal string of its
integer nanoseconds (``"1764748155123456789"``, readable in ``redis-cli``), split at the
ninth digit from the right; the arguments come as pairs already (the client splits
them once). Every comparison and sum is done on the pairs: the
arithmetic is the integer arithmetic of the local GCRA core
(:class:`resilient._ratelimit.GcraCore`), to the nanosecond.

``now`` is the server's ``TIME`` (microseconds), never a client's clock. The tests may
pass a ``now`` of their own (the last two arguments) to drive the script and the local core
with the same times; a key written under such a test time gets a fixed minute of life,
since its expiry cannot be derived from a clock the server does not have.
"""

from __future__ import annotations

import hashlib
from typing import Final

__all__ = ["GCRA", "GIVE_BACK", "Script"]

_PAIRS: Final = """
local E9 = 1000000000
-- A stored TAT: the decimal string of integer nanoseconds, split at the ninth digit.
local function parse(s)
  local n = #s
  if n <= 9 then return 0, tonumber(s) end
  return tonumber(string.sub(s, 1, n - 9)), tonumber(string.sub(s, n - 8))
end
local function fmt(s, n)
  if s == 0 then return string.format('%d', n) end
  return string.format('%d%09d', s, n)
end
local function now_pair(s, n)
  if s then return tonumber(s), tonumber(n) end
  local t = redis.call('TIME')
  return tonumber(t[1]), tonumber(t[2]) * 1000
end
-- Store the TAT (s, n) so that the key vanishes once it has passed: from then on an
-- absent key and the stored one decide the same.
local function store(key, tat, s, n, now_s, now_n, test_now)
  local ttl = 60000
  if not test_now then
    local ls, ln = s - now_s, n - now_n
    if ln < 0 then ls, ln = ls - 1, ln + E9 end
    ttl = ls * 1000 + math.ceil(ln / 1000000)
  end
  redis.call('SET', key, tat, 'PX', ttl)
end
"""

_GCRA_BODY: Final = """
-- KEYS[1]: the TAT. ARGV: interval, tolerance and the caller's allowed wait, each as
-- (whole seconds, nanoseconds), then [now as (seconds, nanoseconds)]. Returns
-- {admitted, delay seconds, delay ns (0..1e9), the TAT}: delay is
-- `new TAT - tolerance - now`, the wait before the call is due (<= 0: at once).
local is, inn = tonumber(ARGV[1]), tonumber(ARGV[2])
local now_s, now_n = now_pair(ARGV[7], ARGV[8])
local s, n = now_s, now_n
local stored = redis.call('GET', KEYS[1])
if stored then
  local ss, sn = parse(stored)
  if ss > now_s or (ss == now_s and sn > now_n) then s, n = ss, sn end
end
s, n = s + is, n + inn
if n >= E9 then s, n = s + 1, n - E9 end
local ds, dn = s - tonumber(ARGV[3]) - now_s, n - tonumber(ARGV[4]) - now_n
-- dn lies in (-2e9, 1e9): carry it into [0, 1e9).
if dn < 0 then ds, dn = ds - 1, dn + E9 end
if dn < 0 then ds, dn = ds - 1, dn + E9 end
local ws, wn = tonumber(ARGV[5]), tonumber(ARGV[6])
if ds < 0 or (ds == 0 and dn == 0) or ds < ws or (ds == ws and dn <= wn) then
  local tat = fmt(s, n)
  store(KEYS[1], tat, s, n, now_s, now_n, ARGV[7])
  return {1, ds, dn, tat}
end
return {0, ds, dn, stored}
"""

_GIVE_BACK_BODY: Final = """
-- KEYS[1]: the TAT. ARGV: the TAT a caller reserved, the interval as (seconds,
-- nanoseconds), [now as (seconds, nanoseconds)]. Gives the slot back only if nobody
-- reserved after it (the TAT is still the reserved one).
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local s, n = parse(ARGV[1])
s, n = s - tonumber(ARGV[2]), n - tonumber(ARGV[3])
if n < 0 then s, n = s - 1, n + E9 end
local now_s, now_n = now_pair(ARGV[4], ARGV[5])
if s < now_s or (s == now_s and n <= now_n) then
  redis.call('DEL', KEYS[1])
else
  store(KEYS[1], fmt(s, n), s, n, now_s, now_n, ARGV[4])
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
