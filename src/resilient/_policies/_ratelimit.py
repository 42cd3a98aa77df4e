"""Rate limiters: GCRA, one theoretical arrival time per limiter (or per key).

The Generic Cell Rate Algorithm keeps a single number, the *theoretical arrival time*
(TAT): when the next call would be due if calls came exactly at the rate. A call at
``now`` is admitted if ``max(TAT, now) + interval - burst * interval <= now``; admitting
it moves the TAT on by one ``interval``. That is O(1), exact, and needs no buckets or
timers: over any window of ``w`` seconds, at most ``w / interval + burst`` calls pass.

Time is kept in integer nanoseconds, so the arithmetic is exact: with floats,
``0.1 + 1.0 - 1.0 - 0.1`` is not 0, and a call exactly on time would be told to wait.
Only ``retry_after`` goes back to float seconds, and a clock that reports floats is
coarser than a nanosecond once it reads large values (119 ns apart at 1e9 s), so it is
rounded up to what that clock can show: waiting exactly ``retry_after`` is enough.

A caller may wait up to ``max_wait`` for its turn: its slot is *reserved* (the TAT moves
on at once), so waiting callers queue in order and never starve each other. A caller
cancelled while waiting gives its reservation back if nobody has reserved after it.

The keyed variant, one TAT per key, lives in ``_keyed_ratelimit.py``.

With ``store=`` (``resilient.redis.RedisStore``) the TAT lives in the store, shared by
every process: the store makes the core (same options, same arithmetic, local state as
its fallback), and the limiter picks the matching steps here, once, at construction.
A shared core has no local fast path (its ``admit()`` always says "ask ``reserve()``"):
every call is one round trip, awaited by async callers (:class:`_SharedAsyncStep`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Final

from resilient._core._clock import Clock
from resilient._core._gcra import KIND, NS, RateLimiterCore, RateLimiterMetrics
from resilient._core._outcome import PASS
from resilient._core._validate import Duration
from resilient._policies._pipeline import Wait
from resilient._policies._policy import CorePolicy, SharedStore, bind_store
from resilient._waiting._clock import MONOTONIC, resolve_clock
from resilient._waiting._deadline import remaining

__all__ = ["RateLimiter", "RateLimiterMetrics", "gcra_options"]


def gcra_options(
    rate: object, per: object, burst: object, max_wait: object, name: str | None, clock: object
) -> tuple[Any, ...]:
    """A GCRA core's arguments: the clock resolved, its nanoseconds, the deadline's reader."""
    resolved = resolve_clock(clock)
    # The default clock reads integer nanoseconds directly, exactly.
    now_ns = time.monotonic_ns if resolved is MONOTONIC else None
    return rate, per, burst, max_wait, name, resolved, now_ns, remaining


def _never() -> bool:
    return False


_DECIDE: Final = Wait()
"""What a shared limiter's async ``enter()`` returns: decide in the (awaited) wait."""


class _RateLimiterStep:
    """Admit on enter (or hand back a reserved wait); the outcome does not matter."""

    __slots__ = ("_core",)
    defers = False

    def __init__(self, core: RateLimiterCore) -> None:
        self._core = core

    def enter(self) -> Any:
        return None if self._core.admit() else self.over_the_rate()

    def gate_hooks(self, is_async: bool) -> tuple[Callable[..., Any], ...]:
        """What a runner calls instead of enter and the exits, which do nothing here."""
        wait = self.enter_wait_async if is_async else self.enter_wait
        return self._core.admit, self.over_the_rate, wait

    def inline_gate(self, is_async: bool) -> tuple[Any, ...] | None:
        """What a runner needs to admit as ``core.admit`` does, in its own frame.

        (the nanosecond clock, the lock, the cell of the TAT and the constants, the
        admitted count's cell, and the early refusal's maker); ``None`` for a core without
        local admission (a shared one), which the runner then calls through
        :meth:`gate_hooks`.
        """
        core = self._core
        if type(core) is not RateLimiterCore:
            return None
        return (core.now, core._lock, core._tat, core._admitted_fast, core.early_refusal)

    def over_the_rate(self) -> Wait | None:
        """After ``admit()`` said no: reserve a slot to wait for, or raise the refusal."""
        delay, tat = self._core.reserve()
        return None if delay == 0 else Wait(delay / NS, tat)

    # enter_wait/enter_wait_async are twins (tests/test_twins.py).

    def enter_wait(self, wait: Wait) -> None:
        try:
            self._core.clock.sleep(wait.delay)  # type: ignore[arg-type]
        except BaseException:
            self._core.give_back(wait.data)
            raise

    async def enter_wait_async(self, wait: Wait) -> None:
        try:
            await self._core.clock.asleep(wait.delay)  # type: ignore[arg-type]
        except BaseException:
            self._core.give_back(wait.data)
            raise

    def exit_ok(self, token: None, result: Any) -> Any:
        return result

    def exit_error(self, token: None, exc: Exception) -> Any:
        return PASS

    def exit_cancel(self, token: None, exc: BaseException) -> BaseException:
        return exc


class _SharedAsyncStep(_RateLimiterStep):
    """The async step of a limiter whose state is in a store: the round trip is awaited.

    (Sync callers need no step of their own: a shared core's ``admit()`` always says
    "ask ``reserve()``", which is the store's decision.) ``enter()`` cannot await, so it
    hands the decision to the wait (``_DECIDE``), which asks the store, then sleeps for
    a reserved slot; a cancelled wait gives the slot back, shielded from the
    cancellation.
    """

    __slots__ = ()
    _core: Any

    def enter(self) -> Any:
        return _DECIDE

    def gate_hooks(self, is_async: bool) -> tuple[Callable[..., Any], ...]:
        return _never, self.enter, self.enter_wait_async

    async def enter_wait_async(self, wait: Wait) -> None:
        core = self._core
        delay, token = await core.reserve_async()
        if delay == 0:
            return
        try:
            await core.clock.asleep(delay / NS)
        except BaseException:
            await core.give_back_async(token)
            raise


class RateLimiter(CorePolicy[RateLimiterCore]):
    """Admit at most ``rate`` calls per ``per`` seconds, with bursts of ``burst`` (GCRA).

    A call over the rate waits up to ``max_wait`` for its slot (reserved, so waiting
    callers are served in order and never starve each other), else raises
    [`RateLimitedError`][resilient.RateLimitedError] whose ``retry_after`` is exactly the seconds
    until a call would be admitted. Waits never run past the current deadline.

    Args:
        rate: Calls per period (> 0; fractions allowed: ``rate=0.5`` is one call per 2 s).
        per: The period in seconds (default 1).
        burst: Calls admitted at once after an idle period (default: one period's
            worth, ``max(1, int(rate))``).
        max_wait: Seconds a call may wait for its slot (default 0: refuse at once).
        name: A name for errors, events and metrics (required with ``store``: it is
            the limiter's key there, the same in every process).
        clock: Where time comes from and how waits happen (default: monotonic).
        store: Shared state (``resilient.redis.RedisStore``): one limit for every
            process, decided by the store on its own clock; local state while the store
            is unavailable. See the "Scale-out" page.
    """

    __slots__ = ("_async", "_step")
    kind = KIND

    def __init__(
        self,
        rate: float,
        per: Duration = 1.0,
        *,
        burst: int | None = None,
        max_wait: Duration = 0.0,
        name: str | None = None,
        clock: Clock | None = None,
        store: SharedStore | None = None,
    ) -> None:
        options = gcra_options(rate, per, burst, max_wait, name, clock)
        self._step: Any
        self._async: Any
        if store is None:
            self._core = RateLimiterCore(*options)
            self._step = self._async = _RateLimiterStep(self._core)
            # What reconfigure() changes (not with a store, whose state is shared).
            self._config = {"rate": rate, "per": per, "burst": burst, "max_wait": max_wait}
        else:
            self._core = bind_store(store, KIND)(options)
            self._step = _RateLimiterStep(self._core)
            self._async = _SharedAsyncStep(self._core)

    def _prepare_reconfigure(
        self, merged: dict[str, Any], changed: frozenset[str]
    ) -> Callable[[], None]:
        # Checked by a throwaway core, as construction checks them; the tokens are kept.
        core = self._core
        rate, per, burst, max_wait = (merged[k] for k in ("rate", "per", "burst", "max_wait"))
        fresh = RateLimiterCore(*gcra_options(rate, per, burst, max_wait, None, core.clock))
        return lambda: core.retune(fresh)

    def _sync_step(self) -> Any:
        return self._step

    def _async_step(self) -> Any:
        return self._async

    # Alone, as in a composition, the limiter runs the code compose generates from its
    # step (_pipeline._gate_level): an admitted call pays for one lock and one clock
    # read, not for exits, since the outcome of the call does not matter here.

    @property
    def rate(self) -> float:
        """Calls per period."""
        return self._core.rate

    @property
    def per(self) -> float:
        """The period in seconds."""
        return self._core.per

    @property
    def burst(self) -> int:
        """Calls admitted at once after an idle period."""
        return self._core.burst

    def metrics(self) -> RateLimiterMetrics:
        """Admitted, waited and rejected calls, as a frozen snapshot."""
        return self._core.metrics()

    def __repr__(self) -> str:
        return f"<RateLimiter {self.name!r} {self.rate:g}/{self.per:g}s burst={self.burst}>"
