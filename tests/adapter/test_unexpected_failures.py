"""A failure nobody planned for (a gateway bug) is shown on its server's status and holds up nothing else."""

from __future__ import annotations

import asyncio

from mcpgw.adapter.discovery import MCPServerAdapter
from mcpgw.converter.converter import ConfigConverter, ServerSnapshot
from mcpgw.registry.models import ServerModels
from mcpgw.registry.state import StateStore
from mcpgw.remote.memory import MemorySource
from tests.gateway import state_until
from tests.support.builders import rest_tool, server_files, tools_doc

BROKEN = "0f6a1d2e-aaaa-4a6b-8c0e-00000000000a"
FINE = "0f6a1d2e-bbbb-4a6b-8c0e-00000000000b"


class ConverterWithABug(ConfigConverter):
    """Fails on one server the way a bug would: an exception that is not a ConversionError."""

    def __init__(self) -> None:
        self.fixed = False

    def convert(self, snap: ServerSnapshot) -> ServerModels | None:
        if snap.server_id == BROKEN and not self.fixed:
            raise RuntimeError("a bug")
        result = super().convert(snap)
        assert result is None or isinstance(result, ServerModels)
        return result


async def test_a_gateway_bug_on_one_server_is_on_its_status_and_holds_up_neither_readiness_nor_the_others() -> None:
    source, store, converter = MemorySource(), StateStore(), ConverterWithABug()
    for server_id, name in ((BROKEN, "broken"), (FINE, "fine")):
        for key, content in server_files(server_id, name, "1.0.0", tools_doc(rest_tool("t"))).items():
            await source.put_config(key, content)
    adapter = MCPServerAdapter(source, store, interval=3600, converter=converter)
    discovery = asyncio.create_task(adapter.run())
    try:
        async with asyncio.timeout(5):
            await adapter.ready.wait()
        status = store.current.statuses[BROKEN]
        assert status.phase == "error"
        assert "failed internally" in status.message and "RuntimeError" in status.message
        assert status.last_error is not None
        assert store.current.statuses[FINE].phase == "serving"

        converter.fixed = True  # the retry, on a timer, then serves it
        async with asyncio.timeout(5):
            await state_until(store, lambda: store.current.statuses[BROKEN].phase == "serving")
    finally:
        discovery.cancel()
        await asyncio.gather(discovery, return_exceptions=True)
        await adapter.close()
