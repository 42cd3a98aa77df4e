"""The requests adapter: resilience policies for ``requests.Session.mount()``.

A thin shell over ``resilient._http``, like ``resilient.httpx``'s transport: it sends
each attempt through the wrapped adapter (``requests.adapters.HTTPAdapter`` by default)
and hands the response to the exchange to judge.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection, Mapping
from typing import Any
from urllib.parse import urlsplit

import requests  # noqa: TC002 -- requests is this module's reason to exist
from requests.adapters import BaseAdapter, HTTPAdapter

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
    run_sync,
)
from resilient._http._exchange import close_quietly as _close_quietly
from resilient._http._hosts import HostMetrics
from resilient._policies._policy import Policy
from resilient._policies._registry import Registry

__all__ = ["ResilienceAdapter"]


def authority(url: str) -> str:
    """``host`` or ``host:port`` of ``url`` (lower-cased, as httpx's)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        port = parts.port
    except ValueError:
        port = None
    default = {"http": 80, "https": 443}.get(parts.scheme)
    return host if port is None or port == default else f"{host}:{port}"


def _repeatable(body: object) -> bool:
    return body is None or isinstance(body, (bytes, str))


class ResilienceAdapter(BaseAdapter):
    """A requests transport adapter that sends every request through resilience policies.

    Mount it on a session: ``session.mount("https://", ResilienceAdapter(policy))``. It
    behaves as [`resilient.httpx.ResilienceTransport`][resilient.httpx.ResilienceTransport]
    does, with the same options: the remaining deadline sent in ``deadline_header`` and
    bounding the request's ``timeout`` (a number or a ``(connect, read)`` pair), failing
    statuses (5xx and 429) raised inside the policies and the last response returned
    when retries run out, ``Retry-After`` honoured, a streamed body (a generator, a file)
    never sent twice unless ``repeat_streams=True``.

    Args:
        policy: The policy guarding every request, or a per-host factory
            ``"<name>:<host>" -> policy``.
        wrapped: The adapter that sends (default: a new ``requests.adapters.HTTPAdapter``).
        name: The adapter's name, the prefix of each per-host policy's name.
        failure_statuses: Statuses, or a predicate, that are failures (default 5xx and
            429). Connection errors and timeouts are failures whatever this says.
        max_hosts: With a factory, the most hosts whose policies are kept (LRU).
        registry: Where per-host policies are registered (default: ``default_registry``).
        deadline_header: The header carrying the remaining deadline; ``None``: none.
        max_retry_after: The longest ``Retry-After`` honoured, in seconds.
        repeat_streams: Allow a retry to send a streamed body again.
        wall: Wall-clock seconds since the epoch, for ``Retry-After`` dates.
    """

    def __init__(
        self,
        policy: Policy | Callable[[str], Policy],
        *,
        wrapped: BaseAdapter | None = None,
        name: str = "http",
        failure_statuses: Collection[int] | Callable[[int], bool] | None = None,
        max_hosts: int = DEFAULT_MAX_HOSTS,
        registry: Registry | None = None,
        deadline_header: str | None = REQUEST_TIMEOUT,
        max_retry_after: float = DEFAULT_MAX_RETRY_AFTER,
        repeat_streams: bool = False,
        wall: Callable[[], float] | None = None,
    ) -> None:
        super().__init__()
        if wrapped is not None and not isinstance(wrapped, BaseAdapter):
            raise TypeError(
                f"wrapped must be a requests adapter or None, not {type(wrapped).__name__}"
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
        self._wrapped: BaseAdapter = HTTPAdapter() if wrapped is None else wrapped

    @property
    def name(self) -> str:
        """The adapter's name (the prefix of its per-host policies' names)."""
        return self._client.name

    def policy(self, host: str | None = None) -> Policy | None:
        """The policy guarding requests to ``host`` now (see the httpx transport's)."""
        return self._client.policy(host)

    def metrics(self) -> HostMetrics | None:
        """The per-host policies' counts (``None`` without a factory)."""
        return self._client.metrics()

    def send(
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: Any = None,
        verify: bool | str = True,
        cert: Any = None,
        proxies: Mapping[str, str] | None = None,
    ) -> requests.Response:
        """Send ``request`` through the policies (what ``Session.send`` calls)."""
        options = {"stream": stream, "timeout": timeout, "verify": verify, "cert": cert}
        options["proxies"] = proxies
        exchange = Exchange(self._client, _repeatable(request.body), options)
        guard = self._client.guards(functools.partial(authority, request.url or "")).sync(
            self._attempt
        )
        return run_sync(guard, exchange, request, _close)  # type: ignore[no-any-return]

    def _attempt(self, exchange: Exchange, request: requests.PreparedRequest) -> requests.Response:
        for stale in exchange.begin():
            _close_quietly(stale.close, self._client.name)
        name = self._client.deadline_header
        left, value = deadline(name)
        options = dict(exchange.base)
        if value is not None:
            request.headers[name] = value  # type: ignore[index]
        if left is not None:
            options["timeout"] = _bounded(options["timeout"], left)
        response = self._wrapped.send(request, **options)
        return exchange.judge(response, response.status_code, _retry_after)  # type: ignore[no-any-return]

    def close(self) -> None:
        """Close the wrapped adapter (``Session.close()`` calls it)."""
        self._wrapped.close()

    def __repr__(self) -> str:
        return f"<ResilienceAdapter {self.name!r}>"


def _bounded(timeout: Any, left: float) -> Any:
    """The ``timeout`` of requests (``None``, seconds, or ``(connect, read)``) within ``left``."""
    if isinstance(timeout, tuple):
        return tuple(clamp(part, left) for part in timeout)
    if timeout is None or isinstance(timeout, (int, float)):
        return clamp(timeout, left)
    return timeout  # a urllib3 Timeout object: the user's own, left as it is


def _retry_after(response: requests.Response) -> str | None:
    return response.headers.get("retry-after")


def _close(response: requests.Response) -> None:
    response.close()
