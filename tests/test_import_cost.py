"""What `import resilient` loads: only what a sync breaker needs (issue 14).

The OpenTelemetry wing, redis (issue 15), tenacity, asyncio, anyio and wrapt load when
first used. The check is on `sys.modules` in a fresh interpreter, never on time
(`benchmarks/import_time.py` measures the time).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = (
    "opentelemetry",
    "tenacity",
    "asyncio",
    "anyio",
    "wrapt",
    "importlib.metadata",
    "redis",
    "httpx",
    "requests",
)


def loaded_after(code: str) -> list[str]:
    script = f"import sys\n{code}\nimport json; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(  # noqa: S603
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.splitlines()[-1])  # type: ignore[no-any-return]


def holding(code: str, name: str) -> list[str]:
    """Our modules in which ``name`` exists (was created or imported) after ``code``."""
    script = (
        f"import sys\n{code}\nimport json\n"
        "print(json.dumps(sorted(m for m, module in list(sys.modules.items())\n"
        f"    if m.startswith('resilient') and {name!r} in vars(module))))"
    )
    out = subprocess.run(  # noqa: S603
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.splitlines()[-1])  # type: ignore[no-any-return]


def heavy(modules: list[str]) -> list[str]:
    return [m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY)]


def test_import_resilient_loads_no_heavy_module() -> None:
    assert heavy(loaded_after("import resilient")) == []


def test_import_resilient_does_not_import_the_dashboard() -> None:
    # resilient.dashboard (issue 19) is optional: a page, a stream and anyio.
    assert [m for m in loaded_after("import resilient") if "dashboard" in m] == []


def test_the_dashboard_imports_no_opentelemetry() -> None:
    # It reads the same counts as the OpenTelemetry instruments (_policies._outcomes),
    # without the otel extra.
    loaded = loaded_after("import resilient.dashboard\nresilient.dashboard.app()")
    assert [m for m in loaded if m.startswith(("opentelemetry", "resilient.instrumentation"))] == []


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
        ("resilient.CallFailed", "resilient._core._records"),
        ("resilient.Event", "resilient._core._records"),
        ("import resilient.testing", "resilient._core._records"),
        ("resilient.CircuitBreaker('b').metrics()", "resilient._core._snapshots"),
        ("resilient.WindowSnapshot", "resilient._core._snapshots"),
        ("import resilient.redis", "redis"),
        ("import resilient.dashboard", "resilient.dashboard._stream"),
        ("import resilient.httpx", "httpx"),
        ("import resilient.requests", "requests"),
    ],
)
def test_the_rest_loads_on_first_use(code: str, loaded: str) -> None:
    assert loaded in loaded_after(f"import resilient\n{code}")


def test_event_records_are_created_only_when_something_listens_or_trips() -> None:
    # Building ten frozen dataclasses costs more than the rest of the breaker: a sync
    # breaker that nobody listens to and that never changes state never needs them.
    code = (
        "import resilient\n"
        "breaker = resilient.CircuitBreaker('b')\n"
        "assert breaker.call(int, '1') == 1\n"
        "breaker.metrics()\n"
    )
    assert holding(code, "CallFailed") == []
    assert holding(code, "StateTransition") == []


def test_a_first_transition_in_a_fresh_process_is_logged_and_reported() -> None:
    # The records are created on the first transition, inside the breaker: that path
    # must work in a process where nothing loaded them before.
    code = (
        "import logging, resilient\n"
        "seen = []\n"
        "class Keep(logging.Handler):\n"
        "    def emit(self, record):\n"
        "        seen.append(record.getMessage())\n"
        "logging.getLogger('resilient').addHandler(Keep())\n"
        "logging.getLogger('resilient').setLevel(logging.INFO)\n"
        "breaker = resilient.CircuitBreaker('b', minimum_calls=1)\n"
        "try:\n"
        "    breaker.call(int, 'x')\n"
        "except ValueError:\n"
        "    pass\n"
        "assert breaker.state is resilient.CircuitState.OPEN, breaker.state\n"
        "assert seen and 'closed -> open' in seen[0], seen\n"
        "events = []\n"
        "breaker.add_listener(events.append)\n"
        "breaker.reset()\n"
        "assert type(events[0]) is resilient.StateTransition, events\n"
    )
    assert "resilient._core._records" in loaded_after(code)


def test_import_resilient_creates_no_dataclass() -> None:
    # Each frozen dataclass compiles its generated methods when created: the snapshots
    # (metrics()) and event records wait until they are used, so `dataclasses` (and the
    # classes) are left out of `import resilient` and of a breaker's calls.
    code = (
        "import resilient\n"
        "breaker = resilient.CircuitBreaker('b')\n"
        "assert breaker.call(int, '1') == 1\n"
    )
    assert "dataclasses" not in loaded_after(code)


def test_durations_given_as_numbers_load_no_datetime() -> None:
    # A timedelta can only exist once `datetime` is imported; numbers need no module.
    code = (
        "import resilient\n"
        "breaker = resilient.CircuitBreaker(\n"
        "    'b', open_duration=5.0, slow_call_duration=1, window=resilient.TimeWindow(10)\n"
        ")\n"
        "assert breaker.call(int, '1') == 1\n"
    )
    assert "datetime" not in loaded_after(code)


def test_an_unknown_name_is_still_an_attribute_error() -> None:
    import resilient  # noqa: PLC0415

    with pytest.raises(AttributeError, match="no attribute 'NoSuchPolicy'"):
        resilient.NoSuchPolicy  # noqa: B018


def test_the_requests_adapter_loads_no_async_backend_nor_httpx() -> None:
    # A sync requests user pays for requests and the sync adapters only (issue 18).
    loaded = loaded_after("import resilient.requests")
    assert [m for m in loaded if m.split(".")[0] in {"anyio", "asyncio", "httpx", "trio"}] == []
