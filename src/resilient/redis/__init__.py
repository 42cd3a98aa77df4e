"""Shared state through Redis: one limit for every process and host (issue 15).

``pip install 'resilient-kit[redis]'``; this package is the only part of ``resilient``
that imports ``redis``, and ``import resilient`` never imports it.

Layout: ``_store`` is :class:`RedisStore` (keys, health, running scripts), ``_store_view``
its per-policy views (``with_options()``), ``_clients`` its own connections bounded by
``op_timeout``, ``_scripts`` the Lua that decides on the server, ``_gcra`` the
rate-limiter cores that use it, ``_breaker*`` the shared circuit breaker (its core, the
async step that awaits its leases, the store's background thread, its script),
``_events`` the outage records.
See ``docs/scale-out.md``.
"""

from __future__ import annotations

try:
    import redis  # noqa: F401 -- only to say what is missing
except ImportError as exc:  # pragma: no cover - the test environment has the extra
    raise ImportError(
        "resilient.redis needs the redis client: pip install 'resilient-kit[redis]'"
    ) from exc

from resilient.redis._events import StoreRecovered, StoreUnavailable
from resilient.redis._store import RedisStore, StoreMetrics

__all__ = ["RedisStore", "StoreMetrics", "StoreRecovered", "StoreUnavailable"]

# Reprs and docs say `resilient.redis.RedisStore`, where users find it.
for _obj in (RedisStore, StoreMetrics, StoreRecovered, StoreUnavailable):
    _obj.__module__ = "resilient.redis"
del _obj
