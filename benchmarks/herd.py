"""A thundering herd: 1,000 concurrent identical requests against a slow dependency.

The dependency answers in ``--delay`` seconds (50 ms by default) and counts its calls.
A herd of ``--requests`` identical requests arrives at once, then a second herd right
after the first has been answered; each row runs both herds through one policy:

* ``none``: every request calls the dependency.
* ``Coalesce()``: requests in flight together share one call; the second herd,
  arriving after the first call ended, makes its own.
* ``Cache(ttl=60)``: the first herd misses all at once, so every request still calls
  the dependency (a cache alone does not stop a herd); the second herd hits.
* ``compose(Cache(ttl=60), Coalesce())``: one call in all.

Async requests are tasks (asyncio, through anyio); sync requests are threads, started
before the herd is released. Each row reports the dependency's calls, the wall time of
both herds (for threads, from the release: starting 1,000 threads takes longer than the
herd itself) and the process CPU time, thread starts included::

    .venv/bin/python benchmarks/herd.py            # 1,000 requests a herd
    .venv/bin/python benchmarks/herd.py --quick    # a smoke run: 100 requests, 5 ms
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import anyio

from resilient import Cache, Coalesce, compose


@dataclass
class Row:
    """One policy's figures for both herds."""

    world: str
    policy: str
    requests: int
    calls: int
    wall_ms: float
    cpu_ms: float


POLICIES: dict[str, Callable[[], Any]] = {
    "none": lambda: None,
    "Coalesce()": Coalesce,
    "Cache(ttl=60)": lambda: Cache(ttl=60),
    "compose(Cache(ttl=60), Coalesce())": lambda: compose(Cache(ttl=60), Coalesce()),
}


def run_async(policy: Any, requests: int, delay: float) -> tuple[int, float, float]:
    """Both herds as tasks; the dependency's calls, wall and CPU seconds."""
    calls = 0

    async def dependency(symbol: str) -> str:
        nonlocal calls
        calls += 1
        await anyio.sleep(delay)
        return f"{symbol}: 42"

    fetch = dependency if policy is None else policy(dependency)

    async def herd() -> None:
        async with anyio.create_task_group() as tg:
            for _ in range(requests):
                tg.start_soon(fetch, "ACME")

    async def both() -> None:
        await herd()
        await herd()

    wall, cpu = time.perf_counter(), time.process_time()
    anyio.run(both)
    return calls, time.perf_counter() - wall, time.process_time() - cpu


def run_sync(policy: Any, requests: int, delay: float) -> tuple[int, float, float]:
    """Both herds as threads, started first and released together by a barrier."""
    calls = 0
    lock = threading.Lock()

    def dependency(symbol: str) -> str:
        nonlocal calls
        with lock:
            calls += 1
        time.sleep(delay)
        return f"{symbol}: 42"

    fetch = dependency if policy is None else policy(dependency)

    def herd() -> float:
        barrier = threading.Barrier(requests + 1)

        def request() -> None:
            barrier.wait()
            fetch("ACME")

        threads = [threading.Thread(target=request) for _ in range(requests)]
        for thread in threads:
            thread.start()
        barrier.wait()
        began = time.perf_counter()
        for thread in threads:
            thread.join()
        return time.perf_counter() - began

    cpu = time.process_time()
    wall = herd() + herd()
    return calls, wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: 100 requests, 5 ms")
    parser.add_argument("--requests", type=int, default=None, help="requests a herd (1,000)")
    parser.add_argument("--delay", type=float, default=None, help="the dependency's seconds")
    parser.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    args = parser.parse_args()
    requests = args.requests or (100 if args.quick else 1000)
    delay = args.delay if args.delay is not None else (0.005 if args.quick else 0.05)

    rows = []
    for world, run in (("async", run_async), ("sync", run_sync)):
        for name, make in POLICIES.items():
            calls, wall, cpu = run(make(), requests, delay)
            rows.append(Row(world, name, 2 * requests, calls, wall * 1e3, cpu * 1e3))

    print(f"Two herds of {requests:,} identical requests; the dependency takes {delay * 1e3:g} ms.")
    print()
    print("| world | policy | requests | dependency calls | wall (ms) | CPU (ms) |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(
            f"| {r.world} | `{r.policy}` | {r.requests:,} | {r.calls:,} "
            f"| {r.wall_ms:,.0f} | {r.cpu_ms:,.0f} |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(r) for r in rows], indent=2), "utf-8")


if __name__ == "__main__":
    main()
