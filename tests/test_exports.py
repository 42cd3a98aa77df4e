"""The public surface: sorted __all__, every name importable, reprs say `resilient.X`."""

from __future__ import annotations

import importlib.metadata
import importlib.resources
import pkgutil
import subprocess
import sys
import typing

import pytest

import resilient
import resilient.asgi
import resilient.testing


def test_all_is_sorted_and_complete() -> None:
    assert resilient.__all__ == sorted(resilient.__all__)
    for name in resilient.__all__:
        assert hasattr(resilient, name), name
    # Public submodules are attributes of the package once imported, not names in __all__.
    submodules = {
        "asgi",
        "chaos",
        "dashboard",
        "instrumentation",
        "redis",
        "testing",
        "httpx",
        "requests",
    }
    public = {n for n in dir(resilient) if not n.startswith("_")} - submodules
    assert public == set(resilient.__all__) - {"__version__"}


def test_public_names_live_in_the_public_namespace() -> None:
    for name in resilient.__all__:
        obj = getattr(resilient, name)
        module = getattr(obj, "__module__", None)
        if module is not None and isinstance(obj, type):
            assert module == "resilient", (name, module)


def test_testing_module_surface() -> None:
    assert resilient.testing.__all__ == [
        "ManualClock",
        "VirtualTimeLoop",
        "capture_events",
        "instant_retries",
    ]


def test_asgi_module_surface() -> None:
    assert resilient.asgi.__all__ == sorted(resilient.asgi.__all__)
    for name in resilient.asgi.__all__:
        obj = getattr(resilient.asgi, name)
        if typing.get_origin(obj) is not None:
            continue  # a type alias such as ASGIApp (on 3.10 it also passes for a type)
        if isinstance(obj, type) or (callable(obj) and hasattr(obj, "__code__")):
            assert obj.__module__ == "resilient.asgi", name
    assert "ResilienceMiddleware" in resilient.asgi.__all__


def test_the_asgi_package_keeps_its_modules_private() -> None:
    # resilient.asgi is a package: its one public module is __init__, the rest is _private.
    modules = [m.name for m in pkgutil.iter_modules(resilient.asgi.__path__)]
    assert "_middleware" in modules
    assert all(name.startswith("_") for name in modules), modules


def test_the_asgi_module_imports_no_framework() -> None:
    # The middleware is raw ASGI: importing it, every module of its package included,
    # must not pull in a web framework.
    code = (
        "import pkgutil, sys, importlib, resilient.asgi; "
        "[importlib.import_module(m.name) for m in "
        "pkgutil.walk_packages(resilient.asgi.__path__, 'resilient.asgi.')]; "
        "print([m for m in sys.modules if m.split('.')[0] in "
        "('starlette', 'fastapi', 'httpx', 'uvicorn')])"
    )
    command = [sys.executable, "-c", code]
    out = subprocess.run(command, capture_output=True, text=True, check=True)  # noqa: S603
    assert out.stdout.strip() == "[]"


def test_importing_resilient_does_not_import_the_asgi_package() -> None:
    code = "import sys, resilient; print(sorted(m for m in sys.modules if 'asgi' in m))"
    command = [sys.executable, "-c", code]
    out = subprocess.run(command, capture_output=True, text=True, check=True)  # noqa: S603
    assert out.stdout.strip() == "[]"


def test_error_tree() -> None:
    assert issubclass(resilient.CircuitOpenError, resilient.RejectedError)
    assert issubclass(resilient.BulkheadFullError, resilient.RejectedError)
    assert issubclass(resilient.RateLimitedError, resilient.RejectedError)
    assert issubclass(resilient.RejectedError, resilient.ResilienceError)
    assert issubclass(resilient.TimeoutExceededError, resilient.ResilienceError)
    assert issubclass(resilient.TimeoutExceededError, TimeoutError)
    err = resilient.RateLimitedError("slow down", retry_after=1.5)
    assert err.retry_after == 1.5


def test_version() -> None:
    assert isinstance(resilient.__version__, str)


def test_installed_package_is_complete() -> None:
    # Run against the built wheel in CI: a file left out of the package fails here.
    assert importlib.resources.files("resilient").joinpath("py.typed").is_file()
    assert importlib.metadata.version("resilient-kit") == resilient.__version__


def test_instrumentation_package_surface() -> None:
    # The OpenTelemetry wing, as stamina's `instrumentation/`: loaded only when used,
    # and the same objects as `resilient.instrument` and `resilient.Instrumentation`.
    import resilient.instrumentation  # noqa: PLC0415

    assert resilient.instrumentation.__all__ == ["Instrumentation", "instrument"]
    assert resilient.instrumentation.instrument is resilient.instrument
    assert resilient.instrumentation.Instrumentation is resilient.Instrumentation
    assert resilient.Instrumentation.__module__ == "resilient"
    assert "instrument" in dir(resilient)
    assert "Timeout" in dir(resilient)


def test_chaos_module_surface() -> None:
    import resilient.chaos  # noqa: PLC0415 -- an extra the other tests need not load

    # Sorted as ruff sorts it (RUF022): constants first.
    names = resilient.chaos.__all__
    assert names == sorted(names, key=lambda name: (not name.isupper(), name))
    for name in resilient.chaos.__all__:
        obj = getattr(resilient.chaos, name)
        if isinstance(obj, type):
            assert obj.__module__ == "resilient.chaos", name
    modules = [m.name for m in pkgutil.iter_modules(resilient.chaos.__path__)]
    assert all(name.startswith("_") for name in modules), modules


def test_import_resilient_does_not_load_chaos() -> None:
    code = "import sys, resilient; assert 'resilient.chaos' not in sys.modules"
    code += "; assert 'resilient._core._chaos' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)  # noqa: S603


@pytest.mark.parametrize("client", ["httpx", "requests"])
def test_http_client_module_surface(client: str) -> None:
    # issue 18: the two shells export the same names, their own class under their name.
    module = importlib.import_module(f"resilient.{client}")
    own = "ResilienceTransport" if client == "httpx" else "ResilienceAdapter"
    assert module.__all__ == sorted(["HTTPStatusFailure", "HostMetrics", own, "is_failure_status"])
    assert getattr(module, own).__module__ == f"resilient.{client}"
    assert (
        module.HTTPStatusFailure
        is importlib.import_module("resilient._http._classify").HTTPStatusFailure
    )
