"""The circuit breaker's side that calls go through: admission and outcomes, sans I/O.

The adapters ask :meth:`BreakerCalls.admit_checked` for a ticket when the free path
(``_free``) does not admit, and report every call's end through
:meth:`~BreakerCalls.on_success`, :meth:`~BreakerCalls.on_error` and
:meth:`~BreakerCalls.on_cancel`. What those decide to change (open, close, half-open)
goes through ``BreakerCore._fire`` in ``_breaker.py``, the one place that changes
state; this module never writes it.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from resilient._core import _events
from resilient._core._atomic import LOCKED
from resilient._core._breaker_metrics import BreakerReadouts
from resilient._core._breaker_options import Matcher, classify_error
from resilient._core._breaker_state import (
    _ADMIT_ALL,
    CLOSED,
    DISABLED,
    FORCED_OPEN,
    HALF_OPEN,
    METRICS_ONLY,
    NO_LISTENERS,
    OPEN,
    UNCOUNTED,
    CircuitState,
    Epoch,
    OpenFor,
    Trial,
    TrialRef,
    Trigger,
)
from resilient._core._errors import (
    CircuitOpenError,
    RejectedError,
    circuit_open,
)
from resilient._core._events import (
    GLOBAL_LISTENERS,
    NOTABLE_LISTENERS,
    EventSource,
    Listener,
)
from resilient._core._outcome import NO_RESULT
from resilient._core._window import FAILURE, SLOW, SUCCESS, CountWindow, Window

if TYPE_CHECKING:
    # The record classes are named through `_events.` in code: their module loads at a
    # breaker's first event (a listener, a transition), not when the breaker is imported.
    from resilient._core._records import Event

__all__ = ["BreakerCalls"]

logger = logging.getLogger("resilient")


KIND: Final = "circuit_breaker"


class _HotSlots(EventSource):
    """The slots a CLOSED call reads, laid out first, next to ``_listeners``.

    CPython lays out a class's slots in name order after its base's, so slots declared
    here share the object's first cache line or two: with thousands of breakers, each
    line a call touches is one more likely cache miss (see docs/benchmarks.md).
    """

    __slots__ = ("_claims", "_free", "_settled", "_timed")


class BreakerCalls(BreakerReadouts, _HotSlots):
    """Admission and outcomes of :class:`~resilient._core._breaker.BreakerCore`.

    It holds the slots of the whole breaker (a mixin with slots of its own would give
    every breaker a ``__dict__``); ``BreakerCore`` sets them.
    """

    __slots__ = (
        "_check_every_call",
        "_clock",
        "_epoch",
        "_failure_threshold",
        "_fast_capable",
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
        "_locked_failures",
        "_locked_successes",
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
        "_timed_by_config",
        "_transitions",
        "_trials",
        "_window",
        "name",
    )

    if TYPE_CHECKING:  # written and defined by BreakerCore, which holds the slots
        _check_every_call: bool
        _failure_threshold: float
        _free: Epoch | None
        _half_open_done: int
        _half_open_since: float
        _ignore: Matcher
        _lost: list[TrialRef]
        _settled: Epoch | None
        _monotonic: Callable[[], float]
        _record: Matcher
        _record_rejections: tuple[type[RejectedError], ...] | None
        _record_result: Callable[[Any], bool] | None
        _rejection_logged: bool
        _slow_duration: float | None
        _slow_threshold: float
        _timed: bool
        _trials: set[TrialRef]
        name: str | None

        def _fire(self, trigger: str, events: list[Event | OpenFor], at: float = 0.0) -> None: ...
        def _expire(self, now: float, events: list[Event | OpenFor]) -> None: ...
        def _tripped(self, window: Window, minimum: int) -> bool: ...
        def _dispatch(self, events: list[Event | OpenFor]) -> None: ...

    # -- the adapters' interface -------------------------------------------------------

    def admit_checked(self) -> Epoch | Trial | CircuitOpenError:
        """Admit a call outside the free path: a ticket, or the error to raise.

        The error is returned, not raised, so that the adapter raises it in its own
        frame: each frame a raise passes through costs ~200 ns, and a rejection is the
        path every caller takes while a dependency is down.
        """
        state = self._state
        retry_after: float | None = None
        if state is OPEN and self._half_open_max is None:
            # The common rejections, still OPEN or FORCED_OPEN, are decided without the
            # lock (reading a stale state or deadline at a transition only moves one
            # rejection by an instant).
            retry_after = self._open_until - self._monotonic()
            lock_free = retry_after > 0
        else:
            lock_free = state is FORCED_OPEN
        if lock_free:
            # One C call, atomic: no lock on this path. It returns the count before,
            # so the first rejection of this stay is known for free.
            if LOCKED:  # pragma: no cover - the RESILIENT_FORCE_LOCKED=1 run (see _atomic)
                with self._lock:
                    first = next(self._rejections) == self._rejections_base
            else:
                first = next(self._rejections) == self._rejections_base
            error = circuit_open(self.name, retry_after, state)
            # EventSource.observed(), inlined: the path every caller takes while a
            # dependency is down, where the call would cost 4% (50 ns in 1.25 us).
            if first or self._listeners or GLOBAL_LISTENERS or NOTABLE_LISTENERS:
                self._report_rejection(error, None, first=first)
            return error
        events: list[Event | OpenFor] = []
        retry_after = None
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
        events: list[Event | OpenFor],
        *,
        first: bool,
    ) -> CircuitOpenError:
        error = circuit_open(self.name, retry_after, state)
        self._report_rejection(error, events, first=first)
        return error

    def _report_rejection(
        self, error: CircuitOpenError, events: list[Event | OpenFor] | None, *, first: bool
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

    def _take_back_lost(self, events: list[Event | OpenFor]) -> None:
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

    def _decide(self, events: list[Event | OpenFor]) -> None:
        """Every trial has finished: their rates decide between OPEN and CLOSED."""
        if self._tripped(self._window, 1):
            self._fire(Trigger.TRIALS_FAILED, events, self._clock.monotonic())
        else:
            self._fire(Trigger.TRIALS_PASSED, events)

    def on_success(self, ticket: Epoch | Trial, result: Any, duration: float) -> None:
        """Report that an admitted call returned ``result`` after ``duration`` seconds."""
        if ticket is self._settled:
            # The hottest path: CLOSED, and every slot of the window already holds a
            # success, so this one changes nothing there and is only counted (the
            # lock-free successes are the claims). The ticket is compared, not read:
            # this breaker's own object and its counter are all a success touches.
            next(self._claims)
            if self._listeners or GLOBAL_LISTENERS:
                self.emit(
                    _events.CallSucceeded(self.name, KIND, None, recorded=ticket is self._epoch)
                )
            return
        if ticket.fast and ticket is self._epoch:
            # The hot path: a success in CLOSED claims its ring slot without the lock.
            # If the slot already holds a success, overwriting it changes no count, so
            # there is nothing to write. A ticket of an earlier stay goes the locked way:
            # every window claims from the breaker's one counter, and a stale claim
            # would move the head of the window now recording (its next outcome would
            # overwrite a recorded one).
            window: CountWindow = ticket.window  # type: ignore[assignment]
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
        if ticket is self._settled:
            with self._lock:
                next(self._claims)
            if self._listeners or GLOBAL_LISTENERS:
                self.emit(
                    _events.CallSucceeded(self.name, KIND, None, recorded=ticket is self._epoch)
                )
            return
        if ticket.fast:
            window: CountWindow = ticket.window  # type: ignore[union-attr, assignment]
            with self._lock:
                # As on_success: a ticket of an earlier stay claims nothing (locked way).
                current = ticket is self._epoch
                if current:
                    slot = next(window._next) % window.size
                    unchanged = not window._outcomes[slot]
            if not current:
                self._on_success_checked(ticket, result, duration)
                return
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
        try:
            ignored, failed = classify_error(
                exc, self._ignore, self._record, self._record_rejections, "breaker", self.name
            )
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

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(event)`` for each event this breaker emits from now on."""
        if self._listeners is NO_LISTENERS:
            with self._lock:  # two first listeners at once must share one list
                if self._listeners is NO_LISTENERS:
                    self._listeners = []
        super().add_listener(listener)

    def remove_listener(self, listener: Listener) -> None:
        """Stop calling ``listener`` (no error if it was not registered)."""
        if self._listeners is not NO_LISTENERS:
            super().remove_listener(listener)

    # -- outcome bookkeeping -----------------------------------------------------------

    def _settle(self) -> None:
        """Let successes skip the window while it is full of them (call with the lock)."""
        epoch = self._epoch
        self._settled = epoch if epoch.fast and self._window.settled else None

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
        counter = self._ignored_calls
        if LOCKED or counter is UNCOUNTED:
            # The first ignored call makes the counter (under the lock: two threads
            # must not make two); RESILIENT_FORCE_LOCKED=1 counts every one here.
            with self._lock:
                if self._ignored_calls is UNCOUNTED:
                    self._ignored_calls = itertools.count()
                next(self._ignored_calls)
        else:
            next(counter)
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
        events: list[Event | OpenFor] = []
        trial = ticket if type(ticket) is Trial else None
        with self._lock:
            if self._half_open_max is not None and self._state is HALF_OPEN:
                self._expire(self._clock.monotonic(), events)
            if outcome & FAILURE:
                self._locked_failures += 1
            else:
                self._locked_successes += 1
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
                    self._settle()
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
