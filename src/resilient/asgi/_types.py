"""The ASGI types the middleware speaks, spelled out here so it depends on no framework.

They are structurally the same as Starlette's and asgiref's aliases, so a
:class:`~resilient.asgi.ResilienceMiddleware` type-checks wherever those are expected
(``app.add_middleware(ResilienceMiddleware, ...)``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, TypeAlias

__all__ = ["ASGIApp", "Message", "Receive", "Scope", "Send"]

Scope: TypeAlias = MutableMapping[str, Any]
"""The connection scope: ``type``, ``method``, ``path``, ``headers``, ``client``, ..."""
Message: TypeAlias = MutableMapping[str, Any]
"""One ASGI event: ``http.request``, ``http.response.start``, ``http.response.body``, ..."""
Receive: TypeAlias = Callable[[], Awaitable[Message]]
"""Awaited by the app for the next incoming event."""
Send: TypeAlias = Callable[[Message], Awaitable[None]]
"""Awaited by the app to send an event to the client."""
ASGIApp: TypeAlias = Callable[[Scope, Receive, Send], Awaitable[None]]
"""An ASGI 3 application."""
