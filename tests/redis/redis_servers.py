"""Starting, killing and restarting real redis-server processes for the tests."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

REQUIRED = os.environ.get("RESILIENT_REQUIRE_REDIS") == "1"
SERVER = shutil.which("redis-server")
CLI = shutil.which("redis-cli")


def _major_version() -> int:
    if SERVER is None:
        return 0
    out = subprocess.run(  # noqa: S603
        [SERVER, "--version"], capture_output=True, text=True, check=False
    ).stdout
    digits = out.split("v=", 1)[-1].split(".", 1)[0]
    return int(digits) if digits.isdigit() else 0


# Redis 7 refuses DEBUG (the slow-server test's DEBUG SLEEP) unless told otherwise.
_DEBUG = ("--enable-debug-command", "local") if _major_version() >= 7 else ()

redis: Any
try:
    import redis
except ImportError:  # pragma: no cover - the test extra installs it
    redis = None


def need_server() -> str:
    """The path of redis-server, or skip (fail under RESILIENT_REQUIRE_REDIS=1)."""
    if redis is None:  # pragma: no cover
        pytest.fail("RESILIENT_REQUIRE_REDIS=1 but the redis client is not installed")
    if SERVER is None:
        reason = "redis-server is not on PATH (apt-get install redis-server to run these)"
        if REQUIRED:
            pytest.fail(f"RESILIENT_REQUIRE_REDIS=1 but {reason}")
        pytest.skip(reason)
    return SERVER


def free_port(*, bus: bool = False) -> int:
    """A free loopback port (and, for a Cluster node, its bus port + 10000 free too)."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if not bus:
            return port
        if port + 10000 < 65536:
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port + 10000))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free port")  # pragma: no cover


class Server:
    """One redis-server process on a fixed port; it can be killed and started again."""

    def __init__(self, port: int, workdir: Path, *extra: str, unix: bool = False) -> None:
        self.port = port
        self.workdir = workdir
        self.extra = extra
        self.proc: subprocess.Popen[bytes] | None = None
        # Also on a unix socket, for a forked child's connections (``unix_path``). In the
        # temporary directory, whose path is short: a socket's path is at most 107 bytes.
        self.unix_path: str | None = None
        if unix:
            self.unix_path = str(Path(tempfile.gettempdir()) / f"resilient-redis-{port}.sock")
            self.extra = (*extra, "--unixsocket", self.unix_path, "--unixsocketperm", "700")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = need_server()
        self.proc = subprocess.Popen(  # noqa: S603
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
                *_DEBUG,
                *self.extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, socket_timeout=1, socket_connect_timeout=1)
        deadline = time.monotonic() + 10
        try:
            while True:
                try:
                    client.ping()
                except redis.RedisError:
                    if self.proc.poll() is not None or time.monotonic() > deadline:
                        raise
                    time.sleep(0.02)  # a process starting: polling is the only way
                else:
                    return
        finally:
            client.close()

    def kill(self) -> None:
        """SIGKILL: the server vanishes mid-whatever, as a crashed host's does."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def client(self, **kwargs: object) -> redis.Redis:
        return redis.Redis(port=self.port, **kwargs)  # type: ignore[arg-type]
