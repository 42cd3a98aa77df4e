"""Shared circuit breakers when Redis fails, is slow, restarts; forks and pub/sub.

Most tests kill, slow down or restart a server of their own; each "process" is a breaker
with a store of its own, all on one server; the sync rounds are driven by the test
(``manual``), so every step is deterministic. Local time is a ManualClock, shared time
the server's ``TIME``. The fleet tests with real processes are in
``test_redis_breaker_fleet.py``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
import redis.asyncio

import redis
from resilient import CircuitBreaker, CircuitOpenError, CircuitState, CountWindow
from resilient.redis import RedisStore
from resilient.testing import ManualClock

if TYPE_CHECKING:
    from redis_servers import Server


from breaker_fleet import (
    Maker,
    fail,
    fleet_on,
    manual_store,
    sync,
    trip_in_a_child_forked_holding,
    trip_in_a_forked_child,
)


@pytest.fixture
def own_fleet(own_server: Server, namespace: str) -> Iterator[Maker]:
    """As ``fleet``, on a server of the test's own."""
    yield from fleet_on(own_server, namespace)


def test_server_killed_and_restarted_no_caller_sees_it(
    own_server: Server, own_fleet: Maker
) -> None:
    # The outage is a killed server (refused at once); a roomy op_timeout keeps a
    # slow reply of the restarted one from counting as a second outage.
    options = {"op_timeout": 1.0, "retry_interval": 0.05}
    make = own_fleet
    a, b = make(store_options=options), make(store_options=options)
    sync(a, b)
    seen_a: list[object] = []
    seen_b: list[object] = []
    a.add_listener(seen_a.append)
    b.add_listener(seen_b.append)

    def store_events(seen: list[object]) -> list[str]:
        return [type(e).__name__ for e in seen if "Store" in type(e).__name__]

    own_server.kill()
    assert a.call(int) == 0  # closed: local, as always
    fail(a, 10)  # trips locally; the compare-and-set waits for the store
    sync(a)
    assert a.state is CircuitState.OPEN
    with pytest.raises(CircuitOpenError):
        a.call(int)
    a._core._clock.advance(1)  # type: ignore[attr-defined]
    time.sleep(0.06)  # retry_interval: the next admission tries the store again
    assert a.call(int) == 0  # a local trial: the store failed, the call did not
    assert store_events(seen_a) == ["StoreUnavailable"]  # once per outage
    own_server.start()  # restarted empty: the record is gone (CLOSED)
    time.sleep(0.06)
    fail(a, 1)  # a's second trial fails: OPEN again, decided locally
    sync(a, b)
    sync(a, b)
    assert store_events(seen_a) == ["StoreUnavailable", "StoreRecovered"]
    assert a._core._store.metrics().outages == 1
    # Resynchronised: a's decision (made on version 0) reached the empty record, and
    # b (which never needed the store meanwhile) adopted it.
    assert (a.state, b.state) == (CircuitState.OPEN, CircuitState.OPEN)


def _forking_store(redis_server: Server, namespace: str) -> RedisStore:
    # On the server's unix socket: a TCP connection resolves its host name first, and
    # glibc's resolver may stay locked in a child forked while another thread of the
    # parent was resolving one (this suite has such threads), which nothing in Python
    # can undo. docs/scale-out.md says so, and what to do about it.
    assert redis_server.unix_path is not None
    return RedisStore(
        redis.Redis(unix_socket_path=redis_server.unix_path),
        namespace=namespace,
        op_timeout=1.0,
        flush_interval=0.02,
        poll_interval=0.05,
    )


def test_a_forked_child_keeps_the_shared_breaker_in_step(
    redis_server: Server, namespace: str
) -> None:
    store = _forking_store(redis_server, namespace)
    breaker = CircuitBreaker("dep", window=CountWindow(10), minimum_calls=5, store=store)
    trip_in_a_forked_child(breaker)
    store.close()


def test_a_fork_while_the_store_thread_is_inside_its_pool_leaves_the_child_a_working_store(
    redis_server: Server, namespace: str
) -> None:
    # The store's thread polls through a redis-py pool, whose lock it holds for a moment
    # per command. A fork that landed in that moment gave the child a pool locked for
    # ever: redis-py resets a pool in a child under that very lock, so the child's
    # thread hung at its first command and the child's trip never reached the fleet.
    store = _forking_store(redis_server, namespace)
    breaker = CircuitBreaker("dep", window=CountWindow(10), minimum_calls=5, store=store)
    trip_in_a_child_forked_holding(breaker, store._sync_client().connection_pool._lock)
    store.close()


def test_a_slow_server_costs_a_half_open_caller_about_op_timeout(
    own_server: Server, own_fleet: Maker
) -> None:
    from test_redis_faults import asleep  # noqa: PLC0415

    a = own_fleet(half_open_calls=1, open_duration=0.05, store_options={"op_timeout": 0.05})
    fail(a, 10)
    sync(a)
    a._core._clock.advance(1)  # type: ignore[attr-defined]
    time.sleep(0.06)  # the shared open_duration, on the server's clock
    raw = asleep(own_server, 0.5)
    try:
        started = time.monotonic()
        assert a.call(int) == 0  # the lease could not be asked for: a local trial
        took = time.monotonic() - started
    finally:
        raw.close()
    store = a._core._store  # type: ignore[attr-defined]
    assert store.metrics().errors == 1
    assert store.metrics().fallbacks == 1
    assert took < 0.4  # op_timeout is 0.05 s; DEBUG SLEEP is 0.5 s


def test_a_control_during_an_outage_is_written_when_the_store_is_back(
    own_server: Server, own_fleet: Maker
) -> None:
    # The outage is a killed server (refused at once); a roomy op_timeout keeps a
    # slow reply of the restarted one from counting as a second outage.
    options = {"op_timeout": 1.0, "retry_interval": 0.05}
    a, b = own_fleet(store_options=options), own_fleet(store_options=options)
    sync(a, b)
    own_server.kill()
    fail(a, 10)  # a local trip waits to be sent...
    a._core._clock.advance(1)  # type: ignore[attr-defined]
    time.sleep(0.06)
    assert a.call(int) == 0
    assert a.call(int) == 0  # ...until the local trials close it: nothing left to say
    assert a.state is CircuitState.CLOSED
    assert a._core._intent is None  # type: ignore[attr-defined]
    a.force_open()  # applied here at once; the record is out of reach
    assert a.state is CircuitState.FORCED_OPEN
    own_server.start()
    time.sleep(0.06)  # retry_interval
    sync(a, b)
    assert b.state is CircuitState.FORCED_OPEN  # written when the store was back
    assert a._core._pending_control is None  # type: ignore[attr-defined]


def test_a_pipelined_flush_that_fails_marks_every_breaker_of_the_batch(
    own_server: Server, namespace: str
) -> None:
    store = manual_store(own_server, namespace, op_timeout=0.05, retry_interval=60)
    a, b = (
        CircuitBreaker(n, minimum_calls=50, clock=ManualClock(), store=store) for n in ("a", "b")
    )
    store._breakers.round()
    seen: list[object] = []
    a.add_listener(seen.append)
    b.add_listener(seen.append)
    assert (a.call(int), b.call(int)) == (0, 0)
    own_server.kill()
    store._breakers.round()  # the pipeline fails: one error, both breakers hear of it
    kinds = [type(e).__name__ for e in seen if "Store" in type(e).__name__]
    assert kinds == ["StoreUnavailable", "StoreUnavailable"]
    assert store.metrics().errors == 1
    store._breakers.round()  # within retry_interval: no attempt at all
    assert store.metrics().errors == 1
    # What a forked child does (its thread is started again; here the test drives it).
    store._breakers._restart_in_child()
    assert store._breakers._thread is None
    store.close()


def test_a_process_hears_of_a_transition_through_pub_sub(
    redis_server: Server, namespace: str
) -> None:
    # Real sync threads, and a poll far beyond the wait: only the notification can tell.
    def make() -> tuple[RedisStore, CircuitBreaker]:
        store = RedisStore(
            redis.Redis(port=redis_server.port),
            namespace=namespace,
            op_timeout=1.0,
            flush_interval=0.02,
            poll_interval=3600,
        )
        return store, CircuitBreaker("dep", window=CountWindow(10), minimum_calls=5, store=store)

    (store_a, a), (store_b, b) = make(), make()
    deadline = time.monotonic() + 10
    while store_b._breakers._pubsub is None and time.monotonic() < deadline:
        time.sleep(0.01)  # b's thread subscribing
    fail(a, 5)  # a trips on its own; its thread sends the compare-and-set
    while b.state is not CircuitState.OPEN and time.monotonic() < deadline:
        time.sleep(0.01)  # b's thread hearing of it
    assert b.state is CircuitState.OPEN
    store_a.close()
    store_b.close()
