"""The ASGI middleware takes shared limiters as they are: one per-client limit for all workers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from asgi_apps import Service, client
from resilient import KeyedRateLimiter
from resilient.asgi import ResilienceMiddleware, client_ip
from resilient.redis import RedisStore

if TYPE_CHECKING:
    from redis_servers import Server


@pytest.fixture
def store(redis_server: Server, namespace: str) -> Iterator[RedisStore]:
    # A roomy op_timeout: these tests are about decisions, not a slow Redis.
    store = RedisStore(redis_server.client(), namespace=namespace, op_timeout=5)
    yield store
    store.close()


async def test_two_workers_share_each_clients_limit(store: RedisStore) -> None:
    # Two middleware stacks with their own limiter objects: two worker processes' views.
    workers = [
        ResilienceMiddleware(
            Service().app,
            KeyedRateLimiter(2, per=60, key=client_ip, name="per-client", store=store),
        )
        for _ in range(2)
    ]
    statuses = []
    for worker in (0, 1, 0, 1):
        async with client(workers[worker], client=("10.0.0.1", 5000)) as c:
            response = await c.get("/ok")
            statuses.append(response.status_code)
    assert statuses == [200, 200, 429, 429]
    async with client(workers[1], client=("10.0.0.2", 5000)) as c:
        assert (await c.get("/ok")).status_code == 200
    async with client(workers[0], client=("10.0.0.1", 5000)) as c:
        refused = await c.get("/ok")
    assert 0 < int(refused.headers["retry-after"]) <= 30
