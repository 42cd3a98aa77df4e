"""A full bulkhead's rejection, for resilient and every peer with a bulkhead (``peers.py``).

Each bulkhead has room for one call and refuses at once when full (``max_wait=0``, or
hyx's ``bulkhead(1, 1)``: one call running, no room to queue). Before the run its one
slot is taken by a call of the same guarded function parked inside it (``fn(0)``): in a
daemon thread for the sync rows, in a task of the benchmark's event loop for the awaited
ones (nopanic, interlock-cb and pyresilience keep separate slots for threads and for
tasks). The timed call is the usual ``try: fn(1) except <the library's error>: pass``; it
must be refused (checked before the run). After the run the parked call is let go and
must return (and resilient's bulkhead must have its slot back).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

from peers import (
    BULKHEAD_FULL_ASYNC,
    BULKHEAD_FULL_SYNC,
    FULL_SCENARIOS,
    Case,
)
from resilient import Bulkhead, BulkheadFullError

Decorator = Callable[[Callable[[int], Any]], Callable[[int], Any]]


class Parking:
    """The guarded function: ``fn(1)`` returns at once, ``fn(0)`` parks until let go.

    One function serves both, so that a library that builds a bulkhead per decorated
    function (pyresilience) parks and refuses in the same one. The timed calls are
    refused before they reach it.
    """

    def __init__(self) -> None:
        self.entered, self.release = threading.Event(), threading.Event()
        self.aentered, self.arelease = asyncio.Event(), asyncio.Event()

    def sync(self, x: int) -> int:
        if x == 0:
            self.entered.set()
            self.release.wait()
        return x

    async def asynchronous(self, x: int) -> int:
        if x == 0:
            self.aentered.set()
            await self.arelease.wait()
        return x


def hold_sync(guarded: Callable[[int], Any], parking: Parking) -> Callable[[], None]:
    """Park a call in ``guarded``'s only slot, in a daemon thread; return what lets it go."""
    worker = threading.Thread(target=guarded, args=(0,), daemon=True)
    worker.start()
    assert parking.entered.wait(10), "the parked call never got its slot"

    def let_go() -> None:
        parking.release.set()
        worker.join(10)
        assert not worker.is_alive(), "the parked call did not return"

    return let_go


def hold_async(
    guarded: Callable[[int], Any], parking: Parking, loop: asyncio.AbstractEventLoop
) -> Callable[[], None]:
    """Park a task in ``guarded``'s only slot, in ``loop``; return what lets it go."""

    async def start() -> asyncio.Task[Any]:
        task = asyncio.ensure_future(guarded(0))
        await parking.aentered.wait()
        return task

    task = loop.run_until_complete(start())

    def let_go() -> None:
        parking.arelease.set()
        assert loop.run_until_complete(task) == 0, "the parked task did not return"

    return let_go


def full_cases(
    library: str,
    loop: asyncio.AbstractEventLoop,
    make: Callable[[str], Decorator],
    error: type[BaseException],
    scenarios: tuple[str, ...] = FULL_SCENARIOS,
) -> list[Case]:
    """``make(scenario)`` returns a bulkhead decorator with one slot, refusing at once."""
    cases = []
    for scenario in scenarios:
        parking = Parking()
        if scenario == BULKHEAD_FULL_SYNC:
            guarded = make(scenario)(parking.sync)
            let_go = hold_sync(guarded, parking)
        else:
            guarded = make(scenario)(parking.asynchronous)
            let_go = hold_async(guarded, parking, loop)
        cases.append(Case(scenario, library, guarded, error, verify=let_go))
    return cases


def resilient_cases(loop: asyncio.AbstractEventLoop) -> list[Case]:
    """resilient's rows; after the run, its bulkheads have their slot back."""
    cases = []
    for scenario in FULL_SCENARIOS:
        bulkhead = Bulkhead(1)
        (case,) = full_cases(
            "resilient", loop, lambda _, b=bulkhead: b, BulkheadFullError, (scenario,)
        )
        assert case.verify is not None
        case.verify = _slot_back(bulkhead, case.verify)
        cases.append(case)
    return cases


def _slot_back(bulkhead: Bulkhead, let_go: Callable[[], None]) -> Callable[[], None]:
    def check() -> None:
        let_go()
        metrics = bulkhead.metrics()
        assert metrics.in_flight == 0, metrics
        assert metrics.rejected > 0, metrics

    return check


def _nopanic(loop: asyncio.AbstractEventLoop) -> list[Case]:
    import nopanic  # noqa: PLC0415 -- an optional peer

    return full_cases(
        "nopanic", loop, lambda _: nopanic.bulkhead(1, max_wait=0), nopanic.BulkheadFull
    )


def _interlock(loop: asyncio.AbstractEventLoop) -> list[Case]:
    import interlock  # noqa: PLC0415 -- an optional peer (Python >= 3.11)

    return full_cases(
        "interlock-cb",
        loop,
        lambda _: interlock.Pipeline(interlock.BulkheadStrategy(1)),
        interlock.BulkheadFullError,
    )


def _pyresilience(loop: asyncio.AbstractEventLoop) -> list[Case]:
    import pyresilience as pr  # noqa: PLC0415 -- an optional peer

    return full_cases(
        "pyresilience",
        loop,
        lambda _: pr.resilient(bulkhead=pr.BulkheadConfig(max_concurrent=1, max_wait=0.0)),
        pr.BulkheadFullError,
    )


def _hyx(loop: asyncio.AbstractEventLoop) -> list[Case]:
    from hyx.bulkhead import bulkhead  # noqa: PLC0415 -- an optional peer
    from hyx.bulkhead.exceptions import BulkheadFull  # noqa: PLC0415

    return full_cases("hyx", loop, lambda _: bulkhead(1, 1), BulkheadFull, (BULKHEAD_FULL_ASYNC,))


BUILDERS: tuple[tuple[str, Callable[[asyncio.AbstractEventLoop], list[Case]]], ...] = (
    ("hyx", _hyx),
    ("pyresilience", _pyresilience),
    ("interlock-cb", _interlock),
    ("nopanic", _nopanic),
)
