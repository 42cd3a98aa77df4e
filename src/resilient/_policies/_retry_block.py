"""Retrying a block rather than a function: ``for attempt in retry: with attempt: ...``.

Tenacity's ``Retrying`` and stamina's ``retry_context`` idiom. Iterating a ``Retry``
starts a fresh per-call state (:class:`Retrying` or :class:`AsyncRetrying`), so one
policy object serves any number of concurrent blocks. Each :class:`Attempt` records
how its block ended; before the next attempt, the block is driven by the same
:meth:`~resilient._core._retry.RetryCore.flow` as the decorator: the same waits, budget,
deadline, events and counts. Only the sleep differs between the sync and async drivers.

An attempt reports its outcome as its ``with`` block ends. An exception that will be
retried is swallowed there (so code after the ``with`` block in the loop body runs after
a failed attempt too, as with tenacity); one that is not, or when the retry gives up,
goes on unchanged out of the ``with`` block and the loop.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from types import TracebackType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing_extensions import Self

    from resilient._core._retry import Flow, RetryCore

__all__ = ["AsyncRetrying", "Attempt", "Retrying"]


class Attempt:
    """One attempt of a retried block: ``with attempt:`` or ``async with attempt:``.

    An ``Exception`` raised in the block ends the attempt; the loop then decides
    whether to retry it (after the wait) or to give up and re-raise it unchanged.
    ``BaseException`` (cancellation, ``KeyboardInterrupt``) passes through and ends the
    loop at once.

    Attributes:
        number: The attempt's number, from 1.
    """

    __slots__ = ("_block", "number")

    def __init__(self, block: _Block, number: int) -> None:
        self._block = block
        self.number = number

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        return self._block._ended(exc)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        return self._block._ended(exc)

    def __repr__(self) -> str:
        return f"<Attempt {self.number}>"


class _Block:
    """One retried block: its attempt number, its flow, the wait before the next attempt.

    The outcome of an attempt is reported when its ``with`` block ends (so a ``return``
    or ``break`` inside it still counts as a success); only the wait happens in the
    loop's ``__next__``/``__anext__``, where sync and async differ.
    """

    __slots__ = ("_core", "_delay", "_done", "_number", "_steps")

    def __init__(self, core: RetryCore) -> None:
        self._core = core
        self._steps: Flow | None = None
        self._delay: float | None = None  # the wait before the next attempt, once decided
        self._number = 0
        self._done = False

    def _ended(self, exc: BaseException | None) -> bool:
        """Report an attempt's end; ``True`` swallows ``exc`` because it will be retried."""
        if exc is None:
            self._succeeded()
            return False
        if not isinstance(exc, Exception):
            self._done = True  # cancellation, KeyboardInterrupt: never retried
            return False
        core = self._core
        steps = self._steps
        self._done = True
        try:
            if steps is None:
                steps = self._steps = core.start(exc, None, judge_result=False)
                if steps is None:
                    return False  # not retried: it propagates unchanged
                self._delay = next(steps)
            else:
                self._delay = steps.send((exc, None))
        except Exception as raised:
            if raised is exc:
                return False  # the retry gave up on it: it propagates unchanged
            raise  # pragma: no cover - the flow raises nothing else
        self._done = False
        return True

    def _succeeded(self) -> None:
        self._done = True
        steps = self._steps
        if steps is None:
            self._core.start(None, None, judge_result=False)  # budget, first_attempt
            return
        with contextlib.suppress(StopIteration):  # recovered
            steps.send((None, None))

    def _next_wait(self) -> float | None:
        """The seconds to wait before the next attempt, or ``None`` when the block is done."""
        if self._done:
            return None
        if not self._number:
            budget = self._core.budget
            if budget is not None:
                budget.on_first_attempt()
            return 0.0
        delay, self._delay = self._delay, None
        if delay is None:  # the last attempt's block was never entered, or never left
            self._done = True
        return delay

    def _wait_failed(self, wait_error: Exception) -> None:
        """End the flow after a failed wait: it raises the last attempt's exception."""
        self._done = True
        steps = self._steps
        assert steps is not None  # noqa: S101 -- a wait follows a flow's yield
        with contextlib.suppress(StopIteration):  # a block's flow never returns a result
            steps.throw(wait_error)

    def _attempt(self) -> Attempt:
        self._number += 1
        return Attempt(self, self._number)


class Retrying(_Block, Iterator[Attempt]):
    """A retried block, sync: made by ``iter(retry)``; yields :class:`Attempt` objects."""

    __slots__ = ()

    def __iter__(self) -> Retrying:
        return self

    def __next__(self) -> Attempt:
        delay = self._next_wait()
        if delay is None:
            raise StopIteration
        if delay > 0.0:
            try:
                self._core.clock.sleep(delay)
            except Exception as wait_error:
                self._wait_failed(wait_error)
        return self._attempt()


class AsyncRetrying(_Block, AsyncIterator[Attempt]):
    """A retried block, async: made by ``aiter(retry)``; yields :class:`Attempt` objects."""

    __slots__ = ()

    def __aiter__(self) -> AsyncRetrying:
        return self

    async def __anext__(self) -> Attempt:
        delay = self._next_wait()
        if delay is None:
            raise StopAsyncIteration
        if delay > 0.0:
            try:
                await self._core.clock.asleep(delay)
            except Exception as wait_error:
                self._wait_failed(wait_error)
        return self._attempt()
