"""Real Redis servers for the tests of `resilient.redis`: no mocks, no fakes.

A session-wide `redis-server` from PATH on a free loopback port (no persistence), a
function-scoped one for the tests that kill and restart it, and a 3-node Cluster. Each
test gets its own namespace, so tests sharing the session server never see each
other's keys.

Without `redis-server` on PATH (or without the redis client) the tests here are skipped
with a one-line reason, unless RESILIENT_REQUIRE_REDIS=1 (as in CI): then they fail.
"""

from __future__ import annotations

import itertools
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis_servers import CLI, REQUIRED, SERVER, Server, free_port, need_server, redis

if redis is None and not REQUIRED:  # pragma: no cover - the test extra installs it
    # Nothing here can even be imported: leave the whole folder out.
    collect_ignore_glob = ["test_*.py"]


def pytest_collection_finish(session: pytest.Session) -> None:
    """Without a server the tests here are skipped: leave their package out of coverage.

    Otherwise a developer without redis-server would fail the coverage floor of the
    README's command over code nobody could run here; CI (RESILIENT_REQUIRE_REDIS=1)
    always measures it. pytest-cov reports from its combining Coverage object.
    """
    if (SERVER is not None and redis is not None) or REQUIRED:
        return
    plugin = session.config.pluginmanager.get_plugin("_cov")
    controller = getattr(plugin, "cov_controller", None)
    for name in ("cov", "combining_cov"):
        cov = getattr(controller, name, None)
        if cov is not None:
            cov.config.report_omit = [*(cov.config.report_omit or []), "*/resilient/redis/*"]


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A redis-server for the whole session (tests keep to their own namespace)."""
    need_server()
    server = Server(free_port(), tmp_path_factory.mktemp("redis"), unix=True)
    server.start()
    yield server
    server.kill()


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[Server]:
    """A redis-server of the test's own, to kill, slow down or restart."""
    need_server()
    server = Server(free_port(), tmp_path)
    server.start()
    yield server
    server.kill()


_namespaces = itertools.count()


@pytest.fixture
def namespace(request: pytest.FixtureRequest) -> str:
    """A namespace no other test uses."""
    return f"t{next(_namespaces)}-{request.node.name}"


@pytest.fixture
def client(redis_server: Server) -> Iterator[redis.Redis]:
    """A sync client of the session server, for the test to look at keys directly."""
    c = redis_server.client(decode_responses=True)
    yield c
    c.close()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Server]]:
    """Three redis-server nodes with --cluster-enabled, joined by redis-cli, all primaries."""
    need_server()
    if CLI is None:  # pragma: no cover - the Debian package ships both
        pytest.fail("redis-cli is not on PATH, needed to create the cluster")
    nodes: list[Server] = []
    try:
        for _ in range(3):
            port = free_port(bus=True)
            workdir = tmp_path_factory.mktemp(f"cluster{port}")
            node = Server(
                port,
                workdir,
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                str(workdir / "nodes.conf"),
                "--cluster-node-timeout",
                "2000",
            )
            node.start()
            nodes.append(node)
        subprocess.run(  # noqa: S603
            [
                CLI,
                "--cluster",
                "create",
                *(f"127.0.0.1:{n.port}" for n in nodes),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        deadline = time.monotonic() + 30
        for node in nodes:
            c = node.client(decode_responses=True)
            while c.cluster("info").get("cluster_state") != "ok":  # type: ignore[no-untyped-call]
                assert time.monotonic() < deadline, "the cluster did not come up"
                time.sleep(0.05)  # the cluster agreeing on its slots: only polling tells
            c.close()
        yield nodes
    finally:
        for node in nodes:
            node.kill()
