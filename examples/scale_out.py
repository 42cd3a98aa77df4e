"""Two worker processes sharing one rate limit and one circuit breaker through Redis.

Run it: ``python examples/scale_out.py`` (needs the redis extra, ``pip install -e
'.[redis]'``, and ``redis-server`` on PATH, e.g. ``apt-get install redis-server``; it
says so and exits if either is missing). It starts a throwaway ``redis-server`` on a
free port, then two worker processes, each with its own ``RateLimiter(20, burst=5,
name="partner-api", store=...)``, calling as fast as they can for one second. Alone,
each would admit about 25 calls; sharing the limit, the two *together* admit about 25.

Next, the two share a circuit breaker: worker 1's calls fail, worker 2's all succeed,
yet worker 2's breaker opens too, a fraction of a second later, without a single
failure of its own (the closed path makes no round trip: outcomes are flushed in the
background, and the transition is announced to every process).

Then it kills the server mid-run: the workers go on deciding locally, each with half
the limit (``local_share=2``), and no call fails because Redis did.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import tempfile
import time

try:
    import redis
    from resilient import (
        CircuitBreaker,
        CircuitOpenError,
        CountWindow,
        RateLimitedError,
        RateLimiter,
    )
    from resilient.redis import RedisStore
except ImportError:  # pragma: no cover - the example's own guard
    print("scale_out.py needs the redis client: pip install 'resilient-kit[redis]'")
    sys.exit(0)


def worker(port: int, seconds: float) -> None:
    """Call a shared limiter as fast as possible; print admitted, refused, fallbacks."""
    store = RedisStore(redis.Redis(port=port), namespace="example", local_share=2)
    limiter = RateLimiter(20, burst=5, name="partner-api", store=store)
    admitted = refused = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            limiter.call(int)
            admitted += 1
        except RateLimitedError:
            refused += 1
    print(admitted, refused, store.metrics().fallbacks, flush=True)


def breaker_worker(port: int, index: int) -> None:
    """Worker 1 calls a dependency that fails; worker 2 one that works. Both watch."""
    store = RedisStore(redis.Redis(port=port), namespace="example", flush_interval=0.05)
    breaker = CircuitBreaker(
        "partner-api", window=CountWindow(20), minimum_calls=10, open_duration=30, store=store
    )

    def partner_call() -> str:
        if index == 1:
            raise ConnectionError("partner-api is down")
        return "ok"

    calls, start = 0, time.monotonic()
    while time.monotonic() - start < 5:
        try:
            breaker.call(partner_call)
            calls += 1
        except ConnectionError:
            calls += 1
        except CircuitOpenError:
            break
        time.sleep(0.01)  # a worker serving requests, not a busy loop
    print(calls, f"{time.monotonic() - start:.2f}", breaker.state.value, flush=True)


def start_server(port: int, workdir: str) -> subprocess.Popen[bytes]:
    server = subprocess.Popen(  # noqa: S603
        [
            shutil.which("redis-server") or "redis-server",
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
    )
    probe = redis.Redis(port=port)
    for _ in range(500):
        try:
            probe.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.01)  # the server is starting
    probe.close()
    return server


def run_workers(port: int, seconds: float, then: object = None) -> list[list[int]]:
    workers = [
        subprocess.Popen(  # noqa: S603
            [sys.executable, __file__, "--worker", str(port), str(seconds)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    if callable(then):
        time.sleep(seconds / 3)
        then()
    return [list(map(int, w.communicate()[0].split())) for w in workers]


def main() -> None:
    if shutil.which("redis-server") is None:
        print("scale_out.py needs redis-server on PATH (e.g. apt-get install redis-server)")
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as workdir:
        server = start_server(port, workdir)
        try:
            print("1. two workers, one shared limit of 20/s (burst 5), for 1 s:")
            counts = run_workers(port, 1.0)
            for i, (admitted, refused, _) in enumerate(counts, 1):
                print(f"   worker {i}: {admitted} admitted, {refused} refused")
            print(f"   together: {sum(c[0] for c in counts)} admitted (the limit allows ~25)")

            print("2. two workers, one shared circuit breaker (minimum_calls=10):")
            workers = [
                subprocess.Popen(  # noqa: S603
                    [sys.executable, __file__, "--breaker-worker", str(port), str(i)],
                    stdout=subprocess.PIPE,
                    text=True,
                )
                for i in (1, 2)
            ]
            for i, w in enumerate(workers, 1):
                calls, seconds, state = w.communicate()[0].split()
                what = "failed" if i == 1 else "succeeded"
                print(f"   worker {i}: {calls} calls {what}, then {state} after {seconds}s")
            print("   (worker 2 never saw a failure: it heard of the OPEN through Redis)")

            print("3. the limiter again, with the Redis server killed a third of the way in:")
            counts = run_workers(port, 1.5, then=server.kill)
            for i, (admitted, refused, fallbacks) in enumerate(counts, 1):
                print(
                    f"   worker {i}: {admitted} admitted, {refused} refused, "
                    f"{fallbacks} decided locally (10/s each), no call failed"
                )
        finally:
            server.kill()
            server.wait()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        worker(int(sys.argv[2]), float(sys.argv[3]))
    elif sys.argv[1:2] == ["--breaker-worker"]:
        breaker_worker(int(sys.argv[2]), int(sys.argv[3]))
    else:
        main()
