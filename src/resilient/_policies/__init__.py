"""The public policies: thin sync and async adapters over the cores.

A policy here holds options, validates them, and drives its core from
``resilient._core`` in one of two worlds, waiting through ``resilient._waiting``:
``_breaker``, ``_bulkhead``, ``_ratelimit`` and ``_keyed_ratelimit``, ``_retry`` (and
``_retry_block`` for ``for attempt in retry``), ``_timeout``, ``_fallback``,
``_throttle``. What they
share: ``_policy`` (the base class: decorating, ``call``/``call_async``, ``with``),
``_decorate`` (guards as signature-preserving decorators), ``_pipeline`` (the runners
that drive a chain of steps; ``compose`` generates them), ``_block`` (``with`` blocks),
``_compose`` and ``_registry``.
"""
