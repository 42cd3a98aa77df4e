"""The circuit breaker's state machine, sans I/O.

Every decision of the breaker lives here, in one class, as Resilience4j's state machine
does it: when to open, whom to admit in half-open, how long to stay open. The class
never sleeps, never awaits and never runs the user's function; the adapters in
``_breaker.py`` do that and report back through :meth:`BreakerCore.on_success`,
:meth:`~BreakerCore.on_error` and :meth:`~BreakerCore.on_cancel`.

Transitions are data: ``_breaker_state.TRANSITIONS`` lists, for each state, the
triggers it accepts and where each leads, and :meth:`BreakerCore._fire` is the one
method that changes state (a test checks that no other code writes it). The checks of
the options live in ``_breaker_options``.

Concurrency: state is guarded by one lock that is never held across a user call or a
listener. Each stay in a state is an :class:`Epoch`; admission (``_free``, else
:meth:`~BreakerCore.admit_checked`) hands the caller the current epoch as its ticket,
and an outcome whose ticket is no longer the current epoch (the breaker changed state
while the call ran) is reported but never counted, so a slow call admitted while CLOSED
cannot close an OPEN breaker.

The CLOSED hot path takes no lock to admit: ``_free`` holds the current epoch while the
state admits every call (CLOSED, DISABLED, METRICS_ONLY) and ``None`` otherwise, and one
attribute read is atomic.
"""

from __future__ import annotations

import itertools
import logging
import math
from array import array
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from resilient._core import _events
from resilient._core._atomic import counted
from resilient._core._breaker_calls import KIND, BreakerCalls
from resilient._core._breaker_metrics import BreakerReadouts
from resilient._core._breaker_options import OPTIONS, Matcher, OpenDuration, named_rejections
from resilient._core._breaker_state import (
    _ADMIT_ALL,
    CLOSED,
    FORCED_OPEN,
    HALF_OPEN,
    NO_LISTENERS,
    NO_TRIALS,
    NO_TRIALS_LOST,
    OPEN,
    TRANSITIONS,
    UNCOUNTED,
    CircuitState,
    Epoch,
    OpenFor,
    TransitionError,
    TrialRef,
    Trigger,
)
from resilient._core._breaker_timing import DURATIONS
from resilient._core._clock import TimeSource
from resilient._core._events import (
    EventSource,
    log_transition,
)
from resilient._core._fork import new_lock
from resilient._core._validate import check_duration, check_name
from resilient._core._window import CountWindow, TimeWindow, Window

if TYPE_CHECKING:
    # The record classes are named through `_events.` in code: their module loads at a
    # breaker's first event (a listener, a transition), not when the breaker is imported.
    from resilient._core._records import Event, StateTransition

__all__ = ["KIND", "BreakerCore"]

logger = logging.getLogger("resilient")


class BreakerCore(BreakerCalls, BreakerReadouts, EventSource):
    """The circuit breaker state machine; see the module docstring."""

    __slots__ = ()  # every slot is declared once, on BreakerCalls

    def __init__(self, name: str | None, *, clock: TimeSource, **options: object) -> None:
        """Check ``options`` (every option of ``CircuitBreaker`` but ``name`` and ``clock``).

        They come as keywords, each checked by its entry in :data:`OPTIONS`: besides
        the public signature, the one list of them.
        """
        super().__init__()
        self.name = check_name(name)
        given, expected = options.keys(), OPTIONS.keys()
        if given != expected:
            raise TypeError(
                "BreakerCore() takes every option of CircuitBreaker: "
                f"missing {sorted(expected - given)}, unknown {sorted(given - expected)}"
            )
        # Checked in the order of the public signature: of two bad options, the first
        # is reported.
        checked = {option: check(option, options[option]) for option, check in OPTIONS.items()}
        self._failure_threshold: float = checked["failure_rate_threshold"]
        self._slow_threshold: float = checked["slow_call_rate_threshold"]
        self._slow_duration: float | None = checked["slow_call_duration"]
        window: CountWindow | TimeWindow = checked["window"]
        # Only what a fresh window needs is kept: the user's window object holds a
        # ring (and durations) this breaker never records into.
        self._template: Window | int = window.size if type(window) is CountWindow else window
        minimum: int = checked["minimum_calls"]
        if isinstance(window, CountWindow):
            minimum = min(minimum, window.size)
        self._minimum_calls = minimum
        # A callable is validated by calling it for the first opening; that value is also
        # the fallback should it fail later.
        self._open_duration: OpenDuration
        self._open_duration, self._last_open_duration = checked["open_duration"]
        self._half_open_calls: int = checked["half_open_calls"]
        self._half_open_max: float | None = checked["half_open_max_duration"]
        self._record: Matcher = checked["record"]
        self._record_rejections = named_rejections(options["record"])
        self._ignore: Matcher = checked["ignore"]
        self._record_result: Callable[[Any], bool] | None = checked["record_result"]
        self._clock = clock  # resolved by the adapter
        self._monotonic = clock.monotonic  # bound once: read on every rejection
        # Pay only for what is configured: durations are measured only when slow-call
        # detection or a time window needs them.
        self._timed_by_config = self._slow_duration is not None or window.evicts_by_time
        # A duration histogram records named breakers only (the name is its attribute).
        self._timed = self._timed_by_config or (DURATIONS.wanted and name is not None)
        # In a count window a success can never raise a rate, so thresholds need checking
        # only on bad outcomes; a time window may evict successes on any call.
        self._check_every_call = window.evicts_by_time
        self._lock = new_lock(self)
        self._open_attempt = 0
        self._open_until = 0.0
        self._half_open_since = 0.0
        self._half_open_taken = 0
        self._half_open_done = 0
        # Trials in flight, and those lost to interrupts (see TrialRef): made at the
        # first half-open stay, as most breakers never have one (a set and a deque cost
        # ~1 KiB, a third of a breaker).
        self._trials: set[TrialRef] = NO_TRIALS
        self._lost: list[TrialRef] = NO_TRIALS_LOST
        # Nobody listens yet: a shared empty tuple, not a list of its own (see
        # add_listener), so the success path reads no object of this breaker's for it.
        self._listeners = NO_LISTENERS
        # A plain success may skip the lock (see on_success) when nothing but the ring
        # needs it: a count window, no record_result, and no duration to measure.
        self._fast_capable = self._record_result is None and isinstance(window, CountWindow)
        self._start_totals()
        self._window = self._new_window()
        self._not_permitted = 0
        self._state = CLOSED
        self._rejection_logged = False
        self._epoch = Epoch(
            CLOSED, self._window, self._fast_capable and not self._timed, self._timed
        )
        self._free: Epoch | None = self._epoch
        self._settled: Epoch | None = None
        if name is not None:
            DURATIONS.enroll(self)  # constructed: a duration exporter may switch it now

    def _start_totals(self) -> None:
        # Totals since creation, for OpenTelemetry and metrics(), at no cost on the hot
        # path: every count window of this breaker claims its ring slots from this one
        # counter, so the lock-free successes are the claims that no locked path made.
        self._claims = itertools.count()
        self._locked_claims = 0
        self._locked_successes = 0  # reported under the lock
        self._locked_failures = 0
        # Made at first use (an ignored call, a transition, the first OPEN stay): most
        # breakers never need them.
        self._ignored_calls = UNCOUNTED
        self._transitions: dict[tuple[CircuitState, CircuitState], int] | None = None
        # Made at the first OPEN stay, the only one counting lock-free, and then never
        # replaced, so no lock-free increment is lost at a transition; each stay's
        # rejections are counted from the base it started at.
        self._rejections = UNCOUNTED
        self._rejections_base = 0
        self._retired_rejections = 0

    # -- helpers (call with the lock held) ---------------------------------------------

    def _new_window(self, size: int | None = None) -> Window:
        if size is not None:
            window: Window = CountWindow(size, _durations=self._timed)
        else:
            template = self._template
            if isinstance(template, int):
                window = CountWindow(template, _durations=self._timed)
            else:
                window = template.fresh(self._clock, durations=self._timed)
        if isinstance(window, CountWindow):
            # A ring slot is any index modulo the size, so windows may share a counter.
            window._next = self._claims
        return window

    def _restart_rejections(self) -> None:
        """Start counting a new stay's rejections (the old ones go into the total)."""
        drawn = counted(self._rejections)
        self._retired_rejections += self._not_permitted + drawn - self._rejections_base
        self._not_permitted = 0
        self._rejections_base = drawn

    def _fire(self, trigger: str, events: list[Event | OpenFor], at: float = 0.0) -> None:
        """Change state as :data:`TRANSITIONS` says ``trigger`` does: the only code that does.

        Entering a state starts a new stay there (a new epoch, so that calls admitted
        before it are reported but never counted) and records the transition event;
        a trigger leading back to the state it leaves (``RESET`` in CLOSED, ``FORKED``)
        starts a new stay and records none. ``at`` is when the stay begins: OPEN counts
        ``open_duration`` from it, HALF_OPEN ``half_open_max_duration``.
        """
        previous = self._state
        state = TRANSITIONS[previous].get(trigger)
        if state is None:
            raise TransitionError(
                f"breaker {self.name!r} has no transition on {trigger} from "
                f"{previous.value} (a bug in resilient: please report it)"
            )
        if (state is OPEN or state is FORCED_OPEN) and self._rejections is UNCOUNTED:
            # Both refuse without the lock, counting on `_rejections`: never on the
            # counter every breaker shares until then. counted(UNCOUNTED) is 0: no jump.
            self._rejections = itertools.count()
        if state is OPEN:
            # OPEN keeps the window that tripped it (metrics() shows why), and its
            # rejections count on from the half-open stay's.
            self._open_attempt += 1
            duration = self._open_duration
            if not isinstance(duration, float):
                duration = self._last_open_duration
            self._open_until = at + duration
        else:
            if state is HALF_OPEN:
                if self._trials is NO_TRIALS:
                    self._trials, self._lost = set(), []
                self._window = self._new_window(self._half_open_calls)
                self._half_open_since = at
                self._half_open_taken = 0
                self._half_open_done = 0
            else:
                if state is CLOSED:
                    self._open_attempt = 0  # the backoff starts again once closed
                self._window = self._new_window()
            self._restart_rejections()
        self._state = state
        self._rejection_logged = False
        if self._trials:
            self._trials.clear()  # the permits of an earlier stay no longer matter
        self._settled = None  # a fresh window, or OPEN's: not full of successes
        self._epoch = Epoch(
            state,
            self._window,
            state is CLOSED and self._fast_capable and not self._timed,
            self._timed,
        )
        self._free = self._epoch if state in _ADMIT_ALL else None
        if previous is not state:
            key = (previous, state)
            if self._transitions is None:
                self._transitions = {}
            self._transitions[key] = self._transitions.get(key, 0) + 1
            events.append(self._transition_event(previous, state))
        if state is OPEN and not isinstance(self._open_duration, float):
            # A callable open_duration is the user's code, so it is not called here,
            # under the lock: the stay starts with the last duration, and _dispatch
            # (once the lock is released) asks the callable and moves the deadline if
            # the breaker is still in this stay.
            events.append(OpenFor(self._epoch, at, self._open_attempt))

    def _transition_event(self, previous: CircuitState, state: CircuitState) -> StateTransition:
        if state is not OPEN:
            return _events.StateTransition(self.name, KIND, previous, state)
        window = self._window  # the window that tripped it: OPEN keeps it
        calls = window.calls
        return _events.StateTransition(
            self.name,
            KIND,
            previous,
            state,
            window.failures / calls if calls else 0.0,
            window.slow / calls if calls else 0.0,
            calls,
        )

    def _open_for(self, pending: OpenFor) -> None:
        """Ask a callable ``open_duration`` how long to stay open (never under the lock)."""
        backoff = self._open_duration
        assert not isinstance(backoff, float)  # noqa: S101 -- only queued for a callable
        try:
            seconds = check_duration("open_duration()", backoff(pending.attempt))
        except Exception:
            logger.exception(
                "open_duration(%d) of breaker %r failed; staying open %ss",
                pending.attempt,
                self.name,
                self._last_open_duration,
            )
            return
        with self._lock:
            if self._epoch is pending.epoch:
                self._last_open_duration = seconds
                self._open_until = pending.at + seconds

    def _expire(self, now: float, events: list[Event | OpenFor]) -> None:
        """Apply the time-driven transition of HALF_OPEN (``half_open_max_duration``)."""
        if self._state is HALF_OPEN and self._half_open_max is not None:
            deadline = self._half_open_since + self._half_open_max
            if now >= deadline:
                self._fire(Trigger.HALF_OPEN_EXPIRED, events, deadline)

    def _tripped(self, window: Window, minimum: int) -> bool:
        calls = window.calls
        if calls < minimum or not calls:
            return False
        return (
            window.failures / calls >= self._failure_threshold
            or window.slow / calls >= self._slow_threshold
        )

    def _dispatch(self, events: list[Event | OpenFor]) -> None:
        for event in events:
            if type(event) is OpenFor:
                self._open_for(event)
        for event in events:
            if isinstance(event, _events.StateTransition):
                log_transition(event)
        if self.observed():
            for event in events:
                if not isinstance(event, OpenFor):
                    self.emit(event)

    def _after_fork_in_child(self) -> None:
        # Trials taken by the parent's other threads will never report in a forked
        # child: a new half-open stay gives the child its own trials (outcomes of the
        # old stay's trials, if the forking thread had one, no longer count).
        if self._state is HALF_OPEN:
            self._fire(Trigger.FORKED, [], self._half_open_since)

    # -- controls and introspection ----------------------------------------------------

    @property
    def state(self) -> CircuitState:
        """The current state (a HALF_OPEN past ``half_open_max_duration`` reads OPEN)."""
        if self._half_open_max is None or self._state is not HALF_OPEN:
            return self._state
        events: list[Event | OpenFor] = []
        with self._lock:
            self._expire(self._clock.monotonic(), events)
            state = self._state
        self._dispatch(events)
        return state

    def control(self, trigger: str) -> None:
        """Apply a control: ``RESET``, ``FORCE_OPEN``, ``DISABLE`` or ``RECORD_ONLY``.

        Asking for the manual state the breaker is already in changes nothing (its
        window is kept); ``RESET`` always starts CLOSED afresh.
        """
        events: list[Event | OpenFor] = []
        with self._lock:
            # The one control a state's row lacks is the one naming that state.
            if trigger in TRANSITIONS[self._state]:
                self._fire(trigger, events)
        self._dispatch(events)

    def measure_durations(self, on: bool = True) -> None:
        """Measure every call's duration (for a duration histogram), or stop doing so.

        Turning it off returns to what the configuration needs: a breaker with
        slow-call detection or a time window keeps measuring.
        """
        with self._lock:
            self._set_timed(on or self._timed_by_config)

    def _set_timed(self, timed: bool) -> None:
        """Measure durations or stop (call with the lock held); the lock-free path follows.

        Also what ``reconfigure()`` calls after changing what the fast path depends on.
        """
        changed = timed is not self._timed
        self._timed = timed
        # Changed in place, not replaced: calls holding this ticket stay recorded.
        self._epoch.fast = self._state is CLOSED and self._fast_capable and not timed
        self._settle()
        if not changed:
            return
        self._epoch.timed = timed
        window = self._window
        if isinstance(window, CountWindow):
            if timed:
                # Slots already holding outcomes were not measured: NaN says so.
                window._durations = array("d", [math.nan]) * window.size
            else:
                # Lock-free successes would leave stale durations behind.
                window._durations = None
                window.total_duration = 0.0
