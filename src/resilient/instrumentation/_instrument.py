"""OpenTelemetry metrics for every named policy: [`instrument`][resilient.instrument].

Calling an instrument costs far more than a policy does: with the SDK, one
``counter.add`` with three attributes is about 16 µs and one ``histogram.record`` about
15 µs, forty times a closed breaker. So nothing here runs per call. The policies count
what they do anyway (the breaker even on its lock-free path, see ``resilient._core._breaker``),
and every instrument but the opt-in duration histogram is *observable*: its callback
reads those counts when a reader collects, once per export interval.

Policies are found through the process-wide set of live policies, so a policy created
before or after ``instrument()`` is observed alike. Every policy is reported: the
``resilient.policy`` attribute is its name or, for an unnamed one, the ``module.qualname``
of the first function it decorated (else ``"<unnamed>"``). Two policies with one name
and kind are reported as one: their counts add up.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import Final

from opentelemetry import metrics as otel
from opentelemetry.metrics import CallbackOptions, Histogram, Meter, MeterProvider, Observation

from resilient._core._breaker_timing import DURATIONS
from resilient._core._events import (
    CallFailed,
    CallIgnored,
    CallSucceeded,
    Event,
    add_global_listener,
    remove_global_listener,
)
from resilient._core._fork import new_lock
from resilient._policies._adaptive import AdaptiveLimiter
from resilient._policies._bulkhead import Bulkhead
from resilient._policies._cache import Cache
from resilient._policies._coalesce import Coalesce
from resilient._policies._keyed_ratelimit import KeyedRateLimiter
from resilient._policies._policy import CorePolicy
from resilient._policies._ratelimit import RateLimiter
from resilient._policies._timeout import Timeout
from resilient._version import __version__
from resilient.instrumentation._readings import KIND_KEY, OUTCOME, POLICY, Readings
from resilient.instrumentation._tracing import SpanEvents

__all__ = ["Instrumentation", "instrument"]

logger = logging.getLogger("resilient")

Attrs = dict[str, str | float]
LIMITERS: Final = (RateLimiter, KeyedRateLimiter)


class Instrumentation(Readings):
    """What [`instrument`][resilient.instrument] turned on; `uninstrument()` turns it off.

    There is one per meter provider: calling [`instrument`][resilient.instrument] again
    with the same provider returns the same handle with the new options. OpenTelemetry
    has no way to remove an instrument from a meter, so after `uninstrument()` the
    instruments stay registered and report nothing until
    [`instrument`][resilient.instrument] is called again.

    Attributes:
        meter: The meter the instruments were created on.
        callback_errors: How many times reading a policy failed during a collection
            (each is logged; the other policies are still reported).
    """

    def __init__(self, meter: Meter) -> None:
        self.meter = meter
        self.callback_errors = 0
        self._active = False
        self._quantiles: tuple[float, ...] = ()
        self._histogram: Histogram | None = None
        self._histogram_listener: Callable[[Event], None] | None = None
        self._spans: SpanEvents | None = None
        # A meter refuses a second instrument of the same name, so instruments are
        # created once per meter and switched on and off with the handle.
        self._create_instruments()

    @property
    def active(self) -> bool:
        """Whether the instruments report (``False`` after `uninstrument()`)."""
        return self._active

    def _activate(
        self, *, call_duration: bool, quantiles: tuple[float, ...], span_events: bool
    ) -> None:
        self._quantiles = quantiles
        if call_duration:
            if self._histogram is None:
                self._histogram = self.meter.create_histogram(
                    "resilient.call.duration",
                    unit="s",
                    description="Duration of calls through circuit breakers (opt-in).",
                )
            self._start_histogram(self._histogram)
        if span_events:
            self._spans = SpanEvents()
            self._spans.start()
        self._active = True

    def uninstrument(self) -> None:
        """Stop reporting: observable instruments go quiet, listeners are removed."""
        with _LOCK:
            self._deactivate()

    def _deactivate(self) -> None:
        # With _LOCK held.
        self._active = False
        if self._histogram_listener is not None:
            remove_global_listener(self._histogram_listener)
            self._histogram_listener = None
            DURATIONS.release()  # breakers stop measuring unless another histogram wants it
        if self._spans is not None:
            self._spans.stop()
            self._spans = None

    # -- instruments -------------------------------------------------------------------

    def _create_instruments(self) -> None:
        m = self.meter
        m.create_observable_counter(
            "resilient.calls",
            callbacks=[self._guarded(self._calls)],
            unit="{call}",
            description="Calls through a policy, by outcome.",
        )
        m.create_observable_gauge(
            "resilient.circuit_breaker.state",
            callbacks=[self._guarded(self._breaker_state)],
            unit="1",
            description="1 for the breaker's current state, 0 for the others.",
        )
        m.create_observable_counter(
            "resilient.circuit_breaker.transitions",
            callbacks=[self._guarded(self._transitions)],
            unit="{transition}",
            description="State transitions, by the state left and the state entered.",
        )
        m.create_observable_gauge(
            "resilient.circuit_breaker.failure_rate",
            callbacks=[self._guarded(self._rate("failure_rate"))],
            unit="1",
            description="Failed calls over calls in the breaker's current window.",
        )
        m.create_observable_gauge(
            "resilient.circuit_breaker.slow_call_rate",
            callbacks=[self._guarded(self._rate("slow_call_rate"))],
            unit="1",
            description="Slow calls over calls in the breaker's current window.",
        )
        m.create_observable_gauge(
            "resilient.circuit_breaker.call.duration",
            callbacks=[self._guarded(self._window_quantiles)],
            unit="s",
            description="Quantiles of the call durations in the breaker's count window.",
        )
        m.create_observable_up_down_counter(
            "resilient.bulkhead.in_flight",
            callbacks=[self._guarded(self._summed((Bulkhead,), lambda b: b.metrics().in_flight))],
            unit="{call}",
            description="Calls holding a bulkhead slot.",
        )
        m.create_observable_up_down_counter(
            "resilient.bulkhead.waiting",
            callbacks=[self._guarded(self._summed((Bulkhead,), lambda b: b.metrics().waiting))],
            unit="{call}",
            description="Callers queued for a bulkhead slot.",
        )
        m.create_observable_up_down_counter(
            "resilient.bulkhead.limit",
            callbacks=[self._guarded(self._summed((Bulkhead,), lambda b: b.max_concurrent))],
            unit="{call}",
            description="The bulkhead's max_concurrent.",
        )
        m.create_observable_counter(
            "resilient.rate_limiter.waited",
            callbacks=[self._guarded(self._summed(LIMITERS, lambda r: r.metrics().waited))],
            unit="{call}",
            description="Calls admitted by a rate limiter after waiting for their slot.",
        )
        m.create_observable_gauge(
            "resilient.retry.budget.balance",
            callbacks=[self._guarded(self._budget_balance)],
            unit="{retry}",
            description="Retries the retry policy's budget would allow now.",
        )
        m.create_observable_up_down_counter(
            "resilient.timeout.abandoned",
            callbacks=[
                self._guarded(self._summed((Timeout,), lambda t: t.metrics().abandoned_running))
            ],
            unit="{call}",
            description="Sync calls past their timeout that still run in a worker thread.",
        )
        self._create_store_instruments()
        m.create_observable_counter(
            "resilient.listener.errors",
            callbacks=[self._guarded(self._summed((CorePolicy,), lambda p: p.listener_errors))],
            unit="{error}",
            description="Exceptions raised by event listeners (logged; calls unaffected).",
        )
        # Issue 17 (kept apart for merging).
        m.create_observable_gauge(
            "resilient.adaptive_throttle.rejection_probability",
            callbacks=[self._guarded(self._throttle_probability)],
            unit="1",
            description="The probability that an adaptive throttle sheds the next call.",
        )
        self._create_adaptive_instruments()
        self._create_coalescing_instruments()
        self._create_http_instruments()

    # -- issue 17: the adaptive limiter's instruments (a block of its own) ---------------

    def _create_adaptive_instruments(self) -> None:
        m = self.meter
        m.create_observable_gauge(
            "resilient.adaptive_limiter.limit",
            callbacks=[self._guarded(self._summed((AdaptiveLimiter,), lambda a: a.limit))],
            unit="{call}",
            description="The adaptive limiter's current limit.",
        )
        m.create_observable_up_down_counter(
            "resilient.adaptive_limiter.in_flight",
            callbacks=[
                self._guarded(self._summed((AdaptiveLimiter,), lambda a: a.metrics().in_flight))
            ],
            unit="{call}",
            description="Calls holding an adaptive limiter's permit.",
        )
        m.create_observable_up_down_counter(
            "resilient.adaptive_limiter.waiting",
            callbacks=[
                self._guarded(self._summed((AdaptiveLimiter,), lambda a: a.metrics().waiting))
            ],
            unit="{call}",
            description="Callers queued for an adaptive limiter's permit.",
        )

    # -- issue 19: coalescing and caching (a block of its own) -------------------------

    def _create_coalescing_instruments(self) -> None:
        m = self.meter
        m.create_observable_up_down_counter(
            "resilient.coalesce.in_flight",
            callbacks=[self._guarded(self._summed((Coalesce,), lambda c: c.metrics().in_flight))],
            unit="{call}",
            description="Calls in flight that later identical calls would share.",
        )
        m.create_observable_up_down_counter(
            "resilient.cache.entries",
            callbacks=[self._guarded(self._summed((Cache,), lambda c: c.metrics().entries))],
            unit="{entry}",
            description="Entries a cache holds (fresh, or stale and kept for stale_if_error).",
        )

    # -- issue 18: the HTTP clients' per-host policies (a block of its own) --------------

    def _create_http_instruments(self) -> None:
        m = self.meter
        m.create_observable_up_down_counter(
            "resilient.http.hosts",
            callbacks=[self._guarded(_http_hosts("hosts"))],
            unit="{host}",
            description="Hosts with a policy of their own in an HTTP client's transport.",
        )
        m.create_observable_counter(
            "resilient.http.host_evictions",
            callbacks=[self._guarded(_http_hosts("evictions"))],
            unit="{host}",
            description="Per-host policies dropped because the transport kept max_hosts.",
        )

    def _create_store_instruments(self) -> None:
        # The health of the shared stores (resilient.redis) that live policies use.
        m = self.meter
        for name, unit, description in _STORE_COUNTERS:
            m.create_observable_counter(
                f"resilient.store.{name}",
                callbacks=[self._guarded(self._store_health(name))],
                unit=unit,
                description=description,
            )
        m.create_observable_gauge(
            "resilient.store.available",
            callbacks=[self._guarded(self._store_health("available"))],
            unit="1",
            description="1 while the shared store answers, 0 during an outage.",
        )

    def _guarded(
        self, read: Callable[[], Iterable[Observation]]
    ) -> Callable[[CallbackOptions], Iterable[Observation]]:
        """A callback that reports nothing once uninstrumented, and never raises."""

        def callback(_options: CallbackOptions) -> Iterable[Observation]:
            if not self._active:
                return []
            try:
                return list(read())
            except Exception:
                self.callback_errors += 1
                logger.exception("reading metrics for OpenTelemetry failed")
                return []

        return callback

    # -- the opt-in histogram ----------------------------------------------------------

    def _start_histogram(self, histogram: Histogram) -> None:
        DURATIONS.want()  # every named breaker, now and created later, measures its calls

        def record(event: Event) -> None:
            if (
                type(event) in _TIMED_EVENTS
                and event.policy is not None
                and event.duration is not None  # type: ignore[attr-defined]
            ):
                attrs: Attrs = {POLICY: event.policy, KIND_KEY: event.kind}
                if type(event) is CallFailed:
                    attrs[OUTCOME] = "failure"
                elif type(event) is CallIgnored:
                    attrs[OUTCOME] = "ignored"
                else:
                    attrs[OUTCOME] = "success"
                histogram.record(event.duration, attrs)  # type: ignore[attr-defined]

        self._histogram_listener = record
        add_global_listener(record)


_STORE_COUNTERS: Final = (
    ("errors", "{error}", "Operations on a shared store that failed (raised or timed out)."),
    ("outages", "{outage}", "Times a shared store went from available to unavailable."),
    (
        "fallbacks",
        "{call}",
        "Decisions made on local state (or refused) because the shared store was unavailable.",
    ),
)

_TIMED_EVENTS: Final = frozenset({CallSucceeded, CallFailed, CallIgnored})

_LOCK = new_lock()
# One handle per provider, for as long as the provider lives.
_BY_PROVIDER: weakref.WeakKeyDictionary[MeterProvider, Instrumentation] = (
    weakref.WeakKeyDictionary()
)


def instrument(
    meter_provider: MeterProvider | None = None,
    *,
    call_duration: bool = False,
    quantiles: Sequence[float] = (0.5, 0.9, 0.99),
    span_events: bool = True,
) -> Instrumentation:
    """Report every policy's metrics through OpenTelemetry.

    With no SDK configured this costs nothing per call: the counts are kept by the
    policies anyway and read by observable instruments at collection time. The table of
    instruments is in ``docs/observability.md``.

    Args:
        meter_provider: Where to create the instruments (``None``: the global provider,
            which may be set before or after this call).
        call_duration: Also record each call through a circuit breaker in the
            ``resilient.call.duration`` histogram. Off by default: it makes every breaker
            measure and report each call, which with the SDK costs about 15 µs a call.
        quantiles: The quantiles, in (0, 1], reported by
            ``resilient.circuit_breaker.call.duration`` from the durations a breaker's
            count window holds (breakers that measure durations only).
        span_events: Add an event to the current span for each rejection, retry,
            fallback, timeout and state transition (a no-op where no span records).

    Returns:
        The [`Instrumentation`][resilient.Instrumentation]; call its
        [`uninstrument`][resilient.Instrumentation.uninstrument] to stop.
    """
    if isinstance(quantiles, (str, bytes)):
        raise TypeError("quantiles must be a collection of numbers in (0, 1], not a str")
    try:
        qs = tuple(quantiles)
    except TypeError:
        raise TypeError(
            f"quantiles must be a collection of numbers in (0, 1], not {type(quantiles).__name__}"
        ) from None
    for option, flag in (("call_duration", call_duration), ("span_events", span_events)):
        if not isinstance(flag, bool):
            raise TypeError(f"{option} must be True or False, not {type(flag).__name__}")
    given: tuple[object, ...] = qs
    for q in given:
        if isinstance(q, bool) or not isinstance(q, (int, float)) or not 0 < q <= 1:
            raise ValueError(f"quantiles must be numbers in (0, 1], got {q!r}")
    provider = otel.get_meter_provider() if meter_provider is None else meter_provider
    if not isinstance(provider, MeterProvider):
        raise TypeError(
            f"meter_provider must be an OpenTelemetry MeterProvider or None, "
            f"not {type(provider).__name__}"
        )
    with _LOCK:
        handle = _BY_PROVIDER.get(provider)
        if handle is None:
            handle = Instrumentation(provider.get_meter("resilient", __version__))
            _BY_PROVIDER[provider] = handle
        if handle.active:
            handle._deactivate()  # called again: the new options replace the old
        handle._activate(call_duration=call_duration, quantiles=qs, span_events=span_events)
    return handle


def _http_hosts(field: str) -> Callable[[], Iterable[Observation]]:
    """Per transport name: a count of its per-host policies (``resilient.httpx``, ...)."""

    def read() -> Iterable[Observation]:
        # Loaded here: nothing HTTP is imported until a reading is taken.
        from resilient._http._hosts import live_host_policies  # noqa: PLC0415

        totals: dict[str, int] = {}
        for hosts in live_host_policies():
            totals[hosts.name] = totals.get(hosts.name, 0) + getattr(hosts.metrics(), field)
        return [Observation(total, {POLICY: name}) for name, total in totals.items()]

    return read
