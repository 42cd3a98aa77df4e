"""The adaptive limiter in a simulation: where it settles, what it serves, how it recovers.

Usage::

    python benchmarks/adaptive.py [--quick] [--seed N] [--json PATH] [--chart PATH]

A simulated dependency with ``servers`` workers (the *knee*: beyond that many calls in
flight, calls queue) and exponential service times; calls arrive open-loop (Poisson,
faster than the dependency can serve them: an overload); a caller gives up after
``timeout`` (the dependency still works on the abandoned call, as real ones do). The
limiters under test are the real ``AdaptiveLimiter``/``Bulkhead`` objects, driven
through their steps at the simulated times of a ``ManualClock``: everything runs in
virtual time, seeded, so a run takes seconds and reproduces exactly.

Three experiments:

1. **Convergence.** Each algorithm starting below the knee and far above it: the limit
   over time. **1b.** From above as a service meets it: the limit starts at 250 while
   the load grows from nothing past the knee over the first 20 s (180 s runs).
2. **Goodput and p99** (calls answered within the timeout per second; latency of those)
   of each algorithm against fixed bulkheads of several sizes.
3. **Recovery.** The knee halves at one third of the run and comes back at two thirds;
   the limit over time, and the goodput in each third.

The chart goes to ``docs/img/adaptive.png`` with ``--chart``.
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import random
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from resilient import (
    AIMD,
    AdaptiveLimiter,
    Bulkhead,
    BulkheadFullError,
    Gradient2,
    TimeoutExceededError,
    Vegas,
)
from resilient._policies._pipeline import Wait
from resilient.testing import ManualClock

SERVICE = 0.030  # mean service time of one call, seconds
SERVERS = 30  # the knee: the dependency serves this many calls at once
RATE = 1200.0  # arrivals per second: 1.2 times what the dependency can serve
TIMEOUT = 1.0  # the caller gives up after this long


@dataclass
class Run:
    """What one simulated run produced."""

    name: str
    duration: float
    served: int = 0  # answered within the timeout
    timed_out: int = 0
    rejected: int = 0
    latencies: list[float] = field(default_factory=list)
    trace: list[tuple[float, int]] = field(default_factory=list)  # (time, limit)
    served_at: list[float] = field(default_factory=list)

    def goodput(self, start: float = 0.0, end: float | None = None) -> float:
        end = self.duration if end is None else end
        return sum(1 for t in self.served_at if start <= t < end) / (end - start)

    def p99(self, start: float = 0.0, end: float | None = None) -> float:
        end = self.duration if end is None else end
        ordered = sorted(
            latency
            for t, latency in zip(self.served_at, self.latencies, strict=True)
            if start <= t < end
        )
        if not ordered:
            return math.nan
        return ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)]


class Limiter:
    """The policy under test, driven through its step (enter, then an exit)."""

    def __init__(self, policy: Any) -> None:
        self.policy = policy
        self.step = policy._sync_step()

    def enter(self) -> Any:
        token = self.step.enter()  # raises BulkheadFullError when full, or asks to wait
        if isinstance(token, Wait):
            token = self.step.enter_wait(token)  # max_wait 0: raises BulkheadFullError
        return token

    def ok(self, token: Any) -> None:
        self.step.exit_ok(token, None)

    def timed_out(self, token: Any) -> None:
        self.step.exit_error(token, TimeoutExceededError("timed out", seconds=TIMEOUT))

    def limit(self) -> int:
        limit = getattr(self.policy, "limit", None)
        return int(limit if limit is not None else self.policy.max_concurrent)


def simulate(
    name: str,
    make: Callable[[ManualClock], Any],
    *,
    duration: float,
    seed: int,
    servers: Callable[[float], int] = lambda _t: SERVERS,
    rate: Callable[[float], float] = lambda _t: RATE,
) -> Run:
    """One run: Poisson arrivals into ``make(clock)`` in front of the simulated dependency.

    ``rate(t)`` is the arrival rate at ``t`` (each gap drawn at the rate of its start).
    """
    rng = random.Random(seed)
    clock = ManualClock()
    limiter = Limiter(make(clock))
    run = Run(name, duration)
    events: list[tuple[float, int, str, Any]] = []
    order = 0

    def push(t: float, kind: str, data: Any = None) -> None:
        nonlocal order
        order += 1
        heapq.heappush(events, (t, order, kind, data))

    busy = 0
    queue: list[Any] = []  # requests waiting for a worker, FIFO (a list used as a deque)
    head = 0

    def start_service(t: float, request: dict[str, Any]) -> None:
        nonlocal busy
        busy += 1
        push(t + rng.expovariate(1.0 / SERVICE), "done", request)

    push(rng.expovariate(rate(0.0)), "arrive")
    push(0.0, "trace")
    while events:
        t, _, kind, data = heapq.heappop(events)
        if t > duration:
            break
        clock.advance(t - clock.monotonic())
        if kind == "arrive":
            push(t + rng.expovariate(rate(t)), "arrive")
            try:
                token = limiter.enter()
            except BulkheadFullError:
                run.rejected += 1
                continue
            request = {"sent": t, "token": token, "over": False}
            push(t + TIMEOUT, "timeout", request)
            if busy < servers(t):
                start_service(t, request)
            else:
                queue.append(request)
        elif kind == "done":
            busy -= 1
            if not data["over"]:
                data["over"] = True
                limiter.ok(data["token"])
                run.served += 1
                run.latencies.append(t - data["sent"])
                run.served_at.append(t)
            while head < len(queue) and busy < servers(t):
                start_service(t, queue[head])
                head += 1
        elif kind == "timeout":
            if not data["over"]:
                data["over"] = True
                limiter.timed_out(data["token"])
                run.timed_out += 1
        else:  # trace
            run.trace.append((t, limiter.limit()))
            push(t + 0.25, "trace")
            # A capacity that came back lets queued calls start.
            while head < len(queue) and busy < servers(t):
                start_service(t, queue[head])
                head += 1
    return run


ALGORITHMS: dict[str, Callable[[int], Any]] = {
    "Gradient2": lambda initial: Gradient2(initial_limit=initial, min_limit=1, max_limit=300),
    "Vegas": lambda initial: Vegas(initial_limit=initial, max_limit=300),
    # AIMD sees latency only through drops: a round trip over 0.1 s counts as one.
    "AIMD": lambda initial: AIMD(initial_limit=initial, max_limit=300, timeout=0.1),
}


WINDOW = 1.0  # the limiter's window_duration (--window)
RAMP = 20.0  # experiment 1b: arrivals grow from nothing to RATE over this many seconds


def ramping(t: float) -> float:
    """Experiment 1b's arrival rate: a service starting up, its load growing past the knee."""
    return max(20.0, RATE * min(1.0, t / RAMP))


def adaptive(algorithm: Any, seed: int) -> Callable[[ManualClock], Any]:
    return lambda clock: AdaptiveLimiter(
        algorithm,
        clock=clock,
        random=random.Random(seed),
        name=type(algorithm).__name__,
        window_duration=WINDOW,
    )


class _ReferenceVegas:
    """aioadaptive's ``VegasLimiter`` (a pure ``update(rtt) -> limit``) as a limiter to drive.

    It counts permits against the limit its reference computes after every call (it
    takes no windows, no in-flight count and no drops: a timed-out call reports the
    timeout as its RTT).
    """

    def __init__(self, clock: ManualClock, initial: int) -> None:
        from aioadaptive.limiter import VegasLimiter  # noqa: PLC0415 -- optional

        self._clock = clock
        self._vegas = VegasLimiter(limit=initial, limit_max=300)
        self.limit = initial
        self.in_flight = 0

    def _sync_step(self) -> _ReferenceVegas:
        return self

    def enter(self) -> float:
        if self.in_flight >= self.limit:
            raise BulkheadFullError("full")
        self.in_flight += 1
        return self._clock.monotonic()

    def exit_ok(self, start: float, _result: object) -> None:
        self.in_flight -= 1
        self.limit = self._vegas.update(self._clock.monotonic() - start)

    def exit_error(self, start: float, _exc: BaseException) -> None:
        self.exit_ok(start, None)


def _reference_available() -> bool:
    try:
        import aioadaptive.limiter  # noqa: F401, PLC0415
    except ImportError:
        return False
    return True


def experiments(quick: bool, seed: int) -> dict[str, Any]:
    duration = 20.0 if quick else 60.0
    out: dict[str, Any] = {"convergence": {}, "goodput": {}, "recovery": {}}
    runs: dict[str, Run] = {}
    for name, make in ALGORITHMS.items():
        for initial in (5, 250):
            run = simulate(
                f"{name} from {initial}",
                adaptive(make(initial), seed),
                duration=duration,
                seed=seed,
            )
            runs[run.name] = run
            tail = [limit for t, limit in run.trace if t >= duration / 2]
            out["convergence"][run.name] = {
                "final": run.trace[-1][1],
                "median_second_half": sorted(tail)[len(tail) // 2],
                "trace": run.trace,
            }
    if _reference_available():
        for initial in (5, 250):
            run = simulate(
                f"aioadaptive Vegas from {initial}",
                lambda clock, i=initial: _ReferenceVegas(clock, i),
                duration=duration,
                seed=seed,
            )
            runs[run.name] = run
            tail = [limit for t, limit in run.trace if t >= duration / 2]
            out["convergence"][run.name] = {
                "final": run.trace[-1][1],
                "median_second_half": sorted(tail)[len(tail) // 2],
                "trace": run.trace,
            }
    else:
        out["reference"] = "aioadaptive is not installed: no reference rows"
    out["ramp"] = {}
    ramp_duration = 60.0 if quick else 180.0
    for name, make in ALGORITHMS.items():
        run = simulate(
            name, adaptive(make(250), seed), duration=ramp_duration, seed=seed, rate=ramping
        )
        tail = [limit for t, limit in run.trace if t >= ramp_duration * 0.75]
        out["ramp"][name] = {
            "final": run.trace[-1][1],
            "median_last_quarter": sorted(tail)[len(tail) // 2],
            "goodput": round(run.goodput(ramp_duration / 2), 1),
            "p99_ms": round(1000 * run.p99(ramp_duration / 2), 1),
            "trace": run.trace,
        }
    for size in (10, 20, 30, 45, 60, 120, 250):
        run = simulate(
            f"Bulkhead({size})", lambda _c, s=size: Bulkhead(s), duration=duration, seed=seed
        )
        runs[run.name] = run
    for run in runs.values():
        out["goodput"][run.name] = {
            "goodput": round(run.goodput(duration / 2), 1),
            "p99_ms": round(1000 * run.p99(duration / 2), 1),
            "timed_out": run.timed_out,
            "rejected": run.rejected,
        }
    third = duration / 3
    # Each third but its first ninth (the transition), for the figures per third.
    spans = [(i * third + third / 3, (i + 1) * third) for i in range(3)]

    def moving(t: float) -> int:
        return SERVERS // 2 if third <= t < 2 * third else SERVERS

    recovery: list[tuple[str, Callable[[ManualClock], Any]]] = [
        (name, adaptive(make(20), seed)) for name, make in ALGORITHMS.items()
    ]
    recovery += [(f"Bulkhead({n})", lambda _c, n=n: Bulkhead(n)) for n in (15, 30)]
    for name, make_policy in recovery:
        run = simulate(name, make_policy, duration=duration, seed=seed, servers=moving)
        row: dict[str, Any] = {
            "goodput_by_third": [round(run.goodput(*span), 1) for span in spans],
            "p99_ms_by_third": [round(1000 * run.p99(*span), 1) for span in spans],
        }
        if not name.startswith("Bulkhead"):
            limits = [sorted(v for t, v in run.trace if lo <= t < hi) for lo, hi in spans]
            row["median_limit_by_third"] = [values[len(values) // 2] for values in limits]
            row["trace"] = run.trace
        out["recovery"][name] = row
    out["setup"] = {
        "servers": SERVERS,
        "service_ms": SERVICE * 1000,
        "arrivals_per_s": RATE,
        "capacity_per_s": SERVERS / SERVICE,
        "timeout_s": TIMEOUT,
        "duration_s": duration,
        "ramp_duration_s": ramp_duration,
        "ramp_s": RAMP,
        "window_s": WINDOW,
        "seed": seed,
    }
    return out


def report(out: dict[str, Any]) -> None:
    setup = out["setup"]
    print(
        f"dependency: {setup['servers']} workers x {setup['service_ms']:g} ms "
        f"(capacity {setup['capacity_per_s']:g}/s); arrivals {setup['arrivals_per_s']:g}/s; "
        f"timeout {setup['timeout_s']:g} s; {setup['duration_s']:g} s virtual, seed {setup['seed']}"
    )
    if "reference" in out:
        print(out["reference"])
    print("\n1. convergence (knee = 30 in flight): limit at the end, median over the 2nd half")
    for name, row in out["convergence"].items():
        print(f"   {name:<26} final {row['final']:>4}   median {row['median_second_half']:>4}")
    if "ramp" in out:
        print(
            f"\n1b. from above as a service meets it: limit 250, arrivals ramping from 0 to "
            f"{setup['arrivals_per_s']:g}/s over {setup['ramp_s']:g} s; "
            f"{setup['ramp_duration_s']:g} s virtual"
        )
        for name, row in out["ramp"].items():
            print(
                f"   {name:<10} final {row['final']:>4}   median of the last quarter "
                f"{row['median_last_quarter']:>4}   goodput {row['goodput']:>7.1f}/s  "
                f"p99 {row['p99_ms']:>6.1f} ms"
            )
    print("\n2. goodput (answered in time, per s, 2nd half) and p99 of those")
    for name, row in out["goodput"].items():
        print(
            f"   {name:<26} {row['goodput']:>7.1f}/s  p99 {row['p99_ms']:>7.1f} ms  "
            f"timed out {row['timed_out']:>6}  rejected {row['rejected']:>6}"
        )
    print("\n3. recovery: the knee halves in the middle third (per third: goodput, p99, limit)")
    for name, row in out["recovery"].items():
        limits = row.get("median_limit_by_third")
        shown = f"  limits {limits}" if limits else ""
        print(
            f"   {name:<14} goodput {row['goodput_by_third']}  "
            f"p99 ms {row['p99_ms_by_third']}{shown}"
        )


def chart(out: dict[str, Any], path: str) -> None:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, grid = plt.subplots(2, 2, figsize=(13, 9))
    axes = [grid[0][0], grid[1][0], grid[1][1], grid[0][1]]
    ax = axes[0]
    colours = {"Gradient2": "tab:blue", "Vegas": "tab:orange", "AIMD": "tab:green"}
    for name, row in out["convergence"].items():
        algo = name.split()[0]
        if algo not in colours:
            continue  # the reference rows are in the table, not on the chart
        ts, limits = zip(*row["trace"], strict=True)
        ax.plot(
            ts,
            limits,
            color=colours[algo],
            label=name,
            alpha=0.85,
            linestyle="-" if name.endswith("from 5") else "--",
        )
    ax.axhline(SERVERS, color="grey", linestyle=":", label="knee")
    ax.set_yscale("log")
    ax.set(title="1. Convergence from both sides", xlabel="virtual seconds", ylabel="limit")
    ax.legend(fontsize=7)

    ax = axes[1]
    fixed = {k: v for k, v in out["goodput"].items() if k.startswith("Bulkhead")}
    ax.plot(
        [v["p99_ms"] for v in fixed.values()],
        [v["goodput"] for v in fixed.values()],
        "o-",
        color="grey",
        label="fixed Bulkhead(n)",
    )
    for name, v in fixed.items():
        ax.annotate(name.removeprefix("Bulkhead"), (v["p99_ms"], v["goodput"]), fontsize=7)
    for name, v in out["goodput"].items():
        if name.split()[0] in colours:
            algo = name.split()[0]
            marker = "*" if name.endswith("from 5") else "X"
            ax.plot(
                v["p99_ms"], v["goodput"], marker, markersize=11, color=colours[algo], label=name
            )
    ax.set_xscale("log")
    ax.set(
        title="2. Goodput against p99",
        xlabel="p99 latency (ms, log)",
        ylabel="answered in time per second",
    )
    ax.legend(fontsize=7)

    ax = axes[2]
    for name, row in out["recovery"].items():
        if "trace" in row:
            ts, limits = zip(*row["trace"], strict=True)
            ax.plot(ts, limits, color=colours[name], label=name)
    d = out["setup"]["duration_s"]
    ax.step(
        [0, d / 3, 2 * d / 3, d],
        [SERVERS, SERVERS // 2, SERVERS, SERVERS],
        where="post",
        color="grey",
        linestyle=":",
        label="knee",
    )
    ax.set(title="3. Recovery when the knee moves", xlabel="virtual seconds", ylabel="limit")
    ax.legend(fontsize=7)

    ax = axes[3]
    for name, row in out.get("ramp", {}).items():
        ts, limits = zip(*row["trace"], strict=True)
        ax.plot(ts, limits, color=colours[name], label=f"{name} from 250")
    ax.axhline(SERVERS, color="grey", linestyle=":", label="knee")
    ramp_s = out["setup"].get("ramp_s", RAMP)
    ax.axvline(
        ramp_s * (SERVERS / SERVICE) / RATE,
        color="grey",
        linewidth=0.8,
        label="load reaches capacity",
    )
    ax.set_yscale("log")
    ax.set(
        title="1b. From above, as load ramps up past the knee",
        xlabel="virtual seconds",
        ylabel="limit",
    )
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20 virtual seconds per run")
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--window", type=float, default=1.0, help="window_duration, seconds")
    parser.add_argument("--json", help="write the figures (and traces) here")
    parser.add_argument("--chart", help="write the chart (PNG) here")
    parser.add_argument("--from-json", help="chart the figures of an earlier --json run")
    args = parser.parse_args(argv)
    global WINDOW  # noqa: PLW0603 -- a script's setting
    WINDOW = args.window
    if args.from_json:
        with open(args.from_json, encoding="utf-8") as f:  # noqa: PTH123
            out = json.load(f)
    else:
        out = experiments(args.quick, args.seed)
    report(out)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:  # noqa: PTH123
            json.dump(out, f, indent=1)
    if args.chart:
        chart(out, args.chart)
    return 0


if __name__ == "__main__":
    sys.exit(main())
