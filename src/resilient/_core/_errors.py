"""Every exception the library raises on purpose, in one place.

The tree::

    ResilienceError
    ├── RejectedError                 the call was not started
    │   ├── CircuitOpenError          .retry_after
    │   ├── BulkheadFullError
    │   ├── RateLimitedError          .retry_after
    │   ├── WorkersExhaustedError     a sync Timeout has no free worker thread
    │   └── ThrottledError            .probability (an AdaptiveThrottle shed the call)
    └── TimeoutExceededError          also a builtin TimeoutError

    MisuseError                       a TypeError: the library was used the wrong way

``MisuseError`` stands apart from the tree on purpose: it reports a bug in the calling
code (a sync caller for an async function, a policy decorating a class), which
``except ResilienceError`` handlers written for outages should not swallow.

Each rejection raises a *fresh* instance, so tracebacks never grow across rejections
(purgatory re-raises one instance and its traceback grows without bound).

A rejection is what every caller gets while a dependency is down or a limit is reached,
so the library builds it cheaply: ``__new__`` and slot assignments instead of the
``__init__`` chain, and the message left unformatted (formatting a float alone costs
more than raising) until someone reads it through ``str()``, ``repr()``, ``args`` or
pickling. It then reads exactly as if it had been formatted at the raise. Errors made by
hand (``RateLimitedError("...", retry_after=1.0)``) are ordinary exceptions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final, Protocol

if TYPE_CHECKING:
    from collections.abc import Hashable

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
    "bulkhead_full",
    "circuit_open",
    "new_error",
    "rate_limited",
]


new_error: Final = BaseException.__new__
"""Makes an exception without calling its ``__init__`` (see :func:`rate_limited`)."""


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

    # Raised on every call while a dependency is down, so it is built cheaply
    # (circuit_open()): slots instead of an instance dict (allocating that dict was half
    # the cost), no __init__ chain, and the message formatted only if someone reads it.
    __slots__ = ("policy", "retry_after", "state")
    _message: str | None = None  # a message given to __init__ (in the instance dict)

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
        """The library's own constructor: no ``__init__`` call (see :func:`circuit_open`)."""
        return circuit_open(policy, retry_after, state, cls)  # type: ignore[return-value]

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


def circuit_open(
    policy: str | None,
    retry_after: float | None,
    state: object,
    cls: type[CircuitOpenError] = CircuitOpenError,
) -> CircuitOpenError:
    """The library's own ``CircuitOpenError``: no ``__init__``, its message made when read."""
    error: CircuitOpenError = new_error(cls)
    error.policy = policy
    error.retry_after = retry_after
    error.state = state
    return error


def _rebuild_open_error(
    cls: type[CircuitOpenError],
    message: str | None,
    policy: str | None,
    retry_after: float | None,
    state: object,
) -> CircuitOpenError:
    return cls(message, policy=policy, retry_after=retry_after, state=state)


# -- rejections built by the library, formatted when first read ----------------------

_ARGS: Final[Any] = BaseException.__dict__["args"]
"""``BaseException.args`` itself: the C field that ``str()``, ``repr()`` and pickling read."""


class _Refuser(Protocol):
    """The core that refused a call, kept by its rejection until the message is made."""

    def refusal_text(self, error: Any, key: Any) -> str:
        """The message of ``error`` (a refusal of ``key``, or ``None``)."""
        ...


def _settle(error: Any) -> None:
    """Make a lazily built rejection's message, once, into its ``args``."""
    about = getattr(error, "_about", None)
    if about is not None:
        _ARGS.__set__(error, (about[0].refusal_text(error, about[1]),))
        error._about = None  # the refusing core is no longer needed


def _get_args(self: Any) -> tuple[Any, ...]:
    _settle(self)
    return _ARGS.__get__(self)  # type: ignore[no-any-return]


def _set_args(self: Any, value: Any) -> None:
    _settle(self)  # retry_after is computed from what _about holds: keep it
    _ARGS.__set__(self, value)


def _str(self: Any) -> str:
    _settle(self)
    return BaseException.__str__(self)


def _repr(self: Any) -> str:
    _settle(self)
    return BaseException.__repr__(self)


def _reduce(self: Any) -> tuple[Any, ...]:
    # The default (``cls(*args)``, then the instance dict) would call __init__ without
    # its keyword-only arguments, and knows nothing of slots.
    _settle(self)
    state = dict(getattr(self, "__dict__", None) or {})
    for name in ("policy", "retry_after"):
        if hasattr(self, name):
            state[name] = getattr(self, name)
    return _rebuild, (type(self), _ARGS.__get__(self), state)


def _rebuild(cls: type[RejectedError], args: tuple[Any, ...], state: dict[str, Any]) -> Any:
    error = cls.__new__(cls, *args)
    error._about = None  # type: ignore[attr-defined]
    for name, value in state.items():
        setattr(error, name, value)
    return error


_LAZY_ARGS: Final = property(_get_args, _set_args, doc="The exception's arguments.")


class BulkheadFullError(RejectedError):
    """A bulkhead had no free slot within its ``max_wait``."""

    # Built by the library (bulkhead_full()), ``_about`` is (the bulkhead's core, None)
    # until the message is first read; ``None`` after, and for errors made by __init__.
    __slots__ = ("_about", "policy")

    def __init__(self, message: str, *, policy: str | None = None) -> None:
        super().__init__(message, policy=policy)
        self._about: tuple[_Refuser, None] | None = None

    if not TYPE_CHECKING:  # to type checkers, `args` stays BaseException's attribute
        args = _LAZY_ARGS
    __str__ = _str
    __repr__ = _repr
    __reduce__ = _reduce


class RateLimitedError(RejectedError):
    """A rate limiter refused the call.

    Attributes:
        retry_after: Seconds until a call would be admitted.
    """

    # As BulkheadFullError's, with (the limiter's core, the refused key or None) in
    # ``_about``; ``_delay`` is the wait in nanoseconds that ``retry_after`` is computed
    # from when first read, if the limiter left it to be (``_retry_after`` unset).
    __slots__ = ("_about", "_delay", "_retry_after", "policy")

    def __init__(self, message: str, *, policy: str | None = None, retry_after: float) -> None:
        super().__init__(message, policy=policy)
        self._retry_after = retry_after
        self._about: tuple[_Refuser, Hashable | None] | None = None
        self._delay = 0

    @property
    def retry_after(self) -> float:
        """Seconds until a call would be admitted."""
        try:
            return self._retry_after
        except AttributeError:  # left by the limiter (see rate_limited)
            refuser: Any = self._about[0]  # type: ignore[index]  # a GcraCore
            seconds: float = refuser.retry_after(self._delay, 0, None)
            self._retry_after = seconds
            return seconds

    @retry_after.setter
    def retry_after(self, value: float) -> None:
        self._retry_after = value

    if not TYPE_CHECKING:
        args = _LAZY_ARGS
    __str__ = _str
    __repr__ = _repr
    __reduce__ = _reduce


def bulkhead_full(
    policy: str | None,
    about: tuple[_Refuser, None],
    cls: type[BulkheadFullError] = BulkheadFullError,
) -> BulkheadFullError:
    """The library's own ``BulkheadFullError``: no ``__init__``, its message made when read.

    ``about`` is ``(core, None)``; ``core.refusal_text(error, None)`` makes the message.
    """
    error: BulkheadFullError = new_error(cls)
    error.policy = policy
    error._about = about
    return error


def rate_limited(
    policy: str | None,
    about: tuple[_Refuser, Hashable | None],
    delay: int,
    cls: type[RateLimitedError] = RateLimitedError,
) -> RateLimitedError:
    """The library's own ``RateLimitedError``, built as :func:`bulkhead_full` builds its.

    ``about`` is ``(core, key)``; ``retry_after`` is ``core.retry_after(delay, 0, None)``
    (``delay`` nanoseconds, rounded up as the integer-nanosecond clock needs), computed
    when first read, unless the limiter sets it.
    """
    error: RateLimitedError = new_error(cls)
    error.policy = policy
    error._about = about
    error._delay = delay
    return error


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


# -- adaptive throttling (issue 17) ---------------------------------------------------


class ThrottledError(RejectedError):
    """An [`AdaptiveThrottle`][resilient.AdaptiveThrottle] shed the call locally.

    The backend has been refusing a growing share of recent calls, so the client drops
    this one itself rather than send it a request it would likely refuse (Google SRE,
    "Handling Overload"). A ``RejectedError``: the call was not started.

    Attributes:
        probability: The rejection probability the call was drawn against, in [0, 1).
    """

    # Raised for most calls while a backend is overloaded: built as BulkheadFullError
    # is (see throttled()), its message made when first read.
    __slots__ = ("_about", "policy", "probability")

    def __init__(self, message: str, *, policy: str | None = None, probability: float) -> None:
        super().__init__(message, policy=policy)
        self.probability = probability
        self._about: tuple[_Refuser, None] | None = None

    if not TYPE_CHECKING:
        args = _LAZY_ARGS
    __str__ = _str
    __repr__ = _repr

    def __reduce__(self) -> tuple[Any, ...]:
        rebuild, (cls, args, state) = _reduce(self)
        state["probability"] = self.probability  # a slot _reduce does not know
        return rebuild, (cls, args, state)


def throttled(
    policy: str | None, about: tuple[_Refuser, None], probability: float
) -> ThrottledError:
    """The library's own ``ThrottledError``, built as :func:`bulkhead_full` builds its."""
    error: ThrottledError = new_error(ThrottledError)
    error.policy = policy
    error._about = about
    error.probability = probability
    return error


__all__ += ["ThrottledError", "throttled"]
