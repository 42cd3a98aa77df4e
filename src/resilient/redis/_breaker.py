"""A circuit breaker whose state is shared by every process, through a Redis record.

:class:`SharedBreakerCore` is the local :class:`~resilient._core._breaker.BreakerCore`
with a store beside it, chosen at construction by ``CircuitBreaker(..., store=)``: the
closed path is the local one, unchanged and free of round trips. The store enters at
the few places where the fleet must agree:

- ``_fire``, the one method that changes state: a local decision (a trip, a trial
  round decided during an outage) is queued as a compare-and-set on the record's
  version, sent by the store's thread (``_breaker_sync.py``); a transition made
  elsewhere is applied here through ``_fire`` too, with the triggers that lead to it.
- Admission past OPEN: the first call after the shared ``open_duration`` (timed by
  the server) asks the script for a trial *lease*; the script hands out exactly
  ``half_open_calls`` across the fleet, each with a time to live, so the trial of a
  process that died comes back. The core only says that a lease is needed
  (:class:`LeaseAsk`, from ``admit_plan()``): a sync caller asks for it inline, an
  async caller's step awaits it (``_breaker_async.py``). A trial's outcome is reported
  on a sync caller's path (half-open calls are few), by the store's thread for an
  async one, and the script decides the round.
- Controls (``force_open()``, ``disable()``, ``metrics_only()``, ``reset()``) are
  written to the record, for the whole fleet.

When the store is unavailable, the breaker decides on its local state (the local
``_fire`` decisions wait as compare-and-sets) and emits ``StoreUnavailable``; when it is
back, it emits ``StoreRecovered``, sends what waited (a stale decision changes nothing)
and adopts the record.
"""

from __future__ import annotations

import itertools
import os
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

from resilient._core._atomic import counted
from resilient._core._breaker_state import (
    _ADMIT_ALL,
    CLOSED,
    FORCED_OPEN,
    HALF_OPEN,
    OPEN,
    CircuitState,
    Epoch,
    OpenFor,
    Trial,
    TrialRef,
)
from resilient._core._errors import CircuitOpenError
from resilient._core._window import FAILURE, SLOW, TimeWindow
from resilient.redis._breaker_io import LeaseAsk, StoreSteps
from resilient.redis._breaker_replay import CONTROLS, SHARED_TRIGGERS, replay
from resilient.redis._breaker_sync import Flush

if TYPE_CHECKING:
    from resilient._core._records import Event
    from resilient.redis._store import RedisStore

__all__ = ["SharedBreakerCore"]

_DURATIONS: Final = 16
"""Open durations sent to the script: openings 1..16 (later ones repeat the 16th)."""


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


_lease_ids = itertools.count()


class SharedBreakerCore(StoreSteps):
    """A breaker core whose transitions are agreed in a store (see the module docstring)."""

    __slots__ = (
        "_applying",
        "_flushed",
        "_intent",
        "_leases",
        "_pending_control",
        "_refused_until",
        "_slow_calls",
        "_version",
        "_window_ms",
    )

    def __init__(
        self, name: str | None, *, clock: Any, store: RedisStore, **options: object
    ) -> None:
        super().__init__(name, clock=clock, **options)
        if self.name is None:
            raise ValueError(
                "a circuit breaker with a store needs a name: it is the breaker's key in"
                " Redis, the same in every process (name='...')"
            )
        self._store = store
        tag = store.key(self.name).rsplit(":", 1)[0]
        self._keys = (f"{tag}:breaker", f"{tag}:buckets", f"{tag}:leases")
        window = options["window"]
        seconds = window.seconds if isinstance(window, TimeWindow) else store.breaker_window
        self._window_ms = max(int(seconds * 1000), 10)
        self._settings = (
            ",".join(str(max(int(s * 1000), 1)) for s in self._open_durations()),
            str(self._half_open_calls),
            repr(self._failure_threshold),
            repr(self._slow_threshold),
            str(int((self._half_open_max or 0.0) * 1000)),
            str(int(store.idle_ttl * 1000)),
        )
        self._version = 0
        self._applying = False
        self._intent: tuple[int, CircuitState, CircuitState] | None = None
        # Trials holding a lease in the record (weakly: a lost trial's lease expires).
        self._leases: weakref.WeakKeyDictionary[Trial, tuple[str, int, bool]] = (
            weakref.WeakKeyDictionary()
        )
        self._flushed = (0, 0, 0)
        # Slow calls are counted here (the local core keeps no total of them): they
        # only ever take the locked path, which this class already sees.
        self._slow_calls = itertools.count()
        self._next_poll = 0.0
        self._down_at: float | None = None
        self._pending_control: str | None = None
        self._refused_until = 0.0
        self._sync = store._breaker_sync()
        self._sync.bind(self)

    def async_step(self) -> Any:
        """The step of async callers: it awaits the lease round trips (``_breaker_async``)."""
        from resilient.redis._breaker_async import SharedAsyncStep  # noqa: PLC0415 -- a cycle

        return SharedAsyncStep(self)

    def _open_durations(self) -> list[float]:
        """Seconds open for openings 1..16: the script times OPEN, so it needs them all.

        A callable ``open_duration`` is the user's code, called here (at construction,
        under no lock); one that fails keeps the duration before it.
        """
        backoff = self._open_duration
        if isinstance(backoff, float):
            return [backoff]
        durations = [self._last_open_duration]
        for attempt in range(2, _DURATIONS + 1):
            try:
                seconds = float(backoff(attempt))
            except Exception:
                seconds = durations[-1]
            durations.append(seconds if seconds >= 0 else durations[-1])
        return durations

    # -- the one place that changes state ------------------------------------------------

    def _fire(self, trigger: str, events: list[Event | OpenFor], at: float = 0.0) -> None:
        previous = self._state
        super()._fire(trigger, events, at)
        if previous is CLOSED and self._state is not CLOSED:
            # The outcomes of the stay that ended are not the next stay's: never
            # flushed after it (they would count against a breaker closed again).
            self._flushed = self._totals_locked()
        if self._applying or trigger not in SHARED_TRIGGERS:
            return
        # A local decision, made on the version last seen: queued as a compare-and-set
        # (never sent from here, under the lock, on a caller's path).
        intent = self._intent
        if intent is None:
            self._intent = (self._version, previous, self._state)
        elif intent[1] is self._state:
            self._intent = None  # back where the record is: nothing to say
        else:
            self._intent = (intent[0], intent[1], self._state)
        self._sync.wake()

    def adopt(self, reply: Sequence[Any]) -> None:
        """Apply the record's state, if it is newer than what this process knows."""
        remote = CircuitState(_text(reply[0]))
        version, left_ms, attempt = int(reply[1]), int(reply[2]), int(reply[3])
        events: list[Event | OpenFor] = []
        with self._lock:
            known = self._version
            if version < known or (version == known and self._intent is not None):
                return  # older news, or the record at the version our decision waits on
            now = self._clock.monotonic()
            if version > known or remote is not self._state:
                self._intent = None  # overtaken: the record moved on from its version
                self._applying = True
                try:
                    for trigger in replay(self._state, remote):
                        self._fire(trigger, events, now)
                finally:
                    self._applying = False
            self._version = version
            if remote is OPEN and self._state is OPEN:
                # The record's time left, on this process's clock: only a duration
                # crosses the wire, never a time.
                self._open_until = now + left_ms / 1000
                self._open_attempt = attempt
        # The record timed this stay: a callable open_duration is not asked again.
        self._dispatch([e for e in events if type(e) is not OpenFor])

    # -- admission past OPEN -------------------------------------------------------------

    def admit_checked(self) -> Epoch | Trial | CircuitOpenError:
        """Admit outside the free path; past OPEN, the fleet's trials come from the record.

        The lease is asked for here, on the caller's thread (a sync caller); an async
        caller's step asks :meth:`admit_plan` and awaits :meth:`lease_async` instead.
        """
        plan = self.admit_plan()
        if type(plan) is not LeaseAsk:
            return plan  # type: ignore[return-value]
        return self._leased(plan, self._step("acquire", plan.args), later=False)

    async def lease_async(self, plan: LeaseAsk) -> Epoch | Trial | CircuitOpenError:
        """:meth:`admit_checked`'s round trip for an async caller: awaited, off the loop."""
        return self._leased(plan, await self._step_async("acquire", plan.args), later=True)

    def admit_plan(self) -> Epoch | Trial | CircuitOpenError | LeaseAsk:
        """Decide what needs no round trip; else the :class:`LeaseAsk` to send."""
        state = self._state
        if state is HALF_OPEN and self._monotonic() < self._refused_until:
            # The fleet's trials were all taken a moment ago: asking again before the
            # next flush_interval would cost a round trip per call and change nothing
            # (the round's end is announced).
            return self._refuse(HALF_OPEN, None)
        if (
            state in _ADMIT_ALL
            or state is FORCED_OPEN
            or (state is OPEN and self._monotonic() < self._open_until)
            or not self._store._should_try()
        ):
            # Decided locally: admitted, still open by the record's time, or an outage.
            if state is not FORCED_OPEN and state not in _ADMIT_ALL and self._down():
                self._store._fell_back()
                if state is HALF_OPEN or self._monotonic() >= self._open_until:
                    refused = self._refused_in_outage(state)
                    if refused is not None:
                        return refused
            return super().admit_checked()
        lease = f"{os.getpid()}:{id(self)}:{next(_lease_ids)}"
        return LeaseAsk((lease, str(int(self._store.lease_ttl * 1000))))

    def _leased(
        self, plan: LeaseAsk, reply: Sequence[Any] | None, *, later: bool
    ) -> Epoch | Trial | CircuitOpenError:
        """The record's answer to a lease asked for (``None``: the store failed).

        ``later``: the trial's report goes through the store's thread (an async
        caller's, whose loop must not wait on it).
        """
        if reply is None:
            self._store._fell_back()
            return self._refused_in_outage(self._state) or super().admit_checked()
        self.adopt(reply)
        lease = plan.args[0]
        granted = int(reply[4]) == 1
        with self._lock:
            if granted and self._state is HALF_OPEN:
                ticket = Trial(self._epoch)
                ticket.ref = ref = TrialRef(ticket, self._lost.append)
                self._half_open_taken += 1
                self._trials.add(ref)
                self._leases[ticket] = (lease, self._version, later)
                return ticket
            state = self._state
        if granted:  # pragma: no cover - the record moved on between two lines
            self._give(lease, int(reply[1]), -1, later=later)
        if state in _ADMIT_ALL:
            return self._epoch
        if state is HALF_OPEN:
            self._refused_until = self._monotonic() + self._store.flush_interval
        return self._refuse(state, int(reply[2]) / 1000 if state is OPEN else None)

    def _refused_in_outage(self, state: CircuitState) -> CircuitOpenError | None:
        """With ``on_unavailable="reject"``, no local trial while the store is out.

        Local trials in every process would probe the dependency ``half_open_calls``
        times per process; "reject" keeps the fleet's bound, and the breaker open until
        the store answers (retry in ``retry_interval``). ``None``: decide locally.
        """
        if self._store.on_unavailable != "reject":
            return None
        return self._refuse(state, self._store.retry_interval)

    def _refuse(self, state: CircuitState, retry_after: float | None) -> CircuitOpenError:
        with self._lock:
            self._not_permitted += 1
            first = not self._rejection_logged
            self._rejection_logged = True
        return self._reject(state, retry_after, [], first=first)

    def _decide(self, events: list[Event | OpenFor]) -> None:
        # With the store up, the record decides the round from every process's trials.
        if self._store.available:
            return
        super()._decide(events)

    def _finish(
        self,
        ticket: Epoch | Trial,
        outcome: int,
        duration: float,
        exc: BaseException | None,
        result: Any,
        slot: int | None = None,
    ) -> None:
        if outcome & SLOW:
            next(self._slow_calls)  # one C call: atomic
        lease = self._leases.pop(ticket, None) if type(ticket) is Trial else None
        super()._finish(ticket, outcome, duration, exc, result, slot)
        if lease is not None:
            self._give(lease[0], lease[1], outcome & (FAILURE | SLOW), later=lease[2])

    def on_cancel(self, ticket: Epoch | Trial) -> None:
        """As the local core's, and a lease taken for the trial goes back to the fleet."""
        super().on_cancel(ticket)
        if type(ticket) is Trial:
            lease = self._leases.pop(ticket, None)
            if lease is not None:
                self._give(lease[0], lease[1], -1, later=lease[2])

    def _give(self, lease: str, version: int, outcome: int, *, later: bool) -> None:
        """Report a trial's outcome (-1: its lease given back unused) to the record.

        On the caller's path for a sync caller (half-open calls are few); by the store's
        thread for an async one, whose loop must not wait: the caller needs no answer.
        """
        if later:
            self._sync.report_later(self, lease, version, outcome)
        else:
            self.report(lease, version, outcome)

    def report(self, lease: str, version: int, outcome: int) -> None:
        """Send a trial's outcome to the record, and adopt its answer."""
        reply = self._step("report", (lease, str(version), str(outcome)))
        if reply is not None:
            self.adopt(reply)

    # -- controls, for the fleet -----------------------------------------------------

    def control(self, trigger: str) -> None:
        """Apply a control here, and write it to the record for every process."""
        super().control(trigger)
        self._send_control(CONTROLS[trigger].value)

    def _send_control(self, target: str) -> None:
        # During an outage the control waits, and is sent when the store is back: it
        # is the user's word, which the record then follows.
        reply = self._step("control", (target,))
        with self._lock:
            if reply is None:
                self._pending_control = target
                return
            self._pending_control = None
            self._intent = None
            if _text(reply[0]) == target and self._state.value == target:
                # Our own write: the local state already is the record's.
                self._version = max(self._version, int(reply[1]))
        self.adopt(reply)

    def _totals(self) -> tuple[int, int, int]:
        """Calls, failures and slow calls since creation (the running totals)."""
        with self._lock:
            return self._totals_locked()

    def _totals_locked(self) -> tuple[int, int, int]:
        successes, failures = self._locked_outcomes
        successes += counted(self._claims) - self._locked_claims
        return successes + failures, failures, counted(self._slow_calls)

    def _sync_round(self, now: float, notified: bool) -> Flush | None:
        """The store thread's turn: send a waiting decision, or poll, or flush.

        New outcomes are returned as a :class:`Flush`, which the store's thread sends
        with other breakers' (one pipelined round trip for up to ``flush_batch``).
        """
        with self._lock:
            intent = self._intent
            control = self._pending_control
        if control is not None:
            self._send_control(control)
            return None
        if intent is not None:
            version, previous, target = intent
            reply = self._step("cas", (str(version), previous.value, target.value))
            if reply is None:
                return None
            with self._lock:
                if self._intent == intent:
                    self._intent = None
                    # Ours if it took: the record's new version is the one we decided.
                    if CircuitState(_text(reply[0])) is target and int(reply[5]):
                        self._version = int(reply[1])
            self.adopt(reply)
            return None
        totals = self._totals()
        fresh, bad, slow = (total - sent for total, sent in zip(totals, self._flushed, strict=True))
        if fresh and self._state is CLOSED and self._down_at is None:
            store = self._store
            width = max(self._window_ms // store.breaker_buckets, 1)
            args = (
                str(fresh),
                str(bad),
                str(slow),
                str(width),
                str(store.breaker_buckets),
                str(self._minimum_calls),
            )
            return Flush(self, args, totals)
        self._flushed = totals  # outcomes of other states are not the fleet's
        if notified or now >= self._next_poll or self._down_at is not None:
            reply = self._step("read", ())
            if reply is not None:
                self._next_poll = now + self._store.poll_interval
                self.adopt(reply)
        return None

    def _flushed_with(self, flush: Flush, reply: Sequence[Any], now: float) -> None:
        """A flush reached the record: its outcomes are sent, and the record read."""
        self._flushed = flush.totals
        self._next_poll = now + self._store.poll_interval
        self.adopt(reply)
