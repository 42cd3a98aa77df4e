"""The switch an exporter turns to have every named breaker measure its calls' durations.

A breaker measures durations only when its configuration needs them (slow-call
detection, a time window): a closed breaker's hot path reads no clock otherwise. A
duration histogram (``resilient.instrument(call_duration=True)``) wants each named
breaker's calls measured all the same, for as long as it is on. It asks here, with
``DURATIONS.want()``, and gives the demand back with ``DURATIONS.release()``; the
breakers switch themselves (``BreakerCore.measure_durations``), those alive then and
those created while any demand lasts. No exporter writes into a breaker.
"""

from __future__ import annotations

import weakref
from typing import Protocol

from resilient._core._fork import new_lock

__all__ = ["DURATIONS", "DurationDemand"]


class Timeable(Protocol):
    """What the switch drives: a breaker core."""

    def measure_durations(self, on: bool = True) -> None:
        """Measure every call's duration, or go back to what the configuration needs."""


class DurationDemand:
    """How many exporters want named breakers' call durations, and the breakers to tell."""

    __slots__ = ("_breakers", "_lock", "_wanted")

    def __init__(self) -> None:
        self._wanted = 0
        self._breakers: weakref.WeakSet[Timeable] = weakref.WeakSet()
        # Held while the breakers switch, so that a want() and a release() racing each
        # other leave every breaker as the final count says. Breakers never take it
        # while holding their own lock.
        self._lock = new_lock()

    @property
    def wanted(self) -> bool:
        """Whether some exporter wants durations now."""
        return self._wanted > 0

    def enroll(self, breaker: Timeable) -> None:
        """Follow the demand from now on (a named breaker, once constructed)."""
        with self._lock:
            self._breakers.add(breaker)
            # The demand may have changed since the breaker read `wanted` in its __init__.
            breaker.measure_durations(on=self._wanted > 0)

    def want(self) -> None:
        """Have every named breaker measure durations until the matching ``release()``."""
        with self._lock:
            self._wanted += 1
            if self._wanted == 1:
                for breaker in list(self._breakers):
                    breaker.measure_durations()

    def release(self) -> None:
        """Give back one ``want()``; the last one returns breakers to their configuration."""
        with self._lock:
            if self._wanted == 0:
                raise RuntimeError("release() without a matching want()")
            self._wanted -= 1
            if self._wanted == 0:
                for breaker in list(self._breakers):
                    breaker.measure_durations(on=False)


DURATIONS = DurationDemand()
"""The process-wide demand for named breakers' call durations."""
