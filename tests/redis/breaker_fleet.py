"""Helpers of the shared-breaker tests: fleets of breakers, with sync rounds the test drives.

Each "process" is a breaker with a store of its own (its own connections and its own
background sync), all on one server; the sync rounds are driven by the test
(``manual``), so every step is deterministic.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

import redis
from resilient import CircuitBreaker, CircuitOpenError, CircuitState, CountWindow
from resilient.redis import RedisStore
from resilient.redis._breaker import SharedBreakerCore
from resilient.redis._breaker_sync import BreakerSync
from resilient.testing import ManualClock

if TYPE_CHECKING:
    from redis_servers import Server


class BoomError(Exception):
    pass


def boom() -> None:
    raise BoomError


Maker = Callable[..., CircuitBreaker]


def manual_store(server: Server, namespace: str, **options: Any) -> RedisStore:
    """A store whose breaker sync rounds the test drives (no thread)."""
    options.setdefault("op_timeout", 1.0)
    store = RedisStore(redis.Redis(port=server.port), namespace=namespace, **options)
    store._breakers = BreakerSync(store)
    store._breakers.manual = True
    return store


def fleet_on(server: Server, namespace: str) -> Iterator[Maker]:
    stores: list[RedisStore] = []

    def make(
        name: str = "dep", clock: Any = None, store_options: Any = None, **options: Any
    ) -> CircuitBreaker:
        store = manual_store(server, namespace, **(store_options or {}))
        stores.append(store)
        options.setdefault("window", CountWindow(20))
        options.setdefault("minimum_calls", 10)
        options.setdefault("open_duration", 0.2)
        options.setdefault("half_open_calls", 2)
        return CircuitBreaker(name, clock=clock or ManualClock(), store=store, **options)

    try:
        yield make
    finally:
        for store in stores:
            store.close()


def sync(*breakers: CircuitBreaker) -> None:
    """One sync round of each breaker's store (what its thread does every interval).

    With its poll due: a pub/sub notification reaches the other connections a moment
    after the write that sent it, so a round right after may not see it yet.
    """
    for breaker in breakers:
        core = breaker._core
        assert isinstance(core, SharedBreakerCore)
        core._next_poll = 0.0
        core._sync.round()


def fail(breaker: CircuitBreaker, times: int) -> None:
    for _ in range(times):
        with pytest.raises((BoomError, CircuitOpenError)):
            breaker.call(boom)


def record(client: redis.Redis, namespace: str, name: str = "dep") -> dict[str, str]:
    return client.hgetall(f"{{{namespace}:{name}}}:breaker")  # type: ignore[return-value]


def wait_server_ms(ms: float) -> None:
    """Let the server's clock pass ``ms`` (the shared open_duration is timed by it)."""
    time.sleep(ms / 1000)


def sync_report(breaker: CircuitBreaker) -> str:
    """What a forked child's breaker and store thread were doing (for a failure's message)."""
    core: Any = breaker._core
    sync = core._sync
    store = core._store
    thread = sync._thread
    return (
        f"state={core._state} intent={core._intent} version={core._version} "
        f"down_at={core._down_at} store_available={store.available} "
        f"store={store.metrics()} thread_alive={thread is not None and thread.is_alive()} "
        f"rounds={sync.rounds}"
    ) + _stack_of(thread)


def _stack_of(thread: threading.Thread | None) -> str:
    """Where ``thread`` is now (for a failure's message)."""
    frame = sys._current_frames().get(thread.ident or 0) if thread is not None else None
    return "" if frame is None else "\nstore thread at:\n" + "".join(traceback.format_stack(frame))


def trip_in_a_forked_child(
    breaker: CircuitBreaker, forked: Callable[[], object] = lambda: None
) -> None:
    """Fork; the child trips ``breaker`` and waits for its own store thread to send it.

    ``forked`` runs in the parent once the child exists.
    """
    with warnings.catch_warnings():
        # 3.12+ warns that forking a multi-threaded process may deadlock: the store's
        # thread is what this test forks past.
        warnings.simplefilter("ignore", DeprecationWarning)
        reader, writer = os.pipe()
        pid = os.fork()
    if pid == 0:  # pragma: no cover - the child, whose coverage is not collected
        code, why = 1, "the child raised"
        try:
            os.close(reader)
            for _ in range(5):
                with contextlib.suppress(BoomError):
                    breaker.call(boom)
            deadline = time.monotonic() + 10
            core: Any = breaker._core
            while core._intent is not None and time.monotonic() < deadline:
                time.sleep(0.01)  # the child's own thread sends its trip
            code = 0 if core._intent is None else 1
            why = sync_report(breaker)
        except BaseException:
            why = traceback.format_exc()
        finally:
            os.write(writer, why.encode()[:60000])
            os._exit(code)
    os.close(writer)
    forked()
    deadline = time.monotonic() + 20
    while not (done := os.waitpid(pid, os.WNOHANG))[0]:
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("the forked child hung")
        time.sleep(0.01)
    with os.fdopen(reader, "rb") as pipe:
        why = pipe.read().decode()
    assert os.waitstatus_to_exitcode(done[1]) == 0, why
    deadline = time.monotonic() + 10
    while breaker.state is not CircuitState.OPEN and time.monotonic() < deadline:
        time.sleep(0.01)  # the parent hears of it through pub/sub or its poll
    assert breaker.state is CircuitState.OPEN


def trip_in_a_child_forked_holding(breaker: CircuitBreaker, lock: Any) -> None:
    """As :func:`trip_in_a_forked_child`, with ``lock`` held by the forking thread.

    Held by the forking thread, not another: a lock held by another thread may look
    free to a thread of the child that happens to get the dead holder's ident.
    """
    lock.acquire()  # as redis-py's get_connection() and release() do
    try:
        trip_in_a_forked_child(breaker, forked=lock.release)
    finally:
        with contextlib.suppress(RuntimeError):  # released at the fork already
            lock.release()


def held_by_a_finished_thread(locks: list[Any]) -> None:
    """Leave each lock held by a thread that no longer runs (as a forked child finds them)."""

    def take() -> None:
        for lock in locks:
            lock.acquire()

    thread = threading.Thread(target=take)
    thread.start()
    thread.join()
    assert not any(lock.acquire(blocking=False) for lock in locks)


def check_unlock_in_child(client: Any, locks: list[Any]) -> None:
    """``unlock_in_child(client)`` frees ``locks``, held by a finished thread, and the
    client works after it."""
    from resilient.redis._clients import unlock_in_child  # noqa: PLC0415

    held_by_a_finished_thread(locks)
    unlock_in_child(client)
    assert all(lock.acquire(blocking=False) for lock in locks)
    for lock in locks:
        lock.release()
    assert client.ping()
