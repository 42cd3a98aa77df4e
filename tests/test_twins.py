"""Every sync/async twin of the library, and the twin checker itself (``tests/twins.py``).

The design writes a behaviour once; where the sync and the async world need a function
each, the two must not drift apart. Each pair in ``TWINS`` is compared by
:func:`twins.assert_twins`: identical apart from ``async``/``await`` and what is named
(renames, the async side's name first; statements only one side has). Code generated
for both worlds from one template (the compose runners, ``_policies/_pipeline.py``)
needs no entry here; the breaker's guards are in ``test_breaker_twins.py``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

import pytest

from resilient import Bulkhead, RateLimiter, Retry, _policies
from resilient._policies import _block, _retry
from resilient._policies._policy import Policy
from twins import assert_twins

SYNC = '''
def run(self, fn: Callable[P, T]) -> T:
    """Run it."""
    ticket = self.enter()
    try:
        with self.lock:
            result = fn()
    except Exception:
        self.error(ticket)
        raise
    for item in self.items:
        self.wait(item)
    return [x for x in self.items]
'''

ASYNC = '''
async def run_async(self, fn: Callable[P, Awaitable[T]]) -> T:
    """Await it."""
    ticket = self.enter()
    try:
        async with self.lock:
            result = await fn()
    except Exception:
        self.error(ticket)
        raise
    async for item in self.items:
        await self.wait_async(item)
    return [x async for x in self.items]
'''


def test_twins_may_differ_in_async_await_names_annotations_and_docstrings() -> None:
    assert_twins(SYNC, ASYNC, renames={"wait_async": "wait"})


def test_a_drift_is_reported_with_a_diff() -> None:
    drifted = ASYNC.replace("self.error(ticket)", "self.error(ticket, late=True)")
    with pytest.raises(AssertionError, match=r"(?s)differ beyond.*-\s+self.error\(ticket\)"):
        assert_twins(SYNC, drifted, renames={"wait_async": "wait"})


def test_a_missing_await_is_no_drift_but_an_extra_statement_is() -> None:
    extra = ASYNC.replace("    ticket = self.enter()\n", "    ticket = self.enter()\n    x = 1\n")
    with pytest.raises(AssertionError, match="differ beyond"):
        assert_twins(SYNC, extra, renames={"wait_async": "wait"})
    assert_twins(SYNC, extra, renames={"wait_async": "wait"}, async_only=["x = 1"])


def test_statements_one_twin_has_alone_must_be_named_and_found() -> None:
    sync = SYNC.replace(
        "            result = fn()\n", "            result = fn()\n            check(result)\n"
    )
    with pytest.raises(AssertionError, match="differ beyond"):
        assert_twins(sync, ASYNC, renames={"wait_async": "wait"})
    assert_twins(sync, ASYNC, renames={"wait_async": "wait"}, sync_only=["check(result)"])
    with pytest.raises(AssertionError, match="not found"):
        assert_twins(SYNC, ASYNC, renames={"wait_async": "wait"}, sync_only=["check(result)"])


def test_renames_must_be_used_and_may_be_expressions() -> None:
    with pytest.raises(AssertionError, match="renames not found"):
        assert_twins(SYNC, ASYNC, renames={"wait_async": "wait", "nowhere": "x"})
    dotted = ASYNC.replace("self.wait_async(item)", "self._waiter.wait(item)")
    assert_twins(SYNC, dotted, renames={"self._waiter.wait": "self.wait"})


# -- the library's twins ----------------------------------------------------------

# (sync, async, what may differ: assert_twins' keyword arguments). A function is named
# by its path from `resilient._policies` (or its full dotted path), found when the test
# runs, so that a missing twin fails its own case only.
_Twin = tuple[str, str, Mapping[str, Any]]


def _find(path: str) -> Callable[..., Any]:
    if path.startswith("block_exits:"):  # the exits block_exits() makes, for a Block kind
        sync_exit, async_exit = _block.block_exits(_block.Block)
        return sync_exit.fget if path == "block_exits:sync" else async_exit.fget  # type: ignore[no-any-return]
    if not path.startswith("resilient."):
        path = f"{_policies.__name__}.{path}"
    parts = path.split(".")
    for end in range(len(parts) - 1, 0, -1):  # the longest importable prefix
        try:
            found: Any = importlib.import_module(".".join(parts[:end]))
        except ImportError:
            continue
        for part in parts[end:]:
            found = getattr(found, part)
        return found  # type: ignore[no-any-return]
    raise LookupError(path)  # pragma: no cover - a misspelt path


TWINS: dict[str, _Twin] = {
    # Entering a policy's `with` / `async with` block (issue 14).
    "Policy.__enter__": (
        "_policy.Policy.__enter__",
        "_policy.Policy.__aenter__",
        {"renames": {"aenter": "enter", "_stack_aenter": "_stack_enter"}},
    ),
    "Policy._stack_enter": (
        "_policy.Policy._stack_enter",
        "_policy.Policy._stack_aenter",
        {
            "renames": {
                "_async_step": "_sync_step",
                "'async with'": "'with'",
                "enter_wait_async": "enter_wait",
            }
        },
    ),
    "Policy._stack_exit": ("_policy.Policy._stack_exit", "_policy.Policy._stack_aexit", {}),
    "Block.enter": (
        "_block.Block.enter",
        "_block.Block.aenter",
        {
            "renames": {
                "_async_step": "_sync_step",
                "'async with'": "'with'",
                "_wait_async": "_wait",
            },
            "sync_only": ["return None"],
            "async_only": ["return FINISHED"],
        },
    ),
    "Block._wait": (
        "_block.Block._wait",
        "_block.Block._wait_async",
        {"renames": {"enter_wait_async": "enter_wait"}},
    ),
    "block_exits": ("block_exits:sync", "block_exits:async", {"renames": {"aexit": "exit"}}),
    "the class's exits": (
        "_block._SyncExit.__call__",
        "_block._AsyncExit.__call__",
        {"renames": {"_stack_aexit": "_stack_exit"}},
    ),
    # The retry decorator's drivers around RetryCore.flow, and the retried block's.
    "retrying": ("_retry.sync_retrying", "_retry.async_retrying", {"renames": {"asleep": "sleep"}}),
    "Retrying.__next__": (
        "_retry_block.Retrying.__next__",
        "_retry_block.AsyncRetrying.__anext__",
        {"renames": {"asleep": "sleep", "StopAsyncIteration": "StopIteration"}},
    ),
    "Retrying.__iter__": (
        "_retry_block.Retrying.__iter__",
        "_retry_block.AsyncRetrying.__aiter__",
        {},
    ),
    "Attempt.__exit__": ("_retry_block.Attempt.__exit__", "_retry_block.Attempt.__aexit__", {}),
    "Attempt.__enter__": ("_retry_block.Attempt.__enter__", "_retry_block.Attempt.__aenter__", {}),
    # The bulkhead's waiting for a slot.
    "bulkhead wait_for": (
        "_bulkhead._BulkheadStep.wait_for",
        "_bulkhead._BulkheadStep.wait_for_async",
        {},
    ),
    "bulkhead enter_wait": (
        "_bulkhead._BulkheadStep.enter_wait",
        "_bulkhead._BulkheadStep.enter_wait_async",
        {"renames": {"async_waiter": "ThreadWaiter", "wait_for_async": "wait_for"}},
    ),
    "bulkhead block enter": (
        "_bulkhead._SlotBlock.enter",
        "_bulkhead._SlotBlock.aenter",
        {
            "renames": {"_wait_for_slot_async": "_wait_for_slot"},
            "sync_only": ["return None"],
            "async_only": ["return FINISHED"],
        },
    ),
    "bulkhead block wait": (
        "_bulkhead._SlotBlock._wait_for_slot",
        "_bulkhead._SlotBlock._wait_for_slot_async",
        {"renames": {"async_waiter": "ThreadWaiter", "wait_for_async": "wait_for"}},
    ),
    # The rate limiters' waits.
    "rate limiter enter_wait": (
        "_ratelimit._RateLimiterStep.enter_wait",
        "_ratelimit._RateLimiterStep.enter_wait_async",
        {"renames": {"asleep": "sleep"}},
    ),
    # A keyed limiter with a shared store awaits its round trip in async code; a sync
    # caller's store answers inside reserve(), so the sync twin has no such branch.
    "KeyedRateLimiter.acquire": (
        "_keyed_ratelimit.KeyedRateLimiter.acquire",
        "_keyed_ratelimit.KeyedRateLimiter.acquire_async",
        {
            "renames": {"asleep": "sleep"},
            "async_only": ["if self._shared:\n    self._acquire_shared_async(key)\n    return"],
        },
    ),
    "KeyedRateLimiter guards": (
        "_keyed_ratelimit.KeyedRateLimiter._sync_wrap",
        "_keyed_ratelimit.KeyedRateLimiter._async_wrap",
        {
            "sync_only": ["acquire = self.acquire"],
            "async_only": [
                "acquire = self._acquire_shared_async if self._shared else self.acquire_async"
            ],
        },
    ),
    # Policies that guard no block say so in both worlds.
    "Composition.__enter__": (
        "_compose.Composition.__enter__",
        "_compose.Composition.__aenter__",
        {},
    ),
    "Fallback.__enter__": ("_fallback.Fallback.__enter__", "_fallback.Fallback.__aenter__", {}),
    # Fault injection (issue 18): an injected delay, and the wrapper of an injected result.
    "chaos latency enter_wait": (
        "_chaos._LatencyStep.enter_wait",
        "_chaos._LatencyStep.enter_wait_async",
        {"renames": {"asleep": "sleep"}},
    ),
    "InjectResult guards": (
        "_chaos.InjectResult._sync_wrap",
        "_chaos.InjectResult._async_wrap",
        {"renames": {"_with_async_factory": "_refuse_sync"}},
    ),
    "InjectResult.__enter__": (
        "_chaos.InjectResult.__enter__",
        "_chaos.InjectResult.__aenter__",
        {},
    ),
    # Issue 19: a cache's guard (Coalesce's are not twins: threads and tasks wait apart).
    "Cache guards": ("_cache.Cache._sync_wrap", "_cache.Cache._async_wrap", {}),
    # Issue 18: one request through the HTTP policies, and the closing of held responses.
    "HTTP run": (
        "resilient._http._exchange.run_sync",
        "resilient._http._exchange.run_async",
        {"renames": {"_adrop": "_drop", "aclose": "close"}},
    ),
    "HTTP drop": (
        "resilient._http._exchange._drop",
        "resilient._http._exchange._adrop",
        {"renames": {"aclose_quietly": "close_quietly", "aclose": "close"}},
    ),
    # The clocks' waits: a manual clock's async wait yields to the loop once.
    "ManualClock.sleep": (
        "resilient.testing.ManualClock.sleep",
        "resilient.testing.ManualClock.asleep",
        {"async_only": ["anyio.lowlevel.checkpoint()"]},
    ),
}


@pytest.mark.parametrize("name", list(TWINS))
def test_twins_are_the_same_code(name: str) -> None:
    sync_path, async_path, differences = TWINS[name]
    assert_twins(_find(sync_path), _find(async_path), **differences)


@pytest.mark.parametrize(
    ("make", "kind"),
    [(lambda: Bulkhead(2), "bulkhead"), (lambda: RateLimiter(10), "rate_limiter")],
)
def test_a_lone_step_policy_runs_the_compose_runner(make: Callable[[], Policy], kind: str) -> None:
    # Not twins written by hand: a bulkhead or a rate limiter alone runs the code
    # compose generates for a one-step chain, from the one template both worlds share.
    policy = make()

    def work() -> int:
        return 1

    async def awork() -> int:
        return 1

    sync_guard = policy._sync_guard(work)
    async_guard = policy._async_guard(awork)
    assert sync_guard.__code__.co_filename == f"<resilient compose: {kind}, sync>"
    assert async_guard.__code__.co_filename == f"<resilient compose: {kind}, async>"


def test_the_sync_and_async_retry_take_the_same_options() -> None:
    retry = Retry(2, wait=0)
    calls: list[tuple[Any, ...]] = []

    def flaky(n: int) -> int:
        calls.append((n,))
        if len(calls) == 1:
            raise ValueError
        return n

    # `repeatable` is asked with the call's positional arguments before each retry, in
    # both worlds (the ASGI middleware uses it with the async one).
    guarded = _retry.sync_retrying(retry._core, flaky, lambda args: args != (1,))
    with pytest.raises(ValueError):
        guarded(1)
    assert calls == [(1,)]
    assert retry.metrics().exhausted == 1
    calls.clear()
    assert guarded(2) == 2
    assert calls == [(2,), (2,)]
