"""The breaker's admission is written once: its twins are checked to stay identical.

The breaker guards a lone decorated call with a guard of its own, the step's logic
written flat (each frame saved on that hot path is ~100 ns): ``_sync_guard`` and
``_async_guard``, and the step's ``enter()`` that ``compose`` and ``with breaker:`` use.
These tests fail if one of them drifts from the others.
"""

from __future__ import annotations

import ast

from resilient._policies._breaker import CircuitBreaker, _BreakerStep
from resilient._policies._pipeline import _breaker_level
from twins import assert_twins, normalized

# Only a sync guard can be handed a coroutine by a function that is not async.
SYNC_ONLY = [
    "coroutine = COROUTINE",
    "if type(result) is coroutine:\n    refuse_coroutine(fn, result)",
]


# Only async callers of a shared breaker await round trips: they get the runner.
ASYNC_ONLY = ["if self._async is not self._step:\n    return build_async(self._flatten(), fn)"]


def test_the_sync_and_async_guards_differ_only_in_async_await() -> None:
    assert_twins(
        CircuitBreaker._sync_guard,
        CircuitBreaker._async_guard,
        sync_only=SYNC_ONLY,
        async_only=ASYNC_ONLY,
    )


def test_the_step_admits_as_the_guards_do() -> None:
    guard = normalized(CircuitBreaker._sync_guard, only=SYNC_ONLY)
    guarded = next(node for node in guard.body if isinstance(node, ast.FunctionDef))
    # The step reads from `self` what the guard holds in closure variables, and hands
    # its caller a token instead of running the call.
    enter = normalized(
        _BreakerStep.enter,
        renames={"self._monotonic": "monotonic", "core.admit_checked": "admit_checked"},
        only=["core = self._core", "return (ticket, start) if timed else ticket"],
    )
    admission = [ast.unparse(statement) for statement in enter.body]
    assert admission == [ast.unparse(statement) for statement in guarded.body[: len(admission)]]
    assert isinstance(guarded.body[len(admission)], ast.Try)  # then the call


def test_a_compose_runner_guards_as_the_breaker_alone_does() -> None:
    # A runner writes the breaker's guard out at its level (_pipeline._breaker_level),
    # with the hooks' names; renamed back, the lines are the guard's own.
    enter, exit_ = _breaker_level(0, "    ")
    call = "            result = fn(*args, **kwargs)"
    source = "\n".join(["def guarded(*args, **kwargs):", *enter, call, *exit_, "    return result"])
    renames = {
        "c0": "core",
        "mo0": "monotonic",
        "ad0": "admit_checked",
        "E0": "CircuitOpenError",
        "su0": "on_success",
        "er0": "on_error",
        "ca0": "on_cancel",
        "timed0": "timed",
        "start0": "start",
        "admitted0": "admitted",
        "t0": "ticket",
    }
    level = normalized(source, renames=renames)
    guard = normalized(CircuitBreaker._sync_guard, only=SYNC_ONLY)
    guarded = next(node for node in guard.body if isinstance(node, ast.FunctionDef))
    for i, statement in enumerate(guarded.body):  # `ticket: Ticket | None = ...`: untyped
        if isinstance(statement, ast.AnnAssign) and statement.value is not None:
            guarded.body[i] = ast.Assign([statement.target], statement.value, lineno=0)
    assert [ast.unparse(s) for s in level.body] == [ast.unparse(s) for s in guarded.body]
