"""The circuit breaker's vocabulary: its states, the epoch tickets and the metrics record.

Kept apart from the state machine in ``_breaker.py`` so that the machine reads as
transitions only.
"""

from __future__ import annotations

import enum
import weakref
from collections.abc import Callable
from typing import Final

from resilient._core._window import Window

__all__ = [
    "CLOSED",
    "DISABLED",
    "FORCED_OPEN",
    "HALF_OPEN",
    "METRICS_ONLY",
    "OPEN",
    "CircuitState",
    "Epoch",
    "Trial",
    "TrialRef",
]


class CircuitState(str, enum.Enum):
    """The states of a circuit breaker; each value is its lower-case name."""

    CLOSED = "closed"
    """Calls pass and their outcomes are recorded; the breaker opens on high rates."""
    OPEN = "open"
    """Calls are rejected until ``open_duration`` has passed."""
    HALF_OPEN = "half_open"
    """Exactly ``half_open_calls`` trial calls pass; their rates decide the next state."""
    FORCED_OPEN = "forced_open"
    """Every call is rejected until the breaker is reset (set by hand)."""
    DISABLED = "disabled"
    """Every call passes and nothing is recorded (set by hand)."""
    METRICS_ONLY = "metrics_only"
    """Every call passes and is recorded, and the breaker never opens (set by hand)."""

    def __str__(self) -> str:
        return self.value


CLOSED: Final = CircuitState.CLOSED
OPEN: Final = CircuitState.OPEN
HALF_OPEN: Final = CircuitState.HALF_OPEN
FORCED_OPEN: Final = CircuitState.FORCED_OPEN
DISABLED: Final = CircuitState.DISABLED
METRICS_ONLY: Final = CircuitState.METRICS_ONLY
_ADMIT_ALL: Final = frozenset({CLOSED, DISABLED, METRICS_ONLY})


class Epoch:
    """One stay of the breaker in one state; the ticket handed to an admitted call.

    Attributes:
        state: The state of this stay.
        window: The window outcomes of this stay are recorded into.
        fast: Whether a plain success may take the lock-free path (CLOSED, a count
            window, no duration measured, no ``record_result``).
        timed: Whether the adapter must measure the call's duration.
    """

    __slots__ = ("fast", "state", "timed", "window")

    def __init__(self, state: CircuitState, window: Window, fast: bool, timed: bool) -> None:
        self.state = state
        self.window = window
        self.fast = fast
        self.timed = timed

    def __repr__(self) -> str:
        return f"<Epoch {self.state.value} at {id(self):#x}>"


class Trial:
    """The ticket of one half-open trial call: a permit that must come back exactly once.

    ``live`` is cleared (under the breaker's lock) when the trial's outcome is recorded or
    its permit is given back. A trial lost without either (an interrupt raised by a
    signal handler just after the permit was taken, where no handler of the adapter can
    see the ticket yet) gives its permit back when it is collected: see
    :class:`TrialRef`.
    """

    __slots__ = ("__weakref__", "epoch", "live", "ref")
    fast: Final = False  # a trial never takes the lock-free success path

    def __init__(self, epoch: Epoch) -> None:
        self.epoch = epoch
        self.live = True
        self.ref: TrialRef | None = None


class TrialRef(weakref.ref):  # type: ignore[type-arg]
    """A weak reference to a live :class:`Trial`, kept by its breaker.

    Its callback is the ``append`` of a deque: a C function, so no Python code runs when
    a lost trial is collected and no interrupt can land in between (a ``__del__`` could
    be interrupted at its first line). The breaker drops the reference when the trial
    ends, and takes back the permits of the references in the deque at its next
    admission.
    """

    __slots__ = ("epoch",)

    def __init__(self, trial: Trial, callback: Callable[[TrialRef], None]) -> None:
        super().__init__(trial, callback)  # type: ignore[call-arg]
        self.epoch = trial.epoch
