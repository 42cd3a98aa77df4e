"""Where time passes: the real clock, wake-ups, timers, worker threads, deadlines.

The adapters in ``resilient._policies`` wait through these modules and nothing in
``resilient._core`` does: ``_clock`` (the real ``MonotonicClock``, sleeping with
``time`` or anyio), ``_waiters`` (waking a caller parked in a thread or a task, across
event loops), ``_timer`` (one timer per asyncio loop for every async timeout),
``_workers`` (the bounded threads that run sync calls under a timeout) and
``_deadline`` (the current deadline, carried in a context variable).
"""
