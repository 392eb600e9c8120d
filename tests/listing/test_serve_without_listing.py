"""``mcpgw publish --raw`` and ``mcpgw serve --nacos`` together on a Nacos without the MCP listing, end to end.

A Nacos 2.x, or a Nacos 3 with its AI module off, has no MCP admin API: the
servers are published as three raw configs (``mcpgw publish --raw``, run
here as its command line is), and the gateway (the production wiring of
``mcpgw serve --nacos``: ``Gateway(Settings(nacos=...))`` under uvicorn)
finds them by searching the versions files.  The backend is a real HTTP
server on loopback whose instance is registered the way ``mcpgw register``
does it; the call goes through the official MCP client.  Against the double
with its MCP listing switched off and the real Nacos 3 with its AI module off.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from structlog.testing import capture_logs

from mcpgw.gateway.app import Gateway
from mcpgw.gateway.cli import main
from mcpgw.gateway.settings import Settings
from mcpgw.remote.base import ServiceKey, versions_key
from mcpgw.remote.nacos import NacosSource
from tests.gateway import listening_socket, serving, text
from tests.gateway.test_nacos_serve import (
    BOUND,
    Registrar,
    Served,
    backends,
    document,
    instance_ports,
    rest_tools,
    tool_names,
    unique,
)
from tests.listing.test_listing_modes import started
from tests.support.nacos_target import NacosTarget


@pytest.fixture
async def registrar(nacos_without_listing: NacosTarget, tmp_path: Path) -> AsyncIterator[Registrar]:
    async with Registrar(nacos_without_listing, tmp_path / "registrations") as running:
        yield running


@pytest.fixture
async def served(nacos_without_listing: NacosTarget, tmp_path: Path) -> AsyncIterator[Served]:
    settings = Settings(
        nacos=nacos_without_listing.server_addr,
        username=nacos_without_listing.username,
        password=nacos_without_listing.password,
        state_dir=tmp_path / "gateway",
        discovery_interval=0.5,  # the second look that confirms a deletion
        upstream_timeout=2.0,
    )
    gateway = Gateway(settings)
    with capture_logs() as logs:
        async with serving(gateway.asgi(), listening_socket()) as url:
            async with asyncio.timeout(BOUND):
                await gateway.adapter.ready.wait()
            chosen = [e for e in logs if e["event"] == "nacos.listing_mode"]
            assert [e["mode"] for e in chosen] == ["config-search"], chosen
            yield Served(url, gateway)


def publish_command(nacos: NacosTarget, *arguments: str) -> list[str]:
    assert nacos.username is not None and nacos.password is not None
    return ["publish", *arguments, "--raw", "--nacos", nacos.server_addr,
            "--username", nacos.username, "--password", nacos.password]


async def test_a_server_published_with_publish_raw_is_served_and_its_tool_call_reaches_the_backend(
    nacos_without_listing: NacosTarget,
    served: Served,
    registrar: Registrar,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    name, service = unique("weather"), ServiceKey("public", "DEFAULT_GROUP", unique("weather-api"))
    published = tmp_path / f"{name}.json"
    published.write_text(document(name, "1.0.0", service, rest_tools("forecast")).model_dump_json(exclude_none=True))
    async with backends("raw") as [backend], asyncio.timeout(BOUND):
        await registrar.register(service, backend.port)
        assert await asyncio.to_thread(main, publish_command(nacos_without_listing, str(published))) == 0
        assert capsys.readouterr().out.splitlines()[0] == f"published {name} 1.0.0 (latest)"

        await served.until(lambda state: tool_names(state, name) == {"forecast"})
        server_id = next(sid for sid, s in served.gateway.store.current.servers.items() if s.name == name)
        await served.until(lambda state: instance_ports(state, server_id) == {backend.port})
        async with served.client(name) as session:
            result = await session.call_tool("forecast", {"q": "Hangzhou"})
        async with httpx.AsyncClient(base_url=served.url) as http:
            listing = (await http.get("/admin/state")).json()["listing"]

        assert await asyncio.to_thread(main, publish_command(nacos_without_listing, "--server", name, "--delete")) == 0
        await served.until(lambda state: server_id not in state.servers and not tool_names(state, name))
        # Deletion through the listing is confirmed by a second pass that no longer finds the versions file.
        await served.gateway.adapter.sync_once()
        await served.gateway.adapter.sync_once()

    assert result.is_error is not True, text(result)
    assert json.loads(text(result)) == {"backend": "raw", "path": "/echo/forecast", "query": {"q": "Hangzhou"}}
    assert backend.calls == [{"backend": "raw", "path": "/echo/forecast", "query": {"q": "Hangzhou"}}]
    assert listing["mode"] == "config-search"
    assert listing["api"] == "GET /nacos/v3/admin/cs/config/list"
    assert listing["server"] == f"http://{nacos_without_listing.server_addr}"
    assert server_id not in served.gateway.adapter.listeners
    # The command configures logging for the process, so the gateway's log lines share its stdout.
    assert f"deleted {name} (1 version(s))" in capsys.readouterr().out.splitlines()


async def test_a_hostile_versions_file_does_not_keep_other_servers_from_being_served(
    nacos_without_listing: NacosTarget,
    served: Served,
    registrar: Registrar,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    hostile_id = f"hostile-{unique('x')}"
    name, service = unique("maps"), ServiceKey("public", "DEFAULT_GROUP", unique("maps-api"))
    published = tmp_path / f"{name}.json"
    published.write_text(document(name, "1.0.0", service, rest_tools("route")).model_dump_json(exclude_none=True))
    writer = served.gateway.source
    assert isinstance(writer, NacosSource)
    await writer.publish_config(versions_key(hostile_id), "{not json")
    try:
        async with backends("maps") as [backend], asyncio.timeout(BOUND):
            await registrar.register(service, backend.port)
            assert await asyncio.to_thread(main, publish_command(nacos_without_listing, str(published))) == 0
            await served.until(lambda state: tool_names(state, name) == {"route"})
            async with served.client(name) as session:
                result = await session.call_tool("route", {"q": "x"})
            async with httpx.AsyncClient(base_url=served.url) as http:
                state = (await http.get("/admin/state")).json()
    finally:
        await writer.remove_config(versions_key(hostile_id))
        await asyncio.to_thread(main, publish_command(nacos_without_listing, "--server", name, "--delete"))
    capsys.readouterr()

    assert json.loads(text(result))["backend"] == "maps"
    problems = [p for p in state["listing"]["problems"] if f"{hostile_id}-mcp-versions.json" in p["where"]]
    assert [(p["path"], p["reason"].split(" (")[0]) for p in problems] == [("$", "not JSON")]
    # The same problem among the source's problems, which mcpgw state prints and /metrics counts.
    [why] = [p["problem"] for p in state["source_problems"] if f"{hostile_id}-mcp-versions" in p["where"]]
    assert why.startswith("$: not JSON")
    # Listed by its dataId, so its listener says what is wrong, where.
    assert state["servers"][hostile_id]["phase"] == "error"
    assert state["servers"][hostile_id]["last_error"]["path"] == "$"


async def test_publish_through_the_admin_api_is_refused_before_any_write_saying_to_use_raw(
    nacos_without_listing: NacosTarget, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    name, service = unique("weather"), ServiceKey("public", "DEFAULT_GROUP", unique("weather-api"))
    published = tmp_path / f"{name}.json"
    published.write_text(document(name, "1.0.0", service, rest_tools("forecast")).model_dump_json(exclude_none=True))
    admin = [a for a in publish_command(nacos_without_listing, str(published)) if a != "--raw"]

    assert await asyncio.to_thread(main, admin) == 1

    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        f"mcpgw: error: Nacos at http://{nacos_without_listing.server_addr} has no MCP admin API "
        "(/nacos/v3/admin/ai/mcp answers 404: a Nacos 2.x, or a Nacos 3 with its AI module off): publish with "
        "--raw, which writes the three configs directly; mcpgw serve finds such servers by searching the versions "
        "files"
    ]
    async with started(nacos_without_listing, tmp_path) as source:
        assert name not in {s.name for s in await source.list_mcp_servers()}
