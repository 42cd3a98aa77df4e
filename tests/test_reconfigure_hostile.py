"""reconfigure() against the hostile values of test_construction: checked as construction is.

For every public policy and every option ``reconfigure()`` may change, each hostile
value of ``test_construction.HOSTILE``: a value the constructor refuses, reconfigure
refuses too (``ValueError``/``TypeError`` naming the option) and the policy is left as
it was; a value the constructor accepts is either taken, after which the policy still
works (the same exercise as there), or refused naming the option (a fallback's handler
must stay sync or async).
"""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from resilient._policies._policy import CorePolicy
from test_construction import CASES, HOSTILE, _build


def _cases() -> list[Any]:
    cases = []
    for target, case in CASES.items():
        if not (inspect.isclass(target) and issubclass(target, CorePolicy)):
            continue
        try:
            sample = target(**case.base())
        except TypeError:  # pragma: no cover - a positional first option
            continue
        config = getattr(sample, "_config", None)
        if config is None:
            continue
        for option in sample._unpack_options(config):
            for label, value in HOSTILE:
                if (option, label) in case.skip:
                    continue
                ident = f"{target.__name__}-{option}-{label}"
                cases.append(pytest.param(target, option, value, id=ident))
    return cases


@pytest.mark.parametrize(("target", "option", "value"), _cases())
def test_a_hostile_value_is_checked_as_construction_checks_it(
    target: Any, option: str, value: Any
) -> None:
    try:
        _build(target, option, value)
    except (ValueError, TypeError):
        refused = True
    else:
        refused = False
    policy = target(**CASES[target].base())
    before = policy._config
    error: Exception | None = None
    try:
        policy.reconfigure(**{option: value})
    except (ValueError, TypeError) as exc:
        error = exc
    if error is not None:
        assert option in str(error), f"{target.__name__}.reconfigure({option}=...): {error}"
        assert policy._config is before  # nothing changed
        return
    assert not refused, f"{target.__name__}.reconfigure({option}=...) took a refused value"
    CASES[target].exercise(policy)
