"""``compose()``: several policies as one, equal to stacking their decorators.

The composition keeps its policies in order, outermost first, flattened (a composition
inside a composition is spliced in). Guards are built by ``_policy.build_sync`` and
``build_async``, which run each stretch of adjacent steps in one frame: one wrapper and
one adapter loop where stacked decorators would nest a frame per policy.

For type checkers a composition is generic, as ``Fallback`` is, in what an outermost
fallback may return instead of the function's result (``Never`` without one).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, overload

from resilient._policies._fallback import Fallback
from resilient._policies._policy import Policy, WidensResult

if TYPE_CHECKING:
    # typing_extensions is only installed on 3.10, and typing's TypeVar takes a default
    # only from 3.13: the default is for checkers, which read it from here.
    from typing_extensions import Never
    from typing_extensions import TypeVar as TypeVarWithDefault

    T = TypeVarWithDefault("T", default=Never)  # what an outermost Fallback may return
else:
    T = TypeVar("T")

__all__ = ["Composition", "compose"]

R = TypeVar("R")
P = ParamSpec("P")


class Composition(WidensResult[T]):
    """Policies applied as one, outermost first; build it with [`compose()`][resilient.compose].

    For type checkers, ``Composition[T]`` turns a ``Callable[P, R]`` into a
    ``Callable[P, R | T]``, where ``T`` is what an outermost ``Fallback`` returns
    (``Never``, so just ``R``, without one).
    """

    __slots__ = ("_policies",)
    kind = "composition"

    def __init__(self, *policies: Policy) -> None:
        if not policies:
            raise ValueError("compose() needs at least one policy")
        flat: list[Policy] = []
        for policy in policies:
            if not isinstance(policy, Policy):
                raise TypeError(
                    f"compose() takes policies (CircuitBreaker, Bulkhead, Timeout, Fallback, "
                    f"...), not {type(policy).__name__}"
                )
            flat.extend(policy._flatten())
        self._policies = tuple(flat)

    @property
    def policies(self) -> tuple[Policy, ...]:
        """The composed policies, outermost first, nested compositions flattened."""
        return self._policies

    def _flatten(self) -> tuple[Policy, ...]:
        return self._policies

    def __enter__(self) -> None:
        raise TypeError("a composition guards calls: decorate a function, or use call()")

    async def __aenter__(self) -> None:
        raise TypeError("a composition guards calls: decorate a function, or use call()")

    def __repr__(self) -> str:
        return f"compose({', '.join(map(repr, self._policies))})"


@overload
def compose(  # type: ignore[overload-overlap]
    first: Fallback[T] | Composition[T], /, *policies: Policy
) -> Composition[T]: ...
@overload
def compose(*policies: Policy) -> Composition[Never]: ...
def compose(*policies: Policy) -> Composition[Any]:
    """Combine ``policies`` into one, outermost first, exactly like stacked decorators.

    ``compose(a, b, c)`` guards a function as ``@a @b @c`` would (``a`` outermost), and is
    itself a policy: a decorator, ``call()``/``call_async()``, and composable again. The
    recommended order, from the outside in, is Fallback, Retry, CircuitBreaker,
    RateLimiter, Timeout, Bulkhead.

    Type checkers see what an outermost ``Fallback`` may return: with
    ``Fallback(lambda exc: None)`` first, a decorated ``Callable[P, R]`` becomes
    ``Callable[P, R | None]``. (A fallback further in is not reflected in the type.)
    """
    return Composition(*policies)
