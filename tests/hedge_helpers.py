"""Virtual time for the hedge's async tests: asyncio and trio loops whose clocks jump.

On trio, ``trio.testing.MockClock(autojump_threshold=0)``; on asyncio,
``resilient.testing.VirtualTimeLoop``: whenever nothing is ready to run, its clock jumps
to the next timer. Either way a test sleeping for an hour takes no real time, and every
start, win and cancellation happens at an exact, reproducible instant.
"""

from __future__ import annotations

from typing import Any

import anyio
import trio.testing

from resilient.testing import VirtualTimeLoop


def virtual_backend(name: str) -> tuple[str, dict[str, Any]]:
    """An ``anyio_backend`` value running ``name`` in virtual time."""
    if name == "asyncio":
        return "asyncio", {"loop_factory": VirtualTimeLoop}
    return "trio", {"clock": trio.testing.MockClock(autojump_threshold=0)}


class Attempts:
    """Scripted attempts: each call takes the next (seconds, outcome) and logs what happens.

    The log holds ``(event, attempt, time)`` with times relative to the first start:
    ``start``, ``done``, ``failed``, ``cancelled``.
    """

    def __init__(self, *script: tuple[float, object]) -> None:
        self.script = list(script)
        self.log: list[tuple[str, int, float]] = []
        self.t0: float | None = None

    @property
    def timeline(self) -> list[tuple[str, int, float]]:
        """The log in time order; what happens at one instant in the order it must.

        (Two cancellations at one instant may run in either order: by attempt then.)
        """
        rank = {"failed": 0, "done": 1, "start": 2, "cancelled": 3}
        return sorted(self.log, key=lambda e: (e[2], rank[e[0]], e[1]))

    def now(self) -> float:
        if self.t0 is None:
            self.t0 = anyio.current_time()
        return round(anyio.current_time() - self.t0, 6)

    async def __call__(self) -> object:
        i = sum(1 for event in self.log if event[0] == "start")
        seconds, outcome = self.script[i]
        self.log.append(("start", i, self.now()))
        try:
            await anyio.sleep(seconds)
        except BaseException:
            self.log.append(("cancelled", i, self.now()))
            raise
        if isinstance(outcome, BaseException):
            self.log.append(("failed", i, self.now()))
            raise outcome
        self.log.append(("done", i, self.now()))
        return outcome
