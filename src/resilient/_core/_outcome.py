"""Markers for what a call came to, shared by the cores and the runners above them."""

from __future__ import annotations

from typing import Any, Final

__all__ = ["NO_RESULT", "PASS"]


class _Sentinel:
    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return self._name


PASS: Final[Any] = _Sentinel("PASS")
"""Returned by a step's ``exit_error()`` to let the exception propagate unchanged."""
NO_RESULT: Final[Any] = _Sentinel("NO_RESULT")
"""The "result" of a ``with`` block, which has none: result predicates skip it."""
