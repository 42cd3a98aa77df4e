"""OpenTelemetry for every policy: metrics, and span events for what a policy did.

This package is the only part of ``resilient`` that imports ``opentelemetry``
(``pip install 'resilient-kit[otel]'``), and it is imported only when used: the first
access to ``resilient.instrument`` or ``resilient.Instrumentation`` loads it, and so
does ``import resilient.instrumentation``. It reads the policies through their public
read-outs and never writes into them; a breaker is asked for call durations through
its own switch (``resilient._core._breaker_timing``).

Layout, as stamina's ``instrumentation/``: ``_instrument`` creates the instruments and
owns their life, ``_readings`` holds what the observable instruments read at collection
time, ``_tracing`` adds span events.
"""

from __future__ import annotations

try:
    import opentelemetry.metrics  # noqa: F401 -- only to say what is missing
except ImportError as exc:  # pragma: no cover - the test environment has the extra
    raise ImportError(
        "resilient's OpenTelemetry support needs opentelemetry-api: "
        "pip install 'resilient-kit[otel]'"
    ) from exc

from resilient.instrumentation._instrument import Instrumentation, instrument

__all__ = ["Instrumentation", "instrument"]

# Reprs and docs say `resilient.Instrumentation`, where users find it.
for _obj in (Instrumentation, instrument):
    _obj.__module__ = "resilient"
del _obj
