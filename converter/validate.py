"""``mcpgw validate``: the gateway's own judgement of a files tree (or one Nacos file), before anyone serves it.

Same judge, not a look-alike: every file is read as the files source reads
it (``remote.files``: UTF-8, empty files, instances files and their dropped
entries, scratch files ignored), every document is parsed as the converter
parses it (``remote.jsondoc`` limits, our pydantic models) and every server
version goes through ``ConfigConverter.check``, which is ``convert`` itself
collecting instead of stopping.  What passes here is what the gateway
serves; what the gateway rejects is reported here, with file, tool and JSON
path.  Two differences, both stricter: every version is checked (drafts
and a disabled server too, as if served), and all problems of a tree are
reported in one run, where the gateway shows the first one per server.

``check_document`` (JSON Schemas of the three documents) is kept for
``mcpgw publish``, which checks the documents it writes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema

from mcpgw.converter import schemas
from mcpgw.converter.converter import (
    ConfigConverter,
    ServerSnapshot,
    credential_refs,
    parse_server_spec,
    parse_versions,
    select_version,
    service_key_of,
)
from mcpgw.registry.errors import ConversionError
from mcpgw.remote.base import ConfigKey, ServiceKey, server_spec_key, tools_spec_key, versions_key
from mcpgw.remote.files import EMPTY_FILE, InstancesFile, decode_config, decode_instances, key_of
from mcpgw.remote.jsondoc import JsonDocumentError, load_json
from mcpgw.remote.memory import VERSIONS_SUFFIX, is_versions_key

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
    """Syntax and JSON Schema of one document (what ``mcpgw publish`` checks before it writes)."""
    try:
        data = load_json(content)
    except JsonDocumentError as exc:
        return [Problem(name, exc.path, exc.reason)]
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


def _problem(exc: ConversionError, default_file: str) -> Problem:
    return Problem(exc.file or default_file, exc.path, exc.reason, exc.tool)


# -- reading the tree as the files source does ------------------------------------------------------


@dataclass
class _Tree:
    root: Path
    configs: dict[ConfigKey, str]
    instances: dict[ServiceKey, InstancesFile]
    problems: list[Problem]

    def name(self, path: Path) -> str:
        return str(path.relative_to(self.root))


def _files(directory: Path) -> Iterator[Path]:
    """Every file under ``directory``, in a stable order (unreadable directories are skipped)."""
    for dirpath, dirnames, filenames in os.walk(directory):
        dirnames.sort()
        for name in sorted(filenames):
            yield Path(dirpath) / name


def _read_tree(root: Path) -> _Tree:
    tree = _Tree(root, {}, {}, [])
    for path in [*_files(root / "config"), *_files(root / "naming")]:
        key = key_of(root, path)
        if key is None:
            continue
        try:
            data = path.read_bytes()
        except OSError as exc:
            tree.problems.append(Problem(tree.name(path), "$", f"cannot be read: {exc.strerror or exc}"))
            continue
        if not data.strip():
            tree.problems.append(Problem(tree.name(path), "$", EMPTY_FILE))
            continue
        try:
            if isinstance(key, ConfigKey):
                tree.configs[key] = decode_config(data)
            else:
                parsed = decode_instances(key, data)
                tree.instances[key] = parsed
                tree.problems.extend(Problem(tree.name(path), "$", dropped) for dropped in parsed.dropped)
        except ValueError as exc:
            tree.problems.append(Problem(tree.name(path), "$", str(exc)))
    return tree


# -- one server, every version ------------------------------------------------------------------------


def _check_server(tree: _Tree, key: ConfigKey, converter: ConfigConverter) -> list[Problem]:
    namespace, server_id = key.namespace, key.data_id.removesuffix(VERSIONS_SUFFIX)
    versions_text = tree.configs[key]
    collected: list[ConversionError] = []
    try:
        versions = parse_versions(server_id, namespace, versions_text, problems=collected)
    except ConversionError as exc:
        return [_problem(e, key.data_id) for e in [exc, *collected]]
    problems: list[Problem] = [_problem(e, key.data_id) for e in collected]
    if versions.enabled:
        try:
            select_version(versions, namespace)  # the version the gateway would serve
        except ConversionError as exc:
            problems.append(_problem(exc, key.data_id))
    for detail in versions.versionDetails:
        problems.extend(_check_version(tree, server_id, namespace, versions_text, detail.version,
                                       served_version=versions.latestPublishedVersion, converter=converter))
    return problems


def _check_version(
    tree: _Tree, server_id: str, namespace: str, versions_text: str, version: str, *,
    served_version: str | None, converter: ConfigConverter,
) -> list[Problem]:
    spec_key = server_spec_key(server_id, version, namespace)
    tools_key = tools_spec_key(server_id, version, namespace)
    spec_text, tools_text = tree.configs.get(spec_key), tree.configs.get(tools_key)
    if spec_text is None or tools_text is None:
        if version != served_version:
            return []  # an unpublished or old version without its files is no problem until it is served
        missing = (spec_key if spec_text is None else tools_key).data_id
        return [Problem(versions_key(server_id, namespace).data_id, "$.latestPublishedVersion",
                        f"version {version} is published but {missing} is missing")]
    collected: list[ConversionError] = []
    try:
        spec = parse_server_spec(server_id, version, namespace, spec_text, problems=collected)
    except ConversionError as exc:
        return [_problem(e, spec_key.data_id) for e in [exc, *collected]]
    problems: list[Problem] = []
    service = service_key_of(spec)
    instances = tree.instances.get(service) if service is not None else None
    # Checked as if it were the served version, and enabled (a disabled server is still worth checking).
    as_served = dict(json.loads(versions_text), latestPublishedVersion=version, enabled=True,
                     versionDetails=[{"version": version, "release_date": "validate"}])
    snapshot = ServerSnapshot(
        server_id=server_id,
        namespace=namespace,
        versions=json.dumps(as_served),
        server_spec=json.dumps(dict(json.loads(spec_text), enabled=True)),
        tools_spec=tools_text,
        instances=instances.instances if instances is not None else (),
        credentials={ref: tree.configs.get(ref) for ref in credential_refs(tools_text, namespace)},
    )
    problems.extend(_problem(p, tools_key.data_id) for p in converter.check(snapshot))
    return problems


def validate_tree(root: Path) -> list[Problem]:
    if not (root / "config").is_dir():
        return [Problem(str(root), "$", "not a files tree: expected a config/<namespace>/<group>/<dataId> layout")]
    problems: list[Problem] = []
    if (root / "config" / LEGACY_NAMESPACE).exists():
        problems.append(Problem(f"config/{LEGACY_NAMESPACE}", "$", "this is the Nacos 3.0.0 layout (namespace "
                                "nacos-default-mcp), which mcpgw does not support; republish on Nacos >= 3.0.1"))
    tree = _read_tree(root)
    problems.extend(tree.problems)
    converter = ConfigConverter()
    for key in sorted(k for k in tree.configs if is_versions_key(k)):
        problems.extend(_check_server(tree, key, converter))
    return _unique(problems)


def _unique(problems: list[Problem]) -> list[Problem]:
    """The same problem found through two versions sharing a file is reported once."""
    return list(dict.fromkeys(problems))


# -- one file -----------------------------------------------------------------------------------------


def _check_tools_alone(name: str, content: str) -> list[Problem]:
    """Converter checks of a lone tools spec (templates compile), as a REST server would see them.

    The configs its credential references name are not at hand: where each
    reference stands is checked, what it resolves to is not.
    """
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
    return [Problem(name, p.path, p.reason, p.tool) for p in ConfigConverter().check(snapshot)]


def _check_one_document(name: str, content: str, kind: str) -> list[Problem]:
    collected: list[ConversionError] = []
    try:
        if kind == "tools":
            return _check_tools_alone(name, content)
        if kind == "versions":
            parse_versions(name.removesuffix(VERSIONS_SUFFIX), "public", content, problems=collected)
        else:
            # The dataId joins id and version with "-", which both may contain: take them from the document.
            raw = load_json(content)
            doc = raw if isinstance(raw, dict) else {}
            detail = doc.get("versionDetail")
            version = str(detail.get("version", "")) if isinstance(detail, dict) else ""
            server_id = str(doc.get("id", ""))
            parse_server_spec(server_id, version, "public", content, problems=collected)
            expected = server_spec_key(server_id, version).data_id
            if name != expected:
                collected.append(ConversionError(
                    f"the file name does not match the document: a server spec of id {server_id} and version "
                    f"{version} is named {expected}", path="$"))
    except JsonDocumentError as exc:
        return [Problem(name, exc.path, exc.reason)]
    except ConversionError as exc:
        collected.insert(0, exc)
    return [Problem(name, p.path, p.reason, p.tool) for p in collected]


def validate_file(path: Path) -> list[Problem]:
    in_naming = len(path.parts) >= 4 and path.parts[-4] == "naming" and path.suffix == ".json"
    kind = kind_of(path.name)
    if kind is None and not in_naming:
        return [Problem(path.name, "$", "not a Nacos MCP file: the name must end in -mcp-versions.json, "
                        "-mcp-server.json or -mcp-tools.json, or be an instances file naming/<ns>/<group>/<name>.json")]
    try:
        data = path.read_bytes()
    except OSError as exc:
        return [Problem(path.name, "$", f"cannot be read: {exc.strerror or exc}")]
    if not data.strip():
        return [Problem(path.name, "$", EMPTY_FILE)]
    try:
        if kind is None:
            service = ServiceKey(path.parts[-3], path.parts[-2], path.name.removesuffix(".json"))
            return [Problem(path.name, "$", dropped) for dropped in decode_instances(service, data).dropped]
        content = decode_config(data)
    except ValueError as exc:
        return [Problem(path.name, "$", str(exc))]
    return _check_one_document(path.name, content, kind)


def validate_path(path: Path) -> list[Problem]:
    if path.is_dir():
        return validate_tree(path)
    if path.is_file():
        return validate_file(path)
    return [Problem(str(path), "$", "no such file or directory")]
