"""Hedge, sync: attempts in worker threads; a loser is abandoned, never interrupted.

The attempts wait on events the test sets, so which one answers first is decided by
the test, not by timing. Delays are 0 (hedge at once) or an hour (hedge only on a
failure): no test depends on how long anything takes.
"""

from __future__ import annotations

import contextvars
import random
import threading
from collections.abc import Callable
from typing import Any

import pytest

from resilient import Hedge, RetryBudget, WorkersExhaustedError

HOUR = 3600.0


class Flaky(Exception):
    pass


def generous() -> RetryBudget:
    return RetryBudget(min_retries_per_second=1000)


class Roles:
    """Each attempt takes the next role in the order attempts start (thread-safe)."""

    def __init__(self, *roles: Callable[[], Any]) -> None:
        self.roles = list(roles)
        self.started = 0
        self.lock = threading.Lock()
        self.first = threading.Event()

    def __call__(self) -> Any:
        with self.lock:
            role = self.roles[self.started]
            self.started += 1
        self.first.set()
        return role()

    def after_the_first(self, hedge: int) -> float:
        """A ``delay``: no wait once the first attempt runs, so the first role is its."""
        self.first.wait(HOUR)
        return 0.0


def test_the_hedge_answers_and_the_slow_first_attempt_is_abandoned() -> None:
    release, finished = threading.Event(), threading.Event()

    def slow() -> str:
        release.wait(HOUR)
        finished.set()
        return "slow"

    roles = Roles(slow, lambda: "fast")
    # Not delay=0: then the two workers race, and whichever attempt arrives first takes
    # the slow role.
    hedge = Hedge(delay=roles.after_the_first, budget=generous(), max_workers=2)
    assert hedge.call(roles) == "fast"
    m = hedge.metrics()
    assert (m.hedges, m.hedge_wins, m.cancelled) == (1, 1, 1)
    assert hedge._pool.stats()[2] == 1  # the abandoned attempt still runs, counted
    release.set()
    finished.wait(HOUR)


def test_no_hedge_when_the_first_attempt_answers() -> None:
    hedge = Hedge(delay=HOUR, budget=generous())
    assert hedge.call(lambda: 42) == 42
    assert hedge.metrics().hedges == 0


def test_a_failure_starts_a_hedge_at_once() -> None:
    def fail() -> str:
        raise Flaky

    roles = Roles(fail, lambda: "second")
    hedge = Hedge(delay=HOUR, budget=generous())
    assert hedge.call(roles) == "second"
    assert roles.started == 2


def test_when_every_attempt_fails_the_last_failure_is_raised() -> None:
    errors = [Flaky("first"), Flaky("second")]

    def fail() -> str:
        raise errors.pop(0)

    hedge = Hedge(delay=HOUR, budget=generous())
    with pytest.raises(Flaky, match="second"):
        hedge.call(fail)
    assert hedge.metrics().failed == 1


def test_no_free_worker() -> None:
    release, entered = threading.Event(), threading.Event()

    def hold() -> str:
        entered.set()
        release.wait(HOUR)
        return "held"

    hedge = Hedge(delay=0, budget=generous(), max_workers=1)
    # The hedge finds no worker: not started; the first attempt answers.
    done: list[str] = []
    caller = threading.Thread(target=lambda: done.append(hedge.call(hold)))
    caller.start()
    entered.wait(HOUR)  # the only worker is taken
    with pytest.raises(WorkersExhaustedError):
        hedge.call(lambda: "refused")  # every worker busy: refused, not queued
    release.set()
    caller.join()
    assert done == ["held"]
    assert hedge.metrics().hedges == 0  # the hedge found no worker: not started


def test_attempts_run_in_the_callers_context() -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")
    var.set("caller")
    assert Hedge(delay=HOUR).call(var.get) == "caller"


@pytest.mark.usefixtures("fast_switching")
def test_threads_at_once() -> None:
    hedge = Hedge(delay=0, budget=generous(), max_workers=64)
    calls = 200
    rng_lock = threading.Lock()
    rng = random.Random(11)

    def attempt() -> str:
        with rng_lock:
            fails = rng.random() < 0.3
        if fails:
            raise Flaky
        return "ok"

    outcomes: list[str] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(calls // 8):
            try:
                result = hedge.call(attempt)
            except Flaky:
                result = "failed"
            with lock:
                outcomes.append(result)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    m = hedge.metrics()
    assert m.calls == len(outcomes) == calls
    assert m.failed == outcomes.count("failed")
    assert m.hedge_wins <= m.hedges


def test_registry_and_repr() -> None:
    from resilient import Registry  # noqa: PLC0415

    registry = Registry({"hedge": {"delay": "p95"}})
    hedge = registry.hedge("search", max_hedged=2)
    assert registry.hedge("search") is hedge
    assert repr(hedge) == "<Hedge 'search' max_hedged=2 delay='p95'>"
    assert hedge.call(lambda: "ok") == "ok"
    snapshot = registry.snapshot()["search"]
    assert (snapshot["kind"], snapshot["calls"], snapshot["first_wins"]) == ("hedge", 1, 1)
    with pytest.raises(ValueError, match="delay"):
        registry.hedge("bad", delay="p100")


def test_the_asgi_middleware_refuses_a_hedge() -> None:
    from resilient.asgi import ResilienceMiddleware  # noqa: PLC0415

    async def app(scope: Any, receive: Any, send: Any) -> None: ...

    with pytest.raises(TypeError, match="cannot guard requests"):
        ResilienceMiddleware(app, Hedge())


def test_with_is_refused() -> None:
    with pytest.raises(TypeError, match="decorate a function"), Hedge():
        pass


def test_outcomes_in_opentelemetry() -> None:
    from opentelemetry.sdk.metrics import MeterProvider  # noqa: PLC0415
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader  # noqa: PLC0415

    import resilient  # noqa: PLC0415

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    handle = resilient.instrument(provider)
    try:
        hedge = Hedge(delay=HOUR, budget=generous(), name="otel-hedge")
        hedge.call(lambda: "ok")
        roles = Roles(lambda: (_ for _ in ()).throw(Flaky()), lambda: "second")
        hedge.call(roles)
        data = reader.get_metrics_data()
        assert data is not None
        calls = {
            dict(p.attributes or {})["resilient.outcome"]: getattr(p, "value", None)
            for rm in data.resource_metrics
            for sm in rm.scope_metrics
            for metric in sm.metrics
            if metric.name == "resilient.calls"
            for p in metric.data.data_points
            if (p.attributes or {}).get("resilient.policy") == "otel-hedge"
        }
    finally:
        handle.uninstrument()
        provider.shutdown()
    assert calls == {
        "first_attempt": 1,
        "hedge_won": 1,
        "failed": 0,
        "hedge": 1,
        "cancelled": 0,
        "budget_refused": 0,
    }


@pytest.mark.parametrize("where", ["on", "delay"])
def test_an_interrupt_in_a_user_callable_abandons_the_attempts(where: str) -> None:
    release = threading.Event()

    def interrupt(*args: object) -> Any:
        raise KeyboardInterrupt

    def hold() -> str:
        release.wait(HOUR)
        return "held"

    def fail() -> str:
        raise Flaky

    if where == "on":
        hedge = Hedge(delay=HOUR, on=interrupt, budget=generous())
        roles = Roles(fail)
    else:
        hedge = Hedge(delay=interrupt, budget=generous())
        roles = Roles(hold)
    try:
        with pytest.raises(KeyboardInterrupt):
            hedge.call(roles)
        m = hedge.metrics()
        assert (m.calls, m.first_wins, m.hedge_wins, m.failed) == (1, 0, 0, 0)
        assert m.cancelled == (0 if where == "on" else 1)  # the held attempt: abandoned
    finally:
        release.set()
