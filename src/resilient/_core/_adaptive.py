"""The adaptive limiter's admission and sampling, sans I/O.

A bulkhead whose limit moves: every admitted call holds a permit, and every call that
ends tells the core its round-trip time and whether it was *dropped* (an outcome that
says the dependency is overloaded: a timeout by default). Samples are gathered in
windows, as Netflix's ``WindowedLimit`` does: a window closes at the first sample that
ends after it is due (``window_duration`` after the previous one closed), and feeds the
algorithm (``_limit_algorithms``) with its average RTT, the most calls in flight, and
whether any call was dropped, if it holds at least ``window_samples`` samples; a window
with fewer is discarded. Round trips shorter than ``min_rtt`` are not samples (a cache
hit says nothing about the dependency).

One lock guards the counts, the queue and the window; it is never held across a call,
a wait or a listener. Callers beyond the limit wait in FIFO order (up to ``max_wait``)
for a permit handed over by a caller that leaves or by a raised limit.

Partitions (``{"live": 0.8, "batch": 0.2}``) guarantee each class of traffic a share
of the limit, as the reference's partitioned limiter does: a call is admitted while the
total in flight is under the limit (any class may borrow idle capacity), *or* while its
partition holds fewer than its share (``ceil(limit * share)``), even if the total is at
the limit. So a class flooding the limiter cannot starve another; the price is that the
total may exceed the limit by what the other classes take of their guarantees.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Callable
from typing import Any, Final

from resilient._core._adaptive_parts import (
    AdaptiveLimiterMetrics,
    PartitionMetrics,
    check_partitions,
)
from resilient._core._clock import Clock
from resilient._core._errors import BulkheadFullError
from resilient._core._events import CallRejected, EventSource
from resilient._core._fork import new_lock
from resilient._core._limit_algorithms import LimitAlgorithm
from resilient._core._validate import (
    check_duration,
    check_int,
    check_name,
    check_random,
    compile_matcher,
    matches,
)
from resilient._core._waiter import Waiter

__all__ = ["KIND", "AdaptiveCore", "AdaptiveLimiterMetrics", "PartitionMetrics", "Token"]

KIND: Final = "adaptive_limiter"

# What a call came to, as the core counts it.
SUCCESS: Final = 0
DROPPED: Final = 1
IGNORED: Final = 2  # cancelled, or an error that says nothing of the dependency's load

Token = tuple[float, int, int]
"""A permit: (when the call started, calls in flight then, partition index or -1)."""


class AdaptiveCore(EventSource):
    """Permits, waiters, the sample window and the algorithm of one adaptive limiter."""

    __slots__ = (
        "_index",
        "_lock",
        "_next_window",
        "_state",
        "_w_count",
        "_w_drop",
        "_w_inflight",
        "_w_min",
        "_w_sum",
        "_waiters",
        "admitted",
        "algorithm",
        "clock",
        "drop_on",
        "dropped",
        "in_flight",
        "limit",
        "max_wait",
        "min_rtt",
        "name",
        "partitions",
        "rejected",
        "updates",
        "window_duration",
        "window_samples",
    )

    def __init__(
        self,
        algorithm: LimitAlgorithm,
        *,
        max_wait: object,
        name: str | None,
        clock: Clock,
        window_samples: object,
        window_duration: object,
        min_rtt: object,
        drop_on: object,
        partitions: object,
        random: Any = None,
    ) -> None:
        super().__init__()
        start = getattr(algorithm, "start", None)
        if not callable(start) or isinstance(algorithm, type):
            raise TypeError(
                f"algorithm must be Gradient2(...), Vegas(...) or AIMD(...), not {algorithm!r}"
            )
        self.name = check_name(name)
        self.algorithm = algorithm
        self.max_wait = check_duration("max_wait", max_wait)
        self.window_samples = check_int("window_samples", window_samples, maximum=1_000_000)
        self.window_duration = check_duration("window_duration", window_duration)
        if self.window_duration == 0 and self.window_samples > 1:
            # Every sample would close a window of one sample, discarded: never an update.
            raise ValueError(
                "window_samples must be 1 when window_duration is 0 (every sample closes "
                f"its window), got window_samples={self.window_samples}"
            )
        self.min_rtt = check_duration("min_rtt", min_rtt)
        self.drop_on: Callable[[BaseException], bool] | None = compile_matcher("drop_on", drop_on)
        self.partitions = check_partitions(partitions)
        self._index = {p.name: i for i, p in enumerate(self.partitions)}
        self.clock = clock
        self._state = algorithm.start(check_random(random, ("uniform",)))
        self.limit = max(1, int(self._state.estimate))
        for part in self.partitions:
            part.resize(self.limit)
        self.in_flight = 0
        self.admitted = 0
        self.rejected = 0
        self.dropped = 0
        self.updates = 0
        # Waiters with the partition each waits for (-1: none), first come first served.
        self._waiters: collections.deque[tuple[Waiter, int]] = collections.deque()
        self._lock = new_lock(self)
        self._next_window = -math.inf
        self._reset_window()

    def _reset_window(self) -> None:
        self._w_count = 0
        self._w_sum = 0.0
        self._w_min = math.inf
        self._w_inflight = 0
        self._w_drop = False

    def partition_index(self, name: object) -> int:
        """The index of partition ``name``; ``ValueError`` naming the known ones."""
        if not isinstance(name, str):
            raise TypeError(f"name must be a partition's name (str), not {type(name).__name__}")
        try:
            return self._index[name]
        except KeyError:
            known = ", ".join(repr(p) for p in self._index) or "none"
            raise ValueError(
                f"name must be one of the limiter's partitions ({known}), got {name!r}"
            ) from None

    # -- admission (under the lock) ----------------------------------------------------

    def _admissible(self, part: int, first: bool) -> bool:
        """Whether a caller of partition ``part`` may enter now (locked).

        Within its partition's guarantee, always: a guarantee is not shared, so it
        overtakes the queue. Otherwise only under the limit, and only if ``first`` in
        line: a newcomer does not overtake the callers already queued.
        """
        if part >= 0:
            p = self.partitions[part]
            if p.busy < p.guaranteed:
                return True
        return first and self.in_flight < self.limit

    def _admit(self, part: int) -> int:
        self.in_flight += 1
        self.admitted += 1
        if part >= 0:
            p = self.partitions[part]
            p.busy += 1
            p.admitted += 1
        return self.in_flight

    def acquire(self, part: int = -1) -> Token | None:
        """A permit at once, or ``None`` if the limit (and the partition's share) is used up."""
        now = self.clock.monotonic()
        with self._lock:
            if self._admissible(part, not self._waiters):
                return (now, self._admit(part), part)
        return None

    def enqueue(self, waiter: Waiter, part: int = -1) -> bool:
        """Take a permit or queue ``waiter``; ``True`` if the permit is taken already.

        Raises:
            BulkheadFullError: nothing is free and ``max_wait`` is 0.
        """
        with self._lock:
            if self._admissible(part, not self._waiters):
                waiter.granted = True
                self._admit(part)
                return True
            if self.max_wait > 0:
                self._waiters.append((waiter, part))
                return False
            self._count_rejection(part)
        raise self.rejection()

    def started(self, part: int = -1) -> Token:
        """The permit of a waiter just granted one."""
        return (self.clock.monotonic(), self.in_flight, part)

    def refuse(self, part: int = -1) -> BulkheadFullError:
        """Count a caller refused at once, and build its error."""
        with self._lock:
            self._count_rejection(part)
        return self.rejection()

    def _count_rejection(self, part: int) -> None:
        self.rejected += 1
        if part >= 0:
            self.partitions[part].rejected += 1

    def timed_out(self, waiter: Waiter, part: int = -1) -> bool:
        """Withdraw ``waiter`` (its wait ran out); ``True`` if it was granted a permit anyway."""
        with self._lock:
            if waiter.granted:
                return True
            self._remove(waiter)
            self._count_rejection(part)
            return False

    def _remove(self, waiter: Waiter) -> None:
        for i, (queued, _part) in enumerate(self._waiters):
            if queued is waiter:
                del self._waiters[i]
                return

    def leave(self, waiter: Waiter, part: int = -1) -> None:
        """``waiter`` is interrupted or cancelled: give back its permit, or leave the queue."""
        with self._lock:
            if waiter.granted:
                waiter.granted = False
                self._free(part)
            else:
                self._remove(waiter)
            woken = self._grant()
        self._wake(woken)

    # -- the end of a call -------------------------------------------------------------

    def classify(self, exc: BaseException) -> int:
        """Whether an exception the call raised is a drop (``drop_on``) or ignored.

        Runs the user's ``drop_on`` predicate, so never under the lock; a predicate that
        raises is logged and answers "not a drop".
        """
        drop_on = self.drop_on
        if drop_on is not None and matches(drop_on, exc, "drop_on", self.name):
            return DROPPED
        return IGNORED

    def release(self, token: Token, outcome: int) -> None:
        """A call ended: give its permit back, record its sample, hand permits to waiters."""
        start, inflight, part = token
        now = self.clock.monotonic()
        changed: tuple[int, int, float, bool] | None = None
        with self._lock:
            self._free(part)
            if outcome == DROPPED:
                self.dropped += 1
            if outcome != IGNORED:
                changed = self._sample(now, now - start, inflight, outcome == DROPPED)
            woken = self._grant()
        self._wake(woken)
        if changed is not None and self.observed():
            self._limit_changed(*changed)

    def _free(self, part: int) -> None:
        self.in_flight -= 1
        if part >= 0:
            self.partitions[part].busy -= 1

    def _sample(
        self, now: float, rtt: float, inflight: int, dropped: bool
    ) -> tuple[int, int, float, bool] | None:
        if rtt < self.min_rtt or rtt <= 0.0:
            return None
        self._w_count += 1
        self._w_sum += rtt
        self._w_min = min(self._w_min, rtt)
        self._w_inflight = max(self._w_inflight, inflight)
        self._w_drop = self._w_drop or dropped
        if now < self._next_window:
            return None
        self._next_window = now + self.window_duration
        count, total, peak, drop = self._w_count, self._w_sum, self._w_inflight, self._w_drop
        self._reset_window()
        if count < self.window_samples:
            return None  # too few samples to say anything: the window is discarded
        self.updates += 1
        average = total / count
        before = self.limit
        self.limit = max(1, int(self._state.update(average, peak, drop)))
        if self.limit == before:
            return None
        for p in self.partitions:
            p.resize(self.limit)
        return before, self.limit, average, drop

    def _grant(self) -> list[tuple[Waiter, int]]:
        """Hand permits to queued waiters in order, as far as the limit allows (locked).

        A waiter whose partition may not enter now does not block those behind it who may.
        """
        woken: list[tuple[Waiter, int]] = []
        if not self._waiters:
            return woken
        kept: list[tuple[Waiter, int]] = []
        while self._waiters:
            waiter, part = self._waiters.popleft()
            # One kept in line means the limit is reached: only guarantees admit now.
            if self._admissible(part, not kept):
                waiter.granted = True
                self._admit(part)
                woken.append((waiter, part))
            else:
                kept.append((waiter, part))
                if not self.partitions:
                    break  # without partitions, whoever is behind may not enter either
        self._waiters.extendleft(reversed(kept))
        return woken

    def _wake(self, woken: list[tuple[Waiter, int]]) -> None:
        for waiter, part in woken:
            if not waiter.wake():
                # Its event loop is gone: take the permit back for the next in line.
                self.leave(waiter, part)

    def _limit_changed(self, before: int, after: int, rtt: float, dropped: bool) -> None:
        from resilient._core._records import LimitChanged  # noqa: PLC0415 -- on first use

        self.emit(LimitChanged(self.name, KIND, before, after, rtt, dropped))

    def _after_fork_in_child(self) -> None:
        # Calls in flight and callers queued in the parent's other threads never end in
        # the child: start with no permit held and keep only the waiters that live on.
        self.in_flight = 0
        for p in self.partitions:
            p.busy = 0
        alive = [(w, part) for w, part in self._waiters if w.survives_fork()]
        self._waiters.clear()
        self._waiters.extend(alive)
        self._wake(self._grant())

    def rejection(self) -> BulkheadFullError:
        """Build (and report) the error for a refused caller."""
        who = f"adaptive limiter {self.name!r}" if self.name is not None else "adaptive limiter"
        waited = f" within {self.max_wait:g}s" if self.max_wait else ""
        error = BulkheadFullError(
            f"{who} is full: {self.in_flight} calls in flight, limit {self.limit}, "
            f"none free{waited}",
            policy=self.name,
        )
        if self.observed():
            self.emit(CallRejected(self.name, KIND, error))
        return error

    def metrics(self) -> AdaptiveLimiterMetrics:
        """A frozen snapshot of the counts."""
        with self._lock:
            parts = {
                p.name: PartitionMetrics(p.share, p.guaranteed, p.busy, p.admitted, p.rejected)
                for p in self.partitions
            }
            return AdaptiveLimiterMetrics(
                limit=self.limit,
                in_flight=self.in_flight,
                waiting=len(self._waiters),
                admitted=self.admitted,
                rejected=self.rejected,
                dropped=self.dropped,
                updates=self.updates,
                partitions=parts,
            )
