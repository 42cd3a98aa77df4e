"""The retry policy: one retry flow in the core, driven by a sync and an async adapter.

The flow (:meth:`RetryCore.flow`) is a generator, as httpx's auth flow is: it yields the
seconds to wait before the next attempt and receives that attempt's outcome; it returns
the final result or raises the final exception. Every decision lives there: whether an
outcome is retried, how long to wait, whether the deadline or the budget allows it. The
adapters only sleep (with the policy's clock), call, and send the outcome back.

The first attempt needs no flow: a call that succeeds at once pays for one ``try`` (and,
when ``on_result`` or a budget is set, one call to :meth:`RetryCore.start`). All
per-call state (attempt number, the wait schedule) lives in the generator, never in the
policy, so concurrent calls never see each other's attempts (tenacity shares one
statistics dict between them).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable, Generator, Iterator
from dataclasses import dataclass
from typing import Any, Final

from resilient._budget import RetryBudget, RetryThrottle
from resilient._clock import MONOTONIC, Clock
from resilient._deadline import remaining
from resilient._errors import CircuitOpenError, RejectedError
from resilient._events import (
    GLOBAL_LISTENERS,
    NOTABLE_LISTENERS,
    EventSource,
    RetriesExhausted,
    RetryScheduled,
)
from resilient._policy import CorePolicy
from resilient._validate import (
    ExceptionMatcher,
    check_int,
    check_name,
    check_result_predicate,
    compile_matcher,
    matches,
)
from resilient._wait import ExponentialJitter, Schedule, as_seconds, compile_wait

__all__ = ["Retry", "RetryMetrics", "async_retrying", "instant_retries"]

KIND: Final = "retry"

logger = logging.getLogger("resilient")

Flow = Generator[float, "tuple[BaseException | None, Any]", Any]

# The testing switch (resilient.testing.instant_retries): (on, attempts cap or None).
_testing: tuple[bool, int | None] = (False, None)
_testing_lock = threading.Lock()


@contextlib.contextmanager
def instant_retries(attempts: int | None = None) -> Iterator[None]:
    """Make every ``Retry`` in the process wait 0 s, and cap attempts at ``attempts``.

    For a user's own test suite, like stamina's ``set_testing``: code under test keeps
    its retry policies, and the tests run in milliseconds and deterministically. The
    previous setting is restored on exit, so blocks nest.
    """
    global _testing  # noqa: PLW0603 -- a process-wide switch, by design
    if attempts is not None:
        check_int("attempts", attempts)
    with _testing_lock:
        previous = _testing
        _testing = (True, attempts)
    try:
        yield
    finally:
        with _testing_lock:
            _testing = previous


@dataclass(frozen=True, slots=True)
class RetryMetrics:
    """A retry policy's counts since it was created.

    Attributes:
        retries: Attempts after the first.
        recovered: Calls that succeeded on a retry.
        exhausted: Calls that gave up after their last attempt.
        deadline_give_ups: Calls that gave up because the next wait would pass the deadline.
        budget_refusals: Calls that gave up because the retry budget refused.
    """

    retries: int
    recovered: int
    exhausted: int
    deadline_give_ups: int
    budget_refusals: int


class RetryCore(EventSource):
    """What is retried, how long to wait, and the retry flow itself."""

    __slots__ = (
        "_counts",
        "_lock",
        "_new_schedule",
        "_retry_open_circuit",
        "attempts",
        "budget",
        "clock",
        "name",
        "on",
        "on_result",
    )

    def __init__(
        self,
        attempts: int,
        wait: object,
        on: object,
        on_result: object,
        budget: object,
        clock: Clock | None,
        name: str | None,
    ) -> None:
        super().__init__()
        self.name = check_name(name)
        self.attempts = check_int("attempts", attempts)
        self._new_schedule = compile_wait(wait)
        self.on = compile_matcher("on", on)
        # An open circuit says when to come back; retrying it only adds rejections. It is
        # retried only when `on` asks for rejections by type, or decides by predicate.
        self._retry_open_circuit = (
            (isinstance(on, type) and issubclass(on, RejectedError))
            or (isinstance(on, tuple) and any(issubclass(t, RejectedError) for t in on))
            or (self.on is not None and not isinstance(on, (type, tuple)))
        )
        self.on_result = check_result_predicate("on_result", on_result)
        if budget is not None and not isinstance(budget, (RetryBudget, RetryThrottle)):
            raise TypeError(
                "budget must be a RetryBudget, a RetryThrottle or None, "
                f"not {type(budget).__name__}"
            )
        self.budget: RetryBudget | RetryThrottle | None = budget
        self.clock = MONOTONIC if clock is None else clock
        self._lock = threading.Lock()
        # retries, recovered, exhausted, deadline give-ups, budget refusals
        self._counts = [0, 0, 0, 0, 0]

    def retryable(self, exc: BaseException | None, result: Any) -> bool:
        """Whether this outcome (an :class:`Exception`, or a result) is worth a retry."""
        if exc is not None:
            if isinstance(exc, CircuitOpenError) and not self._retry_open_circuit:
                return False
            return self.on is not None and matches(self.on, exc, "the `on` predicate", self.name)
        check = self.on_result
        return check is not None and matches(check, result, "on_result", self.name)

    def _count(self, index: int) -> None:
        with self._lock:
            self._counts[index] += 1

    def _delay(
        self, schedule: Schedule, attempt: int, exc: BaseException | None, result: Any
    ) -> float:
        # A wait strategy is user code: if it fails, the retry still happens (at once)
        # rather than replacing the caller's error with the strategy's.
        try:
            return as_seconds(schedule(attempt, exc, result))
        except Exception:
            logger.exception(
                "resilient: the wait strategy of retry %r failed at attempt %d; retrying at once",
                self.name,
                attempt,
            )
            return 0.0

    def start(
        self,
        exc: BaseException | None,
        result: Any,
        may_retry: Callable[[], bool] | None = None,
    ) -> Flow | None:
        """After the first attempt: report its outcome, and return the retry flow or ``None``.

        ``None`` means the first outcome stands (returned or re-raised by the adapter).
        ``may_retry`` is asked before each retry; when it says no, the last outcome
        stands and the call counts as exhausted (the ASGI middleware cannot repeat a
        request whose response went out).
        """
        budget = self.budget
        if budget is not None:
            budget.on_outcome(failed=exc is not None)
        if not self.retryable(exc, result):
            return None
        return self.flow(exc, result, may_retry)

    def flow(
        self,
        exc: BaseException | None,
        result: Any,
        may_retry: Callable[[], bool] | None = None,
    ) -> Flow:
        """The retries after a first attempt whose outcome is retryable (see module doc)."""
        testing, cap = _testing
        attempts = self.attempts if cap is None else min(self.attempts, cap)
        schedule = self._new_schedule()
        budget = self.budget
        observed = self._listeners or GLOBAL_LISTENERS or NOTABLE_LISTENERS
        attempt = 1
        reason = "attempts"
        while attempt < attempts:
            if may_retry is not None and not may_retry():
                reason = "not_repeatable"
                self._count(2)
                break
            delay = 0.0 if testing else self._delay(schedule, attempt, exc, result)
            left = remaining()
            if left is not None and delay >= left:
                reason = "deadline"
                self._count(3)
                break
            if budget is not None and not budget.try_retry():
                reason = "budget"
                self._count(4)
                break
            self._count(0)
            if observed:
                self.emit(RetryScheduled(self.name, KIND, attempt, delay, exc, result))
            exc, result = yield delay
            attempt += 1
            if budget is not None:
                budget.on_outcome(failed=exc is not None)
            if not self.retryable(exc, result):
                if exc is not None:
                    try:
                        raise exc
                    finally:
                        del exc  # no generator frame <-> traceback cycle
                self._count(1)
                return result
        else:
            self._count(2)
        if observed:
            self.emit(RetriesExhausted(self.name, KIND, attempt, reason, exc, result))
        if exc is not None:
            try:
                raise exc
            finally:
                del exc
        return result

    def metrics(self) -> RetryMetrics:
        """A frozen snapshot of the counts."""
        with self._lock:
            return RetryMetrics(*self._counts)


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
    kind = "retry"

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
        if wait is None:
            wait = ExponentialJitter()
        self._core = RetryCore(attempts, wait, on, on_result, budget, clock, name)

    def _sync_wrap(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        core = self._core
        start = core.start
        plain = core.on_result is None and core.budget is None
        deposit = None if core.budget is None else core.budget.on_first_attempt
        sleep = core.clock.sleep

        def guarded(*args: Any, **kwargs: Any) -> Any:
            if deposit is not None:
                deposit()  # a first attempt counts even if it is then interrupted
            try:
                result = fn(*args, **kwargs)
            except Exception as exc:
                steps = start(exc, None)
                if steps is None:
                    raise
            else:
                if plain:
                    return result
                steps = start(None, result)
                if steps is None:
                    return result
            try:
                delay = next(steps)
                while True:
                    if delay > 0.0:
                        sleep(delay)
                    # The outcome goes straight into send(): kept in a local, an
                    # exception re-raised by the flow would hold this frame in a cycle.
                    try:
                        result = fn(*args, **kwargs)
                    except Exception as exc:
                        delay = steps.send((exc, None))
                    else:
                        delay = steps.send((None, result))
            except StopIteration as stop:
                return stop.value

        return guarded

    def _async_wrap(self, fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        return async_retrying(self._core, fn)

    def __enter__(self) -> None:
        raise TypeError("a retry calls the function again: decorate it instead")

    async def __aenter__(self) -> None:
        raise TypeError("a retry calls the function again: decorate it instead")

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


def async_retrying(
    core: RetryCore,
    fn: Callable[..., Awaitable[Any]],
    repeatable: Callable[[tuple[Any, ...]], bool] | None = None,
) -> Callable[..., Awaitable[Any]]:
    """The async adapter of the retry flow, around ``fn``.

    Args:
        core: The retry policy's core (its flow, budget and clock).
        fn: The coroutine function to call again.
        repeatable: Asked with the call's positional arguments before each retry; when
            it says no, the last outcome stands, counted as exhausted (the ASGI
            middleware cannot repeat a request whose response has started or whose body
            it did not keep).
    """
    start = core.start
    plain = core.on_result is None and core.budget is None and repeatable is None
    deposit = None if core.budget is None else core.budget.on_first_attempt
    asleep = core.clock.asleep

    async def guarded(*args: Any, **kwargs: Any) -> Any:
        if deposit is not None:
            deposit()  # a first attempt counts even if it is then interrupted
        may_retry = None if repeatable is None else lambda: repeatable(args)
        try:
            result = await fn(*args, **kwargs)
        except Exception as exc:
            steps = start(exc, None, may_retry)
            if steps is None:
                raise
        else:
            if plain:
                return result
            steps = start(None, result, may_retry)
            if steps is None:
                return result
        try:
            delay = next(steps)
            while True:
                if delay > 0.0:
                    await asleep(delay)
                try:
                    result = await fn(*args, **kwargs)
                except Exception as exc:
                    delay = steps.send((exc, None))  # see the sync adapter
                else:
                    delay = steps.send((None, result))
        except StopIteration as stop:
            return stop.value

    return guarded
