"""The protocol edge and the session bounds, over real HTTP (gateway.mcp_edge; issue 11 items 3 and 5)."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp.server.connection import Connection
from mcp.server.streamable_http import StreamableHTTPServerTransport

import tests.gateway.edge as edge_module
from mcpgw.gateway.settings import load_settings
from tests.gateway.edge import Edge, Wire, edge_gateway, result_text


@pytest.fixture
async def edge(tmp_path: Path) -> AsyncIterator[Edge]:
    async with edge_gateway(tmp_path) as running:
        yield running


@pytest.fixture
async def session(edge: Edge) -> AsyncIterator[Wire]:
    async with edge.wire() as wire:
        assert (await wire.initialize()).status_code == 200
        yield wire


# -- JSON-RPC envelopes ------------------------------------------------------------------------------


@pytest.mark.parametrize(("request_id", "kind"), [({"a": 1}, "an object"), ([1], "an array"), (True, "a boolean"),
                                                 (None, "null"), (1.5, "a fractional number")])
async def test_a_request_whose_id_is_not_a_string_or_integer_is_answered_invalid_request_with_id_null(
    session: Wire, request_id: Any, kind: str
) -> None:
    response = await session.post({"jsonrpc": "2.0", "id": request_id, "method": "tools/list"})
    assert response.status_code == 400
    answer = response.json()
    assert answer["id"] is None and answer["error"]["code"] == -32600
    assert f"must be a string or an integer, not {kind}" in answer["error"]["message"]


@pytest.mark.parametrize(
    ("body", "code", "fragment"),
    [
        (b"[]", -32600, "batches are not supported"),
        (b'[{"jsonrpc": "2.0", "id": 1, "method": "tools/list"}]', -32600, "batches are not supported"),
        (b'"tools/list"', -32600, "one JSON-RPC message object"),
        (b'{"jsonrpc": "1.0", "id": 1, "method": "tools/list"}', -32600, '"jsonrpc" must be "2.0"'),
        (b'{"jsonrpc": "2.0", "id": 1, "method": 7}', -32600, '"method" must be a string'),
        (b'{"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": [1]}', -32602, "must be an object"),
        (b'{"jsonrpc": "2.0", "id": 1}', -32600, 'needs a "method"'),
        (b'{"jsonrpc": "2.0", "id": 1, "result": {}, "error": {}}', -32600, 'needs a "method"'),
        (b'{"jsonrpc": "2.0", "id": 1, "method": "tools/list"', -32700, "not valid JSON"),
        (b"[" * 20_000 + b"]" * 20_000, -32700, "not valid JSON"),
    ],
)
async def test_malformed_messages_get_the_json_rpc_error_the_spec_names(
    session: Wire, body: bytes, code: int, fragment: str
) -> None:
    response = await session.post(content=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == code and fragment in error["message"]


async def test_a_second_request_with_the_id_of_one_in_flight_is_refused_and_the_first_gets_its_own_answer(
    edge: Edge, session: Wire
) -> None:
    first = asyncio.create_task(session.call("slow", {}, request_id=7))
    async with asyncio.timeout(5):
        await edge.backend.arrived.wait()
        duplicate = await session.call("echo", {"q": "second"}, request_id=7)
        same_text = await session.call("echo", {"q": "third"}, request_id="7")
        assert duplicate.status_code == 400 and same_text.status_code == 400
        assert duplicate.json()["id"] == 7 and duplicate.json()["error"]["code"] == -32600
        assert "already in flight on this session" in duplicate.json()["error"]["message"]
        edge.backend.release.set()
        answered = await first
    assert answered.status_code == 200 and answered.json()["id"] == 7
    assert '"/slow"' in result_text(answered)
    again = await session.call("echo", {"q": "reused"}, request_id=7)
    assert again.status_code == 200 and "reused" in result_text(again)


async def test_many_concurrent_requests_sharing_one_id_are_each_answered_or_refused_never_crossed(
    session: Wire,
) -> None:
    async with asyncio.timeout(10):
        answers = await asyncio.gather(*(session.call("echo", {"q": f"n{i}"}, request_id=99) for i in range(8)))
    for i, answer in enumerate(answers):
        if answer.status_code == 200:
            assert f'"n{i}"' in result_text(answer)
        else:
            assert answer.status_code == 400 and answer.json()["error"]["code"] == -32600


@pytest.mark.parametrize("value", ["a\x01b", "a\x7fb", "a\x00", "a\nX-Admin: 1", "\x1b[31m"])
async def test_a_header_argument_with_a_control_character_is_a_tool_error_not_an_internal_error(
    edge: Edge, session: Wire, value: str
) -> None:
    response = await session.call("header_arg", {"v": value})
    assert response.status_code == 200
    result = response.json()["result"]
    assert result["isError"] is True and "control character" in result_text(response)
    assert edge.backend.received == []


# -- sessions ----------------------------------------------------------------------------------------


async def test_a_flood_of_initialize_calls_from_one_client_evicts_only_its_own_idle_sessions(tmp_path: Path) -> None:
    async with (
        edge_gateway(tmp_path, sessions={"max_per_client": 5, "max_total": 50}) as edge,
        edge.wire(client_address="127.0.0.2") as bystander,
        edge.wire() as flooder,
    ):
        assert (await bystander.initialize()).status_code == 200
        first = None
        for _ in range(60):
            assert (await flooder.initialize()).status_code == 200
            first = first or flooder.session_id
        sessions = edge.gateway.endpoints.sessions
        assert sessions.of_client("127.0.0.1") == 5 and sessions.of_client("127.0.0.2") == 1
        assert sessions.evicted == 55
        assert (await bystander.list_tools()).status_code == 200
        flooder.headers["mcp-session-id"] = first or ""
        assert (await flooder.list_tools()).status_code == 404  # evicted: the client opens a new one


async def test_at_the_total_bound_the_least_recently_used_idle_session_makes_room(tmp_path: Path) -> None:
    async with edge_gateway(tmp_path, sessions={"max_per_client": 5, "max_total": 3}) as edge:
        wires = [edge.wire(client_address=f"127.0.0.{i}") for i in range(2, 6)]
        try:
            for wire in wires[:3]:
                assert (await wire.initialize()).status_code == 200
            assert (await wires[0].list_tools()).status_code == 200  # now the most recently used
            assert (await wires[3].initialize()).status_code == 200
            statuses = [(await wire.list_tools()).status_code for wire in wires]
            assert statuses == [200, 404, 200, 200]
            assert len(edge.gateway.endpoints.sessions) == 3
        finally:
            for wire in wires:
                await wire.http.aclose()


async def test_when_every_session_of_a_client_is_busy_a_new_one_is_refused_with_429_naming_the_setting(
    tmp_path: Path,
) -> None:
    async with edge_gateway(tmp_path, sessions={"max_per_client": 1}) as edge, edge.wire() as busy:
        assert (await busy.initialize()).status_code == 200
        in_flight = asyncio.create_task(busy.call("slow", {}))
        async with asyncio.timeout(5):
            await edge.backend.arrived.wait()
            async with edge.wire() as another:
                refused = await another.initialize()
            assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
            error = refused.json()["error"]
            assert error["code"] == -32000 and "sessions.max_per_client" in error["message"]
            edge.backend.release.set()
            assert (await in_flight).status_code == 200
            assert (await busy.list_tools()).status_code == 200


async def test_a_deleted_session_leaves_no_transport_connection_or_table_entry_behind(edge: Edge) -> None:
    async with edge.wire() as wire:
        for _ in range(30):
            assert (await wire.initialize()).status_code == 200
            assert (await wire.list_tools()).status_code == 200
            assert (await wire.delete()).status_code == 200
    gc.collect()
    assert len(edge.gateway.endpoints.sessions) == 0
    assert [o for o in gc.get_objects() if isinstance(o, StreamableHTTPServerTransport | Connection)] == []


def test_session_bounds_come_from_the_settings_file_or_the_environment(tmp_path: Path) -> None:
    settings = load_settings(None, {}, env={"MCPGW_SESSIONS": '{"max_total": 7, "idle_timeout": 30}'})
    assert (settings.sessions.max_total, settings.sessions.max_per_client, settings.sessions.idle_timeout) == (
        7, 100, 30)
    config = tmp_path / "c.yaml"
    config.write_text("sessions:\n  max_per_client: 3\n")
    assert load_settings(config, {}, env={}).sessions.max_per_client == 3


# -- names clients accept ----------------------------------------------------------------------------


async def test_a_tool_whose_name_is_too_long_for_clients_is_listed_and_called_by_its_short_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    long_name = "echo_" + "the_arguments_back_" * 5  # 100 characters: valid MCP, too long for most clients
    monkeypatch.setattr(edge_module, "EDGE_TOOLS", [*edge_module.EDGE_TOOLS, edge_module.tool(
        long_name, {"requestTemplate": {"url": "/long", "method": "GET", "argsToUrlParam": True},
                    "responseTemplate": {}}, {"q": {"type": "string"}})])
    async with edge_gateway(tmp_path) as edge, edge.wire() as own, edge.wire("/mcp") as aggregate:
        for wire in (own, aggregate):
            assert (await wire.initialize()).status_code == 200
        own_names = [t["name"] for t in (await own.list_tools()).json()["result"]["tools"]]
        aggregate_names = [t["name"] for t in (await aggregate.list_tools()).json()["result"]["tools"]]
        short_own = next(n for n in own_names if n.startswith("echo_the"))
        short_aggregate = next(n for n in aggregate_names if n.startswith("weather_echo_the"))
        assert max(len(n) for n in own_names + aggregate_names) == 64
        for wire, name in ((own, short_own), (aggregate, short_aggregate)):
            answer = await wire.call(name, {"q": name[-8:]})
            assert name[-8:] in result_text(answer)
        unknown = await own.call(long_name, {"q": "x"})
        async with httpx.AsyncClient(trust_env=False) as http:
            state = (await http.get(edge.url + "/admin/state")).json()
    assert [r["path"] for r in edge.backend.received[-2:]] == ["/long", "/long"]
    assert "unknown tool" in unknown.json()["error"]["message"]
    weather = next(s for s in state["servers"].values() if s["name"] == "weather")
    assert any(f"listed as {short_own} on /mcp/weather" in w for w in weather["warnings"])
    assert any(f"listed as {short_aggregate} on /mcp:" in w for w in weather["warnings"])
