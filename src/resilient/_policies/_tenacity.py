"""tenacity's wait strategies (``wait_exponential_jitter``, sums of them...) as schedules.

An integration, kept out of the cores: tenacity is an extra, imported only when a
``Retry`` is given a callable wait, to tell whether it is one of tenacity's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from resilient._core._wait import MAX_WAIT, Schedule
from resilient._core._wait import compile_wait as _compile_core_wait

__all__ = ["compile_wait"]


def compile_wait(wait: object, max_wait: float = MAX_WAIT) -> Callable[[], Schedule]:
    """Like the core's ``compile_wait``, and tenacity's strategies too."""
    if callable(wait) and _is_tenacity_wait(wait):
        return lambda: _tenacity_schedule(wait)
    return _compile_core_wait(wait, max_wait)


def _is_tenacity_wait(wait: object) -> bool:
    try:
        from tenacity.wait import wait_base  # noqa: PLC0415 -- only when a callable is given
    except ImportError:  # pragma: no cover - tenacity is an extra, installed for the tests
        return False
    return isinstance(wait, wait_base)


def _tenacity_schedule(wait: Any) -> Schedule:
    from tenacity import RetryCallState  # noqa: PLC0415

    # tenacity's strategies read only the attempt number and the outcome from it.
    state = RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]

    def schedule(attempt: int, exc: BaseException | None, result: Any) -> float:
        state.attempt_number = attempt
        if exc is not None:
            state.set_exception((type(exc), exc, exc.__traceback__))
        else:
            state.set_result(result)
        return float(wait(state))

    return schedule
