"""The breaker's transition table, read as data and driven on ``BreakerCore`` directly.

As h11's ``tests/test_state.py`` does: every transition the table lists is reached
from its state by its trigger (with plain times, no adapter), the table lists exactly
the transitions the contract documents, a trigger the table refuses is an internal
error, and one method, ``BreakerCore._fire``, is the only code that changes the state.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest

import resilient
from resilient import CircuitOpenError, CircuitState, CountWindow, StateTransition
from resilient._core._breaker import BreakerCore
from resilient._core._breaker_state import TRANSITIONS, TRIGGERS, TransitionError, Trigger
from resilient.testing import capture_events

CLOSED = CircuitState.CLOSED
OPEN = CircuitState.OPEN
HALF_OPEN = CircuitState.HALF_OPEN
FORCED_OPEN = CircuitState.FORCED_OPEN
DISABLED = CircuitState.DISABLED
METRICS_ONLY = CircuitState.METRICS_ONLY
MANUAL = {
    Trigger.RESET: CLOSED,
    Trigger.FORCE_OPEN: FORCED_OPEN,
    Trigger.DISABLE: DISABLED,
    Trigger.RECORD_ONLY: METRICS_ONLY,
}

# The transitions DESIGN.md section 3 and docs/circuit-breaker.md describe, written out.
DOCUMENTED = {
    (CLOSED, Trigger.TRIPPED, OPEN),
    (OPEN, Trigger.OPEN_ELAPSED, HALF_OPEN),
    (HALF_OPEN, Trigger.TRIALS_PASSED, CLOSED),
    (HALF_OPEN, Trigger.TRIALS_FAILED, OPEN),
    (HALF_OPEN, Trigger.HALF_OPEN_EXPIRED, OPEN),
    (HALF_OPEN, Trigger.FORKED, HALF_OPEN),  # a forked child's own half-open stay
    # reconfigure() of the window: a new stay in the states that record into it.
    *((state, Trigger.REWINDOWED, state) for state in (CLOSED, DISABLED, METRICS_ONLY)),
    # reset() from any state; the other controls from any state but their own
    # (asking for the state the breaker is in is not a transition).
    *((state, Trigger.RESET, CLOSED) for state in CircuitState),
    *(
        (state, trigger, target)
        for state in CircuitState
        for trigger, target in MANUAL.items()
        if target is not CLOSED and state is not target
    ),
}

TABLE = sorted(
    (
        (state, trigger, target)
        for state, row in TRANSITIONS.items()
        for trigger, target in row.items()
    ),
    key=lambda t: (t[0].value, t[1]),
)


class FakeTime:
    """A time source whose time moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now


class Boom(Exception):
    pass


def new_core(time: FakeTime, **options: Any) -> BreakerCore:
    settings: dict[str, Any] = {
        "failure_rate_threshold": 0.5,
        "slow_call_rate_threshold": 1.0,
        "slow_call_duration": None,
        "window": CountWindow(1),
        "minimum_calls": 1,
        "open_duration": 5.0,
        "half_open_calls": 1,
        "half_open_max_duration": 2.0,
        "record": Exception,
        "ignore": (),
        "record_result": None,
    }
    settings.update(options)
    return BreakerCore("transitions", clock=time, **settings)


def admit(core: BreakerCore) -> Any:
    ticket = core._free or core.admit_checked()
    assert not isinstance(ticket, CircuitOpenError), ticket
    return ticket


class Driven:
    """A core brought to ``state`` through its own triggers; a held trial in HALF_OPEN."""

    def __init__(self, state: CircuitState) -> None:
        self.time = FakeTime()
        self.core = new_core(self.time)
        self.trial: Any = None
        if state in (OPEN, HALF_OPEN):
            self.core.on_error(admit(self.core), Boom(), 0.0)
            assert self.core.state is OPEN
        if state is HALF_OPEN:
            self.time.now += 5.0
            self.trial = admit(self.core)
        if state in (FORCED_OPEN, DISABLED, METRICS_ONLY):
            self.core.control({v: k for k, v in MANUAL.items()}[state])
        assert self.core.state is state

    def cause(self, trigger: str) -> None:
        core = self.core
        if trigger is Trigger.TRIPPED:
            core.on_error(admit(core), Boom(), 0.0)
        elif trigger is Trigger.OPEN_ELAPSED:
            self.time.now += 5.0
            admit(core)
        elif trigger is Trigger.TRIALS_PASSED:
            core.on_success(self.trial, "ok", 0.0)
        elif trigger is Trigger.TRIALS_FAILED:
            core.on_error(self.trial, Boom(), 0.0)
        elif trigger is Trigger.HALF_OPEN_EXPIRED:
            self.time.now += 2.0
            _ = core.state  # read lazily, as every access does
        elif trigger is Trigger.FORKED:
            core._after_fork_in_child()
        else:
            core.control(trigger)


def test_the_table_holds_exactly_the_documented_transitions() -> None:
    assert set(TABLE) == DOCUMENTED
    assert set(TRANSITIONS) == set(CircuitState)
    assert set(TRIGGERS) == {value for key, value in vars(Trigger).items() if key.isupper()}
    assert len(set(TRIGGERS)) == len(TRIGGERS)


@pytest.mark.parametrize(
    ("state", "trigger", "target"), TABLE, ids=[f"{s.value}-{t}" for s, t, _ in TABLE]
)
def test_every_transition_in_the_table_is_reached_by_its_trigger(
    state: CircuitState, trigger: Trigger, target: CircuitState
) -> None:
    driven = Driven(state)
    epoch = driven.core._epoch
    with capture_events() as events:
        driven.cause(trigger)
    assert driven.core.state is target
    # Every transition starts a new stay, a same-state one included...
    assert driven.core._epoch is not epoch
    assert driven.core._epoch.state is target
    # ...and only a change of state is an event (and counted).
    moves = [(e.from_state, e.to_state) for e in events if isinstance(e, StateTransition)]
    assert moves == ([] if state is target else [(state, target)])
    counts = driven.core.transition_counts()
    assert counts.get((state, target), 0) == (0 if state is target else 1)


@pytest.mark.parametrize("state", [FORCED_OPEN, DISABLED, METRICS_ONLY], ids=lambda s: s.value)
def test_asking_for_the_manual_state_the_breaker_is_in_changes_nothing(
    state: CircuitState,
) -> None:
    driven = Driven(state)
    epoch = driven.core._epoch
    with capture_events() as events:
        driven.core.control({v: k for k, v in MANUAL.items()}[state])
    assert driven.core._epoch is epoch
    assert not [e for e in events if isinstance(e, StateTransition)]


@pytest.mark.parametrize("state", list(CircuitState), ids=lambda s: s.value)
def test_a_trigger_the_table_refuses_is_an_internal_error_that_changes_nothing(
    state: CircuitState,
) -> None:
    driven = Driven(state)
    core = driven.core
    refused = [trigger for trigger in TRIGGERS if trigger not in TRANSITIONS[state]]
    assert refused  # every state refuses something (OPEN cannot trip again, ...)
    for trigger in refused:
        epoch, window = core._epoch, core._window
        with pytest.raises(TransitionError, match=f"no transition on {trigger} "):
            core._fire(trigger, [], driven.time.now)
        assert (core.state, core._epoch, core._window) == (state, epoch, window)


# -- one place changes the state --------------------------------------------------------

PACKAGE = Path(resilient.__file__).parent
BREAKER_FILES = [
    *sorted((PACKAGE / "_core").glob("_breaker*.py")),
    PACKAGE / "_policies" / "_breaker.py",
]
# What a state change writes: the state, and the stay (epoch) with its lock-free ticket.
STATE_ATTRIBUTES = {"_state", "_epoch", "_free"}


def assigned(target: ast.expr) -> list[ast.Attribute]:
    """The attributes an assignment target writes (``a.b.c = x`` writes ``c``, not ``b``)."""
    if isinstance(target, (ast.Tuple, ast.List)):
        return [found for element in target.elts for found in assigned(element)]
    if isinstance(target, ast.Starred):
        return assigned(target.value)
    return [target] if isinstance(target, ast.Attribute) else []


def writes_of_state(path: Path) -> list[tuple[str, str, int]]:
    """(enclosing function, attribute, line) of every write to a state attribute."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: list[tuple[str, str, int]] = []

    def visit(node: ast.AST, function: str) -> None:
        for child in ast.iter_child_nodes(node):
            inner = function
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                inner = child.name
            targets: list[ast.expr] = []
            if isinstance(child, ast.Assign):
                targets = child.targets
            elif isinstance(child, (ast.AugAssign, ast.AnnAssign)):
                targets = [child.target]
            found.extend(
                (function, attribute.attr, child.lineno)
                for target in targets
                for attribute in assigned(target)
                if attribute.attr in STATE_ATTRIBUTES
            )
            if (
                isinstance(child, ast.Call)
                and isinstance(child.func, ast.Name)
                and child.func.id == "setattr"
            ):
                found.append((function, "setattr", child.lineno))
            visit(child, inner)

    visit(tree, "<module>")
    return found


def test_only_fire_changes_the_state() -> None:
    writes = {str(path.relative_to(PACKAGE)): writes_of_state(path) for path in BREAKER_FILES}
    core = writes.pop(str(Path("_core", "_breaker.py")))
    assert {(function, attribute) for function, attribute, _ in core} == {
        ("__init__", "_state"),  # the first state is no transition
        ("__init__", "_epoch"),
        ("__init__", "_free"),
        ("_fire", "_state"),
        ("_fire", "_epoch"),
        ("_fire", "_free"),
    }, core
    assert all(not found for found in writes.values()), writes


def test_the_check_sees_a_write_elsewhere(tmp_path: Path) -> None:
    source = (
        "class C:\n    def f(self):\n        self._state = 1\n        setattr(self, 'x', 2)\n"
        "        self._epoch.fast = True\n        a, self._free = 1, 2\n"
    )
    path = tmp_path / "example.py"
    path.write_text(source, encoding="utf-8")
    assert writes_of_state(path) == [("f", "_state", 3), ("f", "setattr", 4), ("f", "_free", 6)]
