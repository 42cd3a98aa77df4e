"""The game day of docs/chaos.md: a pipeline against 30% faults and 10% slow calls.

A downstream that answers in 20 ms is wrapped in fault injection (30% of calls raise
``ConnectionError``, 10% are delayed 2 s), and then in more and more of the documented
pipeline. Everything runs on a ``ManualClock`` with seeded draws, so the figures are
exact, repeatable, and take no real time: latency is virtual seconds per call, as the
caller would see it. ``tests/test_chaos_gameday.py`` runs the same scenarios and checks
the stated figures; this script prints the table that docs/chaos.md shows:

    .venv/bin/python benchmarks/chaos_gameday.py            # 10,000 calls per row
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio

from resilient import CircuitBreaker, CountWindow, Fallback, Retry, Timeout, compose
from resilient.chaos import InjectFault, InjectLatency
from resilient.testing import ManualClock

FRESH = "fresh"
CACHED = "cached"
SEED = 2026
ARRIVAL = 0.01  # virtual seconds between calls: 100 calls a second, one after another


def _chaos(clock: ManualClock, seed: int) -> list[Any]:
    return [
        InjectFault(ConnectionError, rate=0.3, seed=seed),
        InjectLatency(2.0, rate=0.1, seed=seed + 1, clock=clock),
    ]


def no_policy(clock: ManualClock, seed: int) -> Any:
    return compose(*_chaos(clock, seed))


def timeout_only(clock: ManualClock, seed: int) -> Any:
    return compose(Timeout(0.5, clock=clock), *_chaos(clock, seed))


def retry_timeout(clock: ManualClock, seed: int) -> Any:
    return compose(
        Retry(3, wait=0.05, clock=clock), Timeout(0.5, clock=clock), *_chaos(clock, seed)
    )


def full_pipeline(clock: ManualClock, seed: int) -> Any:
    """The pipeline docs/chaos.md recommends, with the chaos innermost."""
    return compose(
        Fallback(lambda _exc: CACHED),
        Retry(3, wait=0.05, clock=clock),
        CircuitBreaker(
            "gameday",
            failure_rate_threshold=0.8,  # trips on an outage, not on this weather
            window=CountWindow(100),
            minimum_calls=50,
            open_duration=5.0,
            half_open_calls=20,
            clock=clock,
        ),
        Timeout(0.5, clock=clock),
        *_chaos(clock, seed),
    )


SCENARIOS: dict[str, Callable[[ManualClock, int], Any]] = {
    "chaos only, no policy": no_policy,
    "Timeout(0.5)": timeout_only,
    "Retry(3) + Timeout(0.5)": retry_timeout,
    "Fallback + Retry + CircuitBreaker + Timeout": full_pipeline,
}


@dataclass(frozen=True)
class Outcome:
    """What the callers saw over one scenario's calls."""

    calls: int
    fresh: int  # the downstream's own answer
    cached: int  # the fallback's answer
    errors: int  # an exception reached the caller
    p50: float  # virtual seconds per call
    p95: float
    p99: float
    worst: float

    @property
    def success_rate(self) -> float:
        return self.fresh / self.calls

    @property
    def answered_rate(self) -> float:
        return (self.fresh + self.cached) / self.calls


def run(scenario: Callable[[ManualClock, int], Any], calls: int, seed: int = SEED) -> Outcome:
    """Make ``calls`` calls through ``scenario``'s policy, on asyncio, in virtual time."""
    clock = ManualClock()
    policy = scenario(clock, seed)

    async def downstream() -> str:
        await clock.asleep(0.02)
        return FRESH

    async def main() -> Outcome:
        answers = {FRESH: 0, CACHED: 0}
        errors = 0
        latencies = []
        for _ in range(calls):
            clock.advance(ARRIVAL)
            start = clock.monotonic()
            try:
                answers[await policy.call_async(downstream)] += 1
            except Exception:
                errors += 1
            latencies.append(clock.monotonic() - start)
        cuts = statistics.quantiles(latencies, n=100, method="inclusive")
        return Outcome(
            calls,
            answers[FRESH],
            answers[CACHED],
            errors,
            cuts[49],
            cuts[94],
            cuts[98],
            max(latencies),
        )

    return anyio.run(main)


def outcomes(calls: int, seed: int = SEED) -> dict[str, Outcome]:
    """Every scenario's outcome, by its label."""
    return {label: run(scenario, calls, seed) for label, scenario in SCENARIOS.items()}


def table(results: dict[str, Outcome]) -> str:
    """The markdown table of the scenarios' outcomes."""
    rows = [
        (
            "| pipeline | fresh answers | answered (fresh or fallback) | errors "
            "| p50 | p95 | p99 | worst |"
        ),
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, o in results.items():
        ms = " | ".join(f"{v * 1000:.0f} ms" for v in (o.p50, o.p95, o.p99, o.worst))
        rows.append(
            f"| {label} | {o.success_rate:.1%} | {o.answered_rate:.1%} "
            f"| {o.errors / o.calls:.1%} | {ms} |"
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args()
    print(f"{args.calls:,} calls per row, seed {args.seed}, virtual time (ManualClock)\n")
    print(table(outcomes(args.calls, args.seed)))


if __name__ == "__main__":
    main()
