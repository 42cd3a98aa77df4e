"""The adaptive throttle under threads and tasks: every call accounted for, exactly once.

Time stands still (a ``ManualClock``), so the window keeps everything and its counts
can be checked against what the callers saw: requests = every call but those that
counted as neither, accepts = the accepted ones, and no accept without its request.
"""

from __future__ import annotations

import random
import threading
from collections import Counter

import anyio
import pytest

from resilient import AdaptiveThrottle, ThrottledError
from resilient.testing import ManualClock
from throttle_helpers import NotFound, Refused

THREADS = 8
CALLS = 400


def _outcome(rng: random.Random) -> str:
    # Of the calls that count, three in four are refused: the throttle sheds.
    return rng.choice(["accepted", "refused", "refused", "refused", "ignored", "interrupted"])


def _fn(outcome: str) -> object:
    def fn() -> str:
        if outcome == "refused":
            raise Refused
        if outcome == "ignored":
            raise NotFound
        if outcome == "interrupted":
            raise KeyboardInterrupt
        return "ok"

    return fn


def _check(throttle: AdaptiveThrottle, seen: Counter[str]) -> None:
    m = throttle.metrics()
    total = sum(seen.values())
    assert m.admitted + m.rejected == total
    assert m.rejected == seen["shed"]
    assert (m.accepted, m.failed, m.ignored) == (seen["accepted"], seen["refused"], seen["ignored"])
    assert m.admitted == m.accepted + m.failed + m.ignored + seen["interrupted"]
    assert m.requests == total - seen["ignored"] - seen["interrupted"]
    assert m.accepts == seen["accepted"]


@pytest.mark.usefixtures("fast_switching")
def test_threads() -> None:
    throttle = AdaptiveThrottle(
        ignore=NotFound, clock=ManualClock(), random=random.Random(3), name="stress"
    )
    seen: Counter[str] = Counter()
    lock = threading.Lock()
    start = threading.Barrier(THREADS)

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        mine: Counter[str] = Counter()
        start.wait()
        for _ in range(CALLS):
            outcome = _outcome(rng)
            try:
                throttle.call(_fn(outcome))  # type: ignore[arg-type]
            except ThrottledError:
                mine["shed"] += 1
                continue
            except (Refused, NotFound, KeyboardInterrupt):
                pass
            mine[outcome] += 1
        with lock:
            seen.update(mine)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    _check(throttle, seen)
    assert seen["shed"] > 0


async def test_tasks_with_cancellations(anyio_backend: str) -> None:
    throttle = AdaptiveThrottle(
        ignore=NotFound, clock=ManualClock(), random=random.Random(5), name="stress"
    )
    seen: Counter[str] = Counter()

    async def task(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(CALLS // 4):
            outcome = rng.choice(["accepted", "refused", "ignored", "cancelled"])

            async def fn(outcome: str = outcome) -> str:
                await anyio.lowlevel.checkpoint()  # other tasks run in between
                if outcome == "refused":
                    raise Refused
                if outcome == "ignored":
                    raise NotFound
                if outcome == "cancelled":
                    await anyio.sleep_forever()
                return "ok"

            with anyio.CancelScope() as scope:
                if outcome == "cancelled":
                    scope.cancel()  # delivered at fn's first checkpoint
                try:
                    await throttle.call_async(fn)
                except ThrottledError:
                    seen["shed"] += 1
                    continue
                except (Refused, NotFound):
                    pass
            seen["interrupted" if outcome == "cancelled" else outcome] += 1

    async with anyio.create_task_group() as tg:
        for i in range(THREADS):
            tg.start_soon(task, i)
    _check(throttle, seen)
