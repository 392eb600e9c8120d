"""The versions search against answers no honest Nacos gives: malformed items, endless pages, failed reads.

These drive ``VersionsSearch`` with a scripted ``fetch`` (the one seam to the
HTTP API), because neither the double nor a real Nacos can be made to send
them; the shapes of the honest answers are held to the real server in
``test_listing_modes``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from mcpgw.registry.errors import SourceError, SourceNotFound, SourceUnavailable
from mcpgw.remote.base import ConfigKey
from mcpgw.remote.nacos_listing import (
    CONFIG_DETAIL_PATH,
    CONFIG_SEARCH,
    CONFIG_SEARCH_V1,
    VersionsSearch,
    read_search_page,
)
from tests.support.builders import versions_doc

WHERE = "Nacos at http://nacos.test"
GOOD = "8f4a2c1e-6b3d-4e59-9a7f-2d1c0b9e7a55"


def v3_item(data_id: str, *, namespace: str = "public", group: str = "mcp-server-versions") -> dict[str, Any]:
    return {"id": "1", "namespaceId": namespace, "groupName": group, "dataId": data_id, "md5": "m-" + data_id}


def v3_page(items: list[Any], *, page_no: int = 1, pages: int = 1) -> bytes:
    data = {"totalCount": len(items), "pageNumber": page_no, "pagesAvailable": pages, "pageItems": items}
    return json.dumps({"code": 0, "message": "success", "data": data}).encode()


def answer(status: int, body: Any) -> httpx.Response:
    return httpx.Response(status, json=body, request=httpx.Request("GET", "http://nacos.test/"))


class ScriptedNacos:
    """A ``fetch`` that answers searches with ``page(params)`` and detail reads with ``read(dataId)``."""

    def __init__(self, page: Callable[[dict[str, str]], httpx.Response],
                 read: Callable[[str], httpx.Response] | None = None) -> None:
        self._page = page
        self._read = read
        self.searches = 0
        self.reads: list[str] = []

    async def __call__(self, path: str, params: dict[str, str], action: str) -> httpx.Response:
        if path == CONFIG_DETAIL_PATH:
            self.reads.append(params["dataId"])
            assert self._read is not None
            return self._read(params["dataId"])
        self.searches += 1
        return self._page(params)


def detail(content: str) -> httpx.Response:
    return answer(200, {"code": 0, "message": "success", "data": {"dataId": "x", "content": content}})


def test_malformed_items_are_located_problems_and_the_good_item_is_kept() -> None:
    items: list[Any] = [
        "not an object",
        {"namespaceId": "public", "groupName": "mcp-server-versions"},
        {"namespaceId": "public", "groupName": "mcp-server-versions", "dataId": 42},
        v3_item("elsewhere-mcp-versions.json", namespace="team-b"),
        v3_item("other-group-mcp-versions.json", group="mcp-server"),
        v3_item("a/../b-mcp-versions.json"),
        v3_item(f"{GOOD}-mcp-versions.json"),
    ]
    page, hits, problems = read_search_page(CONFIG_SEARCH, v3_page(items), "public", 1, WHERE)

    assert [hit.key for hit in hits] == [ConfigKey("public", "mcp-server-versions", f"{GOOD}-mcp-versions.json")]
    assert len(page.pageItems) == 7
    described = [(p.where, p.path, p.reason.split(";")[0]) for p in problems]
    search = "GET /nacos/v3/admin/cs/config/list"
    assert described == [
        (f"item 0 of page 1 of {search}", "$", "expected a JSON object, got a string"),
        (f"item 1 of page 1 of {search}", "$.dataId", "Field required"),
        (f"item 2 of page 1 of {search}", "$.dataId", "Input should be a valid string"),
        (f"item 3 of page 1 of {search} (config team-b/mcp-server-versions/elsewhere-mcp-versions.json)", "$",
         "not in group mcp-server-versions of namespace public"),
        (f"item 4 of page 1 of {search} (config public/mcp-server/other-group-mcp-versions.json)", "$",
         "not in group mcp-server-versions of namespace public"),
        ("config public/mcp-server-versions/a/../b-mcp-versions.json", "$",
         "the dataId names no MCP server (expected <id>-mcp-versions.json, the id made of letters, digits and "
         "_ . : - only)"),
    ]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"<html>gateway timeout</html>", "with something that is not a page"),
        (json.dumps({"code": 0, "data": {"pageItems": "nope"}}).encode(), "with something that is not a page"),
        (json.dumps({"code": 403, "message": "no right", "data": None}).encode(), "code 403: no right"),
    ],
)
def test_an_answer_that_is_not_a_page_fails_the_listing_saying_so(body: bytes, message: str) -> None:
    with pytest.raises(SourceError, match=message):
        read_search_page(CONFIG_SEARCH, body, "public", 1, WHERE)


def test_the_v1_search_takes_the_content_from_the_items_and_the_empty_tenant_as_public() -> None:
    item = {"dataId": f"{GOOD}-mcp-versions.json", "group": "mcp-server-versions", "tenant": "",
            "content": versions_doc(GOOD, "weather", "1.0.0", ["1.0.0"]), "md5": None}
    body = json.dumps({"totalCount": 1, "pageNumber": 1, "pagesAvailable": 1, "pageItems": [item]}).encode()
    _, hits, problems = read_search_page(CONFIG_SEARCH_V1, body, "public", 1, WHERE)
    assert problems == []
    assert [(hit.key.namespace, hit.content) for hit in hits] == [("public", item["content"])]


async def test_a_server_that_repeats_its_page_forever_ends_the_listing_after_the_repetition() -> None:
    fetch = ScriptedNacos(lambda params: answer(200, json.loads(v3_page(
        [v3_item(f"{GOOD}-mcp-versions.json")], page_no=int(params["pageNo"]), pages=10**9))),
        read=lambda _: detail(versions_doc(GOOD, "weather", "1.0.0", ["1.0.0"])))
    search = VersionsSearch(CONFIG_SEARCH, fetch=fetch, page_size=1, where=WHERE)

    servers = await search.list_servers("public")

    assert [s.name for s in servers] == ["weather"]
    assert fetch.searches == 2


async def test_a_versions_file_deleted_between_search_and_read_is_not_listed() -> None:
    gone = "0d5e7a1c-1111-4e59-9a7f-2d1c0b9e7a55"

    def read(data_id: str) -> httpx.Response:
        if data_id.startswith(gone):
            return answer(404, {"code": 20004, "message": "resource not found",
                                "data": "Config not exist, please publish Config first."})
        return detail(versions_doc(GOOD, "weather", "1.0.0", ["1.0.0"]))

    items = [v3_item(f"{GOOD}-mcp-versions.json"), v3_item(f"{gone}-mcp-versions.json")]
    fetch = ScriptedNacos(lambda _: answer(200, json.loads(v3_page(items))), read)
    search = VersionsSearch(CONFIG_SEARCH, fetch=fetch, page_size=10, where=WHERE)

    servers = await search.list_servers("public")

    assert [s.id for s in servers] == [GOOD]
    assert search.problems["public"] == ()


async def test_a_failed_read_fails_the_listing_rather_than_leave_a_server_out() -> None:
    ids = [f"{n:02d}-{GOOD[3:]}" for n in range(40)]  # more than are read at once

    def read(data_id: str) -> httpx.Response:
        if data_id.startswith("07-"):
            return answer(500, {"status": 500, "error": "Internal Server Error"})
        return detail(versions_doc(data_id.removesuffix("-mcp-versions.json"), "s", "1.0.0", ["1.0.0"]))

    items = [v3_item(f"{i}-mcp-versions.json") for i in ids]
    fetch = ScriptedNacos(lambda _: answer(200, json.loads(v3_page(items))), read)
    search = VersionsSearch(CONFIG_SEARCH, fetch=fetch, page_size=100, where=WHERE)

    with pytest.raises(SourceUnavailable, match=r"failed to read config public/mcp-server-versions/07-.* HTTP 500"):
        await search.list_servers("public")


async def test_a_search_api_that_went_away_says_to_restart_so_that_the_listing_is_probed_again() -> None:
    fetch = ScriptedNacos(lambda _: answer(404, {"status": 404, "error": "Not Found"}))
    search = VersionsSearch(CONFIG_SEARCH, fetch=fetch, page_size=10, where=WHERE)
    with pytest.raises(SourceNotFound, match="restart mcpgw so that it probes the listing again"):
        await search.list_servers("public")


def test_a_v1_item_without_content_is_a_located_problem() -> None:
    item = {"dataId": f"{GOOD}-mcp-versions.json", "group": "mcp-server-versions", "tenant": "public"}
    body = json.dumps({"totalCount": 1, "pageNumber": 1, "pagesAvailable": 1, "pageItems": [item]}).encode()
    _, hits, problems = read_search_page(CONFIG_SEARCH_V1, body, "public", 1, WHERE)
    assert hits == []
    assert [(p.where, p.path) for p in problems] == [("item 0 of page 1 of GET /nacos/v1/cs/configs", "$.content")]
