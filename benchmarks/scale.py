"""How resilient's overhead scales: with the number of breakers, and with concurrency.

Usage::

    python benchmarks/scale.py [--quick] [--json PATH]

1. **Breakers.** 1, 1,000, 10,000 and 100,000 named breakers, each a ``CircuitBreaker`` with a
   ``CountWindow(100)``, created in a ``resilient.Registry``. Memory per breaker is
   measured with ``tracemalloc`` (everything allocated while the registry is filled,
   divided by the count: the breaker, its windows, its name, the registry's entry); then
   again after every breaker has taken 100 calls, enough to fill its window. The time
   per call is taken with the calls rotating over all the breakers (each decorating its
   own function), next to a bare call rotating over as many distinct functions, so the
   difference is what a breaker costs when its state is no longer in the CPU caches.
   The bytes of one breaker are then broken down by attribute: every object reachable
   from it and from no other breaker, with ``sys.getsizeof``.
2. **Threads.** 1 to 64 threads share one breaker, one bulkhead with room for all (64
   slots) and one bulkhead with a single slot and a 10 s wait (every caller queues).
   The calls (``fn(1)``, which returns at once) are split evenly among the threads; the
   figure is wall time over calls, next to the bare call in the same threads.
3. **Tasks.** 1 to 10,000 asyncio tasks share one breaker, one bulkhead with room for
   all and one bulkhead with 100 slots and a 10 s wait. Each call yields to the event
   loop once (``await asyncio.sleep(0)``, as an I/O call would), so the tasks really are
   in flight together; the figure is wall time over calls, next to the bare call.

Every figure is the median of ``--repeat`` runs, taken alternately with its bare
baseline. ``--cpu-time`` times the breakers with the thread's CPU time (for a shared
machine; the threads and tasks stay on wall time). The issue-16 line "flat within 1.3x"
compares the overhead at each count with that at one breaker, and the same for the
*floor*: the cheapest stateful wrapper there is (a closure that counts into an object of
its own), rotated the same way, which shows how much of the growth is CPython's.
``--quick`` stops at 1,000 breakers, 4 threads and 100 tasks (a smoke test);
``--breakers-only`` runs part 1 alone.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import inspect
import itertools
import json
import statistics
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from peers import ROOT, aident, ident, machine
from resilient import Bulkhead, CircuitBreaker, CountWindow, Registry

DEFAULT_JSON = ROOT / "benchmarks" / "scale.json"
WINDOW = 100
TARGET_BYTES = 2048
FLAT_LIMIT = 1.3  # issue 16: the overhead at 100,000 breakers within 1.3x of one breaker's


# -- 1. many breakers ----------------------------------------------------------------


def fill(n: int) -> Registry:
    registry = Registry()
    for i in range(n):
        registry.circuit_breaker(f"breaker-{i}", window=CountWindow(WINDOW))
    return registry


def guarded_functions(registry: Registry, n: int) -> list[Callable[[int], int]]:
    """Each breaker's own decorated function (a distinct function object per breaker)."""
    return [registry.circuit_breaker(f"breaker-{i}")(_own_ident()) for i in range(n)]


class _FloorState:
    """The least state a guard can keep: a call counter and a success count."""

    __slots__ = ("calls", "ok")

    def __init__(self) -> None:
        self.calls = itertools.count()
        self.ok = 0


def _floor_wrapper(fn: Callable[[int], int]) -> Callable[[int], int]:
    """The floor: the cheapest stateful wrapper, a closure counting into its own object.

    No lock, no window, no checks: what any per-breaker guard must at least do (reach
    its own state through its own function object, and write to it). Rotated over as
    many instances as the breakers, it shows how much of the growth with the count is
    CPython's (cache misses on objects it lays out) rather than the breaker's.
    """
    state = _FloorState()

    def floor(x: int) -> int:
        next(state.calls)
        result = fn(x)
        state.ok += 1
        return result

    return floor


def _own_ident() -> Callable[[int], int]:
    def own(x: int) -> int:
        return x

    return own


def traced_bytes(action: Callable[[], Any]) -> tuple[int, Any]:
    """The bytes ``action()`` leaves allocated (``tracemalloc``), and its result."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        result = action()
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - before, result
    finally:
        tracemalloc.stop()


CLOCK = [time.perf_counter_ns]  # --cpu-time: the thread's CPU time instead


def rotate(functions: list[Callable[[int], int]], passes: int) -> float:
    """ns per call, calling every function in turn ``passes`` times."""
    clock = CLOCK[0]
    start = clock()
    for _ in range(passes):
        for fn in functions:
            fn(1)
    return (clock() - start) / (passes * len(functions))


def flat_within(rows: list[dict[str, Any]]) -> tuple[bool, str]:
    """Issue 16: the CLOSED overhead at every count within FLAT_LIMIT of that at 1 breaker."""
    first = rows[0]["overhead_ns"]
    worst = max(rows, key=lambda r: r["overhead_ns"])
    ratio = worst["overhead_ns"] / first
    detail = ", ".join(f"{r['breakers']:,}: {r['overhead_ns']:,.0f} ns" for r in rows)
    return ratio <= FLAT_LIMIT, f"{ratio:.2f}x at {worst['breakers']:,} ({detail})"


def many_breakers(counts: Iterable[int], repeat: int) -> list[dict[str, Any]]:
    rows = []
    for n in counts:
        created, registry = traced_bytes(lambda n=n: fill(n))
        functions = guarded_functions(registry, n)
        bare = [_own_ident() for _ in range(n)]
        floors = [_floor_wrapper(_own_ident()) for _ in range(n)]

        def use(functions: list[Callable[[int], int]] = functions) -> None:
            rotate(functions, WINDOW + 1)  # every window full: the steady state

        # Calls after the first WINDOW allocate nothing that stays, so tracing the
        # warm-up of the first 1,000 breakers is enough to see what calling adds.
        sample = min(n, 1_000)
        used, _ = traced_bytes(lambda f=functions[:sample]: rotate(f, WINDOW + 1))
        use()
        passes = max(1, 200_000 // n)
        guarded_ns, bare_ns, floor_ns = [], [], []
        gc.disable()
        try:
            for _ in range(repeat):
                bare_ns.append(rotate(bare, passes))
                guarded_ns.append(rotate(functions, passes))
                floor_ns.append(rotate(floors, passes))
        finally:
            gc.enable()
        overhead = statistics.median(g - b for g, b in zip(guarded_ns, bare_ns, strict=True))
        floor = statistics.median(f - b for f, b in zip(floor_ns, bare_ns, strict=True))
        rows.append(
            {
                "breakers": n,
                "bytes_per_breaker_created": round(created / n),
                "bytes_per_breaker_after_calls": round((created + used) / n)
                if sample == n
                else round(created / n + used / sample),
                "ns_per_call": round(statistics.median(guarded_ns), 1),
                "bare_ns_per_call": round(statistics.median(bare_ns), 1),
                "overhead_ns": round(overhead, 1),
                "floor_overhead_ns": round(floor, 1),
            }
        )
        del registry, functions, bare, floors
        gc.collect()
    return rows


def _reachable(root: Any, stop: dict[int, Any] | None = None) -> dict[int, Any]:
    """The objects reachable from ``root`` (by id), not walking into ``stop`` nor code."""
    stop = stop or {}
    seen: dict[int, Any] = {}
    todo = [root]
    while todo:
        obj = todo.pop()
        if id(obj) in seen or id(obj) in stop or _is_shared_kind(obj):
            continue
        seen[id(obj)] = obj
        todo.extend(gc.get_referents(obj))
    return seen


def _is_shared_kind(obj: Any) -> bool:
    """Objects that belong to the program, not to one breaker: classes, modules, code."""
    return isinstance(obj, type | type(sys) | type(ident.__code__)) or (
        inspect.isfunction(obj) and obj.__closure__ is None
    )


def _attributes(obj: Any) -> list[tuple[str, Any]]:
    names: list[str] = []
    for cls in type(obj).__mro__:
        names += [s for s in getattr(cls, "__slots__", ()) if s not in names]
    items = [(name, getattr(obj, name)) for name in names if hasattr(obj, name)]
    return items + list(getattr(obj, "__dict__", {}).items())


def breakdown() -> list[dict[str, Any]]:
    """Where one breaker's bytes go: each attribute's own objects, by ``sys.getsizeof``.

    Lists the breaker object, its step and its core, then each attribute of the core,
    the step and the breaker with every object reachable from it and from no other
    breaker (so shared singletons, classes, functions and the clock are left out). An
    object reachable from two attributes is counted under the first. The breaker has
    taken ``WINDOW + 1`` calls, so its window is full.
    """
    breaker = CircuitBreaker("breaker-0", window=CountWindow(WINDOW))
    other = CircuitBreaker("breaker-1", window=CountWindow(WINDOW))
    # Both take the same calls, so objects their windows share (a ring full of
    # successes is one bytes object for every window of its size) count as shared.
    for fn in (breaker(_own_ident()), other(_own_ident())):
        for _ in range(WINDOW + 1):
            fn(1)
    shared = _reachable(other)
    counted: dict[int, Any] = {}
    rows = []

    def add(path: str, obj: Any, *, alone: bool = False) -> None:
        if alone:
            objects = {} if id(obj) in counted else {id(obj): obj}
        else:
            objects = _reachable(obj, {**counted, **shared})
        counted.update(objects)
        size = sum(sys.getsizeof(o) for o in objects.values())
        if size:
            kinds = ", ".join(sorted({type(o).__name__ for o in objects.values()}))
            rows.append({"attribute": path, "bytes": size, "objects": kinds})

    step = breaker._step
    core = step._core
    add("the CircuitBreaker object", breaker, alone=True)
    add("._step (the object)", step, alone=True)
    add("._step._core (the BreakerCore object)", core, alone=True)
    for owner, prefix in ((core, "._step._core."), (step, "._step."), (breaker, ".")):
        for name, value in _attributes(owner):
            add(prefix + name, value)
    return rows


# -- 2. threads ----------------------------------------------------------------------


def run_threads(fn: Callable[[int], Any], threads: int, calls: int) -> float:
    """ns per call: ``calls`` calls of ``fn(1)`` split among ``threads`` threads."""
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
    start = time.perf_counter_ns()
    for worker in workers:
        worker.join()
    return (time.perf_counter_ns() - start) / (each * threads)


def thread_cases() -> dict[str, Callable[[int], Any]]:
    return {
        "bare": ident,
        "CircuitBreaker": _warm(CircuitBreaker()(ident)),
        "Bulkhead(64)": Bulkhead(64)(ident),
        "Bulkhead(1, max_wait=10)": Bulkhead(1, max_wait=10.0)(ident),
    }


def _warm(fn: Callable[[int], Any]) -> Callable[[int], Any]:
    for _ in range(WINDOW + 1):
        fn(1)
    return fn


# -- 3. tasks ------------------------------------------------------------------------


async def ayield(x: int) -> int:
    await asyncio.sleep(0)
    return x


async def _run_tasks(fn: Callable[[int], Any], tasks: int, calls: int) -> float:
    each = max(1, calls // tasks)

    async def work() -> None:
        for _ in range(each):
            await fn(1)

    start = time.perf_counter_ns()
    await asyncio.gather(*(work() for _ in range(tasks)))
    return (time.perf_counter_ns() - start) / (each * tasks)


def task_cases() -> dict[str, Callable[[int], Any]]:
    breaker = CircuitBreaker()
    asyncio.run(_drive(breaker(aident), WINDOW + 1))
    return {
        "bare": ayield,
        "CircuitBreaker": breaker(ayield),
        "Bulkhead(10000)": Bulkhead(10_000)(ayield),
        "Bulkhead(100, max_wait=10)": Bulkhead(100, max_wait=10.0)(ayield),
    }


async def _drive(fn: Callable[[int], Any], calls: int) -> None:
    for _ in range(calls):
        await fn(1)


def concurrency(
    levels: Iterable[int],
    cases: dict[str, Callable[[int], Any]],
    measure: Callable[[Callable[[int], Any], int], float],
    repeat: int,
) -> list[dict[str, Any]]:
    """Per level and case: median ns per call and overhead, alternating with the bare call."""
    rows = []
    for level in levels:
        samples: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(repeat):
            for name, fn in cases.items():
                samples[name].append(measure(fn, level))
        bare = samples["bare"]
        for name, values in samples.items():
            overhead = statistics.median(v - b for v, b in zip(values, bare, strict=True))
            rows.append(
                {
                    "concurrency": level,
                    "case": name,
                    "ns_per_call": round(statistics.median(values), 1),
                    "overhead_ns": None if name == "bare" else round(overhead, 1),
                }
            )
    return rows


# -- report --------------------------------------------------------------------------


def table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    print("| " + " | ".join(columns) + " |")
    print("|" + "---:|" * len(columns))
    for row in rows:
        cells = [row[c] for c in columns]
        print(
            "| "
            + " | ".join(
                "-" if c is None else f"{c:,}" if isinstance(c, int | float) else str(c)
                for c in cells
            )
            + " |"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke test")
    parser.add_argument("--repeat", type=int, default=5, help="runs per figure (median)")
    parser.add_argument(
        "--cpu-time",
        action="store_true",
        help="time the breakers with the thread's CPU time instead of wall time (busy machine)",
    )
    parser.add_argument(
        "--breakers-only", action="store_true", help="measure the many breakers only (part 1)"
    )
    parser.add_argument(
        "--json", type=Path, metavar="PATH", help=f"write the results here (default {DEFAULT_JSON})"
    )
    args = parser.parse_args(argv)
    if args.quick:
        counts, thread_levels, task_levels, calls, repeat = (1, 1_000), (1, 4), (1, 100), 2_000, 1
    else:
        counts = (1, 1_000, 10_000, 100_000)
        thread_levels = (1, 2, 4, 8, 16, 32, 64)
        task_levels = (1, 10, 100, 1_000, 10_000)
        calls, repeat = 100_000, args.repeat
        args.json = args.json or DEFAULT_JSON
    if args.cpu_time:
        CLOCK[0] = time.thread_time_ns
    info = machine()
    print(f"Python {info['python']}, {info['cpu']}, nproc={info['nproc']}, source {info['source']}")
    started = time.perf_counter()

    print(f"\n## Breakers in a Registry, each with a CountWindow({WINDOW})\n")
    breakers = many_breakers(counts, repeat)
    table(breakers, list(breakers[0]))
    parts = breakdown()
    total = sum(p["bytes"] for p in parts)
    print(f"\nOne breaker, by attribute (sys.getsizeof of its own objects): {total:,} bytes\n")
    table(parts, ["attribute", "bytes", "objects"])
    per_breaker = breakers[-1]["bytes_per_breaker_after_calls"]
    verdict = "PASS" if per_breaker < TARGET_BYTES else "FAIL"
    print(f"\n[{verdict}] memory per breaker < {TARGET_BYTES:,} bytes: {per_breaker:,} bytes")
    flat, detail = flat_within(breakers)
    print(
        f"[{'PASS' if flat else 'FAIL'}] issue 16: CLOSED overhead flat within {FLAT_LIMIT}x "
        f"from 1 to {breakers[-1]['breakers']:,} breakers ({'CPU' if args.cpu_time else 'wall'} "
        f"time): {detail}"
    )
    floor_rows = [{**r, "overhead_ns": r["floor_overhead_ns"]} for r in breakers]
    print(
        "       the floor (the cheapest stateful wrapper, same rotation): "
        f"{flat_within(floor_rows)[1]}"
    )

    threads: list[dict[str, Any]] = []
    tasks: list[dict[str, Any]] = []
    if not args.breakers_only:
        print(f"\n## Threads sharing one policy ({calls:,} calls in all, split evenly)\n")
        threads = concurrency(
            thread_levels, thread_cases(), lambda fn, n: run_threads(fn, n, calls), repeat
        )
        table(threads, list(threads[0]))
        print(f"\n## asyncio tasks sharing one policy ({calls:,} calls in all, each yields once)\n")
        loop = asyncio.new_event_loop()
        try:
            tasks = concurrency(
                task_levels,
                task_cases(),
                lambda fn, n: loop.run_until_complete(_run_tasks(fn, n, calls)),
                repeat,
            )
        finally:
            loop.close()
        table(tasks, list(tasks[0]))
    info["seconds"] = round(time.perf_counter() - started, 1)
    print(f"\n{info['seconds']:g} s")
    if args.json is not None:
        payload = {
            "machine": info,
            "settings": {
                "repeat": repeat,
                "calls": calls,
                "window": WINDOW,
                "cpu_time": args.cpu_time,
            },
            "breakers": breakers,
            "breakdown": parts,
            "threads": threads,
            "tasks": tasks,
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
