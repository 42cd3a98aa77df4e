"""What a shared rate-limit decision costs, in round trips and nanoseconds, next to peers.

Usage::

    python benchmarks/redis_bench.py [--calls 5000] [--rounds 5] [--quick]

It starts its own ``redis-server`` (from PATH) on a free loopback port, with no
persistence, and measures in one run against it, per admitted call:

* a bare ``PING`` of a ``redis.Redis`` client (the floor: one round trip);
* resilient's ``RateLimiter(..., store=RedisStore(client))``, admitted (sync);
* ``limits`` with its Redis moving-window and sliding-window-counter strategies;
* ``throttled-py``'s GCRA on its Redis store;
* ``nopanic-redis``'s ``redis_rate_limit`` (a token bucket in one Lua script);

and, per call through a CLOSED circuit breaker:

* resilient's local ``CircuitBreaker`` (no store: the reference);
* resilient's ``CircuitBreaker(..., store=RedisStore(client))``, whose closed path is
  the local one (outcomes are flushed by a background thread: no round trip per call);
* pybreaker with ``CircuitRedisStorage`` (a few round trips per call);
* interlock-cb's ``CircuitBreaker`` with its ``RedisStorage`` (Python >= 3.11);
* nopanic-redis's ``redis_circuit_breaker``.

Peers are measured if they import, and skipped with a note otherwise (``pip install
limits throttled-py``). Round trips per call are counted by the server itself
(``total_reads_processed`` before and after: one read event per request sent alone;
``total_commands_processed`` would count the commands inside a script too). Each
round times every case once, in rotated order; the result is the median over rounds.
The targets from issue 15: resilient's decision is exactly one round trip and costs no
more than 1.3x a bare ``PING`` of the same client (the store's own connections); the
shared breaker's closed path costs no more than 1.5x the local breaker's. The
PASS or FAIL line is printed for reading, never enforced; ``--quick`` takes tiny
samples (a smoke test: every case is built and timed once).
"""

from __future__ import annotations

import argparse
import multiprocessing
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import redis
from resilient import CircuitBreaker, RateLimiter
from resilient.redis import RedisStore
from resilient.redis._wire import pack

HUGE = 1e9  # a rate no benchmark reaches: every call is admitted


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(port: int, workdir: str) -> subprocess.Popen[bytes]:
    server = shutil.which("redis-server")
    assert server is not None
    proc = subprocess.Popen(
        [
            server,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            workdir,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)
    client.close()
    return proc


def cases(port: int, *, quiet: bool = False) -> dict[str, Callable[[], object]]:
    url = f"redis://127.0.0.1:{port}/0"
    found: dict[str, Callable[[], object]] = {}
    ping_client = redis.Redis(port=port)
    found["PING, bare (reference)"] = ping_client.ping

    store = RedisStore(redis.Redis(port=port), namespace="bench", op_timeout=1.0)
    # The store's own connections have socket timeouts (its op_timeout), which cost a
    # poll() per read: its PING is the fair floor of its decisions.
    found["PING, the store's own client (reference)"] = store._client.ping
    # The floor under every client library: a PING packed once and sent on a connection
    # lent by the store's wire (what resilient's decisions travel on), no redis-py around it.
    wire = store._wire
    packed_ping = pack("PING")
    found["PING, raw on the store's wire (floor)"] = lambda: wire.call(packed_ping)
    limiter = RateLimiter(HUGE, name="api", store=store)
    found["resilient RateLimiter(store=RedisStore)"] = lambda: limiter.call(int)

    try:
        import limits  # noqa: PLC0415
        import limits.storage  # noqa: PLC0415
        import limits.strategies  # noqa: PLC0415
    except ImportError:
        if not quiet:
            print("limits: not installed, skipped (pip install limits)")
    else:
        storage = limits.storage.RedisStorage(url)
        item = limits.parse("1000000000/second")
        moving = limits.strategies.MovingWindowRateLimiter(storage)
        found["limits, Redis moving window"] = lambda: moving.hit(item, "moving")
        sliding_class = getattr(limits.strategies, "SlidingWindowCounterRateLimiter", None)
        if sliding_class is not None:
            sliding = sliding_class(storage)
            found["limits, Redis sliding window"] = lambda: sliding.hit(item, "sliding")

    try:
        import throttled  # noqa: PLC0415
    except ImportError:
        if not quiet:
            print("throttled-py: not installed, skipped (pip install throttled-py)")
    else:
        gcra = throttled.Throttled(
            key="gcra",
            using=throttled.RateLimiterType.GCRA.value,
            quota=throttled.rate_limiter.per_sec(10**9, burst=10**9),
            store=throttled.RedisStore(server=url),
        )
        found["throttled-py, Redis GCRA"] = lambda: gcra.limit("gcra")

    try:
        import nopanic_redis  # noqa: PLC0415
    except ImportError:
        if not quiet:
            print("nopanic-redis: not installed, skipped (pip install nopanic-redis)")
    else:
        quota = nopanic_redis.redis_rate_limit(
            redis.Redis(port=port), name="bench-quota", rate=10**9, per=1.0
        )
        found["nopanic-redis, redis_rate_limit"] = quota(ident)
    return found


def ident() -> int:
    return 0


def breaker_cases(port: int) -> dict[str, Callable[[], object]]:
    found: dict[str, Callable[[], object]] = {}
    found["resilient CircuitBreaker, local (reference)"] = CircuitBreaker()(ident)
    store = RedisStore(redis.Redis(port=port), namespace="bench", op_timeout=1.0)
    found["resilient CircuitBreaker(store=RedisStore)"] = CircuitBreaker("api", store=store)(ident)
    try:
        import pybreaker  # noqa: PLC0415
    except ImportError:
        print("pybreaker: not installed, skipped (pip install pybreaker)")
    else:
        storage = pybreaker.CircuitRedisStorage(
            pybreaker.STATE_CLOSED, redis.Redis(port=port), namespace="bench"
        )
        found["pybreaker, CircuitRedisStorage"] = pybreaker.CircuitBreaker(state_storage=storage)(
            ident
        )
    try:
        import interlock  # noqa: PLC0415 -- Python >= 3.11
        from interlock.integrations.redis import RedisStorage  # noqa: PLC0415
    except ImportError:
        print("interlock-cb: not installed, skipped (pip install 'interlock-cb[redis]')")
    else:
        storage = RedisStorage(redis.Redis(port=port))
        coordinated = interlock.CircuitBreaker(name="bench", storage=storage)
        found["interlock-cb, RedisStorage"] = coordinated(ident)
    try:
        import nopanic_redis  # noqa: PLC0415
    except ImportError:
        print("nopanic-redis: not installed, skipped (pip install nopanic-redis)")
    else:
        shared = nopanic_redis.redis_circuit_breaker(redis.Redis(port=port), name="bench-breaker")
        found["nopanic-redis, redis_circuit_breaker"] = shared(ident)
    return found


def commands(client: redis.Redis) -> int:
    # Read events, not commands: the commands a script runs count as commands, but the
    # script arrives in one read, as every request sent alone does.
    return int(client.info("stats")["total_reads_processed"])


def measure(
    found: dict[str, Callable[[], object]], probe: redis.Redis, calls: int, rounds: int
) -> dict[str, tuple[float, float]]:
    for fn in found.values():  # warm up: connections open, scripts loaded
        for _ in range(20):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in found}
    trips: dict[str, float] = {}
    names = list(found)
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            fn = found[name]
            before = commands(probe)
            start = time.perf_counter_ns()
            for _ in range(calls):
                fn()
            elapsed = time.perf_counter_ns() - start
            # The INFO call that reads the count is itself one command.
            trips[name] = (commands(probe) - before - 1) / calls
            samples[name].append(elapsed / calls)
    return {name: (statistics.median(samples[name]), trips[name]) for name in names}


LIMITERS = (
    "resilient RateLimiter(store=RedisStore)",
    "limits, Redis moving window",
    "limits, Redis sliding window",
    "throttled-py, Redis GCRA",
    "nopanic-redis, redis_rate_limit",
)


def _worker(port: int, name: str, seconds: float, go: Any, counts: Any, index: int) -> None:
    fn = cases(port, quiet=True)[name]
    for _ in range(20):
        fn()
    go.wait()
    done = 0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        for _ in range(20):
            fn()
        done += 20
    counts[index] = done


def throughput(port: int, processes: int, seconds: float) -> dict[str, float]:
    """Decisions per second of each limiter, with ``processes`` processes deciding at once."""
    context = multiprocessing.get_context("spawn")  # no inherited connections or threads
    available = [name for name in LIMITERS if name in cases(port, quiet=True)]
    found: dict[str, float] = {}
    for name in available:
        go = context.Barrier(processes + 1)
        counts = context.Array("q", processes)
        workers = [
            context.Process(target=_worker, args=(port, name, seconds, go, counts, i))
            for i in range(processes)
        ]
        for worker in workers:
            worker.start()
        go.wait()
        for worker in workers:
            worker.join()
        found[name] = sum(counts) / seconds
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--calls", type=int, default=5000, help="calls per sample")
    parser.add_argument("--rounds", type=int, default=5, help="samples per case")
    parser.add_argument("--quick", action="store_true", help="tiny samples: a smoke test")
    parser.add_argument(
        "--processes", default="1,4,16", help="process counts of the throughput table"
    )
    parser.add_argument(
        "--seconds", type=float, default=1.0, help="seconds of each throughput sample"
    )
    args = parser.parse_args()
    calls, rounds = (50, 1) if args.quick else (args.calls, args.rounds)
    fleet = [int(n) for n in args.processes.split(",")]
    seconds = 0.05 if args.quick else args.seconds
    if args.quick:
        fleet = fleet[:1]
    if shutil.which("redis-server") is None:
        print("redis_bench: needs redis-server on PATH (apt-get install redis-server)")
        return 0
    port = free_port()
    with tempfile.TemporaryDirectory() as workdir:
        server = start_server(port, workdir)
        try:
            probe = redis.Redis(port=port)
            results = measure(cases(port), probe, calls, rounds)
            breakers = measure(breaker_cases(port), probe, calls, rounds)
            probe.close()
            rates = {n: throughput(port, n, seconds) for n in fleet}
        finally:
            server.kill()
            server.wait()
    ping = results["PING, the store's own client (reference)"][0]
    print(f"{'case':45} {'ns/call':>10} {'x PING':>8} {'round trips':>12}")
    print("(x PING: against the PING of the store's own client, the same connections)")
    for name, (ns, trips) in results.items():
        print(f"{name:45} {ns:10,.0f} {ns / ping:8.2f} {trips:12.2f}")
    ours, our_trips = results["resilient RateLimiter(store=RedisStore)"]
    verdict = "PASS" if our_trips == 1 and ours <= 1.3 * ping else "FAIL"
    print(
        f"{verdict}: a shared decision is {our_trips:.2f} round trips and "
        f"{ours / ping:.2f}x a bare PING (target: 1 round trip, <= 1.3x)"
    )
    print()
    local = breakers["resilient CircuitBreaker, local (reference)"][0]
    print(f"{'CLOSED breaker, per call':45} {'ns/call':>10} {'x local':>8} {'round trips':>12}")
    for name, (ns, trips) in breakers.items():
        print(f"{name:45} {ns:10,.0f} {ns / local:8.2f} {trips:12.2f}")
    shared, shared_trips = breakers["resilient CircuitBreaker(store=RedisStore)"]
    verdict = "PASS" if shared <= 1.5 * local else "FAIL"
    print(
        f"{verdict}: the shared breaker's closed path is {shared / local:.2f}x the local one's"
        f" and {shared_trips:.4f} round trips per call (target: <= 1.5x, no round trip)"
    )
    print()
    print("Throughput: admitted decisions per second, all processes together, one server")
    print(f"{'limiter':45} " + " ".join(f"{f'{n} proc':>12}" for n in fleet))
    for name in rates[fleet[0]]:
        row = " ".join(f"{rates[n][name]:12,.0f}" for n in fleet)
        print(f"{name:45} {row}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
