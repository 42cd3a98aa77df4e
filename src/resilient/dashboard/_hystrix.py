"""``/hystrix.stream``: the registry's breakers and bulkheads in Hystrix's stream format.

An existing Hystrix dashboard (or Turbine, which aggregates such streams) reads one
``data:`` line of JSON per command every interval: each circuit breaker is reported as a
``HystrixCommand``, each bulkhead as a ``HystrixThreadPool``. Hystrix's rolling counts
are taken from the breaker's current window (``calls``, ``failed_calls``,
``not_permitted_calls``), its latencies from the window's durations where the breaker
measures them (else 0), in milliseconds. Fields with no counterpart here (request cache,
collapsing, fallbacks, thread pools) are 0 or false.
"""

from __future__ import annotations

import json
import logging
import time
from typing import TYPE_CHECKING, Any, Final

from resilient._core._breaker_state import CircuitState
from resilient._policies._breaker import CircuitBreaker
from resilient._policies._bulkhead import Bulkhead
from resilient._policies._outcomes import nearest_rank

if TYPE_CHECKING:
    from resilient.dashboard._readout import Sampler

__all__ = ["breaker_command", "bulkhead_pool", "hystrix_tick"]

logger = logging.getLogger("resilient")

_PERCENTILES: Final = ("0", "25", "50", "75", "90", "95", "99", "99.5", "100")
_ROLLING_MS: Final = 10_000
_GROUP: Final = "resilient"
_ZERO_COUNTS: Final = (
    "rollingCountBadRequests",
    "rollingCountCollapsedRequests",
    "rollingCountEmit",
    "rollingCountExceptionsThrown",
    "rollingCountFallbackEmit",
    "rollingCountFallbackFailure",
    "rollingCountFallbackMissing",
    "rollingCountFallbackRejection",
    "rollingCountFallbackSuccess",
    "rollingCountResponsesFromCache",
    "rollingCountSemaphoreRejected",
    "rollingCountThreadPoolRejected",
    "rollingCountTimeout",
    "rollingMaxConcurrentExecutionCount",
    "currentConcurrentExecutionCount",
)


def _latencies(breaker: CircuitBreaker) -> tuple[int, dict[str, int]]:
    durations = sorted(breaker.window_durations() or ())
    if not durations:
        return 0, dict.fromkeys(_PERCENTILES, 0)
    ms = [d * 1000 for d in durations]
    mean = round(sum(ms) / len(ms))
    return mean, {
        p: round(ms[0] if p == "0" else nearest_rank(ms, float(p) / 100)) for p in _PERCENTILES
    }


def breaker_command(name: str, breaker: CircuitBreaker, now_ms: int) -> dict[str, Any]:
    """One breaker as a ``HystrixCommand`` record."""
    m = breaker.metrics()
    core = breaker._core
    open_duration = getattr(core, "_open_duration", 0.0)
    sleep_ms = round(open_duration * 1000) if isinstance(open_duration, float) else 0
    mean, percentiles = _latencies(breaker)
    record: dict[str, Any] = {
        "type": "HystrixCommand",
        "name": name,
        "group": _GROUP,
        "currentTime": now_ms,
        "isCircuitBreakerOpen": m.state in (CircuitState.OPEN, CircuitState.FORCED_OPEN),
        "errorPercentage": round(100 * m.failure_rate),
        "errorCount": m.failed_calls,
        "requestCount": m.calls,
        "rollingCountFailure": m.failed_calls,
        "rollingCountSuccess": m.successful_calls,
        "rollingCountShortCircuited": m.not_permitted_calls,
        **dict.fromkeys(_ZERO_COUNTS, 0),
        "latencyExecute_mean": mean,
        "latencyExecute": percentiles,
        "latencyTotal_mean": mean,
        "latencyTotal": percentiles,
        "propertyValue_circuitBreakerRequestVolumeThreshold": getattr(core, "_minimum_calls", 0),
        "propertyValue_circuitBreakerSleepWindowInMilliseconds": sleep_ms,
        "propertyValue_circuitBreakerErrorThresholdPercentage": round(
            100 * getattr(core, "_failure_threshold", 0.0)
        ),
        "propertyValue_circuitBreakerForceOpen": m.state is CircuitState.FORCED_OPEN,
        "propertyValue_circuitBreakerForceClosed": False,
        "propertyValue_circuitBreakerEnabled": m.state is not CircuitState.DISABLED,
        "propertyValue_executionIsolationStrategy": "SEMAPHORE",
        "propertyValue_executionIsolationThreadTimeoutInMilliseconds": 0,
        "propertyValue_executionTimeoutInMilliseconds": 0,
        "propertyValue_executionIsolationThreadInterruptOnTimeout": False,
        "propertyValue_executionIsolationThreadPoolKeyOverride": None,
        "propertyValue_executionIsolationSemaphoreMaxConcurrentRequests": 0,
        "propertyValue_fallbackIsolationSemaphoreMaxConcurrentRequests": 0,
        "propertyValue_metricsRollingStatisticalWindowInMilliseconds": _ROLLING_MS,
        "propertyValue_requestCacheEnabled": False,
        "propertyValue_requestLogEnabled": False,
        "reportingHosts": 1,
        "threadPool": _GROUP,
    }
    return record


def bulkhead_pool(name: str, bulkhead: Bulkhead, now_ms: int) -> dict[str, Any]:
    """One bulkhead as a ``HystrixThreadPool`` record."""
    m = bulkhead.metrics()
    return {
        "type": "HystrixThreadPool",
        "name": name,
        "currentTime": now_ms,
        "currentActiveCount": m.in_flight,
        "currentCompletedTaskCount": m.admitted,
        "currentCorePoolSize": m.max_concurrent,
        "currentLargestPoolSize": m.max_observed,
        "currentMaximumPoolSize": m.max_concurrent,
        "currentPoolSize": m.max_concurrent,
        "currentQueueSize": m.waiting,
        "currentTaskCount": m.admitted,
        "rollingCountThreadsExecuted": m.admitted,
        "rollingMaxActiveThreads": m.max_observed,
        "rollingCountCommandRejections": m.rejected,
        "propertyValue_queueSizeRejectionThreshold": 0,
        "propertyValue_metricsRollingStatisticalWindowInMilliseconds": _ROLLING_MS,
        "reportingHosts": 1,
    }


def hystrix_tick(sampler: Sampler) -> bytes:
    """One event per breaker and bulkhead of the sampler's registry (a comment if none)."""
    now_ms = round(time.time() * 1000)
    registry = sampler._registry
    lines: list[bytes] = []
    for name in registry:
        policy = registry.get(name)
        try:
            if isinstance(policy, CircuitBreaker):
                record = breaker_command(name, policy, now_ms)
            elif isinstance(policy, Bulkhead):
                record = bulkhead_pool(name, policy, now_ms)
            else:
                continue
        except Exception:
            sampler.errors += 1  # logged and left out; the others are still sent
            logger.exception("reading %s %r for the Hystrix stream failed", policy.kind, name)
            continue
        lines.append(f"data: {json.dumps(record, separators=(',', ':'))}\n\n".encode())
    return b"".join(lines) or b": ping\n\n"
