"""What every policy shares: decorating, ``call()``/``call_async()``, context managers.

A policy offers a :class:`~resilient._policies._pipeline.Step` for sync and for async use (or
``None`` where it must own the call, as a sync timeout or a retry does, in which case it
provides a wrapper instead). Everything else a user touches is built here once from
those two hooks, so every policy decorates, composes and nests the same way.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import weakref
from collections.abc import Awaitable, Callable, Coroutine
from types import FunctionType, TracebackType
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, Protocol, TypeVar, overload

from resilient._core._events import EventSource, Listener
from resilient._core._fork import new_lock
from resilient._policies._block import DONE, FRESH, PENDING, Block, block_exits, exit_block
from resilient._policies._decorate import (
    NOT_PLAIN,
    async_callable_for,
    check_sync_callable,
    decorate,
    refuse_bare_decorator,
    refusing_coroutines,
)
from resilient._policies._pipeline import Step, Wait, async_runner, sync_runner
from resilient._policies._signature import Signature, shaped

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = [
    "UNNAMED",
    "CorePolicy",
    "Policy",
    "SharedStore",
    "bind_store",
    "live_policies",
    "reported_name",
]

P = ParamSpec("P")
T = TypeVar("T")

_CREATE_LOCK = new_lock()
_ASYNC_DEF: Any = inspect.CO_COROUTINE


class Policy:
    """Base class of every policy: a decorator, a direct caller and a context manager."""

    __slots__ = ("__weakref__", "_cm_tokens")
    _cm_tokens: contextvars.ContextVar[tuple[tuple[Step, Any], ...]]

    #: The ``kind`` of the policy's events and metrics (``"circuit_breaker"``, ...).
    kind: str = "policy"
    #: Whether the first positional option may be a function (a fallback's handler);
    #: elsewhere a function there means ``@Policy`` was written without parentheses.
    _callable_option: bool = False
    #: Whether the wrapper needs the function called as well (``target=``): keys made of
    #: it and its arguments (a cache, coalescing) must not change with the wrapping.
    _wants_target: bool = False

    # -- what a policy provides --------------------------------------------------------

    def _sync_step(self) -> Step | None:
        """The step guarding sync calls, or ``None`` if :meth:`_sync_wrap` is used."""
        return None

    def _async_step(self) -> Step | None:
        """The step guarding async calls, or ``None`` if :meth:`_async_wrap` is used."""
        return None

    def _check_target(self, fn: Callable[..., Any]) -> None:
        """Refuse, when decorating, a function this policy cannot serve (a no-op here)."""

    def _sync_wrap(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Wrap a sync callable; only for policies without a sync step."""
        raise NotImplementedError

    def _async_wrap(self, fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        """Wrap an async callable; only for policies without an async step."""
        raise NotImplementedError

    def _flatten(self) -> tuple[Policy, ...]:
        """The policies this one stands for, outermost first (a composition has many)."""
        return (self,)

    # -- guards built from the hooks ---------------------------------------------------

    def _sync_guard(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        return build_sync(self._flatten(), fn)

    def _async_guard(self, fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        return build_async(self._flatten(), fn)

    def _decorated(
        self, fn: Callable[..., Any], signature: Signature | None, is_async: bool
    ) -> Callable[..., Any]:
        """The guard ``decorate()`` puts around ``fn``.

        It takes ``fn``'s own parameters where ``signature`` is given (see
        ``_signature``), else ``(*args, **kwargs)``.
        """
        return _build(self._flatten(), fn, is_async, signature)  # type: ignore[no-any-return]

    def __call__(self, fn: Callable[P, T], /) -> Callable[P, T]:
        """Decorate ``fn`` (sync or async) so that every call goes through this policy."""
        wrapper = decorate(fn, self._decorated, self)
        policies = self._flatten()
        target = fn.__func__ if isinstance(fn, (classmethod, staticmethod)) else fn
        for policy in policies:
            policy._check_target(target)
        _remember_guarded(policies, fn)
        return wrapper  # type: ignore[no-any-return]

    def call(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Call ``fn(*args, **kwargs)`` through this policy and return its result."""
        if type(fn) is not FunctionType or fn.__code__.co_flags & NOT_PLAIN:
            check_sync_callable(fn, self)  # only what is not a plain `def` needs a look
        return self._sync_guard(fn)(*args, **kwargs)  # type: ignore[no-any-return]

    async def call_async(
        self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Await ``fn(*args, **kwargs)`` through this policy and return its result."""
        if type(fn) is not FunctionType or not fn.__code__.co_flags & _ASYNC_DEF:
            fn = async_callable_for(fn, self)  # only what is not an `async def` needs a look
        return await self._async_guard(fn)(*args, **kwargs)  # type: ignore[no-any-return]

    # -- context managers --------------------------------------------------------------
    # `with policy:` keeps the block's token in a Block bound by the statement itself (see
    # _block). Blocks entered by hand or through the class (contextlib.ExitStack) keep
    # theirs in a context variable instead, as a stack, so one policy can be entered by
    # many threads and tasks (and nested) at once.

    def __enter__(self) -> None:
        block = PENDING.ref()  # the block `with` just bound, if it is this one's
        if block is not None and block._policy is self and block._state == FRESH:
            # Adopted: whether its enter succeeds or raises, no later __enter__ may take
            # it (an exception kept with its traceback would keep it alive).
            block._state = DONE
            return block.enter()
        return self._stack_enter()

    # The twin of __enter__ (tests/test_twins.py): its work is done before it returns
    # the awaitable, so it is no coroutine function itself (see _block.FINISHED).
    def __aenter__(self) -> Awaitable[None]:
        block = PENDING.ref()
        if block is not None and block._policy is self and block._state == FRESH:
            block._state = DONE  # adopted (see __enter__)
            return block.aenter()
        return self._stack_aenter()

    if TYPE_CHECKING:

        def __exit__(
            self,
            exc_type: type[BaseException] | None,
            exc: BaseException | None,
            tb: TracebackType | None,
        ) -> bool: ...

        def __aexit__(
            self,
            exc_type: type[BaseException] | None,
            exc: BaseException | None,
            tb: TracebackType | None,
        ) -> Awaitable[bool | None]: ...

    def _token_stack(self) -> contextvars.ContextVar[tuple[tuple[Step, Any], ...]]:
        try:
            return self._cm_tokens
        except AttributeError:
            pass
        with _CREATE_LOCK:  # first use from many threads at once must make one variable
            try:
                return self._cm_tokens
            except AttributeError:
                var: contextvars.ContextVar[tuple[tuple[Step, Any], ...]] = contextvars.ContextVar(
                    f"resilient-with-{id(self):x}", default=()
                )
                self._cm_tokens = var
                return var

    def _cm_step(self, step: Step | None, how: str) -> Step:
        if step is None:
            raise TypeError(f"{type(self).__name__} cannot be used with `{how}`")
        return step

    def _pop(self) -> tuple[Step, Any]:
        var = self._token_stack()
        stack = var.get()
        if not stack:
            raise RuntimeError(f"{self!r}: exit without a matching enter")
        var.set(stack[:-1])
        return stack[-1]

    # If an interrupt lands inside _stack_enter after the push, `with` never calls
    # __exit__: so the push is undone and the token handed back.

    def _stack_enter(self) -> None:
        step = self._cm_step(self._sync_step(), "with")
        var = self._token_stack()
        stack = var.get()
        token = step.enter()
        if type(token) is Wait:
            token = step.enter_wait(token)
        try:
            var.set((*stack, (step, token)))
        except BaseException as exc:  # pragma: no cover - an interrupt just after set()
            var.set(stack)
            step.exit_cancel(token, exc)
            raise

    def _stack_exit(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        step, token = self._pop()
        return exit_block(step, token, exc)

    async def _stack_aenter(self) -> None:
        step = self._cm_step(self._async_step(), "async with")
        var = self._token_stack()
        stack = var.get()
        token = step.enter()
        if type(token) is Wait:
            token = await step.enter_wait_async(token)
        try:
            var.set((*stack, (step, token)))
        except BaseException as exc:  # pragma: no cover - an interrupt just after set()
            var.set(stack)
            step.exit_cancel(token, exc)
            raise

    async def _stack_aexit(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        step, token = self._pop()
        return exit_block(step, token, exc)

    if not TYPE_CHECKING:
        __exit__, __aexit__ = block_exits(Block)


W = TypeVar("W")  # what a fallback may return instead
R = TypeVar("R")


C = TypeVar("C", bound=EventSource)

# Every policy alive, so that instrument() can observe those created before it was called.
# Weak: a policy nobody uses any more disappears from metrics when it is collected.
_LIVE: weakref.WeakSet[CorePolicy[Any]] = weakref.WeakSet()
_LIVE_LOCK = new_lock()  # WeakSet iteration is not safe against adds from threads


def live_policies() -> list[CorePolicy[Any]]:
    """The policies alive now (constructed, not yet garbage-collected)."""
    with _LIVE_LOCK:
        return [p for p in _LIVE if hasattr(p, "_core")]  # skip one failing its __init__


UNNAMED = "<unnamed>"
"""What an unnamed policy that decorated no function is reported as in metrics."""

# The first function each unnamed policy decorated, as `module.qualname`: what it is
# reported as in metrics, so that it is not left out (issue 13: unnamed policies vanished
# from OpenTelemetry). Weak: it goes when the policy does.
_GUARDED: weakref.WeakKeyDictionary[Policy, str] = weakref.WeakKeyDictionary()
_GUARDED_LOCK = new_lock()


def _function_name(fn: object) -> str:
    while isinstance(fn, (classmethod, staticmethod, functools.partial)):
        fn = fn.__func__ if not isinstance(fn, functools.partial) else fn.func
    owner = fn if hasattr(fn, "__qualname__") else type(fn)
    module = getattr(owner, "__module__", None)
    qualname = getattr(owner, "__qualname__", None) or type(fn).__qualname__
    return f"{module}.{qualname}" if module else str(qualname)


def _remember_guarded(policies: tuple[Policy, ...], fn: object) -> None:
    name = None
    for policy in policies:
        if getattr(policy, "name", None) is None and policy not in _GUARDED:
            if name is None:
                name = _function_name(fn)
            with _GUARDED_LOCK:
                _GUARDED.setdefault(policy, name)


def reported_name(policy: Policy) -> str:
    """The name a policy is reported under in metrics.

    Its ``name``; for an unnamed policy, the ``module.qualname`` of the first function it
    decorated (alone or in a composition); else ``"<unnamed>"``.
    """
    name = getattr(policy, "name", None)
    if name is not None:
        return str(name)
    with _GUARDED_LOCK:
        return _GUARDED.get(policy, UNNAMED)


class WidensResult(Policy, Generic[W]):
    """For type checkers only: decorating a ``Callable[P, R]`` gives ``Callable[P, R | W]``.

    The base of the policies that may answer with something else than the function's
    result (a ``Fallback``, a composition with one outermost); at run time ``Policy``'s
    methods serve as they are.
    """

    if TYPE_CHECKING:

        @overload  # type: ignore[override]
        def __call__(
            self, fn: Callable[P, Coroutine[Any, Any, R]], /
        ) -> Callable[P, Coroutine[Any, Any, R | W]]: ...
        @overload
        def __call__(self, fn: Callable[P, R], /) -> Callable[P, R | W]: ...
        def __call__(self, fn: Callable[..., Any], /) -> Callable[..., Any]: ...
        def call(  # type: ignore[override]
            self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs
        ) -> R | W: ...
        async def call_async(  # type: ignore[override]
            self, fn: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs
        ) -> R | W: ...


class CorePolicy(Policy, Generic[C]):
    """A policy with one core: the name and the listeners live there."""

    __slots__ = ("_config", "_core")
    _core: C
    #: The options ``reconfigure()`` may change, as last given (set by ``__init__``), as
    #: ``_pack_options`` keeps them.
    _config: Any
    #: Options of the constructor that ``reconfigure()`` refuses (named in its error).
    _fixed_options: tuple[str, ...] = ("name", "clock", "store")

    def __new__(cls, *args: Any, **_kwargs: Any) -> Self:
        if not cls._callable_option:
            refuse_bare_decorator(cls, args)
        self = super().__new__(cls)
        with _LIVE_LOCK:
            _LIVE.add(self)
        return self

    @property
    def name(self) -> str | None:
        """The policy's name (for errors, logs, events and metrics)."""
        return self._core.name  # type: ignore[attr-defined, no-any-return]

    @property
    def listener_errors(self) -> int:
        """How many times a listener raised while handling this policy's events."""
        return self._core.listener_errors

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(event)`` for every event this policy emits from now on."""
        self._core.add_listener(listener)

    def remove_listener(self, listener: Listener) -> None:
        """Stop calling ``listener`` (no error if it was not registered)."""
        self._core.remove_listener(listener)

    def reconfigure(self, **options: Any) -> bool:
        """Change options in place, keeping the policy's state; ``True`` if any changed.

        Takes the constructor's keyword options (not ``name``, ``clock`` or ``store``),
        checked as the constructor checks them: a bad value raises ``ValueError`` or
        ``TypeError`` naming the option, and changes nothing. The change is atomic with
        respect to concurrent calls, keeps what can be kept (see the operations page),
        and emits a [`Reconfigured`][resilient.Reconfigured] event listing the changed
        options. Values equal to the current ones change nothing and emit nothing.
        """
        from resilient._policies._reconfigure import reconfigure  # noqa: PLC0415 -- rare

        return reconfigure(self, options)

    def _pack_options(self, options: dict[str, Any]) -> Any:
        """How ``_config`` keeps the options (a dict here; a breaker keeps a tuple)."""
        return options

    def _unpack_options(self, config: Any) -> dict[str, Any]:
        """The options ``_config`` keeps, as a new dict."""
        return dict(config)

    def _prepare_reconfigure(self, merged: dict[str, Any], changed: frozenset[str]) -> Any:
        """Check ``merged`` (every option) as construction would; return the commit.

        The commit runs under the reconfiguration lock and applies the checked values
        under the policy's own lock; it may return a callable to run after the locks.
        """
        raise TypeError(f"{type(self).__name__} cannot be reconfigured")


def _build(
    policies: tuple[Policy, ...],
    fn: Callable[..., Any],
    is_async: bool,
    signature: Signature | None = None,
) -> Any:
    call = fn
    if not is_async and policies[-1]._sync_step() is None:
        # A wrapper calls fn itself; a runner checks fn's result inline.
        call = shaped(refusing_coroutines, fn, signature)
    pending: list[Step] = []
    kinds: list[str] = []  # the pending steps' policies, named in the runner's file name
    for policy in reversed(policies):
        step = policy._async_step() if is_async else policy._sync_step()
        if step is not None:
            pending.insert(0, step)
            kinds.insert(0, policy.kind)
            continue
        if pending:
            call = (async_runner if is_async else sync_runner)(pending, call, kinds, signature)
            pending, kinds = [], []
        wrap: Callable[..., Any] = policy._async_wrap if is_async else policy._sync_wrap
        if policy._wants_target:
            # Keyed by the function called (issue 19): `fn`, whatever wraps it here. Such
            # a wrapper reads the packed arguments, so there is no guard to specialize.
            call = wrap(call, target=fn)
            continue
        call = shaped(wrap, call, signature)
    if pending:
        call = (async_runner if is_async else sync_runner)(pending, call, kinds, signature)
    return call


def build_sync(policies: tuple[Policy, ...], fn: Callable[..., Any]) -> Callable[..., Any]:
    """Chain ``policies`` (outermost first) around a sync ``fn``, merging adjacent steps."""
    return _build(policies, fn, is_async=False)  # type: ignore[no-any-return]


def build_async(
    policies: tuple[Policy, ...], fn: Callable[..., Awaitable[Any]]
) -> Callable[..., Awaitable[Any]]:
    """Chain ``policies`` (outermost first) around an async ``fn``, merging adjacent steps."""
    return _build(policies, fn, is_async=True)  # type: ignore[no-any-return]


class SharedStore(Protocol):
    """What a policy's ``store=`` takes: shared state, such as ``resilient.redis.RedisStore``.

    A store makes the shared core of each kind of policy it serves, from the options of
    the local core the policy would otherwise have; the policy never looks further.
    """

    def _bind_rate_limiter(self, options: tuple[Any, ...]) -> Any: ...

    def _bind_keyed_rate_limiter(self, options: tuple[Any, ...], max_keys: object) -> Any: ...

    def _bind_circuit_breaker(self, name: str | None, *, clock: Any, **options: object) -> Any: ...


def bind_store(store: object, what: str) -> Callable[..., Any]:
    """The store's maker of shared cores for ``what`` (a policy's ``KIND``), or a TypeError.

    Duck-typed: this floor imports no integration (``resilient.redis`` imports redis).
    """
    bind = getattr(store, f"_bind_{what}", None)
    if bind is None:
        raise TypeError(
            "store must be a shared store such as resilient.redis.RedisStore,"
            f" not {type(store).__name__}"
        )
    return bind  # type: ignore[no-any-return]
