"""OpenTelemetry span events for what a policy did to a call.

A rejection, a retry, a fallback, a timeout or a state transition is added as an event
to the span current where it happened, if that span records. Only these notable events
are listened to (see ``NOTABLE_LISTENERS``): a breaker's successful calls build no
record for them.
"""

from __future__ import annotations

import logging
from typing import Final

from opentelemetry import trace

from resilient._core._events import (
    NOTABLE_LISTENERS,
    CallRejected,
    CallTimedOut,
    Event,
    FallbackUsed,
    RetriesExhausted,
    RetryScheduled,
    StateTransition,
)
from resilient._core._fork import new_lock

__all__ = ["SpanEvents"]

logger = logging.getLogger("resilient")

_lock = new_lock()

NAMES: Final[dict[type[Event], str]] = {
    CallRejected: "resilient.rejected",
    RetryScheduled: "resilient.retry",
    RetriesExhausted: "resilient.retries_exhausted",
    FallbackUsed: "resilient.fallback",
    CallTimedOut: "resilient.timeout",
    StateTransition: "resilient.state_transition",
}


def _attributes(event: Event) -> dict[str, str | int | float | bool]:
    attrs: dict[str, str | int | float | bool] = {"resilient.kind": event.kind}
    if event.policy is not None:
        attrs["resilient.policy"] = event.policy
    if isinstance(event, CallRejected):
        attrs["exception.type"] = type(event.error).__name__
        retry_after = getattr(event.error, "retry_after", None)
        if retry_after is not None:
            attrs["resilient.retry_after"] = float(retry_after)
    elif isinstance(event, RetryScheduled):
        attrs["resilient.attempt"] = event.attempt
        attrs["resilient.delay"] = event.delay
        if event.exception is not None:
            attrs["exception.type"] = type(event.exception).__name__
    elif isinstance(event, RetriesExhausted):
        attrs["resilient.attempts"] = event.attempts
        attrs["resilient.reason"] = event.reason
    elif isinstance(event, FallbackUsed):
        if event.exception is not None:
            attrs["exception.type"] = type(event.exception).__name__
    elif isinstance(event, CallTimedOut):
        attrs["resilient.timeout"] = event.seconds
        attrs["resilient.abandoned"] = event.abandoned
    elif isinstance(event, StateTransition):
        attrs["resilient.from_state"] = str(event.from_state)
        attrs["resilient.state"] = str(event.to_state)
    # A record of an integration (resilient.chaos) says what it adds, so that this floor
    # imports none of them.
    extra = getattr(event, "span_attributes", None)
    if extra is not None:
        attrs.update(extra())
    return attrs


class SpanEvents:
    """A listener adding notable events to the current span; ``start()``/``stop()``."""

    def __init__(self) -> None:
        self.errors = 0

    def __call__(self, event: Event) -> None:
        name = NAMES.get(type(event)) or getattr(event, "span_name", None)
        if name is None:
            return  # a per-call record another listener asked for
        span = trace.get_current_span()
        if not span.is_recording():
            return
        span.add_event(name, _attributes(event))

    def start(self) -> None:
        """Listen from now on."""
        with _lock:
            NOTABLE_LISTENERS.append(self)

    def stop(self) -> None:
        """Stop listening (no error if not listening)."""
        with _lock:
            if self in NOTABLE_LISTENERS:
                NOTABLE_LISTENERS.remove(self)
