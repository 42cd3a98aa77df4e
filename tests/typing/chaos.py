"""Type tests for the chaos policies: checked by mypy (and pyright), never run."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from typing_extensions import assert_type

from resilient.chaos import InjectResult


async def canned() -> bytes:
    return b"canned"


async def fetch(n: int) -> str:
    return str(n)


def compute(n: int) -> int:
    return n


# A value, a sync factory and an async factory all widen the result by the injected type.
by_value = InjectResult(0.5, rate=0.1)
assert_type(by_value, InjectResult[float])
by_factory = InjectResult(factory=list[str], rate=0.1)
assert_type(by_factory, InjectResult[list[str]])
by_async_factory = InjectResult(factory=canned, rate=0.1)
assert_type(by_async_factory, InjectResult[bytes])

assert_type(by_value(compute)(1), int | float)
guarded = by_async_factory(fetch)
_checked: Callable[[int], Coroutine[Any, Any, str | bytes]] = guarded


async def main() -> None:
    assert_type(await guarded(1), str | bytes)
    assert_type(await by_async_factory.call_async(fetch, 1), str | bytes)
