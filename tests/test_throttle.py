"""AdaptiveThrottle: the SRE book's client-side throttling, driven with scripted draws.

Every test passes a ``ManualClock`` and a ``random=`` whose draws it chooses, so each
decision is known in advance: a call is shed exactly when its draw is below
``max(0, (requests - k * accepts) / (requests + 1))`` over the window.
"""

from __future__ import annotations

import logging
import random
from typing import Any

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import resilient
from resilient import (
    AdaptiveThrottle,
    Bulkhead,
    BulkheadFullError,
    CallFailed,
    CallIgnored,
    CallRejected,
    CallSucceeded,
    CircuitBreaker,
    CountWindow,
    Fallback,
    MisuseError,
    Registry,
    RejectedError,
    ThrottledError,
    compose,
)
from resilient._core._throttle import rejection_probability
from resilient.testing import ManualClock, capture_events
from throttle_helpers import (
    Draws,
    NeverDraw,
    NotFound,
    Refused,
    accepted,
    accepted_async,
    refused,
    refused_async,
)


def throttle(**options: Any) -> AdaptiveThrottle:
    options.setdefault("clock", ManualClock())
    options.setdefault("random", Draws(default=0.999))  # sheds nothing below p = 0.999
    return AdaptiveThrottle("backend", **options)


def refuse(t: AdaptiveThrottle, times: int) -> None:
    for _ in range(times):
        with pytest.raises((Refused, ThrottledError)):
            t.call(refused)


# -- the formula -------------------------------------------------------------------------


def test_nothing_is_shed_while_the_backend_accepts_everything() -> None:
    t = throttle(random=NeverDraw())  # a probability of 0 never draws
    for _ in range(1000):
        assert t.call(accepted) == "ok"
    m = t.metrics()
    assert (m.requests, m.accepts, m.rejection_probability) == (1000, 1000, 0.0)
    assert (m.admitted, m.rejected, m.accepted, m.failed) == (1000, 0, 1000, 0)


def test_a_call_is_shed_exactly_when_its_draw_is_below_the_probability() -> None:
    draws = Draws()
    t = throttle(random=draws)
    with pytest.raises(Refused):
        t.call(refused)  # requests 0: probability 0, no draw
    assert draws.calls == 0
    assert t.rejection_probability == pytest.approx(1 / 2)  # (1 - 0) / (1 + 1)
    draws.values = [0.5]  # not below 1/2: admitted, refused again
    with pytest.raises(Refused):
        t.call(refused)
    assert t.rejection_probability == pytest.approx(2 / 3)
    draws.values = [0.666]  # below 2/3: shed, and counted as a request
    with pytest.raises(ThrottledError) as shed:
        t.call(accepted)
    assert shed.value.probability == pytest.approx(2 / 3)
    assert t.rejection_probability == pytest.approx(3 / 4)
    m = t.metrics()
    assert (m.requests, m.accepts, m.admitted, m.rejected, m.failed) == (3, 0, 2, 1, 2)


def test_up_to_one_refusal_in_k_calls_is_tolerated() -> None:
    t = throttle(k=2.0, random=NeverDraw())
    for _ in range(50):
        t.call(accepted)
        with pytest.raises(Refused):
            t.call(refused)  # half refused: requests = 2 * accepts, still nothing shed
    assert t.rejection_probability == 0.0
    with pytest.raises(Refused):
        t.call(refused)  # one more: 101 requests, 50 accepts
    assert t.rejection_probability == pytest.approx(1 / 102)


def test_a_lower_k_sheds_sooner() -> None:
    t = throttle(k=1.0, random=NeverDraw())
    for _ in range(10):
        t.call(accepted)
    t._core._random = Draws().random
    with pytest.raises(Refused):
        t.call(refused)
    assert t.rejection_probability == pytest.approx((11 - 10) / 12)


@settings(deadline=None)  # up to 600 calls an example: slow on a loaded machine
@given(
    accepts=st.integers(0, 300),
    refusals=st.integers(0, 300),
    k=st.floats(1.0, 10.0),
)
def test_the_probability_is_the_books_formula(accepts: int, refusals: int, k: float) -> None:
    t = throttle(k=k, random=Draws(default=1.0 - 2**-53))  # never below p: nothing shed
    for _ in range(accepts):
        t.call(accepted)
    refuse(t, refusals)
    requests = accepts + refusals
    expected = max(0.0, (requests - k * accepts) / (requests + 1))
    assert t.rejection_probability == pytest.approx(expected, abs=1e-12)
    assert rejection_probability(requests, accepts, k) == pytest.approx(expected, abs=1e-12)
    assert 0.0 <= t.rejection_probability < 1.0


@settings(deadline=None)
@given(draws=st.lists(st.floats(0.0, 1.0, exclude_max=True), min_size=1, max_size=60))
def test_every_decision_follows_its_draw(draws: list[float]) -> None:
    source = Draws()
    t = throttle(random=source)
    requests = 0
    for draw in draws:
        p = rejection_probability(requests, 0, 2.0)
        source.values = [draw]
        try:
            t.call(refused)
        except ThrottledError:
            assert p > 0.0
            assert draw < p
        except Refused:
            assert p == 0.0 or draw >= p
        requests += 1
    assert t.metrics().requests == requests


def test_the_same_seed_sheds_the_same_calls() -> None:
    def run(seed: int) -> list[str]:
        t = throttle(random=random.Random(seed))
        out = []
        for i in range(200):
            try:
                t.call(refused if i % 3 else accepted)
                out.append("ok")
            except Refused:
                out.append("refused")
            except ThrottledError:
                out.append("shed")
        return out

    assert run(7) == run(7)
    assert "shed" in run(7)


# -- counting ----------------------------------------------------------------------------


def test_a_request_is_counted_before_the_call() -> None:
    t = throttle()
    seen = []

    def look() -> str:
        m = t.metrics()
        seen.append((m.requests, m.accepts))
        return "ok"

    t.call(look)
    assert seen == [(1, 0)]
    assert (t.metrics().requests, t.metrics().accepts) == (1, 1)


def test_the_window_slides_by_buckets() -> None:
    clock = ManualClock()
    t = throttle(window=10.0, buckets=10, clock=clock)
    refuse(t, 3)  # bucket 0
    clock.advance(5.0)
    refuse(t, 2)  # bucket 5
    assert t.metrics().requests == 5
    clock.advance(5.0)  # bucket 10: bucket 0 has left the window
    assert t.metrics().requests == 2
    clock.advance(4.9)
    assert t.metrics().requests == 2
    clock.advance(0.1)  # bucket 15: bucket 5 has left too
    assert t.metrics().requests == 0
    assert t.rejection_probability == 0.0
    clock.advance(1e6)  # a long idle time resets the ring at once
    assert t.metrics().requests == 0


def test_the_default_window_is_two_minutes_in_one_second_buckets() -> None:
    clock = ManualClock()
    t = throttle(clock=clock)
    assert t.window == 120.0
    assert t._core.buckets == 100  # one a second, at most 100: 1.2 s each
    refuse(t, 4)
    clock.advance(118.0)
    assert t.metrics().requests == 4
    clock.advance(2.0)
    assert t.metrics().requests == 0


def test_an_accept_after_its_bucket_left_the_window_is_dropped() -> None:
    clock = ManualClock()
    t = throttle(window=1.0, buckets=10, clock=clock)

    def slow() -> str:
        clock.advance(5.0)
        return "ok"

    t.call(slow)
    m = t.metrics()
    assert (m.requests, m.accepts, m.accepted) == (0, 0, 1)


def test_reset_forgets_the_window() -> None:
    t = throttle()
    refuse(t, 5)
    assert t.rejection_probability > 0
    t.reset()
    assert t.rejection_probability == 0.0
    assert t.metrics().failed == 5  # the counts since creation stay


# -- classification ----------------------------------------------------------------------


def test_record_names_what_the_backend_did_not_accept() -> None:
    t = throttle(record=Refused)

    def not_found() -> None:
        raise NotFound

    for _ in range(5):
        with pytest.raises(NotFound):
            t.call(not_found)  # served: an answer, not a refusal
    m = t.metrics()
    assert (m.accepts, m.accepted, m.failed) == (5, 5, 0)
    refuse(t, 1)
    assert t.metrics().failed == 1


def test_a_record_predicate() -> None:
    t = throttle(record=lambda exc: isinstance(exc, Refused))
    refuse(t, 2)
    with pytest.raises(NotFound):
        t.call(_raise(NotFound()))
    assert (t.metrics().failed, t.metrics().accepted) == (2, 1)


def _raise(exc: BaseException) -> Any:
    def fn() -> None:
        raise exc

    return fn


def test_ignored_exceptions_take_their_request_back() -> None:
    t = throttle(ignore=NotFound)
    for _ in range(4):
        with pytest.raises(NotFound):
            t.call(_raise(NotFound()))
    m = t.metrics()
    assert (m.requests, m.accepts, m.ignored, m.admitted) == (0, 0, 4, 4)


def test_record_result_counts_a_value_as_refused_and_still_returns_it() -> None:
    t = throttle(record_result=lambda status: status == 503)
    assert t.call(lambda: 503) == 503
    assert t.call(lambda: 200) == 200
    m = t.metrics()
    assert (m.requests, m.accepts, m.failed, m.accepted) == (2, 1, 1, 1)


def test_inner_rejections_say_nothing_about_the_backend() -> None:
    full = Bulkhead(1)
    t = throttle()
    guarded = compose(t, full)(accepted)
    with full:
        for _ in range(3):
            with pytest.raises(BulkheadFullError):
                guarded()
    m = t.metrics()
    assert (m.requests, m.ignored) == (0, 3)


def test_inner_rejections_count_when_record_names_them() -> None:
    full = Bulkhead(1)
    t = throttle(record=(Refused, BulkheadFullError))
    with full, pytest.raises(BulkheadFullError):
        compose(t, full).call(accepted)
    assert t.metrics().failed == 1


def test_a_misuse_is_neither() -> None:
    t = throttle()

    async def coro() -> None: ...

    def returns_a_coroutine() -> Any:  # guarded as sync: refused after it ran
        return coro()

    with pytest.raises(MisuseError):
        t.call(returns_a_coroutine)
    m = t.metrics()
    assert (m.requests, m.ignored, m.failed) == (0, 1, 0)


def test_a_raising_record_predicate_counts_as_refused_and_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(exc: BaseException) -> bool:
        raise RuntimeError("bug")

    t = throttle(record=broken)
    with caplog.at_level(logging.ERROR, logger="resilient"), pytest.raises(Refused):
        t.call(refused)
    assert t.metrics().failed == 1
    assert "record/ignore predicate of adaptive throttle 'backend'" in caplog.text


def test_a_raising_record_result_counts_as_accepted_and_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(result: object) -> bool:
        raise RuntimeError("bug")

    t = throttle(record_result=broken)
    with caplog.at_level(logging.ERROR, logger="resilient"):
        assert t.call(accepted) == "ok"
    assert t.metrics().accepted == 1
    assert "record_result of adaptive throttle 'backend'" in caplog.text


# -- interrupts and cancellation ---------------------------------------------------------


def _interrupt(*args: object) -> bool:
    raise KeyboardInterrupt


@pytest.mark.parametrize("where", ["function", "record", "ignore", "record_result"])
def test_an_interrupt_in_the_call_or_a_predicate_takes_the_request_back(where: str) -> None:
    options: dict[str, Any] = {}
    fn: Any = refused
    if where == "function":
        fn = _raise(KeyboardInterrupt())
    elif where == "record_result":
        options["record_result"] = _interrupt
        fn = accepted
    else:
        options[where] = _interrupt
    t = throttle(**options)
    with pytest.raises(KeyboardInterrupt):
        t.call(fn)
    m = t.metrics()
    assert (m.requests, m.accepts, m.admitted) == (0, 0, 1)
    assert (m.accepted, m.failed, m.ignored) == (0, 0, 0)
    assert throttle_works(t)  # and it goes on working


def test_an_interrupt_in_the_draw_counts_nothing() -> None:
    class Interrupting:
        interrupt = False

        def random(self) -> float:
            if self.interrupt:
                raise KeyboardInterrupt
            return 0.999

    source = Interrupting()
    t = throttle(random=source)
    refuse(t, 1)  # something to shed: the next call draws
    source.interrupt = True
    with pytest.raises(KeyboardInterrupt):
        t.call(accepted)
    m = t.metrics()
    assert (m.requests, m.admitted, m.rejected) == (1, 1, 0)
    source.interrupt = False
    assert throttle_works(t)


def throttle_works(t: AdaptiveThrottle) -> bool:
    t._core._record = None  # nothing is refused from here on
    t._core._ignore = None
    t._core._record_result = None
    before = t.metrics()
    t.call(accepted)
    after = t.metrics()
    return (after.requests, after.accepts) == (before.requests + 1, before.accepts + 1)


async def test_a_cancelled_call_takes_its_request_back(anyio_backend: str) -> None:
    t = throttle()
    started = anyio.Event()

    async def hang() -> None:
        started.set()
        await anyio.sleep_forever()

    async with anyio.create_task_group() as tg:
        tg.start_soon(t.call_async, hang)
        await started.wait()
        assert t.metrics().requests == 1
        tg.cancel_scope.cancel()
    m = t.metrics()
    assert (m.requests, m.admitted, m.failed, m.ignored) == (0, 1, 0, 0)


# -- async, decorators, with, compose ----------------------------------------------------


async def test_async_calls_share_the_window(anyio_backend: str) -> None:
    draws = Draws(default=0.0)  # every draw sheds once the probability is above 0
    t = throttle(random=draws)

    @t
    async def decorated() -> str:
        return await refused_async()

    with pytest.raises(Refused):
        await decorated()
    with pytest.raises(ThrottledError):
        await t.call_async(accepted_async)
    with pytest.raises(ThrottledError):
        t.call(accepted)
    assert t.metrics().requests == 3


def test_with_block() -> None:
    t = throttle()
    with t:
        pass
    with pytest.raises(Refused), t:
        raise Refused
    m = t.metrics()
    assert (m.accepted, m.failed) == (1, 1)


def test_a_fallback_answers_a_shed_call() -> None:
    t = throttle(random=Draws(default=0.0))
    guarded = compose(Fallback(lambda exc: f"spare:{type(exc).__name__}"), t)(refused)
    assert guarded() == "spare:Refused"
    assert guarded() == "spare:ThrottledError"


def test_a_breaker_outside_does_not_count_a_shed_call() -> None:
    breaker = CircuitBreaker(window=CountWindow(2), minimum_calls=1)
    t = throttle(random=Draws(default=0.0))
    guarded = compose(breaker, t)
    with pytest.raises(Refused):
        guarded.call(refused)  # the breaker opens on this failure (rate 1.0)
    breaker.reset()
    with pytest.raises(ThrottledError):
        guarded.call(accepted)
    assert breaker.metrics().failed_calls == 0


def test_the_error() -> None:
    t = throttle(random=Draws(default=0.0))
    refuse(t, 1)
    with pytest.raises(ThrottledError) as caught:
        t.call(accepted)
    error = caught.value
    assert isinstance(error, RejectedError)
    assert error.policy == "backend"
    assert error.probability == pytest.approx(0.5)
    assert str(error) == (
        "adaptive throttle 'backend' shed the call: the backend is refusing recent calls "
        "(rejection probability 0.500)"
    )
    assert repr(resilient.ThrottledError).startswith("<class 'resilient.ThrottledError'")


# -- events, registry, readings ----------------------------------------------------------


def test_events() -> None:
    t = throttle(ignore=NotFound, random=Draws(default=0.0))
    with capture_events() as events:
        t.call(accepted)
        with pytest.raises(NotFound):
            t.call(_raise(NotFound()))
        refuse(t, 2)  # 3 requests, 1 accept: the next call is shed with p = 1/4
        refuse(t, 1)
    kinds = [type(e) for e in events]
    assert kinds == [CallSucceeded, CallIgnored, CallFailed, CallFailed, CallRejected]
    assert {e.kind for e in events} == {"adaptive_throttle"}
    assert {e.policy for e in events} == {"backend"}
    assert isinstance(events[-1].error, ThrottledError)  # type: ignore[attr-defined]


def test_a_raising_listener_changes_nothing() -> None:
    t = throttle(random=Draws(default=0.0))

    def broken(event: object) -> None:
        raise RuntimeError("listener bug")

    t.add_listener(broken)
    refuse(t, 2)
    assert t.listener_errors == 2
    assert t.metrics().requests == 2


def test_registry() -> None:
    registry = Registry({"adaptive_throttle": {"k": 3.0}})
    t = registry.adaptive_throttle("search", window=60.0)
    assert registry.adaptive_throttle("search") is t
    assert (t.name, t.k, t.window) == ("search", 3.0, 60.0)
    registry.configure({"ads": {"kind": "adaptive_throttle", "k": 1.5}})
    assert registry.get("ads").kind == "adaptive_throttle"
    t.call(accepted)
    snapshot = registry.snapshot()["search"]
    assert snapshot["kind"] == "adaptive_throttle"
    assert (snapshot["requests"], snapshot["accepts"], snapshot["rejection_probability"]) == (
        1,
        1,
        0.0,
    )
    with pytest.raises(ValueError, match="k must be"):
        registry.adaptive_throttle("bad", k=0.5)


def test_repr_and_properties() -> None:
    t = throttle(k=1.5, window=30)
    assert repr(t) == "<AdaptiveThrottle 'backend' k=1.5 window=30s>"
    assert t.kind == "adaptive_throttle"


@pytest.mark.parametrize(
    ("options", "option"),
    [
        ({"k": 0.99}, "k"),
        ({"k": 1e7}, "k"),
        ({"window": 0}, "window"),
        ({"window": 1.0, "buckets": 1001}, "buckets"),
        ({"window": 0.005, "buckets": 10}, "buckets"),
        ({"random": object()}, "random"),
        ({"record_result": 3}, "record_result"),
        ({"ignore": KeyboardInterrupt}, "ignore"),
    ],
)
def test_options_are_checked(options: dict[str, Any], option: str) -> None:
    with pytest.raises((ValueError, TypeError), match=option):
        AdaptiveThrottle(**options)


def test_a_shed_calls_error_reads_pickles_and_copies_as_one_made_by_hand() -> None:
    import copy  # noqa: PLC0415
    import pickle  # noqa: PLC0415

    t = throttle(random=Draws(default=0.0))
    refuse(t, 1)
    with pytest.raises(ThrottledError) as caught:
        t.call(accepted)
    built = caught.value
    text = (
        "adaptive throttle 'backend' shed the call: the backend is refusing recent calls "
        "(rejection probability 0.500)"
    )
    by_hand = ThrottledError(text, policy="backend", probability=0.5)
    for error in (built, by_hand):
        assert error.args == (text,)
        assert repr(error) == f"ThrottledError({text!r})"
        for twin in (pickle.loads(pickle.dumps(error)), copy.copy(error)):  # noqa: S301 -- our own
            assert type(twin) is ThrottledError
            assert (str(twin), twin.policy, twin.probability) == (text, "backend", 0.5)
    unnamed = AdaptiveThrottle(clock=ManualClock(), random=Draws(default=0.0))
    refuse(unnamed, 1)
    with pytest.raises(ThrottledError, match=r"^adaptive throttle shed the call"):
        unnamed.call(accepted)
