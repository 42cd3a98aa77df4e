"""Guards generated with the decorated function's own parameters behave as the function.

A decorated plain function gets a guard whose parameter list is its own (see
``_policies/_signature.py``). Over a table of signatures and of calls, each guarded
function must answer exactly as the function does: the same result (defaults, mutable
defaults by identity, ``*args``/``**kwargs``), or the same ``TypeError`` type for a call
the function refuses; and keep everything a decorated function kept before.
"""

from __future__ import annotations

import ast
import functools
import inspect
import linecache
import textwrap
import threading
from collections.abc import Callable
from typing import Any

import pytest

from resilient import (
    Bulkhead,
    CircuitBreaker,
    Fallback,
    KeyedRateLimiter,
    RateLimitedError,
    RateLimiter,
    Retry,
    compose,
)
from resilient._core._gcra import RateLimiterCore
from resilient._policies._pipeline import _inline_gate_level
from resilient._policies._signature import signature_of, specialize
from resilient.testing import ManualClock

# -- the table ----------------------------------------------------------------------------

LIST_DEFAULT: list[int] = []
DICT_DEFAULT: dict[str, int] = {}


def f_none() -> tuple[Any, ...]:
    return ()


def f_one(a: Any) -> tuple[Any, ...]:
    return (a,)


def f_default(a: Any, b: Any = 2) -> tuple[Any, ...]:
    return (a, b)


def f_all(
    a: Any,
    b: Any = LIST_DEFAULT,
    /,
    c: Any = 3,
    *args: Any,
    d: Any,
    e: Any = DICT_DEFAULT,
    **kw: Any,
) -> tuple[Any, ...]:
    return (a, b, c, args, d, e, kw)


def f_posonly(a: Any, /, b: Any) -> tuple[Any, ...]:
    return (a, b)


def f_kwonly(*, a: Any, b: Any = 1) -> tuple[Any, ...]:
    return (a, b)


def f_star(*args: Any) -> tuple[Any, ...]:
    return args


def f_starstar(**kw: Any) -> tuple[Any, ...]:
    return (kw,)


def f_named_like_packing(a: Any, *args: Any, **kwargs: Any) -> tuple[Any, ...]:
    return (a, args, kwargs)


def f_posonly_and_kwargs(a: Any, /, **kw: Any) -> tuple[Any, ...]:
    return (a, kw)


# Names the guards themselves use: a factory's locals are renamed, a runner's keep the
# packed guard.
def f_clashing(fn: Any, result: Any = 1, *, core: Any = 2, self: Any = 3) -> tuple[Any, ...]:
    return (fn, result, core, self)


# Shadows a builtin the guards read: the packed guard everywhere.
def f_shadowing(type: Any, isinstance: Any = 1) -> tuple[Any, ...]:  # noqa: A002
    return (type, isinstance)


f_lambda = lambda x, y=1: (x, y)  # noqa: E731 -- a lambda on purpose

SIGNATURES: list[Callable[..., Any]] = [
    f_none,
    f_one,
    f_default,
    f_all,
    f_posonly,
    f_kwonly,
    f_star,
    f_starstar,
    f_named_like_packing,
    f_posonly_and_kwargs,
    f_clashing,
    f_shadowing,
    f_lambda,
]

CALLS: list[tuple[tuple[Any, ...], dict[str, Any]]] = [
    ((), {}),
    ((1,), {}),
    ((1, 2), {}),
    ((1, 2, 3), {}),
    ((1, 2, 3, 4, 5), {}),
    ((), {"a": 1}),
    ((), {"a": 1, "b": 2}),
    ((1,), {"a": 2}),
    ((1,), {"b": 2}),
    ((1,), {"d": 4}),
    ((1, 2, 3, 4), {"d": 5, "e": 6, "z": 7}),
    ((1,), {"c": 3, "d": 4}),
    ((), {"fn": 1, "core": 2}),
    ((), {"x": 1}),
    ((), {"args": 1, "kwargs": 2}),
    ((1,), {"zz": 9}),
]


def _outcome(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    try:
        return ("returned", fn(*args, **kwargs))
    except TypeError:
        return ("raised", TypeError)


def _policies() -> dict[str, Callable[[], Any]]:
    never_failing = {"record": lambda exc: False}  # a TypeError must not open the breaker
    return {
        "breaker": lambda: CircuitBreaker(**never_failing),
        "rate limiter": lambda: RateLimiter(1e9),
        "bulkhead": lambda: Bulkhead(10),
        "fallback": lambda: Fallback(lambda exc: ("fallback",), on=LookupError),
        "retry": lambda: Retry(1),
        "compose": lambda: compose(
            Fallback(lambda exc: ("fallback",), on=LookupError),
            CircuitBreaker(**never_failing),
            RateLimiter(1e9),
            Bulkhead(10),
        ),
    }


POLICIES = _policies()


def _generated(guarded: Any) -> bool:
    return guarded.__code__.co_filename.startswith("<resilient")


@pytest.mark.parametrize("policy", list(POLICIES))
@pytest.mark.parametrize("fn", SIGNATURES, ids=lambda fn: fn.__name__)
def test_a_guarded_function_answers_every_call_as_the_function(
    fn: Callable[..., Any], policy: str
) -> None:
    guarded = POLICIES[policy]()(fn)
    for args, kwargs in CALLS:
        assert _outcome(guarded, args, kwargs) == _outcome(fn, args, kwargs), (args, kwargs)


@pytest.mark.parametrize("policy", ["breaker", "rate limiter", "bulkhead", "fallback", "compose"])
@pytest.mark.parametrize(
    "fn", [f for f in SIGNATURES if f not in (f_clashing, f_shadowing)], ids=lambda fn: fn.__name__
)
def test_the_guard_takes_the_functions_own_parameters(fn: Callable[..., Any], policy: str) -> None:
    guarded = POLICIES[policy]()(fn)
    assert _generated(guarded)
    code, own = guarded.__code__, fn.__code__
    count = own.co_argcount + own.co_kwonlyargcount
    count += bool(own.co_flags & inspect.CO_VARARGS) + bool(own.co_flags & inspect.CO_VARKEYWORDS)
    assert code.co_varnames[:count] == own.co_varnames[:count]
    assert (code.co_argcount, code.co_posonlyargcount, code.co_kwonlyargcount) == (
        own.co_argcount,
        own.co_posonlyargcount,
        own.co_kwonlyargcount,
    )
    assert guarded.__defaults__ is fn.__defaults__ or guarded.__defaults__ == fn.__defaults__


def test_a_parameter_named_as_a_factory_local_is_renamed_there() -> None:
    guarded = CircuitBreaker()(f_clashing)
    assert _generated(guarded)
    assert guarded(0) == (0, 1, 2, 3)
    assert guarded(fn=0, result=1, core=2, self=3) == (0, 1, 2, 3)
    composed = compose(CircuitBreaker(), Bulkhead(2))(f_clashing)
    # A runner's names are not renamed: its packed form serves.
    assert composed.__code__.co_varnames[:2] == ("args", "kwargs")
    assert composed(0) == (0, 1, 2, 3)


def test_a_parameter_shadowing_a_builtin_the_guard_reads_keeps_the_packed_guard() -> None:
    guarded = CircuitBreaker()(f_shadowing)
    assert guarded.__code__.co_varnames[:2] == ("args", "kwargs")
    assert guarded(0) == (0, 1)


def test_mutable_defaults_keep_their_identity_and_kwdefaults_are_a_copy() -> None:
    guarded = CircuitBreaker()(f_all)
    result = guarded(1, d=4)
    assert result[1] is LIST_DEFAULT
    assert result[5] is DICT_DEFAULT
    assert guarded.__defaults__ is f_all.__defaults__
    assert guarded.__kwdefaults__ == f_all.__kwdefaults__
    assert guarded.__kwdefaults__ is not f_all.__kwdefaults__


def test_what_a_decorated_function_keeps() -> None:
    breaker = CircuitBreaker()
    guarded = breaker(f_all)
    for name in ("__name__", "__qualname__", "__doc__", "__module__", "__annotations__"):
        assert getattr(guarded, name) == getattr(f_all, name), name
    assert guarded.__wrapped__ is f_all  # type: ignore[attr-defined]
    assert inspect.signature(guarded) == inspect.signature(f_all)
    assert guarded.__resilient_policy__ is breaker  # type: ignore[attr-defined]


def test_the_generated_source_can_be_read() -> None:
    guarded = CircuitBreaker()(f_default)
    source = inspect.getsource(guarded.__code__)  # getsource(guarded) reads __wrapped__
    assert source.lstrip().startswith("def guarded(a, b=None):")
    assert "result = fn(a, b)" in source
    linecache.checkcache()
    assert linecache.getlines(guarded.__code__.co_filename)


def test_a_traceback_shows_the_generated_line() -> None:
    def failing(a: int) -> None:
        raise LookupError(a)

    guarded = CircuitBreaker()(failing)
    with pytest.raises(LookupError) as info:
        guarded(1)
    lines = [entry.statement for entry in info.traceback]
    assert any("result = fn(a)" in str(line) for line in lines)


class Service:
    breaker = CircuitBreaker()

    def __init__(self, base: int) -> None:
        self.base = base

    @breaker
    def method(self, a: int, b: int = 1) -> tuple[Any, ...]:
        return (self.base, a, b)

    @classmethod
    @breaker
    def klass(cls, a: int) -> tuple[Any, ...]:
        return (cls.__name__, a)

    @staticmethod
    @breaker
    def static(a: int, *, b: int = 2) -> tuple[Any, ...]:
        return (a, b)

    @breaker
    async def amethod(self, a: int) -> tuple[Any, ...]:
        return (self.base, a)


async def test_methods_classmethods_and_staticmethods_bind_as_before() -> None:
    service = Service(10)
    assert service.method(1) == (10, 1, 1)
    assert service.method(a=1, b=2) == (10, 1, 2)
    assert Service.method(service, 3) == (10, 3, 1)
    assert Service.klass(1) == service.klass(1) == ("Service", 1)
    assert Service.static(1) == service.static(1, b=2) == (1, 2)
    assert await service.amethod(5) == (10, 5)
    assert _generated(Service.__dict__["method"])
    assert inspect.signature(service.method) == inspect.signature(Service(0).method)
    with pytest.raises(TypeError):
        service.method()
    with pytest.raises(TypeError):
        service.method(1, c=2)


def test_partials_builtins_and_callable_objects_keep_the_packed_guard() -> None:
    breaker = CircuitBreaker()
    partial = breaker(functools.partial(f_default, 1))
    assert partial() == (1, 2)
    assert partial(b=3) == (1, 3)
    assert breaker(len)([1, 2]) == 2

    class Adder:
        def __call__(self, a: int, b: int = 1) -> int:
            return a + b

    assert breaker(Adder())(1) == 2
    assert signature_of(functools.partial(f_default, 1)) is None
    assert signature_of(len) is None


def test_a_function_taking_only_args_and_kwargs_keeps_the_packed_guard() -> None:
    def packed(*args: Any, **kwargs: Any) -> tuple[Any, ...]:
        return (args, kwargs)

    assert signature_of(packed) is None
    assert CircuitBreaker()(packed)(1, b=2) == ((1,), {"b": 2})


def test_a_factory_without_source_is_not_specialized() -> None:
    namespace: dict[str, Any] = {}
    exec(  # noqa: S102 -- a factory whose source no file holds
        "def factory(fn):\n    def guarded(*args, **kwargs):\n        return fn(*args, **kwargs)\n"
        "    return guarded\n",
        namespace,
    )
    signature = signature_of(f_one)
    assert signature is not None
    assert specialize(namespace["factory"], signature.shape) is None


def test_the_key_function_of_a_keyed_limiter_sees_the_call_as_passed() -> None:
    seen: list[Any] = []

    def key(*args: Any, **kwargs: Any) -> str:
        seen.append((args, kwargs))
        return "k"

    limited = KeyedRateLimiter(1e9, key=key)(f_default)
    assert limited(1) == (1, 2)
    assert seen == [((1,), {})]


def test_dropping_defaults_by_hand_is_still_honoured() -> None:
    def odd(a: int, b: int = 2) -> tuple[int, int]:
        return (a, b)

    odd.__defaults__ = (5, 6, 7)  # more defaults than parameters: no `def` writes this
    assert signature_of(odd) is None
    assert CircuitBreaker()(odd)() == odd()


# -- async ---------------------------------------------------------------------------


async def a_all(
    a: Any,
    b: Any = LIST_DEFAULT,
    /,
    c: Any = 3,
    *args: Any,
    d: Any,
    e: Any = DICT_DEFAULT,
    **kw: Any,
) -> tuple[Any, ...]:
    return (a, b, c, args, d, e, kw)


async def a_kwonly(*, a: Any, b: Any = 1) -> tuple[Any, ...]:
    return (a, b)


async def a_posonly(a: Any, /, b: Any) -> tuple[Any, ...]:
    return (a, b)


async def _async_outcome(
    fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    try:
        return ("returned", await fn(*args, **kwargs))
    except TypeError:
        return ("raised", TypeError)


@pytest.mark.parametrize("policy", list(POLICIES))
@pytest.mark.parametrize("fn", [a_all, a_kwonly, a_posonly], ids=lambda fn: fn.__name__)
async def test_a_guarded_coroutine_function_answers_every_call_as_the_function(
    fn: Callable[..., Any], policy: str
) -> None:
    guarded = POLICIES[policy]()(fn)
    assert inspect.iscoroutinefunction(guarded)
    if policy != "retry":
        assert _generated(guarded)
    for args, kwargs in CALLS:
        expected = await _async_outcome(fn, args, kwargs)
        assert await _async_outcome(guarded, args, kwargs) == expected, (args, kwargs)
    if fn is a_all:
        result = await guarded(1, d=4)
        assert result[1] is LIST_DEFAULT
        assert result[5] is DICT_DEFAULT


# -- the rate limiter's admission, written out in the runner ----------------------------


def test_the_inline_admission_is_the_cores() -> None:
    source = textwrap.dedent(inspect.getsource(RateLimiterCore._make_admit))
    admit = next(
        node
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.FunctionDef) and node.name == "admit"
    )
    core = {ast.unparse(node) for node in ast.walk(admit) if isinstance(node, ast.stmt)}
    renames = {
        "g0": "now_ns",
        "x0": "lock",
        "c0": "cell",
        "m0": "admitted",
        "now0": "now",
        "tat0": "tat",
        "new0": "new_tat",
    }
    inline = "\n".join(_inline_gate_level(0, "", ""))
    for old, new in renames.items():
        inline = inline.replace(old, new)
    tree = ast.parse(inline)
    written = {ast.unparse(node) for node in ast.walk(tree) if isinstance(node, ast.stmt)}
    for statement in (
        "now = now_ns()",
        "tat = cell[0]",
        "new_tat = (tat if tat > now else now) + cell[1]",
        "cell[0] = new_tat",
        "admitted[0] += 1",
    ):
        assert statement in core, statement
        assert statement in written, statement
    assert "new_tat - now <= cell[2]" in ast.unparse(admit)
    assert "ok0 = new_tat - now <= cell[2]" in written
    assert "due = cell[0] - cell[3]" in core
    assert "d0 = cell[0] - cell[3] - now" in written


@pytest.mark.parametrize("how", ["alone", "composed"])
def test_the_inline_admission_admits_as_the_core_does(how: str) -> None:
    clock = ManualClock()
    limiter = RateLimiter(2, burst=2, clock=clock)
    guarded = limiter(f_one) if how == "alone" else compose(CircuitBreaker(), limiter)(f_one)
    assert "with x" in inspect.getsource(guarded.__code__)
    assert guarded(1) == (1,)
    assert guarded(2) == (2,)
    with pytest.raises(RateLimitedError):
        guarded(3)
    clock.advance(0.5)
    assert guarded(4) == (4,)
    metrics = limiter.metrics()
    assert (metrics.admitted, metrics.rejected) == (3, 1)


def test_a_factory_whose_file_changed_since_import_is_not_specialized(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = (
        "def factory(fn):\n    def guarded(*args, **kwargs):\n        return fn(*args, **kwargs)\n"
        "    return guarded\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    for name, changed in (("unchanged_factory", False), ("changed_factory", True)):
        module = tmp_path / f"{name}.py"
        module.write_text(source)
        factory = __import__(name).factory
        if changed:  # a deployment replaced the file under the running process
            module.write_text(source.replace("return fn(", "return 1 + fn("))
            linecache.checkcache(str(module))
        signature = signature_of(f_one)
        assert signature is not None
        made = specialize(factory, signature.shape)
        assert (made is None) is changed


@pytest.mark.parametrize("how", ["alone", "composed"])
def test_a_runner_refuses_a_limiter_that_never_waits_without_its_lock(how: str) -> None:
    # As the core's own admit() does for max_wait=0: a call over the rate is refused on
    # a look at the TAT, before the lock (held here, so a runner taking it would hang).
    limiter = RateLimiter(1, per=1e6, burst=1)

    def work(x: int) -> int:
        return x

    guarded = limiter(work) if how == "alone" else compose(limiter, Bulkhead(5))(work)
    assert guarded(1) == 1
    outcome: list[BaseException] = []

    def refused_call() -> None:
        try:
            guarded(2)
        except RateLimitedError as error:
            outcome.append(error)

    with limiter._core._lock:
        caller = threading.Thread(target=refused_call, daemon=True)
        caller.start()
        caller.join(timeout=30)
        held_up = caller.is_alive()
    caller.join()
    assert not held_up
    assert len(outcome) == 1
    assert limiter.metrics().rejected == 1
