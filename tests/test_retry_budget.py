"""Retry budgets: RetryBudget (Finagle) and RetryThrottle (gRPC), alone and under a Retry.

RetryBudget's rule, as Finagle's TokenRetryBudget applies it: a retry is allowed when,
counting it, the retries in the window stay within ``reserve + ratio * first_attempts``
(``reserve = min_retries_per_second * ttl``). The window is ``ttl`` seconds cut into 10
buckets, so a deposit or a withdrawal made in bucket ``b`` counts while the current bucket
is below ``b + 10``. The Hypothesis test checks the budget against a brute-force model
that keeps every timestamped deposit and withdrawal in a list. Times, ratios and reserves
there are dyadic, so the model's exact fractions and the budget's floats agree exactly.

RetryThrottle is gRPC's: tokens start at ``max_tokens``; a failed attempt takes 1, a
success gives back ``token_ratio`` (never above ``max_tokens``); a retry is allowed while
``tokens > max_tokens / 2``.

All time is a ManualClock's; nothing sleeps for real.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from fractions import Fraction
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resilient import (
    BudgetSnapshot,
    Event,
    RetriesExhausted,
    Retry,
    RetryBudget,
    RetryMetrics,
    RetryScheduled,
    RetryThrottle,
    Timeout,
    compose,
)
from resilient.testing import ManualClock, capture_events

# -- helpers ------------------------------------------------------------------------------


class Boom(Exception):
    pass


class Script:
    """The n-th call (from 1) plays ``outcomes[n - 1]`` (the last repeats); see test_retry."""

    def __init__(self, *outcomes: object) -> None:
        self.outcomes = outcomes
        self.calls = 0
        self.raised: list[BaseException] = []

    def __call__(self) -> Any:
        self.calls += 1
        outcome = self.outcomes[min(self.calls, len(self.outcomes)) - 1]
        if isinstance(outcome, type) and issubclass(outcome, BaseException):
            outcome = outcome(self.calls)
        if isinstance(outcome, BaseException):
            self.raised.append(outcome)
            raise outcome
        return outcome


class Flavor:
    """Runs a function through a policy: ``call()``, or ``call_async()`` on a backend."""

    def __init__(self, backend: str | None) -> None:
        self.backend = backend

    def run(self, policy: Any, fn: Callable[[], Any]) -> Any:
        if self.backend is None:
            return policy.call(fn)

        async def target() -> Any:
            await anyio.lowlevel.checkpoint()
            return fn()

        async def main() -> tuple[bool, Any]:
            try:
                return True, await policy.call_async(target)
            except BaseException as exc:
                return False, exc

        ok, value = anyio.run(main, backend=self.backend)
        if ok:
            return value
        raise value


@pytest.fixture(params=["sync", "asyncio", "trio"])
def flavor(request: pytest.FixtureRequest) -> Flavor:
    return Flavor(None if request.param == "sync" else str(request.param))


def reasons(events: list[Event]) -> list[str]:
    return [e.reason for e in events if isinstance(e, RetriesExhausted)]


# -- options ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "error", "option"),
    [
        (lambda: RetryBudget(ttl=0), ValueError, "ttl"),
        (lambda: RetryBudget(ttl=-1), ValueError, "ttl"),
        (lambda: RetryBudget(ttl="x"), TypeError, "ttl"),
        (lambda: RetryBudget(ratio=0), ValueError, "ratio"),
        (lambda: RetryBudget(ratio=1.5), ValueError, "ratio"),
        (lambda: RetryBudget(ratio=-0.1), ValueError, "ratio"),
        (lambda: RetryBudget(ratio="x"), TypeError, "ratio"),
        (lambda: RetryBudget(min_retries_per_second=-1), ValueError, "min_retries_per_second"),
        (lambda: RetryBudget(min_retries_per_second=None), TypeError, "min_retries_per_second"),
        (lambda: RetryThrottle(max_tokens=0), ValueError, "max_tokens"),
        (lambda: RetryThrottle(max_tokens=-5), ValueError, "max_tokens"),
        (lambda: RetryThrottle(max_tokens="10"), TypeError, "max_tokens"),
        (lambda: RetryThrottle(token_ratio=0), ValueError, "token_ratio"),
        (lambda: RetryThrottle(token_ratio=float("inf")), ValueError, "token_ratio"),
    ],
)
def test_bad_options_raise_naming_the_option(
    build: Callable[[], object], error: type[Exception], option: str
) -> None:
    with pytest.raises(error, match=rf"\b{option}\b"):
        build()


def test_defaults() -> None:
    budget = RetryBudget()
    assert (budget.ttl, budget.min_retries_per_second, budget.ratio) == (10.0, 10.0, 0.2)
    assert budget.reserve == 100.0
    throttle = RetryThrottle()
    assert (throttle.max_tokens, throttle.token_ratio) == (10.0, 0.1)
    assert throttle.snapshot() == BudgetSnapshot(5.0, 0, 0, 0)
    assert Retry(budget=budget).budget is budget


# -- RetryBudget: the rule ----------------------------------------------------------------------


def test_first_attempts_deposit_and_retries_withdraw() -> None:
    budget = RetryBudget(ttl=10, min_retries_per_second=0, ratio=0.2, clock=ManualClock())
    assert budget.try_retry() is False  # nothing deposited, no reserve
    for _ in range(4):
        budget.on_first_attempt()
    assert budget.try_retry() is False  # 4 x 0.2 < 1
    budget.on_first_attempt()
    assert budget.try_retry() is True  # 5 x 0.2 = 1 retry
    assert budget.try_retry() is False
    for _ in range(5):
        budget.on_first_attempt()
    assert budget.try_retry() is True  # 10 x 0.2 = 2 retries, 1 taken
    assert budget.try_retry() is False
    assert budget.snapshot() == BudgetSnapshot(balance=0.0, first_attempts=10, retries=2, refused=4)


def test_outcomes_do_not_matter_to_a_retry_budget() -> None:
    budget = RetryBudget(ttl=10, min_retries_per_second=0, ratio=0.5, clock=ManualClock())
    budget.on_first_attempt()
    budget.on_first_attempt()
    for _ in range(10):
        budget.on_outcome(failed=True)
        budget.on_outcome(failed=False)
    assert budget.snapshot() == BudgetSnapshot(1.0, 2, 0, 0)


def test_the_reserve_allows_retries_with_no_traffic() -> None:
    clock = ManualClock()
    budget = RetryBudget(ttl=10, min_retries_per_second=0.5, ratio=0.2, clock=clock)
    assert budget.reserve == 5.0
    assert [budget.try_retry() for _ in range(6)] == [True] * 5 + [False]
    assert budget.snapshot() == BudgetSnapshot(0.0, 0, 5, 1)
    clock.advance(10)  # the withdrawals expire; the reserve is there again
    assert [budget.try_retry() for _ in range(6)] == [True] * 5 + [False]
    assert budget.snapshot().refused == 2


def test_the_reserve_is_a_floor_under_the_ratio() -> None:
    budget = RetryBudget(ttl=1, min_retries_per_second=2, ratio=0.5, clock=ManualClock())
    for _ in range(4):
        budget.on_first_attempt()
    # reserve 2 + 4 x 0.5 = 4 retries
    assert [budget.try_retry() for _ in range(5)] == [True] * 4 + [False]
    assert budget.snapshot() == BudgetSnapshot(0.0, 4, 4, 1)


def test_deposits_and_withdrawals_expire_after_ttl() -> None:
    clock = ManualClock()
    budget = RetryBudget(ttl=10, min_retries_per_second=0, ratio=0.5, clock=clock)
    budget.on_first_attempt()
    budget.on_first_attempt()
    assert budget.try_retry() is True
    clock.advance(5)
    budget.on_first_attempt()
    budget.on_first_attempt()
    assert budget.try_retry() is True
    assert budget.snapshot() == BudgetSnapshot(0.0, 4, 2, 0)
    clock.advance(4.875)  # t = 9.875: everything still counts
    assert budget.snapshot() == BudgetSnapshot(0.0, 4, 2, 0)
    assert budget.try_retry() is False
    clock.advance(0.125)  # t = 10: what happened at t = 0 has expired
    assert budget.snapshot() == BudgetSnapshot(0.0, 2, 1, 1)
    clock.advance(5)  # t = 15: everything has expired
    assert budget.snapshot() == BudgetSnapshot(0.0, 0, 0, 1)
    assert budget.try_retry() is False


def test_a_deposit_lives_between_ttl_minus_one_bucket_and_ttl() -> None:
    """The window is 10 buckets of ttl / 10: expiry happens at bucket boundaries."""
    clock = ManualClock()
    budget = RetryBudget(ttl=10, min_retries_per_second=0, ratio=1.0, clock=clock)
    clock.advance(0.5)  # in the middle of bucket 0
    budget.on_first_attempt()
    clock.advance(9.0)  # t = 9.5, bucket 9
    assert budget.snapshot().first_attempts == 1
    clock.advance(0.5)  # t = 10.0: bucket 0 has left the window, 9.5 s after the deposit
    assert budget.snapshot().first_attempts == 0


def test_a_long_idle_period_empties_the_window() -> None:
    clock = ManualClock(start=123.0)
    budget = RetryBudget(ttl=2, min_retries_per_second=0, ratio=1.0, clock=clock)
    for _ in range(50):
        budget.on_first_attempt()
    assert budget.try_retry() is True
    clock.advance(10_000)
    assert budget.snapshot() == BudgetSnapshot(0.0, 0, 0, 0)
    assert budget.try_retry() is False


def test_concurrent_withdrawals_never_exceed_the_budget() -> None:
    budget = RetryBudget(ttl=10, min_retries_per_second=10, ratio=0.2, clock=ManualClock())
    allowed: list[int] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def worker() -> None:
        start.wait(timeout=10)
        mine = sum(budget.try_retry() for _ in range(50))
        with lock:
            allowed.append(mine)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sum(allowed) == 100  # the reserve, exactly
    assert budget.snapshot() == BudgetSnapshot(0.0, 0, 100, 300)


# -- RetryBudget against a brute-force model (Hypothesis) -----------------------------------


class BudgetModel:
    """Every deposit and withdrawal, timestamped in ticks of 1/4 s, in one plain list."""

    def __init__(self, ttl: float, min_retries_per_second: float, ratio: float) -> None:
        self.bucket_ticks = int(ttl * 4) // 10  # ttl / 10 seconds, in ticks
        self.reserve = Fraction(min_retries_per_second) * Fraction(ttl)
        self.ratio = Fraction(ratio)
        self.log: list[tuple[int, str]] = []
        self.refused = 0

    def counts(self, now: int) -> tuple[int, int]:
        current = now // self.bucket_ticks
        live = [kind for tick, kind in self.log if tick // self.bucket_ticks > current - 10]
        return live.count("first"), live.count("retry")

    def first(self, now: int) -> None:
        self.log.append((now, "first"))

    def try_retry(self, now: int) -> bool:
        firsts, retries = self.counts(now)
        if retries + 1 <= self.reserve + self.ratio * firsts:
            self.log.append((now, "retry"))
            return True
        self.refused += 1
        return False

    def snapshot(self, now: int) -> BudgetSnapshot:
        firsts, retries = self.counts(now)
        balance = max(self.reserve + self.ratio * firsts - retries, Fraction(0))
        return BudgetSnapshot(float(balance), firsts, retries, self.refused)


OPERATIONS = st.lists(
    st.one_of(
        st.tuples(st.just("first"), st.integers(1, 6)),
        st.tuples(st.just("retry"), st.integers(1, 6)),
        st.tuples(st.just("advance"), st.integers(0, 30)),
    ),
    max_size=60,
)


@settings(derandomize=True, database=None, max_examples=400, deadline=None)
@given(
    ttl=st.sampled_from([2.5, 5.0, 10.0, 20.0]),
    min_retries_per_second=st.sampled_from([0.0, 0.25, 0.5, 1.0]),
    ratio=st.sampled_from([0.125, 0.25, 0.5, 0.75, 1.0]),
    start=st.integers(0, 1000),
    operations=OPERATIONS,
)
def test_retry_budget_answers_as_the_brute_force_model(
    ttl: float,
    min_retries_per_second: float,
    ratio: float,
    start: int,
    operations: list[tuple[str, int]],
) -> None:
    clock = ManualClock(start=start / 4)
    budget = RetryBudget(
        ttl=ttl, min_retries_per_second=min_retries_per_second, ratio=ratio, clock=clock
    )
    model = BudgetModel(ttl, min_retries_per_second, ratio)
    now = start
    for kind, amount in operations:
        if kind == "advance":
            clock.advance(amount / 4)
            now += amount
        elif kind == "first":
            for _ in range(amount):
                budget.on_first_attempt()
                model.first(now)
        else:
            for _ in range(amount):
                assert budget.try_retry() == model.try_retry(now), (now, model.counts(now))
        assert budget.snapshot() == model.snapshot(now)


class ThrottleModel:
    def __init__(self, max_tokens: int, token_ratio: float) -> None:
        self.max = Fraction(max_tokens)
        self.ratio = Fraction(token_ratio)
        self.tokens = self.max
        self.refused = 0
        self.retries = 0

    def outcome(self, failed: bool) -> None:
        if failed:
            self.tokens = max(self.tokens - 1, Fraction(0))
        else:
            self.tokens = min(self.tokens + self.ratio, self.max)

    def try_retry(self) -> bool:
        if self.tokens > self.max / 2:
            self.retries += 1
            return True
        self.refused += 1
        return False


@settings(derandomize=True, database=None, max_examples=300, deadline=None)
@given(
    max_tokens=st.sampled_from([1, 2, 3, 10, 100]),
    token_ratio=st.sampled_from([0.125, 0.25, 0.5, 1.0]),
    operations=st.lists(st.sampled_from(["fail", "success", "retry"]), max_size=80),
)
def test_retry_throttle_answers_as_the_grpc_model(
    max_tokens: int, token_ratio: float, operations: list[str]
) -> None:
    throttle = RetryThrottle(max_tokens=max_tokens, token_ratio=token_ratio)
    model = ThrottleModel(max_tokens, token_ratio)
    for operation in operations:
        if operation == "retry":
            assert throttle.try_retry() == model.try_retry()
        else:
            throttle.on_outcome(failed=operation == "fail")
            model.outcome(failed=operation == "fail")
        balance = max(model.tokens - model.max / 2, Fraction(0))
        assert throttle.snapshot() == BudgetSnapshot(
            float(balance), 0, model.retries, model.refused
        )


# -- RetryThrottle: the rule ------------------------------------------------------------------


def test_retry_throttle_rule() -> None:
    throttle = RetryThrottle(max_tokens=10, token_ratio=0.5)
    for _ in range(4):
        throttle.on_outcome(failed=True)
    assert throttle.try_retry() is True  # 6 > 5
    throttle.on_outcome(failed=True)
    assert throttle.try_retry() is False  # 5 is not > 5
    throttle.on_outcome(failed=False)
    assert throttle.try_retry() is True  # 5.5 > 5
    for _ in range(20):
        throttle.on_outcome(failed=True)  # floors at 0
    assert throttle.snapshot().balance == 0.0
    for _ in range(100):
        throttle.on_outcome(failed=False)  # capped at max_tokens
    assert throttle.snapshot().balance == 5.0
    assert throttle.snapshot().refused == 1


# -- budgets under a Retry ---------------------------------------------------------------------


def test_a_refused_retry_reraises_the_last_error_at_once(flavor: Flavor) -> None:
    clock = ManualClock()
    budget = RetryBudget(ttl=10, min_retries_per_second=0, ratio=0.2, clock=clock)
    retry = Retry(5, wait=3, budget=budget, clock=clock, name="r")
    script = Script(Boom)
    with capture_events() as events, pytest.raises(Boom) as info:
        flavor.run(retry, script)
    assert info.value is script.raised[0]
    assert script.calls == 1
    assert clock.monotonic() == 0  # no wait before giving up
    assert [e for e in events if isinstance(e, RetryScheduled)] == []
    assert [e for e in events if isinstance(e, RetriesExhausted)] == [
        RetriesExhausted("r", "retry", 1, "budget", info.value, None)
    ]
    assert budget.snapshot() == BudgetSnapshot(0.2, 1, 0, 1)
    assert retry.metrics() == RetryMetrics(0, 0, 0, 0, budget_refusals=1)


def test_a_refused_retry_returns_a_retryable_result_as_is(flavor: Flavor) -> None:
    clock = ManualClock()
    budget = RetryBudget(ttl=10, min_retries_per_second=0.1, ratio=0.2, clock=clock)
    retry = Retry(5, wait=1, on_result=lambda r: r == "busy", budget=budget, clock=clock)
    script = Script("busy")
    with capture_events() as events:
        assert flavor.run(retry, script) == "busy"
    # reserve 1 + 0.2 deposited: one retry, then 0.2 left refuses the next.
    assert script.calls == 2
    assert reasons(events) == ["budget"]
    assert retry.metrics() == RetryMetrics(1, 0, 0, 0, 1)


def test_mixed_traffic_accounting_through_retry(flavor: Flavor) -> None:
    clock = ManualClock()
    budget = RetryBudget(ttl=10, min_retries_per_second=0, ratio=0.5, clock=clock)
    retry = Retry(2, wait=0, budget=budget, clock=clock)
    for _ in range(4):
        assert flavor.run(retry, Script("ok")) == "ok"  # 4 deposits: 2 retries' worth
    assert budget.snapshot() == BudgetSnapshot(2.0, 4, 0, 0)
    # Each failing call deposits 0.5 and its retry withdraws 1.
    outcomes = []
    for _ in range(5):
        script = Script(Boom, "recovered")
        try:
            outcomes.append(flavor.run(retry, script))
        except Boom:
            outcomes.append("refused")
    assert outcomes == ["recovered"] * 4 + ["refused"]
    assert budget.snapshot() == BudgetSnapshot(0.5, 9, 4, 1)  # 9 x 0.5 - 4
    assert retry.metrics() == RetryMetrics(4, 4, 0, 0, 1, first_attempt=4)

    clock.advance(10)  # the window empties
    assert budget.snapshot() == BudgetSnapshot(0.0, 0, 0, 1)
    with pytest.raises(Boom):
        flavor.run(retry, Script(Boom, "recovered"))  # 0.5 deposited: not enough
    assert budget.snapshot() == BudgetSnapshot(0.5, 1, 0, 2)
    assert flavor.run(retry, Script(Boom, "recovered")) == "recovered"  # 1.0: enough
    assert budget.snapshot() == BudgetSnapshot(0.0, 2, 1, 2)
    assert retry.metrics().budget_refusals == budget.snapshot().refused == 2


def test_mixed_traffic_with_waits_matches_a_simulation() -> None:
    """Seeded random traffic through a Retry whose waits move the budget's window."""
    rng = random.Random(31337)
    clock = ManualClock()
    budget = RetryBudget(ttl=5, min_retries_per_second=0.25, ratio=0.25, clock=clock)
    retry = Retry(4, wait=0.25, budget=budget, clock=clock)
    model = BudgetModel(5.0, 0.25, 0.25)
    now = 0
    for _ in range(400):
        failures = rng.choice([0, 0, 0, 1, 2, 3, 4])
        gap = rng.choice([0, 1, 2, 4])
        clock.advance(gap / 4)
        now += gap
        script = Script(*([Boom] * failures), "ok")
        # The model plays the same call: deposit, then per failure a retry if allowed.
        model.first(now)
        expected_calls, expected = 1, "ok"
        for failed_attempt in range(1, failures + 1):
            if failed_attempt == 4:
                expected = "exhausted"
                break
            if not model.try_retry(now):
                expected = "refused"
                break
            now += 1  # the 0.25 s wait
            expected_calls += 1
        with capture_events() as events:
            try:
                got = retry.call(script)
            except Boom:
                got = reasons(events)[0]
        want = {"ok": "ok", "exhausted": "attempts", "refused": "budget"}[expected]
        assert (got, script.calls) == (want, expected_calls)
        assert clock.monotonic() == now / 4
        assert budget.snapshot() == model.snapshot(now)
    assert retry.metrics().budget_refusals == model.refused > 0


def test_one_budget_shared_by_many_retries(flavor: Flavor) -> None:
    clock = ManualClock()
    budget = RetryBudget(ttl=10, min_retries_per_second=0.25, ratio=0.25, clock=clock)
    first = Retry(3, wait=1, budget=budget, clock=clock)
    second = Retry(3, wait=1, budget=budget, clock=clock)
    # reserve 2.5, plus 0.25 per first attempt: 3 retries in all, whoever takes them.
    a = Script(Boom)
    with pytest.raises(Boom):
        flavor.run(first, a)
    b = Script(Boom)
    with pytest.raises(Boom):
        flavor.run(second, b)
    assert (a.calls, b.calls) == (3, 2)
    assert budget.snapshot() == BudgetSnapshot(0.0, 2, 3, 1)  # 2.5 + 2 x 0.25 - 3
    assert first.metrics() == RetryMetrics(2, 0, 1, 0, 0)
    assert second.metrics() == RetryMetrics(1, 0, 0, 0, 1)


def test_retry_throttle_under_a_retry(flavor: Flavor) -> None:
    clock = ManualClock()
    throttle = RetryThrottle(max_tokens=10, token_ratio=0.25)
    retry = Retry(100, wait=1, budget=throttle, clock=clock)
    # Failed attempts take 10 -> 9 -> ... -> 5; at 5 (not > 5) the retry is refused.
    script = Script(Boom)
    with capture_events() as events, pytest.raises(Boom) as info:
        flavor.run(retry, script)
    assert info.value is script.raised[-1]
    assert script.calls == 5
    assert reasons(events) == ["budget"]
    assert throttle.snapshot() == BudgetSnapshot(0.0, 1, 4, 1)

    # Successes give back 0.25 each: one is enough to get above half again.
    assert flavor.run(retry, Script("ok")) == "ok"
    assert throttle.snapshot().balance == 0.25
    recovered = Script(Boom, "ok")  # 4.25 after the failure: refused
    with pytest.raises(Boom):
        flavor.run(retry, recovered)
    assert recovered.calls == 1
    for _ in range(8):
        flavor.run(retry, Script("ok"))  # 4.25 + 2.0 = 6.25
    recovered = Script(Boom, "ok")  # 5.25 after the failure: allowed; then 5.5
    assert flavor.run(retry, recovered) == "ok"
    assert recovered.calls == 2
    assert throttle.snapshot() == BudgetSnapshot(0.5, 12, 5, 2)
    assert retry.metrics() == RetryMetrics(5, 1, 0, 0, 2, first_attempt=9)


def test_a_deadline_give_up_does_not_spend_the_budget(flavor: Flavor) -> None:
    clock = ManualClock()
    budget = RetryBudget(ttl=10, min_retries_per_second=0.2, ratio=0.2, clock=clock)
    retry = Retry(3, wait=5, budget=budget, clock=clock)
    with capture_events() as events, pytest.raises(Boom):
        flavor.run(compose(Timeout(2, clock=clock), retry), Script(Boom))
    assert reasons(events) == ["deadline"]
    assert budget.snapshot() == BudgetSnapshot(2.2, 1, 0, 0)


def test_interrupts_leave_the_budget_consistent(flavor: Flavor) -> None:
    budget = RetryBudget(ttl=10, min_retries_per_second=0, ratio=1.0, clock=ManualClock())
    retry = Retry(3, wait=1, budget=budget, clock=ManualClock())
    with pytest.raises(KeyboardInterrupt):
        flavor.run(retry, Script(KeyboardInterrupt))
    assert budget.snapshot() == BudgetSnapshot(1.0, 1, 0, 0)
