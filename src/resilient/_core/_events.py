"""Event records and their fan-out to listeners.

Every policy reports what it does as frozen event records. A record is only built when
someone listens (a listener on the policy, or a process-wide one such as
``resilient.testing.capture_events()``), so an unobserved policy pays one truth test per
call. A listener that raises is logged on the ``resilient`` logger with its traceback and
counted; it never changes the result of the call that emitted the event.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeAlias

from resilient._core._fork import new_lock

__all__ = [
    "GLOBAL_LISTENERS",
    "NOTABLE_LISTENERS",
    "CallFailed",
    "CallIgnored",
    "CallRejected",
    "CallSucceeded",
    "CallTimedOut",
    "Event",
    "EventSource",
    "FallbackUsed",
    "Listener",
    "RetriesExhausted",
    "RetryScheduled",
    "StateTransition",
    "add_global_listener",
    "log_transition",
    "remove_global_listener",
]

logger = logging.getLogger("resilient")
# A library leaves handler choice to the application (no "last resort" stderr output).
logger.addHandler(logging.NullHandler())


@dataclass(frozen=True, slots=True)
class Event:
    """Base of every event record.

    Attributes:
        policy: The name of the policy that emitted the event (``None`` if unnamed).
        kind: The kind of policy: ``"circuit_breaker"``, ``"bulkhead"``, ...
    """

    policy: str | None
    kind: str


@dataclass(frozen=True, slots=True)
class CallSucceeded(Event):
    """A call returned (or raised an exception counted as a success).

    Attributes:
        duration: Seconds the call took, or ``None`` where the policy measured none.
        slow: Whether the call counted as slow.
        recorded: ``False`` when the call was admitted before the policy changed state,
            so its outcome was left out of the new state's counts.
    """

    duration: float | None
    slow: bool = False
    recorded: bool = True


@dataclass(frozen=True, slots=True)
class CallFailed(Event):
    """A call failed: it raised a recorded exception, or returned a value counted as one.

    Attributes:
        exception: The exception, or ``None`` when a returned value was the failure.
        result: The returned value counted as a failure (``None`` for an exception).
        duration: Seconds the call took, or ``None`` where the policy measured none.
        slow: Whether the call counted as slow.
        recorded: As in [`CallSucceeded`][resilient.CallSucceeded].
    """

    exception: BaseException | None
    result: Any
    duration: float | None
    slow: bool = False
    recorded: bool = True


@dataclass(frozen=True, slots=True)
class CallIgnored(Event):
    """A call raised an exception that the policy ignores (neither success nor failure).

    Attributes:
        exception: The exception.
        duration: Seconds the call took, or ``None`` where the policy measured none.
    """

    exception: BaseException
    duration: float | None


@dataclass(frozen=True, slots=True)
class CallRejected(Event):
    """The policy refused a call; the protected function did not run.

    Attributes:
        error: The rejection raised to the caller.
    """

    error: BaseException


@dataclass(frozen=True, slots=True)
class StateTransition(Event):
    """A stateful policy moved from one state to another.

    Attributes:
        from_state: The state before.
        to_state: The state after.
        failure_rate: On a move to OPEN, the failure rate of the window that tripped it
            (``None`` otherwise).
        slow_call_rate: On a move to OPEN, that window's slow-call rate.
        calls: On a move to OPEN, the number of calls in that window.
    """

    from_state: Any
    to_state: Any
    failure_rate: float | None = None
    slow_call_rate: float | None = None
    calls: int | None = None


@dataclass(frozen=True, slots=True)
class CallTimedOut(Event):
    """A call ran past its deadline and the caller got ``TimeoutExceededError``.

    Attributes:
        seconds: The timeout that expired.
        abandoned: ``True`` for a sync call left running in its worker thread.
    """

    seconds: float
    abandoned: bool = False


@dataclass(frozen=True, slots=True)
class FallbackUsed(Event):
    """A fallback replaced a call's exception or result with its handler's value.

    Attributes:
        exception: The exception handled, or ``None`` when a result was replaced.
        result: The result replaced (``None`` when an exception was handled).
    """

    exception: BaseException | None
    result: Any


@dataclass(frozen=True, slots=True)
class RetryScheduled(Event):
    """A retry will follow after ``delay`` seconds.

    Attributes:
        attempt: The attempt that just failed (1 for the first call).
        delay: Seconds to wait before the next attempt.
        exception: What the attempt raised, or ``None`` if its result was retried.
        result: The result that was retried (``None`` for an exception).
    """

    attempt: int
    delay: float
    exception: BaseException | None
    result: Any


@dataclass(frozen=True, slots=True)
class RetriesExhausted(Event):
    """A retry gave up; the last outcome goes back to the caller unchanged.

    Attributes:
        attempts: Attempts made.
        reason: ``"attempts"`` (all used), ``"deadline"`` (the next wait would end past
            the current deadline), ``"budget"`` (the retry budget refused) or
            ``"not_repeatable"`` (the ASGI middleware could not repeat the request).
        exception: The last exception, or ``None`` if the last result is returned.
        result: The last result, returned as is (``None`` for an exception).
    """

    attempts: int
    reason: str
    exception: BaseException | None
    result: Any


# States whose entry an operator must hear about: calls are being refused.
_REJECTING_STATES = frozenset({"open", "forced_open"})


def log_transition(event: StateTransition) -> None:
    """Log a breaker's state change: WARNING into a rejecting state, INFO otherwise.

    The logger's name says ``resilient``, so the message does not repeat it. A trip to
    OPEN carries the figures that caused it.
    """
    before = getattr(event.from_state, "value", event.from_state)
    after = getattr(event.to_state, "value", event.to_state)
    level = logging.WARNING if after in _REJECTING_STATES else logging.INFO
    if not logger.isEnabledFor(level):
        return
    if event.calls is None:
        logger.log(level, "circuit breaker %r: %s -> %s", event.policy, before, after)
        return
    logger.log(
        level,
        "circuit breaker %r: %s -> %s "
        "(failure rate %.1f%%, slow-call rate %.1f%%, calls in the window: %d)",
        event.policy,
        before,
        after,
        100 * (event.failure_rate or 0.0),
        100 * (event.slow_call_rate or 0.0),
        event.calls,
    )


Listener: TypeAlias = Callable[[Event], object]
"""A callable that receives each event record; its return value is ignored."""

# Mutated in place (never rebound) so that modules holding a reference see changes.
GLOBAL_LISTENERS: list[Listener] = []

# Process-wide listeners for the notable events only: rejections, transitions, timeouts,
# fallbacks and retries (OpenTelemetry span events). Unlike GLOBAL_LISTENERS they do not
# make a breaker build a record for every successful or failed call; they may still
# receive such records when another listener asked for them, and must filter by type.
NOTABLE_LISTENERS: list[Listener] = []
_global_lock = new_lock()


def add_global_listener(listener: Listener) -> None:
    """Register a listener for the events of every policy in the process."""
    with _global_lock:
        GLOBAL_LISTENERS.append(listener)


def remove_global_listener(listener: Listener) -> None:
    """Unregister a listener added with :func:`add_global_listener` (no error if absent)."""
    with _global_lock, contextlib.suppress(ValueError):
        GLOBAL_LISTENERS.remove(listener)


class EventSource:
    """The listener registry a policy core carries; mixed into every core.

    Attributes:
        listener_errors: How many times a listener of this policy raised.
    """

    __slots__ = ("__weakref__", "_listeners", "listener_errors")

    def __init__(self) -> None:
        self._listeners: list[Listener] = []
        self.listener_errors = 0

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(event)`` for each event this policy emits from now on."""
        if not callable(listener):
            raise TypeError(f"listener must be callable, not {type(listener).__name__}")
        self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        """Stop calling ``listener`` (no error if it was not registered)."""
        with contextlib.suppress(ValueError):
            self._listeners.remove(listener)

    def emit(self, event: Event) -> None:
        """Deliver ``event`` to this policy's listeners, then to the process-wide ones."""
        for listener in (*self._listeners, *GLOBAL_LISTENERS, *NOTABLE_LISTENERS):
            try:
                listener(event)
            except Exception:
                self.listener_errors += 1
                logger.exception(
                    "listener %r raised on %s; the call's result is unaffected",
                    listener,
                    type(event).__name__,
                )
