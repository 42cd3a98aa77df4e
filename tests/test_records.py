"""Event records and the breaker's snapshots: frozen, slotted dataclasses (docs/events.md).

They are created on first use (``_core/_records.py``, ``_core/_snapshots.py``), not by
``import resilient``; what users may rely on stays the same however they were reached.
"""

from __future__ import annotations

import copy
import dataclasses
import pickle
import subprocess
import sys
from typing import Any

import pytest

import resilient
from resilient import CircuitState

SAMPLES: list[Any] = [
    resilient.Event("p", "circuit_breaker"),
    resilient.CallSucceeded("p", "circuit_breaker", 0.5),
    resilient.CallFailed("p", "circuit_breaker", ValueError("x"), None, None, slow=True),
    resilient.CallIgnored("p", "circuit_breaker", KeyError("k"), None),
    resilient.CallRejected("p", "bulkhead", resilient.BulkheadFullError("full")),
    resilient.StateTransition("p", "circuit_breaker", CircuitState.CLOSED, CircuitState.OPEN),
    resilient.CallTimedOut("p", "timeout", 1.5, abandoned=True),
    resilient.FallbackUsed("p", "fallback", None, 3),
    resilient.RetryScheduled("p", "retry", 1, 0.25, None, "again"),
    resilient.RetriesExhausted("p", "retry", 3, "attempts", None, "last"),
    resilient.WindowSnapshot(4, 1, 2, 1, 0.5),
    resilient.CircuitBreaker("snap").metrics(),
]


@pytest.mark.parametrize("record", SAMPLES, ids=lambda r: type(r).__name__)
def test_a_record_is_a_frozen_slotted_dataclass(record: Any) -> None:
    cls = type(record)
    assert dataclasses.is_dataclass(cls)
    assert cls.__module__ == "resilient"
    assert not hasattr(record, "__dict__")  # slotted
    name = dataclasses.fields(record)[0].name
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(record, name, None)
    changed = dataclasses.replace(record)
    assert changed == record
    assert hash(changed) == hash(record)
    assert changed is not record
    assert dataclasses.asdict(record).keys() == {f.name for f in dataclasses.fields(record)}
    assert repr(record).startswith(f"{cls.__qualname__}(")
    assert copy.copy(record) == record


@pytest.mark.parametrize(
    "record",
    [
        r
        for r in SAMPLES
        if not isinstance(r, (resilient.CallFailed, resilient.CallIgnored, resilient.CallRejected))
    ],
    ids=lambda r: type(r).__name__,
)
def test_a_record_pickles(record: Any) -> None:
    # (An exception compares by identity, so records holding one are left out.)
    assert pickle.loads(pickle.dumps(record)) == record  # noqa: S301


def test_a_record_subclasses_as_a_frozen_dataclass() -> None:
    @dataclasses.dataclass(frozen=True)
    class Mine(resilient.Event):
        extra: int = 0

    mine = Mine("p", "mine", extra=2)
    assert [f.name for f in dataclasses.fields(mine)] == ["policy", "kind", "extra"]
    with pytest.raises(TypeError, match="non-frozen"):
        dataclasses.dataclass(type("Thawed", (resilient.Event,), {}))


def test_events_re_exports_every_record() -> None:
    from resilient._core import _events, _records  # noqa: PLC0415

    assert set(_records.__all__) == _events._RECORDS
    for name in _records.__all__:
        assert getattr(_events, name) is getattr(resilient, name) is getattr(_records, name)
    with pytest.raises(AttributeError, match="NoSuchRecord"):
        _events.NoSuchRecord  # type: ignore[attr-defined]  # noqa: B018


def test_records_reached_first_through_a_listener_say_resilient() -> None:
    # In a fresh process the records' module is loaded by the breaker's first event,
    # never through `resilient.X`: reprs and pickles must still name `resilient`.
    code = (
        "import pickle, resilient\n"
        "events = []\n"
        "breaker = resilient.CircuitBreaker('b')\n"
        "breaker.add_listener(events.append)\n"
        "breaker.call(int, '1')\n"
        "snapshot = breaker.metrics()\n"
        "for record in (events[0], snapshot):\n"
        "    assert type(record).__module__ == 'resilient', type(record)\n"
        "    assert pickle.loads(pickle.dumps(record)) == record\n"
        "print('ok')\n"
    )
    out = subprocess.run(  # noqa: S603
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "ok"
