"""Bounded worker threads for sync timeouts.

Python cannot interrupt a running thread safely, so a sync call under a timeout runs in
a worker thread while the caller waits for it with a deadline. At the deadline the
caller gets :class:`~resilient.TimeoutExceededError` and the worker keeps running the
abandoned call to its end (it is counted while it runs); only then is the worker free
again. Workers are bounded: when every worker is busy (with live or abandoned calls) a
new call is rejected at once with :class:`~resilient.WorkersExhaustedError`, never
queued, since a queued call would spend its own timeout waiting for a worker.
Idle workers exit after ``idle_timeout`` seconds.

A signal handler may raise in the caller's thread at any call the interpreter makes
(``KeyboardInterrupt``, a SIGALRM-based timeout); worker threads never run one. So
everything the caller does is a single C call that either happened or did not: it takes
a unit of capacity with ``_free.pop()`` (given back with ``append`` if anything fails
before the hand-over), hands the job over with ``_jobs.put()`` to whichever worker is
waiting on that queue (no worker is ever "taken" without its job), waits with a C lock's
``acquire``, and abandons with a non-blocking ``acquire`` of the job's claim. The
workers do all the rest: they give the capacity back when a job ends, and tell an
abandoned job (its claim already taken) from a finished one.

A forked child has none of the parent's workers: the pool starts again empty there, in
a new *generation*, so that a worker of the old one (the thread that forked, if a job
forked) settles nothing in the new one and exits when its job is done.
"""

from __future__ import annotations

import collections
import contextvars
import queue
import threading
from collections.abc import Callable
from typing import Any, Final

from resilient._core._fork import new_lock

__all__ = ["Job", "WorkerPool"]

RUNNING: Final = 0
FINISHED: Final = 1
ABANDONED: Final = 2

_TIMEOUT_MAX: Final = threading.TIMEOUT_MAX


class Job:
    """One call handed to a worker.

    Two C locks settle it without a Python-level critical section: ``_done`` (held from
    the start, released by the worker when the job is over) wakes the caller, and
    ``_claim`` is taken once, either by the caller giving up (the job is abandoned) or
    by the worker when the call has returned (the caller collects its outcome).
    """

    __slots__ = ("_claim", "_done", "args", "context", "error", "fn", "kwargs", "result", "state")

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
        self._new_locks()

    def _new_locks(self) -> None:
        # Per-call locks (also made afresh in a child forked by the job), never held
        # across a fork by anyone the child still has.
        self._claim = threading.Lock()
        self._done = threading.Lock()
        self._done.acquire()

    def wait(self, timeout: float) -> bool:
        """Wait for the worker; ``True`` if the job finished, ``False`` if abandoned now.

        Interrupted while waiting (or at any point), the caller must still abandon the
        job with ``job._claim.acquire(blocking=False)`` in its own frame, as ``Timeout`` does.
        """
        if self._done.acquire(timeout=min(timeout, _TIMEOUT_MAX)):
            return True
        # A failed claim: the worker finished in the instant after the wait gave up.
        return not self._claim.acquire(blocking=False)

    def run(self, pool: WorkerPool, worker: _Worker) -> None:
        """Run the call in the caller's context, then settle it.

        The pool's accounting (which gives the capacity back) runs *before* the caller is
        woken, so a caller that calls again at once finds a worker free.
        """
        try:
            self.result = self.context.run(self.fn, *self.args, **self.kwargs)
        except BaseException as exc:  # handed to the caller, who re-raises it
            self.error = exc
        worker.current = None  # from here on the job is not "running" for the metrics
        abandoned = not self._claim.acquire(blocking=False)
        self.state = ABANDONED if abandoned else FINISHED
        pool.finished(worker, abandoned)
        self._done.release()


class _Worker(threading.Thread):
    def __init__(self, pool: WorkerPool) -> None:
        super().__init__(name=f"resilient-timeout-{pool.name}", daemon=True)
        self._pool = pool
        self.generation = pool.generation
        self.current: Job | None = None  # for the metrics, and a child forked by the job

    def run(self) -> None:
        pool = self._pool
        jobs = pool._jobs
        if not pool.joined(self):
            return
        while True:
            try:
                job = self.current = jobs.get(True, pool.idle_timeout)
            except queue.Empty:
                if pool.retire(self):
                    return
                continue
            job.run(pool, self)
            del job
            if self.generation != pool.generation:
                return  # a forked child's copy of this worker: the pool has no place for it


class WorkerPool:
    """At most ``max_workers`` calls at once; a busy pool refuses instead of queueing.

    ``_free`` holds one item per call the pool can still take; a worker waits on the
    shared ``_jobs`` queue. There are always at least as many workers (started or
    starting) as calls taken, so a job put on the queue finds a worker at once.
    """

    def __init__(self, max_workers: int, name: str, idle_timeout: float = 30.0) -> None:
        self.max_workers = max_workers
        self.name = name
        self.idle_timeout = idle_timeout
        self._lock = new_lock(self)
        self._free: collections.deque[bool] = collections.deque((True,) * max_workers)
        self._jobs: queue.SimpleQueue[Job] = queue.SimpleQueue()
        self._live: set[_Worker] = set()
        self._starting: set[_Worker] = set()
        self.generation = 0

    def submit(self, job: Job) -> bool:
        """Hand ``job`` to a worker; ``False`` if every worker is busy.

        Interrupted anywhere, either nothing was taken or the job is on its way to a
        worker, which gives the capacity back when it ends.
        """
        free = self._free
        try:
            free.pop()
        except IndexError:
            return False
        except BaseException:  # raised at a call after the pop: the capacity is ours
            free.append(True)
            raise
        try:
            if len(self._live) + len(self._starting) < self.max_workers - len(free):
                self._start_worker()
        except BaseException:  # interrupted, or no thread could start: not handed over
            free.append(True)
            raise
        self._jobs.put(job)  # after this C call the job is handed over, interrupted or not
        return True

    def _start_worker(self) -> None:
        worker = None
        try:
            with self._lock:
                if len(self._live) + len(self._starting) >= self.max_workers - len(self._free):
                    return  # another caller started one meanwhile
                worker = _Worker(self)
                self._starting.add(worker)
            worker.start()
        except BaseException as exc:
            # Interrupted in start(), the thread may or may not run: if it does it counts
            # itself in (joined), for a while one worker too many, which retires if idle.
            if worker is not None:
                self._starting.discard(worker)
            interrupt = exc.__context__
            if type(exc) is RuntimeError and interrupt is not None:
                # start() waits on threading's own Event, which an interrupt can leave
                # releasing a lock it no longer holds ("release unlocked lock"): the
                # interrupt is what happened, and what the caller gets.
                raise interrupt from None
            raise

    def joined(self, worker: _Worker) -> bool:
        """A new worker's thread runs: count it (``False``: the pool was reset since)."""
        with self._lock:
            self._starting.discard(worker)
            if worker.generation != self.generation:
                return False
            self._live.add(worker)
            return True

    def finished(self, worker: _Worker, abandoned: bool) -> None:
        """A worker is done with its job: the pool can take one more call."""
        with self._lock:
            if worker.generation != self.generation:
                return  # counted in the parent, not in this forked child
            self._free.append(True)

    def retire(self, worker: _Worker) -> bool:
        """An idle worker timed out waiting: let it exit if the others suffice."""
        with self._lock:
            if worker.generation != self.generation:
                return True
            if len(self._live) > self.max_workers - len(self._free):
                self._live.discard(worker)
                return True
            return False

    def _after_fork_in_child(self) -> None:
        # The parent's workers do not exist here (save the one that forked, if a job
        # did): forget them all, and the abandoned calls they were running.
        self.generation += 1
        self._free = collections.deque((True,) * self.max_workers)
        self._jobs = queue.SimpleQueue()
        self._live = set()
        self._starting = set()
        current = threading.current_thread()
        if isinstance(current, _Worker) and current._pool is self and current.current is not None:
            # Its caller is gone: whatever the caller held of the job's locks is void.
            current.current._new_locks()

    def stats(self) -> tuple[int, int, int]:
        """(workers, busy workers, abandoned calls still running)."""
        with self._lock:
            busy = self.max_workers - len(self._free)
            abandoned = 0
            for worker in self._live:
                job = worker.current
                if job is not None and job._claim.locked():
                    abandoned += 1
            return len(self._live), busy, abandoned
