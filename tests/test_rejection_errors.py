"""What a rejection looks like to the caller, on every path that refuses a call.

Rejections are built cheaply (issue 16: no ``__init__`` chain, the message formatted
only when read), so these tests pin everything a caller can observe of them: the exact
text of ``str()``, ``repr()``, ``args``, the documented attributes, ``except`` matching,
pickling and copying, ``__cause__``/``__context__``, a fresh instance and traceback per
rejection, the event record, and exact counts (from several threads too).

Each refusing path is reached through every entry a caller has: the decorator (sync and
async), ``call()``, and ``with`` blocks. The limiters' lock-free refusal runs only on the
default clock, so some cases use it (their ``retry_after`` is read back, not predicted).
"""

from __future__ import annotations

import contextlib
import copy
import pickle
import sys
import threading
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import resilient
from resilient import (
    Bulkhead,
    BulkheadFullError,
    CallRejected,
    CircuitBreaker,
    CircuitOpenError,
    CircuitState,
    CountWindow,
    KeyedRateLimiter,
    RateLimitedError,
    RateLimiter,
    RejectedError,
    ResilienceError,
)
from resilient.testing import ManualClock, capture_events

# One call per million seconds: on the default clock, the second call is refused for
# the rest of the test run.
SLOW = 1e-6


def ok(*_: Any) -> int:
    return 1


async def aok(*_: Any) -> int:
    return 1


def refused(fn: Callable[..., Any], *args: Any) -> Exception:
    """Call ``fn``, which must be refused; return the rejection."""
    with pytest.raises(RejectedError) as info:
        fn(*args)
    return info.value


async def arefused(fn: Callable[..., Awaitable[Any]], *args: Any) -> Exception:
    with pytest.raises(RejectedError) as info:
        await fn(*args)
    return info.value


def frames(error: BaseException) -> list[str]:
    return [frame.name for frame in traceback.extract_tb(error.__traceback__)]


def assert_same_error(copied: Exception, error: Exception) -> None:
    """``copied`` (a pickled or copied ``error``) reads exactly as ``error`` does."""
    assert type(copied) is type(error)
    assert str(copied) == str(error)
    assert repr(copied) == repr(error)
    for name in ("policy", "retry_after", "state"):
        assert getattr(copied, name, None) == getattr(error, name, None), name


def assert_round_trips(error: Exception) -> None:
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        assert_same_error(pickle.loads(pickle.dumps(error, protocol)), error)  # noqa: S301
    assert_same_error(copy.copy(error), error)
    assert_same_error(copy.deepcopy(error), error)


def assert_a_rejection(error: Exception, kind: type[RejectedError]) -> None:
    assert type(error) is kind
    assert isinstance(error, RejectedError)
    assert isinstance(error, ResilienceError)
    assert not isinstance(error, TimeoutError)
    assert error.__cause__ is None
    assert error.__suppress_context__ is False


# -- the rate limiters ----------------------------------------------------------------


def limited(name: str | None = "api") -> RateLimiter:
    """2 per second on a manual clock, with both calls of the burst taken."""
    limiter = RateLimiter(2, name=name, clock=ManualClock())
    limiter.call(ok)
    limiter.call(ok)
    return limiter


API_TEXT = "rate limiter 'api': rate of 2 per 1s exceeded; retry in 0.500s"


def test_a_rate_limited_error_reads_as_before() -> None:
    limiter = limited()
    error = refused(limiter(ok))
    assert_a_rejection(error, RateLimitedError)
    assert str(error) == API_TEXT
    assert repr(error) == f'RateLimitedError("{API_TEXT}")'
    assert error.args == (API_TEXT,)
    assert isinstance(error, RateLimitedError)
    assert (error.policy, error.retry_after) == ("api", 0.5)
    assert error.__context__ is None
    assert str(error) == API_TEXT  # read twice: the same text


def test_an_unnamed_limiter_says_so() -> None:
    error = refused(limited(None).call, ok)
    assert str(error) == "rate limiter: rate of 2 per 1s exceeded; retry in 0.500s"
    assert error.args == (str(error),)
    assert error.policy is None  # type: ignore[attr-defined]


def test_args_read_first_give_the_message() -> None:
    # args before str or repr: the message is the same either way.
    error = refused(limited().call, ok)
    assert error.args == (API_TEXT,)
    assert str(error) == API_TEXT
    assert repr(error) == f'RateLimitedError("{API_TEXT}")'


def test_args_can_be_replaced_as_on_any_exception() -> None:
    error = refused(limited().call, ok)
    error.args = ("replaced", 2)
    assert error.args == ("replaced", 2)
    assert str(error) == "('replaced', 2)"
    assert repr(error) == "RateLimitedError('replaced', 2)"
    fresh = refused(limited().call, ok)
    fresh.args = ()
    assert str(fresh) == ""
    assert fresh.args == ()


def test_a_rate_limited_error_pickles_and_copies() -> None:
    # It did not before: unpickling called __init__ without its keyword-only retry_after.
    error = refused(limited().call, ok)
    assert_round_trips(error)
    assert pickle.loads(pickle.dumps(error)).args == (API_TEXT,)  # noqa: S301
    made = RateLimitedError("by hand", policy="p", retry_after=2.5)
    assert_round_trips(made)
    assert pickle.loads(pickle.dumps(made)).args == ("by hand",)  # noqa: S301


def test_a_rate_limited_error_made_by_hand() -> None:
    made = RateLimitedError("by hand", retry_after=2.5)
    assert (str(made), made.args, made.policy, made.retry_after) == (
        "by hand",
        ("by hand",),
        None,
        2.5,
    )
    assert repr(made) == "RateLimitedError('by hand')"
    if sys.version_info >= (3, 11):  # add_note() and __notes__ came with 3.11
        made.add_note("a note")
        copied = pickle.loads(pickle.dumps(made))  # noqa: S301
        assert copied.__notes__ == ["a note"]


def test_the_default_clock_refuses_with_the_same_text() -> None:
    # The lock-free refusal (the default clock, max_wait=0): retry_after is read back.
    limiter = RateLimiter(SLOW, burst=1, name="slow")
    guarded = limiter(ok)
    guarded()
    error = refused(guarded)
    assert_a_rejection(error, RateLimitedError)
    assert isinstance(error, RateLimitedError)
    assert 999_000 < error.retry_after <= 1e6
    text = f"rate limiter 'slow': rate of 1e-06 per 1s exceeded; retry in {error.retry_after:.3f}s"
    assert str(error) == text
    assert error.args == (text,)
    assert repr(error) == f'RateLimitedError("{text}")'
    assert error.__context__ is None
    assert_round_trips(error)
    assert limiter.metrics().rejected == 1


async def test_the_default_clock_refuses_async_callers_too() -> None:
    limiter = RateLimiter(SLOW, burst=1, name="slow")
    guarded = limiter(aok)
    await guarded()
    error = await arefused(guarded)
    assert isinstance(error, RateLimitedError)
    assert str(error).endswith(f"; retry in {error.retry_after:.3f}s")
    assert limiter.metrics().rejected == 1


def test_a_keyed_limiter_names_the_key() -> None:
    for clock in (ManualClock(), None):
        limiter = KeyedRateLimiter(
            SLOW, burst=1, key=lambda user: user, name="per-user", clock=clock
        )
        guarded = limiter(ok)
        guarded("alice")
        error = refused(guarded, "alice")
        assert_a_rejection(error, RateLimitedError)
        assert isinstance(error, RateLimitedError)
        text = (
            "rate limiter 'per-user': rate of 1e-06 per 1s exceeded for key 'alice'; "
            f"retry in {error.retry_after:.3f}s"
        )
        assert (str(error), error.args, repr(error)) == (
            text,
            (text,),
            f'RateLimitedError("{text}")',
        )
        assert error.policy == "per-user"
        assert_round_trips(error)
        assert guarded("bob") == 1  # another key has its own limit
        assert limiter.metrics().rejected == 1


def test_a_key_of_none_is_not_named() -> None:
    limiter = KeyedRateLimiter(SLOW, burst=1, key=lambda *_: None)
    limiter.call(ok)
    error = refused(limiter.call, ok)
    assert str(error).startswith("rate limiter: rate of 1e-06 per 1s exceeded; retry in ")


@pytest.mark.parametrize("clock", [ManualClock, None], ids=["manual clock", "default clock"])
def test_every_way_in_to_a_limiter_refuses_alike(clock: type[ManualClock] | None) -> None:
    limiter = RateLimiter(SLOW, burst=1, name="api", clock=clock() if clock else None)
    limiter.call(ok)

    def block() -> None:
        with limiter:
            pass

    errors = [refused(limiter(ok)), refused(limiter.call, ok), refused(block)]
    for error in errors:
        assert_a_rejection(error, RateLimitedError)
        assert error.__context__ is None
        assert str(error).startswith("rate limiter 'api': rate of 1e-06 per 1s exceeded; retry")
    assert len({id(error) for error in errors}) == 3  # a fresh instance each time
    assert limiter.metrics().rejected == 3


# -- the bulkhead ---------------------------------------------------------------------


DB_TEXT = "bulkhead 'db' is full: 1 of 1 slots in use, none free"


def test_a_full_bulkhead_reads_as_before() -> None:
    bulkhead = Bulkhead(1, name="db")
    with bulkhead:
        error = refused(bulkhead(ok))
        called = refused(bulkhead.call, ok)
    for e in (error, called):
        assert_a_rejection(e, BulkheadFullError)
        assert str(e) == DB_TEXT
        assert repr(e) == f'BulkheadFullError("{DB_TEXT}")'
        assert e.args == (DB_TEXT,)
        assert e.policy == "db"  # type: ignore[attr-defined]
        # The runner looks at the pool before taking from it: no IndexError behind it.
        assert e.__context__ is None
        assert_round_trips(e)
    assert error is not called
    assert bulkhead.metrics().rejected == 2


def test_a_full_bulkhead_refuses_with_blocks_alike() -> None:
    bulkhead = Bulkhead(1)
    with bulkhead:

        def block() -> None:
            with bulkhead:
                pass

        error = refused(block)
    assert str(error) == "bulkhead is full: 1 of 1 slots in use, none free"
    assert error.args == (str(error),)
    assert error.__context__ is None
    assert error.policy is None  # type: ignore[attr-defined]
    assert bulkhead.metrics().in_flight == 0


async def test_a_full_bulkhead_refuses_async_callers_alike() -> None:
    bulkhead = Bulkhead(1, name="db")
    async with bulkhead:
        error = await arefused(bulkhead(aok))

        async def block() -> None:
            async with bulkhead:
                pass

        blocked = await arefused(block)
    for e in (error, blocked):
        assert_a_rejection(e, BulkheadFullError)
        assert (str(e), e.args) == (DB_TEXT, (DB_TEXT,))
    assert error.__context__ is None
    assert blocked.__context__ is None
    assert bulkhead.metrics().rejected == 2
    assert bulkhead.metrics().in_flight == 0


def test_a_bulkhead_that_waited_says_how_long() -> None:
    bulkhead = Bulkhead(1, max_wait=0.001, name="db")
    with bulkhead:
        error = refused(bulkhead(ok))
    assert str(error) == f"{DB_TEXT} within 0.001s"
    assert error.args == (str(error),)
    assert_round_trips(error)


def test_a_bulkhead_full_error_made_by_hand() -> None:
    made = BulkheadFullError("full")
    assert (str(made), made.args, made.policy, repr(made)) == (
        "full",
        ("full",),
        None,
        "BulkheadFullError('full')",
    )
    assert_round_trips(made)
    named = BulkheadFullError("full", policy="p")
    assert pickle.loads(pickle.dumps(named)).policy == "p"  # noqa: S301


# -- the circuit breaker --------------------------------------------------------------


def opened(clock: ManualClock | None = None) -> CircuitBreaker:
    breaker = CircuitBreaker(
        "pay",
        window=CountWindow(1),
        minimum_calls=1,
        open_duration=30.0,
        half_open_calls=1,
        clock=clock or ManualClock(),
    )
    with pytest.raises(ZeroDivisionError):
        breaker.call(lambda: 1 / 0)
    return breaker


def test_an_open_breaker_reads_as_before() -> None:
    breaker = opened()
    error = refused(breaker(ok))
    assert_a_rejection(error, CircuitOpenError)
    assert isinstance(error, CircuitOpenError)
    text = "circuit breaker 'pay' is open; trial calls are allowed in 30.000s"
    assert (str(error), repr(error)) == (text, f'CircuitOpenError("{text}")')
    assert error.args == ()  # as before: the breaker's errors carry no args
    assert (error.policy, error.retry_after, error.state) == ("pay", 30.0, CircuitState.OPEN)
    assert error.__context__ is None
    assert frames(error)[-1] == "guarded"  # raised in the guard's own frame
    assert_round_trips(error)


def test_a_forced_open_breaker_reads_as_before() -> None:
    breaker = CircuitBreaker("pay")
    breaker.force_open()
    errors = [refused(breaker(ok)), refused(breaker.call, ok)]
    for error in errors:
        assert_a_rejection(error, CircuitOpenError)
        assert isinstance(error, CircuitOpenError)
        assert str(error) == "circuit breaker 'pay' is forced open"
        assert repr(error) == "CircuitOpenError(\"circuit breaker 'pay' is forced open\")"
        assert error.args == ()
        assert (error.retry_after, error.state) == (None, CircuitState.FORCED_OPEN)
        assert_round_trips(error)
    assert errors[0] is not errors[1]
    assert breaker.metrics().not_permitted_calls == 2


async def test_a_forced_open_breaker_refuses_async_callers_alike() -> None:
    breaker = CircuitBreaker()
    breaker.force_open()
    error = await arefused(breaker(aok))
    assert str(error) == "circuit breaker is forced open"
    assert breaker.metrics().not_permitted_calls == 1


def test_a_half_open_breaker_with_every_trial_taken() -> None:
    clock = ManualClock()
    breaker = opened(clock)
    clock.advance(30.0)
    with breaker:  # the one trial, held
        error = refused(breaker.call, ok)
    assert str(error) == "circuit breaker 'pay' is half-open and every trial call is taken"
    assert (error.retry_after, error.state) == (None, CircuitState.HALF_OPEN)  # type: ignore[attr-defined]
    assert error.args == ()


def test_a_circuit_open_error_made_by_hand() -> None:
    made = CircuitOpenError("down", policy="p", retry_after=1.0)
    assert (str(made), made.args, repr(made)) == ("down", ("down",), "CircuitOpenError('down')")
    assert_round_trips(made)


# -- every kind: traceback, events, counts --------------------------------------------


def refusing_policies() -> dict[str, tuple[Any, Callable[[], int]]]:
    """A policy of each kind that refuses every call, with what reads its count."""
    limiter = RateLimiter(SLOW, burst=1)
    limiter.call(ok)
    keyed = KeyedRateLimiter(SLOW, burst=1, key=lambda *_: "k")
    keyed.call(ok)
    bulkhead = Bulkhead(1)
    bulkhead.__enter__()  # held for good: the bulkhead is full
    breaker = opened(ManualClock())
    forced = CircuitBreaker()
    forced.force_open()
    return {
        "rate limiter": (limiter, lambda: limiter.metrics().rejected),
        "keyed rate limiter": (keyed, lambda: keyed.metrics().rejected),
        "bulkhead": (bulkhead, lambda: bulkhead.metrics().rejected),
        "open breaker": (breaker, lambda: breaker.metrics().not_permitted_calls),
        "forced open breaker": (forced, lambda: forced.metrics().not_permitted_calls),
    }


@pytest.mark.parametrize("kind", list(refusing_policies()))
def test_each_rejection_is_fresh_with_a_traceback_that_does_not_grow(kind: str) -> None:
    policy, _ = refusing_policies()[kind]
    guarded = policy(ok)
    first, second = refused(guarded), refused(guarded)
    assert first is not second
    assert frames(first) == frames(second)
    assert frames(first)[0] == "refused"


@pytest.mark.parametrize("kind", list(refusing_policies()))
def test_each_rejection_is_reported_once_when_someone_listens(kind: str) -> None:
    policy, count = refusing_policies()[kind]
    heard: list[Any] = []
    policy.add_listener(heard.append)
    with capture_events() as events:
        error = refused(policy(ok))
    rejections = [event for event in events if isinstance(event, CallRejected)]
    assert [event.error for event in rejections] == [error]
    assert [event for event in heard if isinstance(event, CallRejected)] == rejections
    assert str(rejections[0].error) == str(error)
    assert count() == 1


@pytest.mark.parametrize("kind", list(refusing_policies()))
def test_every_rejection_is_counted_from_many_threads(kind: str) -> None:
    policy, count = refusing_policies()[kind]
    guarded = policy(ok)
    before = count()
    threads, per_thread = 4, 500
    start = threading.Barrier(threads)

    def hammer() -> None:
        start.wait()
        for _ in range(per_thread):
            with contextlib.suppress(RejectedError):
                guarded()

    workers = [threading.Thread(target=hammer) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert count() - before == threads * per_thread


def test_the_errors_keep_their_documented_names() -> None:
    for error in (RateLimitedError, BulkheadFullError, CircuitOpenError):
        assert error.__module__ == "resilient"
        assert getattr(resilient, error.__name__) is error
        assert error.__mro__[1] is RejectedError
