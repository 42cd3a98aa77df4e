"""The chaos policies' adapters: raise, sleep or return what the core decided.

The core (``_core._chaos``) makes every decision; what differs between sync and async
is only how a delay is waited for, so a fault and a latency are *gate* steps (their
exits have nothing to do, see ``_pipeline._gate_level``): the runner asks ``over()``,
which raises the injected fault or hands back a :class:`Wait` for the delay, which the
sync runner sleeps on the policy's clock and the async one awaits. An injected result
replaces the call, which no step can do (a step never sees the call's arguments nor
skips it), so :class:`InjectResult` owns the call as a thin wrapper.

An injected delay never runs past the current deadline (a ``Timeout`` outside, or one
an ASGI request carries): it sleeps until the deadline and then raises
``TimeoutExceededError``, which is what the timeout would have raised, and which keeps
virtual time honest under ``ManualClock`` (a timeout's real timer never fires there).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar, overload

from resilient._core._chaos import (
    FAULT,
    LATENCY,
    NOTHING,
    RESULT,
    ChaosCore,
    ChaosMetrics,
    fault_payload,
    latency_payload,
    result_payload,
)
from resilient._core._clock import Clock
from resilient._core._errors import TimeoutExceededError
from resilient._core._outcome import PASS
from resilient._core._validate import Duration
from resilient._policies._decorate import is_async_callable
from resilient._policies._pipeline import Wait
from resilient._policies._policy import CorePolicy, WidensResult
from resilient._waiting._clock import resolve_clock
from resilient._waiting._deadline import remaining

__all__ = ["InjectFault", "InjectLatency", "InjectResult"]

T = TypeVar("T")


def _never() -> bool:
    return False


class _GateStep:
    """A step that decides on entry and has nothing to do on exit."""

    __slots__ = ("_core",)
    defers = False

    def __init__(self, core: ChaosCore) -> None:
        self._core = core

    def over(self) -> Wait | None:  # pragma: no cover - every subclass has its own
        raise NotImplementedError

    def enter(self) -> Any:
        return self.over()

    def gate_hooks(self, is_async: bool) -> tuple[Callable[..., Any], ...]:
        """What a runner calls instead of enter and the exits: decide in ``over()``."""
        return _never, self.over, self.enter_wait_async if is_async else self.enter_wait

    def enter_wait(self, wait: Wait) -> None:  # pragma: no cover - only a delay waits
        raise NotImplementedError

    async def enter_wait_async(self, wait: Wait) -> None:  # pragma: no cover - likewise
        raise NotImplementedError

    def exit_ok(self, token: None, result: Any) -> Any:
        return result

    def exit_error(self, token: None, exc: Exception) -> Any:
        return PASS

    def exit_cancel(self, token: None, exc: BaseException) -> BaseException:
        return exc


class _FaultStep(_GateStep):
    __slots__ = ()

    def over(self) -> None:
        fault = self._core.inject()
        if fault is not NOTHING:
            raise fault


class _LatencyStep(_GateStep):
    __slots__ = ("_clock",)

    def __init__(self, core: ChaosCore, clock: Clock) -> None:
        super().__init__(core)
        self._clock = clock

    def over(self) -> Wait | None:
        seconds = self._core.inject()
        if seconds is NOTHING or seconds == 0:
            return None
        left = remaining()
        if left is not None and left < seconds:
            return Wait(left, seconds)  # data: the delay the deadline cut short
        return Wait(seconds)

    def _cut(self, wait: Wait) -> None:
        if wait.data is not None:
            raise TimeoutExceededError(
                f"{self._core.name or 'inject_latency'}: the injected delay of "
                f"{wait.data:g}s ran past the deadline ({wait.delay:g}s left)",
                policy=self._core.name,
                seconds=wait.delay or 0.0,
            )

    # enter_wait/enter_wait_async are twins (tests/test_twins.py).

    def enter_wait(self, wait: Wait) -> None:
        self._clock.sleep(wait.delay)  # type: ignore[arg-type]
        self._cut(wait)

    async def enter_wait_async(self, wait: Wait) -> None:
        await self._clock.asleep(wait.delay)  # type: ignore[arg-type]
        self._cut(wait)


class _Chaos(CorePolicy[ChaosCore]):
    """What the three chaos policies share: the switch, the rate, the counts."""

    __slots__ = ()
    # The first option may be a factory; `@InjectFault` bare fails on the missing rate.
    _callable_option = True

    @property
    def rate(self) -> float:
        """The share of calls injected while the switch is on, in [0, 1]."""
        return self._core.rate

    def metrics(self) -> ChaosMetrics:
        """Calls seen, injected, skipped, disabled and failed, as a frozen snapshot."""
        return self._core.metrics()

    def _call_outcomes(self) -> dict[str, int]:
        """The ``resilient.calls`` outcomes OpenTelemetry reports (``instrumentation``)."""
        m = self._core.metrics()
        return {
            "injected": m.injected,
            "skipped": m.skipped,
            "disabled": m.disabled,
            "error": m.errors,
        }

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} rate={self.rate:g}>"

    def _payload(self, options: dict[str, Any]) -> Callable[[], Any]:
        """The payload maker of ``options`` (checked as construction checks it)."""
        raise NotImplementedError  # pragma: no cover - every subclass has its own

    def _keep_options(self, options: dict[str, Any], payload: str) -> None:
        self._config = {payload: options[payload], "rate": options["rate"]}
        self._config.update(enabled=options["enabled"], seed=options["seed"], rng=options["rng"])

    def _prepare_reconfigure(
        self, merged: dict[str, Any], changed: frozenset[str]
    ) -> Callable[[], None]:
        # A throwaway core checks the options as construction does. A seeded sequence
        # goes on where it was unless the seed or the rng changes.
        core = self._core
        make = self._payload(merged)
        rate, enabled, seed, rng = (merged[k] for k in ("rate", "enabled", "seed", "rng"))
        fresh = ChaosCore(core.kind, make, rate, enabled, seed, rng, None)
        reseed = bool(changed & {"seed", "rng"})

        def commit() -> None:
            with core._lock:
                core._make = fresh._make
                core.rate = fresh.rate
                core._enabled = fresh._enabled
            if reseed:
                with core._draw_lock:  # the draws' own lock (see ChaosCore.inject)
                    core._rng = fresh._rng

        return commit


class InjectFault(_Chaos):
    """Raise an exception instead of making a share of the calls (chaos testing).

    Args:
        exception: What to raise: an exception type (instantiated per injection), an
            instance (raised each time), or a factory called with no arguments that
            returns one. Interrupts and cancellations (``KeyboardInterrupt``,
            ``asyncio.CancelledError``) are allowed: they test cleanup paths.
        rate: The share of calls to inject, in [0, 1].
        enabled: ``True``/``False``, or a switch called with no arguments before each
            call (a feature flag, an environment variable): off, nothing is drawn or
            injected. A switch that raises leaves the call uninjected (logged, counted).
        seed: Seeds the policy's own ``random.Random``: the same seed injects the same
            calls. Exclusive with ``rng``.
        rng: A ``random.Random`` (or anything with ``random()``) to draw from.
        name: A name for events and metrics.
    """

    __slots__ = ("_step",)
    kind = FAULT

    def __init__(
        self,
        exception: type[BaseException] | BaseException | Callable[[], BaseException],
        *,
        rate: float,
        enabled: bool | Callable[[], object] = True,
        seed: int | str | bytes | None = None,
        rng: Any = None,
        name: str | None = None,
    ) -> None:
        self._core = ChaosCore(FAULT, fault_payload(exception), rate, enabled, seed, rng, name)
        self._step = _FaultStep(self._core)
        self._keep_options(dict(locals()), "exception")

    def _payload(self, options: dict[str, Any]) -> Callable[[], Any]:
        return fault_payload(options["exception"])

    def _sync_step(self) -> _FaultStep:
        return self._step

    def _async_step(self) -> _FaultStep:
        return self._step


class InjectLatency(_Chaos):
    """Delay a share of the calls before making them (chaos testing).

    The delay is waited for on ``clock``: under ``resilient.testing.ManualClock`` it
    passes at once in virtual time. It never runs past the current deadline: at the
    deadline the call raises ``TimeoutExceededError`` instead, as the timeout would.

    Args:
        seconds: The delay (>= 0 and <= 1e9 seconds, or a ``timedelta``), or a factory
            called with no arguments that returns one per injection (a random spread).
        rate: The share of calls to delay, in [0, 1].
        enabled: As for [`InjectFault`][resilient.chaos.InjectFault].
        seed: As for ``InjectFault``.
        rng: As for ``InjectFault``.
        name: A name for events and metrics.
        clock: Where the delay is waited for (default: the real monotonic clock).
    """

    __slots__ = ("_step",)
    kind = LATENCY

    def __init__(
        self,
        seconds: Duration | Callable[[], Duration],
        *,
        rate: float,
        enabled: bool | Callable[[], object] = True,
        seed: int | str | bytes | None = None,
        rng: Any = None,
        name: str | None = None,
        clock: Clock | None = None,
    ) -> None:
        make = latency_payload(seconds)
        self._core = ChaosCore(LATENCY, make, rate, enabled, seed, rng, name)
        self._step = _LatencyStep(self._core, resolve_clock(clock))
        self._keep_options(dict(locals()), "seconds")

    def _payload(self, options: dict[str, Any]) -> Callable[[], Any]:
        return latency_payload(options["seconds"])

    def _sync_step(self) -> _LatencyStep:
        return self._step

    def _async_step(self) -> _LatencyStep:
        return self._step


class InjectResult(WidensResult[T], _Chaos, Generic[T]):
    """Return a value instead of making a share of the calls (chaos testing).

    Give exactly one of ``value`` and ``factory``. For type checkers, a decorated
    ``Callable[P, R]`` becomes ``Callable[P, R | T]``.

    Args:
        value: The value to return.
        factory: Called with no arguments per injection; its return value is returned
            (a fresh object each time, or a random one). An ``async def`` factory is
            awaited, and then only answers async calls (decorating a sync function
            with it is a ``TypeError``). If it raises, the call goes on uninjected
            (logged, counted).
        rate: The share of calls to answer, in [0, 1].
        enabled: As for [`InjectFault`][resilient.chaos.InjectFault].
        seed: As for ``InjectFault``.
        rng: As for ``InjectFault``.
        name: A name for events and metrics.
    """

    __slots__ = ("_awaits_factory",)
    kind = RESULT

    @overload
    def __init__(
        self,
        value: T,
        *,
        rate: float,
        enabled: bool | Callable[[], object] = True,
        seed: int | str | bytes | None = None,
        rng: Any = None,
        name: str | None = None,
    ) -> None: ...

    @overload
    def __init__(
        self,
        *,
        factory: Callable[[], Awaitable[T]],
        rate: float,
        enabled: bool | Callable[[], object] = True,
        seed: int | str | bytes | None = None,
        rng: Any = None,
        name: str | None = None,
    ) -> None: ...

    @overload
    def __init__(
        self,
        *,
        factory: Callable[[], T],
        rate: float,
        enabled: bool | Callable[[], object] = True,
        seed: int | str | bytes | None = None,
        rng: Any = None,
        name: str | None = None,
    ) -> None: ...

    def __init__(
        self,
        value: Any = NOTHING,
        *,
        factory: Callable[[], Any] | None = None,
        rate: float,
        enabled: bool | Callable[[], object] = True,
        seed: int | str | bytes | None = None,
        rng: Any = None,
        name: str | None = None,
    ) -> None:
        make = result_payload(value, factory)
        self._core = ChaosCore(RESULT, make, rate, enabled, seed, rng, name)
        # The core's payload maker is then the factory itself, its result awaited.
        self._awaits_factory = is_async_callable(factory)
        self._keep_options(dict(locals()), "value")
        self._config["factory"] = factory

    def _payload(self, options: dict[str, Any]) -> Callable[[], Any]:
        return result_payload(options["value"], options["factory"])

    def _prepare_reconfigure(
        self, merged: dict[str, Any], changed: frozenset[str]
    ) -> Callable[[], None]:
        # The guards are built for an async factory or not: that cannot change.
        factory = merged["factory"]
        if is_async_callable(factory) != self._awaits_factory:
            kind = "an async" if self._awaits_factory else "a sync"
            raise TypeError(
                f"factory must stay {kind} callable (or a value): the functions this "
                f"policy guards were decorated for one, got {factory!r}"
            )
        return super()._prepare_reconfigure(merged, changed)

    # A result replaces the call, which only a wrapper can do; the core decides.

    def _sync_wrap(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        if self._awaits_factory:
            return self._refuse_sync(fn)
        inject = self._core.inject

        def guarded(*args: Any, **kwargs: Any) -> Any:
            value = inject()
            if value is not NOTHING:
                return value
            return fn(*args, **kwargs)

        return guarded

    def _async_wrap(self, fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        if self._awaits_factory:
            return self._with_async_factory(fn)
        inject = self._core.inject

        async def guarded(*args: Any, **kwargs: Any) -> Any:
            value = inject()
            if value is not NOTHING:
                return value
            return await fn(*args, **kwargs)

        return guarded

    def _refuse_sync(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        raise TypeError(
            "InjectResult's factory is async: it can only answer async calls "
            f"(decorate an async function, or use call_async), not {fn!r}"
        )

    def _with_async_factory(
        self, fn: Callable[..., Awaitable[Any]]
    ) -> Callable[..., Awaitable[Any]]:
        core = self._core

        async def guarded(*args: Any, **kwargs: Any) -> Any:
            if core.draw():
                try:
                    # The core's maker, read at each call: reconfigure() replaces it.
                    value = await core._make()
                except BaseException as exc:
                    if core.factory_failed(exc):
                        raise  # an interrupt or a cancellation: counted, never swallowed
                else:
                    return core.injected_with(value)
            return await fn(*args, **kwargs)

        return guarded

    def __enter__(self) -> None:
        raise TypeError("an injected result replaces a call; decorate a function instead")

    async def __aenter__(self) -> None:
        raise TypeError("an injected result replaces a call; decorate a function instead")
