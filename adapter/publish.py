"""``mcpgw publish``: one human-friendly document per MCP server in, the three Nacos configs out.

Writing the three Nacos MCP-registry documents by hand is how specs go wrong:
a versions file pointing at a spec that is not there, a template that does
not parse, ``release_date`` spelt the SDK's way.  An operator writes instead
one YAML or JSON document per server (server, version, tools with their
templates); this module turns it into exactly what Nacos 3 writes, checks
that with the JSON Schemas of the three documents and with the gateway's own
``ConfigConverter`` (so what publishes is what serves), and only then writes.
Every document of a run is checked before the first write: a bad one names
file, tool and JSON path, and nothing is written.

Operations: publish a version (the latest by default, or a draft that leaves
``latestPublishedVersion`` alone), switch ``latestPublishedVersion``, delete
one version, delete a server.  Each is planned against what the target holds
now, so publishing identical content again writes nothing and says so.

Targets sit behind one small interface, ``PublishTarget``:

- ``NacosAdminTarget`` (the default): the Nacos 3 MCP admin API
  (``POST``/``PUT``/``DELETE /nacos/v3/admin/ai/mcp``), so the Nacos console
  and every other consumer see the server.  Nacos writes the configs itself
  (versions file first, see ARCHITECTURE §3).  Two things Nacos cannot do
  are refused before anything is written: a draft of a server that does not
  exist yet (Nacos publishes a server's first version at once), and deleting
  one version (Nacos 3 deletes the server's versions file with it).
- ``NacosConfigTarget`` (``--raw``): the three configs written through
  nacos-sdk-python, for Nacos 2.x.  Specs first, versions file last, so no
  reader ever sees a versions file pointing at a missing spec; deletions
  the other way round.  Nacos' own MCP API does not see such servers.
- ``FilesTarget`` (``--files DIR``): the same files in the files-tree layout
  (``DIR/config/<namespace>/<group>/<dataId>``), each written to a hidden
  temp file and renamed, so a watching gateway never reads half a file.

A new server's id is a UUID derived from namespace and name (``uuid5``), so
the same document publishes to the same dataIds on every target; a document
may pin its own ``server.id``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from converter.converter import TEMPLATE_KIND, ConfigConverter, ServerSnapshot, credential_refs
from converter.models import SecurityScheme
from converter.validate import check_document
from registry.errors import ConversionError, McpgwError
from remote.base import (
    DEFAULT_GROUP,
    DEFAULT_NAMESPACE,
    VERSIONS_GROUP,
    ConfigKey,
    server_spec_key,
    tools_spec_key,
    versions_key,
)
from remote.nacos import NacosSource

MCP_ADMIN_PATH = "/nacos/v3/admin/ai/mcp"
DOCUMENT_SUFFIXES = (".yaml", ".yml", ".json")
_ID_NAMESPACE = uuid.UUID("6f1c1b1e-2f55-4a0e-9a53-6d63706777a1")
"""Fixed, so that ``default_server_id`` is stable across runs and machines."""
_VERSION_PATTERN = r"^[A-Za-z0-9._:-]+$"
"""The characters Nacos allows in a dataId, which embeds the version."""
_UUID_PATTERN = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"


class PublishError(McpgwError):
    """An operation the target cannot or must not do (unknown server or version, deleting the served version)."""


class InvalidDocuments(McpgwError):
    """One or more publish documents are invalid; nothing was written."""

    def __init__(self, problems: Sequence[ConversionError]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(p.describe() for p in self.problems))


# ---------------------------------------------------------------- the document


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class ServiceRefDoc(_Doc):
    """The Nacos service whose instances are the backends."""

    serviceName: str = Field(min_length=1)
    groupName: str = DEFAULT_GROUP
    namespaceId: str | None = None
    """Default: the namespace the server is published to."""
    transportProtocol: str | None = None


class ServerDoc(_Doc):
    name: str = Field(min_length=1)
    version: str = Field(min_length=1, pattern=_VERSION_PATTERN)
    description: str = ""
    protocol: Literal["http", "https", "mcp-sse", "mcp-streamable"]
    frontProtocol: Literal["mcp-sse", "mcp-streamable"] = "mcp-streamable"
    enabled: bool = True
    serviceRef: ServiceRefDoc | None = None
    exportPath: str = ""
    id: str | None = Field(default=None, pattern=_UUID_PATTERN)

    @field_validator("version", mode="before")
    @classmethod
    def _version_is_text(cls, value: Any) -> Any:
        if isinstance(value, int | float) and not isinstance(value, bool):
            # YAML reads 1.10 as the number 1.1: refuse rather than publish the wrong version.
            raise ValueError(f"write the version as a quoted string (e.g. '{value}'); YAML read it as a number")
        return value


class ToolDoc(_Doc):
    name: str = Field(min_length=1)
    description: str = ""
    inputSchema: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})
    outputSchema: dict[str, Any] | None = None
    annotations: dict[str, Any] | None = None
    enabled: bool = True
    template: dict[str, Any] | None = None
    """The json-go-template object: requestTemplate, responseTemplate, argsPosition, ..."""
    invokeContext: dict[str, Any] | None = None


class SecuritySchemeDoc(SecurityScheme):
    """A security scheme exactly as the tools spec holds it, but strict: a misspelt field is an error here."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class PublishDocument(_Doc):
    """One MCP server, one version: what an operator writes."""

    server: ServerDoc
    tools: list[ToolDoc] = Field(default_factory=list)
    securitySchemes: list[SecuritySchemeDoc] = Field(default_factory=list)
    draft: bool = False


@dataclass(frozen=True, slots=True)
class LoadedDocument:
    file: Path
    document: PublishDocument

    @property
    def name(self) -> str:
        return self.document.server.name


# ---------------------------------------------------------------- document -> the three Nacos documents


def default_server_id(namespace: str, name: str) -> str:
    """The id a new server gets: the same for the same namespace and name, everywhere."""
    return str(uuid.uuid5(_ID_NAMESPACE, f"{namespace}/{name}"))


def utc_now() -> str:
    """A release date as Nacos writes it."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _service_ref(ref: ServiceRefDoc, namespace: str) -> dict[str, Any]:
    out: dict[str, Any] = {
        "namespaceId": ref.namespaceId or namespace,
        "groupName": ref.groupName,
        "serviceName": ref.serviceName,
    }
    if ref.transportProtocol:
        out["transportProtocol"] = ref.transportProtocol
    return out


def render_server_spec(
    doc: PublishDocument, *, server_id: str, namespace: str, release_date: str | None
) -> dict[str, Any]:
    """``{id}-{version}-mcp-server.json``; a draft's ``versionDetail`` has no release date."""
    server = doc.server
    detail: dict[str, Any] = {"version": server.version}
    if release_date:
        detail.update(release_date=release_date, is_latest=True)
    remote: dict[str, Any] = {"exportPath": server.exportPath}
    if server.serviceRef is not None:
        remote["serviceRef"] = _service_ref(server.serviceRef, namespace)
    return {
        "id": server_id,
        "name": server.name,
        "protocol": server.protocol,
        "frontProtocol": server.frontProtocol,
        "description": server.description,
        "versionDetail": detail,
        "enabled": server.enabled,
        "capabilities": ["TOOL"],
        "toolsDescriptionRef": tools_spec_key(server_id, server.version, namespace).data_id,
        "remoteServerConfig": remote,
    }


def render_tools_spec(doc: PublishDocument) -> dict[str, Any]:
    """``{id}-{version}-mcp-tools.json``: MCP tool definitions plus ``toolsMeta`` with the templates."""
    tools: list[dict[str, Any]] = []
    meta: dict[str, Any] = {}
    for tool in doc.tools:
        definition: dict[str, Any] = {
            "name": tool.name,
            "description": tool.description,
            "inputSchema": tool.inputSchema,
        }
        if tool.outputSchema is not None:
            definition["outputSchema"] = tool.outputSchema
        if tool.annotations is not None:
            definition["annotations"] = tool.annotations
        tools.append(definition)
        entry: dict[str, Any] = {
            "enabled": tool.enabled,
            "templates": {TEMPLATE_KIND: tool.template} if tool.template is not None else {},
        }
        if tool.invokeContext is not None:
            entry["invokeContext"] = tool.invokeContext
        meta[tool.name] = entry
    return {
        "tools": tools,
        "toolsMeta": meta,
        "securitySchemes": [s.model_dump(by_alias=True, exclude_none=True) for s in doc.securitySchemes],
    }


def _versions_header(spec: Mapping[str, Any]) -> dict[str, Any]:
    """What Nacos copies from the published version's spec into the versions file."""
    return {
        "name": spec.get("name"),
        "protocol": spec.get("protocol"),
        "frontProtocol": spec.get("frontProtocol", ""),
        "description": spec.get("description", ""),
        "enabled": spec.get("enabled", True),
        "capabilities": list(spec.get("capabilities") or ["TOOL"]),
    }


def published_versions(
    current: Mapping[str, Any] | None, spec: Mapping[str, Any], version: str, release_date: str
) -> dict[str, Any]:
    """The versions file once ``version`` is released and made the latest (Nacos' update with latest=true)."""
    out: dict[str, Any] = {"id": spec["id"], **(dict(current) if current else {})}
    out.update(_versions_header(spec))
    out["latestPublishedVersion"] = version
    details = [dict(d) for d in (current or {}).get("versionDetails") or []]
    for detail in details:
        detail["is_latest"] = False
    target = next((d for d in details if d.get("version") == version), None)
    if target is None:
        target = {"version": version}
        details.append(target)
    target.update(release_date=release_date, is_latest=True)
    out["versionDetails"] = details
    return out


def drafted_versions(current: Mapping[str, Any] | None, spec: Mapping[str, Any], version: str) -> dict[str, Any]:
    """The versions file with ``version`` listed as a draft; the header and the latest stay (Nacos' latest=false)."""
    if current is None:
        out: dict[str, Any] = {"id": spec["id"], **_versions_header(spec)}
        out["versionDetails"] = [{"version": version}]
        return out
    out = dict(current)
    details = [dict(d) for d in current.get("versionDetails") or []]
    if all(d.get("version") != version for d in details):
        details.append({"version": version})
    out["versionDetails"] = details
    return out


def _spec_projection(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a server spec a publisher controls: release dates, refs and capabilities are Nacos'."""
    remote = spec.get("remoteServerConfig") or {}
    ref = remote.get("serviceRef") or None
    return {
        "name": spec.get("name"),
        "protocol": spec.get("protocol"),
        "frontProtocol": spec.get("frontProtocol") or "",
        "description": spec.get("description") or "",
        "enabled": spec.get("enabled", True),
        "exportPath": remote.get("exportPath") or "",
        "serviceRef": None
        if not ref
        else {
            "namespaceId": ref.get("namespaceId") or DEFAULT_NAMESPACE,
            "groupName": ref.get("groupName") or DEFAULT_GROUP,
            "serviceName": ref.get("serviceName"),
            "transportProtocol": ref.get("transportProtocol") or None,
        },
    }


def _without_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_none(v) for v in value]
    return value


def _tools_projection(tools: Mapping[str, Any]) -> dict[str, Any]:
    meta = {
        name: {
            "enabled": (entry or {}).get("enabled", True),
            "templates": (entry or {}).get("templates") or {},
            "invokeContext": (entry or {}).get("invokeContext") or {},
        }
        for name, entry in (tools.get("toolsMeta") or {}).items()
    }
    definitions = [
        {
            "name": t.get("name"),
            "description": t.get("description") or "",
            "inputSchema": t.get("inputSchema"),
            "outputSchema": t.get("outputSchema"),
            "annotations": t.get("annotations"),
        }
        for t in tools.get("tools") or []
    ]
    projected: dict[str, Any] = _without_none(
        {"tools": definitions, "toolsMeta": meta, "securitySchemes": tools.get("securitySchemes") or []}
    )
    return projected


def same_release(
    stored_spec: Mapping[str, Any] | None,
    stored_tools: Mapping[str, Any] | None,
    spec: Mapping[str, Any],
    tools: Mapping[str, Any],
) -> bool:
    """Whether the stored spec and tools already say what the document says."""
    if stored_spec is None or stored_tools is None:
        return False
    return _spec_projection(stored_spec) == _spec_projection(spec) and _tools_projection(
        stored_tools
    ) == _tools_projection(tools)


# ---------------------------------------------------------------- validation


def _dump(value: Mapping[str, Any]) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False)


_TOOLS_META = re.compile(r"^\$\.toolsMeta(?:\.([A-Za-z_][A-Za-z0-9_-]*)|\[(\"(?:[^\"\\]|\\.)*\")\])(.*)$")


def _document_path(error: ConversionError, doc: PublishDocument) -> tuple[str, str]:
    """A converter or schema error's path in the three Nacos documents, as a path in the publish document."""
    path, tool = error.path or "$", error.tool
    if error.file.endswith("-mcp-tools.json"):
        meta = _TOOLS_META.match(path)
        if meta is None:
            return path, tool
        name = meta.group(1) if meta.group(1) is not None else str(json.loads(meta.group(2)))
        rest = meta.group(3)
        index = next((i for i, t in enumerate(doc.tools) if t.name == name), None)
        if index is None:
            return path, tool or name
        templates = f".templates.{TEMPLATE_KIND}"
        if rest.startswith(templates):
            return f"$.tools[{index}].template{rest[len(templates) :]}", tool or name
        if rest == ".templates":
            return f"$.tools[{index}].template", tool or name
        return f"$.tools[{index}]{rest}", tool or name
    if error.file.endswith("-mcp-server.json"):
        if path.startswith("$.versionDetail"):
            return "$.server.version", tool
        for nacos, ours in (
            ("$.remoteServerConfig.serviceRef", "$.server.serviceRef"),
            ("$.remoteServerConfig.exportPath", "$.server.exportPath"),
            ("$.remoteServerConfig", "$.server.serviceRef"),
        ):
            if path == nacos or path.startswith((nacos + ".", nacos + "[")):
                return ours + path[len(nacos) :], tool
        return "$.server" + path[1:], tool
    if error.file.endswith("-mcp-versions.json"):
        return "$.server", tool
    return path, tool


def _located(error: ConversionError, loaded: LoadedDocument) -> ConversionError:
    path, tool = _document_path(error, loaded.document)
    return ConversionError(
        error.reason,
        server_id=loaded.name,
        version=loaded.document.server.version,
        file=str(loaded.file),
        path=path,
        tool=tool,
    )


def check_release(
    versions: Mapping[str, Any],
    spec: Mapping[str, Any],
    tools: Mapping[str, Any],
    *,
    server_id: str,
    version: str,
    namespace: str,
) -> list[ConversionError]:
    """The three documents through the JSON Schemas, then through the converter as the served version.

    Errors name the Nacos file (dataId) and the JSON path in it.  Referenced
    credentials are stood in for: whether they exist is the target's
    business, and the gateway reports a missing one by name.
    """
    files = {
        "versions": (versions_key(server_id, namespace).data_id, versions),
        "server": (server_spec_key(server_id, version, namespace).data_id, spec),
        "tools": (tools_spec_key(server_id, version, namespace).data_id, tools),
    }
    problems = [
        ConversionError(problem.reason, file=data_id, path=problem.path, tool=problem.tool)
        for kind, (data_id, content) in files.items()
        for problem in check_document(data_id, _dump(content), kind)
    ]
    if problems:
        return problems
    tools_text = _dump(tools)
    served = dict(
        versions,
        enabled=True,
        latestPublishedVersion=version,
        versionDetails=[{"version": version, "release_date": "check"}],
    )
    snapshot = ServerSnapshot(
        server_id=server_id,
        namespace=namespace,
        versions=_dump(served),
        server_spec=_dump(dict(spec, enabled=True)),
        tools_spec=tools_text,
        instances=(),
        credentials={key: '"placeholder"' for key in credential_refs(tools_text, namespace)},
    )
    try:
        ConfigConverter().convert(snapshot)
    except ConversionError as exc:
        return [exc]
    return []


def check_document_release(loaded: LoadedDocument, *, namespace: str) -> list[ConversionError]:
    """A publish document's problems, located in the document (file, tool, JSON path)."""
    doc = loaded.document
    server_id = doc.server.id or default_server_id(namespace, doc.server.name)
    spec = render_server_spec(doc, server_id=server_id, namespace=namespace, release_date="check")
    versions = published_versions(None, spec, doc.server.version, "check")
    problems = check_release(
        versions, spec, render_tools_spec(doc), server_id=server_id, version=doc.server.version, namespace=namespace
    )
    return [_located(p, loaded) for p in problems]


# ---------------------------------------------------------------- loading


def _pydantic_path(loc: Iterable[int | str]) -> str:
    path = "$"
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def _parse_file(file: Path) -> Any:
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConversionError(f"cannot read the file: {exc.strerror}", file=str(file)) from exc
    if file.suffix == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConversionError(
                f"not valid JSON (line {exc.lineno} column {exc.colno}: {exc.msg})", file=str(file)
            ) from exc
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1} column {mark.column + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "syntax error"
        raise ConversionError(f"not valid YAML{where}: {problem}", file=str(file)) from exc


def parse_document(file: Path) -> LoadedDocument:
    """Read and check the shape of one publish document; ``ConversionError`` names file, tool and path."""
    raw = _parse_file(file)
    if not isinstance(raw, dict):
        raise ConversionError(
            "a publish document is a mapping with `server` and `tools`; see fixtures/nacos-configs/publish-examples",
            file=str(file),
        )
    try:
        return LoadedDocument(file, PublishDocument.model_validate(raw))
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = list(first["loc"])
        tool = ""
        if len(loc) >= 2 and loc[0] == "tools" and isinstance(loc[1], int):
            tools = raw.get("tools")
            if isinstance(tools, list) and loc[1] < len(tools) and isinstance(tools[loc[1]], dict):
                tool = str(tools[loc[1]].get("name", ""))
        more = f" (and {exc.error_count() - 1} more problems)" if exc.error_count() > 1 else ""
        reason = str(first["msg"]).removeprefix("Value error, ")
        raise ConversionError(f"{reason}{more}", file=str(file), path=_pydantic_path(loc), tool=tool) from exc


def document_files(path: Path) -> list[Path]:
    """The documents a path stands for: the file itself, or every *.yaml/*.yml/*.json in a directory, sorted."""
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.is_file() and p.suffix in DOCUMENT_SUFFIXES)
    if path.is_file():
        return [path]
    raise PublishError(f"{path}: no such file or directory")


def load_documents(path: Path, *, namespace: str = DEFAULT_NAMESPACE) -> list[LoadedDocument]:
    """Every document of ``path``, each fully checked; ``InvalidDocuments`` lists every problem found."""
    files = document_files(path)
    if not files:
        raise PublishError(f"{path}: no *.yaml, *.yml or *.json publish documents in this directory")
    loaded: list[LoadedDocument] = []
    problems: list[ConversionError] = []
    for file in files:
        try:
            document = parse_document(file)
        except ConversionError as exc:
            problems.append(exc)
            continue
        found = check_document_release(document, namespace=namespace)
        problems.extend(found)
        if not found:
            loaded.append(document)
    seen: dict[str, Path] = {}
    for document in loaded:
        if document.name in seen:
            problems.append(
                ConversionError(
                    f"server {document.name!r} is also published by {seen[document.name]}; one document per server",
                    file=str(document.file),
                    path="$.server.name",
                )
            )
        seen.setdefault(document.name, document.file)
    if problems:
        raise InvalidDocuments(problems)
    return loaded


# ---------------------------------------------------------------- changes and targets


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
        # Nacos 3 lists servers (also ones its console created, with random ids); Nacos 2 has no listing.
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
        for info in await self._source.list_mcp_servers(namespace):
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

    async def _call(self, method: str, params: dict[str, str], action: str) -> None:
        response = await self._source.admin_request(method, MCP_ADMIN_PATH, params, action)
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if response.status_code == 200 and isinstance(answer, dict) and answer.get("code") == 0:
            return
        where = f"Nacos at {response.request.url.scheme}://{response.request.url.netloc.decode()}"
        if response.status_code == 404 and not isinstance(answer, dict):
            raise PublishError(
                f"{where} has no MCP admin API ({MCP_ADMIN_PATH} answered 404): Nacos 3.0.1 or later is "
                "required; for Nacos 2.x publish with --raw"
            )
        message = answer.get("message") if isinstance(answer, dict) else response.text[:200]
        raise PublishError(f"{where} refused to {action}: {message or 'no message'} (HTTP {response.status_code})")


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


# ---------------------------------------------------------------- planning and applying

Action = Literal["published", "drafted", "unchanged", "latest", "deleted-version", "deleted"]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened (or, in a dry run, would happen) to one server."""

    server: str
    action: Action
    version: str | None
    message: str
    writes: tuple[Write, ...] = field(default=())
    warnings: tuple[str, ...] = field(default=())
    """Things that will keep the gateway from serving the server, e.g. a referenced credential that is missing."""

    @property
    def changed(self) -> bool:
        return self.action != "unchanged"


@dataclass(frozen=True, slots=True)
class _Current:
    server_id: str
    versions: dict[str, Any]

    @property
    def latest(self) -> str | None:
        value = self.versions.get("latestPublishedVersion")
        return str(value) if value else None

    def detail(self, version: str) -> dict[str, Any] | None:
        for detail in self.versions.get("versionDetails") or []:
            if isinstance(detail, dict) and detail.get("version") == version:
                return detail
        return None

    @property
    def version_names(self) -> list[str]:
        return [str(d.get("version")) for d in self.versions.get("versionDetails") or [] if isinstance(d, dict)]


def _json_object(content: str | None, what: str) -> dict[str, Any] | None:
    if content is None or not content.strip():
        return None
    try:
        value = json.loads(content)
    except json.JSONDecodeError as exc:
        raise PublishError(f"the stored {what} is not valid JSON ({exc.msg}); fix it or delete the server") from exc
    if not isinstance(value, dict):
        raise PublishError(f"the stored {what} is not a JSON object; fix it or delete the server")
    return value


class Publisher:
    """Plans each operation against what the target holds now, checks it, then applies it (unless a dry run)."""

    def __init__(
        self,
        target: PublishTarget,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        dry_run: bool = False,
        clock: Callable[[], str] = utc_now,
    ) -> None:
        self.target = target
        self.namespace = namespace or DEFAULT_NAMESPACE
        self.dry_run = dry_run
        self.clock = clock

    def _say(self, done: str, would: str) -> str:
        return would if self.dry_run else done

    async def _current(self, name: str, pinned_id: str | None = None) -> _Current | None:
        server_id = await self.target.find(self.namespace, name, pinned_id)
        if server_id is None:
            return None
        versions = _json_object(
            await self.target.read(versions_key(server_id, self.namespace)), f"versions file of {name}"
        )
        if versions is None:
            return None
        if versions.get("name") != name:
            raise PublishError(
                f"id {server_id} already belongs to server {versions.get('name')!r} in namespace {self.namespace}; "
                f"remove server.id from the document of {name!r} or choose another"
            )
        return _Current(server_id, versions)

    async def _stored(
        self, server_id: str, version: str, name: str
    ) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        spec = _json_object(
            await self.target.read(server_spec_key(server_id, version, self.namespace)),
            f"server spec of {name} {version}",
        )
        tools = _json_object(
            await self.target.read(tools_spec_key(server_id, version, self.namespace)),
            f"tools spec of {name} {version}",
        )
        return spec, tools

    async def _apply(self, change: Change) -> None:
        if not self.dry_run:
            await self.target.apply(change)

    async def publish_all(
        self,
        documents: Sequence[LoadedDocument],
        *,
        draft: bool = False,
        on_outcome: Callable[[Outcome], None] | None = None,
    ) -> list[Outcome]:
        """Publish every document in order (each already checked by ``load_documents``).

        What the target cannot take is refused for all documents before the first write;
        ``on_outcome`` hears of each server as soon as it is done.
        """
        for document in documents:
            why = self.target.limitation(document.document, self.namespace)
            if why is not None:
                raise PublishError(f"{document.file}: {why}")
        outcomes = []
        for document in documents:
            outcome = await self.publish(document, draft=draft)
            if on_outcome is not None:
                on_outcome(outcome)
            outcomes.append(outcome)
        return outcomes

    async def publish(self, loaded: LoadedDocument, *, draft: bool = False) -> Outcome:
        doc = loaded.document
        name, version = doc.server.name, doc.server.version
        draft = draft or doc.draft
        why = self.target.limitation(doc, self.namespace)
        if why is not None:
            raise PublishError(f"{loaded.file}: {why}")
        current = await self._current(name, doc.server.id)
        stored_spec: dict[str, Any] | None = None
        stored_tools: dict[str, Any] | None = None
        if current is None:
            if draft and not self.target.creates_drafts:
                raise PublishError(
                    f"{name} does not exist yet and Nacos publishes a server's first version at once: "
                    "publish it without --draft first"
                )
            server_id = doc.server.id or default_server_id(self.namespace, name)
        else:
            server_id = current.server_id
            if doc.server.id and doc.server.id != server_id:
                raise PublishError(
                    f"{name} exists with id {server_id} but {loaded.file} pins server.id {doc.server.id}; "
                    "remove server.id or delete the server first"
                )
            stored_spec, stored_tools = await self._stored(server_id, version, name)
        release = None if draft else self.clock()
        spec = render_server_spec(doc, server_id=server_id, namespace=self.namespace, release_date=release)
        tools = render_tools_spec(doc)
        same = same_release(stored_spec, stored_tools, spec, tools)
        detail = current.detail(version) if current else None
        if draft:
            if current is not None and current.latest == version:
                raise PublishError(
                    f"{version} is the published latest version of {name}: a draft needs a new version number "
                    "(or publish it without --draft)"
                )
            if same and detail is not None:
                return Outcome(name, "unchanged", version, f"unchanged {name} {version} (draft)")
            versions = drafted_versions(current.versions if current else None, spec, version)
        else:
            if same and detail is not None and detail.get("release_date") and current and current.latest == version:
                return Outcome(name, "unchanged", version, f"unchanged {name} {version}")
            versions = published_versions(current.versions if current else None, spec, version, str(release))
        writes: list[Write] = []
        if not same:
            writes += [
                Write(server_spec_key(server_id, version, self.namespace), _dump(spec)),
                Write(tools_spec_key(server_id, version, self.namespace), _dump(tools)),
            ]
        writes.append(Write(versions_key(server_id, self.namespace), _dump(versions)))
        change = Change(
            "publish",
            self.namespace,
            server_id,
            name,
            version,
            tuple(writes),
            create=current is None,
            latest=not draft,
            server_spec=spec,
            tools_spec=tools,
        )
        await self._apply(change)
        if draft:
            latest = current.latest if current else None
            stays = f"latest stays {latest}" if latest else "nothing published yet"
            message = self._say(
                f"published {name} {version} as a draft ({stays})",
                f"would publish {name} {version} as a draft ({stays})",
            )
            return Outcome(
                name, "drafted", version, message, change.writes, await self._missing_credentials(name, tools)
            )
        message = self._say(f"published {name} {version} (latest)", f"would publish {name} {version} (latest)")
        return Outcome(name, "published", version, message, change.writes, await self._missing_credentials(name, tools))

    async def _missing_credentials(self, name: str, tools: Mapping[str, Any]) -> tuple[str, ...]:
        missing = []
        for key in sorted(credential_refs(_dump(tools), self.namespace)):
            if not await self.target.read(key):
                missing.append(
                    f"{name} refers to config {key.data_id} (group {key.group}), which does not exist in namespace "
                    f"{self.namespace}: the gateway will not serve {name} until it does"
                )
        return tuple(missing)

    async def _require(self, name: str) -> _Current:
        current = await self._current(name)
        if current is None:
            raise PublishError(f"there is no MCP server named {name!r} in namespace {self.namespace}")
        return current

    def _require_version(self, current: _Current, name: str, version: str) -> dict[str, Any]:
        detail = current.detail(version)
        if detail is None:
            known = ", ".join(current.version_names) or "none"
            raise PublishError(f"{name} has no version {version!r} (its versions: {known})")
        return detail

    async def set_latest(self, name: str, version: str) -> Outcome:
        """Serve ``version``: release it (if it was a draft) and point ``latestPublishedVersion`` at it."""
        current = await self._require(name)
        detail = self._require_version(current, name, version)
        if current.latest == version and detail.get("release_date"):
            return Outcome(name, "unchanged", version, f"unchanged {name}: {version} is already the latest")
        spec, tools = await self._stored(current.server_id, version, name)
        if spec is None or tools is None:
            raise PublishError(
                f"{name} {version} cannot be made the latest: its server or tools spec is missing; publish it again"
            )
        versions = published_versions(current.versions, dict(spec, id=current.server_id), version, self.clock())
        problems = check_release(
            versions, spec, tools, server_id=current.server_id, version=version, namespace=self.namespace
        )
        if problems:
            raise PublishError(f"{name} {version} cannot be served, so it stays unpublished: {problems[0].describe()}")
        change = Change(
            "set-latest",
            self.namespace,
            current.server_id,
            name,
            version,
            (Write(versions_key(current.server_id, self.namespace), _dump(versions)),),
            latest=True,
            server_spec=spec,
            tools_spec=tools,
        )
        await self._apply(change)
        message = self._say(f"{name}: latest version is now {version}", f"{name}: would make {version} the latest")
        return Outcome(name, "latest", version, message, change.writes)

    async def delete_version(self, name: str, version: str) -> Outcome:
        """Remove one version that is not being served."""
        if not self.target.deletes_single_versions:
            raise PublishError(_ADMIN_VERSION_DELETE)
        current = await self._require(name)
        self._require_version(current, name, version)
        if current.latest == version:
            raise PublishError(
                f"{version} is the latest published version of {name} and is being served; make another version "
                "the latest with --set-latest first, or delete the whole server with --delete"
            )
        remaining = [d for d in current.versions.get("versionDetails") or [] if d.get("version") != version]
        spec_writes = (
            Write(server_spec_key(current.server_id, version, self.namespace), None),
            Write(tools_spec_key(current.server_id, version, self.namespace), None),
        )
        versions_file = versions_key(current.server_id, self.namespace)
        # The versions file stops naming the version before its specs go.
        if remaining:
            first = Write(versions_file, _dump(dict(current.versions, versionDetails=remaining)))
        else:
            first = Write(versions_file, None)
        change = Change("delete-version", self.namespace, current.server_id, name, version, (first, *spec_writes))
        await self._apply(change)
        gone = "" if remaining else "; it was the only version, so the server is gone"
        message = self._say(f"deleted {name} {version}{gone}", f"would delete {name} {version}{gone}")
        return Outcome(name, "deleted-version", version, message, change.writes)

    async def delete(self, name: str) -> Outcome:
        """Remove the server and every version of it; a server that is not there is no error."""
        current = await self._current(name)
        if current is None:
            return Outcome(name, "unchanged", None, f"unchanged {name}: no such server in namespace {self.namespace}")
        writes = [Write(versions_key(current.server_id, self.namespace), None)]
        for version in current.version_names:
            writes += [
                Write(server_spec_key(current.server_id, version, self.namespace), None),
                Write(tools_spec_key(current.server_id, version, self.namespace), None),
            ]
        change = Change("delete", self.namespace, current.server_id, name, None, tuple(writes))
        await self._apply(change)
        count = len(current.version_names)
        message = self._say(f"deleted {name} ({count} version(s))", f"would delete {name} ({count} version(s))")
        return Outcome(name, "deleted", None, message, change.writes)
