"""The async step of a shared breaker: a trial's lease is awaited, never waited for on the loop.

A shared breaker's free path (CLOSED) is the local one; past it, admission may need the
record (a half-open trial's lease). The core says so by returning a
:class:`~resilient.redis._breaker.LeaseAsk` from ``admit_plan()``: the sync path asks
for it inline (``admit_checked()``), this step hands it to the runner as a
:class:`~resilient._policies._pipeline.Wait`, and the runner awaits
``enter_wait_async``, which awaits the round trip (``SharedBreakerCore.lease_async``).
The core reads the answer the same way for both. The trial's report is sent by the
store's thread (the caller needs no answer), so the exits are the local step's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from resilient._core._errors import CircuitOpenError
from resilient._policies._breaker import _BreakerStep
from resilient._policies._pipeline import Wait
from resilient.redis._breaker_io import LeaseAsk

if TYPE_CHECKING:
    from resilient.redis._breaker import SharedBreakerCore

__all__ = ["SharedAsyncStep"]


class SharedAsyncStep(_BreakerStep):
    """As the breaker's step, with the lease round trip awaited (see the module docstring)."""

    __slots__ = ()
    _core: SharedBreakerCore

    def enter(self) -> Any:
        core = self._core
        timed = core._timed  # read once, as the local step does
        start = self._monotonic() if timed else 0.0  # before a permit is taken
        ticket = core._free
        if ticket is None:
            admitted = core.admit_plan()
            if type(admitted) is LeaseAsk:
                # The start time travels with the ask: the wait is part of the call.
                return Wait(start if timed else None, admitted)
            if isinstance(admitted, CircuitOpenError):
                try:
                    raise admitted
                finally:
                    del admitted
            ticket = admitted  # type: ignore[assignment]
        return (ticket, start) if timed else ticket

    async def enter_wait_async(self, wait: Wait) -> Any:
        admitted = await self._core.lease_async(wait.data)
        if isinstance(admitted, CircuitOpenError):
            try:
                raise admitted
            finally:
                del admitted
        return admitted if wait.delay is None else (admitted, wait.delay)
