"""What the dashboard shows of each policy: one flat entry per named policy.

Every figure is read through what the library already reads for OpenTelemetry: the call
counts by outcome (``_policies._outcomes``), each policy's ``metrics()`` (as plain data,
as ``Registry.snapshot()`` gives it) and a breaker's window durations (quantiles by
nearest rank, as the ``resilient.circuit_breaker.call.duration`` gauge). Only the rates
per second are new: a :class:`Sampler` keeps the previous counts and divides the
difference by the time its clock says has passed.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from typing import Any, Final

from resilient._core._clock import Clock
from resilient._policies._adaptive import AdaptiveLimiter
from resilient._policies._breaker import CircuitBreaker
from resilient._policies._bulkhead import Bulkhead
from resilient._policies._outcomes import nearest_rank, outcomes
from resilient._policies._policy import Policy
from resilient._policies._registry import Registry, _plain
from resilient._policies._throttle import AdaptiveThrottle

__all__ = ["Sampler", "read_policy"]

logger = logging.getLogger("resilient")

# Which outcomes are calls, by kind: the others count attempts (a retry's retries, a
# hedge's extra attempts) or a subset of the calls (a timeout's timeouts). A kind not
# listed counts every outcome.
_CALLS: Final[Mapping[str, frozenset[str]]] = {
    "circuit_breaker": frozenset({"success", "failure", "ignored", "rejected"}),
    "adaptive_throttle": frozenset({"success", "failure", "ignored", "rejected"}),
    "bulkhead": frozenset({"admitted", "rejected"}),
    "timeout": frozenset({"admitted", "rejected"}),
    "rate_limiter": frozenset({"admitted", "rejected"}),
    "keyed_rate_limiter": frozenset({"admitted", "rejected"}),
    "adaptive_limiter": frozenset({"admitted", "rejected"}),
    "retry": frozenset(
        {"first_attempt", "recovered", "exhausted", "deadline", "budget_refused", "stopped"}
    ),
    "hedge": frozenset({"first_attempt", "hedge_won", "failed"}),
    "fallback": frozenset(),
}


def _finite(value: Any) -> Any:
    """``value`` with every non-finite float made ``None``: JSON has no NaN nor infinity."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def read_policy(name: str, policy: Policy, quantiles: tuple[float, ...]) -> dict[str, Any]:
    """One policy's entry: the figures the page shows, then its whole ``metrics()``.

    ``None`` stands for what the policy does not have (a bulkhead has no state, a
    breaker no limit), so every entry has the same keys.
    """
    counts: dict[str, int] = dict(outcomes(policy))  # type: ignore[arg-type]
    kind = policy.kind
    wanted = _CALLS.get(kind)
    calls = sum(v for k, v in counts.items() if wanted is None or k in wanted)
    entry: dict[str, Any] = {
        "name": name,
        "kind": kind,
        "state": None,
        "failure_rate": None,
        "slow_call_rate": None,
        "calls": calls if wanted != frozenset() else None,
        "calls_per_second": None,
        "rejections": counts.get("rejected"),
        "rejections_per_second": None,
        "in_flight": None,
        "limit": None,
        "latency": None,
        "retry_after": None,
        "outcomes": counts,
        "metrics": None,
    }
    read = getattr(policy, "metrics", None)
    metrics = read() if read is not None else None
    if metrics is not None:
        entry["metrics"] = _plain(metrics)
    if isinstance(policy, CircuitBreaker):
        entry["state"] = policy.state.value
        entry["failure_rate"] = metrics.failure_rate  # type: ignore[union-attr]
        entry["slow_call_rate"] = metrics.slow_call_rate  # type: ignore[union-attr]
        entry["retry_after"] = policy.retry_after
        durations = policy.window_durations()
        if durations:
            durations.sort()
            entry["latency"] = {str(q): nearest_rank(durations, q) for q in quantiles}
    elif isinstance(policy, Bulkhead):
        entry["in_flight"] = metrics.in_flight  # type: ignore[union-attr]
        entry["limit"] = policy.max_concurrent
    elif isinstance(policy, AdaptiveLimiter):
        entry["in_flight"] = metrics.in_flight  # type: ignore[union-attr]
        entry["limit"] = policy.limit
    elif isinstance(policy, AdaptiveThrottle):
        m = metrics
        decided = m.accepted + m.failed  # type: ignore[union-attr]
        entry["failure_rate"] = m.failed / decided if decided else 0.0  # type: ignore[union-attr]
    return entry


class Sampler:
    """Reads a registry's policies, and the rates per second since its previous read.

    Args:
        registry: Where the policies are named.
        clock: Measures the time between two reads.
        quantiles: Latency quantiles to report, in (0, 1].

    Attributes:
        errors: How many times reading a policy raised (logged; that policy is reported
            with an ``error`` and the others as usual).
    """

    def __init__(self, registry: Registry, clock: Clock, quantiles: tuple[float, ...]) -> None:
        self._registry = registry
        self._clock = clock
        self._quantiles = quantiles
        self._previous: dict[str, tuple[str, int | None, int | None]] = {}
        self._previous_time: float | None = None
        self.errors = 0

    def entry(self, name: str) -> dict[str, Any] | None:
        """The entry of one policy, without rates (``None`` if it is not in the registry)."""
        try:
            policy = self._registry.get(name)
        except KeyError:
            return None
        return self._read(name, policy)

    def _read(self, name: str, policy: Policy) -> dict[str, Any]:
        # One policy failing to report must not hide the others.
        try:
            return read_policy(name, policy, self._quantiles)
        except Exception as exc:
            self.errors += 1
            logger.exception("reading %s %r for the dashboard failed", policy.kind, name)
            return {"name": name, "kind": policy.kind, "error": repr(exc)}

    def read(self) -> dict[str, Any]:
        """Every policy's entry, with rates since the previous ``read()`` (``None`` at first)."""
        now = self._clock.monotonic()
        elapsed = None if self._previous_time is None else now - self._previous_time
        policies = []
        previous, self._previous = self._previous, {}
        for name in self._registry:
            try:
                policy = self._registry.get(name)
            except KeyError:  # pragma: no cover - a registry forgets no policy today
                continue
            entry = self._read(name, policy)
            calls, rejections = entry.get("calls"), entry.get("rejections")
            self._previous[name] = (policy.kind, calls, rejections)
            before = previous.get(name)
            if elapsed and elapsed > 0 and before is not None and before[0] == policy.kind:
                entry["calls_per_second"] = _rate(before[1], calls, elapsed)
                entry["rejections_per_second"] = _rate(before[2], rejections, elapsed)
            policies.append(entry)
        self._previous_time = now
        snapshot: dict[str, Any] = _finite(
            {"time": time.time(), "elapsed": elapsed, "policies": policies, "errors": self.errors}
        )
        return snapshot


def _rate(before: int | None, after: int | None, elapsed: float) -> float | None:
    if before is None or after is None or after < before:
        return None  # not counted, or counted afresh (a policy replaced under its name)
    return (after - before) / elapsed
