"""The cache against a tiny model: a dict of (value, stored at) in LRU order, and a clock.

Hypothesis drives calls (each succeeding with a new value, or failing), the passage of
time (boundaries included: exactly ``ttl``, exactly ``ttl + stale_if_error``) and
invalidations; the model predicts every answer (a hit, the function's new value, a
stale value, or the failure) and the entries held, in order.
"""

from __future__ import annotations

from collections import OrderedDict

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from resilient import Cache, cache_status
from resilient.testing import ManualClock

TTL = 5.0
KEYS = st.integers(min_value=0, max_value=4)


class Down(Exception):
    pass


class CacheModel(RuleBasedStateMachine):
    @initialize(
        stale_if_error=st.sampled_from([0.0, 3.0, 10.0]),
        max_entries=st.integers(min_value=1, max_value=3),
    )
    def start(self, stale_if_error: float, max_entries: int) -> None:
        self.clock = ManualClock()
        self.stale_if_error = stale_if_error
        self.max_entries = max_entries
        self.cache = Cache(
            ttl=TTL,
            stale_if_error=stale_if_error,
            max_entries=max_entries,
            key=lambda key, fail: key,
            clock=self.clock,
        )
        self.get = self.cache(self.function)
        self.counter = 0
        self.entries: OrderedDict[int, tuple[int, float]] = OrderedDict()
        self.hits = self.misses = self.stale = self.evictions = 0

    def function(self, key: int, fail: bool) -> int:
        self.counter += 1
        if fail:
            raise Down
        return self.counter

    # -- the model's prediction of one call --------------------------------------------

    def predict(self, key: int, fail: bool) -> tuple[str, int | None]:
        now = self.clock.monotonic()
        entry = self.entries.get(key)
        if entry is not None:
            age = now - entry[1]
            if age < TTL:
                self.entries.move_to_end(key)
                self.hits += 1
                return "hit", entry[0]
            if age > TTL + self.stale_if_error:
                del self.entries[key]
                entry = None
        self.misses += 1
        if fail:
            if entry is not None and self.stale_if_error:
                self.stale += 1
                return "stale", entry[0]
            return "error", None
        value = self.counter + 1  # what the function will return
        self.entries[key] = (value, now)
        self.entries.move_to_end(key)
        while len(self.entries) > self.max_entries:
            self.entries.popitem(last=False)
            self.evictions += 1
        return "miss", value

    @rule(key=KEYS, fail=st.booleans())
    def call(self, key: int, fail: bool) -> None:
        outcome, value = self.predict(key, fail)
        if outcome == "error":
            with pytest.raises(Down):
                self.get(key, fail)
            return
        assert self.get(key, fail) == value
        status = cache_status()
        assert status is not None
        assert status.outcome == outcome

    @rule(seconds=st.sampled_from([0.0, 0.5, 1.0, 2.0, 3.0, 5.0, 8.0]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule(key=KEYS)
    def invalidate(self, key: int) -> None:
        assert self.cache.invalidate(key) == (self.entries.pop(key, None) is not None)

    @invariant()
    def counts_agree(self) -> None:
        m = self.cache.metrics()
        assert (m.hits, m.misses, m.stale_served, m.evictions) == (
            self.hits,
            self.misses,
            self.stale,
            self.evictions,
        )
        assert m.entries == len(self.entries) <= self.max_entries
        assert list(self.cache._core._entries) == list(self.entries)


CacheModel.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
TestCacheModel = CacheModel.TestCase
