"""The dashboard as one plain ASGI app: routing, the page, the snapshot.

No framework: it reads ``scope["path"]`` below the path it is mounted at
(``root_path``), answers ``GET`` and ``HEAD``, and leaves the stream to ``_stream``.
"""

from __future__ import annotations

import importlib.resources
import json
from typing import TYPE_CHECKING, Any, Final

from resilient._core._validate import check_duration
from resilient._policies._registry import Registry, default_registry
from resilient._waiting._clock import resolve_clock
from resilient.dashboard._readout import Sampler
from resilient.dashboard._stream import Hub, stream

if TYPE_CHECKING:
    from collections.abc import Sequence

    from resilient._core._clock import Clock
    from resilient.asgi._types import Receive, Scope, Send

__all__ = ["Dashboard", "app"]

_QUANTILES: Final = (0.5, 0.9, 0.99)


def _page() -> bytes:
    # Read on each request: a page of 10 kB, and an edited file shows on reload.
    return (importlib.resources.files("resilient.dashboard") / "index.html").read_bytes()


class Dashboard:
    """The dashboard's ASGI app; made by [`app`][resilient.dashboard.app].

    Attributes:
        hub: The open streams and the listener they share (``hub.subscribers``,
            ``hub.listening``: what tests and health checks read).
    """

    def __init__(
        self,
        registry: Registry,
        *,
        interval: float,
        heartbeat: float,
        clock: Clock,
        quantiles: tuple[float, ...],
    ) -> None:
        self.registry = registry
        self.interval = interval
        self.heartbeat = heartbeat
        self.clock = clock
        self.quantiles = quantiles
        self.hub = Hub(registry)
        # /snapshot's rates are since the previous /snapshot request.
        self._snapshots = Sampler(registry, clock, quantiles)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI connection."""
        if scope["type"] == "lifespan":  # mounted alone at the top: nothing to start
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1000})
            return
        path = _below_mount(scope)
        if scope["method"] not in ("GET", "HEAD"):
            await _respond(send, 405, b"text/plain", b"method not allowed", allow=True)
            return
        if path in ("", "/", "/index.html"):
            await _respond(send, 200, b"text/html; charset=utf-8", _page(), scope=scope)
        elif path == "/snapshot":
            body = json.dumps(self._snapshots.read(), separators=(",", ":"), default=str)
            await _respond(send, 200, b"application/json", body.encode(), scope=scope)
        elif path in ("/stream", "/hystrix.stream") and scope["method"] == "HEAD":
            await _respond(send, 200, b"text/event-stream; charset=utf-8", b"", scope=scope)
        elif path == "/stream":
            await self._stream(receive, send)
        elif path == "/hystrix.stream":
            await self._hystrix(receive, send)
        else:
            await _respond(send, 404, b"text/plain", b"not found")

    async def _stream(self, receive: Receive, send: Send) -> None:
        await stream(
            receive,
            send,
            hub=self.hub,
            sampler=Sampler(self.registry, self.clock, self.quantiles),
            clock=self.clock,
            interval=self.interval,
            heartbeat=self.heartbeat,
        )

    async def _hystrix(self, receive: Receive, send: Send) -> None:
        from resilient.dashboard._hystrix import hystrix_tick  # noqa: PLC0415

        await stream(
            receive,
            send,
            hub=self.hub,
            sampler=Sampler(self.registry, self.clock, self.quantiles),
            clock=self.clock,
            interval=self.interval,
            heartbeat=self.heartbeat,
            tick=hystrix_tick,
        )

    def __repr__(self) -> str:
        return f"<Dashboard of {self.registry!r}, every {self.interval:g} s>"


def app(
    registry: Registry | None = None,
    *,
    interval: float = 1.0,
    heartbeat: float = 15.0,
    quantiles: Sequence[float] = _QUANTILES,
    clock: Clock | None = None,
) -> Dashboard:
    """A live dashboard of ``registry``'s policies, as an ASGI app to mount anywhere.

    It serves ``/`` (one HTML page, no external resource), ``/snapshot`` (JSON),
    ``/stream`` (Server-Sent Events) and ``/hystrix.stream`` (the Hystrix dashboard's
    format). It shows what it is given to anyone who asks: mount it behind your
    authentication. See ``docs/operations.md``.

    Args:
        registry: Whose policies to show (``None``: ``resilient.default_registry``).
            Only policies created through the registry are shown.
        interval: Seconds between two metrics events of a stream, in (0, 3600].
        heartbeat: Seconds of silence after which a stream sends an SSE comment, so that
            proxies do not close it, in (0, 3600].
        quantiles: The latency quantiles shown, each in (0, 1] (from the durations in a
            breaker's count window, where it measures them).
        clock: Measures the time between two readings and paces the streams (``None``:
            the monotonic clock).
    """
    if registry is None:
        registry = default_registry
    if not isinstance(registry, Registry):
        raise TypeError(
            f"registry must be a resilient.Registry or None, not {type(registry).__name__}"
        )
    seconds = check_duration("interval", interval, allow_zero=False, maximum=3600.0)
    beat = check_duration("heartbeat", heartbeat, allow_zero=False, maximum=3600.0)
    return Dashboard(
        registry,
        interval=seconds,
        heartbeat=beat,
        clock=resolve_clock(clock),
        quantiles=_check_quantiles(quantiles),
    )


def _check_quantiles(quantiles: object) -> tuple[float, ...]:
    if isinstance(quantiles, (str, bytes)) or not hasattr(quantiles, "__iter__"):
        raise TypeError(
            f"quantiles must be a collection of numbers in (0, 1], not {type(quantiles).__name__}"
        )
    found: tuple[object, ...] = tuple(quantiles)
    for q in found:
        if isinstance(q, bool) or not isinstance(q, (int, float)) or not 0 < q <= 1:
            raise ValueError(f"quantiles must be numbers in (0, 1], got {q!r}")
    return tuple(float(q) for q in found)  # type: ignore[arg-type]


def _below_mount(scope: Scope) -> str:
    """The request's path below where the app is mounted.

    Starlette (0.33 and later) keeps the full path in ``path`` and the mount point in
    ``root_path``; other servers give the path below the mount point already.
    """
    path: str = scope.get("path", "")
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        return path[len(root) :]
    return path


async def _respond(
    send: Send,
    status: int,
    content_type: bytes,
    body: bytes,
    *,
    scope: Scope | None = None,
    allow: bool = False,
) -> None:
    headers = [
        (b"content-type", content_type),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
    ]
    if allow:
        headers.append((b"allow", b"GET, HEAD"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    head = scope is not None and scope.get("method") == "HEAD"
    await send({"type": "http.response.body", "body": b"" if head else body})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message: Any = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
