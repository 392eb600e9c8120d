"""The connect API over real HTTP: a backend registers itself and a REST tool reaches it, then stops reaching it.

The gateway runs on a files tree whose weather server's ``serviceRef``
(``weather-api``) has no instances at all, so every instance a call can
reach came through ``POST /api/mcp/servers/connect``; ``running_with_source``
keeps the tree's own instance of it, to see both origins side by side.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp.client import Client
from structlog.testing import capture_logs

from mcpgw.gateway.app import Gateway
from mcpgw.gateway.demo_backend import create_demo_backend
from mcpgw.gateway.settings import DEMO_TREE, Settings
from tests.gateway import listening_socket, serving, state_until, text

CONNECT = "/api/mcp/servers/connect"
NO_INSTANCE = "no healthy instance of public/DEFAULT_GROUP/weather-api"


@dataclass
class Running:
    url: str
    gateway: Gateway
    backend_port: int
    http: httpx.AsyncClient

    def body(self, **changes: Any) -> dict[str, Any]:
        return {"serverId": "weather-1", "serverName": "weather-api", "host": "127.0.0.1",
                "port": self.backend_port, **changes}

    def client(self) -> Client:
        return Client(self.url + "/mcp/weather", mode="legacy", cache=None)



SOURCE_INSTANCE = "127.0.0.1:18081"
"""The instance the demo tree's naming file lists for weather-api."""


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[Running]:
    async with _running(tmp_path, with_source_instance=False) as running:
        yield running


@pytest.fixture
async def running_with_source(tmp_path: Path) -> AsyncIterator[Running]:
    async with _running(tmp_path, with_source_instance=True) as running:
        yield running


@contextlib.asynccontextmanager
async def _running(tmp_path: Path, *, with_source_instance: bool, **settings: Any) -> AsyncIterator[Running]:
    tree = tmp_path / "tree"
    shutil.copytree(DEMO_TREE, tree)
    if not with_source_instance:
        (tree / "naming/public/DEFAULT_GROUP/weather-api.json").unlink()
    backend_sock = listening_socket()
    gateway = Gateway(Settings(files=tree, discovery_interval=3600, upstream_timeout=1.0, **settings))
    async with (
        serving(create_demo_backend(), backend_sock),
        serving(gateway.asgi()) as url,
        httpx.AsyncClient(base_url=url, trust_env=False) as http,
    ):
        async with asyncio.timeout(5):
            await gateway.adapter.ready.wait()
        yield Running(url, gateway, backend_sock.getsockname()[1], http)


async def test_connected_backend_takes_calls_and_stops_taking_them_once_disconnected(running: Running) -> None:
    async with asyncio.timeout(10), running.client() as session:
        before = await session.call_tool("get_city", {"name": "Lisbon"})
        assert before.is_error is True
        assert NO_INSTANCE in text(before)

        connected = await running.http.post(CONNECT, json=running.body())
        assert connected.status_code == 201, connected.text
        assert connected.json() == {"serverId": "weather-1", "serverName": "weather-api",
                                    "service": "public/DEFAULT_GROUP/weather-api", "created": True,
                                    "applied": True, "instances": 1, "ttlSeconds": None}
        # No waiting: the answer came after the change was applied.
        reached = await session.call_tool("get_city", {"name": "Lisbon"})
        assert reached.is_error is not True, text(reached)
        assert reached.structured_content == {"name": "Lisbon", "country": "Portugal", "population": 545000}

        gone = await running.http.delete("/api/mcp/servers/weather-api/weather-1")
        assert gone.status_code == 200
        assert gone.json()["applied"] is True
        after = await session.call_tool("get_city", {"name": "Lisbon"})
    assert after.is_error is True
    assert NO_INSTANCE in text(after)


async def test_connected_instances_show_in_the_cluster_state_with_their_weight(running: Running) -> None:
    await running.http.post(CONNECT, json=running.body(weight=3))
    again = await running.http.post(CONNECT, json=running.body(weight=5))
    assert again.status_code == 200
    assert again.json()["created"] is False

    state = (await running.http.get("/admin/state")).json()
    [cluster] = [c for c in state["clusters"].values() if c["service"] == "public/DEFAULT_GROUP/weather-api"]
    assert [(i["url"], i["weight"]) for i in cluster["instances"]] == [
        (f"http://127.0.0.1:{running.backend_port}", 5.0)]


async def test_listing_shows_statistics_and_metadata_keys_but_no_values(running: Running) -> None:
    await running.http.post(CONNECT, json=running.body(metadata={"apiKey": "s3cret-value"}))
    await running.http.post(CONNECT, json=running.body(serverId="amap-1", serverName="amap::1.0.0",
                                                        groupName="mcp-endpoints", port=9))

    listing = await running.http.get("/api/mcp/servers")
    assert listing.status_code == 200
    doc = listing.json()
    assert doc["statistics"] == {"totalServerNames": 2, "totalServers": 2,
                                 "serverCounts": {"weather-api": 1, "mcp-endpoints@@amap::1.0.0": 1},
                                 "originCounts": {"connect": 2, "source": 0},
                                 "statusCounts": {"ACTIVE": 2, "INACTIVE": 0, "UNHEALTHY": 0}}
    [weather] = doc["servers"]["weather-api"]
    assert weather["serverId"] == "weather-1"
    assert "apiKey" in weather["metadataKeys"]
    assert "s3cret-value" not in listing.text


async def test_connect_and_disconnect_are_logged_without_metadata_values(running: Running) -> None:
    with capture_logs() as logs:
        await running.http.post(CONNECT, json=running.body(metadata={"apiKey": "s3cret-value"}))
        await running.http.delete("/api/mcp/servers/weather-api/weather-1")
    events = {entry["event"]: entry for entry in logs}
    assert events["connect.connected"]["metadata_keys"] == ["apiKey"]
    assert "connect.disconnected" in events
    assert "s3cret-value" not in repr(logs)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"port": 70000}, "port"),
        ({"port": "8080"}, "port"),
        ({"weight": -1}, "weight"),
        ({"serverId": ""}, "serverId"),
        ({"host": "two hosts"}, "host"),
        ({"metadata": {"k": 1}}, "metadata.k"),
        ({"weigth": 2}, "weigth"),
        ({"namespaceId": "dev"}, "namespaceId"),
        ({"ttlSeconds": 0}, "ttlSeconds"),
        ({"metadata": {f"k{i}": "v" for i in range(65)}}, "metadata"),
        ({"metadata": {"k": "v" * 4097}}, "metadata.k"),
        ({"metadata": {"": "v"}}, "metadata.[key]"),
        ({"ttlSeconds": "forever"}, "ttlSeconds"),
    ],
)
async def test_invalid_connect_requests_are_422_naming_the_field(
    running: Running, changes: dict[str, Any], field: str
) -> None:
    response = await running.http.post(CONNECT, json=running.body(**changes))
    assert response.status_code == 422
    doc = response.json()
    assert field in [p["field"] for p in doc["problems"]]
    assert doc["error"].startswith("invalid connect request: ")
    assert (await running.http.get("/api/mcp/servers")).json()["statistics"]["totalServers"] == 0


async def test_missing_fields_and_non_json_bodies_are_rejected(running: Running) -> None:
    missing = await running.http.post(CONNECT, json={"serverName": "weather-api"})
    assert missing.status_code == 422
    assert {p["field"] for p in missing.json()["problems"]} == {"serverId", "host", "port"}

    garbage = await running.http.post(CONNECT, content=b"{not json", headers={"content-type": "application/json"})
    assert garbage.status_code == 400
    assert "not valid JSON" in garbage.json()["error"]

    array = await running.http.post(CONNECT, content=json.dumps([1, 2]))
    assert array.status_code == 422


async def test_an_oversized_body_is_refused_with_413_before_it_is_parsed(running: Running) -> None:
    huge = json.dumps(running.body(metadata={"pad": "x" * 70_000})).encode()
    declared = await running.http.post(CONNECT, content=huge, headers={"content-type": "application/json"})
    assert declared.status_code == 413
    assert "larger than 65536 bytes" in declared.json()["error"]

    async def chunks() -> AsyncIterator[bytes]:  # no content-length: the limit holds on what arrives
        for start in range(0, len(huge), 8192):
            yield huge[start:start + 8192]

    streamed = await running.http.post(CONNECT, content=chunks(), headers={"content-type": "application/json"})
    assert streamed.status_code == 413
    assert (await running.http.get("/api/mcp/servers")).json()["statistics"]["totalServers"] == 0


async def test_disconnecting_an_unknown_server_is_404(running: Running) -> None:
    await running.http.post(CONNECT, json=running.body())

    unknown_id = await running.http.delete("/api/mcp/servers/weather-api/nope")
    unknown_name = await running.http.delete("/api/mcp/servers/nope/weather-1")
    assert (unknown_id.status_code, unknown_name.status_code) == (404, 404)
    assert "no server 'nope' of service 'weather-api' is connected" in unknown_id.json()["error"]
    assert (await running.http.get("/api/mcp/servers")).json()["statistics"]["totalServers"] == 1


async def test_source_instances_are_listed_next_to_connected_ones_and_cannot_be_disconnected(
    running_with_source: Running,
) -> None:
    running = running_with_source
    connected = await running.http.post(CONNECT, json=running.body())
    assert connected.json()["instances"] == 2

    doc = (await running.http.get("/api/mcp/servers")).json()
    assert [(s["serverId"], s["origin"]) for s in doc["servers"]["weather-api"]] == [
        (SOURCE_INSTANCE, "source"), ("weather-1", "connect")]
    expected = {"totalServerNames": 1, "totalServers": 2, "serverCounts": {"weather-api": 2},
                "originCounts": {"connect": 1, "source": 1},
                "statusCounts": {"ACTIVE": 2, "INACTIVE": 0, "UNHEALTHY": 0}}
    assert doc["statistics"] == expected

    refused = await running.http.delete(f"/api/mcp/servers/weather-api/{SOURCE_INSTANCE}")
    assert refused.status_code == 409
    assert refused.json()["error"] == (
        f"server '{SOURCE_INSTANCE}' of service 'weather-api' comes from the gateway's source (Nacos or the files "
        "tree), not from the connect API: deregister it there")
    assert (await running.http.get("/api/mcp/servers")).json()["statistics"] == expected
    assert (await running.http.get("/admin/state")).json()["server_register"] == expected

    gone = await running.http.delete("/api/mcp/servers/weather-api/weather-1")
    assert gone.status_code == 200
    assert gone.json()["instances"] == 1
    listed = (await running.http.get("/api/mcp/servers")).json()["servers"]
    assert [(s["serverId"], s["origin"]) for s in listed["weather-api"]] == [(SOURCE_INSTANCE, "source")]


def _guarded_api(token: str | None) -> Any:
    from starlette.applications import Starlette

    from mcpgw.gateway.connect_api import ConnectApi
    from mcpgw.registry.server_register import ServerRegister
    from mcpgw.remote.memory import MemorySource
    from mcpgw.remote.overlay import RegisteringSource

    register = ServerRegister()
    api = ConnectApi(register, RegisteringSource(MemorySource(), register), token=token, settle_timeout=0.1)
    return Starlette(routes=api.routes()), register


@pytest.mark.parametrize("method", ["GET", "POST", "DELETE"])
async def test_without_a_token_callers_on_other_hosts_are_refused_and_nothing_is_registered(method: str) -> None:
    app, register = _guarded_api(None)
    transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as http:
        path = {"GET": "/api/mcp/servers", "POST": CONNECT, "DELETE": "/api/mcp/servers/weather-api/w1"}[method]
        answer = await http.request(method, path, json={"serverId": "w1", "serverName": "weather-api",
                                                        "host": "10.0.0.9", "port": 80} if method == "POST" else None)

    assert answer.status_code == 403
    assert "connect_token" in answer.json()["error"]
    assert register.count() == 0


async def test_with_a_token_only_requests_bearing_it_are_accepted_from_any_host() -> None:
    token = "s3cret-token-0123456789"
    app, register = _guarded_api(token)
    body = {"serverId": "w1", "serverName": "weather-api", "host": "10.0.0.9", "port": 80}
    transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as http:
        missing = await http.post(CONNECT, json=body)
        wrong = await http.post(CONNECT, json=body, headers={"Authorization": "Bearer not-the-token"})
        assert register.count() == 0
        right = await http.post(CONNECT, json=body, headers={"Authorization": f"Bearer {token}"})

    assert (missing.status_code, wrong.status_code) == (401, 401)
    assert token not in missing.text and token not in wrong.text
    assert right.status_code == 201, right.text
    assert register.count() == 1


async def test_with_a_token_even_loopback_callers_must_present_it() -> None:
    app, register = _guarded_api("s3cret-token-0123456789")
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as http:
        answer = await http.post(CONNECT, json={"serverId": "w1", "serverName": "weather-api",
                                                "host": "127.0.0.1", "port": 80})

    assert answer.status_code == 401
    assert register.count() == 0


def _weather_instances(gateway: Gateway) -> list[str]:
    clusters = gateway.store.current.clusters.values()
    return [f"{i.host}:{i.port}" for c in clusters if c.service == "public/DEFAULT_GROUP/weather-api"
            for i in c.instances]


async def test_a_lease_ends_the_connection_unless_the_request_is_sent_again_in_time(running: Running) -> None:
    now = [1000.0]
    api = running.gateway.connect_api
    api.clock = lambda: now[0]
    address = f"127.0.0.1:{running.backend_port}"

    connected = await running.http.post(CONNECT, json=running.body(ttlSeconds=10))
    assert (connected.status_code, connected.json()["ttlSeconds"]) == (201, 10)
    [listed] = (await running.http.get("/api/mcp/servers")).json()["servers"]["weather-api"]
    assert listed["expiresInSeconds"] == 10

    now[0] += 6
    renewed = await running.http.post(CONNECT, json=running.body(ttlSeconds=10))
    assert (renewed.status_code, renewed.json()["created"]) == (200, False)
    now[0] += 6  # 12 s after connecting, 6 s after the renewal
    assert api.expire_due() == []
    assert _weather_instances(running.gateway) == [address]

    now[0] += 5
    with capture_logs() as logs:
        assert api.expire_due() == [("weather-api", "weather-1")]
    assert "connect.expired" in [e["event"] for e in logs]
    async with asyncio.timeout(5):
        await state_until(running.gateway.store, lambda: not _weather_instances(running.gateway))
        async with running.client() as session:
            after = await session.call_tool("get_city", {"name": "Lisbon"})
    assert NO_INSTANCE in text(after)
    assert (await running.http.get("/api/mcp/servers")).json()["statistics"]["totalServers"] == 0


async def test_disconnecting_or_reconnecting_without_a_ttl_ends_the_lease(running: Running) -> None:
    now = [1000.0]
    api = running.gateway.connect_api
    api.clock = lambda: now[0]

    await running.http.post(CONNECT, json=running.body(ttlSeconds=10))
    assert (await running.http.delete("/api/mcp/servers/weather-api/weather-1")).status_code == 200
    await running.http.post(CONNECT, json=running.body(ttlSeconds=10))
    again = await running.http.post(CONNECT, json=running.body())
    assert again.json()["ttlSeconds"] is None
    [listed] = (await running.http.get("/api/mcp/servers")).json()["servers"]["weather-api"]
    assert "expiresInSeconds" not in listed

    now[0] += 3600
    assert api.expire_due() == []
    assert _weather_instances(running.gateway) == [f"127.0.0.1:{running.backend_port}"]


async def test_an_unrenewed_lease_ends_on_its_own_while_the_gateway_runs(running: Running) -> None:
    connected = await running.http.post(CONNECT, json=running.body(ttlSeconds=1))
    assert connected.status_code == 201
    assert _weather_instances(running.gateway)
    async with asyncio.timeout(5):  # the lease is 1 s; nothing renews it
        await state_until(running.gateway.store, lambda: not _weather_instances(running.gateway))
    assert (await running.http.get("/api/mcp/servers")).json()["statistics"]["totalServers"] == 0


async def test_the_gateway_default_lease_applies_when_a_request_names_none(tmp_path: Path) -> None:
    async with _running(tmp_path, with_source_instance=False, connect_ttl=30) as running:
        connected = await running.http.post(CONNECT, json=running.body())
        explicit = await running.http.post(CONNECT, json=running.body(serverId="weather-2", ttlSeconds=5))
    assert connected.json()["ttlSeconds"] == 30
    assert explicit.json()["ttlSeconds"] == 5


# -- hostile bodies (issue 11) -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "hint"),
    [
        ("127.0.0.1:9999", "give the port in 'port'"),
        ("127.0.0.1/x?y#", "without scheme, user, path or query"),
        ("http://127.0.0.1/", "without scheme, user, path or query"),
        ("user@127.0.0.1", "without scheme, user, path or query"),
        ("127.1", "IP address or a DNS host name"),
        ("-bad-.example", "IP address or a DNS host name"),
        ("a..b", "IP address or a DNS host name"),
        ("[::1]", "IP address or a DNS host name"),
    ],
)
async def test_a_host_that_is_not_an_ip_or_a_host_name_is_refused_naming_the_field(
    running: Running, host: str, hint: str
) -> None:
    response = await running.http.post(CONNECT, json=running.body(host=host))
    assert response.status_code == 422
    [problem] = response.json()["problems"]
    assert problem["field"] == "host" and hint in problem["message"]
    assert (await running.http.get("/api/mcp/servers")).json()["statistics"]["totalServers"] == 0


@pytest.mark.parametrize("host", ["::1", "localhost", "backend-1.svc.cluster.local", "10.0.0.7"])
async def test_ip_addresses_and_host_names_are_accepted_as_hosts(running: Running, host: str) -> None:
    response = await running.http.post(CONNECT, json=running.body(host=host))
    assert response.status_code == 201, response.text


@pytest.mark.parametrize(
    "changes",
    [{"serverId": "a/b"}, {"serverId": ".."}, {"serverName": "../weather-api"}, {"serverName": "a b"},
     {"groupName": "g/h"}, {"serverId": "-x"}],
)
async def test_names_outside_the_documented_charset_are_refused(running: Running, changes: dict[str, Any]) -> None:
    response = await running.http.post(CONNECT, json=running.body(**changes))
    assert response.status_code == 422
    [problem] = response.json()["problems"]
    assert problem["field"] == next(iter(changes)) and "letters, digits" in problem["message"]


async def test_every_accepted_name_can_be_deleted_through_the_path(running: Running) -> None:
    body = running.body(serverId="127.0.0.1:8000", serverName="amap-maps::1.0.0", groupName="mcp_endpoints")
    assert (await running.http.post(CONNECT, json=body)).status_code == 201
    deleted = await running.http.delete("/api/mcp/servers/mcp_endpoints@@amap-maps::1.0.0/127.0.0.1:8000")
    assert deleted.status_code == 200 and deleted.json()["removed"] is True


async def test_a_body_nested_twenty_thousand_deep_is_a_400_naming_where(running: Running) -> None:
    deep = b'{"serverId": "w", "metadata": ' + b"[" * 20_000 + b"]" * 20_000 + b"}"
    response = await running.http.post(CONNECT, content=deep, headers={"content-type": "application/json"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert "more than 8 levels deep (at byte 37)" in error and "connect_max_depth" in error


async def test_brackets_inside_strings_do_not_count_as_depth(running: Running) -> None:
    response = await running.http.post(CONNECT, json=running.body(metadata={"k": "[[[[[[[[[[{{{{{{{{{{\\\"["}))
    assert response.status_code == 201, response.text


async def test_body_and_depth_limits_come_from_the_settings(tmp_path: Path) -> None:
    async with _running(tmp_path, with_source_instance=False, connect_max_body=2048, connect_max_depth=2) as running:
        big = await running.http.post(CONNECT, json=running.body(metadata={"pad": "x" * 3000}))
        assert big.status_code == 413 and "larger than 2048 bytes (connect_max_body)" in big.json()["error"]
        deep = await running.http.post(CONNECT, json=running.body(metadata={"k": "v"}, extra=[[1]]))
        assert deep.status_code == 400 and "more than 2 levels deep" in deep.json()["error"]
