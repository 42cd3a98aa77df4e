"""The user's policies, adapted to guard an HTTP request rather than a function call.

Two policies need to know about the request, and are swapped for request-aware
versions that share their core (configuration, counts, events):

* a :class:`~resilient.Retry` may only try again while ``Exchange.repeatable()`` holds
  (nothing of the response has gone out, and the request body can be replayed);
  otherwise the outcome it has stands, at once, with no wait;
* a :class:`~resilient.Timeout` covers, by default, only the time to the response
  start: its armed deadline is registered with the request, whose ``send`` stops it
  when the app starts its response, so a long streamed body is not cut off;
* a :class:`~resilient.KeyedRateLimiter` calls its ``key`` with the request's ASGI
  scope (as the middleware's own ``key`` is), never with the middleware's internals.

Everything else runs as it would around any coroutine function.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from resilient._policies._fallback import Fallback
from resilient._policies._hedge import Hedge
from resilient._policies._keyed_ratelimit import KeyedRateLimiter
from resilient._policies._pipeline import Step
from resilient._policies._policy import Policy
from resilient._policies._retry import Retry
from resilient._policies._timeout import Armed, Timeout, _TimeoutStep
from resilient.asgi._exchange import START_TIMERS, Exchange

__all__ = ["Shape", "adapt"]


class _StartTimeoutStep(_TimeoutStep):
    """The timeout's async step, registering each deadline it arms with the request.

    Registered inline (``START_TIMERS``, the list of the request in flight), not
    through ``Timeout._reporting_step``'s callback: two calls fewer per request.
    """

    __slots__ = ()

    def enter(self) -> Armed:
        token = _TimeoutStep.enter(self)
        timers = START_TIMERS.get()
        if timers is not None:
            timers.append(token)
        return token


class _StartTimeout(Policy):
    """A :class:`~resilient.Timeout` that ends at the response start (see module doc).

    The timeout's own async step (sharing its core: counts, events), reporting each
    deadline it arms to the request (``START_TIMERS``), whose ``send`` calls the
    deadline's ``stop()`` from whichever task sends the response start.
    """

    __slots__ = ("_step",)
    kind = Timeout.kind

    def __init__(self, timeout: Timeout) -> None:
        self._step = _StartTimeoutStep(timeout._core)

    def _async_step(self) -> Step:
        return self._step


class _RequestRetry(Policy):
    """A :class:`~resilient.Retry` that tries again only while the request allows it.

    ``Retry``'s own async adapter, told to check ``exchange.repeatable()`` (the guarded
    function's first argument) before each retry (``Retry._repeating_while``).
    """

    __slots__ = ("_wrap",)
    kind = Retry.kind

    def __init__(self, retry: Retry) -> None:
        self._wrap = retry._repeating_while(_repeatable)

    def _async_wrap(self, fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        return self._wrap(fn)


class _RequestKeyedRateLimiter(Policy):
    """A :class:`~resilient.KeyedRateLimiter` keyed by ``key(scope)``: a stable argument.

    The guarded call's arguments are the middleware's own (the request's ``Exchange``
    first); a user's key must not depend on them. The ASGI scope is the one argument
    documented for keys, here as for the middleware's ``key=``.
    """

    __slots__ = ("_limiter",)
    kind = KeyedRateLimiter.kind

    def __init__(self, limiter: KeyedRateLimiter) -> None:
        self._limiter = limiter

    def _async_wrap(self, fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        key, acquire = self._limiter._key, self._limiter.acquire_async

        async def guarded(exchange: Exchange, scope: Any, *args: Any) -> Any:
            await acquire(key(scope))
            return await fn(exchange, scope, *args)

        return guarded


def _repeatable(args: tuple[Any, ...]) -> bool:
    exchange: Exchange = args[0]
    return exchange.repeatable()


class _Started(BaseException):
    """Carries an error raised after the response started past a ``Fallback``.

    A BaseException, so that the fallback (which handles Exceptions) lets it through;
    unwrapped right outside it. Policies inside the fallback saw the error itself.
    """

    def __init__(self, error: Exception) -> None:
        super().__init__(error)
        self.error = error


class _RequestFallback(Policy):
    """A [`Fallback`][resilient.Fallback] that stands aside once the response started.

    Its answer is a new response, and a response that started cannot be replaced: the
    error must reach the server, which aborts the connection, rather than be handled
    into a truncated body that looks complete.
    """

    __slots__ = ("_fallback",)
    kind = Fallback.kind

    def __init__(self, fallback: Fallback[Any]) -> None:
        if fallback.with_args:
            # The guarded call's arguments are the middleware's internals, not the user's.
            raise TypeError(
                f"{fallback!r} has with_args=True, but a request has no call arguments to "
                "pass on; use a handler taking only the exception to guard requests"
            )
        self._fallback = fallback

    def _async_wrap(self, fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def unhandled_once_started(exchange: Exchange, *args: Any) -> Any:
            try:
                return await fn(exchange, *args)
            except Exception as exc:
                if exchange.started:
                    raise _Started(exc) from None
                raise

        handled = self._fallback._async_guard(unhandled_once_started)

        async def guarded(exchange: Exchange, *args: Any) -> Any:
            try:
                return await handled(exchange, *args)
            except _Started as started:
                error = started.error
                try:
                    raise error from None
                finally:
                    del error, started  # no frame <-> traceback cycle

        return guarded


class Shape:
    """What a chain of adapted policies needs from the request.

    Attributes:
        policies: The adapted policies, outermost first.
        retries: A retry is in the chain: record the body, copy the scope.
        replaces: A retry or fallback may replace a failed response: hold it back.
        start_timeouts: A timeout ends at the response start: track its scope.
    """

    __slots__ = ("policies", "replaces", "retries", "start_timeouts")

    def __init__(self, policies: tuple[Policy, ...], timeout_body: bool) -> None:
        adapted: list[Policy] = []
        self.retries = self.replaces = self.start_timeouts = False
        for policy in policies:
            if isinstance(policy, Retry):
                adapted.append(_RequestRetry(policy))
                self.retries = self.replaces = True
            elif isinstance(policy, Timeout) and not timeout_body:
                adapted.append(_StartTimeout(policy))
                self.start_timeouts = True
            elif isinstance(policy, Fallback):
                adapted.append(_RequestFallback(policy))
                self.replaces = True
            elif isinstance(policy, KeyedRateLimiter):
                adapted.append(_RequestKeyedRateLimiter(policy))
            elif isinstance(policy, Hedge):
                # Two runs of one request would share its receive and send.
                raise TypeError(
                    f"{policy!r} cannot guard requests: two attempts would both read the "
                    "request and write the response; hedge the outbound calls instead"
                )
            else:
                adapted.append(policy)
        self.policies = tuple(adapted)

    def merge(self, inner: Shape | None) -> tuple[bool, bool, bool]:
        """The needs of this chain and ``inner`` together (retries, replaces, timeouts)."""
        if inner is None:
            return self.retries, self.replaces, self.start_timeouts
        return (
            self.retries or inner.retries,
            self.replaces or inner.replaces,
            self.start_timeouts or inner.start_timeouts,
        )


def adapt(policy: Policy, timeout_body: bool) -> Shape:
    """Flatten ``policy`` and adapt it to guard requests."""
    if not isinstance(policy, Policy):
        raise TypeError(
            f"expected a policy (CircuitBreaker, Bulkhead, compose(...), ...), "
            f"not {type(policy).__name__}"
        )
    return Shape(policy._flatten(), timeout_body)
