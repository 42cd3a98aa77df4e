"""A registry of named policies: create-or-get by name, shared defaults, one snapshot.

Services configure their policies in one place (a dict loaded from TOML, YAML or the
environment) and reach them by name from wherever a call is made; one endpoint can then
show every policy's state. Options pass through the policies' own constructors, so a
bad configuration fails with the same ``ValueError``/``TypeError`` naming the option.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from resilient._core._fork import new_lock
from resilient._policies._breaker import CircuitBreaker
from resilient._policies._bulkhead import Bulkhead
from resilient._policies._policy import Policy
from resilient._policies._ratelimit import RateLimiter
from resilient._policies._reconfigure import Plan, plan
from resilient._policies._registry_config import (
    apply_plans,
    configure,
    registry_kind,
    window_from,
)
from resilient._policies._retry import Retry

if TYPE_CHECKING:
    from resilient._policies._adaptive import AdaptiveLimiter
    from resilient._policies._cache import Cache
    from resilient._policies._coalesce import Coalesce
    from resilient._policies._fallback import Fallback
    from resilient._policies._hedge import Hedge
    from resilient._policies._keyed_ratelimit import KeyedRateLimiter
    from resilient._policies._throttle import AdaptiveThrottle
    from resilient._policies._timeout import Timeout

__all__ = ["Registry", "default_registry"]

P = TypeVar("P", bound=Policy)

_FACTORIES: dict[str, Callable[..., Policy]] = {
    "circuit_breaker": CircuitBreaker,
    "bulkhead": Bulkhead,
    "timeout": lambda *args, **options: _timeout().Timeout(*args, **options),
    "retry": Retry,
    "rate_limiter": RateLimiter,
    "adaptive_throttle": lambda *args, **options: _throttle().AdaptiveThrottle(*args, **options),
    "hedge": lambda *args, **options: _hedge().Hedge(*args, **options),
}


# Fault injection (resilient.chaos, issue 18): loaded when a registry makes one. Every
# option is keyword (the first may be a factory), so they are built like a retry.
_CHAOS = {
    "inject_fault": "InjectFault",
    "inject_latency": "InjectLatency",
    "inject_result": "InjectResult",
}


def _chaos_factory(kind: str) -> Callable[..., Policy]:
    def make(**options: Any) -> Policy:
        import resilient._policies._chaos as chaos  # noqa: PLC0415

        return getattr(chaos, _CHAOS[kind])(**options)  # type: ignore[no-any-return]

    return make


_FACTORIES.update({kind: _chaos_factory(kind) for kind in _CHAOS})


def _timeout() -> Any:
    # Timeout brings worker threads and event-loop timers: loaded when a registry makes one.
    import resilient._policies._timeout  # noqa: PLC0415

    return resilient._policies._timeout


def _throttle() -> Any:
    # Loaded when a registry makes one: a service without throttles never imports it.
    import resilient._policies._throttle  # noqa: PLC0415

    return resilient._policies._throttle


def _hedge() -> Any:
    # Loaded when a registry makes one, as a timeout is.
    import resilient._policies._hedge  # noqa: PLC0415

    return resilient._policies._hedge


def _plain(value: Any) -> Any:
    """Metrics as JSON-ready data: enums by value, dataclasses as dicts."""
    if isinstance(value, enum.Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):  # an adaptive limiter's partitions
        return {key: _plain(item) for key, item in value.items()}
    return value


class Registry:
    """Named policies, created on first request with shared defaults.

    Args:
        defaults: Options per kind, applied under each request's own options, e.g.
            ``{"circuit_breaker": {"failure_rate_threshold": 0.3}, "timeout": {...}}``.
    """

    def __init__(self, defaults: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        self._defaults: dict[str, dict[str, Any]] = {}
        if defaults is not None and not isinstance(defaults, Mapping):
            raise TypeError(
                "defaults must be a mapping of kind to options, e.g. "
                '{"circuit_breaker": {"minimum_calls": 20}}, or None; '
                f"not {type(defaults).__name__}"
            )
        for kind, options in (defaults or {}).items():
            self._check_kind(kind)
            given: object = options
            if not isinstance(given, Mapping):
                raise TypeError(
                    f"defaults[{kind!r}] must be a mapping of option names to values, "
                    f"not {type(given).__name__}"
                )
            self._defaults[kind] = dict(options)
        self._policies: dict[str, Policy] = {}
        self._lock = new_lock(self)

    @staticmethod
    def _check_kind(kind: str) -> None:
        if kind not in _FACTORIES:
            kinds = ", ".join(sorted(_FACTORIES))
            raise ValueError(f"kind must be one of {kinds}; got {kind!r}")

    def _get_or_create(self, kind: str, name: str, options: Mapping[str, Any]) -> Policy:
        given: object = name
        if not isinstance(given, str) or not given:
            raise TypeError(f"name must be a non-empty str, not {name!r}")
        with self._lock:
            existing = self._policies.get(name)
            if existing is not None:
                if registry_kind(existing) != kind:
                    raise ValueError(
                        f"{name!r} is already a {registry_kind(existing)}, not a {kind}"
                    )
                return existing
            policy = self._build(kind, name, options)
            self._policies[name] = policy
            return policy

    def _build(self, kind: str, name: str, options: Mapping[str, Any]) -> Policy:
        """A new policy of ``kind`` called ``name``, with ``options`` over the defaults."""
        merged = {**self._defaults.get(kind, {}), **options}
        if "window" in merged:
            merged["window"] = window_from(merged["window"])
        factory = _FACTORIES[kind]
        if kind in ("circuit_breaker", "adaptive_throttle"):  # the name comes first
            return factory(name, **merged)
        merged.setdefault("name", name)
        keywords = kind in _KEYWORDS_ONLY or kind in _CHAOS
        return factory(**merged) if keywords else _positional(kind, merged)

    def _register(self, policies: Mapping[str, Policy], plans: list[Plan]) -> None:
        """Apply checked plans, then add new policies (``configure()``'s last step)."""
        apply_plans(plans, lambda stale: plan(stale.policy, stale._merged))
        with self._lock:
            for name, policy in policies.items():
                self._policies.setdefault(name, policy)  # one made meanwhile stays

    def circuit_breaker(self, name: str, **options: Any) -> CircuitBreaker:
        """The breaker called ``name``, created with ``options`` over the defaults."""
        return self._get_or_create("circuit_breaker", name, options)  # type: ignore[return-value]

    def bulkhead(self, name: str, **options: Any) -> Bulkhead:
        """The bulkhead called ``name`` (options: ``max_concurrent``, ``max_wait``)."""
        return self._get_or_create("bulkhead", name, options)  # type: ignore[return-value]

    def timeout(self, name: str, **options: Any) -> Timeout:
        """The timeout called ``name`` (options: ``seconds``, ``max_workers``, ``clock``)."""
        return self._get_or_create("timeout", name, options)  # type: ignore[return-value]

    def retry(self, name: str, **options: Any) -> Retry:
        """The retry called ``name`` (options as [`Retry`][resilient.Retry]'s)."""
        return self._get_or_create("retry", name, options)  # type: ignore[return-value]

    def rate_limiter(self, name: str, **options: Any) -> RateLimiter:
        """The rate limiter called ``name`` (options: ``rate``, ``per``, ``burst``, ...)."""
        return self._get_or_create("rate_limiter", name, options)  # type: ignore[return-value]

    def adaptive_throttle(self, name: str, **options: Any) -> AdaptiveThrottle:
        """The adaptive throttle called ``name`` (options: ``k``, ``window``, ``record``, ...)."""
        return self._get_or_create("adaptive_throttle", name, options)  # type: ignore[return-value]

    def hedge(self, name: str, **options: Any) -> Hedge:
        """The hedge called ``name`` (options: ``max_hedged``, ``delay``, ``on``, ...)."""
        return self._get_or_create("hedge", name, options)  # type: ignore[return-value]

    def adaptive_limiter(self, name: str, **options: Any) -> AdaptiveLimiter:
        """The adaptive limiter called ``name``, with the options of an AdaptiveLimiter.

        From plain data, ``algorithm`` may be a name (``"gradient2"``, ``"vegas"``,
        ``"aimd"``) or a mapping ``{"name": "vegas", **options}``.
        """
        return self._get_or_create("adaptive_limiter", name, options)  # type: ignore[return-value]

    def fallback(self, name: str, **options: Any) -> Fallback[Any]:
        """The fallback called ``name`` (options: ``handler``, ``on``, ``on_result``, ...)."""
        return self._get_or_create("fallback", name, options)  # type: ignore[return-value]

    def coalesce(self, name: str, **options: Any) -> Coalesce:
        """The coalescing policy called ``name`` (option: ``key``)."""
        return self._get_or_create("coalesce", name, options)  # type: ignore[return-value]

    def cache(self, name: str, **options: Any) -> Cache:
        """The cache called ``name`` (options: ``ttl``, ``stale_if_error``, ``max_entries``...)."""
        return self._get_or_create("cache", name, options)  # type: ignore[return-value]

    def keyed_rate_limiter(self, name: str, **options: Any) -> KeyedRateLimiter:
        """The keyed rate limiter called ``name`` (options: ``rate``, ``key``, ...)."""
        return self._get_or_create("keyed_rate_limiter", name, options)  # type: ignore[return-value]

    def configure(self, config: Mapping[str, Mapping[str, Any]]) -> None:
        """Build or update every policy from plain data: ``{name: {"kind": ..., **options}}``.

        The whole mapping is checked before anything changes: a bad one raises one
        ``ConfigurationError`` (a ``ValueError`` and a ``TypeError``) listing every
        wrong key and why, and changes nothing. Policies already in the registry are
        reconfigured in place, keeping their state (their kind cannot change); options
        left out go back to their defaults. Windows are written ``{"type": "count",
        "size": 100}`` or ``{"type": "time", "seconds": 60}``, durations as seconds,
        functions and exception classes as dotted names (``"package.module:name"``), a
        composition as ``{"kind": "compose", "policies": [names, outermost first]}``.
        See the operations page for the schema.
        """
        configure(self, config)

    def get(self, name: str) -> Policy:
        """The policy called ``name``; ``KeyError`` if there is none."""
        with self._lock:
            return self._policies[name]

    def __contains__(self, name: object) -> bool:
        return name in self._policies

    def __iter__(self) -> Iterator[str]:
        with self._lock:
            return iter(sorted(self._policies))

    def __len__(self) -> int:
        return len(self._policies)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """The kind and metrics of every policy created through this registry, as plain data.

        JSON-serialisable. A policy constructed directly (``CircuitBreaker("x")``) is in
        no registry, even when named.
        """
        with self._lock:
            policies = sorted(self._policies.items())
        out: dict[str, dict[str, Any]] = {}
        for name, policy in policies:
            entry: dict[str, Any] = {"kind": policy.kind}
            metrics = getattr(policy, "metrics", None)
            if metrics is not None:
                entry.update(_plain(metrics()))
            if isinstance(policy, CircuitBreaker):
                entry["state"] = policy.state.value
                entry["retry_after"] = policy.retry_after
            out[name] = entry
        return out

    def __repr__(self) -> str:
        return f"<Registry of {len(self)} policies>"


def _positional(kind: str, options: dict[str, Any]) -> Policy:
    # The primary number is positional in these constructors (DESIGN section 3).
    first = {"bulkhead": "max_concurrent", "timeout": "seconds", "rate_limiter": "rate"}[kind]
    if first not in options:
        raise TypeError(f"a {kind} needs the option {first!r}")
    value = options.pop(first)
    return _FACTORIES[kind](value, **options)


default_registry = Registry()
"""The process-wide registry, for code that does not build its own."""


# -- issue 17: the adaptive limiter (a block of its own, to ease merging) --------------

_KEYWORDS_ONLY = frozenset({"retry", "hedge", "adaptive_limiter"})  # no positional number


def _adaptive_limiter(**options: Any) -> Policy:
    # Loaded when a registry makes one, as the timeout is.
    from resilient._policies._adaptive import AdaptiveLimiter  # noqa: PLC0415

    options["algorithm"] = algorithm_from(options.get("algorithm"))
    return AdaptiveLimiter(**options)


def algorithm_from(algorithm: Any) -> Any:
    """An adaptive limiter's algorithm from plain data: a name, or ``{"name": ..., **options}``."""
    from resilient._core import _limit_algorithms  # noqa: PLC0415

    if isinstance(algorithm, (str, Mapping)):
        spec = {"name": algorithm} if isinstance(algorithm, str) else dict(algorithm)
        classes = {
            "gradient2": _limit_algorithms.Gradient2,
            "vegas": _limit_algorithms.Vegas,
            "aimd": _limit_algorithms.AIMD,
        }
        which = spec.pop("name", None)
        if which not in classes:
            raise ValueError(
                'algorithm must be "gradient2", "vegas" or "aimd" (or a mapping with such a '
                f'"name" and the algorithm\'s options), got {algorithm!r}'
            )
        return classes[which](**spec)
    return algorithm


_FACTORIES["adaptive_limiter"] = _adaptive_limiter


# -- issue 19: fallbacks and keyed limiters from plain data (a block of its own) -------


def _fallback(handler: Any = None, **options: Any) -> Policy:
    from resilient._policies._fallback import Fallback  # noqa: PLC0415

    if handler is None:
        raise TypeError('a fallback needs the option "handler" (a dotted name from plain data)')
    return Fallback(handler, **options)


def _keyed_rate_limiter(**options: Any) -> Policy:
    from resilient._policies._keyed_ratelimit import KeyedRateLimiter  # noqa: PLC0415

    return _positional_of(KeyedRateLimiter, "rate", "keyed_rate_limiter", options)


def _positional_of(
    cls: Callable[..., Policy], first: str, kind: str, options: dict[str, Any]
) -> Policy:
    if first not in options:
        raise TypeError(f"a {kind} needs the option {first!r}")
    value = options.pop(first)
    return cls(value, **options)


_FACTORIES["fallback"] = _fallback
_FACTORIES["keyed_rate_limiter"] = _keyed_rate_limiter
_KEYWORDS_ONLY = _KEYWORDS_ONLY | {"fallback", "keyed_rate_limiter"}


# -- issue 19: coalescing and caching (a block of its own, to ease merging) ------------


def _coalescing(kind: str) -> Callable[..., Policy]:
    def make(**options: Any) -> Policy:
        # Loaded when a registry makes one, as the timeout is.
        if kind == "cache":
            from resilient._policies._cache import Cache  # noqa: PLC0415

            return Cache(**options)
        from resilient._policies._coalesce import Coalesce  # noqa: PLC0415

        return Coalesce(**options)

    return make


_FACTORIES.update({kind: _coalescing(kind) for kind in ("coalesce", "cache")})
_KEYWORDS_ONLY = _KEYWORDS_ONLY | {"coalesce", "cache"}  # a cache's ttl is given by name
