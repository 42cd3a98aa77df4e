"""The I/O-free part shared by resilient.httpx and resilient.requests (``resilient._http``).

Driven directly, without a client or a server: classification, ``Retry-After`` in both
forms against a fixed wall clock, the per-host LRU (named, registered, evicted,
counted), option checks, the deadline an attempt sends, and the retry's use of a
failure's ``requested_wait``.
"""

from __future__ import annotations

import email.utils
import logging

import pytest
from tests.http_server import caller_deadline

from resilient import CircuitBreaker, Registry, Retry, TimeoutExceededError, compose
from resilient._http._classify import (
    HTTPStatusFailure,
    compile_failure_statuses,
    is_failure_status,
    parse_retry_after,
)
from resilient._http._client import Client
from resilient._http._exchange import Exchange, clamp, deadline
from resilient.testing import ManualClock, capture_events

NOW = 1_700_000_000.0  # a fixed wall clock (epoch seconds)


def client(policy: object = None, **options: object) -> Client:
    defaults: dict[str, object] = {
        "name": "api",
        "failure_statuses": None,
        "max_hosts": 100,
        "registry": Registry(),
        "deadline_header": "x-request-timeout",
        "max_retry_after": 60.0,
        "repeat_streams": False,
        "wall": lambda: NOW,
    }
    return Client(policy or CircuitBreaker("b"), **{**defaults, **options})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("status", "failed"),
    [(200, False), (204, False), (301, False), (400, False), (404, False), (409, False),
     (429, True), (500, True), (502, True), (503, True), (504, True), (599, True)],
)  # fmt: skip
def test_default_classification(status: int, failed: bool) -> None:
    assert is_failure_status(status) is failed


def test_failure_statuses_as_a_collection_or_predicate() -> None:
    assert compile_failure_statuses({503})(503)
    assert not compile_failure_statuses({503})(500)
    assert compile_failure_statuses(lambda s: s == 404)(404)


@pytest.mark.parametrize("bad", ["500", [500, "x"], [99], [600], [True], 3.5])
def test_bad_failure_statuses_name_the_option(bad: object) -> None:
    with pytest.raises(TypeError, match="failure_statuses"):
        compile_failure_statuses(bad)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("120", 120.0),
        (" 7 ", 7.0),
        ("0", 0.0),
        (email.utils.formatdate(NOW + 30, usegmt=True), 30.0),
        (email.utils.formatdate(NOW - 30, usegmt=True), 0.0),  # in the past: at once
        ("Sun, 06 Nov 1994 08:49:37 GMT", 0.0),
        (None, None),
        ("", None),
        ("-5", None),
        ("1.5", None),  # RFC 9110: delay-seconds are whole
        ("soon", None),
        ("9" * 13, None),
        ("Sun, 06 Nov 1994 08:49:37 -0000", None),  # no zone: not an HTTP-date
        ("Sun, 99 Nov 1994 08:49:37 GMT", None),
    ],
)
def test_parse_retry_after(value: str | None, seconds: float | None) -> None:
    assert parse_retry_after(value, NOW) == seconds


def test_a_failing_status_is_raised_with_its_response_and_wait() -> None:
    exchange = Exchange(client(), repeatable_body=True)
    assert exchange.judge("ok-response", 404, None) == "ok-response"
    with pytest.raises(HTTPStatusFailure) as caught:
        exchange.judge("busy", 429, lambda _: "3")
    assert (caught.value.response, caught.value.status, caught.value.retry_after) == (
        "busy",
        429,
        3.0,
    )
    assert caught.value.requested_wait == 3.0
    assert exchange.outcome(caught.value) == "busy"
    assert exchange.held == ["busy"]
    assert exchange.begin() == ["busy"]  # the next attempt closes it
    assert exchange.held == []


def test_retry_after_is_capped_by_max_retry_after() -> None:
    exchange = Exchange(client(max_retry_after=5.0), repeatable_body=True)
    with pytest.raises(HTTPStatusFailure) as caught:
        exchange.judge("r", 503, lambda _: "3600")
    assert caught.value.retry_after == 5.0


def test_a_failing_predicate_or_wall_clock_never_changes_the_response(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(status: int) -> bool:
        raise RuntimeError(status)

    exchange = Exchange(client(failure_statuses=broken), repeatable_body=True)
    with caplog.at_level(logging.ERROR, logger="resilient"):
        assert exchange.judge("r", 503, None) == "r"

    def no_time() -> float:
        raise OSError

    exchange = Exchange(client(wall=no_time), repeatable_body=True)
    with caplog.at_level(logging.ERROR, logger="resilient"), pytest.raises(HTTPStatusFailure) as e:
        exchange.judge("r", 503, lambda _: "Sun, 06 Nov 1994 08:49:37 GMT")
    assert e.value.retry_after is None
    assert len(caplog.records) == 2


def test_another_requests_failure_is_not_unwrapped() -> None:
    mine, other = Exchange(client(), True), Exchange(client(), True)
    with pytest.raises(HTTPStatusFailure) as caught:
        other.judge("theirs", 500, None)
    with pytest.raises(HTTPStatusFailure):
        mine.outcome(caught.value)


def test_a_streamed_body_is_not_repeatable_unless_allowed() -> None:
    assert not Exchange(client(), repeatable_body=False).repeatable()
    assert Exchange(client(repeat_streams=True), repeatable_body=False).repeatable()


def test_the_deadline_sent_is_what_is_left_rounded_down() -> None:
    clock = ManualClock()
    assert deadline("x-request-timeout") == (None, None)
    with caller_deadline(1.5, clock):
        clock.advance(0.2505)
        assert deadline("x-request-timeout") == (pytest.approx(1.2495), "1.249")
        assert deadline("grpc-timeout")[1] == "1249500u"
        assert deadline(None)[1] is None
        clock.advance(2)
        with pytest.raises(TimeoutExceededError, match="deadline passed"):
            deadline("x-request-timeout")


def test_clamp() -> None:
    assert clamp(None, None) is None
    assert clamp(5.0, None) == 5.0
    assert clamp(None, 1.0) == 1.0
    assert clamp(5.0, 1.0) == 1.0
    assert clamp(0.5, 1.0) == 0.5


def test_per_host_policies_are_named_registered_and_bounded() -> None:
    registry = Registry()
    made: list[str] = []

    def factory(name: str) -> CircuitBreaker:
        made.append(name)
        return CircuitBreaker(name)

    c = client(factory, max_hosts=2, registry=registry)
    a = c.guards(lambda: "a.example")
    assert c.guards(lambda: "a.example") is a  # kept
    c.guards(lambda: "b.example:8080")
    assert sorted(registry) == ["api:a.example", "api:b.example:8080"]
    c.guards(lambda: "a.example")  # a is now the most recently used
    c.guards(lambda: "c.example")  # evicts b
    assert made == ["api:a.example", "api:b.example:8080", "api:c.example"]
    assert sorted(registry) == ["api:a.example", "api:c.example"]
    metrics = c.metrics()
    assert metrics is not None
    assert (metrics.hosts, metrics.max_hosts, metrics.created, metrics.evictions) == (2, 2, 3, 1)
    assert c.policy("b.example:8080") is None
    policy = c.policy("a.example")
    assert isinstance(policy, CircuitBreaker)
    assert policy.name == "api:a.example"
    c.guards(lambda: "b.example:8080")  # back: a fresh policy
    assert made[-1] == "api:b.example:8080"
    assert c.metrics() == type(metrics)(2, 2, 4, 2)


def test_a_name_taken_in_the_registry_is_left_alone(caplog: pytest.LogCaptureFixture) -> None:
    registry = Registry()
    theirs = registry.circuit_breaker("api:a.example")
    c = client(CircuitBreaker, registry=registry)
    with caplog.at_level(logging.WARNING, logger="resilient"):
        c.guards(lambda: "a.example")
    assert registry.get("api:a.example") is theirs
    assert "already holds" in caplog.text


def test_a_factory_that_fails_or_returns_no_policy_leaves_nothing_behind() -> None:
    def broken(name: str) -> CircuitBreaker:
        raise KeyboardInterrupt

    c = client(broken)
    with pytest.raises(KeyboardInterrupt):
        c.guards(lambda: "a.example")
    assert c.metrics() == type(c.metrics())(0, 100, 0, 0)

    c = client(lambda name: "not a policy")
    with pytest.raises(TypeError, match="must return a policy"):
        c.guards(lambda: "a.example")


def test_one_policy_serves_every_host() -> None:
    breaker = CircuitBreaker("one")
    c = client(breaker)
    assert c.guards(lambda: "a") is c.guards(lambda: "b")
    assert c.policy() is breaker
    assert c.metrics() is None


@pytest.mark.parametrize(
    ("option", "value", "error"),
    [
        ("name", "", TypeError),
        ("name", 3, TypeError),
        ("max_hosts", 0, ValueError),
        ("max_hosts", "9", TypeError),
        ("deadline_header", "", TypeError),
        ("deadline_header", b"x", TypeError),
        ("max_retry_after", -1.0, ValueError),
        ("max_retry_after", float("nan"), ValueError),
        ("repeat_streams", 1, TypeError),
        ("wall", 3.0, TypeError),
        ("registry", {}, TypeError),
    ],
)
def test_bad_options_name_themselves(option: str, value: object, error: type) -> None:
    with pytest.raises(error, match=option):
        client(**{option: value})


def test_bad_policy_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="policy must be"):
        Client(
            3,  # type: ignore[arg-type]
            name="x",
            failure_statuses=None,
            max_hosts=1,
            registry=None,
            deadline_header=None,
            max_retry_after=1.0,
            repeat_streams=False,
            wall=None,
        )


def test_a_hedge_cannot_guard_a_transport() -> None:
    from resilient import Hedge  # noqa: PLC0415

    with pytest.raises(TypeError, match="hedge the calls"):
        client(compose(Retry(), Hedge(delay=0.1)))


# -- the retry's side: a failure's requested wait -----------------------------------


class Asks(Exception):
    def __init__(self, wait: float | None) -> None:
        super().__init__(wait)
        self.requested_wait = wait


def failing_then_ok(*waits: float | None) -> object:
    errors = [Asks(wait) for wait in waits]

    def call() -> str:
        if errors:
            raise errors.pop(0)
        return "ok"

    return call


def delays(retry: Retry, *waits: float | None) -> list[float]:
    with capture_events() as events:
        assert retry.call(failing_then_ok(*waits)) == "ok"  # type: ignore[arg-type]
    return [e.delay for e in events if type(e).__name__ == "RetryScheduled"]  # type: ignore[attr-defined]


def test_a_requested_wait_replaces_the_schedule() -> None:
    clock = ManualClock()
    retry = Retry(4, wait=0.5, clock=clock)
    assert delays(retry, 3.0, None, 0.0) == [3.0, 0.5, 0.0]
    assert clock.monotonic() == 3.5


def test_a_requested_wait_is_capped_by_the_retry_maximum() -> None:
    class Short(Retry):
        MAX_WAIT = 2.0

    assert delays(Short(2, wait=0.1, clock=ManualClock()), 3600.0) == [2.0]


def test_a_requested_wait_past_the_deadline_gives_up_at_once() -> None:
    clock = ManualClock()
    retry = Retry(3, wait=0.1, clock=clock)
    with caller_deadline(1.0, clock), pytest.raises(Asks):
        retry.call(failing_then_ok(5.0))  # type: ignore[arg-type]
    assert clock.monotonic() == 0.0  # no wait made
    assert retry.metrics().deadline_give_ups == 1


# -- run_sync / run_async: what the caller gets, what is closed ------------------------


class Resp:
    def __init__(self, status: int, broken: bool = False) -> None:
        self.status = status
        self.closed = False
        self.broken = broken

    def close(self) -> None:
        if self.broken:
            raise OSError("already gone")
        self.closed = True

    async def aclose(self) -> None:
        self.close()


def attempts(*responses: Resp) -> object:
    queue = list(responses)

    def attempt(exchange: Exchange, request: object) -> Resp:
        for stale in exchange.begin():
            stale.close()
        response = queue.pop(0)
        return exchange.judge(response, response.status, None)  # type: ignore[no-any-return]

    return attempt


def test_run_sync_gives_the_last_failed_response_and_closes_the_rest(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from resilient._http._exchange import run_sync  # noqa: PLC0415

    first, second, third = Resp(500), Resp(502, broken=True), Resp(503)

    def fallback_guard(exchange: Exchange, request: object) -> Resp:
        # A policy that answers for the request after two failures were held.
        for response in (first, second):
            with pytest.raises(HTTPStatusFailure):
                exchange.judge(response, response.status, None)
        return Resp(200)

    with caplog.at_level(logging.ERROR, logger="resilient"):
        answer = run_sync(fallback_guard, Exchange(client(), True), None, Resp.close)
    assert answer.status == 200
    assert first.closed
    assert not second.closed  # its close failed: logged, the answer unchanged
    assert "closing a failed response" in caplog.text
    retried = [Resp(500), Resp(502), third]
    guard = Retry(3, wait=0.0, clock=ManualClock())._sync_guard(attempts(*retried))  # type: ignore[arg-type]
    assert run_sync(guard, Exchange(client(), True), None, Resp.close) is third
    assert [r.closed for r in retried] == [True, True, False]


def test_run_sync_closes_what_it_holds_when_an_error_escapes() -> None:
    from resilient._http._exchange import run_sync  # noqa: PLC0415

    held = Resp(500)

    def guard(exchange: Exchange, request: object) -> Resp:
        with pytest.raises(HTTPStatusFailure):
            exchange.judge(held, 500, None)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_sync(guard, Exchange(client(), True), None, Resp.close)
    assert held.closed

    other = Exchange(client(), True)
    mine_held = Resp(500)

    def nested(exchange: Exchange, request: object) -> Resp:
        with pytest.raises(HTTPStatusFailure):
            exchange.judge(mine_held, 500, None)
        return other.judge(Resp(503), 503, None)  # type: ignore[no-any-return]

    with pytest.raises(HTTPStatusFailure):
        run_sync(nested, Exchange(client(), True), None, Resp.close)
    assert mine_held.closed


@pytest.mark.anyio
async def test_run_async_twin(caplog: pytest.LogCaptureFixture) -> None:
    from resilient._http._exchange import run_async  # noqa: PLC0415

    first, broken = Resp(500), Resp(502, broken=True)

    async def answering(exchange: Exchange, request: object) -> Resp:
        for response in (first, broken):
            with pytest.raises(HTTPStatusFailure):
                exchange.judge(response, response.status, None)
        return Resp(200)

    with caplog.at_level(logging.ERROR, logger="resilient"):
        answer = await run_async(answering, Exchange(client(), True), None, Resp.aclose)
    assert (answer.status, first.closed, broken.closed) == (200, True, False)

    held = Resp(500)

    async def failing(exchange: Exchange, request: object) -> Resp:
        with pytest.raises(HTTPStatusFailure):
            exchange.judge(held, 500, None)
        raise RuntimeError

    with pytest.raises(RuntimeError):
        await run_async(failing, Exchange(client(), True), None, Resp.aclose)
    assert held.closed

    other, mine = Exchange(client(), True), Resp(500)

    async def nested(exchange: Exchange, request: object) -> Resp:
        with pytest.raises(HTTPStatusFailure):
            exchange.judge(mine, 500, None)
        return other.judge(Resp(503), 503, None)  # type: ignore[no-any-return]

    with pytest.raises(HTTPStatusFailure):
        await run_async(nested, Exchange(client(), True), None, Resp.aclose)
    assert mine.closed


def test_a_host_made_meanwhile_by_another_caller_stands() -> None:
    registry = Registry()
    c: Client

    def factory(name: str) -> CircuitBreaker:
        if not made:
            made.append(name)
            c.guards(lambda: "a")  # another caller gets there first (here: reentrant)
        return CircuitBreaker(name)

    made: list[str] = []
    c = client(factory, registry=registry)
    c.guards(lambda: "a")
    assert c.metrics() == type(c.metrics())(1, 100, 1, 0)
    first = c.policy("a")
    c.guards(lambda: "a")
    assert c.policy("a") is first
    assert registry.get("api:a") is first


# -- OpenTelemetry: the per-host policies' counts ---------------------------------------


def test_hosts_and_evictions_are_read_by_opentelemetry() -> None:
    from opentelemetry.sdk.metrics import MeterProvider  # noqa: PLC0415
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader  # noqa: PLC0415

    import resilient  # noqa: PLC0415

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    handle = resilient.instrument(provider)
    try:
        c = client(CircuitBreaker, name="otel-hosts", max_hosts=2)
        for host in ("a", "b", "c", "a"):
            c.guards(lambda host=host: host)  # type: ignore[misc]
        points: dict[str, float] = {}
        data = reader.get_metrics_data()
        assert data is not None
        for rm in data.resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    for point in metric.data.data_points:
                        attrs = dict(point.attributes or {})
                        if attrs.get("resilient.policy") == "otel-hosts":
                            points[metric.name] = point.value  # type: ignore[union-attr]
        assert points == {"resilient.http.hosts": 2, "resilient.http.host_evictions": 2}
        # The per-host breakers themselves are reported like any policy.
        assert c.policy("a") is not None
    finally:
        handle.uninstrument()
        provider.shutdown()
