"""``compose()``: several policies as one, equal to stacking their decorators.

The composition keeps its policies in order, outermost first, flattened (a composition
inside a composition is spliced in). Guards are built by ``_policy.build_sync`` and
``build_async``, which run each stretch of adjacent steps in one frame: one wrapper and
one adapter loop where stacked decorators would nest a frame per policy.
"""

from __future__ import annotations

from resilient._policy import Policy

__all__ = ["Composition", "compose"]


class Composition(Policy):
    """Policies applied as one, outermost first; build it with [`compose()`][resilient.compose]."""

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


def compose(*policies: Policy) -> Composition:
    """Combine ``policies`` into one, outermost first, exactly like stacked decorators.

    ``compose(a, b, c)`` guards a function as ``@a @b @c`` would (``a`` outermost), and is
    itself a policy: a decorator, ``call()``/``call_async()``, and composable again. The
    recommended order, from the outside in, is Fallback, Retry, CircuitBreaker,
    RateLimiter, Timeout, Bulkhead.
    """
    return Composition(*policies)
