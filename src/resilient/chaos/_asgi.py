"""Fault injection for a service under test: a raw ASGI middleware.

It runs each eligible request through a chaos policy (or a composition of them): an
injected delay holds the request before the app sees it; an injected fault answers
with ``fault_status`` (the app is never called); an injected result (an HTTP status,
or a ``(status, body)`` pair) is sent as the response. A request is eligible when its
path is under one of ``paths`` (all paths by default), it carries ``header`` (when
one is given: a header-selected share of the traffic, such as a canary's), and its
path is not exempt: health checks (``exempt``, common health routes by default) are
never injected, so a game day does not get the instance killed by its orchestrator.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from resilient._core._validate import check_arity
from resilient._policies._policy import Policy

__all__ = ["HEALTH_PATHS", "ChaosMiddleware"]

logger = logging.getLogger("resilient")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

HEALTH_PATHS: tuple[str, ...] = (
    "/health",
    "/healthz",
    "/live",
    "/livez",
    "/liveness",
    "/ready",
    "/readyz",
    "/readiness",
    "/ping",
    "/metrics",
)
"""The paths ``ChaosMiddleware`` never injects by default (and those under them)."""

_OFF = frozenset({b"", b"0", b"false", b"no", b"off"})


def _prefixes(option: str, value: object) -> tuple[str, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise TypeError(f"{option} must be a collection of paths (str starting with '/')")
    items = tuple(value)
    for item in items:
        if not isinstance(item, str) or not item.startswith("/"):
            raise TypeError(f"{option} must hold paths as str starting with '/', not {item!r}")
    return tuple(item.rstrip("/") or "/" for item in items)


def _under(path: str, prefixes: tuple[str, ...]) -> bool:
    return any(prefix in ("/", path) or path.startswith(prefix + "/") for prefix in prefixes)


class ChaosMiddleware:
    """Inject faults, delays or responses into a share of an ASGI service's requests.

    Args:
        app: The ASGI application under test.
        policy: An [`InjectFault`][resilient.chaos.InjectFault],
            [`InjectLatency`][resilient.chaos.InjectLatency],
            [`InjectResult`][resilient.chaos.InjectResult] (whose value is an HTTP
            status, or a ``(status, body)`` pair), or a ``compose()`` of them; their
            ``rate``, ``enabled`` switch and seed apply to the eligible requests.
        paths: Inject only on requests under these paths (default: every path).
        header: Inject only on requests carrying this header (any value but ``0``,
            ``false``, ``no``, ``off``); default: no header needed.
        exempt: Paths never injected, nor anything under them (default:
            [`HEALTH_PATHS`][resilient.chaos.HEALTH_PATHS]).
        fault_status: The status sent for an injected fault (default 500).
    """

    def __init__(
        self,
        app: ASGIApp,
        policy: Policy,
        *,
        paths: Iterable[str] | None = None,
        header: str | None = None,
        exempt: Iterable[str] = HEALTH_PATHS,
        fault_status: int = 500,
    ) -> None:
        if isinstance(app, type):
            raise TypeError(f"app must be an ASGI 3 app, an async callable, not the class {app!r}")
        check_arity("app", app, 3, "an ASGI app: an async callable of (scope, receive, send)")
        if not isinstance(policy, Policy):
            raise TypeError(f"policy must be a chaos policy, not {type(policy).__name__}")
        if header is not None and not isinstance(header, str):
            raise TypeError(f"header must be a header name (str) or None, not {header!r}")
        if isinstance(fault_status, bool) or not isinstance(fault_status, int):
            raise TypeError(f"fault_status must be an int >= 100 and <= 599, not {fault_status!r}")
        if not 100 <= fault_status <= 599:  # noqa: PLR2004
            raise ValueError(f"fault_status must be an int >= 100 and <= 599, got {fault_status!r}")
        self.app = app
        self.policy = policy
        self.paths = None if paths is None else _prefixes("paths", paths)
        self.header = None if header is None else header.lower().encode("latin-1")
        self.exempt = _prefixes("exempt", exempt)
        self.fault_status = fault_status

    def _eligible(self, scope: Scope) -> bool:
        path = scope.get("path", "")
        if _under(path, self.exempt):
            return False
        if self.paths is not None and not _under(path, self.paths):
            return False
        if self.header is None:
            return True
        for name, value in scope.get("headers", ()):
            if name.lower() == self.header:
                return value.strip().lower() not in _OFF
        return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI connection, injecting into it when eligible."""
        if scope.get("type") != "http" or not self._eligible(scope):
            await self.app(scope, receive, send)
            return
        reached = False

        async def call_app() -> None:
            nonlocal reached
            reached = True
            await self.app(scope, receive, send)

        try:
            result: object = await self.policy.call_async(call_app)
        except Exception as exc:
            if reached:
                raise  # the app's own failure: not ours to answer
            # A delay cut short by the request's deadline is a timeout: 504, as the
            # resilience middleware answers one.
            status = 504 if isinstance(exc, TimeoutError) else self.fault_status
            await _respond(send, status, f"injected fault: {type(exc).__name__}\n")
            return
        if not reached:
            status, body = _as_response(result, self.fault_status)
            await _respond(send, status, body)


def _as_response(result: object, fallback: int) -> tuple[int, str | bytes]:
    if isinstance(result, int) and not isinstance(result, bool) and 100 <= result <= 599:  # noqa: PLR2004
        return result, b""
    if (
        isinstance(result, tuple)
        and len(result) == 2  # noqa: PLR2004
        and isinstance(result[0], int)
        and 100 <= result[0] <= 599  # noqa: PLR2004
        and isinstance(result[1], (str, bytes))
    ):
        return result[0], result[1]
    logger.error(
        "ChaosMiddleware: an injected result must be a status or (status, body), not %r", result
    )
    return fallback, b"injected result not understood\n"


async def _respond(send: Send, status: int, body: str | bytes) -> None:
    data = body.encode() if isinstance(body, str) else body
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(data)).encode()),
                (b"x-resilient-chaos", b"injected"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})
