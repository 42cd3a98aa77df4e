"""resilient.dashboard at the ASGI level: the snapshot, the page, routing and mounting.

The streams are in ``test_dashboard_stream.py``; the page in a real browser in
``test_dashboard_browser.py``.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.routing import Mount

from asgi_apps import client
from resilient import Bulkhead, Registry, dashboard
from resilient.testing import ManualClock


def registry() -> Registry:
    reg = Registry()
    reg.circuit_breaker("payments", minimum_calls=2, window={"count": 4})
    reg.bulkhead("db", max_concurrent=3)
    reg.retry("quotes", attempts=2, wait=0)
    reg.rate_limiter("api", rate=1, per=60)
    return reg


def fail() -> None:
    raise ValueError("down")


async def snapshot(app: Any, path: str = "/snapshot") -> dict[str, Any]:
    async with client(app) as c:
        response = await c.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    return {entry["name"]: entry for entry in response.json()["policies"]}


async def test_the_snapshot_lists_every_named_policy_with_its_figures() -> None:
    reg = registry()
    breaker = reg.circuit_breaker("payments")
    breaker.call(int, "1")
    with pytest.raises(ValueError, match="down"):
        breaker.call(fail)
    reg.bulkhead("db").call(int, "2")
    limiter = reg.rate_limiter("api")
    limiter.call(int, "3")
    with pytest.raises(Exception, match="rate"):
        limiter.call(int, "4")

    got = await snapshot(dashboard.app(reg))

    assert sorted(got) == ["api", "db", "payments", "quotes"]
    pay = got["payments"]
    assert pay["kind"] == "circuit_breaker"
    assert pay["state"] == "open"  # 1 failure in 2 calls: 50 %, the default threshold
    assert pay["failure_rate"] == 0.5
    assert pay["slow_call_rate"] == 0.0
    assert pay["calls"] == 2
    assert pay["outcomes"] == {"success": 1, "failure": 1, "ignored": 0, "rejected": 0}
    assert pay["metrics"]["failed_calls"] == 1
    assert pay["retry_after"] > 0
    assert got["db"]["in_flight"] == 0
    assert got["db"]["limit"] == 3
    assert got["db"]["calls"] == 1
    assert got["db"]["state"] is None
    assert got["api"]["rejections"] == 1
    assert got["api"]["calls"] == 2
    assert got["quotes"]["kind"] == "retry"
    # Rates need a previous reading.
    assert all(entry["calls_per_second"] is None for entry in got.values())


async def test_snapshot_rates_are_per_second_of_the_clock_since_the_previous_snapshot() -> None:
    reg = registry()
    clock = ManualClock()
    app = dashboard.app(reg, clock=clock)
    await snapshot(app)
    breaker = reg.circuit_breaker("payments")
    for _ in range(10):
        breaker.call(int, "1")
    clock.advance(4)
    got = await snapshot(app)
    assert got["payments"]["calls_per_second"] == 2.5
    assert got["payments"]["rejections_per_second"] == 0.0
    assert got["db"]["calls_per_second"] == 0.0


async def test_a_forced_open_breaker_shows_its_state_and_rejections() -> None:
    reg = registry()
    breaker = reg.circuit_breaker("payments")
    breaker.force_open()
    with pytest.raises(Exception, match="open"):
        breaker.call(int, "1")
    got = await snapshot(dashboard.app(reg))
    assert got["payments"]["state"] == "forced_open"
    assert got["payments"]["rejections"] == 1
    assert got["payments"]["retry_after"] is None


async def test_latency_quantiles_come_from_the_breakers_window_durations() -> None:
    reg = Registry()
    clock = ManualClock()
    breaker = reg.circuit_breaker(
        "slow", slow_call_duration=10.0, window={"count": 10}, minimum_calls=10, clock=clock
    )
    for ms in range(1, 11):  # 1 ms to 10 ms
        breaker.call(clock.advance, ms / 1000)
    got = await snapshot(dashboard.app(reg, quantiles=(0.5, 1.0)))
    latency = got["slow"]["latency"]
    assert latency == {"0.5": pytest.approx(0.005), "1.0": pytest.approx(0.010)}


async def test_a_policy_that_fails_to_report_does_not_hide_the_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Broken(Bulkhead):
        def metrics(self) -> Any:
            raise RuntimeError("metrics broke")

    reg = registry()
    reg._policies["broken"] = Broken(1)  # a registry builds only its own kinds
    got = await snapshot(dashboard.app(reg))
    assert "RuntimeError" in got["broken"]["error"]
    assert got["db"]["limit"] == 3
    assert got["payments"]["state"] == "closed"
    assert "reading bulkhead 'broken' for the dashboard failed" in caplog.text


async def test_the_page_is_one_self_contained_html_file() -> None:
    async with client(dashboard.app(Registry())) as c:
        response = await c.get("/")
        head = await c.head("/")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    page = response.text
    assert "<style>" in page
    assert "<script>" in page
    assert 'new EventSource(base + "stream")' in page
    # No CDN, no font, no image from elsewhere: it works offline.
    for outside in ('src="http', "src='http", 'href="http', "@import", "url(http"):
        assert outside not in page
    assert head.status_code == 200
    assert head.content == b""
    assert int(head.headers["content-length"]) == len(response.content)


async def test_head_on_a_stream_answers_without_streaming() -> None:
    async with client(dashboard.app(Registry())) as c:
        for path in ("/stream", "/hystrix.stream"):
            head = await c.head(path)
            assert head.status_code == 200
            assert head.headers["content-type"] == "text/event-stream; charset=utf-8"
            assert head.content == b""


async def test_unknown_paths_and_methods_are_refused() -> None:
    async with client(dashboard.app(Registry())) as c:
        missing = await c.get("/nothing")
        post = await c.post("/snapshot")
    assert missing.status_code == 404
    assert post.status_code == 405
    assert post.headers["allow"] == "GET, HEAD"


@pytest.mark.parametrize("framework", [Starlette, FastAPI])
async def test_mounted_below_a_path_in_starlette_and_fastapi(framework: type[Any]) -> None:
    reg = registry()
    app = framework(routes=[Mount("/ops/dashboard", app=dashboard.app(reg))])
    got = await snapshot(app, "/ops/dashboard/snapshot")
    assert "payments" in got
    async with client(app) as c:
        page = await c.get("/ops/dashboard/")
    assert page.status_code == 200
    assert "EventSource" in page.text


async def test_the_default_registry_is_shown_by_default() -> None:
    import resilient  # noqa: PLC0415

    resilient.default_registry.bulkhead("dashboard-test-default", max_concurrent=1)
    got = await snapshot(dashboard.app())
    assert got["dashboard-test-default"]["limit"] == 1


async def test_the_app_answers_lifespan_and_closes_websockets() -> None:
    app = dashboard.app(Registry())
    incoming = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app({"type": "lifespan"}, receive, send)
    await app({"type": "websocket", "path": "/stream"}, receive, send)
    assert [m["type"] for m in sent] == [
        "lifespan.startup.complete",
        "lifespan.shutdown.complete",
        "websocket.close",
    ]


def test_options_are_checked_naming_the_option() -> None:
    with pytest.raises(ValueError, match="interval"):
        dashboard.app(Registry(), interval=0)
    with pytest.raises(ValueError, match="heartbeat"):
        dashboard.app(Registry(), heartbeat=-1)
    with pytest.raises(TypeError, match=r"registry must be a resilient\.Registry"):
        dashboard.app({})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="quantiles"):
        dashboard.app(Registry(), quantiles=(0.5, 2))
    with pytest.raises(TypeError, match="quantiles"):
        dashboard.app(Registry(), quantiles="0.5")  # type: ignore[arg-type]


def test_the_public_names_say_where_users_find_them() -> None:
    app = dashboard.app(Registry(), interval=2)
    assert dashboard.app.__module__ == "resilient.dashboard"
    assert type(app).__module__ == "resilient.dashboard"
    assert repr(app) == "<Dashboard of <Registry of 0 policies>, every 2 s>"


def test_the_page_ships_in_the_package() -> None:
    import importlib.resources  # noqa: PLC0415

    page = importlib.resources.files("resilient.dashboard") / "index.html"
    assert page.is_file()
    assert json.dumps(page.read_text(encoding="utf-8"))  # text, UTF-8


def test_hystrix_commands_carry_latency_percentiles_in_milliseconds() -> None:
    from resilient.dashboard._hystrix import breaker_command  # noqa: PLC0415

    clock = ManualClock()
    breaker = Registry().circuit_breaker(
        "slow", slow_call_duration=10.0, window={"count": 4}, minimum_calls=4, clock=clock
    )
    for ms in (10, 20, 30, 40):
        breaker.call(clock.advance, ms / 1000)
    command = breaker_command("slow", breaker, 0)
    assert command["latencyExecute_mean"] == 25
    assert command["latencyExecute"]["0"] == 10
    assert command["latencyExecute"]["50"] == 20
    assert command["latencyExecute"]["100"] == 40
    assert command["requestCount"] == 4


def test_a_breaker_that_fails_to_report_is_left_out_of_the_hystrix_stream() -> None:
    from resilient import CircuitBreaker  # noqa: PLC0415
    from resilient.dashboard._hystrix import hystrix_tick  # noqa: PLC0415
    from resilient.dashboard._readout import Sampler  # noqa: PLC0415

    class Broken(CircuitBreaker):
        def metrics(self) -> Any:
            raise RuntimeError("metrics broke")

    reg = Registry()
    reg._policies["broken"] = Broken("broken")
    sampler = Sampler(reg, ManualClock(), (0.5,))
    assert hystrix_tick(sampler) == b": ping\n\n"
    assert sampler.errors == 1
    assert sampler.entry("no such policy") is None
