"""One outgoing request across its attempts, and the options both transports share.

The shells (``resilient.httpx``, ``resilient.requests``) build one :class:`Exchange`
per request and run their *attempt* (send once, judge the response) through the
guards of :class:`Client`. Everything they have in common is here:

* the options, validated once (:class:`Client`): which statuses fail, the per-host
  policies or the one policy, the deadline header, the cap on ``Retry-After``;
* the policies adapted to requests (:func:`adapt`): a [`Retry`][resilient.Retry] tries
  again only while the request's body can be sent again;
* the deadline of each attempt (:func:`deadline`): what is left of the caller's,
  as the header to send and the bound on the request's own timeouts;
* the failed responses (:meth:`Exchange.judge`): raised as an ``HTTPStatusFailure``
  so the policies see a failure, held until the next attempt (which closes them) or
  the end, where the last one is the caller's response.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable, Collection
from typing import Any, Final

from resilient._core._errors import TimeoutExceededError
from resilient._core._timeout_header import REQUEST_TIMEOUT, header
from resilient._core._validate import Duration, check_arity, check_duration, check_int
from resilient._http._classify import (
    HTTPStatusFailure,
    compile_failure_statuses,
    parse_retry_after,
)
from resilient._http._hosts import HostMetrics, HostPolicies
from resilient._policies._hedge import Hedge
from resilient._policies._policy import Policy, build_async, build_sync
from resilient._policies._registry import Registry, default_registry
from resilient._policies._retry import Retry, async_retrying, sync_retrying
from resilient._waiting._deadline import remaining

__all__ = ["Client", "Exchange", "Guards", "adapt", "clamp", "deadline"]

logger = logging.getLogger("resilient")

DEFAULT_MAX_RETRY_AFTER: Final = 60.0
DEFAULT_MAX_HOSTS: Final = 100


class Exchange:
    """The state of one request across its attempts (see the module docstring).

    Attributes:
        repeatable_body: Whether the body can be sent again (bytes, or the user said
            a stream may be re-sent).
        attempts: Attempts begun.
        held: Failed responses not yet closed (the last may be the caller's).
        base: What the shell keeps for every attempt (the request's own timeouts).
    """

    __slots__ = ("attempts", "base", "client", "held", "repeatable_body")

    def __init__(self, client: Client, repeatable_body: bool, base: Any = None) -> None:
        self.client = client
        self.repeatable_body = repeatable_body or client.repeat_streams
        self.attempts = 0
        self.held: list[Any] = []
        self.base = base

    def repeatable(self) -> bool:
        """Whether another attempt may send the request again."""
        return self.repeatable_body

    def begin(self) -> list[Any]:
        """Start an attempt; the failed responses of earlier ones, for the shell to close."""
        self.attempts += 1
        held = self.held
        if held:
            self.held = []
        return held

    def judge(
        self, response: Any, status: int, retry_after: Callable[[Any], str | None] | None
    ) -> Any:
        """``response`` if it succeeded; else raise it as an ``HTTPStatusFailure``.

        ``retry_after(response)`` reads the ``Retry-After`` header: only for a failure
        (reading a header is a scan of them all in httpx, a cost on every request).
        """
        client = self.client
        try:
            failed = client.is_failure(status)
        except Exception:
            # The user's predicate: its failure must not become the caller's result.
            logger.exception(
                "%s: failure_statuses raised for status %d; counted as a success",
                client.name,
                status,
            )
            return response
        if not failed:
            return response
        wait = None
        value = None if retry_after is None else retry_after(response)
        if value is not None:
            try:
                wait = parse_retry_after(value, client.wall())
            except Exception:
                logger.exception("%s: the wall clock failed; Retry-After ignored", client.name)
            if wait is not None:
                wait = min(wait, client.max_retry_after)
        failure = HTTPStatusFailure(response, status, wait)
        failure.exchange = self
        self.held.append(response)
        raise failure

    def outcome(self, failure: HTTPStatusFailure) -> Any:
        """The response the caller gets when the last attempt's failure came out."""
        if failure.exchange is not self:
            raise failure  # another request's (a nested transport's): not ours to unwrap
        return failure.response

    def leftovers(self, keep: Any = None) -> list[Any]:
        """The held responses to close at the end: all but ``keep`` (the caller's)."""
        held, self.held = self.held, []
        return [response for response in held if response is not keep]


def deadline(name: str | None) -> tuple[float | None, str | None]:
    """What is left of the caller's deadline, and the header value that says so.

    Raises ``TimeoutExceededError`` when it has already passed: a request sent now
    would outlive its caller.
    """
    left = remaining()
    if left is None:
        return None, None
    if left <= 0.0:
        raise TimeoutExceededError(
            "the caller's deadline passed before the request was sent", seconds=0.0
        )
    return left, None if name is None else header(name, left)


def clamp(value: float | None, left: float | None) -> float | None:
    """A timeout (``None``: none) bounded by the deadline's ``left`` seconds."""
    if left is None:
        return value
    return left if value is None or value > left else value


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


def close_quietly(close: Callable[[], object], name: str) -> None:
    """Close a response we hold; its failure is logged, never the caller's."""
    try:
        close()
    except Exception:
        logger.exception("%s: closing a failed response that was not kept failed", name)


async def aclose_quietly(close: Callable[[], Awaitable[object]], name: str) -> None:
    """The async twin of :func:`close_quietly`."""
    try:
        await close()
    except Exception:
        logger.exception("%s: closing a failed response that was not kept failed", name)


__all__ += ["DEFAULT_MAX_HOSTS", "DEFAULT_MAX_RETRY_AFTER", "REQUEST_TIMEOUT"]
__all__ += ["aclose_quietly", "close_quietly"]


def _drop(exchange: Exchange, close: Callable[[Any], object], keep: Any = None) -> None:
    if not exchange.held:
        return
    for response in exchange.leftovers(keep):
        close_quietly(functools.partial(close, response), exchange.client.name)


def run_sync(
    guard: Callable[..., Any], exchange: Exchange, request: Any, close: Callable[[Any], object]
) -> Any:
    """Send ``request`` through ``guard``; the caller's response, failed ones closed.

    When the last attempt failed by status, its response is the caller's (see
    ``HTTPStatusFailure``); every other response held is closed.
    """
    try:
        response = guard(exchange, request)
    except HTTPStatusFailure as failure:
        try:
            response = exchange.outcome(failure)
        except BaseException:
            _drop(exchange, close)
            raise
        finally:
            del failure  # no frame <-> traceback cycle holding the response
    except BaseException:
        _drop(exchange, close)
        raise
    _drop(exchange, close, response)
    return response


async def run_async(
    guard: Callable[..., Awaitable[Any]],
    exchange: Exchange,
    request: Any,
    aclose: Callable[[Any], Awaitable[object]],
) -> Any:
    """The async twin of :func:`run_sync`."""
    try:
        response = await guard(exchange, request)
    except HTTPStatusFailure as failure:
        try:
            response = exchange.outcome(failure)
        except BaseException:
            await _adrop(exchange, aclose)
            raise
        finally:
            del failure
    except BaseException:
        await _adrop(exchange, aclose)
        raise
    await _adrop(exchange, aclose, response)
    return response


async def _adrop(
    exchange: Exchange, aclose: Callable[[Any], Awaitable[object]], keep: Any = None
) -> None:
    if not exchange.held:
        return
    for response in exchange.leftovers(keep):
        await aclose_quietly(functools.partial(aclose, response), exchange.client.name)


__all__ += ["run_async", "run_sync"]
