"""Check that a sync function and its async twin cannot drift: ``assert_twins``.

httpcore keeps ``_async/`` and ``_sync/`` trees that differ only in ``async``/``await``
(its sync tree is generated and checked in CI). Where we keep a hand-written pair for
speed (a generated function is neither type-checked nor seen by coverage), this test
helper checks the same thing on the syntax trees::

    from twins import assert_twins

    assert_twins(Bulkhead.enter_wait, Bulkhead.enter_wait_async, renames={"asleep": "sleep"})

The async function's tree is turned into a sync one (``async def`` -> ``def``, ``await
x`` -> ``x``, ``async with``/``async for`` -> ``with``/``for``, async comprehensions ->
plain ones), ``renames`` are applied to it, and the result must equal the sync
function's tree. What may differ without saying so: the outermost function's name,
every function's annotations (an async twin returns ``Awaitable[T]``), docstrings and
comments. Anything else that may differ is named: ``renames`` (an identifier, renamed
wherever it is a name, an attribute, a function or an argument; or a dotted expression
such as ``"self._asleep"``, replaced wherever it appears), and ``sync_only`` /
``async_only``, statements (source text) that only one twin has, each of which must be
found. On a mismatch the error shows a unified diff of the two normalized sources.
"""

from __future__ import annotations

import ast
import difflib
import inspect
import textwrap
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = ["assert_twins", "normalized"]


def _tree(fn: Callable[..., Any] | str) -> ast.FunctionDef | ast.AsyncFunctionDef:
    source = fn if isinstance(fn, str) else inspect.getsource(fn)
    node = ast.parse(textwrap.dedent(source)).body[0]
    if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        raise TypeError(f"not a function: {ast.unparse(node)[:60]!r}")
    return node


class _Unasync(ast.NodeTransformer):
    """The async tree made sync: what the sync twin must be."""

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> ast.FunctionDef:
        self.generic_visit(node)
        fields = {name: getattr(node, name) for name in node._fields}
        return ast.copy_location(ast.FunctionDef(**fields), node)

    def visit_Await(self, node: ast.Await) -> ast.expr:
        return self.visit(node.value)  # type: ignore[no-any-return]

    def visit_AsyncWith(self, node: ast.AsyncWith) -> ast.With:
        self.generic_visit(node)
        return ast.copy_location(ast.With(node.items, node.body, node.type_comment), node)

    def visit_AsyncFor(self, node: ast.AsyncFor) -> ast.For:
        self.generic_visit(node)
        loop = ast.For(node.target, node.iter, node.body, node.orelse, node.type_comment)
        return ast.copy_location(loop, node)

    def visit_comprehension(self, node: ast.comprehension) -> ast.comprehension:
        self.generic_visit(node)
        node.is_async = 0
        return node


class _Rename(ast.NodeTransformer):
    def __init__(self, renames: Mapping[str, str]) -> None:
        self.names = {k: v for k, v in renames.items() if k.isidentifier()}
        self.expressions = {k: v for k, v in renames.items() if not k.isidentifier()}
        self.used: set[str] = set()

    def _name(self, name: str) -> str:
        if name in self.names:
            self.used.add(name)
            return self.names[name]
        return name

    def visit(self, node: ast.AST) -> Any:
        if isinstance(node, ast.expr) and self.expressions:
            source = ast.unparse(node)
            if source in self.expressions:
                self.used.add(source)
                replacement = ast.parse(self.expressions[source], mode="eval").body
                return ast.copy_location(replacement, node)
        return super().visit(node)

    def visit_Name(self, node: ast.Name) -> ast.Name:
        node.id = self._name(node.id)
        return node

    def visit_Attribute(self, node: ast.Attribute) -> ast.Attribute:
        self.generic_visit(node)
        node.attr = self._name(node.attr)
        return node

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.FunctionDef:
        self.generic_visit(node)
        node.name = self._name(node.name)
        return node

    def visit_arg(self, node: ast.arg) -> ast.arg:
        node.arg = self._name(node.arg)
        return node


def _is_docstring(statement: ast.stmt) -> bool:
    return (
        isinstance(statement, ast.Expr)
        and isinstance(statement.value, ast.Constant)
        and isinstance(statement.value.value, str)
    )


class _Strip(ast.NodeTransformer):
    """Drop what may differ freely: annotations of signatures, docstrings, listed statements."""

    def __init__(self, statements: Iterable[str]) -> None:
        self.dumps = {
            ast.dump(statement): source
            for source in statements
            for statement in ast.parse(textwrap.dedent(source)).body
        }
        self.found: set[str] = set()

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.FunctionDef:
        if node.body and _is_docstring(node.body[0]):
            node.body = node.body[1:] or [ast.Pass()]
        node.returns = None
        for arg in (*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs):
            arg.annotation = None
        for arg in (node.args.vararg, node.args.kwarg):
            if arg is not None:
                arg.annotation = None
        self.generic_visit(node)
        return node

    def generic_visit(self, node: ast.AST) -> ast.AST:
        for name in ("body", "orelse", "finalbody"):
            statements = getattr(node, name, None)
            if isinstance(statements, list) and statements:
                kept = []
                for statement in statements:
                    dump = ast.dump(statement)
                    if dump in self.dumps:
                        self.found.add(self.dumps[dump])
                    else:
                        kept.append(statement)
                setattr(node, name, kept or [ast.Pass()])
        return super().generic_visit(node)


def normalized(
    fn: Callable[..., Any] | str,
    *,
    renames: Mapping[str, str] | None = None,
    only: Iterable[str] = (),
) -> ast.FunctionDef:
    """``fn``'s tree as ``assert_twins`` compares it (sync, renamed, stripped, unnamed)."""
    tree = _Unasync().visit(_tree(fn))
    if renames:
        renamer = _Rename(renames)
        tree = renamer.visit(tree)
        unused = set(renames) - renamer.used
        if unused:
            raise AssertionError(f"renames not found in {tree.name}: {sorted(unused)}")
    only = list(only)
    stripper = _Strip(only)
    tree = stripper.visit(tree)
    missing = [source for source in only if source not in stripper.found]
    if missing:
        raise AssertionError(f"statements not found in {tree.name}: {missing}")
    tree.name = "_"  # the twins' own names differ by definition
    return ast.fix_missing_locations(tree)  # type: ignore[no-any-return]


def assert_twins(
    sync_fn: Callable[..., Any] | str,
    async_fn: Callable[..., Any] | str,
    *,
    renames: Mapping[str, str] | None = None,
    sync_only: Iterable[str] = (),
    async_only: Iterable[str] = (),
) -> None:
    """Assert that ``async_fn`` is ``sync_fn`` with ``async``/``await`` added, and no more.

    Either may be a function (its source is read) or source text. See the module
    docstring for what may differ.
    """
    sync_tree = normalized(sync_fn, only=sync_only)
    async_tree = normalized(async_fn, renames=renames, only=async_only)
    if ast.dump(sync_tree) == ast.dump(async_tree):
        return
    diff = difflib.unified_diff(
        ast.unparse(sync_tree).splitlines(),
        ast.unparse(async_tree).splitlines(),
        "sync twin",
        "async twin, made sync",
        lineterm="",
    )
    raise AssertionError("the twins differ beyond async/await:\n" + "\n".join(diff))
