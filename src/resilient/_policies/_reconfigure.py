"""Changing a policy's options in place: the driver behind every ``reconfigure()``.

Every policy keeps the options it was built with, as given (``_config``). A change is
made in two steps, so that a bad value changes nothing and a registry can check a whole
configuration before it touches any policy:

1. :func:`plan`: the changes are merged over the current options and checked exactly
   as the constructor checks them (each policy builds a throwaway core from them, or
   calls the same checks), outside every lock: a check may run user code (a callable
   ``open_duration`` is called once). Values equal to the current ones (``30`` and
   ``timedelta(seconds=30)``, two ``CountWindow(100)``) are not changes; when nothing
   changes there is no plan, no event, and the policy is left alone.
2. :meth:`Plan.apply`: the policy swaps the checked values in under its own lock,
   keeping its state (windows, breaker state, tokens, slots, counts), then the
   ``Reconfigured`` event, and whatever the change caused (a breaker whose window now
   meets its lowered threshold opens), go to the listeners once every lock is released.

Reconfigurations are serialised process-wide (they are rare); a plan made against
options that another reconfiguration replaced meanwhile is made again.
"""

from __future__ import annotations

import datetime
import logging
import types
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from resilient._core import _events
from resilient._core._fork import new_lock

if TYPE_CHECKING:
    from resilient._policies._policy import CorePolicy

__all__ = ["Commit", "Plan", "plan", "reconfigure", "same"]

logger = logging.getLogger("resilient")

_LOCK = new_lock()

Commit = Callable[[], "Callable[[], object] | None"]
"""Applies a checked change under the policy's lock; may return work for after the lock."""


def same(old: object, new: object) -> bool:  # noqa: PLR0911 -- one case a line
    """Whether ``new`` is no change from ``old`` (as the policy would read both)."""
    if old is new:
        return True
    if isinstance(old, bool) or isinstance(new, bool):
        return False  # True == 1, but only one of them is an accepted flag
    seconds = (int, float, datetime.timedelta)
    if isinstance(old, seconds) and isinstance(new, seconds):
        a = old.total_seconds() if isinstance(old, datetime.timedelta) else old
        b = new.total_seconds() if isinstance(new, datetime.timedelta) else new
        return a == b
    from resilient._core._window import CountWindow, TimeWindow  # noqa: PLC0415

    if isinstance(old, (CountWindow, TimeWindow)) or isinstance(new, (CountWindow, TimeWindow)):
        return type(old) is type(new) and repr(old) == repr(new)
    if type(old) is not type(new):
        return False
    try:
        return bool(old == new)
    except Exception:  # a value whose == raises is compared by identity (above)
        return False


class Plan:
    """A checked change of one policy's options, not yet applied (see the module docstring).

    Attributes:
        policy: The policy to change.
        changes: ``{option: (old, new)}`` for each option that changes.
    """

    __slots__ = ("_base", "_commit", "_merged", "changes", "policy")

    def __init__(
        self,
        policy: CorePolicy[Any],
        base: object,
        merged: dict[str, Any],
        changes: dict[str, tuple[Any, Any]],
        commit: Commit,
    ) -> None:
        self.policy = policy
        self._base = base
        self._merged = merged
        self.changes = changes
        self._commit = commit

    def apply(self) -> bool:
        """Apply the change; ``False`` (nothing done) if the options changed since the plan."""
        policy = self.policy
        with _LOCK:
            if policy._config is not self._base:
                return False
            after = self._commit()
            policy._config = policy._pack_options(self._merged)
        _announce(policy, self.changes)
        if after is not None:
            after()
        return True


def _announce(policy: CorePolicy[Any], changes: dict[str, tuple[Any, Any]]) -> None:
    if logger.isEnabledFor(logging.INFO):
        logger.info(
            "%s %r reconfigured: %s",
            policy.kind.replace("_", " "),
            policy.name,
            ", ".join(f"{option} {old!r} -> {new!r}" for option, (old, new) in changes.items()),
        )
    core = policy._core
    if core.observed():
        core.emit(_events.Reconfigured(policy.name, policy.kind, types.MappingProxyType(changes)))


def options_of(policy: CorePolicy[Any]) -> dict[str, Any]:
    """The options ``policy`` may change, as last given; TypeError if it cannot change any."""
    config = getattr(policy, "_config", None)
    if config is None:
        raise TypeError(f"{type(policy).__name__} cannot be reconfigured")
    return policy._unpack_options(config)


def plan(policy: CorePolicy[Any], options: Mapping[str, Any]) -> Plan | None:
    """Check ``options`` as the constructor would, over the current ones: a plan, or ``None``.

    ``None`` when nothing would change. Raises ``TypeError`` for an option the policy
    does not have (or cannot change at run time) and ``ValueError``/``TypeError`` naming
    a bad value, as construction does; nothing is changed either way.
    """
    token = getattr(policy, "_config", None)  # compared by identity when applied
    base = options_of(policy)
    unknown = sorted(set(options) - set(base))
    if unknown:
        fixed = getattr(policy, "_fixed_options", ())
        hint = [name for name in unknown if name in fixed]
        if hint:
            raise TypeError(
                f"{type(policy).__name__}'s {hint[0]!r} cannot be changed at run time "
                f"(make a new {type(policy).__name__}); options that can: "
                + ", ".join(sorted(base))
            )
        raise TypeError(
            f"{type(policy).__name__} has no option {unknown[0]!r}; options that can "
            "change: " + ", ".join(sorted(base))
        )
    changes = {
        option: (base[option], value)
        for option, value in options.items()
        if not same(base[option], value)
    }
    if not changes:
        return None  # the values in force, which were checked when they were given
    merged = {**base, **options}
    commit = policy._prepare_reconfigure(merged, frozenset(changes))  # raises when bad
    return Plan(policy, token, merged, changes, commit)


def reconfigure(policy: CorePolicy[Any], options: Mapping[str, Any]) -> bool:
    """Change ``policy``'s options in place; ``True`` if anything changed."""
    while True:
        checked = plan(policy, options)
        if checked is None:
            return False
        if checked.apply():
            return True
        # Another reconfiguration came first: check again against what it left.
