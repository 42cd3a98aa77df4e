"""A store's options for some of its policies: ``RedisStore.with_options()``.

``local_share`` and ``on_unavailable`` are a policy's business (how many instances share
*this* limit, whether *this* policy may decide alone during an outage), while the
connections, the health of Redis and the breakers' background thread are the store's.
A view is a :class:`~resilient.redis.RedisStore` (policies take it as ``store=``) that
carries its own two options and hands every other attribute, methods included, to the
store it was made from: so an outage seen through one view is seen through them all,
and counted once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from resilient.redis._store import RedisStore

if TYPE_CHECKING:
    from resilient.redis._store import OnUnavailable

__all__ = ["StoreView"]

# What a view answers itself; everything else is its base's.
_OWN: Final = frozenset(
    {
        "_base",
        "local_share",
        "on_unavailable",
        "_bind_rate_limiter",
        "_bind_keyed_rate_limiter",
        "_bind_circuit_breaker",
        "with_options",
        "__class__",
        "__repr__",
    }
)


class StoreView(RedisStore):
    """A :class:`RedisStore` with its own ``local_share`` and ``on_unavailable``."""

    __slots__ = ("_base",)

    def __init__(self, base: RedisStore, local_share: int, on_unavailable: OnUnavailable) -> None:
        # RedisStore.__init__ is not called: a view opens nothing, it shares.
        object.__setattr__(self, "_base", base)
        object.__setattr__(self, "local_share", local_share)
        object.__setattr__(self, "on_unavailable", on_unavailable)

    def __getattribute__(self, name: str) -> Any:
        if name in _OWN:
            return object.__getattribute__(self, name)
        return getattr(object.__getattribute__(self, "_base"), name)

    def __setattr__(self, name: str, value: object) -> None:
        if name in _OWN:
            object.__setattr__(self, name, value)
        else:
            setattr(self._base, name, value)

    def __repr__(self) -> str:
        return (
            f"<RedisStore {self._base.description} op_timeout={self._base.op_timeout:g}s"
            f" local_share={self.local_share} on_unavailable={self.on_unavailable!r}>"
        )
