"""How ``NacosSource`` lists MCP servers where Nacos has no MCP listing: it searches the versions files.

Nacos 3.0.1+ with its AI module lists MCP servers itself (``GET
/nacos/v3/admin/ai/mcp/list``).  Nacos 2.x has no such API, and neither has a
Nacos 3 whose AI module is switched off (``nacos.extension.ai.enabled=false``:
every ``/v3/admin/ai/*`` path answers 404).  What all of them have is a config
search, and every MCP server has exactly one versions file,
``{id}-mcp-versions.json`` in group ``mcp-server-versions``; searching for
those (blur mode, all pages) is how Higress discovers servers, and what this
module does.  Three listing APIs, probed in this order (``LISTING_APIS``; the
first that does not answer 404 or 410 is used for the life of the source):

- ``mcp-admin``: ``GET /nacos/v3/admin/ai/mcp/list``, Nacos' own listing
  (parsed by ``NacosSource``);
- ``config-search``: ``GET /nacos/v3/admin/cs/config/list`` (Nacos 3).  Its
  items carry dataId and md5 but not the content, so each versions file is
  read (``GET /nacos/v3/admin/cs/config``), and read again only when its md5
  changes: a poll of an unchanged namespace costs one request per page.  The
  read goes over HTTP, not the SDK, because both answer from Nacos' database,
  while a gRPC read answers from its cache, which lags a write (a file just
  published is "not found" over gRPC for a moment, though the search has it);
- ``config-search-v1``: ``GET /nacos/v1/cs/configs?search=blur`` (Nacos 2.x;
  Nacos 3.1 answers 410 there unless ``nacos.core.api.compatibility.console.enabled``
  is set).  Its items carry the content.

Search results are untrusted input.  A versions file may be anything (not
JSON, nested ten thousand deep, megabytes long, wrong types, another server's
id) and a search item may be malformed; each is checked on its own, and what
is wrong becomes a ``ListingProblem`` naming the config, the JSON path and the
reason, never a failure of the whole listing.  A versions file whose dataId
names a server is listed under that id even when its content is wrong (as the
files and memory sources list it), so that the server's listener reports the
conversion error instead of the server silently vanishing; an item whose
dataId names no server is left out.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import httpx
import pydantic_core
import structlog
from pydantic import BaseModel, ConfigDict, ValidationError

from mcpgw.registry.errors import SourceError, SourceNotFound, SourceUnavailable
from mcpgw.remote.base import DEFAULT_NAMESPACE, VERSIONS_GROUP, ConfigKey, McpServerInfo
from mcpgw.remote.memory import VERSIONS_SUFFIX

log = structlog.get_logger(__name__)

ListingMode = Literal["mcp-admin", "config-search", "config-search-v1"]

MAX_VERSIONS_BYTES = 1024 * 1024
"""A versions file lists a server's versions; one over 1 MiB is not parsed (Nacos itself takes up to 10 MiB)."""
READ_CONCURRENCY = 16
"""Versions files read at once (config-search, whose items carry no content)."""
SERVER_ID = re.compile(r"[A-Za-z0-9_.:-]{1,200}")
"""What Nacos accepts in a dataId (``ParamUtils.isValid``), less the ``-mcp-versions.json`` suffix."""


@dataclass(frozen=True, slots=True)
class ListingApi:
    mode: ListingMode
    path: str

    def __str__(self) -> str:
        return f"GET {self.path}"


MCP_ADMIN = ListingApi("mcp-admin", "/nacos/v3/admin/ai/mcp/list")
CONFIG_SEARCH = ListingApi("config-search", "/nacos/v3/admin/cs/config/list")
CONFIG_SEARCH_V1 = ListingApi("config-search-v1", "/nacos/v1/cs/configs")
LISTING_APIS = (MCP_ADMIN, CONFIG_SEARCH, CONFIG_SEARCH_V1)
CONFIG_DETAIL_PATH = "/nacos/v3/admin/cs/config"
"""One config with its content, from the database as the search (Nacos 3)."""
_NOT_FOUND_CODE = 20004


def listing_params(api: ListingApi, namespace: str, page_no: int, page_size: int) -> dict[str, str]:
    """The query of one page of ``api`` for the MCP servers of ``namespace``."""
    page = {"pageNo": str(page_no), "pageSize": str(page_size)}
    pattern = f"*{VERSIONS_SUFFIX}"
    if api.mode == "mcp-admin":
        return {**page, "namespaceId": namespace, "mcpName": "", "search": "blur"}
    if api.mode == "config-search":
        return {**page, "namespaceId": namespace, "groupName": VERSIONS_GROUP, "dataId": pattern, "search": "blur"}
    # Nacos 2.x names the public namespace "" (Nacos 3 takes both).
    tenant = "" if namespace == DEFAULT_NAMESPACE else namespace
    return {**page, "tenant": tenant, "group": VERSIONS_GROUP, "dataId": pattern, "search": "blur"}


@dataclass(frozen=True, slots=True)
class ListingProblem:
    """Something wrong in a search result: where (a config, or a search item), the JSON path, why."""

    where: str
    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.where}: {self.path}: {self.reason}"

    def as_dict(self) -> dict[str, str]:
        return {"where": self.where, "path": self.path, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class SearchHit:
    """A versions file found by the search; ``content`` only where the search returns it (v1)."""

    key: ConfigKey
    md5: str | None
    content: str | None


# ---------------------------------------------------------------- answers of the two search APIs


class _Page(BaseModel):
    model_config = ConfigDict(extra="ignore")

    totalCount: int = 0
    pageNumber: int = 1
    pagesAvailable: int = 0
    pageItems: list[Any] = []  # checked one by one: a bad item must not hide the others


class _V3Answer(BaseModel):
    model_config = ConfigDict(extra="ignore")

    code: int = 0
    message: str | None = None
    data: _Page | None = None


class _V3Item(BaseModel):
    model_config = ConfigDict(extra="ignore")

    namespaceId: str | None = None
    groupName: str
    dataId: str
    md5: str | None = None


class _ConfigDetail(BaseModel):
    model_config = ConfigDict(extra="ignore")

    content: str | None = None


class _DetailAnswer(BaseModel):
    model_config = ConfigDict(extra="ignore")

    code: int = 0
    message: str | None = None
    data: _ConfigDetail | str | None = None


class _V1Item(BaseModel):
    model_config = ConfigDict(extra="ignore")

    tenant: str | None = None
    group: str
    dataId: str
    md5: str | None = None
    content: str | None = None


def read_search_page(
    api: ListingApi, body: bytes, namespace: str, page_no: int, where: str
) -> tuple[_Page, list[SearchHit], list[ListingProblem]]:
    """One page of a config search: the page, its versions files, and what was wrong with its items.

    Raises ``SourceError`` when the answer as a whole is not a page (then nothing of it can be trusted).
    """
    try:
        if api.mode == "config-search":
            answer = _V3Answer.model_validate_json(body)
            if answer.code != 0 or answer.data is None:
                raise SourceError(
                    f"{where} refused to search the versions configs of namespace {namespace}: "
                    f"code {answer.code}: {answer.message or 'no message'}"
                )
            page = answer.data
        else:
            page = _Page.model_validate_json(body)
    except ValidationError as exc:
        raise SourceError(
            f"{where} answered the search of the versions configs ({api}) with something that is not a page: "
            f"{exc.error_count()} problem(s), first: {exc.errors()[0]['msg']}"
        ) from exc
    hits: list[SearchHit] = []
    problems: list[ListingProblem] = []
    for index, raw in enumerate(page.pageItems):
        found = _hit(api, raw, namespace, f"item {index} of page {page_no} of {api}")
        if isinstance(found, SearchHit):
            hits.append(found)
        else:
            problems.append(found)
    return page, hits, problems


def _hit(api: ListingApi, raw: object, namespace: str, where: str) -> SearchHit | ListingProblem:
    if not isinstance(raw, dict):
        return ListingProblem(where, "$", f"expected a JSON object, got {_json_type(raw)}; the item is ignored")
    try:
        if api.mode == "config-search":
            v3 = _V3Item.model_validate(raw)
            item_namespace, group, data_id, md5, content = v3.namespaceId, v3.groupName, v3.dataId, v3.md5, None
        else:
            v1 = _V1Item.model_validate(raw)
            item_namespace, group, data_id, md5, content = v1.tenant, v1.group, v1.dataId, v1.md5, v1.content
            if content is None:  # the v1 search always gives the content; there is no v3 read on Nacos 2.x
                return ListingProblem(where, "$.content", "missing; the item is ignored")
    except ValidationError as exc:
        first = exc.errors()[0]
        path = "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in first["loc"])
        return ListingProblem(where, path, f"{first['msg']}; the item is ignored")
    item_namespace = item_namespace or DEFAULT_NAMESPACE
    key = ConfigKey(item_namespace, group, data_id)
    if item_namespace != namespace or group != VERSIONS_GROUP:
        return ListingProblem(
            f"{where} (config {key})", "$", f"not in group {VERSIONS_GROUP} of namespace {namespace}; ignored"
        )
    if server_id_of(data_id) is None:
        return ListingProblem(
            f"config {key}",
            "$",
            f"the dataId names no MCP server (expected <id>{VERSIONS_SUFFIX}, the id made of letters, digits and "
            "_ . : - only); ignored",
        )
    return SearchHit(key, md5, content)


def server_id_of(data_id: str) -> str | None:
    """The server id a versions file's dataId names, or ``None`` if it names none."""
    if not data_id.endswith(VERSIONS_SUFFIX):
        return None
    server_id = data_id.removesuffix(VERSIONS_SUFFIX)
    return server_id if SERVER_ID.fullmatch(server_id) else None


_OPTIONAL_TEXT = ("protocol", "frontProtocol", "latestPublishedVersion")


def server_from_versions(key: ConfigKey, content: str) -> tuple[McpServerInfo, tuple[ListingProblem, ...]]:
    """The listing entry of one versions file, and what is wrong with it.

    The id is the dataId's (the file the listener will watch); fields that are wrong are left empty.
    """
    server_id = server_id_of(key.data_id)
    assert server_id is not None, "search hits are checked for their dataId"
    bare = McpServerInfo(id=server_id, name="", namespace=key.namespace)
    where = f"config {key} (the versions file of MCP server {server_id})"
    size = len(content.encode("utf-8"))
    if size > MAX_VERSIONS_BYTES:
        return bare, (ListingProblem(where, "$", f"{size} bytes, over the {MAX_VERSIONS_BYTES} a versions file may "
                                                 "have; not read. Remove old versions from it"),)
    try:
        # pydantic-core's parser bounds nesting: no RecursionError from a hostile file.
        doc = pydantic_core.from_json(content)
    except ValueError as exc:
        return bare, (ListingProblem(where, "$", f"not JSON ({exc}); fix the file or delete the server"),)
    if not isinstance(doc, dict):
        return bare, (ListingProblem(where, "$", f"expected a JSON object, got {_json_type(doc)}"),)
    problems: list[ListingProblem] = []

    def text(field: str, *, required: bool = False) -> str:
        value = doc.get(field)
        if isinstance(value, str) and (value or not required):
            return value
        if value is None and not required:
            return ""
        expected = "a non-empty string" if required else "a string"
        problems.append(ListingProblem(where, f"$.{field}", f"expected {expected}, got {_json_type(value)}"))
        return ""

    declared = doc.get("id")
    if declared != server_id:
        problems.append(
            ListingProblem(
                where, "$.id", f"says {_shown(declared)} but the dataId belongs to server {server_id!r}; "
                "listed under the dataId's id"
            )
        )
    name = text("name", required=True)
    protocol, front_protocol, latest = (text(field) for field in _OPTIONAL_TEXT)
    enabled = doc.get("enabled", True)
    if not isinstance(enabled, bool):
        problems.append(ListingProblem(where, "$.enabled", f"expected true or false, got {_json_type(enabled)}"))
        enabled = True
    info = McpServerInfo(
        id=server_id,
        name=name,
        namespace=key.namespace,
        protocol=protocol,
        front_protocol=front_protocol,
        enabled=enabled,
        version=latest,
    )
    return info, tuple(problems)


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "an empty string" if not value else "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _shown(value: object) -> str:
    if isinstance(value, str):
        return repr(value[:80] + ("…" if len(value) > 80 else ""))
    return _json_type(value)


# ---------------------------------------------------------------- the listing itself


Fetch = Callable[[str, dict[str, str], str], Awaitable[httpx.Response]]
"""GET ``path`` with ``params`` (the third argument says what for) from the Nacos admin API, with our token;
raises ``SourceError`` only when Nacos cannot be reached or refuses the user, and returns every other answer."""


@dataclass(frozen=True, slots=True)
class _Known:
    md5: str
    info: McpServerInfo
    problems: tuple[ListingProblem, ...]


class VersionsSearch:
    """Lists MCP servers by searching their versions files (one per source: it remembers what it read)."""

    def __init__(self, api: ListingApi, *, fetch: Fetch, page_size: int, where: str) -> None:
        assert api.mode != "mcp-admin"
        self.api = api
        self._fetch = fetch
        self._page_size = page_size
        self._where = where
        self._known: dict[ConfigKey, _Known] = {}
        self._problems: dict[str, tuple[ListingProblem, ...]] = {}

    @property
    def problems(self) -> Mapping[str, tuple[ListingProblem, ...]]:
        """What was wrong in the latest listing of each namespace."""
        return self._problems

    async def list_servers(self, namespace: str) -> list[McpServerInfo]:
        hits, problems = await self._search(namespace)
        read = await self._read_changed(hits)
        servers: list[McpServerInfo] = []
        for hit in hits:
            known = self._known.get(hit.key)
            content = read.get(hit.key, hit.content)
            if content is not None:
                digest = _md5(content)
                if known is None or known.md5 != digest:
                    info, found = server_from_versions(hit.key, content)
                    known = _Known(digest, info, found)
                    self._known[hit.key] = known
            elif hit.key in read or known is None:  # deleted between the search and the read
                self._known.pop(hit.key, None)
                continue
            servers.append(known.info)
            problems.extend(known.problems)
        listed = {hit.key for hit in hits}
        for key in [k for k in self._known if k.namespace == namespace and k not in listed]:
            del self._known[key]
        self._report(namespace, problems)
        return servers

    async def _search(self, namespace: str) -> tuple[list[SearchHit], list[ListingProblem]]:
        """Every page; the first sighting of a file wins (pages may shift while they are read)."""
        hits: dict[ConfigKey, SearchHit] = {}
        problems: list[ListingProblem] = []
        page_no = 1
        while True:
            params = listing_params(self.api, namespace, page_no, self._page_size)
            action = f"search the versions configs of namespace {namespace} (page {page_no})"
            response = await self._get(self.api.path, params, action)
            page, page_hits, page_problems = read_search_page(
                self.api, response.content, namespace, page_no, self._where
            )
            new = [hit for hit in page_hits if hit.key not in hits]
            hits.update((hit.key, hit) for hit in new)
            problems.extend(page_problems)
            # A page of nothing new is a server repeating itself: stop rather than loop.
            if not page.pageItems or page_no >= page.pagesAvailable or not (new or page_problems):
                return list(hits.values()), problems
            page_no += 1

    async def _get(self, path: str, params: dict[str, str], action: str) -> httpx.Response:
        response = await self._fetch(path, params, action)
        if response.status_code in (404, 410):
            raise SourceNotFound(
                f"{self._where} answered HTTP {response.status_code} to GET {path}, the config search it offered "
                "when this source first listed: restart mcpgw so that it probes the listing again"
            )
        if response.status_code >= 400:
            raise SourceUnavailable(
                f"{self._where} failed to {action}: HTTP {response.status_code}: {response.text[:200]}"
            )
        return response

    async def _read(self, key: ConfigKey) -> str | None:
        params = {"namespaceId": key.namespace, "groupName": key.group, "dataId": key.data_id}
        action = f"read config {key} to list MCP servers"
        response = await self._fetch(CONFIG_DETAIL_PATH, params, action)
        try:
            answer = _DetailAnswer.model_validate_json(response.content)
        except ValidationError:
            answer = None
        if response.status_code == 404 and answer is not None and answer.code == _NOT_FOUND_CODE:
            return None  # deleted since the search
        if response.status_code >= 400 or answer is None or answer.code != 0 or not isinstance(answer.data,
                                                                                                _ConfigDetail):
            raise SourceUnavailable(
                f"{self._where} failed to {action}: HTTP {response.status_code}: {response.text[:200]}"
            )
        return answer.data.content or None

    async def _read_changed(self, hits: Iterable[SearchHit]) -> dict[ConfigKey, str | None]:
        """Read the versions files the search gave no content of and whose md5 is not the one read last."""
        stale = [
            hit.key
            for hit in hits
            if hit.content is None
            and (hit.md5 is None or (known := self._known.get(hit.key)) is None or known.md5 != hit.md5)
        ]
        read: dict[ConfigKey, str | None] = {}
        pending = iter(stale)

        async def reader() -> None:
            for key in pending:
                read[key] = await self._read(key)

        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(min(READ_CONCURRENCY, len(stale))):
                    group.create_task(reader())
        except ExceptionGroup as failed:
            raise failed.exceptions[0] from None
        return read

    def _report(self, namespace: str, problems: list[ListingProblem]) -> None:
        """Log each problem once, when it appears; keep the namespace's current ones for /admin/state."""
        before = set(self._problems.get(namespace, ()))
        current = tuple(dict.fromkeys(problems))
        for problem in current:
            if problem not in before:
                log.warning("nacos.listing_entry_invalid", mode=self.api.mode, where=problem.where,
                            path=problem.path, reason=problem.reason)
        self._problems[namespace] = current


def _md5(content: str) -> str:
    return hashlib.md5(content.encode("utf-8")).hexdigest()
