"""What the HTTP clients' transports cost per request, against the bare clients.

Two settings, each measured for httpx (sync ``httpx.Client``) and requests:

* **in memory**: the client sends to a stand-in that answers at once
  (``httpx.MockTransport``, a requests adapter building a response), so the figure is
  the transport's own overhead, undiluted by the network;
* **local server**: a real uvicorn server on 127.0.0.1 (a raw ASGI app answering
  ``ok``), keep-alive connections, so the figure is what a user sees.

Rows: the bare client; ``ResilienceTransport``/``ResilienceAdapter`` with one
``CircuitBreaker``; with ``compose(Retry, CircuitBreaker)``; with a per-host factory of
the same. Each figure is the best over rounds of the mean time per request (as
``timeit`` reports: on a shared machine, slower rounds measure the other load), rounds
alternating between rows so that a busy machine slows all alike. Run from the dev
environment:

    .venv/bin/python benchmarks/http_clients.py           # 21 rounds of 1,000 (in memory)
    .venv/bin/python benchmarks/http_clients.py --quick   # a smoke run, a few requests

Nothing is asserted about time.
"""

from __future__ import annotations

import argparse
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import requests
import uvicorn
from requests.adapters import BaseAdapter

from resilient import CircuitBreaker, Registry, Retry, compose
from resilient.httpx import ResilienceTransport
from resilient.requests import ResilienceAdapter


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}
    )
    await send({"type": "http.response.body", "body": b"ok"})


@contextmanager
def server() -> Iterator[str]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted connections inherit it: without, the response's body (a second small write)
    # waits for the client's delayed ACK, 40 ms a request on Linux.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    config = uvicorn.Config(app, log_level="warning", lifespan="off", ws="none", http="h11")
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        uv.should_exit = True
        thread.join(timeout=10)
        sock.close()


class Canned(BaseAdapter):
    """A requests adapter that answers 200 at once (the in-memory setting)."""

    def send(self, request: Any, **options: Any) -> requests.Response:
        response = requests.Response()
        response.status_code = 200
        response._content = b"ok"  # a canned body, already read
        response.url, response.request = request.url, request
        return response

    def close(self) -> None:
        pass


def policies() -> dict[str, Callable[[], Any]]:
    def breaker() -> Any:
        return CircuitBreaker("bench")

    def both() -> Any:
        return compose(Retry(3), CircuitBreaker("bench"))

    def per_host() -> Any:
        return lambda name: compose(Retry(3, name=name), CircuitBreaker(name))

    return {"CircuitBreaker": breaker, "Retry + CircuitBreaker": both, "per-host factory": per_host}


def httpx_clients(url: str | None) -> dict[str, httpx.Client]:
    def inner() -> httpx.BaseTransport:
        if url is None:
            return httpx.MockTransport(lambda _request: httpx.Response(200, text="ok"))
        return httpx.HTTPTransport()

    base = url or "http://bench.local"
    clients = {"bare httpx": httpx.Client(transport=inner(), base_url=base)}
    for label, make in policies().items():
        transport = ResilienceTransport(make(), wrapped=inner(), registry=Registry())
        clients[f"httpx + {label}"] = httpx.Client(transport=transport, base_url=base)
    return clients


def requests_sessions(url: str | None) -> dict[str, Callable[[], Any]]:
    base = url or "http://bench.local"

    def session(adapter: BaseAdapter) -> Callable[[], Any]:
        s = requests.Session()
        s.mount("http://", adapter)
        return lambda: s.get(f"{base}/")

    def inner() -> BaseAdapter:
        return Canned() if url is None else requests.adapters.HTTPAdapter()

    rows = {"bare requests": session(inner())}
    for label, make in policies().items():
        adapter = ResilienceAdapter(make(), wrapped=inner(), registry=Registry())
        rows[f"requests + {label}"] = session(adapter)
    return rows


def measure(rows: dict[str, Callable[[], Any]], n: int, rounds: int) -> dict[str, float]:
    for call in rows.values():  # warm up: connections, caches, per-host policies
        for _ in range(min(n, 50)):
            call()
    samples: dict[str, list[float]] = {label: [] for label in rows}
    for _ in range(rounds):
        for label, call in rows.items():
            start = time.perf_counter()
            for _ in range(n):
                call()
            samples[label].append((time.perf_counter() - start) / n)
    return {label: min(values) for label, values in samples.items()}


def report(title: str, figures: dict[str, float], bare: str) -> None:
    print(f"\n{title}")
    print(f"{'':40} {'per request':>12} {'overhead':>10}")
    for label, seconds in figures.items():
        extra = "" if label == bare else f"{(seconds - figures[bare]) * 1e6:+9.1f}µs"
        print(f"{label:40} {seconds * 1e6:10.1f}µs {extra:>10}")


def run(n: int, rounds: int, n_server: int) -> None:
    for setting, url_maker in (("in memory", None), ("local uvicorn server", server)):
        if url_maker is None:
            url, count = None, n
            ctx: Any = None
        else:
            ctx = url_maker()
            url, count = ctx.__enter__(), n_server
        try:
            clients = httpx_clients(url)
            rows = {label: (lambda c=c: c.get("/")) for label, c in clients.items()}
            report(f"httpx, {setting}", measure(rows, count, rounds), "bare httpx")
            report(
                f"requests, {setting}",
                measure(requests_sessions(url), count, rounds),
                "bare requests",
            )
            for client in clients.values():
                client.close()
        finally:
            if ctx is not None:
                ctx.__exit__(None, None, None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: a few requests")
    args = parser.parse_args()
    if args.quick:
        run(n=20, rounds=1, n_server=5)
    else:
        run(n=1_000, rounds=21, n_server=200)


if __name__ == "__main__":
    main()
