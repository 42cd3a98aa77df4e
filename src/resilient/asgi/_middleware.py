"""The ASGI middleware: the library's policies around every HTTP request of an app.

For each HTTP request the middleware picks the policies that guard it (the first
matching `Route`, else the default policy, and the
request's per-key policy outside them), sets the deadline the caller sent in a header,
and runs the app as the guarded call through an `Exchange`
that turns the response status into an outcome. What the policies raise is answered
as problem details (``_problem``). Lifespan and websocket scopes go straight to
the app. Guards are built once, at construction (per key: at the key's first request).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Hashable, Iterable, Mapping
from typing import Any, Final, cast

from resilient._core._clock import Clock
from resilient._core._errors import RejectedError, TimeoutExceededError
from resilient._core._validate import (
    MAX_BUFFER,
    MAX_KEYS,
    Duration,
    check_arity,
    check_duration,
    check_int,
    check_names,
)
from resilient._policies._policy import Policy, build_async
from resilient._waiting._clock import resolve_clock
from resilient._waiting._deadline import DEADLINE
from resilient.asgi._deadline import GRPC_TIMEOUT, REQUEST_TIMEOUT, read_deadline
from resilient.asgi._exchange import START_TIMERS, Exchange, FailureStatusError, Replay
from resilient.asgi._policies import Shape, adapt
from resilient.asgi._problem import send_problem
from resilient.asgi._routes import KeyedGuards, Route
from resilient.asgi._types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["ResilienceMiddleware", "is_server_error"]

logger = logging.getLogger("resilient.asgi")

_SENT: Final[Any] = object()  # an attempt's result: the app answered by itself


def is_server_error(status: int) -> bool:
    """The default failure classification: a 5xx status is a failure, anything else not."""
    return status >= 500  # noqa: PLR2004 -- the HTTP status class, not a magic number


class _Watch:
    """The ``send`` of a request no policy guards: notes that the response started."""

    __slots__ = ("_send", "started")

    def __init__(self, send: Send) -> None:
        self._send = send
        self.started = False

    def send(self, message: Message) -> Awaitable[None]:
        # Not a coroutine: the server's own awaitable is handed back, which saves a
        # frame per message on the path that is meant to cost almost nothing.
        if message["type"] == "http.response.start":
            self.started = True
        return self._send(message)


def _header_names(names: tuple[str, ...]) -> dict[bytes, bool]:
    """Deadline header names, lower-cased as ASGI servers send them, and whether gRPC's."""
    found: dict[bytes, bool] = {}
    for name in names:
        try:
            key = name.lower().encode("latin-1")
        except UnicodeEncodeError:
            raise ValueError(
                f"deadline_headers must hold latin-1 header names, not {name!r}"
            ) from None
        found[key] = name.lower() == GRPC_TIMEOUT
    return found


def _check_routes(routes: object) -> list[Route]:
    """``routes`` as a list of ``Route``: from a mapping of pattern to policy, or Routes."""
    if routes is None:
        return []
    if isinstance(routes, Mapping):
        return [Route(pattern, p) for pattern, p in routes.items()]
    expected = "a mapping of path pattern to policy, or a collection of Route"
    if isinstance(routes, (str, bytes)):
        raise TypeError(f"routes must be {expected}, not one {type(routes).__name__}")
    try:
        items: list[object] = list(cast("Any", routes))
    except TypeError:
        raise TypeError(f"routes must be {expected}, not {type(routes).__name__}") from None
    for item in items:
        if not isinstance(item, Route):
            raise TypeError(f"routes must be {expected}; it holds a {type(item).__name__}")
    return cast("list[Route]", items)


class _Plan:
    """A guard built from one policy, and what it needs from the request."""

    __slots__ = ("guard", "needs", "shape")

    def __init__(self, guard: Callable[..., Awaitable[Any]], shape: Shape) -> None:
        self.guard = guard
        self.shape = shape
        self.needs = shape.merge(None)


async def _through(exchange: Exchange, scope: Scope, receive: Receive, inner: Any) -> Any:
    """The call a per-key guard protects: the rest of the chain (``inner``)."""
    return await inner(exchange, scope, receive)


class ResilienceMiddleware:
    """Guard every HTTP request of an ASGI app with resilience policies.

    Any framework (Starlette, FastAPI, Litestar, Quart) or raw ASGI::

        app = ResilienceMiddleware(app, compose(CircuitBreaker("api"), Bulkhead(100)))
        app.add_middleware(ResilienceMiddleware, policy=Bulkhead(100))  # Starlette

    Rejections and timeouts are answered as ``application/problem+json``: an open
    circuit and a full bulkhead with 503, a rate limit with 429 (both with
    ``Retry-After`` where known), a timeout with 504; so are those the app raises, on
    every request, guarded or not. By default a 5xx response of the
    app counts as a failure for breakers, retries and fallbacks (it is raised inside the
    guarded call as [`FailureStatusError`][resilient.asgi.FailureStatusError]) and a
    4xx does not. If the response had already started when an error hits, no second
    response is sent: the error propagates and the server aborts the connection.

    Args:
        app: The ASGI app to protect.
        policy: Guards every HTTP request that matches no route (``None``: none).
        routes: Routes by path pattern, first match wins: ``{"/search": p}`` or
            ``[Route("/orders", p, methods=["POST"]), Route("/health", None)]``. A
            matching route's policy replaces ``policy`` (``None`` exempts the request).
        key: A function of the ASGI scope giving the request's key (``client_ip``,
            ``header_key("x-api-key")``), or ``None`` for a request without one. A
            ``KeyedRateLimiter`` in any of the policies is also called with the scope.
        per_key: Builds the policy of a key at its first request (per-client rate
            limits and bulkheads); it guards the request outside the other policies.
        max_keys: The most per-key policies kept (least recently used dropped first).
        key_ttl: Seconds after which an idle key's policy is dropped.
        failure_status: A predicate over the response status: whether it is a failure
            (default: ``status >= 500``).
        timeout_body: ``False`` (default): a ``Timeout`` in the policies covers the time
            to the response start; ``True``: the whole response, body included.
        deadline_headers: Headers carrying the caller's deadline; ``grpc-timeout`` in
            gRPC's format (``100m``), any other in seconds. The tightest valid one sets
            the deadline of the request; invalid values are ignored.
        buffer_limit: Bytes of request body kept to replay on a retry, and of a failed
            response held back for a retry or fallback to replace (default 64 KiB).
        clock: The clock of the request deadline and of ``key_ttl`` (default: monotonic).
    """

    def __init__(
        self,
        app: ASGIApp,
        policy: Policy | None = None,
        *,
        routes: Mapping[str, Policy | None] | Iterable[Route] | None = None,
        key: Callable[[Scope], Hashable | None] | None = None,
        per_key: Callable[[Hashable], Policy] | None = None,
        max_keys: int = 10_000,
        key_ttl: Duration = 600.0,
        failure_status: Callable[[int], bool] = is_server_error,
        timeout_body: bool = False,
        deadline_headers: Iterable[str] = (REQUEST_TIMEOUT, GRPC_TIMEOUT),
        buffer_limit: int = 65_536,
        clock: Clock | None = None,
    ) -> None:
        if (key is None) != (per_key is None):
            raise ValueError("key and per_key go together: key picks the key, per_key builds")
        if key is not None:
            check_arity("key", key, 1, "a function of the ASGI scope (one argument) or None")
            if isinstance(per_key, Policy) or (
                isinstance(per_key, type) and not issubclass(per_key, Policy)
            ):
                raise TypeError(
                    "per_key must be a function of the key returning a policy "
                    f"(lambda key: Bulkhead(10)), not {per_key!r}"
                )
            check_arity("per_key", per_key, 1, "a function of the key (one argument) or None")
        check_arity("failure_status", failure_status, 1, "a predicate over statuses (one argument)")
        if isinstance(app, type) and not hasattr(app, "__await__"):
            # A class called with (scope, receive, send) builds an object, not a response.
            raise TypeError(f"app must be an ASGI 3 app, an async callable, not the class {app!r}")
        check_arity("app", app, 3, "an ASGI app: an async callable of (scope, receive, send)")
        if not isinstance(timeout_body, bool):
            raise TypeError(
                f"timeout_body must be True or False, not {type(timeout_body).__name__}"
            )
        headers = check_names("deadline_headers", deadline_headers, "header names")
        self.app = app
        # The default predicate is inlined by the exchange (``None``): a call per request.
        self._failure = None if failure_status is is_server_error else failure_status
        self._timeout_body = timeout_body
        self._limit = check_int("buffer_limit", buffer_limit, minimum=0, maximum=MAX_BUFFER)
        self._clock = resolve_clock(clock)
        self._deadline_names = _header_names(headers)
        max_keys = check_int("max_keys", max_keys, maximum=MAX_KEYS)
        # 0 would evict a key's entry as it is created (and crash the eviction loop).
        ttl = check_duration("key_ttl", key_ttl, allow_zero=False)
        if policy is not None and not isinstance(policy, Policy):
            raise TypeError(f"policy must be a policy or None, not {type(policy).__name__}")
        routes = _check_routes(routes)
        self._attempt = self._make_attempt(app)
        self._default = None if policy is None else self._plan(policy)
        self._routes = [
            (
                route.methods,
                route.pattern,
                route._regex,
                None if route.policy is None else self._plan(route.policy),
            )
            for route in routes
        ]
        self._key = key
        self._per_key = per_key
        self._keyed = (
            None
            if per_key is None
            else KeyedGuards(
                self._build_key,
                max_keys,
                ttl,
                self._clock,
            )
        )

    @staticmethod
    def _make_attempt(app: ASGIApp) -> Callable[..., Awaitable[Any]]:
        async def attempt(exchange: Exchange, scope: Scope, receive: Receive) -> Any:
            if exchange.attempts:
                scope = exchange.retry_scope()
            exchange.attempts += 1
            replay = exchange.replay
            await app(scope, receive if replay is None else replay.receive, exchange.send)
            if exchange.failed:
                raise FailureStatusError(exchange.status)
            return _SENT

        return attempt

    def _plan(self, policy: Policy) -> _Plan:
        shape = adapt(policy, self._timeout_body)
        return _Plan(build_async(shape.policies, self._attempt), shape)

    def _build_key(self, key: Hashable) -> tuple[Any, Shape]:
        assert self._per_key is not None  # noqa: S101 -- only built with per_key
        shape = adapt(self._per_key(key), self._timeout_body)
        return build_async(shape.policies, _through), shape

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:  # noqa: PLR0915 -- one frame per request, on purpose
        """Handle one ASGI connection: guard HTTP requests, pass anything else through."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # One frame for the whole request, with the routes matched inline: this is the
        # per-request overhead the benchmark measures.
        plan = self._default
        if self._routes:
            method, path = scope["method"], scope["path"]
            for methods, literal, regex, route_plan in self._routes:
                if (methods is None or method in methods) and (
                    path == literal if regex is None else regex.fullmatch(path) is not None
                ):
                    plan = route_plan
                    break
        keyed = self._keyed
        entry = None
        if keyed is not None:
            key = self._key(scope)  # type: ignore[misc]
            if key is not None:
                entry = keyed.acquire(key)
        token = timers_token = None
        try:
            names = self._deadline_names
            if names:
                # Scanned inline: most requests carry no deadline, and a call per
                # request to find that out costs more than the loop.
                headers = scope.get("headers", ())
                for name, _ in headers:
                    if name in names:
                        token = self._set_deadline(headers)
                        break
            if entry is None:
                if plan is None:
                    # No policy, but the app's own policy errors get the same answers:
                    # one rule for every request.
                    watch = _Watch(send)
                    try:
                        await self.app(scope, receive, watch.send)
                    except (RejectedError, TimeoutExceededError) as exc:
                        if watch.started:
                            raise  # a second response start is not allowed
                        await send_problem(send, exc, scope.get("method") == "HEAD")
                    return
                retries, replaces, start_timeouts = plan.needs
            else:
                retries, replaces, start_timeouts = entry.shape.merge(
                    None if plan is None else plan.shape
                )
            exchange = Exchange(
                send, dict(scope) if retries else scope, self._failure, replaces, self._limit
            )
            if retries:
                exchange.replay = Replay(receive, self._limit)
            if start_timeouts:
                exchange.timers = []
                exchange.outer_deadline = DEADLINE.get()
                timers_token = START_TIMERS.set(exchange.timers)
            try:
                if entry is None:
                    result = await plan.guard(exchange, scope, receive)  # type: ignore[union-attr]
                else:
                    inner = self._attempt if plan is None else plan.guard
                    result = await entry.guard(exchange, scope, receive, inner)
            except FailureStatusError:
                await exchange.flush()  # the app's own response stands
                return
            except (RejectedError, TimeoutExceededError) as exc:
                if exchange.started:
                    raise  # a second response start is not allowed: the server aborts
                exchange.discard()
                await send_problem(send, exc, scope.get("method") == "HEAD")
                return
            except Exception:
                await exchange.flush()  # the app's own error response, if it sent one
                raise
            if result is not _SENT:
                await self._fallback_response(result, exchange, scope, receive, send)
        finally:
            if timers_token is not None:
                START_TIMERS.reset(timers_token)
            if token is not None:
                DEADLINE.reset(token)
            if entry is not None:
                keyed.release(entry)  # type: ignore[union-attr]

    def _set_deadline(self, headers: Any) -> Any:
        seconds = read_deadline(headers, self._deadline_names)
        if seconds is None:
            return None
        outer = DEADLINE.get()
        if outer is not None and outer[0] - outer[1].monotonic() <= seconds:
            return None  # an enclosing deadline is tighter already
        clock = self._clock
        return DEADLINE.set((clock.monotonic() + seconds, clock))

    @staticmethod
    async def _fallback_response(
        result: Any, exchange: Exchange, scope: Scope, receive: Receive, send: Send
    ) -> None:
        """Answer with what a ``Fallback`` returned: an ASGI app, such as a Response."""
        if not callable(result):
            raise TypeError(
                "a Fallback guarding requests must return an ASGI app to answer with "
                f"(a Starlette or FastAPI Response, say), not {type(result).__name__}"
            )
        if exchange.started:
            logger.debug("a fallback came after the response started; unused")
            return
        exchange.discard()
        await result(scope, receive, send)
