"""What the OpenTelemetry instruments read from the policies, at collection time.

Each reading walks the live policies (see ``_policy.live_policies``), groups them by kind
and the name they are reported under (``_policy.reported_name``: an unnamed policy is
reported under the first function it decorated, never dropped), and turns their counts
into observations. A policy that fails to report is logged and counted, and the others
are still reported. ``_instrument.py`` creates the instruments and owns their life; this
module only reads.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any, Final

from opentelemetry.metrics import Observation

from resilient._core._breaker_state import CircuitState
from resilient._policies._breaker import CircuitBreaker

# The table of call counts by outcome lives in _policies._outcomes (the dashboard reads
# it too, without opentelemetry); kept under its old name for code that adds a kind here.
from resilient._policies._outcomes import OUTCOMES as _OUTCOMES  # noqa: F401
from resilient._policies._outcomes import nearest_rank
from resilient._policies._outcomes import outcomes as _outcomes
from resilient._policies._policy import CorePolicy, live_policies, reported_name
from resilient._policies._retry import Retry
from resilient._policies._throttle import AdaptiveThrottle

__all__ = ["KIND_KEY", "OUTCOME", "POLICY", "STATE", "STORE", "Key", "Readings"]

logger = logging.getLogger("resilient")

POLICY: Final = "resilient.policy"
KIND_KEY: Final = "resilient.kind"
OUTCOME: Final = "resilient.outcome"
STATE: Final = "resilient.state"
STORE: Final = "resilient.store"

Key = tuple[str, str]  # (kind, name)


def _named() -> Iterator[tuple[Key, CorePolicy[Any]]]:
    """Every live policy under the name it is reported as (see ``reported_name``)."""
    for policy in live_policies():
        yield (policy.kind, reported_name(policy)), policy


def _stores() -> Iterator[tuple[Key, Any]]:
    """Each shared store that a live policy is bound to, once (with one such policy's key).

    Duck-typed: this floor imports no integration. A policy's core keeps its store as
    ``_store``; a store made by ``with_options()`` shares its ``_base``'s health, which
    is read once.
    """
    seen: set[int] = set()
    for key, policy in _named():
        store = getattr(policy._core, "_store", None)
        if store is None:
            continue
        owner = getattr(store, "_base", store)
        if id(owner) not in seen:
            seen.add(id(owner))
            yield key, owner


class Readings:
    """The callbacks of the observable instruments (mixed into ``Instrumentation``).

    Attributes:
        callback_errors: How many times reading a policy failed during a collection.
    """

    callback_errors: int
    _quantiles: tuple[float, ...]

    def _each(self, kinds: tuple[type, ...]) -> Iterator[tuple[Key, Any]]:
        for key, policy in _named():
            if isinstance(policy, kinds):
                yield key, policy

    def _read(self, key: Key, policy: CorePolicy[Any], read: Callable[[], Any]) -> Any:
        # One policy failing to report must not hide the others.
        try:
            return read()
        except Exception:
            self.callback_errors += 1
            logger.exception("reading %s %r for OpenTelemetry failed", *key)
            return None

    def _calls(self) -> Iterator[Observation]:
        totals: dict[tuple[str, str, str], int] = defaultdict(int)
        for key, policy in _named():
            counts = self._read(key, policy, lambda p=policy: _outcomes(p))  # type: ignore[misc]
            for outcome, value in (counts or {}).items():
                totals[(key[0], key[1], outcome)] += value
        for (kind, name, outcome), value in totals.items():
            yield Observation(value, {POLICY: name, KIND_KEY: kind, OUTCOME: outcome})

    def _breaker_state(self) -> Iterator[Observation]:
        per_state: dict[Key, dict[CircuitState, int]] = {}
        for key, breaker in self._each((CircuitBreaker,)):
            state = self._read(key, breaker, lambda b=breaker: b.state)  # type: ignore[misc]
            if state is not None:
                counts = per_state.setdefault(key, dict.fromkeys(CircuitState, 0))
                counts[state] += 1
        for (kind, name), counts in per_state.items():
            for state, value in counts.items():
                yield Observation(value, {POLICY: name, KIND_KEY: kind, STATE: state.value})

    def _transitions(self) -> Iterator[Observation]:
        totals: dict[tuple[str, str, str, str], int] = defaultdict(int)
        for key, breaker in self._each((CircuitBreaker,)):
            read = breaker.transition_counts
            for (before, after), value in (self._read(key, breaker, read) or {}).items():
                totals[(key[0], key[1], before.value, after.value)] += value
        for (kind, name, before, after), value in totals.items():
            attrs = {POLICY: name, KIND_KEY: kind, "resilient.from_state": before, STATE: after}
            yield Observation(value, attrs)

    def _rate(self, field: str) -> Callable[[], Iterator[Observation]]:
        def read() -> Iterator[Observation]:
            worst: dict[Key, float] = {}
            for key, breaker in self._each((CircuitBreaker,)):
                metrics = self._read(key, breaker, breaker.metrics)
                if metrics is not None:
                    worst[key] = max(worst.get(key, 0.0), getattr(metrics, field))
            for (kind, name), value in worst.items():
                yield Observation(value, {POLICY: name, KIND_KEY: kind})

        return read

    def _window_quantiles(self) -> Iterator[Observation]:
        merged: dict[Key, list[float]] = defaultdict(list)
        for key, breaker in self._each((CircuitBreaker,)):
            merged[key].extend(self._read(key, breaker, breaker.window_durations) or ())
        for (kind, name), durations in merged.items():
            if not durations:
                continue
            durations.sort()
            for q in self._quantiles:
                value = nearest_rank(durations, q)
                yield Observation(value, {POLICY: name, KIND_KEY: kind, "resilient.quantile": q})

    def _summed(
        self, kinds: tuple[type, ...], value: Callable[[Any], float]
    ) -> Callable[[], Iterator[Observation]]:
        """A reading of ``value(policy)``, added up over the policies sharing a name."""

        def read() -> Iterator[Observation]:
            totals: dict[Key, float] = defaultdict(int)
            for key, policy in self._each(kinds):
                got = self._read(key, policy, lambda p=policy: value(p))  # type: ignore[misc]
                if got is not None:
                    totals[key] += got
            for (kind, name), total in totals.items():
                yield Observation(total, {POLICY: name, KIND_KEY: kind})

        return read

    def _budget_balance(self) -> Iterator[Observation]:
        # Retries sharing a name may share a budget too: each budget counts once.
        budgets: dict[Key, dict[int, Any]] = defaultdict(dict)
        for key, retry in self._each((Retry,)):
            budget = retry.budget
            if budget is not None:
                budgets[key][id(budget)] = budget
        for (kind, name), distinct in budgets.items():
            total = 0.0
            for budget in distinct.values():
                snap = self._read((kind, name), budget, budget.snapshot)
                total += snap.balance if snap is not None else 0.0
            yield Observation(total, {POLICY: name, KIND_KEY: kind})

    def _store_health(self, field: str) -> Callable[[], Iterator[Observation]]:
        """A reading of one field of each shared store's ``metrics()``, by its description.

        Stores described alike (one Redis and namespace, several store objects) add up
        their counts; ``available`` is 0 if any of them is in an outage.
        """

        def read() -> Iterator[Observation]:
            values: dict[str, int] = {}
            for key, store in _stores():
                snap = self._read(key, store, store.metrics)
                if snap is None:
                    continue
                where = str(store.description)
                value = int(getattr(snap, field))
                if field == "available":
                    values[where] = min(values.get(where, 1), value)
                else:
                    values[where] = values.get(where, 0) + value
            for where, value in values.items():
                yield Observation(value, {STORE: where})

        return read

    # -- issue 17: adaptive throttling (kept apart for merging) -----------------------

    def _throttle_probability(self) -> Iterator[Observation]:
        # Throttles sharing a name report the highest probability among them.
        worst: dict[Key, float] = {}
        for key, throttle in self._each((AdaptiveThrottle,)):
            read = throttle.metrics
            metrics = self._read(key, throttle, read)
            if metrics is not None:
                worst[key] = max(worst.get(key, 0.0), metrics.rejection_probability)
        for (kind, name), value in worst.items():
            yield Observation(value, {POLICY: name, KIND_KEY: kind})
