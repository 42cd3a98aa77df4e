"""resilient.dashboard's Server-Sent Events: what a stream sends, and what it leaves behind.

The app is driven by hand, as a server would drive it (the test holds both ends of the
ASGI connection), on asyncio and on trio; one test runs it under a real uvicorn server.
Every stream test checks on the way out that the number of tasks and of notable-event
listeners is back where it was before the stream opened.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, suppress
from typing import Any

import anyio
import httpx
import pytest
import sniffio
import uvicorn

from resilient import Registry, dashboard
from resilient._core._events import NOTABLE_LISTENERS
from resilient.dashboard._stream import Hub, Subscriber
from resilient.testing import ManualClock

FOREVER = 3600.0  # an interval no test waits for: what arrives was pushed


def task_count() -> int:
    if sniffio.current_async_library() == "trio":
        import trio  # noqa: PLC0415

        count, stack = 0, [trio.lowlevel.current_root_task()]
        while stack:
            task = stack.pop()
            count += 1
            for nursery in task.child_nurseries:
                stack.extend(nursery.child_tasks)
        return count
    import asyncio  # noqa: PLC0415

    return len(asyncio.all_tasks())


class Connection:
    """One request to the app, with the test as the server."""

    def __init__(self) -> None:
        self.to_app, self._incoming = anyio.create_memory_object_stream[dict[str, Any]](8)
        self._outgoing, self.from_app = anyio.create_memory_object_stream[dict[str, Any]](0)
        self.start: dict[str, Any] | None = None
        self._buffer = ""

    async def receive(self) -> dict[str, Any]:
        return await self._incoming.receive()

    async def send(self, message: dict[str, Any]) -> None:
        await self._outgoing.send(message)

    async def body(self) -> str:
        message = await self.from_app.receive()
        if message["type"] == "http.response.start":
            self.start = message
            message = await self.from_app.receive()
        assert message["type"] == "http.response.body"
        assert message["more_body"] is True
        return message["body"].decode()  # type: ignore[no-any-return]

    async def events(self) -> list[tuple[str, Any]]:
        """The events (name, data) and comments (``":"``, text) in the next chunk."""
        found = []
        for block in (await self.body()).split("\n\n"):
            if block.startswith(":"):
                found.append((":", block[1:].strip()))
                continue
            fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
            if "data" in fields:
                found.append((fields.get("event", "message"), json.loads(fields["data"])))
        return found

    async def next(self, name: str, limit: int = 20) -> Any:
        for _ in range(limit):
            for event, data in await self.events():
                if event == name:
                    return data
        raise AssertionError(f"no {name!r} event in {limit} chunks")

    async def disconnect(self) -> None:
        await self.to_app.send({"type": "http.disconnect"})

    def close(self) -> None:
        for end in (self.to_app, self._incoming, self._outgoing, self.from_app):
            end.close()


@asynccontextmanager
async def opened(
    app: Any, path: str = "/stream", *, last: bool = True
) -> AsyncIterator[Connection]:
    """A stream open for the block; on the way out, nothing of it may remain."""
    tasks, listeners = task_count(), len(NOTABLE_LISTENERS)
    connection = Connection()
    scope = {"type": "http", "method": "GET", "path": path, "root_path": "", "headers": []}
    try:
        with anyio.fail_after(10):
            async with anyio.create_task_group() as group:
                group.start_soon(app, scope, connection.receive, connection.send)
                yield connection
                await connection.disconnect()
    finally:
        connection.close()
    assert task_count() == tasks
    assert len(NOTABLE_LISTENERS) == listeners
    if last:  # the app's last stream: its hub is empty and has left the channel
        assert app.hub.subscribers == 0
        assert not app.hub.listening


def registry() -> Registry:
    reg = Registry()
    reg.circuit_breaker("payments", minimum_calls=2, window={"count": 4})
    reg.bulkhead("db", max_concurrent=3)
    return reg


async def test_a_stream_opens_with_a_snapshot_then_sends_metrics_every_interval() -> None:
    reg = registry()
    app = dashboard.app(reg, interval=2, clock=ManualClock())
    async with opened(app) as stream:
        first = await stream.body()
        assert stream.start is not None
        assert stream.start["status"] == 200
        assert (b"content-type", b"text/event-stream; charset=utf-8") in stream.start["headers"]
        assert first.startswith("retry: 2000\n\nevent: snapshot\ndata: {")
        for _ in range(4):  # before the stream runs again: counted in the next reading
            reg.circuit_breaker("payments").call(int, "1")
        metrics = await stream.next("metrics")
        assert metrics["elapsed"] == 2.0
        by_name = {entry["name"]: entry for entry in metrics["policies"]}
        assert by_name["payments"]["calls_per_second"] == 2.0
        assert by_name["db"]["calls_per_second"] == 0.0
        assert app.hub.subscribers == 1
        assert app.hub.listening


async def test_a_transition_is_pushed_at_once_not_at_the_next_interval() -> None:
    reg = registry()
    app = dashboard.app(reg, interval=FOREVER)
    async with opened(app) as stream:
        await stream.next("snapshot")
        reg.circuit_breaker("payments").force_open()
        transition = await stream.next("transition", limit=1)
    assert transition["policy"] == "payments"
    assert transition["from_state"] == "closed"
    assert transition["to_state"] == "forced_open"
    assert transition["entry"]["state"] == "forced_open"


async def test_a_transition_in_another_thread_wakes_the_stream() -> None:
    reg = registry()
    breaker = reg.circuit_breaker("payments")
    app = dashboard.app(reg, interval=FOREVER)
    async with opened(app) as stream:
        await stream.next("snapshot")
        # One failure in two calls opens it, in a thread of its own.
        thread = threading.Thread(target=_trip, args=(breaker,))
        thread.start()
        thread.join()
        transition = await stream.next("transition", limit=1)
    assert transition["to_state"] == "open"
    assert transition["failure_rate"] == 0.5
    assert transition["calls"] == 2


def _trip(breaker: Any) -> None:
    breaker.call(int, "1")
    with suppress(ValueError):
        breaker.call(int, "x")


async def test_transitions_of_policies_outside_the_registry_are_not_sent() -> None:
    reg = registry()
    outsider = Registry().circuit_breaker("elsewhere")
    app = dashboard.app(reg, interval=FOREVER)
    async with opened(app) as stream:
        await stream.next("snapshot")
        outsider.force_open()
        reg.circuit_breaker("payments").force_open()
        transition = await stream.next("transition", limit=1)
    assert transition["policy"] == "payments"


async def test_every_stream_gets_the_transition_and_the_last_one_out_removes_the_listener() -> None:
    reg = registry()
    app = dashboard.app(reg, interval=FOREVER)
    async with opened(app) as first:
        await first.next("snapshot")
        async with opened(app, last=False) as second:
            await second.next("snapshot")
            assert app.hub.subscribers == 2
            reg.circuit_breaker("payments").force_open()
            assert (await first.next("transition", limit=1))["to_state"] == "forced_open"
            assert (await second.next("transition", limit=1))["to_state"] == "forced_open"
        assert app.hub.subscribers == 1
        assert app.hub.listening
        reg.circuit_breaker("payments").reset()
        assert (await first.next("transition", limit=1))["to_state"] == "closed"


async def test_a_quiet_stream_sends_heartbeats() -> None:
    app = dashboard.app(registry(), interval=FOREVER, heartbeat=0.01)
    async with opened(app) as stream:
        await stream.next("snapshot")
        assert await stream.events() == [(":", "heartbeat")]


async def test_a_failed_send_ends_the_stream_and_leaves_nothing_behind() -> None:
    reg = registry()
    app = dashboard.app(reg, interval=FOREVER)
    tasks, listeners = task_count(), len(NOTABLE_LISTENERS)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        await anyio.sleep_forever()
        raise AssertionError  # pragma: no cover

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if message["type"] == "http.response.body" and len(sent) > 2:
            raise OSError("client gone")  # uvicorn's ClientDisconnected is an OSError

    scope = {"type": "http", "method": "GET", "path": "/stream", "root_path": "", "headers": []}
    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            group.start_soon(app, scope, receive, send)
            await anyio.wait_all_tasks_blocked()
            reg.circuit_breaker("payments").force_open()
            reg.circuit_breaker("payments").reset()
    assert len(sent) == 3
    assert task_count() == tasks
    assert len(NOTABLE_LISTENERS) == listeners
    assert app.hub.subscribers == 0


async def test_the_hystrix_stream_reports_breakers_as_commands_and_bulkheads_as_pools() -> None:
    reg = registry()
    reg.retry("quotes")  # no Hystrix counterpart: left out
    reg.circuit_breaker("payments").force_open()
    app = dashboard.app(reg, interval=2, clock=ManualClock())
    async with opened(app, "/hystrix.stream") as stream:
        records = [data for _, data in await stream.events()]
        assert not app.hub.listening  # the Hystrix stream sends no transitions
        again = [data for _, data in await stream.events()]
    assert [r["type"] for r in records] == ["HystrixThreadPool", "HystrixCommand"]
    pool, command = records
    assert command["name"] == "payments"
    assert command["isCircuitBreakerOpen"] is True
    assert command["propertyValue_circuitBreakerForceOpen"] is True
    assert command["propertyValue_circuitBreakerRequestVolumeThreshold"] == 2
    assert command["propertyValue_circuitBreakerErrorThresholdPercentage"] == 50
    assert command["latencyExecute"]["99.5"] == 0
    assert pool["name"] == "db"
    assert pool["currentMaximumPoolSize"] == 3
    assert [r["name"] for r in again] == ["db", "payments"]


def test_the_listener_never_raises_into_the_call(caplog: pytest.LogCaptureFixture) -> None:
    reg = registry()
    hub = Hub(reg)

    def broken_wake() -> None:
        raise RuntimeError("event loop closed")

    subscriber = Subscriber(broken_wake)
    hub.join(subscriber)
    try:
        breaker = reg.circuit_breaker("payments")
        breaker.force_open()  # the transition's listener fails: the call does not
        breaker.reset()
    finally:
        hub.leave(subscriber)
    assert hub.errors == 2
    assert breaker.listener_errors == 0  # caught by the hub, not by the policy
    assert "the dashboard failed to forward" in caplog.text
    assert not hub.listening


def test_no_listener_while_no_stream_is_open() -> None:
    reg = registry()
    app = dashboard.app(reg)
    assert not app.hub.listening
    assert app.hub.subscribers == 0


# -- a real server ---------------------------------------------------------------------


@pytest.fixture
def served() -> Iterator[tuple[Any, Registry, str]]:
    reg = registry()
    app = dashboard.app(reg, interval=FOREVER)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="off", ws="none", http="h11")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        yield app, reg, f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
    assert not thread.is_alive()


def eventually(predicate: Any, timeout: float = 5.0) -> bool:
    """Poll ``predicate`` until true (the server notices a disconnect in its own time)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def test_a_client_disconnecting_from_a_real_server_leaves_nothing_behind(
    served: tuple[Any, Registry, str],
) -> None:
    app, reg, url = served
    listeners = len(NOTABLE_LISTENERS)
    with httpx.Client(base_url=url, timeout=10) as client:
        for _ in range(3):  # connect, read, drop: three times over
            with client.stream("GET", "/stream") as response:
                assert response.headers["content-type"].startswith("text/event-stream")
                lines = response.iter_lines()
                assert next(lines) == "retry: 2000"
                assert next(lines) == ""
                assert next(lines) == "event: snapshot"
                assert eventually(lambda: app.hub.subscribers == 1)
                reg.circuit_breaker("payments").force_open()
                seen = [next(lines) for _ in range(4)]
                assert "event: transition" in seen
                reg.circuit_breaker("payments").reset()
            assert eventually(lambda: app.hub.subscribers == 0)
    assert len(NOTABLE_LISTENERS) == listeners
    assert not app.hub.listening
