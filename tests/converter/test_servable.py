"""What a server contributes to ``tools/list`` is checked when its spec is converted, so it cannot break the listing.

The property at the end is the point: any tool the converter accepts, the
MCP layer can list (``to_mcp_tool``, then the SDK's JSON encoding of a whole
``tools/list`` result), whatever the spec held.
"""

from __future__ import annotations

import json
from typing import Any

import mcp_types as types
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mcpgw.converter.converter import ConfigConverter, ServerSnapshot
from mcpgw.gateway.catalog import to_mcp_tool
from mcpgw.registry.errors import ConversionError
from mcpgw.registry.models import ServerModels
from mcpgw.remote.base import ServiceInstance
from tests.support.builders import rest_tool, server_doc, versions_doc

SID = "0f6a1d2e-5555-4a6b-8c0e-000000000005"
FUZZ = settings(max_examples=250, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _snapshot(tools: str, instances: tuple[ServiceInstance, ...] = ()) -> ServerSnapshot:
    return ServerSnapshot(server_id=SID, namespace="public", versions=versions_doc(SID, "s", "1", ["1"]),
                          server_spec=server_doc(SID, "s", "1"), tools_spec=tools, instances=instances)


def _tools_text(definition: dict[str, Any]) -> str:
    _, meta = rest_tool("t")
    name = definition.get("name", "t")
    return json.dumps({"tools": [definition], "toolsMeta": {name if isinstance(name, str) else "t": meta}})


def _error(definition: dict[str, Any]) -> ConversionError:
    with pytest.raises(ConversionError) as caught:
        ConfigConverter().convert(_snapshot(_tools_text(definition)))
    return caught.value


BASE: dict[str, Any] = {"name": "t", "description": "d", "inputSchema": {"type": "object"}}


@pytest.mark.parametrize(("change", "path", "reason"), [
    ({"name": "two words"}, "$.tools[0].name", "not 1 to 128 characters"),
    ({"name": "x" * 129}, "$.tools[0].name", "not 1 to 128 characters"),
    ({"name": "tool:colon"}, "$.tools[0].name", "not 1 to 128 characters"),
    ({"description": "x" * 70_000}, "$.tools[0].description", "more than the 65536 allowed"),
    ({"inputSchema": {"type": "array"}}, "$.tools[0].inputSchema.type", '"type": "object" at its root'),
    ({"inputSchema": {}}, "$.tools[0].inputSchema.type", '"type": "object" at its root'),
    ({"outputSchema": {"type": "string"}}, "$.tools[0].outputSchema.type", '"type": "object" at its root'),
    ({"outputSchema": {"type": "object", "properties": {"x": None}}}, "$.tools[0].outputSchema.properties.x",
     "output schema is not a valid JSON Schema"),
    ({"annotations": {"readOnlyHint": "yes"}}, "$.tools[0].annotations.readOnlyHint", "must be true or false"),
    ({"annotations": {"title": ["x"]}}, "$.tools[0].annotations.title", "must be text"),
])
def test_a_tool_the_mcp_layer_cannot_list_is_a_conversion_error_at_its_json_path(
    change: dict[str, Any], path: str, reason: str
) -> None:
    error = _error({**BASE, **change})

    assert error.path == path
    assert reason in error.reason
    assert error.file.endswith("-mcp-tools.json")


def test_a_proxied_backends_tool_list_is_checked_the_same_way() -> None:
    from mcpgw.converter.converter import _backend_definitions

    with pytest.raises(ConversionError) as caught:
        _backend_definitions([{"name": "ok", "inputSchema": {"type": "object"}},
                              {"name": "bad", "inputSchema": {"type": "object", "description": "\ud800"}}], {})
    assert caught.value.path == "$.tools[1].inputSchema.description"


def test_an_unusable_instance_is_dropped_and_said_so_while_the_rest_serve() -> None:
    instances = (ServiceInstance("10.0.0.1", 80), ServiceInstance("10.0.0.2", 80, weight=float("nan")),
                 ServiceInstance("a@b", 80), ServiceInstance("10.0.0.3", 70_000))
    models = ConfigConverter().convert(_snapshot(_tools_text(BASE), instances))

    assert isinstance(models, ServerModels) and models.cluster is not None
    assert [i.id for i in models.cluster.instances] == ["10.0.0.1:80"]
    assert len(models.warnings) == 3
    assert all("dropped" in warning for warning in models.warnings)


_scalars = st.none() | st.booleans() | st.integers(-10, 10) | st.text(max_size=6)
_json = st.recursive(_scalars, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
                     max_leaves=12)
_schema_keys = st.sampled_from(["type", "properties", "items", "required", "enum", "description", "default", "x"])
_schemas = st.recursive(
    st.fixed_dictionaries({"type": st.sampled_from(["object", "string", "integer", "array", 1, None])}),
    lambda c: st.dictionaries(_schema_keys, c | _json, max_size=4)
    | st.fixed_dictionaries({"type": st.just("object"), "properties": st.dictionaries(st.text(max_size=4), c | _json,
                                                                                      max_size=3)}),
    max_leaves=10,
)
# Mostly plausible tools (root type object, a plain name), so most examples get past the first check.
_object_schemas = st.fixed_dictionaries(
    {"type": st.just("object")},
    optional={"properties": st.dictionaries(st.text(max_size=4), _schemas | _json, max_size=3),
              "description": st.text(max_size=6) | _json, "x-extra": _json},
)
_definitions = st.fixed_dictionaries(
    {"name": st.one_of(st.just("t"), st.just("t"), st.just("t"), st.text(alphabet="ab_-. :é", max_size=6)),
     "inputSchema": st.one_of(_object_schemas, _object_schemas, _object_schemas, _schemas)},
    optional={"description": st.text(max_size=10),
              "outputSchema": st.one_of(_object_schemas, _object_schemas, _schemas | _json),
              "annotations": st.dictionaries(st.sampled_from(["title", "readOnlyHint", "openWorldHint", "x"]),
                                             st.booleans() | _json, max_size=3)},
)


@FUZZ
@given(_definitions)
def test_any_tool_the_converter_accepts_can_be_listed_by_the_mcp_layer(definition: dict[str, Any]) -> None:
    text = json.dumps(definition)  # lone surrogates in the strategy's text become \u escapes, as in a file
    try:
        models = ConfigConverter().convert(_snapshot(_tools_text(json.loads(text))))
    except ConversionError as exc:
        rejected: ConversionError | None = exc
    else:
        rejected = None
    if rejected is not None:
        assert rejected.reason and rejected.path.startswith("$")
        return
    assert isinstance(models, ServerModels)
    listing = [to_mcp_tool(f"s_{tool.name}", tool) for tool in models.tools]
    types.ListToolsResult(tools=listing).model_dump_json(by_alias=True, exclude_none=True)
