"""The converter on documents exactly as a real Nacos 3.1.0-bugfix stored them for third-party writers.

``fixtures/nacos-configs/written-by-nacos/`` is a files tree captured from the
real server (its configs and instances, unedited): servers created through the
admin API with the payloads Nacos' console sends (a REST server with an apiKey
scheme; MCP servers given by an existing service, by an ``http://`` URL and by
an ``https://`` URL) and one registered by nacos-mcp-wrapper-python.  What they
show that our own publisher never writes: ``status``, ``serviceRef.transportProtocol``,
``is_latest: false`` on the latest version (the wrapper), an empty ``scheme``
on an apiKey scheme (the console), services Nacos created itself
(``mcp-endpoints@@{name}::{version}``) holding persistent instances without an
``instanceId``.  The end-to-end tests against the real server are in
``tests/gateway/test_nacos_third_party.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mcpgw.converter.converter import ConfigConverter, ServerSnapshot, backend_scheme, parse_server_spec
from mcpgw.registry.models import ServerModels
from mcpgw.remote.base import ServiceInstance, server_spec_key, tools_spec_key, versions_key
from tests.support.builders import server_doc

TREE = Path(__file__).resolve().parents[2] / "fixtures" / "nacos-configs" / "written-by-nacos"
SERVERS = {
    "console-rest": "db866df7-26df-421a-8de5-a5d172e8d07d",
    "console-streamable-ref": "7fe95341-d627-4e86-9f86-f79cd1b5cabf",
    "console-sse-url": "0c5a59b7-3917-4482-8127-da0edc87b093",
    "console-https-url": "29b7d816-0c12-4bf1-9ef8-778972e2bae2",
    "wrapped-explore": "f57af9f3-14cf-4012-997a-39b6a71c3d3a",
}


def _config(group: str, data_id: str) -> str:
    return (TREE / "config" / "public" / group / data_id).read_text(encoding="utf-8")


def _instances(group: str, service: str) -> tuple[ServiceInstance, ...]:
    path = TREE / "naming" / "public" / group / f"{service}.json"
    if not path.is_file():
        return ()
    return tuple(
        ServiceInstance(ip=i["ip"], port=i["port"], weight=i["weight"], healthy=i["healthy"], enabled=i["enabled"],
                        ephemeral=i["ephemeral"], service_name=i["serviceName"], metadata=i["metadata"])
        for i in json.loads(path.read_text(encoding="utf-8"))
    )


def served(name: str) -> ServerModels:
    server_id = SERVERS[name]
    spec_key, tools_key, ver_key = server_spec_key(server_id, "1.0.0"), tools_spec_key(server_id, "1.0.0"), \
        versions_key(server_id)
    spec = json.loads(_config(spec_key.group, spec_key.data_id))
    ref = spec["remoteServerConfig"]["serviceRef"]
    snapshot = ServerSnapshot(
        server_id=server_id,
        namespace="public",
        versions=_config(ver_key.group, ver_key.data_id),
        server_spec=_config(spec_key.group, spec_key.data_id),
        tools_spec=_config(tools_key.group, tools_key.data_id),
        instances=_instances(ref["groupName"], ref["serviceName"]),
    )
    models = ConfigConverter().convert(snapshot)
    assert isinstance(models, ServerModels), models
    return models


def test_console_rest_server_sends_the_api_key_of_its_scheme_in_the_header() -> None:
    models = served("console-rest")
    [forecast] = models.tools
    assert forecast.binding is not None
    request = forecast.binding.build_request({"city": "Hangzhou"}, models.template_config, "http://10.0.3.15:8000")
    assert models.route.backend == "rest"
    assert request.url == "http://10.0.3.15:8000/v1/forecast?city=Hangzhou"
    assert ("X-Api-Key", "key-abc-123") in request.headers
    assert ("Accept", "application/json") in request.headers


def test_console_rest_servers_default_response_template_renders_the_whole_body() -> None:
    [forecast] = served("console-rest").tools
    assert forecast.binding is not None
    result = forecast.binding.map_response(200, {"content-type": "application/json"}, b'{"temp": 21}',
                                           has_output_schema=False)
    assert result.is_error is False
    assert result.content == ({"type": "text", "text": "map[temp:21]"},)  # Go's rendering of {{.}}, as Higress


@pytest.mark.parametrize(
    ("name", "backend", "export_path", "service", "base_urls"),
    [
        ("console-streamable-ref", "mcp-streamable", "/rpc/mcp", "public/DEFAULT_GROUP/calc-mcp", []),
        ("console-sse-url", "mcp-sse", "/rpc/sse", "public/mcp-endpoints/console-sse-url::1.0.0",
         ["http://10.0.3.15:8000"]),
        ("console-https-url", "mcp-streamable", "/v1/mcp", "public/mcp-endpoints/console-https-url::1.0.0",
         ["https://mcp.example.com:443"]),
        ("wrapped-explore", "mcp-streamable", "/mcp", "public/DEFAULT_GROUP/wrapped-explore::1.0.0",
         ["http://127.0.0.1:18777"]),
    ],
)
def test_native_mcp_servers_third_parties_register_are_proxied_to_their_service_and_export_path(
    name: str, backend: str, export_path: str, service: str, base_urls: list[str]
) -> None:
    models = served(name)
    assert models.cluster is not None
    assert (models.route.backend, models.route.export_path, models.cluster.service) == (backend, export_path, service)
    assert [i.base_url for i in models.cluster.instances] == base_urls


def test_console_mcp_servers_list_their_tools_from_the_backend_and_the_wrappers_from_its_spec() -> None:
    assert served("console-sse-url").tools_from_backend is True
    wrapped = served("wrapped-explore")
    assert wrapped.tools_from_backend is False
    assert [t.name for t in wrapped.tools] == ["add"]
    assert wrapped.version == "1.0.0"  # its versions file says is_latest: false; latestPublishedVersion decides


@pytest.mark.parametrize(
    ("protocol", "transport", "scheme"),
    [
        ("mcp-streamable", "https", "https"),
        ("mcp-sse", None, "http"),
        ("http", "https", "https"),
        ("https", "http", "https"),  # a disagreement: TLS wins, so a credential never goes out in clear text
        ("http", None, "http"),
    ],
)
def test_the_backend_scheme_follows_the_service_refs_transport_protocol(
    protocol: str, transport: str | None, scheme: str
) -> None:
    spec = json.loads(server_doc("sid", "s", "1.0.0", protocol=protocol))
    if transport is not None:
        spec["remoteServerConfig"]["serviceRef"]["transportProtocol"] = transport
    assert backend_scheme(parse_server_spec("sid", "1.0.0", "public", json.dumps(spec))) == scheme
