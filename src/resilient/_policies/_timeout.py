"""The timeout policy: a deadline for each call, async by cancellation, sync by thread.

Async calls run under a deadline that really cancels them: on asyncio (3.11+) through
the per-loop timer of ``_waiting._timer``; on trio, and on asyncio under Python 3.10, through
an anyio cancel scope. Either way the caller gets :class:`~resilient.TimeoutExceededError`
and the cancelled coroutine's ``finally`` blocks have run.

Sync calls cannot be interrupted safely, so they run in a bounded pool of worker
threads (``_waiting._workers``), in a copy of the caller's context; at the deadline the caller
gets the error and the call is abandoned to finish on its own, counted while it runs.

Both sides set the deadline that :func:`resilient.remaining` reads, and both take the
tighter of their own timeout and the one they run under.
"""

from __future__ import annotations

import asyncio
import contextvars
import math
import sys
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeAlias

import anyio

from resilient._core._atomic import counted
from resilient._core._clock import Clock
from resilient._core._outcome import PASS
from resilient._core._timeout import KIND, TimeoutCore, TimeoutMetrics
from resilient._core._validate import Duration, check_duration
from resilient._policies._pipeline import Wait
from resilient._policies._policy import CorePolicy
from resilient._waiting._clock import MONOTONIC, resolve_clock
from resilient._waiting._deadline import DEADLINE, effective_timeout
from resilient._waiting._timer import DONE, FIRED, PENDING, loop_timer
from resilient._waiting._workers import Job, WorkerPool

__all__ = ["Armed", "LoopDeadline", "ScopeDeadline", "Timeout", "TimeoutMetrics"]

_UNCANCEL: Final = sys.version_info >= (3, 11)


def _cancel_scope(seconds: float) -> Any:
    """A cancel scope ending in ``seconds``, trio's own under trio, anyio's elsewhere.

    anyio's scope on trio wraps trio's and costs more per call; elsewhere (asyncio on
    Python 3.10) anyio's is the one that works.
    """
    trio = sys.modules.get("trio")
    if trio is not None and trio.lowlevel.in_trio_run():
        return trio.CancelScope(deadline=trio.current_time() + seconds)
    return anyio.CancelScope(deadline=anyio.current_time() + seconds)


# The step's tokens: one armed deadline per call, of one of two kinds. Each knows how
# to close itself (at the call's exit, in the task that armed it) and how to stop
# counting (from any task of the loop: the ASGI middleware stops the timeouts that end
# at the response start). They are built without __init__ (object.__new__ and stores
# to slots), which costs what the list they replace did; a class call would add ~140 ns
# to a ~2.3 us call.
_new: Final = object.__new__


class LoopDeadline:
    """A deadline on the loop timer (asyncio, Python 3.11+): the timer's entry itself.

    The timer reads ``state``, ``task`` and ``when`` (see ``_timer.Entry``); the rest is
    what the exit needs back.

    Attributes:
        state: ``PENDING``, ``DONE`` (finished or stopped) or ``FIRED`` (the timer
            cancelled the task).
        task: The task to cancel; ``None`` once closed.
        when: The deadline, on the loop's clock.
        cancelling: ``task.cancelling()`` when armed: cancel requests not ours.
        context: The token that resets the ``_deadline.DEADLINE`` context variable.
        seconds: The timeout this call ran under (shorter than the policy's when an
            outer deadline cut it short).
    """

    __slots__ = ("cancelling", "context", "seconds", "state", "task", "when")

    state: int
    task: Any
    when: float
    cancelling: int
    context: Any
    seconds: float

    def stop(self) -> None:
        """Never fire (unless it already has); the exit still closes the deadline."""
        if self.state == PENDING:
            self.state = DONE

    def close(self, exc: BaseException | None) -> bool:
        """Disarm at the call's exit; return whether *this* deadline cancelled the call."""
        DEADLINE.reset(self.context)
        task = self.task
        # The entry may linger in its lane behind a slower call; neither the task nor
        # the context (which the reset token holds) need linger with it.
        self.task = self.context = None
        if self.state != FIRED:
            self.state = DONE
            return False
        self.state = DONE
        # Withdraw our cancel request; if nobody else asked for one, the CancelledError
        # was ours and becomes a timeout.
        return bool(task.uncancel() <= self.cancelling and isinstance(exc, asyncio.CancelledError))


class ScopeDeadline:
    """A deadline as a cancel scope (trio; asyncio on Python 3.10).

    Attributes:
        scope: The cancel scope (trio's or anyio's), entered when armed.
        context: The token that resets the ``_deadline.DEADLINE`` context variable.
        seconds: The timeout this call ran under.
    """

    __slots__ = ("context", "scope", "seconds")

    scope: Any
    context: Any
    seconds: float

    def stop(self) -> None:
        """Never fire; the exit still closes the scope."""
        self.scope.deadline = math.inf

    def close(self, exc: BaseException | None) -> bool:
        """Exit the scope; return whether *this* deadline cancelled the call."""
        DEADLINE.reset(self.context)
        if exc is None:
            self.scope.__exit__(None, None, None)
            return False
        return bool(self.scope.__exit__(type(exc), exc, exc.__traceback__))


Armed: TypeAlias = "LoopDeadline | ScopeDeadline"
"""The token of an async timeout step: one call's armed deadline."""


class _TimeoutStep:
    """The async side: arm a deadline on enter, disarm it (or report it) on exit."""

    __slots__ = ("_core",)
    defers = False

    def __init__(self, core: TimeoutCore) -> None:
        self._core = core

    def enter(self) -> Armed:
        core = self._core
        next(core.admitted)  # an async call is never refused (a spent deadline: a timeout)
        seconds = core.seconds
        regular = True
        # effective_timeout() written inline (a call is ~50 ns of a ~2 us budget), and
        # it must also know whether the outer deadline cut this one short.
        outer = DEADLINE.get()
        if outer is not None:
            left = outer[0] - outer[1].monotonic()
            if left < seconds:
                if left <= 0.0:
                    raise core.expired(0.0)
                seconds, regular = left, False
        clock = core.clock
        loop = asyncio._get_running_loop()
        if loop is not None and _UNCANCEL:
            timer = loop_timer(loop)
            now = clock.monotonic()
            task: Any = asyncio.current_task(loop)
            entry: LoopDeadline = _new(LoopDeadline)
            entry.state = PENDING
            entry.task = task
            entry.cancelling = task.cancelling()
            entry.when = (
                now if clock is MONOTONIC and timer.standard_time else loop.time()
            ) + seconds
            entry.seconds = seconds
            entry.context = DEADLINE.set((now + seconds, clock))
            timer.add(entry, seconds, regular)
            return entry
        armed: ScopeDeadline = _new(ScopeDeadline)
        armed.scope = scope = _cancel_scope(seconds)
        scope.__enter__()
        armed.context = DEADLINE.set((clock.monotonic() + seconds, clock))
        armed.seconds = seconds
        return armed

    def exit_ok(self, token: Armed, result: Any) -> Any:
        token.close(None)
        return result

    def exit_error(self, token: Armed, exc: Exception) -> Any:
        token.close(exc)
        return PASS

    def exit_cancel(self, token: Armed, exc: BaseException) -> BaseException:
        if token.close(exc):
            error = self._core.expired(token.seconds)
            error.__cause__ = exc
            return error
        return exc

    def enter_wait(self, wait: Wait) -> Any:  # pragma: no cover - enter() never returns WAIT
        raise NotImplementedError

    async def enter_wait_async(self, wait: Wait) -> Any:  # pragma: no cover - likewise
        raise NotImplementedError


class _ReportingTimeoutStep(_TimeoutStep):
    """The async step, handing each armed deadline to ``on_arm`` as it is armed."""

    __slots__ = ("_on_arm",)

    def __init__(self, core: TimeoutCore, on_arm: Callable[[Armed], object]) -> None:
        super().__init__(core)
        self._on_arm = on_arm

    def enter(self) -> Armed:
        token = _TimeoutStep.enter(self)
        self._on_arm(token)
        return token


class Timeout(CorePolicy[TimeoutCore]):
    """Give each call a deadline; past it the caller gets ``TimeoutExceededError``.

    **Async** calls are cancelled at the deadline (their ``finally`` blocks run) on
    asyncio and trio. **Sync** calls run in a worker thread carrying the caller's
    ``contextvars``; at the deadline the caller gets the error at once, while the
    overrunning call is *abandoned*: it keeps running in its thread until it returns
    (Python cannot stop it), its result is discarded, and it is counted in
    ``metrics().abandoned_running``. At most ``max_workers`` sync calls run at once; when
    every worker is busy a call is rejected at once with
    [`WorkersExhaustedError`][resilient.WorkersExhaustedError], never queued.

    Deadlines nest: under an outer deadline (another ``Timeout``, or one set by the ASGI
    middleware) the tighter one wins, and [`resilient.remaining()`][resilient.remaining]
    tells the code inside how many seconds are left.

    ``async with Timeout(2):`` guards a block of async code the same way.

    Args:
        seconds: The timeout (> 0), as seconds or a ``timedelta``.
        name: A name for errors, events and metrics.
        max_workers: Worker threads for sync calls (>= 1, default 32).
        clock: The clock [`remaining()`][resilient.remaining] measures with (default:
            monotonic). Cancellation itself always follows the event loop's (or the OS's)
            time.
    """

    __slots__ = ("_pool", "_step")
    kind = KIND

    def __init__(
        self,
        seconds: Duration,
        *,
        name: str | None = None,
        max_workers: int = 32,
        clock: Clock | None = None,
    ) -> None:
        self._core = TimeoutCore(seconds, name, resolve_clock(clock), max_workers)
        self._pool = WorkerPool(self._core.max_workers, name or "unnamed")
        self._step = _TimeoutStep(self._core)
        self._config = {"seconds": seconds}

    # The worker pool is made once: its size is not among what reconfigure() changes.
    _fixed_options = ("name", "clock", "max_workers")

    def _prepare_reconfigure(
        self, merged: dict[str, Any], changed: frozenset[str]
    ) -> Callable[[], None]:
        # Checked as construction checks it; every call reads core.seconds as it starts
        # (calls already running keep their deadline).
        core = self._core
        seconds = check_duration("seconds", merged["seconds"], allow_zero=False)

        def commit() -> None:
            core.seconds = seconds

        return commit

    def _async_step(self) -> _TimeoutStep:
        return self._step

    def _reporting_step(self, on_arm: Callable[[Armed], object]) -> _TimeoutStep:
        """An async step of this timeout that calls ``on_arm(token)`` as it arms a deadline.

        For integrations that must end a deadline early from elsewhere: the ASGI
        middleware keeps the tokens of a request and calls their ``stop()`` when the
        response starts. The step shares this timeout's core (counts, events).
        """
        return _ReportingTimeoutStep(self._core, on_arm)

    def _sync_wrap(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        core = self._core
        submit = self._pool.submit

        def guarded(*args: Any, **kwargs: Any) -> Any:
            seconds = effective_timeout(core.seconds)
            if seconds <= 0.0:
                next(core.admitted)  # not refused: timed out at once
                raise core.expired(0.0)
            context = contextvars.copy_context()
            context.run(DEADLINE.set, (core.clock.monotonic() + seconds, core.clock))
            job = Job(fn, args, kwargs, context)
            finished = False
            try:
                submitted = submit(job)
                if submitted:
                    next(core.admitted)
                    finished = job.wait(seconds)
            except BaseException:
                # Interrupted (a signal handler raised) anywhere above: the job, if it
                # was handed over, runs on unattended. One C call abandons it here, in
                # this frame, so the pool counts it until it ends (see _workers).
                job._claim.acquire(blocking=False)
                raise
            if not submitted:
                raise core.exhausted()
            if not finished:
                raise core.expired(seconds, abandoned=True)
            error = job.error
            if error is not None:
                job.error = None  # the traceback holds the job's frame: no cycle back
                try:
                    raise error
                finally:
                    del error, job
            return job.result

        return guarded

    def _async_wrap(self, fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        raise NotImplementedError  # pragma: no cover - the async side is a step

    def __enter__(self) -> None:
        raise TypeError(
            "a sync block cannot be interrupted: use `async with Timeout(...)` in async code, "
            "or decorate the sync function (it then runs in a worker thread)"
        )

    @property
    def seconds(self) -> float:
        """The configured timeout in seconds."""
        return self._core.seconds

    def metrics(self) -> TimeoutMetrics:
        """Timeouts, rejections and the state of the worker threads, as a frozen snapshot."""
        workers, busy, abandoned = self._pool.stats()
        return TimeoutMetrics(
            seconds=self._core.seconds,
            timeouts=self._core.timeouts,
            rejected=self._core.rejected,
            workers=workers,
            busy_workers=busy,
            abandoned_running=abandoned,
            admitted=counted(self._core.admitted),
        )

    def __repr__(self) -> str:
        return f"<Timeout {self.name!r} {self.seconds:g}s>"
