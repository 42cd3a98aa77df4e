"""The timeout policy's core: the configured seconds, the counts, and the errors.

The deadlines themselves (a loop timer or a cancel scope for async calls, a worker
thread for sync ones) are armed by the adapter, ``resilient._policies._timeout``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from resilient._core._atomic import new_counter
from resilient._core._clock import Clock
from resilient._core._errors import TimeoutExceededError, WorkersExhaustedError
from resilient._core._events import (
    CallRejected,
    CallTimedOut,
    EventSource,
)
from resilient._core._fork import new_lock
from resilient._core._validate import check_duration, check_int, check_name

__all__ = ["KIND", "TimeoutCore", "TimeoutMetrics"]

KIND: Final = "timeout"


@dataclass(frozen=True, slots=True)
class TimeoutMetrics:
    """A timeout's counts at one moment.

    Attributes:
        seconds: The configured timeout.
        timeouts: Calls that ran past their deadline (sync and async).
        rejected: Sync calls refused because every worker was busy.
        workers: Worker threads alive (sync calls only).
        busy_workers: Of those, workers running a call.
        abandoned_running: Sync calls that timed out and are still running.
        admitted: Calls not refused for lack of a worker (sync and async; one whose
            deadline had already passed counts here and in ``timeouts``);
            ``rejected / (admitted + rejected)`` is the rejection ratio.
    """

    seconds: float
    timeouts: int
    rejected: int
    workers: int
    busy_workers: int
    abandoned_running: int
    # Left out of ==, so that snapshots compare by state and their other counts.
    admitted: int = field(default=0, compare=False)


class TimeoutCore(EventSource):
    """Configuration, counts and errors of one timeout policy."""

    __slots__ = (
        "_count_lock",
        "admitted",
        "clock",
        "max_workers",
        "name",
        "rejected",
        "seconds",
        "timeouts",
    )

    def __init__(self, seconds: object, name: str | None, clock: Clock, max_workers: int) -> None:
        super().__init__()
        self.name = check_name(name)
        value = check_duration("seconds", seconds, allow_zero=False)
        self.seconds = value
        self.clock = clock  # resolved by the adapter, which also owns the worker threads
        self.max_workers = check_int("max_workers", max_workers)
        self.timeouts = 0
        self.rejected = 0
        self._count_lock = new_lock(self)
        # Counted lock-free where the GIL allows (see _atomic.new_counter).
        self.admitted = new_counter()

    def expired(self, seconds: float, *, abandoned: bool = False) -> TimeoutExceededError:
        """Count a timeout and build the caller's error."""
        with self._count_lock:
            self.timeouts += 1
        who = f"timeout {self.name!r}" if self.name is not None else "timeout"
        error = TimeoutExceededError(
            f"{who}: the call did not finish within {seconds:.3g}s",
            policy=self.name,
            seconds=seconds,
        )
        if self.observed():
            self.emit(CallTimedOut(self.name, KIND, seconds, abandoned))
        return error

    def exhausted(self) -> WorkersExhaustedError:
        """Count a refusal for lack of workers and build the caller's error."""
        with self._count_lock:
            self.rejected += 1
        who = f"timeout {self.name!r}" if self.name is not None else "timeout"
        error = WorkersExhaustedError(
            f"{who}: all {self.max_workers} worker threads are busy (running calls, "
            "or calls that overran their deadline and still hold them); "
            "the call was not started",
            policy=self.name,
        )
        if self.observed():
            self.emit(CallRejected(self.name, KIND, error))
        return error
