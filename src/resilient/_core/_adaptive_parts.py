"""The adaptive limiter's snapshots and partitions (see ``_adaptive``).

A partition is a named class of traffic with a guaranteed share of the limit; the
core keeps one :class:`Partition` per name and resizes each share when the limit moves.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["AdaptiveLimiterMetrics", "Partition", "PartitionMetrics", "check_partitions"]


@dataclass(frozen=True, slots=True)
class PartitionMetrics:
    """One partition's counts.

    Attributes:
        share: Its guaranteed fraction of the limit.
        guaranteed: Its share of the current limit, ``ceil(limit * share)``.
        in_flight: Its calls holding a permit now.
        admitted: Its calls admitted since the limiter was created.
        rejected: Its calls refused since the limiter was created.
    """

    share: float
    guaranteed: int
    in_flight: int
    admitted: int
    rejected: int


@dataclass(frozen=True, slots=True)
class AdaptiveLimiterMetrics:
    """An adaptive limiter's counts at one moment.

    Attributes:
        limit: The current limit.
        in_flight: Calls holding a permit now.
        waiting: Callers queued for a permit now.
        admitted: Calls admitted since the limiter was created.
        rejected: Calls refused since the limiter was created.
        dropped: Calls that ended in a drop (overload) since the limiter was created.
        updates: How many windows fed the algorithm.
        partitions: Per partition (by name), its counts; empty without partitions.
    """

    limit: int
    in_flight: int
    waiting: int
    admitted: int
    rejected: int
    dropped: int
    updates: int
    partitions: Mapping[str, PartitionMetrics]


class Partition:
    """One partition's share and counts, guarded by the core's lock."""

    __slots__ = ("admitted", "busy", "guaranteed", "name", "rejected", "share")

    def __init__(self, name: str, share: float) -> None:
        self.name = name
        self.share = share
        self.guaranteed = 1
        self.busy = 0
        self.admitted = 0
        self.rejected = 0

    def resize(self, limit: int) -> None:
        """Its guaranteed permits under ``limit``: ``ceil(limit * share)``, at least 1."""
        self.guaranteed = max(1, math.ceil(limit * self.share))


def check_partitions(value: object) -> tuple[Partition, ...]:
    """``None`` or a mapping of names to shares in (0, 1] adding up to at most 1."""
    if value is None:
        return ()
    if not isinstance(value, Mapping):
        raise TypeError(
            'partitions must be a mapping of names to shares, e.g. {"live": 0.8, "batch": 0.2},'
            f" or None; not {type(value).__name__}"
        )
    parts = []
    for name, share in value.items():
        if not isinstance(name, str):
            raise TypeError(f"partitions keys must be str, not {type(name).__name__}")
        if not isinstance(share, (int, float)) or isinstance(share, bool):
            raise TypeError(f"partitions[{name!r}] must be a number in (0, 1], not {share!r}")
        if not 0.0 < share <= 1.0:
            raise ValueError(f"partitions[{name!r}] must be in (0, 1], got {share!r}")
        parts.append(Partition(name, float(share)))
    total = sum(p.share for p in parts)
    if total > 1.0 + 1e-9:
        raise ValueError(f"partitions' shares must add up to at most 1, got {total:g}")
    return tuple(parts)
