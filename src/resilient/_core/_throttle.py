"""Adaptive throttling: the client sheds what its backend would refuse (Google SRE).

The rule is the SRE book's ("Handling Overload", client-side throttling). Over a sliding
window (two minutes by default, a ring of time buckets) the client keeps two counts:

* ``requests``: calls the application attempted, counted *before* the call, the ones
  shed here included;
* ``accepts``: calls the backend accepted (their outcome was not classified as a
  refusal).

A new call is shed locally with probability ``max(0, (requests - k * accepts) /
(requests + 1))``. While the backend accepts everything, ``requests <= accepts`` and
nothing is shed; once it accepts less than ``1 / k`` of what is sent, the client drops
the excess itself, so an overloaded backend stops spending work on refusing requests.
Shed calls count as requests, so the probability keeps rising while the backend stays
down, and falls as soon as admitted calls are accepted again.

An accept is added to the bucket its request was counted in (dropped if that bucket has
left the window), so a window never holds more accepts than requests. A call whose
outcome counts as neither (an ignored exception, a cancellation, an interrupt) takes its
request back, the same way.

This module decides and counts; the adapter (``_policies._throttle``) runs the call.
The random draw and the user's predicates run outside the lock.
"""

from __future__ import annotations

import logging
import math
import random as _random_module
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from resilient._core import _events
from resilient._core._breaker_options import classify_error, named_rejections
from resilient._core._clock import TimeSource
from resilient._core._errors import ThrottledError, throttled
from resilient._core._events import GLOBAL_LISTENERS, EventSource
from resilient._core._fork import new_lock
from resilient._core._outcome import NO_RESULT
from resilient._core._validate import (
    MIN_BUCKET_SECONDS,
    check_arity,
    check_duration,
    check_int,
    check_name,
    check_number,
    check_random,
    check_result_predicate,
    compile_matcher,
)

__all__ = ["KIND", "AdaptiveThrottleMetrics", "ThrottleCore", "rejection_probability"]

KIND: Final = "adaptive_throttle"

logger = logging.getLogger("resilient")

# Shared by every throttle built without `random=`: the module's own generator.
_RANDOM: Final = _random_module.Random()  # noqa: S311 -- load shedding, not cryptography

MAX_K: Final = 1e6
"""The largest ``k``: beyond it nothing is ever shed once one call in a million passes."""


def rejection_probability(requests: int, accepts: int, k: float) -> float:
    """The SRE book's formula: ``max(0, (requests - k * accepts) / (requests + 1))``."""
    excess = requests - k * accepts
    return excess / (requests + 1) if excess > 0 else 0.0


@dataclass(frozen=True, slots=True)
class AdaptiveThrottleMetrics:
    """An adaptive throttle's window and its counts since it was created.

    Attributes:
        requests: Calls attempted in the window (shed ones included).
        accepts: Calls in the window that the backend accepted.
        rejection_probability: The probability that the next call is shed, from the
            counts above.
        admitted: Calls let through since creation.
        rejected: Calls shed with [`ThrottledError`][resilient.ThrottledError].
        accepted: Admitted calls the backend accepted.
        failed: Admitted calls the backend did not accept (a recorded exception, or a
            result matched by ``record_result``).
        ignored: Admitted calls whose outcome counted as neither (an ignored exception).
    """

    requests: int
    accepts: int
    rejection_probability: float
    admitted: int
    rejected: int
    accepted: int
    failed: int
    ignored: int


def _check_k(option: str, value: object) -> float:
    # Below 1, a backend that accepts everything would still see calls shed.
    return check_number(option, value, minimum=1.0, maximum=MAX_K)


class ThrottleCore(EventSource):
    """The window of requests and accepts, the draw, and the classification of outcomes.

    A call's *ticket* is the absolute number of the bucket its request was counted in.
    """

    __slots__ = (
        "_accepts",
        "_clock",
        "_head",
        "_ignore",
        "_lock",
        "_random",
        "_record",
        "_record_rejections",
        "_record_result",
        "_requests",
        "_total_accepts",
        "_total_requests",
        "_width",
        "accepted",
        "admitted",
        "buckets",
        "failed",
        "ignored",
        "k",
        "name",
        "rejected",
        "window",
    )

    def __init__(
        self,
        name: object,
        *,
        k: object,
        window: object,
        buckets: object,
        record: object,
        ignore: object,
        record_result: object,
        random: object,
        clock: TimeSource,
    ) -> None:
        super().__init__()
        self.name = check_name(name)
        self.k = _check_k("k", k)
        seconds = check_duration("window", window, minimum=MIN_BUCKET_SECONDS)
        self.window = seconds
        # As TimeWindow: buckets at least MIN_BUCKET_SECONDS wide (else the bucket number
        # of a reading overflows), one a second by default, between 10 and 100 of them.
        most = min(math.floor(seconds / MIN_BUCKET_SECONDS + 1e-9), 1000)
        count = min(max(math.ceil(seconds), 10), 100, most) if buckets is None else buckets
        self.buckets = check_int("buckets", count, maximum=1000)
        if self.buckets > most:
            raise ValueError(
                f"buckets must be an int >= 1 and <= 1,000 and <= window / "
                f"{MIN_BUCKET_SECONDS:g} (buckets at least {MIN_BUCKET_SECONDS:g}s wide): "
                f"at most {most} for {seconds:g}s, got {self.buckets}"
            )
        self._width = seconds / self.buckets
        self._record = compile_matcher("record", record)
        self._record_rejections = named_rejections(record)
        self._ignore = compile_matcher("ignore", ignore)
        self._record_result: Callable[[Any], bool] | None = check_result_predicate(
            "record_result", record_result
        )
        if random is None:
            self._random: Callable[[], float] = _RANDOM.random
        else:
            source = check_random(random, ("random",))
            self._random = check_arity("random.random", source.random, 0, "a method of no args")
        self._clock = clock
        self._lock = new_lock(self)
        self._requests = [0] * self.buckets
        self._accepts = [0] * self.buckets
        self._total_requests = 0
        self._total_accepts = 0
        self._head: int | None = None  # the absolute number of the newest bucket
        self.admitted = self.rejected = self.accepted = self.failed = self.ignored = 0

    # -- the window (with the lock held) -----------------------------------------------

    def _advance(self, now: float) -> int:
        """Move the ring to ``now``'s bucket (never back); return the newest bucket."""
        number = int(now // self._width)  # the same floor as acquire()'s test
        head = self._head
        n = self.buckets
        if head is None or number - head >= n:
            for i in range(n):
                self._requests[i] = self._accepts[i] = 0
            self._total_requests = self._total_accepts = 0
        elif number > head:
            for absolute in range(head + 1, number + 1):
                i = absolute % n
                self._total_requests -= self._requests[i]
                self._total_accepts -= self._accepts[i]
                self._requests[i] = self._accepts[i] = 0
        else:
            return head  # the same bucket, or a reading taken before another thread's
        self._head = number
        return number

    def _live(self, ticket: int) -> bool:
        """Whether the bucket ``ticket`` is still in the window (after ``_advance``)."""
        head = self._head
        return head is not None and head - self.buckets < ticket <= head

    # -- admission ---------------------------------------------------------------------

    def probability(self) -> float:
        """The probability that a call made now is shed."""
        now = self._clock.monotonic()
        with self._lock:
            self._advance(now)
            return rejection_probability(self._total_requests, self._total_accepts, self.k)

    def acquire(self) -> int:
        """Count a request and admit it (its ticket), or raise :class:`ThrottledError`."""
        now = self._clock.monotonic()
        with self._lock:
            bucket = self._head
            if bucket is None or now // self._width != bucket:  # a float floor, no call
                bucket = self._advance(now)
            requests = self._total_requests
            excess = requests - self.k * self._total_accepts
            if excess <= 0:  # the common case: the backend accepts enough, no draw
                self._requests[bucket % self.buckets] += 1
                self._total_requests = requests + 1
                self.admitted += 1
                return bucket
            p = excess / (requests + 1)
        # The draw may be user code (an injected generator): never under the lock. If it
        # raises, nothing was counted.
        shed = self._random() < p
        with self._lock:
            bucket = self._advance(now)
            self._count_request(bucket)
            if not shed:
                self.admitted += 1
                return bucket
            self.rejected += 1
        raise self._rejection(p)

    def _count_request(self, bucket: int) -> None:
        self._requests[bucket % self.buckets] += 1
        self._total_requests += 1

    def _rejection(self, p: float) -> ThrottledError:
        error = throttled(self.name, (self, None), p)  # its message made when read
        if self.observed():
            self.emit(_events.CallRejected(self.name, KIND, error))
        return error

    def refusal_text(self, error: ThrottledError, key: object) -> str:
        """The message of a ``ThrottledError`` this throttle raised (made when read)."""
        who = f"adaptive throttle {self.name!r}" if self.name is not None else "adaptive throttle"
        return (
            f"{who} shed the call: the backend is refusing recent calls "
            f"(rejection probability {error.probability:.3f})"
        )

    # -- outcomes ----------------------------------------------------------------------

    def on_success(self, ticket: int, result: Any) -> Any:
        """The call returned ``result``: accepted, unless ``record_result`` matches it.

        Returns ``result``, so that the adapter's step can be this method itself.
        """
        check = self._record_result
        if check is None and not self._listeners and not GLOBAL_LISTENERS:
            # The common case, written out (_accept's work without its call).
            with self._lock:
                self.accepted += 1
                head = self._head
                if head is not None and head - self.buckets < ticket <= head:
                    i = ticket % self.buckets
                    if self._accepts[i] < self._requests[i]:
                        self._accepts[i] += 1
                        self._total_accepts += 1
            return result
        if check is None or result is NO_RESULT:
            self._accept(ticket)
            return result
        try:
            failed = self._matches_result(check, result)
        except BaseException:
            self.give_back(ticket)  # an interrupt in record_result: the call counts as neither
            raise
        if failed:
            self._refused(None, result)
        else:
            self._accept(ticket)
        return result

    def _matches_result(self, check: Callable[[Any], bool], result: Any) -> bool:
        try:
            return bool(check(result))
        except Exception:
            logger.exception(
                "record_result of adaptive throttle %r raised; counting the result as accepted",
                self.name,
            )
            return False

    def on_error(self, ticket: int, exc: BaseException) -> None:
        """The call raised ``exc`` (an :class:`Exception`): classify it, as a breaker does.

        ``ignore`` wins; a rejection by one of the library's own policies inside the
        throttle (a full bulkhead, an open breaker) says nothing about the backend and
        counts as neither unless ``record`` names its class; a :class:`MisuseError` is a
        bug in the calling code, always neither. What ``record`` matches was not
        accepted; anything else was.
        """
        try:
            ignored, failed = classify_error(
                exc,
                self._ignore,
                self._record,
                self._record_rejections,
                "adaptive throttle",
                self.name,
            )
        except BaseException:
            self.give_back(ticket)  # an interrupt in a predicate: the call counts as neither
            raise
        if ignored:
            self._ignored(ticket, exc)
        elif failed:
            self._refused(exc, None)
        else:
            self._accept(ticket)

    # The outcomes read no clock: while the ring has not moved past a ticket's bucket, the
    # slot ``ticket % buckets`` still holds that bucket, whatever the time is now (a later
    # advance clears it as it would have anyway).

    def give_back(self, ticket: int) -> None:
        """Take the call's request out of the window (cancelled, interrupted, ignored)."""
        with self._lock:
            if self._live(ticket):
                i = ticket % self.buckets
                if self._requests[i] > 0:
                    self._requests[i] -= 1
                    self._total_requests -= 1

    def _accept(self, ticket: int) -> None:
        with self._lock:
            self.accepted += 1
            if self._live(ticket):
                i = ticket % self.buckets
                # Never more accepts than requests in a bucket (a request given back by
                # mistake twice must not let the window run ahead).
                if self._accepts[i] < self._requests[i]:
                    self._accepts[i] += 1
                    self._total_accepts += 1
        if self._listeners or GLOBAL_LISTENERS:  # not notable: span events skip it
            self.emit(_events.CallSucceeded(self.name, KIND, None))

    def _refused(self, exc: BaseException | None, result: Any) -> None:
        with self._lock:
            self.failed += 1
        if self.observed():
            self.emit(_events.CallFailed(self.name, KIND, exc, result, None))

    def _ignored(self, ticket: int, exc: BaseException) -> None:
        self.give_back(ticket)
        with self._lock:
            self.ignored += 1
        if self._listeners or GLOBAL_LISTENERS:
            self.emit(_events.CallIgnored(self.name, KIND, exc, None))

    # -- read-outs and controls --------------------------------------------------------

    def metrics(self) -> AdaptiveThrottleMetrics:
        """A frozen snapshot of the window and the counts."""
        now = self._clock.monotonic()
        with self._lock:
            self._advance(now)
            requests, accepts = self._total_requests, self._total_accepts
            return AdaptiveThrottleMetrics(
                requests,
                accepts,
                rejection_probability(requests, accepts, self.k),
                self.admitted,
                self.rejected,
                self.accepted,
                self.failed,
                self.ignored,
            )

    def reset(self) -> None:
        """Empty the window (the counts since creation stay)."""
        with self._lock:
            self._head = None
            for i in range(self.buckets):
                self._requests[i] = self._accepts[i] = 0
            self._total_requests = self._total_accepts = 0
