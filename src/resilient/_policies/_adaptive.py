"""The public adaptive limiter and its step: admission and sampling by the core, waiting here.

The step is a plain one (``enter``/``exit_*``), not a slot pool as the bulkhead's is:
every call must tell the core its round-trip time and how it ended, and the limit is
not a fixed number of tokens. Waiting reuses the bulkhead's waiters
(``_waiting._waiters``): a caller queues a waiter in the core and blocks (thread) or
suspends (task) until the core grants it a permit or ``max_wait`` runs out.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from resilient._core._adaptive import (
    IGNORED,
    KIND,
    SUCCESS,
    AdaptiveCore,
    AdaptiveLimiterMetrics,
    Token,
)
from resilient._core._clock import Clock
from resilient._core._limit_algorithms import Gradient2, LimitAlgorithm
from resilient._core._outcome import PASS
from resilient._core._validate import Duration, ExceptionMatcher
from resilient._policies._pipeline import WAIT, Wait
from resilient._policies._policy import CorePolicy, Policy
from resilient._waiting._clock import resolve_clock
from resilient._waiting._waiters import ThreadWaiter, async_waiter

__all__ = ["AdaptiveLimiter", "AdaptivePartition"]


class _AdaptiveStep:
    """Take a permit on enter; on exit give it back with the call's sample."""

    __slots__ = ("_core", "_part")
    defers = False

    def __init__(self, core: AdaptiveCore, part: int = -1) -> None:
        self._core = core
        self._part = part

    def enter(self) -> Any:
        core = self._core
        token = core.acquire(self._part)
        if token is not None:
            return token
        if core.max_wait == 0:
            raise core.refuse(self._part)
        return WAIT

    # enter_wait and enter_wait_async are twins, the same code apart from async/await.

    def enter_wait(self, wait: Wait = WAIT) -> Token:
        core, part = self._core, self._part
        waiter = ThreadWaiter()
        try:
            if (
                core.enqueue(waiter, part)
                or waiter.wait(core.max_wait)
                or core.timed_out(waiter, part)
            ):
                waiter.granted = False  # the permit passes from the waiter to the token
                return core.started(part)
        except BaseException:  # interrupted while queued: leave, or give the permit back
            core.leave(waiter, part)
            raise
        raise core.rejection()

    async def enter_wait_async(self, wait: Wait = WAIT) -> Token:
        core, part = self._core, self._part
        waiter = async_waiter()
        try:
            if (
                core.enqueue(waiter, part)
                or await waiter.wait(core.max_wait)
                or core.timed_out(waiter, part)
            ):
                waiter.granted = False
                return core.started(part)
        except BaseException:  # cancelled while queued: leave, or give the permit back
            core.leave(waiter, part)
            raise
        raise core.rejection()

    def exit_ok(self, token: Token, result: Any) -> Any:
        self._core.release(token, SUCCESS)
        return result

    def exit_error(self, token: Token, exc: Exception) -> Any:
        outcome = IGNORED
        try:
            outcome = self._core.classify(exc)
        finally:  # the permit goes back whatever interrupts the user's predicate
            self._core.release(token, outcome)
        return PASS

    def exit_cancel(self, token: Token, exc: BaseException) -> BaseException:
        self._core.release(token, IGNORED)  # says nothing about the dependency
        return exc


class AdaptiveLimiter(CorePolicy[AdaptiveCore]):
    """A bulkhead whose limit finds itself, from round-trip times and drops.

    At most ``limit`` calls are in flight, across threads and tasks; the limit starts at
    the algorithm's ``initial_limit`` and is recomputed from windows of samples: each
    call's round-trip time, the calls in flight, and whether it was *dropped* (raised
    an exception matching ``drop_on``: a timeout by default, which says the dependency
    is overloaded). A caller beyond the limit waits up to ``max_wait`` (FIFO), then gets
    [`BulkheadFullError`][resilient.BulkheadFullError]. The permit is returned however
    the call ends; a cancelled call, or one raising an exception that is not a drop,
    gives no sample.

    The algorithms follow Netflix's *concurrency-limits*:
    [`Gradient2`][resilient.Gradient2] (the default), [`Vegas`][resilient.Vegas] and
    [`AIMD`][resilient.AIMD]. See the "Adaptive limits" page for which to choose.

    Args:
        algorithm: How the limit moves (default ``Gradient2()``).
        max_wait: Seconds a caller may wait for a permit (default 0: fail at once).
        name: A name for errors, events and metrics.
        window_samples: The fewest samples a window needs to update the limit (>= 1).
        window_duration: The shortest window, in seconds (0: every sample may update).
        min_rtt: Round trips shorter than this many seconds are not samples.
        drop_on: Exceptions (types or a predicate) counted as drops, i.e. overload.
        partitions: Guaranteed shares of the limit by name, e.g.
            ``{"live": 0.8, "batch": 0.2}``; calls go through
            [`partition(name)`][resilient.AdaptiveLimiter.partition].
        clock: Where round-trip times are measured (default: monotonic).
        random: A ``random.Random`` for Vegas' probe jitter (seed it in tests).
    """

    __slots__ = ("_step",)
    kind = KIND

    def __init__(
        self,
        algorithm: LimitAlgorithm | None = None,
        *,
        max_wait: Duration = 0.0,
        name: str | None = None,
        window_samples: int = 10,
        window_duration: Duration = 1.0,
        min_rtt: Duration = 0.0001,
        drop_on: ExceptionMatcher = TimeoutError,
        partitions: dict[str, float] | None = None,
        clock: Clock | None = None,
        random: Any = None,
    ) -> None:
        self._core = AdaptiveCore(
            Gradient2() if algorithm is None else algorithm,
            max_wait=max_wait,
            name=name,
            clock=resolve_clock(clock),
            window_samples=window_samples,
            window_duration=window_duration,
            min_rtt=min_rtt,
            drop_on=drop_on,
            partitions=partitions,
            random=random,
        )
        self._step = _AdaptiveStep(self._core)
        self._config = {
            "algorithm": algorithm,
            "max_wait": max_wait,
            "window_samples": window_samples,
            "window_duration": window_duration,
            "min_rtt": min_rtt,
            "drop_on": drop_on,
            "random": random,
        }

    # Partitions are reached by name through handles made once: they cannot change.
    _fixed_options = ("name", "clock", "partitions")

    def _prepare_reconfigure(
        self, merged: dict[str, Any], changed: frozenset[str]
    ) -> Callable[[], None]:
        # A throwaway core checks the options as construction does. Calls in flight and
        # waiters are kept; a new algorithm (or random) starts again from its initial
        # limit, and a limit that grew admits waiters at once.
        core = self._core
        algorithm = merged["algorithm"]
        fresh = AdaptiveCore(
            Gradient2() if algorithm is None else algorithm,
            name=None,
            clock=core.clock,
            partitions=None,
            **{k: v for k, v in merged.items() if k != "algorithm"},
        )
        restart = bool(changed & {"algorithm", "random"})

        def commit() -> None:
            with core._lock:
                core.max_wait = fresh.max_wait
                core.window_samples = fresh.window_samples
                core.window_duration = fresh.window_duration
                core.min_rtt = fresh.min_rtt
                core.drop_on = fresh.drop_on
                woken = []
                if restart:
                    core.algorithm, core._state = fresh.algorithm, fresh._state
                    core.limit = fresh.limit
                    for part in core.partitions:
                        part.resize(core.limit)
                    woken = core._grant()
            core._wake(woken)

        return commit

    def _sync_step(self) -> _AdaptiveStep:
        return self._step

    def _async_step(self) -> _AdaptiveStep:
        return self._step

    @property
    def algorithm(self) -> LimitAlgorithm:
        """The algorithm's configuration."""
        return self._core.algorithm

    @property
    def limit(self) -> int:
        """The current limit."""
        return self._core.limit

    @property
    def max_wait(self) -> float:
        """Seconds a caller may wait for a permit."""
        return self._core.max_wait

    def partition(self, name: str) -> AdaptivePartition:
        """The policy for calls of partition ``name``: they get its guaranteed share.

        Raises:
            ValueError: there is no such partition.
        """
        return AdaptivePartition(self, name)

    def metrics(self) -> AdaptiveLimiterMetrics:
        """Limit, in flight, waiting, admitted, rejected and dropped, as a frozen snapshot."""
        return self._core.metrics()

    def __repr__(self) -> str:
        core = self._core
        return (
            f"<AdaptiveLimiter {self.name!r} {type(core.algorithm).__name__} "
            f"{core.in_flight}/{core.limit} in flight>"
        )


class AdaptivePartition(Policy):
    """The calls of one partition of an [`AdaptiveLimiter`][resilient.AdaptiveLimiter].

    Made by ``limiter.partition(name)``; a policy like any other (decorator, ``call``,
    ``with``, ``compose``), sharing the limiter's limit, counts and events.
    """

    __slots__ = ("_step", "limiter", "partition_name")
    kind = KIND

    def __init__(self, limiter: AdaptiveLimiter, name: str) -> None:
        if not isinstance(limiter, AdaptiveLimiter):
            raise TypeError(f"limiter must be an AdaptiveLimiter, not {type(limiter).__name__}")
        core = limiter._core
        index = core.partition_index(name)
        self.limiter = limiter
        self.partition_name = name
        self._step = _AdaptiveStep(core, index)

    @property
    def name(self) -> str | None:
        """The limiter's name."""
        return self.limiter.name

    def _sync_step(self) -> _AdaptiveStep:
        return self._step

    def _async_step(self) -> _AdaptiveStep:
        return self._step

    def __repr__(self) -> str:
        return f"<AdaptivePartition {self.partition_name!r} of {self.limiter!r}>"
