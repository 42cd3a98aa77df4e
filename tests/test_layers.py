"""The house's floors: each package imports only the floors below it (issue 14).

``_core`` (the decisions) imports the standard library and itself; ``_waiting`` (where
time passes) adds ``_core`` and the async backends; ``_policies`` (the adapters) adds
``_waiting``; the integrations (``instrumentation``, ``asgi``) sit on top and nothing
below imports them. Read from the source, every import statement counted, those inside
functions included: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

import resilient

PACKAGE = Path(resilient.__file__).parent

# The async backends, loaded only where waiting happens (and only when first used).
BACKENDS = frozenset({"anyio", "trio", "sniffio"})
# Not one of these in a core: a core decides, the adapter waits, sleeps and reads the
# context (`threading` is allowed for locks, through `_core._fork.new_lock`; `time` for
# reading the system's clock, `_core._clock.SYSTEM_TIME`, never for sleeping).
NOT_IN_A_CORE = frozenset(
    {"asyncio", "anyio", "trio", "contextvars", "concurrent", "queue", "selectors"}
)


def imports_of(path: Path) -> list[tuple[str, bool]]:
    """Every module ``path`` imports, and whether only for type checking."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    typing_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            typing_only.update(id(inner) for inner in ast.walk(node))
    found: list[tuple[str, bool]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, id(node) in typing_only) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            base = node.module
            # `from resilient._core import _events` imports resilient._core._events.
            found += [(f"{base}.{alias.name}", id(node) in typing_only) for alias in node.names]
    return found


def top(name: str) -> str:
    return name.split(".", maxsplit=1)[0]


def floor_of(name: str) -> str:
    """``resilient._core._breaker`` -> ``_core``; ``resilient.asgi`` -> ``asgi``."""
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else ""


def modules(package: str) -> list[Path]:
    return sorted((PACKAGE / package).rglob("*.py"))


def stdlib(name: str) -> bool:
    return top(name) in sys.stdlib_module_names


@pytest.mark.parametrize("path", modules("_core"), ids=lambda p: p.name)
def test_a_core_imports_only_the_standard_library_and_other_cores(path: Path) -> None:
    wrong = [
        name
        for name, typing_only in imports_of(path)
        if not (stdlib(name) or (floor_of(name) == "_core" and top(name) == "resilient"))
        and not (typing_only and top(name) == "typing_extensions")
    ]
    assert wrong == [], f"{path.name} imports {wrong}"


@pytest.mark.parametrize("path", modules("_core"), ids=lambda p: p.name)
def test_a_core_neither_waits_nor_reads_the_context(path: Path) -> None:
    wrong = [name for name, _ in imports_of(path) if top(name) in NOT_IN_A_CORE]
    assert wrong == [], f"{path.name} imports {wrong}"


@pytest.mark.parametrize("path", modules("_core"), ids=lambda p: p.name)
def test_a_core_never_sleeps(path: Path) -> None:
    calls = [
        ast.unparse(node.func)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Call)
        and ast.unparse(node.func).rsplit(".", 1)[-1] in {"sleep", "asleep", "wait", "acquire"}
        and not ast.unparse(node.func).endswith("_lock.acquire")
    ]
    assert calls == [], f"{path.name} calls {calls}"


@pytest.mark.parametrize("path", modules("_waiting"), ids=lambda p: p.name)
def test_the_waiting_floor_stands_on_the_cores_only(path: Path) -> None:
    wrong = [
        name
        for name, _ in imports_of(path)
        if not stdlib(name)
        and top(name) not in BACKENDS
        and not (top(name) == "resilient" and floor_of(name) in {"_core", "_waiting"})
    ]
    assert wrong == [], f"{path.name} imports {wrong}"


@pytest.mark.parametrize("path", modules("_policies"), ids=lambda p: p.name)
def test_no_policy_imports_an_integration(path: Path) -> None:
    wrong = [
        name
        for name, _ in imports_of(path)
        if top(name) == "resilient"
        and floor_of(name)
        in {
            "asgi",
            "chaos",
            "dashboard",
            "instrumentation",
            "redis",
            "testing",
            "_http",
            "httpx",
            "requests",
        }
    ]
    assert wrong == [], f"{path.name} imports {wrong}"


@pytest.mark.parametrize("path", modules("dashboard"), ids=lambda p: p.name)
def test_the_dashboard_stands_on_the_policies_without_opentelemetry(path: Path) -> None:
    # resilient.dashboard (issue 19) reads the policies' own read-outs, the counts that
    # OpenTelemetry reports included (_policies._outcomes), and needs no otel extra; of
    # the other integrations it names only the ASGI types, for type checking.
    wrong = [
        name
        for name, typing_only in imports_of(path)
        if not stdlib(name)
        and top(name) not in BACKENDS
        and not (
            top(name) == "resilient"
            and floor_of(name) in {"_core", "_waiting", "_policies", "dashboard"}
        )
        and not (typing_only and name.startswith("resilient.asgi._types"))
    ]
    assert wrong == [], f"{path.name} imports {wrong}"


def test_the_floors_are_the_folders() -> None:
    # Every module lives on a floor: nothing private is left loose beside __init__.py.
    loose = sorted(p.name for p in PACKAGE.glob("_*.py") if p.name != "__init__.py")
    assert loose == ["_version.py"]


def test_the_reader_catches_every_kind_of_import(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text(
        "import a.b\nfrom c import d\nfrom . import e\n"
        "def f():\n    import g\n"
        "if TYPE_CHECKING:\n    import h\n",
        encoding="utf-8",
    )
    assert imports_of(source) == [
        ("a.b", False),
        ("c.d", False),
        ("g", False),
        ("h", True),
    ]


# -- issue 18: the HTTP clients (a block of its own, to ease merging) -------------------
# ``_http`` is the floor the two client shells share: above ``_policies`` (it adapts
# and registers policies), with no HTTP library and no async backend (it does no I/O).
# ``resilient.httpx`` and ``resilient.requests`` stand on it, each importing its own
# client library and not the other's.

HTTP_SHELLS = {"httpx": "httpx", "requests": "requests"}


@pytest.mark.parametrize("path", modules("_http"), ids=lambda p: p.name)
def test_the_http_floor_stands_on_the_policies_only(path: Path) -> None:
    wrong = [
        name
        for name, _ in imports_of(path)
        if not stdlib(name)
        and not (
            top(name) == "resilient"
            and floor_of(name) in {"_core", "_waiting", "_policies", "_http"}
        )
    ]
    assert wrong == [], f"{path.name} imports {wrong}"


@pytest.mark.parametrize(
    ("package", "path"),
    [(package, path) for package in HTTP_SHELLS for path in modules(package)],
    ids=lambda value: getattr(value, "name", value),
)
def test_an_http_shell_imports_its_client_and_the_floors_below(package: str, path: Path) -> None:
    wrong = [
        name
        for name, _ in imports_of(path)
        if not stdlib(name)
        and top(name) != HTTP_SHELLS[package]
        and not (
            top(name) == "resilient"
            and floor_of(name) in {"_core", "_waiting", "_policies", "_http", package}
        )
    ]
    assert wrong == [], f"{path.name} imports {wrong}"


def test_nothing_below_the_http_floor_imports_it() -> None:
    below = modules("_core") + modules("_waiting") + modules("_policies")
    wrong = [
        f"{path.name}: {name}"
        for path in below
        for name, _ in imports_of(path)
        if top(name) in {"httpx", "requests"}
        or (top(name) == "resilient" and floor_of(name) in {"_http", "httpx", "requests"})
    ]
    assert wrong == []
