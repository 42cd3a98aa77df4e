"""The retry policy: the decorator's sync and async adapters around the core's flow.

The decisions (what is retried, how long to wait, when to give up) live in
``resilient._core._retry``; ``for attempt in retry`` blocks are in ``_retry_block.py``. The
adapters here only sleep (with the policy's clock), call, and send the outcome back.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, ClassVar

from resilient._core._budget import RetryBudget, RetryThrottle
from resilient._core._clock import Clock
from resilient._core._retry import KIND, RetryCore, RetryMetrics, instant_retries
from resilient._core._validate import ExceptionMatcher
from resilient._core._wait import MAX_WAIT, ExponentialJitter
from resilient._policies._policy import CorePolicy
from resilient._policies._retry_block import AsyncRetrying, Attempt, Retrying
from resilient._policies._tenacity import compile_wait
from resilient._waiting._clock import resolve_clock
from resilient._waiting._deadline import remaining

__all__ = [
    "Retry",
    "RetryCore",
    "RetryMetrics",
    "async_retrying",
    "instant_retries",
    "sync_retrying",
]


class Retry(CorePolicy[RetryCore]):
    """Call again when a call fails, waiting between attempts; give up without wrapping.

    ``attempts`` counts the first call. When attempts run out, the last exception is
    re-raised unchanged (no ``RetryError`` wrapper), and a result that still matches
    ``on_result`` is returned as is (with a
    [`RetriesExhausted`][resilient.RetriesExhausted] event). A retry never waits past the
    current deadline ([`remaining()`][resilient.remaining]): if the next wait would end
    after it, the retry gives up at once. An open circuit
    ([`CircuitOpenError`][resilient.CircuitOpenError]) is not retried unless ``on`` asks
    for it.
    Cancellation, ``KeyboardInterrupt`` and ``SystemExit`` are never retried.

    No wait is longer than `Retry.MAX_WAIT` (one day): a constant
    ``wait`` above it is refused, a computed one is clamped to it. If a wait itself
    fails, the call ends with its last outcome (the exception chained to the wait's).

    A retry also guards a block of code, as tenacity's ``Retrying`` does::

        for attempt in retry:
            with attempt:
                ...

    (``async for attempt in retry: async with attempt: ...`` in async code); see
    [`Attempt`][resilient.Attempt].

    Args:
        attempts: Attempts in all, the first included (>= 1).
        wait: Seconds between attempts; a callable ``attempt -> seconds``; a tenacity
            wait strategy (``wait_exponential_jitter(...)``, ``wait_fixed(1) +
            wait_random(0, 1)``, ...); or [`ExponentialJitter`][resilient.ExponentialJitter] (the
            default, full jitter from 0.1 s up to 10 s) or
            [`DecorrelatedJitter`][resilient.DecorrelatedJitter].
        on: Exception types, or a predicate, to retry (default: every ``Exception``).
        on_result: A predicate over results to retry.
        budget: A [`RetryBudget`][resilient.RetryBudget] or
            [`RetryThrottle`][resilient.RetryThrottle] shared by the retries that call one
            dependency.
        clock: Where time comes from and how waits happen (default: monotonic, real
            sleeps); ``ManualClock`` makes waits instant.
        name: A name for events and metrics.
    """

    __slots__ = ()
    kind = KIND

    #: The longest wait between two attempts, in seconds (one day). A subclass may set
    #: its own; it is read when a policy is constructed.
    MAX_WAIT: ClassVar[float] = MAX_WAIT

    def __init__(
        self,
        attempts: int = 3,
        *,
        wait: float | Callable[..., float] | ExponentialJitter | Any = None,
        on: ExceptionMatcher = Exception,
        on_result: Callable[[Any], bool] | None = None,
        budget: RetryBudget | RetryThrottle | None = None,
        clock: Clock | None = None,
        name: str | None = None,
    ) -> None:
        self._core = self._new_core(attempts, wait, on, on_result, budget, clock, name)
        self._config = {
            "attempts": attempts,
            "wait": wait,
            "on": on,
            "on_result": on_result,
            "budget": budget,
        }

    def _new_core(
        self,
        attempts: Any,
        wait: object,
        on: object,
        on_result: object,
        budget: object,
        clock: Clock | None,
        name: str | None,
    ) -> RetryCore:
        return RetryCore(
            attempts,
            compile_wait(ExponentialJitter() if wait is None else wait, self.MAX_WAIT),
            on,
            on_result,
            budget,
            resolve_clock(clock),
            name,
            max_wait=self.MAX_WAIT,
            time_left=remaining,
        )

    def _prepare_reconfigure(
        self, merged: dict[str, Any], changed: frozenset[str]
    ) -> Callable[[], None]:
        # A throwaway core checks the options as construction does; calls already
        # retrying finish with the options they started with.
        core = self._core
        fresh = self._new_core(
            merged["attempts"],
            merged["wait"],
            merged["on"],
            merged["on_result"],
            merged["budget"],
            core.clock,
            None,
        )
        return lambda: core.adopt(fresh)

    def _sync_wrap(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        return sync_retrying(self._core, fn)

    def _async_wrap(self, fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        return async_retrying(self._core, fn)

    def _repeating_while(
        self, repeatable: Callable[[tuple[Any, ...]], bool]
    ) -> Callable[[Callable[..., Awaitable[Any]]], Callable[..., Awaitable[Any]]]:
        """An async decorator of this retry that asks ``repeatable(args)`` before a retry.

        For integrations whose calls cannot always be repeated: the ASGI middleware
        stops retrying a request once its response has started. The decorator shares
        this retry's core (counts, events, budget).
        """
        return lambda fn: async_retrying(self._core, fn, repeatable)

    def __enter__(self) -> None:
        raise TypeError(
            "a retry runs the block again: write `for attempt in retry: with attempt: ...`"
        )

    async def __aenter__(self) -> None:
        raise TypeError(
            "a retry runs the block again: write "
            "`async for attempt in retry: async with attempt: ...`"
        )

    def __iter__(self) -> Iterator[Attempt]:
        """Retry a block: ``for attempt in retry: with attempt: ...`` (one fresh call each time)."""
        return Retrying(self._core)

    def __aiter__(self) -> AsyncIterator[Attempt]:
        """Retry an async block: ``async for attempt in retry: async with attempt: ...``."""
        return AsyncRetrying(self._core)

    @property
    def attempts(self) -> int:
        """Attempts in all, the first included."""
        return self._core.attempts

    @property
    def budget(self) -> RetryBudget | RetryThrottle | None:
        """The shared retry budget, if any."""
        return self._core.budget

    def metrics(self) -> RetryMetrics:
        """Retries, recoveries and give-ups, as a frozen snapshot."""
        return self._core.metrics()

    def __repr__(self) -> str:
        return f"<Retry {self.name!r} attempts={self.attempts}>"


# The two drivers of RetryCore.flow are twins, the same code apart from async/await
# (tests/test_twins.py): change both or neither.


def sync_retrying(
    core: RetryCore,
    fn: Callable[..., Any],
    repeatable: Callable[[tuple[Any, ...]], bool] | None = None,
) -> Callable[..., Any]:
    """The sync adapter of the retry flow, around ``fn``.

    Args:
        core: The retry policy's core (its flow, budget and clock).
        fn: The function to call again.
        repeatable: Asked with the call's positional arguments before each retry; when
            it says no, the last outcome stands, counted as exhausted (the ASGI
            middleware cannot repeat a request whose response has started or whose body
            it did not keep).
    """
    start = core.start
    # Read at each call, from the core: reconfigure() may add a budget or on_result.
    first = core.first
    sleep = core.clock.sleep
    first_ended = core.first_attempts  # next() on it: no Python frame on the hot path
    ask = functools.partial  # no closure over `args`: the first attempt needs no cell

    def guarded(*args: Any, **kwargs: Any) -> Any:
        deposit = first[0]  # None: a plain retry (no budget, no on_result)
        if deposit is not None:
            deposit()  # a first attempt counts even if it is then interrupted
        try:
            result = fn(*args, **kwargs)
        except Exception as exc:
            steps = start(exc, None, None if repeatable is None else ask(repeatable, args))
            if steps is None:
                raise
        else:
            # `repeatable` is asked before a retry only: a plain success needs none.
            if deposit is None:
                next(first_ended)
                return result
            steps = start(None, result, None if repeatable is None else ask(repeatable, args))
            if steps is None:
                return result
        try:
            delay = next(steps)
            while True:
                if delay > 0.0:
                    try:
                        sleep(delay)
                    except Exception as wait_error:
                        steps.throw(wait_error)  # ends the flow: the last outcome stands
                # The outcome goes straight into send(): kept in a local, an exception
                # re-raised by the flow would hold this frame in a cycle.
                try:
                    result = fn(*args, **kwargs)
                except Exception as exc:
                    delay = steps.send((exc, None))
                else:
                    delay = steps.send((None, result))
        except StopIteration as stop:
            return stop.value

    return guarded


def async_retrying(
    core: RetryCore,
    fn: Callable[..., Awaitable[Any]],
    repeatable: Callable[[tuple[Any, ...]], bool] | None = None,
) -> Callable[..., Awaitable[Any]]:
    """The async adapter of the retry flow, around ``fn`` (see :func:`sync_retrying`)."""
    start = core.start
    # Read at each call, from the core: reconfigure() may add a budget or on_result.
    first = core.first
    asleep = core.clock.asleep
    first_ended = core.first_attempts  # next() on it: no Python frame on the hot path
    ask = functools.partial  # no closure over `args`: the first attempt needs no cell

    async def guarded(*args: Any, **kwargs: Any) -> Any:
        deposit = first[0]  # None: a plain retry (no budget, no on_result)
        if deposit is not None:
            deposit()  # a first attempt counts even if it is then interrupted
        try:
            result = await fn(*args, **kwargs)
        except Exception as exc:
            steps = start(exc, None, None if repeatable is None else ask(repeatable, args))
            if steps is None:
                raise
        else:
            # `repeatable` is asked before a retry only: a plain success needs none.
            if deposit is None:
                next(first_ended)
                return result
            steps = start(None, result, None if repeatable is None else ask(repeatable, args))
            if steps is None:
                return result
        try:
            delay = next(steps)
            while True:
                if delay > 0.0:
                    try:
                        await asleep(delay)
                    except Exception as wait_error:
                        steps.throw(wait_error)  # ends the flow: the last outcome stands
                try:
                    result = await fn(*args, **kwargs)
                except Exception as exc:
                    delay = steps.send((exc, None))
                else:
                    delay = steps.send((None, result))
        except StopIteration as stop:
            return stop.value

    return guarded
