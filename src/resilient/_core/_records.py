"""The event records: one frozen, slotted dataclass per kind of event.

Kept apart from the fan-out in ``_events`` because creating a dataclass generates and
compiles its methods, and ten of them cost more than the rest of a circuit breaker: this
module is loaded only when a record is first needed (a listener is registered, a record
class is named, or a breaker changes state), never by ``import resilient`` alone
(``tests/test_import_cost.py``). ``_events`` re-exports every record.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "CallFailed",
    "CallIgnored",
    "CallRejected",
    "CallSucceeded",
    "CallTimedOut",
    "Event",
    "FallbackUsed",
    "RetriesExhausted",
    "RetryScheduled",
    "StateTransition",
]


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


# Reprs, pickles and docs say `resilient.CallFailed` (the public name), however the
# module was first reached: through `resilient`, a listener, or a breaker's transition.
for _record in (
    Event,
    CallSucceeded,
    CallFailed,
    CallIgnored,
    CallRejected,
    StateTransition,
    CallTimedOut,
    FallbackUsed,
    RetryScheduled,
    RetriesExhausted,
):
    _record.__module__ = "resilient"
del _record


# -- issue 17: hedged requests (a block of its own, kept apart for merging) ------------


@dataclass(frozen=True, slots=True)
class HedgeStarted(Event):
    """A hedge started an extra attempt: the earlier ones were slow, or failed.

    Attributes:
        attempt: The extra attempt's number (1 for the first hedge; the first attempt
            is 0).
        after: Seconds since the call began.
    """

    attempt: int
    after: float


HedgeStarted.__module__ = "resilient"
__all__ += ["HedgeStarted"]


# -- issue 17: the adaptive limiter's record (a block of its own, to ease merging) -----


@dataclass(frozen=True, slots=True)
class LimitChanged(Event):
    """An adaptive limiter recomputed its limit from a window of samples, and it moved.

    Attributes:
        from_limit: The limit before.
        to_limit: The limit after.
        rtt: The window's average round-trip time, in seconds.
        dropped: Whether a call of the window was dropped (counted as overload).
    """

    from_limit: int
    to_limit: int
    rtt: float
    dropped: bool


LimitChanged.__module__ = "resilient"
__all__ += ["LimitChanged"]


# -- issue 19: reconfiguration (a block of its own, to ease merging) -------------------


@dataclass(frozen=True, slots=True)
class Reconfigured(Event):
    """A policy's options were changed in place (``reconfigure()``, ``Registry.configure``).

    Emitted only when something changed, after the change (to the policy's listeners,
    never under its locks).

    Attributes:
        changes: Each changed option, as ``{option: (old, new)}``, the values as they
            were given (a read-only mapping).
    """

    changes: Mapping[str, tuple[Any, Any]]

    @property
    def options(self) -> tuple[str, ...]:
        """The names of the changed options, sorted."""
        return tuple(sorted(self.changes))


Reconfigured.__module__ = "resilient"
__all__ += ["Reconfigured"]

# -- issue 19: coalescing and caching (a block of its own, to ease merging) ------------


@dataclass(frozen=True, slots=True)
class CallCoalesced(Event):
    """A call joined a call already in flight with the same key, instead of making its own.

    Attributes:
        key: The key the calls share.
        waiting: Callers waiting for that flight's outcome, this one included.
    """

    key: Any
    waiting: int


@dataclass(frozen=True, slots=True)
class StaleValueServed(Event):
    """A cache answered a failed call with a value past its ``ttl``, within ``stale_if_error``.

    Attributes:
        key: The entry's key.
        age: Seconds since the value was stored.
        exception: The failure the stale value stands in for.
    """

    key: Any
    age: float
    exception: BaseException


CallCoalesced.__module__ = "resilient"
StaleValueServed.__module__ = "resilient"
__all__ += ["CallCoalesced", "StaleValueServed"]
