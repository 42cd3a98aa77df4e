"""The issue-16 targets, read from one ``peers.py`` run: a PASS/FAIL line each.

Every line is a ratio between rows of the same run (the absolute figures move with the
VM's CPU speed; see ``docs/benchmarks.md``):

* CLOSED breaker overhead over circuitbreaker's: <= 0.33x sync, <= 0.35x awaited (and,
  run on Python 3.13 or later, at least 2.5x lower sync);
* rate limiter, admitted: within 1.5x of hyx's token bucket on asyncio (hyx has no lock:
  not thread-safe); cheaper than every thread-safe exact peer limiter
  (``peers_limiters.THREAD_SAFE_EXACT``), sync and awaited; and <= 0.7x the overhead of a
  baseline run given with ``--baseline`` (each run's overhead divided by circuitbreaker's
  CLOSED sync overhead in that run, so that the VM's speed cancels out);
* every rejection (OPEN breaker, rate limited, full bulkhead; sync and awaited): <= 3x a bare
  raise-and-catch (ns per call, the "bare raise" row) and cheaper per call than every
  peer's rejection in that scenario;
* the contended bulkhead lines come from ``contention.py``, the many-breakers line from
  ``scale.py``.
"""

from __future__ import annotations

import sys
from typing import Any

from peers import (
    ASYNC_CLOSED,
    ASYNC_OPEN,
    BULKHEAD_FULL_ASYNC,
    BULKHEAD_FULL_SYNC,
    RATE_ASYNC,
    RATE_REJECT_ASYNC,
    RATE_REJECT_SYNC,
    RATE_SYNC,
    SYNC_CLOSED,
    SYNC_OPEN,
)
from peers_limiters import THREAD_SAFE_EXACT

Target = tuple[str, bool | None, str]
CLOSED_LIMITS = ((SYNC_CLOSED, 0.33), (ASYNC_CLOSED, 0.35))
PY313_FACTOR = 2.5  # and on Python 3.13, at least 2.5x cheaper (a line of its own there)
HYX_LIMIT = 1.5
BASELINE_LIMIT = 0.7
RAISE_LIMIT = 3.0
REJECTIONS = (
    SYNC_OPEN,
    ASYNC_OPEN,
    RATE_REJECT_SYNC,
    RATE_REJECT_ASYNC,
    BULKHEAD_FULL_SYNC,
    BULKHEAD_FULL_ASYNC,
)


def _get(rows: list[dict[str, Any]], scenario: str, library: str) -> dict[str, Any] | None:
    return next((r for r in rows if r["scenario"] == scenario and r["library"] == library), None)


def _is_peer(library: str) -> bool:
    return not library.startswith(("bare", "resilient")) and "(reference)" not in library


def _normalized(rows: list[dict[str, Any]], scenario: str) -> float | None:
    """resilient's overhead in ``scenario`` over circuitbreaker's CLOSED sync overhead."""
    mine, yardstick = _get(rows, scenario, "resilient"), _get(rows, SYNC_CLOSED, "circuitbreaker")
    if mine is None or yardstick is None or not yardstick["overhead_ns"]:
        return None
    return float(mine["overhead_ns"]) / float(yardstick["overhead_ns"])


def targets(rows: list[dict[str, Any]], baseline: list[dict[str, Any]] | None) -> list[Target]:
    """The PASS/FAIL lines (None: a row it needs was not measured)."""
    out: list[Target] = []
    for scenario, limit in CLOSED_LIMITS:
        mine, theirs = _get(rows, scenario, "resilient"), _get(rows, scenario, "circuitbreaker")
        label = f"issue 16: {scenario} overhead <= {limit}x circuitbreaker's"
        if mine is None or theirs is None:
            out.append((label, None, "skipped"))
            continue
        ratio = mine["overhead_ns"] / theirs["overhead_ns"]
        out.append(
            (
                label,
                ratio <= limit,
                (
                    f"{ratio:.2f}x ({mine['overhead_ns']:,.0f} against "
                    f"{theirs['overhead_ns']:,.0f} ns)"
                ),
            )
        )

    if sys.version_info >= (3, 13):
        mine, theirs = (
            _get(rows, SYNC_CLOSED, "resilient"),
            _get(rows, SYNC_CLOSED, "circuitbreaker"),
        )
        label = f"issue 16: {SYNC_CLOSED} overhead >= {PY313_FACTOR}x lower than circuitbreaker's"
        if mine is None or theirs is None:
            out.append((label, None, "skipped"))
        else:
            factor = theirs["overhead_ns"] / mine["overhead_ns"]
            out.append((label, factor >= PY313_FACTOR, f"{factor:.2f}x on Python 3.13+"))

    mine, hyx = _get(rows, RATE_ASYNC, "resilient"), _get(rows, RATE_ASYNC, "hyx")
    label = f"issue 16: {RATE_ASYNC} overhead within {HYX_LIMIT}x hyx's token bucket"
    if mine is None or hyx is None:
        out.append((label, None, "skipped"))
    else:
        ratio = mine["overhead_ns"] / hyx["overhead_ns"]
        detail = f"{ratio:.2f}x ({mine['overhead_ns']:,.0f} against {hyx['overhead_ns']:,.0f} ns)"
        out.append((label, ratio <= HYX_LIMIT, detail))

    for scenario in (RATE_SYNC, RATE_ASYNC):
        mine = _get(rows, scenario, "resilient")
        peers = [r for r in rows if r["scenario"] == scenario and r["library"] in THREAD_SAFE_EXACT]
        label = f"issue 16: {scenario}: cheaper than every thread-safe exact peer limiter"
        if mine is None or not peers:
            out.append((label, None, "skipped"))
            continue
        best = min(peers, key=lambda r: r["overhead_ns"])
        out.append(
            (
                label,
                mine["overhead_ns"] < best["overhead_ns"],
                (
                    f"resilient {mine['overhead_ns']:,.0f} ns; cheapest peer {best['library']} "
                    f"{best['overhead_ns']:,.0f} ns"
                ),
            )
        )

    for scenario in (RATE_SYNC, RATE_ASYNC):
        label = f"issue 16: {scenario} overhead <= {BASELINE_LIMIT}x the baseline run's"
        now = _normalized(rows, scenario)
        before = None if baseline is None else _normalized(baseline, scenario)
        if now is None or before is None:
            mine = _get(rows, scenario, "resilient")
            today = "-" if mine is None else f"{mine['overhead_ns']:,.0f} ns"
            if baseline is None:
                why = "no --baseline given"
            else:
                why = "circuitbreaker's CLOSED sync row missing from this run or the baseline"
            shown = "" if now is None else f", {now:.2f}x circuitbreaker's CLOSED overhead"
            out.append((label, None, f"{why} (this run: {today}{shown})"))
            continue
        ratio = now / before
        detail = (
            f"{ratio:.2f}x ({now:.2f}x circuitbreaker's CLOSED overhead, baseline {before:.2f}x)"
        )
        out.append((label, ratio <= BASELINE_LIMIT, detail))

    for scenario in REJECTIONS:
        mine, floor = _get(rows, scenario, "resilient"), _get(rows, scenario, "bare raise")
        label = f"issue 16: {scenario} <= {RAISE_LIMIT:g}x a bare raise-and-catch"
        if mine is None or floor is None:
            out.append((label, None, "skipped"))
        else:
            ratio = mine["ns_per_call"] / floor["ns_per_call"]
            detail = (
                f"{ratio:.2f}x ({mine['ns_per_call']:,.0f} against "
                f"{floor['ns_per_call']:,.0f} ns per call)"
            )
            out.append((label, ratio <= RAISE_LIMIT, detail))
        peers = [r for r in rows if r["scenario"] == scenario and _is_peer(r["library"])]
        label = f"issue 16: {scenario} cheaper than every peer's rejection"
        if mine is None or not peers:
            out.append((label, None, "skipped"))
            continue
        best = min(peers, key=lambda r: r["ns_per_call"])
        out.append(
            (
                label,
                mine["ns_per_call"] < best["ns_per_call"],
                (
                    f"resilient {mine['ns_per_call']:,.0f} ns; cheapest peer {best['library']} "
                    f"{best['ns_per_call']:,.0f} ns per call"
                ),
            )
        )
    return out
