"""Shared circuit breakers on a real redis-server: one state record per name, fenced.

Each "process" here is a breaker with a store of its own (its own connections and its
own background sync), all on the session server; the sync rounds are driven by the test
(``manual``), so every step is deterministic. Local time is a ManualClock, shared time
the server's ``TIME``. The fleet tests with real processes are in
``test_redis_breaker_fleet.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
import redis.asyncio

import redis
from resilient import CircuitBreaker, CircuitOpenError, CircuitState, CountWindow
from resilient.redis import RedisStore
from resilient.redis._breaker_replay import replay
from resilient.redis._breaker_sync import BreakerSync
from resilient.testing import ManualClock, capture_events

if TYPE_CHECKING:
    from redis_servers import Server


from breaker_fleet import (
    BoomError,
    Maker,
    boom,
    fail,
    fleet_on,
    manual_store,
    record,
    sync,
    wait_server_ms,
)


@pytest.fixture
def fleet(redis_server: Server, namespace: str) -> Iterator[Maker]:
    """Make breakers named alike on separate stores: the processes of one fleet."""
    yield from fleet_on(redis_server, namespace)


def test_a_store_needs_a_name(redis_server: Server) -> None:
    store = RedisStore(redis.Redis(port=redis_server.port))
    with pytest.raises(ValueError, match="needs a name"):
        CircuitBreaker(store=store)
    with pytest.raises(TypeError, match="store must be a shared store"):
        CircuitBreaker("x", store=object())


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_store_on_a_redis_asyncio_client(redis_server: Server, namespace: str) -> None:
    # The breaker's thread talks through a sync twin of the client (same address and
    # settings); async callers are served as sync ones are.
    store = RedisStore(
        redis.asyncio.Redis(port=redis_server.port), namespace=namespace, op_timeout=1.0
    )
    store._breakers = BreakerSync(store)
    store._breakers.manual = True
    breaker = CircuitBreaker(
        "dep", window=CountWindow(10), minimum_calls=5, clock=ManualClock(), store=store
    )

    async def aboom() -> None:
        raise BoomError

    for _ in range(5):
        with pytest.raises(BoomError):
            await breaker.call_async(aboom)
    store._breakers.round()
    check = redis.Redis(port=redis_server.port, decode_responses=True)
    assert check.hget(f"{{{namespace}:dep}}:breaker", "s") == "open"
    check.close()
    with pytest.raises(CircuitOpenError):
        await breaker.call_async(aboom)
    await store.aclose()


def test_starting_writes_nothing_and_a_missing_record_is_closed(
    fleet: Maker, client: redis.Redis, namespace: str
) -> None:
    a = fleet()
    sync(a)
    assert a.state is CircuitState.CLOSED
    assert client.keys(f"{{{namespace}:*") == []
    assert a.call(int) == 0
    sync(a)  # one success flushed into the buckets: the record itself stays absent
    assert record(client, namespace) == {}


def test_outcomes_of_the_fleet_open_every_process(
    fleet: Maker, client: redis.Redis, namespace: str
) -> None:
    a, b, c = fleet(), fleet(), fleet()
    # Each sees 5 failures: fewer than minimum_calls (10) in any one process.
    fail(a, 5)
    fail(b, 5)
    assert (a.state, b.state) == (CircuitState.CLOSED, CircuitState.CLOSED)
    with capture_events() as events:
        sync(a, b)  # the second flush makes 10 calls, 10 failures in the shared window
        assert b.state is CircuitState.OPEN
        sync(c, a)  # c hears of it by pub/sub (or its poll); a by its next round
    assert (a.state, b.state, c.state) == (CircuitState.OPEN,) * 3
    rec = record(client, namespace)
    assert (rec["s"], rec["v"], rec["at"]) == ("open", "1", "1")
    transitions = [e for e in events if type(e).__name__ == "StateTransition"]
    assert len(transitions) == 3  # one per process, each through its own _fire
    with pytest.raises(CircuitOpenError) as error:
        c.call(int)
    assert error.value.retry_after is not None
    assert 0 < error.value.retry_after <= 0.2


def test_a_local_trip_is_a_compare_and_set(
    fleet: Maker, client: redis.Redis, namespace: str
) -> None:
    a, b = fleet(), fleet()
    fail(a, 10)  # a's own window trips it at once: no round trip on the caller's path
    assert a.state is CircuitState.OPEN
    assert record(client, namespace) == {}
    sync(a)
    assert record(client, namespace)["s"] == "open"
    sync(b)
    assert b.state is CircuitState.OPEN


def test_a_stale_decision_never_overwrites_a_newer_one(
    fleet: Maker, client: redis.Redis, namespace: str
) -> None:
    a, b = fleet(), fleet()
    sync(a, b)
    b.force_open()  # version 1: FORCED_OPEN for the fleet
    fail(a, 10)  # a trips on version 0, not having heard yet
    sync(a)  # its compare-and-set names version 0: refused, and a adopts the record
    assert record(client, namespace)["s"] == "forced_open"
    assert a.state is CircuitState.FORCED_OPEN


def test_controls_apply_to_the_fleet(fleet: Maker, client: redis.Redis, namespace: str) -> None:
    a, b = fleet(), fleet()
    a.force_open()
    sync(b)
    assert b.state is CircuitState.FORCED_OPEN
    b.disable()
    sync(a)
    assert a.state is CircuitState.DISABLED
    a.metrics_only()
    sync(b)
    assert b.state is CircuitState.METRICS_ONLY
    b.reset()
    sync(a)
    assert a.state is CircuitState.CLOSED
    assert record(client, namespace)["s"] == "closed"
    # A new process adopts the record as it is, never resets it.
    a.force_open()
    c = fleet()
    sync(c)
    assert c.state is CircuitState.FORCED_OPEN
    assert record(client, namespace)["s"] == "forced_open"


def test_half_open_trials_are_leased_exactly_across_the_fleet(
    fleet: Maker, client: redis.Redis, namespace: str
) -> None:
    breakers = [fleet(half_open_calls=3) for _ in range(4)]
    a = breakers[0]
    fail(a, 10)
    sync(*breakers)
    assert all(b.state is CircuitState.OPEN for b in breakers)
    for b in breakers:
        b._core._clock.advance(1)  # type: ignore[attr-defined]
    wait_server_ms(250)  # the shared open_duration (0.2 s) on the server's clock
    tickets = []
    rejected = 0
    for b in breakers * 3:
        admitted = b._core.admit_checked()
        if isinstance(admitted, CircuitOpenError):
            assert admitted.retry_after is None  # HALF_OPEN, all trials taken
            rejected += 1
        else:
            tickets.append((b, admitted))
    assert len(tickets) == 3
    assert rejected == 9
    assert client.zcard(f"{{{namespace}:dep}}:leases") == 3
    # Every trial succeeds: the record closes the breaker once the third reports.
    for b, ticket in tickets:
        b._core.on_success(ticket, None, 0.0)
    assert record(client, namespace)["s"] == "closed"
    sync(*breakers)
    assert all(b.state is CircuitState.CLOSED for b in breakers)


def test_a_failed_trial_round_reopens_with_backoff(
    fleet: Maker, client: redis.Redis, namespace: str
) -> None:
    a = fleet(half_open_calls=1, open_duration=lambda attempt: 0.1 * attempt)
    fail(a, 10)
    sync(a)
    assert record(client, namespace)["of"] == "100"
    a._core._clock.advance(1)  # type: ignore[attr-defined]
    wait_server_ms(150)
    fail(a, 1)  # the one trial fails: OPEN again, for the second opening's 0.2 s
    assert a.state is CircuitState.OPEN
    rec = record(client, namespace)
    assert (rec["s"], rec["at"], rec["of"]) == ("open", "2", "200")


def test_a_cancelled_trial_gives_its_lease_back(
    fleet: Maker, client: redis.Redis, namespace: str
) -> None:
    a, b = fleet(half_open_calls=1), fleet(half_open_calls=1)
    fail(a, 10)
    sync(a, b)
    for x in (a, b):
        x._core._clock.advance(1)  # type: ignore[attr-defined]
    wait_server_ms(250)
    ticket = a._core.admit_checked()
    assert not isinstance(ticket, CircuitOpenError)
    assert isinstance(b._core.admit_checked(), CircuitOpenError)
    # Refused a moment ago: b refuses again without asking (for a flush_interval).
    before = int(client.info("stats")["total_reads_processed"])
    assert isinstance(b._core.admit_checked(), CircuitOpenError)
    assert int(client.info("stats")["total_reads_processed"]) - before == 1  # the INFO
    a._core.on_cancel(ticket)
    b._core._clock.advance(1)  # type: ignore[attr-defined] # b's refusal is kept a moment
    again = b._core.admit_checked()
    assert not isinstance(again, CircuitOpenError)
    b._core.on_success(again, None, 0.0)
    assert record(client, namespace)["s"] == "closed"


def test_an_expired_lease_is_offered_again(fleet: Maker, namespace: str) -> None:
    options = {"lease_ttl": 0.1}
    a = fleet(half_open_calls=1, store_options=options)
    b = fleet(half_open_calls=1, store_options=options)
    fail(a, 10)
    sync(a, b)
    for x in (a, b):
        x._core._clock.advance(1)  # type: ignore[attr-defined]
    wait_server_ms(250)
    lost = a._core.admit_checked()  # a "dies" holding it: never reported
    assert not isinstance(lost, CircuitOpenError)
    assert isinstance(b._core.admit_checked(), CircuitOpenError)
    wait_server_ms(150)  # the lease's time to live, on the server's clock
    b._core._clock.advance(1)  # type: ignore[attr-defined] # b's refusal is kept a moment
    trial = b._core.admit_checked()
    assert not isinstance(trial, CircuitOpenError)
    # The late report of the expired lease decides nothing.
    a._core.on_success(lost, None, 0.0)
    b._core.on_success(trial, None, 0.0)
    sync(a, b)
    assert (a.state, b.state) == (CircuitState.CLOSED, CircuitState.CLOSED)


def test_skewed_client_clocks_change_nothing(
    fleet: Maker, client: redis.Redis, namespace: str
) -> None:
    # Hours apart, and one far in the future: only durations cross the wire.
    a = fleet(clock=ManualClock())
    b = fleet(clock=ManualClock())
    b._core._clock.advance(3 * 3600)  # type: ignore[attr-defined]
    fail(a, 10)
    sync(a, b)
    for x in (a, b):
        with pytest.raises(CircuitOpenError) as error:
            x.call(int)
        assert error.value.retry_after is not None
        assert 0 < error.value.retry_after <= 0.2
    rec = record(client, namespace)
    server_ms = int(client.time()[0]) * 1000
    assert abs(int(rec["oa"]) - server_ms) < 5000  # opened_at is the server's time


def test_replay_reaches_every_state_through_the_table() -> None:
    from resilient._core._breaker_state import TRANSITIONS  # noqa: PLC0415

    for local in CircuitState:
        for remote in CircuitState:
            state = local
            for trigger in replay(local, remote):
                state = TRANSITIONS[state][trigger]
            assert state is remote, (local, remote)


def test_the_closed_path_makes_no_round_trip(fleet: Maker, client: redis.Redis) -> None:
    a = fleet()
    sync(a)

    def reads() -> int:
        return int(client.info("stats")["total_reads_processed"])

    before = reads()
    for _ in range(1000):
        a.call(int)
    with pytest.raises(BoomError):
        a.call(boom)
    assert reads() - before == 1  # the INFO call itself
    sync(a)  # the store's thread sends them: one flush for all 1001 outcomes
    assert reads() - before == 3


def test_the_flushes_of_many_breakers_go_in_one_pipelined_round_trip(
    redis_server: Server, client: redis.Redis, namespace: str
) -> None:
    store = manual_store(redis_server, namespace, flush_batch=8)
    names = [f"dep{i}" for i in range(5)]
    breakers = [
        CircuitBreaker(
            n,
            failure_rate_threshold=1.0,
            window=CountWindow(20),
            minimum_calls=3,
            clock=ManualClock(),
            store=store,
        )
        for n in names
    ]
    store._breakers.round()  # each record read once (none exists)
    for breaker in breakers:
        fail(breaker, 2)

    def reads() -> int:
        return int(client.info("stats")["total_reads_processed"])

    before = reads()
    store._breakers.round()
    assert reads() - before == 2  # the pipeline, then this INFO
    for name in names:
        buckets = client.hgetall(f"{{{namespace}:{name}}}:buckets")
        assert sum(int(v) for k, v in buckets.items() if k.endswith(":c")) == 2
    # A server that lost its scripts: each flush is run again, loading the script.
    client.script_flush()
    for breaker in breakers:
        assert breaker.call(int) == 0
    store._breakers.round()
    for name in names:
        buckets = client.hgetall(f"{{{namespace}:{name}}}:buckets")
        assert sum(int(v) for k, v in buckets.items() if k.endswith(":c")) == 3
    assert store.metrics().errors == 0
    store.close()


def test_a_callable_open_duration_is_sent_for_each_opening(fleet: Maker) -> None:
    def backoff(attempt: int) -> float:
        if attempt == 3:
            raise RuntimeError("the user's backoff failed")
        return -1.0 if attempt == 4 else float(attempt)

    a = fleet(open_duration=backoff)
    durations = a._core._settings[0].split(",")  # type: ignore[attr-defined]
    # Openings 3 and 4 keep the duration before them (a failure, a negative value).
    assert durations[:5] == ["1000", "2000", "2000", "2000", "5000"]
    assert len(durations) == 16


def test_slow_calls_of_the_fleet_open_every_process(fleet: Maker) -> None:
    clocks = [ManualClock(), ManualClock()]
    a, b = (
        fleet(clock=clock, slow_call_duration=0.5, slow_call_rate_threshold=0.5) for clock in clocks
    )
    for breaker, clock in zip((a, b), clocks, strict=True):
        for _ in range(5):  # fewer than minimum_calls (10) in either process
            breaker.call(lambda clock=clock: clock.advance(1))  # a slow success
    assert (a.state, b.state) == (CircuitState.CLOSED, CircuitState.CLOSED)
    sync(a, b)  # 10 calls, 10 slow in the shared window
    sync(a)
    assert (a.state, b.state) == (CircuitState.OPEN, CircuitState.OPEN)


def test_the_outcomes_of_a_stay_that_ended_are_not_flushed_after_it(
    fleet: Maker, client: redis.Redis, namespace: str
) -> None:
    # Tripped here and sent as a compare-and-set; the trial closes it before the next
    # flush. The failures of the stay that ended are not the new stay's: flushed now,
    # they would open the fleet again (5 failures in 6 calls).
    a = fleet(half_open_calls=1, minimum_calls=5)
    fail(a, 5)
    sync(a)  # the local trip, sent
    assert record(client, namespace)["s"] == "open"
    a._core._clock.advance(1)  # type: ignore[attr-defined]
    wait_server_ms(250)
    assert a.call(int) == 0  # the trial passes: the record closes the breaker
    assert a.state is CircuitState.CLOSED
    sync(a)
    assert record(client, namespace)["s"] == "closed"
    assert a.state is CircuitState.CLOSED
