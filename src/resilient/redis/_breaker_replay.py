"""How a shared breaker's transitions cross between the record and the local table.

A local decision the fleet must hear of is one of :data:`SHARED_TRIGGERS`; a control
names the record's state in :data:`CONTROLS`; a transition made elsewhere is replayed
through the local transition table by :func:`replay`, so that the one method that
changes a breaker's state (``BreakerCore._fire``) applies it, with its events.
"""

from __future__ import annotations

from typing import Final

from resilient._core._breaker_state import (
    CLOSED,
    DISABLED,
    FORCED_OPEN,
    HALF_OPEN,
    METRICS_ONLY,
    OPEN,
    CircuitState,
    Trigger,
)

__all__ = ["CONTROLS", "SHARED_TRIGGERS", "replay"]

# The local decisions that the fleet must hear of (as compare-and-sets).
SHARED_TRIGGERS: Final = frozenset(
    {Trigger.TRIPPED, Trigger.TRIALS_PASSED, Trigger.TRIALS_FAILED, Trigger.HALF_OPEN_EXPIRED}
)
CONTROLS: Final = {
    Trigger.RESET: CLOSED,
    Trigger.FORCE_OPEN: FORCED_OPEN,
    Trigger.DISABLE: DISABLED,
    Trigger.RECORD_ONLY: METRICS_ONLY,
}
_MANUAL: Final = {target: trigger for trigger, target in CONTROLS.items()}

# How a remote transition is replayed through the local table: the triggers from the
# local state to the record's. The record may have moved several steps meanwhile.
_AUTOMATIC: Final = {
    (CLOSED, OPEN): (Trigger.TRIPPED,),
    (CLOSED, HALF_OPEN): (Trigger.TRIPPED, Trigger.OPEN_ELAPSED),
    (OPEN, HALF_OPEN): (Trigger.OPEN_ELAPSED,),
    (OPEN, OPEN): (Trigger.OPEN_ELAPSED, Trigger.TRIALS_FAILED),
    (HALF_OPEN, CLOSED): (Trigger.TRIALS_PASSED,),
    (HALF_OPEN, OPEN): (Trigger.TRIALS_FAILED,),
    (HALF_OPEN, HALF_OPEN): (Trigger.TRIALS_FAILED, Trigger.OPEN_ELAPSED),
    (CLOSED, CLOSED): (Trigger.RESET,),
}


def replay(local: CircuitState, remote: CircuitState) -> tuple[str, ...]:
    """The triggers that take the local table from ``local`` to ``remote`` (a new stay)."""
    path = _AUTOMATIC.get((local, remote))
    if path is not None:
        return path
    if remote in _MANUAL:
        return (_MANUAL[remote],) if local is not remote else (Trigger.RESET, _MANUAL[remote])
    # From a manual state to OPEN or HALF_OPEN: reset, then as from CLOSED.
    return (Trigger.RESET, *_AUTOMATIC[(CLOSED, remote)])
