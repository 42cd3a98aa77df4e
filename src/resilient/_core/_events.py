"""Event records and their fan-out to listeners.

Every policy reports what it does as frozen event records. A record is only built when
someone listens (a listener on the policy, or a process-wide one such as
``resilient.testing.capture_events()``), so an unobserved policy pays one truth test per
call. A listener that raises is logged on the ``resilient`` logger with its traceback and
counted; it never changes the result of the call that emitted the event.

The record classes live in ``_records`` and are re-exported here; their module is loaded
the first time one of them is named (``from resilient._core._events import CallFailed``
or ``_events.CallFailed``), so that a policy nobody listens to does not pay for
creating them (see ``_records``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeAlias

from resilient._core._fork import new_lock

if TYPE_CHECKING:  # at run time, through __getattr__ below
    from resilient._core._records import (
        CallFailed,
        CallIgnored,
        CallRejected,
        CallSucceeded,
        CallTimedOut,
        Event,
        FallbackUsed,
        RetriesExhausted,
        RetryScheduled,
        StateTransition,
    )

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

_RECORDS = frozenset(
    {
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
    }
)

# Issue 17 (kept apart for merging).
_RECORDS = _RECORDS | {"HedgeStarted"}
if TYPE_CHECKING:
    from resilient._core._records import HedgeStarted
__all__ += ["HedgeStarted"]


if not TYPE_CHECKING:  # hidden from mypy, which would otherwise accept any name here

    def __getattr__(name: str) -> Any:
        # PEP 562: reached only while a record class is not yet a global of this module.
        if name not in _RECORDS:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        from resilient._core import _records  # noqa: PLC0415 -- on first use only

        value = getattr(_records, name)
        # Every record becomes a plain global at once: later lookups skip this function.
        globals().update({record: getattr(_records, record) for record in _RECORDS})
        return value


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


Listener: TypeAlias = Callable[["Event"], object]
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

    def observed(self) -> bool:
        """Whether anyone hears this policy's events: its own or process-wide listeners.

        Asked before an event record is built, so that nobody pays for one that nobody
        hears. (A breaker's successful and ignored calls are not notable: they skip the
        span events' NOTABLE_LISTENERS, and test the other two alone.)
        """
        return bool(self._listeners or GLOBAL_LISTENERS or NOTABLE_LISTENERS)

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


# -- issue 17: the adaptive limiter's record (a block of its own, to ease merging) -----
if TYPE_CHECKING:
    from resilient._core._records import LimitChanged
_RECORDS = _RECORDS | frozenset({"LimitChanged"})
__all__ += ["LimitChanged"]


# -- issue 19: reconfiguration's record (a block of its own, to ease merging) ----------
if TYPE_CHECKING:
    from resilient._core._records import Reconfigured
_RECORDS = _RECORDS | frozenset({"Reconfigured"})
__all__ += ["Reconfigured"]

# -- issue 19: coalescing and caching (a block of its own, to ease merging) ------------
if TYPE_CHECKING:
    from resilient._core._records import CallCoalesced, StaleValueServed
_RECORDS = _RECORDS | frozenset({"CallCoalesced", "StaleValueServed"})
__all__ += ["CallCoalesced", "StaleValueServed"]
