"""One script, one round trip, little else: commands packed once, connections lent lock-free.

A shared limiter's decision is a round trip to Redis, and the round trip is the floor:
what the client adds around it is the part we can cut. redis-py, for each command,
packs and encodes every argument, takes a connection from its pool under a lock (with
its own bookkeeping and, from version 7, observability hooks), parses the reply and
gives the connection back. For a limiter's ten-argument ``EVALSHA`` that work measured
about as much as the script's run on the server (see ``benchmarks/redis_bench.py``).

So for the connections the store made itself (a plain pool, see ``_clients.py``):

* the command is packed here, once per limiter and allowed wait, into the bytes that go
  on the wire (``pack()``); a decision sends those bytes as they are;
* connections are lent from a deque: ``pop()`` and ``append()`` are atomic, so taking
  one needs no lock; there are as many as calls were ever in flight at once;
* the connection classes are redis-py's own, with their timeouts (``op_timeout``), TLS,
  authentication and their handling of a broken connection (it disconnects itself and
  reconnects on its next use).

A forked child finds the deque empty: the parent's sockets are not its to use.
A Cluster client, or a client whose pool is of another kind (Sentinel's), goes through
redis-py as usual.
"""

from __future__ import annotations

import asyncio
import os
from collections import deque
from typing import Any

__all__ = ["AsyncWire", "Wire", "as_eval", "pack"]


def pack(*parts: str) -> bytes:
    """The RESP encoding of a command (``parts``: its name and its arguments, as str)."""
    return b"*%d\r\n" % len(parts) + b"".join(map(_bulk, parts))


def _bulk(text: str) -> bytes:
    data = text.encode()
    return b"$%d\r\n%s\r\n" % (len(data), data)


def as_eval(packed: bytes, sha: str, source: str) -> bytes:
    """``packed``, an ``EVALSHA`` of ``sha``, as the ``EVAL`` of ``source`` (after ``NOSCRIPT``)."""
    count_end = packed.index(b"\r\n") + 2
    rest = packed.index(sha.encode(), count_end) + len(sha) + 2
    return packed[:count_end] + _bulk("EVAL") + _bulk(source) + packed[rest:]


class _Lender:
    __slots__ = ("_idle", "_kwargs", "_make", "_pid")

    def __init__(self, pool: Any) -> None:
        self._make = pool.connection_class
        self._kwargs = dict(pool.connection_kwargs)
        self._idle: deque[Any] = deque()
        self._pid = os.getpid()

    def _take(self) -> Any:
        if self._pid != os.getpid():
            # A forked child: the parent's connections are dropped unused (a
            # redis-py connection shuts a socket down only in the process that made it).
            self._idle = deque()
            self._pid = os.getpid()
        try:
            return self._idle.pop()
        except IndexError:
            return self._make(**self._kwargs)

    def _drain(self) -> list[Any]:
        idle, self._idle = self._idle, deque()
        return list(idle)


class Wire(_Lender):
    """Sends packed commands on connections of a sync client's settings."""

    __slots__ = ()

    def call(self, packed: bytes) -> Any:
        """Send ``packed`` and return the reply (an error reply is raised, as redis-py does)."""
        conn = self._take()
        try:
            conn.send_packed_command((packed,), check_health=False)
            return conn.read_response()
        finally:
            # After a failure the connection has disconnected itself and reconnects on
            # its next use; after an error reply it is in step and ready.
            self._idle.append(conn)

    def close(self) -> None:
        """Disconnect the idle connections."""
        for conn in self._drain():
            conn.disconnect()


class AsyncWire(_Lender):
    """As :class:`Wire`, for a ``redis.asyncio`` client's settings.

    An asyncio connection belongs to the event loop that opened it: a call on another
    loop (a new ``asyncio.run()``) finds the deque emptied and opens its own.
    """

    __slots__ = ("_loop",)

    def __init__(self, pool: Any) -> None:
        super().__init__(pool)
        self._loop: object = None

    async def call(self, packed: bytes) -> Any:
        """Send ``packed`` and return the reply, awaited."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._idle = deque()
            self._loop = loop
        conn = self._take()
        try:
            await conn.send_packed_command((packed,), check_health=False)
            return await conn.read_response()
        finally:
            self._idle.append(conn)

    async def close(self) -> None:
        """Disconnect the idle connections (dropped, if their event loop is another)."""
        idle = self._drain()
        if self._loop is asyncio.get_running_loop():
            for conn in idle:
                await conn.disconnect()
