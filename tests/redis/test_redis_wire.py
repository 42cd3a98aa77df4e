"""The limiter's direct wire: packed commands, lent connections, forks and event loops."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import threading
import time
import warnings
from typing import TYPE_CHECKING

import pytest
import redis.asyncio
from hypothesis import given
from hypothesis import strategies as st

import redis
from resilient import RateLimiter
from resilient.redis import RedisStore
from resilient.redis._scripts import GCRA
from resilient.redis._wire import as_eval, pack

if TYPE_CHECKING:
    from redis_servers import Server

HUGE = 1e9  # a rate no test reaches: every call is admitted


def redis_py_packed(*parts: str) -> bytes:
    """What redis-py itself sends for a command (its packer; nothing is connected)."""
    return b"".join(redis.Connection().pack_command(*parts))


@given(st.sampled_from(["EVALSHA", "EVAL", "GET"]), st.lists(st.text(), max_size=12))
def test_pack_sends_what_redis_py_sends(command: str, args: list[str]) -> None:
    # (redis-py splits a command name at spaces, "CONFIG GET"; ours never has one.)
    assert pack(command, *args) == redis_py_packed(command, *args)


@given(st.lists(st.text(), max_size=8))
def test_as_eval_is_the_eval_of_the_same_arguments(args: list[str]) -> None:
    packed = pack("EVALSHA", GCRA.sha, "1", "{k}", *args)
    assert as_eval(packed, GCRA.sha, GCRA.source) == pack("EVAL", GCRA.source, "1", "{k}", *args)


def test_a_store_on_a_plain_client_decides_over_its_wire(
    redis_server: Server, namespace: str
) -> None:
    store = RedisStore(redis.Redis(port=redis_server.port), namespace=namespace, op_timeout=5)
    assert store._wire is not None
    limiter = RateLimiter(HUGE, name="api", store=store)
    for _ in range(50):
        limiter.call(int)
    # One connection lent and given back each time: the same one, never a second.
    assert len(store._wire._idle) == 1
    assert limiter.metrics().admitted == 50
    assert store.metrics().errors == 0
    store.close()
    assert len(store._wire._idle) == 0


def test_connections_are_as_many_as_calls_in_flight_at_once(
    redis_server: Server, namespace: str
) -> None:
    store = RedisStore(redis.Redis(port=redis_server.port), namespace=namespace, op_timeout=5)
    limiter = RateLimiter(HUGE, name="api", store=store)
    threads = 8
    go = threading.Barrier(threads)
    failures: list[BaseException] = []

    def work() -> None:
        go.wait()
        try:
            for _ in range(200):
                limiter.call(int)
        except BaseException as error:  # pragma: no cover - reported below
            failures.append(error)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert failures == []
    assert limiter.metrics().admitted == threads * 200
    assert store.metrics().errors == 0
    assert 1 <= len(store._wire._idle) <= threads
    store.close()


def test_a_forked_child_opens_its_own_connections(redis_server: Server, namespace: str) -> None:
    # On the unix socket: see _forking_store in test_redis_breaker_faults.py.
    assert redis_server.unix_path is not None
    client = redis.Redis(unix_socket_path=redis_server.unix_path)
    store = RedisStore(client, namespace=namespace, op_timeout=5)
    assert store._wire is not None
    limiter = RateLimiter(HUGE, name="api", store=store)
    limiter.call(int)  # the parent holds an idle connection when it forks
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: forking with threads
        pid = os.fork()
    if pid == 0:  # pragma: no cover - the child, whose coverage is not collected
        code = 1
        try:
            for _ in range(2000):
                limiter.call(int)
            errors = store.metrics().errors
            code = 0 if errors == 0 and limiter.metrics().admitted == 2001 else 2
        finally:
            os._exit(code)
    try:
        # Both processes decide at once: on one shared socket their replies would cross.
        for _ in range(2000):
            limiter.call(int)
        deadline = time.monotonic() + 30
        while not (done := os.waitpid(pid, os.WNOHANG))[0]:
            assert time.monotonic() < deadline, "the child did not finish"
            time.sleep(0.01)
    except BaseException:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raise
    assert os.waitstatus_to_exitcode(done[1]) == 0
    assert store.metrics().errors == 0
    assert limiter.metrics().admitted == 2001
    store.close()


# The first loop's connections are dropped unclosed (their loop is gone, and closing
# needs it): asyncio warns, as it does for any transport left open when its loop ends.
@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_an_async_store_serves_one_event_loop_after_another(
    redis_server: Server, namespace: str
) -> None:
    store = RedisStore(
        redis.asyncio.Redis(port=redis_server.port), namespace=namespace, op_timeout=5
    )
    limiter = RateLimiter(HUGE, name="api", store=store)

    async def calls() -> None:
        async def one() -> int:
            return 1

        for _ in range(20):
            await limiter.call_async(one)
        await asyncio.gather(*(limiter.call_async(one) for _ in range(10)))

    asyncio.run(calls())

    async def again_and_close() -> None:
        # A connection opened on the first loop cannot serve this one: new ones are.
        await calls()
        await store.aclose()

    asyncio.run(again_and_close())
    gc.collect()  # the first loop's dropped connections warn here, under this test's filters
    assert store.metrics().errors == 0
    assert limiter.metrics().admitted == 60


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_an_async_store_reloads_a_flushed_script_over_its_wire(
    redis_server: Server, namespace: str
) -> None:
    store = RedisStore(
        redis.asyncio.Redis(port=redis_server.port), namespace=namespace, op_timeout=5
    )
    limiter = RateLimiter(HUGE, name="api", store=store)

    async def one() -> int:
        return 1

    await limiter.call_async(one)
    plain = redis.Redis(port=redis_server.port)
    plain.script_flush()
    assert plain.script_exists(GCRA.sha) == [False]
    await limiter.call_async(one)
    assert plain.script_exists(GCRA.sha) == [True]
    assert store.metrics().errors == 0
    plain.close()
    await store.aclose()
