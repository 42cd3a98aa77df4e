"""Counting without a lock: ``itertools.count`` as an atomic counter.

``next()`` on an ``itertools.count`` is one C call, so under the GIL it is atomic: many
threads may draw from one counter and no draw is lost or repeated. Hot paths (the
breaker's ring slots and rejections, the rate limiter's tickets) count this way instead
of taking a lock.
"""

from __future__ import annotations

import itertools

__all__ = ["counted"]


def counted(counter: itertools.count[int]) -> int:
    """How many times ``next()`` was called on a fresh ``itertools.count()``.

    Its repr is ``count(N)``; the pickling route to N is deprecated since Python 3.12.
    """
    return int(repr(counter)[6:-1])
