"""``NacosSource`` lists MCP servers with Nacos' MCP listing where there is one, else by searching versions files.

Every test runs against the protocol double and a real Nacos 3 (see this
directory's conftest): with the AI module on (Nacos' own listing) and off
(no ``/nacos/v3/admin/ai/*``, as on Nacos 2.x), where the versions files are
found by the v3 config search, or by the Nacos 2.x v1 search when a source is
told to use that one.  Each test writes into a namespace of its own, so a real
server's data from earlier tests does not count.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from mcpgw.adapter.publish import Publisher
from mcpgw.adapter.publish_targets import nacos_target
from mcpgw.gateway.app import Gateway
from mcpgw.gateway.settings import Settings
from mcpgw.registry.errors import SourceNotFound
from mcpgw.remote.base import ConfigKey, McpServerInfo, ServiceKey, versions_key
from mcpgw.remote.nacos import NacosSource
from mcpgw.remote.nacos_listing import CONFIG_SEARCH, CONFIG_SEARCH_V1, MAX_VERSIONS_BYTES, MCP_ADMIN, ListingApi
from tests.gateway import listening_socket, serving
from tests.gateway.test_nacos_serve import Publishing, rest_tools
from tests.listing.conftest import ListingTarget
from tests.support.builders import versions_doc
from tests.support.nacos_target import NacosTarget

BOUND = 10.0
"""Every wait of a test (the listing is polled every 50 ms here; a real server on a loaded 2-core machine)."""
SEARCHES = {"v3-search": (CONFIG_SEARCH,), "v1-search": (CONFIG_SEARCH_V1,)}


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@contextlib.asynccontextmanager
async def started(target: NacosTarget, tmp_path: Path, **options: Any) -> AsyncIterator[NacosSource]:
    source = NacosSource(
        target.server_addr,
        username=target.username,
        password=target.password,
        cache_dir=tmp_path / unique("cache"),
        log_dir=tmp_path / unique("logs"),
        listing_poll_interval=0.05,
        **options,
    )
    await source.start()
    try:
        yield source
    finally:
        await source.stop()


async def fresh_namespace(target: NacosTarget, source: NacosSource) -> str:
    """A namespace only this test writes to (a real Nacos serves only namespaces that were created)."""
    namespace = unique("mcpgw-listing")
    if target.double is None:
        created = await source.admin_request(
            "POST", "/nacos/v3/admin/core/namespace", {"namespaceId": namespace, "namespaceName": namespace},
            "create a test namespace",
        )
        assert created.status_code == 200, created.text
    return namespace


async def publish_versions(source: NacosSource, namespace: str, server_id: str, content: str) -> ConfigKey:
    key = versions_key(server_id, namespace)
    await source.publish_config(key, content)
    return key


def by_id(servers: list[McpServerInfo]) -> dict[str, McpServerInfo]:
    assert len({s.id for s in servers}) == len(servers), "a server listed twice"
    return {s.id: s for s in servers}


# ---------------------------------------------------------------- which listing, chosen and logged


async def test_the_listing_mode_is_chosen_by_the_first_listing_and_logged_once(
    listing_nacos: ListingTarget, tmp_path: Path
) -> None:
    async with started(listing_nacos.nacos, tmp_path) as source:
        assert source.listing_status()["mode"] is None
        with capture_logs() as logs:
            await source.list_mcp_servers()
            await source.list_mcp_servers()
        status = source.listing_status()

    chosen = [e for e in logs if e["event"] == "nacos.listing_mode"]
    assert len(chosen) == 1, chosen
    assert chosen[0]["mode"] == listing_nacos.mode
    assert chosen[0]["server"] == listing_nacos.nacos.server_addr
    assert chosen[0]["log_level"] == "info"
    if listing_nacos.mode == "mcp-admin":
        assert chosen[0]["absent"] == []
        assert status["api"] == "GET /nacos/v3/admin/ai/mcp/list"
    else:
        assert chosen[0]["absent"] == ["GET /nacos/v3/admin/ai/mcp/list answered 404"]
        assert status["api"] == "GET /nacos/v3/admin/cs/config/list"
    assert status["mode"] == listing_nacos.mode
    assert status["server"] == f"http://{listing_nacos.nacos.server_addr}"


async def test_a_server_published_through_the_mcp_admin_api_is_listed_the_same_by_both_modes(
    nacos: NacosTarget, tmp_path: Path
) -> None:
    name, service = unique("weather"), ServiceKey("public", "DEFAULT_GROUP", unique("weather-api"))
    async with nacos_target(nacos.server_addr, username=nacos.username, password=nacos.password) as target:
        publishing = Publishing(Publisher(target))
        await publishing.create(name, "1.0.0", service, rest_tools("forecast"))
        try:
            async with started(nacos, tmp_path) as source, started(
                nacos, tmp_path, listing_apis=(CONFIG_SEARCH,)
            ) as searching:
                listed = [s for s in await source.list_mcp_servers() if s.name == name]
                searched = [s for s in await searching.list_mcp_servers() if s.name == name]
        finally:
            await publishing.delete(name)

    assert len(listed) == 1
    assert searched == listed


async def test_a_nacos_without_any_listing_api_fails_the_listing_saying_what_each_answered(
    nacos_without_listing: NacosTarget, tmp_path: Path
) -> None:
    async with started(nacos_without_listing, tmp_path, listing_apis=(MCP_ADMIN,)) as source:
        with pytest.raises(SourceNotFound) as caught:
            await source.list_mcp_servers()
    message = str(caught.value)
    assert f"Nacos at http://{nacos_without_listing.server_addr} offers no way to list MCP servers" in message
    assert "GET /nacos/v3/admin/ai/mcp/list answered 404" in message


# ---------------------------------------------------------------- the search: every page, every change


@pytest.mark.parametrize("search", SEARCHES.values(), ids=SEARCHES.keys())
async def test_the_search_lists_every_server_over_many_pages(
    nacos_without_listing: NacosTarget, tmp_path: Path, search: tuple[ListingApi]
) -> None:
    async with started(nacos_without_listing, tmp_path, listing_apis=search, list_page_size=3) as source:
        namespace = await fresh_namespace(nacos_without_listing, source)
        ids = [f"{n:02d}-{uuid.uuid4()}" for n in range(8)]
        for n, server_id in enumerate(ids):
            await publish_versions(source, namespace, server_id, versions_doc(server_id, f"s{n}", f"1.{n}.0",
                                                                              [f"1.{n}.0"]))
        # Not versions files, or not in this namespace: never listed.
        await source.publish_config(ConfigKey(namespace, "mcp-server-versions", "notes.json"), "{}")
        await source.publish_config(ConfigKey(namespace, "mcp-server", f"{ids[0]}-1.0.0-mcp-server.json"), "{}")
        await source.publish_config(ConfigKey(namespace, "other-group", f"{uuid.uuid4()}-mcp-versions.json"), "{}")

        servers = by_id(await source.list_mcp_servers(namespace))
        elsewhere = await source.list_mcp_servers(await fresh_namespace(nacos_without_listing, source))

    assert sorted(servers) == ids  # eight servers over three pages of three
    assert servers[ids[5]] == McpServerInfo(
        id=ids[5], name="s5", namespace=namespace, protocol="http", front_protocol="mcp-streamable", enabled=True,
        version="1.5.0",
    )
    assert elsewhere == []


@pytest.mark.parametrize("search", SEARCHES.values(), ids=SEARCHES.keys())
async def test_the_search_follows_changed_and_deleted_versions_files(
    nacos_without_listing: NacosTarget, tmp_path: Path, search: tuple[ListingApi]
) -> None:
    async with started(nacos_without_listing, tmp_path, listing_apis=search) as source:
        namespace = await fresh_namespace(nacos_without_listing, source)
        kept, dropped = str(uuid.uuid4()), str(uuid.uuid4())
        await publish_versions(source, namespace, kept, versions_doc(kept, "kept", "1.0.0", ["1.0.0"]))
        await publish_versions(source, namespace, dropped, versions_doc(dropped, "dropped", "1.0.0", ["1.0.0"]))
        before = by_id(await source.list_mcp_servers(namespace))

        await publish_versions(source, namespace, kept, versions_doc(kept, "kept", "2.0.0", ["1.0.0", "2.0.0"]))
        await source.remove_config(versions_key(dropped, namespace))
        after = by_id(await source.list_mcp_servers(namespace))

    assert sorted(before) == sorted([kept, dropped])
    assert before[kept].version == "1.0.0"
    assert list(after) == [kept]
    assert after[kept].version == "2.0.0"


async def test_the_v3_search_reads_a_versions_file_again_only_when_its_md5_changed(
    double_without_listing: NacosTarget, tmp_path: Path
) -> None:
    double = double_without_listing.need_double("count the config reads the server answers")
    async with started(double_without_listing, tmp_path) as source:
        ids = [str(uuid.uuid4()) for _ in range(3)]
        for server_id in ids:
            await publish_versions(source, "public", server_id, versions_doc(server_id, "s", "1.0.0", ["1.0.0"]))

        def reads() -> int:
            return double.http_requests_seen.count("/nacos/v3/admin/cs/config")

        await source.list_mcp_servers()
        first = reads()
        await source.list_mcp_servers()
        unchanged = reads() - first
        await publish_versions(source, "public", ids[1], versions_doc(ids[1], "renamed", "1.0.0", ["1.0.0"]))
        listed = by_id(await source.list_mcp_servers())
        changed = reads() - first

    assert first >= 3
    assert unchanged == 0
    assert changed == 1
    assert listed[ids[1]].name == "renamed"


@pytest.mark.parametrize("search", SEARCHES.values(), ids=SEARCHES.keys())
async def test_watch_listing_polls_the_search_and_calls_back_when_a_server_appears(
    nacos_without_listing: NacosTarget, tmp_path: Path, search: tuple[ListingApi]
) -> None:
    async with started(nacos_without_listing, tmp_path, listing_apis=search) as source:
        called = asyncio.Event()

        async def on_listing() -> None:
            called.set()

        await source.watch_listing(on_listing)
        assert not called.is_set()
        server_id = str(uuid.uuid4())
        await publish_versions(source, "public", server_id, versions_doc(server_id, unique("new"), "1.0.0", ["1.0.0"]))
        try:
            async with asyncio.timeout(BOUND):
                await called.wait()
            listed = {s.id for s in await source.list_mcp_servers()}
        finally:
            await source.remove_config(versions_key(server_id))
    assert server_id in listed


# ---------------------------------------------------------------- hostile versions files


def hostile_versions(namespace: str) -> dict[str, str]:
    """Versions files that are wrong each in its own way, by the id their dataId names."""
    def ident(label: str) -> str:
        return f"{label}-{uuid.uuid4().hex[:8]}"

    wrong_types, other_id, huge = ident("wrong-types"), ident("other-id"), ident("huge")
    return {
        ident("not-json"): "{not json",
        ident("deep"): "[" * 20_000 + "]" * 20_000,
        ident("array"): "[1, 2]",
        wrong_types: json.dumps({"id": wrong_types, "name": ["x"], "protocol": 7, "enabled": "yes"}),
        other_id: json.dumps({"id": "someone-else", "name": "impostor"}),
        huge: json.dumps({"id": huge, "name": "huge", "description": "x" * MAX_VERSIONS_BYTES}),
    }


@pytest.mark.parametrize("search", SEARCHES.values(), ids=SEARCHES.keys())
async def test_hostile_versions_files_are_reported_where_they_are_and_never_stop_the_listing_of_others(
    nacos_without_listing: NacosTarget, tmp_path: Path, search: tuple[ListingApi]
) -> None:
    async with started(nacos_without_listing, tmp_path, listing_apis=search, list_page_size=4) as source:
        namespace = await fresh_namespace(nacos_without_listing, source)
        good = str(uuid.uuid4())
        await publish_versions(source, namespace, good, versions_doc(good, "good", "1.0.0", ["1.0.0"]))
        hostile = hostile_versions(namespace)
        for server_id, content in hostile.items():
            await publish_versions(source, namespace, server_id, content)
        nameless = ConfigKey(namespace, "mcp-server-versions", "-mcp-versions.json")
        await source.publish_config(nameless, versions_doc("", "nameless", "1.0.0", ["1.0.0"]))

        with capture_logs() as logs:
            servers = by_id(await source.list_mcp_servers(namespace))
            again = by_id(await source.list_mcp_servers(namespace))
        status = source.listing_status()

    # Listed under the id their dataId names, so that their listeners report the error; the
    # versions file whose dataId names no server is left out.
    assert sorted(servers) == sorted([good, *hostile])
    assert again == servers
    assert servers[good].name == "good"
    assert {sid: s.name for sid, s in servers.items() if sid != good} == {
        sid: ("impostor" if sid.startswith("other-id") else "") for sid in hostile
    }
    problems = {(p["where"], p["path"]) for p in status["problems"]}

    def at(server_id: str) -> str:
        return f"config {namespace}/mcp-server-versions/{server_id}-mcp-versions.json (the versions file of MCP " \
               f"server {server_id})"

    by_label = {sid.rsplit("-", 1)[0]: sid for sid in hostile}
    assert problems == {
        (at(by_label["not-json"]), "$"),
        (at(by_label["deep"]), "$"),
        (at(by_label["array"]), "$"),
        (at(by_label["wrong-types"]), "$.name"),
        (at(by_label["wrong-types"]), "$.protocol"),
        (at(by_label["wrong-types"]), "$.enabled"),
        (at(by_label["other-id"]), "$.id"),
        (at(by_label["huge"]), "$"),
        (f"config {nameless}", "$"),
    }
    reasons = {p["where"]: p["reason"] for p in status["problems"] if p["path"] == "$"}
    assert reasons[at(by_label["deep"])].startswith("not JSON (recursion limit exceeded")
    assert reasons[at(by_label["array"])] == "expected a JSON object, got an array"
    assert "over the 1048576 a versions file may have" in reasons[at(by_label["huge"])]
    assert "the dataId names no MCP server" in reasons[f"config {nameless}"]
    logged = [e for e in logs if e["event"] == "nacos.listing_entry_invalid"]
    assert {(e["where"], e["path"]) for e in logged} == problems  # each once: the second listing adds nothing
    assert len(logged) == len(problems)
    assert all(e["log_level"] == "warning" for e in logged)


# ---------------------------------------------------------------- the double answers as the real server does


async def test_without_the_ai_module_every_mcp_admin_path_answers_springs_404(
    nacos_without_listing: NacosTarget,
) -> None:
    async with httpx.AsyncClient(base_url=f"http://{nacos_without_listing.server_addr}") as http:
        listed = await http.get("/nacos/v3/admin/ai/mcp/list", params={"pageNo": "1", "pageSize": "1"})
        created = await http.post("/nacos/v3/admin/ai/mcp", data={"namespaceId": "public"})
    for answer, method, path in ((listed, "GET", "/nacos/v3/admin/ai/mcp/list"),
                                 (created, "POST", "/nacos/v3/admin/ai/mcp")):
        assert answer.status_code == 404
        body = answer.json()
        assert set(body) == {"timestamp", "status", "error", "message", "path"}
        assert (body["status"], body["error"], body["path"]) == (404, "Not Found", path)
        assert body["message"] == f"No endpoint {method} {path}."


async def test_the_config_searches_answer_pages_of_the_same_shape_on_the_double_and_the_real_server(
    nacos_without_listing: NacosTarget, tmp_path: Path
) -> None:
    async with started(nacos_without_listing, tmp_path) as source:
        namespace = await fresh_namespace(nacos_without_listing, source)
        server_id = str(uuid.uuid4())
        content = versions_doc(server_id, "shape", "1.0.0", ["1.0.0"])
        await publish_versions(source, namespace, server_id, content)
        await source.publish_config(ConfigKey(namespace, "mcp-server-versions", "a_b-mcp-versions.json"), "{}")
        pattern = {"groupName": "mcp-server-versions", "dataId": "*-mcp-versions.json", "search": "blur"}
        v3 = await source.admin_request("GET", CONFIG_SEARCH.path, {"pageNo": "1", "pageSize": "10",
                                                                    "namespaceId": namespace, **pattern}, "search")
        v1 = await source.admin_request("GET", CONFIG_SEARCH_V1.path, {
            "pageNo": "1", "pageSize": "10", "tenant": namespace, "group": "mcp-server-versions",
            "dataId": "*-mcp-versions.json", "search": "blur"}, "search v1")
        one_char = await source.admin_request("GET", CONFIG_SEARCH.path, {
            "pageNo": "1", "pageSize": "10", "namespaceId": namespace, "groupName": "mcp-server-versions",
            "dataId": "a_b-mcp-versions.json", "search": "blur"}, "search with _")
        exact = await source.admin_request("GET", CONFIG_SEARCH.path, {
            "pageNo": "1", "pageSize": "10", "namespaceId": namespace, "groupName": "mcp-server-versions",
            "dataId": "*-mcp-versions.json"}, "search without blur")
        zero = await source.admin_request("GET", CONFIG_SEARCH.path, {
            "pageNo": "0", "pageSize": "10", "namespaceId": namespace, **pattern}, "search page 0")

    page = v3.json()
    assert page["code"] == 0
    assert {k: v for k, v in page["data"].items() if k != "pageItems"} == {
        "totalCount": 2, "pageNumber": 1, "pagesAvailable": 1}
    # In dataId order (not in the order they were created): the database walks its dataId index.
    assert [item["dataId"] for item in page["data"]["pageItems"]] == sorted(
        [f"{server_id}-mcp-versions.json", "a_b-mcp-versions.json"])
    first = next(item for item in page["data"]["pageItems"] if item["dataId"] != "a_b-mcp-versions.json")
    assert set(first) == {"id", "namespaceId", "groupName", "dataId", "md5", "type", "appName", "createTime",
                          "modifyTime"}
    assert (first["namespaceId"], first["groupName"], first["dataId"], first["type"]) == (
        namespace, "mcp-server-versions", f"{server_id}-mcp-versions.json", "json")
    v1_page = v1.json()
    assert set(v1_page) == {"totalCount", "pageNumber", "pagesAvailable", "pageItems"}
    v1_first = next(item for item in v1_page["pageItems"] if item["dataId"] == first["dataId"])
    assert set(v1_first) == {"id", "dataId", "group", "content", "md5", "encryptedDataKey", "tenant", "appName",
                             "type"}
    assert (v1_first["content"], v1_first["md5"], v1_first["tenant"]) == (content, first["md5"], namespace)
    assert [item["dataId"] for item in one_char.json()["data"]["pageItems"]] == ["a_b-mcp-versions.json"]
    assert exact.status_code == 400
    assert "Param 'dataId' is illegal" in exact.text
    assert zero.status_code == 400 and zero.json()["code"] == 20002


async def test_the_v1_config_search_is_gone_on_a_default_nacos_3_1(nacos: NacosTarget, tmp_path: Path) -> None:
    async with started(nacos, tmp_path, listing_apis=(CONFIG_SEARCH_V1,)) as source:
        answer = await source.admin_request("GET", CONFIG_SEARCH_V1.path, {
            "pageNo": "1", "pageSize": "1", "group": "mcp-server-versions", "dataId": "*-mcp-versions.json",
            "search": "blur"}, "search v1")
        with pytest.raises(SourceNotFound, match="GET /nacos/v1/cs/configs answered 410"):
            await source.list_mcp_servers()
    assert answer.status_code == 410
    assert "nacos.core.api.compatibility.console.enabled=true" in answer.json()["message"]


async def test_the_gateway_shows_the_listing_mode_it_chose_on_admin_state(
    listing_nacos: ListingTarget, tmp_path: Path
) -> None:
    nacos = listing_nacos.nacos
    gateway = Gateway(Settings(nacos=nacos.server_addr, username=nacos.username, password=nacos.password,
                               state_dir=tmp_path / "gateway"))
    async with serving(gateway.asgi(), listening_socket()) as url, httpx.AsyncClient(base_url=url) as http:
        async with asyncio.timeout(BOUND):
            await gateway.adapter.ready.wait()
        state = (await http.get("/admin/state")).json()

    assert state["listing"]["mode"] == listing_nacos.mode
    assert state["listing"]["server"] == f"http://{nacos.server_addr}"
