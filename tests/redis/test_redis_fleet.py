"""32 processes on one shared limiter: never more admissions than GCRA allows.

The bound comes from the server's clock: with the limiter's key absent at ``t0`` (the
server's TIME just before the go signal) and every process finished by ``t1``, GCRA
admits at most ``burst + (t1 - t0) / interval`` calls, whatever the processes' clocks.
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from redis_servers import Server

WORKER = Path(__file__).with_name("fleet_worker.py")
NS = 1_000_000_000


def server_time_ns(client: object) -> int:
    seconds, micros = client.time()  # type: ignore[attr-defined]
    return int(seconds) * NS + int(micros) * 1000


def test_32_processes_never_admit_more_than_the_gcra_bound(redis_server: Server) -> None:
    processes, rate, burst, seconds = 32, 200.0, 10, 2.0
    namespace = "fleet"
    client = redis_server.client()
    fleet = subprocess.Popen(  # noqa: S603
        [
            sys.executable,
            str(WORKER),
            str(redis_server.port),
            namespace,
            str(processes),
            str(rate),
            str(burst),
            str(seconds),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert fleet.stdout is not None
        assert fleet.stdout.readline().strip() == "ready"
        t0 = server_time_ns(client)
        client.rpush(f"{namespace}:go", *["go"] * processes)
        output = fleet.communicate(timeout=120)[0]
        t1 = server_time_ns(client)
    finally:
        fleet.kill()
        client.close()
    assert fleet.returncode == 0
    counts = [tuple(map(int, line.split())) for line in output.splitlines()]
    assert len(counts) == processes
    assert [(f, e) for _, f, e in counts] == [(0, 0)] * processes  # every decision shared
    admitted = sum(a for a, _, _ in counts)
    interval = math.ceil(NS / rate)
    bound = burst + (t1 - t0) // interval
    assert admitted <= bound, (admitted, bound)  # 0 over-admissions
    print(f"fleet: {admitted} admitted, GCRA bound {bound}")  # noqa: T201
    # And the limiter was the limit, not the processes: most of the rate was used.
    assert admitted >= rate * seconds / 2
