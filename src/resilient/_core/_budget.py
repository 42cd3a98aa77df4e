"""Retry budgets: the defence against retry storms.

Retries multiply load exactly when a dependency can least take it: three attempts at
every layer of a five-layer stack turn one failing request into 243. A budget, shared by
every :class:`~resilient.Retry` that calls one dependency, allows retries only while
they stay a small fraction of recent traffic.

* :class:`RetryBudget` is Finagle's: each first attempt deposits a token, each retry
  withdraws ``1 / ratio`` tokens, deposits expire after ``ttl`` seconds, and a reserve of
  ``min_retries_per_second * ttl`` retries is always allowed, so a quiet service can
  still retry. Over any ``ttl``, retries <= ``ratio`` x first attempts + the reserve.
* :class:`RetryThrottle` is gRPC's retry throttling: a token count that failures
  decrement by 1 and successes increment by ``token_ratio`` (up to ``max_tokens``);
  retries are allowed only while the count is above half of ``max_tokens``.

Both are thread-safe and report refusals in ``refused``; :class:`RetryBudget` takes
``clock=`` (the throttle counts outcomes, not time).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from resilient._core._clock import SYSTEM_TIME, Clock, TimeSource
from resilient._core._fork import new_lock
from resilient._core._validate import (
    MIN_BUCKET_SECONDS,
    check_clock,
    check_duration,
    check_number,
    check_rate,
)

__all__ = ["BudgetSnapshot", "RetryBudget", "RetryThrottle"]


@dataclass(frozen=True, slots=True)
class BudgetSnapshot:
    """A budget at one moment.

    Attributes:
        balance: Retries the budget would allow right now.
        first_attempts: First attempts counted (in the window, for a RetryBudget).
        retries: Retries allowed (in the window, for a RetryBudget).
        refused: Retries refused since the budget was created.
    """

    balance: float
    first_attempts: int
    retries: int
    refused: int


class RetryBudget:
    """Allow retries while they stay under ``ratio`` of recent first attempts (Finagle).

    Args:
        ttl: Seconds a first attempt counts for (default 10).
        min_retries_per_second: Retries always allowed, as a rate (default 10).
        ratio: Retries allowed per first attempt, in (0, 1] (default 0.2: 20%).
        clock: Where time comes from (default: monotonic).
    """

    __slots__ = (
        "__weakref__",
        "_buckets",
        "_clock",
        "_head",
        "_lock",
        "_width",
        "min_retries_per_second",
        "ratio",
        "refused",
        "reserve",
        "ttl",
    )

    _BUCKETS = 10

    def __init__(
        self,
        *,
        ttl: float = 10.0,
        min_retries_per_second: float = 10.0,
        ratio: float = 0.2,
        clock: Clock | None = None,
    ) -> None:
        # Ten buckets, each at least MIN_BUCKET_SECONDS wide (see TimeWindow).
        seconds = check_duration("ttl", ttl, minimum=self._BUCKETS * MIN_BUCKET_SECONDS)
        self.ttl = seconds
        self.min_retries_per_second = check_number(
            "min_retries_per_second", min_retries_per_second, minimum=0.0
        )
        self.ratio = check_rate("ratio", ratio)
        self.reserve = self.min_retries_per_second * self.ttl
        self._clock: TimeSource = check_clock(clock) or SYSTEM_TIME
        self._width = self.ttl / self._BUCKETS
        # Per bucket: [first attempts, retries]; the ring forgets a bucket as it expires.
        self._buckets = [[0, 0] for _ in range(self._BUCKETS)]
        self._head: int | None = None
        self._lock = new_lock(self)
        self.refused = 0

    def _advance(self) -> list[int]:
        number = math.floor(self._clock.monotonic() / self._width)
        head = self._head
        n = self._BUCKETS
        if head is None or number - head >= n:
            for bucket in self._buckets:
                bucket[0] = bucket[1] = 0
            self._head = number
        elif number > head:
            for absolute in range(head + 1, number + 1):
                bucket = self._buckets[absolute % n]
                bucket[0] = bucket[1] = 0
            self._head = number
        return self._buckets[(self._head if self._head is not None else number) % n]

    def _totals(self) -> tuple[int, int]:
        firsts = sum(bucket[0] for bucket in self._buckets)
        retries = sum(bucket[1] for bucket in self._buckets)
        return firsts, retries

    def _balance(self) -> float:
        firsts, retries = self._totals()
        return self.reserve + firsts * self.ratio - retries

    def on_first_attempt(self) -> None:
        """Count one first attempt (a deposit)."""
        with self._lock:
            self._advance()[0] += 1

    def try_retry(self) -> bool:
        """Withdraw one retry if the budget allows it; count a refusal otherwise."""
        with self._lock:
            bucket = self._advance()
            if self._balance() >= 1.0:
                bucket[1] += 1
                return True
            self.refused += 1
            return False

    def on_outcome(self, failed: bool) -> None:
        """Outcomes do not matter to this budget (only traffic does)."""

    def snapshot(self) -> BudgetSnapshot:
        """The balance and counts of the current window."""
        with self._lock:
            self._advance()
            firsts, retries = self._totals()
            balance = self.reserve + firsts * self.ratio - retries
            return BudgetSnapshot(max(balance, 0.0), firsts, retries, self.refused)

    def __repr__(self) -> str:
        return (
            f"RetryBudget(ttl={self.ttl!r}, min_retries_per_second="
            f"{self.min_retries_per_second!r}, ratio={self.ratio!r})"
        )


class RetryThrottle:
    """gRPC's retry throttling: retry only while the token count is above half its max.

    Args:
        max_tokens: The token count's ceiling and starting value (> 0; gRPC: 1..1000).
        token_ratio: Tokens a success gives back (> 0, default 0.1; gRPC allows more
            than 1).
    """

    __slots__ = (
        "__weakref__",
        "_firsts",
        "_lock",
        "_retries",
        "max_tokens",
        "refused",
        "token_ratio",
        "tokens",
    )

    def __init__(self, *, max_tokens: float = 10.0, token_ratio: float = 0.1) -> None:
        self.max_tokens = check_number("max_tokens", max_tokens, minimum=0.0, inclusive=False)
        self.token_ratio = check_number("token_ratio", token_ratio, minimum=0.0, inclusive=False)
        self.tokens = self.max_tokens
        self._lock = new_lock(self)
        self.refused = 0
        self._firsts = 0
        self._retries = 0

    def on_first_attempt(self) -> None:
        """Count one first attempt (only for the snapshot)."""
        with self._lock:
            self._firsts += 1

    def on_outcome(self, failed: bool) -> None:
        """A failure costs a token; a success gives back ``token_ratio``."""
        with self._lock:
            if failed:
                self.tokens = max(self.tokens - 1.0, 0.0)
            else:
                self.tokens = min(self.tokens + self.token_ratio, self.max_tokens)

    def try_retry(self) -> bool:
        """Allow a retry while tokens are above half of ``max_tokens``."""
        with self._lock:
            if self.tokens > self.max_tokens / 2:
                self._retries += 1
                return True
            self.refused += 1
            return False

    def snapshot(self) -> BudgetSnapshot:
        """The token count above the threshold, and the counts so far."""
        with self._lock:
            balance = max(self.tokens - self.max_tokens / 2, 0.0)
            return BudgetSnapshot(balance, self._firsts, self._retries, self.refused)

    def __repr__(self) -> str:
        return f"RetryThrottle(max_tokens={self.max_tokens!r}, token_ratio={self.token_ratio!r})"
