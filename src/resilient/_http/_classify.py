"""Which responses are failures, and how long a ``Retry-After`` asks to wait.

A failing response is carried through the policies as an :class:`HTTPStatusFailure`
raised inside the guarded call: a breaker records it, a retry tries again (waiting what
its ``Retry-After`` asks, see ``requested_wait``), a fallback may replace it. The
transport catches it outside and hands the response itself to the caller, so the
caller sees the server's last answer, never our exception.
"""

from __future__ import annotations

import email.utils
from collections.abc import Callable, Collection
from typing import Any, Final

from resilient._core._validate import check_arity

__all__ = [
    "HTTPStatusFailure",
    "compile_failure_statuses",
    "is_failure_status",
    "parse_retry_after",
]

TOO_MANY_REQUESTS: Final = 429
SERVER_ERROR: Final = 500
_SECONDS_DIGITS: Final = 12  # beyond that, no wait we would honour anyway


class HTTPStatusFailure(Exception):  # noqa: N818 -- an outcome carried through the policies, not an error the caller gets
    """A response whose status counts as a failure (by default 5xx and 429).

    Raised inside the guarded call, so that a [`CircuitBreaker`][resilient.CircuitBreaker]
    records it and a [`Retry`][resilient.Retry] or [`Fallback`][resilient.Fallback] acts
    on it (``Retry(on=HTTPStatusFailure)``). The transport catches it outside the
    policies: when retries run out, the caller gets the last response itself, as the
    server sent it. It reaches the caller only from a policy of its own (a fallback
    that re-raises, a user's ``on`` predicate that fails).

    Attributes:
        response: The failed response (an ``httpx.Response`` or ``requests.Response``).
        status: Its HTTP status.
        retry_after: Seconds its ``Retry-After`` header asks to wait (capped by the
            transport's ``max_retry_after``), or ``None``.
    """

    def __init__(self, response: Any, status: int, retry_after: float | None) -> None:
        super().__init__(f"the server answered with status {status}")
        self.response = response
        self.status = status
        self.retry_after = retry_after
        self.exchange: object = None  # the request it belongs to, set by the exchange

    @property
    def requested_wait(self) -> float | None:
        """The wait before the next attempt the server asked for: a retry honours it."""
        return self.retry_after


def is_failure_status(status: int) -> bool:
    """The default classification: 5xx and 429 are failures; every other status is not."""
    return status >= SERVER_ERROR or status == TOO_MANY_REQUESTS


def compile_failure_statuses(value: object) -> Callable[[int], bool]:
    """``failure_statuses=`` as a predicate: ``None``, a collection of ints, or a callable."""
    if value is None:
        return is_failure_status
    if callable(value):
        return check_arity("failure_statuses", value, 1, "a predicate status -> bool")
    if isinstance(value, Collection) and not isinstance(value, (str, bytes)):
        statuses = frozenset(value)
        if all(isinstance(s, int) and not isinstance(s, bool) for s in statuses) and all(
            100 <= s <= 599  # noqa: PLR2004 -- the range of HTTP statuses
            for s in statuses
        ):
            return statuses.__contains__
    raise TypeError(
        "failure_statuses must be None (5xx and 429), a collection of HTTP statuses "
        f"(ints in 100..599) or a predicate status -> bool, not {value!r}"
    )


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` value, or ``None`` if absent or invalid.

    Both forms of RFC 9110: delay-seconds (``"120"``) and an HTTP-date (``"Wed, 21 Oct
    2015 07:28:00 GMT"``), the latter measured from ``now`` (wall-clock seconds since
    the epoch; a date in the past gives 0). Never raises: a server's bad header is
    ignored, never turned into the caller's error.
    """
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text) if len(text) <= _SECONDS_DIGITS else None
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # "-0000": RFC 5322's unknown zone; HTTP-dates are GMT
        return None
    return max(0.0, when.timestamp() - now)
