"""The public hedge: its options, and the two drivers that start, wait and cancel.

Every decision is :class:`~resilient._core._hedge.HedgeRun`'s (when to hedge, whether
an outcome answers the call, what is left running); the drivers below only start
attempts, wait for the first of "an attempt ended" and "the delay passed", and stop the
rest.

* Async (asyncio and trio, through anyio): each attempt is a task of one task group
  owned by the call. When an attempt answers, the group is cancelled and *awaited*:
  the losers' ``finally`` blocks have run before the caller gets the answer, and no
  task outlives the call. A loser's failure, or its cancellation, is never raised.
* Sync: a thread cannot be cancelled, so every attempt runs in a worker thread of the
  hedge's own bounded pool (the pool sync timeouts use), in a copy of the caller's
  context, while the caller waits. A loser is *abandoned*: it runs to its end in its
  worker, its outcome dropped, and holds that worker until then. With every worker
  busy, the first attempt is refused with ``WorkersExhaustedError`` and extra attempts
  are not started.
"""

from __future__ import annotations

import contextvars
import math
import queue
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from resilient._core._budget import RetryBudget
from resilient._core._errors import WorkersExhaustedError
from resilient._core._hedge import (
    HEDGE_NOW,
    KIND,
    LOST,
    WIN,
    HedgeCore,
    HedgeMetrics,
    HedgeRun,
)
from resilient._core._validate import check_int
from resilient._policies._policy import CorePolicy
from resilient._waiting._clock import MONOTONIC, resolve_clock
from resilient._waiting._workers import Job, WorkerPool

if TYPE_CHECKING:
    from resilient._core._budget import RetryThrottle
    from resilient._core._clock import Clock
    from resilient._core._validate import Duration, ExceptionMatcher

__all__ = ["Hedge", "HedgeMetrics"]

_FOREVER = 1e9  # the longest wait queue.get is given (threading's TIMEOUT_MAX is more)


class _Outcome:
    """How one attempt ended (built in the attempt's task or thread, read by the caller)."""

    __slots__ = ("attempt", "error", "result", "seconds")

    def __init__(
        self, attempt: int, error: BaseException | None, result: Any, seconds: float
    ) -> None:
        self.attempt = attempt
        self.error = error
        self.result = result
        self.seconds = seconds


def _deliver(outcome: _Outcome) -> Any:
    """Return the outcome's result, or raise its error (without a frame cycle)."""
    error = outcome.error
    if error is None:
        return outcome.result
    outcome.error = None
    try:
        raise error
    finally:
        del error, outcome


class Hedge(CorePolicy[HedgeCore]):
    """Start a backup attempt when the first one is slow; take the first good answer.

    After ``delay`` seconds without an answer, another attempt starts (up to
    ``max_hedged`` extra ones, each ``delay`` after the previous); an attempt that fails
    with an exception matched by ``on`` (or a result matched by ``on_result``) starts the
    next one at once. The first acceptable outcome is the call's; the other attempts are
    cancelled and awaited (async), or abandoned to finish in their worker thread (sync),
    and their failures are not raised. If every attempt fails, the last failure is.

    Each extra attempt spends from ``budget``: with a dependency that is slow for every
    caller, hedging stops at the budget's share of the traffic instead of doubling the
    load. Only hedge idempotent calls: two attempts may both reach the dependency.

    Args:
        max_hedged: Extra attempts per call (1 to 100, default 1).
        delay: Seconds before each extra attempt (default 0.1); a latency quantile of
            this hedge's recent attempts, written ``"p95"`` (``"p50"``, ``"p99.9"``...):
            no hedging until 10 latencies are known; or a callable from the extra
            attempt's number (from 1) to seconds.
        budget: A [`RetryBudget`][resilient.RetryBudget] or
            [`RetryThrottle`][resilient.RetryThrottle] each extra attempt withdraws from,
            shareable with retries to the same dependency (default: a ``RetryBudget()``
            of this hedge's own: 20% of the traffic, plus 10 a second).
        on: Exception types, or a predicate, of failures another attempt may answer
            instead (default: every ``Exception``); other exceptions answer the call.
        on_result: A predicate over results that another attempt may answer instead.
        window: Latencies kept for a quantile ``delay`` (1 to 100,000, default 100).
        max_workers: Worker threads for sync calls (1 to 10,000,000, default 32).
        name: A name for events and metrics.
        clock: What attempt durations are measured with, for a quantile delay (default:
            the event loop's time for async calls, monotonic for sync ones). Waiting
            follows the event loop's (or the OS's) time.
    """

    __slots__ = ("_clock", "_pool")
    kind = KIND

    def __init__(
        self,
        max_hedged: int = 1,
        *,
        delay: Duration | str | Callable[[int], float] = 0.1,
        budget: RetryBudget | RetryThrottle | None = None,
        on: ExceptionMatcher = Exception,
        on_result: Callable[[Any], bool] | None = None,
        window: int = 100,
        max_workers: int = 32,
        name: str | None = None,
        clock: Clock | None = None,
    ) -> None:
        resolved = resolve_clock(clock)
        self._core = HedgeCore(
            name,
            max_hedged=max_hedged,
            delay=delay,
            budget=budget,
            on=on,
            on_result=on_result,
            window=window,
            default_budget=lambda: RetryBudget(clock=resolved),
        )
        self._clock: Clock = resolved
        self._pool = WorkerPool(check_int("max_workers", max_workers), name or "hedge")
        self._config = {
            "max_hedged": max_hedged,
            "delay": delay,
            "budget": budget,
            "on": on,
            "on_result": on_result,
            "window": window,
        }

    # The worker pool is made once: its size is not among what reconfigure() changes.
    _fixed_options = ("name", "clock", "max_workers")

    def _prepare_reconfigure(
        self, merged: dict[str, Any], changed: frozenset[str]
    ) -> Callable[[], None]:
        # A throwaway core checks the options as construction does; the latencies are
        # kept (the latest that fit a smaller window), and so is the default budget.
        core = self._core
        clock = self._clock
        budget = core.budget
        if "budget" in changed or not isinstance(budget, RetryBudget):
            budget = RetryBudget(clock=clock)  # a default budget of its own, as at construction
        fresh = HedgeCore(None, default_budget=lambda: budget, **merged)

        def commit() -> None:
            with core._lock:
                core.max_hedged = fresh.max_hedged
                core.delay_kind, core.delay = fresh.delay_kind, fresh.delay
                core.budget = fresh.budget
                core._on, core._on_result = fresh._on, fresh._on_result
                if "window" in changed:
                    latencies = core._latencies
                    if len(latencies) == core.window:  # full: the oldest is at _next
                        latencies = latencies[core._next :] + latencies[: core._next]
                    core._latencies = latencies[-fresh.window :]
                    core._next = 0
                    core.window = fresh.window
                core._quantile = None  # computed again from the window, for the new delay
                core._since = 0

        return commit

    # -- sync: worker threads ----------------------------------------------------------

    def _sync_wrap(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        core = self._core
        pool = self._pool
        monotonic = self._clock.monotonic

        def attempt(i: int, done: queue.SimpleQueue[_Outcome], args: Any, kwargs: Any) -> None:
            start = monotonic()
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:  # handed to the caller, who may raise it
                done.put(_Outcome(i, exc, None, monotonic() - start))
            else:
                done.put(_Outcome(i, None, result, monotonic() - start))

        def guarded(*args: Any, **kwargs: Any) -> Any:
            done: queue.SimpleQueue[_Outcome] = queue.SimpleQueue()
            jobs: dict[int, Job] = {}  # the attempts whose outcome has not come back
            began = monotonic()

            def start(i: int) -> bool:
                job = Job(attempt, (i, done, args, kwargs), {}, contextvars.copy_context())
                if not pool.submit(job):
                    return False
                jobs[i] = job
                return True

            run = core.run()
            if not start(0):
                run.abandon()
                raise _exhausted(core, pool)
            try:
                while True:
                    due = run.next_start()
                    wait = None if due is None else max(due - (monotonic() - began), 0.0)
                    try:
                        outcome = done.get(timeout=None if wait is None else min(wait, _FOREVER))
                    except queue.Empty:
                        i = run.hedge(monotonic() - began)
                        if i is not None and not start(i):
                            run.not_started()
                        continue
                    jobs.pop(outcome.attempt, None)  # its worker settles it: not abandoned
                    verdict = run.finished(
                        outcome.attempt, outcome.error, outcome.result, outcome.seconds
                    )
                    if verdict is WIN or verdict is LOST:
                        return _deliver(outcome)
                    if verdict is HEDGE_NOW:
                        i = run.hedge(monotonic() - began)
                        if i is not None and not start(i):
                            run.not_started()
                    if run.lost_if_idle():
                        return _deliver(outcome)
                    outcome.error = None  # not raised: drop the traceback now
            except BaseException:
                run.abandon()
                raise
            finally:
                # Whatever still runs is abandoned: one C call each, in this frame.
                for job in jobs.values():
                    job._claim.acquire(blocking=False)

        return guarded

    # -- async: one task group per call ------------------------------------------------

    def _async_wrap(self, fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        core = self._core
        clock = self._clock

        async def guarded(*args: Any, **kwargs: Any) -> Any:
            import anyio  # noqa: PLC0415 -- loaded by the first async call, not at import

            now = anyio.current_time if clock is MONOTONIC else clock.monotonic
            send, receive = anyio.create_memory_object_stream[_Outcome](core.max_hedged + 1)
            call = (fn, args, kwargs, send, now, anyio.get_cancelled_exc_class())
            began = now()
            run = core.run()
            final: _Outcome | None = None
            interrupted: BaseException | None = None
            try:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(_attempt_async, 0, *call)
                    try:
                        final = await _race(run, tg, receive, call, began)
                    except call[-1]:
                        raise  # cancelled from outside: the group cancels every attempt
                    except BaseException as exc:
                        # An interrupt in a user callable (on, on_result, delay): raised
                        # as itself once every attempt is gone, not in an exception group.
                        interrupted = exc
                    tg.cancel_scope.cancel()  # the others: cancelled, then awaited
            except BaseException:
                run.abandon()
                raise
            finally:
                send.close()
                receive.close()
            if interrupted is not None:
                run.abandon()
                try:
                    raise interrupted
                finally:
                    del interrupted
            assert final is not None  # noqa: S101 -- the race ends with an outcome
            return _deliver(final)

        return guarded

    # -- read-outs ---------------------------------------------------------------------

    @property
    def max_hedged(self) -> int:
        """Extra attempts per call, at most."""
        return self._core.max_hedged

    def metrics(self) -> HedgeMetrics:
        """Calls, extra attempts, their wins, refusals and cancellations, and the delay."""
        return self._core.metrics()

    def __enter__(self) -> None:
        raise TypeError("a hedge repeats a call: decorate a function, or use call()")

    async def __aenter__(self) -> None:
        raise TypeError("a hedge repeats a call: decorate a function, or use call_async()")

    def __repr__(self) -> str:
        delay = self._core.delay
        shown = f"p{delay * 100:g}" if self._core.delay_kind == "quantile" else delay
        return f"<Hedge {self.name!r} max_hedged={self.max_hedged} delay={shown!r}>"


async def _race(
    run: HedgeRun, tg: Any, receive: Any, call: tuple[Any, ...], began: float
) -> _Outcome:
    """Wait for outcomes and start extra attempts until one outcome is the call's."""
    now = call[4]
    while True:
        due = run.next_start()
        wait = math.inf if due is None else max(due - (now() - began), 0.0)
        outcome: _Outcome | None = None
        with _anyio().move_on_after(wait):
            outcome = await receive.receive()
        if outcome is None:
            i = run.hedge(now() - began)
            if i is not None:
                tg.start_soon(_attempt_async, i, *call)
            continue
        verdict = run.finished(outcome.attempt, outcome.error, outcome.result, outcome.seconds)
        if verdict is HEDGE_NOW:
            i = run.hedge(now() - began)
            if i is not None:
                tg.start_soon(_attempt_async, i, *call)
        if verdict is WIN or verdict is LOST or run.lost_if_idle():
            return outcome
        outcome.error = None  # not raised: drop the traceback now


def _anyio() -> Any:
    import anyio  # noqa: PLC0415 -- loaded by the first async call, not at import

    return anyio


async def _attempt_async(
    i: int,
    fn: Callable[..., Awaitable[Any]],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    send: Any,
    now: Callable[[], float],
    cancelled: type[BaseException],
) -> None:
    """One attempt, as a task of the call's group: its outcome goes to the caller."""
    start = now()
    try:
        result = await fn(*args, **kwargs)
    except cancelled:
        raise
    except BaseException as exc:  # handed to the caller, who may raise it
        send.send_nowait(_Outcome(i, exc, None, now() - start))
    else:
        send.send_nowait(_Outcome(i, None, result, now() - start))


def _exhausted(core: HedgeCore, pool: WorkerPool) -> WorkersExhaustedError:
    who = f"hedge {core.name!r}" if core.name is not None else "hedge"
    return WorkersExhaustedError(
        f"{who}: all {pool.max_workers} worker threads are busy (running attempts, or "
        "abandoned ones that still hold them); the call was not started",
        policy=core.name,
    )
