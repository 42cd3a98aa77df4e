"""What `import resilient` loads: only what a sync breaker needs (issue 14).

The OpenTelemetry wing, tenacity, asyncio, anyio and wrapt load when first used. The
check is on `sys.modules` in a fresh interpreter, never on time
(`benchmarks/import_time.py` measures the time).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("opentelemetry", "tenacity", "asyncio", "anyio", "wrapt", "importlib.metadata")


def loaded_after(code: str) -> list[str]:
    script = f"import sys\n{code}\nimport json; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(  # noqa: S603
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.splitlines()[-1])  # type: ignore[no-any-return]


def heavy(modules: list[str]) -> list[str]:
    return [m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY)]


def test_import_resilient_loads_no_heavy_module() -> None:
    assert heavy(loaded_after("import resilient")) == []


def test_import_resilient_loads_only_what_a_breaker_needs() -> None:
    def ours(code: str) -> set[str]:
        return {m for m in loaded_after(code) if m.startswith("resilient.")}

    assert ours("import resilient") == ours("import resilient._policies._breaker")


def test_a_sync_breaker_call_loads_no_heavy_module() -> None:
    code = (
        "import resilient\n"
        "breaker = resilient.CircuitBreaker('b')\n"
        "@breaker\n"
        "def f(x):\n"
        "    return x\n"
        "assert f(1) == 1\n"
        "assert resilient.Bulkhead(2).call(f, 2) == 2\n"
    )
    assert heavy(loaded_after(code)) == []


@pytest.mark.parametrize(
    ("code", "loaded"),
    [
        ("resilient.instrument", "opentelemetry"),
        ("resilient.Instrumentation", "opentelemetry"),
        ("resilient.Timeout", "anyio"),
        ("resilient.Retry", "resilient._policies._retry"),
        ("resilient.compose", "resilient._policies._compose"),
        ("resilient.default_registry", "resilient._policies._registry"),
    ],
)
def test_the_rest_loads_on_first_use(code: str, loaded: str) -> None:
    assert loaded in loaded_after(f"import resilient\n{code}")


def test_an_unknown_name_is_still_an_attribute_error() -> None:
    import resilient  # noqa: PLC0415

    with pytest.raises(AttributeError, match="no attribute 'NoSuchPolicy'"):
        resilient.NoSuchPolicy  # noqa: B018
