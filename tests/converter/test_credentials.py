"""Credential references ``${nacos.<dataId>/<group>}``: Nacos' semantics, where they may stand, what cannot resolve."""

from __future__ import annotations

import json
from typing import Any

import pytest

from mcpgw.converter.converter import ConfigConverter, ServerSnapshot, credential_refs
from mcpgw.converter.credentials import MAX_CONTENT_BYTES, MAX_CONTENT_DEPTH
from mcpgw.converter.template import parse
from mcpgw.registry.errors import ConversionError, TemplateError
from mcpgw.registry.models import ServerModels
from mcpgw.remote.base import ConfigKey
from tests.support.builders import rest_tool, server_doc, tools_doc, versions_doc

SID = "8f4a2c1e-6b3d-4e59-9a7f-2d1c0b9e7a55"
TOOLS_FILE = f"{SID}-1.0.0-mcp-tools.json"
SECRET = "key-abc-123"
WEATHER_KEY = ConfigKey("public", "credentials", "weatherKey")
DOC_EXAMPLE = "{{ ${nacos.weatherKey/credentials}.data }}"
"""The example of Nacos' console and documentation."""
ROOT = "$.toolsMeta.a.templates.json-go-template"
BASE = "http://10.0.0.1:8080"


def tool(request: dict[str, Any] | None = None, *, definition: dict[str, Any] | None = None,
         **template: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    body = {"requestTemplate": request or {"url": "/w", "method": "GET"}, "responseTemplate": {}, **template}
    built = rest_tool("a", template=body)
    return {**built[0], **(definition or {})}, built[1]


def header_tool(value: str) -> tuple[dict[str, Any], dict[str, Any]]:
    return tool({"url": "/w", "method": "GET", "headers": [{"key": "X-App-Key", "value": value}]})


def snapshot(tools: str, credentials: dict[ConfigKey, str | None] | None = None, *,
             unread: bool = False) -> ServerSnapshot:
    return ServerSnapshot(
        server_id=SID, namespace="public", versions=versions_doc(SID, "weather", "1.0.0", ["1.0.0"]),
        server_spec=server_doc(SID, "weather", "1.0.0"), tools_spec=tools,
        credentials=credentials if credentials is not None else {WEATHER_KEY: json.dumps({"data": SECRET})},
        credentials_unread=unread,
    )


def convert(tools: str, credentials: dict[ConfigKey, str | None] | None = None) -> ServerModels:
    models = ConfigConverter().convert(snapshot(tools, credentials))
    assert isinstance(models, ServerModels)
    return models


def rejected(tools: str, credentials: dict[ConfigKey, str | None] | None = None, *,
             unread: bool = False) -> ConversionError:
    with pytest.raises(ConversionError) as caught:
        ConfigConverter().convert(snapshot(tools, credentials, unread=unread))
    assert SECRET not in str(caught.value)
    return caught.value


def sent_headers(models: ServerModels, args: dict[str, Any] | None = None) -> dict[str, str]:
    request = models.tools[0].binding.build_request(args or {"q": "x"}, models.template_config, BASE)
    return dict(request.headers)


# -- inside an action: the referenced config's content ---------------------------------------------


def test_the_documentation_example_sends_the_json_field_of_the_referenced_config() -> None:
    models = convert(tools_doc(header_tool(DOC_EXAMPLE)))

    assert sent_headers(models)["X-App-Key"] == SECRET
    assert models.template_config["credentials"] == {"credentials_weatherKey": {"data": SECRET}}
    assert SECRET not in repr(models)


def test_a_data_id_with_dots_and_dashes_resolves_although_it_is_no_go_field_name() -> None:
    key = ConfigKey("public", "mcp-credentials", "weather-api-key.json")
    models = convert(tools_doc(header_tool("{{ ${nacos.weather-api-key.json/mcp-credentials}.data }}")),
                     {key: json.dumps({"data": SECRET})})

    assert sent_headers(models)["X-App-Key"] == SECRET


def test_a_config_that_is_not_json_is_its_text_without_surrounding_white_space() -> None:
    models = convert(tools_doc(header_tool("Bearer {{ ${nacos.weatherKey/credentials} }}")),
                     {WEATHER_KEY: f"  {SECRET}\n"})

    assert sent_headers(models)["X-App-Key"] == f"Bearer {SECRET}"


def test_the_long_form_config_credentials_path_reads_the_same_content() -> None:
    models = convert(tools_doc(tool({
        "url": "/w", "method": "GET",
        "headers": [{"key": "X-App-Key", "value": "{{ .config.credentials.credentials_weatherKey.data }}"},
                    {"key": "X-Ref", "value": DOC_EXAMPLE}],
    })))

    assert sent_headers(models)["X-App-Key"] == SECRET


def test_a_reference_means_the_same_inside_range_and_with_where_dot_moves() -> None:
    value = "{{ range .args.items }}{{ . }}={{ ${nacos.weatherKey/credentials}.data }};{{ end }}" \
            "{{ with .args.items }}{{ ${nacos.weatherKey/credentials}.data }}{{ end }}"
    models = convert(tools_doc(tool({"url": "/w", "method": "POST", "body": value})))

    binding = models.tools[0].binding
    request = binding.build_request({"items": ["a", "b"]}, models.template_config, BASE)
    assert request.body == f"a={SECRET};b={SECRET};{SECRET}".encode()


@pytest.mark.parametrize(
    ("request_template", "security", "where"),
    [
        pytest.param({"url": "/w/{{ ${nacos.weatherKey/credentials}.data }}", "method": "GET"}, None, "url",
                     id="url"),
        pytest.param({"url": "/w", "method": "POST", "body": '{"key": "{{ ${nacos.weatherKey/credentials}.data }}"}'},
                     None, "body", id="body"),
        pytest.param({"url": "/w", "method": "GET", "security": {"id": "s", "credential": DOC_EXAMPLE}},
                     None, "header", id="security credential"),
        pytest.param({"url": "/w", "method": "GET", "security": {"id": "s"}},
                     {"id": "s", "type": "apiKey", "in": "header", "name": "X-App-Key",
                      "defaultCredential": DOC_EXAMPLE}, "header", id="defaultCredential"),
    ],
)
def test_every_request_side_field_resolves_references_inside_actions(
    request_template: dict[str, Any], security: dict[str, Any] | None, where: str
) -> None:
    default_scheme = {"id": "s", "type": "apiKey", "in": "header", "name": "X-App-Key", "defaultCredential": "x"}
    models = convert(tools_doc(tool(request_template), security=[security or default_scheme]))

    request = models.tools[0].binding.build_request({"q": "x"}, models.template_config, BASE)
    found = {"url": request.url, "body": (request.body or b"").decode(), "header": dict(request.headers).get(
        "X-App-Key", "")}[where]
    assert SECRET in found


# -- a whole header value or credential: kept, read as {{ reference }} -------------------------------


def test_a_header_value_that_is_exactly_one_reference_sends_the_plain_config() -> None:
    models = convert(tools_doc(header_tool(" ${nacos.weatherKey/credentials} ")), {WEATHER_KEY: SECRET})

    assert sent_headers(models)["X-App-Key"] == SECRET


def test_a_default_credential_that_is_exactly_one_reference_sends_the_plain_config() -> None:
    scheme = {"id": "s", "type": "http", "scheme": "bearer", "defaultCredential": "${nacos.weatherKey/credentials}"}
    models = convert(tools_doc(tool({"url": "/w", "method": "GET", "security": {"id": "s"}}), security=[scheme]),
                     {WEATHER_KEY: json.dumps(SECRET)})

    assert sent_headers(models)["Authorization"] == f"Bearer {SECRET}"


def test_a_whole_value_reference_to_a_json_object_is_an_error_that_names_the_field_to_use() -> None:
    error = rejected(tools_doc(header_tool("${nacos.weatherKey/credentials}")))

    assert error.path == f"{ROOT}.requestTemplate.headers[0].value"
    assert error.tool == "a" and error.file == TOOLS_FILE
    assert "JSON object" in error.reason and "{{ ${nacos.weatherKey/credentials}.<field> }}" in error.reason


@pytest.mark.parametrize(
    ("request_template", "path"),
    [
        pytest.param({"url": "/w", "method": "GET",
                      "headers": [{"key": "Authorization", "value": "Bearer ${nacos.weatherKey/credentials}"}]},
                     "requestTemplate.headers[0].value", id="part of a header value"),
        pytest.param({"url": "/w?key=${nacos.weatherKey/credentials}", "method": "GET"}, "requestTemplate.url",
                     id="in the url"),
        pytest.param({"url": "/w", "method": "POST", "body": '{"key": "${nacos.weatherKey/credentials}"}'},
                     "requestTemplate.body", id="in the body"),
        pytest.param({"url": "/w", "method": "POST", "body": '{{ "${nacos.weatherKey/credentials}" }}'},
                     "requestTemplate.body", id="in a string literal"),
        pytest.param({"url": "/w", "method": "POST", "body": "{{/* ${nacos.weatherKey/credentials} */}}"},
                     "requestTemplate.body", id="in a comment"),
    ],
)
def test_a_reference_outside_an_action_is_an_error_that_says_how_to_write_it(
    request_template: dict[str, Any], path: str
) -> None:
    error = rejected(tools_doc(tool(request_template)))

    assert error.path == f"{ROOT}.{path}" and error.tool == "a"
    assert "outside a template action" in error.reason
    assert "{{ ${nacos.weatherKey/credentials}.field }}" in error.reason


# -- where a reference may not stand ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "path", "why"),
    [
        pytest.param({"definition": {"description": "key is ${nacos.weatherKey/credentials}"}},
                     "$.tools[0].description", "shown to MCP clients", id="tool description"),
        pytest.param({"definition": {"inputSchema": {"type": "object", "properties": {
            "q": {"type": "string", "default": "{{ ${nacos.weatherKey/credentials}.data }}"}}}}},
                     "$.tools[0].inputSchema.properties.q.default", "shown to MCP clients", id="input schema"),
        pytest.param({"definition": {"outputSchema": {"type": "object",
                                                      "description": "${nacos.weatherKey/credentials}"}}},
                     "$.tools[0].outputSchema.description", "shown to MCP clients", id="output schema"),
        pytest.param({"definition": {"annotations": {"title": "${nacos.weatherKey/credentials}"}}},
                     "$.tools[0].annotations.title", "shown to MCP clients", id="annotations"),
        pytest.param({"responseTemplate": {"body": DOC_EXAMPLE}},
                     f"{ROOT}.responseTemplate.body", "MCP client receives", id="response body"),
        pytest.param({"responseTemplate": {"prependBody": DOC_EXAMPLE}},
                     f"{ROOT}.responseTemplate.prependBody", "MCP client receives", id="response prependBody"),
        pytest.param({"errorResponseTemplate": DOC_EXAMPLE},
                     f"{ROOT}.errorResponseTemplate", "MCP client receives", id="error response"),
        pytest.param({"argsPosition": {"q": "${nacos.weatherKey/credentials}"}},
                     f"{ROOT}.argsPosition.q", "never be resolved", id="not a template"),
        pytest.param({"definition": {"inputSchema": {"type": "object", "properties": {
            "${nacos.weatherKey/credentials}": {"type": "string"}}}}},
                     '$.tools[0].inputSchema.properties["${nacos.weatherKey/credentials}"]', "JSON key",
                     id="a JSON key"),
    ],
)
def test_a_reference_that_could_reach_a_client_or_would_stay_text_is_an_error_naming_file_tool_and_path(
    spec: dict[str, Any], path: str, why: str
) -> None:
    definition = spec.pop("definition", None)
    tools = tools_doc(tool(definition=definition, **spec))

    for unread in (False, True):  # what validate of a lone file and publish see, too
        error = rejected(tools, unread=unread)
        assert (error.file, error.tool, error.path) == (TOOLS_FILE, "a", path)
        assert why in error.reason and "${nacos.weatherKey/credentials}" in error.reason


def test_a_reference_in_a_security_scheme_field_other_than_the_credential_is_an_error() -> None:
    scheme = {"id": "s", "type": "apiKey", "in": "header", "name": "${nacos.weatherKey/credentials}",
              "defaultCredential": "k"}
    error = rejected(tools_doc(tool(), security=[scheme]))

    assert error.path == "$.securitySchemes[0].name"


def test_a_direct_response_tool_renders_without_the_credentials() -> None:
    direct = tool({"url": "", "method": "GET"},
                  responseTemplate={"body": "[{{ .config.credentials.credentials_weatherKey.data }}]"})
    user = rest_tool("b", template={"requestTemplate": {"url": "/w", "headers": [
        {"key": "X-App-Key", "value": DOC_EXAMPLE}]}})
    models = convert(tools_doc(direct, user))

    assert models.template_config["credentials"]["credentials_weatherKey"] == {"data": SECRET}
    answer = models.tools[0].binding.render_direct({}, models.template_config)
    assert answer.content[0]["text"] == "[<no value>]"


# -- references that cannot resolve -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "content", "reason"),
    [
        pytest.param("{{ ${nacos.weatherKey/credentials}.dta }}", {"data": SECRET}, "has no field 'dta'",
                     id="a field the JSON does not have"),
        pytest.param("{{ ${nacos.weatherKey/credentials}.data.inner }}", {"data": SECRET},
                     "holds a string at 'data'", id="a field inside a string"),
        pytest.param("{{ ${nacos.weatherKey/credentials}.data }}", SECRET, "is not JSON",
                     id="a field of a config that is not JSON"),
        pytest.param("{{ ${nacos.weatherKey/credentials}.data }}", {"data": None}, "holds null",
                     id="a field that is null"),
        pytest.param("{{ ${nacos.weatherKey/credentials}.keys.2 }}", {"keys": ["a", "b"]}, "has no element",
                     id="a list index past its end"),
    ],
)
def test_a_reference_whose_fields_the_content_does_not_have_is_a_located_error(
    value: str, content: Any, reason: str
) -> None:
    raw = content if isinstance(content, str) else json.dumps(content)
    error = rejected(tools_doc(header_tool(value)), {WEATHER_KEY: raw})

    assert error.path == f"{ROOT}.requestTemplate.headers[0].value" and error.tool == "a"
    assert reason in error.reason and "cannot be resolved" in error.reason


def test_a_list_element_of_a_json_config_resolves() -> None:
    models = convert(tools_doc(header_tool("{{ ${nacos.weatherKey/credentials}.keys.1 }}")),
                     {WEATHER_KEY: json.dumps({"keys": ["old", SECRET]})})

    assert sent_headers(models)["X-App-Key"] == SECRET


@pytest.mark.parametrize("content", [None, "", "  \n"], ids=["missing", "deleted (empty)", "white space only"])
def test_a_missing_or_deleted_config_is_a_located_error(content: str | None) -> None:
    error = rejected(tools_doc(header_tool(DOC_EXAMPLE)), {WEATHER_KEY: content})

    assert error.path == f"{ROOT}.requestTemplate.headers[0].value"
    assert "weatherKey (group credentials)" in error.reason


def test_a_config_larger_than_the_bound_is_an_error_that_does_not_quote_it() -> None:
    huge = json.dumps({"data": SECRET, "pad": "x" * MAX_CONTENT_BYTES})
    error = rejected(tools_doc(header_tool(DOC_EXAMPLE)), {WEATHER_KEY: huge})

    assert f"at most {MAX_CONTENT_BYTES} bytes" in error.reason
    assert len(str(error)) < 1000


@pytest.mark.parametrize("depth", [MAX_CONTENT_DEPTH + 1, 100_000], ids=["just too deep", "deeper than recursion"])
def test_json_nested_deeper_than_the_bound_is_an_error_not_a_crash(depth: int) -> None:
    nested = "[" * depth + "]" * depth
    if len(nested) > MAX_CONTENT_BYTES:
        nested = nested[: MAX_CONTENT_BYTES // 2] + nested[-MAX_CONTENT_BYTES // 2 :]
    error = rejected(tools_doc(header_tool("{{ ${nacos.weatherKey/credentials} | toJson }}")), {WEATHER_KEY: nested})

    assert f"nested more than {MAX_CONTENT_DEPTH} levels" in error.reason


def test_json_nested_to_the_bound_is_accepted() -> None:
    nested = "[" * MAX_CONTENT_DEPTH + "]" * MAX_CONTENT_DEPTH
    convert(tools_doc(header_tool("{{ ${nacos.weatherKey/credentials} | toJson }}")), {WEATHER_KEY: nested})


def test_two_references_known_by_the_same_name_are_an_error() -> None:
    # group "a_b" + dataId "c" and group "a" + dataId "b_c" are both .config.credentials.a_b_c
    value = "{{ ${nacos.c/a_b} }}{{ ${nacos.b_c/a} }}"
    error = rejected(tools_doc(header_tool(value)), {ConfigKey("public", "a_b", "c"): "1",
                                                     ConfigKey("public", "a", "b_c"): "2"})

    assert "a_b_c" in error.reason and "rename" in error.reason


@pytest.mark.parametrize(
    "value",
    ["{{ ${nacos.weather key/credentials}.data }}", "X ${nacos.weatherKey} Y", "{{ ${nacos.weatherKey/cred/x} }}"],
    ids=["space in the dataId", "no group", "two slashes"],
)
def test_a_misspelt_reference_is_a_located_error_not_literal_text(value: str) -> None:
    error = rejected(tools_doc(header_tool(value)), {WEATHER_KEY: SECRET}, unread=True)

    assert error.path == f"{ROOT}.requestTemplate.headers[0].value"
    assert "${nacos.<dataId>/<group>}" in error.reason


def test_offline_checks_place_references_without_reading_the_configs() -> None:
    tools = tools_doc(header_tool("{{ ${nacos.weatherKey/credentials}.anything }}"))

    models = ConfigConverter().convert(snapshot(tools, {}, unread=True))
    assert isinstance(models, ServerModels)


# -- change and identity --------------------------------------------------------------------------------


def test_a_rotated_config_changes_what_is_sent_and_the_server_fingerprint_but_not_the_tools() -> None:
    tools = tools_doc(header_tool(DOC_EXAMPLE))
    before = convert(tools)
    after = convert(tools, {WEATHER_KEY: json.dumps({"data": "key-xyz-789"})})

    assert sent_headers(after)["X-App-Key"] == "key-xyz-789"
    assert before.fingerprint != after.fingerprint
    assert [t.fingerprint for t in before.tools] == [t.fingerprint for t in after.tools]  # no tools/list_changed


def test_references_spelt_with_json_escapes_are_found_for_watching() -> None:
    tools = tools_doc(header_tool(DOC_EXAMPLE)).replace("${nacos.", "\\u0024{nacos.")

    assert credential_refs(tools, "public") == {WEATHER_KEY}
    assert sent_headers(convert(tools))["X-App-Key"] == SECRET


# -- the template engine ---------------------------------------------------------------------------------


def test_the_engine_reads_a_reference_only_where_the_caller_allows_it() -> None:
    with pytest.raises(TemplateError, match="cannot be used in this field"):
        parse(DOC_EXAMPLE)
    compiled = parse(DOC_EXAMPLE, credentials=True)

    [use] = compiled.credential_uses
    assert (use.data_id, use.group, use.fields, use.offset) == ("weatherKey", "credentials", ("data",), 3)
    assert "config.credentials.credentials_weatherKey.data" in compiled.references()


def test_the_engine_errors_rather_than_printing_no_value_for_a_credential_it_was_not_given() -> None:
    compiled = parse(DOC_EXAMPLE, credentials=True)

    with pytest.raises(TemplateError, match="not loaded"):
        compiled.render({"config": {"credentials": {}}})
