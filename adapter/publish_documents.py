"""Publish documents: what an operator writes, and the three Nacos documents it becomes, checked before any write.

Writing the three Nacos MCP-registry documents by hand is how specs go wrong:
a versions file pointing at a spec that is not there, a template that does
not parse, ``release_date`` spelt the SDK's way.  An operator writes instead
one YAML or JSON document per server (server, version, tools with their
templates); this module turns it into exactly what Nacos 3 writes, checks
that with the JSON Schemas of the three documents and with the gateway's own
``ConfigConverter`` (so what publishes is what serves), and only then does
``adapter.publish`` write.  Every document of a run is checked before the
first write: a bad one names file, tool and JSON path, and nothing is written.

A new server's id is a UUID derived from namespace and name (``uuid5``), so
the same document publishes to the same dataIds on every target; a document
may pin its own ``server.id``.

``PublishError`` is defined here, the lowest of the three publish modules,
because ``load_documents`` already raises it for a path that holds no
documents; the targets and the publisher raise it too.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mcpgw.converter.converter import TEMPLATE_KIND, ConfigConverter, ServerSnapshot
from mcpgw.converter.models import SecurityScheme
from mcpgw.converter.validate import check_document
from mcpgw.registry.errors import ConversionError, McpgwError
from mcpgw.remote.base import DEFAULT_GROUP, DEFAULT_NAMESPACE, ConfigKey, server_spec_key, tools_spec_key, versions_key

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
    credentials: Mapping[ConfigKey, str | None] | None = None,
) -> list[ConversionError]:
    """The three documents through the JSON Schemas, then through the converter as the served version.

    Errors name the Nacos file (dataId) and the JSON path in it.  Without
    ``credentials`` (the contents of the configs the tools spec references)
    only where each reference stands is checked: whether the configs exist is
    the target's business, and the gateway reports a missing one by name.
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
        credentials=credentials or {},
        credentials_unread=credentials is None,
    )
    return ConfigConverter().check(snapshot)


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
    """Read and check the shape of one publish document; ``ConversionError`` names file, tool and path.

    Only the first problem is raised; ``read_document`` gives them all.
    """
    document, problems = read_document(file)
    if document is None:
        raise problems[0]
    return document


def read_document(file: Path) -> tuple[LoadedDocument | None, list[ConversionError]]:
    """One publish document read and its shape checked: the document, or every problem of its shape."""
    try:
        raw = _parse_file(file)
    except ConversionError as exc:
        return None, [exc]
    if not isinstance(raw, dict):
        return None, [ConversionError(
            "a publish document is a mapping with `server` and `tools`; see fixtures/nacos-configs/publish-examples",
            file=str(file),
        )]
    try:
        return LoadedDocument(file, PublishDocument.model_validate(raw)), []
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            loc = list(error["loc"])
            tool = ""
            if len(loc) >= 2 and loc[0] == "tools" and isinstance(loc[1], int):
                tools = raw.get("tools")
                if isinstance(tools, list) and loc[1] < len(tools) and isinstance(tools[loc[1]], dict):
                    tool = str(tools[loc[1]].get("name", ""))
            reason = str(error["msg"]).removeprefix("Value error, ")
            problems.append(ConversionError(reason, file=str(file), path=_pydantic_path(loc), tool=tool))
        return None, problems


def document_files(path: Path) -> list[Path]:
    """The documents a path stands for: the file itself, or every *.yaml/*.yml/*.json in a directory, sorted."""
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.is_file() and p.suffix in DOCUMENT_SUFFIXES)
    if path.is_file():
        return [path]
    raise PublishError(f"{path}: no such file or directory")


def load_documents(
    path: Path, *, namespace: str = DEFAULT_NAMESPACE, on_checked: Callable[[int, int], None] | None = None
) -> list[LoadedDocument]:
    """Every document of ``path``, each fully checked; ``InvalidDocuments`` lists every problem found.

    ``on_checked(done, total)`` hears of each document checked (progress for a directory of many).
    """
    loaded, problems = check_documents(path, namespace=namespace, on_checked=on_checked)
    if problems:
        raise InvalidDocuments(problems)
    return loaded


def check_documents(
    path: Path, *, namespace: str = DEFAULT_NAMESPACE, on_checked: Callable[[int, int], None] | None = None
) -> tuple[list[LoadedDocument], list[ConversionError]]:
    """The valid documents of ``path`` and every problem of the others (shape, schemas, converter, duplicates)."""
    files = document_files(path)
    if not files:
        raise PublishError(f"{path}: no *.yaml, *.yml or *.json publish documents in this directory")
    loaded: list[LoadedDocument] = []
    problems: list[ConversionError] = []
    for done, file in enumerate(files, 1):
        document, found = read_document(file)
        if document is not None:
            found = check_document_release(document, namespace=namespace)
            if not found:
                loaded.append(document)
        problems.extend(found)
        if on_checked is not None:
            on_checked(done, len(files))
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
    return loaded, problems
