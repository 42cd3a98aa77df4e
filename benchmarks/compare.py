"""Compare the per-call cost of resilient's policies with peers, in one process.

Usage::

    python benchmarks/compare.py [--rounds 25] [--sample-ms 10] [--gc] [--cpu-time]
                                 [--json PATH]

Every scenario is a guarded call of ``fn(1)`` next to the bare call it guards:

* circuit breakers: resilient and, when installed (``pip install -e '.[bench]'``),
  circuitbreaker and pybreaker, each with default options (a tripped breaker stays open
  for an hour, so it never half-opens during a run);
* retry, first attempt succeeds, 3 attempts: resilient ``Retry(3)``, tenacity
  (``@tenacity.retry(stop=stop_after_attempt(3))``, which runs ``AsyncRetrying`` on an
  ``async def``), stamina (``@stamina.retry(on=Exception, attempts=3)``) and backoff
  (``@backoff.on_exception(backoff.expo, Exception, max_tries=3)``);
* rate limiter, admitted: ``RateLimiter`` with a rate so high that every call passes;
* bulkhead, uncontended (asyncio): ``Bulkhead(10)``, next to an ``asyncio.Semaphore``;
* timeout (asyncio): ``Timeout(10)``, next to ``asyncio.timeout`` and ``anyio.fail_after``;
* compositions: ``compose(Fallback, CircuitBreaker, Timeout, Bulkhead)`` on asyncio and
  ``compose(Fallback, CircuitBreaker, Bulkhead)`` sync, each next to the same policies
  stacked as decorators.

Rows marked "(reference)" are not peers but the standard building block a policy uses
or replaces, in an ``async def`` wrapper (a decorator adds that frame too). Peers that
are not installed are skipped with a note.

Samples are timeit-style: a loop of ``number`` calls (calibrated to about
``--sample-ms`` each) with the garbage collector off unless ``--gc``.
Each round takes one sample of every case, in a rotated order, so the implementations
alternate and drift hits them alike; the result is the median over rounds, and the
overhead is the median of each round's difference to the bare call of that round.

Awaited calls are timed inside one running asyncio loop (the loop awaits ``fn(1)``
``number`` times between two clock reads), so the event loop's own cost is not counted.
Rejections are ``try: fn(1) except <the library's error>: pass``; their baseline is still
the bare call, and "bare raise" shows the floor of raising and catching one exception.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import inspect
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import timeit
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from itertools import repeat
from pathlib import Path
from typing import Any

from resilient import (
    Bulkhead,
    CircuitBreaker,
    CircuitOpenError,
    Fallback,
    RateLimiter,
    Retry,
    Timeout,
    compose,
)

OPEN_FOR = 3600.0
WARMUP = 1_000

SYNC_CLOSED = "sync call, CLOSED"
SYNC_OPEN = "sync call, OPEN (rejected)"
ASYNC_CLOSED = "awaited call (asyncio), CLOSED"
ASYNC_OPEN = "awaited call (asyncio), OPEN (rejected)"
RETRY_SYNC = "retry, sync call, first attempt succeeds"
RETRY_ASYNC = "retry, awaited (asyncio), first attempt succeeds"
RATE_SYNC = "rate limiter, sync call, admitted"
RATE_ASYNC = "rate limiter, awaited (asyncio), admitted"
BULKHEAD_ASYNC = "bulkhead, awaited (asyncio), uncontended"
TIMEOUT_ASYNC = "timeout, awaited (asyncio)"
COMPOSE3_SYNC = "compose(Fallback, CircuitBreaker, Bulkhead), sync call"
COMPOSE4_ASYNC = "compose(Fallback, CircuitBreaker, Timeout, Bulkhead), awaited (asyncio)"
ORDER = [
    SYNC_CLOSED,
    SYNC_OPEN,
    ASYNC_CLOSED,
    ASYNC_OPEN,
    RETRY_SYNC,
    RETRY_ASYNC,
    RATE_SYNC,
    RATE_ASYNC,
    BULKHEAD_ASYNC,
    TIMEOUT_ASYNC,
    COMPOSE3_SYNC,
    COMPOSE4_ASYNC,
]
POLICY_SCENARIOS = ORDER[4:]  # each with a bare row of its own, next to its cases
ASYNC_SCENARIOS = frozenset(
    (
        ASYNC_CLOSED,
        ASYNC_OPEN,
        RETRY_ASYNC,
        RATE_ASYNC,
        BULKHEAD_ASYNC,
        TIMEOUT_ASYNC,
        COMPOSE4_ASYNC,
    )
)
BASELINE = {
    SYNC_CLOSED: (SYNC_CLOSED, "bare"),
    SYNC_OPEN: (SYNC_CLOSED, "bare"),
    ASYNC_CLOSED: (ASYNC_CLOSED, "bare"),
    ASYNC_OPEN: (ASYNC_CLOSED, "bare"),
    **{scenario: (scenario, "bare") for scenario in POLICY_SCENARIOS},
}
REFERENCE = "resilient"
COMPOSED = "resilient compose()"
STACKED = "resilient, stacked decorators"
REFERENCE_OF = {COMPOSE3_SYNC: COMPOSED, COMPOSE4_ASYNC: COMPOSED}  # others: REFERENCE
LONG = 10.0  # seconds: a timeout that never fires during a run
HUGE_RATE = 1e9  # calls per second: every call is admitted


class BoomError(Exception):
    """The failure of the protected function."""


def ident(x: int) -> int:
    return x


async def aident(x: int) -> int:
    return x


def boom(x: int) -> int:
    raise BoomError


async def aboom(x: int) -> int:
    raise BoomError


@dataclass
class Case:
    scenario: str
    library: str
    fn: Any
    error: type[BaseException] | None = None  # the rejection to catch
    still_open: Any = None  # checked after the run: a tripped breaker must stay open
    verify: Callable[[], None] | None = None  # checked after the run: only fast paths ran
    number: int = 0
    samples: list[float] = field(default_factory=list)

    @property
    def is_async(self) -> bool:
        return self.scenario in ASYNC_SCENARIOS


# -- building the cases --------------------------------------------------------------


def _trip(fn: Any, error: type[BaseException], loop: asyncio.AbstractEventLoop) -> None:
    """Call the failing ``fn`` until its breaker rejects a call."""
    for _ in range(1_000):
        try:
            if inspect.iscoroutinefunction(fn):
                loop.run_until_complete(fn(1))
            else:
                fn(1)
        except error:
            return
        except BoomError:
            continue
    raise AssertionError(f"{fn!r} never opened")


def _resilient(loop: asyncio.AbstractEventLoop) -> list[Case]:
    cases = [
        Case(SYNC_CLOSED, "resilient", CircuitBreaker()(ident)),
        Case(ASYNC_CLOSED, "resilient", CircuitBreaker()(aident)),
    ]
    for scenario, failing in ((SYNC_OPEN, boom), (ASYNC_OPEN, aboom)):
        tripped = CircuitBreaker(open_duration=OPEN_FOR)
        fn = tripped(failing)
        _trip(fn, CircuitOpenError, loop)
        cases.append(
            Case(scenario, "resilient", fn, CircuitOpenError, lambda b=tripped: b.state.value)
        )
        forced = CircuitBreaker()
        forced.force_open()
        cases.append(
            Case(
                scenario,
                "resilient (forced_open)",
                forced(failing),
                CircuitOpenError,
                lambda b=forced: b.state.value,
            )
        )
    return cases


def _circuitbreaker(loop: asyncio.AbstractEventLoop) -> list[Case]:
    import circuitbreaker as cb  # noqa: PLC0415 -- an optional peer

    cases = [
        Case(SYNC_CLOSED, "circuitbreaker", cb.CircuitBreaker()(ident)),
        Case(ASYNC_CLOSED, "circuitbreaker", cb.CircuitBreaker()(aident)),
    ]
    for scenario, failing in ((SYNC_OPEN, boom), (ASYNC_OPEN, aboom)):
        breaker = cb.CircuitBreaker(recovery_timeout=OPEN_FOR)
        fn = breaker(failing)
        _trip(fn, cb.CircuitBreakerError, loop)
        cases.append(
            Case(scenario, "circuitbreaker", fn, cb.CircuitBreakerError, lambda b=breaker: b.state)
        )
    return cases


def _pybreaker(loop: asyncio.AbstractEventLoop) -> list[Case]:
    import pybreaker as pb  # noqa: PLC0415 -- an optional peer

    breaker = pb.CircuitBreaker(reset_timeout=OPEN_FOR)
    fn = breaker(boom)
    _trip(fn, pb.CircuitBreakerError, loop)
    return [
        Case(SYNC_CLOSED, "pybreaker", pb.CircuitBreaker()(ident)),
        Case(SYNC_OPEN, "pybreaker", fn, pb.CircuitBreakerError, lambda: breaker.current_state),
    ]


def _fallback_value(exc: BaseException | None) -> int:
    return -1


def _expect(metrics: Callable[[], Any], **expected: int) -> Callable[[], None]:
    """A check that ``metrics()`` has the ``expected`` values after the run."""

    def check() -> None:
        snapshot = metrics()
        for name, value in expected.items():
            assert getattr(snapshot, name) == value, (snapshot, name, value)

    return check


def _untouched(policies: list[Any]) -> Callable[[], None]:
    """A check that a composition only took fast paths: no fallback, trip, timeout, leak."""

    def check() -> None:
        for policy in policies:
            if isinstance(policy, Fallback):
                assert policy.used == 0, policy
            elif isinstance(policy, CircuitBreaker):
                assert policy.metrics().failed_calls == 0, policy
            elif isinstance(policy, Timeout):
                assert policy.metrics().timeouts == 0, policy
            elif isinstance(policy, Bulkhead):
                assert policy.metrics().in_flight == 0, policy

    return check


def _composition_cases(scenario: str, fn: Any, *, timeout: bool) -> list[Case]:
    """``fn`` under ``compose(Fallback, CircuitBreaker, [Timeout,] Bulkhead)``, and stacked."""
    cases = []
    for library in (COMPOSED, STACKED):
        policies: list[Any] = [Fallback(_fallback_value), CircuitBreaker()]
        if timeout:
            policies.append(Timeout(LONG))
        policies.append(Bulkhead(10))
        if library == COMPOSED:
            guarded = compose(*policies)(fn)
        else:
            guarded = fn
            for policy in reversed(policies):  # innermost first, as decorators apply
                guarded = policy(guarded)
        cases.append(Case(scenario, library, guarded, verify=_untouched(policies)))
    return cases


def _policies() -> list[Case]:
    """The bare call of every policy scenario, and resilient's guarded calls."""
    cases = [Case(s, "bare", aident if s in ASYNC_SCENARIOS else ident) for s in POLICY_SCENARIOS]
    for scenario, fn in ((RETRY_SYNC, ident), (RETRY_ASYNC, aident)):
        retry = Retry(3)
        cases.append(
            Case(scenario, "resilient", retry(fn), verify=_expect(retry.metrics, retries=0))
        )
    for scenario, fn in ((RATE_SYNC, ident), (RATE_ASYNC, aident)):
        limiter = RateLimiter(HUGE_RATE)
        cases.append(
            Case(scenario, "resilient", limiter(fn), verify=_expect(limiter.metrics, rejected=0))
        )
    bulkhead = Bulkhead(10)
    cases.append(
        Case(
            BULKHEAD_ASYNC,
            "resilient",
            bulkhead(aident),
            verify=_expect(bulkhead.metrics, in_flight=0, rejected=0),
        )
    )
    timeout = Timeout(LONG)
    cases.append(
        Case(
            TIMEOUT_ASYNC, "resilient", timeout(aident), verify=_expect(timeout.metrics, timeouts=0)
        )
    )
    cases += _composition_cases(COMPOSE3_SYNC, ident, timeout=False)
    cases += _composition_cases(COMPOSE4_ASYNC, aident, timeout=True)
    return cases


def _references() -> tuple[list[Case], list[str]]:
    """The building blocks next to the bulkhead and the timeout (not peers)."""
    import anyio  # noqa: PLC0415 -- a dependency of resilient, needed here only

    notes = []
    semaphore = asyncio.Semaphore(10)

    async def with_semaphore(x: int) -> int:
        async with semaphore:
            return await aident(x)

    async def with_fail_after(x: int) -> int:
        with anyio.fail_after(LONG):
            return await aident(x)

    cases = [
        Case(BULKHEAD_ASYNC, "asyncio.Semaphore (reference)", with_semaphore),
        Case(TIMEOUT_ASYNC, "anyio.fail_after (reference)", with_fail_after),
    ]
    if hasattr(asyncio, "timeout"):

        async def with_timeout(x: int) -> int:
            async with asyncio.timeout(LONG):
                return await aident(x)

        cases.insert(1, Case(TIMEOUT_ASYNC, "asyncio.timeout (reference)", with_timeout))
    else:
        notes.append("asyncio.timeout needs Python 3.11: its reference row is left out.")
    return cases, notes


def _tenacity(loop: asyncio.AbstractEventLoop) -> list[Case]:
    import tenacity  # noqa: PLC0415 -- a peer (and a dependency of resilient)

    def retry() -> Any:
        return tenacity.retry(stop=tenacity.stop_after_attempt(3))

    # On an async def, the decorator runs AsyncRetrying.
    return [
        Case(RETRY_SYNC, "tenacity", retry()(ident)),
        Case(RETRY_ASYNC, "tenacity", retry()(aident)),
    ]


def _stamina(loop: asyncio.AbstractEventLoop) -> list[Case]:
    import stamina  # noqa: PLC0415 -- an optional peer

    def retry() -> Any:
        return stamina.retry(on=Exception, attempts=3)

    return [
        Case(RETRY_SYNC, "stamina", retry()(ident)),
        Case(RETRY_ASYNC, "stamina", retry()(aident)),
    ]


def _backoff(loop: asyncio.AbstractEventLoop) -> list[Case]:
    import backoff  # noqa: PLC0415 -- an optional peer

    def retry() -> Any:
        return backoff.on_exception(backoff.expo, Exception, max_tries=3)

    return [
        Case(RETRY_SYNC, "backoff", retry()(ident)),
        Case(RETRY_ASYNC, "backoff", retry()(aident)),
    ]


def pybreaker_async_check(loop: asyncio.AbstractEventLoop) -> str:
    """Whether pybreaker's decorator guards an ``async def`` (it does not; say how)."""
    import pybreaker as pb  # noqa: PLC0415 -- an optional peer

    breaker = pb.CircuitBreaker(fail_max=1)
    fn = breaker(aboom)
    raised = None
    try:
        loop.run_until_complete(fn(1))
    except BoomError as exc:
        raised = type(exc).__name__
    except pb.CircuitBreakerError as exc:
        raised = type(exc).__name__
    outcome = (
        f"awaiting a decorated async def that raises gave {raised} and left "
        f"fail_counter={breaker.fail_counter}, state={breaker.current_state!r} (fail_max=1)"
    )
    if breaker.fail_counter > 0 or breaker.current_state != "closed":
        return f"pybreaker {metadata.version('pybreaker')} guards async def: {outcome}."
    kind = "a coroutine function" if inspect.iscoroutinefunction(fn) else "a plain function"
    return (
        f"pybreaker {metadata.version('pybreaker')} does NOT guard async def: {outcome}. "
        f"Its wrapper is {kind} that calls the coroutine function under the breaker, which "
        "only creates the coroutine, and records a success; the coroutine runs later, "
        "outside the breaker. (Its only async API, CircuitBreaker.call_async, is built on "
        f"Tornado's gen.coroutine; Tornado is {'' if pb.HAS_TORNADO_SUPPORT else 'not '}"
        "installed here.) Its async rows are left out."
    )


# -- timing --------------------------------------------------------------------------


async def _await_loop(fn: Any, number: int, clock: Callable[[], int]) -> int:
    start = clock()
    for _ in repeat(None, number):
        await fn(1)
    return clock() - start


async def _await_rejected_loop(
    fn: Any, error: type[BaseException], number: int, clock: Callable[[], int]
) -> int:
    start = clock()
    for _ in repeat(None, number):
        try:  # noqa: SIM105 -- contextlib.suppress would add its own cost to each call
            await fn(1)
        except error:
            pass
    return clock() - start


class Runner:
    def __init__(self, loop: asyncio.AbstractEventLoop, *, keep_gc: bool, cpu_time: bool) -> None:
        self.loop = loop
        self.keep_gc = keep_gc
        # Wall time by default, as timeit; the thread's CPU time leaves out the time other
        # processes hold the CPU, which helps on a shared machine.
        self.timer = time.thread_time if cpu_time else time.perf_counter
        self.timer_ns = time.thread_time_ns if cpu_time else time.perf_counter_ns

    def seconds(self, case: Case, number: int) -> float:
        """One sample: ``number`` calls of ``case``, in seconds."""
        if case.is_async:
            gc_was_on = gc.isenabled()
            if not self.keep_gc:
                gc.disable()
            try:
                if case.error is None:
                    coro = _await_loop(case.fn, number, self.timer_ns)
                else:
                    coro = _await_rejected_loop(case.fn, case.error, number, self.timer_ns)
                ns = self.loop.run_until_complete(coro)
            finally:
                if gc_was_on:
                    gc.enable()
            return float(ns) / 1e9
        setup = "gc.enable()" if self.keep_gc else "pass"
        stmt = "fn(1)" if case.error is None else "try:\n    fn(1)\nexcept error:\n    pass"
        names = {"fn": case.fn, "error": case.error, "gc": gc}
        return timeit.Timer(stmt, setup, timer=self.timer, globals=names).timeit(number)

    def calibrate(self, case: Case, target: float) -> int:
        """A call count whose sample takes about ``target`` seconds."""
        number = 100
        while True:
            took = self.seconds(case, number)
            if took >= target / 5 or number >= 10**8:
                return max(100, int(number * target / took))
            number *= 10


def check_case(case: Case, loop: asyncio.AbstractEventLoop) -> None:
    """Fail loudly if a case does not do what its row claims."""
    if case.error is None:
        result = loop.run_until_complete(case.fn(1)) if case.is_async else case.fn(1)
        assert result == 1, (case.library, result)
        return
    try:
        if case.is_async:
            loop.run_until_complete(case.fn(1))
        else:
            case.fn(1)
    except case.error:
        return
    raise AssertionError(f"{case.library} did not reject in {case.scenario}")


def measure(cases: list[Case], runner: Runner, rounds: int, sample: float) -> None:
    for case in cases:
        check_case(case, runner.loop)
        runner.seconds(case, WARMUP)
        case.number = runner.calibrate(case, sample)
    for r in range(rounds):
        shift = r % len(cases)
        for case in cases[shift:] + cases[:shift]:
            case.samples.append(runner.seconds(case, case.number) / case.number * 1e9)
    for case in cases:
        if case.still_open is not None:
            state = case.still_open()
            assert state in {"open", "forced_open"}, (case.library, state)
        if case.verify is not None:
            case.verify()


# -- report --------------------------------------------------------------------------


def _find(cases: list[Case], scenario: str, library: str) -> Case | None:
    return next((c for c in cases if c.scenario == scenario and c.library == library), None)


def summarize(cases: list[Case]) -> list[dict[str, Any]]:
    rows = []
    for case in cases:
        base = _find(cases, *BASELINE[case.scenario])
        assert base is not None
        overhead = statistics.median(a - b for a, b in zip(case.samples, base.samples, strict=True))
        q = statistics.quantiles(case.samples, n=4) if len(case.samples) > 1 else [0, 0, 0]
        rows.append(
            {
                "scenario": case.scenario,
                "library": case.library,
                "ns_per_call": statistics.median(case.samples),
                "ns_min": min(case.samples),
                "ns_iqr": q[2] - q[0],
                "overhead_ns": None if case is base else overhead,
                "overhead_ns_at_min": None
                if case is base
                else min(case.samples) - min(base.samples),
                "calls_per_sample": case.number,
                "samples_ns": [round(s, 2) for s in case.samples],
            }
        )
    for row in rows:
        reference = REFERENCE_OF.get(row["scenario"], REFERENCE)
        ref = next(
            (r for r in rows if r["scenario"] == row["scenario"] and r["library"] == reference),
            None,
        )
        ratio = None
        bare = row["library"].startswith("bare")
        if not bare and row["overhead_ns"] is not None and ref is not None and ref["overhead_ns"]:
            ratio = row["overhead_ns"] / ref["overhead_ns"]
        row["ratio_to_resilient"] = ratio
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    print(
        "| scenario | library | ns/call median | IQR | overhead vs bare call, ns "
        "| overhead (fastest samples), ns | overhead ratio to resilient (compose: to compose) |"
    )
    print("|---|---|---:|---:|---:|---:|---:|")

    def ns(value: float | None) -> str:
        return "-" if value is None else f"{value:.0f}"

    for row in rows:
        ratio = "-" if row["ratio_to_resilient"] is None else f"{row['ratio_to_resilient']:.2f}x"
        print(
            f"| {row['scenario']} | {row['library']} | {ns(row['ns_per_call'])} "
            f"| {ns(row['ns_iqr'])} | {ns(row['overhead_ns'])} "
            f"| {ns(row['overhead_ns_at_min'])} | {ratio} |"
        )


def targets(rows: list[dict[str, Any]]) -> list[tuple[str, bool | None, str]]:
    def get(scenario: str, library: str) -> dict[str, Any] | None:
        return next(
            (r for r in rows if r["scenario"] == scenario and r["library"] == library), None
        )

    out: list[tuple[str, bool | None, str]] = []
    res = get(SYNC_CLOSED, "resilient")
    assert res is not None
    out.append(
        (
            "CLOSED sync overhead < 450 ns",
            res["overhead_ns"] < 450,
            f"{res['overhead_ns']:.0f} ns",
        )
    )
    peer = get(SYNC_CLOSED, "circuitbreaker")
    if peer is None:
        out.append(("CLOSED sync overhead >= 2x lower than circuitbreaker's", None, "skipped"))
    else:
        ratio = peer["overhead_ns"] / res["overhead_ns"]
        out.append(
            (
                "CLOSED sync overhead >= 2x lower than circuitbreaker's",
                ratio >= 2,
                f"circuitbreaker {peer['overhead_ns']:.0f} ns = {ratio:.2f}x",
            )
        )
    res_async = get(ASYNC_CLOSED, "resilient")
    assert res_async is not None
    out.append(
        (
            "CLOSED async overhead < 530 ns",
            res_async["overhead_ns"] < 530,
            f"{res_async['overhead_ns']:.0f} ns",
        )
    )
    for scenario in (SYNC_OPEN, ASYNC_OPEN):
        mine = get(scenario, "resilient")
        theirs = get(scenario, "circuitbreaker")
        label = f"{scenario}: cheaper than circuitbreaker's"
        if mine is None or theirs is None:
            out.append((label, None, "skipped"))
        else:
            out.append(
                (
                    label,
                    mine["ns_per_call"] < theirs["ns_per_call"],
                    (
                        f"resilient {mine['ns_per_call']:.0f} ns, "
                        f"circuitbreaker {theirs['ns_per_call']:.0f} ns"
                    ),
                )
            )

    def others(scenario: str, libraries: tuple[str, ...]) -> str:
        found = [(lib, get(scenario, lib)) for lib in libraries]
        return "; ".join(
            f"{lib} {row['overhead_ns']:.0f} ns" if row else f"{lib} not measured"
            for lib, row in found
        )

    def under(label: str, scenario: str, limit: float, *, library: str = REFERENCE) -> None:
        row = get(scenario, library)
        if row is None:
            out.append((label, None, "skipped"))
            return
        out.append((label, row["overhead_ns"] < limit, f"{row['overhead_ns']:.0f} ns"))

    peers = ("tenacity", "stamina", "backoff")
    for scenario, limit in ((RETRY_SYNC, 1_000), (RETRY_ASYNC, 1_500)):
        under(f"{scenario}: overhead < {limit:,} ns", scenario, limit)
        out[-1] = (*out[-1][:2], f"{out[-1][2]} (peers: {others(scenario, peers)})")
    under(f"{RATE_SYNC}: overhead < 500 ns", RATE_SYNC, 500)
    under(f"{BULKHEAD_ASYNC}: overhead < 400 ns", BULKHEAD_ASYNC, 400)
    out[-1] = (
        *out[-1][:2],
        f"{out[-1][2]} ({others(BULKHEAD_ASYNC, ('asyncio.Semaphore (reference)',))})",
    )
    under(f"{TIMEOUT_ASYNC}: overhead < 2,000 ns", TIMEOUT_ASYNC, 2_000)
    refs = ("asyncio.timeout (reference)", "anyio.fail_after (reference)")
    out[-1] = (*out[-1][:2], f"{out[-1][2]} ({others(TIMEOUT_ASYNC, refs)})")
    under(f"{COMPOSE4_ASYNC}: overhead < 3,000 ns", COMPOSE4_ASYNC, 3_000, library=COMPOSED)
    for scenario in (COMPOSE4_ASYNC, COMPOSE3_SYNC):
        composed, stacked = get(scenario, COMPOSED), get(scenario, STACKED)
        label = f"{scenario}: compose() cheaper than stacked decorators"
        if composed is None or stacked is None:
            out.append((label, None, "skipped"))
            continue
        out.append(
            (
                label,
                composed["overhead_ns"] < stacked["overhead_ns"],
                (
                    f"compose {composed['overhead_ns']:.0f} ns, "
                    f"stacked {stacked['overhead_ns']:.0f} ns"
                ),
            )
        )
    return out


def source() -> str:
    """The commit of the measured checkout, and whether ``src/`` differs from it."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "src"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return f"{commit}{' with uncommitted changes in src/' if dirty else ''}"


def machine() -> dict[str, Any]:
    cpu = "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = {}
    for dist in (
        "resilient-kit",
        "circuitbreaker",
        "pybreaker",
        "tenacity",
        "stamina",
        "backoff",
        "anyio",
    ):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    return {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpu": cpu,
        "nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "versions": versions,
        "source": source(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=25, help="samples per case (median)")
    parser.add_argument("--sample-ms", type=float, default=10.0, help="length of a sample")
    parser.add_argument("--gc", action="store_true", help="keep the garbage collector on")
    parser.add_argument(
        "--cpu-time",
        action="store_true",
        help="time with the thread's CPU time instead of wall time (for a busy machine)",
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write results here")
    args = parser.parse_args(argv)

    info = machine()
    print(
        f"Python {info['python']} ({info['implementation']}), {info['cpu']}, "
        f"nproc={info['nproc']}, load average {info['loadavg']}"
    )
    print(
        "versions:", ", ".join(f"{k} {v or 'not installed'}" for k, v in info["versions"].items())
    )
    print(f"source: {info['source']}")

    loop = asyncio.new_event_loop()
    notes: list[str] = []
    installed: set[str] = set()
    try:
        cases = [
            Case(SYNC_CLOSED, "bare", ident),
            Case(SYNC_OPEN, "bare raise", boom, BoomError),
            Case(ASYNC_CLOSED, "bare", aident),
            Case(ASYNC_OPEN, "bare raise", aboom, BoomError),
            *_resilient(loop),
            *_policies(),
        ]
        references, reference_notes = _references()
        cases += references
        notes += reference_notes
        peers = (
            ("circuitbreaker", _circuitbreaker),
            ("pybreaker", _pybreaker),
            ("tenacity", _tenacity),
            ("stamina", _stamina),
            ("backoff", _backoff),
        )
        for name, build in peers:
            try:
                with warnings.catch_warnings():
                    # circuitbreaker and backoff call asyncio.iscoroutinefunction
                    # (deprecated in 3.14).
                    warnings.simplefilter("ignore", DeprecationWarning)
                    cases += build(loop)
                installed.add(name)
            except ImportError:
                notes.append(f"{name} is not installed: skipped (pip install -e '.[bench]').")
        if "pybreaker" in installed:
            notes.append(pybreaker_async_check(loop))
        cases.sort(key=lambda c: ORDER.index(c.scenario))  # stable: bare first in each
        measure(
            cases,
            Runner(loop, keep_gc=args.gc, cpu_time=args.cpu_time),
            args.rounds,
            args.sample_ms / 1e3,
        )
    finally:
        loop.close()

    rows = summarize(cases)
    info["loadavg_after"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    print(
        f"\n{args.rounds} rounds, samples of ~{args.sample_ms:g} ms, "
        f"gc {'on' if args.gc else 'off'}, {'CPU' if args.cpu_time else 'wall'} time\n"
    )
    print_table(rows)
    print()
    checks = targets(rows)
    for label, ok, detail in checks:
        verdict = "skip" if ok is None else ("PASS" if ok else "FAIL")
        print(f"[{verdict}] {label}: {detail}")
    for note in notes:
        print(f"\nnote: {note}")
    if args.json is not None:
        payload = {
            "machine": info,
            "settings": {
                "rounds": args.rounds,
                "sample_ms": args.sample_ms,
                "gc": args.gc,
                "cpu_time": args.cpu_time,
            },
            "results": rows,
            "targets": [{"target": t, "ok": ok, "detail": d} for t, ok, d in checks],
            "notes": notes,
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
