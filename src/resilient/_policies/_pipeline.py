"""The one adapter: run a callable inside a chain of policy steps, sync or async.

A *step* is the adapter-facing side of a policy core: ``enter()`` admits the call (or
raises a rejection, or returns :data:`WAIT` when the caller must wait), and one of
``exit_ok()``, ``exit_error()``, ``exit_cancel()`` reports how the call ended. Steps hold
every decision; the runners below only call, await, wait and unwind. Policies that
must own the call itself (a retry loop, a sync timeout's worker thread) are *wrappers*
instead, and split the chain.

``compose(a, b, c)`` turns runs of adjacent steps into a single runner frame, generated
once per shape of chain (as attrs generates ``__init__``): nested ``try`` blocks, one per
step, with the steps' hooks bound as closure variables. That is why it costs less than
stacking the same decorators, each of which adds a frame and forwards ``*args``. As
attrs does, the generated source is registered with :mod:`linecache` under a name that
says what it runs (``<resilient compose: circuit_breaker+bulkhead, sync>``), so
tracebacks show its lines, pdb lists them and :func:`inspect.getsource` finds them.
"""

from __future__ import annotations

import ast
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final, Protocol

from resilient._core._outcome import PASS
from resilient._policies._decorate import COROUTINE, refuse_coroutine
from resilient._policies._signature import Shape, Signature, names_in, register_source

__all__ = ["WAIT", "Deferred", "Step", "Wait", "async_runner", "sync_runner"]


class Wait:
    """Returned by ``Step.enter()`` when the caller must wait; handed to ``enter_wait``.

    ``delay`` carries what the step decided (a rate limiter's reserved wait), or ``None``;
    ``data`` whatever else the step needs back (the reservation, to give it back).
    """

    __slots__ = ("data", "delay")

    def __init__(self, delay: float | None = None, data: Any = None) -> None:
        self.delay = delay
        self.data = data

    def __repr__(self) -> str:
        return f"Wait({self.delay!r})"


WAIT: Final = Wait()
"""The plain ``Wait``: wait for admission (a bulkhead slot)."""


class Deferred:
    """An exit's result that the async runner must await first (an async fallback)."""

    __slots__ = ("awaitable",)

    def __init__(self, awaitable: Awaitable[Any]) -> None:
        self.awaitable = awaitable


class Step(Protocol):
    """What a policy exposes to the runners."""

    #: Whether an exit may return a :class:`Deferred` (only async fallbacks do); chains
    #: without such a step unwind without an extra coroutine.
    defers: bool

    # A step whose admission is a slot from a pool (a bulkhead) also has ``pool``, a
    # :class:`SlotPool`, and ``slot_hooks(is_async)``: the runner then takes and returns
    # the slot itself, with C calls in its own frame, which makes it interrupt-safe.
    # A step whose exits do nothing (a rate limiter: the outcome does not matter) has
    # ``gate_hooks(is_async)``: see :func:`_gate_level`.

    def enter(self) -> Any:
        """Admit the call: return a token, raise a rejection, or return a :class:`Wait`."""
        ...

    def enter_wait(self, wait: Wait) -> Any:
        """Block the thread until admitted; return a token or raise a rejection."""
        ...

    async def enter_wait_async(self, wait: Wait) -> Any:
        """Wait (as a task) until admitted; return a token or raise a rejection."""
        ...

    def exit_ok(self, token: Any, result: Any) -> Any:
        """The call returned ``result``; return what the caller gets."""
        ...

    def exit_error(self, token: Any, exc: Exception) -> Any:
        """The call raised ``exc``: return a replacement result, ``PASS``, or raise."""
        ...

    def exit_cancel(self, token: Any, exc: BaseException) -> BaseException:
        """The call was cancelled or interrupted: release, and return what to raise."""
        ...


class SlotPool(Protocol):
    """A pool of interchangeable slots, as a bulkhead keeps them (``_core._bulkhead``).

    A signal handler (``KeyboardInterrupt``, a SIGALRM timeout) may raise at any call the
    interpreter makes, including the first line of a Python function that would give a
    slot back. So the runner takes a slot with ``_slots.pop()`` and returns it with
    ``_slots.append(True)``, C calls after which (and only after which) an interrupt can
    land, inside a ``try`` of the runner's frame that knows the slot is held.
    """

    # Read from the pool by the runners, at entry and again to give the slot back: a
    # grow beyond the pool's maxlen replaces it (see BulkheadCore.resize).
    _slots: Any  # collections.deque[bool]
    # Bound by the runners as closure variables, so never replaced (a fork's reset
    # changes them in place):
    _waiters: Any  # collections.deque[Waiter]
    _released: Any  # itertools.count[int]: slots given back (admitted = these + in flight)
    _low_water: int  # the fewest slots ever free: below it, the runner calls took()

    def _hand_off(self) -> None: ...

    def took(self, free: int) -> None:
        """Keep the low-water mark: ``free`` slots were left by a taker."""
        ...


def _slot_level(i: int, pad: str, aw: str) -> tuple[list[str], list[str]]:
    """The entry and exit of a slot step at level ``i``: (lines before, lines after).

    The exit is a ``finally`` that gives the slot back: a bulkhead never changes the
    call's outcome, so ``exit_ok``/``exit_error``/``exit_cancel`` would all do just that.
    A caller that had to wait holds its slot while ``k{i}.granted`` is set (under the
    pool's lock), so an interrupt at any point of the wait leaves the truth there (and
    ``l{i}``, the pool's ``leave``, acts on it); once the wait is over, the slot passes
    from the waiter to this frame with no call in between, and leaves as any other.
    """
    wait = [
        f"k{i} = n{i}()",
        "try:",
        f"    {aw}w{i}(k{i})",
        f"    k{i}.granted = False",
        "except BaseException:",
        f"    l{i}(k{i})",
        "    raise",
    ]
    # The truth test first (no call, so no interrupt lands between it and the pop): an
    # empty pool costs no IndexError (~1 us, most of a contended call's overhead); the
    # pop may still find the pool emptied by another thread meanwhile.
    enter = [
        f"{pad}s{i} = c{i}._slots",
        f"{pad}if s{i}:",
        f"{pad}    try:",
        f"{pad}        s{i}.pop()",
        f"{pad}        if len(s{i}) < c{i}._low_water:",
        f"{pad}            c{i}.took(len(s{i}))",
        f"{pad}    except IndexError:",
        *(f"{pad}        {line}" for line in wait),
        f"{pad}    except BaseException:",
        f"{pad}        s{i}.append(True)",
        f"{pad}        raise",
        f"{pad}else:",
        *(f"{pad}    {line}" for line in wait),
        f"{pad}try:",
    ]
    exit_ = [
        f"{pad}finally:",
        f"{pad}    c{i}._slots.append(True)",
        f"{pad}    next(r{i})",
        f"{pad}    if q{i}:",
        f"{pad}        h{i}()",
    ]
    return enter, exit_


def _gate_level(i: int, pad: str, aw: str) -> list[str]:
    """The entry of a gate step at level ``i``: a step with nothing to do on exit.

    ``gate_hooks(is_async)`` gives (``admit() -> bool``, ``over() -> Wait | None``, the
    wait): admitted at once, or a wait reserved (``None``: none needed), or a rejection
    raised. Its exits would return the result, ``PASS`` and the exception unchanged, so
    the level has no ``try`` and costs one call on the fast path, as the step's own guard
    does when it stands alone.
    """
    return [
        f"{pad}if not a{i}():",
        f"{pad}    t{i} = o{i}()",
        f"{pad}    if t{i} is not None:",
        f"{pad}        {aw}w{i}(t{i})",
    ]


INLINE = 2
"""A gate level whose admission is written into the runner (see :func:`_inline_gate_level`)."""


def _inline_gate_level(i: int, pad: str, aw: str) -> list[str]:
    """The entry of a GCRA gate at level ``i``, its admission written out in the runner.

    The same lines as ``RateLimiterCore.admit`` (``tests/test_signature_guards.py``
    checks that they stay the same), without the call: ``inline_gate()`` gives (the
    nanosecond clock, the lock, the cell ``[TAT, interval, tolerance, early slack]``,
    the admitted count's cell, the refusal). The constants are read from the cell, not
    bound here, so that ``reconfigure()`` reaches every runner already built. The lock
    is a ``with`` block: an interrupt between an ``acquire()`` and its ``release()``
    would leave it held for good. A call over the rate goes on as at a plain gate:
    ``o{i}()`` reserves a wait or raises.
    """
    return [
        f"{pad}now{i} = g{i}()",
        # A limiter that never waits refuses a call over the rate before the lock, as
        # its admit() does (c[3]: its slack, too large to ever hold for one that waits).
        f"{pad}d{i} = c{i}[0] - c{i}[3] - now{i}",
        f"{pad}if d{i} > 0:",
        # Raised as it is built: a local holding it would make a cycle with this
        # frame's traceback.
        f"{pad}    raise y{i}(d{i}, now{i})",
        f"{pad}with x{i}:",
        f"{pad}    tat{i} = c{i}[0]",
        f"{pad}    new{i} = (tat{i} if tat{i} > now{i} else now{i}) + c{i}[1]",
        f"{pad}    ok{i} = new{i} - now{i} <= c{i}[2]",
        f"{pad}    if ok{i}:",
        f"{pad}        c{i}[0] = new{i}",
        f"{pad}        m{i}[0] += 1",
        f"{pad}if not ok{i}:",
        f"{pad}    t{i} = o{i}()",
        f"{pad}    if t{i} is not None:",
        f"{pad}        {aw}w{i}(t{i})",
    ]


def _breaker_level(i: int, pad: str) -> tuple[list[str], list[str]]:
    """The entry and exit of a breaker at level ``i``: the breaker's own guard, written out.

    The same lines as ``CircuitBreaker._sync_guard`` (``tests/test_breaker_twins.py``
    checks it), with the names of ``breaker_hooks()``: the core, its clock's
    ``monotonic``, ``admit_checked``, ``CircuitOpenError``, ``on_success``,
    ``on_error``, ``on_cancel``. Calling the step's ``enter`` and exits instead would
    cost three calls more per call than the breaker alone.
    """
    enter = [
        f"{pad}timed{i} = c{i}._timed",
        f"{pad}start{i} = mo{i}() if timed{i} else 0.0",
        f"{pad}t{i} = c{i}._free",
        f"{pad}if t{i} is None:",
        f"{pad}    admitted{i} = ad{i}()",
        f"{pad}    if isinstance(admitted{i}, E{i}):",
        f"{pad}        try:",
        f"{pad}            raise admitted{i}",
        f"{pad}        finally:",
        f"{pad}            del admitted{i}",
        f"{pad}    t{i} = admitted{i}",
        f"{pad}try:",
        f"{pad}    try:",
    ]
    exit_ = [
        f"{pad}    except Exception as exc:",
        f"{pad}        er{i}(t{i}, exc, mo{i}() - start{i} if timed{i} else 0.0)",
        f"{pad}        raise",
        f"{pad}    su{i}(t{i}, result, mo{i}() - start{i} if timed{i} else 0.0)",
        f"{pad}except BaseException:",
        f"{pad}    ca{i}(t{i})",
        f"{pad}    raise",
    ]
    return enter, exit_


def _runner_source(
    defers: tuple[bool, ...],
    is_async: bool,
    pools: tuple[bool, ...] | None = None,
    gates: tuple[int, ...] | None = None,
    breakers: tuple[bool, ...] | None = None,
    params: str = "*args, **kwargs",
    forward: str = "*args, **kwargs",
) -> str:
    """Source of ``make(fn, steps...) -> run``: the steps unrolled into nested ``try``s.

    Level *i*'s ``try`` holds the entry of every inner step and the call, so each level
    sees exactly what a stacked decorator at that place would see (an inner rejection, a
    converted cancellation, an inner fallback's value), all in one frame with no loop,
    no token list and no unwinding helper. ``params`` and ``forward`` are the runner's
    parameter list and the call's arguments (a decorated function's own, from
    :mod:`~resilient._policies._signature`).
    """
    aw = "await " if is_async else ""
    n = len(defers)
    pools = pools or (False,) * n
    gates = gates or (0,) * n
    breakers = breakers or (False,) * n
    names = ", ".join(
        f"s{i}, c{i}, r{i}, q{i}, h{i}, n{i}, w{i}, l{i}"
        if pools[i]
        else f"c{i}, mo{i}, ad{i}, E{i}, su{i}, er{i}, ca{i}"
        if breakers[i]
        else f"g{i}, x{i}, c{i}, m{i}, y{i}, o{i}, w{i}"
        if gates[i] == INLINE
        else f"a{i}, o{i}, w{i}"
        if gates[i]
        else f"e{i}, w{i}, ok{i}, err{i}, can{i}"
        for i in range(n)
    )
    out = [f"def make(fn, Wait, PASS, Deferred, COROUTINE, refuse_coroutine, {names}):"]
    out.append(f"    {'async ' if is_async else ''}def run({params}):")
    pad = " " * 8
    exits: list[list[str]] = []
    for i in range(n):
        if pools[i]:
            enter, exit_ = _slot_level(i, pad, aw)
            out += enter
            exits.append(exit_)
            pad += "    "
            continue
        if breakers[i]:
            enter, exit_ = _breaker_level(i, pad)
            out += enter
            exits.append(exit_)
            pad += "        "
            continue
        exits.append([])
        if gates[i]:
            out += (_inline_gate_level if gates[i] == INLINE else _gate_level)(i, pad, aw)
            continue
        out += [
            f"{pad}t{i} = e{i}()",
            f"{pad}if type(t{i}) is Wait:",
            f"{pad}    t{i} = {aw}w{i}(t{i})",
            f"{pad}try:",
        ]
        pad += "    "
    out.append(f"{pad}result = {aw}fn({forward})")
    if not is_async:  # a "sync" callable that returned a coroutine: see _decorate
        out += [f"{pad}if type(result) is COROUTINE:", f"{pad}    refuse_coroutine(fn, result)"]
    for i in reversed(range(n)):
        if gates[i]:
            continue  # no try was opened: nothing to unwind
        if breakers[i]:
            pad = pad[:-8]
            out += exits[i]
            continue
        pad = pad[:-4]
        if pools[i]:
            out += exits[i]
            continue
        deferred = (
            [
                f"{pad}    if type(result) is Deferred:",
                f"{pad}        result = await result.awaitable",
            ]
            if is_async and defers[i]
            else []
        )
        out += [
            f"{pad}except Exception as exc:",
            f"{pad}    result = err{i}(t{i}, exc)",
            f"{pad}    if result is PASS:",
            f"{pad}        raise",
            *deferred,
            f"{pad}except BaseException as exc:",
            f"{pad}    replaced = can{i}(t{i}, exc)",
            # Drop the name as it leaves: the exception's traceback holds this frame,
            # so a frame still holding the exception would be a reference cycle.
            f"{pad}    try:",
            f"{pad}        if replaced is exc:",
            f"{pad}            raise",
            f"{pad}        raise replaced",
            f"{pad}    finally:",
            f"{pad}        del replaced",
            f"{pad}else:",
            f"{pad}    result = ok{i}(t{i}, result)",
            *deferred,
        ]
    out += ["        return result", "    return run"]
    return "\n".join(out)


_Shape = tuple[tuple[bool, ...], bool, tuple[bool, ...], tuple[int, ...], tuple[bool, ...]]


def _breaker_hooks(step: Step) -> tuple[Any, ...] | None:
    """A breaker step's hooks for :func:`_breaker_level`, or ``None`` (not one, or not plain)."""
    hooks = getattr(step, "breaker_hooks", None)
    return None if hooks is None else hooks()


def _gate_kind(step: Step, is_async: bool) -> int:
    """0: not a gate; 1: a gate called through ``gate_hooks``; ``INLINE``: written out."""
    if not hasattr(step, "gate_hooks"):
        return 0
    inline = getattr(step, "inline_gate", None)
    return INLINE if inline is not None and inline(is_async) is not None else 1


_makers: dict[tuple[_Shape, tuple[str, ...], Any], Callable[..., Any]] = {}
_reserved: dict[_Shape, frozenset[str]] = {}  # the names a runner's source uses


def _maker(shape: _Shape, names: tuple[str, ...], signature: Shape | None) -> Callable[..., Any]:
    key = (shape, names, None if signature is None else signature.key)
    make = _makers.get(key)
    if make is None:
        arguments = () if signature is None else (signature.params, signature.forward)
        source = _runner_source(*shape, *arguments)
        what = f"{'+'.join(names)}, {'async' if shape[1] else 'sync'}"
        if signature is not None:
            what += f", ({signature.params})"
        filename = register_source(source, f"<resilient compose: {what}>")
        namespace: dict[str, Any] = {}
        exec(compile(source, filename, "exec"), namespace)  # noqa: S102 -- our own generated source, as attrs does
        make = _makers[key] = namespace["make"]
    return make


def _runner(
    steps: Sequence[Step],
    fn: Callable[..., Any],
    kinds: Sequence[str] | None,
    *,
    is_async: bool,
    signature: Signature | None = None,
) -> Callable[..., Any]:
    pools = tuple(getattr(step, "pool", None) is not None for step in steps)
    gates = tuple(_gate_kind(step, is_async) for step in steps)
    breakers = tuple(_breaker_hooks(step) is not None for step in steps)
    shape = (tuple(bool(step.defers) for step in steps), is_async, pools, gates, breakers)
    names = tuple(kinds) if kinds is not None else tuple(type(s).__name__ for s in steps)
    # A gate admitted through a call (a limiter whose state is in a store) runs other
    # source than the written-out admission: its name says so.
    names = tuple(f"{n} (admit call)" if g == 1 else n for n, g in zip(names, gates, strict=True))
    if signature is not None:
        reserved = _reserved.get(shape)
        if reserved is None:
            # `args` and `kwargs` are the packed parameters the signature replaces.
            used = names_in(ast.parse(_runner_source(*shape))) - {"args", "kwargs"}
            reserved = _reserved[shape] = frozenset(used)
        if signature.shape.names & reserved:
            signature = None  # a parameter would shadow one of the runner's names
    make = _maker(shape, names, None if signature is None else signature.shape)
    hooks: list[Any] = []
    for step in steps:
        pool = getattr(step, "pool", None)
        if pool is not None:
            hooks += (pool._slots, pool, pool._released, pool._waiters, pool._hand_off)
            hooks += step.slot_hooks(is_async)  # type: ignore[attr-defined]
            continue
        breaker = _breaker_hooks(step)
        if breaker is not None:
            hooks += breaker
            continue
        gate_hooks = getattr(step, "gate_hooks", None)
        if gate_hooks is not None:
            inline = getattr(step, "inline_gate", None)
            admission = None if inline is None else inline(is_async)
            if admission is not None:
                hooks += (*admission, *gate_hooks(is_async)[1:])
            else:
                hooks += gate_hooks(is_async)
            continue
        hooks += (step.enter, step.enter_wait_async if is_async else step.enter_wait)
        hooks += (step.exit_ok, step.exit_error, step.exit_cancel)
    run: Callable[..., Any] = make(fn, Wait, PASS, Deferred, COROUTINE, refuse_coroutine, *hooks)
    return run if signature is None else signature.fit(run)


def sync_runner(
    steps: Sequence[Step],
    fn: Callable[..., Any],
    kinds: Sequence[str] | None = None,
    signature: Signature | None = None,
) -> Callable[..., Any]:
    """Return ``run(*args, **kwargs)`` calling ``fn`` inside ``steps`` (outermost first).

    ``kinds`` names the steps' policies (``"circuit_breaker"``, ...) in the runner's
    file name, which tracebacks show; without it, the steps' class names do. With
    ``signature`` (a decorated function's), ``run`` takes the function's own parameters.
    """
    return _runner(steps, fn, kinds, is_async=False, signature=signature)


def async_runner(
    steps: Sequence[Step],
    fn: Callable[..., Awaitable[Any]],
    kinds: Sequence[str] | None = None,
    signature: Signature | None = None,
) -> Callable[..., Awaitable[Any]]:
    """Return ``async run(*args, **kwargs)`` awaiting ``fn`` inside ``steps`` (as above)."""
    return _runner(steps, fn, kinds, is_async=True, signature=signature)
