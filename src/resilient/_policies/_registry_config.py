"""``Registry.configure()``: every policy of a service built or updated from plain data.

The mapping is what a TOML, YAML or JSON file loads as: ``{name: {"kind": ..., **options}}``.
It is checked whole before anything changes: every entry is turned into options
(windows, references to functions and exception classes by dotted name), every new
policy is built (not yet registered) and every existing one planned
(``_reconfigure.plan``: its new options checked as its constructor checks them). Any
error, and all of them are collected, raises one :class:`ConfigurationError` naming
each key and why, and changes nothing. Only then are the plans applied (existing
policies keep their state) and the new policies registered.

The configuration is declarative: an existing policy's options are what the mapping
says, over the registry's defaults; an option left out goes back to its default.
"""

from __future__ import annotations

import builtins
import importlib
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from resilient._core._window import CountWindow, TimeWindow
from resilient._policies._policy import Policy
from resilient._policies._reconfigure import Plan, options_of, plan

if TYPE_CHECKING:
    from resilient._policies._registry import Registry

__all__ = ["ConfigurationError", "configure", "registry_kind", "resolve", "window_from"]

COMPOSE = frozenset({"compose", "composition"})

# Options that take a function, a class or an object, given in plain data as a dotted
# name ("package.module:attribute" or "package.module.attribute"; a bare name is a
# builtin, as "TimeoutError"). Exception matchers may be a list of such names.
_REFERENCES = frozenset(
    {
        "handler",
        "key",
        "record_result",
        "on_result",
        "factory",
        "enabled",
        "rng",
        "random",
        "budget",
        "open_duration",
        "wait",
        "delay",
        "algorithm",
    }
)
_MATCHERS = frozenset({"record", "ignore", "on", "drop_on", "exception"})
# Of those, the ones whose strings may also be plain values (a hedge's delay "p95", an
# adaptive limiter's algorithm "vegas"): a string is a reference only with a ":".
_STRINGS_ALLOWED = frozenset({"delay", "algorithm"})


class ConfigurationError(ValueError, TypeError):
    """A configuration that changed nothing: every wrong key, and why.

    Both a ``ValueError`` and a ``TypeError`` (what the constructors raise for one bad
    option), so that either ``except`` catches it.

    Attributes:
        errors: Each wrong key, written as a path (``config['payments']['window']``),
            with the error it raised.
    """

    def __init__(self, errors: dict[str, Exception]) -> None:
        self.errors = errors
        lines = [f"{path}: {error}" for path, error in errors.items()]
        count = f"{len(errors)} errors" if len(errors) > 1 else "1 error"
        super().__init__(f"configuration rejected ({count}; nothing changed):\n" + "\n".join(lines))


def resolve(reference: str) -> Any:
    """The object a dotted name refers to: ``"pkg.mod:attr"``, ``"pkg.mod.attr"`` or a builtin."""
    if ":" in reference:
        module_name, _, attributes = reference.partition(":")
        value: Any = importlib.import_module(module_name)
        for attribute in attributes.split("."):
            value = getattr(value, attribute)
        return value
    if "." not in reference:
        if hasattr(builtins, reference):
            return getattr(builtins, reference)
        raise ValueError(f"{reference!r} is no builtin; write 'package.module:name'")
    parts = reference.split(".")
    for cut in range(len(parts) - 1, 0, -1):  # the longest importable module first
        try:
            value = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attribute in parts[cut:]:
            value = getattr(value, attribute)
        return value
    raise ValueError(f"cannot import a module from {reference!r}")


def window_from(value: object) -> object:
    """A window option from plain data (anything else is left for the constructor to check).

    ``{"type": "count", "size": 100}``, ``{"type": "time", "seconds": 60, "buckets":
    12}``, or the short forms ``{"count": 100}`` and ``{"seconds": 60}``.
    """
    if not isinstance(value, Mapping):
        return value
    given = dict(value)
    kind = given.pop("type", None)
    if kind == "count" and set(given) == {"size"}:
        return CountWindow(given["size"])
    if kind == "time" and "seconds" in given and set(given) <= {"seconds", "buckets"}:
        return TimeWindow(given["seconds"], buckets=given.get("buckets"))
    if kind is None and set(given) == {"count"}:
        return CountWindow(given["count"])
    if kind is None and "seconds" in given and set(given) <= {"seconds", "buckets"}:
        return TimeWindow(given["seconds"], buckets=given.get("buckets"))
    raise ValueError(
        'window must be {"type": "count", "size": n} or {"type": "time", "seconds": s} '
        f'(with an optional "buckets"), got {dict(value)!r}'
    )


def _plain_value(option: str, value: object) -> object:  # noqa: PLR0911 -- one case a line
    if option == "window":
        return window_from(value)
    if option in _MATCHERS:
        if isinstance(value, str):
            return resolve(value)
        if isinstance(value, list):  # a TOML or JSON array of class names
            return tuple(resolve(item) if isinstance(item, str) else item for item in value)
        return value
    if option in _REFERENCES and isinstance(value, str):
        if option in _STRINGS_ALLOWED and ":" not in value:
            return value
        return resolve(value)
    return value


def registry_kind(policy: Policy) -> str:
    """The kind a registry knows ``policy`` by (a keyed limiter's events say rate_limiter)."""
    from resilient._policies._keyed_ratelimit import KeyedRateLimiter  # noqa: PLC0415

    return "keyed_rate_limiter" if isinstance(policy, KeyedRateLimiter) else policy.kind


def _default_options(policy: Policy, changeable: Mapping[str, Any]) -> dict[str, Any]:
    """The constructor's defaults of the options ``policy`` may change."""
    parameters = inspect.signature(type(policy).__init__).parameters
    return {
        name: parameters[name].default
        for name in changeable
        if name in parameters and parameters[name].default is not inspect.Parameter.empty
    }


def configure(registry: Registry, config: Mapping[str, Any]) -> None:
    """Build or update every policy ``config`` names; see the module docstring."""
    if not isinstance(config, Mapping):
        raise TypeError(
            "config must be a mapping of policy names to {'kind': ..., **options}, "
            f"not {type(config).__name__}"
        )
    check = _Check(registry)
    for name, entry in config.items():
        check.entry(name, entry)
    compositions = {name: check.composition(name, members) for name, members in check.composed}
    if check.errors:
        raise ConfigurationError(check.errors)
    made = {name: policy for name, policy in compositions.items() if policy is not None}
    registry._register({**check.built, **made}, check.plans)


class _Check:
    """The first pass of ``configure()``: what would change, and every error, changing nothing."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.errors: dict[str, Exception] = {}
        self.plans: list[Plan] = []
        self.built: dict[str, Policy] = {}
        self.composed: list[tuple[str, list[str]]] = []

    def entry(self, name: object, entry: object) -> None:
        where = f"config[{name!r}]"
        if not isinstance(name, str) or not name:
            self.errors[where] = TypeError("a policy's name must be a non-empty str")
            return
        if not isinstance(entry, Mapping) or "kind" not in entry:
            self.errors[where] = ValueError("must be a mapping with a 'kind'")
            return
        options = dict(entry)
        kind = options.pop("kind")
        existing = self.registry._policies.get(name)
        if kind in COMPOSE:
            self.composition_entry(name, options, existing)
            return
        try:
            self.registry._check_kind(kind)
        except ValueError as exc:
            self.errors[f"{where}['kind']"] = exc
            return
        if existing is not None and registry_kind(existing) != kind:
            self.errors[f"{where}['kind']"] = ValueError(
                f"{name!r} is a {registry_kind(existing)}, not a {kind}: its kind cannot change"
            )
            return
        failed = False
        for option, value in list(options.items()):
            try:
                options[option] = _plain_value(option, value)
            except Exception as exc:
                self.errors[f"{where}[{option!r}]"] = exc
                failed = True
        if failed:
            return
        try:
            if existing is None:
                self.built[name] = self.registry._build(kind, name, options)
            else:
                self.update(existing, kind, options)
        except Exception as exc:
            self.errors[where] = exc

    def update(self, existing: Policy, kind: str, options: dict[str, Any]) -> None:
        """Plan the change of a policy already registered (raises what is wrong)."""
        changeable = options_of(existing)  # type: ignore[arg-type]
        options.pop("name", None)  # its name is its key
        unknown = sorted(set(options) - set(changeable))
        if unknown:
            raise TypeError(
                f"{unknown[0]!r} cannot be changed on the existing {kind} "
                f"(options that can: {', '.join(sorted(changeable))})"
            )
        defaults = self.registry._defaults.get(kind, {})
        wanted = {
            **_default_options(existing, changeable),
            **{option: value for option, value in defaults.items() if option in changeable},
            **options,
        }
        if "window" in wanted:
            wanted["window"] = window_from(wanted["window"])
        if kind == "adaptive_limiter":
            from resilient._policies._registry import algorithm_from  # noqa: PLC0415

            wanted["algorithm"] = algorithm_from(wanted.get("algorithm"))
        made = plan(existing, wanted)  # type: ignore[arg-type]
        if made is not None:
            self.plans.append(made)

    def composition_entry(
        self, name: str, options: dict[str, Any], existing: Policy | None
    ) -> None:
        from resilient._policies._compose import Composition  # noqa: PLC0415

        where = f"config[{name!r}]"
        members = options.pop("policies", None)
        if options:
            self.errors[where] = TypeError(
                f"a composition takes only 'policies', not {sorted(options)}"
            )
        elif (
            not isinstance(members, Sequence)
            or isinstance(members, str)
            or not members
            or not all(isinstance(member, str) for member in members)
        ):
            self.errors[f"{where}['policies']"] = TypeError(
                "must be a non-empty list of policy names, outermost first"
            )
        elif existing is not None and not isinstance(existing, Composition):
            self.errors[f"{where}['kind']"] = ValueError(
                f"{name!r} is a {existing.kind}: its kind cannot change"
            )
        else:
            self.composed.append((name, list(members)))

    def composition(self, name: str, members: list[str]) -> Policy | None:
        """The new composition ``name`` (``None``: unchanged, or an error recorded)."""
        from resilient._policies._compose import Composition  # noqa: PLC0415

        where = f"config[{name!r}]['policies']"
        composed = {other for other, _ in self.composed}
        found: list[Policy] = []
        for member in members:
            policy = self.built.get(member) or self.registry._policies.get(member)
            if policy is None:
                self.errors[where] = ValueError(
                    f"{member!r} is a composition: list its policies instead"
                    if member in composed
                    else f"{member!r} is neither in this configuration nor in the registry"
                )
                return None
            found.append(policy)
        existing = self.registry._policies.get(name)
        if existing is None:
            return Composition(*found)
        if [id(p) for p in existing._flatten()] != [id(p) for p in found]:
            self.errors[where] = ValueError(
                "a composition's policies cannot change at run time (functions decorated "
                "with it keep theirs): change their options instead"
            )
        return None


def apply_plans(plans: list[Plan], retry: Callable[[Plan], Plan | None]) -> None:
    """Apply ``plans``; one whose policy was reconfigured meanwhile is planned again."""
    for checked in plans:
        current: Plan | None = checked
        while current is not None and not current.apply():
            current = retry(current)
