"""The retry policy's core: what is retried, how long to wait, and the retry flow.

The flow (:meth:`RetryCore.flow`) is a generator, as httpx's auth flow is: it yields the
seconds to wait before the next attempt and receives that attempt's outcome; it returns
the final result or raises the final exception. Every decision lives there: whether an
outcome is retried, how long to wait, whether the deadline or the budget allows it. The
drivers (the decorator's sync and async adapters in ``_retry.py``, the ``for attempt in
retry`` blocks in ``_retry_block.py``) only sleep (with the policy's clock), run the
attempt, and send the outcome back.

The first attempt needs no flow: a call that succeeds at once pays for one ``try`` and
one lock-free count (and, when ``on_result`` or a budget is set, one call to
:meth:`RetryCore.start`). All per-call state (attempt number, the wait schedule) lives
in the generator, never in the policy, so concurrent calls never see each other's
attempts (tenacity shares one statistics dict between them).

Every call ends in exactly one outcome, counted once: ``first_attempt`` (it ended on
its first attempt), ``recovered``, ``exhausted``, ``deadline``, ``budget_refused`` or
``stopped`` (a retry's outcome that is not retried, such as an open circuit, or a wait
that failed). ``retries`` counts attempts after the first, not calls.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import Any, Final

from resilient._core._atomic import counted, new_counter
from resilient._core._budget import RetryBudget, RetryThrottle
from resilient._core._clock import Clock
from resilient._core._errors import CircuitOpenError, MisuseError, RejectedError
from resilient._core._events import (
    EventSource,
    RetriesExhausted,
    RetryScheduled,
)
from resilient._core._fork import new_lock
from resilient._core._validate import (
    check_int,
    check_name,
    check_result_predicate,
    compile_matcher,
    matches,
)
from resilient._core._wait import Schedule, as_seconds

__all__ = ["KIND", "Flow", "RetryCore", "RetryMetrics", "instant_retries"]

KIND: Final = "retry"

logger = logging.getLogger("resilient")

Flow = Generator[float, "tuple[BaseException | None, Any]", Any]

# The testing switch (resilient.testing.instant_retries): (on, attempts cap or None).
_testing: tuple[bool, int | None] = (False, None)
_testing_lock = new_lock()

# Indexes into RetryCore._counts (all but first_attempt, which is lock-free).
_RETRIES, _RECOVERED, _EXHAUSTED, _DEADLINE, _BUDGET, _STOPPED = range(6)


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

    Every finished call is counted in exactly one of ``first_attempt``, ``recovered``,
    ``exhausted``, ``deadline_give_ups``, ``budget_refusals`` and ``stopped`` (their sum
    is [`calls`][resilient.RetryMetrics.calls]); ``retries`` counts attempts, not calls.
    A call interrupted by cancellation or ``KeyboardInterrupt`` is in none of them.

    Attributes:
        retries: Attempts after the first.
        recovered: Calls that succeeded on a retry.
        exhausted: Calls that gave up after their last attempt.
        deadline_give_ups: Calls that gave up because the next wait would pass the deadline.
        budget_refusals: Calls that gave up because the retry budget refused.
        stopped: Calls ended after a retry by an outcome that is not retried (an open
            circuit, an exception ``on`` does not match), or by a wait that failed.
        first_attempt: Calls that ended on their first attempt (returned, or raised
            what is not retried).
    """

    retries: int
    recovered: int
    exhausted: int
    deadline_give_ups: int
    budget_refusals: int
    stopped: int = 0
    first_attempt: int = 0

    @property
    def calls(self) -> int:
        """Finished calls: the sum of the end outcomes."""
        return (
            self.first_attempt
            + self.recovered
            + self.exhausted
            + self.deadline_give_ups
            + self.budget_refusals
            + self.stopped
        )


def _no_deposit() -> None:
    """What a first attempt calls when there is no budget but the flow is needed."""


class RetryCore(EventSource):
    """What is retried, how long to wait, and the retry flow itself."""

    __slots__ = (
        "_counts",
        "_lock",
        "_new_schedule",
        "_retry_open_circuit",
        "_time_left",
        "attempts",
        "budget",
        "clock",
        "first",
        "first_attempts",
        "max_wait",
        "name",
        "on",
        "on_result",
    )

    def __init__(
        self,
        attempts: int,
        new_schedule: Callable[[], Schedule],
        on: object,
        on_result: object,
        budget: object,
        clock: Clock,
        name: str | None,
        max_wait: float,
        time_left: Callable[[], float | None],
    ) -> None:
        super().__init__()
        self.name = check_name(name)
        self.attempts = check_int("attempts", attempts)
        self.max_wait = max_wait
        self._new_schedule = new_schedule
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
        # What the drivers read at each call, in a one-item list that adopt() changes in
        # place: None while a first success may skip the flow (no budget, no
        # on_result), else what a first attempt calls first (the budget's deposit, or
        # a no-op).
        self.first: list[Callable[[], object] | None] = [
            None
            if self.on_result is None and budget is None
            else _no_deposit
            if budget is None
            else budget.on_first_attempt
        ]
        self.clock = clock  # resolved and checked by the adapter, which sleeps with it
        # The caller's deadline is read through the adapter (a context variable there).
        self._time_left = time_left
        self._lock = new_lock(self)
        self._counts = [0, 0, 0, 0, 0, 0]
        # Calls ended on their first attempt: the hot path, so counted without a lock
        # (see _atomic.new_counter); drivers call next() on
        # it directly.
        self.first_attempts = new_counter()

    def adopt(self, fresh: RetryCore) -> None:
        """Take the checked options of ``fresh``; the counts stay (issue 19)."""
        with self._lock:
            self.attempts = fresh.attempts
            self._new_schedule = fresh._new_schedule
            self.on = fresh.on
            self._retry_open_circuit = fresh._retry_open_circuit
            self.on_result = fresh.on_result
            self.budget = fresh.budget
            self.first[0] = fresh.first[0]

    def retryable(self, exc: BaseException | None, result: Any, judge_result: bool = True) -> bool:
        """Whether this outcome (an :class:`Exception`, or a result) is worth a retry."""
        if exc is not None:
            if isinstance(exc, CircuitOpenError) and not self._retry_open_circuit:
                return False
            if type(exc) is MisuseError:
                return False  # a bug in the calling code: running it again hides it
            return self.on is not None and matches(self.on, exc, "the `on` predicate", self.name)
        check = self.on_result
        return judge_result and check is not None and matches(check, result, "on_result", self.name)

    def _count(self, index: int) -> None:
        with self._lock:
            self._counts[index] += 1

    def _delay(
        self, schedule: Schedule, attempt: int, exc: BaseException | None, result: Any
    ) -> float:
        # A wait strategy is user code: if it fails, the retry still happens (at once)
        # rather than replacing the caller's error with the strategy's. What it returns
        # is clamped to max_wait: a sleep of 1e10 s overflows time.sleep, and an async
        # sleep that long never ends.
        try:
            # A failure may say itself how long to wait (an HTTP response's Retry-After,
            # carried by resilient.httpx's HTTPStatusFailure): that wait replaces the
            # schedule's, still within max_wait and, in _refused, the deadline.
            asked = None if exc is None else getattr(exc, "requested_wait", None)
            if asked is not None:
                return min(as_seconds(asked), self.max_wait)
            return min(as_seconds(schedule(attempt, exc, result)), self.max_wait)
        except Exception:
            logger.exception(
                "the wait strategy of retry %r failed at attempt %d; retrying at once",
                self.name,
                attempt,
            )
            return 0.0

    def start(
        self,
        exc: BaseException | None,
        result: Any,
        may_retry: Callable[[], bool] | None = None,
        judge_result: bool = True,
    ) -> Flow | None:
        """After the first attempt: report its outcome, and return the retry flow or ``None``.

        ``None`` means the first outcome stands (returned or re-raised by the driver).
        ``may_retry`` is asked before each retry; when it says no, the last outcome
        stands and the call counts as exhausted (the ASGI middleware cannot repeat a
        request whose response went out). ``judge_result=False`` (a block, which has no
        result) never asks ``on_result``.
        """
        budget = self.budget
        if budget is not None:
            budget.on_outcome(failed=exc is not None)
        if not self.retryable(exc, result, judge_result):
            next(self.first_attempts)
            return None
        return self.flow(exc, result, may_retry, judge_result)

    def flow(  # noqa: PLR0915 -- the one retry flow, kept whole (STYLE 5, 6)
        self,
        exc: BaseException | None,
        result: Any,
        may_retry: Callable[[], bool] | None = None,
        judge_result: bool = True,
    ) -> Flow:
        """The retries after a first attempt whose outcome is retryable (see module doc).

        A driver whose wait fails throws that error into the flow at its ``yield``: the
        call then ends with the last outcome (its exception chained to the wait's error).
        """
        testing, cap = _testing
        attempts = self.attempts if cap is None else min(self.attempts, cap)
        schedule = self._new_schedule()
        budget = self.budget
        observed = self.observed()
        attempt = 1
        reason = "attempts"
        while attempt < attempts:
            if may_retry is not None and not may_retry():
                reason = "not_repeatable"
                self._count(_EXHAUSTED)
                break
            delay = 0.0 if testing else self._delay(schedule, attempt, exc, result)
            refused = self._refused(delay, budget)
            if refused is not None:
                reason = refused
                break
            self._count(_RETRIES)
            if observed:
                self.emit(RetryScheduled(self.name, KIND, attempt, delay, exc, result))
            try:
                exc, result = yield delay
            except Exception as wait_error:
                # The wait itself failed (a clock that raises, an OverflowError): the
                # caller still gets the last outcome, not the library's error.
                self._wait_failed(wait_error, delay, attempt, exc, result)
                if exc is not None:
                    try:
                        raise exc  # chained: its __context__ is the wait's error
                    finally:
                        del exc  # no generator frame <-> traceback cycle
                return result
            attempt += 1
            if budget is not None:
                budget.on_outcome(failed=exc is not None)
            if not self.retryable(exc, result, judge_result):
                if exc is not None:
                    self._count(_STOPPED)
                    try:
                        raise exc
                    finally:
                        del exc  # no generator frame <-> traceback cycle
                self._count(_RECOVERED)
                return result
        else:
            self._count(_EXHAUSTED)
        if observed:
            self.emit(RetriesExhausted(self.name, KIND, attempt, reason, exc, result))
        if exc is not None:
            try:
                raise exc
            finally:
                del exc
        return result

    def _refused(self, delay: float, budget: RetryBudget | RetryThrottle | None) -> str | None:
        """Why a retry after ``delay`` may not happen (counted), or ``None``."""
        left = self._time_left()
        if left is not None and delay >= left:
            self._count(_DEADLINE)
            return "deadline"
        if budget is not None and not budget.try_retry():
            self._count(_BUDGET)
            return "budget"
        return None

    def _wait_failed(
        self,
        wait_error: Exception,
        delay: float,
        attempt: int,
        exc: BaseException | None,
        result: Any,
    ) -> None:
        logger.error(
            "the wait of %ss before attempt %d of retry %r failed; giving up",
            delay,
            attempt + 1,
            self.name,
            exc_info=wait_error,
        )
        self._count(_STOPPED)
        if self.observed():
            self.emit(RetriesExhausted(self.name, KIND, attempt, "wait_failed", exc, result))

    def metrics(self) -> RetryMetrics:
        """A frozen snapshot of the counts."""
        with self._lock:
            retries, recovered, exhausted, deadline, budget, stopped = self._counts
        return RetryMetrics(
            retries, recovered, exhausted, deadline, budget, stopped, counted(self.first_attempts)
        )
