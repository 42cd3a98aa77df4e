"""A flaky dependency behind a circuit breaker: watch it open, half-open and close.

Run it with ``python examples/quickstart.py``. The "dependency" fails while it is down;
the breaker notices the failure rate, opens, fails fast without calling it, probes it
again after ``open_duration`` and closes once the probes succeed. Time is real but short.
"""

from __future__ import annotations

import time

from resilient import CircuitBreaker, CircuitOpenError, CountWindow, Event, StateTransition


class Downstream:
    """A service that is down between two moments of the demo."""

    def __init__(self) -> None:
        self.down = False
        self.calls = 0

    def fetch(self, item: int) -> str:
        self.calls += 1
        if self.down:
            raise ConnectionError(f"downstream refused item {item}")
        return f"item-{item}"


downstream = Downstream()

breaker = CircuitBreaker(
    "downstream",
    failure_rate_threshold=0.5,  # open when half of the recent calls fail...
    window=CountWindow(10),  # ...among the last 10 calls...
    minimum_calls=5,  # ...once at least 5 were seen
    open_duration=0.3,  # fail fast for 0.3 s, then let trial calls through
    half_open_calls=3,  # 3 trials decide between OPEN and CLOSED
)


transitions: list[StateTransition] = []


def on_event(event: Event) -> None:
    if isinstance(event, StateTransition):
        transitions.append(event)


breaker.add_listener(on_event)


@breaker
def fetch(item: int) -> str:
    return downstream.fetch(item)


def run(phase: str, items: range, pause: float = 0.05) -> None:
    print(f"-- {phase} (breaker {breaker.state})")
    for item in items:
        try:
            print(f"  call {item:2}: ok      {fetch(item)}")
        except CircuitOpenError as exc:
            wait = exc.retry_after or 0.0
            print(f"  call {item:2}: REJECTED (retry in {wait:.2f}s, downstream not called)")
        except ConnectionError as exc:
            print(f"  call {item:2}: failed  {exc}")
        for change in transitions:
            print(f"           breaker {change.from_state} -> {change.to_state}")
        transitions.clear()
        time.sleep(pause)


run("downstream healthy", range(3))
downstream.down = True
run("downstream goes down", range(3, 14))
downstream.down = False
print("-- downstream recovers; waiting out open_duration")
time.sleep(0.3)
run("trial calls, then normal traffic", range(14, 19))

m = breaker.metrics()
print(
    f"\nfinal state {breaker.state}; downstream was called {downstream.calls} times for 19 "
    f"requests; window now holds {m.calls} calls, failure rate {m.failure_rate:.0%}"
)
