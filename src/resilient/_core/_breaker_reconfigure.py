"""A circuit breaker's options changed in place, keeping its state and its window.

``CircuitBreaker.reconfigure()`` checks the new options by building a throwaway
``BreakerCore`` from them (the one list of checks, ``_breaker_options.OPTIONS``), outside
every lock; :func:`adopt` then takes the checked values from it under
the breaker's lock:

- The state stays, and so do the totals, the transition counts and an OPEN stay's
  deadline (a new ``open_duration`` counts from the next opening).
- Thresholds, ``minimum_calls``, predicates and slow-call detection apply at once: a
  CLOSED window that meets the new thresholds opens the breaker, and a HALF_OPEN stay
  whose finished trials reach a lowered ``half_open_calls`` decides at once.
- A new ``window`` replaces the window of a state that records into it (CLOSED,
  METRICS_ONLY, DISABLED) as a new stay, so that calls admitted before the change are
  reported but not counted (as at any transition); a count window's most recent
  outcomes are carried over, as many as fit. A time window, or a change of kind, starts
  empty. OPEN keeps the window that tripped it; HALF_OPEN its trials.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from resilient._core._atomic import counted
from resilient._core._breaker_state import _ADMIT_ALL, CLOSED, HALF_OPEN, Trigger
from resilient._core._breaker_timing import DURATIONS
from resilient._core._window import EMPTY, CountWindow, Window

if TYPE_CHECKING:
    from resilient._core._breaker import BreakerCore

__all__ = ["adopt", "carry"]


def carry(old: Window, new: Window, claimed: int) -> None:
    """Copy ``old``'s most recent outcomes into the empty ``new``, as many as fit.

    Both are count windows claiming their slots from one counter, ``claimed`` draws so
    far: the outcome of draw ``j`` is at slot ``j % size``, so the last draws are read
    from ``old`` and written where ``new`` holds draw ``j``, and its next claim evicts
    the oldest carried outcome first. Anything else carries nothing.
    """
    if not isinstance(old, CountWindow) or not isinstance(new, CountWindow):
        return
    kept = min(old.size, new.size)
    outcomes, durations = old._outcomes, old._durations
    for draw in range(max(claimed - kept, 0), claimed):
        slot = draw % old.size
        code = outcomes[slot]
        if code == EMPTY:
            continue
        duration = 0.0 if durations is None else durations[slot]
        measured = not math.isnan(duration)
        new.record_at(draw % new.size, code, duration if measured else 0.0)
        if not measured and new._durations is not None:
            new._durations[draw % new.size] = math.nan  # not measured: still says so


def adopt(core: BreakerCore, fresh: BreakerCore, changed: frozenset[str]) -> list[Any]:
    """Take the options of ``fresh`` (checked) into ``core``, keeping state.

    Returns the events to dispatch once the lock is released (a transition the new
    options caused).
    """
    events: list[Any] = []
    with core._lock:
        core._failure_threshold = fresh._failure_threshold
        core._slow_threshold = fresh._slow_threshold
        core._slow_duration = fresh._slow_duration
        core._template = fresh._template
        core._minimum_calls = fresh._minimum_calls
        core._open_duration = fresh._open_duration
        if "open_duration" in changed:
            core._last_open_duration = fresh._last_open_duration
        core._half_open_max = fresh._half_open_max
        core._record = fresh._record
        core._record_rejections = fresh._record_rejections
        core._ignore = fresh._ignore
        core._record_result = fresh._record_result
        core._timed_by_config = fresh._timed_by_config
        core._check_every_call = fresh._check_every_call
        core._fast_capable = fresh._fast_capable
        timed = core._timed_by_config or (DURATIONS.wanted and core.name is not None)
        state = core._state
        if "window" in changed and state in _ADMIT_ALL:
            old = core._window
            core._set_timed(timed)  # the new window is made measuring or not
            core._fire(Trigger.REWINDOWED, events)
            carry(old, core._window, counted(core._claims))
        elif "half_open_calls" in changed and state is HALF_OPEN:
            # The trials' window is resized in place, this stay's trials still counted.
            old = core._window
            core._half_open_calls = fresh._half_open_calls
            core._window = core._new_window(core._half_open_calls)
            core._epoch.window = core._window
            carry(old, core._window, counted(core._claims))
        core._half_open_calls = fresh._half_open_calls
        core._set_timed(timed)
        if state is CLOSED and core._tripped(core._window, core._minimum_calls):
            core._fire(Trigger.TRIPPED, events, core._clock.monotonic())
        elif state is HALF_OPEN and core._half_open_done >= core._half_open_calls:
            core._decide(events)
    return events
