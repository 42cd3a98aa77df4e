"""What turning on OpenTelemetry costs a closed circuit breaker, per call.

Run: ``python benchmarks/otel_overhead.py [--rounds N]``. Four breakers, each decorating
the same no-op function, are timed in alternation in one process (this machine's speed
drifts, so only figures taken side by side compare):

- ``plain``: no instrumentation in the process section it is timed in;
- ``instrumented, no SDK``: ``resilient.instrument()`` on the API's default (no-op)
  meter provider;
- ``instrumented, SDK + reader``: ``instrument(MeterProvider(metric_readers=[reader]))``;
- ``histogram on``: the same with ``call_duration=True`` (opt-in; every call recorded).

Instrumentation is switched on and off between samples, so each sample of each case runs
in its own configuration.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from collections.abc import Callable

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

import resilient


def noop() -> None:
    return None


def sample(fn: Callable[[], None], loops: int) -> float:
    """ns per call of ``fn`` over ``loops`` calls (thread CPU time: robust to a busy box)."""
    start = time.thread_time_ns()
    for _ in range(loops):
        fn()
    return (time.thread_time_ns() - start) / loops


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--loops", type=int, default=20_000)
    args = parser.parse_args()

    reader = InMemoryMetricReader()
    sdk = MeterProvider(metric_readers=[reader])
    cases: dict[str, tuple[Callable[[], resilient.Instrumentation | None], Callable[[], None]]] = {
        "bare call": (lambda: None, noop),
        "plain breaker": (lambda: None, resilient.CircuitBreaker("plain")(noop)),
        "instrumented, no SDK": (
            resilient.instrument,
            resilient.CircuitBreaker("no-sdk")(noop),
        ),
        "instrumented, SDK + reader": (
            lambda: resilient.instrument(sdk),
            resilient.CircuitBreaker("sdk")(noop),
        ),
        "histogram on (opt-in)": (
            lambda: resilient.instrument(sdk, call_duration=True),
            resilient.CircuitBreaker("histogram")(noop),
        ),
    }
    results: dict[str, list[float]] = {name: [] for name in cases}
    gc.disable()
    for _ in range(args.rounds):
        for name, (setup, fn) in cases.items():
            handle = setup()
            try:
                sample(fn, args.loops // 10)  # warm up in this configuration
                results[name].append(sample(fn, args.loops))
            finally:
                if handle is not None:
                    handle.uninstrument()
    gc.enable()
    reader.collect()  # the collection path runs too (not timed)

    bare = statistics.median(results["bare call"])
    plain = statistics.median(results["plain breaker"]) - bare
    print(f"{args.rounds} rounds of {args.loops} calls, medians, ns per call (thread CPU time)")
    print("| case | ns/call | overhead vs bare call | added by instrumentation |")
    print("|---|---:|---:|---:|")
    for name, values in results.items():
        median = statistics.median(values)
        over = median - bare
        added = "-" if name in {"bare call", "plain breaker"} else f"{over - plain:+.0f}"
        print(f"| {name} | {median:.0f} | {over:.0f} | {added} |")
    sdk.shutdown()


if __name__ == "__main__":
    main()
