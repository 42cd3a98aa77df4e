"""Fault injection (issue 18): exact counts under a seed, the switch, factories, composition."""

from __future__ import annotations

import logging
import random
import threading
from typing import Any

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

from resilient import (
    CircuitBreaker,
    CountWindow,
    Fallback,
    Retry,
    Timeout,
    TimeoutExceededError,
    compose,
)
from resilient.chaos import (
    FaultInjected,
    InjectFault,
    InjectLatency,
    InjectResult,
    LatencyInjected,
    ResultInjected,
)
from resilient.testing import ManualClock, capture_events

pytestmark = pytest.mark.anyio


class Boom(Exception):
    pass


def ok() -> str:
    return "ok"


async def aok() -> str:
    return "ok"


def predicted(seed: int, rate: float, calls: int) -> int:
    """What the same seeded Random says: the draws below ``rate``."""
    rng = random.Random(seed)
    return sum(rng.random() < rate for _ in range(calls))


def faults(policy: Any, calls: int) -> int:
    raised = 0
    for _ in range(calls):
        try:
            policy.call(ok)
        except Boom:
            raised += 1
    return raised


@pytest.mark.parametrize("rate", [0.0, 0.01, 0.3, 0.5, 0.999, 1.0])
@pytest.mark.parametrize("seed", [0, 7, 12345])
def test_injected_count_is_what_the_seeded_random_predicts(seed: int, rate: float) -> None:
    policy = InjectFault(Boom, rate=rate, seed=seed)
    assert faults(policy, 1000) == predicted(seed, rate, 1000)
    m = policy.metrics()
    assert m.injected == predicted(seed, rate, 1000)
    assert (m.calls, m.skipped + m.injected, m.disabled, m.errors) == (1000, 1000, 0, 0)


def test_an_injected_rng_is_used_and_the_same_seed_repeats_the_same_calls() -> None:
    def pattern(policy: InjectFault) -> list[bool]:
        out = []
        for _ in range(200):
            try:
                policy.call(ok)
                out.append(False)
            except Boom:
                out.append(True)
        return out

    first = pattern(InjectFault(Boom, rate=0.3, rng=random.Random(3)))
    assert first == pattern(InjectFault(Boom, rate=0.3, seed=3))
    assert sum(first) == predicted(3, 0.3, 200)


async def test_latency_and_result_counts_match_too_async(anyio_backend: str) -> None:
    clock = ManualClock()
    latency = InjectLatency(2.0, rate=0.1, seed=5, clock=clock)
    result = InjectResult("chaos", rate=0.2, seed=6)
    answered = 0
    for _ in range(500):
        if await result.call_async(aok) == "chaos":
            answered += 1
        assert await latency.call_async(aok) == "ok"
    assert answered == predicted(6, 0.2, 500)
    assert clock.monotonic() == 2.0 * predicted(5, 0.1, 500)  # virtual time only


def test_latency_waits_on_the_clock_and_a_factory_draws_each_delay() -> None:
    clock = ManualClock()
    delays = iter([1.5, 0.25])
    latency = InjectLatency(lambda: next(delays), rate=1.0, clock=clock)
    assert latency.call(ok) == "ok"
    assert latency.call(ok) == "ok"
    assert clock.monotonic() == 1.75


def test_the_switch_is_read_per_call_and_off_draws_nothing() -> None:
    flag = {"on": False}
    policy = InjectFault(Boom, rate=1.0, enabled=lambda: flag["on"], seed=1)
    assert faults(policy, 10) == 0
    flag["on"] = True
    assert faults(policy, 10) == 10
    assert InjectFault(Boom, rate=1.0, enabled=False).call(ok) == "ok"
    m = policy.metrics()
    assert (m.calls, m.injected, m.disabled, m.skipped, m.errors) == (20, 10, 10, 0, 0)


def test_the_draws_start_from_the_seed_when_the_switch_turns_on() -> None:
    flag = {"on": False}
    policy = InjectFault(Boom, rate=0.5, seed=9, enabled=lambda: flag["on"])
    faults(policy, 50)
    flag["on"] = True
    assert faults(policy, 300) == predicted(9, 0.5, 300)


def test_a_raising_switch_leaves_the_call_alone_logged_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken() -> bool:
        raise RuntimeError("flag service down")

    policy = InjectResult("chaos", rate=1.0, enabled=broken, name="quotes")
    with caplog.at_level(logging.ERROR, logger="resilient"):
        assert policy.call(ok) == "ok"
    assert "enabled switch raised" in caplog.text
    m = policy.metrics()
    assert (m.calls, m.errors, m.injected) == (1, 1, 0)


@pytest.mark.parametrize(
    "factory",
    [
        lambda: (_ for _ in ()).throw(RuntimeError("bad factory")),
        lambda: "not an exception",
    ],
    ids=["raises", "returns a non-exception"],
)
def test_a_failing_fault_factory_leaves_the_call_uninjected(factory: Any) -> None:
    policy = InjectFault(factory, rate=1.0)
    assert policy.call(ok) == "ok"
    m = policy.metrics()
    assert (m.calls, m.errors, m.injected) == (1, 1, 0)


def test_an_interrupt_from_a_factory_or_switch_propagates_and_is_counted() -> None:
    def interrupt() -> Any:
        raise KeyboardInterrupt

    for policy in (
        InjectResult(factory=interrupt, rate=1.0),
        InjectFault(Boom, rate=1.0, enabled=interrupt),
        InjectLatency(interrupt, rate=1.0, clock=ManualClock()),
    ):
        with pytest.raises(KeyboardInterrupt):
            policy.call(ok)
        m = policy.metrics()
        assert (m.calls, m.errors, m.injected) == (1, 1, 0), policy
        assert m.calls == m.injected + m.skipped + m.disabled + m.errors


def test_an_injected_base_exception_propagates_and_counts() -> None:
    policy = InjectFault(KeyboardInterrupt, rate=1.0)
    with pytest.raises(KeyboardInterrupt):
        policy.call(ok)
    assert policy.metrics().injected == 1


def test_an_instance_is_raised_without_piling_up_tracebacks() -> None:
    error = Boom("same")
    policy = InjectFault(error, rate=1.0)
    depths = []
    for _ in range(3):
        with pytest.raises(Boom) as raised:
            policy.call(ok)
        assert raised.value is error
        tb, depth = raised.value.__traceback__, 0
        while tb is not None:
            tb, depth = tb.tb_next, depth + 1
        depths.append(depth)
    assert depths[0] == depths[2]


def test_a_bad_delay_from_a_factory_is_an_error_not_an_injection() -> None:
    policy = InjectLatency(lambda: -1.0, rate=1.0, clock=ManualClock())
    assert policy.call(ok) == "ok"
    assert policy.metrics().errors == 1


def test_result_factory_makes_a_fresh_value_each_time() -> None:
    policy = InjectResult(factory=list, rate=1.0)
    first, second = policy.call(ok), policy.call(ok)
    assert first == second == []
    assert first is not second


def test_events_are_emitted_to_listeners() -> None:
    clock = ManualClock()
    fault = InjectFault(Boom, rate=1.0, name="f")
    latency = InjectLatency(0.5, rate=1.0, name="l", clock=clock)
    result = InjectResult(42, rate=1.0, name="r")
    with capture_events() as events:
        with pytest.raises(Boom):
            fault.call(ok)
        latency.call(ok)
        result.call(ok)
    kinds = [(type(e), e.policy, e.kind) for e in events]
    assert kinds == [
        (FaultInjected, "f", "inject_fault"),
        (LatencyInjected, "l", "inject_latency"),
        (ResultInjected, "r", "inject_result"),
    ]
    assert isinstance(events[0].exception, Boom)  # type: ignore[attr-defined]
    assert events[1].seconds == 0.5  # type: ignore[attr-defined]
    assert events[2].result == 42  # type: ignore[attr-defined]
    heard: list[object] = []
    fault.add_listener(heard.append)
    with pytest.raises(Boom):
        fault.call(ok)
    assert len(heard) == 1


def test_decorator_and_with_blocks() -> None:
    clock = ManualClock()

    @InjectFault(Boom, rate=1.0)
    def guarded() -> str:
        return "ok"

    with pytest.raises(Boom):
        guarded()
    with InjectLatency(3.0, rate=1.0, clock=clock):
        pass
    assert clock.monotonic() == 3.0
    with pytest.raises(Boom), InjectFault(Boom, rate=1.0):
        pass
    with pytest.raises(TypeError, match="decorate a function"), InjectResult(1, rate=1.0):
        pass


def test_latency_never_runs_past_the_deadline() -> None:
    clock = ManualClock()
    policy = compose(Timeout(1.0, clock=clock), InjectLatency(5.0, rate=1.0, clock=clock))
    with pytest.raises(TimeoutExceededError):
        policy.call(ok)
    assert clock.monotonic() == pytest.approx(1.0)


async def test_latency_never_runs_past_the_deadline_async(anyio_backend: str) -> None:
    clock = ManualClock()
    policy = compose(Timeout(1.0, clock=clock), InjectLatency(5.0, rate=1.0, clock=clock))
    with pytest.raises(TimeoutExceededError):
        await policy.call_async(aok)
    assert clock.monotonic() == pytest.approx(1.0)


def test_thread_stress_counts_add_up() -> None:
    policy = InjectFault(Boom, rate=0.25, seed=11)
    raised = [0] * 8

    def worker(i: int) -> None:
        raised[i] = faults(policy, 500)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Draws are taken under the lock: the whole run sees the seeded sequence.
    assert sum(raised) == predicted(11, 0.25, 4000) == policy.metrics().injected
    assert policy.metrics().calls == 4000


async def test_task_stress_counts_add_up(anyio_backend: str) -> None:
    clock = ManualClock()
    policy = compose(
        InjectResult("r", rate=0.2, seed=4), InjectLatency(0.01, rate=0.5, seed=3, clock=clock)
    )
    answers: list[str] = []

    async def one() -> None:
        for _ in range(50):
            answers.append(await policy.call_async(aok))
            await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as tg:
        for _ in range(20):
            tg.start_soon(one)
    assert answers.count("r") == predicted(4, 0.2, 1000)
    inner = 1000 - predicted(4, 0.2, 1000)
    assert clock.monotonic() == pytest.approx(0.01 * predicted(3, 0.5, inner))


@pytest.mark.parametrize(
    ("factory", "error", "match"),
    [
        (lambda: InjectFault(Boom, rate=1.5), ValueError, r"^rate must be .*>= 0 and <= 1"),
        (lambda: InjectFault(Boom, rate=-0.1), ValueError, r"^rate must be"),
        (lambda: InjectFault(int, rate=0.1), TypeError, r"^exception must be .*class int"),
        (lambda: InjectFault(5, rate=0.1), TypeError, r"^exception must be"),
        (lambda: InjectFault(lambda x: x, rate=0.1), TypeError, r"^exception must be"),
        (lambda: InjectLatency(-1, rate=0.1), ValueError, r"^seconds must be"),
        (lambda: InjectLatency(1e12, rate=0.1), ValueError, r"^seconds must be"),
        (lambda: InjectLatency("1", rate=0.1), TypeError, r"^seconds must be"),
        (lambda: InjectResult(rate=0.1), TypeError, r"value or factory is required"),
        (lambda: InjectResult(1, factory=list, rate=0.1), TypeError, r"value and factory"),
        (lambda: InjectFault(Boom, rate=0.1, enabled="yes"), TypeError, r"^enabled must be"),
        (lambda: InjectFault(Boom, rate=0.1, seed=1, rng=random.Random()), TypeError, r"seed"),
        (lambda: InjectFault(Boom, rate=0.1, rng=5), TypeError, r"^rng must be"),
        (lambda: InjectFault(Boom, rate=0.1, seed=1.5), TypeError, r"^seed must be"),
    ],
)
def test_options_are_checked_at_construction(factory: Any, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        factory()


def test_opentelemetry_reads_the_counts() -> None:
    from opentelemetry.sdk.metrics import MeterProvider  # noqa: PLC0415
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader  # noqa: PLC0415

    import resilient  # noqa: PLC0415

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    handle = resilient.instrument(provider)
    try:
        flag = {"on": False}
        policy = InjectFault(Boom, rate=0.5, seed=8, name="otel-chaos", enabled=lambda: flag["on"])
        faults(policy, 5)
        flag["on"] = True
        faults(policy, 40)
        data = reader.get_metrics_data()
        found: dict[str, int] = {}
        assert data is not None
        for rm in data.resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    if metric.name != "resilient.calls":
                        continue
                    for point in metric.data.data_points:  # type: ignore[union-attr]
                        attrs = dict(point.attributes or {})
                        if attrs.get("resilient.policy") == "otel-chaos":
                            assert attrs["resilient.kind"] == "inject_fault"
                            found[str(attrs["resilient.outcome"])] = int(point.value)  # type: ignore[union-attr]
    finally:
        handle.uninstrument()
        provider.shutdown()
    injected = predicted(8, 0.5, 40)
    assert found == {"injected": injected, "skipped": 40 - injected, "disabled": 5, "error": 0}


def test_injections_show_as_span_events() -> None:
    from opentelemetry.sdk.metrics import MeterProvider  # noqa: PLC0415
    from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: PLC0415
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: PLC0415
        InMemorySpanExporter,
    )

    import resilient  # noqa: PLC0415

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    meters = MeterProvider()
    handle = resilient.instrument(meters)
    clock = ManualClock()
    try:
        with provider.get_tracer("test").start_as_current_span("game day"):
            with pytest.raises(Boom):
                InjectFault(Boom, rate=1.0, name="f").call(ok)
            InjectLatency(0.25, rate=1.0, name="l", clock=clock).call(ok)
            InjectResult(7, rate=1.0, name="r").call(ok)
    finally:
        handle.uninstrument()
        provider.shutdown()
        meters.shutdown()
    [span] = exporter.get_finished_spans()
    seen = [(e.name, dict(e.attributes or {})) for e in span.events]
    assert seen == [
        (
            "resilient.chaos.fault",
            {"resilient.kind": "inject_fault", "resilient.policy": "f", "exception.type": "Boom"},
        ),
        (
            "resilient.chaos.latency",
            {"resilient.kind": "inject_latency", "resilient.policy": "l", "resilient.delay": 0.25},
        ),
        (
            "resilient.chaos.result",
            {
                "resilient.kind": "inject_result",
                "resilient.policy": "r",
                "resilient.result_type": "int",
            },
        ),
    ]


def test_a_registry_builds_chaos_policies_from_plain_data() -> None:
    from resilient import Registry  # noqa: PLC0415

    registry = Registry(defaults={"inject_latency": {"rate": 1.0}})
    registry.configure(
        {
            "slow": {"kind": "inject_latency", "seconds": 2.0, "seed": 1},
            "stale": {"kind": "inject_result", "value": "old", "rate": 1.0},
            "down": {"kind": "inject_fault", "exception": ConnectionError, "rate": 0.0},
        }
    )
    assert isinstance(registry.get("slow"), InjectLatency)
    assert registry.get("stale").call(ok) == "old"
    assert registry.get("down").call(ok) == "ok"
    snapshot = registry.snapshot()
    assert snapshot["stale"]["kind"] == "inject_result"
    assert snapshot["stale"]["injected"] == 1
    assert snapshot["down"] == {
        "kind": "inject_fault",
        "calls": 1,
        "injected": 0,
        "skipped": 1,
        "disabled": 0,
        "errors": 0,
        "rate": 0.0,
    }
    with pytest.raises(ValueError, match="already a inject_fault"):
        registry.rate_limiter("down", rate=1)


async def test_async_with_blocks(anyio_backend: str) -> None:
    clock = ManualClock()
    async with InjectLatency(1.5, rate=1.0, clock=clock):
        pass
    assert clock.monotonic() == 1.5
    with pytest.raises(Boom):
        async with InjectFault(Boom, rate=1.0):
            pass
    async with InjectFault(Boom, rate=0.0):
        pass


def test_the_sync_game_day_through_worker_threads() -> None:
    clock = ManualClock()
    pipeline = compose(
        Fallback(lambda _exc: "cached"),
        Retry(3, wait=0.05, clock=clock),
        CircuitBreaker(failure_rate_threshold=0.8, window=CountWindow(100), clock=clock),
        Timeout(0.5, clock=clock),
        InjectFault(Boom, rate=0.3, seed=1),
        InjectLatency(2.0, rate=0.1, seed=2, clock=clock),
    )
    answers = [pipeline.call(ok) for _ in range(300)]
    assert set(answers) <= {"ok", "cached"}
    assert answers.count("ok") >= 270


@given(
    steps=st.lists(st.tuples(st.booleans(), st.sampled_from(["on", "off", "raise"]))),
    rate=st.floats(min_value=0.0, max_value=1.0),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_every_call_lands_in_exactly_one_count(
    steps: list[tuple[bool, str]], rate: float, seed: int
) -> None:
    """Switch states, failing factories and draws in any order: the counts add up."""
    state = {"switch": "on", "factory_fails": False}

    def switch() -> bool:
        if state["switch"] == "raise":
            raise RuntimeError("flag service down")
        return state["switch"] == "on"

    def factory() -> Boom:
        if state["factory_fails"]:
            raise RuntimeError("factory down")
        return Boom()

    policy = InjectFault(factory, rate=rate, seed=seed, enabled=switch)
    raised = 0
    logging.disable(logging.CRITICAL)  # the failures are logged on purpose
    try:
        for fails, switch_state in steps:
            state["factory_fails"], state["switch"] = fails, switch_state
            try:
                assert policy.call(ok) == "ok"
            except Boom:
                raised += 1
    finally:
        logging.disable(logging.NOTSET)
    m = policy.metrics()
    assert m.calls == len(steps) == m.injected + m.skipped + m.disabled + m.errors
    assert m.injected == raised


def test_a_raising_or_odd_rng_leaves_the_call_alone_and_is_not_run_under_the_lock() -> None:
    class Broken:
        def random(self) -> float:
            raise RuntimeError("entropy ran out")

    class Reentrant:
        """Reads the policy's metrics from inside a draw: deadlocks under the policy's lock."""

        policy: Any = None

        def random(self) -> float:
            self.policy.metrics()
            return 0.0

    for rng in (Broken(), type("Odd", (), {"random": lambda self: "x"})()):
        policy = InjectFault(Boom, rate=1.0, rng=rng)
        logging.disable(logging.CRITICAL)
        try:
            assert policy.call(ok) == "ok"
        finally:
            logging.disable(logging.NOTSET)
        m = policy.metrics()
        assert (m.calls, m.errors, m.injected) == (1, 1, 0)
    reentrant = Reentrant()
    reentrant.policy = policy = InjectFault(Boom, rate=1.0, rng=reentrant)
    done = threading.Event()

    def call() -> None:
        with pytest.raises(Boom):
            policy.call(ok)
        done.set()

    worker = threading.Thread(target=call, daemon=True)
    worker.start()
    assert done.wait(5), "the draw ran under the policy's lock"


# -- an async factory for InjectResult ---------------------------------------------------


async def test_an_async_factory_is_awaited_for_the_injected_share(anyio_backend: str) -> None:
    made = 0

    async def canned() -> str:
        nonlocal made
        made += 1
        await anyio.lowlevel.checkpoint()  # a real await: a coroutine, not a value
        return "canned"

    policy = InjectResult(factory=canned, rate=0.3, seed=11)
    guarded = policy(aok)
    answers = [await guarded() for _ in range(500)]
    expected = predicted(11, 0.3, 500)
    assert answers.count("canned") == made == expected
    assert answers.count("ok") == 500 - expected
    metrics = policy.metrics()
    assert (metrics.injected, metrics.skipped, metrics.errors) == (expected, 500 - expected, 0)


async def test_an_async_factory_works_through_call_async_and_compose(anyio_backend: str) -> None:
    async def canned() -> str:
        return "canned"

    with capture_events() as events:
        assert await InjectResult(factory=canned, rate=1.0).call_async(aok) == "canned"
        pipeline = compose(
            Retry(2, on=Boom), InjectResult(factory=canned, rate=1.0, name="r"), Timeout(5.0)
        )
        assert await pipeline.call_async(aok) == "canned"
    injected = [e for e in events if isinstance(e, ResultInjected)]
    assert [e.result for e in injected] == ["canned", "canned"]


async def test_an_async_factory_that_raises_lets_the_call_through(
    anyio_backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken() -> str:
        raise Boom("no canned answer")

    policy = InjectResult(factory=broken, rate=1.0, name="answers")
    with caplog.at_level(logging.ERROR, logger="resilient"):
        assert await policy.call_async(aok) == "ok"
    assert (policy.metrics().injected, policy.metrics().errors) == (0, 1)
    assert "the factory raised; the call goes on uninjected" in caplog.text


async def test_an_async_factory_cancelled_is_counted_and_cancels(anyio_backend: str) -> None:
    started = anyio.Event()
    calls = 0

    async def hangs() -> str:
        started.set()
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    async def counted() -> str:
        nonlocal calls
        calls += 1
        return "ok"

    policy = InjectResult(factory=hangs, rate=1.0)
    async with anyio.create_task_group() as tg:
        tg.start_soon(policy.call_async, counted)
        await started.wait()
        tg.cancel_scope.cancel()
    assert calls == 0  # the cancellation was not swallowed into an uninjected call
    assert (policy.metrics().injected, policy.metrics().errors) == (0, 1)


def test_an_async_factory_refuses_a_sync_function() -> None:
    async def canned() -> str:
        return "canned"

    policy = InjectResult(factory=canned, rate=1.0)
    with pytest.raises(TypeError, match="factory is async: it can only answer async calls"):
        policy(ok)
    with pytest.raises(TypeError, match="factory is async"):
        policy.call(ok)
