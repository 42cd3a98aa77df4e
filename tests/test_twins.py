"""The twin checker itself (``tests/twins.py``): what it lets through and what it catches."""

from __future__ import annotations

import pytest

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
