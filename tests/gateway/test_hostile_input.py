"""Hostile input cannot hurt the gateway (issue 11, the data side): each failure found by attacking it, as a test.

Everything runs on loopback: the gateway, a backend that echoes what it
receives (127.0.0.1), and two trap hosts (127.0.0.2, 127.0.0.3) that no call
may ever reach.  See ``tests.support.hostile`` for the stage.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from structlog.testing import capture_logs

from mcpgw.gateway.app import Gateway
from mcpgw.gateway.cli import main
from mcpgw.gateway.settings import Settings
from mcpgw.remote.base import ServiceInstance
from mcpgw.remote.memory import MemorySource
from tests.gateway import serving
from tests.support.builders import server_files
from tests.support.hostile import (
    BYSTANDER,
    SECRET,
    SERVICE,
    THIRD,
    Stage,
    echo_tools,
    file_of,
    stage,
)
from tests.support.mcp_wire import result_text


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[Stage]:
    async with stage(tmp_path) as running:
        yield running


def _tool_names(tools: list[dict[str, Any]]) -> set[str]:
    return {tool["name"] for tool in tools}


async def _call(running: Stage, tool: str, **arguments: Any) -> dict[str, Any]:
    wire = await running.wire("/mcp/victim").open()
    return await wire.call(tool, arguments)


def _assert_tool_error(envelope: dict[str, Any], *words: str) -> str:
    assert "result" in envelope, f"expected a tool error, got {envelope}"
    assert envelope["result"]["isError"] is True
    text = result_text(envelope)
    for word in words:
        assert word in text
    return text


# -- 1. destinations come from the cluster ------------------------------------------------------------


async def test_a_url_rendered_from_an_argument_cannot_send_the_call_or_its_credential_to_another_host(
    running: Stage,
) -> None:
    envelope = await _call(running, "url_from_arg", u=f"http://127.0.0.3:{running.trap_port}/x")

    _assert_tool_error(envelope, "destination comes from the server's instances")
    assert running.traps.requests == []
    assert running.backend.requests == []


async def test_an_argument_after_a_written_out_port_cannot_change_the_host(running: Stage) -> None:
    envelope = await _call(running, "path_after_port", p=f"@127.0.0.2:{running.trap_port}/x")

    _assert_tool_error(envelope, "cannot choose the host")
    assert running.traps.requests == []


async def test_a_rendered_host_suffix_is_a_clear_tool_error_not_an_internal_error(running: Stage) -> None:
    envelope = await _call(running, "host_suffix", h=f".127.0.0.2:{running.trap_port}")

    _assert_tool_error(envelope, "host_suffix", "configured origin http://127.0.0.1")
    assert running.traps.requests == []


async def test_a_path_argument_cannot_climb_out_of_its_segment(running: Stage) -> None:
    envelope = await _call(running, "item", id="..")

    assert envelope["result"]["isError"] is False
    assert [r["raw_path"] for r in running.backend.requests] == ["/items/%2E%2E"]


async def test_redirects_are_not_followed_so_the_credential_stays_with_the_backend(running: Stage) -> None:
    envelope = await _call(running, "redirect")

    _assert_tool_error(envelope, "HTTP 302")
    assert running.traps.requests == []


# -- 2. what is served is valid, per server -----------------------------------------------------------


def _with_deep_input_schema(doc: dict[str, Any]) -> str:
    # Written as text: 950 levels are past what json.dumps can recurse through from inside a test.
    doc["tools"][0]["inputSchema"]["properties"]["deep"] = "DEEP"
    deep = '{"type": "object", "properties": {"a": ' * 475 + '{"type": "string"}' + "}}" * 475
    return json.dumps(doc).replace('"DEEP"', deep)


def _with_lone_surrogate_in_description(doc: dict[str, Any]) -> str:
    doc["tools"][0]["description"] = "SURROGATE"
    return json.dumps(doc).replace("SURROGATE", "\\ud800")


def _with_null_output_property(doc: dict[str, Any]) -> str:
    doc["tools"][0]["outputSchema"] = {"type": "object", "properties": {"x": None}}
    return json.dumps(doc)


def _with_annotation_of_the_wrong_type(doc: dict[str, Any]) -> str:
    doc["tools"][0]["annotations"] = {"readOnlyHint": {"deep": [1]}}
    return json.dumps(doc)


def _with_a_name_clients_refuse(doc: dict[str, Any]) -> str:
    doc["tools"][0]["name"] = "echo everything"
    doc["toolsMeta"] = {"echo everything": doc["toolsMeta"]["echo"]}
    return json.dumps(doc)


BAD_SPECS: dict[str, tuple[Callable[[dict[str, Any]], str], str]] = {
    "950-deep inputSchema": (_with_deep_input_schema, "$.tools[0].inputSchema"),
    "lone surrogate in a description": (_with_lone_surrogate_in_description, "$.tools[0].description"),
    "outputSchema property null": (_with_null_output_property, "$.tools[0].outputSchema.properties.x"),
    "annotation of the wrong type": (_with_annotation_of_the_wrong_type, "$.tools[0].annotations.readOnlyHint"),
    "a tool name clients refuse": (_with_a_name_clients_refuse, "$.tools[0].name"),
}


@pytest.mark.parametrize("case", sorted(BAD_SPECS))
async def test_one_servers_bad_spec_never_breaks_tools_list_and_is_reported_where_it_is(
    running: Stage, case: str, capsys: pytest.CaptureFixture[str]
) -> None:
    edit, path = BAD_SPECS[case]
    wire = await running.wire().open()
    before = _tool_names(await wire.tools())
    tools_file = file_of(BYSTANDER, "tools")

    await running.write(tools_file, edit(json.loads(echo_tools())))

    assert _tool_names(await wire.tools()) == before  # every server, the broken one's last good version included
    assert _tool_names(await (await running.wire("/mcp/bystander").open()).tools()) == {"echo"}
    status = (await running.state())["servers"][BYSTANDER]
    assert status["phase"] == "stale"
    assert status["last_error"]["file"] == tools_file.data_id
    assert status["last_error"]["path"].startswith(path)
    assert main(["validate", str(running.tree)]) == 1
    out = capsys.readouterr().out
    assert tools_file.data_id in out and path in out


async def test_a_backend_answer_that_is_not_servable_json_comes_back_as_text(running: Stage) -> None:
    """An upstream body with a lone surrogate escape or NaN must not become structured content the SDK chokes on."""
    doc = json.loads(echo_tools())
    doc["tools"][0]["outputSchema"] = {"type": "object", "properties": {"p": {"type": "string"}}}
    doc["toolsMeta"]["echo"]["templates"]["json-go-template"]["requestTemplate"]["url"] = "/unservable-json"
    await running.write(file_of(THIRD, "tools"), json.dumps(doc))
    wire = await running.wire("/mcp/third").open()

    envelope = await wire.call("echo", {"q": "x"})

    assert envelope["result"]["isError"] is False
    assert "structuredContent" not in envelope["result"] or envelope["result"]["structuredContent"] is None
    assert "NaN" in result_text(envelope)


# -- 2. bad input at any stage is located and visible ------------------------------------------------


BAD_FILES: dict[str, bytes] = {
    "invalid UTF-8": b'{"tools": [], "x": "\xff\xfe"}',
    "10k-deep JSON": b"[" * 10_000 + b"]" * 10_000,
    "random bytes": bytes(range(256)) * 3,
    "text that is not JSON": b"tools: [this is yaml, not json]",
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
async def test_an_invalid_spec_file_is_shown_on_admin_state_and_mcpgw_state_and_the_last_good_version_serves(
    running: Stage, case: str, capsys: pytest.CaptureFixture[str]
) -> None:
    tools_file = file_of(BYSTANDER, "tools")
    await running.write(tools_file, BAD_FILES[case])

    doc = await running.state()
    status = doc["servers"][BYSTANDER]
    reported = [p["where"] for p in doc["source_problems"]]
    assert status["phase"] == "stale" or any(tools_file.data_id in where for where in reported)
    if status["phase"] == "stale":
        assert status["last_error"]["file"] == tools_file.data_id
    assert status["tools"] == 1
    assert doc["servers"][THIRD]["phase"] == "serving"
    assert await asyncio.to_thread(main, ["state", "--url", running.url]) == 0
    assert tools_file.data_id in capsys.readouterr().out


async def test_a_broken_instances_file_is_shown_on_admin_state_and_mcpgw_state(
    running: Stage, capsys: pytest.CaptureFixture[str]
) -> None:
    await running.write(SERVICE, b'[{"ip": "127.0.0.1", "port": ')

    problems = (await running.state())["source_problems"]
    assert [p["where"] for p in problems] == ["naming/public/DEFAULT_GROUP/backend.json"]
    assert "not a valid instances file" in problems[0]["problem"]
    assert await asyncio.to_thread(main, ["state", "--url", running.url]) == 0
    assert "source problem: naming/public/DEFAULT_GROUP/backend.json" in capsys.readouterr().out


async def test_a_10k_deep_versions_file_neither_stops_discovery_of_new_servers_nor_goes_unreported(
    running: Stage,
) -> None:
    await running.write(file_of(BYSTANDER, "versions"), "[" * 10_000 + "]" * 10_000)
    newcomer = "0f6a1d2e-4444-4a6b-8c0e-000000000004"
    for key, content in server_files(newcomer, "newcomer", "1.0.0", echo_tools(), service=SERVICE.service).items():
        await running.write(key, content)

    servers = (await running.state())["servers"]
    assert servers[newcomer]["phase"] == "serving"
    assert servers[BYSTANDER]["phase"] == "stale"
    assert "nested deeper than" in servers[BYSTANDER]["last_error"]["reason"]


# -- 2. numbers from Nacos are validated -------------------------------------------------------------


async def test_a_non_finite_weight_drops_that_instance_and_every_answer_stays_json(running: Stage) -> None:
    port = running.backend_port
    await running.write(SERVICE, (
        f'[{{"ip": "127.0.0.1", "port": {port}}}, {{"ip": "127.0.0.9", "port": 1, "weight": NaN}},'
        f' {{"ip": "127.0.0.9", "port": 2, "weight": Infinity}}, {{"ip": "127.0.0.9", "port": 3, "weight": 1e999}}]'
    ))

    doc = await running.state()
    [problem] = doc["source_problems"]
    assert problem["problem"].count("is not a finite number") == 3
    listed = await running.http.get(running.url + "/api/mcp/servers")
    assert listed.status_code == 200
    assert [i["id"] for c in doc["clusters"].values() for i in c["instances"]] == [f"127.0.0.1:{port}"] * 3
    envelope = await (await running.wire("/mcp/third").open()).call("echo", {"q": "x"})
    assert envelope["result"]["isError"] is False


async def test_a_non_finite_weight_from_any_source_is_dropped_with_its_reason_on_the_server_status() -> None:
    source = MemorySource(
        configs=server_files(THIRD, "third", "1.0.0", echo_tools(), service=SERVICE.service),
        services={SERVICE: [ServiceInstance("127.0.0.1", 9, weight=1.0),
                            ServiceInstance("127.0.0.1", 10, weight=float("nan")),
                            ServiceInstance("127.0.0.1", 11, weight=float("inf"))]},
    )
    gateway = Gateway(Settings(discovery_interval=3600, demo_backend=False), source)
    async with serving(gateway.asgi()) as url, httpx.AsyncClient(trust_env=False) as http:
        async with asyncio.timeout(10):
            await gateway.adapter.ready.wait()
        state = await http.get(url + "/admin/state")
        listed = await http.get(url + "/api/mcp/servers")

    assert state.status_code == 200 and listed.status_code == 200
    status = state.json()["servers"][THIRD]
    assert status["phase"] == "serving"
    assert len(status["warnings"]) == 2
    assert all("is not a finite number" in warning for warning in status["warnings"])


# -- 4. secrets stay secret -----------------------------------------------------------------------------


def _forms(secret: str) -> list[str]:
    return [secret, quote(secret, safe=""), base64.b64encode(secret.encode()).decode(), secret[:8] + secret[8:]]


def _assert_no_secret(text: str) -> None:
    for form in _forms(SECRET):
        assert form not in text
    assert SECRET[:12] not in text  # not half of it either


@pytest.mark.parametrize(("tool", "arguments"), [
    ("echo", {"p": "x"}), ("echo500", {}), ("echo_query_key", {})])
async def test_an_echoing_backend_never_shows_the_injected_credential_to_the_client(
    running: Stage, tool: str, arguments: dict[str, Any]
) -> None:
    envelope = await _call(running, tool, **arguments)

    assert SECRET in json.dumps(running.backend.requests)  # it was injected, and echoed
    _assert_no_secret(json.dumps(envelope))
    assert "[credential removed by mcpgw]" in result_text(envelope)


async def test_the_credential_is_nowhere_a_client_or_an_operator_can_read_it(
    running: Stage, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[str] = []
    caplog.set_level(logging.DEBUG)
    with capture_logs() as events:
        for endpoint in ("/mcp", "/mcp/victim"):
            wire = await running.wire(endpoint).open()
            seen.append(json.dumps(await wire.tools()))
        for tool in ("echo", "echo500", "echo_query_key", "url_from_arg", "redirect"):
            seen.append(json.dumps(await _call(running, tool, p="x", u="http://127.0.0.3/")))
        seen.append((await running.http.get(running.url + "/admin/state")).text)
        seen.append((await running.http.get(running.url + "/metrics")).text)
        seen.append((await running.http.get(running.url + "/api/mcp/servers")).text)

    assert SECRET in json.dumps(running.backend.requests)
    _assert_no_secret("\n".join(seen))
    _assert_no_secret(repr(events))
    _assert_no_secret(caplog.text)
