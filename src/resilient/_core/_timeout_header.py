"""How a remaining deadline is written into a header for the next hop.

Shared by the ASGI middleware's ``timeout_header`` and the HTTP clients' transports
(``resilient.httpx``, ``resilient.requests``), which send what is left of the caller's
deadline with every outgoing request. Pure functions of a number of seconds.
"""

from __future__ import annotations

import math
from typing import Final

__all__ = ["GRPC_TIMEOUT", "REQUEST_TIMEOUT", "format_grpc_timeout", "format_seconds", "header"]

REQUEST_TIMEOUT: Final = "x-request-timeout"
GRPC_TIMEOUT: Final = "grpc-timeout"

# From the finest unit up: the first in which the value fits 8 digits is the most precise.
_GRPC_FORMATS: Final = (("n", 1), ("u", 10**3), ("m", 10**6), ("S", 10**9), ("M", 60 * 10**9))
_GRPC_MAX: Final = 99_999_999


def format_seconds(seconds: float) -> str:
    """Seconds for ``x-request-timeout``, rounded *down* to the millisecond.

    Down, so the next hop never believes it has more time than is left.
    """
    return f"{math.floor(max(seconds, 0.0) * 1000) / 1000:.3f}"


def format_grpc_timeout(seconds: float) -> str:
    """Seconds in gRPC's format, in the finest unit that fits 8 digits (``"1500000u"``).

    Rounded up within that unit, as gRPC's own implementations do, so a tiny budget
    is never sent as zero; beyond what minutes can hold, whole hours (rounded up).
    """
    nanos = math.ceil(max(seconds, 0.0) * 1e9)
    for unit, size in _GRPC_FORMATS:
        value = -(-nanos // size)
        if value <= _GRPC_MAX:
            return f"{value}{unit}"
    return f"{min(-(-nanos // (3600 * 10**9)), _GRPC_MAX)}H"


def header(name: str, seconds: float) -> str:
    """The value of the deadline header ``name`` for ``seconds`` left (gRPC's or plain)."""
    if name.lower() == GRPC_TIMEOUT:
        return format_grpc_timeout(seconds)
    return format_seconds(seconds)
