"""A hypothesis state machine drives random source histories through the real adapter.

After every step the adapter is driven to quiescence and the registry is
compared with a deliberately simple model of what must be served: the latest
published version's tools, or the last good ones when the latest is invalid;
nothing for a deleted or disabled server; the current instances.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from mcpgw.adapter.discovery import MCPServerAdapter
from mcpgw.registry.state import StateStore
from mcpgw.remote.base import server_spec_key, tools_spec_key, versions_key
from mcpgw.remote.memory import MemorySource
from tests.support.builders import instances, rest_tool, server_doc, service_key, tools_doc, versions_doc

SERVERS = [f"{i:08x}-1111-4222-8333-{i:012x}" for i in range(1, 4)]
TOOL_SETS = [("alpha",), ("alpha", "beta"), ("gamma",), ("beta", "delta")]


@dataclass
class ModelServer:
    name: str
    published: list[str] = field(default_factory=list)
    drafts: list[str] = field(default_factory=list)
    tools: dict[str, tuple[str, ...] | None] = field(default_factory=dict)
    """version -> tool names, None when that version's tools spec is invalid."""
    enabled: bool = True
    served: tuple[str, ...] | None = None


class ReconcilerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.source = MemorySource()
        self.store = StateStore()
        self.adapter = MCPServerAdapter(self.source, self.store, interval=3600)
        self.model: dict[str, ModelServer] = {}
        self.ports: dict[str, tuple[int, ...]] = {}
        self.counter = 0
        self.loop.run_until_complete(self.source.start())

    def teardown(self) -> None:
        self.loop.run_until_complete(self.adapter.close())
        self.loop.run_until_complete(self.source.stop())
        self.loop.close()

    def run(self, coro: object) -> None:
        self.loop.run_until_complete(coro)  # type: ignore[arg-type]

    def settle(self) -> None:
        self.run(asyncio.wait_for(self.adapter.quiesce(), 5))
        for server in self.model.values():
            desired = self._desired(server)
            if isinstance(desired, str):  # "invalid": the last good tools keep being served
                continue
            server.served = desired

    @staticmethod
    def _desired(server: ModelServer) -> tuple[str, ...] | str | None:
        if not server.enabled or not server.published:
            return None
        tools = server.tools[server.published[-1]]
        return "invalid" if tools is None else tools

    async def _write_versions(self, sid: str) -> None:
        server = self.model[sid]
        await self.source.put_config(versions_key(sid), versions_doc(
            sid, server.name, server.published[-1] if server.published else None, server.published,
            server.drafts, enabled=server.enabled))

    async def _write_version(self, sid: str, version: str, tools: tuple[str, ...] | None) -> None:
        server = self.model[sid]
        await self.source.put_config(server_spec_key(sid, version), server_doc(sid, server.name, version,
                                                                               service=f"svc-{sid[:8]}"))
        content = tools_doc(*(rest_tool(t) for t in tools)) if tools is not None else '{"tools": ['
        await self.source.put_config(tools_spec_key(sid, version), content)
        server.tools[version] = tools

    def _version(self) -> str:
        self.counter += 1
        return f"1.{self.counter}.0"

    @rule(index=st.integers(0, 2), tools=st.sampled_from(TOOL_SETS))
    def publish(self, index: int, tools: tuple[str, ...]) -> None:
        sid = SERVERS[index]
        server = self.model.setdefault(sid, ModelServer(name=f"server{index}"))
        version = self._version()
        self.run(self._write_version(sid, version, tools))
        server.published.append(version)
        self.run(self._write_versions(sid))
        self.settle()

    @rule(index=st.integers(0, 2), tools=st.sampled_from(TOOL_SETS))
    def draft(self, index: int, tools: tuple[str, ...]) -> None:
        sid = SERVERS[index]
        if sid not in self.model:
            return
        version = self._version()
        self.run(self._write_version(sid, version, tools))
        self.model[sid].drafts.append(version)
        self.run(self._write_versions(sid))
        self.settle()

    @rule(index=st.integers(0, 2), tools=st.sampled_from([*TOOL_SETS, None]))
    def modify_latest(self, index: int, tools: tuple[str, ...] | None) -> None:
        sid = SERVERS[index]
        server = self.model.get(sid)
        if server is None or not server.published:
            return
        self.run(self._write_version(sid, server.published[-1], tools))
        self.settle()

    @rule(index=st.integers(0, 2))
    def delete(self, index: int) -> None:
        sid = SERVERS[index]
        server = self.model.pop(sid, None)
        if server is None:
            return

        async def go() -> None:
            await self.source.delete_config(versions_key(sid))
            for version in [*server.published, *server.drafts]:
                await self.source.delete_config(server_spec_key(sid, version))
                await self.source.delete_config(tools_spec_key(sid, version))

        self.run(go())
        self.settle()

    @rule(index=st.integers(0, 2), enabled=st.booleans())
    def set_enabled(self, index: int, enabled: bool) -> None:
        sid = SERVERS[index]
        if sid not in self.model:
            return
        self.model[sid].enabled = enabled
        self.run(self._write_versions(sid))
        self.settle()

    @rule(index=st.integers(0, 2), ports=st.lists(st.integers(8000, 8004), unique=True, max_size=3))
    def set_instances(self, index: int, ports: list[int]) -> None:
        sid = SERVERS[index]
        self.run(self.source.set_instances(service_key(f"svc-{sid[:8]}"), instances(*ports)))
        self.ports[sid] = tuple(sorted(ports))
        self.settle()

    @rule()
    def empty_listing(self) -> None:
        self.source.set_listing_override([])
        self.settle()
        self.source.set_listing_override(None)
        self.settle()

    @invariant()
    def registry_matches_model(self) -> None:
        state = self.store.current
        for sid in SERVERS:
            server = self.model.get(sid)
            served = state.servers.get(sid)
            expected = server.served if server else None
            if expected is None:
                assert served is None, f"{sid} should not be served"
                continue
            assert served is not None, f"{sid} should serve {expected}"
            assert tuple(sorted(t.name for t in served.tools)) == tuple(sorted(expected))
            assert served.cluster is not None
            assert tuple(i.port for i in served.cluster.instances) == self.ports.get(sid, ())
        assert set(state.servers.keys()) <= set(self.model)


ReconcilerMachine.TestCase.settings = settings(max_examples=40, stateful_step_count=20, deadline=None)
TestReconcilerAgainstModel = ReconcilerMachine.TestCase
