"""Coalesce: concurrent identical calls share one call in flight (issue 19).

Callers are lined up without sleeping: the function blocks on an event until every
follower has joined, which a listener of ``CallCoalesced`` (emitted as each joins)
tells.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable
from typing import Any

import anyio
import pytest

from resilient import CallCoalesced, Coalesce, Registry
from resilient.testing import capture_events

JOIN_LIMIT = 30.0  # seconds a thread may take to finish before the test fails (a hang)


class Boom(Exception):
    pass


class Interrupt(BaseException):
    """Stands for KeyboardInterrupt without disturbing the test runner."""


class Uncopyable(Exception):
    def __init__(self, *, code: int) -> None:  # keyword-only: copy.copy cannot rebuild it
        super().__init__()
        self.code = code


def followers_joined(policy: Coalesce, count: int) -> threading.Event:
    """An event set once ``count`` followers have joined a flight of ``policy``."""
    joined = threading.Event()
    seen = [0]
    lock = threading.Lock()

    def listen(event: object) -> None:
        if isinstance(event, CallCoalesced):
            with lock:
                seen[0] += 1
                if seen[0] >= count:
                    joined.set()

    policy.add_listener(listen)
    return joined


def run_threads(target: Callable[[], Any], count: int) -> list[Any]:
    """Run ``target`` in ``count`` threads; their results or exceptions, in order."""
    return run_each([target] * count)


def run_each(targets: list[Callable[[], Any]]) -> list[Any]:
    """Run each target in a thread of its own; their results or exceptions, in order."""
    out: list[Any] = [None] * len(targets)

    def one(i: int) -> None:
        try:
            out[i] = ("ok", targets[i]())
        except BaseException as exc:
            out[i] = ("error", exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(targets))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(JOIN_LIMIT)
        assert not thread.is_alive(), "a caller hung"
    return out


# -- sync ------------------------------------------------------------------------------


def test_concurrent_identical_calls_share_one_call() -> None:
    coalesce = Coalesce(name="users")
    joined = followers_joined(coalesce, 9)
    calls: list[int] = []
    result = object()

    @coalesce
    def get(user: int) -> object:
        calls.append(user)
        assert joined.wait(JOIN_LIMIT)
        return result

    outcomes = run_threads(lambda: get(7), 10)
    assert calls == [7]
    assert all(kind == "ok" and value is result for kind, value in outcomes)
    m = coalesce.metrics()
    assert (m.leaders, m.followers, m.in_flight, m.failed, m.abandoned) == (1, 9, 0, 0, 0)


def test_different_arguments_run_their_own_calls() -> None:
    coalesce = Coalesce()
    calls: list[tuple[int, str]] = []

    @coalesce
    def get(a: int, b: str = "x") -> str:
        calls.append((a, b))
        return f"{a}{b}"

    assert [get(1), get(2), get(1, b="y"), get(1, "y")] == ["1x", "2x", "1y", "1y"]
    assert len(calls) == 4  # one after the other: nothing in flight to share


def test_a_settled_flight_is_not_a_cache() -> None:
    coalesce = Coalesce()
    calls = []

    @coalesce
    def get() -> int:
        calls.append(1)
        return len(calls)

    assert (get(), get()) == (1, 2)
    assert coalesce.metrics().leaders == 2


def test_keyword_order_does_not_matter() -> None:
    coalesce = Coalesce()
    joined = followers_joined(coalesce, 1)
    calls: list[dict[str, int]] = []

    @coalesce
    def get(**kw: int) -> str:
        calls.append(kw)
        assert joined.wait(JOIN_LIMIT)
        return "v"

    outcomes = run_each([lambda: get(x=1, y=2), lambda: get(y=2, x=1)])
    assert outcomes == [("ok", "v"), ("ok", "v")]
    assert len(calls) == 1


def test_the_function_is_part_of_the_default_key() -> None:
    coalesce = Coalesce()
    release = threading.Event()
    started = threading.Event()

    @coalesce
    def a(x: int) -> str:
        started.set()
        assert release.wait(JOIN_LIMIT)
        return "a"

    @coalesce
    def b(x: int) -> str:
        return "b"

    thread = threading.Thread(target=a, args=(1,))
    thread.start()
    assert started.wait(JOIN_LIMIT)
    assert b(1) == "b"  # at once: a(1) in flight is another function's call
    release.set()
    thread.join(JOIN_LIMIT)
    assert coalesce.metrics().followers == 0


def test_every_waiter_gets_the_exception_the_leader_its_own_and_the_others_copies() -> None:
    coalesce = Coalesce()
    joined = followers_joined(coalesce, 4)
    raised: list[Boom] = []

    @coalesce
    def get() -> None:
        assert joined.wait(JOIN_LIMIT)
        error = Boom("down", 503)
        raised.append(error)
        raise error

    outcomes = run_threads(get, 5)
    errors = [value for kind, value in outcomes if kind == "error"]
    assert len(errors) == 5
    assert all(type(e) is Boom and e.args == ("down", 503) for e in errors)
    # The leader raised the object itself; each follower its own copy.
    assert sum(e is raised[0] for e in errors) == 1
    assert len({id(e) for e in errors}) == 5
    assert coalesce.metrics().failed == 1


def test_tracebacks_do_not_grow_with_the_number_of_waiters() -> None:
    coalesce = Coalesce()
    joined = followers_joined(coalesce, 19)

    @coalesce
    def get() -> None:
        assert joined.wait(JOIN_LIMIT)
        raise Boom

    def depth(exc: BaseException) -> int:
        tb, n = exc.__traceback__, 0
        while tb is not None:
            tb, n = tb.tb_next, n + 1
        return n

    errors = [value for _, value in run_threads(get, 20)]
    assert max(depth(e) for e in errors) <= 8  # each its own frames, not everyone's


def test_an_exception_that_cannot_be_copied_is_shared() -> None:
    coalesce = Coalesce()
    joined = followers_joined(coalesce, 2)

    @coalesce
    def get() -> None:
        assert joined.wait(JOIN_LIMIT)
        raise Uncopyable(code=7)

    errors = [value for _, value in run_threads(get, 3)]
    assert all(isinstance(e, Uncopyable) and e.code == 7 for e in errors)


def test_an_interrupted_leader_raises_its_interrupt_and_a_follower_runs_the_call() -> None:
    coalesce = Coalesce()
    joined = followers_joined(coalesce, 3)
    calls = []

    @coalesce
    def get() -> str:
        calls.append(1)
        if len(calls) == 1:
            assert joined.wait(JOIN_LIMIT)
            raise Interrupt
        return "second"

    outcomes = run_threads(get, 4)
    kinds = sorted(kind for kind, _ in outcomes)
    assert kinds == ["error", "ok", "ok", "ok"]
    assert [type(v) for k, v in outcomes if k == "error"] == [Interrupt]
    assert {v for k, v in outcomes if k == "ok"} == {"second"}
    m = coalesce.metrics()
    assert (m.abandoned, m.in_flight) == (1, 0)
    # The followers started over: one led a new flight, which the others joined if
    # they came back before it ended (else they led their own).
    assert len(calls) == m.leaders
    assert 2 <= m.leaders <= 4


@pytest.mark.parametrize("raised", [Boom, Interrupt, SystemExit])
def test_a_key_function_that_raises_leaves_no_flight(raised: type[BaseException]) -> None:
    state = {"raise": True}

    def key(user: int) -> int:
        if state["raise"]:
            raise raised
        return user

    coalesce = Coalesce(key=key)
    get = coalesce(lambda user: user * 2)
    with pytest.raises(raised):
        get(1)
    state["raise"] = False
    assert get(1) == 2
    assert coalesce.metrics().in_flight == 0


def test_a_key_function_names_the_call_across_functions() -> None:
    coalesce = Coalesce(key=lambda user, **_: user)
    joined = followers_joined(coalesce, 1)
    calls = []

    in_first = threading.Event()

    def first(user: int) -> str:
        calls.append("first")
        in_first.set()
        assert joined.wait(JOIN_LIMIT)
        return "first"

    def second(user: int, verbose: bool = False) -> str:
        calls.append("second")
        return "second"

    def lead() -> str:
        return coalesce.call(first, 5)

    def follow() -> str:
        assert in_first.wait(JOIN_LIMIT)  # the leader's flight is in the table
        return coalesce.call(second, 5, verbose=True)

    assert run_each([lead, follow]) == [("ok", "first"), ("ok", "first")]
    assert calls == ["first"]


def test_unhashable_arguments_are_a_type_error_naming_them() -> None:
    get = Coalesce()(lambda items, *, flags=None: items)
    with pytest.raises(TypeError, match=r"positional argument 0 \(list\).*key="):
        get([1, 2])
    with pytest.raises(TypeError, match=r"keyword argument 'flags' \(dict\)"):
        get(1, flags={})
    keyed = Coalesce(key=lambda items: items)(lambda items: items)
    with pytest.raises(TypeError, match="key= returned list"):
        keyed([1])


def test_events_name_the_key_and_the_waiting_callers() -> None:
    coalesce = Coalesce(name="c", key=lambda: "k")
    joined = followers_joined(coalesce, 2)

    @coalesce
    def get() -> int:
        assert joined.wait(JOIN_LIMIT)
        return 1

    with capture_events() as events:
        run_threads(get, 3)
    coalesced = [e for e in events if isinstance(e, CallCoalesced)]
    assert [(e.policy, e.kind, e.key) for e in coalesced] == [("c", "coalesce", "k")] * 2
    assert sorted(e.waiting for e in coalesced) == [2, 3]


def test_construction_is_checked() -> None:
    with pytest.raises(TypeError, match="key must be None or a callable"):
        Coalesce(key="user")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="name must be a str"):
        Coalesce(name=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Coalesce(lambda x: x)  # type: ignore[misc]  # key is keyword-only
    coalesce = Coalesce()
    with pytest.raises(TypeError, match="needs the call's arguments"), coalesce:
        pass
    assert "Coalesce" in repr(coalesce)


def test_the_registry_builds_them_by_name() -> None:
    registry = Registry()
    coalesce = registry.coalesce("users")
    assert registry.coalesce("users") is coalesce
    assert coalesce.name == "users"
    cache = registry.cache("users-cache", ttl=5, max_entries=10)
    assert (cache.ttl, cache.max_entries, cache.name) == (5.0, 10, "users-cache")
    registry.configure({"c2": {"kind": "cache", "ttl": 1.5}, "k2": {"kind": "coalesce"}})
    assert registry.get("c2").kind == "cache"
    assert registry.snapshot()["k2"]["leaders"] == 0
    assert registry.snapshot()["c2"]["hits"] == 0


# -- async -----------------------------------------------------------------------------


async def test_concurrent_identical_tasks_share_one_call() -> None:
    coalesce = Coalesce()
    joined = followers_joined(coalesce, 49)
    calls: list[int] = []
    release = anyio.Event()

    @coalesce
    async def get(user: int) -> list[int]:
        calls.append(user)
        await release.wait()
        return calls

    results: list[object] = []

    async def one() -> None:
        results.append(await get(3))

    async with anyio.create_task_group() as tg:
        for _ in range(50):
            tg.start_soon(one)
        while not joined.is_set():
            await anyio.lowlevel.checkpoint()
        release.set()
    assert calls == [3]
    assert len(results) == 50
    assert all(r is calls for r in results)
    assert coalesce.metrics().in_flight == 0


async def test_the_leader_cancelled_the_call_goes_on_for_the_others() -> None:
    coalesce = Coalesce()
    joined = followers_joined(coalesce, 1)
    release = anyio.Event()
    calls = []

    @coalesce
    async def get() -> str:
        calls.append(1)
        await release.wait()
        return "done"

    got: list[str] = []
    async with anyio.create_task_group() as tg:
        leader_scope = anyio.CancelScope()

        async def leader() -> None:
            with leader_scope:
                await get()
            got.append("leader cancelled")

        async def follower() -> None:
            got.append(await get())

        tg.start_soon(leader)
        await anyio.lowlevel.checkpoint()
        tg.start_soon(follower)
        while not joined.is_set():
            await anyio.lowlevel.checkpoint()
        leader_scope.cancel()
        await anyio.lowlevel.checkpoint()
        release.set()
    assert sorted(got) == ["done", "leader cancelled"]
    assert calls == [1]
    assert coalesce.metrics().abandoned == 0


async def test_when_every_waiter_is_cancelled_the_call_is_cancelled() -> None:
    coalesce = Coalesce()
    joined = followers_joined(coalesce, 2)
    started = anyio.Event()
    ended = anyio.Event()
    seen: list[str] = []

    @coalesce
    async def get() -> None:
        started.set()
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            seen.append("cancelled")
            raise
        finally:
            ended.set()

    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(get)
            await started.wait()
            while not joined.is_set():
                await anyio.lowlevel.checkpoint()
            scope.cancel()
    with anyio.fail_after(JOIN_LIMIT):
        await ended.wait()
    assert seen == ["cancelled"]
    m = coalesce.metrics()
    assert (m.in_flight, m.abandoned, m.leaders) == (0, 1, 1)


async def test_a_new_caller_after_everyone_left_starts_a_new_flight() -> None:
    coalesce = Coalesce()
    started = anyio.Event()

    @coalesce
    async def get(block: bool) -> str:
        if block:
            started.set()
            await anyio.sleep_forever()
        return "fresh"

    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:
            tg.start_soon(get, True)
            await started.wait()
            scope.cancel()
    assert await get(False) == "fresh"


async def test_async_waiters_get_the_exception_and_copies() -> None:
    coalesce = Coalesce()
    joined = followers_joined(coalesce, 2)
    release = anyio.Event()

    @coalesce
    async def get() -> None:
        await release.wait()
        raise Boom("x")

    errors: list[BaseException] = []

    async def one() -> None:
        try:
            await get()
        except Boom as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(one)
        while not joined.is_set():
            await anyio.lowlevel.checkpoint()
        release.set()
    assert len(errors) == 3
    assert len({id(e) for e in errors}) == 3
    assert all(e.args == ("x",) for e in errors)


async def test_an_interrupt_in_an_async_call_is_the_leaders_and_followers_start_over() -> None:
    coalesce = Coalesce()
    joined = followers_joined(coalesce, 1)
    release = anyio.Event()
    calls = []

    @coalesce
    async def get() -> str:
        calls.append(1)
        if len(calls) == 1:
            await release.wait()
            raise Interrupt
        return "again"

    got: list[object] = []

    async def leader() -> None:
        try:
            await get()
        except Interrupt:
            got.append("interrupt")

    async def follower() -> None:
        got.append(await get())

    async with anyio.create_task_group() as tg:
        tg.start_soon(leader)
        await anyio.lowlevel.checkpoint()
        tg.start_soon(follower)
        while not joined.is_set():
            await anyio.lowlevel.checkpoint()
        release.set()
    assert sorted(map(str, got)) == ["again", "interrupt"]
    assert coalesce.metrics().abandoned == 1


REQUEST = contextvars.ContextVar("request", default="none")


async def test_the_call_runs_in_the_leaders_context() -> None:
    coalesce = Coalesce()

    @coalesce
    async def get() -> str:
        return REQUEST.get()

    REQUEST.set("leader")
    assert await get() == "leader"


async def test_sync_and_async_calls_never_share_a_flight() -> None:
    coalesce = Coalesce(key=lambda: "same")
    release = threading.Event()
    joined = followers_joined(coalesce, 1)

    def sync_get() -> str:
        assert release.wait(JOIN_LIMIT)
        return "sync"

    async def async_get() -> str:
        return "async"

    thread = threading.Thread(target=lambda: coalesce.call(sync_get))
    thread.start()
    assert await coalesce.call_async(async_get) == "async"  # not waiting for the thread
    release.set()
    thread.join(JOIN_LIMIT)
    assert not joined.is_set()
    assert coalesce.metrics().leaders == 2
