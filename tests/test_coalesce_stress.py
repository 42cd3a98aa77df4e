"""Coalesce under many threads and many tasks: one call per flight, nobody left waiting.

Callers of a few keys arrive at random; the function, and sometimes the key function,
fail or are interrupted at random. Whatever happens, every caller finishes (a hang fails
the test), every result is its own key's, the function ran exactly once per flight
started (``leaders``), and no flight is left in the table.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from typing import Any

import anyio
import pytest

from resilient import Coalesce

THREADS = 16
CALLS = 150
TASKS = 1000
KEYS = 4
JOIN_LIMIT = 60.0


class Boom(Exception):
    pass


class Interrupt(BaseException):
    pass


def _plan(rng: random.Random) -> str:
    return rng.choice(["ok"] * 6 + ["boom", "interrupt", "key_interrupt", "key_boom"])


@pytest.mark.usefixtures("fast_switching")
def test_threads_exactly_one_call_per_flight_and_no_stuck_flight() -> None:
    ran: Counter[int] = Counter()
    lock = threading.Lock()

    def key(k: int, plan: str) -> int:
        if plan == "key_interrupt":
            raise Interrupt
        if plan == "key_boom":
            raise Boom
        return k

    coalesce = Coalesce(key=key)

    @coalesce
    def fetch(k: int, plan: str) -> tuple[int, int]:
        with lock:
            ran[k] += 1
            flight = ran[k]
        for _ in range(20):  # yield the GIL: other threads join while this flight is open
            time.sleep(0)
        if plan == "boom":
            raise Boom(k)
        if plan == "interrupt":
            raise Interrupt
        return k, flight

    outcomes: Counter[str] = Counter()
    wrong: list[Any] = []

    def caller(seed: int) -> None:
        rng = random.Random(seed)
        mine: Counter[str] = Counter()  # `+=` on a shared Counter would lose updates
        for _ in range(CALLS):
            k = rng.randrange(KEYS)
            try:
                got = fetch(k, _plan(rng))
            except Boom as exc:
                if exc.args not in ((k,), ()):
                    wrong.append((k, exc.args))
                mine["boom"] += 1
            except Interrupt:
                mine["interrupt"] += 1
            else:
                if got[0] != k:
                    wrong.append((k, got))
                mine["ok"] += 1
        with lock:
            outcomes.update(mine)

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(JOIN_LIMIT)
        assert not thread.is_alive(), "a caller hung"
    m = coalesce.metrics()
    assert wrong == []
    assert sum(outcomes.values()) == THREADS * CALLS
    assert m.in_flight == 0
    assert sum(ran.values()) == m.leaders  # exactly one call per flight started
    assert m.followers > 0  # flights were shared


async def test_tasks_exactly_one_call_per_flight_and_no_stuck_flight() -> None:
    rng = random.Random(19)
    ran: Counter[int] = Counter()

    def key(k: int, plan: str) -> int:
        if plan == "key_boom":
            raise Boom
        return k

    coalesce = Coalesce(key=key)

    @coalesce
    async def fetch(k: int, plan: str) -> tuple[int, int]:
        ran[k] += 1
        flight = ran[k]
        for _ in range(rng.randrange(4)):
            await anyio.lowlevel.checkpoint()
        if plan == "boom":
            raise Boom(k)
        return k, flight

    outcomes: Counter[str] = Counter()
    wrong: list[Any] = []

    async def caller(k: int, plan: str, cancel_after: int | None) -> None:
        with anyio.CancelScope() as scope:
            if cancel_after is not None:

                async def cancel_later() -> None:
                    for _ in range(cancel_after):
                        await anyio.lowlevel.checkpoint()
                    scope.cancel()

                async with anyio.create_task_group() as tg:
                    tg.start_soon(cancel_later)
                    await one(k, plan)
                return
            await one(k, plan)

    async def one(k: int, plan: str) -> None:
        try:
            got = await fetch(k, plan)
        except Boom:
            outcomes["boom"] += 1
        else:
            if got[0] != k:
                wrong.append((k, got))
            outcomes["ok"] += 1

    async with anyio.create_task_group() as tg:
        for _ in range(TASKS):
            plan = rng.choice(["ok"] * 6 + ["boom", "key_boom"])
            cancel_after = rng.choice([None, None, None, 0, 1, 3])
            tg.start_soon(caller, rng.randrange(KEYS), plan, cancel_after)
            if rng.random() < 0.3:
                await anyio.lowlevel.checkpoint()
    # Flights whose callers all left were cancelled: let their tasks finish.
    for _ in range(50):
        await anyio.lowlevel.checkpoint()
    m = coalesce.metrics()
    assert wrong == []
    assert m.in_flight == 0
    assert sum(ran.values()) <= m.leaders  # a flight cancelled before it ran never called
    assert m.leaders - m.abandoned <= sum(ran.values())
    assert m.followers > 0
