"""The fleet of test_redis_fleet.py: N processes hammering one shared limiter.

Run as ``python fleet_worker.py PORT NAMESPACE PROCESSES RATE BURST SECONDS``. This
process imports everything once and forks the fleet (cheap, and it has no threads to
lose). Each child opens its own connections, says it is ready, waits for the go signal
(a BLPOP, so all start together), calls as fast as it can for SECONDS, and reports
``admitted fallbacks errors``; the parent prints ``ready`` once all are, then one line
per child.
"""

from __future__ import annotations

import os
import sys
import time

import redis
from resilient import RateLimitedError, RateLimiter
from resilient.redis import RedisStore


def child(port: int, namespace: str, rate: float, burst: int, seconds: float, out: int) -> None:
    # A generous op_timeout: 32 processes on two cores must not fall back to local state,
    # which would make this a test of the fallback, not of the shared limit.
    store = RedisStore(redis.Redis(port=port), namespace=namespace, op_timeout=5.0)
    limiter = RateLimiter(rate, burst=burst, name="fleet", store=store)
    signal = redis.Redis(port=port)
    signal.ping()
    os.write(out, b"ready\n")
    signal.blpop([f"{namespace}:go"], timeout=120)
    admitted = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            limiter.call(int)
        except RateLimitedError:
            continue
        admitted += 1
    metrics = store.metrics()
    os.write(out, f"{admitted} {metrics.fallbacks} {metrics.errors}\n".encode())


def main() -> None:
    port, namespace, processes = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    rate, burst, seconds = float(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6])
    readers = []
    for _ in range(processes):
        read, write = os.pipe()
        if os.fork() == 0:
            os.close(read)
            try:
                child(port, namespace, rate, burst, seconds, write)
            finally:
                os._exit(0)
        os.close(write)
        readers.append(os.fdopen(read))
    for reader in readers:
        assert reader.readline().strip() == "ready"
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    for reader in readers:
        sys.stdout.write(reader.readline())
    for _ in readers:
        os.wait()


if __name__ == "__main__":
    main()
