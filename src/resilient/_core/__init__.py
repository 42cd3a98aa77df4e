"""The decisions: every policy's state machine, sans-I/O.

Each module here decides and counts; none of them waits, starts a thread, reads a
context variable or touches an event loop. They import the standard library and each
other, nothing else (``tests/test_layers.py`` checks it), so the same state machine
serves the sync and the async adapters in ``resilient._policies``, and a test can drive
it with plain numbers for times.

``_breaker`` (with ``_breaker_calls``, ``_breaker_state``, ``_window``,
``_breaker_timing``,
``_breaker_metrics``), ``_bulkhead``, ``_gcra`` (rate limiters), ``_retry`` (with
``_wait`` and ``_budget``), ``_timeout``, ``_fallback``, ``_throttle`` (adaptive
throttling); and what they share:
``_clock`` (the ``Clock`` protocol), ``_errors``, ``_events`` (listeners; the record
classes in ``_records``), ``_validate``, ``_outcome``, ``_fork`` and ``_atomic`` (locks
and counters a forked child renews). ``_records`` and ``_snapshots`` hold the frozen
dataclasses (event records, ``metrics()`` snapshots) and load on first use.
"""
