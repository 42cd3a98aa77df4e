"""The Lua GCRA and the local GCRA core, driven with the same times, decide the same.

How the same time reaches both: the local core runs on a ManualClock, and the time it
reads (``round(reading * 1e9)`` ns, as the core computes it) is passed to the script as
its optional last two arguments (seconds, nanoseconds), used only by tests in place of
the server's ``TIME``. So every admission, every wait, every refusal's delay and every
TAT is compared to the nanosecond, reservations and give-backs included.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from resilient import RateLimitedError
from resilient._core._gcra import NS, RateLimiterCore
from resilient._policies._ratelimit import gcra_options
from resilient.redis import RedisStore
from resilient.redis._scripts import GCRA, GIVE_BACK
from resilient.testing import ManualClock

if TYPE_CHECKING:
    from redis_servers import Server

_keys = itertools.count()


def pair(ns: int) -> tuple[str, str]:
    return str(ns // NS), str(ns % NS)


RATES = st.sampled_from([(1, 1.0), (3, 1.0), (7, 0.1), (1000, 1.0), (0.5, 1.0), (10, 60.0)])
STEPS = st.lists(
    st.tuples(
        # Time passing before the step: often nothing, often a fraction of an interval.
        st.one_of(st.just(0), st.integers(1, 2_000_000_000), st.integers(0, 10_000)),
        st.sampled_from(["reserve", "reserve", "reserve", "give_back"]),
    ),
    min_size=1,
    max_size=40,
)


@pytest.fixture(scope="module")
def store(redis_server: Server) -> Iterator[RedisStore]:
    # A roomy op_timeout: these tests are about decisions, not a slow Redis.
    store = RedisStore(redis_server.client(), namespace="equivalence", op_timeout=5)
    yield store
    store.close()


@settings(max_examples=150, deadline=None)
# The boundaries, always tried: a wait of exactly max_wait is allowed; one nanosecond
# more is not; a call exactly on time is admitted.
@example(rate=(10, 1.0), burst=1, max_wait=0.1, start=0, steps=[(0, "reserve")] * 3)
@example(
    rate=(10, 1.0),
    burst=2,
    max_wait=0.0,
    start=7,
    steps=[(0, "reserve")] * 3 + [(50_000_000, "reserve"), (1, "reserve")],
)
@example(
    rate=(3, 1.0),
    burst=1,
    max_wait=0.0,
    start=0,
    steps=[(0, "reserve"), (333_333_333, "reserve"), (1, "reserve")],
)
@given(
    rate=RATES,
    burst=st.integers(1, 5),
    max_wait=st.sampled_from([0.0, 0.1, 1.0]),
    start=st.integers(0, 10**6),
    steps=STEPS,
)
def test_lua_and_local_gcra_decide_the_same(
    store: RedisStore,
    rate: tuple[float, float],
    burst: int,
    max_wait: float,
    start: int,
    steps: list[tuple[int, str]],
) -> None:
    clock = ManualClock()
    clock.advance(start / 1000)
    local = RateLimiterCore(*gcra_options(rate[0], rate[1], burst, max_wait, "eq", clock))
    key = store.key("eq", next(_keys))
    fixed = (*pair(local.interval), *pair(local.tolerance))
    local_tokens: list[int] = []
    shared_tokens: list[str] = []
    for advance, action in steps:
        clock.advance(advance / NS)
        now = round(clock.monotonic() * NS)
        if action == "give_back":
            if local_tokens:
                local.give_back(local_tokens.pop())
                store._run(GIVE_BACK, key, (shared_tokens.pop(), *fixed[:2], *pair(now)))
        else:
            reply = store._run(GCRA, key, (*fixed, *pair(local.allowed_wait()), *pair(now)))
            delay = int(reply[1]) * NS + int(reply[2])
            try:
                local_delay, tat = local.reserve()
            except RateLimitedError as refused:
                assert int(reply[0]) == 0
                # The same delay gives the same retry_after through the same rounding.
                assert refused.retry_after == local.retry_after(delay, now, clock.monotonic())  # noqa: PT017
            else:
                assert int(reply[0]) == 1
                assert local_delay == max(delay, 0)
                assert int(reply[3]) == tat
                local_tokens.append(tat)
                shared_tokens.append(reply[3].decode())
        # The state itself: the stored TAT is the local one (or both are in the past).
        stored = store._client.get(key)
        local_tat = local._tat[0]
        if local_tat > now:
            assert stored is not None
            assert int(stored) == local_tat
        else:
            assert stored is None or int(stored) <= now
