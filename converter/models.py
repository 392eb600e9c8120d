"""Pydantic models of the three Nacos 3 MCP-registry documents, as Nacos 3.0.1+ writes them.

We parse Nacos files with our own models, not the SDK's: the SDK's AI models
drift from what the server sends (``securitySchemes`` vs ``securitySchema``,
``release_date`` vs ``release_data``).  Unknown fields are kept (Nacos adds
fields over time) but every field we act on is typed and checked here, so a
bad document fails with a JSON path instead of a call-time surprise.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator


class _NacosModel(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True)


class VersionDetail(_NacosModel):
    version: str = Field(min_length=1)
    release_date: str | None = None
    is_latest: bool | None = None

    @property
    def published(self) -> bool:
        """A version without a release date is an unpublished draft."""
        return bool(self.release_date)


class VersionsFile(_NacosModel):
    """``{id}-mcp-versions.json`` in group ``mcp-server-versions``."""

    id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    protocol: str = ""
    frontProtocol: str = ""
    description: str = ""
    enabled: bool = True
    capabilities: list[str] = Field(default_factory=list)
    latestPublishedVersion: str | None = None
    versionDetails: list[VersionDetail] = Field(default_factory=list)
    status: str | None = None


MAX_SERVICE_NAME_BYTES = 250
MAX_GROUP_NAME_BYTES = 128
"""Also the limit of a namespace id."""

_UNUSABLE_IN_NAMES = re.compile(r"[/\\\s\x00-\x1f\x7f]")


class ServiceRef(_NacosModel):
    namespaceId: str = "public"
    groupName: str = "DEFAULT_GROUP"
    serviceName: str = Field(min_length=1)
    transportProtocol: str | None = None

    @field_validator("namespaceId", "groupName", "serviceName")
    @classmethod
    def _usable_name(cls, value: str, info: ValidationInfo) -> str:
        """A source keys files, URLs and caches by these names: no path separators, white space or controls,
        and short enough to name a file (``<service>.json`` within the 255 bytes file systems allow)."""
        if _UNUSABLE_IN_NAMES.search(value) or value in (".", ".."):
            raise ValueError(
                "a namespace, group or service name cannot hold '/', '\\', white space or control characters, "
                "or be '.' or '..'"
            )
        limit = MAX_SERVICE_NAME_BYTES if info.field_name == "serviceName" else MAX_GROUP_NAME_BYTES
        if len(value.encode("utf-8", "surrogatepass")) > limit:
            raise ValueError(f"the name is longer than the {limit} bytes allowed")
        return value


class RemoteServerConfig(_NacosModel):
    serviceRef: ServiceRef | None = None
    exportPath: str = ""
    frontEndpointConfigList: list[dict[str, Any]] | None = None


class ServerVersionDetail(_NacosModel):
    version: str = Field(min_length=1)
    release_date: str | None = None
    is_latest: bool | None = None


class ServerSpec(_NacosModel):
    """``{id}-{version}-mcp-server.json`` in group ``mcp-server``."""

    id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    protocol: str = Field(min_length=1)
    frontProtocol: str = ""
    description: str = ""
    versionDetail: ServerVersionDetail
    remoteServerConfig: RemoteServerConfig | None = None
    enabled: bool = True
    capabilities: list[str] = Field(default_factory=list)
    toolsDescriptionRef: str | None = None
    localServerConfig: dict[str, Any] | None = None
    packages: list[dict[str, Any]] | None = None
    repository: dict[str, Any] | None = None


class ToolDefinition(_NacosModel):
    name: str = Field(min_length=1)
    description: str = ""
    inputSchema: dict[str, Any] = Field(default_factory=lambda: {"type": "object"})
    outputSchema: dict[str, Any] | None = None
    annotations: dict[str, Any] | None = None


class ToolMeta(_NacosModel):
    enabled: bool = True
    invokeContext: dict[str, Any] | None = None
    templates: dict[str, Any] = Field(default_factory=dict)


class SecurityScheme(_NacosModel):
    id: str = Field(min_length=1)
    type: str = Field(min_length=1)
    scheme: str | None = None
    in_: str | None = Field(default=None, alias="in")
    name: str | None = None
    defaultCredential: str | None = None


class ToolsSpec(_NacosModel):
    """``{id}-{version}-mcp-tools.json`` in group ``mcp-tools``."""

    tools: list[ToolDefinition] = Field(default_factory=list)
    toolsMeta: dict[str, ToolMeta] = Field(default_factory=dict)
    securitySchemes: list[SecurityScheme] = Field(default_factory=list)
    specificationType: str | None = None
    encryptData: Any = None
