"""What Nacos sends is checked like any other input: a bad instance or listing entry is dropped, with its reason.

Against the protocol double, over the real SDK: the double stores whatever a
client registered (a NaN weight, an ip that is a URL fragment) and lists
whatever versions file it holds (one without an id).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mcpgw.remote.base import ServiceKey
from mcpgw.remote.nacos import NacosSource
from tests.support.nacos_double import NacosDouble

SERVICE = ServiceKey("public", "DEFAULT_GROUP", "weather")


@pytest.fixture
async def double() -> AsyncIterator[NacosDouble]:
    async with NacosDouble() as running:
        yield running


@pytest.fixture
async def source(double: NacosDouble, tmp_path: Path) -> AsyncIterator[NacosSource]:
    started = NacosSource(double.server_addr, cache_dir=tmp_path / "cache", log_dir=tmp_path / "logs",
                          listing_poll_interval=0.05)
    await started.start()
    yield started
    await started.stop()


async def test_an_instance_nacos_holds_with_an_unusable_ip_or_weight_is_dropped_with_its_reason(
    double: NacosDouble, source: NacosSource
) -> None:
    double.add_instance("public", "DEFAULT_GROUP", "weather", "10.0.0.1", 8000)
    double.add_instance("public", "DEFAULT_GROUP", "weather", "10.0.0.2", 8000, weight=float("inf"))
    double.add_instance("public", "DEFAULT_GROUP", "weather", "10.0.0.1@10.0.0.9", 8000)

    instances = await source.list_instances(SERVICE)

    assert [i.address for i in instances] == ["10.0.0.1:8000"]
    problem = source.problems()[f"instances of service {SERVICE}"]
    assert "the weight inf is not a finite number" in problem
    assert "neither an IP address nor a host name" in problem


async def test_a_listing_entry_without_an_id_is_dropped_and_the_other_servers_are_listed(
    double: NacosDouble, source: NacosSource
) -> None:
    good = {"id": "a1", "name": "good", "latestPublishedVersion": "1",
            "versionDetails": [{"version": "1", "release_date": "2025-09-01T08:00:00Z"}]}
    double.set_config("public", "mcp-server-versions", "a1-mcp-versions.json", json.dumps(good))
    double.set_config("public", "mcp-server-versions", "b2-mcp-versions.json", json.dumps({**good, "id": None}))

    servers = await source.list_mcp_servers()

    assert [s.id for s in servers] == ["a1"]
    [(where, problem)] = source.problems().items()
    assert where == "MCP server listing of namespace public"
    assert "entry [1] dropped" in problem and "id" in problem
