"""Where ``mcpgw publish`` writes: one small interface, ``PublishTarget``, and its three implementations.

- ``NacosAdminTarget`` (the default): the Nacos 3 MCP admin API
  (``POST``/``PUT``/``DELETE /nacos/v3/admin/ai/mcp``), so the Nacos console
  and every other consumer see the server.  Nacos writes the configs itself
  (versions file first, see ARCHITECTURE §3).  Two things Nacos cannot do
  are refused before anything is written: a draft of a server that does not
  exist yet (Nacos publishes a server's first version at once), and deleting
  one version (Nacos 3 deletes the server's versions file with it).  Nacos
  stores the documents through its own models, and those of Nacos 3.1 keep
  only ``name``, ``description`` and ``inputSchema`` of a tool: a tool's
  ``annotations`` (which decide retries) and ``outputSchema`` would be lost.
  So after Nacos has written a version, its tools config is read back and,
  where Nacos dropped something, written again whole through the config API
  (the gateway serves it; the console shows the tools without those fields).
- ``NacosConfigTarget`` (``--raw``): the three configs written through
  nacos-sdk-python, for Nacos 2.x and a Nacos 3 with its AI module off.
  Specs first, versions file last, so no reader ever sees a versions file
  pointing at a missing spec; deletions the other way round.  Nacos' own MCP
  API does not see such servers; mcpgw finds them by searching the versions
  files where Nacos has no MCP listing (``remote.nacos_listing``).
- ``FilesTarget`` (``--files DIR``): the same files in the files-tree layout
  (``DIR/config/<namespace>/<group>/<dataId>``), each written to a hidden
  temp file and renamed, so a watching gateway never reads half a file.

A target is handed one ``Change`` per operation, planned by ``adapter.publish``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import tempfile
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from mcpgw.adapter.publish_documents import PublishDocument, PublishError, default_server_id
from mcpgw.registry.errors import McpgwError
from mcpgw.remote.base import DEFAULT_NAMESPACE, TOOLS_GROUP, VERSIONS_GROUP, ConfigKey, versions_key
from mcpgw.remote.nacos import NacosSource

MCP_ADMIN_PATH = "/nacos/v3/admin/ai/mcp"


@dataclass(frozen=True, slots=True)
class Write:
    """One config to write (``content``) or delete (``None``)."""

    key: ConfigKey
    content: str | None


ChangeKind = Literal["publish", "set-latest", "delete-version", "delete"]


@dataclass(frozen=True, slots=True)
class Change:
    """One operation on one server, both as the config writes it amounts to and as the admin API needs it."""

    kind: ChangeKind
    namespace: str
    server_id: str
    name: str
    version: str | None
    writes: tuple[Write, ...]
    create: bool = False
    latest: bool = True
    server_spec: Mapping[str, Any] | None = None
    tools_spec: Mapping[str, Any] | None = None


class PublishTarget(Protocol):
    """Where publishing writes; see the module docstring for the three implementations."""

    creates_drafts: bool
    """Whether a server's first version may be a draft."""
    deletes_single_versions: bool
    """Whether one version can be deleted without taking the server with it."""

    def limitation(self, document: PublishDocument, namespace: str) -> str | None:
        """Why this target cannot publish the document as written, or ``None``."""

    async def find(self, namespace: str, name: str, pinned_id: str | None) -> str | None:
        """The id of the server with this name (or the pinned id) if it exists."""

    async def read(self, key: ConfigKey) -> str | None:
        """A config's content, ``None`` if it does not exist."""

    async def apply(self, change: Change) -> None:
        """Make the change; raise ``PublishError`` or ``SourceError`` if it cannot be made."""


class FilesTarget:
    """A files tree in the Nacos layout; every write is a temp file renamed into place."""

    creates_drafts = True
    deletes_single_versions = True

    def __init__(self, root: Path) -> None:
        self.root = root

    def limitation(self, document: PublishDocument, namespace: str) -> str | None:
        return None

    def path_of(self, key: ConfigKey) -> Path:
        return self.root / "config" / key.namespace / key.group / key.data_id

    async def find(self, namespace: str, name: str, pinned_id: str | None) -> str | None:
        return await asyncio.to_thread(self._find, namespace, name, pinned_id)

    def _find(self, namespace: str, name: str, pinned_id: str | None) -> str | None:
        if pinned_id and self.path_of(versions_key(pinned_id, namespace)).is_file():
            return pinned_id
        directory = self.root / "config" / namespace / VERSIONS_GROUP
        if not directory.is_dir():
            return None
        for file in sorted(directory.glob("*-mcp-versions.json")):
            with contextlib.suppress(OSError, ValueError):
                content = json.loads(file.read_text(encoding="utf-8"))
                if isinstance(content, dict) and content.get("name") == name:
                    return str(content.get("id") or file.name.removesuffix("-mcp-versions.json"))
        return None

    async def read(self, key: ConfigKey) -> str | None:
        return await asyncio.to_thread(self._read, key)

    def _read(self, key: ConfigKey) -> str | None:
        try:
            return self.path_of(key).read_text(encoding="utf-8")
        except FileNotFoundError:
            return None

    async def apply(self, change: Change) -> None:
        for write in change.writes:
            await asyncio.to_thread(self._write, write)

    def _write(self, write: Write) -> None:
        path = self.path_of(write.key)
        if write.content is None:
            path.unlink(missing_ok=True)
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        # Hidden and ending in .tmp: the files source ignores it, and the rename is one change.
        fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(write.content)
            os.replace(temp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise


class NacosConfigTarget:
    """``--raw``: the three configs through nacos-sdk-python's config publish (Nacos 2.x and 3.x)."""

    creates_drafts = True
    deletes_single_versions = True

    def __init__(self, source: NacosSource) -> None:
        self._source = source

    def limitation(self, document: PublishDocument, namespace: str) -> str | None:
        return None

    async def find(self, namespace: str, name: str, pinned_id: str | None) -> str | None:
        if pinned_id and await self._source.get_config(versions_key(pinned_id, namespace)) is not None:
            return pinned_id
        # The listing finds servers by name (also ones Nacos' console created, with random ids), through Nacos'
        # MCP listing or, where there is none, by searching the versions files.
        with contextlib.suppress(McpgwError):
            for info in await self._source.list_mcp_servers(namespace):
                if info.name == name:
                    return info.id
        derived = default_server_id(namespace, name)
        if await self._source.get_config(versions_key(derived, namespace)) is not None:
            return derived
        return None

    async def read(self, key: ConfigKey) -> str | None:
        return await self._source.get_config(key)

    async def apply(self, change: Change) -> None:
        for write in change.writes:
            if write.content is None:
                await self._source.remove_config(write.key)
            else:
                await self._source.publish_config(write.key, write.content)


class NacosAdminTarget:
    """The Nacos 3 MCP admin API: Nacos writes the configs, its console and index see the server."""

    creates_drafts = False
    deletes_single_versions = False

    def __init__(self, source: NacosSource) -> None:
        self._source = source

    def limitation(self, document: PublishDocument, namespace: str) -> str | None:
        ref = document.server.serviceRef
        if ref is None:
            return (
                "server.serviceRef is missing: Nacos' admin API refuses a remote MCP server without an endpoint; "
                "add server.serviceRef naming the backend service, or publish with --raw (direct-response-only "
                "servers need no backend)"
            )
        if ref.namespaceId not in (None, namespace):
            return (
                f"server.serviceRef.namespaceId is {ref.namespaceId!r} but the server is published to namespace "
                f"{namespace!r}: Nacos' admin API only refers to services of the server's own namespace; "
                "publish to that namespace, or use --raw"
            )
        return None

    async def find(self, namespace: str, name: str, pinned_id: str | None) -> str | None:
        listed = await self._source.list_mcp_servers(namespace)
        # Every operation finds its server first: a Nacos without the admin API is refused before any write.
        if self._source.listing_mode != "mcp-admin":
            raise PublishError(_NO_ADMIN_API.format(where=f"Nacos at {self._source.admin_base_url}"))
        for info in listed:
            if info.name == name or (pinned_id and info.id == pinned_id):
                return info.id
        return None

    async def read(self, key: ConfigKey) -> str | None:
        return await self._source.get_config(key)

    async def apply(self, change: Change) -> None:
        params: dict[str, str] = {"namespaceId": change.namespace}
        if change.kind == "delete":
            params["mcpId"] = change.server_id
            await self._call("DELETE", params, f"delete MCP server {change.name}")
            return
        if change.kind == "delete-version":
            raise PublishError(_ADMIN_VERSION_DELETE)
        spec, tools = change.server_spec, change.tools_spec
        assert spec is not None and tools is not None
        params.update(
            mcpName=change.name,
            serverSpecification=json.dumps(spec, ensure_ascii=False),
            toolSpecification=json.dumps(tools, ensure_ascii=False),
        )
        ref = (spec.get("remoteServerConfig") or {}).get("serviceRef")
        if ref:
            # Nacos requires an endpoint for every remote server and rewrites serviceRef from it.
            data = {k: str(ref[k]) for k in ("namespaceId", "groupName", "serviceName") if ref.get(k)}
            if ref.get("transportProtocol"):
                data["transportProtocol"] = str(ref["transportProtocol"])
            params["endpointSpecification"] = json.dumps({"type": "REF", "data": data})
        if change.create:
            await self._call("POST", params, f"create MCP server {change.name}")
        else:
            params["latest"] = "true" if change.latest else "false"
            await self._call("PUT", params, f"update MCP server {change.name}")
        await self._restore_what_nacos_dropped(change)

    async def _restore_what_nacos_dropped(self, change: Change) -> None:
        for write in change.writes:
            if write.key.group != TOOLS_GROUP or write.content is None:
                continue
            stored = await self._source.get_config(write.key)
            try:
                kept = json.loads(stored) if stored else None
            except ValueError:
                kept = None
            if kept != json.loads(write.content):
                await self._source.publish_config(write.key, write.content)

    async def _call(self, method: str, params: dict[str, str], action: str) -> None:
        response = await self._source.admin_request(method, MCP_ADMIN_PATH, params, action)
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if response.status_code == 200 and isinstance(answer, dict) and answer.get("code") == 0:
            return
        where = f"Nacos at {response.request.url.scheme}://{response.request.url.netloc.decode()}"
        if response.status_code == 404 and not (isinstance(answer, dict) and "code" in answer):
            raise PublishError(_NO_ADMIN_API.format(where=where))
        message = answer.get("message") if isinstance(answer, dict) else response.text[:200]
        raise PublishError(f"{where} refused to {action}: {message or 'no message'} (HTTP {response.status_code})")


_NO_ADMIN_API = (
    "{where} has no MCP admin API (" + MCP_ADMIN_PATH + " answers 404: a Nacos 2.x, or a Nacos 3 with its AI "
    "module off): publish with --raw, which writes the three configs directly; mcpgw serve finds such servers "
    "by searching the versions files"
)

_ADMIN_VERSION_DELETE = (
    "Nacos' MCP admin API cannot delete one version: Nacos 3 deletes the server's versions file with it, "
    "which takes the whole server away. Delete the server with --delete, or remove the version's configs "
    "directly with --raw"
)


@contextlib.asynccontextmanager
async def nacos_target(
    server_addr: str,
    *,
    raw: bool = False,
    namespace: str = DEFAULT_NAMESPACE,
    username: str | None = None,
    password: str | None = None,
    connect_timeout: float = 5.0,
) -> AsyncIterator[PublishTarget]:
    """A started Nacos target (admin API, or configs with ``raw``); the SDK's cache and logs go to a temp dir."""
    with tempfile.TemporaryDirectory(prefix="mcpgw-publish-") as work:
        source = NacosSource(
            server_addr,
            namespace=namespace,
            username=username,
            password=password,
            cache_dir=Path(work) / "cache",
            log_dir=Path(work) / "logs",
            connect_timeout=connect_timeout,
        )
        await source.start()
        try:
            yield NacosConfigTarget(source) if raw else NacosAdminTarget(source)
        finally:
            await source.stop()
