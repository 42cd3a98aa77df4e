"""Real processes on one shared breaker: a storm opens it everywhere, trials are exact.

The fleet is forked by ``breaker_fleet_worker.py``; each child has its own store, its
own sync thread and its own connections, as separate workers would.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from redis_servers import Server

WORKER = Path(__file__).with_name("breaker_fleet_worker.py")
FLUSH, POLL = 0.05, 0.25
# Every process hears of a transition within flush_interval (pub/sub) or poll_interval;
# the rest of the bound is scheduling 16 processes on a CI machine's two cores.
BOUND = FLUSH + POLL + 1.5


def launch(server: Server, namespace: str, processes: int, scenario: str) -> subprocess.Popen[str]:
    return subprocess.Popen(  # noqa: S603
        [sys.executable, str(WORKER), str(server.port), namespace, str(processes), scenario],
        stdout=subprocess.PIPE,
        text=True,
    )


def test_16_processes_a_storm_opens_everywhere_and_exactly_3_trials_run(
    redis_server: Server,
) -> None:
    processes, namespace = 16, "breaker-storm"
    client = redis_server.client()
    fleet = launch(redis_server, namespace, processes, "storm")
    try:
        assert fleet.stdout is not None
        assert fleet.stdout.readline().startswith("ready")
        client.rpush(f"{namespace}:go", *["go"] * processes)
        output = fleet.communicate(timeout=120)[0]
    finally:
        fleet.kill()
        client.close()
    assert fleet.returncode == 0
    results = [line.split() for line in output.splitlines()]
    assert len(results) == processes
    seen = [float(r[0]) for r in results]
    assert all(0 <= s <= BOUND for s in seen), seen  # OPEN everywhere, within the bound
    assert sum(int(r[1]) for r in results) == 3  # exactly half_open_calls, fleet-wide
    assert {r[2] for r in results} == {"closed"}  # the three passed: closed everywhere
    assert {r[3] for r in results} == {"0"}  # every decision was shared
    print(f"storm: OPEN seen after at most {max(seen):.3f}s (bound {BOUND}s)")  # noqa: T201


def test_a_process_killed_holding_the_trial_lease_gives_it_back_after_its_ttl(
    redis_server: Server,
) -> None:
    processes, namespace = 4, "breaker-lease"
    client = redis_server.client(decode_responses=True)
    fleet = launch(redis_server, namespace, processes, "lease")
    try:
        assert fleet.stdout is not None
        pids = fleet.stdout.readline().split()[1:]
        client.rpush(f"{namespace}:go", *["go"] * processes)
        assert fleet.stdout.readline().strip() == "holding"
        assert client.zcard("{breaker-lease:fleet}:leases") == 1
        os.kill(int(pids[0]), signal.SIGKILL)
        client.rpush(f"{namespace}:go2", *["go"] * (processes - 1))
        output = fleet.communicate(timeout=60)[0]
    finally:
        fleet.kill()
        client.close()
    results = [line.split() for line in output.splitlines() if line.strip()]
    assert len(results) == processes - 1
    # The lease expired (0.5 s): one survivor got the trial again, and it closed the
    # breaker for all.
    assert sum(int(r[0]) for r in results) >= 1
    assert {r[1] for r in results} == {"closed"}
