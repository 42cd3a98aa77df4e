"""Type-checked, never run: the ``for attempt in retry`` idiom (mypy --strict)."""

from __future__ import annotations

from typing_extensions import assert_type

from resilient import Attempt, Retry

retry = Retry(3, wait=0.1)


def sync_block() -> int:
    for attempt in retry:
        assert_type(attempt, Attempt)
        with attempt as same:
            assert_type(same, Attempt)
            assert_type(attempt.number, int)
            return 1
    return 0


async def async_block() -> int:
    async for attempt in retry:
        assert_type(attempt, Attempt)
        async with attempt as same:
            assert_type(same, Attempt)
            return 1
    return 0


assert_type(retry.attempts, int)
assert_type(Retry.MAX_WAIT, float)
