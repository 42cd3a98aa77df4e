"""The ASGI middleware's cost per request, next to a bare Starlette request and slowapi.

Two measurements, each alternating the configurations in rotated order, round after
round, so that every configuration sees the same machine load:

* **direct** (default): each configuration's ASGI app is called in-process with an
  HTTP scope like uvicorn's (four headers, plus ``x-request-timeout`` where a row says
  so), a trivial ``receive`` and a ``send`` that drops the messages; a sample is a batch
  of requests in one running asyncio loop, timed in thread CPU time. The figure is the
  median ns per request over the samples; a configuration's cost is its median minus the
  bare Starlette app's, and its share is that cost over the bare request's time.
* **uvicorn** (``--uvicorn``): each configuration is served by a real uvicorn (a
  subprocess, httptools and uvloop when installed, one worker, access log off), loaded
  by raw keep-alive sockets from this process at 1 and 64 connections. The figures are
  requests per second and the server process's CPU time per request (user + system,
  read from ``/proc``), which other load on a shared machine inflates least.

Rows: the bare app; a route exempting the path (route lookup and pass-through); a
``Bulkhead``; ``compose(CircuitBreaker, Bulkhead)``; a ``Timeout`` alone;
``compose(CircuitBreaker, Timeout, Bulkhead)`` without and with a caller's
``x-request-timeout`` header; the header with a ``Bulkhead`` (a deadline, no
``Timeout``); a per-client ``RateLimiter`` (``key=client_ip``); and slowapi's per-client
limit (``SlowAPIASGIMiddleware``, memory storage) when slowapi is installed. Every policy
is built so that nothing but its fast path runs; each row's responses are checked. Two
*floor* rows are hand-written middlewares, not the library: one that only reads the
response's status as it goes by (the least any resilience middleware must do), and one
that also sets a deadline context variable and a loop timer, cancelled at the response
start (the least a timeout must do besides). They show where a target below their cost
cannot be met in Python.

Run: ``python benchmarks/asgi.py [--rounds 15] [--uvicorn] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import gc
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route as StarletteRoute

from resilient import Bulkhead, CircuitBreaker, RateLimiter, Timeout, compose, remaining
from resilient.asgi import ResilienceMiddleware, client_ip

if TYPE_CHECKING:
    from starlette.requests import Request

# name: (description, sends x-request-timeout)
ROWS: dict[str, tuple[str, bool]] = {
    "bare": ("bare Starlette app", False),
    "exempt": ("route exempt (lookup and pass-through)", False),
    "bulkhead": ("Bulkhead", False),
    "breaker+bulkhead": ("compose(CircuitBreaker, Bulkhead)", False),
    "timeout": ("Timeout", False),
    "breaker+timeout+bulkhead": ("compose(CircuitBreaker, Timeout, Bulkhead)", False),
    "deadline+timeout": (
        "caller's deadline header, compose(CircuitBreaker, Timeout, Bulkhead)",
        True,
    ),
    "deadline+bulkhead": ("caller's deadline header, Bulkhead", True),
    "per-client": ("per-client RateLimiter (key=client_ip)", False),
    "slowapi": ("slowapi per-client limit (SlowAPIASGIMiddleware)", False),
    "floor-watch": ("floor: a hand-written middleware that only reads the status", False),
    "floor-timeout": (
        "floor: the same, plus a deadline context variable and a loop timer",
        False,
    ),
}
BATCH = 200
CHECKING = True  # the app checks what it sees (the warm-up); off while timed
DEADLINE_ROWS = {"deadline+timeout", "deadline+bulkhead"}


def _slowapi_available() -> bool:
    try:
        import slowapi  # noqa: F401, PLC0415 -- optional peer
    except ImportError:
        return False
    return True


def _starlette(impl: str) -> Starlette:
    async def ok(request: Request) -> PlainTextResponse:
        if CHECKING and impl in DEADLINE_ROWS:
            # The deadline the header set is what the app sees (checked while warming
            # up only: the bare app does not pay for the check either).
            assert remaining() is not None
        return PlainTextResponse("ok")

    app = Starlette(routes=[StarletteRoute("/", ok)])
    if impl == "slowapi":
        from slowapi import Limiter  # noqa: PLC0415 -- optional peer
        from slowapi.middleware import SlowAPIASGIMiddleware  # noqa: PLC0415
        from slowapi.util import get_remote_address  # noqa: PLC0415

        app.state.limiter = Limiter(
            key_func=get_remote_address, default_limits=["1000000000/second"]
        )
        app.add_middleware(SlowAPIASGIMiddleware)
    return app


def _floor_watch(app: Any) -> Any:
    """The least any resilience middleware does: see the response's status go by."""

    async def watch(scope: Any, receive: Any, send: Any) -> None:
        status = 0

        async def watching(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        await app(scope, receive, watching)
        if status >= 500:
            raise AssertionError(status)

    return watch


FLOOR_DEADLINE: Any = contextvars.ContextVar("floor_deadline", default=None)


def _floor_timeout(app: Any, seconds: float) -> Any:
    """The least a timeout does besides: a deadline the app can read, a timer to cancel.

    One ``ContextVar.set``/``reset`` (what ``remaining()`` reads) and one
    ``loop.call_at``, cancelled when the response starts: no error mapping, no
    ``uncancel`` bookkeeping, no metrics.
    """

    async def timed(scope: Any, receive: Any, send: Any) -> None:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        handle = loop.call_at(loop.time() + seconds, task.cancel)
        token = FLOOR_DEADLINE.set(loop.time() + seconds)
        status = 0

        async def watching(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                handle.cancel()
            await send(message)

        try:
            await app(scope, receive, watching)
        finally:
            handle.cancel()
            FLOOR_DEADLINE.reset(token)
        if status >= 500:
            raise AssertionError(status)

    return timed


def build(impl: str) -> Any:  # noqa: PLR0911 -- one return per row
    """The ASGI app of one row."""
    app = _starlette(impl)
    if impl in {"bare", "slowapi"}:
        return app
    if impl == "floor-watch":
        return _floor_watch(app)
    if impl == "floor-timeout":
        return _floor_timeout(app, 10.0)
    if impl == "exempt":
        return ResilienceMiddleware(app, Bulkhead(100), routes={"/": None})
    if impl in {"bulkhead", "deadline+bulkhead"}:
        return ResilienceMiddleware(app, Bulkhead(100))
    if impl == "breaker+bulkhead":
        return ResilienceMiddleware(app, compose(CircuitBreaker("api"), Bulkhead(100)))
    if impl == "timeout":
        return ResilienceMiddleware(app, Timeout(10))
    if impl in {"breaker+timeout+bulkhead", "deadline+timeout"}:
        return ResilienceMiddleware(app, compose(CircuitBreaker("api"), Timeout(10), Bulkhead(100)))
    assert impl == "per-client"
    return ResilienceMiddleware(app, key=client_ip, per_key=lambda _key: RateLimiter(1e9))


def _scope(deadline: bool) -> dict[str, Any]:
    headers = [
        (b"host", b"127.0.0.1:8000"),
        (b"user-agent", b"bench/1.0"),
        (b"accept", b"*/*"),
        (b"accept-encoding", b"gzip, deflate"),
    ]
    if deadline:
        headers.append((b"x-request-timeout", b"30"))
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 50000),
        "scheme": "http",
        "method": "GET",
        "root_path": "",
        "path": "/",
        "raw_path": b"/",
        "query_string": b"",
        "headers": headers,
        "state": {},
    }


def _direct_batch(impl: str) -> Callable[[int], Any]:
    app = build(impl)
    template = _scope(ROWS[impl][1])
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    async def batch(n: int) -> int:
        start = time.thread_time_ns()
        for _ in range(n):
            scope = dict(template)  # servers build a fresh scope per request
            scope["state"] = {}
            await app(scope, receive, send)
        elapsed = time.thread_time_ns() - start
        if statuses.count(200) != len(statuses):
            raise AssertionError(f"{impl}: statuses {set(statuses)}")
        statuses.clear()
        return elapsed

    return batch


def run_direct(impls: list[str], rounds: int) -> dict[str, list[float]]:
    """ns per request of each row, one sample per row per round (alternating)."""
    loop = asyncio.new_event_loop()
    batches = {impl: _direct_batch(impl) for impl in impls}
    samples: dict[str, list[float]] = {impl: [] for impl in impls}
    global CHECKING  # noqa: PLW0603 -- the app's check, on while warming up only
    CHECKING = True
    for impl in impls:  # warm up: per-key entries, caches, the loop timer
        loop.run_until_complete(batches[impl](BATCH))
    CHECKING = False
    gc.disable()
    try:
        for r in range(rounds):
            order = impls[r % len(impls) :] + impls[: r % len(impls)]
            for impl in order:
                elapsed = loop.run_until_complete(batches[impl](BATCH))
                samples[impl].append(elapsed / BATCH)
            if r % 10 == 9:
                gc.collect()
    finally:
        gc.enable()
        loop.close()
    return samples


def report_direct(samples: dict[str, list[float]]) -> list[dict[str, Any]]:
    bare = statistics.median(samples["bare"])
    print(f"\n## Direct ASGI calls, thread CPU time ({len(samples['bare'])} samples of {BATCH})\n")
    print(
        "| configuration | ns/request | IQR | cost, µs | share of bare request "
        "| cost, fastest decile, µs | share, fastest decile |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    bare_fast = statistics.quantiles(samples["bare"], n=10)[0]
    rows = []
    for impl, values in samples.items():
        median = statistics.median(values)
        q = statistics.quantiles(values, n=4)
        cost = median - bare
        share = cost / bare
        fast = statistics.quantiles(values, n=10)[0]
        fast_cost = fast - bare_fast
        rows.append(
            {
                "impl": impl,
                "ns": median,
                "iqr": q[2] - q[0],
                "cost_ns": cost,
                "share": share,
                "fast_ns": fast,
                "fast_cost_ns": fast_cost,
                "fast_share": fast_cost / bare_fast,
            }
        )
        if impl == "bare":
            print(f"| {ROWS[impl][0]} | {median:,.0f} | {q[2] - q[0]:,.0f} | - | - | - | - |")
            continue
        print(
            f"| {ROWS[impl][0]} | {median:,.0f} | {q[2] - q[0]:,.0f} | {cost / 1000:+.2f} "
            f"| {share:.1%} | {fast_cost / 1000:+.2f} | {fast_cost / bare_fast:.1%} |"
        )
    return rows


# --- uvicorn ------------------------------------------------------------------------


def serve(impl: str, port: int) -> None:
    """Run row ``impl`` under uvicorn on ``port`` (the server subprocess)."""
    import uvicorn  # noqa: PLC0415 -- only the server process needs it

    kwargs: dict[str, Any] = {"log_level": "warning", "access_log": False, "lifespan": "off"}
    try:
        import httptools  # noqa: F401, PLC0415
        import uvloop  # noqa: F401, PLC0415
    except ImportError:
        pass
    else:
        kwargs.update(http="httptools", loop="uvloop")
    uvicorn.run(build(impl), host="127.0.0.1", port=port, **kwargs)


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class _Conn(asyncio.Protocol):
    """One keep-alive connection sending GET / again as soon as a response is complete."""

    def __init__(self, request: bytes, done: Callable[[], bool], count: list[int]) -> None:
        self.request = request
        self.done = done
        self.count = count
        self.buffer = b""
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].lower()
            at = head.find(b"content-length:")
            length = int(
                head[at + 15 : head.find(b"\r\n", at) if head.find(b"\r\n", at) > 0 else None]
            )
            total = end + 4 + length
            if len(self.buffer) < total:
                return
            if not head.startswith(b"http/1.1 200"):
                raise AssertionError(head[:40])
            self.buffer = self.buffer[total:]
            self.count[0] += 1
            if self.done():
                self.transport.close()
                return
            self.transport.write(self.request)

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


async def _load(port: int, connections: int, seconds: float, deadline: bool) -> int:
    request = b"GET / HTTP/1.1\r\nhost: 127.0.0.1\r\nuser-agent: bench/1.0\r\naccept: */*\r\n"
    if deadline:
        request += b"x-request-timeout: 30\r\n"
    request += b"\r\n"
    loop = asyncio.get_running_loop()
    stop = loop.time() + seconds
    count = [0]

    def done() -> bool:
        return loop.time() >= stop

    conns = []
    for _ in range(connections):
        _, proto = await loop.create_connection(
            lambda: _Conn(request, done, count), "127.0.0.1", port
        )
        conns.append(proto)
    await asyncio.gather(*(c.closed for c in conns))
    return count[0]


def _wait_port(port: int) -> None:
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
        except OSError:
            time.sleep(0.05)
        else:
            return
    raise RuntimeError("uvicorn did not start")


def run_uvicorn(
    impls: list[str], rounds: int, seconds: float
) -> dict[tuple[str, int], list[tuple[float, float]]]:
    """(requests/s, server CPU µs per request) per row and connection count, per round."""
    servers = {}
    base = 18000 + os.getpid() % 1000 * 20
    for i, impl in enumerate(impls):
        port = base + i
        proc = subprocess.Popen([sys.executable, __file__, "--serve", impl, "--port", str(port)])
        servers[impl] = (proc, port)
    results: dict[tuple[str, int], list[tuple[float, float]]] = {}
    try:
        for _, port in servers.values():
            _wait_port(port)
        for impl, (_proc, port) in servers.items():  # warm up
            asyncio.run(_load(port, 4, 0.3, ROWS[impl][1]))
        for r in range(rounds):
            order = impls[r % len(impls) :] + impls[: r % len(impls)]
            for connections in (1, 64):
                for impl in order:
                    proc, port = servers[impl]
                    cpu = _cpu_seconds(proc.pid)
                    wall = time.perf_counter()
                    n = asyncio.run(_load(port, connections, seconds, ROWS[impl][1]))
                    wall = time.perf_counter() - wall
                    cpu = _cpu_seconds(proc.pid) - cpu
                    results.setdefault((impl, connections), []).append((n / wall, cpu / n * 1e6))
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait()
    return results


def report_uvicorn(
    results: dict[tuple[str, int], list[tuple[float, float]]], impls: list[str]
) -> list[dict[str, Any]]:
    print("\n## Under uvicorn (raw keep-alive sockets from one process)\n")
    print(
        "| configuration | connections | requests/s | ratio to bare "
        "| server CPU µs/request | cost, µs | share |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    rows = []
    for connections in (1, 64):
        bare_rps = statistics.median(r for r, _ in results[("bare", connections)])
        bare_cpu = statistics.median(c for _, c in results[("bare", connections)])
        for impl in impls:
            values = results[(impl, connections)]
            rps = statistics.median(r for r, _ in values)
            cpu = statistics.median(c for _, c in values)
            cost = cpu - bare_cpu
            rows.append(
                {
                    "impl": impl,
                    "connections": connections,
                    "rps": rps,
                    "cpu_us": cpu,
                    "cost_us": cost,
                }
            )
            shown = "-" if impl == "bare" else f"{cost:+.1f}"
            pct = "-" if impl == "bare" else f"{cost / bare_cpu:.1%}"
            print(
                f"| {ROWS[impl][0]} | {connections} | {rps:,.0f} | {rps / bare_rps:.2f}x "
                f"| {cpu:.1f} | {shown} | {pct} |"
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--only", help="comma-separated rows (bare is always included)")
    parser.add_argument("--uvicorn", action="store_true", help="also measure under uvicorn")
    parser.add_argument("--seconds", type=float, default=1.0, help="per uvicorn sample")
    parser.add_argument("--uvicorn-rounds", type=int, default=5)
    parser.add_argument("--json")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port)
        return
    impls = list(ROWS)
    if args.only:
        impls = ["bare", *(i for i in args.only.split(",") if i != "bare")]
    if not _slowapi_available() and "slowapi" in impls:
        print("slowapi is not installed: its row is left out")
        impls.remove("slowapi")
    print(
        f"Python {platform.python_version()}, nproc={os.cpu_count()}, "
        f"load average {os.getloadavg()}"
    )
    out: dict[str, Any] = {"direct": report_direct(run_direct(impls, args.rounds))}
    if args.uvicorn:
        out["uvicorn"] = report_uvicorn(
            run_uvicorn(impls, args.uvicorn_rounds, args.seconds), impls
        )
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
