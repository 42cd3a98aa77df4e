from resilient import CircuitBreaker


async def test_async_call_on_both_backends() -> None:
    breaker = CircuitBreaker("smoke")

    @breaker
    async def fn(x: int) -> int:
        return x + 1

    assert await fn(1) == 2
