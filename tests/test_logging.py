"""What the ``resilient`` logger tells an operator (issue 13, item 7).

The logger's name already says ``resilient``, so messages do not repeat it (with the
common ``%(name)s: %(message)s`` format it read ``resilient: resilient: ...``). A trip
to OPEN is a WARNING carrying the figures that caused it; recovery is INFO.
"""

from __future__ import annotations

import ast
import logging
import pathlib

import pytest

import resilient
from resilient import CircuitBreaker, CircuitState, CountWindow, Retry, StateTransition
from resilient.testing import ManualClock, capture_events


class Boom(Exception):
    pass


def fail(breaker: CircuitBreaker) -> None:
    with pytest.raises(Boom):
        breaker.call(_raise)


def _raise() -> None:
    raise Boom


def transitions(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [(r.levelno, r.getMessage()) for r in caplog.records if "->" in r.getMessage()]


def test_no_message_repeats_the_logger_name(caplog: pytest.LogCaptureFixture) -> None:
    clock = ManualClock()
    breaker = CircuitBreaker(
        "inventory", window=CountWindow(4), minimum_calls=4, open_duration=5, clock=clock
    )
    retry = Retry(3, wait=lambda attempt: 1 if attempt == 1 else "x", clock=clock)
    with caplog.at_level(logging.DEBUG, logger="resilient"):
        for _ in range(4):
            fail(breaker)
        with pytest.raises(Exception, match="open"):
            breaker.call(_raise)
        with pytest.raises(Boom):
            retry.call(_raise)
    assert caplog.records
    for record in caplog.records:
        formatted = f"{record.name}: {record.getMessage()}"
        assert "resilient: resilient:" not in formatted, formatted
        assert not record.getMessage().startswith("resilient:"), record.getMessage()


def test_a_trip_to_open_is_a_warning_with_its_figures(caplog: pytest.LogCaptureFixture) -> None:
    clock = ManualClock()
    breaker = CircuitBreaker(
        "inventory",
        window=CountWindow(10),
        minimum_calls=5,
        failure_rate_threshold=0.5,
        clock=clock,
    )
    with caplog.at_level(logging.INFO, logger="resilient"), capture_events() as events:
        breaker.call(lambda: None)
        breaker.call(lambda: None)
        for _ in range(3):
            fail(breaker)
    assert breaker.state is CircuitState.OPEN
    assert transitions(caplog) == [
        (
            logging.WARNING,
            (
                "circuit breaker 'inventory': closed -> open "
                "(failure rate 60.0%, slow-call rate 0.0%, calls in the window: 5)"
            ),
        )
    ]
    (event,) = [e for e in events if isinstance(e, StateTransition)]
    assert (event.failure_rate, event.slow_call_rate, event.calls) == (0.6, 0.0, 5)


def test_recovery_is_info_and_half_open_is_info(caplog: pytest.LogCaptureFixture) -> None:
    clock = ManualClock()
    breaker = CircuitBreaker(
        "inventory",
        window=CountWindow(2),
        minimum_calls=2,
        open_duration=5,
        half_open_calls=1,
        clock=clock,
    )
    fail(breaker)
    fail(breaker)
    clock.advance(5)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="resilient"):
        breaker.call(lambda: None)
    assert breaker.state is CircuitState.CLOSED
    assert transitions(caplog) == [
        (logging.INFO, "circuit breaker 'inventory': open -> half_open"),
        (logging.INFO, "circuit breaker 'inventory': half_open -> closed"),
    ]


def test_a_failed_trial_reopens_with_a_warning_and_its_figures(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = ManualClock()
    breaker = CircuitBreaker(
        "inventory",
        window=CountWindow(2),
        minimum_calls=2,
        open_duration=5,
        half_open_calls=1,
        clock=clock,
    )
    fail(breaker)
    fail(breaker)
    clock.advance(5)
    with caplog.at_level(logging.INFO, logger="resilient"):
        fail(breaker)
    assert transitions(caplog)[-1] == (
        logging.WARNING,
        (
            "circuit breaker 'inventory': half_open -> open "
            "(failure rate 100.0%, slow-call rate 0.0%, calls in the window: 1)"
        ),
    )


def test_manual_transitions(caplog: pytest.LogCaptureFixture) -> None:
    breaker = CircuitBreaker("inventory")
    with caplog.at_level(logging.INFO, logger="resilient"):
        breaker.force_open()
        breaker.reset()
        breaker.disable()
    assert transitions(caplog) == [
        (logging.WARNING, "circuit breaker 'inventory': closed -> forced_open"),
        (logging.INFO, "circuit breaker 'inventory': forced_open -> closed"),
        (logging.INFO, "circuit breaker 'inventory': closed -> disabled"),
    ]


def _logs_with_the_name(path: pathlib.Path) -> list[int]:
    return [
        node.lineno
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "logger"
        and node.args
        and isinstance(node.args[0], ast.Constant)
        and str(node.args[0].value).startswith("resilient")
    ]


def test_no_log_message_of_the_library_repeats_the_logger_name() -> None:
    # Every module logs to `resilient` or a child of it: a message that starts with the
    # name again reads `resilient.asgi: resilient.asgi: ...` with `%(name)s: %(message)s`.
    root = pathlib.Path(resilient.__file__).parent
    offenders = {
        str(path.relative_to(root)): lines
        for path in sorted(root.rglob("*.py"))
        if (lines := _logs_with_the_name(path))
    }
    assert offenders == {}
