"""Per-host policies: made on demand by the user's factory, kept in a bounded LRU.

One host's outage must not open the breaker of another, so a transport given a
factory keeps one policy per host (its *authority*: ``host`` or ``host:port``), named
``<name>:<host>``, so that events, the registry and OpenTelemetry readings tell hosts
apart. A client that talks to unboundedly many hosts (a crawler, webhooks) must not
grow without limit: past ``max_hosts`` the least recently used host's policy is
dropped (counted in ``evictions``, and released from the registry); if that host comes
back it gets a fresh policy.
"""

from __future__ import annotations

import logging
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from resilient._core._fork import new_lock
from resilient._policies._policy import Policy
from resilient._policies._registry import Registry

__all__ = ["HostMetrics", "HostPolicies", "live_host_policies"]

logger = logging.getLogger("resilient")

G = TypeVar("G")

# Every live transport's host policies, for the OpenTelemetry readings (hosts, evictions).
_LIVE: weakref.WeakSet[HostPolicies[Any]] = weakref.WeakSet()


def live_host_policies() -> list[HostPolicies[Any]]:
    """The per-host policies of every transport still alive."""
    return list(_LIVE)


@dataclass(frozen=True, slots=True)
class HostMetrics:
    """The per-host policies of a transport, as a frozen snapshot.

    Attributes:
        hosts: Hosts with a live policy now.
        max_hosts: The most kept at once (``max_hosts=``).
        created: Policies made by the factory, in all.
        evictions: Policies dropped because ``max_hosts`` were already kept.
    """

    hosts: int
    max_hosts: int
    created: int
    evictions: int


class HostPolicies(Generic[G]):
    """Host -> (policy, its guards), made by ``factory(name)`` on a host's first request.

    ``build(policy)`` turns a new policy into what the shell keeps per host (its guards).
    The factory and ``build`` run outside the lock: they are user code, or call it.
    """

    __slots__ = (
        "__weakref__",  # new_lock() resets the lock after a fork, keyed by a weak reference
        "_build",
        "_created",
        "_entries",
        "_evictions",
        "_factory",
        "_lock",
        "max_hosts",
        "name",
        "registry",
    )

    def __init__(
        self,
        name: str,
        factory: Callable[[str], Any],
        max_hosts: int,
        registry: Registry,
        build: Callable[[Policy], G],
    ) -> None:
        self.name = name
        self.max_hosts = max_hosts
        self.registry = registry
        self._factory = factory
        self._build = build
        self._entries: OrderedDict[str, tuple[Policy, G]] = OrderedDict()
        self._lock = new_lock(self)
        self._created = 0
        self._evictions = 0
        _LIVE.add(self)

    def get(self, host: str) -> G:
        """The guards of ``host``'s policy, made (and the LRU trimmed) if it has none."""
        with self._lock:
            entry = self._entries.get(host)
            if entry is not None:
                self._entries.move_to_end(host)
                return entry[1]
        name = f"{self.name}:{host}"
        policy = self._factory(name)
        if not isinstance(policy, Policy):
            raise TypeError(
                f"the per-host factory must return a policy (CircuitBreaker, compose(...), "
                f"...) for {name!r}, not {type(policy).__name__}"
            )
        made = (policy, self._build(policy))
        evicted: list[tuple[str, Policy]] = []
        with self._lock:
            entry = self._entries.get(host)
            if entry is not None:  # another caller made one first: theirs stands
                self._entries.move_to_end(host)
                return entry[1]
            self._entries[host] = made
            self._created += 1
            while len(self._entries) > self.max_hosts:
                old_host, (old_policy, _) = self._entries.popitem(last=False)
                self._evictions += 1
                evicted.append((old_host, old_policy))
        _adopt(self.registry, name, policy)
        for old_host, old_policy in evicted:
            _release(self.registry, f"{self.name}:{old_host}", old_policy)
        for old_host, _ in evicted:
            logger.info(
                "%s: the policy of host %r was dropped (max_hosts=%d)",
                self.name,
                old_host,
                self.max_hosts,
            )
        return made[1]

    def policy(self, host: str) -> Policy | None:
        """The policy kept for ``host`` now, or ``None``."""
        with self._lock:
            entry = self._entries.get(host)
        return None if entry is None else entry[0]

    def metrics(self) -> HostMetrics:
        """A frozen snapshot of the counts."""
        with self._lock:
            return HostMetrics(len(self._entries), self.max_hosts, self._created, self._evictions)


# The registry has no public way to hold a policy it did not build; these two reach in
# (under its lock) so that per-host policies show in its snapshot while they live.


def _adopt(registry: Registry, name: str, policy: Policy) -> None:
    with registry._lock:
        existing = registry._policies.get(name)
        if existing is None:
            registry._policies[name] = policy
            return
    if existing is not policy:
        logger.warning(
            "the registry already holds a policy named %r; the per-host policy of that "
            "name is not registered (give the transport another name=)",
            name,
        )


def _release(registry: Registry, name: str, policy: Policy) -> None:
    with registry._lock:
        if registry._policies.get(name) is policy:
            del registry._policies[name]
