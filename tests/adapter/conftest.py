from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from mcpgw.adapter.discovery import MCPServerAdapter
from mcpgw.registry.state import StateChange, StateStore
from mcpgw.remote.base import ConfigKey
from mcpgw.remote.memory import MemorySource


@dataclass
class Harness:
    source: MemorySource
    store: StateStore
    adapter: MCPServerAdapter
    changes: list[StateChange]

    async def publish(self, files: dict[ConfigKey, str]) -> None:
        for key, content in files.items():
            await self.source.put_config(key, content)

    async def settle(self) -> None:
        await self.adapter.quiesce()


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    source = MemorySource()
    store = StateStore()
    changes: list[StateChange] = []
    store.subscribe(changes.append)
    adapter = MCPServerAdapter(source, store, interval=3600)
    await source.start()
    yield Harness(source, store, adapter, changes)
    await adapter.close()
    await source.stop()
