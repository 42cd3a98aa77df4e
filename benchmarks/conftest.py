"""Fixtures for the circuit breaker benchmarks: running batches of awaits.

pytest-benchmark times synchronous callables only, so an awaited call is measured as a
*batch*: one benchmark round runs ``n`` awaits inside an event loop that is already
running, and the cost of one call is the round's time divided by ``n`` (the fixtures store
``calls_per_round`` and, when timings exist, ``median_ns_per_call`` in
``benchmark.extra_info``, which ``--benchmark-json`` writes out). asyncio reuses one loop
per test; trio has no reusable loop, so each round is a whole ``trio.run()`` and its batch
is ten times larger to amortise the start-up.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest

ASYNCIO_BATCH = 1_000
TRIO_BATCH = 10_000

AsyncFn = Callable[[int], Awaitable[Any]]


def _record_per_call(benchmark: Any, n: int) -> None:
    benchmark.extra_info["calls_per_round"] = n
    stats = getattr(benchmark, "stats", None)
    if stats is not None:  # None under --benchmark-disable
        benchmark.extra_info["median_ns_per_call"] = round(stats.stats.median / n * 1e9, 1)


@pytest.fixture
def aio_loop() -> Iterator[asyncio.AbstractEventLoop]:
    """A fresh asyncio event loop, closed after the test."""
    loop = asyncio.new_event_loop()
    try:
        yield loop
    finally:
        loop.close()


@pytest.fixture
def run_asyncio_batch(benchmark: Any, aio_loop: asyncio.AbstractEventLoop) -> Callable[..., Any]:
    """Benchmark ``ASYNCIO_BATCH`` awaits of ``fn(1)`` per round; return the last result."""

    def run(fn: AsyncFn) -> Any:
        async def batch() -> Any:
            result = None
            for _ in range(ASYNCIO_BATCH):
                result = await fn(1)
            return result

        aio_loop.run_until_complete(batch())  # warm-up round, untimed
        result = benchmark(lambda: aio_loop.run_until_complete(batch()))
        _record_per_call(benchmark, ASYNCIO_BATCH)
        return result

    return run


@pytest.fixture
def run_asyncio_rejected_batch(
    benchmark: Any, aio_loop: asyncio.AbstractEventLoop
) -> Callable[..., tuple[int, int]]:
    """Benchmark ``ASYNCIO_BATCH`` awaits per round; return (rejected, awaited) of a round."""

    def run(fn: AsyncFn, error: type[BaseException]) -> tuple[int, int]:
        async def batch() -> int:
            rejected = 0
            for _ in range(ASYNCIO_BATCH):
                try:
                    await fn(1)
                except error:
                    rejected += 1
            return rejected

        aio_loop.run_until_complete(batch())  # warm-up round, untimed
        rejected: int = benchmark(lambda: aio_loop.run_until_complete(batch()))
        _record_per_call(benchmark, ASYNCIO_BATCH)
        return rejected, ASYNCIO_BATCH

    return run


@pytest.fixture
def run_trio_batch(benchmark: Any) -> Callable[..., Any]:
    """Benchmark one ``trio.run()`` of ``TRIO_BATCH`` awaits of ``fn(1)`` per round."""
    trio = pytest.importorskip("trio")

    def run(fn: AsyncFn) -> Any:
        async def batch() -> Any:
            result = None
            for _ in range(TRIO_BATCH):
                result = await fn(1)
            return result

        trio.run(batch)  # warm-up round, untimed
        result = benchmark(trio.run, batch)
        _record_per_call(benchmark, TRIO_BATCH)
        return result

    return run
