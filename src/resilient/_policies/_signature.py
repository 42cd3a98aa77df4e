"""Guards with the decorated function's own parameter list, generated once per shape.

A guard written ``def guarded(*args, **kwargs)`` packs every call's arguments into a
tuple and a dict and unpacks them again to call the function: ~100 ns of a closed
breaker's ~400. So, as the ``decorator`` package and attrs' generated methods do, a
decorated plain function gets a guard whose parameters are its own (names, defaults,
``/`` and ``*`` markers, ``*args``/``**kwargs``), forwarding ``fn(a, b, c=c)``.

The guards are still written once, by hand, as ``(*args, **kwargs)`` closures inside a
*factory* (type-checked, covered, and what ``call()`` and every other callable use).
:func:`specialize` reads a factory's source, swaps the nested guard's parameters and its
``(*args, **kwargs)`` calls for the function's, compiles the result once per factory
and :class:`Shape` (kinds, names, which have defaults), and registers the source in
:mod:`linecache` as attrs does, so tracebacks and ``inspect.getsource`` show it. The
generated guard carries placeholder defaults; :meth:`Signature.fit` gives it the
function's own ``__defaults__`` (the same objects: a mutable default keeps its
identity) and a copy of its ``__kwdefaults__``, never their ``repr``.

Anything it cannot reproduce exactly keeps the hand-written guard: builtins, partials,
callable objects, a factory whose source is unavailable or which uses the packed
``args``/``kwargs`` themselves (a sync timeout hands them to a worker), and parameter
names that would shadow a global or builtin the guard reads (the factory's own locals,
a method's ``self`` among them, are renamed instead; a composed runner's are not).
Argument errors (a missing argument, an unexpected keyword) are the same ``TypeError``
as calling the function, raised when the guard is entered, before the policy sees the
call.
"""

from __future__ import annotations
import __future__

import ast
import inspect
import keyword
import linecache
import textwrap
from collections.abc import Callable
from types import CodeType, FunctionType
from typing import Any

__all__ = [
    "Shape",
    "Signature",
    "names_in",
    "register_source",
    "shaped",
    "signature_of",
    "specialize",
]

_VARARGS = inspect.CO_VARARGS
_VARKEYWORDS = inspect.CO_VARKEYWORDS
_FUTURE_ANNOTATIONS = __future__.annotations.compiler_flag

ShapeKey = tuple[Any, ...]


class Shape:
    """A parameter list's structure: what a generated guard's source depends on."""

    __slots__ = ("forward", "key", "names", "params")

    def __init__(self, key: ShapeKey) -> None:
        posonly, positional, defaulted, star, kwonly, kw_defaulted, starstar = key
        self.key = key
        params: list[str] = []
        first_default = len(positional) - defaulted
        for i, name in enumerate(positional):
            params.append(f"{name}=None" if i >= first_default else name)
            if i == posonly - 1:
                params.append("/")
        if star is not None:
            params.append(f"*{star}")
        elif kwonly:
            params.append("*")
        params += [
            f"{name}=None" if has else name for name, has in zip(kwonly, kw_defaulted, strict=True)
        ]
        if starstar is not None:
            params.append(f"**{starstar}")
        forward = list(positional)
        if star is not None:
            forward.append(f"*{star}")
        forward += [f"{name}={name}" for name in kwonly]
        if starstar is not None:
            forward.append(f"**{starstar}")
        #: The parameter list, placeholder defaults included: ``a, b=None, /, *, c``.
        self.params = ", ".join(params)
        #: The call that forwards them: ``a, b, c=c``.
        self.forward = ", ".join(forward)
        self.names = frozenset(
            (*positional, *kwonly, *(n for n in (star, starstar) if n is not None))
        )


class Signature:
    """A decorated function's :class:`Shape` and its defaults."""

    __slots__ = ("defaults", "kwdefaults", "shape")

    def __init__(self, shape: Shape, defaults: Any, kwdefaults: Any) -> None:
        self.shape = shape
        self.defaults = defaults
        self.kwdefaults = kwdefaults

    def fit(self, wrapper: Any) -> Any:
        """Give ``wrapper`` the function's defaults if it was generated with this shape."""
        if type(wrapper) is FunctionType and _shape_key(wrapper) == self.shape.key:
            wrapper.__defaults__ = self.defaults
            # A copy: assigning to one function's dict must not change the other's.
            wrapper.__kwdefaults__ = dict(self.kwdefaults) if self.kwdefaults else None
        return wrapper


_shapes: dict[ShapeKey, Shape] = {}
_GENERIC_KEY: ShapeKey = (0, (), 0, "args", (), (), "kwargs")


def _shape_key(fn: FunctionType) -> ShapeKey | None:
    code = fn.__code__
    flags = code.co_flags
    n_positional = code.co_argcount
    n_kwonly = code.co_kwonlyargcount
    names = code.co_varnames
    positional = names[:n_positional]
    kwonly = names[n_positional : n_positional + n_kwonly]
    i = n_positional + n_kwonly
    star = names[i] if flags & _VARARGS else None
    i += star is not None
    starstar = names[i] if flags & _VARKEYWORDS else None
    defaults = fn.__defaults__ or ()
    kwdefaults = fn.__kwdefaults__ or {}
    if len(defaults) > n_positional or not set(kwdefaults) <= set(kwonly):
        return None  # defaults assigned by hand that no `def` could have written
    return (
        code.co_posonlyargcount,
        positional,
        len(defaults),
        star,
        kwonly,
        tuple(name in kwdefaults for name in kwonly),
        starstar,
    )


def signature_of(fn: object) -> Signature | None:
    """``fn``'s signature if a guard can be generated for it, else ``None``.

    Only plain functions (``def``, ``async def``, lambdas): their code object says
    exactly what they accept. A function taking just ``(*args, **kwargs)`` gets ``None``
    too: the hand-written guard is already its shape.
    """
    if type(fn) is not FunctionType:
        return None
    key = _shape_key(fn)
    if key is None or key == _GENERIC_KEY:
        return None
    shape = _shapes.get(key)
    if shape is None:
        shape = Shape(key)
        if any(keyword.iskeyword(n) or not n.isidentifier() for n in shape.names):
            return None  # pragma: no cover - a code object built by hand
        shape = _shapes.setdefault(key, shape)
    return Signature(shape, fn.__defaults__, fn.__kwdefaults__)


def _is_packed(args: ast.arguments) -> bool:
    return (
        not args.posonlyargs
        and not args.args
        and not args.kwonlyargs
        and args.vararg is not None
        and args.vararg.arg == "args"
        and args.kwarg is not None
        and args.kwarg.arg == "kwargs"
    )


def _forwards_packed(call: ast.Call) -> bool:
    # Only the call of the guarded function itself: anything else handed the packed
    # arguments (a keyed limiter's key function) must see them as the caller passed them.
    return (
        isinstance(call.func, ast.Name)
        and call.func.id == "fn"
        and len(call.args) == 1
        and isinstance(call.args[0], ast.Starred)
        and isinstance(call.args[0].value, ast.Name)
        and call.args[0].value.id == "args"
        and len(call.keywords) == 1
        and call.keywords[0].arg is None
        and isinstance(call.keywords[0].value, ast.Name)
        and call.keywords[0].value.id == "kwargs"
    )


def names_in(tree: ast.AST) -> set[str]:
    """Every name ``tree`` binds or reads (a parameter by one of these would shadow it)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            names.add(node.id)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) or (
            isinstance(node, ast.ExceptHandler) and node.name
        ):
            names.add(node.name)  # type: ignore[arg-type]
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            names.update(node.names)
    return names


def _bound_in(outer: ast.FunctionDef) -> set[str]:
    """The names ``outer`` binds itself: its parameters and local variables."""
    bound: set[str] = set()
    for node in ast.walk(outer):
        if isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            bound.add(node.id)
        elif (isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node is not outer) or (
            isinstance(node, ast.ExceptHandler) and node.name
        ):
            bound.add(node.name)  # type: ignore[arg-type]
    return bound


def _rename(tree: ast.AST, renames: dict[str, str]) -> None:
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            node.id = renames.get(node.id, node.id)
        elif isinstance(node, ast.arg):
            node.arg = renames.get(node.arg, node.arg)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or (
            isinstance(node, ast.ExceptHandler) and node.name
        ):
            node.name = renames.get(node.name, node.name)  # type: ignore[arg-type]


def _code_shape(code: CodeType) -> tuple[Any, ...]:
    nested = tuple(_code_shape(c) for c in code.co_consts if isinstance(c, CodeType))
    return (code.co_code, code.co_names, code.co_varnames, code.co_freevars, nested)


def _is_running(factory: FunctionType, module: ast.Module) -> bool:
    """Whether ``module`` (the factory's source as read now) compiles to its code.

    ``inspect.getsource`` reads the file, which may have changed since the module was
    imported (a deployment under a running process): the bytecode and names say
    whether it is still the code that runs (line and column numbers do not).
    """
    flags = factory.__code__.co_flags & _FUTURE_ANNOTATIONS
    compiled = compile(module, "<resilient check>", "exec", flags=flags, dont_inherit=True)
    codes = [c for c in compiled.co_consts if isinstance(c, CodeType)]
    return len(codes) == 1 and _code_shape(codes[0]) == _code_shape(factory.__code__)


def register_source(source: str, name: str) -> str:
    """Put ``source`` in :mod:`linecache` under ``name``, or a unique variant of it.

    As attrs' ``_linecache_and_compile``: an entry whose mtime is ``None`` is never
    dropped by ``linecache.checkcache()`` (there is no file to compare it with). Another
    source under the same name gets a numbered name of its own; the same source keeps
    the same name.
    """
    filename = name
    count = 1
    while True:
        entry = (len(source), None, source.splitlines(keepends=True), filename)
        if linecache.cache.setdefault(filename, entry) == entry:
            return filename
        count += 1
        filename = f"{name[:-1]} #{count}>"


_PARAMS = "__resilient_params__"  # where a template's guard takes its parameters
_FORWARD = "__resilient_forward__"  # and where it passes them on


class _Template:
    """A factory's source, its guard's parameters and forwarding left as markers."""

    __slots__ = ("bound", "name", "names", "text")

    def __init__(self, text: str, name: str, names: frozenset[str], bound: frozenset[str]) -> None:
        self.text = text
        self.name = name  # the factory's name, in the namespace the source is run in
        self.names = names  # every name the factory uses
        self.bound = bound  # those it binds itself, which a parameter may take over


def _make_template(factory: FunctionType) -> _Template | None:  # noqa: PLR0911 -- each refusal says why
    if factory.__closure__ is not None:
        return None  # its free variables could not be rebuilt from source
    try:
        source = textwrap.dedent(inspect.getsource(factory))
    except (OSError, TypeError):
        return None  # no source (frozen, or compiled only): the packed guard serves
    module = ast.parse(source)
    outer = module.body[0]
    if not isinstance(outer, ast.FunctionDef):  # pragma: no cover - factories are `def`
        return None
    outer.decorator_list = []
    if not _is_running(factory, module):
        return None  # the file changed since it was imported: not the code that runs
    guards = [
        node
        for node in outer.body
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and _is_packed(node.args)
    ]
    if len(guards) != 1:
        return None
    guard = guards[0]
    guard.args = ast.arguments(posonlyargs=[], args=[], kwonlyargs=[], kw_defaults=[], defaults=[])
    guard.returns = None
    calls = [
        node for node in ast.walk(guard) if isinstance(node, ast.Call) and _forwards_packed(node)
    ]
    for call in calls:
        call.args, call.keywords = [], []
    if {"args", "kwargs"} & names_in(guard):
        return None  # the guard uses the packed arguments themselves
    names = frozenset(names_in(module))
    guard.args.args = [ast.arg(_PARAMS)]
    for call in calls:
        call.args = [ast.Name(_FORWARD, ast.Load())]
    text = ast.unparse(ast.fix_missing_locations(module))
    return _Template(text, outer.name, names, frozenset(_bound_in(outer)))


def _generate(factory: FunctionType, shape: Shape) -> Any:
    template = _templates.get(factory, False)
    if template is False:
        template = _templates.setdefault(factory, _make_template(factory))
    if template is None:
        return None
    text = template.text
    clashes = shape.names & template.names
    renames: dict[str, str] = {}
    if clashes:
        # A parameter named as one of the factory's own locals (a method's `self`, a
        # breaker's `fn`): those are renamed. One named as a global or builtin the guard
        # reads (`type`) would shadow it: the packed guard serves.
        if clashes - template.bound:
            return None
        taken = template.names | shape.names
        for name in sorted(clashes):
            fresh = f"_{name}_"
            while fresh in taken:
                fresh = f"_{fresh}_"
            taken |= {fresh}
            renames[name] = fresh
        module = ast.parse(text)
        _rename(module, renames)
        text = ast.unparse(module)
    text = text.replace(_PARAMS, shape.params).replace(_FORWARD, shape.forward)
    filename = register_source(text, f"<resilient guard: {factory.__qualname__}({shape.params})>")
    code = compile(text, filename, "exec", flags=_FUTURE_ANNOTATIONS, dont_inherit=True)
    namespace: dict[str, Any] = {}
    exec(code, factory.__globals__, namespace)  # noqa: S102 -- our own factory's source, as attrs does
    made = namespace[renames.get(template.name, template.name)]
    made.__qualname__ = factory.__qualname__
    return made


_templates: dict[Callable[..., Any], Any] = {}
_special: dict[tuple[Callable[..., Any], ShapeKey], Any] = {}


def specialize(factory: Callable[..., Any], shape: Shape) -> Callable[..., Any] | None:
    """``factory`` with its ``(*args, **kwargs)`` guard given ``shape``, or ``None``.

    ``factory`` is a plain function (a method taken from its class) that defines one
    nested guard taking exactly ``(*args, **kwargs)`` and passing them on only as
    ``fn(*args, **kwargs)``, ``fn`` being the guarded function; the copy takes the same
    arguments. Compiled once per factory and shape.
    """
    key = (factory, shape.key)
    try:
        return _special[key]  # type: ignore[no-any-return]
    except KeyError:
        pass
    made = _generate(factory, shape) if type(factory) is FunctionType else None
    return _special.setdefault(key, made)


def shaped(factory: Callable[..., Any], fn: Callable[..., Any], signature: Signature | None) -> Any:
    """``factory(fn)``, with the guard generated for ``signature`` where it can be.

    ``factory`` is a function or a bound method; the result has ``fn``'s defaults.
    """
    if signature is not None:
        func = getattr(factory, "__func__", factory)
        special = specialize(func, signature.shape)
        if special is not None:
            owner = getattr(factory, "__self__", None)
            made = special(fn) if owner is None else special(owner, fn)
            return signature.fit(made)
    return factory(fn)
