"""The lock-free fast paths switch off on a free-threaded build, or when forced.

``RESILIENT_FORCE_LOCKED=1`` makes a normal build take the paths a free-threaded build
takes (``sys._is_gil_enabled()`` false). The switch is read at import, so each case runs
in a fresh interpreter.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import textwrap

import pytest

from resilient._core._atomic import LOCKED, LockedCount, counted, new_counter

PROBE = textwrap.dedent(
    """
    import json, sys
    from resilient import CircuitBreaker, CountWindow
    from resilient._core._atomic import LOCKED
    from resilient._core._breaker import BreakerCore

    breaker = CircuitBreaker(window=CountWindow(2), minimum_calls=2, open_duration=60)
    success_path = BreakerCore.on_success.__name__
    for _ in range(2):
        try:
            breaker.call(lambda: 1 / 0)
        except ZeroDivisionError:
            pass
    for _ in range(3):
        try:
            breaker.call(print)
        except Exception:
            pass
    core = breaker._core
    print(json.dumps({
        "locked": LOCKED,
        "success_path": success_path,
        "total": breaker.metrics().total_not_permitted_calls,
        "gil": getattr(sys, "_is_gil_enabled", lambda: True)(),
    }))
    """
)


def _probe(force: str | None) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if k != "RESILIENT_FORCE_LOCKED"}
    if force is not None:
        env["RESILIENT_FORCE_LOCKED"] = force
    out = subprocess.run(  # noqa: S603 -- this interpreter, our own probe
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_forced_locked_paths() -> None:
    seen = _probe("1")
    assert seen["locked"] is True
    assert seen["success_path"] == "_on_success_locked"
    assert seen["total"] == 3


@pytest.mark.parametrize("force", [None, "0", ""])
def test_lock_free_paths_by_default_with_the_gil(force: str | None) -> None:
    seen = _probe(force)
    if not seen["gil"]:  # pragma: no cover - a free-threaded interpreter
        assert seen["locked"] is True
        return
    assert seen["locked"] is False
    assert seen["success_path"] == "on_success"
    assert seen["total"] == 3


COUNTERS = textwrap.dedent(
    """
    import json, threading
    from resilient import Bulkhead, Retry, Timeout
    from resilient._core._atomic import counted

    bulkhead, retry, timeout = Bulkhead(4), Retry(attempts=1), Timeout(5)
    counters = [bulkhead._core._released, retry._core.first_attempts, timeout._core.admitted]

    def draw() -> None:
        for _ in range(5_000):
            for counter in counters:
                next(counter)

    threads = [threading.Thread(target=draw) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(json.dumps({
        "kinds": [type(c).__name__ for c in counters],
        "counts": [counted(c) for c in counters],
    }))
    """
)


@pytest.mark.parametrize(("force", "kind"), [("1", "LockedCount"), (None, "count")])
def test_metric_counters_take_a_lock_on_the_locked_paths(force: str | None, kind: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "RESILIENT_FORCE_LOCKED"}
    if force is not None:
        env["RESILIENT_FORCE_LOCKED"] = force
    out = subprocess.run(  # noqa: S603 -- this interpreter, our own probe
        [sys.executable, "-c", COUNTERS], env=env, capture_output=True, text=True, check=True
    )
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    gil = getattr(sys, "_is_gil_enabled", lambda: True)()
    if gil:
        assert seen["kinds"] == [kind] * 3
    assert seen["counts"] == [40_000] * 3


def test_the_locked_counter_counts_as_itertools_count_does() -> None:
    counter = LockedCount()
    assert iter(counter) is counter
    assert [next(counter) for _ in range(3)] == [0, 1, 2]
    assert counted(counter) == 3
    assert repr(counter) == "count(3)"
    assert type(new_counter()) is (LockedCount if LOCKED else itertools.count)
