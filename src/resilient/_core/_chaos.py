"""Fault injection's core: whether a call is injected, with what, and the counts.

One core serves the three chaos policies (a fault, a latency, a result); they differ
only in the *payload* they inject and in how their adapter delivers it (raise it, sleep
it, return it). The decision for a call is: is the switch on (``enabled``, a bool or a
zero-argument callable read per call, so a flag service or an environment variable can
turn injection on and off in production)? Then one draw from the policy's own
``random.Random`` (seeded for tests: the same seed gives the same injected calls); below
``rate`` means inject. Then the payload is made (a factory may be user code).

A switch, an rng or a factory that raises is the library's failure, not the user's: the call
goes on uninjected, and the error is logged and counted (an interrupt raised there is
counted, then propagates: interrupts are never swallowed). So every call lands in
exactly one count: ``calls == injected + skipped + disabled + errors``.
"""

from __future__ import annotations

import datetime
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Final

from resilient._core._events import Event, EventSource
from resilient._core._fork import new_lock
from resilient._core._validate import (
    check_arity,
    check_duration,
    check_name,
    check_number,
    check_random,
)

__all__ = [
    "FAULT",
    "LATENCY",
    "NOTHING",
    "RESULT",
    "ChaosCore",
    "ChaosMetrics",
    "FaultInjected",
    "LatencyInjected",
    "ResultInjected",
    "fault_payload",
    "latency_payload",
    "result_payload",
]

logger = logging.getLogger("resilient")

FAULT: Final = "inject_fault"
LATENCY: Final = "inject_latency"
RESULT: Final = "inject_result"


class _Nothing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "<not given>"  # as signatures show InjectResult's value default


NOTHING: Final[Any] = _Nothing()
"""What ``ChaosCore.inject()`` returns when the call is not injected (and no value)."""


@dataclass(frozen=True, slots=True)
class FaultInjected(Event):
    """A chaos policy raised an exception instead of making the call.

    Attributes:
        exception: The exception raised.
    """

    exception: BaseException

    span_name: ClassVar[str] = "resilient.chaos.fault"

    def span_attributes(self) -> dict[str, str | int | float | bool]:
        """What the span event of an injection carries beside the policy and kind."""
        return {"exception.type": type(self.exception).__name__}


@dataclass(frozen=True, slots=True)
class LatencyInjected(Event):
    """A chaos policy delayed a call.

    Attributes:
        seconds: The delay drawn for the call (a deadline may cut the wait short).
    """

    seconds: float

    span_name: ClassVar[str] = "resilient.chaos.latency"

    def span_attributes(self) -> dict[str, str | int | float | bool]:
        """What the span event of an injection carries beside the policy and kind."""
        return {"resilient.delay": self.seconds}


@dataclass(frozen=True, slots=True)
class ResultInjected(Event):
    """A chaos policy returned a value instead of making the call.

    Attributes:
        result: The value returned.
    """

    result: Any

    span_name: ClassVar[str] = "resilient.chaos.result"

    def span_attributes(self) -> dict[str, str | int | float | bool]:
        """What the span event of an injection carries beside the policy and kind."""
        return {"resilient.result_type": type(self.result).__name__}


@dataclass(frozen=True, slots=True)
class ChaosMetrics:
    """A chaos policy's counts since it was created (a frozen snapshot).

    Every call lands in exactly one of the last four: ``calls == injected + skipped +
    disabled + errors``.

    Attributes:
        calls: Calls that reached the policy.
        injected: Calls that were injected (a fault, a delay or a result).
        skipped: Calls the draw let through untouched while the switch was on.
        disabled: Calls made while the switch was off.
        errors: Calls left uninjected because the switch, the rng or a factory raised
            (logged).
        rate: The configured injection rate.
    """

    calls: int
    injected: int
    skipped: int
    disabled: int
    errors: int
    rate: float


_EVENTS: Final[dict[str, Callable[[str | None, str, Any], Event]]] = {
    FAULT: FaultInjected,
    LATENCY: LatencyInjected,
    RESULT: ResultInjected,
}


def _always() -> bool:
    return True


def _check_enabled(value: object) -> Callable[[], object]:
    if isinstance(value, bool):
        return _always if value else _never
    return check_arity(
        "enabled", value, 0, "True, False, or a switch called with no arguments (a flag)"
    )


def _never() -> bool:
    return False


def _check_rng(seed: object, rng: object) -> random.Random:
    if seed is not None and rng is not None:
        raise TypeError("seed and rng are exclusive: pass a seed, or a random.Random, not both")
    if rng is not None:
        return check_random(rng, ("random",), "rng")  # type: ignore[no-any-return]
    if seed is not None and (not isinstance(seed, (int, str, bytes)) or isinstance(seed, bool)):
        raise TypeError(f"seed must be an int, str or bytes (or None), not {type(seed).__name__}")
    return random.Random(seed)  # noqa: S311 -- chaos draws, not cryptography


def fault_payload(exception: object) -> Callable[[], BaseException]:
    """What makes each injected exception: an exception type, instance, or factory."""
    if isinstance(exception, type):
        if not issubclass(exception, BaseException):
            raise TypeError(
                "exception must be an exception type or instance, or a factory called with "
                f"no arguments, not the class {exception.__name__}"
            )
        return exception
    if isinstance(exception, BaseException):
        # One instance raised again and again would pile tracebacks up on itself.
        return lambda: exception.with_traceback(None)
    return check_arity(
        "exception",
        exception,
        0,
        "an exception type or instance, or a factory called with no arguments",
    )


def latency_payload(seconds: object) -> Callable[[], float]:
    """What draws each injected delay: a number of seconds, or a factory of them."""
    if callable(seconds) and not isinstance(seconds, datetime.timedelta):
        factory = check_arity(
            "seconds", seconds, 0, "seconds >= 0 and <= 1e9, or a factory called with no arguments"
        )
        return lambda: check_duration("seconds", factory(), allow_zero=True)
    fixed = check_duration("seconds", seconds, allow_zero=True)
    return lambda: fixed


def result_payload(value: object, factory: object) -> Callable[[], Any]:
    """What makes each injected result: one value, or a factory called per injection."""
    if factory is None:
        if value is NOTHING:
            raise TypeError("value or factory is required: the result to inject, or its maker")
        return lambda: value
    if value is not NOTHING:
        raise TypeError("value and factory are exclusive: pass one")
    return check_arity("factory", factory, 0, "a factory called with no arguments, or None")


def check_rate_fraction(rate: object) -> float:
    """The share of calls to inject: a fraction in [0, 1] (0 injects none, 1 all)."""
    return check_number("rate", rate, minimum=0.0, maximum=1.0)


def _check_fault(payload: object) -> None:
    if not isinstance(payload, BaseException):
        raise TypeError(
            f"the exception factory returned {type(payload).__name__}, not an exception"
        )


class ChaosCore(EventSource):
    """The decision to inject, the payload, and the counts of one chaos policy."""

    __slots__ = (
        "_draw_lock",
        "_enabled",
        "_lock",
        "_make",
        "_rng",
        "calls",
        "disabled",
        "errors",
        "injected",
        "kind",
        "name",
        "rate",
        "skipped",
    )

    def __init__(
        self,
        kind: str,
        make: Callable[[], Any],
        rate: object,
        enabled: object,
        seed: object,
        rng: object,
        name: object,
    ) -> None:
        super().__init__()
        self.kind = kind
        self._make = make
        self.rate = check_rate_fraction(rate)
        self._enabled = _check_enabled(enabled)
        self._rng = _check_rng(seed, rng)
        self.name = check_name(name)
        self.calls = self.injected = self.skipped = self.disabled = self.errors = 0
        self._lock = new_lock(self)
        self._draw_lock = new_lock(self)

    def inject(self) -> Any:
        """The payload for this call, or :data:`NOTHING` to let it through untouched.

        Never holds the lock while user code (the switch, the factory) runs; the draw
        is taken under it, so a seeded policy injects the same share of calls whatever
        the threads do, and the counts add up.
        """
        if not self.draw():
            return NOTHING
        try:
            payload = self._make()
            if self.kind == FAULT:
                _check_fault(payload)
        except BaseException as exc:
            if self.factory_failed(exc):
                raise
            return NOTHING
        return self.injected_with(payload)

    def draw(self) -> bool:
        """Whether to inject into this call: the switch, then the seeded draw, counted.

        The first half of :meth:`inject`, for an adapter that makes the payload itself
        (an async factory is awaited by the async adapter) and then reports it with
        :meth:`injected_with` or :meth:`factory_failed`.
        """
        try:
            on = self._enabled()
        except BaseException as exc:
            if self._failed("the enabled switch", exc):
                raise
            return False
        with self._lock:
            self.calls += 1
            if not on:
                self.disabled += 1
                return False
        try:
            # A lock of its own: an rng given by the user is user code, never run under
            # the policy's lock; held, it keeps a seeded sequence whole across threads.
            with self._draw_lock:
                hit = self._rng.random() < self.rate
        except BaseException as exc:
            if self._failed("the rng", exc, counted=True):
                raise
            return False
        if not hit:
            with self._lock:
                self.skipped += 1
            return False
        return True

    def injected_with(self, payload: Any) -> Any:
        """Count an injection of ``payload`` after a :meth:`draw`, emit its event, return it."""
        with self._lock:
            self.injected += 1
        if self.observed():
            self.emit(_EVENTS[self.kind](self.name, self.kind, payload))
        return payload

    def factory_failed(self, exc: BaseException) -> bool:
        """Count a factory that raised after a :meth:`draw`; whether ``exc`` must propagate."""
        return self._failed("the factory", exc, counted=True)

    def _failed(self, what: str, exc: BaseException, *, counted: bool = False) -> bool:
        """Count a failed switch or factory; whether it must propagate (an interrupt)."""
        with self._lock:
            if not counted:
                self.calls += 1
            self.errors += 1
        if not isinstance(exc, Exception):
            return True  # counted, never swallowed
        logger.error(
            "%s %r: %s raised; the call goes on uninjected",
            self.kind,
            self.name,
            what,
            exc_info=exc,
        )
        return False

    def metrics(self) -> ChaosMetrics:
        """The counts, as a frozen snapshot."""
        with self._lock:
            return ChaosMetrics(
                self.calls, self.injected, self.skipped, self.disabled, self.errors, self.rate
            )
