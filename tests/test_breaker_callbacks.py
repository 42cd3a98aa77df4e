"""User callbacks of a breaker: never under its lock, and whatever they raise, no permit lost.

``record``, ``ignore``, ``record_result`` and ``open_duration`` are the user's code. A
callback that reads the breaker (``metrics()``, ``state``) must not deadlock, and one that
raises a ``BaseException`` (``KeyboardInterrupt`` on Ctrl-C) must leave the half-open trial
permit returned and the state machine able to admit a trial again.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Callable
from typing import Any

import pytest

from resilient import CircuitBreaker, CircuitOpenError, CircuitState, CountWindow
from resilient.testing import ManualClock


class Boom(Exception):
    """The dependency's failure."""


def _raise(exc: BaseException) -> Any:
    raise exc


def _tripped(clock: ManualClock, **options: Any) -> CircuitBreaker:
    """A breaker just past its open duration: the next call is its only trial."""
    options.setdefault("open_duration", 10.0)
    breaker = CircuitBreaker(
        window=CountWindow(2), minimum_calls=2, half_open_calls=1, clock=clock, **options
    )
    for _ in range(2):
        with pytest.raises(Boom):
            breaker.call(_raise, Boom())
    assert breaker.state is CircuitState.OPEN
    clock.advance(10.0)
    return breaker


def _admits_a_trial(breaker: CircuitBreaker) -> bool:
    try:
        breaker.call(lambda: None)
    except CircuitOpenError:
        return False
    return True


class _Switch:
    """A predicate that raises KeyboardInterrupt while armed, else answers ``value``."""

    def __init__(self, value: bool) -> None:
        self.armed = False
        self.value = value

    def __call__(self, _: object) -> bool:
        if self.armed:
            raise KeyboardInterrupt
        return self.value


@pytest.mark.parametrize("option", ["record", "ignore"])
def test_exception_predicate_raising_keyboard_interrupt_returns_the_trial(option: str) -> None:
    clock = ManualClock()
    switch = _Switch(option == "record")
    breaker = _tripped(clock, **{option: switch})
    switch.armed = True
    with pytest.raises(KeyboardInterrupt):
        breaker.call(_raise, Boom())
    switch.armed = False
    assert breaker.state is CircuitState.HALF_OPEN
    assert _admits_a_trial(breaker)  # the permit came back: a trial runs and closes it
    assert breaker.state is CircuitState.CLOSED


def test_record_result_raising_keyboard_interrupt_returns_the_trial() -> None:
    clock = ManualClock()
    switch = _Switch(False)
    breaker = _tripped(clock, record_result=switch)
    switch.armed = True
    with pytest.raises(KeyboardInterrupt):
        breaker.call(lambda: 1)
    switch.armed = False
    assert _admits_a_trial(breaker)
    assert breaker.state is CircuitState.CLOSED


def test_predicate_interrupt_in_a_composition_and_a_with_block() -> None:
    clock = ManualClock()
    switch = _Switch(True)
    breaker = _tripped(clock, record=switch)
    switch.armed = True
    with pytest.raises(KeyboardInterrupt), breaker:
        raise Boom
    switch.armed = False
    assert _admits_a_trial(breaker)


@pytest.mark.anyio
async def test_async_predicate_interrupt_returns_the_trial() -> None:
    clock = ManualClock()
    switch = _Switch(True)
    breaker = _tripped(clock, record=switch)
    switch.armed = True

    async def fail() -> None:
        raise Boom

    with pytest.raises(KeyboardInterrupt):
        await breaker.call_async(fail)
    switch.armed = False
    assert _admits_a_trial(breaker)


def test_open_duration_raising_keyboard_interrupt_leaves_a_consistent_open() -> None:
    clock = ManualClock()
    armed = [False]

    def backoff(attempt: int) -> float:
        if armed[0]:
            raise KeyboardInterrupt
        return 10.0

    breaker = _tripped(clock, open_duration=backoff)
    armed[0] = True
    with pytest.raises(KeyboardInterrupt):
        breaker.call(_raise, Boom())  # the failed trial reopens; open_duration(2) raises
    armed[0] = False
    # OPEN for the last good duration, then a trial is admitted again.
    assert breaker.state is CircuitState.OPEN
    assert breaker.retry_after == pytest.approx(10.0)
    clock.advance(10.0)
    assert _admits_a_trial(breaker)
    assert breaker.state is CircuitState.CLOSED


def _run_in_thread(target: Callable[[], None]) -> bool:
    """Run ``target`` in a daemon thread; whether it finished within 5 s (else: deadlock)."""
    done = threading.Event()

    def run() -> None:
        target()
        done.set()

    threading.Thread(target=run, daemon=True).start()
    return done.wait(5.0)


def test_open_duration_may_read_the_breaker() -> None:
    clock = ManualClock()
    seen: list[Any] = []
    holder: list[CircuitBreaker] = []

    def backoff(attempt: int) -> float:
        if holder:  # not at construction, where the breaker does not exist yet
            seen.append(holder[0].metrics())
            seen.append(holder[0].state)
        return 10.0 * attempt

    breaker = CircuitBreaker(
        window=CountWindow(2), minimum_calls=2, open_duration=backoff, clock=clock
    )
    holder.append(breaker)

    def trip() -> None:
        for _ in range(2):
            with pytest.raises(Boom):
                breaker.call(_raise, Boom())

    assert _run_in_thread(trip), "open_duration ran under the breaker's lock"
    assert breaker.state is CircuitState.OPEN
    assert len(seen) == 2
    assert breaker.retry_after == pytest.approx(10.0)


@pytest.mark.parametrize("option", ["record", "ignore", "record_result"])
def test_predicates_may_read_the_breaker(option: str) -> None:
    holder: list[CircuitBreaker] = []

    def predicate(_: object) -> bool:
        holder[0].metrics()
        return False

    breaker = CircuitBreaker(**{option: predicate})  # type: ignore[arg-type]
    holder.append(breaker)

    def calls() -> None:
        breaker.call(lambda: 1)
        with pytest.raises(Boom):
            breaker.call(_raise, Boom())

    assert _run_in_thread(calls)


def test_a_lost_trial_ticket_gives_its_permit_back() -> None:
    # What an interrupt between taking a permit and the adapter's `try` leaves behind: a
    # ticket nobody will finish. Once collected, its permit is back.
    clock = ManualClock()
    breaker = _tripped(clock)
    ticket = breaker._core.admit_checked()
    assert not isinstance(ticket, CircuitOpenError)
    assert not _admits_a_trial(breaker)  # the only trial is taken
    del ticket
    gc.collect()
    assert _admits_a_trial(breaker)
    assert breaker.state is CircuitState.CLOSED
