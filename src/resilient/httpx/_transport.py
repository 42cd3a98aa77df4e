"""The httpx transport: one class for ``httpx.Client`` and ``httpx.AsyncClient``.

A thin shell over ``resilient._http``: it turns an ``httpx.Request`` into an
exchange, sends each attempt through the wrapped transport (``httpx.HTTPTransport`` or
``httpx.AsyncHTTPTransport`` by default, made on first use), and hands the response to
the exchange to judge. Every decision lives in ``resilient._http``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection

import httpx

from resilient._http._client import (
    DEFAULT_MAX_HOSTS,
    DEFAULT_MAX_RETRY_AFTER,
    REQUEST_TIMEOUT,
    Client,
)
from resilient._http._exchange import (
    Exchange,
    clamp,
    deadline,
    run_async,
    run_sync,
)
from resilient._http._exchange import aclose_quietly as _aclose_quietly
from resilient._http._exchange import close_quietly as _close_quietly
from resilient._http._hosts import HostMetrics
from resilient._policies._policy import Policy
from resilient._policies._registry import Registry

__all__ = ["ResilienceTransport"]

_TIMEOUTS = ("connect", "read", "write", "pool")


def authority(url: httpx.URL) -> str:
    """``host`` or ``host:port`` (a port only when not the scheme's default)."""
    port = url.port
    return url.host if port is None else f"{url.host}:{port}"


class ResilienceTransport(httpx.BaseTransport, httpx.AsyncBaseTransport):
    """An httpx transport that sends every request through resilience policies.

    One object serves ``httpx.Client(transport=...)`` and
    ``httpx.AsyncClient(transport=...)``: the sync methods guard with the policies' sync
    adapters, the async ones with their async adapters (asyncio or trio).

    Each attempt sends what is left of the caller's deadline
    ([`remaining()`][resilient.remaining]) in ``deadline_header`` and bounds the
    request's own timeouts by it. A response whose status is a failure (5xx and 429 by
    default) is raised inside the policies as an
    [`HTTPStatusFailure`][resilient.httpx.HTTPStatusFailure], so breakers count it and
    retries try again (after its ``Retry-After``, if it has one); when retries run out,
    the caller gets that last response, not an exception. A request whose body is a
    stream (a generator, a file being uploaded) is sent once: a retry never sends it
    again unless ``repeat_streams=True``.

    Args:
        policy: The policy guarding every request (a ``CircuitBreaker``, a
            ``compose(...)``, ...), or a per-host factory: a callable given the name
            ``"<name>:<host>"`` and returning a new policy for that host (name your
            breakers with it, so each host's shows in events and metrics).
        wrapped: The transport that sends (default ``httpx.HTTPTransport()`` for sync
            clients, ``httpx.AsyncHTTPTransport()`` for async ones).
        name: The transport's name, the prefix of each per-host policy's name.
        failure_statuses: Which statuses are failures: a collection of statuses, or a
            predicate ``status -> bool`` (default: 5xx and 429). Transport errors
            (connection refused, timeouts) are failures whatever this says.
        max_hosts: With a factory, the most hosts whose policies are kept; the least
            recently used is dropped beyond it (``metrics().evictions``).
        registry: Where per-host policies are registered while they live (default:
            [`default_registry`][resilient.default_registry]).
        deadline_header: The header that carries the remaining deadline
            (``"x-request-timeout"``, plain seconds; ``"grpc-timeout"`` for gRPC's
            format); ``None`` sends none.
        max_retry_after: The longest ``Retry-After`` honoured, in seconds; a longer one
            is cut to it. A retry's own maximum (``Retry.MAX_WAIT``) and the deadline
            also bound the wait: a wait that would pass the deadline is not made.
        repeat_streams: Allow a retry to send a streamed body again (only if the
            stream can be iterated again).
        wall: Wall-clock seconds since the epoch, for ``Retry-After`` dates (default
            ``time.time``; a test passes a fixed one).
    """

    def __init__(
        self,
        policy: Policy | Callable[[str], Policy],
        *,
        wrapped: httpx.BaseTransport | httpx.AsyncBaseTransport | None = None,
        name: str = "http",
        failure_statuses: Collection[int] | Callable[[int], bool] | None = None,
        max_hosts: int = DEFAULT_MAX_HOSTS,
        registry: Registry | None = None,
        deadline_header: str | None = REQUEST_TIMEOUT,
        max_retry_after: float = DEFAULT_MAX_RETRY_AFTER,
        repeat_streams: bool = False,
        wall: Callable[[], float] | None = None,
    ) -> None:
        if wrapped is not None and not isinstance(
            wrapped, (httpx.BaseTransport, httpx.AsyncBaseTransport)
        ):
            raise TypeError(
                f"wrapped must be an httpx transport or None, not {type(wrapped).__name__}"
            )
        self._client = Client(
            policy,
            name=name,
            failure_statuses=failure_statuses,
            max_hosts=max_hosts,
            registry=registry,
            deadline_header=deadline_header,
            max_retry_after=max_retry_after,
            repeat_streams=repeat_streams,
            wall=wall,
        )
        self._sync: httpx.BaseTransport | None = None
        self._async: httpx.AsyncBaseTransport | None = None
        if isinstance(wrapped, httpx.BaseTransport):
            self._sync = wrapped
        if isinstance(wrapped, httpx.AsyncBaseTransport):
            self._async = wrapped
        self._wrapped_given = wrapped is not None

    @property
    def name(self) -> str:
        """The transport's name (the prefix of its per-host policies' names)."""
        return self._client.name

    def policy(self, host: str | None = None) -> Policy | None:
        """The policy guarding requests to ``host`` (``"host"`` or ``"host:port"``) now.

        The one policy if the transport was given one; with a factory, the host's
        policy, or ``None`` if it has none (yet, or any more).
        """
        return self._client.policy(host)

    def metrics(self) -> HostMetrics | None:
        """The per-host policies' counts (``None`` without a factory)."""
        return self._client.metrics()

    # -- the two shells: everything they share is in resilient._http ----------------

    def _prepare(self, request: httpx.Request, exchange: Exchange) -> None:
        left, value = deadline(self._client.deadline_header)
        if value is not None:
            request.headers[self._client.deadline_header] = value  # type: ignore[index]
        if left is not None:
            base: dict[str, float | None] = exchange.base
            request.extensions["timeout"] = {key: clamp(base.get(key), left) for key in _TIMEOUTS}

    def _exchange(self, request: httpx.Request) -> Exchange:
        # Not copied: each attempt sets a new dict, so this one stays the request's own.
        base = request.extensions.get("timeout") or {}
        return Exchange(self._client, isinstance(request.stream, httpx.ByteStream), base)

    def _attempt(self, exchange: Exchange, request: httpx.Request) -> httpx.Response:
        for stale in exchange.begin():
            _close_quietly(stale.close, self._client.name)
        self._prepare(request, exchange)
        response = self._sending().handle_request(request)
        return exchange.judge(response, response.status_code, _retry_after)  # type: ignore[no-any-return]

    async def _attempt_async(self, exchange: Exchange, request: httpx.Request) -> httpx.Response:
        for stale in exchange.begin():
            await _aclose_quietly(stale.aclose, self._client.name)
        self._prepare(request, exchange)
        response = await self._asending().handle_async_request(request)
        return exchange.judge(response, response.status_code, _retry_after)  # type: ignore[no-any-return]

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` through the policies (``httpx.Client``'s entry point)."""
        guard = self._client.guards(functools.partial(authority, request.url)).sync(self._attempt)
        return run_sync(guard, self._exchange(request), request, _close)  # type: ignore[no-any-return]

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` through the policies (``httpx.AsyncClient``'s entry point)."""
        guard = self._client.guards(functools.partial(authority, request.url)).async_(
            self._attempt_async
        )
        return await run_async(guard, self._exchange(request), request, _aclose)  # type: ignore[no-any-return]

    def _sending(self) -> httpx.BaseTransport:
        transport = self._sync
        if transport is None:
            if self._wrapped_given:
                raise TypeError(
                    "this transport wraps an async transport: use it with httpx.AsyncClient"
                )
            transport = self._sync = httpx.HTTPTransport()
        return transport

    def _asending(self) -> httpx.AsyncBaseTransport:
        transport = self._async
        if transport is None:
            if self._wrapped_given:
                raise TypeError("this transport wraps a sync transport: use it with httpx.Client")
            transport = self._async = httpx.AsyncHTTPTransport()
        return transport

    def close(self) -> None:
        """Close the wrapped sync transport (``httpx.Client`` calls it on close)."""
        if self._sync is not None:
            self._sync.close()

    async def aclose(self) -> None:
        """Close the wrapped async transport (``httpx.AsyncClient`` calls it on close)."""
        if self._async is not None:
            await self._async.aclose()

    def __repr__(self) -> str:
        return f"<ResilienceTransport {self.name!r}>"


def _retry_after(response: httpx.Response) -> str | None:
    value: str | None = response.headers.get("retry-after")
    return value


def _close(response: httpx.Response) -> None:
    response.close()


async def _aclose(response: httpx.Response) -> None:
    await response.aclose()
