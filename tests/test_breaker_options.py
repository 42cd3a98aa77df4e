"""CircuitBreaker's options are spelled out in its signature and in the core's table only.

The public signature (with defaults, types and docstring) is what users and type
checkers read; ``BreakerCore`` receives the options as keywords and checks each by its
entry in ``_core._breaker_options.OPTIONS``. These tests keep the two in step and the public
signature exactly as it was (plus ``store``, issue 15, last and keyword-only).
"""

from __future__ import annotations

import inspect

import pytest

from resilient import CircuitBreaker, CountWindow
from resilient._core._breaker import BreakerCore
from resilient._core._breaker_options import OPTIONS
from resilient._core._clock import SYSTEM_TIME

SIGNATURE = (
    "(name: 'str | None' = None, *, failure_rate_threshold: 'float' = 0.5, "
    "slow_call_rate_threshold: 'float' = 1.0, slow_call_duration: 'Duration | None' = None, "
    "window: 'CountWindow | TimeWindow' = CountWindow(100), minimum_calls: 'int' = 100, "
    "open_duration: 'Duration | Callable[[int], float]' = 60.0, half_open_calls: 'int' = 10, "
    "half_open_max_duration: 'Duration | None' = None, "
    "record: 'ExceptionMatcher' = <class 'Exception'>, ignore: 'ExceptionMatcher' = (), "
    "record_result: 'Callable[[Any], bool] | None' = None, clock: 'Clock | None' = None, "
    "store: 'SharedStore | None' = None) -> 'None'"
)


def test_the_public_signature_is_unchanged() -> None:
    assert str(inspect.signature(CircuitBreaker)) == SIGNATURE


def test_the_core_checks_exactly_the_options_of_the_signature_in_their_order() -> None:
    parameters = inspect.signature(CircuitBreaker).parameters.values()
    options = [
        p.name for p in parameters if p.kind is p.KEYWORD_ONLY and p.name not in ("clock", "store")
    ]
    assert list(OPTIONS) == options


def test_every_option_reaches_the_core_checked() -> None:
    def backoff(attempt: int) -> float:
        return 2.0 * attempt

    breaker = CircuitBreaker(
        "opts",
        failure_rate_threshold=0.25,
        slow_call_rate_threshold=0.75,
        slow_call_duration=1,  # an int: checked into a float
        window=CountWindow(4),
        minimum_calls=9,  # capped at the window's size
        open_duration=backoff,
        half_open_calls=3,
        half_open_max_duration=5,
        record=(KeyError,),
        ignore=ValueError,
        record_result=lambda result: result is None,
    )
    core = breaker._core
    assert (core._failure_threshold, core._slow_threshold) == (0.25, 0.75)
    assert (core._slow_duration, type(core._slow_duration)) == (1.0, float)
    assert (core._template, core._minimum_calls) == (4, 4)
    assert (core._open_duration, core._last_open_duration) == (backoff, 2.0)
    assert (core._half_open_calls, core._half_open_max) == (3, 5.0)
    assert core._record is not None
    assert core._record(KeyError())
    assert core._ignore is not None
    assert core._ignore(ValueError())
    assert core._record_result is not None
    assert core._record_result(None)


def test_of_two_bad_options_the_first_in_the_signature_is_named() -> None:
    with pytest.raises(ValueError, match="failure_rate_threshold"):
        CircuitBreaker(failure_rate_threshold=2.0, half_open_calls=0)
    with pytest.raises(ValueError, match="half_open_calls"):
        CircuitBreaker(half_open_calls=0, half_open_max_duration=-1.0)
    with pytest.raises(TypeError, match="window must be a CountWindow or a TimeWindow, not int"):
        CircuitBreaker(window=5, open_duration=-1)  # type: ignore[arg-type]


def test_the_core_refuses_missing_or_unknown_options() -> None:
    options = {name: CircuitBreaker.__init__.__kwdefaults__[name] for name in OPTIONS}
    BreakerCore("complete", clock=SYSTEM_TIME, **options)
    del options["record"]
    with pytest.raises(TypeError, match=r"missing \['record'\], unknown \[\]"):
        BreakerCore("incomplete", clock=SYSTEM_TIME, **options)
    with pytest.raises(TypeError, match=r"missing \['record'\], unknown \['recrod'\]"):
        BreakerCore("typo", clock=SYSTEM_TIME, recrod=Exception, **options)
