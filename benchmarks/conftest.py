"""Fixtures for the benchmarks: running batches of awaits on asyncio and trio.

pytest-benchmark times synchronous callables only, so an awaited call is measured as a
*batch*: one benchmark round runs ``n`` awaits inside an event loop that is already
running, and the cost of one call is the round's time divided by ``n`` (the fixtures store
``calls_per_round`` and, when timings exist, ``median_ns_per_call`` in
``benchmark.extra_info``, which ``--benchmark-json`` writes out). asyncio reuses one loop
per test; trio has no reusable loop, so each round is a whole ``trio.run()`` and its batch
is ten times larger to amortise the start-up.

Every runner takes ``fn`` (awaited as ``fn(1)``), an optional ``error`` (then every call
must raise it: the batch counts rejections) and an optional batch size ``n`` (for
scenarios whose one "call" is itself a burst of calls).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest

ASYNCIO_BATCH = 1_000
TRIO_BATCH = 10_000

AsyncFn = Callable[[int], Awaitable[Any]]
Runner = Callable[..., Any]


def _record_per_call(benchmark: Any, n: int) -> None:
    benchmark.extra_info["calls_per_round"] = n
    stats = getattr(benchmark, "stats", None)
    if stats is not None:  # None under --benchmark-disable
        benchmark.extra_info["median_ns_per_call"] = round(stats.stats.median / n * 1e9, 1)


def _batch(fn: AsyncFn, n: int, error: type[BaseException] | None) -> Callable[[], Awaitable[Any]]:
    """A coroutine function awaiting ``fn(1)`` ``n`` times: the last result, or rejections."""
    if error is None:

        async def batch() -> Any:
            result = None
            for _ in range(n):
                result = await fn(1)
            return result

        return batch

    async def rejected_batch() -> Any:
        rejected = 0
        for _ in range(n):
            try:
                await fn(1)
            except error:
                rejected += 1
        assert rejected == n, f"{n - rejected} of {n} calls were not rejected"
        return rejected

    return rejected_batch


@pytest.fixture
def aio_loop() -> Iterator[asyncio.AbstractEventLoop]:
    """A fresh asyncio event loop, closed after the test."""
    loop = asyncio.new_event_loop()
    try:
        yield loop
    finally:
        loop.close()


@pytest.fixture
def run_asyncio_batch(benchmark: Any, aio_loop: asyncio.AbstractEventLoop) -> Runner:
    """Benchmark ``n`` (default ``ASYNCIO_BATCH``) awaits of ``fn(1)`` per round."""

    def run(fn: AsyncFn, error: type[BaseException] | None = None, n: int = ASYNCIO_BATCH) -> Any:
        batch = _batch(fn, n, error)
        aio_loop.run_until_complete(batch())  # warm-up round, untimed
        result = benchmark(lambda: aio_loop.run_until_complete(batch()))
        _record_per_call(benchmark, n)
        return result

    return run


@pytest.fixture
def run_trio_batch(benchmark: Any) -> Runner:
    """Benchmark one ``trio.run()`` of ``n`` (default ``TRIO_BATCH``) awaits per round."""
    trio = pytest.importorskip("trio")

    def run(fn: AsyncFn, error: type[BaseException] | None = None, n: int = TRIO_BATCH) -> Any:
        batch = _batch(fn, n, error)
        trio.run(batch)  # warm-up round, untimed
        result = benchmark(trio.run, batch)
        _record_per_call(benchmark, n)
        return result

    return run


@pytest.fixture(params=["asyncio", "trio"])
def run_batch(request: pytest.FixtureRequest, benchmark: Any) -> Runner:
    """``run_asyncio_batch`` or ``run_trio_batch``: one test body for both event loops.

    The event loop and the batch size are appended to the test's benchmark group, so
    that each group still holds one event loop only.
    """
    runner: Runner = request.getfixturevalue(f"run_{request.param}_batch")
    default = ASYNCIO_BATCH if request.param == "asyncio" else TRIO_BATCH

    def run(fn: AsyncFn, error: type[BaseException] | None = None, n: int = default) -> Any:
        per_round = "per round" if request.param == "asyncio" else "per trio.run"
        benchmark.group = f"{benchmark.group}, {request.param}, {n} awaits {per_round}"
        return runner(fn, error, n)

    return run
