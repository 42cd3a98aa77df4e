"""The circuit breaker's vocabulary: its states, its transitions, the tickets, the metrics.

Kept apart from the state machine in ``_breaker.py`` so that the machine reads as
transitions only. The transitions are data, as h11's ``_state.py`` writes them:
:data:`TRANSITIONS` maps each state to the triggers it accepts and the state each one
leads to, and ``BreakerCore._fire`` is the one place that looks a trigger up there and
changes the state.
"""

from __future__ import annotations

import enum
import itertools
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, cast

from resilient._core._window import Window

__all__ = [
    "CLOSED",
    "DISABLED",
    "FORCED_OPEN",
    "HALF_OPEN",
    "METRICS_ONLY",
    "NO_LISTENERS",
    "NO_TRIALS",
    "NO_TRIALS_LOST",
    "OPEN",
    "TRANSITIONS",
    "TRIGGERS",
    "UNCOUNTED",
    "CircuitState",
    "Epoch",
    "OpenFor",
    "TransitionError",
    "Trial",
    "TrialRef",
    "Trigger",
]

if TYPE_CHECKING:
    from resilient._core._events import Listener


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


class Trigger:
    """What makes a breaker change state: the events of its transition table.

    Plain strings, not an enum: nothing but the table and ``BreakerCore._fire`` reads
    them, and an enum class would cost ``import resilient`` a few hundred microseconds.
    """

    __slots__ = ()

    TRIPPED: Final = "tripped"
    """CLOSED: once ``minimum_calls`` are recorded, a rate reached its threshold."""
    OPEN_ELAPSED: Final = "open_elapsed"
    """OPEN: a call came at or after the end of ``open_duration`` (it is trial 1)."""
    TRIALS_PASSED: Final = "trials_passed"
    """HALF_OPEN: every trial finished and the rates over them stayed below thresholds."""
    TRIALS_FAILED: Final = "trials_failed"
    """HALF_OPEN: every trial finished and a rate over them reached its threshold."""
    HALF_OPEN_EXPIRED: Final = "half_open_expired"
    """HALF_OPEN: ``half_open_max_duration`` ran out before the trials finished."""
    FORKED: Final = "forked"
    """HALF_OPEN, in a forked child: a new stay, with trials of the child's own."""
    RESET: Final = "reset"
    """``reset()``: CLOSED with an empty window, from any state (CLOSED included)."""
    FORCE_OPEN: Final = "force_open"
    """``force_open()``."""
    DISABLE: Final = "disable"
    """``disable()``."""
    RECORD_ONLY: Final = "metrics_only"
    """``metrics_only()``."""
    REWINDOWED: Final = "rewindowed"
    """``reconfigure()`` changed the window of a state recording into it: a new stay."""


TRIGGERS: Final = (
    Trigger.TRIPPED,
    Trigger.OPEN_ELAPSED,
    Trigger.TRIALS_PASSED,
    Trigger.TRIALS_FAILED,
    Trigger.HALF_OPEN_EXPIRED,
    Trigger.FORKED,
    Trigger.RESET,
    Trigger.FORCE_OPEN,
    Trigger.DISABLE,
    Trigger.RECORD_ONLY,
    Trigger.REWINDOWED,
)
"""Every trigger."""


def _manual(state: CircuitState) -> dict[str, CircuitState]:
    """The controls, from ``state``: asking for the state it is in is no transition."""
    manual = {
        Trigger.RESET: CLOSED,
        Trigger.FORCE_OPEN: FORCED_OPEN,
        Trigger.DISABLE: DISABLED,
        Trigger.RECORD_ONLY: METRICS_ONLY,
    }
    return {trigger: to for trigger, to in manual.items() if to is not state or to is CLOSED}


TRANSITIONS: Final[dict[CircuitState, dict[str, CircuitState]]] = {
    CLOSED: {Trigger.TRIPPED: OPEN, Trigger.REWINDOWED: CLOSED, **_manual(CLOSED)},
    OPEN: {Trigger.OPEN_ELAPSED: HALF_OPEN, **_manual(OPEN)},
    HALF_OPEN: {
        Trigger.TRIALS_PASSED: CLOSED,
        Trigger.TRIALS_FAILED: OPEN,
        Trigger.HALF_OPEN_EXPIRED: OPEN,
        Trigger.FORKED: HALF_OPEN,
        **_manual(HALF_OPEN),
    },
    # The manual states leave only by hand: FORCED_OPEN never moves to HALF_OPEN by
    # itself, METRICS_ONLY never opens, DISABLED records nothing that could open it.
    FORCED_OPEN: _manual(FORCED_OPEN),
    DISABLED: {Trigger.REWINDOWED: DISABLED, **_manual(DISABLED)},
    METRICS_ONLY: {Trigger.REWINDOWED: METRICS_ONLY, **_manual(METRICS_ONLY)},
}
"""Every state change a breaker makes: ``TRANSITIONS[state][trigger]`` is the new state.

A trigger leading to the state it leaves (``RESET`` in CLOSED, ``FORKED``,
``REWINDOWED``) starts a new stay there (a new epoch, a fresh window) and emits no transition event.
"""


class TransitionError(RuntimeError):
    """A breaker was asked for a transition its table does not have: a bug in resilient."""


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


class OpenFor:
    """Queued with the events: ask a callable ``open_duration`` once the lock is released."""

    __slots__ = ("at", "attempt", "epoch")

    def __init__(self, epoch: Epoch, at: float, attempt: int) -> None:
        self.epoch = epoch
        self.at = at
        self.attempt = attempt


# What a breaker holds until it needs its own (most of thousands of breakers never do):
# shared, and immutable, so that a write to one by mistake raises instead of reaching
# every breaker. Each is replaced under the breaker's lock before its first write.
NO_TRIALS: Final[set[TrialRef]] = cast("set[TrialRef]", frozenset())
"""A breaker's trials before its first half-open stay."""
NO_TRIALS_LOST: Final[list[TrialRef]] = cast("list[TrialRef]", ())
"""A breaker's lost trials before its first half-open stay."""
NO_LISTENERS: Final[list[Listener]] = cast("list[Any]", ())
"""A breaker's own listeners before the first ``add_listener()``."""
UNCOUNTED: Final[itertools.count[int]] = itertools.count()
"""A count a breaker has not needed yet: never advanced, so ``counted()`` reads 0."""
