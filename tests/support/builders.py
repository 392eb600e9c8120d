"""Builders of Nacos-format documents for tests: real file contents, as Nacos 3.0.1+ writes them."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from mcpgw.remote.base import ConfigKey, ServiceInstance, ServiceKey, server_spec_key, tools_spec_key, versions_key

RELEASED = "2025-09-01T08:00:00Z"


def versions_doc(server_id: str, name: str, latest: str | None, published: Sequence[str],
                 drafts: Sequence[str] = (), *, enabled: bool = True, protocol: str = "http") -> str:
    details: list[dict[str, Any]] = [
        {"version": v, "release_date": RELEASED, "is_latest": v == latest} for v in published
    ] + [{"version": v} for v in drafts]
    return json.dumps({
        "id": server_id, "name": name, "protocol": protocol, "frontProtocol": "mcp-streamable",
        "description": f"{name} server", "enabled": enabled, "capabilities": ["TOOL"],
        "latestPublishedVersion": latest, "versionDetails": details,
    })


def server_doc(server_id: str, name: str, version: str, *, service: str | None = "svc", protocol: str = "http",
               enabled: bool = True, export_path: str = "", group: str = "DEFAULT_GROUP",
               namespace: str = "public") -> str:
    remote: dict[str, Any] = {"exportPath": export_path}
    if service is not None:
        remote["serviceRef"] = {"namespaceId": namespace, "groupName": group, "serviceName": service}
    return json.dumps({
        "id": server_id, "name": name, "protocol": protocol, "frontProtocol": "mcp-streamable",
        "description": f"{name} server", "versionDetail": {"version": version, "release_date": RELEASED},
        "enabled": enabled, "capabilities": ["TOOL"], "remoteServerConfig": remote,
        "toolsDescriptionRef": f"{server_id}-{version}-mcp-tools.json",
    })


def rest_tool(name: str, url: str = "/x", *, method: str = "GET", args: Iterable[str] = ("q",),
              enabled: bool = True, template: dict[str, Any] | None = None,
              schema: dict[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    arg_list = list(args)
    definition = {
        "name": name, "description": f"{name} tool",
        "inputSchema": schema or {"type": "object", "properties": {a: {"type": "string"} for a in arg_list},
                                  "required": arg_list},
    }
    meta = {"enabled": enabled, "templates": {"json-go-template": template or {
        "requestTemplate": {"url": url, "method": method, "argsToUrlParam": True},
        "responseTemplate": {},
    }}}
    return definition, meta


def tools_doc(*tools: tuple[dict[str, Any], dict[str, Any]], security: list[dict[str, Any]] | None = None) -> str:
    doc: dict[str, Any] = {"tools": [d for d, _ in tools], "toolsMeta": {d["name"]: m for d, m in tools}}
    if security:
        doc["securitySchemes"] = security
    return json.dumps(doc)


def server_files(server_id: str, name: str, version: str, tools: str, *, service: str | None = "svc",
                 protocol: str = "http", namespace: str = "public", **spec: Any) -> dict[ConfigKey, str]:
    """The three configs of a server with one published version."""
    return {
        versions_key(server_id, namespace): versions_doc(server_id, name, version, [version], protocol=protocol),
        server_spec_key(server_id, version, namespace): server_doc(server_id, name, version, service=service,
                                                                   protocol=protocol, **spec),
        tools_spec_key(server_id, version, namespace): tools,
    }


def instances(*ports: int, host: str = "127.0.0.1", service: str = "svc", **fields: Any) -> list[ServiceInstance]:
    return [ServiceInstance(ip=host, port=p, service_name=service, **fields) for p in ports]


def service_key(service: str = "svc", group: str = "DEFAULT_GROUP", namespace: str = "public") -> ServiceKey:
    return ServiceKey(namespace, group, service)
