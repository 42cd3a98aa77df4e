"""Hedge, async: which attempts start when, which one wins, which are cancelled.

Every test runs in virtual time (``hedge_helpers``) on asyncio and trio, so the log of
each test is exact: ``("start", 1, 0.1)`` is "attempt 1 started 0.1 s into the call".
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hedge_helpers import Attempts, virtual_backend
from resilient import (
    Hedge,
    HedgeStarted,
    RetryBudget,
    RetryThrottle,
    Timeout,
    TimeoutExceededError,
    compose,
)
from resilient.testing import capture_events


class Flaky(Exception):
    pass


class Fatal(Exception):
    pass


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    return virtual_backend(str(request.param))


def generous() -> RetryBudget:
    return RetryBudget(min_retries_per_second=1000)


async def test_no_hedge_when_the_first_attempt_answers_in_time() -> None:
    attempts = Attempts((0.05, "first"))
    hedge = Hedge(delay=0.1, budget=generous())
    assert await hedge.call_async(attempts) == "first"
    assert attempts.timeline == [("start", 0, 0.0), ("done", 0, 0.05)]
    m = hedge.metrics()
    assert (m.calls, m.hedges, m.hedge_wins, m.cancelled) == (1, 0, 0, 0)


async def test_a_hedge_after_the_delay_wins_and_the_first_is_cancelled_and_awaited() -> None:
    attempts = Attempts((1.0, "first"), (0.05, "hedge"))
    hedge = Hedge(delay=0.1, budget=generous())
    assert await hedge.call_async(attempts) == "hedge"
    # The loser's cancellation is in the log before the call returned: awaited.
    assert attempts.timeline == [
        ("start", 0, 0.0),
        ("start", 1, 0.1),
        ("done", 1, 0.15),
        ("cancelled", 0, 0.15),
    ]
    m = hedge.metrics()
    assert (m.hedges, m.hedge_wins, m.cancelled) == (1, 1, 1)


async def test_the_first_attempt_can_still_win_after_a_hedge_started() -> None:
    attempts = Attempts((0.12, "first"), (1.0, "hedge"))
    hedge = Hedge(delay=0.1, budget=generous())
    assert await hedge.call_async(attempts) == "first"
    assert attempts.timeline == [
        ("start", 0, 0.0),
        ("start", 1, 0.1),
        ("done", 0, 0.12),
        ("cancelled", 1, 0.12),
    ]
    assert hedge.metrics().hedge_wins == 0


async def test_several_hedges_each_a_delay_after_the_previous() -> None:
    attempts = Attempts((9.0, "a"), (9.0, "b"), (0.01, "c"))
    hedge = Hedge(2, delay=0.1, budget=generous())
    assert await hedge.call_async(attempts) == "c"
    assert attempts.timeline == [
        ("start", 0, 0.0),
        ("start", 1, 0.1),
        ("start", 2, 0.2),
        ("done", 2, 0.21),
        ("cancelled", 0, 0.21),
        ("cancelled", 1, 0.21),
    ]
    assert hedge.metrics().cancelled == 2


async def test_a_failure_starts_the_next_hedge_at_once() -> None:
    attempts = Attempts((0.02, Flaky()), (0.05, "hedge"))
    hedge = Hedge(delay=0.1, budget=generous())
    assert await hedge.call_async(attempts) == "hedge"
    assert attempts.timeline == [
        ("start", 0, 0.0),
        ("failed", 0, 0.02),
        ("start", 1, 0.02),
        ("done", 1, 0.07),
    ]


async def test_a_failure_waits_for_the_attempts_still_running() -> None:
    attempts = Attempts((0.5, "first"), (0.05, Flaky()))
    hedge = Hedge(delay=0.1, budget=generous())
    assert await hedge.call_async(attempts) == "first"  # the hedge's failure is not raised
    assert attempts.timeline[-1] == ("done", 0, 0.5)


async def test_when_every_attempt_fails_the_last_failure_is_raised() -> None:
    first, last = Flaky("first"), Flaky("last")
    attempts = Attempts((0.3, first), (0.1, last))
    hedge = Hedge(delay=0.1, budget=generous())
    with pytest.raises(Flaky) as caught:
        await hedge.call_async(attempts)
    assert caught.value is first  # it ended last (at 0.3; the hedge failed at 0.2)
    assert hedge.metrics().failed == 1


async def test_a_failure_outside_on_answers_the_call() -> None:
    attempts = Attempts((0.3, "first"), (0.05, Fatal()))
    hedge = Hedge(delay=0.1, on=Flaky, budget=generous())
    with pytest.raises(Fatal):
        await hedge.call_async(attempts)
    assert attempts.timeline[-1] == ("cancelled", 0, 0.15)


async def test_on_result_makes_another_attempt_answer() -> None:
    attempts = Attempts((0.02, 503), (0.05, 200))
    hedge = Hedge(delay=0.1, on_result=lambda status: status >= 500, budget=generous())
    assert await hedge.call_async(attempts) == 200
    assert [e for e in attempts.log if e[0] == "start"] == [("start", 0, 0.0), ("start", 1, 0.02)]


async def test_the_budget_refuses_hedges_beyond_its_share() -> None:
    # No reserve; 50% of first attempts: the first call's deposit allows no hedge (0.5),
    # the second call's (1.0) allows one.
    budget = RetryBudget(min_retries_per_second=0, ratio=0.5)
    hedge = Hedge(delay=0.1, budget=budget)
    first = Attempts((1.0, "slow"))
    assert await hedge.call_async(first) == "slow"
    assert first.timeline == [("start", 0, 0.0), ("done", 0, 1.0)]
    second = Attempts((1.0, "slow"), (0.1, "hedge"))
    assert await hedge.call_async(second) == "hedge"
    m = hedge.metrics()
    assert (m.calls, m.hedges, m.budget_refused) == (2, 1, 1)
    assert budget.snapshot().retries == 1


async def test_a_retry_throttle_as_budget() -> None:
    throttle = RetryThrottle(max_tokens=2, token_ratio=0.1)
    throttle.on_outcome(failed=True)  # 1 token left: not above half of 2
    hedge = Hedge(delay=0.1, budget=throttle)
    attempts = Attempts((1.0, "slow"))
    assert await hedge.call_async(attempts) == "slow"
    assert hedge.metrics().budget_refused == 1


async def test_a_callable_delay_per_hedge() -> None:
    asked: list[int] = []

    def delay(hedge: int) -> float:
        asked.append(hedge)
        return 0.05 * hedge

    attempts = Attempts((9.0, "a"), (9.0, "b"), (0.01, "c"))
    hedge = Hedge(2, delay=delay, budget=generous())
    assert await hedge.call_async(attempts) == "c"
    starts = [e for e in attempts.log if e[0] == "start"]
    assert starts == [("start", 0, 0.0), ("start", 1, 0.05), ("start", 2, 0.15)]
    assert asked == [1, 2]  # asked once per hedge


async def test_a_quantile_delay_from_the_policys_own_latencies() -> None:
    hedge = Hedge(delay="p50", budget=generous())
    assert hedge.metrics().delay is None
    for i in range(9):  # fewer than 10 latencies: no hedging at all
        attempts = Attempts((0.1 * (i + 1), "ok"))
        await hedge.call_async(attempts)
    assert hedge.metrics().hedges == 0
    await hedge.call_async(Attempts((1.0, "ok")))
    # Latencies 0.1 .. 1.0: the median (nearest rank) is 0.5.
    assert hedge.metrics().delay == pytest.approx(0.5)
    attempts = Attempts((3.0, "slow"), (0.1, "hedge"))
    assert await hedge.call_async(attempts) == "hedge"
    assert attempts.timeline[1] == ("start", 1, 0.5)


async def test_an_outer_cancellation_cancels_every_attempt() -> None:
    attempts = Attempts((9.0, "a"), (9.0, "b"))
    hedge = Hedge(delay=0.1, budget=generous())
    with anyio.move_on_after(0.3):
        await hedge.call_async(attempts)
    assert attempts.timeline == [
        ("start", 0, 0.0),
        ("start", 1, 0.1),
        ("cancelled", 0, 0.3),
        ("cancelled", 1, 0.3),
    ]
    assert hedge.metrics().cancelled == 2


async def test_inside_a_timeout() -> None:
    attempts = Attempts((9.0, "a"), (9.0, "b"))
    guarded = compose(Timeout(0.25), Hedge(delay=0.1, budget=generous()))
    with pytest.raises(TimeoutExceededError):
        await guarded.call_async(attempts)
    assert sorted(e[0] for e in attempts.log) == ["cancelled", "cancelled", "start", "start"]


async def test_events_and_decorator() -> None:
    hedge = Hedge(delay=0.1, budget=generous(), name="search")
    attempts = Attempts((1.0, "first"), (0.05, "hedge"))

    @hedge
    async def search() -> object:
        return await attempts()

    with capture_events() as events:
        assert await search() == "hedge"
    started = [e for e in events if isinstance(e, HedgeStarted)]
    assert started == [HedgeStarted("search", "hedge", 1, pytest.approx(0.1))]


async def test_an_interrupt_in_an_attempt_reaches_the_caller() -> None:
    attempts = Attempts((0.3, "first"), (0.05, KeyboardInterrupt()))
    hedge = Hedge(delay=0.1, budget=generous())
    with pytest.raises(KeyboardInterrupt):
        await hedge.call_async(attempts)
    assert attempts.timeline[-1] == ("cancelled", 0, 0.15)


@settings(max_examples=40, deadline=None)
@given(
    durations=st.lists(st.integers(1, 40), min_size=3, max_size=3, unique=True),
    delay=st.integers(1, 15),
)
def test_the_first_to_finish_wins_as_the_schedule_says(durations: list[int], delay: int) -> None:
    """A model: attempt i starts at i * delay unless an earlier one finished first."""
    scale = 0.01
    # Half steps and a little per attempt: no finish coincides with a start or another finish.
    script = [((d + 0.5) * scale + i * 1e-4, i) for i, d in enumerate(durations)]
    finish = {}
    for i, (seconds, _) in enumerate(script):
        start = i * delay * scale
        if finish and min(finish.values()) <= start:
            break
        finish[i] = start + seconds
    winner = min(finish, key=finish.__getitem__)
    for backend in ("asyncio", "trio"):
        attempts = Attempts(*script)
        hedge = Hedge(2, delay=delay * scale, budget=generous())
        name, options = virtual_backend(backend)
        got = anyio.run(hedge.call_async, attempts, backend=name, backend_options=options)
        assert got == winner
        starts = [i for event, i, _ in attempts.log if event == "start"]
        assert starts == sorted(finish)
        cancelled = {i for event, i, _ in attempts.log if event == "cancelled"}
        assert cancelled == set(finish) - {winner}


def _interrupt(*args: object) -> Any:
    raise KeyboardInterrupt


@pytest.mark.parametrize("where", ["on", "on_result", "delay"])
async def test_an_interrupt_in_a_user_callable_cancels_every_attempt(where: str) -> None:
    options: dict[str, Any] = {where: _interrupt}
    script: tuple[tuple[float, object], ...] = ((0.3, "a"), (0.3, "b"))
    if where == "on":
        script = ((0.05, Flaky()), (0.3, "b"))
    elif where == "delay":
        options["max_hedged"] = 2
        options["delay"] = lambda hedge: 0.1 if hedge == 1 else _interrupt()
    attempts = Attempts(*script)
    hedge = Hedge(budget=generous(), **options)
    with pytest.raises(KeyboardInterrupt):
        await hedge.call_async(attempts)
    starts = [e for e in attempts.log if e[0] == "start"]
    ends = [e for e in attempts.log if e[0] != "start"]
    assert len(starts) == len(ends)  # nothing left running: no orphan task
    m = hedge.metrics()
    assert m.first_wins + m.hedge_wins + m.failed == 0  # the call was interrupted


async def test_many_calls_at_once_leave_no_attempt_running() -> None:
    import random  # noqa: PLC0415

    rng = random.Random(4)
    hedge = Hedge(2, delay=0.1, budget=generous())
    logs: list[Attempts] = []
    results: list[object] = []

    async def one() -> None:
        script = [
            (rng.choice([0.01, 0.05, 0.15, 0.3]), Flaky() if rng.random() < 0.3 else i)
            for i in range(3)
        ]
        attempts = Attempts(*script)
        logs.append(attempts)
        try:
            results.append(await hedge.call_async(attempts))
        except Flaky:
            results.append("failed")

    async with anyio.create_task_group() as tg:
        for _ in range(200):
            tg.start_soon(one)
    assert len(results) == 200
    for attempts in logs:
        starts = {i for event, i, _ in attempts.log if event == "start"}
        ends = [i for event, i, _ in attempts.log if event != "start"]
        assert sorted(ends) == sorted(starts)  # every attempt ended, once
    m = hedge.metrics()
    assert m.calls == 200
    assert m.first_wins + m.hedge_wins + m.failed == 200
    assert m.failed == results.count("failed")
