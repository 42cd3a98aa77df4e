"""What the adaptive throttle's tests share: scripted draws and the outcomes they call."""

from __future__ import annotations

from collections.abc import Iterable


class Draws:
    """A ``random=`` that hands out scripted draws, then ``default``; counts its calls."""

    def __init__(self, values: Iterable[float] = (), default: float = 0.5) -> None:
        self.values = list(values)
        self.default = default
        self.calls = 0

    def random(self) -> float:
        self.calls += 1
        return self.values.pop(0) if self.values else self.default


class NeverDraw:
    """A ``random=`` for calls that must not draw (nothing to shed)."""

    def random(self) -> float:
        raise AssertionError("drew with a rejection probability of 0")


class Refused(Exception):
    """The backend refused the call (overloaded)."""


class NotFound(Exception):
    """The backend served the call and answered with an application error."""


def accepted() -> str:
    return "ok"


def refused() -> str:
    raise Refused


async def accepted_async() -> str:
    return "ok"


async def refused_async() -> str:
    raise Refused
