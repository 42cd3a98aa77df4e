"""Deadline propagation over HTTP: read a caller's deadline, write ours for the next hop.

Two header formats are understood. ``x-request-timeout`` (and any other name the
middleware is given) carries plain seconds, such as ``1.5``. ``grpc-timeout`` carries
gRPC's format: at most 8 digits and a unit, ``H`` (hours), ``M`` (minutes), ``S``
(seconds), ``m`` (milliseconds), ``u`` (microseconds) or ``n`` (nanoseconds), as in
``100m``. Parsing is strict and never raises: a value that does not match is ignored
(and logged at DEBUG), because a client's malformed header must never turn into a 500.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Final

# The formats are shared with the HTTP clients' transports (resilient.httpx, .requests).
from resilient._core._timeout_header import (
    GRPC_TIMEOUT,
    REQUEST_TIMEOUT,
    format_grpc_timeout,
    format_seconds,
    header,
)
from resilient._waiting._deadline import remaining

__all__ = [
    "GRPC_TIMEOUT",
    "REQUEST_TIMEOUT",
    "format_grpc_timeout",
    "format_seconds",
    "parse_grpc_timeout",
    "parse_seconds",
    "read_deadline",
    "timeout_header",
]

logger = logging.getLogger("resilient.asgi")


# Strict on purpose: float() would also take " 1e3 ", "nan", "inf" and "1_000".
_SECONDS = re.compile(rb"\d{1,12}(?:\.\d{1,9})?")
_SECONDS_DIGITS: Final = 12
_GRPC_DIGITS: Final = 8  # then one unit letter
_GRPC_UNITS: Final = {b"H": 3600.0, b"M": 60.0, b"S": 1.0, b"m": 1e-3, b"u": 1e-6, b"n": 1e-9}
_LOGGED_PREFIX: Final = 64  # bytes of an invalid deadline header shown at DEBUG


def parse_seconds(value: bytes) -> float | None:
    """``b"1.5"`` -> 1.5; ``None`` for anything that is not plain non-negative seconds."""
    # Whole seconds (the common form) without the regex: bytes.isdigit() is ASCII-only,
    # as the pattern's \d is for bytes.
    if value.isdigit() and len(value) <= _SECONDS_DIGITS:
        return float(value)
    if _SECONDS.fullmatch(value) is None:
        return None
    return float(value)


def parse_grpc_timeout(value: bytes) -> float | None:
    """``b"100m"`` -> 0.1; ``None`` for anything that is not gRPC's timeout format."""
    if type(value) is not bytes:  # a bytearray's slice is no dict key
        value = bytes(value)
    unit = _GRPC_UNITS.get(value[-1:])
    digits = value[:-1]
    if unit is None or not digits.isdigit() or len(digits) > _GRPC_DIGITS:
        return None
    return int(digits) * unit


def read_deadline(headers: Iterable[tuple[bytes, bytes]], names: dict[bytes, bool]) -> float | None:
    """The tightest valid timeout among ``headers`` named in ``names``, in seconds.

    ``names`` maps each lower-case header name to whether it uses gRPC's format.
    """
    found: float | None = None
    for name, value in headers:
        grpc = names.get(name)
        if grpc is None:
            continue
        seconds = parse_grpc_timeout(value) if grpc else parse_seconds(value)
        if seconds is None:
            # A prefix only: a header can be megabytes, and is the caller's to choose.
            logger.debug(
                "ignoring an invalid %s header (%d bytes): %r",
                name.decode("latin-1"),
                len(value),
                bytes(value[:_LOGGED_PREFIX]),
            )
        elif found is None or seconds < found:
            found = seconds
    return found


def timeout_header(name: str = REQUEST_TIMEOUT) -> dict[str, str]:
    """The header that passes what is left of the current deadline to the next hop.

    ``{"x-request-timeout": "1.234"}`` (seconds, rounded down to the millisecond), or
    ``{"grpc-timeout": "1234000u"}`` when ``name`` is ``"grpc-timeout"``; an empty dict
    when no deadline is set, so it can always be merged into outgoing headers::

        await client.get(url, headers={**timeout_header(), "accept": "application/json"})
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a header name (a str), not {type(name).__name__}")
    left = remaining()
    if left is None:
        return {}
    return {name: header(name, left)}
