"""Tools listed by a proxied MCP server's backend, through the listener's cascade, with a scripted fetcher."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from mcpgw.adapter.discovery import MCPServerAdapter
from mcpgw.registry.errors import InvocationError
from mcpgw.registry.models import Instance, Route
from mcpgw.registry.state import StateStore
from mcpgw.remote.base import ServiceInstance, tools_spec_key
from mcpgw.remote.memory import MemorySource
from tests.support.builders import instances, server_files, service_key

P = "6d1f0c2b-3a4e-4b5c-8d7e-9f0a1b2c3d4e"
NO_TOOLS = json.dumps({"tools": []})


def tool(name: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": name, "description": f"{name} tool",
            "inputSchema": schema or {"type": "object", "properties": {"x": {"type": "integer"}}}}


@dataclass
class ScriptedBackend:
    """A ``BackendTools`` whose answers the test sets."""

    tools: list[dict[str, Any]] = field(default_factory=lambda: [tool("echo")])
    failure: InvocationError | None = None
    asked: list[tuple[Route, tuple[str, ...]]] = field(default_factory=list)
    watchers: dict[str, Callable[[], None]] = field(default_factory=dict)

    async def list_tools(self, route: Route, instances: Sequence[Instance]) -> list[dict[str, Any]]:
        self.asked.append((route, tuple(i.id for i in instances)))
        if self.failure is not None:
            raise self.failure
        return [dict(t) for t in self.tools]

    def watch(self, server_id: str, on_change: Callable[[], None]) -> Callable[[], None]:
        self.watchers[server_id] = on_change

        def unwatch() -> None:
            del self.watchers[server_id]

        return unwatch


@dataclass
class Rig:
    source: MemorySource
    store: StateStore
    adapter: MCPServerAdapter
    backend: ScriptedBackend

    async def settle(self) -> None:
        async with asyncio.timeout(5):
            await self.adapter.quiesce()

    def served(self) -> list[str]:
        return sorted(self.store.current.tools("proxied") or {})

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        changed = asyncio.Event()
        unsubscribe = self.store.subscribe(lambda _c: changed.set())
        try:
            async with asyncio.timeout(5):
                while not predicate():
                    await changed.wait()
                    changed.clear()
        finally:
            unsubscribe()


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    source = MemorySource()
    store = StateStore()
    backend = ScriptedBackend()
    adapter = MCPServerAdapter(source, store, interval=3600, backend_tools=backend)
    await source.start()
    yield Rig(source, store, adapter, backend)
    await adapter.close()
    await source.stop()


async def publish(rig: Rig, tools: str = NO_TOOLS, backends: Sequence[ServiceInstance] | None = None) -> None:
    await rig.source.set_instances(service_key("mcp-svc"), backends or instances(7001, service="mcp-svc"))
    for key, content in server_files(P, "proxied", "1.0.0", tools, service="mcp-svc", protocol="mcp-streamable",
                                     export_path="/rpc").items():
        await rig.source.put_config(key, content)
    await rig.settle()


async def test_a_spec_without_tools_serves_the_tools_the_backend_lists(rig: Rig) -> None:
    rig.backend.tools = [tool("echo"), tool("add")]
    await publish(rig)
    assert rig.served() == ["add", "echo"]
    [(route, asked_instances)] = rig.backend.asked
    assert (route.backend, route.export_path, asked_instances) == ("mcp-streamable", "/rpc", ("127.0.0.1:7001",))
    echo = rig.store.current.tools("proxied")["echo"]  # type: ignore[index]
    assert echo.binding is None and echo.validator is not None
    assert rig.store.current.statuses[P].phase == "serving"


async def test_a_spec_that_lists_tools_never_asks_the_backend(rig: Rig) -> None:
    await publish(rig, json.dumps({"tools": [tool("declared")]}))
    assert rig.served() == ["declared"]
    assert rig.backend.asked == [] and rig.backend.watchers == {}


async def test_a_backend_tool_disabled_in_tools_meta_is_not_served(rig: Rig) -> None:
    rig.backend.tools = [tool("echo"), tool("internal")]
    await publish(rig, json.dumps({"tools": [], "toolsMeta": {"internal": {"enabled": False}}}))
    assert rig.served() == ["echo"]


async def test_only_routable_instances_are_asked_for_the_listing(rig: Rig) -> None:
    await publish(rig, backends=[*instances(7001, service="mcp-svc", healthy=False),
                                 *instances(7002, service="mcp-svc", enabled=False),
                                 *instances(7003, service="mcp-svc")])
    assert [asked for _, asked in rig.backend.asked] == [("127.0.0.1:7003",)]


async def test_without_a_routable_instance_the_listing_waits_for_one(rig: Rig) -> None:
    await publish(rig, backends=instances(7001, service="mcp-svc", healthy=False))
    assert rig.backend.asked == []
    status = rig.store.current.statuses[P]
    assert status.phase == "pending" and P not in rig.store.current.servers
    assert "waiting for a healthy instance of public/DEFAULT_GROUP/mcp-svc" in status.message
    await rig.source.set_instances(service_key("mcp-svc"), instances(7001, service="mcp-svc"))
    await rig.settle()
    assert rig.served() == ["echo"]


async def test_the_listing_is_fetched_again_only_on_a_new_instance_set_or_a_change_notice(rig: Rig) -> None:
    await publish(rig)
    assert len(rig.backend.asked) == 1
    await rig.source.put_config(tools_spec_key(P, "1.0.0"), json.dumps({"tools": [], "note": "reformatted"}))
    await rig.settle()
    assert len(rig.backend.asked) == 1
    rig.backend.tools = [tool("echo"), tool("added")]
    await rig.source.set_instances(service_key("mcp-svc"), instances(7001, 7002, service="mcp-svc"))
    await rig.settle()
    assert rig.backend.asked[-1][1] == ("127.0.0.1:7001", "127.0.0.1:7002")
    assert rig.served() == ["added", "echo"]
    rig.backend.tools = [tool("renamed")]
    rig.backend.watchers[P]()
    await rig.settle()
    assert len(rig.backend.asked) == 3
    assert rig.served() == ["renamed"]


async def test_a_first_listing_that_fails_serves_nothing_records_why_and_is_retried(rig: Rig) -> None:
    rig.backend.failure = InvocationError("The MCP server at http://127.0.0.1:7001/rpc is unreachable")
    await publish(rig)
    status = rig.store.current.statuses[P]
    assert P not in rig.store.current.servers
    assert status.phase == "error" and status.last_error is not None
    assert status.last_error["file"] == "tools/list of the backend"
    assert "is unreachable" in status.last_error["reason"]
    rig.backend.failure = None
    await rig.wait_for(lambda: rig.served() == ["echo"])
    assert rig.store.current.statuses[P].phase == "serving"
    assert rig.store.current.statuses[P].last_error is None


async def test_a_relisting_that_fails_keeps_the_last_tools_but_applies_the_new_instances(rig: Rig) -> None:
    await publish(rig)
    rig.backend.failure = InvocationError("The MCP server at http://127.0.0.1:7002/rpc is unreachable")
    rig.backend.tools = [tool("never-seen")]
    await rig.source.set_instances(service_key("mcp-svc"), instances(7002, service="mcp-svc"))
    await rig.settle()
    server = rig.store.current.servers[P]
    assert server.cluster is not None and [i.port for i in server.cluster.instances] == [7002]
    assert rig.served() == ["echo"]
    status = rig.store.current.statuses[P]
    assert status.phase == "stale" and "keeping the tools listed before" in status.message


async def test_repeated_listing_failures_do_not_churn_the_state(rig: Rig) -> None:
    await publish(rig)
    rig.backend.failure = InvocationError("unreachable")
    rig.backend.watchers[P]()
    await rig.settle()
    version = rig.store.current.version
    rig.backend.watchers[P]()
    await rig.settle()
    assert len(rig.backend.asked) == 3
    assert rig.store.current.version == version


async def test_a_backend_tool_with_an_invalid_schema_is_rejected_with_its_location(rig: Rig) -> None:
    await publish(rig)
    rig.backend.tools = [tool("echo"), tool("broken", {"type": 12})]
    rig.backend.watchers[P]()
    await rig.settle()
    status = rig.store.current.statuses[P]
    assert rig.served() == ["echo"]
    assert status.phase == "stale" and status.last_error is not None
    assert status.last_error["file"] == "tools/list of the backend"
    assert status.last_error["tool"] == "broken"
    assert status.last_error["path"].startswith("$.tools[1].inputSchema")


async def test_two_backend_tools_with_one_name_are_a_conversion_error(rig: Rig) -> None:
    rig.backend.tools = [tool("echo"), tool("echo")]
    await publish(rig)
    status = rig.store.current.statuses[P]
    assert status.phase == "error" and status.last_error is not None
    assert status.last_error["path"] == "$.tools[1].name"


async def test_a_server_that_stops_needing_the_backend_stops_watching_it(rig: Rig) -> None:
    await publish(rig)
    assert P in rig.backend.watchers
    await rig.source.put_config(tools_spec_key(P, "1.0.0"), json.dumps({"tools": [tool("declared")]}))
    await rig.settle()
    assert rig.served() == ["declared"]
    assert P not in rig.backend.watchers


async def test_without_a_fetcher_a_spec_without_tools_is_served_with_none() -> None:
    source, store = MemorySource(), StateStore()
    adapter = MCPServerAdapter(source, store, interval=3600)
    await source.start()
    try:
        await source.set_instances(service_key("mcp-svc"), instances(7001, service="mcp-svc"))
        for key, content in server_files(P, "proxied", "1.0.0", NO_TOOLS, service="mcp-svc",
                                         protocol="mcp-streamable").items():
            await source.put_config(key, content)
        async with asyncio.timeout(5):
            await adapter.quiesce()
        assert store.current.servers[P].tools_from_backend
        assert store.current.servers[P].tools == ()
    finally:
        await adapter.close()
        await source.stop()
