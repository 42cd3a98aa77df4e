"""The public circuit breaker: options, controls, and the sync and async adapters.

All decisions are made by :class:`~resilient._core._breaker.BreakerCore`; this module
only runs the user's function between ``acquire()`` and ``on_success()`` /
``on_error()`` / ``on_cancel()``, measuring its duration when the core needs it.
The sync and async guards differ in one word (``await``) and nothing else, and admit as
the step does: ``tests/test_breaker_twins.py`` fails if one of the three drifts.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from resilient._core._breaker import KIND, BreakerCore
from resilient._core._breaker_options import OPTIONS
from resilient._core._breaker_reconfigure import adopt
from resilient._core._breaker_state import CircuitState, Epoch, Trial, Trigger
from resilient._core._errors import CircuitOpenError
from resilient._core._outcome import PASS
from resilient._core._window import CountWindow, TimeWindow
from resilient._policies._decorate import COROUTINE, refuse_coroutine
from resilient._policies._pipeline import Wait
from resilient._policies._policy import CorePolicy, SharedStore, bind_store, build_async
from resilient._policies._signature import Signature, shaped
from resilient._waiting._clock import resolve_clock

if TYPE_CHECKING:
    from resilient._core._clock import Clock
    from resilient._core._snapshots import CircuitBreakerMetrics
    from resilient._core._validate import Duration, ExceptionMatcher

__all__ = ["CircuitBreaker"]

P = ParamSpec("P")
T = TypeVar("T")

_DEFAULT_WINDOW = CountWindow(100)

Ticket = Epoch | Trial
Token = Ticket | tuple[Ticket, float]  # with the start time when durations are measured


class _BreakerStep:
    """The breaker as a pipeline step (for ``compose`` and ``with breaker:``)."""

    __slots__ = ("_core", "_monotonic")
    defers = False

    def __init__(self, core: BreakerCore) -> None:
        self._core = core
        self._monotonic = core._clock.monotonic

    def enter(self) -> Token:
        core = self._core
        timed = core._timed  # read once: instrument() may turn timing on at any moment
        start = self._monotonic() if timed else 0.0  # before a permit is taken
        ticket: Ticket | None = core._free
        if ticket is None:
            admitted = core.admit_checked()
            if isinstance(admitted, CircuitOpenError):
                try:
                    raise admitted
                finally:
                    del admitted
            ticket = admitted
        return (ticket, start) if timed else ticket

    def breaker_hooks(self) -> tuple[Any, ...] | None:
        """What a compose runner needs to guard as the breaker's own guard does.

        (the core, its clock's ``monotonic``, ``admit_checked``, the rejection's type,
        ``on_success``, ``on_error``, ``on_cancel``): see ``_pipeline._breaker_level``.
        ``None`` for a subclass (a shared breaker's async step awaits its round trips in
        its own ``enter``/exits, which the runner then calls).
        """
        if type(self) is not _BreakerStep:
            return None
        core = self._core
        return (
            core,
            self._monotonic,
            core.admit_checked,
            CircuitOpenError,
            core.on_success,
            core.on_error,
            core.on_cancel,
        )

    def _split(self, token: Token) -> tuple[Ticket, float]:
        if type(token) is tuple:
            return token[0], self._monotonic() - token[1]
        return token, 0.0  # type: ignore[return-value]

    def exit_ok(self, token: Token, result: Any) -> Any:
        if type(token) is tuple:
            self._core.on_success(token[0], result, self._monotonic() - token[1])
        else:
            self._core.on_success(token, result, 0.0)  # type: ignore[arg-type]
        return result

    def exit_error(self, token: Token, exc: Exception) -> Any:
        ticket, duration = self._split(token)
        self._core.on_error(ticket, exc, duration)
        return PASS

    def exit_cancel(self, token: Token, exc: BaseException) -> BaseException:
        self._core.on_cancel(self._split(token)[0])
        return exc

    def enter_wait(self, wait: Wait) -> Any:  # pragma: no cover - enter() never returns WAIT
        raise NotImplementedError

    async def enter_wait_async(self, wait: Wait) -> Any:  # pragma: no cover - likewise
        raise NotImplementedError


class CircuitBreaker(CorePolicy[BreakerCore]):
    """Stop calling a dependency that keeps failing, and probe it before trusting it again.

    Semantics follow Resilience4j: outcomes are recorded into a sliding ``window``; once
    ``minimum_calls`` are buffered, the breaker opens when the failure rate **or** the
    slow-call rate reaches its threshold. While OPEN, calls fail fast with
    [`CircuitOpenError`][resilient.CircuitOpenError]. After ``open_duration`` the next call moves it
    to HALF_OPEN, where exactly ``half_open_calls`` trial calls pass; their rates decide
    between OPEN and CLOSED.

    The same breaker decorates sync functions, coroutine functions, methods,
    classmethods and staticmethods; ``call()`` and ``call_async()`` guard a single call.

    Args:
        name: A name for logs, events and metrics.
        failure_rate_threshold: Fraction in (0, 1] of failed calls that opens the breaker.
        slow_call_rate_threshold: Fraction in (0, 1] of slow calls that opens the breaker.
        slow_call_duration: A call taking strictly longer is slow; ``None`` (the default)
            turns slow-call detection off.
        window: A [`CountWindow`][resilient.CountWindow] or [`TimeWindow`][resilient.TimeWindow]
            (used as a template: the breaker records into fresh copies). Default:
            ``CountWindow(100)``.
        minimum_calls: Outcomes needed in the window before rates are evaluated (capped
            at a count window's size).
        open_duration: Seconds to stay OPEN, or a callable from the consecutive-open count
            (from 1, reset when the breaker closes) to seconds, for backoff.
        half_open_calls: Trial calls admitted in HALF_OPEN (>= 1).
        half_open_max_duration: If set, a breaker that has spent this long in HALF_OPEN
            (a trial never returned) goes back to OPEN.
        record: Exception types, or a predicate, that count as failures.
        ignore: Exception types, or a predicate, that count as neither failure nor
            success; wins over ``record``.
        record_result: A predicate over return values that counts a value as a failure
            (the value is still returned).
        clock: Where time comes from (default: the monotonic clock).
        store: Shared state (``resilient.redis.RedisStore``): one breaker for every
            process that uses this name (required with a store). The closed path stays
            local and makes no round trip; transitions are agreed in the store, timed
            by its clock, and the breaker goes on locally while the store is
            unavailable (see the scale-out page).
    """

    __slots__ = ("_async", "_step")
    kind = KIND

    def __init__(
        self,
        name: str | None = None,
        *,
        failure_rate_threshold: float = 0.5,
        slow_call_rate_threshold: float = 1.0,
        slow_call_duration: Duration | None = None,
        window: CountWindow | TimeWindow = _DEFAULT_WINDOW,
        minimum_calls: int = 100,
        open_duration: Duration | Callable[[int], float] = 60.0,
        half_open_calls: int = 10,
        half_open_max_duration: Duration | None = None,
        record: ExceptionMatcher = Exception,
        ignore: ExceptionMatcher = (),
        record_result: Callable[[Any], bool] | None = None,
        clock: Clock | None = None,
        store: SharedStore | None = None,
    ) -> None:
        # Handed on as they came: the core checks each option by its entry in
        # `_core._breaker_options.OPTIONS`. So they are spelled out twice, here in the
        # signature users and type checkers read and in that table, not again in a call.
        options = dict(locals())  # a copy: a tracer may refresh the frame's own dict
        del options["self"], options["name"], options["clock"], options["store"]
        if store is None:
            self._core = BreakerCore(name, clock=resolve_clock(clock), **options)
            # What reconfigure() changes (not with a store): a tuple in the order of
            # OPTIONS, a third of a dict's size (thousands of breakers, see the memory tests).
            self._config = self._pack_options(options)
        else:
            # The store makes the core: the local one with shared transitions beside
            # it, chosen here, once (the closed path is the local one either way).
            self._core = bind_store(store, KIND)(name, clock=resolve_clock(clock), **options)
        self._step = self._async = _BreakerStep(self._core)
        if store is not None:
            # A shared core's trial leases are round trips: its async step awaits them.
            self._async = self._core.async_step()  # type: ignore[attr-defined]

    # -- guarding calls ----------------------------------------------------------------
    # In a composition the breaker is a step like any other; alone, it gets a guard of
    # its own, the same logic as the step written flat, because this is the hot path of
    # every decorated call and each saved frame is ~100 ns. The twins are checked to
    # stay identical (tests/test_breaker_twins.py), not generated: a generated guard
    # would be neither type-checked nor seen by coverage.

    def _sync_step(self) -> _BreakerStep:
        return self._step

    def _async_step(self) -> _BreakerStep:
        return self._async

    def _decorated(
        self, fn: Callable[..., Any], signature: Signature | None, is_async: bool
    ) -> Callable[..., Any]:
        # With the decorated function's own parameters where it can (see _signature):
        # generated from the guards below, so they are still written once.
        if is_async and self._async is not self._step:
            return super()._decorated(fn, signature, is_async)  # a shared breaker's runner
        return shaped(self._async_guard if is_async else self._sync_guard, fn, signature)  # type: ignore[no-any-return]

    def _sync_guard(self, fn: Callable[P, T]) -> Callable[P, T]:
        core = self._core
        admit_checked = core.admit_checked
        on_success = core.on_success
        on_error = core.on_error
        on_cancel = core.on_cancel
        monotonic = core._clock.monotonic
        coroutine = COROUTINE  # a closure variable reads faster than a global

        def guarded(*args: P.args, **kwargs: P.kwargs) -> T:
            # The start time is read first: once a half-open permit is taken, nothing
            # but the `try` that gives it back may come between.
            timed = core._timed
            start = monotonic() if timed else 0.0
            ticket: Ticket | None = core._free
            if ticket is None:
                admitted = admit_checked()
                if isinstance(admitted, CircuitOpenError):
                    try:
                        raise admitted  # raised here: one frame, not three
                    finally:
                        del admitted  # no frame <-> traceback cycle left for the GC
                ticket = admitted
            try:
                try:
                    result = fn(*args, **kwargs)
                    if type(result) is coroutine:
                        refuse_coroutine(fn, result)
                except Exception as exc:
                    on_error(ticket, exc, monotonic() - start if timed else 0.0)
                    raise
                on_success(ticket, result, monotonic() - start if timed else 0.0)
            except BaseException:
                # Cancelled, interrupted (a signal handler may raise at any call, the
                # entry of on_success() included) or finished: a half-open trial's
                # permit comes back once (on_cancel() is a no-op for anything else).
                on_cancel(ticket)
                raise
            return result

        return guarded

    def _async_guard(self, fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
        if self._async is not self._step:
            # A shared breaker: the runner awaits its step's round trips (resilient.redis).
            # (Not super(): its __class__ cell would keep _signature from copying this.)
            return build_async(self._flatten(), fn)
        core = self._core
        admit_checked = core.admit_checked
        on_success = core.on_success
        on_error = core.on_error
        on_cancel = core.on_cancel
        monotonic = core._clock.monotonic

        async def guarded(*args: P.args, **kwargs: P.kwargs) -> T:
            # The start time is read first: once a half-open permit is taken, nothing
            # but the `try` that gives it back may come between.
            timed = core._timed
            start = monotonic() if timed else 0.0
            ticket: Ticket | None = core._free
            if ticket is None:
                admitted = admit_checked()
                if isinstance(admitted, CircuitOpenError):
                    try:
                        raise admitted  # raised here: one frame, not three
                    finally:
                        del admitted  # no frame <-> traceback cycle left for the GC
                ticket = admitted
            try:
                try:
                    result = await fn(*args, **kwargs)
                except Exception as exc:
                    on_error(ticket, exc, monotonic() - start if timed else 0.0)
                    raise
                on_success(ticket, result, monotonic() - start if timed else 0.0)
            except BaseException:
                # Cancelled, interrupted (a signal handler may raise at any call, the
                # entry of on_success() included) or finished: a half-open trial's
                # permit comes back once (on_cancel() is a no-op for anything else).
                on_cancel(ticket)
                raise
            return result

        return guarded

    def _pack_options(self, options: dict[str, Any]) -> Any:
        return tuple(options[option] for option in OPTIONS)

    def _unpack_options(self, config: Any) -> dict[str, Any]:
        return dict(zip(OPTIONS, config, strict=True))

    def _prepare_reconfigure(
        self, merged: dict[str, Any], changed: frozenset[str]
    ) -> Callable[[], Callable[[], None] | None]:
        # A throwaway core checks the options (OPTIONS, as construction does) and works
        # out what follows from them; the breaker takes them over under its lock.
        core = self._core
        fresh = BreakerCore(None, clock=core._clock, **merged)

        def commit() -> Callable[[], None] | None:
            events = adopt(core, fresh, changed)
            return (lambda: core._dispatch(events)) if events else None

        return commit

    # -- state and controls ------------------------------------------------------------

    @property
    def state(self) -> CircuitState:
        """The current [`CircuitState`][resilient.CircuitState]."""
        return self._core.state

    @property
    def retry_after(self) -> float | None:
        """Seconds until a call would be admitted (0.0 now; ``None`` if unknown)."""
        return self._core.retry_after()

    def metrics(self) -> CircuitBreakerMetrics:
        """A frozen snapshot of the breaker's current window and state."""
        return self._core.metrics()

    def transition_counts(self) -> dict[tuple[CircuitState, CircuitState], int]:
        """How many times each ``(from_state, to_state)`` transition happened since creation."""
        return self._core.transition_counts()

    def window_durations(self) -> list[float] | None:
        """The measured durations of the calls in the current count window, oldest first.

        ``None`` where the window keeps none: a `TimeWindow` (sums per bucket only), or a
        breaker that measures no durations (no ``slow_call_duration`` and no duration
        histogram). Calls recorded before durations were measured are left out.
        """
        return self._core.window_durations()

    def force_open(self) -> None:
        """Reject every call until ``reset()`` (or another manual state)."""
        self._core.control(Trigger.FORCE_OPEN)

    def disable(self) -> None:
        """Let every call through and record nothing, until ``reset()``."""
        self._core.control(Trigger.DISABLE)

    def metrics_only(self) -> None:
        """Let every call through and record it, never opening, until ``reset()``."""
        self._core.control(Trigger.RECORD_ONLY)

    def reset(self) -> None:
        """Go to CLOSED with an empty window, from any state."""
        self._core.control(Trigger.RESET)

    def __repr__(self) -> str:
        return f"<CircuitBreaker {self._core.name!r} {self._core._state.value}>"
