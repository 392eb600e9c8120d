"""What a tool may contribute to ``tools/list``: checked per server, so no server can break the others.

The aggregate ``/mcp`` endpoint answers ``tools/list`` with every server's
tools in one JSON document.  One tool that the MCP SDK cannot encode (a lone
surrogate in a description, a schema too deep for its encoder, an
``outputSchema`` whose property is ``null``) used to make that answer fail
for every client while ``/admin/state`` said "serving"; one tool name that
clients refuse (a space, a colon) makes some of them drop the whole list.
So every tool is checked here, when its server's spec is converted, against
what the gateway can serve and what clients accept; a tool that fails is a
``ConversionError`` of its server, which keeps its last good version.

The rules (README, "Limits and safety"):

- name: 1 to ``MAX_TOOL_NAME`` characters of ``A-Z a-z 0-9 _ - .`` (MCP
  2025-11-25, "Tool names");
- description: at most ``MAX_DESCRIPTION_CHARS`` characters;
- ``inputSchema``: a JSON Schema whose root is ``type: "object"`` (MCP);
  ``outputSchema`` likewise, and valid under its draft's meta-schema (the
  input schema's validity is checked where its validator is compiled);
  each at most ``MAX_SCHEMA_CHARS`` characters as JSON;
- ``annotations``: an object whose ``title`` is text and whose ``*Hint``
  fields are booleans;
- everything is JSON the gateway can encode: depth, text and numbers as
  ``remote.jsondoc`` checks (specs pass through it already; a proxied
  backend's tool list is checked here);
- and, last, the MCP SDK's own model of a tool must accept it and encode it,
  which is exactly what ``tools/list`` will do.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import mcp_types as types
from pydantic import ValidationError

from mcpgw.converter.arguments import check_schema
from mcpgw.converter.models import ToolDefinition
from mcpgw.registry.errors import ConversionError
from mcpgw.remote.jsondoc import JsonDocumentError, check_value

MAX_TOOL_NAME = 128
MAX_DESCRIPTION_CHARS = 64 * 1024
MAX_SCHEMA_CHARS = 256 * 1024

_TOOL_NAME = re.compile(rf"[A-Za-z0-9_.-]{{1,{MAX_TOOL_NAME}}}")
_HINTS = ("readOnlyHint", "destructiveHint", "idempotentHint", "openWorldHint")


def shown_name(name: str) -> str:
    """A tool name as an error may quote it: short, and with nothing a terminal or UTF-8 would choke on."""
    if _TOOL_NAME.fullmatch(name):
        return name
    text = repr(name[:60])
    return text if len(name) <= 60 else text + "…"


def check_tool(definition: ToolDefinition, path: str) -> None:
    """``ConversionError`` (with ``path`` and a reason, no server location) unless the tool can be served."""
    name = definition.name
    if not _TOOL_NAME.fullmatch(name):
        raise ConversionError(
            f"the tool name {shown_name(name)} is not 1 to {MAX_TOOL_NAME} characters of A-Z, a-z, 0-9, "
            "'_', '-' and '.' (MCP's rule for tool names; clients refuse other names); rename the tool",
            path=f"{path}.name",
        )
    if len(definition.description) > MAX_DESCRIPTION_CHARS:
        raise ConversionError(
            f"the description has {len(definition.description)} characters, more than the "
            f"{MAX_DESCRIPTION_CHARS} allowed; shorten it",
            path=f"{path}.description",
        )
    _check_json(definition.model_dump(by_alias=True, exclude_none=True), path)
    _check_object_schema(definition.inputSchema, f"{path}.inputSchema", "inputSchema")
    if definition.outputSchema is not None:
        _check_object_schema(definition.outputSchema, f"{path}.outputSchema", "outputSchema")
        try:
            check_schema(definition.outputSchema, "$.outputSchema")
        except ConversionError as exc:
            raise ConversionError(exc.reason, path=exc.path.replace("$", path, 1)) from exc
    if definition.annotations is not None:
        _check_annotations(definition.annotations, f"{path}.annotations")
    _check_sdk_accepts(definition, path)


def _check_json(value: Any, path: str) -> None:
    try:
        check_value(value)
    except JsonDocumentError as exc:
        raise ConversionError(exc.reason, path=exc.path.replace("$", path, 1)) from exc


def _check_object_schema(schema: Mapping[str, Any], path: str, field: str) -> None:
    if schema.get("type") != "object":
        raise ConversionError(
            f'the {field} must be a JSON Schema with "type": "object" at its root (MCP requires it), '
            f"found type {json.dumps(schema.get('type'))}",
            path=f"{path}.type",
        )
    size = len(json.dumps(schema, ensure_ascii=False))
    if size > MAX_SCHEMA_CHARS:
        raise ConversionError(
            f"the {field} has {size} characters as JSON, more than the {MAX_SCHEMA_CHARS} allowed; simplify it",
            path=path,
        )


def _check_annotations(annotations: Mapping[str, Any], path: str) -> None:
    title = annotations.get("title")
    if title is not None and not isinstance(title, str):
        raise ConversionError("the annotation title must be text", path=f"{path}.title")
    for hint in _HINTS:
        value = annotations.get(hint)
        if value is not None and not isinstance(value, bool):
            raise ConversionError(f"the annotation {hint} must be true or false", path=f"{path}.{hint}")


def _check_sdk_accepts(definition: ToolDefinition, path: str) -> None:
    """What the endpoint will do with the tool (``gateway.catalog.to_mcp_tool``), done once here."""
    try:
        annotations = (
            types.ToolAnnotations.model_validate(dict(definition.annotations)) if definition.annotations else None
        )
        tool = types.Tool(
            name=definition.name,
            description=definition.description or None,
            input_schema=dict(definition.inputSchema),
            output_schema=dict(definition.outputSchema) if definition.outputSchema else None,
            annotations=annotations,
        )
        tool.model_dump_json(by_alias=True, exclude_none=True)
    except (ValidationError, ValueError) as exc:
        raise ConversionError(
            f"the MCP SDK cannot serve this tool ({type(exc).__name__}: {str(exc)[:200]}); fix its definition",
            path=path,
        ) from exc
