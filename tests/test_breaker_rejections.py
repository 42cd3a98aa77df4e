"""A breaker neither records nor counts a rejection by one of the library's own policies.

A rate limit, a full bulkhead or an inner open breaker says nothing about the dependency's
health: by default such a ``RejectedError`` is an ignored call (visible in
``total_ignored_calls`` and as a ``CallIgnored`` event). A ``record`` that names a
``RejectedError`` class explicitly is honoured.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest

from resilient import (
    Bulkhead,
    BulkheadFullError,
    CircuitBreaker,
    CircuitState,
    CountWindow,
    RateLimitedError,
    RateLimiter,
    RejectedError,
    compose,
)
from resilient.testing import ManualClock, capture_events

README = Path(__file__).resolve().parent.parent / "README.md"


def _small(**options: Any) -> CircuitBreaker:
    return CircuitBreaker(window=CountWindow(4), minimum_calls=2, **options)


def test_inner_rate_limit_is_ignored_by_default() -> None:
    breaker = _small()
    guarded = compose(breaker, RateLimiter(1, burst=1, clock=ManualClock()))(lambda: "ok")
    assert guarded() == "ok"
    with capture_events() as events:
        for _ in range(10):
            with pytest.raises(RateLimitedError):
                guarded()
    metrics = breaker.metrics()
    assert breaker.state is CircuitState.CLOSED
    assert (metrics.calls, metrics.failed_calls, metrics.total_failed_calls) == (1, 0, 0)
    assert metrics.total_ignored_calls == 10
    assert [type(e).__name__ for e in events if e.kind == "circuit_breaker"].count(
        "CallIgnored"
    ) == 10


def test_inner_full_bulkhead_is_ignored_by_default() -> None:
    breaker = _small()
    inner = Bulkhead(1)

    def reenter() -> None:
        guarded()  # the bulkhead's only slot is held by the outer call

    guarded = compose(breaker, inner)(reenter)
    for _ in range(5):
        with pytest.raises(BulkheadFullError):
            guarded()
    assert breaker.state is CircuitState.CLOSED
    assert breaker.metrics().total_failed_calls == 0


@pytest.mark.parametrize("named", [RateLimitedError, RejectedError, (KeyError, RateLimitedError)])
def test_a_named_rejection_is_recorded(named: Any) -> None:
    breaker = _small(record=named)
    guarded = compose(breaker, RateLimiter(1, burst=1, clock=ManualClock()))(lambda: "ok")
    guarded()
    with pytest.raises(RateLimitedError):
        guarded()  # one failure in two calls: the rate reaches the threshold
    assert breaker.state is CircuitState.OPEN


def test_a_rejection_named_in_record_still_loses_to_ignore() -> None:
    breaker = _small(record=RateLimitedError, ignore=RateLimitedError)
    guarded = compose(breaker, RateLimiter(1, burst=1, clock=ManualClock()))(lambda: "ok")
    guarded()
    for _ in range(3):
        with pytest.raises(RateLimitedError):
            guarded()
    assert breaker.state is CircuitState.CLOSED


def _readme_composition() -> str:
    """The README's composition example, exactly as printed."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.DOTALL)
    (block,) = [b for b in blocks if "quotes = compose(" in b]
    return str(block)


def test_readme_composition_on_a_healthy_function_never_falls_back() -> None:
    namespace: dict[str, Any] = {}
    exec(compile(_readme_composition(), str(README), "exec"), namespace)  # noqa: S102
    quotes = namespace["quotes"]
    (breaker,) = [p for p in quotes._flatten() if isinstance(p, CircuitBreaker)]

    @quotes
    async def healthy(symbol: str) -> dict[str, object]:
        await asyncio.sleep(0)  # a real await: calls overlap in the bulkhead
        return {"price": 1.0, "stale": False}

    async def main() -> list[Any]:
        return await asyncio.gather(*(healthy("ACME") for _ in range(200)))

    results = asyncio.run(main())
    stale = [r for r in results if isinstance(r, dict) and r.get("stale")]
    assert len(stale) == 0
    assert breaker.state is CircuitState.CLOSED
    assert breaker.metrics().failed_calls == 0
