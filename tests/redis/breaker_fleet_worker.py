"""The fleets of test_redis_breaker_fleet.py: N processes on one shared breaker.

Run as ``python breaker_fleet_worker.py PORT NAMESPACE PROCESSES SCENARIO``. This process
imports everything once and forks the fleet (it has no threads to lose; each child's
store starts its own sync thread). Each child says ``ready PID``, waits for the go
signal (a BLPOP, so all start together), plays its part and prints one result line.

Scenarios:

``storm``: each child fails 5 calls (fewer than minimum_calls=20: no child opens on its
own), then waits until it sees OPEN; once the shared open_duration has passed it keeps
calling a 1 s trial until it sees CLOSED. Prints ``seconds-to-see-OPEN trials state
store-errors``.

``lease``: child 0 trips the breaker and, once it is half-open, takes the one trial and
hangs in it (the test SIGKILLs it); the others wait for a second signal, then call
until they see CLOSED. Prints ``trials state``.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time

import redis
from resilient import CircuitBreaker, CircuitOpenError, CircuitState, CountWindow
from resilient.redis import RedisStore

FLUSH, POLL = 0.05, 0.25


class BoomError(Exception):
    pass


def boom() -> None:
    raise BoomError


def wait_for(breaker: CircuitBreaker, state: CircuitState, seconds: float = 15.0) -> bool:
    deadline = time.monotonic() + seconds
    while breaker.state is not state:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.002)  # a worker watching its breaker, as a serving process would
    return True


def storm(breaker: CircuitBreaker, store: RedisStore, out: int) -> None:
    for _ in range(5):
        with contextlib.suppress(BoomError, CircuitOpenError):
            breaker.call(boom)
    failed_at = time.monotonic()
    opened = wait_for(breaker, CircuitState.OPEN)
    seen = time.monotonic() - failed_at if opened else -1.0

    def trial() -> bool:
        # A trial is a call that holds a lease the record granted (one call at a time
        # here). The local state is no witness: a process that has not yet heard of the
        # fleet's close may still read HALF_OPEN while its call runs as a closed one.
        was_trial = bool(breaker._core._leases)
        time.sleep(1.0)
        return was_trial

    trials = 0
    deadline = time.monotonic() + 15
    while breaker.state is not CircuitState.CLOSED and time.monotonic() < deadline:
        try:
            trials += breaker.call(trial)
        except CircuitOpenError:
            time.sleep(0.01)
    metrics = store.metrics()
    os.write(out, f"{seen:.3f} {trials} {breaker.state.value} {metrics.errors}\n".encode())


def lease(
    breaker: CircuitBreaker, index: int, signal: redis.Redis, namespace: str, out: int
) -> None:
    if index == 0:
        for _ in range(20):
            with contextlib.suppress(BoomError, CircuitOpenError):
                breaker.call(boom)

        def hang() -> None:
            os.write(out, b"holding\n")
            time.sleep(3600)  # killed here, holding the fleet's one trial

        while True:
            try:
                breaker.call(hang)
            except CircuitOpenError:
                time.sleep(0.01)
    signal.blpop([f"{namespace}:go2"], timeout=60)
    trials = 0
    deadline = time.monotonic() + 15
    while breaker.state is not CircuitState.CLOSED and time.monotonic() < deadline:
        try:
            breaker.call(int)
            trials += 1
        except CircuitOpenError:
            time.sleep(0.01)
    os.write(out, f"{trials} {breaker.state.value}\n".encode())


def child(port: int, namespace: str, scenario: str, index: int, out: int) -> None:
    store = RedisStore(
        redis.Redis(port=port),
        namespace=namespace,
        op_timeout=2.0,  # 16 processes on two cores: no fallback to local state
        flush_interval=FLUSH,
        poll_interval=POLL,
        lease_ttl=0.5 if scenario == "lease" else 10.0,
    )
    breaker = CircuitBreaker(
        "fleet",
        window=CountWindow(50),
        minimum_calls=20,
        open_duration=0.4,
        half_open_calls=3 if scenario == "storm" else 1,
        store=store,
    )
    signal = redis.Redis(port=port)
    signal.ping()
    os.write(out, f"ready {os.getpid()}\n".encode())
    signal.blpop([f"{namespace}:go"], timeout=120)
    if scenario == "storm":
        storm(breaker, store, out)
    else:
        lease(breaker, index, signal, namespace, out)


def main() -> None:
    port, namespace, processes = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    scenario = sys.argv[4]
    readers = []
    for index in range(processes):
        read, write = os.pipe()
        if os.fork() == 0:
            os.close(read)
            try:
                child(port, namespace, scenario, index, write)
            finally:
                os._exit(0)
        os.close(write)
        readers.append(os.fdopen(read))
    pids = []
    for reader in readers:
        word, pid = reader.readline().split()
        assert word == "ready"
        pids.append(pid)
    sys.stdout.write("ready " + " ".join(pids) + "\n")
    sys.stdout.flush()
    for reader in readers:
        line = reader.readline()
        if scenario == "lease" and line.strip() == "holding":
            sys.stdout.write(line)
            sys.stdout.flush()
            line = reader.readline()  # empty once the holder is killed
        sys.stdout.write(line)
        sys.stdout.flush()
    for _ in readers:
        os.wait()


if __name__ == "__main__":
    main()
