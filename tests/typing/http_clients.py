"""Type tests of the HTTP clients' transports: checked by mypy and pyright, never run."""

from __future__ import annotations

import httpx
import requests
from requests.adapters import HTTPAdapter
from typing_extensions import assert_type

from resilient import CircuitBreaker, Retry, compose
from resilient.httpx import HostMetrics, HTTPStatusFailure, ResilienceTransport
from resilient.requests import HTTPStatusFailure as RequestsFailure
from resilient.requests import ResilienceAdapter

transport = ResilienceTransport(
    lambda name: compose(
        Retry(3, on=(httpx.TransportError, HTTPStatusFailure)), CircuitBreaker(name)
    ),
    name="api",
    failure_statuses={500, 503},
    deadline_header="grpc-timeout",
    max_retry_after=30.0,
)
sync_client = httpx.Client(transport=transport)
async_client = httpx.AsyncClient(transport=transport)
ResilienceTransport(CircuitBreaker("one"), wrapped=httpx.HTTPTransport(retries=1))
ResilienceTransport(CircuitBreaker("one"), failure_statuses=lambda status: status >= 500)

assert_type(transport.metrics(), HostMetrics | None)
assert_type(transport.name, str)

adapter = ResilienceAdapter(CircuitBreaker("billing"), wrapped=HTTPAdapter())
session = requests.Session()
session.mount("https://", adapter)
assert_type(adapter.metrics(), HostMetrics | None)
assert RequestsFailure is HTTPStatusFailure


def status_of(failure: HTTPStatusFailure) -> int:
    return failure.status
