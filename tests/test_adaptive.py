"""Unit tests for ``AdaptiveLimiter``: admission, samples and windows, drops, waiting, options.

Time comes from a ``ManualClock``: a guarded function advances it by the round trip it
pretends to take, so every RTT is exact and no test sleeps. Waits for a permit are
awaited with Events or bounded polling loops that yield; the only timed waits are the
``max_wait`` timeouts under test themselves.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from typing import Any

import anyio
import pytest

import resilient
from resilient import (
    AIMD,
    AdaptiveLimiter,
    BulkheadFullError,
    CallRejected,
    Gradient2,
    LimitChanged,
    Registry,
    RejectedError,
    TimeoutExceededError,
    Vegas,
    compose,
)
from resilient.testing import ManualClock, capture_events

WAIT = 10.0  # bound on every wait: reached only when something is broken


class Boom(Exception):
    """The user's own failure."""


def taking(clock: ManualClock, rtt: float, result: object = "ok") -> Callable[[], object]:
    """A function whose call takes ``rtt`` seconds of the manual clock."""

    def call() -> object:
        clock.advance(rtt)
        return result

    return call


def per_sample(algorithm: Any, clock: ManualClock, **options: Any) -> AdaptiveLimiter:
    """A limiter whose every sample updates the limit (windows of one sample)."""
    return AdaptiveLimiter(
        algorithm, clock=clock, window_samples=1, window_duration=0, name="dep", **options
    )


# -- admission -------------------------------------------------------------------------


def test_admits_up_to_the_limit_then_rejects() -> None:
    lim = AdaptiveLimiter(AIMD(initial_limit=2), name="dep")
    with lim, lim, capture_events() as events, pytest.raises(BulkheadFullError) as info:
        lim.call(lambda: None)
    assert "limit 2" in str(info.value)
    assert isinstance(info.value, RejectedError)
    assert info.value.policy == "dep"
    assert [type(e) for e in events] == [CallRejected]
    m = lim.metrics()
    assert (m.limit, m.in_flight, m.admitted, m.rejected) == (2, 0, 2, 1)


def test_defaults_to_gradient2() -> None:
    lim = AdaptiveLimiter()
    assert lim.algorithm == Gradient2()
    assert lim.limit == 20
    assert lim.max_wait == 0.0
    assert repr(lim) == "<AdaptiveLimiter None Gradient2 0/20 in flight>"
    assert resilient.AdaptiveLimiter.__module__ == "resilient"


def test_the_permit_comes_back_however_the_call_ends() -> None:
    lim = AdaptiveLimiter(AIMD(initial_limit=1))

    def interrupted() -> None:
        raise KeyboardInterrupt

    with pytest.raises(Boom):
        lim.call(lambda: (_ for _ in ()).throw(Boom()))
    with pytest.raises(KeyboardInterrupt):
        lim.call(interrupted)
    with pytest.raises(SystemExit), lim:
        raise SystemExit(1)
    assert lim.call(lambda: 5) == 5
    assert lim.metrics().in_flight == 0


async def test_a_cancelled_call_returns_its_permit_and_gives_no_sample() -> None:
    clock = ManualClock()
    lim = per_sample(AIMD(initial_limit=1), clock)
    started = anyio.Event()

    async def hang() -> None:
        clock.advance(1.0)
        started.set()
        await anyio.sleep_forever()

    async with anyio.create_task_group() as tg:
        tg.start_soon(lim.call_async, hang)
        await started.wait()
        assert lim.metrics().in_flight == 1
        tg.cancel_scope.cancel()
    m = lim.metrics()
    assert (m.in_flight, m.updates, m.dropped) == (0, 0, 0)


async def test_async_with_and_decorator() -> None:
    lim = AdaptiveLimiter(AIMD(initial_limit=1))

    @lim
    async def guarded() -> int:
        return 7

    async with lim:
        assert lim.metrics().in_flight == 1
        with pytest.raises(BulkheadFullError):
            await guarded()
    assert await guarded() == 7


# -- samples, drops and windows --------------------------------------------------------


def test_aimd_grows_while_used_and_backs_off_on_a_timeout() -> None:
    clock = ManualClock()
    lim = per_sample(AIMD(initial_limit=2), clock)
    with lim:  # two in flight: the limit is in use
        lim.call(taking(clock, 0.01))
    assert lim.limit == 3

    def times_out() -> None:
        clock.advance(0.01)
        raise TimeoutExceededError("slow", seconds=0.01)

    with capture_events() as events, pytest.raises(TimeoutExceededError):
        lim.call(times_out)
    assert lim.limit == 2  # min(3 - 1, int(3 * 0.9))
    changed = [e for e in events if isinstance(e, LimitChanged)]
    assert len(changed) == 1
    event = changed[0]
    assert (event.policy, event.kind, event.from_limit, event.to_limit) == (
        "dep",
        "adaptive_limiter",
        3,
        2,
    )
    assert event.dropped is True
    assert event.rtt == pytest.approx(0.01)
    assert lim.metrics().dropped == 1


def test_other_errors_give_no_sample_unless_drop_on_says_so() -> None:
    clock = ManualClock()
    lim = per_sample(AIMD(initial_limit=4), clock, drop_on=lambda e: "overload" in str(e))

    def failing(message: str) -> Callable[[], None]:
        def call() -> None:
            clock.advance(0.01)
            raise Boom(message)

        return call

    with pytest.raises(Boom):
        lim.call(failing("bug"))
    assert (lim.limit, lim.metrics().updates) == (4, 0)
    with pytest.raises(Boom):
        lim.call(failing("overload"))
    assert (lim.limit, lim.metrics().dropped) == (3, 1)


def test_a_raising_drop_on_is_logged_and_counts_as_no_drop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = ManualClock()

    def broken(exc: BaseException) -> bool:
        raise RuntimeError("predicate bug")

    lim = per_sample(AIMD(initial_limit=4), clock, drop_on=broken)
    with caplog.at_level(logging.ERROR, "resilient"), pytest.raises(Boom):
        lim.call(lambda: (_ for _ in ()).throw(Boom()))
    assert "drop_on" in caplog.text
    assert lim.metrics().in_flight == 0
    assert lim.metrics().dropped == 0


def test_a_window_needs_its_samples_and_its_duration() -> None:
    clock = ManualClock()
    lim = AdaptiveLimiter(AIMD(initial_limit=1), clock=clock, window_samples=3, window_duration=1.0)
    call = taking(clock, 0.1)
    lim.call(call)  # the first sample closes the first window (due at once): too few
    assert lim.metrics().updates == 0
    for _ in range(2):
        lim.call(call)  # t = 0.3: the window is not due before t = 1.1
    assert lim.metrics().updates == 0
    clock.advance(1.0)
    lim.call(call)  # due now, with three samples: one update (+1, inflight 1 * 2 >= 1)
    assert (lim.metrics().updates, lim.limit) == (1, 2)
    clock.advance(1.0)
    lim.call(call)  # due again, but one sample only: discarded
    assert (lim.metrics().updates, lim.limit) == (1, 2)


def test_round_trips_under_min_rtt_are_not_samples() -> None:
    clock = ManualClock()
    lim = per_sample(AIMD(initial_limit=1), clock, min_rtt=0.001)
    lim.call(taking(clock, 0.0005))
    lim.call(lambda: None)  # no time at all
    assert lim.metrics().updates == 0
    lim.call(taking(clock, 0.001))
    assert lim.metrics().updates == 1


def test_vegas_through_the_limiter_grows_while_latency_is_flat() -> None:
    clock = ManualClock()
    lim = per_sample(Vegas(initial_limit=4, max_limit=50), clock)
    for _ in range(5):
        with lim, lim:  # two in flight: 2 * 2 >= 4, the limit is in use
            lim.call(taking(clock, 0.01))
    assert lim.limit > 4


def test_gradient2_through_the_limiter_shrinks_when_latency_rises() -> None:
    clock = ManualClock()
    lim = per_sample(Gradient2(initial_limit=40, min_limit=1, max_limit=60), clock)
    # Hold 35 permits so that each sample sees the limit in use (inflight >= L / 2).
    held = [lim._step.enter() for _ in range(35)]
    for _ in range(30):
        lim.call(taking(clock, 0.01))
    high = lim.limit
    assert high == 60
    with pytest.raises(BulkheadFullError):  # until the limit falls to those held
        for _ in range(30):
            lim.call(taking(clock, 0.1))
    assert lim.limit == 35
    for token in held:
        lim._step.exit_ok(token, None)
    assert lim.metrics().in_flight == 0


def test_a_thread_waiter_gets_the_permit_given_back() -> None:
    clock = ManualClock()
    lim = per_sample(AIMD(initial_limit=1), clock, max_wait=WAIT)
    admitted = threading.Event()
    with lim:
        thread = threading.Thread(target=lambda: lim.call(admitted.set))
        thread.start()
        for _ in range(10_000):
            if lim.metrics().waiting == 1:
                break
            admitted.wait(0.001)
        assert lim.metrics().waiting == 1
        assert not admitted.is_set()
    thread.join(WAIT)
    assert admitted.is_set()
    assert lim.metrics().in_flight == 0


# -- waiting ---------------------------------------------------------------------------


def test_a_thread_waiter_times_out_and_is_counted() -> None:
    lim = AdaptiveLimiter(AIMD(initial_limit=1), max_wait=0.01)
    with lim, pytest.raises(BulkheadFullError, match=r"within 0\.01s"):
        lim.call(lambda: None)
    m = lim.metrics()
    assert (m.rejected, m.waiting, m.in_flight) == (1, 0, 0)


async def test_task_waiters_are_admitted_in_turn_and_a_cancelled_one_leaves() -> None:
    lim = AdaptiveLimiter(AIMD(initial_limit=1), max_wait=WAIT)
    order: list[str] = []
    held = lim._step.enter()  # a permit held by hand

    async def append(tag: str) -> None:
        order.append(tag)

    async with anyio.create_task_group() as tg:
        for count, tag in enumerate(("a", "b"), 1):
            tg.start_soon(lim.call_async, append, tag)
            while lim.metrics().waiting < count:
                await anyio.sleep(0)
        with anyio.CancelScope() as scope:
            tg.start_soon(lim.call_async, append, "never")
            while lim.metrics().waiting < 3:
                await anyio.sleep(0)
            scope.cancel()
        lim._step.exit_ok(held, None)
    assert order[:2] == ["a", "b"]
    assert lim.metrics().in_flight == 0
    assert lim.metrics().waiting == 0


# -- composition, registry, ASGI --------------------------------------------------------


def test_a_timeout_inside_counts_as_a_drop() -> None:
    clock = ManualClock()
    lim = per_sample(AIMD(initial_limit=10), clock)

    def slow() -> None:
        clock.advance(0.01)
        raise TimeoutExceededError("deadline", seconds=0.01)

    guarded = compose(lim, resilient.Retry(attempts=1))(slow)
    with pytest.raises(TimeoutExceededError):
        guarded()
    assert (lim.metrics().dropped, lim.limit) == (1, 9)


def test_registry_builds_from_plain_data() -> None:
    registry = Registry()
    registry.configure(
        {
            "search": {"kind": "adaptive_limiter", "algorithm": {"name": "vegas", "max_limit": 50}},
            "db": {"kind": "adaptive_limiter", "algorithm": "aimd", "max_wait": 0.5},
            "api": {"kind": "adaptive_limiter", "partitions": {"live": 0.8, "batch": 0.2}},
        }
    )
    search = registry.adaptive_limiter("search")
    assert search.algorithm == Vegas(max_limit=50)
    assert search.name == "search"
    db = registry.get("db")
    assert isinstance(db, AdaptiveLimiter)
    assert (db.algorithm, db.max_wait) == (AIMD(), 0.5)
    snapshot = registry.snapshot()
    assert snapshot["api"]["kind"] == "adaptive_limiter"
    assert snapshot["api"]["partitions"]["live"]["guaranteed"] == 16
    json.dumps(snapshot)
    with pytest.raises(ValueError, match='algorithm must be "gradient2", "vegas" or "aimd"'):
        registry.adaptive_limiter("bad", algorithm="cubic")


async def test_asgi_middleware_sheds_load_with_503() -> None:
    httpx = pytest.importorskip("httpx")
    from resilient.asgi import ResilienceMiddleware  # noqa: PLC0415

    entered, release = anyio.Event(), anyio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["path"] == "/hold":
            entered.set()
            await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    lim = AdaptiveLimiter(AIMD(initial_limit=1), name="server")
    transport = httpx.ASGITransport(app=ResilienceMiddleware(app, lim))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        statuses: list[int] = []
        async with anyio.create_task_group() as tg:

            async def hold() -> None:
                statuses.append((await client.get("/hold")).status_code)

            tg.start_soon(hold)
            await entered.wait()
            statuses.append((await client.get("/other")).status_code)
            release.set()
    assert sorted(statuses) == [200, 503]
    assert lim.metrics().rejected == 1


# -- options ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"algorithm": Vegas}, TypeError, "algorithm must be"),
        ({"algorithm": 3}, TypeError, "algorithm must be"),
        ({"max_wait": -1}, ValueError, "max_wait"),
        ({"window_samples": 0}, ValueError, "window_samples"),
        ({"window_duration": 0}, ValueError, "window_samples must be 1 when window_duration is 0"),
        ({"window_duration": "1s"}, TypeError, "window_duration"),
        ({"min_rtt": -0.1}, ValueError, "min_rtt"),
        ({"drop_on": 3}, TypeError, "drop_on"),
        ({"drop_on": KeyboardInterrupt}, ValueError, "drop_on"),
        ({"partitions": [("a", 0.5)]}, TypeError, "partitions must be a mapping"),
        ({"partitions": {"a": 0.8, "b": 0.3}}, ValueError, "add up to at most 1"),
        ({"partitions": {"a": 0}}, ValueError, r"partitions\['a'\] must be in \(0, 1\]"),
        ({"partitions": {1: 0.5}}, TypeError, "partitions keys must be str"),
        ({"name": 5}, TypeError, "name"),
        ({"clock": object()}, TypeError, "clock"),
    ],
)
def test_bad_options_are_refused_naming_the_option(
    options: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        AdaptiveLimiter(**options)


def test_used_bare_as_a_decorator_is_refused() -> None:
    with pytest.raises(TypeError):

        @AdaptiveLimiter  # type: ignore[arg-type]
        def f() -> None: ...


# -- partitions ------------------------------------------------------------------------


def test_a_partition_within_its_share_enters_even_when_the_total_is_full() -> None:
    lim = AdaptiveLimiter(AIMD(initial_limit=10), partitions={"live": 0.8, "batch": 0.2})
    live, batch = lim.partition("live"), lim.partition("batch")
    held = [batch._step.enter() for _ in range(10)]  # batch borrows the whole limit
    with pytest.raises(BulkheadFullError):
        batch.call(lambda: None)  # over its share and the total is full
    with pytest.raises(BulkheadFullError):
        lim.call(lambda: None)  # no partition: no guarantee
    live_held = [live._step.enter() for _ in range(8)]  # live's guaranteed 8
    with pytest.raises(BulkheadFullError):
        live.call(lambda: None)
    m = lim.metrics()
    assert m.in_flight == 18
    assert m.partitions["live"].in_flight == 8
    assert m.partitions["batch"].rejected == 1
    assert m.partitions["live"].rejected == 1
    for token in held:
        batch._step.exit_ok(token, None)
    assert live.call(lambda: 3) == 3  # the total is free again: live borrows
    for token in live_held:
        live._step.exit_ok(token, None)
    assert lim.metrics().in_flight == 0
    assert all(p.in_flight == 0 for p in lim.metrics().partitions.values())


def test_shares_follow_the_limit() -> None:
    clock = ManualClock()
    lim = per_sample(AIMD(initial_limit=10), clock, partitions={"live": 0.75})
    assert lim.metrics().partitions["live"].guaranteed == 8  # ceil(7.5)
    with lim.partition("live"), pytest.raises(TimeoutExceededError):
        lim.call(_times_out(clock))
    assert lim.limit == 9
    assert lim.metrics().partitions["live"].guaranteed == 7  # ceil(6.75)


def _times_out(clock: ManualClock) -> Callable[[], None]:
    def call() -> None:
        clock.advance(0.01)
        raise TimeoutExceededError("slow", seconds=0.01)

    return call


def test_an_unknown_partition_is_refused_naming_the_known_ones() -> None:
    lim = AdaptiveLimiter(partitions={"live": 0.5})
    with pytest.raises(ValueError, match=r"partitions \('live'\), got 'bulk'"):
        lim.partition("bulk")
    with pytest.raises(TypeError, match="name must be"):
        lim.partition(3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="limiter must be an AdaptiveLimiter"):
        resilient.AdaptivePartition(object(), "live")  # type: ignore[arg-type]
    assert repr(lim.partition("live")).startswith("<AdaptivePartition 'live' of")
    assert lim.partition("live").name is None


async def test_a_partition_waiter_enters_on_its_guarantee_ahead_of_the_queue() -> None:
    lim = AdaptiveLimiter(AIMD(initial_limit=2), max_wait=WAIT, partitions={"live": 0.5})
    live = lim.partition("live")
    plain = [lim._step.enter() for _ in range(2)]  # the total is full: 2 of 2
    live_token = live._step.enter()  # within live's guarantee of 1: 3 in flight
    done: list[str] = []

    async def run(policy: Any, tag: str) -> None:
        await policy.call_async(_record, done, tag)

    async with anyio.create_task_group() as tg:
        tg.start_soon(run, lim, "plain")  # total full: waits
        while lim.metrics().waiting < 1:
            await anyio.sleep(0)
        tg.start_soon(run, live, "live")  # live at its share: waits behind
        while lim.metrics().waiting < 2:
            await anyio.sleep(0)
        live._step.exit_ok(live_token, None)  # live's guarantee frees up, the total does not
        while not done:
            await anyio.sleep(0)
        assert done == ["live"]
        assert lim.metrics().waiting == 1
        lim._step.exit_ok(plain.pop(), None)  # under the limit: the plain waiter's turn
    lim._step.exit_ok(plain.pop(), None)
    assert done == ["live", "plain"]
    assert lim.metrics().in_flight == 0


async def _record(done: list[str], tag: str) -> None:
    done.append(tag)


# -- OpenTelemetry ---------------------------------------------------------------------


def test_opentelemetry_reports_the_limit_in_flight_and_outcomes() -> None:
    pytest.importorskip("opentelemetry.sdk")
    from opentelemetry.sdk.metrics import MeterProvider  # noqa: PLC0415
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader  # noqa: PLC0415

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    handle = resilient.instrument(provider)
    try:
        clock = ManualClock()
        lim = per_sample(AIMD(initial_limit=3), clock)
        with lim:  # named "dep" by per_sample
            with pytest.raises(TimeoutExceededError):
                lim.call(_times_out(clock))  # a drop: the limit goes from 3 to 2
            with lim, pytest.raises(BulkheadFullError):
                lim.call(lambda: None)
            points: dict[tuple[str, str], float] = {}
            data = reader.get_metrics_data()
            assert data is not None
            for rm in data.resource_metrics:
                for sm in rm.scope_metrics:
                    for metric in sm.metrics:
                        for point in metric.data.data_points:
                            attrs = dict(point.attributes or {})
                            if attrs.get("resilient.policy") != "dep":
                                continue
                            key = (metric.name, str(attrs.get("resilient.outcome", "")))
                            points[key] = point.value  # type: ignore[union-attr]
        assert points[("resilient.adaptive_limiter.limit", "")] == 2
        assert points[("resilient.adaptive_limiter.in_flight", "")] == 1
        assert points[("resilient.adaptive_limiter.waiting", "")] == 0
        assert points[("resilient.calls", "dropped")] == 1
        assert points[("resilient.calls", "rejected")] == 1
        assert points[("resilient.calls", "admitted")] == 3
    finally:
        handle.uninstrument()
        provider.shutdown()
