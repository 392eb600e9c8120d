"""The protocol double is held to the real Nacos 3: the same conversations against both, compared.

Each test runs one conversation (config get/listen/push/delete, naming
register/subscribe/push down to zero, the MCP admin API's create / list /
draft / publish / delete) against the real server and against a fresh double,
records what a client observes, normalised only where the two may legitimately
differ (generated ids, timestamps, ports), and asserts the two records are
equal.  So every behaviour the other tests rely on from the double is one the
real server has, and the double cannot drift again unnoticed.

Steps that the real server applies asynchronously (a config read right after a
write goes to its cache, which its dump task fills) are awaited with a bound:
the record says what is eventually observed, which is what clients rely on.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from mcpgw.remote.base import ConfigKey, ServiceInstance, ServiceKey, server_spec_key, tools_spec_key, versions_key
from mcpgw.remote.nacos import NacosSource
from tests.support.nacos_double import NacosDouble
from tests.support.nacos_target import NacosTarget, eventually

BOUND = 10.0


class Recorder:
    def __init__(self) -> None:
        self.calls: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()

    async def __call__(self, *args: Any) -> None:
        self.calls.put_nowait(args)

    async def next(self) -> tuple[Any, ...]:
        async with asyncio.timeout(BOUND):
            return await self.calls.get()


@pytest.fixture
async def double() -> AsyncIterator[NacosTarget]:
    async with NacosDouble() as running:
        yield NacosTarget("double", running.server_addr, None, None, double=running)


@pytest.fixture
async def clients() -> AsyncIterator[Callable[[NacosTarget, Path], Awaitable[NacosSource]]]:
    started: list[NacosSource] = []

    async def make(target: NacosTarget, where: Path) -> NacosSource:
        source = NacosSource(
            target.server_addr,
            username=target.username,
            password=target.password,
            cache_dir=where / "cache",
            log_dir=where / "logs",
        )
        await source.start()
        started.append(source)
        return source

    yield make
    for source in started:
        await source.stop()


Conversation = Callable[[NacosTarget, Path, Callable[[NacosTarget, Path], Awaitable[NacosSource]]], Awaitable[Any]]


async def both(
    conversation: Conversation,
    real: NacosTarget,
    double: NacosTarget,
    tmp_path: Path,
    clients: Callable[[NacosTarget, Path], Awaitable[NacosSource]],
) -> tuple[Any, Any]:
    on_real = await conversation(real, tmp_path / "real", clients)
    on_double = await conversation(double, tmp_path / "double", clients)
    return on_real, on_double


# ---------------------------------------------------------------- config


async def config_conversation(
    target: NacosTarget, where: Path, clients: Callable[[NacosTarget, Path], Awaitable[NacosSource]]
) -> list[Any]:
    writer, reader = await clients(target, where / "writer"), await clients(target, where / "reader")
    key = ConfigKey("public", "mcpgw-contract", f"{uuid.uuid4().hex[:8]}.json")
    record: list[Any] = [("missing", await reader.get_config(key))]

    await writer.publish_config(key, '{"v": "A"}')
    record.append(("read after write", await eventually(lambda: reader.get_config(key), lambda c: c is not None)))

    changes = Recorder()
    await reader.listen_config(key, changes)
    await writer.publish_config(key, '{"v": "B"}')
    record.append(("pushed", (await changes.next())[1]))
    await writer.publish_config(key, '{"v": "B"}')  # the same content again: no push expected
    await writer.publish_config(key, '{"v": "C"}')
    record.append(("pushed after a same-content write", (await changes.next())[1]))

    await writer.remove_config(key)
    record.append(("pushed on delete", (await changes.next())[1]))
    record.append(("read after delete", await eventually(lambda: reader.get_config(key), lambda c: c is None)))
    return record


async def test_config_get_listen_push_and_delete_agree(
    real_nacos: NacosTarget, double: NacosTarget, tmp_path: Path, clients: Any
) -> None:
    on_real, on_double = await both(config_conversation, real_nacos, double, tmp_path, clients)
    assert on_real == [
        ("missing", None),
        ("read after write", '{"v": "A"}'),
        ("pushed", '{"v": "B"}'),
        ("pushed after a same-content write", '{"v": "C"}'),
        ("pushed on delete", ""),
        ("read after delete", None),
    ]
    assert on_double == on_real


# ---------------------------------------------------------------- naming


def observed(instances: tuple[ServiceInstance, ...], ports: dict[int, str]) -> list[dict[str, Any]]:
    return sorted(
        (
            {
                "port": ports.get(i.port, i.port),
                "ip": i.ip,
                "weight": i.weight,
                "healthy": i.healthy,
                "enabled": i.enabled,
                "ephemeral": i.ephemeral,
                "metadata": dict(i.metadata),
            }
            for i in instances
        ),
        key=lambda seen: str(seen["port"]),
    )


async def naming_conversation(
    target: NacosTarget, where: Path, clients: Callable[[NacosTarget, Path], Awaitable[NacosSource]]
) -> list[Any]:
    first_writer, second_writer = await clients(target, where / "first"), await clients(target, where / "second")
    reader = await clients(target, where / "reader")
    service = ServiceKey("public", "mcpgw-contract", f"svc-{uuid.uuid4().hex[:8]}")
    ports = {41001: "first", 41002: "second", 41003: "first-moved"}
    record: list[Any] = [("listed before", observed(tuple(await reader.list_instances(service)), ports))]
    pushes = Recorder()
    await reader.subscribe(service, pushes)

    await first_writer.register_instance(service, "127.0.0.1", 41001, weight=2.0, metadata={"protocol": "https"})
    record.append(("pushed on register", observed((await pushes.next())[1], ports)))
    await second_writer.register_instance(service, "127.0.0.1", 41002)
    record.append(("pushed on a register by another client", observed((await pushes.next())[1], ports)))
    listed = await eventually(lambda: reader.list_instances(service), lambda found: len(found) == 2)
    record.append(("listed", observed(tuple(listed), ports)))
    # One connection publishes one ephemeral instance per service: registering again replaces it.
    await first_writer.register_instance(service, "127.0.0.1", 41003)
    record.append(("pushed on a second register by the same client", observed((await pushes.next())[1], ports)))

    await first_writer.deregister_instance(service, "127.0.0.1", 41003)
    record.append(("pushed on deregister", observed((await pushes.next())[1], ports)))
    await second_writer.deregister_instance(service, "127.0.0.1", 41002)
    record.append(("pushed on the last deregister", observed((await pushes.next())[1], ports)))
    return record


async def test_naming_register_subscribe_and_push_down_to_zero_agree(
    real_nacos: NacosTarget, double: NacosTarget, tmp_path: Path, clients: Any
) -> None:
    on_real, on_double = await both(naming_conversation, real_nacos, double, tmp_path, clients)
    first = {"port": "first", "ip": "127.0.0.1", "weight": 2.0, "healthy": True, "enabled": True,
             "ephemeral": True, "metadata": {"protocol": "https"}}
    second = {**first, "port": "second", "weight": 1.0, "metadata": {}}
    moved = {**second, "port": "first-moved"}
    assert on_real == [
        ("listed before", []),
        ("pushed on register", [first]),
        ("pushed on a register by another client", [first, second]),
        ("listed", [first, second]),
        ("pushed on a second register by the same client", [moved, second]),
        ("pushed on deregister", [second]),
        ("pushed on the last deregister", []),
    ]
    assert on_double == on_real


# ---------------------------------------------------------------- the MCP admin API


def _normalised(value: Any, server_id: str, name: str) -> Any:
    """Generated ids, the test's unique name and timestamps out; everything else exactly as stored."""
    if isinstance(value, dict):
        return {
            k: ("<date>" if k == "release_date" and v else _normalised(v, server_id, name))
            for k, v in value.items()
            if k not in ("createTime", "modifyTime")
        }
    if isinstance(value, list):
        return [_normalised(v, server_id, name) for v in value]
    if isinstance(value, str):
        return value.replace(server_id, "<id>").replace(name, "<name>")
    return value


async def mcp_admin_conversation(
    target: NacosTarget, where: Path, clients: Callable[[NacosTarget, Path], Awaitable[NacosSource]]
) -> list[Any]:
    client = await clients(target, where / "admin")
    name = f"contract-{uuid.uuid4().hex[:8]}"
    service = f"{name}-api"

    async def call(method: str, params: dict[str, str]) -> Any:
        response = await client.admin_request(method, "/nacos/v3/admin/ai/mcp", params, f"{method} {name}")
        answer = response.json()
        return {"http": response.status_code, "code": answer.get("code"), "data": answer.get("data")}

    def payload(version: str, tool: str) -> dict[str, str]:
        spec = {
            "name": name,
            "protocol": "http",
            "frontProtocol": "mcp-streamable",
            "description": f"contract {version}",
            "versionDetail": {"version": version},
            "remoteServerConfig": {"exportPath": ""},
            "enabled": True,
        }
        tools = {
            "tools": [
                {
                    "name": tool,
                    "description": f"{tool} tool",
                    "inputSchema": {"type": "object", "properties": {"q": {"type": "string"}}},
                    "outputSchema": {"type": "object"},
                    "annotations": {"readOnlyHint": True},
                }
            ],
            "toolsMeta": {
                tool: {
                    "templates": {"json-go-template": {"requestTemplate": {"url": "/x", "method": "GET"}}},
                },
            },
            "securitySchemes": [{"id": "k", "type": "apiKey", "in": "header", "name": "X-Key",
                                 "defaultCredential": "secret-value"}],
        }
        endpoint = {"type": "REF", "data": {"namespaceId": "public", "groupName": "DEFAULT_GROUP",
                                            "serviceName": service}}
        return {
            "namespaceId": "public",
            "mcpName": name,
            "serverSpecification": json.dumps(spec),
            "toolSpecification": json.dumps(tools),
            "endpointSpecification": json.dumps(endpoint),
        }

    async def listed() -> list[dict[str, Any]]:
        response = await client.admin_request(
            "GET", "/nacos/v3/admin/ai/mcp/list",
            {"namespaceId": "public", "pageNo": "1", "pageSize": "100", "mcpName": name, "search": "accurate"},
            "list",
        )
        return [item for item in response.json()["data"]["pageItems"] if item.get("name") == name]

    async def stored(server_id: str, *versions: str) -> dict[str, Any]:
        keys = [versions_key(server_id)]
        for version in versions:
            keys += [server_spec_key(server_id, version), tools_spec_key(server_id, version)]
        found = {}
        for key in keys:
            content = await client.get_config(key)
            found[key.group + "/" + key.data_id.replace(server_id, "<id>")] = json.loads(content) if content else None
        return found

    record: list[Any] = []
    created = await call("POST", payload("1.0.0", "alpha"))
    server_id = str(created["data"])
    record.append(("create", {**created, "data": "<id>"}))
    items = await eventually(listed, lambda found: bool(found))
    record.append(("listed", _normalised(items, server_id, name)))
    record.append(("stored", _normalised(await stored(server_id, "1.0.0"), server_id, name)))

    record.append(("draft", await call("PUT", {**payload("1.1.0", "beta"), "latest": "false"})))
    record.append(("stored after draft", _normalised(await stored(server_id, "1.1.0"), server_id, name)))
    record.append(("publish", await call("PUT", {**payload("1.1.0", "beta"), "latest": "true"})))
    record.append(("republish the first", await call("PUT", {**payload("1.0.0", "alpha"), "latest": "true"})))
    versions = await client.get_config(versions_key(server_id))
    record.append(("versions after republishing", _normalised(json.loads(versions or "null"), server_id, name)))

    record.append(("delete", await call("DELETE", {"namespaceId": "public", "mcpId": server_id})))
    record.append(("listed after delete", await eventually(listed, lambda found: not found)))
    gone = await eventually(lambda: client.get_config(versions_key(server_id)), lambda content: content is None)
    record.append(("versions file after delete", gone))
    return record


async def test_mcp_admin_create_list_draft_publish_delete_agree(
    real_nacos: NacosTarget, double: NacosTarget, tmp_path: Path, clients: Any
) -> None:
    on_real, on_double = await both(mcp_admin_conversation, real_nacos, double, tmp_path, clients)
    as_dict = dict(on_real)
    stored_tools = as_dict["stored"]["mcp-tools/<id>-1.0.0-mcp-tools.json"]
    # What mcpgw relies on and works around (adapter/publish_targets.py): Nacos 3.1 keeps only name,
    # description and inputSchema of a tool; an absent toolsMeta "enabled" is stored as true.
    assert stored_tools["tools"] == [
        {"name": "alpha", "description": "alpha tool",
         "inputSchema": {"type": "object", "properties": {"q": {"type": "string"}}}}
    ]
    assert stored_tools["toolsMeta"]["alpha"]["enabled"] is True
    versions_after = as_dict["versions after republishing"]
    assert versions_after["latestPublishedVersion"] == "1.0.0"
    assert [(d["version"], d["is_latest"]) for d in versions_after["versionDetails"]] == [
        ("1.0.0", True), ("1.1.0", True)  # sic: Nacos stops clearing is_latest at the published version
    ]
    assert as_dict["listed after delete"] == []
    assert as_dict["versions file after delete"] is None
    for (step, seen_real), (_, seen_double) in zip(on_real, on_double, strict=True):
        assert seen_double == seen_real, step
