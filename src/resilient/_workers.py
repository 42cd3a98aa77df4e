"""Bounded worker threads for sync timeouts.

Python cannot interrupt a running thread safely, so a sync call under a timeout runs in
a worker thread while the caller waits for it with a deadline. At the deadline the
caller gets :class:`~resilient.TimeoutExceededError` and the worker keeps running the
abandoned call to its end (it is counted while it runs); only then is the worker free
again. Workers are bounded: when every worker is busy (with live or abandoned calls) a
new call is rejected at once with :class:`~resilient.WorkersExhaustedError`, never
queued, since a queued call would spend its own timeout waiting for a worker.
Idle workers exit after ``idle_timeout`` seconds.

A forked child has none of the parent's workers: the pool starts again empty there, in
a new *generation*, so that a worker of the old one (the thread that forked, if a job
forked) settles nothing in the new one and exits when its job is done.
"""

from __future__ import annotations

import collections
import contextvars
import functools
import threading
from collections.abc import Callable
from typing import Any, Final

from resilient._fork import new_lock

__all__ = ["Job", "WorkerPool"]

RUNNING: Final = 0
FINISHED: Final = 1
ABANDONED: Final = 2


class Job:
    """One call handed to a worker; the caller and the worker settle it under a lock."""

    __slots__ = ("_done", "_lock", "args", "context", "error", "fn", "kwargs", "result", "state")

    def __init__(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        context: contextvars.Context,
    ) -> None:
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.context = context
        self.result: Any = None
        self.error: BaseException | None = None
        self.state = RUNNING
        self._lock = threading.Lock()
        self._done = threading.Event()

    def wait(self, timeout: float, on_abandon: Callable[[], None]) -> bool:
        """Wait for the worker; ``True`` if the job finished, ``False`` if abandoned now.

        ``on_abandon`` runs under the job's lock, so the worker's end-of-job accounting
        (which takes the same lock) always comes after it.
        """
        try:
            if self._done.wait(min(timeout, threading.TIMEOUT_MAX)):
                return True
        except BaseException:  # interrupted while waiting: the job runs on unattended
            self._abandon(on_abandon)
            raise
        return not self._abandon(on_abandon)

    def _abandon(self, on_abandon: Callable[[], None]) -> bool:
        with self._lock:
            if self.state == FINISHED:  # finished in the instant after the wait gave up
                return False
            self.state = ABANDONED
            on_abandon()
            return True

    def run(self, on_finish: Callable[[bool], None]) -> None:
        """Run the call in the caller's context, then settle it.

        ``on_finish(abandoned)`` (the pool's accounting, which makes the worker idle
        again) runs *before* the caller is woken, so a caller that calls again at once
        finds the worker free.
        """
        try:
            self.result = self.context.run(self.fn, *self.args, **self.kwargs)
        except BaseException as exc:  # handed to the caller, who re-raises it
            self.error = exc
        with self._lock:
            abandoned = self.state == ABANDONED
            self.state = FINISHED
        on_finish(abandoned)
        self._done.set()


class _Worker(threading.Thread):
    def __init__(self, pool: WorkerPool) -> None:
        super().__init__(name=f"resilient-timeout-{pool.name}", daemon=True)
        self._pool = pool
        self.generation = pool.generation
        self.current: Job | None = None  # for a child forked by the job it runs
        self._jobs: collections.deque[Job] = collections.deque()
        self._wake = threading.Semaphore(0)

    def submit(self, job: Job) -> None:
        self._jobs.append(job)
        self._wake.release()

    def run(self) -> None:
        pool = self._pool
        while True:
            if not self._wake.acquire(timeout=pool.idle_timeout):
                if pool.retire(self):
                    return
                continue
            job = self.current = self._jobs.popleft()
            job.run(functools.partial(pool.finished, self))
            self.current = None
            del job
            if self.generation != pool.generation:
                return  # a forked child's copy of this worker: the pool has no place for it


class WorkerPool:
    """At most ``max_workers`` threads; a busy pool refuses instead of queueing."""

    def __init__(self, max_workers: int, name: str, idle_timeout: float = 30.0) -> None:
        self.max_workers = max_workers
        self.name = name
        self.idle_timeout = idle_timeout
        self._lock = new_lock(self)
        self._idle: list[_Worker] = []
        self._workers = 0
        self.abandoned_running = 0
        self.generation = 0

    def submit(self, job: Job) -> bool:
        """Hand ``job`` to an idle or new worker; ``False`` if every worker is busy."""
        with self._lock:
            if self._idle:
                worker = self._idle.pop()
            elif self._workers < self.max_workers:
                worker = _Worker(self)
                worker.start()  # may fail ("can't start new thread"): count only after
                self._workers += 1
            else:
                return False
        worker.submit(job)
        return True

    def abandoned(self) -> None:
        """A caller gave up on its job; count it until the worker is done with it."""
        with self._lock:
            self.abandoned_running += 1

    def finished(self, worker: _Worker, abandoned: bool) -> None:
        with self._lock:
            if worker.generation != self.generation:
                return  # counted in the parent, not in this forked child
            if abandoned:
                self.abandoned_running -= 1
            self._idle.append(worker)

    def retire(self, worker: _Worker) -> bool:
        """An idle worker timed out waiting: let it exit unless a job just arrived."""
        with self._lock:
            if worker.generation != self.generation:
                return True
            if worker in self._idle and not worker._jobs:
                self._idle.remove(worker)
                self._workers -= 1
                return True
            return False

    def _after_fork_in_child(self) -> None:
        # The parent's workers do not exist here (save the one that forked, if a job
        # did): forget them all, and the abandoned calls they were running.
        self.generation += 1
        self._idle = []
        self._workers = 0
        self.abandoned_running = 0
        current = threading.current_thread()
        if isinstance(current, _Worker) and current._pool is self and current.current is not None:
            # Its caller is gone: whatever the caller held of the job's lock is void.
            current.current._lock = threading.Lock()
            current.current._done = threading.Event()

    def stats(self) -> tuple[int, int, int]:
        """(workers, busy workers, abandoned calls still running)."""
        with self._lock:
            return self._workers, self._workers - len(self._idle), self.abandoned_running
