"""``compose(a, b, c)`` behaves exactly like stacking ``@a @b @c``, sync and async.

The core of this file is one table of scenarios (success, failure, rejection, timeout,
fallback) over several orders of the same policies. Each scenario builds two independent
sets of fresh policies, guards the same function once with ``compose(...)`` and once
with the stacked decorators, makes the same calls, and compares what the caller saw
(returned values, raised exception types and which policy raised them, whether a
failure is the function's own exception object) and what the policies recorded
afterwards (breaker, bulkhead, timeout and fallback metrics). Stacking is the reference:
each scenario also states the outcomes and the key counts it must produce.

The rest covers the composition object itself: flattening, bad arguments, ``repr``,
``with`` refused, methods and classmethods, and signature preservation.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import anyio
import pytest

from resilient import (
    Bulkhead,
    BulkheadFullError,
    CircuitBreaker,
    CircuitOpenError,
    CircuitState,
    Composition,
    CountWindow,
    Fallback,
    Timeout,
    TimeoutExceededError,
    compose,
)
from resilient._policies._policy import Policy
from resilient.testing import ManualClock

CLOSED = CircuitState.CLOSED
OPEN = CircuitState.OPEN
FORCED_OPEN = CircuitState.FORCED_OPEN

# -- fresh policies, named so outcomes can say which one raised -------------------------


def breaker(name: str = "cb") -> CircuitBreaker:
    """Opens after two failures out of two calls; stays open (manual clock)."""
    return CircuitBreaker(name, window=CountWindow(2), minimum_calls=2, clock=ManualClock())


def bulkhead() -> Bulkhead:
    return Bulkhead(1, name="bh")


def timeout() -> Timeout:
    return Timeout(0.05, name="to")


def _describe(exc: BaseException) -> tuple[object, ...]:
    return ("fallback", type(exc), getattr(exc, "policy", None))


def fallback(**options: Any) -> Fallback:
    return Fallback(_describe, name="fb", **options)


async def _describe_async(exc: BaseException) -> tuple[object, ...]:
    await anyio.lowlevel.checkpoint()
    return _describe(exc)


def async_fallback() -> Fallback:
    return Fallback(_describe_async, name="fb")


def _handler_raises(exc: BaseException) -> object:
    raise RuntimeError("the handler failed too")


def _replace(value: object) -> object:
    return ("replaced", type(value) if isinstance(value, BaseException) else value)


def result_fallback() -> Fallback:
    """Replaces every even result, and every exception."""
    return Fallback(_replace, on_result=lambda r: r[0] == "ok", name="fb")


def result_breaker() -> CircuitBreaker:
    """Counts every ("ok", i) result as a failure."""
    return CircuitBreaker(
        "cb",
        window=CountWindow(2),
        minimum_calls=2,
        record_result=lambda r: r[0] == "ok",
        clock=ManualClock(),
    )


def half_open_breaker() -> CircuitBreaker:
    """A breaker in HALF_OPEN with a single trial call."""
    clock = ManualClock()
    cb = CircuitBreaker(
        "cb",
        window=CountWindow(2),
        minimum_calls=2,
        half_open_calls=1,
        open_duration=1.0,
        clock=clock,
    )
    for _ in range(2):
        with contextlib.suppress(ValueError):
            cb.call(_fail)
    clock.advance(1.0)
    assert cb.state is CircuitState.OPEN
    return cb


def _fail() -> None:
    raise ValueError


def recommended() -> list[Policy]:
    """The documented order, outermost first."""
    return [fallback(), breaker(), timeout(), bulkhead()]


# -- outcomes as the caller sees them ----------------------------------------------------

Outcome = tuple[object, ...]


def returned(value: object) -> Outcome:
    return ("returned", value)


def ok(i: int) -> Outcome:
    return returned(("ok", i))


INTERRUPTED: Outcome = ("interrupted",)


def raised(
    exc_type: type[BaseException], policy: str | None = None, *, own: bool = False
) -> Outcome:
    """An exception of ``exc_type`` raised by ``policy``; ``own``: the function's object."""
    return ("raised", exc_type, policy, own)


FAILED = raised(ValueError, own=True)


def fell_back(exc_type: type[BaseException], policy: str | None = None) -> Outcome:
    """The fallback's value, built from an exception of ``exc_type`` raised by ``policy``."""
    return ("returned", ("fallback", exc_type, policy))


def brk(state: CircuitState, calls: int, failed: int, rejected: int) -> dict[str, object]:
    return {
        "state": state,
        "calls": calls,
        "failed_calls": failed,
        "not_permitted_calls": rejected,
    }


@dataclass(frozen=True)
class Case:
    """One scenario: policies (outermost first), what the function does, what must happen.

    ``fill`` names bulkheads held full (by another caller) during the calls;
    ``force_open`` names breakers forced open before them. ``state`` maps policy names
    to the metrics they must show afterwards (a subset); ``sync_state`` and
    ``async_state`` refine it where sync and async differ. ``nested`` builds the
    composition as ``compose(first, compose(*rest))``.
    """

    id: str
    make: Callable[[], list[Policy]]
    behaviour: Literal["ok", "fail", "hang", "interrupt"]
    expect: tuple[Outcome, ...]
    state: dict[str, dict[str, object]] = field(default_factory=dict)
    sync_state: dict[str, dict[str, object]] = field(default_factory=dict)
    async_state: dict[str, dict[str, object]] = field(default_factory=dict)
    fill: tuple[str, ...] = ()
    force_open: tuple[str, ...] = ()
    nested: bool = False
    sync: bool = True


CASES = [
    # -- success -------------------------------------------------------------------------
    Case(
        "success-recommended",
        recommended,
        "ok",
        (ok(0), ok(1), ok(2)),
        state={
            "fb": {"used": 0},
            "cb": brk(CLOSED, 2, 0, 0),
            "to": {"timeouts": 0, "rejected": 0},
            "bh": {"in_flight": 0, "rejected": 0, "max_observed": 1},
        },
    ),
    Case(
        "success-bulkhead-outermost",
        lambda: [bulkhead(), timeout(), breaker()],
        "ok",
        (ok(0), ok(1)),
        state={"cb": brk(CLOSED, 2, 0, 0), "bh": {"in_flight": 0, "max_observed": 1}},
    ),
    Case(
        "success-recommended-nested",
        recommended,
        "ok",
        (ok(0), ok(1)),
        state={"cb": brk(CLOSED, 2, 0, 0), "fb": {"used": 0}},
        nested=True,
    ),
    # -- failure: the function's own exception, unchanged --------------------------------
    Case(
        "failure-breaker-timeout-bulkhead",
        lambda: [breaker(), timeout(), bulkhead()],
        "fail",
        (FAILED, FAILED, raised(CircuitOpenError, "cb")),
        state={
            "cb": brk(OPEN, 2, 2, 1),
            "to": {"timeouts": 0},
            "bh": {"in_flight": 0, "rejected": 0},
        },
    ),
    Case(
        "failure-recommended",
        recommended,
        "fail",
        (fell_back(ValueError), fell_back(ValueError), fell_back(CircuitOpenError, "cb")),
        state={"fb": {"used": 3}, "cb": brk(OPEN, 2, 2, 1), "bh": {"in_flight": 0}},
    ),
    Case(
        # A fallback inside a breaker hides the failures from it.
        "failure-fallback-inside-breaker",
        lambda: [breaker(), fallback()],
        "fail",
        (fell_back(ValueError), fell_back(ValueError), fell_back(ValueError)),
        state={"fb": {"used": 3}, "cb": brk(CLOSED, 2, 0, 0)},
    ),
    Case(
        "failure-fallback-outside-breaker",
        lambda: [fallback(), breaker()],
        "fail",
        (fell_back(ValueError), fell_back(ValueError), fell_back(CircuitOpenError, "cb")),
        state={"fb": {"used": 3}, "cb": brk(OPEN, 2, 2, 1)},
    ),
    Case(
        "failure-fallback-not-matching",
        lambda: [fallback(on=TimeoutError), breaker()],
        "fail",
        (FAILED, FAILED, raised(CircuitOpenError, "cb")),
        state={"fb": {"used": 0}, "cb": brk(OPEN, 2, 2, 1)},
    ),
    Case(
        # The handler's own error replaces the outcome, and the outer breaker counts it.
        "failure-fallback-handler-raises",
        lambda: [breaker(), Fallback(_handler_raises, name="fb")],
        "fail",
        (raised(RuntimeError), raised(RuntimeError), raised(CircuitOpenError, "cb")),
        state={"fb": {"used": 2}, "cb": brk(OPEN, 2, 2, 1)},
    ),
    Case(
        "failure-fallback-async-handler",
        lambda: [async_fallback(), breaker(), timeout(), bulkhead()],
        "fail",
        (fell_back(ValueError), fell_back(ValueError), fell_back(CircuitOpenError, "cb")),
        state={"fb": {"used": 3}, "cb": brk(OPEN, 2, 2, 1)},
        sync=False,
    ),
    # -- rejection -----------------------------------------------------------------------
    Case(
        # An inner breaker's rejection is a failure for the outer one.
        # An inner breaker's rejection says nothing about the dependency: the outer
        # breaker neither records nor counts it.
        "rejection-inner-breaker-open",
        lambda: [breaker(), timeout(), breaker("inner")],
        "ok",
        (raised(CircuitOpenError, "inner"),) * 3,
        state={"cb": brk(CLOSED, 0, 0, 0), "inner": brk(FORCED_OPEN, 0, 0, 3)},
        force_open=("inner",),
    ),
    Case(
        "rejection-inner-breaker-open-fallback-nested",
        lambda: [fallback(), breaker(), breaker("inner")],
        "ok",
        (fell_back(CircuitOpenError, "inner"),) * 3,
        state={"fb": {"used": 3}, "cb": brk(CLOSED, 0, 0, 0), "inner": brk(FORCED_OPEN, 0, 0, 3)},
        force_open=("inner",),
        nested=True,
    ),
    Case(
        # An inner bulkhead's rejection is not a failure of the dependency: ignored.
        "rejection-bulkhead-full",
        lambda: [breaker(), timeout(), bulkhead()],
        "ok",
        (raised(BulkheadFullError, "bh"),) * 3,
        state={"cb": brk(CLOSED, 0, 0, 0), "bh": {"in_flight": 0, "rejected": 3, "waiting": 0}},
        fill=("bh",),
    ),
    Case(
        "rejection-bulkhead-full-recommended",
        recommended,
        "ok",
        (fell_back(BulkheadFullError, "bh"),) * 3,
        state={"fb": {"used": 3}, "cb": brk(CLOSED, 0, 0, 0), "bh": {"rejected": 3}},
        fill=("bh",),
    ),
    Case(
        "rejection-bulkhead-outermost",
        lambda: [bulkhead(), breaker()],
        "ok",
        (raised(BulkheadFullError, "bh"),) * 3,
        state={"cb": brk(CLOSED, 0, 0, 0), "bh": {"rejected": 3, "in_flight": 0}},
        fill=("bh",),
    ),
    # -- timeout -------------------------------------------------------------------------
    Case(
        # A timeout is a failure for the outer breaker.
        "timeout-breaker-outside",
        lambda: [breaker(), timeout(), bulkhead()],
        "hang",
        (
            raised(TimeoutExceededError, "to"),
            raised(TimeoutExceededError, "to"),
            raised(CircuitOpenError, "cb"),
        ),
        state={"cb": brk(OPEN, 2, 2, 1), "to": {"timeouts": 2}, "bh": {"in_flight": 0}},
    ),
    Case(
        "timeout-recommended",
        recommended,
        "hang",
        (
            fell_back(TimeoutExceededError, "to"),
            fell_back(TimeoutExceededError, "to"),
            fell_back(CircuitOpenError, "cb"),
        ),
        state={"fb": {"used": 3}, "cb": brk(OPEN, 2, 2, 1), "to": {"timeouts": 2}},
    ),
    Case(
        # Inside the timeout, an async breaker sees a cancellation (not a failure); a sync
        # one runs in the abandoned worker and sees the late success.
        "timeout-breaker-inside",
        lambda: [timeout(), breaker()],
        "hang",
        (raised(TimeoutExceededError, "to"), raised(TimeoutExceededError, "to")),
        state={"to": {"timeouts": 2}},
        sync_state={"cb": brk(CLOSED, 2, 0, 0)},
        async_state={"cb": brk(CLOSED, 0, 0, 0)},
    ),
    Case(
        # A fallback inside the timeout cannot catch it.
        "timeout-fallback-inside",
        lambda: [timeout(), fallback(), breaker()],
        "hang",
        (raised(TimeoutExceededError, "to"), raised(TimeoutExceededError, "to")),
        state={"to": {"timeouts": 2}, "fb": {"used": 0}},
    ),
    Case(
        # Deadlines nest: the inner, tighter one fires; the outer one counts nothing.
        "timeout-nested-deadlines",
        lambda: [breaker(), Timeout(5.0, name="outer"), timeout(), bulkhead()],
        "hang",
        (
            raised(TimeoutExceededError, "to"),
            raised(TimeoutExceededError, "to"),
            raised(CircuitOpenError, "cb"),
        ),
        state={"cb": brk(OPEN, 2, 2, 1), "to": {"timeouts": 2}, "outer": {"timeouts": 0}},
    ),
    Case(
        # The deadline runs out while the call waits for a bulkhead slot. Async: the wait
        # is cancelled (no rejection counted); sync: the wait runs on in the abandoned
        # worker until max_wait, then counts a rejection.
        "timeout-while-waiting-for-bulkhead",
        lambda: [breaker(), timeout(), Bulkhead(1, max_wait=0.1, name="bh")],
        "ok",
        (
            raised(TimeoutExceededError, "to"),
            raised(TimeoutExceededError, "to"),
            raised(CircuitOpenError, "cb"),
        ),
        state={"cb": brk(OPEN, 2, 2, 1), "to": {"timeouts": 2}, "bh": {"waiting": 0}},
        sync_state={"bh": {"rejected": 2, "in_flight": 0}},
        async_state={"bh": {"rejected": 0, "in_flight": 0}},
        fill=("bh",),
    ),
    # -- results: on_result / record_result replace or count a returned value ----------
    Case(
        "result-fallback-outside-breaker",
        lambda: [result_fallback(), result_breaker()],
        "ok",
        (
            returned(("replaced", ("ok", 0))),
            returned(("replaced", ("ok", 1))),
            returned(("replaced", CircuitOpenError)),
        ),
        state={"fb": {"used": 3}, "cb": brk(OPEN, 2, 2, 1)},
    ),
    Case(
        # The breaker sees the replaced values, which are not failures.
        "result-fallback-inside-breaker",
        lambda: [result_breaker(), timeout(), result_fallback()],
        "ok",
        tuple(returned(("replaced", ("ok", i))) for i in range(3)),
        state={"fb": {"used": 3}, "cb": brk(CLOSED, 2, 0, 0)},
    ),
    # -- interrupts (sync: KeyboardInterrupt; async: cancellation) -----------------------
    Case(
        # Never recorded, never replaced by a fallback, every slot released.
        "interrupt-recommended",
        recommended,
        "interrupt",
        (INTERRUPTED,) * 3,
        state={
            "fb": {"used": 0},
            "cb": brk(CLOSED, 0, 0, 0),
            "to": {"timeouts": 0},
            "bh": {"in_flight": 0, "rejected": 0},
        },
    ),
    Case(
        "interrupt-half-open-trial-gives-its-slot-back",
        lambda: [fallback(), half_open_breaker(), bulkhead()],
        "interrupt",
        (INTERRUPTED,) * 3,
        state={"fb": {"used": 0}, "cb": brk(CircuitState.HALF_OPEN, 0, 0, 0)},
    ),
]

SYNC_CASES = [case for case in CASES if case.sync]


def case_id(case: Case) -> str:
    return case.id


# -- observing the policies --------------------------------------------------------------


def observe(policies: list[Policy]) -> dict[str, dict[str, object]]:
    """Every policy's observable state, by name."""
    seen: dict[str, dict[str, object]] = {}
    for policy in policies:
        if isinstance(policy, CircuitBreaker):
            m = policy.metrics()
            seen[str(policy.name)] = {
                "state": policy.state,
                "calls": m.calls,
                "failed_calls": m.failed_calls,
                "slow_calls": m.slow_calls,
                "not_permitted_calls": m.not_permitted_calls,
            }
        elif isinstance(policy, (Bulkhead, Timeout)):
            seen[str(policy.name)] = asdict(policy.metrics())
        elif isinstance(policy, Fallback):
            seen[str(policy.name)] = {"used": policy.used}
        else:  # pragma: no cover - the table uses only the four above
            raise TypeError(policy)
    return seen


def check_expected_state(case: Case, seen: dict[str, dict[str, object]], mode: str) -> None:
    expected = {**case.state, **(case.sync_state if mode == "sync" else case.async_state)}
    for name, fields in expected.items():
        actual = {key: seen[name][key] for key in fields}
        assert actual == fields, f"{case.id} ({mode}): policy {name!r}"


def by_name(policies: list[Policy], names: tuple[str, ...], kind: type[Any]) -> list[Any]:
    found = [p for p in policies if isinstance(p, kind) and p.name in names]  # type: ignore[attr-defined]
    assert len(found) == len(names)
    return found


def build_composition(case: Case, policies: list[Policy]) -> Composition:
    if case.nested:
        composition = compose(policies[0], compose(*policies[1:]))
    else:
        composition = compose(*policies)
    assert composition.policies == tuple(policies)
    return composition


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Bounded polling for state owned by other threads."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.001)


@dataclass
class Run:
    outcomes: list[Outcome]
    state: dict[str, dict[str, object]]


# -- the sync side -----------------------------------------------------------------------


class SyncEnv:
    def __init__(self) -> None:
        self.raised: list[BaseException] = []
        self.gate = threading.Event()  # lets a hanging call finish (after its timeout)

    def target(self, behaviour: str) -> Callable[[int], object]:
        def target(i: int) -> object:
            if behaviour == "fail":
                error = ValueError(f"call {i} failed")
                self.raised.append(error)
                raise error
            if behaviour == "hang":
                assert self.gate.wait(10), "the timeout never fired"
                return ("late", i)
            if behaviour == "interrupt":
                raise KeyboardInterrupt
            return ("ok", i)

        return target

    def outcome(self, exc: BaseException) -> Outcome:
        own = bool(self.raised) and exc is self.raised[-1]
        return raised(type(exc), getattr(exc, "policy", None), own=own)


@contextmanager
def held_full_sync(bulkheads: list[Bulkhead]) -> Iterator[None]:
    """Hold every slot of ``bulkheads`` from other threads while the block runs."""
    release = threading.Event()
    threads = []
    try:
        for bh in bulkheads:
            for _ in range(bh.max_concurrent):
                entered = threading.Event()

                def hold(entered: threading.Event = entered) -> None:
                    entered.set()
                    release.wait(10)

                thread = threading.Thread(target=bh.call, args=(hold,))
                thread.start()
                threads.append(thread)
                assert entered.wait(5)
        yield
    finally:
        release.set()
        for thread in threads:
            thread.join(5)
    for bh in bulkheads:
        assert bh.metrics().in_flight == 0


def run_sync(case: Case, *, composed: bool) -> Run:
    policies = case.make()
    env = SyncEnv()
    fn = env.target(case.behaviour)
    for cb in by_name(policies, case.force_open, CircuitBreaker):
        cb.force_open()
    calls: list[Callable[[int], object]]
    if composed:
        composition = build_composition(case, policies)
        # Alternate the decorator and call(): both must behave the same.
        calls = [composition(fn), functools.partial(composition.call, fn)]
    else:
        guarded = fn
        for policy in reversed(policies):
            guarded = policy(guarded)
        calls = [guarded]
    timeouts = [p for p in policies if isinstance(p, Timeout)]
    outcomes: list[Outcome] = []
    with held_full_sync(by_name(policies, case.fill, Bulkhead)):
        for i in range(len(case.expect)):
            try:
                outcomes.append(returned(calls[i % len(calls)](i)))
            except Exception as exc:
                outcomes.append(env.outcome(exc))
            except KeyboardInterrupt:
                outcomes.append(INTERRUPTED)
            # Let an abandoned call finish before the next one, so every run does the
            # same work in the same order.
            env.gate.set()
            wait_until(lambda: all(t.metrics().busy_workers == 0 for t in timeouts))
            env.gate.clear()
    return Run(outcomes, observe(policies))


@pytest.mark.parametrize("case", SYNC_CASES, ids=case_id)
def test_sync_composition_equals_stacked_decorators(case: Case) -> None:
    stacked = run_sync(case, composed=False)
    composed = run_sync(case, composed=True)
    assert stacked.outcomes == list(case.expect)
    assert composed.outcomes == stacked.outcomes
    assert composed.state == stacked.state
    check_expected_state(case, stacked.state, "sync")


# -- the async side ----------------------------------------------------------------------


class AsyncEnv:
    def __init__(self) -> None:
        self.raised: list[BaseException] = []
        self.scope: anyio.CancelScope | None = None  # cancelled by "interrupt"

    def target(self, behaviour: str) -> Callable[[int], Awaitable[object]]:
        async def target(i: int) -> object:
            await anyio.lowlevel.checkpoint()
            if behaviour == "fail":
                error = ValueError(f"call {i} failed")
                self.raised.append(error)
                raise error
            if behaviour == "hang":
                await anyio.sleep(1)
                return ("late", i)
            if behaviour == "interrupt":
                assert self.scope is not None
                self.scope.cancel()
                await anyio.sleep(1)
            return ("ok", i)

        return target

    def outcome(self, exc: BaseException) -> Outcome:
        own = bool(self.raised) and exc is self.raised[-1]
        return raised(type(exc), getattr(exc, "policy", None), own=own)


async def _hold(
    bh: Bulkhead,
    release: anyio.Event,
    *,
    task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    async def holding() -> None:
        task_status.started()
        await release.wait()

    await bh.call_async(holding)


async def run_async(case: Case, *, composed: bool) -> Run:
    policies = case.make()
    env = AsyncEnv()
    fn = env.target(case.behaviour)
    for cb in by_name(policies, case.force_open, CircuitBreaker):
        cb.force_open()
    calls: list[Callable[[int], Awaitable[object]]]
    if composed:
        composition = build_composition(case, policies)
        calls = [composition(fn), functools.partial(composition.call_async, fn)]
    else:
        guarded = fn
        for policy in reversed(policies):
            guarded = policy(guarded)
        calls = [guarded]
    outcomes: list[Outcome] = []
    release = anyio.Event()
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            try:
                for bh in by_name(policies, case.fill, Bulkhead):
                    for _ in range(bh.max_concurrent):
                        await tg.start(_hold, bh, release)
                for i in range(len(case.expect)):
                    outcomes.append(INTERRUPTED)
                    with anyio.CancelScope() as env.scope:
                        try:
                            outcomes[-1] = returned(await calls[i % len(calls)](i))
                        except Exception as exc:
                            outcomes[-1] = env.outcome(exc)
            finally:
                release.set()
    return Run(outcomes, observe(policies))


@pytest.mark.parametrize("case", CASES, ids=case_id)
async def test_async_composition_equals_stacked_decorators(case: Case) -> None:
    stacked = await run_async(case, composed=False)
    composed = await run_async(case, composed=True)
    assert stacked.outcomes == list(case.expect)
    assert composed.outcomes == stacked.outcomes
    assert composed.state == stacked.state
    check_expected_state(case, stacked.state, "async")


# -- the composition object ----------------------------------------------------------------


def test_nested_compositions_are_flattened() -> None:
    a, b, c, d = fallback(), breaker(), timeout(), bulkhead()
    assert compose(a, compose(b, c)).policies == (a, b, c)
    assert compose(compose(a, b), compose(c, d)).policies == (a, b, c, d)
    assert compose(compose(compose(a)), b).policies == (a, b)
    assert compose(a).policies == (a,)
    assert isinstance(compose(a, b), Composition)
    assert isinstance(compose(a, b), Policy)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="at least one policy"):
        compose()
    for bad in (None, "breaker", 42, lambda fn: fn, CircuitBreaker):
        with pytest.raises(TypeError, match="compose\\(\\) takes policies"):
            compose(bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        compose(breaker(), object())  # type: ignore[arg-type]


def test_repr_lists_the_flattened_policies() -> None:
    a, b, c = breaker("payments"), timeout(), bulkhead()
    composition = compose(a, compose(b, c))
    assert repr(composition) == f"compose({a!r}, {b!r}, {c!r})"
    assert "payments" in repr(composition)


def test_with_composition_is_refused() -> None:
    composition = compose(breaker(), bulkhead())
    with pytest.raises(TypeError, match="composition"), composition:
        pytest.fail("the block must not run")  # pragma: no cover


async def test_async_with_composition_is_refused() -> None:
    composition = compose(breaker(), bulkhead())
    with pytest.raises(TypeError, match="composition"):
        async with composition:
            pytest.fail("the block must not run")  # pragma: no cover


def test_async_handler_cannot_serve_a_sync_function() -> None:
    composition = compose(async_fallback(), breaker())

    def sync_fn() -> int:
        return 1

    with pytest.raises(TypeError, match="async handler"):
        composition(sync_fn)


def test_composition_is_composable_and_a_decorator_again() -> None:
    inner_breaker = breaker("inner")
    inner = compose(inner_breaker, bulkhead())
    outer = compose(fallback(), inner)
    assert outer.policies[1] is inner_breaker

    def double(x: int) -> int:
        return 2 * x

    assert outer(double)(4) == 8
    assert outer.call(double, 5) == 10
    inner_breaker.force_open()
    assert outer(double)(6) == ("fallback", CircuitOpenError, "inner")
    assert outer.call(double, 7) == ("fallback", CircuitOpenError, "inner")
    assert inner_breaker.metrics().not_permitted_calls == 2


async def test_call_and_call_async_forward_arguments() -> None:
    composition = compose(fallback(), breaker(), timeout(), bulkhead())

    def sync_fn(a: int, b: int = 0, *, c: int = 0) -> tuple[int, int, int]:
        return (a, b, c)

    async def async_fn(a: int, b: int = 0, *, c: int = 0) -> tuple[int, int, int]:
        await anyio.lowlevel.checkpoint()
        return (a, b, c)

    assert composition.call(sync_fn, 1, 2, c=3) == (1, 2, 3)
    assert await composition.call_async(async_fn, 1, b=2, c=3) == (1, 2, 3)


# -- methods, classmethods, signatures -----------------------------------------------------


async def test_methods_classmethods_and_staticmethods() -> None:
    cb = CircuitBreaker("svc")
    guard = compose(fallback(on=KeyError), cb, timeout(), bulkhead())

    class Service:
        def __init__(self, factor: int) -> None:
            self.factor = factor

        @guard
        def method(self, x: int) -> int:
            return x * self.factor

        @guard
        async def amethod(self, x: int) -> int:
            await anyio.lowlevel.checkpoint()
            return x + self.factor

        @guard  # type: ignore[arg-type]
        @classmethod
        def make(cls, factor: int) -> Service:
            return cls(factor)

        @classmethod
        @guard
        def make_inner(cls, factor: int) -> Service:
            return cls(factor)

        @guard  # type: ignore[arg-type]
        @classmethod
        async def amake(cls, factor: int) -> Service:
            await anyio.lowlevel.checkpoint()
            return cls(factor)

        @guard  # type: ignore[arg-type]
        @staticmethod
        def static(x: int) -> int:
            return -x

        @guard
        def missing(self, key: str) -> int:
            return {"a": 1}[key]

    assert isinstance(Service.__dict__["make"], classmethod)
    assert isinstance(Service.__dict__["amake"], classmethod)
    assert isinstance(Service.__dict__["static"], staticmethod)
    service = Service(3)
    assert service.method(2) == 6
    assert await service.amethod(2) == 5
    made = Service.make(4)
    assert isinstance(made, Service)
    assert made.factor == 4
    assert service.make(5).factor == 5
    assert Service.make_inner(6).factor == 6
    amade = await Service.amake(7)
    assert isinstance(amade, Service)
    assert amade.factor == 7
    assert Service.static(4) == -4
    assert service.static(5) == -5
    assert service.missing("a") == 1
    fell = service.missing("zz")
    assert fell == ("fallback", KeyError, None)
    assert cb.metrics().calls == 10
    assert cb.metrics().failed_calls == 1

    cb.force_open()
    for call in (
        lambda: service.method(1),
        lambda: Service.make(1),
        lambda: Service.static(1),
    ):
        with pytest.raises(CircuitOpenError):
            call()
    with pytest.raises(CircuitOpenError):
        await service.amethod(1)
    with pytest.raises(CircuitOpenError):
        await Service.amake(1)


@pytest.mark.parametrize(
    "make",
    [
        lambda: compose(breaker(), bulkhead()),  # steps only
        recommended,  # a sync timeout splits the chain: wrapper and steps
        lambda: compose(timeout()),
    ],
    ids=["steps", "recommended", "timeout-only"],
)
def test_signature_is_preserved(make: Callable[[], Any]) -> None:
    made = make()
    composition = made if isinstance(made, Composition) else compose(*made)

    def add(a: int, b: int = 2, *, scale: float = 1.0) -> float:
        """Add two numbers and scale."""
        return (a + b) * scale

    async def fetch(url: str, *, retries: int = 0) -> bytes:
        """Fetch a URL."""
        await anyio.lowlevel.checkpoint()
        return url.encode()

    g_add = composition(add)
    g_fetch = composition(fetch)
    for guarded, original in ((g_add, add), (g_fetch, fetch)):
        assert guarded.__name__ == original.__name__
        assert guarded.__qualname__ == original.__qualname__
        assert guarded.__doc__ == original.__doc__
        assert guarded.__wrapped__ is original  # type: ignore[attr-defined]
        assert inspect.signature(guarded) == inspect.signature(original)
        assert guarded.__resilient_policy__ is composition  # type: ignore[attr-defined]
    assert not inspect.iscoroutinefunction(g_add)
    assert inspect.iscoroutinefunction(g_fetch)
    assert g_add(1, scale=2.0) == 6.0
    assert anyio.run(g_fetch, "x") == b"x"


def test_failure_traceback_and_identity_pass_through() -> None:
    composition = compose(breaker(), timeout(), bulkhead())
    original = ValueError("original")

    @composition
    def raises() -> None:
        raise original

    with pytest.raises(ValueError, match="original") as info:
        raises()
    assert info.value is original
    names = [entry.name for entry in info.traceback]
    assert "raises" in names
