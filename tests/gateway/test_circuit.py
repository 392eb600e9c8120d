"""Circuit breaking per cluster (gateway.circuit) and the upstream response bound, alone and through the gateway."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from mcpgw.gateway.circuit import CircuitBreakers, CircuitLimits, CircuitOpen
from mcpgw.gateway.settings import BalancingSettings
from mcpgw.registry.models import Cluster
from tests.gateway.edge import edge_gateway, result_text


async def test_a_full_circuit_queues_up_to_max_pending_then_refuses_at_once() -> None:
    breakers = CircuitBreakers(lambda _name: CircuitLimits(max_requests=1, max_pending=1))
    release = asyncio.Event()
    first_in = asyncio.Event()
    entered: list[str] = []

    async def call(label: str) -> None:
        async with breakers.slot("c", wait=5):
            entered.append(label)
            first_in.set()
            await release.wait()

    async with asyncio.timeout(5):
        first = asyncio.create_task(call("first"))
        await first_in.wait()
        second = asyncio.create_task(call("second"))
        await asyncio.sleep(0)  # one loop turn: it queues behind the first
        with pytest.raises(CircuitOpen, match=r"cluster c is at its limit: 1 calls in flight and 1 waiting"):
            await call("third")
        release.set()
        await asyncio.gather(first, second)
    assert entered == ["first", "second"] and breakers.in_flight("c") == 0 and breakers.refused == 1


async def test_a_waiter_gives_up_after_its_budget_and_the_slot_is_not_lost() -> None:
    breakers = CircuitBreakers(lambda _name: CircuitLimits(max_requests=1, max_pending=5))
    async with breakers.slot("c", wait=1):
        with pytest.raises(CircuitOpen, match=r"no free request slot within 0\.01 s"):
            async with breakers.slot("c", wait=0.01):
                pass
    async with asyncio.timeout(1), breakers.slot("c", wait=1):
        assert breakers.in_flight("c") == 1
    assert breakers.in_flight("c") == 0


def test_a_service_can_have_its_own_circuit_limits() -> None:
    settings = BalancingSettings.model_validate(
        {"circuit_breaker": {"max_requests": 10}, "services": {"weather-api": {"circuit_breaker": {"max_pending": 0}}}}
    )
    weather = Cluster(name="c1", service="public/DEFAULT_GROUP/weather-api", instances=())
    other = Cluster(name="c2", service="public/DEFAULT_GROUP/other", instances=())
    assert settings.circuit_for(weather) == CircuitLimits(1024, 0)
    assert settings.circuit_for(other) == CircuitLimits(10, 1024)


async def test_calls_past_the_circuit_limits_get_a_clear_tool_error_and_the_backend_is_spared(tmp_path: Path) -> None:
    limits = {"circuit_breaker": {"max_requests": 1, "max_pending": 0}}
    async with edge_gateway(tmp_path, balancing=limits) as edge, edge.wire() as session:
        assert (await session.initialize()).status_code == 200
        in_flight = asyncio.create_task(session.call("slow", {}, request_id=1))
        async with asyncio.timeout(10):
            await edge.backend.arrived.wait()
            refused = await session.call("echo", {"q": "x"}, request_id=2)
            assert refused.json()["result"]["isError"] is True
            assert "is at its limit" in result_text(refused) and "balancing.circuit_breaker" in result_text(refused)
            assert [r["path"] for r in edge.backend.received] == ["/slow"]
            edge.backend.release.set()
            assert (await in_flight).json()["result"].get("isError") is not True
        assert (await session.call("echo", {"q": "y"}, request_id=3)).json()["result"].get("isError") is not True


async def test_an_upstream_answer_over_the_size_limit_is_an_error_naming_the_setting(tmp_path: Path) -> None:
    async with edge_gateway(tmp_path, upstream_max_response_bytes=4096) as edge, edge.wire() as session:
        assert (await session.initialize()).status_code == 200
        big = await session.call("big_answer", {"n": 10_000})
        assert big.json()["result"]["isError"] is True
        assert "answered too much" in result_text(big) and "4096" in result_text(big)
        assert "(upstream_max_response_bytes)" in result_text(big)
        small = await session.call("big_answer", {"n": 4000})
        assert result_text(small) == "x" * 4000
