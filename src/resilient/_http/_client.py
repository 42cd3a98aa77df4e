"""The options both transports share, checked once, and the policies adapted to requests.

:class:`Client` holds a transport's options (which statuses fail, the one policy or the
per-host factory, the deadline header, the cap on ``Retry-After``) and hands out the
guards of each request. :func:`adapt` makes a policy request-aware: a
[`Retry`][resilient.Retry] tries again only while the request's body can be sent again.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Collection
from typing import Any, Final

from resilient._core._timeout_header import REQUEST_TIMEOUT
from resilient._core._validate import Duration, check_arity, check_duration, check_int
from resilient._http._classify import compile_failure_statuses
from resilient._http._exchange import Exchange
from resilient._http._hosts import HostMetrics, HostPolicies
from resilient._policies._hedge import Hedge
from resilient._policies._policy import Policy, build_async, build_sync
from resilient._policies._registry import Registry, default_registry
from resilient._policies._retry import Retry, async_retrying, sync_retrying

__all__ = [
    "DEFAULT_MAX_HOSTS",
    "DEFAULT_MAX_RETRY_AFTER",
    "REQUEST_TIMEOUT",
    "Client",
    "Guards",
    "adapt",
]

DEFAULT_MAX_RETRY_AFTER: Final = 60.0
DEFAULT_MAX_HOSTS: Final = 100


class _RequestRetry(Policy):
    """A [`Retry`][resilient.Retry] that tries again only while the body can be re-sent.

    The retry's own adapters, sharing its core (counts, events, budget), told to ask
    ``exchange.repeatable()`` (the guarded call's first argument) before each retry.
    """

    __slots__ = ("_core",)
    kind = Retry.kind

    def __init__(self, retry: Retry) -> None:
        self._core = retry._core

    def _sync_wrap(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        return sync_retrying(self._core, fn, _repeatable)

    def _async_wrap(self, fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        return async_retrying(self._core, fn, _repeatable)


def _repeatable(args: tuple[Any, ...]) -> bool:
    exchange: Exchange = args[0]
    return exchange.repeatable()


def adapt(policy: Policy) -> tuple[Policy, ...]:
    """``policy`` flattened, its retries made request-aware; hedges refused."""
    adapted: list[Policy] = []
    for inner in policy._flatten():
        if isinstance(inner, Retry):
            adapted.append(_RequestRetry(inner))
        elif isinstance(inner, Hedge):
            raise TypeError(
                f"{inner!r} cannot guard a transport: two sends of one request object "
                "would share its body and connection; hedge the calls that make requests"
            )
        else:
            adapted.append(inner)
    return tuple(adapted)


class Guards:
    """One policy's sync and async guards around a shell's attempts, built on first use."""

    __slots__ = ("_async", "_policies", "_sync", "policy")

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self._policies = adapt(policy)
        self._sync: Callable[..., Any] | None = None
        self._async: Callable[..., Awaitable[Any]] | None = None

    def sync(self, attempt: Callable[..., Any]) -> Callable[..., Any]:
        """The sync guard around ``attempt`` (the shell's bound method, always the same)."""
        guard = self._sync
        if guard is None:
            guard = self._sync = build_sync(self._policies, attempt)
        return guard

    def async_(self, attempt: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        """The async guard around ``attempt``."""
        guard = self._async
        if guard is None:
            guard = self._async = build_async(self._policies, attempt)
        return guard


class Client:
    """The options of a transport, checked once, and the guards of each request.

    See ``resilient.httpx.ResilienceTransport`` for what each option means.
    """

    __slots__ = (
        "_hosts",
        "_single",
        "deadline_header",
        "is_failure",
        "max_retry_after",
        "name",
        "repeat_streams",
        "wall",
    )

    def __init__(
        self,
        policy: Policy | Callable[[str], Policy],
        *,
        name: str,
        failure_statuses: Collection[int] | Callable[[int], bool] | None,
        max_hosts: int,
        registry: Registry | None,
        deadline_header: str | None,
        max_retry_after: Duration,
        repeat_streams: bool,
        wall: Callable[[], float] | None,
    ) -> None:
        given: object = name
        if not isinstance(given, str) or not given:
            raise TypeError(f"name must be a non-empty str, not {name!r}")
        self.name = name
        self.is_failure = compile_failure_statuses(failure_statuses)
        check_int("max_hosts", max_hosts)
        header_name: object = deadline_header
        if header_name is not None and (not isinstance(header_name, str) or not header_name):
            raise TypeError(
                f"deadline_header must be a header name (a str) or None, not {deadline_header!r}"
            )
        self.deadline_header = deadline_header
        self.max_retry_after = check_duration("max_retry_after", max_retry_after)
        flag: object = repeat_streams
        if not isinstance(flag, bool):
            raise TypeError(f"repeat_streams must be a bool, not {type(repeat_streams).__name__}")
        self.repeat_streams = repeat_streams
        self.wall = (
            time.time
            if wall is None
            else check_arity("wall", wall, 0, "a callable returning epoch seconds")
        )
        if registry is not None and not isinstance(registry, Registry):
            raise TypeError(f"registry must be a Registry or None, not {type(registry).__name__}")
        self._single: Guards | None = None
        self._hosts: HostPolicies[Guards] | None = None
        if isinstance(policy, Policy):
            self._single = Guards(policy)
        elif callable(policy):
            factory = check_arity("policy", policy, 1, "a per-host factory name -> policy")
            self._hosts = HostPolicies(
                name,
                factory,
                max_hosts,
                default_registry if registry is None else registry,
                Guards,
            )
        else:
            raise TypeError(
                "policy must be a policy (CircuitBreaker, compose(...), ...) or a per-host "
                f"factory name -> policy, not {type(policy).__name__}"
            )

    def guards(self, host: Callable[[], str]) -> Guards:
        """The guards of a request to ``host()`` (the one policy's, or the host's own).

        ``host`` is called only with a factory: parsing a URL's authority costs.
        """
        single = self._single
        if single is not None:
            return single
        hosts = self._hosts
        assert hosts is not None  # noqa: S101 -- one of the two is set at construction
        return hosts.get(host())

    def policy(self, host: str | None = None) -> Policy | None:
        """The policy guarding ``host`` now (the one policy if there is no factory)."""
        if self._single is not None:
            return self._single.policy
        assert self._hosts is not None  # noqa: S101
        return None if host is None else self._hosts.policy(host)

    def metrics(self) -> HostMetrics | None:
        """The per-host policies' counts, or ``None`` for a transport with one policy."""
        return None if self._hosts is None else self._hosts.metrics()
