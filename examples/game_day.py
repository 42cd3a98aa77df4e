"""A game day: break the dependency on purpose and watch the pipeline hold.

Run it with ``python examples/game_day.py``. The same production pipeline (fallback,
retry, circuit breaker, timeout) guards a call to a quote service. The chaos policies
sit innermost, where the dependency is, behind a switch: first the switch is off and
every call is served fresh; then it is on, 30% of the calls fail and 10% hang for
half a second, and the pipeline keeps answering, mostly fresh, never slower than its
timeout allows. In a real service the switch reads a flag service or an environment
variable (here: ``RESILIENT_CHAOS``, which this script sets for the second round). Time
is real but short: about a second.
"""

from __future__ import annotations

import os
import time

import anyio
import anyio.lowlevel

from resilient import CircuitBreaker, CountWindow, Fallback, Retry, Timeout, compose
from resilient.chaos import InjectFault, InjectLatency


def chaos_on() -> bool:
    """The game day's switch: read on every call, so flipping it needs no restart."""
    return os.environ.get("RESILIENT_CHAOS") == "1"


breaker = CircuitBreaker(
    "quotes", failure_rate_threshold=0.8, window=CountWindow(50), minimum_calls=20
)
faults = InjectFault(
    ConnectionError("injected: connection reset"), rate=0.3, seed=1, enabled=chaos_on
)
latency = InjectLatency(0.5, rate=0.1, seed=2, enabled=chaos_on)
quotes = compose(
    Fallback(lambda _exc: "cached quote"),
    Retry(3, wait=0.002, on=(ConnectionError, TimeoutError)),
    breaker,
    Timeout(0.02),
    faults,  # innermost, where the dependency is: every policy above sees the outage
    latency,
)


async def fetch_quote() -> str:
    """The real dependency: healthy and fast throughout the game day."""
    await anyio.lowlevel.checkpoint()
    return "fresh quote"


async def one_round(calls: int) -> tuple[float, float]:
    """(share of fresh answers, slowest call in ms) over ``calls`` calls."""
    fresh = 0
    slowest = 0.0
    for _ in range(calls):
        started = time.perf_counter()
        answer = await quotes.call_async(fetch_quote)
        slowest = max(slowest, time.perf_counter() - started)
        fresh += answer == "fresh quote"
    return fresh / calls, slowest * 1000


async def main() -> None:
    calls = 200
    os.environ.pop("RESILIENT_CHAOS", None)
    fresh, slowest = await one_round(calls)
    print(f"chaos off: {fresh:.0%} fresh, the rest cached; slowest call {slowest:.0f} ms")
    if fresh != 1.0:
        raise SystemExit("with the switch off, every answer should be fresh")

    os.environ["RESILIENT_CHAOS"] = "1"
    try:
        fresh, slowest = await one_round(calls)
    finally:
        os.environ.pop("RESILIENT_CHAOS", None)
    rate = breaker.metrics().failure_rate
    print(f"chaos on:  {fresh:.0%} fresh, the rest cached; slowest call {slowest:.0f} ms")
    print(f"  injected: {faults.metrics().injected} faults, {latency.metrics().injected} hangs")
    print(f"  breaker:  {breaker.state.name}, failure rate {rate:.0%}")
    # Retries turn most injected faults into fresh answers and the fallback answers the
    # rest; a 500 ms hang costs at most the 20 ms timeout per attempt.
    if fresh < 0.9:
        raise SystemExit(
            f"only {fresh:.0%} fresh answers under chaos; the pipeline should keep 90%"
        )


if __name__ == "__main__":
    anyio.run(main)
