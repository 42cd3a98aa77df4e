"""Request coalescing (Go's singleflight, Hystrix's collapser): one call per key in flight.

A *flight* is one underlying call that several callers with the same key wait for. The
first caller of a key starts the flight (its *leader*); callers arriving while it is in
flight *follow* it: they wait, and get its outcome. The flight leaves the table the
moment it settles, so the next caller of that key starts a new one (this is coalescing,
not caching: see ``_cache``).

This module decides and counts; the adapter (``_policies._coalesce``) runs the call and
waits. Waiters are the adapter's (``_waiting._waiters``): a flight keeps the ones to
wake, and :meth:`CoalesceCore.settle` wakes them after the lock is released. No user
code (the key function, the call) ever runs under the lock, and each way a flight can
end (a result, an exception, an interrupt, every caller gone) takes it out of the table,
so no caller can wait on a flight that nobody will settle.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, Final

from resilient._core import _events
from resilient._core._events import EventSource
from resilient._core._fork import new_lock
from resilient._core._validate import check_name
from resilient._core._waiter import Waiter

__all__ = [
    "KIND",
    "CoalesceCore",
    "CoalesceMetrics",
    "Flight",
    "check_key",
    "copy_error",
    "default_key",
]

KIND: Final = "coalesce"


@dataclass(frozen=True, slots=True)
class CoalesceMetrics:
    """A coalescing policy's counts since it was created.

    Attributes:
        leaders: Flights started: calls that ran the function (the underlying calls).
        followers: Calls that waited for a flight another call had started, instead of
            running the function.
        in_flight: Flights running now.
        failed: Flights that ended with an exception (every waiter got it).
        abandoned: Flights that ended with neither a result nor an exception: the
            leader was interrupted (``KeyboardInterrupt``...), or every caller of an
            async flight was cancelled. Their followers, if any, started over.
    """

    leaders: int
    followers: int
    in_flight: int
    failed: int
    abandoned: int


class Flight:
    """One underlying call and the callers waiting for it (fields under the core's lock).

    ``callers`` counts the callers still waiting for the outcome (an async leader too);
    ``cancel``, set by an async adapter, stops the call when the last of them leaves.
    """

    __slots__ = (
        "abandoned",
        "callers",
        "cancel",
        "error",
        "key",
        "result",
        "settled",
        "waiters",
    )

    def __init__(self, key: Hashable) -> None:
        self.key = key
        self.callers = 1
        self.waiters: list[Waiter] = []
        self.settled = False
        self.abandoned = False
        self.error: BaseException | None = None
        self.result: Any = None
        self.cancel: Callable[[], object] | None = None


def _unhashable(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    """Which argument cannot be hashed, for the error message."""
    for i, arg in enumerate(args):
        try:
            hash(arg)
        except TypeError:
            return f"positional argument {i} ({type(arg).__name__})"
    for name, arg in kwargs.items():
        try:
            hash(arg)
        except TypeError:
            return f"keyword argument {name!r} ({type(arg).__name__})"
    return "an argument"  # pragma: no cover - one of them did not hash


def default_key(kind: str, target: object, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """The function called and its arguments, as a key; a TypeError if they do not hash.

    Keyword arguments are sorted by name, so their order does not matter; a value given
    by position and the same value given by keyword are different keys.
    """
    key = (target, args, tuple(sorted(kwargs.items()))) if kwargs else (target, args)
    try:
        hash(key)
    except TypeError:
        which = _unhashable(args, kwargs)
        raise TypeError(
            f"{kind}: the default key is the function and its arguments, and {which} "
            "cannot be hashed; pass key= (a function of the call's arguments returning "
            "a hashable key), e.g. key=lambda query: json.dumps(query, sort_keys=True)"
        ) from None
    return key


def check_key(value: object) -> Callable[..., Hashable] | None:
    """The ``key`` option: ``None`` (the function and its arguments) or a callable."""
    if value is None:
        return None
    if not callable(value):
        raise TypeError(
            "key must be None or a callable taking the call's arguments and returning a "
            f"hashable key, not {type(value).__name__}"
        )
    return value


def copy_error(error: BaseException) -> BaseException:
    """A copy of ``error`` for one more caller to raise, or ``error`` if it cannot be copied.

    Raising one exception object in many threads or tasks at once would make each add
    its frames to the same ``__traceback__`` (and ``__context__``), which then grows
    with every waiter and mixes their stacks. A shallow copy keeps the type, arguments,
    attributes, cause, context and the traceback of the call itself.
    """
    try:
        twin = copy.copy(error)
    except Exception:  # an exception class that cannot be rebuilt from its args
        return error
    if type(twin) is not type(error):  # pragma: no cover - a __reduce__ of its own
        return error
    twin.__cause__ = error.__cause__
    twin.__context__ = error.__context__
    twin.__suppress_context__ = error.__suppress_context__
    return twin.with_traceback(error.__traceback__)


class CoalesceCore(EventSource):
    """The table of flights in progress, by key, and the counts."""

    __slots__ = ("_flights", "_lock", "abandoned", "failed", "followers", "leaders", "name")

    def __init__(self, name: object) -> None:
        super().__init__()
        self.name = check_name(name)
        self._flights: dict[Hashable, Flight] = {}
        self._lock = new_lock(self)
        self.leaders = self.followers = self.failed = self.abandoned = 0

    def join(self, key: Hashable, world: str) -> tuple[Flight, bool]:
        """The flight of ``key``, and whether the caller leads it (must run the call).

        ``world`` (``"sync"``, ``"async"``) keeps sync and async flights apart: a thread
        must not block on a flight that its own thread's event loop should run.
        """
        where = (world, key)
        with self._lock:
            flight = self._flights.get(where)
            if flight is None:
                flight = self._flights[where] = Flight(where)
                self.leaders += 1
                return flight, True
            flight.callers += 1
            self.followers += 1
            waiting = flight.callers
        if self.observed():
            self.emit(_events.CallCoalesced(self.name, KIND, key, waiting))
        return flight, False

    def wait_on(self, flight: Flight, waiter: Waiter) -> bool:
        """Queue ``waiter`` to be woken when ``flight`` settles; ``False`` if it has."""
        with self._lock:
            if flight.settled:
                return False
            flight.waiters.append(waiter)
            return True

    def settle(self, flight: Flight, error: BaseException | None, result: Any) -> None:
        """The call ended with ``result``, or raised ``error`` (an ``Exception``)."""
        with self._lock:
            if flight.settled:
                return
            flight.settled = True
            flight.error = error
            flight.result = result
            if error is not None:
                self.failed += 1
            waiters = self._close(flight)
        for waiter in waiters:
            waiter.wake()

    def abandon(self, flight: Flight, error: BaseException | None = None) -> None:
        """The call ended with no outcome to share (an interrupt, a cancellation).

        Its followers start over: one of them leads a new flight. ``error`` is kept for
        the leader alone to raise (an async leader waits for a task that ran the call).
        """
        with self._lock:
            if flight.settled:
                return
            flight.settled = flight.abandoned = True
            flight.error = error
            self.abandoned += 1
            waiters = self._close(flight)
        for waiter in waiters:
            waiter.wake()

    def leave(self, flight: Flight, waiter: Waiter | None) -> None:
        """A caller stops waiting (cancelled, interrupted): the last one stops the call."""
        with self._lock:
            if waiter is not None and waiter in flight.waiters:
                flight.waiters.remove(waiter)
            flight.callers -= 1
            cancel = None
            if flight.callers <= 0 and not flight.settled and flight.cancel is not None:
                # Nobody waits for it: a new caller must not join a call being stopped.
                if self._flights.get(flight.key) is flight:
                    del self._flights[flight.key]
                cancel = flight.cancel
        if cancel is not None:
            cancel()

    def _close(self, flight: Flight) -> list[Waiter]:
        # Under the lock: the next caller of this key starts a new flight.
        if self._flights.get(flight.key) is flight:
            del self._flights[flight.key]
        waiters, flight.waiters = flight.waiters, []
        return waiters

    def in_flight(self) -> int:
        """Flights running now."""
        return len(self._flights)

    def metrics(self) -> CoalesceMetrics:
        """The counts, frozen."""
        with self._lock:
            return CoalesceMetrics(
                leaders=self.leaders,
                followers=self.followers,
                in_flight=len(self._flights),
                failed=self.failed,
                abandoned=self.abandoned,
            )

    def _after_fork_in_child(self) -> None:
        # The parent's flights run in threads (or tasks) the child may not have: a
        # child's caller starts its own flight rather than wait for one nobody runs.
        self._flights = {}
