"""The event records of a shared store: it became unavailable, and it came back.

They sit beside the policies' own records (``resilient._events``) and go to the same
listeners: a policy bound to a store emits them under its own name and kind, so a
listener on one limiter hears about the outages that limiter lived through.
"""

from __future__ import annotations

from dataclasses import dataclass

from resilient._core._records import Event

__all__ = ["StoreRecovered", "StoreUnavailable"]


@dataclass(frozen=True, slots=True)
class StoreUnavailable(Event):
    """The shared store failed; the policy decides on its local state until it is back.

    Attributes:
        store: The store's description (``"redis 127.0.0.1:6379 namespace 'resilient'"``).
        error: What the failing operation raised.
    """

    store: str
    error: BaseException | None


@dataclass(frozen=True, slots=True)
class StoreRecovered(Event):
    """The shared store answers again; the policy's decisions are shared once more.

    Attributes:
        store: As in [`StoreUnavailable`][resilient.redis.StoreUnavailable].
        downtime: Seconds since this policy saw the store fail.
    """

    store: str
    downtime: float
