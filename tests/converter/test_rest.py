"""The compiled json-go-template binding: request building, response mapping, compile-time rejections."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any
from urllib.parse import parse_qsl

import pytest

from mcpgw.converter.rest import RestBinding, RestRequest, compile_rest_binding
from mcpgw.registry.errors import ConversionError, InvocationError

BASE = "http://10.0.0.1:8080"
TOOL = "get_weather"
ROOT = f"$.toolsMeta.{TOOL}.templates.json-go-template"
SECRET = "s3cr3t-t0ken-value"
SCHEMES: list[dict[str, Any]] = [
    {"id": "bearer", "type": "http", "scheme": "bearer", "defaultCredential": SECRET},
    {"id": "basic", "type": "http", "scheme": "basic", "defaultCredential": "alice:" + SECRET},
    {"id": "key-header", "type": "apiKey", "in": "header", "name": "X-Api-Key", "defaultCredential": SECRET},
    {"id": "key-query", "type": "apiKey", "in": "query", "name": "key", "defaultCredential": SECRET},
    {"id": "from-config", "type": "http", "scheme": "bearer", "defaultCredential": "{{ .config.token }}"},
    {"id": "no-default", "type": "http", "scheme": "bearer"},
]


def binding(
    request: Mapping[str, Any] | None = None,
    *,
    response: Mapping[str, Any] | None = None,
    positions: Mapping[str, str] | None = None,
    error_template: str | None = None,
    schema: Mapping[str, Any] | None = None,
    schemes: Sequence[Mapping[str, Any]] = SCHEMES,
) -> RestBinding:
    template: dict[str, Any] = {"requestTemplate": dict(request or {"url": "/weather", "method": "GET"})}
    if response is not None:
        template["responseTemplate"] = dict(response)
    if positions is not None:
        template["argsPosition"] = dict(positions)
    if error_template is not None:
        template["errorResponseTemplate"] = error_template
    return compile_rest_binding(TOOL, template, schemes, schema or {"type": "object"})


def build(
    request: Mapping[str, Any],
    args: Mapping[str, Any],
    *,
    positions: Mapping[str, str] | None = None,
    config: Mapping[str, Any] | None = None,
    base_url: str | None = BASE,
) -> RestRequest:
    return binding(request, positions=positions).build_request(args, config or {}, base_url)


def header(request: RestRequest, name: str) -> str | None:
    values = [v for k, v in request.headers if k.lower() == name.lower()]
    assert len(values) <= 1, f"header {name} sent {len(values)} times"
    return values[0] if values else None


def query(request: RestRequest) -> list[tuple[str, str]]:
    return parse_qsl(request.url.partition("?")[2], keep_blank_values=True)


def compile_error(template: Mapping[str, Any], schema: Mapping[str, Any] | None = None) -> ConversionError:
    with pytest.raises(ConversionError) as caught:
        compile_rest_binding(TOOL, template, SCHEMES, schema or {"type": "object"})
    return caught.value


# -- argument positions ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("position", "url", "expected_url", "expected_header", "expected_body"),
    [
        pytest.param("query", "/weather", f"{BASE}/weather?city=San%20Jos%C3%A9", None, None, id="query"),
        pytest.param("path", "/weather/{city}", f"{BASE}/weather/San%20Jos%C3%A9", None, None, id="path"),
        pytest.param("header", "/weather", f"{BASE}/weather", ("city", "San José"), None, id="header"),
        pytest.param("cookie", "/weather", f"{BASE}/weather", ("Cookie", "city=San%20Jos%C3%A9"), None, id="cookie"),
        pytest.param("body", "/weather", f"{BASE}/weather", None, {"city": "San José"}, id="body"),
    ],
)
def test_each_argument_position_puts_the_argument_where_it_says(
    position: str,
    url: str,
    expected_url: str,
    expected_header: tuple[str, str] | None,
    expected_body: dict[str, Any] | None,
) -> None:
    request = build({"url": url, "method": "POST"}, {"city": "San José"}, positions={"city": position})

    assert request.url == expected_url
    assert request.method == "POST"
    if expected_header is not None:
        assert header(request, expected_header[0]) == expected_header[1]
    if expected_body is None:
        assert request.body is None
    else:
        assert request.body is not None
        assert json.loads(request.body) == expected_body
        assert header(request, "Content-Type") == "application/json"


def test_positioned_arguments_of_every_kind_combine_in_one_request() -> None:
    request = build(
        {
            "url": "/users/{id}/orders?fixed=1",
            "method": "PUT",
            "headers": [{"key": "Cookie", "value": "s=1"}],
        },
        {"id": 7, "page": 2, "trace": "abc", "session": "xyz", "note": "hi", "flags": ["a", "b"]},
        positions={
            "id": "path",
            "page": "query",
            "flags": "query",
            "trace": "header",
            "session": "cookie",
            "note": "body",
        },
    )

    assert request.url.startswith(f"{BASE}/users/7/orders?")
    assert query(request) == [("fixed", "1"), ("page", "2"), ("flags", "a"), ("flags", "b")]
    assert header(request, "trace") == "abc"
    assert header(request, "Cookie") == "s=1; session=xyz"
    assert request.body == b'{"note":"hi"}'


@pytest.mark.parametrize(
    ("value", "text"),
    [
        pytest.param(True, "true", id="bool"),
        pytest.param(3.0, "3", id="integral float like Go"),
        pytest.param(2.5, "2.5", id="float"),
        pytest.param({"a": 1}, '{"a":1}', id="object as JSON"),
        pytest.param(None, "", id="null"),
    ],
)
def test_scalar_arguments_read_in_a_url_the_way_go_prints_them(value: Any, text: str) -> None:
    request = build({"url": "/x"}, {"v": value}, positions={"v": "query"})

    assert query(request) == [("v", text)]


def test_a_header_argument_with_a_line_break_is_refused_rather_than_injected() -> None:
    with pytest.raises(InvocationError, match="header 'trace'"):
        build({"url": "/x"}, {"trace": "a\r\nX-Admin: yes"}, positions={"trace": "header"})


# -- argsTo* --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flag", "expected_query", "expected_body", "content_type"),
    [
        pytest.param("argsToUrlParam", [("city", "Paris"), ("days", "3")], None, None, id="url params"),
        pytest.param("argsToJsonBody", [], b'{"city":"Paris","days":3}', "application/json", id="json body"),
        pytest.param("argsToFormBody", [], b"city=Paris&days=3", "application/x-www-form-urlencoded", id="form body"),
        pytest.param(None, [], None, None, id="none: only templates see them"),
    ],
)
def test_unpositioned_arguments_go_where_the_args_to_flag_says(
    flag: str | None,
    expected_query: list[tuple[str, str]],
    expected_body: bytes | None,
    content_type: str | None,
) -> None:
    request_template: dict[str, Any] = {"url": "/weather", "method": "POST"}
    if flag is not None:
        request_template[flag] = True

    request = build(request_template, {"city": "Paris", "days": 3})

    assert query(request) == expected_query
    assert request.body == expected_body
    assert header(request, "Content-Type") == content_type


def test_an_argument_used_in_a_path_placeholder_is_not_repeated_unless_positioned() -> None:
    plain = build({"url": "/w/{city}", "argsToUrlParam": True}, {"city": "Paris", "days": 3})
    positioned = build(
        {"url": "/w/{city}", "argsToUrlParam": True},
        {"city": "Paris", "days": 3},
        positions={"city": "query"},
    )

    assert plain.url == f"{BASE}/w/Paris?days=3"
    assert positioned.url == f"{BASE}/w/Paris?city=Paris&days=3"


# -- body precedence ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_template", "content_type_header", "expected_body", "expected_type"),
    [
        pytest.param(
            {"body": '{"q": "{{ .args.city }}"}', "argsToJsonBody": True},
            None,
            b'{"q": "Paris"}',
            "application/json",
            id="explicit body beats argsToJsonBody",
        ),
        pytest.param(
            {"body": "city={{ .args.city }}", "argsToFormBody": True},
            "text/plain",
            b"city=Paris",
            "text/plain",
            id="explicit body keeps the operator's content type",
        ),
        pytest.param(
            {"argsToJsonBody": True},
            None,
            b'{"city":"Paris","days":3,"note":"n"}',
            "application/json",
            id="argsToJsonBody takes the body-positioned args too",
        ),
        pytest.param(
            {"argsToFormBody": True},
            None,
            b"city=Paris&days=3&note=n",
            "application/x-www-form-urlencoded",
            id="argsToFormBody takes the body-positioned args too",
        ),
        pytest.param(
            {"argsToUrlParam": True},
            None,
            b'{"note":"n"}',
            "application/json",
            id="body-positioned args alone become JSON",
        ),
        pytest.param(
            {},
            "application/x-www-form-urlencoded; charset=utf-8",
            b"note=n",
            "application/x-www-form-urlencoded; charset=utf-8",
            id="body-positioned args follow a declared form content type",
        ),
    ],
)
def test_body_precedence_is_explicit_body_then_json_then_form_then_positioned_args(
    request_template: dict[str, Any],
    content_type_header: str | None,
    expected_body: bytes,
    expected_type: str,
) -> None:
    headers = [] if content_type_header is None else [{"key": "Content-Type", "value": content_type_header}]
    request = build(
        {"url": "/w", "method": "POST", "headers": headers, **request_template},
        {"city": "Paris", "days": 3, "note": "n"},
        positions={"note": "body"},
    )

    assert request.body == expected_body
    assert header(request, "Content-Type") == expected_type


# -- URLs -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    ["a/b c?&#", "../../admin", "100%", "ü"],
)
def test_path_arguments_are_url_encoded_so_they_stay_one_segment(value: str) -> None:
    request = build({"url": "/items/{id}/detail"}, {"id": value})

    segment = request.url.removeprefix(f"{BASE}/items/").removesuffix("/detail")
    assert "/" not in segment
    assert "?" not in segment
    assert "#" not in segment
    assert request.url.endswith("/detail")


def test_path_argument_encoding_is_exact() -> None:
    assert build({"url": "/items/{id}"}, {"id": "a/b c"}).url == f"{BASE}/items/a%2Fb%20c"


def test_a_path_placeholder_without_its_argument_is_a_clear_invocation_error() -> None:
    with pytest.raises(InvocationError, match="path argument 'id'"):
        build({"url": "/items/{id}"}, {})


@pytest.mark.parametrize(
    ("url", "base_url", "expected"),
    [
        pytest.param("/weather", BASE, f"{BASE}/weather", id="relative"),
        pytest.param("weather", BASE, f"{BASE}/weather", id="relative without slash"),
        pytest.param("/weather", BASE + "/", f"{BASE}/weather", id="base with trailing slash"),
        pytest.param("https://api.example.com/v1/w", BASE, "https://api.example.com/v1/w", id="absolute"),
        pytest.param("https://api.example.com/v1/w", None, "https://api.example.com/v1/w", id="absolute no base"),
        pytest.param("/w/{{ .args.city }}", BASE, f"{BASE}/w/Paris", id="templated relative"),
        pytest.param("https://api.example.com/v1/{{ .args.city }}", BASE, "https://api.example.com/v1/Paris",
                     id="templated path of a fixed origin"),
    ],
)
def test_urls_are_relative_to_the_instance_or_absolute(url: str, base_url: str | None, expected: str) -> None:
    request = build({"url": url}, {"city": "Paris"}, config={"host": "https://cfg.example.com"}, base_url=base_url)

    assert request.url == expected


def test_read_only_server_config_renders_like_a_plain_dict() -> None:
    config = MappingProxyType({"host": MappingProxyType({"name": "api.example.com"})})

    request = build({"url": "/w/{{ .config.host.name }}"}, {}, config=config)

    assert request.url == f"{BASE}/w/api.example.com"


def test_a_relative_url_without_an_instance_is_a_clear_invocation_error() -> None:
    with pytest.raises(InvocationError, match="relative"):
        build({"url": "/weather"}, {}, base_url=None)


@pytest.mark.parametrize("rendered", ["file:///etc/passwd", "ftp://host/x", "//evil.example.com/x"])
def test_a_url_that_renders_to_something_other_than_http_is_refused(rendered: str) -> None:
    with pytest.raises(InvocationError, match=r"requestTemplate\.url"):
        build({"url": "{{ .config.target }}"}, {}, config={"target": rendered})


# -- security -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("security", "config", "expected_header", "expected_query"),
    [
        pytest.param({"id": "bearer"}, {}, ("Authorization", f"Bearer {SECRET}"), [], id="http bearer"),
        pytest.param(
            {"id": "basic"},
            {},
            ("Authorization", "Basic " + base64.b64encode(f"alice:{SECRET}".encode()).decode()),
            [],
            id="http basic",
        ),
        pytest.param({"id": "key-header"}, {}, ("X-Api-Key", SECRET), [], id="apiKey header"),
        pytest.param({"id": "key-query"}, {}, None, [("key", SECRET)], id="apiKey query"),
        pytest.param(
            {"id": "bearer", "credential": "override-1"},
            {},
            ("Authorization", "Bearer override-1"),
            [],
            id="credential overrides default",
        ),
        pytest.param(
            {"id": "bearer", "credential": "{{ .config.credentials.mcp_token.value }}"},
            {"credentials": {"mcp_token": {"value": "from-nacos"}}},
            ("Authorization", "Bearer from-nacos"),
            [],
            id="credential template from config",
        ),
        pytest.param(
            {"id": "from-config"},
            {"token": "cfg-tok"},
            ("Authorization", "Bearer cfg-tok"),
            [],
            id="default tpl",
        ),
        pytest.param(
            {"id": "no-default", "credential": "given"},
            {},
            ("Authorization", "Bearer given"),
            [],
            id="only override",
        ),
    ],
)
def test_security_schemes_attach_the_credential(
    security: dict[str, Any],
    config: dict[str, Any],
    expected_header: tuple[str, str] | None,
    expected_query: list[tuple[str, str]],
) -> None:
    request = build({"url": "/w", "security": security}, {}, config=config)

    if expected_header is not None:
        assert header(request, expected_header[0]) == expected_header[1]
    else:
        assert header(request, "Authorization") is None
    assert query(request) == expected_query


def test_the_security_scheme_replaces_a_same_named_template_header() -> None:
    request = build(
        {
            "url": "/w",
            "headers": [{"key": "authorization", "value": "Bearer stale"}],
            "security": {"id": "bearer"},
        },
        {},
    )

    assert header(request, "Authorization") == f"Bearer {SECRET}"


def test_credentials_never_appear_in_reprs() -> None:
    compiled = binding(
        {"url": "/w?x=1", "headers": [{"key": "X-Other", "value": SECRET}], "security": {"id": "key-query"}}
    )
    request = compiled.build_request({}, {}, BASE)

    assert SECRET in request.url
    for shown in (repr(compiled), str(compiled), repr(request), str(request)):
        assert SECRET not in shown
    assert "X-Other" in repr(request)


def test_a_credential_that_renders_empty_is_an_error_that_does_not_leak_the_config() -> None:
    compiled = binding({"url": "/w", "security": {"id": "from-config"}})

    with pytest.raises(InvocationError, match="empty") as caught:
        compiled.build_request({}, {"token": "", "other": SECRET}, BASE)
    assert SECRET not in str(caught.value)


def test_a_credential_that_does_not_parse_is_rejected_without_quoting_it() -> None:
    error = compile_error(
        {"requestTemplate": {"url": "/w", "security": {"id": "bearer", "credential": "{{ " + SECRET}}}
    )

    assert error.path == f"{ROOT}.requestTemplate.security.credential"
    assert SECRET not in str(error)


def test_a_header_that_does_not_parse_is_rejected_without_quoting_it() -> None:
    error = compile_error(
        {"requestTemplate": {"url": "/w", "headers": [{"key": "X-Key", "value": SECRET + "{{ .config.x "}]}}
    )

    assert error.path == f"{ROOT}.requestTemplate.headers[0].value"
    assert SECRET not in str(error)


def test_an_unknown_security_id_is_a_conversion_error() -> None:
    error = compile_error({"requestTemplate": {"url": "/w", "security": {"id": "oauth"}}})

    assert error.path == f"{ROOT}.requestTemplate.security.id"
    assert "'oauth'" in error.reason
    assert SECRET not in str(error)


@pytest.mark.parametrize(
    ("scheme", "field"),
    [
        pytest.param({"type": "oauth2"}, "type", id="unsupported type"),
        pytest.param({"type": "http", "scheme": "digest"}, "scheme", id="unsupported http scheme"),
        pytest.param({"type": "apiKey", "in": "cookie", "name": "k"}, "in", id="unsupported apiKey place"),
        pytest.param({"type": "apiKey", "in": "header"}, "name", id="apiKey without name"),
        pytest.param({"type": "http", "scheme": "bearer"}, "defaultCredential", id="no credential at all"),
    ],
)
def test_a_referenced_security_scheme_must_be_usable(scheme: dict[str, Any], field: str) -> None:
    schemes = [
        {"id": "other", "type": "http", "scheme": "bearer"},
        {"id": "s", "defaultCredential": SECRET, **scheme},
    ]
    if field == "defaultCredential":
        del schemes[1]["defaultCredential"]

    with pytest.raises(ConversionError) as caught:
        compile_rest_binding(TOOL, {"requestTemplate": {"url": "/w", "security": {"id": "s"}}}, schemes, {})

    assert caught.value.path == f"$.securitySchemes[1].{field}"
    assert caught.value.tool == TOOL
    assert SECRET not in str(caught.value)


# -- compile-time rejections ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "path", "words"),
    [
        pytest.param(
            {"requestTemplate": {"url": "/w", "argsToJsonBody": True, "argsToFormBody": True}},
            f"{ROOT}.requestTemplate.argsToFormBody",
            ["argsToJsonBody", "argsToFormBody"],
            id="two argsTo flags",
        ),
        pytest.param(
            {"requestTemplate": {"url": "/w", "argsToUrlParam": "yes"}},
            f"{ROOT}.requestTemplate.argsToUrlParam",
            ["true or false"],
            id="argsTo flag not a boolean",
        ),
        pytest.param(
            {"requestTemplate": {"url": "/w"}, "responseTemplate": {"body": "x", "prependBody": "y"}},
            f"{ROOT}.responseTemplate.prependBody",
            ["body", "prependBody"],
            id="body with prependBody",
        ),
        pytest.param(
            {"requestTemplate": {"url": "/w"}, "responseTemplate": {"body": "x", "appendBody": "y"}},
            f"{ROOT}.responseTemplate.appendBody",
            ["body", "appendBody"],
            id="body with appendBody",
        ),
        pytest.param(
            {"requestTemplate": {"url": "/w"}, "argsPosition": {"city": "form"}},
            f"{ROOT}.argsPosition.city",
            ["'form'", "query"],
            id="unknown position",
        ),
        pytest.param(
            {"requestTemplate": {"url": "/w"}, "argsPosition": {"my city": "header"}},
            f'{ROOT}.argsPosition["my city"]',
            ["not a valid header name"],
            id="header position for a name no header can have",
        ),
        pytest.param(
            {"requestTemplate": {"url": "/w/{{ .args.city "}},
            f"{ROOT}.requestTemplate.url",
            ["does not parse"],
            id="url does not parse",
        ),
        pytest.param(
            {"requestTemplate": {"url": "/w", "body": "{{ if .args.x }}"}},
            f"{ROOT}.requestTemplate.body",
            ["does not parse"],
            id="body does not parse",
        ),
        pytest.param(
            {"requestTemplate": {"url": "/w"}, "responseTemplate": {"body": "{{ end }}"}},
            f"{ROOT}.responseTemplate.body",
            ["does not parse"],
            id="response body does not parse",
        ),
        pytest.param(
            {"requestTemplate": {"url": "/w"}, "responseTemplate": {"appendBody": "{{ .x "}},
            f"{ROOT}.responseTemplate.appendBody",
            ["does not parse"],
            id="appendBody does not parse",
        ),
        pytest.param(
            {"requestTemplate": {"url": "/w"}, "errorResponseTemplate": "{{ range }}"},
            f"{ROOT}.errorResponseTemplate",
            ["does not parse"],
            id="error template does not parse",
        ),
        pytest.param(
            {"requestTemplate": {"url": "/w", "argsToJSONBody": True}},
            f"{ROOT}.requestTemplate.argsToJSONBody",
            ["did you mean 'argsToJsonBody'"],
            id="misspelt key",
        ),
        pytest.param(
            {"requestTemplate": {"url": "", "method": "GET"}},
            f"{ROOT}.requestTemplate.url",
            ["direct-response", "responseTemplate.body"],
            id="direct tool without a response body",
        ),
        pytest.param(
            {"requestTemplate": {"url": "ftp://files.example.com/x"}},
            f"{ROOT}.requestTemplate.url",
            ["'ftp'"],
            id="literal non-http url",
        ),
        pytest.param(
            {"requestTemplate": {"url": "/w", "method": "GE T"}},
            f"{ROOT}.requestTemplate.method",
            ["not an HTTP method"],
            id="bad method",
        ),
        pytest.param(
            {"requestTemplate": {"url": "/w", "headers": [{"key": "Bad Header", "value": "v"}]}},
            f"{ROOT}.requestTemplate.headers[0].key",
            ["not a valid HTTP header name"],
            id="bad header name",
        ),
        pytest.param(
            {"requestTemplate": {"url": "/w", "headers": {"X": "v"}}},
            f"{ROOT}.requestTemplate.headers",
            ["list of {key, value}"],
            id="headers not a list",
        ),
        pytest.param(
            {"requestTemplate": "/w"},
            f"{ROOT}.requestTemplate",
            ["JSON object"],
            id="request template not an object",
        ),
    ],
)
def test_compile_rejects_a_broken_template_naming_tool_and_json_path(
    template: dict[str, Any], path: str, words: list[str]
) -> None:
    error = compile_error(template)

    assert error.path == path
    assert error.tool == TOOL
    for word in words:
        assert word in error.reason


def test_a_position_for_an_argument_the_schema_forbids_is_a_conversion_error() -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "additionalProperties": False}

    error = compile_error({"requestTemplate": {"url": "/w"}, "argsPosition": {"ctiy": "query"}}, schema)

    assert error.path == f"{ROOT}.argsPosition.ctiy"


def test_unknown_fields_that_look_like_nothing_known_are_tolerated() -> None:
    compiled = compile_rest_binding(
        TOOL, {"requestTemplate": {"url": "/w", "timeoutMs": 300}, "outputSchema": {}}, SCHEMES, {}
    )

    assert compiled.method == "GET"


def test_a_tool_name_with_dots_is_quoted_in_the_json_path() -> None:
    with pytest.raises(ConversionError) as caught:
        compile_rest_binding("a.b", {"requestTemplate": {"url": "/w", "argsToJsonBody": 1}}, SCHEMES, {})

    assert caught.value.path == '$.toolsMeta["a.b"].templates.json-go-template.requestTemplate.argsToJsonBody'


# -- response mapping -----------------------------------------------------------------------------


def ok(body: Any, content_type: str = "application/json") -> tuple[int, dict[str, str], bytes]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return 200, {"Content-Type": content_type}, raw


@pytest.mark.parametrize(
    ("response", "answer", "text"),
    [
        pytest.param(
            {"body": "{{ .city }}: {{ .temp }}°C"},
            ok({"city": "Paris", "temp": 21}),
            "Paris: 21°C",
            id="template",
        ),
        pytest.param(
            {"body": "{{ .city }}"},
            ok(b"plain text answer", "text/plain"),
            "plain text answer",
            id="non-JSON raw",
        ),
        pytest.param(
            {"prependBody": "Weather:\n", "appendBody": "\n(end)"},
            ok(b'{"t":1}'),
            'Weather:\n{"t":1}\n(end)',
            id="prepend and append",
        ),
        pytest.param({"appendBody": "!"}, ok(b"hi", "text/plain"), "hi!", id="append only"),
        pytest.param(
            {"prependBody": "{{ .city }}: "}, ok(b'{"city":"Oslo"}'), 'Oslo: {"city":"Oslo"}', id="prepend sees JSON"
        ),
        pytest.param(None, ok(b'{"t": 1}'), '{"t": 1}', id="raw JSON unchanged"),
        pytest.param(None, ok("héllo".encode("latin-1"), "text/plain; charset=latin-1"), "héllo", id="charset"),
        pytest.param(None, (204, {}, b""), "", id="no content"),
    ],
)
def test_a_successful_answer_becomes_text_content(
    response: dict[str, Any] | None, answer: tuple[int, dict[str, str], bytes], text: str
) -> None:
    status, headers, body = answer

    result = binding(response=response).map_response(status, headers, body, has_output_schema=False)

    assert result.is_error is False
    assert result.content == ({"type": "text", "text": text},)
    assert result.structured is None


def test_an_image_answer_becomes_image_content() -> None:
    png = b"\x89PNG\r\n\x1a\nrest"

    result = binding(response={"body": "{{ .x }}"}).map_response(
        200, {"content-type": "image/png; q=1"}, png, has_output_schema=True
    )

    assert result.content == ({"type": "image", "data": base64.b64encode(png).decode(), "mimeType": "image/png"},)
    assert result.structured is None


def test_with_an_output_schema_a_json_object_answer_is_structured_content_too() -> None:
    status, headers, body = ok({"city": "Paris", "temp": 21})

    result = binding().map_response(status, headers, body, has_output_schema=True)

    assert result.structured == {"city": "Paris", "temp": 21}
    assert json.loads(result.content[0]["text"]) == {"city": "Paris", "temp": 21}


def test_with_an_output_schema_and_a_response_template_the_text_is_the_template() -> None:
    status, headers, body = ok({"city": "Paris"})

    result = binding(response={"body": "in {{ .city }}"}).map_response(status, headers, body, has_output_schema=True)

    assert result.structured == {"city": "Paris"}
    assert result.content == ({"type": "text", "text": "in Paris"},)


@pytest.mark.parametrize("payload", [[1, 2], "text", 3])
def test_only_a_json_object_answer_is_structured(payload: Any) -> None:
    status, headers, body = ok(payload)

    assert binding().map_response(status, headers, body, has_output_schema=True).structured is None


def test_an_error_answer_renders_the_error_template_with_response_headers() -> None:
    compiled = binding(error_template='{{ .message }} (request {{ index ._headers "x-request-id" }})')

    result = compiled.map_response(
        429,
        {"X-Request-Id": "r-42", "Content-Type": "application/json"},
        b'{"message": "slow down"}',
        has_output_schema=True,
    )

    assert result.is_error is True
    assert result.content == ({"type": "text", "text": "slow down (request r-42)"},)
    assert result.structured is None


def test_the_error_template_sees_the_status_and_headers_even_when_the_body_is_not_json() -> None:
    compiled = binding(error_template='status {{ index ._headers ":status" }}')

    result = compiled.map_response(502, {}, b"<html>bad gateway</html>", has_output_schema=False)

    assert result.content == ({"type": "text", "text": "status 502"},)


def test_an_error_template_that_fails_to_render_falls_back_to_the_plain_message() -> None:
    compiled = binding(error_template="{{ .error.code }}")

    result = compiled.map_response(500, {}, b'{"error": null}', has_output_schema=False)

    assert result.is_error is True
    assert result.content == ({"type": "text", "text": 'upstream returned HTTP 500: {"error": null}'},)


def test_a_response_template_that_fails_to_render_is_an_invocation_error_naming_the_field() -> None:
    status, headers, body = ok({"data": None})

    with pytest.raises(InvocationError, match=r"get_weather.*responseTemplate\.body"):
        binding(response={"body": "{{ .data.name }}"}).map_response(status, headers, body, has_output_schema=False)


def test_without_an_error_template_the_error_names_the_status_and_quotes_the_body() -> None:
    result = binding(response={"body": "{{ .x }}"}).map_response(503, {}, b"x" * 2000, has_output_schema=False)

    assert result.is_error is True
    assert result.content == ({"type": "text", "text": "upstream returned HTTP 503: " + "x" * 500},)


def test_an_empty_error_answer_still_names_the_status() -> None:
    result = binding().map_response(404, {}, b"", has_output_schema=False)

    assert result.content == ({"type": "text", "text": "upstream returned HTTP 404 with an empty body"},)


@pytest.mark.parametrize("status", [199, 301, 400, 500])
def test_every_non_2xx_status_is_an_error(status: int) -> None:
    assert binding().map_response(status, {}, b"{}", has_output_schema=False).is_error is True


# -- direct-response tools ------------------------------------------------------------------------


def test_a_direct_response_tool_renders_its_body_from_args_and_config_without_a_request() -> None:
    compiled = binding({"url": ""}, response={"body": "Hello {{ .args.name }} from {{ .config.site }}"})

    assert compiled.is_direct is True
    result = compiled.render_direct({"name": "Ada"}, {"site": "mcpgw"})
    assert result.content == ({"type": "text", "text": "Hello Ada from mcpgw"},)
    assert result.is_error is False


def test_a_direct_response_tool_refuses_to_build_a_request() -> None:
    compiled = binding({"url": "  "}, response={"body": "hi"})

    with pytest.raises(InvocationError, match="directly"):
        compiled.build_request({}, {}, BASE)


def test_a_backend_tool_is_not_direct_and_refuses_to_render_directly() -> None:
    compiled = binding({"url": "/w", "method": "delete"})

    assert compiled.is_direct is False
    assert compiled.method == "DELETE"
    with pytest.raises(InvocationError):
        compiled.render_direct({}, {})
