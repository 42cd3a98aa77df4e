"""What OpenTelemetry reports: every policy, and readings that add up (issue 13, items 6, 8).

An unnamed policy used to vanish from the metrics: in the README's composition only the
breaker was reported. Now every policy is reported, unnamed ones under the
``module.qualname`` of the first function they decorated. And every call through a
policy ends in exactly one outcome, so the outcomes of ``resilient.calls`` add up to
the calls made.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

import resilient
from resilient import (
    Bulkhead,
    BulkheadFullError,
    CircuitBreaker,
    CountWindow,
    Fallback,
    RateLimiter,
    Retry,
    RetryBudget,
    Timeout,
    compose,
)
from resilient.testing import ManualClock


class Boom(Exception):
    pass


class Fatal(Exception):
    pass


@pytest.fixture
def reader() -> Iterator[InMemoryMetricReader]:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    handle = resilient.instrument(provider)
    yield reader
    handle.uninstrument()
    provider.shutdown()


def calls_by_policy(reader: InMemoryMetricReader) -> dict[tuple[str, str], dict[str, int]]:
    """``resilient.calls`` as {(kind, policy): {outcome: value}}."""
    data = reader.get_metrics_data()
    found: dict[tuple[str, str], dict[str, int]] = {}
    if data is None:
        return found
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                if metric.name != "resilient.calls":
                    continue
                for point in metric.data.data_points:
                    attrs = dict(point.attributes or {})
                    key = (str(attrs.get("resilient.kind")), str(attrs.get("resilient.policy")))
                    found.setdefault(key, {})[str(attrs["resilient.outcome"])] = int(point.value)
    return found


# -- item 6: no policy vanishes ---------------------------------------------------------


def test_the_readme_composition_reports_every_policy(reader: InMemoryMetricReader) -> None:
    clock = ManualClock()
    policy = compose(
        Fallback(lambda exc: "cached"),
        Retry(3, clock=clock),
        CircuitBreaker("quotes-readme", clock=clock),
        RateLimiter(100, clock=clock),
        Timeout(1.5, clock=clock),
        Bulkhead(20, max_wait=0.05),
    )

    @policy
    def quote(symbol: str) -> str:
        return symbol

    assert quote("ACME") == "ACME"
    auto = f"{quote.__module__}.{quote.__qualname__}"
    assert auto.endswith("test_the_readme_composition_reports_every_policy.<locals>.quote")
    reported = calls_by_policy(reader)
    assert {kind for kind, name in reported if name in (auto, "quotes-readme")} == {
        "fallback",
        "retry",
        "circuit_breaker",
        "rate_limiter",
        "timeout",
        "bulkhead",
    }
    assert ("circuit_breaker", "quotes-readme") in reported  # a given name wins


def test_the_first_decorated_function_names_it_for_good(reader: InMemoryMetricReader) -> None:
    bulkhead = Bulkhead(2)

    @bulkhead
    def first() -> None:
        pass

    @bulkhead
    def second() -> None:
        pass

    second()
    assert bulkhead.name is None  # the policy's own name is untouched (events, errors)
    reported = calls_by_policy(reader)
    assert reported[("bulkhead", f"{first.__module__}.{first.__qualname__}")]["admitted"] == 1
    assert ("bulkhead", f"{second.__module__}.{second.__qualname__}") not in reported


def test_a_policy_that_decorated_nothing_is_reported_as_unnamed(
    reader: InMemoryMetricReader,
) -> None:
    before = calls_by_policy(reader).get(("bulkhead", "<unnamed>"), {}).get("admitted", 0)
    bulkhead = Bulkhead(1)
    with bulkhead:
        pass
    bulkhead.call(lambda: None)
    after = calls_by_policy(reader)[("bulkhead", "<unnamed>")]["admitted"]
    assert after - before == 2


# -- item 8: the readings add up -------------------------------------------------------


def test_the_issue_scenario_three_failing_calls_through_an_opening_breaker(
    reader: InMemoryMetricReader,
) -> None:
    clock = ManualClock()
    breaker = CircuitBreaker(
        "sums-breaker", window=CountWindow(4), minimum_calls=4, open_duration=60, clock=clock
    )
    retry = Retry(3, wait=0, clock=clock, name="sums-retry")
    guarded = compose(retry, breaker)
    for _ in range(3):
        with contextlib.suppress(Exception):
            guarded.call(_fail)
    outcomes = calls_by_policy(reader)[("retry", "sums-retry")]
    # Before: retry=3 exhausted=2 recovered=0, and the third call in no outcome.
    assert outcomes["retry"] == 3
    ends = {k: v for k, v in outcomes.items() if k != "retry"}
    assert sum(ends.values()) == 3
    assert ends["exhausted"] == 1
    assert ends["stopped"] == 1
    assert ends["first_attempt"] == 1


def _fail() -> None:
    raise Boom


_EXAMPLES = itertools.count()


# One scripted call: its first outcomes, then the last repeats.
outcome_st = st.sampled_from(["ok", "boom", "fatal"])
scenario_st = st.lists(st.lists(outcome_st, min_size=1, max_size=5), min_size=1, max_size=12)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    scenario=scenario_st,
    attempts=st.integers(1, 4),
    use_budget=st.booleans(),
    use_breaker=st.booleans(),
    deadline=st.sampled_from([None, 0.5, 2.5]),
    block=st.booleans(),
)
def test_every_call_ends_in_exactly_one_outcome(
    reader: InMemoryMetricReader,
    scenario: list[list[str]],
    attempts: int,
    use_budget: bool,
    use_breaker: bool,
    deadline: float | None,
    block: bool,
) -> None:
    clock = ManualClock()
    name = f"sum-{next(_EXAMPLES)}"  # policies of earlier examples may still be alive
    budget = (
        RetryBudget(ttl=10, min_retries_per_second=0.1, ratio=0.3, clock=clock)
        if use_budget
        else None
    )
    retry = Retry(attempts, wait=1, on=Boom, budget=budget, clock=clock, name=name)
    breaker = CircuitBreaker(
        name, window=CountWindow(3), minimum_calls=3, open_duration=5, clock=clock
    )
    bulkhead = Bulkhead(1, name=name)
    timeout = Timeout(deadline or 10, clock=clock, name=name)
    inner: list[Any] = ([breaker] if use_breaker else []) + [bulkhead]
    guarded = compose(*inner)

    for script in scenario:
        plays = iter(script)
        last = script[-1]

        def fn(plays: Iterator[str] = plays, last: str = last) -> str:
            play = next(plays, last)
            if play == "boom":
                raise Boom
            if play == "fatal":
                raise Fatal
            return play

        def run(fn: Any = fn) -> Any:
            if not block:
                return retry.call(guarded.call, fn)
            for attempt in retry:
                with attempt:
                    result = guarded.call(fn)
            return result

        with contextlib.suppress(Exception):
            if deadline is None:
                run()
            else:
                timeout.call(run)
        clock.advance(1)

    # A held bulkhead slot makes the next caller wait for nothing: fill it once.
    with bulkhead, pytest.raises(BulkheadFullError):
        bulkhead.call(lambda: None)

    reported = calls_by_policy(reader)
    retry_ends = {k: v for k, v in reported[("retry", name)].items() if k != "retry"}
    assert sum(retry_ends.values()) == len(scenario)
    assert retry.metrics().calls == len(scenario)
    bulk = reported[("bulkhead", name)]
    assert bulk["admitted"] + bulk["rejected"] == bulkhead.metrics().admitted + 1
    if use_breaker:
        m = breaker.metrics()
        brk = reported[("circuit_breaker", name)]
        assert sum(brk.values()) == (
            m.total_successful_calls
            + m.total_failed_calls
            + m.total_ignored_calls
            + m.total_not_permitted_calls
        )
        # Every attempt reached the breaker: the calls it saw are the attempts made.
        assert sum(brk.values()) == len(scenario) + retry.metrics().retries
