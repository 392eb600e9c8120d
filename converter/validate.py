"""``mcpgw validate``: check a files tree or a single Nacos file before anyone serves it.

Two layers: the JSON Schemas of the three documents (every structural
problem at once, each with its JSON path), then the converter itself on every
version found (templates parsed, json-go-template rules, credentials
resolved), so what passes here is what the gateway will accept.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema

from converter import schemas
from converter.converter import ConfigConverter, ServerSnapshot, credential_refs
from registry.errors import ConversionError
from remote.base import (
    SERVER_GROUP,
    TOOLS_GROUP,
    VERSIONS_GROUP,
    ConfigKey,
    ServiceInstance,
    server_spec_key,
    tools_spec_key,
)

LEGACY_NAMESPACE = "nacos-default-mcp"

_KIND_BY_SUFFIX = {
    "-mcp-versions.json": "versions",
    "-mcp-server.json": "server",
    "-mcp-tools.json": "tools",
}


@dataclass(frozen=True, slots=True)
class Problem:
    file: str
    path: str
    reason: str
    tool: str = ""

    def __str__(self) -> str:
        tool = f" tool {self.tool}:" if self.tool else ""
        return f"{self.file}:{tool} {self.path}: {self.reason}"


def _json_path(parts: Any) -> str:
    path = "$"
    for part in parts:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def kind_of(file_name: str) -> str | None:
    for suffix, kind in _KIND_BY_SUFFIX.items():
        if file_name.endswith(suffix):
            return kind
    return None


def check_document(name: str, content: str, kind: str) -> list[Problem]:
    """Syntax and JSON Schema of one document."""
    try:
        data = json.loads(content)
    except json.JSONDecodeError as exc:
        return [Problem(name, "$", f"not valid JSON (line {exc.lineno} column {exc.colno}: {exc.msg})")]
    problems: list[Problem] = []
    if kind == "tools" and isinstance(data, dict) and data.get("encryptData"):
        return [Problem(name, "$.encryptData", "the tools spec is encrypted; publish it unencrypted")]
    validator = jsonschema.Draft202012Validator(schemas.load(kind))
    for error in sorted(validator.iter_errors(data), key=lambda e: list(map(str, e.absolute_path))):
        path = list(error.absolute_path)
        tool = ""
        if kind == "tools" and len(path) >= 2 and path[0] == "tools" and isinstance(path[1], int):
            tools = data.get("tools") or []
            if path[1] < len(tools) and isinstance(tools[path[1]], dict):
                tool = str(tools[path[1]].get("name", ""))
        elif kind == "tools" and len(path) >= 2 and path[0] == "toolsMeta":
            tool = str(path[1])
        problems.append(Problem(name, _json_path(path), error.message, tool))
    return problems


def check_tools_alone(name: str, content: str) -> list[Problem]:
    """Converter checks of a lone tools spec (templates compile), as a REST server would see them.

    The configs its credential references name are not at hand: where each
    reference stands is checked, what it resolves to is not.
    """
    server_id = name.split("-mcp-tools.json")[0]
    snapshot = ServerSnapshot(
        server_id="validate",
        namespace="public",
        versions=json.dumps({"id": "validate", "name": "validate", "latestPublishedVersion": "v",
                             "versionDetails": [{"version": "v", "release_date": "now"}]}),
        server_spec=json.dumps({"id": "validate", "name": "validate", "protocol": "http",
                                "versionDetail": {"version": "v"},
                                "remoteServerConfig": {"serviceRef": {"serviceName": "validate"}}}),
        tools_spec=content,
        credentials_unread=True,
    )
    try:
        ConfigConverter().convert(snapshot)
    except ConversionError as exc:
        return [Problem(name or server_id, exc.path, exc.reason, exc.tool)]
    return []


def validate_file(path: Path) -> list[Problem]:
    kind = kind_of(path.name)
    if kind is None:
        return [Problem(path.name, "$", "not a Nacos MCP file: the name must end in -mcp-versions.json, "
                        "-mcp-server.json or -mcp-tools.json")]
    try:
        content = path.read_text()
    except OSError as exc:
        return [Problem(path.name, "$", f"cannot read: {exc.strerror}")]
    problems = check_document(path.name, content, kind)
    if not problems and kind == "tools":
        problems = check_tools_alone(path.name, content)
    return problems


def _read(root: Path, key: ConfigKey) -> str | None:
    path = root / "config" / key.namespace / key.group / key.data_id
    try:
        return path.read_text()
    except FileNotFoundError:
        return None


def _instances(root: Path, namespace: str, group: str, service: str) -> tuple[ServiceInstance, ...]:
    path = root / "naming" / namespace / group / f"{service}.json"
    if not path.exists():
        return ()
    raw = json.loads(path.read_text())
    return tuple(ServiceInstance(ip=str(i["ip"]), port=int(i["port"])) for i in raw if isinstance(i, dict))


def _version_files(root: Path) -> Iterator[tuple[str, Path]]:
    config = root / "config"
    for ns_dir in sorted(p for p in config.iterdir() if p.is_dir()):
        group_dir = ns_dir / VERSIONS_GROUP
        if group_dir.is_dir():
            for f in sorted(group_dir.iterdir()):
                if f.name.endswith("-mcp-versions.json"):
                    yield ns_dir.name, f


def validate_tree(root: Path) -> list[Problem]:
    if not (root / "config").is_dir():
        return [Problem(str(root), "$", "not a files tree: expected a config/<namespace>/<group>/<dataId> layout")]
    problems: list[Problem] = []
    if (root / "config" / LEGACY_NAMESPACE).exists():
        problems.append(Problem(f"config/{LEGACY_NAMESPACE}", "$", "this is the Nacos 3.0.0 layout (namespace "
                                "nacos-default-mcp), which mcpgw does not support; republish on Nacos >= 3.0.1"))
    for ns_dir in sorted(p for p in (root / "config").iterdir() if p.is_dir()):
        for group in (VERSIONS_GROUP, SERVER_GROUP, TOOLS_GROUP):
            for f in sorted((ns_dir / group).glob("*")) if (ns_dir / group).is_dir() else []:
                kind = kind_of(f.name)
                if kind is not None:
                    problems.extend(check_document(f.name, f.read_text(), kind))
    if problems:
        return problems
    converter = ConfigConverter()
    for namespace, versions_path in _version_files(root):
        versions_text = versions_path.read_text()
        versions = json.loads(versions_text)
        server_id = str(versions.get("id", ""))
        for detail in versions.get("versionDetails") or []:
            version = str(detail.get("version", ""))
            spec = _read(root, server_spec_key(server_id, version, namespace))
            tools = _read(root, tools_spec_key(server_id, version, namespace))
            if spec is None or tools is None:
                missing = server_spec_key(server_id, version, namespace).data_id if spec is None else \
                    tools_spec_key(server_id, version, namespace).data_id
                if version == versions.get("latestPublishedVersion"):
                    problems.append(Problem(versions_path.name, "$.latestPublishedVersion",
                                            f"version {version} is published but {missing} is missing"))
                continue
            # Validate every version (drafts too) as if it were the one served.
            as_latest = dict(versions, latestPublishedVersion=version, enabled=True,
                             versionDetails=[{"version": version, "release_date": "validate"}])
            spec_data = json.loads(spec)
            ref = (spec_data.get("remoteServerConfig") or {}).get("serviceRef") or {}
            instances = _instances(root, ref.get("namespaceId") or "public", ref.get("groupName") or "DEFAULT_GROUP",
                                   str(ref.get("serviceName", "")))
            creds = {key: _read(root, key) for key in credential_refs(tools, namespace)}
            snapshot = ServerSnapshot(
                server_id=server_id, namespace=namespace, versions=json.dumps(as_latest),
                server_spec=json.dumps(dict(spec_data, enabled=True)), tools_spec=tools,
                instances=instances, credentials=creds,
            )
            try:
                converter.convert(snapshot)
            except ConversionError as exc:
                problems.append(Problem(exc.file or versions_path.name, exc.path, exc.reason, exc.tool))
    return problems


def validate_path(path: Path) -> list[Problem]:
    if path.is_dir():
        return validate_tree(path)
    if path.is_file():
        return validate_file(path)
    return [Problem(str(path), "$", "no such file or directory")]
