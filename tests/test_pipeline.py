"""compose()'s generated runners can be debugged: their source is in ``linecache``.

A runner is compiled from generated source (``_pipeline._runner_source``). Registered
under a unique, descriptive file name, as attrs registers its generated methods, a
traceback through it shows the line, pdb lists it and ``inspect.getsource`` works.
Before: ``File "<resilient runner 2>", line 15`` with no source line, the same name
for every chain of two steps, and ``OSError: could not get source code``.
"""

from __future__ import annotations

import inspect
import linecache
import re
import sys
import traceback
from collections.abc import Callable
from types import TracebackType
from typing import Any

import anyio
import pytest

from resilient import (
    Bulkhead,
    CircuitBreaker,
    Fallback,
    RateLimitedError,
    RateLimiter,
    RateLimiterMetrics,
    compose,
)
from resilient._policies._pipeline import async_runner, sync_runner
from resilient.testing import ManualClock

_NAME = re.compile(r'File "(<resilient compose: [^"]*>)", line (\d+)')


class Boom(Exception):
    pass


def boom() -> None:
    raise Boom


async def aboom() -> None:
    raise Boom


def _runner_frames(tb: TracebackType | None) -> list[tuple[str, int]]:
    """(file name, line) of each generated runner's frame in ``tb``."""
    found = []
    while tb is not None:
        code = tb.tb_frame.f_code
        if code.co_filename.startswith("<resilient"):
            found.append((code.co_filename, tb.tb_lineno))
        tb = tb.tb_next
    return found


def _raise_through(call: Callable[[], Any]) -> tuple[str, TracebackType | None]:
    try:
        call()
    except Boom:
        return traceback.format_exc(), sys.exc_info()[2]
    pytest.fail("expected Boom")  # pragma: no cover - the call always raises


def test_a_traceback_through_a_sync_runner_shows_its_name_and_line() -> None:
    guarded = compose(CircuitBreaker(), Bulkhead(2))(boom)
    text, tb = _raise_through(guarded)
    match = _NAME.search(text)
    assert match is not None, text
    assert match[1].startswith("<resilient compose: circuit_breaker+bulkhead, sync")
    # The line after the location is the generated source line of the call.
    after = text[match.end() :].splitlines()[1].strip()
    assert after == "result = fn()"  # boom()'s own (empty) parameter list
    ((filename, lineno),) = _runner_frames(tb)
    assert linecache.getline(filename, lineno).strip() == after


def test_the_source_survives_checkcache() -> None:
    # linecache.checkcache() drops entries whose file is gone, unless their mtime is
    # None (attrs' trick); tracebacks formatted later must still find the source.
    _, tb = _raise_through(compose(CircuitBreaker(), Bulkhead(2))(boom))
    ((filename, lineno),) = _runner_frames(tb)
    linecache.checkcache()
    linecache.checkcache(filename)
    assert linecache.getline(filename, lineno).strip() == "result = fn()"


def test_inspect_getsource_works_on_a_runner() -> None:
    breaker, bulkhead = CircuitBreaker(), Bulkhead(2)
    steps = [breaker._sync_step(), bulkhead._sync_step()]
    runner = sync_runner(steps, boom, ("circuit_breaker", "bulkhead"))
    source = inspect.getsource(runner)
    assert source.lstrip().startswith("def run(*args, **kwargs):")
    assert "result = fn(*args, **kwargs)" in source
    assert inspect.getsourcefile(runner) == runner.__code__.co_filename
    with pytest.raises(Boom):
        runner()


@pytest.mark.anyio
async def test_a_traceback_through_an_async_runner_shows_its_line() -> None:
    guarded = compose(CircuitBreaker(), Bulkhead(2))(aboom)
    try:
        await guarded()
    except Boom:
        text, tb = traceback.format_exc(), sys.exc_info()[2]
    match = _NAME.search(text)
    assert match is not None, text
    assert match[1].startswith("<resilient compose: circuit_breaker+bulkhead, async")
    assert text[match.end() :].splitlines()[1].strip() == "result = await fn()"
    assert _runner_frames(tb)


def test_chains_of_other_kinds_get_other_names() -> None:
    names = set()
    for policies in [
        (CircuitBreaker(), Bulkhead(2)),
        (Bulkhead(2), CircuitBreaker()),
        (CircuitBreaker(), CircuitBreaker()),
    ]:
        _, tb = _raise_through(compose(*policies)(boom))
        ((filename, _),) = _runner_frames(tb)
        names.add(filename)
    # boom() takes no parameters: the runners take none either, and their names say so.
    assert names == {
        "<resilient compose: circuit_breaker+bulkhead, sync, ()>",
        "<resilient compose: bulkhead+circuit_breaker, sync, ()>",
        "<resilient compose: circuit_breaker+circuit_breaker, sync, ()>",
    }


def test_shapes_sharing_kinds_get_a_unique_name_each() -> None:
    # An async fallback with an async handler awaits its value in the runner; with a
    # sync one it does not: two sources for the same kinds, so two file names, each
    # with its own source.
    async def async_handler(exc: BaseException) -> str:
        return "handled"

    def sync_handler(exc: BaseException) -> str:
        return "handled"

    steps_deferred = [Fallback(async_handler)._async_step(), Bulkhead(2)._async_step()]
    steps_plain = [Fallback(sync_handler)._async_step(), Bulkhead(2)._async_step()]
    kinds = ("fallback", "bulkhead")
    deferred = async_runner(steps_deferred, aboom, kinds)
    plain = async_runner(steps_plain, aboom, kinds)
    name_deferred = deferred.__code__.co_filename
    name_plain = plain.__code__.co_filename
    assert name_deferred != name_plain
    for name in (name_deferred, name_plain):
        assert name.startswith("<resilient compose: fallback+bulkhead, async")
    assert "await result.awaitable" in inspect.getsource(deferred)
    assert "await result.awaitable" not in inspect.getsource(plain)

    async def main() -> list[Any]:
        return [await deferred(), await plain()]

    assert anyio.run(main) == ["handled", "handled"]


# -- a gate step (a rate limiter) in a chain: as stacked, with no exit of its own -------


def _limited_chain(
    way: str, max_wait: float
) -> tuple[Callable[..., Any], CircuitBreaker, RateLimiter]:
    clock = ManualClock()
    breaker = CircuitBreaker(clock=clock)
    limiter = RateLimiter(1, burst=2, max_wait=max_wait, clock=clock)

    def fn(outcome: str) -> str:
        if outcome == "raise":
            raise Boom
        return outcome

    guarded = compose(breaker, limiter)(fn) if way == "compose" else breaker(limiter(fn))
    return guarded, breaker, limiter


@pytest.mark.parametrize("max_wait", [0.0, 1.0])
def test_a_rate_limiter_in_a_composed_chain_behaves_as_stacked(max_wait: float) -> None:
    seen: dict[str, list[object]] = {}
    for way in ("compose", "stacked"):
        guarded, breaker, limiter = _limited_chain(way, max_wait)
        outcomes: list[object] = []
        # Two within the burst (one failing), then one over the rate: it waits for its
        # reserved slot, or is refused when it may not wait.
        for outcome in ("ok", "raise", "third"):
            try:
                outcomes.append(guarded(outcome))
            except (Boom, RateLimitedError) as exc:
                outcomes.append(type(exc))
        metrics = breaker.metrics()
        outcomes += [metrics.failed_calls, metrics.successful_calls, limiter.metrics()]
        seen[way] = outcomes
    assert seen["compose"] == seen["stacked"]
    third = "third" if max_wait else RateLimitedError
    assert seen["compose"][:3] == ["ok", Boom, third]
    waited, refused = (1, 0) if max_wait else (0, 1)
    assert seen["compose"][-1] == RateLimiterMetrics(3 - refused, waited, refused, 1)


@pytest.mark.anyio
async def test_a_rate_limiter_in_a_composed_async_chain_waits_and_refuses() -> None:
    clock = ManualClock()
    limiter = RateLimiter(1, burst=1, max_wait=1.0, clock=clock)

    async def ident(x: int) -> int:
        return x

    guarded = compose(CircuitBreaker(clock=clock), limiter)(ident)
    assert await guarded(1) == 1
    assert await guarded(2) == 2  # waited its reserved second
    assert clock.monotonic() == 1.0
    guarded_strict = compose(CircuitBreaker(), RateLimiter(1, burst=1, clock=clock))(ident)
    assert await guarded_strict(3) == 3
    with pytest.raises(RateLimitedError):
        await guarded_strict(4)
    assert limiter.metrics() == RateLimiterMetrics(2, 1, 0, 1)
