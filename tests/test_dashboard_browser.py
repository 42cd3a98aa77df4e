"""The dashboard's page in a real browser: headless Chromium, a real uvicorn server.

The page is served below a Starlette mount point, loaded without its trailing slash (so
its relative URLs are tested too), and must show a breaker forced open within a second.
Without Chromium on PATH the test is skipped with the reason; under
``RESILIENT_REQUIRE_BROWSER=1`` (CI) a missing browser fails it. With
``RESILIENT_WRITE_SCREENSHOT=1`` it writes ``docs/img/dashboard.png``.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.routing import Mount

from cdp import Page, chromium, find_browser
from resilient import Registry, dashboard

SCREENSHOT = Path(__file__).resolve().parent.parent / "docs" / "img" / "dashboard.png"
MOUNT = "/ops/dashboard"


@pytest.fixture
def browser() -> str:
    found = find_browser()
    if found is None:
        reason = "no Chromium on PATH (Debian: apt-get install chromium)"
        if os.environ.get("RESILIENT_REQUIRE_BROWSER") == "1":
            pytest.fail(f"RESILIENT_REQUIRE_BROWSER=1 and {reason}")
        pytest.skip(reason)
    return found


def services() -> Registry:
    reg = Registry()
    reg.circuit_breaker(
        "payments", failure_rate_threshold=0.5, minimum_calls=10, slow_call_duration=0.5
    )
    reg.circuit_breaker("inventory", minimum_calls=20, slow_call_duration=0.5)
    reg.bulkhead("database", max_concurrent=8)
    reg.rate_limiter("partner-api", rate=50)
    reg.retry("quotes", attempts=3, wait=0)
    return reg


@pytest.fixture
def served() -> Iterator[tuple[Registry, str]]:
    reg = services()
    app = Starlette(routes=[Mount(MOUNT, app=dashboard.app(reg, interval=0.25))])
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app, log_level="warning", lifespan="off", ws="none", http="h11", timeout_graceful_shutdown=1
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        yield reg, f"http://127.0.0.1:{port}{MOUNT}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
    assert not thread.is_alive()


def poll(page: Page, expression: str, timeout: float) -> Any:
    """Evaluate ``expression`` in the page until it is truthy; its value, else fail."""
    deadline = time.monotonic() + timeout
    while True:
        value = page.evaluate(expression)
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"after {timeout} s, still false in the page: {expression}")
        time.sleep(0.01)  # between two DOM reads; the deadline is what the test asserts


def state_of(name: str) -> str:
    return f"document.querySelector('[data-policy=\"{name}\"]')?.dataset.state"


class Traffic:
    """Calls through the policies in a thread, so the page has figures to show."""

    def __init__(self, reg: Registry) -> None:
        self._reg = reg
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        payments = self._reg.circuit_breaker("payments")
        inventory = self._reg.circuit_breaker("inventory")
        database = self._reg.bulkhead("database")
        limiter = self._reg.rate_limiter("partner-api")
        n = 0
        while not self._stop.wait(0.004):  # about 250 rounds a second, for the sparklines
            n += 1
            for call in (payments.call, inventory.call, database.call, limiter.call):
                try:
                    call(_work, n)
                except Exception:  # noqa: S112 -- failures and rejections are the point
                    continue

    def __enter__(self) -> None:
        self._thread.start()

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def _work(n: int) -> int:
    time.sleep(0.0005 * (n % 4))  # latencies worth a quantile
    if n % 7 == 0:
        raise ConnectionError("flaky")
    return n


def test_the_page_shows_a_breaker_forced_open_within_a_second(
    browser: str, served: tuple[Registry, str]
) -> None:
    reg, url = served
    with chromium(browser) as page, Traffic(reg):
        page.call(
            "Emulation.setDeviceMetricsOverride",
            width=1100,
            height=640,
            deviceScaleFactor=1,
            mobile=False,
        )
        page.call("Page.navigate", url=url)  # no trailing slash: the page finds ./stream
        # Connected: the first snapshot drew every policy.
        assert poll(page, state_of("payments"), timeout=15) == "closed"
        assert poll(page, "document.querySelectorAll('.card').length === 5", timeout=5)
        assert poll(page, "document.getElementById('status').textContent === 'live'", 5)

        started = time.monotonic()
        reg.circuit_breaker("payments").force_open()
        card = "document.querySelector('[data-policy=\"payments\"]')"
        # The state and the highlight change in one step of the page's script.
        shown = f"{state_of('payments')} === 'forced_open' && {card}.classList.contains('flash')"
        assert poll(page, shown, timeout=1.0)
        assert time.monotonic() - started < 1.0
        log = page.evaluate("document.getElementById('log').textContent")
        assert "payments" in log
        assert "forced open" in log
        badge = "document.querySelector('[data-policy=\"payments\"] .state').textContent"
        assert page.evaluate(badge) == "forced open"

        # A few metrics events later, the figures and sparklines are filled in.
        rates = "document.querySelector('[data-policy=\"inventory\"] dd').textContent"
        assert poll(page, f"{rates}.endsWith('%')", timeout=5)
        if os.environ.get("RESILIENT_WRITE_SCREENSHOT") == "1":
            poll(page, "document.querySelectorAll('.card.flash').length === 0", timeout=5)
            time.sleep(6)  # a longer history in the sparklines, for the picture only
            page.screenshot(SCREENSHOT)
