"""Simulations of AdaptiveThrottle and Hedge in virtual time: seeded, exact, in seconds.

Usage::

    python benchmarks/throttle_hedge_sim.py [--seed 1] [--chart]

* **Throttle.** A client offers 100 calls a second to a dependency for ten minutes of
  virtual time (a ``ManualClock``); the last two minutes are measured. Two dependency
  models: one that can *accept at most C calls a second* and refuses the rest (an
  overloaded server: its failure rate without a throttle is ``1 - C/100``), and one that
  refuses each call *independently* with probability ``f`` (a broken replica). The table
  shows how much the client sheds, the load that still reaches the dependency, and what
  it accepts.
* **Hedge.** Sequential calls to a dependency whose attempts take 8-12 ms, except that
  one attempt in 20 stalls for 200 ms more (a GC pause, a slow replica), independently
  per attempt. Each delay setting is measured over 4,000 calls in virtual time (an
  asyncio loop whose clock jumps to the next timer), with a budget that allows it all:
  the table shows p50, p99 and the extra load (extra attempts per call).
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path
from typing import Any

import anyio

from resilient import AdaptiveThrottle, Hedge, RetryBudget, ThrottledError
from resilient.testing import ManualClock, VirtualTimeLoop

RATE = 100  # calls offered per second
MINUTES = 10


class RefusedError(Exception):
    pass


# -- throttle ------------------------------------------------------------------------------


def throttle_run(seed: int, accept: Any) -> tuple[float, float, float]:
    """(shed fraction, dependency load / offered, accepted / offered) over the last 2 min."""
    clock = ManualClock()
    throttle = AdaptiveThrottle(clock=clock, random=random.Random(seed))
    offered = shed = sent = accepted = 0
    measure_from = (MINUTES - 2) * 60 * RATE
    for n in range(MINUTES * 60 * RATE):
        clock.advance(1 / RATE)
        measuring = n >= measure_from
        try:
            throttle.call(accept, clock.monotonic())
            ok = True
        except ThrottledError:
            shed += measuring
            ok = None
        except RefusedError:
            ok = False
        offered += measuring
        if ok is not None:
            sent += measuring
            accepted += measuring and ok
    return shed / offered, sent / offered, accepted / offered


def capacity(per_second: int) -> Any:
    """A dependency that accepts at most ``per_second`` calls in each second."""
    seen: dict[int, int] = {}

    def call(now: float) -> str:
        second = int(now)
        seen[second] = seen.get(second, 0) + 1
        if seen[second] > per_second:
            raise RefusedError
        return "ok"

    return call


def independent(failure: float, rng: random.Random) -> Any:
    def call(now: float) -> str:
        if rng.random() < failure:
            raise RefusedError
        return "ok"

    return call


# -- hedge ---------------------------------------------------------------------------------


class LoopClock:
    """The event loop's (virtual) time, for the budget."""

    def monotonic(self) -> float:
        return anyio.current_time()

    def sleep(self, seconds: float) -> None:
        raise NotImplementedError

    async def asleep(self, seconds: float) -> None:
        await anyio.sleep(seconds)


CALLS = 4000


def hedge_run(seed: int, delay: Any) -> tuple[float, float, float]:
    """(p50 ms, p99 ms, extra attempts per call) for one delay setting (None: no hedge)."""
    rng = random.Random(seed)

    async def attempt() -> str:
        seconds = rng.uniform(0.008, 0.012) + (0.2 if rng.random() < 0.05 else 0.0)
        await anyio.sleep(seconds)
        return "ok"

    async def main() -> tuple[float, float, float]:
        budget = RetryBudget(min_retries_per_second=1e6, clock=LoopClock())
        hedge = None if delay is None else Hedge(delay=delay, budget=budget)
        times = []
        for _ in range(CALLS):
            start = anyio.current_time()
            if hedge is None:
                await attempt()
            else:
                await hedge.call_async(attempt)
            times.append(anyio.current_time() - start)
        times.sort()
        extra = hedge.metrics().hedges / CALLS if hedge is not None else 0.0
        return times[CALLS // 2] * 1000, times[int(CALLS * 0.99)] * 1000, extra

    result: tuple[float, float, float] = anyio.run(
        main, backend="asyncio", backend_options={"loop_factory": VirtualTimeLoop}
    )
    return result


ThrottleRow = tuple[str, str, float, float, float, float]  # model, label, f, shed, sent, ok
HedgeRow = tuple[str, float, float, float]  # label, p50, p99, extra


def throttle_rows(seed: int) -> list[ThrottleRow]:
    """Both dependency models at several failure rates: (shed, sent, accepted) for each."""
    rows: list[ThrottleRow] = []
    for c in (100, 75, 50, 25, 10, 0):
        shed, sent, ok = throttle_run(seed, capacity(c))
        rows.append(("capacity", f"accepts {c}/s", 1 - c / RATE, shed, sent, ok))
    for f in (0.1, 0.3, 0.5, 0.6, 0.8, 1.0):
        shed, sent, ok = throttle_run(seed, independent(f, random.Random(seed + 1)))
        rows.append(("random", f"refuses {f:.0%} at random", f, shed, sent, ok))
    return rows


def hedge_rows(seed: int) -> list[HedgeRow]:
    """p50, p99 and extra load for no hedge and each delay setting."""
    rows: list[HedgeRow] = []
    for delay in (None, 0.005, 0.015, 0.03, 0.1, "p90", "p95"):
        p50, p99, extra = hedge_run(seed, delay)
        label = (
            "no hedge"
            if delay is None
            else (delay if isinstance(delay, str) else f"{delay * 1000:g} ms")
        )
        rows.append((label, p50, p99, extra))
    return rows


def chart(
    throttled: list[ThrottleRow], hedged: list[HedgeRow], throttle_png: str, hedge_png: str
) -> None:
    """The two figures of docs/throttle.md and docs/hedge.md."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, ax = plt.subplots(figsize=(7, 4.2))
    styles = {"capacity": ("overloaded (accepts C/s)", "o"), "random": ("broken replica", "s")}
    for model, (title, marker) in styles.items():
        rows = sorted((r for r in throttled if r[0] == model), key=lambda r: r[2])
        rates = [r[2] * 100 for r in rows]
        ax.plot(rates, [r[3] * 100 for r in rows], marker=marker, label=f"shed locally, {title}")
        ax.plot(
            rates,
            [r[4] * 100 for r in rows],
            marker=marker,
            linestyle="--",
            label=f"load on the dependency, {title}",
        )
    ax.plot([0, 100], [0, 100], color="grey", linewidth=0.8, linestyle=":", label="y = x")
    ax.set_xlabel("dependency failure rate without a throttle (%)")
    ax.set_ylabel("% of offered calls")
    ax.set_title("AdaptiveThrottle (K=2): what it sheds, what still reaches the dependency")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(throttle_png, dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for label, _p50, p99, extra in hedged:
        ax.scatter(extra * 100, p99, s=40)
        ax.annotate(
            label, (extra * 100, p99), textcoords="offset points", xytext=(6, 4), fontsize=8
        )
    ax.set_xlabel("extra load: hedged attempts per call (%)")
    ax.set_ylabel("p99 latency (ms)")
    ax.set_title("Hedge: p99 against extra load, by delay (5% of attempts stall 200 ms)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(hedge_png, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--chart",
        action="store_true",
        help="also write docs/img/throttle.png and docs/img/hedge.png",
    )
    args = parser.parse_args()
    seed = args.seed

    throttled = throttle_rows(seed)
    print("AdaptiveThrottle (k=2), 100 calls/s offered, last 2 of 10 minutes")
    print("| dependency | failure rate unthrottled | shed locally | load on it | accepted |")
    print("|---|---|---|---|---|")
    for _model, label, f, shed, sent, ok in throttled:
        print(f"| {label} | {f:.0%} | {shed:.1%} | {sent:.1%} | {ok:.1%} |")

    hedged = hedge_rows(seed)
    print()
    print(f"Hedge (max_hedged=1), {CALLS} calls; attempts 8-12 ms, 5% stall 200 ms more")
    print("| delay | p50 | p99 | extra load |")
    print("|---|---|---|---|")
    for label, p50, p99, extra in hedged:
        print(f"| {label} | {p50:.1f} ms | {p99:.1f} ms | {extra:.1%} |")

    if args.chart:
        img = Path(__file__).resolve().parent.parent / "docs" / "img"
        chart(throttled, hedged, str(img / "throttle.png"), str(img / "hedge.png"))
        print(f"charts written to {img}/throttle.png and {img}/hedge.png")


if __name__ == "__main__":
    main()
