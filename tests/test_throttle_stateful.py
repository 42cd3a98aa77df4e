"""The adaptive throttle's core against a tiny model: a dict of buckets and the formula.

Hypothesis drives calls (accepted, refused, ignored, interrupted; each with a draw it
chooses) and the passage of time; the model predicts every decision and the window's
counts: a request per call in its bucket, an accept in the same bucket if it is still in
the window, the request taken back for a call that counts as neither.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from resilient import AdaptiveThrottle, ThrottledError
from resilient.testing import ManualClock
from throttle_helpers import Draws, NotFound, Refused

WINDOW = 10.0
BUCKETS = 5
WIDTH = WINDOW / BUCKETS


class ThrottleModel(RuleBasedStateMachine):
    @initialize(k=st.sampled_from([1.0, 1.5, 2.0, 3.0]))
    def start(self, k: float) -> None:
        self.clock = ManualClock()
        self.draws = Draws()
        self.k = k
        self.throttle = AdaptiveThrottle(
            k=k,
            window=WINDOW,
            buckets=BUCKETS,
            record=Refused,
            ignore=NotFound,
            random=self.draws,
            clock=self.clock,
        )
        self.requests: dict[int, int] = {}
        self.accepts: dict[int, int] = {}
        self.shed = self.admitted = 0

    # -- the model -----------------------------------------------------------------------

    def bucket(self) -> int:
        return math.floor(self.clock.monotonic() / WIDTH)

    def live(self) -> range:
        now = self.bucket()
        return range(now - BUCKETS + 1, now + 1)

    def totals(self) -> tuple[int, int]:
        live = self.live()
        return (
            sum(v for b, v in self.requests.items() if b in live),
            sum(v for b, v in self.accepts.items() if b in live),
        )

    def probability(self) -> float:
        requests, accepts = self.totals()
        return max(0.0, (requests - self.k * accepts) / (requests + 1))

    def call(self, draw: float, outcome: str, during: float) -> None:
        p = self.probability()
        self.draws.values = [draw]
        bucket = self.bucket()
        shed = p > 0 and draw < p

        def fn() -> str:
            self.clock.advance(during)
            if outcome == "refused":
                raise Refused
            if outcome == "ignored":
                raise NotFound
            if outcome == "interrupted":
                raise KeyboardInterrupt
            return "ok"

        raised: type[BaseException] | None = None
        try:
            self.throttle.call(fn)
        except (ThrottledError, Refused, NotFound, KeyboardInterrupt) as exc:
            raised = type(exc)
        self.requests[bucket] = self.requests.get(bucket, 0) + 1
        if shed:
            assert raised is ThrottledError
            self.shed += 1
            return
        assert raised is not ThrottledError
        self.admitted += 1
        if outcome in ("ignored", "interrupted"):
            if bucket in self.live():
                self.requests[bucket] -= 1
        elif outcome == "accepted" and bucket in self.live():
            self.accepts[bucket] = self.accepts.get(bucket, 0) + 1

    # -- rules -----------------------------------------------------------------------------

    @rule(
        draw=st.floats(0.0, 1.0, exclude_max=True),
        outcome=st.sampled_from(["accepted", "refused", "refused", "ignored", "interrupted"]),
        during=st.sampled_from([0.0, 0.0, 0.5, WIDTH, WINDOW]),
    )
    def make_a_call(self, draw: float, outcome: str, during: float) -> None:
        self.call(draw, outcome, during)

    @rule(seconds=st.sampled_from([0.1, 1.0, WIDTH, 3.3, WINDOW, 100.0]))
    def time_passes(self, seconds: float) -> None:
        self.clock.advance(seconds)

    # -- invariants ------------------------------------------------------------------------

    @invariant()
    def the_window_matches_the_model(self) -> None:
        m = self.throttle.metrics()
        assert (m.requests, m.accepts) == self.totals()
        assert m.rejection_probability == pytest.approx(self.probability(), abs=1e-12)
        assert m.accepts <= m.requests
        assert (m.admitted, m.rejected) == (self.admitted, self.shed)


ThrottleModel.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
TestThrottleModel = ThrottleModel.TestCase
