"""The public adaptive throttle: options, read-outs, and its step.

Every decision is :class:`~resilient._core._throttle.ThrottleCore`'s: the step below
asks it to admit a call (or shed it), then reports how the call ended. Sync and async
calls, ``compose`` and ``with throttle:`` all run this one step through the generated
runners of ``_pipeline``: there is no second copy of the logic to drift.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from resilient._core._outcome import PASS
from resilient._core._throttle import KIND, AdaptiveThrottleMetrics, ThrottleCore
from resilient._policies._pipeline import Wait
from resilient._policies._policy import CorePolicy
from resilient._waiting._clock import resolve_clock

if TYPE_CHECKING:
    import random as _random

    from resilient._core._clock import Clock
    from resilient._core._validate import Duration, ExceptionMatcher

__all__ = ["AdaptiveThrottle", "AdaptiveThrottleMetrics"]


class _ThrottleStep:
    """Admit or shed on enter; tell the core whether the backend accepted the call."""

    __slots__ = ("_core", "enter", "exit_ok")
    defers = False

    def __init__(self, core: ThrottleCore) -> None:
        self._core = core
        # The core's own methods, bound: a frame less on each side of every call.
        self.enter: Callable[[], int] = core.acquire
        self.exit_ok: Callable[[int, Any], Any] = core.on_success

    def exit_error(self, ticket: int, exc: Exception) -> Any:
        self._core.on_error(ticket, exc)
        return PASS

    def exit_cancel(self, ticket: int, exc: BaseException) -> BaseException:
        # Cancelled or interrupted: says nothing about the backend.
        self._core.give_back(ticket)
        return exc

    def enter_wait(self, wait: Wait) -> Any:  # pragma: no cover - enter() never waits
        raise NotImplementedError

    async def enter_wait_async(self, wait: Wait) -> Any:  # pragma: no cover - likewise
        raise NotImplementedError


class AdaptiveThrottle(CorePolicy[ThrottleCore]):
    """Shed calls locally while the backend refuses them (Google SRE client-side throttling).

    Over a sliding ``window`` the throttle counts *requests* (every call attempted, shed
    ones included, counted before the call) and *accepts* (calls the backend accepted).
    Each call is shed with probability ``max(0, (requests - k * accepts) / (requests +
    1))`` and raises [`ThrottledError`][resilient.ThrottledError] without running. While
    the backend accepts everything nothing is shed; when it accepts less than ``1 / k``
    of the calls, the excess is dropped here, before it costs the backend anything.

    What counts as *not accepted* is classified as a circuit breaker classifies
    failures: exceptions matched by ``record`` (default: every ``Exception``) and results
    matched by ``record_result``. Exceptions matched by ``ignore``, rejections by the
    library's own inner policies (unless ``record`` names them), cancellations and
    interrupts count as neither: their request is taken back out of the window.

    Args:
        name: A name for errors, events and metrics.
        k: The SRE book's multiplier K (>= 1, default 2): the backend may refuse up to
            ``1 - 1/k`` of the calls before anything is shed. Lower is more aggressive.
        window: Seconds of history counted (default 120: two minutes, as the book).
        buckets: How many time buckets the window slides by (default: one a second,
            between 10 and 100; at most 1,000, each at least 0.001 s wide).
        record: Exception types, or a predicate, meaning the backend did not accept
            the call (default: every ``Exception``).
        ignore: Exception types, or a predicate, that count as neither (wins over
            ``record``).
        record_result: A predicate over return values meaning the backend did not
            accept the call (the value is still returned).
        random: A ``random.Random`` (or anything with ``random()``) to draw from, for
            reproducible tests (default: a generator of the module's own).
        clock: Where time comes from (default: monotonic).
    """

    __slots__ = ("_step",)
    kind = KIND

    def __init__(
        self,
        name: str | None = None,
        *,
        k: float = 2.0,
        window: Duration = 120.0,
        buckets: int | None = None,
        record: ExceptionMatcher = Exception,
        ignore: ExceptionMatcher = (),
        record_result: Callable[[Any], bool] | None = None,
        random: _random.Random | None = None,
        clock: Clock | None = None,
    ) -> None:
        self._core = ThrottleCore(
            name,
            k=k,
            window=window,
            buckets=buckets,
            record=record,
            ignore=ignore,
            record_result=record_result,
            random=random,
            clock=resolve_clock(clock),
        )
        self._step = _ThrottleStep(self._core)
        self._config = {
            "k": k,
            "window": window,
            "buckets": buckets,
            "record": record,
            "ignore": ignore,
            "record_result": record_result,
            "random": random,
        }

    def _prepare_reconfigure(
        self, merged: dict[str, Any], changed: frozenset[str]
    ) -> Callable[[], None]:
        # A throwaway core checks the options as construction does. The window's counts
        # are kept unless its span or buckets change (then it starts empty, as reset()).
        core = self._core
        fresh = ThrottleCore(None, clock=core._clock, **merged)
        rewindow = bool(changed & {"window", "buckets"})

        def commit() -> None:
            with core._lock:
                core.k = fresh.k
                core._record = fresh._record
                core._record_rejections = fresh._record_rejections
                core._ignore = fresh._ignore
                core._record_result = fresh._record_result
                core._random = fresh._random
                if rewindow:
                    core.window, core.buckets, core._width = (
                        fresh.window,
                        fresh.buckets,
                        fresh._width,
                    )
                    core._requests, core._accepts = fresh._requests, fresh._accepts
                    core._total_requests = core._total_accepts = 0
                    core._head = None

        return commit

    def _sync_step(self) -> _ThrottleStep:
        return self._step

    def _async_step(self) -> _ThrottleStep:
        return self._step

    @property
    def k(self) -> float:
        """The multiplier K of the rejection formula."""
        return self._core.k

    @property
    def window(self) -> float:
        """Seconds of history counted."""
        return self._core.window

    @property
    def rejection_probability(self) -> float:
        """The probability that a call made now is shed."""
        return self._core.probability()

    def metrics(self) -> AdaptiveThrottleMetrics:
        """The window's requests and accepts, and the counts since creation, frozen."""
        return self._core.metrics()

    def reset(self) -> None:
        """Forget the window's history: nothing is shed until the backend refuses again."""
        self._core.reset()

    def __repr__(self) -> str:
        return f"<AdaptiveThrottle {self.name!r} k={self.k:g} window={self.window:g}s>"
