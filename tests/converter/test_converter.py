"""ConfigConverter: precise errors, and pure / deterministic / order-independent output."""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mcpgw.converter.converter import ConfigConverter, DisabledServer, ServerSnapshot, credential_refs
from mcpgw.registry.errors import ConversionError
from mcpgw.registry.models import ServerModels
from mcpgw.remote.base import ConfigKey, ServiceInstance
from tests.support.builders import rest_tool, server_doc, tools_doc, versions_doc

SID = "8f4a2c1e-6b3d-4e59-9a7f-2d1c0b9e7a55"


def snapshot(tools: str, *, version: str = "1.0.0", versions: str | None = None, spec: str | None = None,
             instances: tuple[ServiceInstance, ...] = (), credentials: dict[ConfigKey, str | None] | None = None
             ) -> ServerSnapshot:
    return ServerSnapshot(
        server_id=SID, namespace="public",
        versions=versions or versions_doc(SID, "weather", version, [version]),
        server_spec=spec if spec is not None else server_doc(SID, "weather", version),
        tools_spec=tools, instances=instances, credentials=credentials or {},
    )


def convert(snap: ServerSnapshot) -> ServerModels:
    result = ConfigConverter().convert(snap)
    assert isinstance(result, ServerModels)
    return result


def test_rest_server_becomes_route_cluster_and_tools() -> None:
    models = convert(snapshot(tools_doc(rest_tool("b"), rest_tool("a")),
                              instances=(ServiceInstance(ip="10.0.0.1", port=80, weight=2.0),)))
    assert models.route.endpoint == "/mcp/weather"
    assert models.cluster is not None and models.cluster.instances[0].weight == 2.0
    assert [t.name for t in models.tools] == ["a", "b"]
    assert all(t.cluster == models.cluster.name for t in models.tools)


@pytest.mark.parametrize(
    ("tools", "path", "reason"),
    [
        ('{"tools": [', "$", "not valid JSON"),
        (json.dumps({"encryptData": "abc", "specificationType": "x"}), "$.encryptData", "encrypted"),
        (tools_doc(rest_tool("a"), rest_tool("a")), "$.tools[1].name", "unique"),
        (tools_doc(rest_tool("a", template={"requestTemplate": {"url": "/x", "method": "GET",
                                                                 "argsToJsonBody": True, "argsToUrlParam": True}})),
         "$.toolsMeta.a.templates.json-go-template.requestTemplate", "argsTo"),
        (tools_doc(rest_tool("a", template={"requestTemplate": {"url": "/x/{{ .args.q", "method": "GET"}})),
         "$.toolsMeta.a.templates.json-go-template.requestTemplate.url", "does not parse"),
        (tools_doc(rest_tool("a", template={"requestTemplate": {"url": "/x", "method": "GET"},
                                            "responseTemplate": {"body": "x", "prependBody": "y"}})),
         "$.toolsMeta.a.templates.json-go-template.responseTemplate", "prependBody"),
        (tools_doc(rest_tool("a", template={"requestTemplate": {"url": "/x", "method": "GET"},
                                            "argsPosition": {"q": "elsewhere"}})),
         "$.toolsMeta.a.templates.json-go-template.argsPosition.q", "elsewhere"),
    ],
    ids=["broken-json", "encrypted", "duplicate-tool", "two-argsTo", "template-parse", "body-and-prepend",
         "unknown-position"],
)
def test_bad_tools_spec_is_a_conversion_error_with_file_and_path(tools: str, path: str, reason: str) -> None:
    with pytest.raises(ConversionError) as caught:
        ConfigConverter().convert(snapshot(tools))
    error = caught.value
    assert error.server_id == SID and error.version == "1.0.0"
    assert error.file == f"{SID}-1.0.0-mcp-tools.json"
    assert error.path.startswith(path), error.describe()
    assert reason in error.reason


def test_disabled_tool_is_left_out() -> None:
    models = convert(snapshot(tools_doc(rest_tool("a"), rest_tool("b", enabled=False))))
    assert [t.name for t in models.tools] == ["a"]


def test_disabled_server_converts_to_disabled() -> None:
    result = ConfigConverter().convert(snapshot(tools_doc(rest_tool("a")),
                                                spec=server_doc(SID, "weather", "1.0.0", enabled=False)))
    assert isinstance(result, DisabledServer)


def test_only_drafts_means_nothing_to_serve_yet() -> None:
    snap = snapshot(tools_doc(rest_tool("a")), versions=versions_doc(SID, "weather", None, [], ["1.0.0"]))
    assert ConfigConverter().convert(snap) is None


def test_stdio_server_is_reported_not_served() -> None:
    with pytest.raises(ConversionError, match="cannot be served by a remote gateway"):
        ConfigConverter().convert(snapshot(tools_doc(rest_tool("a")),
                                           spec=server_doc(SID, "weather", "1.0.0", protocol="stdio")))


def test_relative_url_without_service_ref_is_an_error() -> None:
    with pytest.raises(ConversionError, match="relative"):
        ConfigConverter().convert(snapshot(tools_doc(rest_tool("a")),
                                           spec=server_doc(SID, "weather", "1.0.0", service=None)))


def test_credential_reference_is_resolved_and_exposed_to_templates() -> None:
    key = ConfigKey("public", "mcp-credentials", "k.json")
    security = [{"id": "s", "type": "apiKey", "in": "header", "name": "X-Key",
                 "defaultCredential": "{{ ${nacos.k.json/mcp-credentials}.token }}"}]
    tools = tools_doc(rest_tool("a", template={"requestTemplate": {"url": "/x", "method": "GET",
                                                                   "security": {"id": "s"}}}), security=security)
    assert credential_refs(tools, "public") == {key}
    models = convert(snapshot(tools, credentials={key: '{"token": "s3cret"}'}))
    assert models.template_config["credentials"]["mcp-credentials_k.json"] == {"token": "s3cret"}
    assert "s3cret" not in repr(models)
    request = models.tools[0].binding.build_request({}, models.template_config, "http://10.0.0.1")
    assert ("X-Key", "s3cret") in request.headers


def test_missing_credential_config_names_the_reference_path() -> None:
    security = [{"id": "s", "type": "apiKey", "in": "header", "name": "X-Key",
                 "defaultCredential": "${nacos.k.json/mcp-credentials}"}]
    with pytest.raises(ConversionError) as caught:
        ConfigConverter().convert(snapshot(tools_doc(rest_tool("a"), security=security)))
    assert caught.value.path == "$.securitySchemes[0].defaultCredential"


names = st.lists(st.sampled_from(["alpha", "beta", "gamma", "delta", "eps"]), min_size=1, max_size=5, unique=True)
ports = st.lists(st.integers(1000, 1010), max_size=5, unique=True)


@settings(max_examples=50, deadline=None)
@given(names, ports, st.randoms(use_true_random=False))
def test_converter_is_deterministic_and_independent_of_input_order(
    tool_names: list[str], port_list: list[int], rnd: random.Random
) -> None:
    tools = [rest_tool(n, f"/{n}") for n in tool_names]
    insts = [ServiceInstance(ip="10.0.0.1", port=p) for p in port_list]
    first = convert(snapshot(tools_doc(*tools), instances=tuple(insts)))
    rnd.shuffle(tools)
    rnd.shuffle(insts)
    second = convert(snapshot(tools_doc(*tools), instances=tuple(insts)))
    assert first == second
    assert first.fingerprint == second.fingerprint
    assert [t.fingerprint for t in first.tools] == [t.fingerprint for t in second.tools]


def test_a_change_of_instance_metadata_alone_changes_the_fingerprint() -> None:
    # metadata.weight overrides the Nacos weight and metadata.protocol the scheme: a change must be applied.
    tools = tools_doc(rest_tool("forecast", "/forecast"))
    plain = convert(snapshot(tools, instances=(ServiceInstance(ip="10.0.0.1", port=80),)))
    weighted = convert(snapshot(tools, instances=(ServiceInstance(ip="10.0.0.1", port=80, metadata={"weight": "5"}),)))
    again = convert(snapshot(tools, instances=(ServiceInstance(ip="10.0.0.1", port=80, metadata={"weight": "5"}),)))

    assert plain.fingerprint != weighted.fingerprint
    assert weighted.fingerprint == again.fingerprint
