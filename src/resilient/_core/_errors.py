"""Every exception the library raises on purpose, in one place.

The tree::

    ResilienceError
    ├── RejectedError                 the call was not started
    │   ├── CircuitOpenError          .retry_after
    │   ├── BulkheadFullError
    │   ├── RateLimitedError          .retry_after
    │   └── WorkersExhaustedError     a sync Timeout has no free worker thread
    └── TimeoutExceededError          also a builtin TimeoutError

    MisuseError                       a TypeError: the library was used the wrong way

``MisuseError`` stands apart from the tree on purpose: it reports a bug in the calling
code (a sync caller for an async function, a policy decorating a class), which
``except ResilienceError`` handlers written for outages should not swallow.

Each rejection raises a *fresh* instance, so tracebacks never grow across rejections
(purgatory re-raises one instance and its traceback grows without bound).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = [
    "BulkheadFullError",
    "CircuitOpenError",
    "MisuseError",
    "RateLimitedError",
    "RejectedError",
    "ResilienceError",
    "TimeoutExceededError",
    "WorkersExhaustedError",
]


class ResilienceError(Exception):
    """Base class of every error raised by a ``resilient`` policy."""


class RejectedError(ResilienceError):
    """The policy refused the call: the protected function was not started.

    Attributes:
        policy: The name of the policy that refused the call (``None`` if unnamed).
    """

    def __init__(self, message: str, *, policy: str | None = None) -> None:
        super().__init__(message)
        self.policy = policy


class CircuitOpenError(RejectedError):
    """A circuit breaker is open (or forced open, or out of half-open trials).

    Attributes:
        retry_after: Seconds until the breaker admits trial calls again, or ``None``
            where that is unknown (``FORCED_OPEN``, or ``HALF_OPEN`` with every trial
            already taken).
        state: The breaker's state when it refused the call.
    """

    # Raised on every call while a dependency is down, so it is built cheaply: slots
    # instead of an instance dict (allocating that dict was half the cost), no
    # __init__ chain, and the message formatted only if someone reads it.
    __slots__ = ("_message", "policy", "retry_after", "state")

    def __init__(
        self,
        message: str | None = None,
        *,
        policy: str | None = None,
        retry_after: float | None = None,
        state: object = None,
    ) -> None:
        if message is not None:
            Exception.__init__(self, message)
        self.policy = policy
        self.retry_after = retry_after
        self.state = state
        self._message = message

    @classmethod
    def _quick(cls, policy: str | None, retry_after: float | None, state: object) -> Self:
        """The library's own constructor: no ``__init__`` call (half the cost)."""
        error = cls.__new__(cls)
        error.policy = policy
        error.retry_after = retry_after
        error.state = state
        error._message = None
        return error

    def __reduce__(self) -> tuple[Any, ...]:
        # Slots are not in BaseException's default pickle state: rebuild explicitly.
        return (
            _rebuild_open_error,
            (type(self), self._message, self.policy, self.retry_after, self.state),
        )

    def __str__(self) -> str:
        if self._message is not None:
            return self._message
        who = f"circuit breaker {self.policy!r}" if self.policy is not None else "circuit breaker"
        state = getattr(self.state, "value", self.state)
        if state == "open" and self.retry_after is not None:
            return f"{who} is open; trial calls are allowed in {self.retry_after:.3f}s"
        if state == "half_open":
            return f"{who} is half-open and every trial call is taken"
        return f"{who} is {str(state).replace('_', ' ')}"

    def __repr__(self) -> str:
        return f"CircuitOpenError({str(self)!r})"


def _rebuild_open_error(
    cls: type[CircuitOpenError],
    message: str | None,
    policy: str | None,
    retry_after: float | None,
    state: object,
) -> CircuitOpenError:
    return cls(message, policy=policy, retry_after=retry_after, state=state)


class BulkheadFullError(RejectedError):
    """A bulkhead had no free slot within its ``max_wait``."""


class RateLimitedError(RejectedError):
    """A rate limiter refused the call.

    Attributes:
        retry_after: Seconds until a call would be admitted.
    """

    def __init__(self, message: str, *, policy: str | None = None, retry_after: float) -> None:
        super().__init__(message, policy=policy)
        self.retry_after = retry_after


class WorkersExhaustedError(RejectedError):
    """Every worker thread of a sync [`Timeout`][resilient.Timeout] is busy.

    Raised at once, never after queueing: a queued call would spend its own timeout
    waiting for a worker held by calls that already overran theirs.
    """


class TimeoutExceededError(ResilienceError, TimeoutError):
    """A call ran past its deadline.

    It is also a builtin ``TimeoutError``, so ``except TimeoutError`` catches it.

    Attributes:
        seconds: The timeout that expired (the tighter of the policy's own and the
            deadline it inherited).
    """

    def __init__(self, message: str, *, policy: str | None = None, seconds: float = 0.0) -> None:
        super().__init__(message)
        self.policy = policy
        self.seconds = seconds


class MisuseError(TypeError):
    """The library was used in a way that cannot work; the message says what to do instead.

    Raised for mistakes a type checker may not catch: ``policy.call()`` given an async
    function (use ``await policy.call_async()``), ``call_async()`` given a sync one (use
    ``call()``), a generator function or a class where a function is expected, a
    function decorated as sync that returns a coroutine, or a policy class used as a
    decorator without parentheses. It is a ``TypeError``, not a
    [`ResilienceError`][resilient.ResilienceError]: it reports a bug in the calling
    code, not an outage, so no policy retries it, counts it as a failure or answers it
    with a fallback.
    """
