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

import collections
import itertools
import logging
import math
from array import array
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from resilient._core import _events
from resilient._core._atomic import LOCKED, counted
from resilient._core._breaker_metrics import BreakerReadouts
from resilient._core._breaker_options import OPTIONS, Matcher, OpenDuration, named_rejections
from resilient._core._breaker_state import (
    _ADMIT_ALL,
    CLOSED,
    DISABLED,
    HALF_OPEN,
    METRICS_ONLY,
    OPEN,
    TRANSITIONS,
    CircuitState,
    Epoch,
    TransitionError,
    Trial,
    TrialRef,
    Trigger,
)
from resilient._core._breaker_timing import DURATIONS
from resilient._core._clock import TimeSource
from resilient._core._errors import CircuitOpenError, MisuseError, RejectedError
from resilient._core._events import (
    GLOBAL_LISTENERS,
    NOTABLE_LISTENERS,
    EventSource,
    log_transition,
)
from resilient._core._fork import new_lock
from resilient._core._outcome import NO_RESULT
from resilient._core._validate import check_duration, check_name
from resilient._core._window import FAILURE, SLOW, SUCCESS, CountWindow, TimeWindow, Window

if TYPE_CHECKING:
    # The record classes are named through `_events.` in code: their module loads at a
    # breaker's first event (a listener, a transition), not when the breaker is imported.
    from resilient._core._records import Event, StateTransition

__all__ = ["BreakerCore"]

logger = logging.getLogger("resilient")

KIND: Final = "circuit_breaker"


class BreakerCore(BreakerReadouts, EventSource):
    """The circuit breaker state machine; see the module docstring."""

    __slots__ = (
        "_check_every_call",
        "_claims",
        "_clock",
        "_epoch",
        "_failure_threshold",
        "_fast_capable",
        "_free",
        "_half_open_calls",
        "_half_open_done",
        "_half_open_max",
        "_half_open_since",
        "_half_open_taken",
        "_ignore",
        "_ignored_calls",
        "_last_open_duration",
        "_lock",
        "_locked_claims",
        "_locked_outcomes",
        "_lost",
        "_minimum_calls",
        "_monotonic",
        "_not_permitted",
        "_open_attempt",
        "_open_duration",
        "_open_until",
        "_record",
        "_record_rejections",
        "_record_result",
        "_rejection_logged",
        "_rejections",
        "_rejections_base",
        "_retired_rejections",
        "_slow_duration",
        "_slow_threshold",
        "_state",
        "_template",
        "_timed",
        "_timed_by_config",
        "_transitions",
        "_trials",
        "_window",
        "name",
    )

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
        # Trials in flight, and those lost to interrupts (see TrialRef).
        self._trials: set[TrialRef] = set()
        self._lost: collections.deque[TrialRef] = collections.deque()
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
        if name is not None:
            DURATIONS.enroll(self)  # constructed: a duration exporter may switch it now

    def _start_totals(self) -> None:
        # Totals since creation, for OpenTelemetry and metrics(), at no cost on the hot
        # path: every count window of this breaker claims its ring slots from this one
        # counter, so the lock-free successes are the claims that no locked path made.
        self._claims = itertools.count()
        self._locked_claims = 0
        self._locked_outcomes = [0, 0]  # successes, failures reported under the lock
        self._ignored_calls = itertools.count()
        self._transitions: dict[tuple[CircuitState, CircuitState], int] = {}
        # Never replaced, so no lock-free increment is lost at a transition; each stay's
        # rejections are counted from the base it started at.
        self._rejections = itertools.count()
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

    def _fire(self, trigger: str, events: list[Event | _OpenFor], at: float = 0.0) -> None:
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
        self._trials.clear()  # the permits of an earlier stay no longer matter
        self._epoch = Epoch(
            state,
            self._window,
            state is CLOSED and self._fast_capable and not self._timed,
            self._timed,
        )
        self._free = self._epoch if state in _ADMIT_ALL else None
        if previous is not state:
            key = (previous, state)
            self._transitions[key] = self._transitions.get(key, 0) + 1
            events.append(self._transition_event(previous, state))
        if state is OPEN and not isinstance(self._open_duration, float):
            # A callable open_duration is the user's code, so it is not called here,
            # under the lock: the stay starts with the last duration, and _dispatch
            # (once the lock is released) asks the callable and moves the deadline if
            # the breaker is still in this stay.
            events.append(_OpenFor(self._epoch, at, self._open_attempt))

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

    def _open_for(self, pending: _OpenFor) -> None:
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

    def _expire(self, now: float, events: list[Event | _OpenFor]) -> None:
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

    def _dispatch(self, events: list[Event | _OpenFor]) -> None:
        for event in events:
            if type(event) is _OpenFor:
                self._open_for(event)
        for event in events:
            if isinstance(event, _events.StateTransition):
                log_transition(event)
        if self.observed():
            for event in events:
                if not isinstance(event, _OpenFor):
                    self.emit(event)

    # -- the adapters' interface -------------------------------------------------------

    def admit_checked(self) -> Epoch | Trial | CircuitOpenError:
        """Admit a call outside the free path: a ticket, or the error to raise.

        The error is returned, not raised, so that the adapter raises it in its own
        frame: each frame a raise passes through costs ~200 ns, and a rejection is the
        path every caller takes while a dependency is down.
        """
        state = self._state
        if state is OPEN and self._half_open_max is None:
            # The common rejection: still OPEN, decided without the lock (reading a
            # stale deadline at a transition only moves one rejection by an instant).
            now = self._monotonic()
            open_until = self._open_until
            if now < open_until:
                # One C call, atomic: no lock on this path. It returns the count before,
                # so the first rejection of this stay in OPEN is known for free.
                if LOCKED:  # pragma: no cover - the RESILIENT_FORCE_LOCKED=1 run (see _atomic)
                    with self._lock:
                        first = next(self._rejections) == self._rejections_base
                else:
                    first = next(self._rejections) == self._rejections_base
                error = CircuitOpenError._quick(self.name, open_until - now, OPEN)
                # EventSource.observed(), inlined: the path every caller takes while a
                # dependency is down, where the call would cost 4% (50 ns in 1.25 us).
                if first or self._listeners or GLOBAL_LISTENERS or NOTABLE_LISTENERS:
                    self._report_rejection(error, None, first=first)
                return error
        events: list[Event | _OpenFor] = []
        retry_after: float | None = None
        ticket: Trial | None
        with self._lock:
            state = self._state
            if state in _ADMIT_ALL:
                return self._epoch
            if self._lost:
                self._take_back_lost(events)
            now = self._clock.monotonic()
            self._expire(now, events)
            if self._state is OPEN and now >= self._open_until:
                self._fire(Trigger.OPEN_ELAPSED, events, now)
            state = self._state
            if state is HALF_OPEN and self._half_open_taken < self._half_open_calls:
                ticket = Trial(self._epoch)
                ticket.ref = ref = TrialRef(ticket, self._lost.append)
                # No call between the count and the registration: an interrupt (raised
                # only at a call) finds the permit either not taken or owned by a
                # ticket whose collection gives it back.
                self._half_open_taken += 1
                self._trials.add(ref)
            else:
                ticket = None
                self._not_permitted += 1
                first = not self._rejection_logged
                self._rejection_logged = True
                if state is OPEN:
                    retry_after = self._open_until - now
        if ticket is None:
            return self._reject(state, retry_after, events, first=first)
        if events:
            try:
                self._dispatch(events)
            except BaseException:
                # An interrupt in a listener or log handler: the caller never gets its
                # ticket, so the trial slot it took must be given back here.
                self.on_cancel(ticket)
                raise
        return ticket

    def _reject(
        self,
        state: CircuitState,
        retry_after: float | None,
        events: list[Event | _OpenFor],
        *,
        first: bool,
    ) -> CircuitOpenError:
        error = CircuitOpenError._quick(self.name, retry_after, state)
        self._report_rejection(error, events, first=first)
        return error

    def _report_rejection(
        self, error: CircuitOpenError, events: list[Event | _OpenFor] | None, *, first: bool
    ) -> None:
        if self.observed():
            events = [*(events or ()), _events.CallRejected(self.name, KIND, error)]
        # Logged once per stay in a rejecting state, not per call: an open breaker may
        # refuse thousands of calls a second, each counted in metrics() and, for those
        # who listen, reported as an event.
        if first and logger.isEnabledFor(logging.DEBUG):
            logger.debug("circuit breaker %r is rejecting calls: %s", self.name, error)
        if events:
            self._dispatch(events)

    def _take_back_lost(self, events: list[Event | _OpenFor]) -> None:
        """Return the permits of trials lost to interrupts (see :class:`Trial`)."""
        lost, trials = self._lost, self._trials
        while lost:
            # Peeked, handled, then popped: an interrupt after any call here leaves the
            # reference in the deque, found handled (not in `trials`) next time.
            ref = lost[-1]
            if ref in trials:  # not ended, nor of a stay that is over
                if ref.epoch is self._epoch and self._state is HALF_OPEN:
                    self._half_open_taken -= 1
                trials.discard(ref)
            lost.pop()
        done = self._half_open_done >= self._half_open_calls
        if self._state is HALF_OPEN and done:  # pragma: no cover - tests/test_interrupts.py
            # An interrupt came between the last trial's count and the decision.
            self._decide(events)

    def _decide(self, events: list[Event | _OpenFor]) -> None:
        """Every trial has finished: their rates decide between OPEN and CLOSED."""
        if self._tripped(self._window, 1):
            self._fire(Trigger.TRIALS_FAILED, events, self._clock.monotonic())
        else:
            self._fire(Trigger.TRIALS_PASSED, events)

    def on_success(self, ticket: Epoch | Trial, result: Any, duration: float) -> None:
        """Report that an admitted call returned ``result`` after ``duration`` seconds."""
        if ticket.fast:
            # The hot path: a success in CLOSED claims its ring slot without the lock.
            # If the slot already holds a success, overwriting it changes no count, so
            # there is nothing to write. (A stale ticket only moves the head of a window
            # that no longer records, which is harmless.)
            window: CountWindow = ticket.window  # type: ignore[union-attr, assignment]
            slot = next(window._next) % window.size
            if not window._outcomes[slot]:
                if self._listeners or GLOBAL_LISTENERS:
                    self.emit(
                        _events.CallSucceeded(self.name, KIND, None, recorded=ticket is self._epoch)
                    )
                return
            self._finish(ticket, SUCCESS, duration, None, None, slot)
            return
        self._on_success_checked(ticket, result, duration)

    def _on_success_locked(  # pragma: no cover - the RESILIENT_FORCE_LOCKED=1 run
        self, ticket: Epoch | Trial, result: Any, duration: float
    ) -> None:
        """:meth:`on_success` where ``next()`` on a counter is not atomic (see ``_atomic``).

        The same path, with the slot claimed (and read) under the lock: a success over a
        success still writes nothing, at the cost of one uncontended lock.
        """
        if ticket.fast:
            window: CountWindow = ticket.window  # type: ignore[union-attr, assignment]
            with self._lock:
                slot = next(window._next) % window.size
                unchanged = not window._outcomes[slot]
            if unchanged:
                if self._listeners or GLOBAL_LISTENERS:
                    self.emit(
                        _events.CallSucceeded(self.name, KIND, None, recorded=ticket is self._epoch)
                    )
                return
            self._finish(ticket, SUCCESS, duration, None, None, slot)
            return
        self._on_success_checked(ticket, result, duration)

    if LOCKED:  # pragma: no cover - the RESILIENT_FORCE_LOCKED=1 run
        on_success = _on_success_locked  # chosen once, at import: no test on the hot path

    def _on_success_checked(self, ticket: Epoch | Trial, result: Any, duration: float) -> None:
        check = self._record_result
        try:
            failed = check is not None and result is not NO_RESULT and self._failed(check, result)
        except BaseException:
            self.on_cancel(ticket)  # KeyboardInterrupt in record_result: the permit comes back
            raise
        outcome = FAILURE if failed else SUCCESS
        slow = self._slow_duration
        if slow is not None and duration > slow:
            outcome |= SLOW
        self._finish(ticket, outcome, duration, None, result if outcome & FAILURE else None)

    def on_error(self, ticket: Epoch | Trial, exc: BaseException, duration: float) -> None:
        """Report that an admitted call raised ``exc`` (an :class:`Exception`).

        A rejection by one of the library's own policies inside the breaker (a rate
        limit, a full bulkhead, an inner open breaker) says nothing about the
        dependency: it is ignored unless ``record`` names its class. Nor does a
        :class:`MisuseError` (a bug in the calling code), which is always ignored.
        """
        if type(exc) is MisuseError:
            self._ignored(ticket, exc, duration)
            return
        try:
            ignored = self._ignore is not None and self._ignore(exc)
            if not ignored and isinstance(exc, RejectedError):
                named = self._record_rejections
                ignored = named is None or not isinstance(exc, named)
            failed = not ignored and self._record is not None and self._record(exc)
        except Exception:
            logger.exception(
                "the record/ignore predicate of breaker %r raised; counting the call as a failure",
                self.name,
            )
            ignored, failed = False, True
        except BaseException:
            self.on_cancel(ticket)  # KeyboardInterrupt in a predicate: the permit comes back
            raise
        if ignored:
            self._ignored(ticket, exc, duration)
            return
        slow = self._slow_duration
        outcome = SLOW if slow is not None and duration > slow else SUCCESS
        self._finish(ticket, outcome | (FAILURE if failed else 0), duration, exc, None)

    def on_cancel(self, ticket: Epoch | Trial) -> None:
        """Report that an admitted call was cancelled or interrupted: give its permit back.

        Only a half-open trial holds a permit; giving it back twice is harmless.
        """
        if type(ticket) is not Trial:
            return
        with self._lock:
            if ticket.live:
                # Every change before the first call, for the same reason as above.
                ticket.live = False
                if ticket.epoch is self._epoch and self._state is HALF_OPEN:
                    self._half_open_taken -= 1
                self._trials.discard(ticket.ref)

    # -- outcome bookkeeping -----------------------------------------------------------

    def _failed(self, check: Callable[[Any], bool], result: Any) -> bool:
        try:
            return bool(check(result))
        except Exception:
            logger.exception(
                "record_result of breaker %r raised; counting the result as a success",
                self.name,
            )
            return False

    def _ignored(self, ticket: Epoch | Trial, exc: BaseException, duration: float) -> None:
        if LOCKED:  # pragma: no cover - the RESILIENT_FORCE_LOCKED=1 run
            with self._lock:
                next(self._ignored_calls)
        else:
            next(self._ignored_calls)
        self.on_cancel(ticket)  # an ignored trial gives its half-open slot back
        if self._listeners or GLOBAL_LISTENERS:
            self.emit(_events.CallIgnored(self.name, KIND, exc, duration if self._timed else None))

    def _finish(
        self,
        ticket: Epoch | Trial,
        outcome: int,
        duration: float,
        exc: BaseException | None,
        result: Any,
        slot: int | None = None,
    ) -> None:
        events: list[Event | _OpenFor] = []
        trial = ticket if type(ticket) is Trial else None
        with self._lock:
            if self._half_open_max is not None and self._state is HALF_OPEN:
                self._expire(self._clock.monotonic(), events)
            self._locked_outcomes[outcome & FAILURE] += 1
            if slot is not None:
                self._locked_claims += 1  # claimed on the lock-free path, finished here
            if trial is None:
                epoch: Epoch = ticket  # type: ignore[assignment]
                recorded = epoch is self._epoch
            else:
                # A trial whose permit was given back already decides nothing.
                epoch = trial.epoch
                recorded = trial.live and epoch is self._epoch
            if recorded:
                state = epoch.state
                window = self._window
                if state is not DISABLED and isinstance(window, CountWindow) and slot is None:
                    self._locked_claims += 1  # record() below claims a slot
                if state is CLOSED:
                    if slot is None:
                        window.record(outcome, duration)
                    else:
                        window.record_at(slot, outcome, duration)  # type: ignore[attr-defined]
                    if (
                        outcome or self._check_every_call or window.calls == self._minimum_calls
                    ) and self._tripped(window, self._minimum_calls):
                        self._fire(Trigger.TRIPPED, events, self._clock.monotonic())
                elif state is HALF_OPEN:
                    window.record(outcome, duration)
                    # No call between these two lines: an interrupt (raised only at a
                    # call) sees the trial either returnable or counted, never lost.
                    self._half_open_done += 1
                    if trial is not None:
                        trial.live = False
                        self._trials.discard(trial.ref)
                    if self._half_open_done >= self._half_open_calls:
                        self._decide(events)
                elif state is METRICS_ONLY:
                    window.record(outcome, duration)
                else:  # DISABLED records nothing
                    recorded = False
            if trial is not None:
                trial.live = False  # finished: its permit is not given back later
                self._trials.discard(trial.ref)
        if self._listeners or GLOBAL_LISTENERS:
            events.insert(0, self._outcome(outcome, duration, exc, result, recorded=recorded))
        if events:
            self._dispatch(events)

    def _outcome(
        self,
        outcome: int,
        duration: float,
        exc: BaseException | None,
        result: Any,
        *,
        recorded: bool,
    ) -> Event:
        timed = duration if self._timed else None
        slow = bool(outcome & SLOW)
        if outcome & FAILURE:
            return _events.CallFailed(self.name, KIND, exc, result, timed, slow, recorded)
        return _events.CallSucceeded(self.name, KIND, timed, slow, recorded)

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
        events: list[Event | _OpenFor] = []
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
        events: list[Event | _OpenFor] = []
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
            timed = on or self._timed_by_config
            if timed is self._timed:
                return
            self._timed = timed
            # Changed in place, not replaced: calls holding this ticket stay recorded.
            self._epoch.fast = self._state is CLOSED and self._fast_capable and not timed
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


class _OpenFor:
    """Queued with the events: ask a callable ``open_duration`` once the lock is released."""

    __slots__ = ("at", "attempt", "epoch")

    def __init__(self, epoch: Epoch, at: float, attempt: int) -> None:
        self.epoch = epoch
        self.at = at
        self.attempt = attempt
