"""A contended bulkhead's throughput next to the semaphore it replaces (``peers.py``, last).

* **Threads.** ``Bulkhead(1, max_wait=10)`` shared by 2 and 4 threads, next to
  ``threading.Semaphore(1)`` in a wrapper function (``with sem: return fn(x)``) and the
  bare call in as many threads. Every caller but one waits for the slot. A row with
  ``fair=True`` shows the trade that option makes (every freed slot handed to the
  longest waiter: the convoy described below); it has no target.
* **Tasks.** ``Bulkhead(100, max_wait=10)`` shared by 1,000 and 10,000 asyncio tasks, next
  to ``asyncio.Semaphore(100)`` (``async with sem: return await fn(x)``) and the bare call.
  Each call yields to the event loop once (``await asyncio.sleep(0)``, as an I/O call
  would), so the tasks really are in flight together, as in ``scale.py``.

The figure is time per call: ``calls`` calls of ``fn(1)`` split evenly among the threads
or tasks, divided into the time they all took (throughput, inverted): 100,000 calls for
the threads, 30,000 for the tasks. Rounds alternate the three rows in a rotated order;
each figure is the total time over the total calls of all rounds (the mean of the
samples), with the fastest and the slowest sample next to it. Both clocks are read over
the same interval: wall time, and the process's CPU time (all threads, user and system:
the futex calls and context switches of hand-offs count, the time a thread sleeps does
not). ``peers.py --cpu-time`` decides with CPU time (other processes on a shared machine
inflate wall time), otherwise with wall time.

With threads, the contention comes from the GIL's switch interval (5 ms): now and then a
thread is switched out while it holds the slot, and what follows depends on how the slot
is handed over. Once a bulkhead hands its freed slot to a sleeping waiter, each call
after that waits for a wake-up (a convoy, which can last until the sample ends). Whether
and when in a sample that starts is chance, so one row's samples range from the
uncontended cost to 50 times more: hence long samples, and the mean rather than the
median.

The ratio that the issue-16 targets read is the bulkhead's time per call over its
reference's, in the same run: <= 1.5x ``threading.Semaphore``, <= 1.2x
``asyncio.Semaphore``.
"""

from __future__ import annotations

import asyncio
import gc
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

from resilient import Bulkhead

THREAD_LEVELS = (2, 4)
TASK_LEVELS = (1_000, 10_000)
THREAD_LIMIT = 1.5
TASK_LIMIT = 1.2
BULKHEAD_THREADS = "Bulkhead(1, max_wait=10)"
# The trade fair=True makes (every freed slot handed to a waiter, never to a running
# caller): a row of its own, no target.
BULKHEAD_THREADS_FAIR = "Bulkhead(1, max_wait=10, fair=True)"
BULKHEAD_TASKS = "Bulkhead(100, max_wait=10)"
SEMAPHORE_THREADS = "threading.Semaphore(1) (reference)"
SEMAPHORE_TASKS = "asyncio.Semaphore(100) (reference)"


def ident(x: int) -> int:
    return x


async def ayield(x: int) -> int:
    await asyncio.sleep(0)
    return x


def thread_cases() -> dict[str, Callable[[int], Any]]:
    semaphore = threading.Semaphore(1)

    def with_semaphore(x: int) -> int:
        with semaphore:
            return ident(x)

    return {
        "bare": ident,
        BULKHEAD_THREADS: Bulkhead(1, max_wait=10.0)(ident),
        BULKHEAD_THREADS_FAIR: Bulkhead(1, max_wait=10.0, fair=True)(ident),
        SEMAPHORE_THREADS: with_semaphore,
    }


def task_cases() -> dict[str, Callable[[int], Any]]:
    semaphore = asyncio.Semaphore(100)

    async def with_semaphore(x: int) -> int:
        async with semaphore:
            return await ayield(x)

    return {
        "bare": ayield,
        BULKHEAD_TASKS: Bulkhead(100, max_wait=10.0)(ayield),
        SEMAPHORE_TASKS: with_semaphore,
    }


def run_threads(fn: Callable[[int], Any], threads: int, calls: int) -> tuple[float, float]:
    """(wall, CPU) ns per call: ``calls`` calls of ``fn(1)`` split among ``threads``."""
    each = calls // threads
    barrier = threading.Barrier(threads + 1)

    def work() -> None:
        barrier.wait()
        for _ in range(each):
            fn(1)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    barrier.wait()
    wall, cpu = time.perf_counter_ns(), time.process_time_ns()
    for worker in workers:
        worker.join()
    done = each * threads
    return (time.perf_counter_ns() - wall) / done, (time.process_time_ns() - cpu) / done


async def _gather(fn: Callable[[int], Any], tasks: int, calls: int) -> tuple[float, float]:
    each = max(1, calls // tasks)

    async def work() -> None:
        for _ in range(each):
            await fn(1)

    coroutines = [work() for _ in range(tasks)]
    wall, cpu = time.perf_counter_ns(), time.process_time_ns()
    await asyncio.gather(*coroutines)
    done = each * tasks
    return (time.perf_counter_ns() - wall) / done, (time.process_time_ns() - cpu) / done


def _levels(
    kind: str,
    levels: tuple[int, ...],
    make: Callable[[], dict[str, Callable[[int], Any]]],
    sample: Callable[[Callable[[int], Any], int], tuple[float, float]],
    rounds: int,
) -> list[dict[str, Any]]:
    rows = []
    for level in levels:
        cases = make()
        names = list(cases)
        walls: dict[str, list[float]] = {name: [] for name in names}
        cpus: dict[str, list[float]] = {name: [] for name in names}
        for name in names:  # warm-up: every case once
            sample(cases[name], level)
        for r in range(rounds):
            shift = r % len(names)
            for name in names[shift:] + names[:shift]:
                wall, cpu = sample(cases[name], level)
                walls[name].append(wall)
                cpus[name].append(cpu)
        rows.extend(
            {
                "kind": kind,
                "concurrency": level,
                "case": name,
                # Throughput over all rounds (every sample makes as many calls): a
                # contended bulkhead's samples are bimodal (see above), a median of a
                # few of them would pick a mode by chance.
                "wall_ns_per_call": statistics.fmean(walls[name]),
                "cpu_ns_per_call": statistics.fmean(cpus[name]),
                "wall_samples_ns": [round(w, 1) for w in walls[name]],
                "cpu_samples_ns": [round(c, 1) for c in cpus[name]],
            }
            for name in names
        )
    return rows


def measure(*, quick: bool, rounds: int, cpu_time: bool) -> list[dict[str, Any]]:
    """Every row of the section: threads, then tasks (garbage collector off, as timeit)."""
    thread_levels, task_levels = ((2,), (100,)) if quick else (THREAD_LEVELS, TASK_LEVELS)
    thread_calls, task_calls = (2_000, 2_000) if quick else (100_000, 30_000)
    gc_was_on = gc.isenabled()
    gc.disable()
    loop = asyncio.new_event_loop()
    try:
        rows = _levels(
            "threads",
            thread_levels,
            thread_cases,
            lambda fn, n: run_threads(fn, n, thread_calls),
            rounds,
        )
        rows += _levels(
            "asyncio tasks",
            task_levels,
            task_cases,
            lambda fn, n: loop.run_until_complete(_gather(fn, n, task_calls)),
            rounds,
        )
        for row in rows:
            row["clock"] = "cpu" if cpu_time else "wall"
    finally:
        loop.close()
        if gc_was_on:
            gc.enable()
    return rows


def print_rows(rows: list[dict[str, Any]]) -> None:
    clock = rows[0]["clock"] if rows else "wall"
    print(
        "| kind | concurrency | case | wall ns/call | CPU ns/call (all threads) "
        f"| {clock} ns/call, fastest-slowest sample | ratio to the reference ({clock} time) |"
    )
    print("|---|---:|---|---:|---:|---:|---:|")
    for row in rows:
        ratio = reference_ratio(rows, row)
        samples = row["cpu_samples_ns" if clock == "cpu" else "wall_samples_ns"]
        print(
            f"| {row['kind']} | {row['concurrency']:,} | {row['case']} "
            f"| {row['wall_ns_per_call']:,.0f} | {row['cpu_ns_per_call']:,.0f} "
            f"| {min(samples):,.0f}-{max(samples):,.0f} "
            f"| {'-' if ratio is None else f'{ratio:.2f}x'} |"
        )


def _ns(row: dict[str, Any]) -> float:
    """The row's time per call on the clock that decides."""
    return float(row["cpu_ns_per_call" if row["clock"] == "cpu" else "wall_ns_per_call"])


def reference_ratio(rows: list[dict[str, Any]], row: dict[str, Any]) -> float | None:
    """A bulkhead row's time per call over its semaphore's, at the same concurrency."""
    reference = {
        BULKHEAD_THREADS: SEMAPHORE_THREADS,
        BULKHEAD_THREADS_FAIR: SEMAPHORE_THREADS,
        BULKHEAD_TASKS: SEMAPHORE_TASKS,
    }.get(row["case"])
    ref = next(
        (r for r in rows if r["case"] == reference and r["concurrency"] == row["concurrency"]),
        None,
    )
    return None if ref is None else _ns(row) / _ns(ref)


def targets(rows: list[dict[str, Any]]) -> list[tuple[str, bool | None, str]]:
    """The issue-16 contended-bulkhead lines: one per concurrency level."""
    out: list[tuple[str, bool | None, str]] = []
    for case, limit, reference in (
        (BULKHEAD_THREADS, THREAD_LIMIT, "threading.Semaphore(1)"),
        (BULKHEAD_TASKS, TASK_LIMIT, "asyncio.Semaphore(100)"),
    ):
        for row in (r for r in rows if r["case"] == case):
            ratio = reference_ratio(rows, row)
            label = (
                f"issue 16: contended {case}, {row['concurrency']:,} {row['kind']}: "
                f"<= {limit}x {reference} ({row['clock']} time per call)"
            )
            if ratio is None:
                out.append((label, None, "skipped"))
                continue
            out.append(
                (
                    label,
                    ratio <= limit,
                    f"{ratio:.2f}x ({_ns(row):,.0f} ns against {_ns(row) / ratio:,.0f} ns)",
                )
            )
    return out
